/**
 * Where the signed-in user's tokens live.
 *
 * The session (user, access token, refresh token) is kept in
 * `sessionStorage`, not `localStorage`: it survives a reload of the tab (so a
 * reload keeps the conversation) but is dropped when the tab closes, and each
 * tab has its own sign-in, so two accounts can be used side by side. Keeping
 * the session per tab is also what makes refresh-token rotation safe: the
 * server treats two uses of one refresh token as theft and ends the session,
 * so two tabs must never hold the same refresh token. A tab whose
 * `sessionStorage` was copied from a live one (duplicating a tab does that)
 * is caught by `claimSession` in `tokens.ts`. A 30-day refresh token that
 * outlives the tab would also be one more thing for an injected script or the
 * next user of a shared computer to find.
 *
 * The user's rooms are not kept here: the server lists them (`GET /api/rooms`).
 */
import type { TokenPair, User } from './api';

/** What the client holds to stay signed in; times are epoch ms. */
export interface Tokens {
  accessToken: string;
  /** When the server stops accepting the access token. */
  accessExpiresAt: number;
  /** How long the access token was issued for; refreshes are timed as a share of it. */
  accessLifetimeMs: number;
  refreshToken: string;
  /** When the session ends; a refresh cannot extend it. */
  refreshExpiresAt: number;
}

export interface Session {
  /** Random id of this sign-in, the same across token refreshes. */
  id: string;
  user: User;
  tokens: Tokens;
}

export function tokensFromPair(pair: TokenPair, now = Date.now()): Tokens {
  return {
    accessToken: pair.accessToken,
    accessExpiresAt: now + pair.expiresIn * 1000,
    accessLifetimeMs: pair.expiresIn * 1000,
    refreshToken: pair.refreshToken,
    refreshExpiresAt: now + pair.refreshExpiresIn * 1000,
  };
}

const SESSION_KEY = 'chat.session';

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    // Storage can be disabled by browser settings; the app then works without remembering.
    return null;
  }
}

function isTokens(v: unknown): v is Tokens {
  if (typeof v !== 'object' || v === null) return false;
  const t = v as Record<string, unknown>;
  return (
    typeof t.accessToken === 'string' &&
    typeof t.accessExpiresAt === 'number' &&
    typeof t.accessLifetimeMs === 'number' &&
    typeof t.refreshToken === 'string' &&
    typeof t.refreshExpiresAt === 'number'
  );
}

/**
 * The tab's session, if it can still be used. An expired access token is
 * fine (it is refreshed before use); an expired refresh token is not.
 */
export function loadSession(now = Date.now()): Session | null {
  const raw = storage()?.getItem(SESSION_KEY);
  if (raw == null) return null;
  try {
    const s = JSON.parse(raw) as Partial<Session>;
    if (typeof s.id !== 'string' || typeof s.user?.id !== 'string' || !isTokens(s.tokens)) {
      clearSession();
      return null;
    }
    if (s.tokens.refreshExpiresAt <= now) {
      clearSession();
      return null;
    }
    return s as Session;
  } catch {
    return null;
  }
}

export function saveSession(session: Session): void {
  storage()?.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession(): void {
  storage()?.removeItem(SESSION_KEY);
}
