import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { NotificationToggle } from './components/NotificationToggle';
import { NOTIFICATIONS_KEY, Notifier, type NotificationApi } from './notifications';
import type { UserRef } from './protocol';
import { fakeChat, roomView } from './test/fakeChat';

const me: UserRef = { id: 'u1', username: 'alice' };
const bob: UserRef = { id: 'u2', username: 'bob' };

/** A Notification API that records what it shows, with the given permission. */
function fakeApi(permission: NotificationPermission | 'unsupported' = 'granted') {
  const shown: { title: string; body: string; tag: string; click: () => void }[] = [];
  let current = permission;
  const api: NotificationApi = {
    permission: () => current,
    request: vi.fn(async () => {
      current = 'granted';
      return 'granted' as const;
    }),
    show: (title, options, onClick) => shown.push({ title, ...options, click: onClick }),
  };
  return { api, shown };
}

let seq = 0;
function message(room: string, body: string, author = bob) {
  seq += 1;
  return { type: 'message', room, id: `01J${String(seq).padStart(23, '0')}`, client_id: null, author, body, sent_at: '2024-06-02T12:00:00Z' };
}

/** A client with a DM, a room, and a room on screen, each joined; notifications wanted. */
async function setUp({ permission = 'granted' as NotificationPermission, wanted = true } = {}) {
  const { client, socket } = await fakeChat(me, [
    roomView('dm-1', { kind: 'dm', name: '', dm_user: bob }),
    roomView('team', { name: 'Team' }),
    roomView('here', { name: 'Here' }),
  ]);
  await vi.waitFor(() => expect(socket.sent.filter((f) => f.type === 'join')).toHaveLength(3));
  for (const room of ['dm-1', 'team', 'here']) socket.receive({ type: 'joined', room, members: [], messages: [] });
  client.open('here');
  const { api, shown } = fakeApi(permission);
  let now = 1_000_000;
  const openRoom = vi.fn();
  const focusWindow = vi.fn();
  const notifier = new Notifier({ me, api, state: client.getSnapshot, openRoom, focusWindow, wanted: () => wanted, now: () => now });
  client.onLiveMessage(notifier.message);
  return { client, socket, shown, openRoom, focusWindow, advance: (ms: number) => (now += ms) };
}

describe('desktop notifications', () => {
  it('notify of a DM and of a mention in a room not on screen, and a click opens the room', async () => {
    const { socket, shown, openRoom, focusWindow } = await setUp();
    socket.receive(message('dm-1', 'are you there?'));
    socket.receive(message('team', 'nothing for alice'));
    socket.receive(message('team', 'ping @Alice, look'));
    expect(shown.map(({ title, body, tag }) => ({ title, body, tag }))).toEqual([
      { title: 'bob', body: 'are you there?', tag: 'chat-dm-1' },
      { title: 'bob in #Team', body: 'ping @Alice, look', tag: 'chat-team' },
    ]);
    shown[1]!.click();
    expect(focusWindow).toHaveBeenCalled();
    expect(openRoom).toHaveBeenCalledWith('team');
  });

  it('stay quiet for the room on screen in a visible tab, but not once the tab is hidden', async () => {
    const { client, socket, shown } = await setUp();
    socket.receive(message('here', '@alice here'));
    expect(shown).toHaveLength(0);
    client.setVisible(false);
    socket.receive(message('here', '@alice still here?'));
    expect(shown.map((n) => n.title)).toEqual(['bob in #Here']);
  });

  it('never for the user’s own messages, nor for what a join or a repeat brings', async () => {
    const { socket, shown, advance } = await setUp();
    socket.receive(message('dm-1', 'talking to myself', me));
    socket.receive({ type: 'joined', room: 'dm-1', members: [], messages: [message('dm-1', 'old news')] });
    const repeat = message('team', '@alice once');
    socket.receive(repeat);
    advance(60_000);
    socket.receive(repeat);
    expect(shown.map((n) => n.body)).toEqual(['@alice once']);
  });

  it('show at most one a room every few seconds', async () => {
    const { socket, shown, advance } = await setUp();
    socket.receive(message('dm-1', 'one'));
    advance(2_000);
    socket.receive(message('dm-1', 'two'));
    socket.receive(message('team', '@alice three'));
    advance(3_500);
    socket.receive(message('dm-1', 'four'));
    expect(shown.map((n) => n.body)).toEqual(['one', '@alice three', 'four']);
  });

  it('show nothing without the permission or when the user did not turn them on', async () => {
    for (const options of [{ permission: 'default' as const }, { permission: 'denied' as const }, { wanted: false }]) {
      const { socket, shown } = await setUp(options);
      socket.receive(message('dm-1', 'hello'));
      expect(shown, JSON.stringify(options)).toHaveLength(0);
    }
  });
});

describe('NotificationToggle', () => {
  it('asks for the permission only when clicked, then remembers the choice', async () => {
    const { api } = fakeApi('default');
    render(<NotificationToggle api={api} />);
    expect(api.request).not.toHaveBeenCalled();
    await userEvent.click(screen.getByRole('button', { name: 'Enable notifications' }));
    expect(api.request).toHaveBeenCalledTimes(1);
    expect(window.localStorage.getItem(NOTIFICATIONS_KEY)).toBe('on');
    await userEvent.click(screen.getByRole('button', { name: 'Turn off notifications' }));
    expect(window.localStorage.getItem(NOTIFICATIONS_KEY)).toBe('off');
    expect(screen.getByRole('button', { name: 'Enable notifications' })).toBeInTheDocument();
  });

  it('shows nothing without the API, and says so when blocked', () => {
    const { container } = render(<NotificationToggle api={fakeApi('unsupported').api} />);
    expect(container).toBeEmptyDOMElement();
    render(<NotificationToggle api={fakeApi('denied').api} />);
    expect(screen.getByTestId('notifications-blocked')).toHaveTextContent('blocked');
    expect(screen.queryByRole('button')).toBeNull();
  });
});


describe('browserNotifications', () => {
  it('shows through window.Notification, and a click runs the action and closes it', async () => {
    const { browserNotifications } = await import('./notifications');
    const made: { title: string; options: NotificationOptions; close: () => void; onclick: (() => void) | null }[] = [];
    class FakeNotification {
      static permission = 'granted';
      onclick: (() => void) | null = null;
      close = vi.fn();
      constructor(
        public title: string,
        public options: NotificationOptions,
      ) {
        made.push(this);
      }
    }
    vi.stubGlobal('Notification', FakeNotification);
    const onClick = vi.fn();
    expect(browserNotifications.permission()).toBe('granted');
    browserNotifications.show('bob', { body: 'hi', tag: 'chat-r' }, onClick);
    expect(made.map((n) => [n.title, n.options])).toEqual([['bob', { body: 'hi', tag: 'chat-r' }]]);
    made[0]!.onclick!();
    expect(onClick).toHaveBeenCalled();
    expect(made[0]!.close).toHaveBeenCalled();
    // A browser that refuses the constructor (notifications only from a service worker) shows nothing and does not throw.
    vi.stubGlobal('Notification', function Refusing() {
      throw new TypeError('Illegal constructor');
    });
    expect(() => browserNotifications.show('bob', { body: 'hi', tag: 'chat-r' }, onClick)).not.toThrow();
    vi.unstubAllGlobals();
    expect(browserNotifications.permission()).toBe('unsupported');
  });
});
