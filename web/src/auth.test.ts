import { afterEach, describe, expect, it, vi } from 'vitest';
import { ApiError, login, parseRetryAfter, refresh } from './api';
import { describeAuthError, describeWait, isValidEmail, signIn } from './auth';
import { loadSession, saveSession } from './session';

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

const rateLimited = { error: { code: 'rate_limited', message: 'too many attempts; retry later' } };

afterEach(() => {
  vi.useRealTimers();
});

describe('too many attempts (429)', () => {
  it('reads Retry-After from the answer', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => jsonResponse(429, rateLimited, { 'Retry-After': '42' })));
    const error = await login('alice', 'secret123').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 429, code: 'rate_limited', retryAfter: 42 });
  });

  it('says how long to wait', () => {
    const problem = describeAuthError(new ApiError(429, 'rate_limited', 'too many attempts', {}, 42));
    expect(problem.summary).toBe('Too many attempts. Please wait 42 seconds and try again.');
    expect(describeAuthError(new ApiError(429, 'rate_limited', 'x', {}, 360)).summary).toBe(
      'Too many attempts. Please wait 6 minutes and try again.',
    );
  });

  it('still says what happened when the wait is unknown', () => {
    expect(describeAuthError(new ApiError(429, 'rate_limited', 'x')).summary).toBe(
      'Too many attempts. Please wait a moment and try again.',
    );
  });

  it('words waits in seconds, then minutes, rounded up', () => {
    expect(describeWait(1)).toBe('1 second');
    expect(describeWait(0.2)).toBe('1 second');
    expect(describeWait(89)).toBe('89 seconds');
    expect(describeWait(90)).toBe('2 minutes');
    expect(describeWait(3600)).toBe('60 minutes');
  });

  it('accepts both forms of Retry-After', () => {
    const now = Date.UTC(2024, 5, 1, 12, 0, 0);
    expect(parseRetryAfter('12', now)).toBe(12);
    expect(parseRetryAfter('Sat, 01 Jun 2024 12:01:30 GMT', now)).toBe(90);
    expect(parseRetryAfter('soon', now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });
});

describe('signing in', () => {
  it('keeps both tokens and when each expires, under a new session id', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.UTC(2024, 5, 1, 12, 0, 0));
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string) =>
        url === '/api/auth/login'
          ? jsonResponse(200, {
              access_token: 'a1',
              token_type: 'Bearer',
              expires_in: 900,
              refresh_token: 'r1',
              refresh_expires_in: 2_592_000,
            })
          : jsonResponse(200, { user: { id: 'u1', username: 'alice', email: 'a@example.com', created_at: 'x' } }),
      ),
    );
    const first = await signIn('alice', 'secret123');
    const second = await signIn('alice', 'secret123');
    expect(first.tokens).toEqual({
      accessToken: 'a1',
      accessExpiresAt: Date.now() + 900_000,
      accessLifetimeMs: 900_000,
      refreshToken: 'r1',
      refreshExpiresAt: Date.now() + 2_592_000_000,
    });
    expect(first.user.username).toBe('alice');
    expect(first.id).not.toBe(second.id);
  });

  it('sends the refresh token to /api/auth/refresh', async () => {
    const fetch = vi.fn(async () =>
      jsonResponse(200, { access_token: 'a2', expires_in: 900, refresh_token: 'r2', refresh_expires_in: 100 }),
    );
    vi.stubGlobal('fetch', fetch);
    await expect(refresh('r1')).resolves.toMatchObject({ accessToken: 'a2', refreshToken: 'r2' });
    const [url, init] = fetch.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('/api/auth/refresh');
    expect(JSON.parse(init.body as string)).toEqual({ refresh_token: 'r1' });
  });
});

describe('the stored session', () => {
  const user = { id: 'u1', username: 'alice', email: 'a@example.com', created_at: 'x' };
  const now = Date.UTC(2024, 5, 1, 12, 0, 0);

  it('survives an expired access token while the refresh token is valid', () => {
    const session = {
      id: 's1',
      user,
      tokens: { accessToken: 'a', accessExpiresAt: now - 1, accessLifetimeMs: 900_000, refreshToken: 'r', refreshExpiresAt: now + 1 },
    };
    saveSession(session);
    expect(loadSession(now)).toEqual(session);
  });

  it('is dropped once the refresh token has expired, or when it has the old shape', () => {
    saveSession({
      id: 's1',
      user,
      tokens: { accessToken: 'a', accessExpiresAt: now, accessLifetimeMs: 900_000, refreshToken: 'r', refreshExpiresAt: now },
    });
    expect(loadSession(now)).toBeNull();
    window.localStorage.setItem('chat.session', JSON.stringify({ token: 'a', user, expiresAt: now + 1000 }));
    expect(loadSession(now)).toBeNull();
  });
});

describe('isValidEmail', () => {
  it('accepts and refuses what the server does', () => {
    for (const good of ['bob@example.com', ' Bob@Example.COM ', 'a.b-c@sub.example.org', 'ü@bücher.de']) {
      expect(isValidEmail(good), good).toBe(true);
    }
    for (const bad of ['bob', 'bob@', '@x.com', 'bob@x', 'a@b', 'bo b@x.com', 'a@b@c.com', 'a@.x.com', 'a@x.com.', 'a@x..com', 'a@x_y.com', `${'a'.repeat(65)}@x.com`]) {
      expect(isValidEmail(bad), bad).toBe(false);
    }
  });
});
