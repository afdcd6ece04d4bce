import { describe, expect, it } from 'vitest';
import type { RoomView, UserRef, WireMessage } from './protocol';
import {
  activityOf,
  chatReducer,
  displayName,
  initialChatState,
  mergeView,
  sortedRooms,
  titleWithUnread,
  unreadBadge,
  type ChatAction,
  type ChatState,
} from './store';
import { roomView } from './test/fakeChat';

const me: UserRef = { id: 'u-me', username: 'me' };
const bob: UserRef = { id: 'u-bob', username: 'bob' };

function msg(room: string, id: string, author: UserRef = bob, minute = 0): WireMessage {
  const sentAt = `2024-06-02T12:${String(minute).padStart(2, '0')}:00Z`;
  return { room, id, client_id: null, author, body: `body ${id}`, sent_at: sentAt };
}

function run(...actions: ChatAction[]): ChatState {
  return actions.reduce(chatReducer, initialChatState);
}

const loaded = (...rooms: RoomView[]): ChatAction => ({ type: 'roomsLoaded', rooms });
const live = (room: string, ...messages: WireMessage[]): ChatAction => ({ type: 'messages', room, messages, me: me.id });
const order = (s: ChatState) => sortedRooms(s.list, ['public', 'private', 'dm']).map((r) => r.id);

describe('room list: unread counts', () => {
  it('counts messages from others in rooms that are not on screen', () => {
    const s = run(loaded(roomView('a'), roomView('b')), { type: 'joinRequested', room: 'a' }, live('a', msg('a', '01'), msg('a', '02')));
    expect(s.list.rooms.a).toMatchObject({ unread: 2, last_message: { id: '02', preview: 'body 02', author: bob } });
    expect(s.list.rooms.b!.unread).toBe(0);
  });

  it('does not count the user’s own messages, nor a message it already knew', () => {
    const s = run(
      loaded(roomView('a', { last_message: { id: '05', author: bob, preview: 'x', sent_at: '' }, unread: 1 })),
      live('a', msg('a', '04'), msg('a', '05'), msg('a', '06', me)),
    );
    expect(s.list.rooms.a).toMatchObject({ unread: 1, last_message: { id: '06', author: me } });
  });

  it('does not count messages in the room on screen while the page is visible, but does when hidden', () => {
    let s = run(loaded(roomView('a')), { type: 'viewing', room: 'a' }, live('a', msg('a', '01')));
    expect(s.list.rooms.a!.unread).toBe(0);
    s = [{ type: 'visibility', visible: false } as ChatAction, live('a', msg('a', '02'))].reduce(chatReducer, s);
    expect(s.list.rooms.a!.unread).toBe(1);
  });

  it('stops counting exactly past 100 and shows 99+', () => {
    const many = Array.from({ length: 102 }, (_, i) => msg('a', String(i).padStart(4, '0')));
    const s = run(loaded(roomView('a', { unread: 0 })), live('a', ...many));
    expect(s.list.rooms.a).toMatchObject({ unread: 100, unread_capped: true });
    expect(unreadBadge(s.list.rooms.a!)).toBe('99+');
    expect(unreadBadge(roomView('x', { unread: 99 }))).toBe('99');
    expect(unreadBadge(roomView('x', { unread: 3, unread_capped: true }))).toBe('99+');
    expect(unreadBadge(roomView('x', { unread: 0 }))).toBeNull();
  });

  it('counts an own message acknowledged by the server as the last message, not as unread', () => {
    const s = run(
      loaded(roomView('a')),
      { type: 'joinRequested', room: 'a' },
      { type: 'queued', room: 'a', clientId: 'c1', body: 'mine' },
      { type: 'ack', clientId: 'c1', id: '09', sentAt: '2024-06-03T00:00:00Z', me },
    );
    expect(s.list.rooms.a).toMatchObject({ unread: 0, last_message: { id: '09', preview: 'mine', author: me } });
  });
});

describe('room list: read markers', () => {
  it('a read up to the last message clears the count (another tab read it)', () => {
    const s = run(loaded(roomView('a')), live('a', msg('a', '01'), msg('a', '02')), { type: 'readMoved', room: 'a', id: '02', me: me.id });
    expect(s.list.rooms.a).toMatchObject({ unread: 0, unread_capped: false, read_id: '02' });
  });

  it('a read of an earlier message leaves what follows it unread, when the client holds those messages', () => {
    const s = run(
      loaded(roomView('a')),
      { type: 'joinRequested', room: 'a' },
      live('a', msg('a', '01'), msg('a', '02'), msg('a', '03')),
      { type: 'readMoved', room: 'a', id: '01', me: me.id },
    );
    expect(s.list.rooms.a).toMatchObject({ unread: 2, read_id: '01' });
  });

  it('never moves the marker backwards', () => {
    const s = run(loaded(roomView('a', { read_id: '05' })), { type: 'readMoved', room: 'a', id: '03', me: me.id });
    expect(s.list.rooms.a!.read_id).toBe('05');
  });

  it('messages up to the marker are not counted', () => {
    const s = run(loaded(roomView('a', { read_id: '02' })), live('a', msg('a', '01'), msg('a', '02'), msg('a', '03')));
    expect(s.list.rooms.a!.unread).toBe(1);
  });
});

describe('room list: order and changes', () => {
  it('orders by the latest activity and moves a room up when a message arrives', () => {
    let s = run(
      loaded(
        roomView('old', { created_at: '2024-01-01T00:00:00Z' }),
        roomView('new', { last_message: { id: '01', author: bob, preview: '', sent_at: '2024-06-02T00:00:00Z' } }),
      ),
    );
    expect(order(s)).toEqual(['new', 'old']);
    s = chatReducer(s, live('old', msg('old', '02', bob, 30)));
    expect(order(s)).toEqual(['old', 'new']);
  });

  it('separates rooms from DMs and calls a DM by the other person', () => {
    const dm = roomView('dm-1', { kind: 'dm', name: '', dm_user: bob });
    const s = run(loaded(roomView('a'), dm));
    expect(sortedRooms(s.list, ['dm']).map(displayName)).toEqual(['bob']);
    expect(sortedRooms(s.list, ['public', 'private']).map((r) => r.id)).toEqual(['a']);
  });

  it('room_added inserts, room_updated renames but keeps the user’s count, removed drops', () => {
    let s = run(loaded(roomView('a', { unread: 3 })), { type: 'roomAdded', room: roomView('b', { kind: 'private', name: 'Bee' }) });
    expect(Object.keys(s.list.rooms).sort()).toEqual(['a', 'b']);
    s = chatReducer(s, { type: 'roomUpdated', room: { ...roomView('a', { name: 'Renamed', topic: 't' }), role: null, unread: null } });
    expect(s.list.rooms.a).toMatchObject({ name: 'Renamed', topic: 't', unread: 3, role: 'member' });
    // An update of a room the user is not in adds nothing.
    expect(chatReducer(s, { type: 'roomUpdated', room: roomView('zzz') })).toBe(s);
    s = chatReducer(s, { type: 'roomRemoved', room: 'b', reason: 'kicked' });
    expect(Object.keys(s.list.rooms)).toEqual(['a']);
  });

  it('a removal of the room on screen leaves a notice and stops the room', () => {
    const s = run(
      loaded(roomView('a')),
      { type: 'joinRequested', room: 'a' },
      { type: 'joined', room: 'a', members: [me, bob], messages: [], me: me.id },
      { type: 'roomRemoved', room: 'a', reason: 'banned' },
    );
    expect(s.rooms.a).toMatchObject({ joined: false, removed: 'banned' });
    expect(s.list.rooms.a).toBeUndefined();
    // Opening it again starts over.
    expect(chatReducer(s, { type: 'joinRequested', room: 'a' }).rooms.a!.removed).toBeNull();
  });

  it('a refetch replaces the list (rooms left while away disappear) but keeps a message seen meanwhile', () => {
    const s = run(
      loaded(roomView('a'), roomView('gone')),
      live('a', msg('a', '09')),
      loaded(roomView('a', { last_message: { id: '08', author: bob, preview: '', sent_at: '' }, unread: 0 })),
    );
    expect(Object.keys(s.list.rooms)).toEqual(['a']);
    expect(s.list.rooms.a).toMatchObject({ last_message: { id: '09' }, unread: 1 });
    expect(s.list.loaded).toBe(true);
  });

  it('joined with a view adds the room to the list', () => {
    const s = run(
      { type: 'joinRequested', room: 'general' },
      { type: 'joined', room: 'general', members: [], messages: [msg('general', '01')], me: me.id, view: roomView('general') },
    );
    expect(s.list.rooms.general).toMatchObject({ last_message: { id: '01' } });
    expect(s.rooms.general!.historyLoaded).toBe(true);
  });

  it('a join from the last known message does not count as the room’s history', () => {
    const s = run(
      { type: 'joinRequested', room: 'a' },
      { type: 'joined', room: 'a', members: [], messages: [], me: me.id, fresh: false },
    );
    expect(s.rooms.a!.historyLoaded).toBe(false);
    const after = chatReducer(s, { type: 'latestLoaded', room: 'a', messages: [msg('a', '01')], hasMore: true });
    expect(after.rooms.a).toMatchObject({ historyLoaded: true, hasMore: true });
  });

  it('a denied join is kept apart from passing errors', () => {
    const s = run({ type: 'joinRequested', room: 'a' }, { type: 'denied', room: 'a', code: 'not_found', message: 'no such room' });
    expect(s.rooms.a).toMatchObject({ denied: { code: 'not_found' }, error: null, joined: false });
  });

  it('mergeView keeps the newer read marker and activity', () => {
    expect(activityOf(roomView('a', { last_activity: '2024-06-05T00:00:00Z' }))).toBe(Date.parse('2024-06-05T00:00:00Z'));
    expect(mergeView(roomView('a', { read_id: '05' }), roomView('a', { read_id: '03' })).read_id).toBe('05');
  });

  it('lists a room joined through a gateway that sends no view while no list was loaded', () => {
    const s = run({ type: 'joinRequested', room: 'general' }, { type: 'joined', room: 'general', members: [me], messages: [msg('general', '01')], me: me.id });
    expect(s.list.rooms.general).toMatchObject({ name: 'general', role: null, last_message: { id: '01' } });
    const loaded = run(loaded_(), { type: 'joinRequested', room: 'x' }, { type: 'joined', room: 'x', members: [], messages: [], me: me.id });
    expect(loaded.list.rooms.x).toBeUndefined();
  });
});

function loaded_(): ChatAction {
  return { type: 'roomsLoaded', rooms: [] };
}

describe('titleWithUnread', () => {
  it('puts the unread total of every room first, up to 99+', () => {
    const list = (...views: RoomView[]) => ({ rooms: Object.fromEntries(views.map((v) => [v.id, v])), loaded: true, error: null });
    expect(titleWithUnread(list(roomView('a'), roomView('b')))).toBe('Chat');
    expect(titleWithUnread(list(roomView('a', { unread: 2 }), roomView('b', { unread: 1 })))).toBe('(3) Chat');
    expect(titleWithUnread(list(roomView('a', { unread: 60 }), roomView('b', { unread: 50 })))).toBe('(99+) Chat');
    expect(titleWithUnread(list(roomView('a', { unread: 100, unread_capped: true })))).toBe('(99+) Chat');
  });
});
