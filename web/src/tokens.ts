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
 * presented twice, even by two requests at the same moment. So refreshes
 * never overlap: callers share the one in flight, and a tab refreshes only
 * after `claimSession` showed that no other live tab holds the same tokens
 * (see `session.ts` for why each tab has its own session).
 *
 * Nothing here needs a browser: the HTTP calls and the tab lock are passed in,
 * and the tests drive it with fake timers.
 */
import { ApiError, type TokenPair } from './api';
import { Backoff } from './backoff';
import { tokensFromPair, type Tokens } from './session';

/** Why a session ended: the server refused it, or another live tab holds the same tokens. */
export type SessionEnd = 'expired' | 'taken';

/** The tab's hold on its session's tokens; see `claimSession`. */
export interface SessionClaim {
  /** False when another live tab already holds this session. */
  readonly owned: boolean;
  /** Lets the next tab claim the session (sign-out, leaving the page). */
  release(): void;
}

export interface TokenManagerOptions {
  tokens: Tokens;
  refresh: (refreshToken: string) => Promise<TokenPair>;
  logout: (refreshToken: string) => Promise<void>;
  /** Called once when the session can no longer be used. */
  onEnded: (why: SessionEnd) => void;
  /** Claims the session for this tab; without it the tab is assumed to be the only one. */
  claim?: () => Promise<SessionClaim>;
  /** 0..1; picks where in the refresh window each token is refreshed. */
  random?: () => number;
  /** Delays between attempts when a refresh could not reach the server. */
  retryBackoff?: Backoff;
}

/** A refresh is due when this share of the token's lifetime is left … */
const REFRESH_WHEN_LEFT = 0.2;
/** … plus a random share of up to this much, so refreshes spread out. */
const REFRESH_JITTER = 0.1;
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

const soleTab: SessionClaim = { owned: true, release: () => {} };

export class TokenManager {
  private tokens: Tokens;
  private dueAt: number;
  private inflight: Promise<Tokens> | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running = false;
  private ended = false;
  private claim: Promise<SessionClaim> | null = null;
  private readonly listeners = new Set<(tokens: Tokens) => void>();
  private readonly random: () => number;
  private readonly retryBackoff: Backoff;

  constructor(private readonly opts: TokenManagerOptions) {
    this.tokens = opts.tokens;
    this.random = opts.random ?? Math.random;
    this.retryBackoff = opts.retryBackoff ?? new Backoff({ initialMs: 1000, maxMs: 30_000, factor: 2, jitter: 0.5 });
    this.dueAt = refreshDueAt(this.tokens, this.random());
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

  /** Claims the session for this tab and starts the refresh schedule; refreshes need it. */
  start(): void {
    if (this.running || this.ended) return;
    this.running = true;
    const claim = this.opts.claim?.() ?? Promise.resolve(soleTab);
    this.claim = claim;
    void claim.then((c) => {
      if (this.claim === claim && !c.owned) this.end('taken');
    });
    this.schedule();
  }

  /** Stops refreshing and lets another tab claim the session; the session itself stays valid. */
  stop(): void {
    if (!this.running) return;
    this.running = false;
    this.clearTimer();
    const claim = this.claim;
    this.claim = null;
    void claim?.then((c) => c.release());
  }

  /**
   * Refreshes now, or joins the refresh already in flight: however many
   * callers ask at once, the refresh token is presented once. Refused before
   * `start` and after `stop`, when the tab does not hold the session.
   */
  refresh(): Promise<Tokens> {
    if (this.ended || this.claim === null) return Promise.reject(new SessionEndedError());
    this.inflight ??= this.runRefresh().finally(() => {
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
    const claiming = this.claim ?? Promise.resolve(soleTab);
    await this.inflight?.catch(() => {});
    if (!(await claiming).owned) return;
    try {
      await this.opts.logout(this.tokens.refreshToken);
    } catch {
      // The server could not be reached: the session stays valid there until it expires,
      // but this tab has forgotten its tokens, so nobody holds them any more.
    }
  }

  private async runRefresh(): Promise<Tokens> {
    this.clearTimer();
    const claim = await (this.claim ?? Promise.resolve(soleTab));
    // A copy of another tab's session must never present its refresh token.
    if (!claim.owned || this.ended) throw new SessionEndedError();
    try {
      const pair = await this.opts.refresh(this.tokens.refreshToken);
      // Kept even after a log-out started meanwhile: the log-out then presents the newest token.
      this.tokens = tokensFromPair(pair, Date.now());
      if (this.ended) throw new SessionEndedError();
      this.dueAt = refreshDueAt(this.tokens, this.random());
      this.retryBackoff.reset();
      for (const listener of this.listeners) listener(this.tokens);
      this.schedule();
      return this.tokens;
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

/** How long a tab waits for the session's lock before concluding another live tab holds it. */
const CLAIM_WAIT_MS = 2_000;

/**
 * Claims a session for this tab with a Web Lock named after it, held until
 * `release`. Browsers copy `sessionStorage` into a duplicated tab, so two live
 * tabs can start out with the same refresh token; the first to claim the
 * session keeps it, and the copy finds the lock taken. Waiting a little
 * (rather than giving up at once) lets a reloading tab's previous page let
 * go of the lock first.
 *
 * Web Locks exist only in secure contexts (HTTPS, localhost). Without them
 * the tab is assumed to be alone.
 */
export function claimSession(
  sessionId: string,
  locks: LockManager | undefined = typeof navigator === 'undefined' ? undefined : navigator.locks,
  waitMs = CLAIM_WAIT_MS,
): Promise<SessionClaim> {
  if (locks === undefined) return Promise.resolve(soleTab);
  return new Promise((resolve) => {
    let release = () => {};
    const held = new Promise<void>((r) => {
      release = r;
    });
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), waitMs);
    locks
      .request(`chat.session.${sessionId}`, { signal: controller.signal }, () => {
        clearTimeout(timer);
        resolve({ owned: true, release });
        return held;
      })
      .catch((e: unknown) => {
        clearTimeout(timer);
        const name = typeof e === 'object' && e !== null ? (e as { name?: unknown }).name : undefined;
        const aborted = name === 'AbortError' || name === 'TimeoutError';
        // Any other failure means locks are unusable here: behave as the only tab.
        resolve(aborted ? { owned: false, release: () => {} } : soleTab);
      });
  });
}
