/**
 * The gateway's WebSocket protocol as the client sees it: typed frames in
 * both directions, a parser that turns untrusted text into those types, and
 * the validation rules shared with the server (room ids, message bodies).
 *
 * Parsing is strict about the fields the client relies on and lenient about
 * extra fields, so a newer server can add information without breaking an
 * older client. Frames of an unknown `type` parse to `null` and are ignored.
 */

/** A user as other people see them. */
export interface UserRef {
  id: string;
  username: string;
}

/** A stored chat message, as carried by `message` events, `joined` and the history API. */
export interface WireMessage {
  room: string;
  /** ULID assigned by the gateway: unique, and sorts by time. */
  id: string;
  /** The sender's idempotency key for this message; absent on some older records. */
  client_id: string | null;
  author: UserRef;
  /** The text; empty on a deleted message (a tombstone), whose text the server erased. */
  body: string;
  /** RFC 3339 timestamp. */
  sent_at: string;
  /** 1 when sent, one more for each change the server applied; absent means 1. */
  version?: number;
  /** When the body was last replaced. */
  edited_at?: string;
  /** A tombstone: the message was deleted, and `body` is empty. */
  deleted?: boolean;
  /** Reactions, one entry per emoji (counts; `me` when the server or this client knows it). */
  reactions?: Reaction[];
  /** The message this one answers. */
  reply_to?: ReplyRef;
  /** When the server last applied a change to it (RFC 3339): the room's change cursor. */
  changed_at?: string;
}

/** One emoji's reactions to a message. */
export interface Reaction {
  emoji: string;
  count: number;
  /** Whether the user is one of them; absent when unknown (`joined` and change frames carry counts only). */
  me?: boolean;
}

/** What a reply shows of the message it answers. */
export interface ReplyRef {
  id: string;
  author: UserRef;
  /** The first 100 characters of the answered message; absent once it is deleted. */
  excerpt?: string;
  deleted?: boolean;
}

/** The version of a message, 1 when the server did not say. */
export function versionOf(m: Pick<WireMessage, 'version'>): number {
  return m.version ?? 1;
}

export type RoomKind = 'public' | 'private' | 'dm';
export type Role = 'owner' | 'admin' | 'member';
/** Why the server took this connection out of a room (`removed`). */
export type RemovalReason = 'kicked' | 'banned' | 'left' | 'archived';

/** The newest message of a room, as the room list shows it. */
export interface LastMessage {
  id: string;
  author: UserRef;
  /** The first 100 characters of the body. */
  preview: string;
  sent_at: string;
}

/**
 * A room as the signed-in user sees it (docs/rooms.md, "room view"). `role`,
 * `unread`, `unread_capped` and `read_id` are the user's own and are absent
 * (null here) when the user is not a member, e.g. in the directory or in a
 * `room_updated` that goes to every member alike.
 */
export interface RoomView {
  id: string;
  kind: RoomKind;
  name: string;
  topic: string;
  created_by: string | null;
  created_at: string | null;
  archived: boolean;
  member_count: number;
  last_message: LastMessage | null;
  /** When anything last happened in the room (RFC 3339), when the server says. */
  last_activity: string | null;
  role: Role | null;
  unread: number | null;
  unread_capped: boolean;
  read_id: string | null;
  /** The other side of a direct message. */
  dm_user: UserRef | null;
}

/** A room member, as `GET /api/rooms/{room}/members` lists them. */
export interface Member {
  user: UserRef;
  role: Role;
  joined_at: string | null;
  /** Added by the gateway; the live presence events keep it current once the room is joined. */
  online: boolean;
}

export type ClientFrame =
  /** `changes_since`: the greatest `changed_at` seen in the room, so a rejoin brings only newer changes. */
  | { type: 'join'; room: string; since?: string; changes_since?: string }
  /** Moves the read marker of a joined room forward to message `id`. */
  | { type: 'read'; room: string; id: string }
  | { type: 'leave'; room: string }
  | { type: 'send'; room: string; client_id: string; body: string; reply_to?: string }
  | ChangeFrame
  | { type: 'typing'; room: string }
  | { type: 'ping' }
  /** A fresh access token of the same user, so the server keeps the connection open past the old one's expiry. */
  | { type: 'auth'; token: string };

/** A change of a stored message; answered by `ack` (or `error`) with its `client_id`, and retried with it. */
export type ChangeFrame =
  | { type: 'edit'; room: string; id: string; body: string; client_id: string }
  | { type: 'delete'; room: string; id: string; client_id: string }
  | { type: 'react'; room: string; id: string; emoji: string; on: boolean; client_id: string };

/** A change the server applied to a message of a joined room (`edited`, `deleted`, `reactions`). */
export type AppliedChange =
  | { type: 'edited'; room: string; id: string; body: string; edited_at: string; version: number; changed_at: string | null }
  | { type: 'deleted'; room: string; id: string; deleted_at: string | null; by: UserRef | null; version: number; changed_at: string | null }
  | {
      type: 'reactions';
      room: string;
      id: string;
      reactions: Reaction[];
      version: number;
      /** Who made this change, turning `emoji` on or off. */
      by: UserRef | null;
      emoji: string | null;
      on: boolean;
      changed_at: string | null;
    };

export type ServerEvent =
  | {
      type: 'joined';
      room: string;
      members: UserRef[];
      messages: WireMessage[];
      /**
       * Set on a `since` join that missed more than the server sends at once:
       * `messages` holds the oldest missed ones and the rest is paged in from
       * the history API with `after` = the last of them.
       */
      truncated: boolean;
      /**
       * On a `since` join: the current state of messages up to `since` that changed while
       * the client was away, oldest change first.
       */
      changes: WireMessage[];
      /** More changes than `changes` holds: the rest is paged in from `GET /api/rooms/R/changes`. */
      changes_truncated: boolean;
      /** The room as this user sees it (role, unread count), from gateways that know rooms. */
      view: RoomView | null;
    }
  | ({ type: 'message' } & WireMessage)
  | AppliedChange
  /** This connection is no longer in `room`; no `message` of it follows. */
  | { type: 'removed'; room: string; reason: RemovalReason }
  /** The user was added to a room (or opened a DM). */
  | { type: 'room_added'; room: RoomView }
  /** A joined room was renamed, or its topic or visibility changed. */
  | { type: 'room_updated'; room: RoomView }
  /** The user's read marker in `room` moved to `id` (on another connection, or through the HTTP API). */
  | { type: 'read'; room: string; id: string }
  | { type: 'ack'; client_id: string; id: string; sent_at: string }
  | { type: 'presence'; room: string; user: UserRef; state: 'online' | 'offline' }
  | { type: 'typing'; room: string; user: UserRef }
  | { type: 'pong' }
  /** The `auth` frame's token was accepted; the connection now lasts until `expires_at` (Unix seconds). */
  | { type: 'authenticated'; expires_at: number }
  /** The server dropped messages for this connection (it read too slowly); `last_id` is the last one it delivered. */
  | { type: 'lagged'; room: string; last_id: string | null }
  | { type: 'error'; code: string; message: string; client_id?: string; room?: string };

/** Room ids accepted by the server. */
export const ROOM_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Longest message body, in characters (Unicode code points). */
export const MAX_BODY_CHARS = 4000;

export function isValidRoomId(room: string): boolean {
  return ROOM_ID_PATTERN.test(room);
}

/** Number of characters as the server counts them (code points, not UTF-16 units). */
export function bodyLength(body: string): number {
  let n = 0;
  for (const _ of body) n += 1;
  return n;
}

/** Why a body cannot be sent, or `null` when it can. */
export function bodyProblem(body: string): string | null {
  if (body.trim().length === 0) return 'Message is empty';
  if (bodyLength(body) > MAX_BODY_CHARS) return `Message is longer than ${MAX_BODY_CHARS} characters`;
  return null;
}

export function encodeClientFrame(frame: ClientFrame): string {
  return JSON.stringify(frame);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

export function parseUser(v: unknown): UserRef | null {
  if (!isObject(v)) return null;
  const id = str(v.id);
  const username = str(v.username);
  return id !== null && username !== null ? { id, username } : null;
}

/**
 * Parses a stored message. `fallbackRoom` fills in the room for the history
 * API and `joined`, whose messages may leave it out because it is implied.
 */
export function parseMessage(v: unknown, fallbackRoom?: string): WireMessage | null {
  if (!isObject(v)) return null;
  const room = str(v.room) ?? fallbackRoom ?? null;
  const id = str(v.id);
  const body = str(v.body);
  const sentAt = str(v.sent_at);
  const author = parseUser(v.author);
  const deleted = v.deleted === true;
  // A tombstone has no body: deleting erases the text.
  if (room === null || id === null || (body === null && !deleted) || sentAt === null || author === null) return null;
  const m: WireMessage = { room, id, client_id: str(v.client_id), author, body: deleted ? '' : (body ?? ''), sent_at: sentAt };
  const version = num(v.version);
  if (version !== null) m.version = version;
  const editedAt = str(v.edited_at);
  if (editedAt !== null && !deleted) m.edited_at = editedAt;
  if (deleted) m.deleted = true;
  const reactions = deleted ? null : parseReactions(v.reactions);
  if (reactions !== null && reactions.length > 0) m.reactions = reactions;
  const replyTo = parseReplyRef(v.reply_to);
  if (replyTo !== null) m.reply_to = replyTo;
  const changedAt = str(v.changed_at);
  if (changedAt !== null) m.changed_at = changedAt;
  return m;
}

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Parses a reactions summary, skipping malformed entries. */
export function parseReactions(v: unknown): Reaction[] | null {
  if (!Array.isArray(v)) return null;
  const out: Reaction[] = [];
  for (const x of v) {
    if (!isObject(x)) continue;
    const emoji = str(x.emoji);
    const count = num(x.count);
    if (emoji === null || count === null || count <= 0) continue;
    const r: Reaction = { emoji, count };
    if (typeof x.me === 'boolean') r.me = x.me;
    out.push(r);
  }
  return out;
}

function parseReplyRef(v: unknown): ReplyRef | null {
  if (!isObject(v)) return null;
  const id = str(v.id);
  const author = parseUser(v.author);
  if (id === null || author === null) return null;
  const ref: ReplyRef = { id, author };
  if (v.deleted === true) ref.deleted = true;
  else {
    const excerpt = str(v.excerpt);
    if (excerpt !== null) ref.excerpt = excerpt;
  }
  return ref;
}

/** Parses an `edited`, `deleted` or `reactions` frame. */
function parseAppliedChange(raw: Json): AppliedChange | null {
  const room = str(raw.room);
  const id = str(raw.id);
  const version = num(raw.version);
  if (room === null || id === null || version === null) return null;
  const changedAt = str(raw.changed_at);
  switch (raw.type) {
    case 'edited': {
      const body = str(raw.body);
      const editedAt = str(raw.edited_at);
      if (body === null || editedAt === null) return null;
      return { type: 'edited', room, id, body, edited_at: editedAt, version, changed_at: changedAt };
    }
    case 'deleted':
      return { type: 'deleted', room, id, deleted_at: str(raw.deleted_at), by: parseUser(raw.by), version, changed_at: changedAt };
    case 'reactions': {
      const reactions = parseReactions(raw.reactions);
      if (reactions === null) return null;
      return {
        type: 'reactions',
        room,
        id,
        reactions,
        version,
        by: parseUser(raw.by),
        emoji: str(raw.emoji),
        on: raw.on === true,
        changed_at: changedAt,
      };
    }
    default:
      return null;
  }
}

function parseList<T>(v: unknown, item: (x: unknown) => T | null): T[] | null {
  if (!Array.isArray(v)) return null;
  const out: T[] = [];
  for (const x of v) {
    const parsed = item(x);
    if (parsed === null) return null;
    out.push(parsed);
  }
  return out;
}

/** Parses one text frame from the server; `null` for anything malformed or unknown. */
export function parseServerEvent(text: string): ServerEvent | null {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(raw)) return null;
  switch (raw.type) {
    case 'joined': {
      const room = str(raw.room);
      if (room === null) return null;
      const members = parseList(raw.members ?? [], parseUser);
      const messages = parseList(raw.messages ?? [], (m) => parseMessage(m, room));
      if (members === null || messages === null) return null;
      const changes = parseList(raw.changes ?? [], (m) => parseMessage(m, room));
      if (changes === null) return null;
      const view = raw.view === undefined ? null : parseRoomView(raw.view);
      return {
        type: 'joined',
        room,
        members,
        messages,
        truncated: raw.truncated === true,
        changes,
        changes_truncated: raw.changes_truncated === true,
        view,
      };
    }
    case 'removed': {
      const room = str(raw.room);
      const reason = raw.reason;
      if (room === null) return null;
      // A reason this client does not know yet still means the room is gone.
      return { type: 'removed', room, reason: isRemovalReason(reason) ? reason : 'kicked' };
    }
    case 'room_added':
    case 'room_updated': {
      const view = parseRoomView(raw.room);
      return view === null ? null : { type: raw.type, room: view };
    }
    case 'read': {
      const room = str(raw.room);
      const id = str(raw.id);
      return room === null || id === null ? null : { type: 'read', room, id };
    }
    case 'message': {
      const message = parseMessage(raw);
      return message === null ? null : { type: 'message', ...message };
    }
    case 'edited':
    case 'deleted':
    case 'reactions':
      return parseAppliedChange(raw);
    case 'ack': {
      const clientId = str(raw.client_id);
      const id = str(raw.id);
      const sentAt = str(raw.sent_at);
      if (clientId === null || id === null || sentAt === null) return null;
      return { type: 'ack', client_id: clientId, id, sent_at: sentAt };
    }
    case 'presence': {
      const room = str(raw.room);
      const user = parseUser(raw.user);
      const state = raw.state;
      if (room === null || user === null || (state !== 'online' && state !== 'offline')) return null;
      return { type: 'presence', room, user, state };
    }
    case 'typing': {
      const room = str(raw.room);
      const user = parseUser(raw.user);
      if (room === null || user === null) return null;
      return { type: 'typing', room, user };
    }
    case 'pong':
      return { type: 'pong' };
    case 'authenticated':
      return typeof raw.expires_at === 'number' ? { type: 'authenticated', expires_at: raw.expires_at } : null;
    case 'lagged': {
      const room = str(raw.room);
      return room === null ? null : { type: 'lagged', room, last_id: str(raw.last_id) };
    }
    case 'error': {
      const event: ServerEvent = {
        type: 'error',
        code: str(raw.code) ?? 'unknown',
        message: str(raw.message) ?? 'Something went wrong',
      };
      const clientId = str(raw.client_id);
      if (clientId !== null) event.client_id = clientId;
      const room = str(raw.room);
      if (room !== null) event.room = room;
      return event;
    }
    default:
      return null;
  }
}

const ROOM_KINDS: readonly string[] = ['public', 'private', 'dm'];
const ROLES: readonly string[] = ['owner', 'admin', 'member'];
const REMOVAL_REASONS: readonly string[] = ['kicked', 'banned', 'left', 'archived'];

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && ROLES.includes(v);
}

function isRemovalReason(v: unknown): v is RemovalReason {
  return typeof v === 'string' && REMOVAL_REASONS.includes(v);
}

function parseLastMessage(v: unknown): LastMessage | null {
  if (!isObject(v)) return null;
  const id = str(v.id);
  const author = parseUser(v.author);
  if (id === null || author === null) return null;
  return { id, author, preview: str(v.preview) ?? '', sent_at: str(v.sent_at) ?? '' };
}

/** Parses a room view; `null` when the fields the client relies on (id, kind) are missing. */
export function parseRoomView(v: unknown): RoomView | null {
  if (!isObject(v)) return null;
  const id = str(v.id);
  const kind = str(v.kind);
  if (id === null || kind === null || !ROOM_KINDS.includes(kind)) return null;
  return {
    id,
    kind: kind as RoomKind,
    name: str(v.name) ?? id,
    topic: str(v.topic) ?? '',
    created_by: str(v.created_by),
    created_at: str(v.created_at),
    archived: v.archived === true,
    member_count: typeof v.member_count === 'number' ? v.member_count : 0,
    last_message: parseLastMessage(v.last_message),
    last_activity: str(v.last_activity),
    role: isRole(v.role) ? v.role : null,
    unread: typeof v.unread === 'number' && v.unread >= 0 ? v.unread : null,
    unread_capped: v.unread_capped === true,
    read_id: str(v.read_id),
    dm_user: parseUser(v.dm_user),
  };
}

/** Parses a list of room views (`GET /api/rooms`, the directory), skipping malformed entries. */
export function parseRoomViews(v: unknown): RoomView[] | null {
  if (!Array.isArray(v)) return null;
  return v.map(parseRoomView).filter((r): r is RoomView => r !== null);
}

export function parseMember(v: unknown): Member | null {
  if (!isObject(v)) return null;
  const user = parseUser(v.user);
  if (user === null) return null;
  return { user, role: isRole(v.role) ? v.role : 'member', joined_at: str(v.joined_at), online: v.online === true };
}

/** A page of the history API: `GET /api/rooms/{room}/messages`. */
export interface HistoryPage {
  messages: WireMessage[];
  has_more: boolean;
}

/** A page of the change feed: `GET /api/rooms/{room}/changes`. */
export interface ChangesPage {
  changes: WireMessage[];
  has_more: boolean;
}

export function parseChangesPage(v: unknown, room: string): ChangesPage | null {
  if (!isObject(v)) return null;
  const changes = parseList(v.changes, (m) => parseMessage(m, room));
  if (changes === null) return null;
  return { changes, has_more: v.has_more === true };
}

export function parseHistoryPage(v: unknown, room: string): HistoryPage | null {
  if (!isObject(v)) return null;
  const messages = parseList(v.messages, (m) => parseMessage(m, room));
  if (messages === null) return null;
  return { messages, has_more: v.has_more === true };
}

/**
 * A fresh client message id. Uses `crypto.getRandomValues`, which (unlike
 * `crypto.randomUUID`) also exists on pages served over plain HTTP.
 */
export function newClientId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
