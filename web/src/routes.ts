/**
 * Screens are addressed by the URL fragment (`#/rooms/general`), so a reload
 * or a shared link opens the same screen without the server having to know
 * about client-side paths.
 */
import { useEffect, useState } from 'react';
import { isValidRoomId } from './protocol';

export type Route = { screen: 'login' } | { screen: 'signup' } | { screen: 'rooms' } | { screen: 'room'; room: string };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '');
  if (path === '/signup') return { screen: 'signup' };
  if (path === '/login') return { screen: 'login' };
  const m = /^\/rooms\/([^/]+)$/.exec(path);
  if (m !== null) {
    let room: string;
    try {
      room = decodeURIComponent(m[1]!);
    } catch {
      return { screen: 'rooms' };
    }
    if (isValidRoomId(room)) return { screen: 'room', room };
  }
  return { screen: 'rooms' };
}

export function roomHref(room: string): string {
  return `#/rooms/${encodeURIComponent(room)}`;
}

export function navigate(hash: string): void {
  if (window.location.hash !== hash) window.location.hash = hash;
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(window.location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
