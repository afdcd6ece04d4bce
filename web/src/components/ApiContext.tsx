/**
 * How screens call the HTTP API as the signed-in user: through the session's
 * token manager, which refreshes the access token and retries once on a 401.
 */
import { createContext, useContext } from 'react';
import { ApiError } from '../api';

export type WithToken = <T>(call: (accessToken: string) => Promise<T>) => Promise<T>;

export const ApiContext = createContext<WithToken | null>(null);

export function useApi(): WithToken {
  const api = useContext(ApiContext);
  if (api === null) throw new Error('useApi outside ApiContext');
  return api;
}

/** What to tell the user about a failed call: the server's own message when it sent one. */
export function problemText(e: unknown, fallback = 'Something went wrong. Please try again.'): string {
  if (e instanceof ApiError) return e.message.length > 0 ? e.message : fallback;
  return fallback;
}
