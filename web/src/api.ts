/**
 * HTTP calls to the auth and history APIs, all on the page's own origin (the
 * gateway forwards them). Every failure becomes an `ApiError` carrying the
 * server's error code, so screens can choose what to say per code.
 */
import { parseHistoryPage, parseUser, type HistoryPage, type UserRef } from './protocol';

export interface User extends UserRef {
  email: string;
  created_at: string;
}

export interface LoginResult {
  accessToken: string;
  /** Seconds until the token expires, as reported by the server. */
  expiresIn: number;
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
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

function asRecord(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function errorFromBody(status: number, body: unknown): ApiError {
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
  return new ApiError(status, code, message, fields);
}

interface RequestOptions {
  method?: 'GET' | 'POST';
  body?: unknown;
  token?: string;
  signal?: AbortSignal;
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
  if (!response.ok) throw errorFromBody(response.status, body);
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

export async function login(username: string, password: string): Promise<LoginResult> {
  const body = asRecord(await request('/api/auth/login', { method: 'POST', body: { username, password } }));
  if (typeof body?.access_token !== 'string') throw new ApiError(500, 'bad_response', 'Unexpected answer from the server');
  return {
    accessToken: body.access_token,
    expiresIn: typeof body.expires_in === 'number' ? body.expires_in : 900,
  };
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

/** The WebSocket address on this page's host, `wss:` when the page itself is secure. */
export function webSocketUrl(token: string, location: Pick<Location, 'protocol' | 'host'> = window.location): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
}
