/**
 * HTTP calls to the auth and history APIs, all on the page's own origin (the
 * gateway forwards them). Every failure becomes an `ApiError` carrying the
 * server's error code, so screens can choose what to say per code.
 */
import {
  parseChangesPage,
  parseHistoryPage,
  parseMember,
  parseRoomView,
  parseRoomViews,
  parseUser,
  type ChangesPage,
  type HistoryPage,
  type Member,
  type Role,
  type RoomView,
  type UserRef,
} from './protocol';

export interface User extends UserRef {
  email: string;
  created_at: string;
}

/** The answer of `login` and `refresh`: a short-lived access token and the refresh token that renews it. */
export interface TokenPair {
  accessToken: string;
  /** Seconds until the access token expires, as reported by the server. */
  expiresIn: number;
  /** Single use: `refresh` spends it and hands out the next one. */
  refreshToken: string;
  /** Seconds until the session ends, whatever the refreshes. */
  refreshExpiresIn: number;
}

export class ApiError extends Error {
  constructor(
    /** HTTP status, or 0 when the server could not be reached. */
    readonly status: number,
    /** The server's machine-readable code, e.g. `invalid_credentials`. */
    readonly code: string,
    message: string,
    /** Per-field problems, present on `validation_failed`. */
    readonly fields: Readonly<Record<string, string>> = {},
    /** Seconds to wait before trying again, from `Retry-After` (on 429). */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function asRecord(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

/** `Retry-After` as seconds from now: either delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

function errorFromBody(status: number, body: unknown, retryAfter: number | null): ApiError {
  const error = asRecord(asRecord(body)?.error);
  const code = typeof error?.code === 'string' ? error.code : `http_${status}`;
  const message = typeof error?.message === 'string' ? error.message : `Request failed (${status})`;
  const fields: Record<string, string> = {};
  const rawFields = asRecord(error?.fields);
  if (rawFields !== null) {
    for (const [k, v] of Object.entries(rawFields)) {
      if (typeof v === 'string') fields[k] = v;
      else if (Array.isArray(v) && typeof v[0] === 'string') fields[k] = v[0];
    }
  }
  return new ApiError(status, code, message, fields, retryAfter);
}

interface RequestOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  body?: unknown;
  token?: string;
  signal?: AbortSignal;
  /** Let the request finish even if the page is closed meanwhile (log out). */
  keepalive?: boolean;
}

async function request(path: string, options: RequestOptions = {}): Promise<unknown> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  if (options.token !== undefined) headers.Authorization = `Bearer ${options.token}`;
  let response: Response;
  try {
    response = await fetch(path, {
      method: options.method ?? 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
      keepalive: options.keepalive,
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection and try again.');
  }
  let body: unknown = null;
  const text = await response.text();
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) throw errorFromBody(response.status, body, parseRetryAfter(response.headers.get('Retry-After')));
  return body;
}

function parseFullUser(v: unknown): User {
  const user = asRecord(asRecord(v)?.user);
  const ref = parseUser(user);
  if (user === null || ref === null) throw new ApiError(500, 'bad_response', 'Unexpected answer from the server');
  return {
    ...ref,
    email: typeof user.email === 'string' ? user.email : '',
    created_at: typeof user.created_at === 'string' ? user.created_at : '',
  };
}

export async function signup(username: string, email: string, password: string): Promise<User> {
  return parseFullUser(await request('/api/auth/signup', { method: 'POST', body: { username, email, password } }));
}

function parseTokenPair(v: unknown): TokenPair {
  const body = asRecord(v);
  if (typeof body?.access_token !== 'string' || typeof body.refresh_token !== 'string') {
    throw new ApiError(500, 'bad_response', 'Unexpected answer from the server');
  }
  return {
    accessToken: body.access_token,
    expiresIn: typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 900,
    refreshToken: body.refresh_token,
    refreshExpiresIn:
      typeof body.refresh_expires_in === 'number' && body.refresh_expires_in > 0 ? body.refresh_expires_in : 30 * 24 * 3600,
  };
}

export async function login(username: string, password: string): Promise<TokenPair> {
  return parseTokenPair(await request('/api/auth/login', { method: 'POST', body: { username, password } }));
}

/**
 * Exchanges a refresh token for a new pair. The presented token is spent:
 * presenting it again, even concurrently, ends the whole session (401
 * `invalid_refresh_token`), so callers must never run two at once.
 */
export async function refresh(refreshToken: string): Promise<TokenPair> {
  return parseTokenPair(await request('/api/auth/refresh', { method: 'POST', body: { refresh_token: refreshToken } }));
}

/** Ends the session the refresh token belongs to. Survives the page being closed right after. */
export async function logout(refreshToken: string): Promise<void> {
  await request('/api/auth/logout', { method: 'POST', body: { refresh_token: refreshToken }, keepalive: true });
}

export async function me(token: string): Promise<User> {
  return parseFullUser(await request('/api/auth/me', { token }));
}

/**
 * Where a history page starts: the messages just before `before` (the latest
 * ones when it is absent), or the ones just after `after`.
 */
export type HistoryCursor = { before: string | null } | { after: string };

export async function fetchHistory(token: string, room: string, cursor: HistoryCursor, limit: number): Promise<HistoryPage> {
  const query = new URLSearchParams({ limit: String(limit) });
  if ('after' in cursor) query.set('after', cursor.after);
  else if (cursor.before !== null) query.set('before', cursor.before);
  const body = await request(`/api/rooms/${encodeURIComponent(room)}/messages?${query}`, { token });
  const page = parseHistoryPage(body, room);
  if (page === null) throw new ApiError(500, 'bad_response', 'Unexpected answer from the server');
  return page;
}

/** Messages of a room changed after `afterMs` (Unix ms), in their current state, oldest change first. */
export async function fetchChanges(token: string, room: string, afterMs: number, limit: number): Promise<ChangesPage> {
  const query = new URLSearchParams({ after: String(afterMs), limit: String(limit) });
  const body = await request(`/api/rooms/${encodeURIComponent(room)}/changes?${query}`, { token });
  const page = parseChangesPage(body, room);
  if (page === null) throw new ApiError(500, 'bad_response', 'Unexpected answer from the server');
  return page;
}

// ---- rooms (docs/rooms.md) ----------------------------------------------------

function badResponse(): ApiError {
  return new ApiError(500, 'bad_response', 'Unexpected answer from the server');
}

function roomPath(room: string, rest = ''): string {
  return `/api/rooms/${encodeURIComponent(room)}${rest}`;
}

function expectView(body: unknown): RoomView {
  const view = parseRoomView(body);
  if (view === null) throw badResponse();
  return view;
}

/** The user's rooms and visible DMs, most recent activity first. */
export async function listRooms(token: string): Promise<RoomView[]> {
  const rooms = parseRoomViews(asRecord(await request('/api/rooms', { token }))?.rooms);
  if (rooms === null) throw badResponse();
  return rooms;
}

export interface DirectoryPage {
  rooms: RoomView[];
  nextCursor: string | null;
}

/** Public rooms whose id or name contains `q`, most members first. */
export async function searchDirectory(token: string, q: string, cursor: string | null = null): Promise<DirectoryPage> {
  const query = new URLSearchParams({ q });
  if (cursor !== null) query.set('cursor', cursor);
  const body = asRecord(await request(`/api/rooms/directory?${query}`, { token }));
  const rooms = parseRoomViews(body?.rooms);
  if (rooms === null) throw badResponse();
  return { rooms, nextCursor: typeof body?.next_cursor === 'string' ? body.next_cursor : null };
}

export interface NewRoom {
  kind: 'public' | 'private';
  name: string;
  topic: string;
  /** The room id; the server picks one when absent. */
  id?: string;
}

export async function createRoom(token: string, room: NewRoom): Promise<RoomView> {
  return expectView(await request('/api/rooms', { method: 'POST', token, body: room }));
}

export async function getRoom(token: string, room: string): Promise<RoomView> {
  return expectView(await request(roomPath(room), { token }));
}

export interface RoomChanges {
  name?: string;
  topic?: string;
  kind?: 'public' | 'private';
}

export async function updateRoom(token: string, room: string, changes: RoomChanges): Promise<RoomView> {
  return expectView(await request(roomPath(room), { method: 'PATCH', token, body: changes }));
}

export async function archiveRoom(token: string, room: string): Promise<void> {
  await request(roomPath(room), { method: 'DELETE', token });
}

/** Joins a public room (or finds the user already in it). */
export async function joinRoom(token: string, room: string): Promise<RoomView> {
  return expectView(await request(roomPath(room, '/join'), { method: 'POST', token }));
}

export interface MembersPage {
  members: Member[];
  nextCursor: string | null;
}

export async function listMembers(token: string, room: string, cursor: string | null = null): Promise<MembersPage> {
  const query = cursor === null ? '' : `?${new URLSearchParams({ cursor })}`;
  const body = asRecord(await request(roomPath(room, `/members${query}`), { token }));
  if (!Array.isArray(body?.members)) throw badResponse();
  const members = body.members.map(parseMember).filter((m): m is Member => m !== null);
  return { members, nextCursor: typeof body.next_cursor === 'string' ? body.next_cursor : null };
}

/** Adds a member by username (`404 user_not_found` for an unknown one). */
export async function addMember(token: string, room: string, username: string): Promise<void> {
  await request(roomPath(room, '/members'), { method: 'POST', token, body: { username } });
}

/** Kicks a member, or leaves the room when `userId` is the caller's own. */
export async function removeMember(token: string, room: string, userId: string): Promise<void> {
  await request(roomPath(room, `/members/${encodeURIComponent(userId)}`), { method: 'DELETE', token });
}

export async function setRole(token: string, room: string, userId: string, role: Role): Promise<void> {
  await request(roomPath(room, `/members/${encodeURIComponent(userId)}`), { method: 'PUT', token, body: { role } });
}

export async function banMember(token: string, room: string, userId: string): Promise<void> {
  await request(roomPath(room, `/bans/${encodeURIComponent(userId)}`), { method: 'POST', token });
}

export async function unbanMember(token: string, room: string, userId: string): Promise<void> {
  await request(roomPath(room, `/bans/${encodeURIComponent(userId)}`), { method: 'DELETE', token });
}

/** Opens (or finds) the direct message room with `username`. */
export async function openDm(token: string, username: string): Promise<RoomView> {
  return expectView(await request('/api/dms', { method: 'POST', token, body: { username } }));
}

/** Users whose name starts with `q` (at most 20). */
export async function searchUsers(token: string, q: string): Promise<UserRef[]> {
  const body = asRecord(await request(`/api/users?${new URLSearchParams({ q })}`, { token }));
  if (!Array.isArray(body?.users)) throw badResponse();
  return body.users.map(parseUser).filter((u): u is UserRef => u !== null);
}

/** The WebSocket address on this page's host, `wss:` when the page itself is secure. */
export function webSocketUrl(token: string, location: Pick<Location, 'protocol' | 'host'> = window.location): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
}
