import { act, render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { App, ENDED_NOTICE } from './App';
import { loadSession, saveSession, type Session } from './session';

/** Never connects: these tests are about the session, not the chat. */
class IdleSocket {
  static readonly sockets: IdleSocket[] = [];
  readyState = 0;
  onopen = null;
  onclose = null;
  onmessage = null;
  onerror = null;
  constructor(readonly url: string) {
    IdleSocket.sockets.push(this);
  }
  send(): void {}
  close(): void {
    this.readyState = 3;
  }
}

function jsonResponse(status: number, body: unknown): Response {
  return new Response(body === null ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

const user = { id: 'u1', username: 'alice', email: 'a@example.com', created_at: 'x' };

function storedSession(accessExpiresAt: number): Session {
  return {
    id: 's1',
    user,
    tokens: {
      accessToken: 'a1',
      accessExpiresAt,
      accessLifetimeMs: 900_000,
      refreshToken: 'r1',
      refreshExpiresAt: Date.now() + 86_400_000,
    },
  };
}

function requests(fetch: ReturnType<typeof vi.fn>): [string, unknown][] {
  return fetch.mock.calls.map((c) => {
    const [url, init] = c as [string, RequestInit | undefined];
    return [url, init?.body === undefined ? undefined : JSON.parse(init.body as string)];
  });
}

beforeEach(() => {
  IdleSocket.sockets.length = 0;
  vi.stubGlobal('WebSocket', IdleSocket);
  window.history.replaceState(null, '', '/');
});

describe('App session handling', () => {
  it('renews an expired access token before connecting, and stores the new pair', async () => {
    saveSession(storedSession(Date.now() - 1000));
    const fetch = vi.fn(async (url: string) =>
      url === '/api/auth/refresh'
        ? jsonResponse(200, { access_token: 'a2', token_type: 'Bearer', expires_in: 900, refresh_token: 'r2', refresh_expires_in: 1000 })
        : jsonResponse(200, { user }),
    );
    vi.stubGlobal('fetch', fetch);
    render(<App />);
    expect(await screen.findByTestId('current-user')).toHaveTextContent('alice');
    await vi.waitFor(() => expect(IdleSocket.sockets).toHaveLength(1));
    expect(IdleSocket.sockets[0]!.url).toMatch(/token=a2$/);
    expect(requests(fetch).filter(([url]) => url === '/api/auth/refresh')).toEqual([['/api/auth/refresh', { refresh_token: 'r1' }]]);
    expect(loadSession()?.tokens).toMatchObject({ accessToken: 'a2', refreshToken: 'r2' });
  });

  it('goes to the log-in screen with a message when the refresh token is refused', async () => {
    saveSession(storedSession(Date.now() - 1000));
    vi.stubGlobal(
      'fetch',
      vi.fn(async () => jsonResponse(401, { error: { code: 'invalid_refresh_token', message: 'the refresh token is invalid' } })),
    );
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
    expect(screen.getByRole('status')).toHaveTextContent(ENDED_NOTICE);
    expect(loadSession()).toBeNull();
  });

  it('revokes the session on the server when the user logs out', async () => {
    saveSession(storedSession(Date.now() + 900_000));
    const fetch = vi.fn(async (url: string) => (url === '/api/auth/logout' ? jsonResponse(204, null) : jsonResponse(200, { user })));
    vi.stubGlobal('fetch', fetch);
    render(<App />);
    await userEvent.click(await screen.findByRole('button', { name: 'Log out' }));
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
    await vi.waitFor(() => expect(requests(fetch)).toContainEqual(['/api/auth/logout', { refresh_token: 'r1' }]));
    expect(loadSession()).toBeNull();
    expect(screen.queryByRole('status')).toBeNull();
  });

  it('signs in and out with the other tabs of the browser', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => jsonResponse(200, { user })));
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
    // Another tab logs in: it stores the session, and this tab hears of it.
    const session = storedSession(Date.now() + 900_000);
    saveSession(session);
    act(() => {
      window.dispatchEvent(new StorageEvent('storage', { key: 'chat.session', newValue: JSON.stringify(session) }));
    });
    expect(await screen.findByTestId('current-user')).toHaveTextContent('alice');
    // It logs out: this tab is signed out too, without a message.
    window.localStorage.removeItem('chat.session');
    act(() => {
      window.dispatchEvent(new StorageEvent('storage', { key: 'chat.session', newValue: null }));
    });
    expect(await screen.findByRole('heading', { name: 'Log in' })).toBeInTheDocument();
    expect(screen.queryByRole('status')).toBeNull();
  });
});
