/**
 * A `ChatClient` on fake sockets, for the client's own tests (`connection.test.ts`): every
 * socket it opens is kept, the backoff has no jitter, client ids count up from `c1`, and
 * the history, rooms and changes APIs are stand-ins the test can replace. Tests run it
 * under fake timers.
 */
import { vi } from 'vitest';
import type { HistoryCursor } from '../api';
import { Backoff } from '../backoff';
import { ChatClient } from '../connection';
import type { ChangesPage, HistoryPage, RoomView, UserRef, WireMessage } from '../protocol';
import { FakeSocket } from './fakeChat';

/** The signed-in user. */
export const me: UserRef = { id: 'u-me', username: 'me' };
/** Someone else in the room. */
export const bob: UserRef = { id: 'u-bob', username: 'bob' };

export interface ClientOptions {
  history?: (room: string, cursor: HistoryCursor) => Promise<HistoryPage>;
  fetchChanges?: (room: string, afterMs: number, limit: number) => Promise<ChangesPage>;
  checkToken?: () => Promise<boolean>;
  renewToken?: () => Promise<unknown>;
  fetchRooms?: () => Promise<RoomView[]>;
  joinsPerSecond?: number;
  maxBackgroundRooms?: number;
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
}

/** A client that has not started; `latest()` is the socket it opened last. */
export function chatClient(options: ClientOptions = {}) {
  const sockets: FakeSocket[] = [];
  const onUnauthorized = vi.fn();
  const fetchHistory = vi.fn(options.history ?? (async () => ({ messages: [], has_more: false })));
  let n = 0;
  const token = { current: 't1' };
  const client = new ChatClient({
    me,
    url: () => `ws://test/ws?token=${token.current}`,
    createSocket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    fetchHistory,
    checkToken: options.checkToken,
    renewToken: options.renewToken,
    onUnauthorized,
    backoff: new Backoff({ initialMs: 1000, maxMs: 8000, factor: 2, jitter: 0 }),
    newClientId: () => `c${++n}`,
    fetchRooms: options.fetchRooms,
    fetchChanges: options.fetchChanges,
    readDelayMs: 500,
    joinsPerSecond: options.joinsPerSecond ?? 10,
    maxBackgroundRooms: options.maxBackgroundRooms ?? 90,
    // Long enough that tests which advance time by many seconds keep their socket.
    pingIntervalMs: options.pingIntervalMs ?? 25_000,
    pongTimeoutMs: options.pongTimeoutMs ?? 10_000,
  });
  const latest = () => sockets[sockets.length - 1]!;
  return { client, sockets, latest, fetchHistory, onUnauthorized, token };
}

/** What the server's `joined` answer to the first join holds. */
export interface Joined {
  /** `[me]` unless said. */
  members?: UserRef[];
  /** None unless said. */
  messages?: WireMessage[];
  view?: RoomView;
}

/**
 * A started client in room `r` on an open socket, once the server has answered its join.
 * The room is joined in the background (`client.join`), or opened on screen
 * (`client.open`) with `onScreen`; either is asked for before the socket opens, so the
 * join is the first frame sent.
 */
export function joinedClient(options: ClientOptions & Joined & { onScreen?: boolean } = {}) {
  const chat = chatClient(options);
  const { client, latest } = chat;
  client.start();
  if (options.onScreen) client.open('r');
  else client.join('r');
  latest().open();
  latest().receive({
    type: 'joined',
    room: 'r',
    members: options.members ?? [me],
    messages: options.messages ?? [],
    view: options.view,
  });
  return chat;
}
