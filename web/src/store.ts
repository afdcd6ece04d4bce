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
 *
 * Messages change after they are sent (edits, deletion, reactions): every
 * stored state carries a `version`, and a change, a message of a `joined`
 * snapshot or of a history page replaces the one held only when its version
 * is greater. A deleted message stays a tombstone. The user's own changes wait
 * in the room's `changes` until acknowledged, like sends in the outbox, and
 * the room remembers the latest `changed_at` it has received
 * (`changesSince`), which a rejoin sends so that it gets back only newer changes.
 *
 * Beside the rooms' conversations the state keeps the user's room list (the
 * sidebar): one room view per room or DM the user is in, as `GET /api/rooms`
 * last answered it, kept current by live frames. A message newer than a
 * room's last known one moves the room up and, unless the room is open in a
 * visible tab, counts as unread; `read` clears the count, `room_added`,
 * `removed` and `room_updated` add, drop and rename rooms. Every reconnect
 * fetches the list again, since frames sent while away were lost.
 */
import {
  versionOf,
  type AppliedChange,
  type ChangeFrame,
  type Reaction,
  type RemovalReason,
  type ReplyRef,
  type RoomView,
  type UserRef,
  type WireMessage,
} from './protocol';

export type OutboxStatus = 'pending' | 'failed';

export interface OutboxEntry {
  clientId: string;
  room: string;
  body: string;
  status: OutboxStatus;
  /** Why the last attempt failed, when the server said so. */
  error: string | null;
  /** The message this one answers. */
  replyTo?: ReplyRef;
}

/** An edit, deletion or reaction of the user's that the server has not acknowledged yet. */
export interface PendingChange {
  clientId: string;
  room: string;
  /** The frame as first written: a retry repeats it with the same client id. */
  frame: ChangeFrame;
  status: OutboxStatus;
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
  /** The user's changes of messages waiting for their `ack`, or failed. */
  changes: PendingChange[];
  /** The greatest `changed_at` received in this room (RFC 3339), sent as `changes_since` on a rejoin. */
  changesSince: string | null;
  /** Online members, sorted by username. */
  members: UserRef[];
  typing: TypingEntry[];
  /** Whether older messages than the first in `messages` may exist. */
  hasMore: boolean;
  loadingOlder: boolean;
  /** The last problem reported for this room (failed join, failed history load). */
  error: string | null;
  /**
   * Whether `messages` reach back to the room's recent history. A room joined
   * in the background from its last known message holds only what came after
   * it, and loads the latest page when it is opened.
   */
  historyLoaded: boolean;
  /** Why the server took the user out of this room, while the room is still on screen. */
  removed: RemovalReason | null;
  /** The server refused to let the user in (`not_found`, `forbidden`, `banned`, `archived`). */
  denied: RoomDenial | null;
  /**
   * The server could not let the user (back) in right now (`unavailable`: history-service slow
   * or down) and the join is being retried; what is on screen stays, marked as catching up.
   */
  catchingUp: boolean;
}

export interface RoomDenial {
  code: string;
  message: string;
}

export interface RoomListState {
  /** The user's rooms and DMs by id. */
  rooms: Readonly<Record<string, RoomView>>;
  /** Whether `GET /api/rooms` has answered at least once. */
  loaded: boolean;
  /** Why the last fetch of the list failed, until one succeeds. */
  error: string | null;
}

export type ConnectionStatus = 'connecting' | 'open' | 'disconnected' | 'stopped';

export interface ConnectionState {
  status: ConnectionStatus;
  /** When the next reconnect attempt is due (epoch ms), while disconnected. */
  retryAt: number | null;
  /** Whether a connection has ever been open; distinguishes first connect from reconnect. */
  everOpened: boolean;
  /** The browser reported it has no network (`offline` event), until it reports `online` or a connection opens. */
  offline: boolean;
}

export interface ChatState {
  connection: ConnectionState;
  rooms: Readonly<Record<string, RoomState>>;
  list: RoomListState;
  /** The room on screen, if any. */
  viewing: string | null;
  /** Whether the page is visible; messages in the room on screen of a hidden tab count as unread. */
  visible: boolean;
  /** How far the room on screen had been read when it was opened (the "New messages" divider). */
  opened: OpenedMark | null;
}

/**
 * The user's read marker and unread count of the room on screen as they were when it was
 * opened. They are kept while the room stays open, so the divider above the first unread
 * message stays put while the marker moves on as the user reads. `known` is false until the
 * room's view is known (a room opened before the list or its `joined` arrived).
 */
export interface OpenedMark {
  room: string;
  known: boolean;
  readId: string | null;
  unread: number;
}

/** How long a typing indicator stays up without a new `typing` event. */
export const TYPING_TTL_MS = 5000;

export const initialChatState: ChatState = {
  connection: { status: 'connecting', retryAt: null, everOpened: false, offline: false },
  rooms: {},
  list: { rooms: {}, loaded: false, error: null },
  viewing: null,
  visible: true,
  opened: null,
};

/** Unread counts are exact up to this number (docs/rooms.md). */
export const UNREAD_EXACT_LIMIT = 100;
/** Characters of a message kept as the room list's preview. */
export const PREVIEW_CHARS = 100;

export function emptyRoom(room: string): RoomState {
  return {
    room,
    joined: false,
    messages: [],
    outbox: [],
    changes: [],
    changesSince: null,
    members: [],
    typing: [],
    hasMore: false,
    loadingOlder: false,
    error: null,
    historyLoaded: false,
    removed: null,
    denied: null,
    catchingUp: false,
  };
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Reactions from the server, with the user's own flag carried over from `held` for each emoji
 * the server said nothing about (`joined` and change frames carry counts only).
 */
export function withMyFlags(incoming: readonly Reaction[] | undefined, held: readonly Reaction[] | undefined): Reaction[] | undefined {
  if (incoming === undefined || incoming.length === 0) return undefined;
  if (held === undefined || held.length === 0) return incoming as Reaction[];
  return incoming.map((r) => {
    if (r.me !== undefined) return r;
    const mine = held.find((h) => h.emoji === r.emoji)?.me;
    return mine === undefined ? r : { ...r, me: mine };
  });
}

function setOptional<K extends keyof WireMessage>(m: WireMessage, key: K, value: WireMessage[K] | undefined): WireMessage {
  if (value === undefined) {
    if (!(key in m)) return m;
    const copy = { ...m };
    delete copy[key];
    return copy;
  }
  return { ...m, [key]: value };
}

/**
 * What to hold for a message given another state of it from the server: the newer version
 * wins, a deleted message stays deleted, and an equal version that knows the user's own
 * reaction flags (a history page) fills them in. Returns `held` itself when nothing changes.
 */
export function newerState(held: WireMessage, incoming: WireMessage): WireMessage {
  if (held.deleted === true) return held;
  const hv = versionOf(held);
  const iv = versionOf(incoming);
  if (iv > hv) return setOptional(incoming, 'reactions', withMyFlags(incoming.reactions, held.reactions));
  if (iv === hv && (incoming.reactions ?? []).some((r) => r.me !== undefined) && (held.reactions ?? []).some((r) => r.me === undefined)) {
    return { ...held, reactions: incoming.reactions };
  }
  return held;
}

/** The later of two RFC 3339 times (either may be absent). */
export function laterTime(a: string | null | undefined, b: string | null | undefined): string | null {
  if (a == null) return b ?? null;
  if (b == null) return a;
  return parseTime(b) > parseTime(a) ? b : a;
}

/**
 * Merges `incoming` into `existing` (sorted, unique by id) and returns a new
 * sorted, unique list; a message already held is replaced by a newer version
 * of it (`newerState`). Returns `existing` itself when nothing was new, so
 * callers can skip re-rendering.
 */
export function mergeMessages(existing: readonly WireMessage[], incoming: readonly WireMessage[]): WireMessage[] {
  if (incoming.length === 0) return existing as WireMessage[];
  const index = new Map(existing.map((m, i) => [m.id, i]));
  let base = existing as WireMessage[];
  const fresh = new Map<string, WireMessage>();
  for (const m of incoming) {
    const at = index.get(m.id);
    if (at !== undefined) {
      const next = newerState(base[at]!, m);
      if (next !== base[at]) {
        if (base === existing) base = [...existing];
        base[at] = next;
      }
      continue;
    }
    const seen = fresh.get(m.id);
    fresh.set(m.id, seen === undefined ? m : newerState(seen, m));
  }
  if (fresh.size === 0) return base;
  return mergeFresh(base, [...fresh.values()]);
}

function mergeFresh(existing: WireMessage[], fresh: WireMessage[]): WireMessage[] {
  fresh.sort((a, b) => compareIds(a.id, b.id));
  const last = existing[existing.length - 1];
  const first = fresh[0]!;
  // The common case: live messages that are newer than everything shown.
  if (last === undefined || compareIds(last.id, first.id) < 0) return [...existing, ...fresh];
  return [...existing, ...fresh].sort((a, b) => compareIds(a.id, b.id));
}

/**
 * Applies newer states of messages the room holds (`joined.changes`, a page of the change
 * feed); ids it does not hold are ignored, as they come in their current state when loaded.
 */
export function applyChangedMessages(existing: readonly WireMessage[], changed: readonly WireMessage[]): WireMessage[] {
  if (changed.length === 0) return existing as WireMessage[];
  const index = new Map(existing.map((m, i) => [m.id, i]));
  let out = existing as WireMessage[];
  for (const m of changed) {
    const at = index.get(m.id);
    if (at === undefined) continue;
    const next = newerState(out[at]!, m);
    if (next === out[at]) continue;
    if (out === existing) out = [...existing];
    out[at] = next;
  }
  return out;
}

/** Sets or clears the user's own flag for `emoji`. */
function setMine(reactions: readonly Reaction[] | undefined, emoji: string, on: boolean): Reaction[] | undefined {
  if (reactions === undefined) return undefined;
  return reactions.map((r) => (r.emoji === emoji && r.me !== on ? { ...r, me: on } : r));
}

/**
 * A change frame applied to the message it is about: only when its version is greater than
 * the one held, and never to a deleted message. Returns `m` itself when it does not apply.
 */
export function applyChange(m: WireMessage, change: AppliedChange, me: string): WireMessage {
  if (m.deleted === true || change.version <= versionOf(m)) return m;
  const changedAt = change.changed_at ?? m.changed_at;
  switch (change.type) {
    case 'edited':
      return { ...m, body: change.body, edited_at: change.edited_at, version: change.version, ...(changedAt ? { changed_at: changedAt } : {}) };
    case 'deleted': {
      const { edited_at: _edited, reactions: _reactions, ...rest } = m;
      return { ...rest, body: '', deleted: true, version: change.version, ...(changedAt ? { changed_at: changedAt } : {}) };
    }
    case 'reactions': {
      let reactions = withMyFlags(change.reactions, m.reactions);
      if (change.by?.id === me && change.emoji !== null) reactions = setMine(reactions, change.emoji, change.on);
      const next = setOptional(m, 'reactions', reactions);
      return { ...next, version: change.version, ...(changedAt ? { changed_at: changedAt } : {}) };
    }
  }
}

/** The newest `changed_at` among `messages`. */
function newestChange(messages: readonly WireMessage[], from: string | null): string | null {
  let out = from;
  for (const m of messages) out = laterTime(out, m.changed_at);
  return out;
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
  | { type: 'network'; online: boolean }
  | { type: 'catchingUp'; room: string }
  | { type: 'stopped' }
  | { type: 'joinRequested'; room: string }
  | { type: 'left'; room: string }
  /** `fresh`: joined without `since`, so `messages` are the room's recent ones. */
  | {
      type: 'joined';
      room: string;
      members: UserRef[];
      messages: WireMessage[];
      me: string;
      view?: RoomView | null;
      fresh?: boolean;
      /** Messages up to `since` that changed while away, in their current state. */
      changes?: WireMessage[];
    }
  /** A message of the room was edited, deleted or reacted to. */
  | { type: 'applied'; change: AppliedChange; me: string }
  /** Current states of messages that changed (a page of the change feed). */
  | { type: 'changed'; room: string; messages: WireMessage[] }
  /** The user asked for a change of a message; it waits for its `ack`. */
  | { type: 'changeQueued'; change: PendingChange }
  /** The user put a failed change aside. */
  | { type: 'changeDismissed'; clientId: string }
  | { type: 'messages'; room: string; messages: WireMessage[]; me: string }
  | { type: 'ack'; clientId: string; id: string; sentAt: string; me: UserRef }
  | { type: 'presence'; room: string; user: UserRef; online: boolean }
  | { type: 'typing'; room: string; user: UserRef; now: number }
  | { type: 'expireTyping'; now: number }
  | { type: 'queued'; room: string; clientId: string; body: string; replyTo?: ReplyRef }
  | { type: 'failed'; clientId: string; error: string | null }
  | { type: 'retrying'; clientId: string }
  | { type: 'olderLoading'; room: string }
  | { type: 'olderLoaded'; room: string; messages: WireMessage[]; hasMore: boolean }
  | { type: 'olderFailed'; room: string; error: string }
  | { type: 'roomError'; room: string; error: string }
  | { type: 'denied'; room: string; code: string; message: string }
  | { type: 'latestLoaded'; room: string; messages: WireMessage[]; hasMore: boolean }
  | { type: 'latestFailed'; room: string; error: string }
  | { type: 'roomsLoaded'; rooms: RoomView[] }
  | { type: 'roomsFailed'; error: string }
  | { type: 'roomAdded'; room: RoomView }
  | { type: 'roomUpdated'; room: RoomView }
  | { type: 'roomRemoved'; room: string; reason: RemovalReason }
  | { type: 'readMoved'; room: string; id: string; me: string }
  | { type: 'viewing'; room: string | null }
  | { type: 'visibility'; visible: boolean };

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
  const c = r.changes.findIndex((o) => o.clientId === clientId);
  if (c >= 0) {
    if (r.changes[c]!.status === status && r.changes[c]!.error === error) return r;
    const changes = [...r.changes];
    changes[c] = { ...changes[c]!, status, error };
    return { ...r, changes };
  }
  const i = r.outbox.findIndex((o) => o.clientId === clientId);
  if (i < 0 || (r.outbox[i]!.status === status && r.outbox[i]!.error === error)) return r;
  const outbox = [...r.outbox];
  outbox[i] = { ...outbox[i]!, status, error };
  return { ...r, outbox };
}

/** An acknowledged change leaves the room's pending changes; an own reaction sets the user's flag. */
function changeAcknowledged(r: RoomState, clientId: string): RoomState {
  const entry = r.changes.find((c) => c.clientId === clientId);
  if (entry === undefined) return r;
  const changes = r.changes.filter((c) => c !== entry);
  const frame = entry.frame;
  if (frame.type !== 'react') return { ...r, changes };
  const messages = r.messages.map((m) => (m.id === frame.id && m.deleted !== true ? setOptional(m, 'reactions', setMine(m.reactions, frame.emoji, frame.on)) : m));
  return { ...r, changes, messages };
}

/** A change frame applied to a room: the message it names, and the room's change cursor. */
function applyToRoom(r: RoomState, change: AppliedChange, me: string): RoomState {
  const changesSince = laterTime(r.changesSince, change.changed_at);
  const i = r.messages.findIndex((m) => m.id === change.id);
  const held = i < 0 ? undefined : r.messages[i]!;
  const next = held === undefined ? held : applyChange(held, change, me);
  if (next === held) return changesSince === r.changesSince ? r : { ...r, changesSince };
  const messages = [...r.messages];
  messages[i] = next!;
  return { ...r, messages, changesSince };
}

// ---- the room list ------------------------------------------------------------

function newerId(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareIds(a, b) >= 0 ? a : b;
}

/** The first `PREVIEW_CHARS` characters (code points) of a body. */
export function previewOf(body: string): string {
  return Array.from(body).slice(0, PREVIEW_CHARS).join('');
}

/**
 * Combines what the client knew of a room with a newer view of it from the
 * server. The server's view wins, except that a `room_updated` (sent to every
 * member alike) carries no caller fields, and a last message the client saw
 * live after the server answered is kept along with its unread count.
 */
export function mergeView(local: RoomView | undefined, incoming: RoomView): RoomView {
  if (local === undefined) return incoming;
  const merged: RoomView = { ...incoming };
  if (incoming.role === null) {
    merged.role = local.role;
    merged.unread = local.unread;
    merged.unread_capped = local.unread_capped;
  }
  merged.read_id = newerId(local.read_id, incoming.read_id);
  if (incoming.dm_user === null) merged.dm_user = local.dm_user;
  const localLast = local.last_message;
  if (localLast !== null && (incoming.last_message === null || compareIds(localLast.id, incoming.last_message.id) > 0)) {
    merged.last_message = localLast;
    merged.last_activity = local.last_activity;
    if (incoming.role !== null) {
      merged.unread = Math.max(local.unread ?? 0, incoming.unread ?? 0);
      merged.unread_capped = local.unread_capped || incoming.unread_capped;
    }
  }
  return merged;
}

/** A room the server said nothing about but that the user is in: public, named by its id. */
function unknownRoom(id: string, members: number): RoomView {
  return {
    id,
    kind: 'public',
    name: id,
    topic: '',
    created_by: null,
    created_at: null,
    archived: false,
    member_count: members,
    last_message: null,
    last_activity: null,
    role: null,
    unread: 0,
    unread_capped: false,
    read_id: null,
    dm_user: null,
  };
}

function setListRoom(state: ChatState, view: RoomView): ChatState {
  return { ...state, list: { ...state.list, rooms: { ...state.list.rooms, [view.id]: view } } };
}

/** The room list's preview follows an edit or deletion of the message it shows. */
function updateListPreview(state: ChatState, change: AppliedChange): ChatState {
  const view = state.list.rooms[change.room];
  const last = view?.last_message;
  if (view === undefined || last == null || last.id !== change.id) return state;
  if (change.type === 'edited') return setListRoom(state, { ...view, last_message: { ...last, preview: previewOf(change.body) } });
  if (change.type === 'deleted') return setListRoom(state, { ...view, last_message: { ...last, preview: '' } });
  return state;
}

/**
 * A room's messages that are newer than the list knows of: the room moves up
 * and, unless it is on screen in a visible tab, each one from someone else
 * after the read marker counts as unread.
 */
function bumpList(state: ChatState, room: string, messages: readonly WireMessage[], me: string): ChatState {
  const view = state.list.rooms[room];
  if (view === undefined || messages.length === 0) return state;
  const lastId = view.last_message?.id ?? null;
  const fresh = messages.filter((m) => lastId === null || compareIds(m.id, lastId) > 0);
  if (fresh.length === 0) return state;
  const newest = fresh.reduce((a, b) => (compareIds(a.id, b.id) >= 0 ? a : b));
  const onScreen = state.viewing === room && state.visible;
  const counted = onScreen
    ? 0
    : fresh.filter((m) => m.author.id !== me && (view.read_id === null || compareIds(m.id, view.read_id) > 0)).length;
  const total = (view.unread ?? 0) + counted;
  return setListRoom(state, {
    ...view,
    last_message: { id: newest.id, author: newest.author, preview: previewOf(newest.body), sent_at: newest.sent_at },
    last_activity: newest.sent_at,
    unread: Math.min(total, UNREAD_EXACT_LIMIT),
    unread_capped: view.unread_capped || total > UNREAD_EXACT_LIMIT,
  });
}

/**
 * The read marker moved to `id`. Read up to the last message: nothing is
 * unread. Read up to an earlier one: the count is what the client holds after
 * it, when it holds the messages from the marker on; otherwise unchanged
 * until the next fetch of the list.
 */
function moveReadMarker(state: ChatState, room: string, id: string, me: string): ChatState {
  const view = state.list.rooms[room];
  if (view === undefined) return state;
  if (view.read_id !== null && compareIds(id, view.read_id) <= 0) return state;
  const last = view.last_message?.id ?? null;
  let unread = view.unread;
  let capped = view.unread_capped;
  if (last === null || compareIds(id, last) >= 0) {
    unread = 0;
    capped = false;
  } else {
    const messages = state.rooms[room]?.messages ?? [];
    if (messages.some((m) => m.id === id)) {
      unread = messages.filter((m) => compareIds(m.id, id) > 0 && m.author.id !== me).length;
      capped = false;
    }
  }
  return setListRoom(state, { ...view, read_id: id, unread, unread_capped: capped });
}

function parseTime(t: string | null | undefined): number {
  if (t == null) return 0;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? 0 : ms;
}

/** When anything last happened in a room, for ordering the list (epoch ms). */
export function activityOf(view: RoomView): number {
  return Math.max(parseTime(view.last_activity), parseTime(view.last_message?.sent_at), parseTime(view.created_at));
}

/** The list's rooms of the given kinds, most recent activity first. */
export function sortedRooms(list: RoomListState, kinds: readonly RoomView['kind'][]): RoomView[] {
  return Object.values(list.rooms)
    .filter((r) => kinds.includes(r.kind))
    .sort((a, b) => activityOf(b) - activityOf(a) || displayName(a).localeCompare(displayName(b)));
}

/** How a room is called on screen: a DM by the other person's name. */
export function displayName(view: RoomView): string {
  if (view.kind === 'dm') return view.dm_user?.username ?? view.name;
  return view.name.length > 0 ? view.name : view.id;
}

/**
 * The window title: the number of unread messages over all rooms and DMs first, so it shows
 * on a background tab ("(3) Chat", "(99+) Chat").
 */
export function titleWithUnread(list: RoomListState, base = 'Chat'): string {
  let total = 0;
  let capped = false;
  for (const view of Object.values(list.rooms)) {
    total += view.unread ?? 0;
    capped ||= view.unread_capped;
  }
  if (total === 0 && !capped) return base;
  return `(${capped || total > 99 ? '99+' : total}) ${base}`;
}

/** The badge text: the exact count up to 99, "99+" beyond (or when the server stopped counting). */
export function unreadBadge(view: RoomView): string | null {
  const n = view.unread ?? 0;
  if (view.unread_capped || n > 99) return '99+';
  return n > 0 ? String(n) : null;
}

/** Fills in the opened room's mark once its view (with the caller's fields) is known. */
function settleOpened(state: ChatState): ChatState {
  const o = state.opened;
  if (o === null || o.known) return state;
  const view = state.list.rooms[o.room];
  if (view === undefined || view.role === null) return state;
  return { ...state, opened: markOf(o.room, view) };
}

function markOf(room: string, view: RoomView | undefined): OpenedMark {
  if (view === undefined || view.role === null) return { room, known: false, readId: null, unread: 0 };
  return { room, known: true, readId: view.read_id, unread: view.unread_capped ? UNREAD_EXACT_LIMIT : (view.unread ?? 0) };
}

/**
 * The message the "New messages" divider goes above in the room on screen: the first one from
 * someone else after the read marker as it was when the room was opened, if anything was
 * unread then; `null` for no divider.
 */
export function unreadDividerId(state: ChatState, room: string, me: string): string | null {
  const o = state.opened;
  if (o === null || o.room !== room || !o.known || o.unread === 0) return null;
  const readId = o.readId;
  const first = state.rooms[room]?.messages.find((m) => m.author.id !== me && (readId === null || compareIds(m.id, readId) > 0));
  return first?.id ?? null;
}

export function chatReducer(state: ChatState, action: ChatAction): ChatState {
  return settleOpened(reduce(state, action));
}

function reduce(state: ChatState, action: ChatAction): ChatState {
  switch (action.type) {
    case 'connecting':
      return { ...state, connection: { ...state.connection, status: 'connecting', retryAt: null } };
    case 'opened':
      return { ...state, connection: { status: 'open', retryAt: null, everOpened: true, offline: false } };
    case 'network':
      return state.connection.offline === !action.online
        ? state
        : { ...state, connection: { ...state.connection, offline: !action.online } };
    case 'catchingUp':
      return updateRoom(state, action.room, (r) => (r.catchingUp && r.error === null ? r : { ...r, catchingUp: true, error: null }));
    case 'disconnected':
      return updateAllRooms(
        { ...state, connection: { ...state.connection, status: 'disconnected', retryAt: action.retryAt } },
        (r) => (r.joined || r.typing.length > 0 ? { ...r, joined: false, typing: [] } : r),
      );
    case 'stopped':
      return { ...state, connection: { ...state.connection, status: 'stopped', retryAt: null } };
    case 'joinRequested':
      if (state.rooms[action.room] !== undefined) {
        return updateRoom(state, action.room, (r) =>
          r.error === null && r.denied === null && r.removed === null ? r : { ...r, error: null, denied: null, removed: null },
        );
      }
      return { ...state, rooms: { ...state.rooms, [action.room]: emptyRoom(action.room) } };
    case 'left': {
      if (state.rooms[action.room] === undefined) return state;
      const rooms = { ...state.rooms };
      delete rooms[action.room];
      return { ...state, rooms };
    }
    case 'joined': {
      let withView = state;
      if (action.view != null) withView = setListRoom(state, mergeView(state.list.rooms[action.room], action.view));
      else if (!state.list.loaded && state.list.rooms[action.room] === undefined && state.rooms[action.room] !== undefined) {
        // A gateway that knows no rooms (no view, no room list): list the rooms joined in this session.
        withView = setListRoom(state, unknownRoom(action.room, action.members.length));
      }
      // A fresh join without messages may only mean the gateway's history read timed out:
      // the room counts as empty only when the server's room view says it has no message.
      const known = action.view ?? state.list.rooms[action.room];
      const saysEmpty = known != null && known.last_message === null;
      const next = updateRoom(withView, action.room, (r) => {
        const received = storeMessages(r, action.messages, action.me);
        const changes = action.changes ?? [];
        const stored = { ...received, messages: applyChangedMessages(received.messages, changes) };
        return {
          ...stored,
          changesSince: newestChange(changes, newestChange(action.messages, r.changesSince)),
          joined: true,
          error: null,
          removed: null,
          denied: null,
          catchingUp: false,
          members: sortMembers(action.members),
          historyLoaded: r.historyLoaded || (action.fresh !== false && (stored.messages.length > 0 || saysEmpty)),
          // Until the history API says otherwise, assume a non-empty room has older messages.
          hasMore: r.messages.length === 0 ? stored.messages.length > 0 : r.hasMore,
        };
      });
      return bumpList(next, action.room, action.messages, action.me);
    }
    case 'messages':
      return bumpList(
        updateRoom(state, action.room, (r) => storeMessages(r, action.messages, action.me)),
        action.room,
        action.messages,
        action.me,
      );
    case 'ack': {
      let stored: WireMessage | null = null;
      const next = updateAllRooms(state, (r) => {
        const entry = r.outbox.find((o) => o.clientId === action.clientId);
        if (entry === undefined) return changeAcknowledged(r, action.clientId);
        stored = {
          room: r.room,
          id: action.id,
          client_id: action.clientId,
          author: action.me,
          body: entry.body,
          sent_at: action.sentAt,
          ...(entry.replyTo !== undefined ? { reply_to: entry.replyTo } : {}),
        };
        return { ...r, messages: mergeMessages(r.messages, [stored]), outbox: r.outbox.filter((o) => o !== entry) };
      });
      const own = stored as WireMessage | null;
      return own === null ? next : bumpList(next, own.room, [own], action.me.id);
    }
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
        outbox: [
          ...r.outbox,
          {
            clientId: action.clientId,
            room: action.room,
            body: action.body,
            status: 'pending',
            error: null,
            ...(action.replyTo !== undefined ? { replyTo: action.replyTo } : {}),
          },
        ],
      }));
    case 'applied':
      return updateListPreview(
        updateRoom(state, action.change.room, (r) => applyToRoom(r, action.change, action.me)),
        action.change,
      );
    case 'changed':
      return updateRoom(state, action.room, (r) => {
        const messages = applyChangedMessages(r.messages, action.messages);
        const changesSince = newestChange(action.messages, r.changesSince);
        return messages === r.messages && changesSince === r.changesSince ? r : { ...r, messages, changesSince };
      });
    case 'changeQueued':
      return updateRoom(state, action.change.room, (r) => ({
        ...r,
        changes: [...r.changes.filter((c) => c.clientId !== action.change.clientId), action.change],
      }));
    case 'changeDismissed':
      return updateAllRooms(state, (r) =>
        r.changes.some((c) => c.clientId === action.clientId) ? { ...r, changes: r.changes.filter((c) => c.clientId !== action.clientId) } : r,
      );
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
    case 'denied':
      return updateRoom(state, action.room, (r) => ({
        ...r,
        joined: false,
        error: null,
        catchingUp: false,
        denied: { code: action.code, message: action.message },
      }));
    case 'latestLoaded':
      return updateRoom(state, action.room, (r) => ({
        ...r,
        messages: mergeMessages(r.messages, action.messages),
        hasMore: action.hasMore,
        historyLoaded: true,
        error: null,
      }));
    case 'latestFailed':
      return updateRoom(state, action.room, (r) => ({ ...r, error: action.error }));
    case 'roomsLoaded': {
      const rooms: Record<string, RoomView> = {};
      // Rooms missing from the answer were left or lost while the client was away.
      for (const view of action.rooms) rooms[view.id] = mergeView(state.list.rooms[view.id], view);
      return { ...state, list: { rooms, loaded: true, error: null } };
    }
    case 'roomsFailed':
      return { ...state, list: { ...state.list, error: action.error } };
    case 'roomAdded':
      return setListRoom(state, mergeView(state.list.rooms[action.room.id], action.room));
    case 'roomUpdated': {
      const local = state.list.rooms[action.room.id];
      return local === undefined ? state : setListRoom(state, mergeView(local, action.room));
    }
    case 'roomRemoved': {
      let next = state;
      if (state.list.rooms[action.room] !== undefined) {
        const rooms = { ...state.list.rooms };
        delete rooms[action.room];
        next = { ...state, list: { ...state.list, rooms } };
      }
      return updateRoom(next, action.room, (r) => ({ ...r, joined: false, typing: [], removed: action.reason }));
    }
    case 'readMoved':
      return moveReadMarker(state, action.room, action.id, action.me);
    case 'viewing':
      if (state.viewing === action.room) return state;
      return {
        ...state,
        viewing: action.room,
        opened: action.room === null ? null : markOf(action.room, state.list.rooms[action.room]),
      };
    case 'visibility':
      return state.visible === action.visible ? state : { ...state, visible: action.visible };
  }
}

/** The names of people currently typing in a room, excluding `me`. */
export function typingNames(room: RoomState | undefined, me: string): string[] {
  return (room?.typing ?? []).filter((t) => t.user.id !== me).map((t) => t.user.username);
}
