import { describe, expect, it } from 'vitest';
import { parseRoute, roomHref, routePath } from './routes';

describe('parseRoute', () => {
  it('reads a room from its path, and the other screens', () => {
    expect(parseRoute('/r/general')).toEqual({ screen: 'room', room: 'general' });
    expect(parseRoute('/r/general/')).toEqual({ screen: 'room', room: 'general' });
    expect(parseRoute('/browse')).toEqual({ screen: 'browse' });
    expect(parseRoute('/new')).toEqual({ screen: 'newRoom' });
    expect(parseRoute('/dm')).toEqual({ screen: 'newDm' });
    expect(parseRoute('/login')).toEqual({ screen: 'login' });
    expect(parseRoute('/signup')).toEqual({ screen: 'signup' });
    expect(parseRoute('/')).toEqual({ screen: 'rooms' });
    expect(parseRoute('/somewhere/else')).toEqual({ screen: 'rooms' });
  });

  it('refuses room ids the server would refuse', () => {
    expect(parseRoute('/r/not%20valid')).toEqual({ screen: 'rooms' });
    expect(parseRoute('/r/%E0%A4%A')).toEqual({ screen: 'rooms' });
  });

  it('still opens links of the earlier fragment form', () => {
    expect(parseRoute('/', '#/rooms/general')).toEqual({ screen: 'room', room: 'general' });
    expect(parseRoute('/', '#/signup')).toEqual({ screen: 'signup' });
    expect(parseRoute('/', '#/login')).toEqual({ screen: 'login' });
  });

  it('round-trips through routePath', () => {
    for (const path of ['/', '/browse', '/new', '/dm', '/login', '/signup', roomHref('a-b_c')]) {
      expect(routePath(parseRoute(path))).toBe(path);
    }
  });
});
