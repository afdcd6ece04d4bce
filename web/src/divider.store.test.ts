import { describe, expect, it } from 'vitest';
import type { RoomView, UserRef, WireMessage } from './protocol';
import { chatReducer, initialChatState, unreadDividerId, type ChatAction, type ChatState } from './store';
import { roomView } from './test/fakeChat';

const me: UserRef = { id: 'u-me', username: 'me' };
const bob: UserRef = { id: 'u-bob', username: 'bob' };

function msg(id: string, author: UserRef = bob): WireMessage {
  return { room: 'a', id, client_id: null, author, body: `body ${id}`, sent_at: '2024-06-02T12:00:00Z' };
}

function run(...actions: ChatAction[]): ChatState {
  return actions.reduce(chatReducer, initialChatState);
}

const loaded = (...rooms: RoomView[]): ChatAction => ({ type: 'roomsLoaded', rooms });
const joined = (messages: WireMessage[], view?: RoomView): ChatAction => ({ type: 'joined', room: 'a', members: [], messages, me: me.id, view: view ?? null });
const open = (room: string | null): ChatAction => ({ type: 'viewing', room });
const read = (id: string): ChatAction => ({ type: 'readMoved', room: 'a', id, me: me.id });
const last = (id: string) => ({ id, author: bob, preview: 'x', sent_at: '2024-06-02T12:00:00Z' });

describe('the "New messages" divider', () => {
  it('sits above the first message after the read marker as it was when the room was opened, and stays there as the marker moves', () => {
    let s = run(
      loaded(roomView('a', { read_id: '02', unread: 2, last_message: last('04') })),
      { type: 'joinRequested', room: 'a' },
      open('a'),
      joined([msg('01'), msg('02'), msg('03'), msg('04')]),
    );
    expect(unreadDividerId(s, 'a', me.id)).toBe('03');
    // Reading moves the marker to the end; a new message arrives: the divider stays above 03.
    s = [read('04'), { type: 'messages', room: 'a', messages: [msg('05')], me: me.id } as ChatAction].reduce(chatReducer, s);
    expect(s.list.rooms.a!.read_id).toBe('04');
    expect(unreadDividerId(s, 'a', me.id)).toBe('03');
  });

  it('is gone when the room is opened again with nothing unread', () => {
    let s = run(
      loaded(roomView('a', { read_id: '01', unread: 1, last_message: last('02') })),
      { type: 'joinRequested', room: 'a' },
      open('a'),
      joined([msg('01'), msg('02')]),
    );
    expect(unreadDividerId(s, 'a', me.id)).toBe('02');
    s = [read('02'), open(null), open('a')].reduce(chatReducer, s);
    expect(unreadDividerId(s, 'a', me.id)).toBeNull();
  });

  it('takes the marker from the join when the room was opened before its view was known', () => {
    const s = run(
      { type: 'joinRequested', room: 'a' },
      open('a'),
      joined([msg('01'), msg('02'), msg('03')], roomView('a', { read_id: '01', unread: 2, last_message: last('03') })),
    );
    expect(unreadDividerId(s, 'a', me.id)).toBe('02');
  });

  it('skips the user’s own messages, and with no marker at all starts at the first message from someone else', () => {
    const s = run(
      loaded(roomView('a', { read_id: null, unread: 3, last_message: last('03') })),
      { type: 'joinRequested', room: 'a' },
      open('a'),
      joined([msg('01', me), msg('02'), msg('03')]),
    );
    expect(unreadDividerId(s, 'a', me.id)).toBe('02');
  });

  it('belongs to the room on screen only', () => {
    const s = run(
      loaded(roomView('a', { read_id: '01', unread: 1, last_message: last('02') }), roomView('b')),
      { type: 'joinRequested', room: 'a' },
      joined([msg('01'), msg('02')]),
      open('b'),
    );
    expect(unreadDividerId(s, 'a', me.id)).toBeNull();
  });
});
