import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { LoginForm } from './LoginForm';

function jsonResponse(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

describe('LoginForm', () => {
  it('shows the server’s answer to a wrong password', async () => {
    const fetch = vi.fn(async () =>
      jsonResponse(401, { error: { code: 'invalid_credentials', message: 'invalid username or password' } }),
    );
    vi.stubGlobal('fetch', fetch);
    const onSignedIn = vi.fn();
    render(<LoginForm onSignedIn={onSignedIn} />);

    await userEvent.type(screen.getByLabelText('Username'), 'alice');
    await userEvent.type(screen.getByLabelText('Password'), 'wrong-password');
    await userEvent.click(screen.getByRole('button', { name: 'Log in' }));

    expect(await screen.findByRole('alert')).toHaveTextContent('Wrong username or password.');
    expect(onSignedIn).not.toHaveBeenCalled();
    expect(fetch).toHaveBeenCalledWith('/api/auth/login', expect.objectContaining({ method: 'POST' }));
    const init = (fetch.mock.calls[0] as unknown as [string, RequestInit])[1];
    expect(JSON.parse(init.body as string)).toEqual({ username: 'alice', password: 'wrong-password' });
  });

  it('signs in with the token and the user it belongs to', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async (url: string) =>
        url === '/api/auth/login'
          ? jsonResponse(200, {
              access_token: 'tok',
              token_type: 'Bearer',
              expires_in: 900,
              refresh_token: 'refresh',
              refresh_expires_in: 2_592_000,
            })
          : jsonResponse(200, { user: { id: 'u1', username: 'alice', email: 'a@example.com', created_at: 'x' } }),
      ),
    );
    const onSignedIn = vi.fn();
    render(<LoginForm onSignedIn={onSignedIn} />);
    await userEvent.type(screen.getByLabelText('Username'), 'alice');
    await userEvent.type(screen.getByLabelText('Password'), 'correct horse{Enter}');
    await vi.waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(onSignedIn.mock.calls[0]![0]).toMatchObject({
      tokens: { accessToken: 'tok', refreshToken: 'refresh' },
      user: { id: 'u1', username: 'alice' },
    });
  });

  it('says how long to wait after too many attempts', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async () =>
        new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'too many attempts' } }), {
          status: 429,
          headers: { 'Content-Type': 'application/json', 'Retry-After': '12' },
        }),
      ),
    );
    render(<LoginForm onSignedIn={vi.fn()} />);
    await userEvent.type(screen.getByLabelText('Username'), 'alice');
    await userEvent.type(screen.getByLabelText('Password'), 'whatever1{Enter}');
    expect(await screen.findByRole('alert')).toHaveTextContent('Too many attempts. Please wait 12 seconds and try again.');
    expect(screen.getByRole('button', { name: 'Log in' })).toBeEnabled();
  });

  it('says so when the server cannot be reached', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))));
    render(<LoginForm onSignedIn={vi.fn()} />);
    await userEvent.type(screen.getByLabelText('Username'), 'alice');
    await userEvent.type(screen.getByLabelText('Password'), 'whatever1{Enter}');
    expect(await screen.findByRole('alert')).toHaveTextContent(/cannot reach the server/i);
  });
});
