/**
 * Where the signed-in user's tokens live: one session per browser, shared by its tabs.
 *
 * The session (user, access token, refresh token) is kept in `localStorage`,
 * so every tab of the browser uses it: a new tab, a shared link opened in
 * one, or a reload starts signed in, and logging in or out in one tab does so
 * in all of them (`storage` events; see `App.tsx`). Refresh tokens are single
 * use, and the server ends the session when one is presented twice (two tabs
 * refreshing at once would do that), so a refresh holds the session's Web
 * Lock, reads the stored tokens first and stores the new ones before letting
 * go (`sharedTokenStore`, used by `TokenManager`): one refresh in flight across
 * all tabs, and a tab that finds the tokens already refreshed takes them.
 *
 * Web Locks exist in secure contexts (HTTPS, localhost). Without them tabs
 * still share the session, but two of them refreshing within the same moment
 * would end it; each tab's refresh point is picked at random in a window, so
 * that is rare, and the user then logs in again.
 *
 * The user's rooms are not kept here: the server lists them (`GET /api/rooms`).
 */
import type { TokenPair, User } from './api';
import type { TokenStore } from './tokens';

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

/** The `localStorage` key of the session; other tabs watch it through `storage` events. */
export const SESSION_KEY = 'chat.session';

function storage(): Storage | null {
  try {
    return window.localStorage;
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

/** A stored session as read from its JSON text (e.g. a `storage` event's value), if it can still be used. */
export function parseSession(raw: string | null, now = Date.now()): Session | null {
  if (raw === null) return null;
  try {
    const s = JSON.parse(raw) as Partial<Session>;
    if (typeof s.id !== 'string' || typeof s.user?.id !== 'string' || !isTokens(s.tokens)) return null;
    return s.tokens.refreshExpiresAt <= now ? null : (s as Session);
  } catch {
    return null;
  }
}

/**
 * The browser's session, if it can still be used. An expired access token is
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
  clearSharedSession();
}

/**
 * The session's tokens as the tabs share them (see the top of this file). `localStorage` tells
 * the other tabs (its `storage` events) and gives a new tab the session, but a tab may read
 * it a moment before another tab's write reaches it (browsers copy it into each tab's process
 * and update the copies by messages). So the tokens are also written to IndexedDB, whose
 * transactions every tab sees in order, before the refresh lock is let go, and read from
 * there under the lock: the next tab to refresh always finds the newest refresh token.
 */
export function sharedTokenStore(
  session: Pick<Session, 'id' | 'user'>,
  locks: LockManager | undefined = typeof navigator === 'undefined' ? undefined : navigator.locks,
  db: IDBFactory | undefined = typeof indexedDB === 'undefined' ? undefined : indexedDB,
): TokenStore {
  const mine = (stored: Session | null): Tokens | null => (stored !== null && stored.id === session.id ? stored.tokens : null);
  return {
    exclusive: <T,>(refresh: () => Promise<T>) =>
      locks === undefined ? refresh() : (locks.request(`chat.refresh.${session.id}`, refresh) as Promise<T>),
    read: async () => {
      const local = loadSession();
      if (local === null) return null; // Logged out (in this tab or another).
      const durable = await idbGet(db).catch(() => null);
      const shared = mine(parseSession(durable));
      const current = mine(local);
      if (shared === null) return current;
      if (current === null) return shared;
      // The one issued last wins.
      return shared.accessExpiresAt > current.accessExpiresAt ? shared : current;
    },
    write: async (tokens) => {
      const value: Session = { id: session.id, user: session.user, tokens };
      saveSession(value);
      await idbPut(db, JSON.stringify(value)).catch(() => {});
    },
  };
}

const IDB_NAME = 'chat';
const IDB_STORE = 'session';
const IDB_KEY = 'current';

function idbOpen(db: IDBFactory | undefined): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    if (db === undefined) {
      reject(new Error('no IndexedDB'));
      return;
    }
    const request = db.open(IDB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(IDB_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error('IndexedDB open failed'));
  });
}

async function idbGet(db: IDBFactory | undefined): Promise<string | null> {
  const conn = await idbOpen(db);
  try {
    return await new Promise((resolve, reject) => {
      const request = conn.transaction(IDB_STORE, 'readonly').objectStore(IDB_STORE).get(IDB_KEY);
      request.onsuccess = () => resolve(typeof request.result === 'string' ? request.result : null);
      request.onerror = () => reject(request.error ?? new Error('IndexedDB read failed'));
    });
  } finally {
    conn.close();
  }
}

/** Writes the session and resolves once the transaction is committed (visible to every tab). */
async function idbPut(db: IDBFactory | undefined, value: string | null): Promise<void> {
  const conn = await idbOpen(db);
  try {
    await new Promise<void>((resolve, reject) => {
      const tx = conn.transaction(IDB_STORE, 'readwrite');
      const store = tx.objectStore(IDB_STORE);
      if (value === null) store.delete(IDB_KEY);
      else store.put(value, IDB_KEY);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error('IndexedDB write failed'));
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB write aborted'));
    });
  } finally {
    conn.close();
  }
}

/** Forgets the IndexedDB copy of the session too (log-out); best effort. */
export function clearSharedSession(db: IDBFactory | undefined = typeof indexedDB === 'undefined' ? undefined : indexedDB): void {
  idbPut(db, null).catch(() => {});
}
