/**
 * How screens call the HTTP API as the signed-in user: through the session's
 * token manager, which refreshes the access token and retries once on a 401.
 */
import { createContext, useContext } from 'react';
import { apiErrorText } from '../errors';

export type WithToken = <T>(call: (accessToken: string) => Promise<T>) => Promise<T>;

export const ApiContext = createContext<WithToken | null>(null);

export function useApi(): WithToken {
  const api = useContext(ApiContext);
  if (api === null) throw new Error('useApi outside ApiContext');
  return api;
}

/** What to tell the user about a failed call (see `apiErrorText`). */
export function problemText(e: unknown, fallback = 'Something went wrong. Please try again.'): string {
  return apiErrorText(e, fallback);
}
