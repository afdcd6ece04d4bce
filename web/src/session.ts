/**
 * Where the signed-in user's token lives, and the remembered rooms.
 *
 * The token is kept in `sessionStorage`, not `localStorage`: it survives a
 * reload of the tab (so a reload keeps the conversation) but is dropped when
 * the tab closes, and each tab has its own, so two accounts can be used side
 * by side in one browser. The token is short-lived and there is no refresh
 * token, so nothing is gained by keeping it longer, and a bearer token that
 * outlives the tab is one more thing for a script injection or a shared
 * computer to pick up.
 *
 * Recent rooms are not secret and are useful across sessions, so they go to
 * `localStorage`, keyed by user id.
 */
import type { User } from './api';

export interface Session {
  token: string;
  user: User;
  /** Epoch ms at which the server stops accepting the token. */
  expiresAt: number;
}

const SESSION_KEY = 'chat.session';
const RECENT_PREFIX = 'chat.recentRooms.';
const MAX_RECENT = 8;

function storage(kind: 'session' | 'local'): Storage | null {
  try {
    return kind === 'session' ? window.sessionStorage : window.localStorage;
  } catch {
    // Storage can be disabled by browser settings; the app then works without remembering.
    return null;
  }
}

export function loadSession(now = Date.now()): Session | null {
  const raw = storage('session')?.getItem(SESSION_KEY);
  if (raw == null) return null;
  try {
    const s = JSON.parse(raw) as Partial<Session>;
    if (typeof s.token !== 'string' || typeof s.expiresAt !== 'number' || typeof s.user?.id !== 'string') return null;
    if (s.expiresAt <= now) {
      clearSession();
      return null;
    }
    return s as Session;
  } catch {
    return null;
  }
}

export function saveSession(session: Session): void {
  storage('session')?.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession(): void {
  storage('session')?.removeItem(SESSION_KEY);
}

export function recentRooms(userId: string): string[] {
  const raw = storage('local')?.getItem(RECENT_PREFIX + userId);
  if (raw == null) return [];
  try {
    const list: unknown = JSON.parse(raw);
    return Array.isArray(list) ? list.filter((x): x is string => typeof x === 'string').slice(0, MAX_RECENT) : [];
  } catch {
    return [];
  }
}

/** Moves `room` to the front of the user's recent rooms. */
export function rememberRoom(userId: string, room: string): string[] {
  const list = [room, ...recentRooms(userId).filter((r) => r !== room)].slice(0, MAX_RECENT);
  storage('local')?.setItem(RECENT_PREFIX + userId, JSON.stringify(list));
  return list;
}

export function forgetRoom(userId: string, room: string): string[] {
  const list = recentRooms(userId).filter((r) => r !== room);
  storage('local')?.setItem(RECENT_PREFIX + userId, JSON.stringify(list));
  return list;
}
