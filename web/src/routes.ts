/**
 * Screens are addressed by the URL path (`/r/general`), so a reload or a
 * shared link opens the same screen. The gateway answers every path that is
 * not an API, a WebSocket or a build asset with the client's `index.html`,
 * and the client reads the path. Links of the earlier fragment form
 * (`#/rooms/general`) still open the same screen and are rewritten to the path.
 */
import { useEffect, useState, type MouseEvent } from 'react';
import { isValidRoomId } from './protocol';

export type Route =
  | { screen: 'login' }
  | { screen: 'signup' }
  | { screen: 'rooms' }
  | { screen: 'browse' }
  | { screen: 'newRoom' }
  | { screen: 'newDm' }
  | { screen: 'room'; room: string };

/** Fired on `window` when the client changes the path itself (`pushState` fires nothing). */
const NAVIGATED = 'chat:navigated';

function roomRoute(encoded: string): Route {
  let room: string;
  try {
    room = decodeURIComponent(encoded);
  } catch {
    return { screen: 'rooms' };
  }
  return isValidRoomId(room) ? { screen: 'room', room } : { screen: 'rooms' };
}

export function parseRoute(pathname: string, hash = ''): Route {
  // The earlier fragment addresses.
  const legacy = hash.replace(/^#/, '');
  if (legacy === '/signup') return { screen: 'signup' };
  if (legacy === '/login') return { screen: 'login' };
  const old = /^\/rooms\/([^/]+)$/.exec(legacy);
  if (old !== null) return roomRoute(old[1]!);

  const path = pathname.replace(/\/+$/, '');
  switch (path) {
    case '/signup':
      return { screen: 'signup' };
    case '/login':
      return { screen: 'login' };
    case '/browse':
      return { screen: 'browse' };
    case '/new':
      return { screen: 'newRoom' };
    case '/dm':
      return { screen: 'newDm' };
  }
  const m = /^\/r\/([^/]+)$/.exec(path);
  return m !== null ? roomRoute(m[1]!) : { screen: 'rooms' };
}

/** The path of a route, as links and the address bar show it. */
export function routePath(route: Route): string {
  switch (route.screen) {
    case 'login':
      return '/login';
    case 'signup':
      return '/signup';
    case 'rooms':
      return '/';
    case 'browse':
      return '/browse';
    case 'newRoom':
      return '/new';
    case 'newDm':
      return '/dm';
    case 'room':
      return roomHref(route.room);
  }
}

export function roomHref(room: string): string {
  return `/r/${encodeURIComponent(room)}`;
}

function currentRoute(): Route {
  return parseRoute(window.location.pathname, window.location.hash);
}

/** Shows the screen at `path`, as a new history entry (or in place of the current one). */
export function navigate(path: string, options: { replace?: boolean } = {}): void {
  const here = window.location.pathname + window.location.search + window.location.hash;
  if (here !== path) {
    if (options.replace === true) window.history.replaceState(null, '', path);
    else window.history.pushState(null, '', path);
  }
  window.dispatchEvent(new Event(NAVIGATED));
}

export function useRoute(): Route {
  const [route, setRoute] = useState(currentRoute);
  useEffect(() => {
    const onChange = () => {
      const next = currentRoute();
      // A fragment address is rewritten to its path, so that reloads and shared links use the path.
      if (window.location.hash.startsWith('#/')) window.history.replaceState(null, '', routePath(next));
      setRoute((prev) => (JSON.stringify(prev) === JSON.stringify(next) ? prev : next));
    };
    onChange();
    window.addEventListener('popstate', onChange);
    window.addEventListener('hashchange', onChange);
    window.addEventListener(NAVIGATED, onChange);
    return () => {
      window.removeEventListener('popstate', onChange);
      window.removeEventListener('hashchange', onChange);
      window.removeEventListener(NAVIGATED, onChange);
    };
  }, []);
  return route;
}

/**
 * Props of an in-app link: a real `href` (so it can be opened in a new tab,
 * copied, or followed without scripts) whose plain left click is handled
 * here instead of loading the page again.
 */
export function linkTo(path: string): { href: string; onClick: (e: MouseEvent<HTMLAnchorElement>) => void } {
  return {
    href: path,
    onClick: (e) => {
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(path);
    },
  };
}
