import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { SignupForm } from './SignupForm';

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
}

async function fill(username: string, email: string, password: string) {
  await userEvent.type(screen.getByLabelText('Username'), username);
  await userEvent.type(screen.getByLabelText('Email'), email);
  await userEvent.type(screen.getByLabelText('Password'), password);
  await userEvent.click(screen.getByRole('button', { name: 'Sign up' }));
}

describe('SignupForm', () => {
  it('marks the username field when the username is taken', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async () => jsonResponse(409, { error: { code: 'username_taken', message: 'username already taken' } })),
    );
    render(<SignupForm onSignedIn={vi.fn()} />);
    await fill('alice', 'alice@example.com', 'long enough');
    expect(await screen.findByRole('alert')).toHaveTextContent('That username is already taken.');
    expect(screen.getByLabelText('Username')).toHaveAttribute('aria-invalid', 'true');
    expect(screen.getByLabelText('Username')).toHaveAccessibleDescription(/taken/);
  });

  it('shows the server’s per-field validation errors', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async () =>
        jsonResponse(422, {
          error: { code: 'validation_failed', message: 'invalid input', fields: { email: 'email is not valid' } },
        }),
      ),
    );
    render(<SignupForm onSignedIn={vi.fn()} />);
    await fill('alice', 'alice@example.com', 'long enough');
    expect(await screen.findByRole('alert')).toHaveTextContent('Please correct the highlighted fields.');
    expect(screen.getByLabelText('Email')).toHaveAccessibleDescription('email is not valid');
  });

  it('refuses an address the server would refuse before asking it', async () => {
    const fetch = vi.fn();
    vi.stubGlobal('fetch', fetch);
    render(<SignupForm onSignedIn={vi.fn()} />);
    await fill('alice', 'a@b', 'long enough');
    expect(screen.getByLabelText('Email')).toHaveAccessibleDescription('Enter an email address like name@example.com.');
    expect(fetch).not.toHaveBeenCalled();
  });

  it('says how long to wait when the address made too many accounts', async () => {
    vi.stubGlobal(
      'fetch',
      vi.fn(async () =>
        jsonResponse(429, { error: { code: 'rate_limited', message: 'too many sign-ups' } }, { 'Retry-After': '300' }),
      ),
    );
    render(<SignupForm onSignedIn={vi.fn()} />);
    await fill('alice', 'alice@example.com', 'long enough');
    expect(await screen.findByRole('alert')).toHaveTextContent('Too many attempts. Please wait 5 minutes and try again.');
  });

  it('checks the fields before asking the server', async () => {
    const fetch = vi.fn();
    vi.stubGlobal('fetch', fetch);
    render(<SignupForm onSignedIn={vi.fn()} />);
    await fill('a b', 'nope', 'short');
    expect(screen.getByLabelText('Username')).toHaveAttribute('aria-invalid', 'true');
    expect(screen.getByLabelText('Email')).toHaveAttribute('aria-invalid', 'true');
    expect(screen.getByLabelText('Password')).toHaveAttribute('aria-invalid', 'true');
    expect(fetch).not.toHaveBeenCalled();
  });
});
