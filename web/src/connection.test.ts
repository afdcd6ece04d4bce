import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError } from './api';
import type { UserRef, WireMessage } from './protocol';
import { bob, chatClient, joinedClient, me } from './test/chatClient';
import { roomView } from './test/fakeChat';

function msg(id: string, author: UserRef = bob, clientId: string | null = null): WireMessage {
  return { room: 'r', id, client_id: clientId, author, body: `body ${id}`, sent_at: '2024-06-01T12:00:00Z' };
}

beforeEach(() => {
  vi.useFakeTimers();
});

afterEach(() => {
  vi.useRealTimers();
});

describe('ChatClient', () => {
  it('joins wanted rooms once the socket opens', () => {
    const { client, latest } = chatClient();
    client.start();
    client.join('r');
    expect(client.getSnapshot().connection.status).toBe('connecting');
    latest().open();
    expect(latest().sent).toEqual([{ type: 'join', room: 'r' }]);
    expect(client.getSnapshot().connection.status).toBe('open');
  });

  it('shows own messages pending until the ack, then stored', () => {
    const { client, latest } = joinedClient();
    client.send('r', 'hello');
    expect(latest().framesOf('send')).toEqual([{ type: 'send', room: 'r', client_id: 'c1', body: 'hello' }]);
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('pending');
    latest().receive({ type: 'ack', client_id: 'c1', id: '01', sent_at: '2024-06-01T12:00:00Z' });
    latest().receive({ type: 'message', ...msg('01', me, 'c1'), body: 'hello' });
    const room = client.getSnapshot().rooms.r!;
    expect(room.outbox).toEqual([]);
    expect(room.messages.map((m) => [m.id, m.body])).toEqual([['01', 'hello']]);
    vi.advanceTimersByTime(60_000);
    expect(client.getSnapshot().rooms.r!.outbox).toEqual([]);
  });

  it('marks a message failed when no ack comes in time, and retries with the same client id', () => {
    const { client, latest } = joinedClient();
    client.send('r', 'hello');
    vi.advanceTimersByTime(9_999);
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('pending');
    vi.advanceTimersByTime(1);
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('failed');

    client.retry('c1');
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('pending');
    expect(latest().framesOf('send').map((f) => f.client_id)).toEqual(['c1', 'c1']);
    latest().receive({ type: 'ack', client_id: 'c1', id: '01', sent_at: 't' });
    expect(client.getSnapshot().rooms.r!.outbox).toEqual([]);
  });

  it('marks a message failed at once when the server reports an error for it', () => {
    const { client, latest } = joinedClient();
    client.send('r', 'hello');
    latest().receive({ type: 'error', code: 'unavailable', message: 'try later', client_id: 'c1' });
    expect(client.getSnapshot().rooms.r!.outbox[0]).toMatchObject({ status: 'failed' });
    expect(client.getSnapshot().rooms.r!.outbox[0]!.error).toMatch(/retry/);
  });

  it('reconnects with growing delays and resets them after a successful connection', () => {
    const { client, sockets, latest } = chatClient();
    client.start();
    latest().drop();
    expect(client.getSnapshot().connection.status).toBe('disconnected');
    vi.advanceTimersByTime(999);
    expect(sockets).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(2);
    latest().drop();
    vi.advanceTimersByTime(1999);
    expect(sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(3);
    latest().open();
    latest().drop();
    vi.advanceTimersByTime(1000);
    expect(sockets).toHaveLength(4);
  });

  it('rejoins with since = last seen id and shows what was missed once', () => {
    const { client, latest, fetchHistory } = joinedClient({ members: [me, bob], messages: [msg('01'), msg('02')] });
    latest().drop();
    expect(client.getSnapshot().rooms.r!.joined).toBe(false);

    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().sent).toEqual([{ type: 'join', room: 'r', since: '02' }]);
    latest().receive({ type: 'joined', room: 'r', members: [me, bob], messages: [msg('03'), msg('04')] });
    latest().receive({ type: 'message', ...msg('04') });
    latest().receive({ type: 'message', ...msg('05') });
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02', '03', '04', '05']);
    expect(client.getSnapshot().rooms.r!.joined).toBe(true);
    expect(fetchHistory).not.toHaveBeenCalled();
  });

  it('pages in the rest of a truncated rejoin snapshot from history', async () => {
    // The server has 01..08; the client saw 01..02; the rejoin snapshot stops at 04.
    const stored = ['01', '02', '03', '04', '05', '06', '07', '08'].map((id) => msg(id));
    const { client, latest, fetchHistory } = joinedClient({
      messages: [msg('01'), msg('02')],
      history: async (_room, cursor) => {
        const after = 'after' in cursor ? cursor.after : '';
        const rest = stored.filter((m) => m.id > after);
        return { messages: rest.slice(0, 2), has_more: rest.length > 2 };
      },
    });
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [msg('03'), msg('04')], truncated: true });
    latest().receive({ type: 'message', ...msg('09') });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.messages).toHaveLength(9));
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02', '03', '04', '05', '06', '07', '08', '09']);
    expect(fetchHistory.mock.calls.map((c) => c[1])).toEqual([{ after: '04' }, { after: '06' }]);
  });

  it('asks a catch-up page again while the server sheds it, and gives up only after many refusals', async () => {
    // The server has 01..05; the client saw 01; the rejoin snapshot stops at 02. History
    // sheds the first two asks (a reconnect storm), then answers.
    const stored = ['01', '02', '03', '04', '05'].map((id) => msg(id));
    let refusals = 2;
    const { client, latest, fetchHistory } = joinedClient({
      messages: [msg('01')],
      history: async (_room, cursor) => {
        if (refusals > 0) {
          refusals -= 1;
          throw new ApiError(503, 'unavailable', 'busy', {}, 1);
        }
        const after = 'after' in cursor ? cursor.after : '';
        return { messages: stored.filter((m) => m.id > after), has_more: false };
      },
    });
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [msg('02')], truncated: true });
    await vi.waitFor(() => expect(fetchHistory).toHaveBeenCalledTimes(1));
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fetchHistory).toHaveBeenCalledTimes(3);
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02', '03', '04', '05']);

    // Refused for good (403): no more asks.
    fetchHistory.mockClear();
    fetchHistory.mockImplementation(async () => {
      throw new ApiError(403, 'forbidden', 'no');
    });
    latest().receive({ type: 'lagged', room: 'r', last_id: '05' });
    await vi.advanceTimersByTimeAsync(120_000);
    expect(fetchHistory).toHaveBeenCalledTimes(1);

    // Shed every time: asked a bounded number of times, then left.
    fetchHistory.mockClear();
    fetchHistory.mockImplementation(async () => {
      throw new ApiError(503, 'unavailable', 'busy');
    });
    latest().receive({ type: 'lagged', room: 'r', last_id: '05' });
    await vi.advanceTimersByTimeAsync(600_000);
    expect(fetchHistory).toHaveBeenCalledTimes(9);
  });

  it('catches up from history after the server reports the connection lagged', async () => {
    const { client, latest, fetchHistory } = joinedClient({
      messages: [msg('01')],
      history: async () => ({ messages: [msg('02'), msg('03')], has_more: false }),
    });
    latest().receive({ type: 'lagged', room: 'r', last_id: '01' });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.messages).toHaveLength(3));
    expect(fetchHistory).toHaveBeenCalledWith('r', { after: '01' }, 100);
  });

  it('catches up from the lagged frame\'s id when it is older than the newest message received', async () => {
    const { client, latest, fetchHistory } = joinedClient({
      messages: [msg('01'), msg('03')],
      history: async () => ({ messages: [msg('02'), msg('03')], has_more: false }),
    });
    latest().receive({ type: 'lagged', room: 'r', last_id: '01' });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.messages).toHaveLength(3));
    expect(fetchHistory).toHaveBeenCalledWith('r', { after: '01' }, 100);
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02', '03']);
  });

  it('sends messages written while disconnected once the room is rejoined', () => {
    const { client, latest } = joinedClient();
    latest().drop();
    client.send('r', 'while away');
    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().framesOf('send')).toEqual([]);
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [] });
    expect(latest().framesOf('send')).toEqual([{ type: 'send', room: 'r', client_id: 'c1', body: 'while away' }]);
  });

  it('keeps a message written while disconnected pending, then times it from when it is sent', () => {
    const { client, latest } = joinedClient();
    latest().drop();
    client.send('r', 'while away');
    vi.advanceTimersByTime(30_000);
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('pending');
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [] });
    vi.advanceTimersByTime(10_000);
    expect(client.getSnapshot().rooms.r!.outbox[0]!.status).toBe('failed');
  });

  it('writes an unacknowledged message again after a reconnect, under the same client id', () => {
    const { client, latest, sockets } = joinedClient();
    client.send('r', 'in flight');
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [] });
    expect(sockets.map((s) => s.framesOf('send').map((f) => f.client_id))).toEqual([['c1'], ['c1']]);
  });

  it('does not write a message again when the rejoin snapshot shows it was stored', () => {
    const { client, latest } = joinedClient();
    client.send('r', 'in flight');
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [msg('01', me, 'c1')] });
    expect(latest().framesOf('send')).toEqual([]);
    expect(client.getSnapshot().rooms.r!.outbox).toEqual([]);
  });

  it('gives up a connection that does not answer a ping', () => {
    const { client, sockets, latest } = chatClient();
    client.start();
    latest().open();
    vi.advanceTimersByTime(25_000);
    expect(latest().framesOf('ping')).toHaveLength(1);
    vi.advanceTimersByTime(10_000);
    expect(sockets[0]!.closed).toBe(true);
    expect(client.getSnapshot().connection.status).toBe('disconnected');
  });

  it('keeps a connection that answers pings', () => {
    const { client, sockets, latest } = chatClient();
    client.start();
    latest().open();
    vi.advanceTimersByTime(25_000);
    latest().receive({ type: 'pong' });
    vi.advanceTimersByTime(10_000);
    expect(sockets).toHaveLength(1);
    expect(client.getSnapshot().connection.status).toBe('open');
  });

  it('signs out when the token is refused instead of retrying forever', async () => {
    const { client, sockets, latest, onUnauthorized } = chatClient({ checkToken: async () => false });
    client.start();
    latest().drop();
    await vi.waitFor(() => expect(onUnauthorized).toHaveBeenCalledTimes(1));
    vi.advanceTimersByTime(60_000);
    expect(sockets).toHaveLength(1);
    expect(client.getSnapshot().connection.status).toBe('stopped');
  });

  it('signs out without reconnecting when the account was deleted or disabled', async () => {
    const renewToken = vi.fn(async () => {});
    const { client, sockets, latest, onUnauthorized } = chatClient({ renewToken });
    client.start();
    latest().open();
    latest().drop(4003);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(renewToken).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sockets).toHaveLength(1);
    expect(client.getSnapshot().connection.status).toBe('stopped');
  });

  it('keeps retrying when the gateway is unreachable', async () => {
    const { client, sockets, latest, onUnauthorized } = chatClient({
      checkToken: async () => {
        throw new ApiError(0, 'network', 'down');
      },
    });
    client.start();
    latest().drop();
    await vi.advanceTimersByTimeAsync(1000);
    expect(sockets).toHaveLength(2);
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it('loads older history before the oldest message shown', async () => {
    const { client, fetchHistory } = joinedClient({
      messages: [msg('02')],
      history: async () => ({ messages: [msg('01')], has_more: false }),
    });
    await client.loadOlder('r');
    expect(fetchHistory).toHaveBeenCalledWith('r', { before: '02' }, 50);
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02']);
    await client.loadOlder('r');
    expect(fetchHistory).toHaveBeenCalledTimes(1);
  });

  it('throttles typing notices', () => {
    const { client, latest } = joinedClient();
    client.typing('r');
    client.typing('r');
    vi.advanceTimersByTime(2_500);
    client.typing('r');
    expect(latest().framesOf('typing')).toHaveLength(2);
  });

  it('leaves a room and forgets it', () => {
    const { client, latest } = chatClient();
    client.start();
    client.join('r');
    latest().open();
    client.leave('r');
    expect(latest().sent).toEqual([{ type: 'join', room: 'r' }, { type: 'leave', room: 'r' }]);
    expect(client.getSnapshot().rooms.r).toBeUndefined();
  });

  it('hands a fresh token to the open connection in-band, without reconnecting', () => {
    const { client, sockets, latest } = chatClient();
    client.start();
    client.join('r');
    latest().open();
    client.authenticate('t2');
    latest().receive({ type: 'authenticated', expires_at: 1_900_000_000 });
    expect(latest().framesOf('auth')).toEqual([{ type: 'auth', token: 't2' }]);
    expect(sockets).toHaveLength(1);
    expect(client.getSnapshot().connection.status).toBe('open');
  });

  it('sends a token that arrived while the socket was opening as soon as it opens', () => {
    const { client, latest, token } = chatClient();
    client.start();
    client.join('r');
    token.current = 't2';
    client.authenticate('t2');
    latest().open();
    expect(latest().url).toBe('ws://test/ws?token=t1');
    expect(latest().sent).toEqual([
      { type: 'auth', token: 't2' },
      { type: 'join', room: 'r' },
    ]);
  });

  it('opens the next connection with the current token instead of sending it in-band', () => {
    const { client, latest, token } = chatClient();
    client.start();
    latest().open();
    latest().drop();
    token.current = 't2';
    client.authenticate('t2');
    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().url).toBe('ws://test/ws?token=t2');
    expect(latest().framesOf('auth')).toEqual([]);
  });

  it('renews the token and reconnects at once when the server closes for an expired token', async () => {
    let renewed = () => {};
    const renewToken = vi.fn(() => new Promise<void>((resolve) => (renewed = resolve)));
    const { sockets, latest, token } = joinedClient({ messages: [msg('01')], renewToken });
    latest().drop(4001);
    expect(renewToken).toHaveBeenCalledTimes(1);
    expect(sockets).toHaveLength(1);
    token.current = 't2';
    renewed();
    await vi.advanceTimersByTimeAsync(0);
    expect(sockets).toHaveLength(2);
    expect(latest().url).toBe('ws://test/ws?token=t2');
    latest().open();
    expect(latest().sent).toEqual([{ type: 'join', room: 'r', since: '01' }]);
  });

  it('does not renew the token for other closes', () => {
    const renewToken = vi.fn(async () => {});
    const { client, latest } = chatClient({ renewToken });
    client.start();
    latest().open();
    latest().drop(1001);
    expect(renewToken).not.toHaveBeenCalled();
  });

  it('falls back to the backoff when renewing the token fails', async () => {
    const renewToken = vi.fn(async () => {
      throw new ApiError(0, 'network', 'down');
    });
    const { client, sockets, latest } = chatClient({ renewToken });
    client.start();
    latest().open();
    latest().drop(4001);
    await vi.advanceTimersByTimeAsync(999);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
  });

  it('does not show a refused in-band token or a rate limit as a room problem', () => {
    const { client, latest } = chatClient();
    client.start();
    client.join('r');
    latest().open();
    latest().receive({ type: 'error', code: 'unauthorized', message: 'the token is invalid or expired' });
    latest().receive({ type: 'error', code: 'rate_limited', message: 'too many frames; slow down' });
    expect(client.getSnapshot().rooms.r!.error).toBeNull();
    latest().receive({ type: 'error', code: 'too_many_rooms', message: 'at most 100 rooms per connection' });
    expect(client.getSnapshot().rooms.r!.error).toMatch(/100 rooms/);
  });

  it('closes the socket and stops reconnecting when stopped', () => {
    const { client, sockets, latest } = chatClient();
    client.start();
    latest().open();
    client.stop();
    expect(sockets[0]!.closed).toBe(true);
    vi.advanceTimersByTime(60_000);
    expect(sockets).toHaveLength(1);
  });
});

function inRoom(room: string, id: string, author: UserRef = bob): WireMessage {
  return { ...msg(id, author), room };
}

describe('ChatClient rooms', () => {
  it('fetches the room list when connected and joins each room in the background from its last message', async () => {
    const last = { id: '05', author: bob, preview: 'x', sent_at: '2024-06-01T00:00:00Z' };
    const fetchRooms = vi.fn(async () => [roomView('a', { last_message: last }), roomView('b')]);
    const { client, latest } = chatClient({ fetchRooms });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'a', since: '05' }, { type: 'join', room: 'b' }]);
  });

  it('paces background joins under the server’s frame rate', async () => {
    const rooms = Array.from({ length: 5 }, (_, i) => roomView(`r${i}`));
    const { client, latest } = chatClient({ fetchRooms: async () => rooms, joinsPerSecond: 2 });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toHaveLength(2));
    vi.advanceTimersByTime(1000);
    expect(latest().framesOf('join')).toHaveLength(4);
    vi.advanceTimersByTime(1000);
    expect(latest().framesOf('join')).toHaveLength(5);
  });

  it('joins at most the background limit, the most active rooms first', async () => {
    const rooms = [
      roomView('quiet', { created_at: '2024-01-01T00:00:00Z' }),
      roomView('busy', { last_activity: '2024-06-09T00:00:00Z' }),
    ];
    const { client, latest } = chatClient({ fetchRooms: async () => rooms, maxBackgroundRooms: 1 });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'busy' }]));
  });

  it('fetches the list again after a reconnect, drops rooms left meanwhile and joins new ones', async () => {
    let rooms = [roomView('a'), roomView('b')];
    const { client, latest, sockets } = chatClient({ fetchRooms: async () => rooms });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toHaveLength(2));
    latest().drop();
    rooms = [roomView('b'), roomView('c')];
    vi.advanceTimersByTime(1000);
    expect(sockets).toHaveLength(2);
    latest().open();
    await vi.waitFor(() => expect(Object.keys(client.getSnapshot().list.rooms).sort()).toEqual(['b', 'c']));
    vi.advanceTimersByTime(1000);
    expect(latest().framesOf('join').map((f) => f.room)).toEqual(['b', 'c']);
    expect(client.getSnapshot().rooms.a).toBeUndefined();
  });

  it('counts a message in a room not on screen as unread and moves that room up', async () => {
    const { client, latest } = chatClient({
      fetchRooms: async () => [roomView('a', { last_activity: '2024-06-09T00:00:00Z' }), roomView('b')],
    });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toHaveLength(2));
    latest().receive({ type: 'joined', room: 'b', members: [], messages: [] });
    latest().receive({ type: 'message', ...inRoom('b', '07') });
    expect(client.getSnapshot().list.rooms.b).toMatchObject({ unread: 1, last_message: { id: '07' } });
  });

  it('writes the read marker once the newest message of the room on screen has been shown, and clears the badge', async () => {
    const { client, latest } = chatClient({ fetchRooms: async () => [roomView('a', { unread: 2, read_id: '01' })] });
    client.start();
    client.open('a');
    latest().open();
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    latest().receive({ type: 'joined', room: 'a', members: [], messages: [inRoom('a', '01'), inRoom('a', '02'), inRoom('a', '03')] });
    expect(latest().framesOf('read')).toEqual([]);
    vi.advanceTimersByTime(500);
    expect(latest().framesOf('read')).toEqual([{ type: 'read', room: 'a', id: '03' }]);
    expect(client.getSnapshot().list.rooms.a).toMatchObject({ unread: 0, read_id: '03' });
    // A new message while the room is on screen is read too, once.
    latest().receive({ type: 'message', ...inRoom('a', '04') });
    expect(client.getSnapshot().list.rooms.a!.unread).toBe(0);
    vi.advanceTimersByTime(500);
    vi.advanceTimersByTime(500);
    expect(latest().framesOf('read')).toEqual([
      { type: 'read', room: 'a', id: '03' },
      { type: 'read', room: 'a', id: '04' },
    ]);
  });

  it('does not mark anything read while the page is hidden', async () => {
    const first = { id: '01', author: bob, preview: '', sent_at: '' };
    const { client, latest } = chatClient({ fetchRooms: async () => [roomView('a', { last_message: first })] });
    client.start();
    client.setVisible(false);
    client.open('a');
    latest().open();
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    latest().receive({ type: 'joined', room: 'a', members: [], messages: [inRoom('a', '01')] });
    latest().receive({ type: 'message', ...inRoom('a', '02') });
    vi.advanceTimersByTime(2000);
    expect(latest().framesOf('read')).toEqual([]);
    expect(client.getSnapshot().list.rooms.a!.unread).toBe(1);
    client.setVisible(true);
    vi.advanceTimersByTime(500);
    expect(latest().framesOf('read')).toEqual([{ type: 'read', room: 'a', id: '02' }]);
  });

  it('clears the badge when another tab read the room', async () => {
    const { client, latest } = chatClient({
      fetchRooms: async () => [roomView('a', { unread: 3, last_message: { id: '09', author: bob, preview: '', sent_at: '' } })],
    });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    latest().receive({ type: 'read', room: 'a', id: '09' });
    expect(client.getSnapshot().list.rooms.a).toMatchObject({ unread: 0, read_id: '09' });
  });

  it('loads the latest history of a room joined in the background when it is opened', async () => {
    const last = { id: '05', author: bob, preview: 'x', sent_at: '' };
    const history = vi.fn(async () => ({ messages: [inRoom('a', '04'), inRoom('a', '05')], has_more: true }));
    const { client, latest } = chatClient({ fetchRooms: async () => [roomView('a', { last_message: last })], history });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'a', since: '05' }]));
    latest().receive({ type: 'joined', room: 'a', members: [], messages: [] });
    expect(history).not.toHaveBeenCalled();
    client.open('a');
    await vi.waitFor(() => expect(client.getSnapshot().rooms.a).toMatchObject({ historyLoaded: true, hasMore: true }));
    expect(history).toHaveBeenCalledWith('a', { before: null }, 50);
    expect(client.getSnapshot().rooms.a!.messages.map((m) => m.id)).toEqual(['04', '05']);
    // Closing keeps a listed room joined.
    client.close('a');
    expect(latest().framesOf('leave')).toEqual([]);
    expect(client.getSnapshot().viewing).toBeNull();
  });

  it('adds a room on room_added and joins it; renames it on room_updated', async () => {
    const { client, latest } = chatClient({ fetchRooms: async () => [] });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    latest().receive({ type: 'room_added', room: roomView('new') });
    expect(client.getSnapshot().list.rooms.new).toBeDefined();
    expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'new' }]);
    latest().receive({ type: 'room_updated', room: { ...roomView('new', { name: 'Renamed' }), role: null } });
    expect(client.getSnapshot().list.rooms.new).toMatchObject({ name: 'Renamed', role: 'member' });
  });

  it('on removed drops the room, keeps the notice for the room on screen, fails waiting messages and does not rejoin', async () => {
    const { client, latest, sockets } = chatClient({ fetchRooms: async () => [roomView('a')] });
    client.start();
    client.open('a');
    latest().open();
    latest().receive({ type: 'joined', room: 'a', members: [], messages: [] });
    await vi.waitFor(() => expect(client.getSnapshot().list.loaded).toBe(true));
    latest().drop();
    client.send('a', 'written while away');
    vi.advanceTimersByTime(1000);
    expect(sockets).toHaveLength(2);
    latest().open();
    latest().receive({ type: 'removed', room: 'a', reason: 'kicked' });
    const s = client.getSnapshot();
    expect(s.list.rooms.a).toBeUndefined();
    expect(s.rooms.a).toMatchObject({ removed: 'kicked', joined: false });
    expect(s.rooms.a!.outbox[0]).toMatchObject({ status: 'failed' });
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().framesOf('join')).toEqual([]);
  });

  it('shows a refused join in the room, not as a banner, and does not retry it', () => {
    const { client, latest, sockets } = chatClient();
    client.start();
    client.open('secret');
    latest().open();
    latest().receive({ type: 'error', code: 'not_found', message: 'no such room', room: 'secret' });
    expect(client.getSnapshot().rooms.secret).toMatchObject({ denied: { code: 'not_found' }, error: null });
    latest().drop();
    vi.advanceTimersByTime(1000);
    expect(sockets).toHaveLength(2);
    latest().open();
    expect(latest().framesOf('join')).toEqual([]);
  });

  it('joins again, with growing waits, after a join refused as unavailable', () => {
    const { client, latest, sockets } = chatClient();
    client.start();
    client.open('busy');
    latest().open();
    expect(latest().framesOf('join')).toHaveLength(1);
    latest().receive({ type: 'error', code: 'unavailable', message: 'cannot be authorized right now', room: 'busy' });
    expect(client.getSnapshot().rooms.busy!.denied).toBeNull();
    // Not an error: the room says it is catching up, without the server's words.
    expect(client.getSnapshot().rooms.busy!.error).toBeNull();
    expect(client.getSnapshot().rooms.busy!.catchingUp).toBe(true);
    // The first retry comes within 1 s ± 20%, the second within 2 s ± 20% of the next refusal.
    vi.advanceTimersByTime(1_200);
    expect(latest().framesOf('join')).toHaveLength(2);
    latest().receive({ type: 'error', code: 'unavailable', message: 'still busy', room: 'busy' });
    vi.advanceTimersByTime(1_200);
    expect(latest().framesOf('join')).toHaveLength(2);
    vi.advanceTimersByTime(1_300);
    expect(latest().framesOf('join')).toHaveLength(3);
    latest().receive({ type: 'joined', room: 'busy', members: [], messages: [] });
    expect(client.getSnapshot().rooms.busy!.joined).toBe(true);
    expect(client.getSnapshot().rooms.busy!.catchingUp).toBe(false);
    // Joined: no more retries (within the ping interval, so the socket stays the same).
    vi.advanceTimersByTime(20_000);
    expect(sockets).toHaveLength(1);
    expect(latest().framesOf('join')).toHaveLength(3);
  });

  it('stops retrying a refused join once the room is closed', () => {
    const { client, latest, sockets } = chatClient();
    client.start();
    client.open('busy');
    latest().open();
    latest().receive({ type: 'error', code: 'unavailable', message: 'busy', room: 'busy' });
    client.close('busy');
    vi.advanceTimersByTime(20_000);
    expect(sockets).toHaveLength(1);
    expect(latest().framesOf('join')).toHaveLength(1);
  });

  it('pins a refusal that names no room on the oldest unanswered join', async () => {
    const { client, latest } = chatClient({ fetchRooms: async () => [roomView('listed')] });
    client.start();
    client.open('x');
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toHaveLength(2));
    latest().receive({ type: 'error', code: 'forbidden', message: 'you may not' });
    expect(client.getSnapshot().rooms.x!.denied).toMatchObject({ code: 'forbidden' });
    expect(client.getSnapshot().rooms.listed!.denied).toBeNull();
  });
});

describe('ChatClient rooms, background removal', () => {
  it('forgets a room removed while not on screen', async () => {
    const { client, latest } = chatClient({ fetchRooms: async () => [roomView('a')] });
    client.start();
    latest().open();
    await vi.waitFor(() => expect(latest().framesOf('join')).toHaveLength(1));
    latest().receive({ type: 'joined', room: 'a', members: [], messages: [] });
    latest().receive({ type: 'removed', room: 'a', reason: 'banned' });
    expect(client.getSnapshot().rooms.a).toBeUndefined();
    expect(client.getSnapshot().list.rooms.a).toBeUndefined();
  });
});

describe('ChatClient with a slow or failing backend', () => {
  it('keeps a room on screen through a refused rejoin and sends what waited, each once, when the retried join is answered', () => {
    const { client, latest } = joinedClient({ onScreen: true, members: [me, bob], messages: [msg('01'), msg('02')] });
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'r', since: '02' }]);
    latest().receive({ type: 'error', code: 'unavailable', message: 'history is unavailable; retry the join', room: 'r' });
    const r = client.getSnapshot().rooms.r!;
    expect(r.messages.map((m) => m.id)).toEqual(['01', '02']);
    expect(r.catchingUp).toBe(true);
    expect(r.error).toBeNull();
    client.send('r', 'one');
    client.send('r', 'two');
    // Not joined: nothing is written yet, and nothing fails for want of an ack.
    expect(latest().framesOf('send')).toEqual([]);
    vi.advanceTimersByTime(1_200);
    latest().receive({ type: 'error', code: 'unavailable', message: 'history is unavailable; retry the join', room: 'r' });
    expect(latest().framesOf('send')).toEqual([]);
    vi.advanceTimersByTime(2_500);
    expect(latest().framesOf('join')).toHaveLength(3);
    latest().receive({ type: 'joined', room: 'r', members: [me, bob], messages: [msg('03')] });
    expect(latest().framesOf('send')).toEqual([
      { type: 'send', room: 'r', client_id: 'c1', body: 'one' },
      { type: 'send', room: 'r', client_id: 'c2', body: 'two' },
    ]);
    // A later join answer (e.g. a repeated one) writes nothing again.
    latest().receive({ type: 'joined', room: 'r', members: [me, bob], messages: [] });
    expect(latest().framesOf('send')).toHaveLength(2);
    expect(client.getSnapshot().rooms.r!.outbox.map((o) => o.status)).toEqual(['pending', 'pending']);
    expect(client.getSnapshot().rooms.r!.catchingUp).toBe(false);
  });

  it('does not call a room empty when its join came without history but the room view has a last message', async () => {
    const page = { messages: [msg('01'), msg('02')], has_more: false };
    const { client, fetchHistory } = joinedClient({
      onScreen: true,
      view: roomView('r', { last_message: { id: '02', author: bob, preview: 'body 02', sent_at: '2024-06-01T12:00:00Z' } }),
      history: async () => page,
    });
    expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(false);
    expect(fetchHistory).toHaveBeenCalledWith('r', { before: null }, 50);
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(true));
    expect(client.getSnapshot().rooms.r!.messages.map((m) => m.id)).toEqual(['01', '02']);
  });

  it('asks the history API when a join without history has no room view to tell', async () => {
    const { client, fetchHistory } = joinedClient({ onScreen: true });
    expect(fetchHistory).toHaveBeenCalledTimes(1);
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(true));
    expect(client.getSnapshot().rooms.r!.messages).toEqual([]);
  });

  it('takes an empty join as empty when the room view says there is no message', () => {
    const { client, fetchHistory } = joinedClient({ onScreen: true, view: roomView('r') });
    expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(true);
    expect(fetchHistory).not.toHaveBeenCalled();
  });

  it('keeps the room loading, with the error, when the history API fails too; a retry loads it', async () => {
    let fail = true;
    const { client } = joinedClient({
      onScreen: true,
      history: async () => {
        if (fail) throw new ApiError(503, 'unavailable', 'history read shed');
        return { messages: [msg('01')], has_more: false };
      },
    });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.error).not.toBeNull());
    expect(client.getSnapshot().rooms.r!.error).not.toMatch(/shed/);
    expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(false);
    fail = false;
    client.reloadLatest('r');
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.historyLoaded).toBe(true));
    expect(client.getSnapshot().rooms.r!.error).toBeNull();
  });

  it('gives the connection up when the browser goes offline, and reconnects at once when it is back', () => {
    const { client, latest, sockets } = chatClient();
    client.start();
    client.open('r');
    latest().open();
    client.setOnline(false);
    expect(sockets[0]!.closed).toBe(true);
    expect(client.getSnapshot().connection).toMatchObject({ status: 'disconnected', offline: true });
    client.setOnline(true);
    expect(sockets).toHaveLength(2);
    latest().open();
    expect(client.getSnapshot().connection).toMatchObject({ status: 'open', offline: false });
  });

  it('finds a silent connection dead after a missed pong', () => {
    const { client, latest, sockets } = chatClient({ pingIntervalMs: 5_000, pongTimeoutMs: 5_000 });
    client.start();
    latest().open();
    vi.advanceTimersByTime(5_000);
    expect(latest().framesOf('ping')).toHaveLength(1);
    latest().receive({ type: 'pong' });
    vi.advanceTimersByTime(5_000);
    expect(latest().framesOf('ping')).toHaveLength(2);
    // No answer: within the pong timeout the connection is given up.
    vi.advanceTimersByTime(5_000);
    expect(sockets[0]!.closed).toBe(true);
    expect(client.getSnapshot().connection.status).toBe('disconnected');
  });
});

describe('ChatClient: changing messages', () => {
  it('rejoins with changes_since = the latest changed_at seen in the room, and applies joined.changes', () => {
    const { client, latest } = joinedClient({ messages: [msg('01'), msg('02')] });
    latest().receive({ type: 'edited', room: 'r', id: '01', body: 'live edit', edited_at: 't', version: 2, changed_at: '2024-06-01T12:05:00Z' });
    expect(client.getSnapshot().rooms.r!.messages[0]!.body).toBe('live edit');
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    expect(latest().framesOf('join')).toEqual([{ type: 'join', room: 'r', since: '02', changes_since: '2024-06-01T12:05:00Z' }]);
    latest().receive({
      type: 'joined',
      room: 'r',
      members: [me],
      messages: [],
      changes: [
        { ...msg('01'), body: 'edited while away', version: 3, edited_at: 't2', changed_at: '2024-06-01T12:06:00Z' },
        { ...msg('02'), body: undefined, deleted: true, version: 2, changed_at: '2024-06-01T12:07:00Z' },
      ],
    });
    const [first, second] = client.getSnapshot().rooms.r!.messages;
    expect(first).toMatchObject({ body: 'edited while away', version: 3 });
    expect(second).toMatchObject({ deleted: true, body: '' });
    expect(client.getSnapshot().rooms.r!.changesSince).toBe('2024-06-01T12:07:00Z');
  });

  it('writes an edit, a delete and a reaction and drops each from the pending changes at its ack', () => {
    const { client, latest } = joinedClient({ messages: [msg('01', me)] });
    client.edit('r', '01', 'better');
    client.react('r', '01', '👍', true);
    client.remove('r', '01');
    expect(latest().sent.slice(1)).toEqual([
      { type: 'edit', room: 'r', id: '01', body: 'better', client_id: 'c1' },
      { type: 'react', room: 'r', id: '01', emoji: '👍', on: true, client_id: 'c2' },
      { type: 'delete', room: 'r', id: '01', client_id: 'c3' },
    ]);
    for (const c of ['c1', 'c2', 'c3']) latest().receive({ type: 'ack', client_id: c, id: '01', sent_at: 't' });
    expect(client.getSnapshot().rooms.r!.changes).toEqual([]);
  });

  it('writes a pending change again under the same client id after a reconnect', () => {
    const { client, latest } = joinedClient({ messages: [msg('01', me)] });
    client.edit('r', '01', 'better');
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({ type: 'joined', room: 'r', members: [me], messages: [] });
    expect(latest().framesOf('edit')).toEqual([{ type: 'edit', room: 'r', id: '01', body: 'better', client_id: 'c1' }]);
  });

  it('shows a refused change in words and retries it with the same client id', () => {
    const { client, latest } = joinedClient({ messages: [msg('01', me)] });
    client.edit('r', '01', 'too late');
    latest().receive({ type: 'error', code: 'edit_window_passed', message: 'edit window passed', client_id: 'c1' });
    expect(client.getSnapshot().rooms.r!.changes[0]).toMatchObject({ status: 'failed', error: 'This message is too old to edit.' });
    client.retry('c1');
    expect(latest().framesOf('edit')).toHaveLength(2);
    expect(latest().framesOf('edit')[1]!.client_id).toBe('c1');
    expect(client.getSnapshot().rooms.r!.changes[0]!.status).toBe('pending');
  });

  it('sends a reply with reply_to and keeps the quote on the acknowledged message', () => {
    const { client, latest } = joinedClient({ messages: [msg('01')] });
    client.send('r', 'answer', { id: '01', author: bob, excerpt: 'body 01' });
    expect(latest().framesOf('send')).toEqual([{ type: 'send', room: 'r', client_id: 'c1', body: 'answer', reply_to: '01' }]);
    latest().receive({ type: 'ack', client_id: 'c1', id: '02', sent_at: 't' });
    expect(client.getSnapshot().rooms.r!.messages[1]!.reply_to).toEqual({ id: '01', author: bob, excerpt: 'body 01' });
  });

  it('pages the change feed from the last changed_at of a truncated joined.changes', async () => {
    const fetchChanges = vi.fn(async (_room: string, afterMs: number) =>
      afterMs === Date.parse('2024-06-01T12:06:00Z')
        ? { changes: [{ ...msg('02'), body: 'from the feed', version: 2, changed_at: '2024-06-01T12:08:00Z' }], has_more: false }
        : { changes: [], has_more: false },
    );
    const { client, latest } = joinedClient({ messages: [msg('01'), msg('02')], fetchChanges });
    latest().drop();
    vi.advanceTimersByTime(1000);
    latest().open();
    latest().receive({
      type: 'joined',
      room: 'r',
      members: [me],
      messages: [],
      changes: [{ ...msg('01'), body: 'in joined', version: 2, changed_at: '2024-06-01T12:06:00Z' }],
      changes_truncated: true,
    });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.messages[1]!.body).toBe('from the feed'));
    expect(fetchChanges).toHaveBeenCalledWith('r', Date.parse('2024-06-01T12:06:00Z'), 100);
    expect(client.getSnapshot().rooms.r!.changesSince).toBe('2024-06-01T12:08:00Z');
  });

  it('fills in the user\'s own reaction flags of the room on screen from a history page', async () => {
    const history = vi.fn(async () => ({
      messages: [{ ...msg('01'), version: 2, reactions: [{ emoji: '👍', count: 1, me: true }] }],
      has_more: false,
    }));
    const { client } = joinedClient({ onScreen: true, messages: [{ ...msg('01'), version: 2, reactions: [{ emoji: '👍', count: 1 }] }], history });
    await vi.waitFor(() => expect(client.getSnapshot().rooms.r!.messages[0]!.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]));
  });
});
