import { describe, expect, it } from 'vitest';
import type { UserRef, WireMessage } from './protocol';
import {
  TYPING_TTL_MS,
  chatReducer,
  initialChatState,
  lastSeenId,
  mergeMessages,
  oldestId,
  typingNames,
  type ChatAction,
  type ChatState,
} from './store';

const me: UserRef = { id: 'u-me', username: 'me' };
const bob: UserRef = { id: 'u-bob', username: 'bob' };

function msg(id: string, author: UserRef = bob, clientId: string | null = null, body = `body ${id}`): WireMessage {
  return { room: 'r', id, client_id: clientId, author, body, sent_at: '2024-06-01T12:00:00Z' };
}

function run(...actions: ChatAction[]): ChatState {
  return actions.reduce(chatReducer, chatReducer(initialChatState, { type: 'joinRequested', room: 'r' }));
}

const ids = (s: ChatState) => s.rooms.r!.messages.map((m) => m.id);

describe('mergeMessages', () => {
  it('orders by id whatever order messages arrive in', () => {
    expect(mergeMessages([msg('03')], [msg('01'), msg('04'), msg('02')]).map((m) => m.id)).toEqual(['01', '02', '03', '04']);
  });

  it('keeps one copy of each id', () => {
    const merged = mergeMessages([msg('01'), msg('02')], [msg('02'), msg('03'), msg('03')]);
    expect(merged.map((m) => m.id)).toEqual(['01', '02', '03']);
  });

  it('returns the same list when nothing is new', () => {
    const list = [msg('01')];
    expect(mergeMessages(list, [msg('01')])).toBe(list);
  });

  it('sorts ULIDs by time', () => {
    const older = '01HZX3Y4Z5A6B7C8D9E0F1G2H3';
    const newer = '01HZX3Y4Z6A6B7C8D9E0F1G2H3';
    expect(mergeMessages([msg(newer)], [msg(older)]).map((m) => m.id)).toEqual([older, newer]);
  });
});

describe('chatReducer: rooms', () => {
  it('stores the snapshot from joined with its members', () => {
    const s = run({ type: 'joined', room: 'r', members: [me, bob], messages: [msg('02'), msg('01')], me: me.id });
    expect(ids(s)).toEqual(['01', '02']);
    expect(s.rooms.r!.joined).toBe(true);
    expect(s.rooms.r!.members.map((m) => m.username)).toEqual(['bob', 'me']);
    expect(s.rooms.r!.hasMore).toBe(true);
  });

  it('knows an empty room has no older history', () => {
    const s = run({ type: 'joined', room: 'r', members: [me], messages: [], me: me.id });
    expect(s.rooms.r!.hasMore).toBe(false);
  });

  it('merges a rejoin snapshot without duplicates', () => {
    const s = run(
      { type: 'joined', room: 'r', members: [me], messages: [msg('01'), msg('02')], me: me.id },
      { type: 'disconnected', retryAt: 1 },
      { type: 'joined', room: 'r', members: [me], messages: [msg('02'), msg('03')], me: me.id },
    );
    expect(ids(s)).toEqual(['01', '02', '03']);
  });

  it('marks rooms as not joined while disconnected', () => {
    const s = run({ type: 'joined', room: 'r', members: [me], messages: [], me: me.id }, { type: 'disconnected', retryAt: 5 });
    expect(s.rooms.r!.joined).toBe(false);
    expect(s.connection).toEqual({ status: 'disconnected', retryAt: 5, everOpened: false, offline: false });
  });

  it('ignores events for rooms it is not in', () => {
    const s = run({ type: 'left', room: 'r' });
    expect(chatReducer(s, { type: 'messages', room: 'r', messages: [msg('01')], me: me.id })).toBe(s);
  });

  it('tracks presence', () => {
    const carol = { id: 'u-carol', username: 'carol' };
    const s = run(
      { type: 'joined', room: 'r', members: [me, bob], messages: [], me: me.id },
      { type: 'presence', room: 'r', user: carol, online: true },
      { type: 'presence', room: 'r', user: bob, online: false },
      { type: 'presence', room: 'r', user: carol, online: true },
    );
    expect(s.rooms.r!.members.map((m) => m.username)).toEqual(['carol', 'me']);
  });

  it('shows who is typing until the indicator expires or they send', () => {
    let s = run({ type: 'typing', room: 'r', user: bob, now: 1000 });
    expect(typingNames(s.rooms.r, me.id)).toEqual(['bob']);
    s = chatReducer(s, { type: 'expireTyping', now: 1000 + TYPING_TTL_MS - 1 });
    expect(typingNames(s.rooms.r, me.id)).toEqual(['bob']);
    s = chatReducer(s, { type: 'expireTyping', now: 1000 + TYPING_TTL_MS });
    expect(typingNames(s.rooms.r, me.id)).toEqual([]);

    s = chatReducer(s, { type: 'typing', room: 'r', user: bob, now: 2000 });
    s = chatReducer(s, { type: 'messages', room: 'r', messages: [msg('01')], me: me.id });
    expect(typingNames(s.rooms.r, me.id)).toEqual([]);
  });
});

describe('chatReducer: own messages', () => {
  const queued: ChatAction = { type: 'queued', room: 'r', clientId: 'c1', body: 'hi' };

  it('shows a new message as pending', () => {
    const s = run(queued);
    expect(s.rooms.r!.outbox).toEqual([{ clientId: 'c1', room: 'r', body: 'hi', status: 'pending', error: null }]);
    expect(s.rooms.r!.messages).toEqual([]);
  });

  it('moves a message to the conversation when its ack arrives', () => {
    const s = run(queued, { type: 'ack', clientId: 'c1', id: '05', sentAt: '2024-06-01T12:00:05Z', me });
    expect(s.rooms.r!.outbox).toEqual([]);
    expect(s.rooms.r!.messages).toEqual([
      { room: 'r', id: '05', client_id: 'c1', author: me, body: 'hi', sent_at: '2024-06-01T12:00:05Z' },
    ]);
  });

  it('shows the message once when both the echo and the ack arrive, in either order', () => {
    const echo: ChatAction = { type: 'messages', room: 'r', messages: [msg('05', me, 'c1', 'hi')], me: me.id };
    const ack: ChatAction = { type: 'ack', clientId: 'c1', id: '05', sentAt: '2024-06-01T12:00:00Z', me };
    for (const s of [run(queued, echo, ack), run(queued, ack, echo)]) {
      expect(ids(s)).toEqual(['05']);
      expect(s.rooms.r!.outbox).toEqual([]);
    }
  });

  it('does not let someone else’s message with the same client id confirm mine', () => {
    const s = run(queued, { type: 'messages', room: 'r', messages: [msg('05', bob, 'c1')], me: me.id });
    expect(s.rooms.r!.outbox).toHaveLength(1);
  });

  it('goes from pending to failed and back to pending on retry', () => {
    let s = run(queued, { type: 'failed', clientId: 'c1', error: 'busy' });
    expect(s.rooms.r!.outbox[0]).toMatchObject({ status: 'failed', error: 'busy' });
    s = chatReducer(s, { type: 'retrying', clientId: 'c1' });
    expect(s.rooms.r!.outbox[0]).toMatchObject({ status: 'pending', error: null, clientId: 'c1' });
  });

  it('accepts a late ack for a message shown as failed', () => {
    const s = run(queued, { type: 'failed', clientId: 'c1', error: null }, { type: 'ack', clientId: 'c1', id: '07', sentAt: 't', me });
    expect(s.rooms.r!.outbox).toEqual([]);
    expect(ids(s)).toEqual(['07']);
  });

  it('clears own messages confirmed by a rejoin snapshot', () => {
    const s = run(queued, { type: 'joined', room: 'r', members: [me], messages: [msg('05', me, 'c1', 'hi')], me: me.id });
    expect(s.rooms.r!.outbox).toEqual([]);
    expect(ids(s)).toEqual(['05']);
  });

  it('keeps pending messages across a disconnect', () => {
    const s = run(queued, { type: 'disconnected', retryAt: 1 });
    expect(s.rooms.r!.outbox).toHaveLength(1);
  });
});

describe('chatReducer: history pages', () => {
  it('merges older pages in front and records whether more exist', () => {
    let s = run({ type: 'joined', room: 'r', members: [], messages: [msg('10'), msg('11')], me: me.id });
    expect(oldestId(s.rooms.r)).toBe('10');
    s = chatReducer(s, { type: 'olderLoading', room: 'r' });
    expect(s.rooms.r!.loadingOlder).toBe(true);
    s = chatReducer(s, { type: 'olderLoaded', room: 'r', messages: [msg('08'), msg('09'), msg('10')], hasMore: true });
    expect(ids(s)).toEqual(['08', '09', '10', '11']);
    expect(s.rooms.r!.loadingOlder).toBe(false);
    s = chatReducer(s, { type: 'olderLoaded', room: 'r', messages: [msg('07')], hasMore: false });
    expect(ids(s)).toEqual(['07', '08', '09', '10', '11']);
    expect(s.rooms.r!.hasMore).toBe(false);
    expect(lastSeenId(s.rooms.r)).toBe('11');
  });

  it('keeps the rest of the conversation when a page fails', () => {
    let s = run({ type: 'joined', room: 'r', members: [], messages: [msg('10')], me: me.id }, { type: 'olderLoading', room: 'r' });
    s = chatReducer(s, { type: 'olderFailed', room: 'r', error: 'offline' });
    expect(s.rooms.r!).toMatchObject({ loadingOlder: false, error: 'offline', hasMore: true });
    expect(ids(s)).toEqual(['10']);
  });
});
