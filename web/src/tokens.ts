/**
 * Keeps a signed-in tab's access token fresh, silently.
 *
 * `TokenManager` refreshes the access token before it expires, when 20–30 %
 * of its lifetime is left (the exact point is random, so clients that signed
 * in together do not all refresh together), and tells its subscribers about
 * every new token: the session is stored again and the live connection sends
 * the token in-band. HTTP calls go through `withToken`, which refreshes once
 * and retries when the server answers 401. A refused refresh ends the
 * session; a refresh that could not reach the server is tried again with
 * backoff.
 *
 * Refresh tokens are single use, and the server ends the session when one is
 * presented twice, even by two requests at the same moment. The tabs of a
 * browser share one session (see `session.ts`), so refreshes never overlap,
 * within a tab or across tabs: callers in a tab share the one in flight, and a
 * refresh runs under the session's `TokenStore` lock (a Web Lock), reading the
 * stored tokens first: when another tab refreshed meanwhile, its tokens are
 * taken as they are, without presenting the spent refresh token again. The new
 * tokens are stored before the lock is let go, so the next tab finds them.
 * Tokens another tab stored reach this one through `adopt`.
 *
 * Nothing here needs a browser: the HTTP calls and the token store (with its
 * lock) are passed in, and the tests drive it with fake timers.
 */
import { ApiError, type TokenPair } from './api';
import { Backoff } from './backoff';
import { tokensFromPair, type Tokens } from './session';

/** Why a session ended: the server refused it, or it was ended in another tab (logged out there). */
export type SessionEnd = 'expired' | 'elsewhere';

/** Where the session's tokens are shared with the browser's other tabs. */
export interface TokenStore {
  /** Runs `refresh` while no other tab runs a refresh of the same session. */
  exclusive<T>(refresh: () => Promise<T>): Promise<T>;
  /**
   * The tokens as last stored by any tab; `null` once the session was ended (logged out).
   * Called under the lock, it must see what the previous holder wrote.
   */
  read(): Promise<Tokens | null>;
  /** Stores new tokens; resolves once other tabs will read them. */
  write(tokens: Tokens): Promise<void>;
}

export interface TokenManagerOptions {
  tokens: Tokens;
  refresh: (refreshToken: string) => Promise<TokenPair>;
  logout: (refreshToken: string) => Promise<void>;
  /** Called once when the session can no longer be used. */
  onEnded: (why: SessionEnd) => void;
  /** The tokens shared with other tabs; without it the tab is assumed to be the only one. */
  store?: TokenStore;
  /** 0..1; picks where in the refresh window each token is refreshed. */
  random?: () => number;
  /** Delays between attempts when a refresh could not reach the server. */
  retryBackoff?: Backoff;
}

/** A refresh is due when this share of the token's lifetime is left … */
const REFRESH_WHEN_LEFT = 0.2;
/** … plus a random share of up to this much, so refreshes spread out. */
const REFRESH_JITTER = 0.1;
/** An access token another tab stored is used as it is when it stays valid this much longer. */
const FRESH_ENOUGH_MS = 5_000;
/** Longest delay `setTimeout` handles (about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * When a token should be refreshed: while 20–30 % of its lifetime is left,
 * i.e. at 70–80 % of `expires_in` after it was issued. `random` in [0, 1)
 * picks the point in that window.
 */
export function refreshDueAt(tokens: Pick<Tokens, 'accessExpiresAt' | 'accessLifetimeMs'>, random: number): number {
  const left = tokens.accessLifetimeMs * (REFRESH_WHEN_LEFT + REFRESH_JITTER * random);
  return tokens.accessExpiresAt - left;
}

/** Whether a failed refresh means the session is over, rather than the server being out of reach. */
export function endsSession(e: unknown): boolean {
  return e instanceof ApiError && (e.status === 401 || e.status === 400 || e.status === 422);
}

/** Thrown to callers that want a token after the session ended. */
export class SessionEndedError extends Error {
  constructor() {
    super('The session has ended');
    this.name = 'SessionEndedError';
  }
}

/** A store for a tab that shares nothing: no lock, nothing kept. */
function soleTab(current: () => Tokens): TokenStore {
  return { exclusive: (refresh) => refresh(), read: async () => current(), write: async () => {} };
}

export class TokenManager {
  private tokens: Tokens;
  private dueAt: number;
  private inflight: Promise<Tokens> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private ended = false;
  private readonly store: TokenStore;
  private readonly listeners = new Set<(tokens: Tokens) => void>();
  private readonly random: () => number;
  private readonly retryBackoff: Backoff;

  constructor(private readonly opts: TokenManagerOptions) {
    this.tokens = opts.tokens;
    this.random = opts.random ?? Math.random;
    this.retryBackoff = opts.retryBackoff ?? new Backoff({ initialMs: 1000, maxMs: 30_000, factor: 2, jitter: 0.5 });
    this.dueAt = refreshDueAt(this.tokens, this.random());
    this.store = opts.store ?? soleTab(() => this.tokens);
  }

  get current(): Tokens {
    return this.tokens;
  }

  get accessToken(): string {
    return this.tokens.accessToken;
  }

  /** Called with each new set of tokens. */
  subscribe(listener: (tokens: Tokens) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Starts the refresh schedule; refreshes need it. */
  start(): void {
    if (this.running || this.ended) return;
    this.running = true;
    this.schedule();
  }

  /** Stops refreshing (leaving the page, signing out); the session itself stays valid. */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.clearTimer();
  }

  /**
   * Takes tokens another tab stored (it refreshed): they replace this tab's
   * when they are newer, and subscribers hear of them as of a refresh here.
   */
  adopt(tokens: Tokens): void {
    if (this.ended || tokens.refreshToken === this.tokens.refreshToken) return;
    if (tokens.accessExpiresAt < this.tokens.accessExpiresAt) return;
    this.take(tokens);
  }

  /**
   * Refreshes now, or joins the refresh already in flight: however many
   * callers ask at once, in however many tabs, the refresh token is presented
   * once. Refused before `start` and after `stop`.
   */
  refresh(): Promise<Tokens> {
    if (this.ended || !this.running) return Promise.reject(new SessionEndedError());
    // The token to replace: if another tab replaced it by the time this one holds the lock, that will do.
    const replacing = this.tokens.accessToken;
    this.inflight ??= this.runRefresh(replacing).finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  /** The current tokens if the access token stays valid for `minValidityMs` more, otherwise fresh ones. */
  ensureFresh(minValidityMs = 5_000): Promise<Tokens> {
    if (this.ended) return Promise.reject(new SessionEndedError());
    if (this.tokens.accessExpiresAt - Date.now() > minValidityMs) return Promise.resolve(this.tokens);
    return this.refresh();
  }

  /**
   * Runs an authenticated HTTP call. On 401 the token is refreshed (unless a
   * newer one arrived meanwhile) and the call is made once more; a second 401
   * is the caller's to handle.
   */
  async withToken<T>(call: (accessToken: string) => Promise<T>): Promise<T> {
    const used = (await this.ensureFresh(1_000)).accessToken;
    try {
      return await call(used);
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401 || this.ended) throw e;
      const next = this.tokens.accessToken !== used ? this.tokens : await this.refresh();
      return call(next.accessToken);
    }
  }

  /**
   * Refreshes at once if the schedule is overdue: timers do not run while a
   * computer sleeps, and browsers slow them down in background tabs.
   */
  wake(): void {
    if (this.running && !this.ended && this.inflight === null && Date.now() >= this.dueAt) {
      this.refresh().catch(() => {});
    }
  }

  /**
   * Ends the session on the server (best effort) and stops. A tab that does
   * not own the session does not revoke it: that would sign the owner out.
   */
  async logout(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.clearTimer();
    await this.inflight?.catch(() => {});
    try {
      await this.opts.logout(this.tokens.refreshToken);
    } catch {
      // The server could not be reached: the session stays valid there until it expires,
      // but this tab has forgotten its tokens, so nobody holds them any more.
    }
  }

  private async runRefresh(replacing: string): Promise<Tokens> {
    this.clearTimer();
    try {
      return await this.store.exclusive(async () => {
        if (this.ended) throw new SessionEndedError();
        const stored = await this.store.read();
        if (this.ended) throw new SessionEndedError();
        if (stored === null) {
          // Logged out in another tab.
          this.end('elsewhere');
          throw new SessionEndedError();
        }
        if (stored.refreshToken !== this.tokens.refreshToken && stored.accessExpiresAt >= this.tokens.accessExpiresAt) {
          // Another tab refreshed: its refresh token is the one to present next.
          this.take(stored);
        }
        // Replaced meanwhile (by another tab, here or through a `storage` event): no need to refresh again.
        if (this.tokens.accessToken !== replacing && this.tokens.accessExpiresAt - Date.now() > FRESH_ENOUGH_MS) return this.tokens;
        const pair = await this.opts.refresh(this.tokens.refreshToken);
        // Stored even after a log-out started meanwhile: the log-out then presents the newest token.
        const fresh = tokensFromPair(pair, Date.now());
        this.tokens = fresh;
        if (this.ended) throw new SessionEndedError();
        await this.store.write(fresh);
        this.retryBackoff.reset();
        this.take(fresh);
        return fresh;
      });
    } catch (e) {
      if (e instanceof SessionEndedError) throw e;
      if (endsSession(e)) {
        this.end('expired');
      } else if (this.running) {
        this.setTimer(this.retryBackoff.next());
      }
      throw e;
    }
  }

  /** Makes `tokens` the current ones, schedules their refresh and tells the subscribers. */
  private take(tokens: Tokens): void {
    this.tokens = tokens;
    this.dueAt = refreshDueAt(tokens, this.random());
    for (const listener of this.listeners) listener(tokens);
    this.schedule();
  }

  private end(why: SessionEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.clearTimer();
    this.opts.onEnded(why);
  }

  private schedule(): void {
    if (!this.running || this.ended) return;
    this.setTimer(this.dueAt - Date.now());
  }

  private setTimer(delayMs: number): void {
    this.clearTimer();
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.refresh().catch(() => {});
      },
      Math.min(MAX_TIMER_MS, Math.max(0, delayMs)),
    );
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
