/**
 * The client's chat state and the pure functions that change it.
 *
 * Each room keeps two lists:
 * - `messages`: messages the server has stored, unique by id and sorted by id
 *   (ids are ULIDs, so this is time order). Live events, `joined` snapshots
 *   and history pages all merge into this list, so whatever order they arrive
 *   in, and however often the same message arrives, it is shown once.
 * - `outbox`: the user's own messages that have no id yet, in the order they
 *   were written. Each is `pending` until the server acknowledges it and
 *   `failed` when no acknowledgement came in time; a retry makes it `pending`
 *   again with the same client id, so the server can recognise a repeat.
 *
 * A message leaves the outbox when either its `ack` or its own `message` event
 * arrives, whichever is first; the other one then finds it already stored.
 */
import type { UserRef, WireMessage } from './protocol';

export type OutboxStatus = 'pending' | 'failed';

export interface OutboxEntry {
  clientId: string;
  room: string;
  body: string;
  status: OutboxStatus;
  /** Why the last attempt failed, when the server said so. */
  error: string | null;
}

export interface TypingEntry {
  user: UserRef;
  /** Epoch milliseconds after which the indicator is dropped. */
  until: number;
}

export interface RoomState {
  room: string;
  /** True between the server's `joined` and the connection going away. */
  joined: boolean;
  messages: WireMessage[];
  outbox: OutboxEntry[];
  /** Online members, sorted by username. */
  members: UserRef[];
  typing: TypingEntry[];
  /** Whether older messages than the first in `messages` may exist. */
  hasMore: boolean;
  loadingOlder: boolean;
  /** The last problem reported for this room (failed join, failed history load). */
  error: string | null;
}

export type ConnectionStatus = 'connecting' | 'open' | 'disconnected' | 'stopped';

export interface ConnectionState {
  status: ConnectionStatus;
  /** When the next reconnect attempt is due (epoch ms), while disconnected. */
  retryAt: number | null;
  /** Whether a connection has ever been open; distinguishes first connect from reconnect. */
  everOpened: boolean;
}

export interface ChatState {
  connection: ConnectionState;
  rooms: Readonly<Record<string, RoomState>>;
}

/** How long a typing indicator stays up without a new `typing` event. */
export const TYPING_TTL_MS = 5000;

export const initialChatState: ChatState = {
  connection: { status: 'connecting', retryAt: null, everOpened: false },
  rooms: {},
};

export function emptyRoom(room: string): RoomState {
  return {
    room,
    joined: false,
    messages: [],
    outbox: [],
    members: [],
    typing: [],
    hasMore: false,
    loadingOlder: false,
    error: null,
  };
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Merges `incoming` into `existing` (sorted, unique by id) and returns a new
 * sorted, unique list. Returns `existing` itself when nothing was new, so
 * callers can skip re-rendering.
 */
export function mergeMessages(existing: readonly WireMessage[], incoming: readonly WireMessage[]): WireMessage[] {
  if (incoming.length === 0) return existing as WireMessage[];
  const known = new Set(existing.map((m) => m.id));
  const fresh: WireMessage[] = [];
  for (const m of incoming) {
    if (known.has(m.id)) continue;
    known.add(m.id);
    fresh.push(m);
  }
  if (fresh.length === 0) return existing as WireMessage[];
  fresh.sort((a, b) => compareIds(a.id, b.id));
  const last = existing[existing.length - 1];
  const first = fresh[0]!;
  // The common case: live messages that are newer than everything shown.
  if (last === undefined || compareIds(last.id, first.id) < 0) return [...existing, ...fresh];
  return [...existing, ...fresh].sort((a, b) => compareIds(a.id, b.id));
}

/** The newest stored message id in a room, used as `since` when rejoining. */
export function lastSeenId(room: RoomState | undefined): string | null {
  const last = room?.messages[room.messages.length - 1];
  return last?.id ?? null;
}

/** The oldest stored message id in a room, used as the history API's `before` cursor. */
export function oldestId(room: RoomState | undefined): string | null {
  return room?.messages[0]?.id ?? null;
}

export type ChatAction =
  | { type: 'connecting' }
  | { type: 'opened' }
  | { type: 'disconnected'; retryAt: number }
  | { type: 'stopped' }
  | { type: 'joinRequested'; room: string }
  | { type: 'left'; room: string }
  | { type: 'joined'; room: string; members: UserRef[]; messages: WireMessage[]; me: string }
  | { type: 'messages'; room: string; messages: WireMessage[]; me: string }
  | { type: 'ack'; clientId: string; id: string; sentAt: string; me: UserRef }
  | { type: 'presence'; room: string; user: UserRef; online: boolean }
  | { type: 'typing'; room: string; user: UserRef; now: number }
  | { type: 'expireTyping'; now: number }
  | { type: 'queued'; room: string; clientId: string; body: string }
  | { type: 'failed'; clientId: string; error: string | null }
  | { type: 'retrying'; clientId: string }
  | { type: 'olderLoading'; room: string }
  | { type: 'olderLoaded'; room: string; messages: WireMessage[]; hasMore: boolean }
  | { type: 'olderFailed'; room: string; error: string }
  | { type: 'roomError'; room: string; error: string };

function updateRoom(state: ChatState, room: string, f: (r: RoomState) => RoomState): ChatState {
  const current = state.rooms[room];
  if (current === undefined) return state;
  const next = f(current);
  return next === current ? state : { ...state, rooms: { ...state.rooms, [room]: next } };
}

function updateAllRooms(state: ChatState, f: (r: RoomState) => RoomState): ChatState {
  let changed = false;
  const rooms: Record<string, RoomState> = {};
  for (const [name, r] of Object.entries(state.rooms)) {
    const next = f(r);
    if (next !== r) changed = true;
    rooms[name] = next;
  }
  return changed ? { ...state, rooms } : state;
}

function sortMembers(members: UserRef[]): UserRef[] {
  const byId = new Map(members.map((m) => [m.id, m]));
  return [...byId.values()].sort((a, b) => a.username.localeCompare(b.username));
}

/** Stores messages and takes the user's own ones out of the outbox. */
function storeMessages(r: RoomState, messages: readonly WireMessage[], me: string): RoomState {
  const merged = mergeMessages(r.messages, messages);
  const confirmed = new Set(messages.filter((m) => m.author.id === me && m.client_id !== null).map((m) => m.client_id));
  const outbox = confirmed.size === 0 ? r.outbox : r.outbox.filter((o) => !confirmed.has(o.clientId));
  // A message from someone ends their "is typing" indicator.
  const authors = new Set(messages.map((m) => m.author.id));
  const typing = r.typing.some((t) => authors.has(t.user.id)) ? r.typing.filter((t) => !authors.has(t.user.id)) : r.typing;
  if (merged === r.messages && outbox.length === r.outbox.length && typing === r.typing) return r;
  return { ...r, messages: merged, outbox: outbox.length === r.outbox.length ? r.outbox : outbox, typing };
}

function setOutboxStatus(r: RoomState, clientId: string, status: OutboxStatus, error: string | null): RoomState {
  const i = r.outbox.findIndex((o) => o.clientId === clientId);
  if (i < 0 || (r.outbox[i]!.status === status && r.outbox[i]!.error === error)) return r;
  const outbox = [...r.outbox];
  outbox[i] = { ...outbox[i]!, status, error };
  return { ...r, outbox };
}

export function chatReducer(state: ChatState, action: ChatAction): ChatState {
  switch (action.type) {
    case 'connecting':
      return { ...state, connection: { ...state.connection, status: 'connecting', retryAt: null } };
    case 'opened':
      return { ...state, connection: { status: 'open', retryAt: null, everOpened: true } };
    case 'disconnected':
      return updateAllRooms(
        { ...state, connection: { ...state.connection, status: 'disconnected', retryAt: action.retryAt } },
        (r) => (r.joined || r.typing.length > 0 ? { ...r, joined: false, typing: [] } : r),
      );
    case 'stopped':
      return { ...state, connection: { ...state.connection, status: 'stopped', retryAt: null } };
    case 'joinRequested':
      if (state.rooms[action.room] !== undefined) return updateRoom(state, action.room, (r) => (r.error === null ? r : { ...r, error: null }));
      return { ...state, rooms: { ...state.rooms, [action.room]: emptyRoom(action.room) } };
    case 'left': {
      if (state.rooms[action.room] === undefined) return state;
      const rooms = { ...state.rooms };
      delete rooms[action.room];
      return { ...state, rooms };
    }
    case 'joined':
      return updateRoom(state, action.room, (r) => {
        const stored = storeMessages(r, action.messages, action.me);
        return {
          ...stored,
          joined: true,
          error: null,
          members: sortMembers(action.members),
          // Until the history API says otherwise, assume a non-empty room has older messages.
          hasMore: r.messages.length === 0 ? stored.messages.length > 0 : r.hasMore,
        };
      });
    case 'messages':
      return updateRoom(state, action.room, (r) => storeMessages(r, action.messages, action.me));
    case 'ack':
      return updateAllRooms(state, (r) => {
        const entry = r.outbox.find((o) => o.clientId === action.clientId);
        if (entry === undefined) return r;
        const stored: WireMessage = {
          room: r.room,
          id: action.id,
          client_id: action.clientId,
          author: action.me,
          body: entry.body,
          sent_at: action.sentAt,
        };
        return { ...r, messages: mergeMessages(r.messages, [stored]), outbox: r.outbox.filter((o) => o !== entry) };
      });
    case 'presence':
      return updateRoom(state, action.room, (r) => {
        const others = r.members.filter((m) => m.id !== action.user.id);
        const typing = action.online ? r.typing : r.typing.filter((t) => t.user.id !== action.user.id);
        return { ...r, members: action.online ? sortMembers([...others, action.user]) : others, typing };
      });
    case 'typing':
      return updateRoom(state, action.room, (r) => ({
        ...r,
        typing: [...r.typing.filter((t) => t.user.id !== action.user.id), { user: action.user, until: action.now + TYPING_TTL_MS }],
      }));
    case 'expireTyping':
      return updateAllRooms(state, (r) =>
        r.typing.some((t) => t.until <= action.now) ? { ...r, typing: r.typing.filter((t) => t.until > action.now) } : r,
      );
    case 'queued':
      return updateRoom(state, action.room, (r) => ({
        ...r,
        outbox: [...r.outbox, { clientId: action.clientId, room: action.room, body: action.body, status: 'pending', error: null }],
      }));
    case 'failed':
      return updateAllRooms(state, (r) => setOutboxStatus(r, action.clientId, 'failed', action.error));
    case 'retrying':
      return updateAllRooms(state, (r) => setOutboxStatus(r, action.clientId, 'pending', null));
    case 'olderLoading':
      return updateRoom(state, action.room, (r) => ({ ...r, loadingOlder: true, error: null }));
    case 'olderLoaded':
      return updateRoom(state, action.room, (r) => ({
        ...r,
        loadingOlder: false,
        messages: mergeMessages(r.messages, action.messages),
        hasMore: action.hasMore,
      }));
    case 'olderFailed':
      return updateRoom(state, action.room, (r) => ({ ...r, loadingOlder: false, error: action.error }));
    case 'roomError':
      return updateRoom(state, action.room, (r) => ({ ...r, error: action.error }));
  }
}

/** The names of people currently typing in a room, excluding `me`. */
export function typingNames(room: RoomState | undefined, me: string): string[] {
  return (room?.typing ?? []).filter((t) => t.user.id !== me).map((t) => t.user.username);
}
