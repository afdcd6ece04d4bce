/**
 * Signing in, and the words shown for each thing that can go wrong with it.
 * The server's error codes are stable; its messages are shown only when the
 * client has nothing more specific to say.
 */
import { ApiError, login, me } from './api';
import { newClientId } from './protocol';
import { tokensFromPair, type Session } from './session';

/** Logs in and fetches the user the token belongs to; the start of a new session. */
export async function signIn(username: string, password: string, now = Date.now()): Promise<Session> {
  const pair = await login(username, password);
  const user = await me(pair.accessToken);
  return { id: newClientId(), user, tokens: tokensFromPair(pair, now) };
}

/** "42 seconds", "3 minutes": a wait, rounded up, in words. */
export function describeWait(seconds: number): string {
  if (seconds < 90) {
    const s = Math.max(1, Math.ceil(seconds));
    return s === 1 ? '1 second' : `${s} seconds`;
  }
  const minutes = Math.ceil(seconds / 60);
  return `${minutes} minutes`;
}

export type FieldErrors = Partial<Record<'username' | 'email' | 'password', string>>;

export interface FormProblem {
  /** Shown above the form. */
  summary: string;
  fields: FieldErrors;
}

export const USERNAME_PATTERN = /^[A-Za-z0-9_.-]{3,32}$/;

/**
 * The server's rule for an e-mail address (common/src/domain.rs `Email::parse`), so that the
 * form says what the server would: trimmed, at most 254 bytes, no spaces or control
 * characters, one `@` with 1–64 bytes before it, and a domain of letters, digits, dots and
 * dashes with a dot inside (not first, not last, never two in a row).
 */
export function isValidEmail(raw: string): boolean {
  const value = raw.trim().toLowerCase();
  const bytes = (s: string) => new TextEncoder().encode(s).length;
  if (bytes(value) > 254 || /[\s\p{Cc}]/u.test(value)) return false;
  const at = value.indexOf('@');
  if (at < 0) return false;
  const local = value.slice(0, at);
  const domain = value.slice(at + 1);
  return (
    local.length > 0 &&
    bytes(local) <= 64 &&
    !domain.includes('@') &&
    domain.includes('.') &&
    !domain.startsWith('.') &&
    !domain.endsWith('.') &&
    !domain.includes('..') &&
    /^[\p{Alphabetic}\p{N}.-]+$/u.test(domain)
  );
}

export function checkSignup(username: string, email: string, password: string): FieldErrors {
  const fields: FieldErrors = {};
  if (!USERNAME_PATTERN.test(username)) {
    fields.username = 'Use 3 to 32 letters, digits, dots, dashes or underscores.';
  }
  if (!isValidEmail(email)) fields.email = 'Enter an email address like name@example.com.';
  const bytes = new TextEncoder().encode(password).length;
  if (bytes < 8) fields.password = 'Use at least 8 characters.';
  else if (bytes > 72) fields.password = 'Use at most 72 bytes (about 72 plain letters).';
  return fields;
}

function pickFields(fields: Readonly<Record<string, string>>): FieldErrors {
  const out: FieldErrors = {};
  for (const key of ['username', 'email', 'password'] as const) {
    const v = fields[key];
    if (v !== undefined) out[key] = v;
  }
  return out;
}

/** What to show for a failed sign-up or log-in. */
export function describeAuthError(e: unknown): FormProblem {
  if (!(e instanceof ApiError)) return { summary: 'Something went wrong. Please try again.', fields: {} };
  switch (e.code) {
    case 'invalid_credentials':
      return { summary: 'Wrong username or password.', fields: {} };
    case 'username_taken':
      return { summary: 'That username is already taken.', fields: { username: 'This username is taken; pick another.' } };
    case 'email_taken':
      return { summary: 'An account with that email already exists.', fields: { email: 'This email is already registered.' } };
    case 'validation_failed':
      return { summary: 'Please correct the highlighted fields.', fields: pickFields(e.fields) };
    case 'rate_limited':
      return {
        summary:
          e.retryAfter === null
            ? 'Too many attempts. Please wait a moment and try again.'
            : `Too many attempts. Please wait ${describeWait(e.retryAfter)} and try again.`,
        fields: {},
      };
    case 'network':
      return { summary: e.message, fields: {} };
    default:
      if (e.status >= 500) return { summary: 'The server is unavailable right now. Please try again shortly.', fields: {} };
      return { summary: e.message, fields: {} };
  }
}
