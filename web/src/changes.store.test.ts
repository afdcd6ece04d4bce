import { describe, expect, it } from 'vitest';
import type { AppliedChange, UserRef, WireMessage } from './protocol';
import { chatReducer, initialChatState, mergeMessages, type ChatAction, type ChatState } from './store';
import { roomView } from './test/fakeChat';

const me: UserRef = { id: 'u-me', username: 'me' };
const bob: UserRef = { id: 'u-bob', username: 'bob' };

function msg(id: string, patch: Partial<WireMessage> = {}): WireMessage {
  return { room: 'r', id, client_id: `c-${id}`, author: bob, body: `body ${id}`, sent_at: '2024-06-01T12:00:00Z', ...patch };
}

function run(...actions: ChatAction[]): ChatState {
  return actions.reduce(chatReducer, chatReducer(initialChatState, { type: 'joinRequested', room: 'r' }));
}

const joined = (messages: WireMessage[], changes: WireMessage[] = []): ChatAction => ({
  type: 'joined',
  room: 'r',
  members: [me, bob],
  messages,
  me: me.id,
  changes,
});

const applied = (change: AppliedChange): ChatAction => ({ type: 'applied', change, me: me.id });

const edited = (id: string, body: string, version: number, changedAt = '2024-06-01T12:05:00Z'): AppliedChange => ({
  type: 'edited',
  room: 'r',
  id,
  body,
  edited_at: changedAt,
  version,
  changed_at: changedAt,
});

const held = (s: ChatState, id: string) => s.rooms.r!.messages.find((m) => m.id === id)!;

describe('changes of messages in the store', () => {
  it('applies an edit with a newer version and shows it as edited', () => {
    const s = run(joined([msg('01')]), applied(edited('01', 'new words', 2)));
    expect(held(s, '01')).toMatchObject({ body: 'new words', version: 2, edited_at: '2024-06-01T12:05:00Z' });
  });

  it('ignores a change whose version is not newer than the one held', () => {
    const s = run(joined([msg('01')]), applied(edited('01', 'second', 3)), applied(edited('01', 'first', 2)), applied(edited('01', 'again', 3)));
    expect(held(s, '01')).toMatchObject({ body: 'second', version: 3 });
  });

  it('ignores changes of messages it does not hold, but remembers their time', () => {
    const s = run(joined([msg('01')]), applied(edited('09', 'elsewhere', 2, '2024-06-01T13:00:00Z')));
    expect(s.rooms.r!.messages.map((m) => m.id)).toEqual(['01']);
    expect(s.rooms.r!.changesSince).toBe('2024-06-01T13:00:00Z');
  });

  it('turns a deleted message into a tombstone that later edits and reactions do not revive', () => {
    const s = run(
      joined([msg('01', { reactions: [{ emoji: '👍', count: 1 }] })]),
      applied({ type: 'deleted', room: 'r', id: '01', deleted_at: 't', by: bob, version: 2, changed_at: '2024-06-01T12:01:00Z' }),
      applied(edited('01', 'back from the dead', 3)),
      applied({ type: 'reactions', room: 'r', id: '01', reactions: [{ emoji: '🎉', count: 1 }], version: 4, by: bob, emoji: '🎉', on: true, changed_at: null }),
    );
    const m = held(s, '01');
    expect(m.deleted).toBe(true);
    expect(m.body).toBe('');
    expect(m.reactions).toBeUndefined();
    expect(m.version).toBe(2);
  });

  it('keeps a tombstone when an older state of the message arrives again (history page, catch-up)', () => {
    const tomb = msg('01', { body: '', deleted: true, version: 2 });
    expect(mergeMessages([tomb], [msg('01', { version: 1 })])[0]).toBe(tomb);
    expect(mergeMessages([tomb], [msg('01', { version: 5, body: 'x' })])[0]).toBe(tomb);
  });

  it('replaces the reactions summary and sets the user\'s flag from their own change', () => {
    let s = run(joined([msg('01', { reactions: [{ emoji: '👍', count: 2 }] })]));
    s = chatReducer(
      s,
      applied({ type: 'reactions', room: 'r', id: '01', reactions: [{ emoji: '🎉', count: 1 }], version: 2, by: me, emoji: '🎉', on: true, changed_at: null }),
    );
    expect(held(s, '01').reactions).toEqual([{ emoji: '🎉', count: 1, me: true }]);
    // Someone else's change keeps the user's flag, which the frame does not carry.
    s = chatReducer(
      s,
      applied({
        type: 'reactions',
        room: 'r',
        id: '01',
        reactions: [
          { emoji: '🎉', count: 2 },
          { emoji: '👀', count: 1 },
        ],
        version: 3,
        by: bob,
        emoji: '👀',
        on: true,
        changed_at: null,
      }),
    );
    expect(held(s, '01').reactions).toEqual([
      { emoji: '🎉', count: 2, me: true },
      { emoji: '👀', count: 1 },
    ]);
    // The user takes theirs back.
    s = chatReducer(
      s,
      applied({ type: 'reactions', room: 'r', id: '01', reactions: [{ emoji: '🎉', count: 1 }, { emoji: '👀', count: 1 }], version: 4, by: me, emoji: '🎉', on: false, changed_at: null }),
    );
    expect(held(s, '01').reactions![0]).toEqual({ emoji: '🎉', count: 1, me: false });
  });

  it('applies joined.changes by id and version, and only to messages it holds', () => {
    const s = run(
      joined([msg('01'), msg('02'), msg('03')]),
      joined(
        [msg('04')],
        [
          msg('02', { body: 'edited while away', version: 2, edited_at: 't', changed_at: '2024-06-01T12:10:00Z' }),
          msg('01', { body: '', deleted: true, version: 3, changed_at: '2024-06-01T12:11:00Z' }),
          msg('00', { body: 'not held', version: 2, changed_at: '2024-06-01T12:12:00Z' }),
          msg('03', { body: 'stale', version: 1, changed_at: '2024-06-01T12:09:00Z' }),
        ],
      ),
    );
    expect(s.rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02', '03', '04']);
    expect(held(s, '01')).toMatchObject({ deleted: true, body: '' });
    expect(held(s, '02')).toMatchObject({ body: 'edited while away', version: 2 });
    expect(held(s, '03').body).toBe('body 03');
    expect(s.rooms.r!.changesSince).toBe('2024-06-01T12:12:00Z');
  });

  it('tracks the latest changed_at of the room whatever order changes arrive in', () => {
    const s = run(
      joined([msg('01'), msg('02')]),
      applied(edited('01', 'a', 2, '2024-06-01T12:05:00.500Z')),
      applied(edited('02', 'b', 2, '2024-06-01T12:04:00Z')),
    );
    expect(s.rooms.r!.changesSince).toBe('2024-06-01T12:05:00.500Z');
  });

  it('takes a newer state from a history page and fills in the user\'s reaction flags at the same version', () => {
    const s = run(
      joined([msg('01', { version: 2, reactions: [{ emoji: '👍', count: 1 }] })]),
      { type: 'changed', room: 'r', messages: [msg('01', { version: 2, reactions: [{ emoji: '👍', count: 1, me: true }] })] },
    );
    expect(held(s, '01').reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
  });

  it('keeps a change pending until its ack, marks an acknowledged reaction as the user\'s, and fails it on error', () => {
    let s = run(joined([msg('01', { reactions: [{ emoji: '👍', count: 1 }] })]));
    s = chatReducer(s, {
      type: 'changeQueued',
      change: { clientId: 'k1', room: 'r', frame: { type: 'react', room: 'r', id: '01', emoji: '👍', on: true, client_id: 'k1' }, status: 'pending', error: null },
    });
    s = chatReducer(s, {
      type: 'changeQueued',
      change: { clientId: 'k2', room: 'r', frame: { type: 'delete', room: 'r', id: '01', client_id: 'k2' }, status: 'pending', error: null },
    });
    expect(s.rooms.r!.changes.map((c) => c.clientId)).toEqual(['k1', 'k2']);
    s = chatReducer(s, { type: 'ack', clientId: 'k1', id: '01', sentAt: 't', me });
    expect(s.rooms.r!.changes.map((c) => c.clientId)).toEqual(['k2']);
    expect(held(s, '01').reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
    // An ack of a change never turns into a message.
    expect(s.rooms.r!.messages).toHaveLength(1);
    s = chatReducer(s, { type: 'failed', clientId: 'k2', error: 'not allowed' });
    expect(s.rooms.r!.changes[0]).toMatchObject({ status: 'failed', error: 'not allowed' });
    s = chatReducer(s, { type: 'retrying', clientId: 'k2' });
    expect(s.rooms.r!.changes[0]).toMatchObject({ status: 'pending', error: null });
    s = chatReducer(s, { type: 'changeDismissed', clientId: 'k2' });
    expect(s.rooms.r!.changes).toEqual([]);
  });

  it('keeps the reply of an own message acknowledged before its message event', () => {
    const reply = { id: '01', author: bob, excerpt: 'body 01' };
    let s = run(joined([msg('01')]), { type: 'queued', room: 'r', clientId: 'c9', body: 'answer', replyTo: reply });
    s = chatReducer(s, { type: 'ack', clientId: 'c9', id: '02', sentAt: '2024-06-01T12:01:00Z', me });
    expect(held(s, '02')).toMatchObject({ body: 'answer', reply_to: reply });
  });

  it('updates the room list preview when the last message is edited', () => {
    let s = run(joined([msg('01')]));
    s = chatReducer(s, {
      type: 'roomsLoaded',
      rooms: [
        roomView('r', {
          created_by: null,
          created_at: null,
          last_message: { id: '01', author: bob, preview: 'body 01', sent_at: '2024-06-01T12:00:00Z' },
        }),
      ],
    });
    s = chatReducer(s, applied(edited('01', 'fixed typo', 2)));
    expect(s.list.rooms.r!.last_message!.preview).toBe('fixed typo');
  });
});
