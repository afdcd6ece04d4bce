import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError, type TokenPair } from './api';
import { Backoff } from './backoff';
import type { Tokens } from './session';
import { refreshDueAt, SessionEndedError, TokenManager, type TokenStore } from './tokens';

const T0 = Date.UTC(2024, 5, 1, 12, 0, 0);
const TTL_S = 100;

function pair(n: number, expiresIn = TTL_S): TokenPair {
  return { accessToken: `access-${n}`, expiresIn, refreshToken: `refresh-${n}`, refreshExpiresIn: 86_400 };
}

function tokens(n: number, issuedAt = T0, ttlS = TTL_S): Tokens {
  return {
    accessToken: `access-${n}`,
    accessExpiresAt: issuedAt + ttlS * 1000,
    accessLifetimeMs: ttlS * 1000,
    refreshToken: `refresh-${n}`,
    refreshExpiresAt: issuedAt + 86_400_000,
  };
}

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const invalidRefresh = () => new ApiError(401, 'invalid_refresh_token', 'the refresh token is invalid');
const unreachable = () => new ApiError(0, 'network', 'Cannot reach the server.');

interface SetupOptions {
  initial?: Tokens;
  random?: number;
  refresh?: (refreshToken: string) => Promise<TokenPair>;
}

/** A manager whose server hands out access-1, access-2, … in turn, each living TTL_S seconds. */
function setup(options: SetupOptions = {}) {
  let issued = 0;
  const refresh = vi.fn(options.refresh ?? (async () => pair(++issued)));
  const logout = vi.fn(async () => {});
  const onEnded = vi.fn();
  const manager = new TokenManager({
    tokens: options.initial ?? tokens(0),
    refresh,
    logout,
    onEnded,
    random: () => options.random ?? 0,
    retryBackoff: new Backoff({ initialMs: 1000, maxMs: 8000, factor: 2, jitter: 0 }),
  });
  const seen: string[] = [];
  manager.subscribe((t) => seen.push(t.accessToken));
  return { manager, refresh, logout, onEnded, seen };
}

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(T0);
});

afterEach(() => {
  vi.useRealTimers();
});

describe('refreshDueAt', () => {
  it('falls at 70–80 % of the lifetime, picked by the random number', () => {
    const t = tokens(0);
    expect(refreshDueAt(t, 0)).toBe(T0 + 80_000);
    expect(refreshDueAt(t, 0.5)).toBe(T0 + 75_000);
    expect(refreshDueAt(t, 0.999_999)).toBeCloseTo(T0 + 70_000, -1);
  });
});

describe('TokenManager schedule', () => {
  it('refreshes at the due point and not before, then tells subscribers', async () => {
    const { manager, refresh, seen } = setup({ random: 0 });
    manager.start();
    await vi.advanceTimersByTimeAsync(79_999);
    expect(refresh).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(refresh).toHaveBeenCalledWith('refresh-0');
    expect(manager.accessToken).toBe('access-1');
    expect(seen).toEqual(['access-1']);
  });

  it('keeps refreshing, each time from the new token, with the new refresh token', async () => {
    const { manager, refresh, seen } = setup({ random: 0.5 });
    manager.start();
    // Due at 75 s, then 75 s after each refresh.
    await vi.advanceTimersByTimeAsync(75_000);
    await vi.advanceTimersByTimeAsync(75_000);
    await vi.advanceTimersByTimeAsync(75_000);
    expect(refresh.mock.calls.map((c) => c[0])).toEqual(['refresh-0', 'refresh-1', 'refresh-2']);
    expect(seen).toEqual(['access-1', 'access-2', 'access-3']);
    expect(manager.current.accessExpiresAt).toBe(T0 + 225_000 + TTL_S * 1000);
  });

  it('spreads the refresh point over the window with jitter', async () => {
    const early = setup({ random: 0.99 });
    early.manager.start();
    await vi.advanceTimersByTimeAsync(70_200);
    expect(early.refresh).toHaveBeenCalledTimes(1);
    early.manager.stop();

    vi.setSystemTime(T0);
    const late = setup({ random: 0 });
    late.manager.start();
    await vi.advanceTimersByTimeAsync(70_200);
    expect(late.refresh).not.toHaveBeenCalled();
  });

  it('refreshes at once a session restored with an expired access token', async () => {
    const { manager, refresh } = setup({ initial: tokens(0, T0 - 3_600_000) });
    manager.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(refresh).toHaveBeenCalledTimes(1);
    await expect(manager.ensureFresh()).resolves.toMatchObject({ accessToken: 'access-1' });
  });

  it('catches up on wake when timers were held back', async () => {
    const { manager, refresh } = setup({ random: 0 });
    manager.start();
    manager.wake();
    expect(refresh).not.toHaveBeenCalled();
    // The computer slept: the clock jumped, the timer did not fire.
    vi.setSystemTime(T0 + 95_000);
    manager.wake();
    await vi.advanceTimersByTimeAsync(0);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(manager.accessToken).toBe('access-1');
  });

  it('retries a refresh that could not reach the server, with backoff, keeping the old token meanwhile', async () => {
    let calls = 0;
    const { manager, refresh, onEnded } = setup({
      random: 0,
      refresh: async () => {
        calls += 1;
        if (calls <= 2) throw unreachable();
        return pair(1);
      },
    });
    manager.start();
    await vi.advanceTimersByTimeAsync(80_000);
    expect(refresh).toHaveBeenCalledTimes(1);
    expect(manager.accessToken).toBe('access-0');
    await vi.advanceTimersByTimeAsync(1_000);
    expect(refresh).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(refresh).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(refresh).toHaveBeenCalledTimes(3);
    expect(manager.accessToken).toBe('access-1');
    expect(refresh.mock.calls.every((c) => c[0] === 'refresh-0')).toBe(true);
    expect(onEnded).not.toHaveBeenCalled();
  });

  it('ends the session once when the refresh token is refused, and stops refreshing', async () => {
    const { manager, refresh, onEnded } = setup({
      random: 0,
      refresh: async () => {
        throw invalidRefresh();
      },
    });
    manager.start();
    await vi.advanceTimersByTimeAsync(80_000);
    expect(onEnded).toHaveBeenCalledTimes(1);
    expect(onEnded).toHaveBeenCalledWith('expired');
    await vi.advanceTimersByTimeAsync(600_000);
    expect(refresh).toHaveBeenCalledTimes(1);
    await expect(manager.refresh()).rejects.toBeInstanceOf(SessionEndedError);
    await expect(manager.withToken(async () => 'x')).rejects.toBeInstanceOf(SessionEndedError);
  });

  it('stops refreshing when stopped', async () => {
    const { manager, refresh } = setup();
    manager.start();
    manager.stop();
    await vi.advanceTimersByTimeAsync(600_000);
    expect(refresh).not.toHaveBeenCalled();
  });
});

describe('TokenManager single flight', () => {
  it('presents the refresh token once however many callers ask at once', async () => {
    const gate = deferred<TokenPair>();
    const { manager, refresh } = setup({ refresh: () => gate.promise });
    manager.start();
    const a = manager.refresh();
    const b = manager.refresh();
    const c = manager.ensureFresh(Infinity);
    await vi.advanceTimersByTimeAsync(0);
    expect(refresh).toHaveBeenCalledTimes(1);
    gate.resolve(pair(1));
    const results = await Promise.all([a, b, c]);
    expect(results.map((t) => t.accessToken)).toEqual(['access-1', 'access-1', 'access-1']);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('lets the scheduled refresh join one already in flight', async () => {
    const gate = deferred<TokenPair>();
    const { manager, refresh } = setup({ random: 0, refresh: () => gate.promise });
    manager.start();
    await vi.advanceTimersByTimeAsync(79_000);
    const early = manager.refresh();
    await vi.advanceTimersByTimeAsync(5_000);
    expect(refresh).toHaveBeenCalledTimes(1);
    gate.resolve(pair(1));
    await early;
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('refreshes again only after the previous refresh settled, with the token it returned', async () => {
    const { manager, refresh } = setup();
    manager.start();
    await manager.refresh();
    await manager.refresh();
    expect(refresh.mock.calls.map((c) => c[0])).toEqual(['refresh-0', 'refresh-1']);
  });

  it('does not refresh a token that is still fresh', async () => {
    const { manager, refresh } = setup();
    manager.start();
    await expect(manager.ensureFresh()).resolves.toMatchObject({ accessToken: 'access-0' });
    expect(refresh).not.toHaveBeenCalled();
  });
});

describe('TokenManager.withToken', () => {
  it('refreshes once on 401 and retries with the new token', async () => {
    const { manager, refresh } = setup();
    manager.start();
    const call = vi.fn(async (token: string) => {
      if (token === 'access-0') throw new ApiError(401, 'unauthorized', 'expired');
      return `ok with ${token}`;
    });
    await expect(manager.withToken(call)).resolves.toBe('ok with access-1');
    expect(call.mock.calls.map((c) => c[0])).toEqual(['access-0', 'access-1']);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('gives up after the retry also gets 401, without a second refresh', async () => {
    const { manager, refresh } = setup();
    manager.start();
    const call = vi.fn(async () => {
      throw new ApiError(401, 'unauthorized', 'no');
    });
    await expect(manager.withToken(call)).rejects.toMatchObject({ status: 401 });
    expect(call).toHaveBeenCalledTimes(2);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('shares one refresh among calls refused together', async () => {
    const gate = deferred<TokenPair>();
    const { manager, refresh } = setup({ refresh: () => gate.promise });
    manager.start();
    const call = async (token: string) => {
      if (token === 'access-0') throw new ApiError(401, 'unauthorized', 'expired');
      return token;
    };
    const results = Promise.all([manager.withToken(call), manager.withToken(call), manager.withToken(call)]);
    await vi.advanceTimersByTimeAsync(0);
    gate.resolve(pair(1));
    await expect(results).resolves.toEqual(['access-1', 'access-1', 'access-1']);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('retries with a token that arrived meanwhile instead of refreshing again', async () => {
    const { manager, refresh } = setup();
    manager.start();
    const slow = deferred<void>();
    const result = manager.withToken(async (token) => {
      if (token === 'access-0') {
        await slow.promise;
        throw new ApiError(401, 'unauthorized', 'expired');
      }
      return token;
    });
    await manager.refresh();
    slow.resolve();
    await expect(result).resolves.toBe('access-1');
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('refreshes before the call when the access token has already expired', async () => {
    const { manager, refresh } = setup();
    manager.start();
    vi.setSystemTime(T0 + TTL_S * 1000);
    const call = vi.fn(async (token: string) => token);
    await expect(manager.withToken(call)).resolves.toBe('access-1');
    expect(call).toHaveBeenCalledTimes(1);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('passes on errors other than 401 untouched', async () => {
    const { manager, refresh } = setup();
    manager.start();
    await expect(
      manager.withToken(async () => {
        throw new ApiError(503, 'unavailable', 'down');
      }),
    ).rejects.toMatchObject({ status: 503 });
    expect(refresh).not.toHaveBeenCalled();
  });
});

describe('TokenManager.logout', () => {
  it('revokes the session with the current refresh token and stops refreshing', async () => {
    const { manager, logout, refresh } = setup();
    manager.start();
    await manager.refresh();
    await manager.logout();
    expect(logout).toHaveBeenCalledWith('refresh-1');
    await vi.advanceTimersByTimeAsync(600_000);
    expect(refresh).toHaveBeenCalledTimes(1);
  });

  it('waits for a refresh in flight and presents the token it returned', async () => {
    const gate = deferred<TokenPair>();
    const { manager, logout, refresh } = setup({ refresh: () => gate.promise });
    manager.start();
    void manager.refresh().catch(() => {});
    await vi.advanceTimersByTimeAsync(0);
    expect(refresh).toHaveBeenCalledWith('refresh-0');
    const done = manager.logout();
    expect(logout).not.toHaveBeenCalled();
    gate.resolve(pair(1));
    await done;
    expect(logout).toHaveBeenCalledWith('refresh-1');
  });
});

/** The browser's shared storage and Web Lock, as two tabs see them. */
function sharedBrowser(initial: Tokens) {
  let stored: Tokens | null = initial;
  let queue: Promise<unknown> = Promise.resolve();
  const writes: Tokens[] = [];
  const store: TokenStore = {
    exclusive: <T,>(fn: () => Promise<T>) => {
      const run = queue.then(fn, fn);
      queue = run.catch(() => {});
      return run;
    },
    read: async () => stored,
    write: async (t) => {
      stored = t;
      writes.push(t);
    },
  };
  return {
    store,
    writes,
    logOutElsewhere: () => {
      stored = null;
    },
  };
}

describe('a session shared by the tabs of a browser', () => {
  function tab(store: TokenStore, refresh: (refreshToken: string) => Promise<TokenPair>, initial: Tokens) {
    const onEnded = vi.fn();
    const manager = new TokenManager({
      tokens: initial,
      refresh,
      logout: async () => {},
      onEnded,
      store,
      random: () => 0,
      retryBackoff: new Backoff({ initialMs: 1000, maxMs: 8000, factor: 2, jitter: 0 }),
    });
    const seen: string[] = [];
    manager.subscribe((t) => seen.push(t.accessToken));
    manager.start();
    return { manager, onEnded, seen };
  }

  it('presents the refresh token once when two tabs refresh at the same moment; the second takes the stored tokens', async () => {
    const expired = tokens(0, T0 - 3_600_000);
    const browser = sharedBrowser(expired);
    let issued = 0;
    const presented: string[] = [];
    const refresh = vi.fn(async (refreshToken: string) => {
      presented.push(refreshToken);
      await new Promise((r) => setTimeout(r, 100));
      return pair(++issued);
    });
    const a = tab(browser.store, refresh, expired);
    const b = tab(browser.store, refresh, expired);
    const both = Promise.all([a.manager.refresh(), b.manager.refresh()]);
    await vi.advanceTimersByTimeAsync(200);
    const [ta, tb] = await both;
    expect(presented).toEqual(['refresh-0']);
    expect(ta.accessToken).toBe('access-1');
    expect(tb.accessToken).toBe('access-1');
    expect(b.seen).toEqual(['access-1']);
    expect(browser.writes.map((t) => t.refreshToken)).toEqual(['refresh-1']);
    // The next refresh, wherever it happens, presents the new refresh token.
    vi.setSystemTime(T0 + TTL_S * 1000);
    const next = b.manager.refresh();
    await vi.advanceTimersByTimeAsync(200);
    await next;
    expect(presented).toEqual(['refresh-0', 'refresh-1']);
    expect(a.onEnded).not.toHaveBeenCalled();
    expect(b.onEnded).not.toHaveBeenCalled();
  });

  it('does not refresh again when tokens another tab refreshed arrived while it waited for the lock', async () => {
    const expired = tokens(0, T0 - 3_600_000);
    const browser = sharedBrowser(expired);
    const refresh = vi.fn(async () => pair(1));
    const b = tab(browser.store, refresh, expired);
    // Another tab holds the lock, refreshes and stores; its `storage` event reaches this tab first.
    let release!: () => void;
    const held = browser.store.exclusive(() => new Promise<void>((r) => (release = r)));
    const waiting = b.manager.refresh();
    await browser.store.write(tokens(1));
    b.manager.adopt(tokens(1));
    release();
    await held;
    expect((await waiting).accessToken).toBe('access-1');
    expect(refresh).not.toHaveBeenCalled();
  });

  it('takes tokens another tab stored, and schedules its own refresh from them', async () => {
    const browser = sharedBrowser(tokens(0));
    const refresh = vi.fn(async () => pair(9));
    const a = tab(browser.store, refresh, tokens(0));
    a.manager.adopt(tokens(1, T0 + 10_000));
    expect(a.manager.accessToken).toBe('access-1');
    expect(a.seen).toEqual(['access-1']);
    // The same or older tokens change nothing.
    a.manager.adopt(tokens(1, T0 + 10_000));
    a.manager.adopt(tokens(0));
    expect(a.seen).toEqual(['access-1']);
  });

  it('ends without presenting anything when another tab logged out', async () => {
    const browser = sharedBrowser(tokens(0));
    const refresh = vi.fn(async () => pair(1));
    const a = tab(browser.store, refresh, tokens(0));
    browser.logOutElsewhere();
    await expect(a.manager.refresh()).rejects.toBeInstanceOf(SessionEndedError);
    expect(refresh).not.toHaveBeenCalled();
    expect(a.onEnded).toHaveBeenCalledWith('elsewhere');
  });
});
