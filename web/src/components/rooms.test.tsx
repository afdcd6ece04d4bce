import { act, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { UserRef } from '../protocol';
import { fakeChat, roomView } from '../test/fakeChat';
import { ApiContext, type WithToken } from './ApiContext';
import { BrowseRooms } from './BrowseRooms';
import { ChatView } from './ChatView';
import { MemberList } from './MemberList';
import { NewDm } from './NewDm';
import { NewRoom } from './NewRoom';
import { Sidebar } from './Sidebar';

const me: UserRef = { id: 'u1', username: 'alice' };
const bob: UserRef = { id: 'u2', username: 'bob' };
const carol: UserRef = { id: 'u3', username: 'carol' };

const withToken: WithToken = (call) => call('tok');

function wrap(children: ReactNode) {
  return <ApiContext.Provider value={withToken}>{children}</ApiContext.Provider>;
}

function jsonResponse(status: number, body: unknown): Response {
  return new Response(body === null ? null : JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

type Route = (method: string, url: string, body: unknown) => Response | undefined;

/** Stubs `fetch` with `route`; every call is recorded as [method, url, body]. */
function stubApi(route: Route) {
  const calls: [string, string, unknown][] = [];
  vi.stubGlobal(
    'fetch',
    vi.fn(async (url: string, init?: RequestInit) => {
      const method = init?.method ?? 'GET';
      const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as unknown) : undefined;
      calls.push([method, url, body]);
      return route(method, url, body) ?? jsonResponse(404, { error: { code: 'not_found', message: 'not found' } });
    }),
  );
  return calls;
}

const membersOf = (...members: { user: UserRef; role: string; online?: boolean }[]) =>
  jsonResponse(200, { members: members.map((m) => ({ joined_at: 'x', online: false, ...m })) });

afterEach(() => {
  window.history.replaceState(null, '', '/');
});

describe('Sidebar', () => {
  it('lists rooms and DMs by activity with badges and previews, and updates live', async () => {
    const { client, socket } = await fakeChat(me, [
      roomView('quiet', { name: 'Quiet', created_at: '2024-01-01T00:00:00Z' }),
      roomView('busy', {
        name: 'Busy',
        kind: 'private',
        unread: 150,
        unread_capped: true,
        last_message: { id: '05', author: bob, preview: 'see you', sent_at: '2024-06-05T00:00:00Z' },
      }),
      roomView('dm-x', { kind: 'dm', name: '', dm_user: carol, unread: 2 }),
    ]);
    render(<Sidebar client={client} current={null} meId={me.id} />);
    const rooms = () => screen.getAllByTestId('room-link').map((a) => a.dataset.room);
    expect(rooms()).toEqual(['busy', 'quiet', 'dm-x']);
    const busy = screen.getByRole('link', { name: /#Busy/ });
    expect(within(busy).getByTestId('unread-badge')).toHaveTextContent('99+');
    expect(within(busy).getByTestId('room-preview')).toHaveTextContent('bob: see you');
    expect(screen.getByRole('link', { name: /@carol/ })).toHaveAttribute('href', '/r/dm-x');

    // A message in "quiet" moves it up with a badge; another tab reading "busy" clears its badge.
    act(() => {
      socket.receive({ type: 'joined', room: 'quiet', members: [], messages: [] });
      socket.receive({ type: 'message', room: 'quiet', id: '09', client_id: null, author: bob, body: 'hello', sent_at: '2024-06-09T00:00:00Z' });
      socket.receive({ type: 'read', room: 'busy', id: '05' });
    });
    expect(rooms()).toEqual(['quiet', 'busy', 'dm-x']);
    expect(within(screen.getByRole('link', { name: /#Quiet/ })).getByTestId('unread-badge')).toHaveTextContent('1');
    expect(within(screen.getByRole('link', { name: /#Busy/ })).queryByTestId('unread-badge')).toBeNull();

    // Added, renamed, removed.
    act(() => socket.receive({ type: 'room_added', room: roomView('fresh', { name: 'Fresh', last_activity: '2024-07-01T00:00:00Z' }) }));
    expect(rooms()[0]).toBe('fresh');
    act(() => socket.receive({ type: 'room_updated', room: { ...roomView('fresh', { name: 'Renamed' }), role: undefined } }));
    expect(screen.getByRole('link', { name: /#Renamed/ })).toBeInTheDocument();
    act(() => socket.receive({ type: 'removed', room: 'fresh', reason: 'kicked' }));
    expect(rooms()).not.toContain('fresh');
  });

  it('follows a room link without reloading the page', async () => {
    const { client } = await fakeChat(me, [roomView('general')]);
    render(<Sidebar client={client} current={null} meId={me.id} />);
    await userEvent.click(screen.getByRole('link', { name: /#general/ }));
    expect(window.location.pathname).toBe('/r/general');
  });
});

describe('ChatView', () => {
  it('shows a refused join as a clear message in the room, without a send box', async () => {
    stubApi(() => undefined);
    const { client, socket } = await fakeChat(me);
    render(wrap(<ChatView client={client} room="secret" me={me} />));
    expect(socket.sent).toContainEqual({ type: 'join', room: 'secret' });
    act(() => socket.receive({ type: 'error', code: 'not_found', message: 'no such room', room: 'secret' }));
    expect(screen.getByTestId('room-denied')).toHaveTextContent('does not exist, or it is private');
    expect(screen.queryByLabelText('Message #secret')).toBeNull();
    expect(screen.queryByText('no such room')).toBeNull();
  });

  it.each([
    ['banned', 'You are banned from this room.'],
    ['archived', 'This room is archived'],
    ['forbidden', 'You are not allowed'],
  ])('explains a %s refusal', async (code, text) => {
    stubApi(() => undefined);
    const { client, socket } = await fakeChat(me);
    render(wrap(<ChatView client={client} room="r" me={me} />));
    act(() => socket.receive({ type: 'error', code, message: 'raw', room: 'r' }));
    expect(screen.getByTestId('room-denied')).toHaveTextContent(text);
  });

  it('shows presence as unknown on an open connection until the room is joined on it', async () => {
    stubApi((_m, url) => (url === '/api/rooms/team/members' ? membersOf({ user: me, role: 'member' }, { user: bob, role: 'member' }) : undefined));
    const { client, socket } = await fakeChat(me, [roomView('team', { name: 'Team' })]);
    render(wrap(<ChatView client={client} room="team" me={me} />));
    const bobItem = (await screen.findByText('bob')).closest('li')!;
    expect(bobItem).toHaveAttribute('data-presence', 'unknown');
    act(() => socket.receive({ type: 'joined', room: 'team', members: [me, bob], messages: [] }));
    expect(screen.getByText('bob').closest('li')).toHaveAttribute('data-presence', 'online');
    act(() => socket.receive({ type: 'presence', room: 'team', user: bob, state: 'offline' }));
    expect(screen.getByText('bob').closest('li')).toHaveAttribute('data-presence', 'offline');
  });

  it('shows the removal of the room on screen and takes the send box away', async () => {
    stubApi((_m, url) => (url === '/api/rooms/team/members' ? membersOf({ user: me, role: 'member' }) : undefined));
    const { client, socket } = await fakeChat(me, [roomView('team', { kind: 'private', name: 'Team' })]);
    render(wrap(<ChatView client={client} room="team" me={me} />));
    act(() => socket.receive({ type: 'joined', room: 'team', members: [me], messages: [] }));
    expect(screen.getByRole('heading', { name: 'Team' })).toBeInTheDocument();
    expect(screen.getByLabelText('Message #Team')).toBeInTheDocument();
    act(() => socket.receive({ type: 'removed', room: 'team', reason: 'kicked' }));
    expect(screen.getByTestId('room-removed')).toHaveTextContent('You were removed from this room.');
    expect(screen.queryByLabelText('Message #Team')).toBeNull();
  });

  it('offers settings to an admin but not to a member', async () => {
    stubApi((_m, url) => (url.startsWith('/api/rooms/r/members') ? membersOf() : undefined));
    const admin = await fakeChat(me, [roomView('r', { role: 'admin' })]);
    const { unmount } = render(wrap(<ChatView client={admin.client} room="r" me={me} />));
    expect(await screen.findByText(/Members \(0\)/)).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Settings' })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Leave' })).toBeInTheDocument();
    unmount();
    const member = await fakeChat(me, [roomView('r', { role: 'member' })]);
    render(wrap(<ChatView client={member.client} room="r" me={me} />));
    expect(await screen.findByText(/Members \(0\)/)).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Settings' })).toBeNull();
    expect(screen.getByRole('button', { name: 'Leave' })).toBeInTheDocument();
  });

  it('renames the room from its settings and shows the server’s message when refused', async () => {
    const calls = stubApi((method, url, body) => {
      if (url.startsWith('/api/rooms/r/members')) return membersOf();
      if (method === 'PATCH' && (body as { name?: string }).name === 'bad\u0007') {
        return jsonResponse(422, { error: { code: 'validation_failed', message: 'name: no control characters' } });
      }
      if (method === 'PATCH') return jsonResponse(200, roomView('r', { name: 'New name', role: null }));
      return undefined;
    });
    const { client } = await fakeChat(me, [roomView('r', { role: 'owner', name: 'Old' })]);
    render(wrap(<ChatView client={client} room="r" me={me} />));
    await userEvent.click(screen.getByRole('button', { name: 'Settings' }));
    const name = screen.getByLabelText('Name');
    await userEvent.clear(name);
    await userEvent.type(name, 'bad\u0007');
    await userEvent.click(screen.getByRole('button', { name: 'Save' }));
    expect(await screen.findByText('name: no control characters')).toBeInTheDocument();
    await userEvent.clear(name);
    await userEvent.type(name, 'New name');
    await userEvent.click(screen.getByRole('button', { name: 'Save' }));
    expect(await screen.findByRole('heading', { name: 'New name' })).toBeInTheDocument();
    expect(calls).toContainEqual(['PATCH', '/api/rooms/r', { name: 'New name' }]);
    // The user's own role survives a view without it.
    expect(client.getSnapshot().list.rooms.r!.role).toBe('owner');
  });

  it('leaves the room after a confirmation and drops it from the list', async () => {
    const calls = stubApi((method, url) => {
      if (url.startsWith('/api/rooms/r/members') && method === 'GET') return membersOf();
      if (method === 'DELETE') return jsonResponse(204, null);
      return undefined;
    });
    const { client } = await fakeChat(me, [roomView('r')]);
    render(wrap(<ChatView client={client} room="r" me={me} />));
    await userEvent.click(screen.getByRole('button', { name: 'Leave' }));
    await userEvent.click(screen.getByRole('button', { name: 'Leave room' }));
    await vi.waitFor(() => expect(client.getSnapshot().list.rooms.r).toBeUndefined());
    expect(calls).toContainEqual(['DELETE', '/api/rooms/r/members/u1', undefined]);
    expect(window.location.pathname).toBe('/');
  });
});

describe('MemberList', () => {
  const list = () =>
    membersOf({ user: me, role: 'owner' }, { user: bob, role: 'admin', online: true }, { user: carol, role: 'member' });

  it('shows roles and online state, live from presence once joined', async () => {
    stubApi(() => list());
    const { rerender } = render(wrap(<MemberList room="r" kind="public" myRole="member" online={[]} live={false} meId={me.id} />));
    const bobItem = (await screen.findByText('bob')).closest('li')!;
    expect(bobItem).toHaveAttribute('data-online', 'true');
    expect(within(bobItem).getByTestId('member-role')).toHaveTextContent('admin');
    rerender(wrap(<MemberList room="r" kind="public" myRole="member" online={[carol]} live meId={me.id} />));
    expect(screen.getByText('carol').closest('li')).toHaveAttribute('data-online', 'true');
    expect(screen.getByText('bob').closest('li')).toHaveAttribute('data-online', 'false');
  });

  it('hides every control from a plain member of a private room', async () => {
    stubApi(() => list());
    render(wrap(<MemberList room="r" kind="private" myRole="member" online={[]} live={false} meId={me.id} />));
    await screen.findByText('bob');
    expect(screen.queryByRole('button', { name: /Kick|Ban/ })).toBeNull();
    expect(screen.queryByRole('combobox')).toBeNull();
    expect(screen.queryByRole('button', { name: 'Add' })).toBeNull();
  });

  it('lets the owner add, kick, ban and change roles, never on themselves', async () => {
    const calls = stubApi((method, url, body) => {
      if (method === 'GET') return list();
      if (method === 'POST' && url === '/api/rooms/r/members' && (body as { username: string }).username === 'nobody') {
        return jsonResponse(404, { error: { code: 'user_not_found', message: 'no user named nobody' } });
      }
      return jsonResponse(method === 'POST' && url.endsWith('/members') ? 201 : 204, method === 'POST' && url.endsWith('/members') ? {} : null);
    });
    render(wrap(<MemberList room="r" kind="private" myRole="owner" online={[]} live={false} meId={me.id} />));
    await screen.findByText('bob');
    expect(screen.queryByRole('button', { name: 'Kick alice' })).toBeNull();
    await userEvent.type(screen.getByLabelText('Add a member by username'), 'nobody');
    await userEvent.click(screen.getByRole('button', { name: 'Add' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('no user named nobody');
    await userEvent.clear(screen.getByLabelText('Add a member by username'));
    await userEvent.type(screen.getByLabelText('Add a member by username'), 'dave');
    await userEvent.click(screen.getByRole('button', { name: 'Add' }));
    await userEvent.click(screen.getByRole('button', { name: 'Kick carol' }));
    await userEvent.click(screen.getByRole('button', { name: 'Ban bob' }));
    await userEvent.selectOptions(screen.getByLabelText('Role of carol'), 'admin');
    await vi.waitFor(() =>
      expect(calls.filter(([m]) => m !== 'GET')).toEqual([
        ['POST', '/api/rooms/r/members', { username: 'nobody' }],
        ['POST', '/api/rooms/r/members', { username: 'dave' }],
        ['DELETE', '/api/rooms/r/members/u3', undefined],
        ['POST', '/api/rooms/r/bans/u2', undefined],
        ['PUT', '/api/rooms/r/members/u3', { role: 'admin' }],
      ]),
    );
  });

  it('does not offer an admin to kick the owner', async () => {
    stubApi(() => membersOf({ user: bob, role: 'owner' }, { user: me, role: 'admin' }, { user: carol, role: 'member' }));
    render(wrap(<MemberList room="r" kind="public" myRole="admin" online={[]} live={false} meId={me.id} />));
    await screen.findByText('bob');
    expect(screen.queryByRole('button', { name: 'Kick bob' })).toBeNull();
    expect(screen.getByRole('button', { name: 'Kick carol' })).toBeInTheDocument();
    expect(screen.queryByLabelText('Role of carol')).toBeNull();
  });
});

describe('room screens', () => {
  it('creates a private room and hands its view on; shows the server’s message when refused', async () => {
    let n = 0;
    const calls = stubApi((method) => {
      if (method !== 'POST') return undefined;
      n += 1;
      return n === 1
        ? jsonResponse(429, { error: { code: 'rate_limited', message: 'too many rooms created; try again later' } })
        : jsonResponse(201, roomView('abc', { kind: 'private', name: 'Plans', role: 'owner' }));
    });
    const onCreated = vi.fn();
    render(wrap(<NewRoom onCreated={onCreated} />));
    await userEvent.type(screen.getByLabelText('Name'), 'Plans');
    await userEvent.type(screen.getByLabelText(/^Topic/), 'next steps');
    await userEvent.click(screen.getByLabelText(/^Private/));
    await userEvent.click(screen.getByRole('button', { name: 'Create' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('too many rooms created; try again later');
    await userEvent.click(screen.getByRole('button', { name: 'Create' }));
    await vi.waitFor(() => expect(onCreated).toHaveBeenCalledWith(expect.objectContaining({ id: 'abc', kind: 'private' })));
    expect(calls[0]).toEqual(['POST', '/api/rooms', { kind: 'private', name: 'Plans', topic: 'next steps' }]);
  });

  it('searches the directory and joins a room through the API', async () => {
    const calls = stubApi((method, url) => {
      if (url.startsWith('/api/rooms/directory')) {
        return jsonResponse(200, { rooms: [{ ...roomView('books', { name: 'Books', member_count: 7, topic: 'reading' }), role: undefined }] });
      }
      if (method === 'POST' && url === '/api/rooms/books/join') return jsonResponse(200, roomView('books', { name: 'Books' }));
      return undefined;
    });
    const onJoined = vi.fn();
    render(wrap(<BrowseRooms isMember={() => false} onJoined={onJoined} onOpen={vi.fn()} />));
    await userEvent.type(screen.getByLabelText('Search by name'), 'boo');
    expect(await screen.findByText('7 members')).toBeInTheDocument();
    await vi.waitFor(() => expect(calls.map((c) => c[1])).toContain('/api/rooms/directory?q=boo'));
    await userEvent.click(screen.getByRole('button', { name: 'Join Books' }));
    await vi.waitFor(() => expect(onJoined).toHaveBeenCalledWith(expect.objectContaining({ id: 'books' })));
  });

  it('finds a person by name and opens the DM', async () => {
    const calls = stubApi((method, url) => {
      if (url.startsWith('/api/users?')) return jsonResponse(200, { users: [me, bob] });
      if (method === 'POST' && url === '/api/dms') return jsonResponse(200, roomView('dm-1', { kind: 'dm', dm_user: bob }));
      return undefined;
    });
    const onOpened = vi.fn();
    render(wrap(<NewDm meId={me.id} onOpened={onOpened} />));
    await userEvent.type(screen.getByLabelText('To'), 'b');
    await userEvent.click(await screen.findByRole('button', { name: 'Message bob' }));
    // Not oneself.
    expect(screen.queryByRole('button', { name: 'Message alice' })).toBeNull();
    await vi.waitFor(() => expect(onOpened).toHaveBeenCalledWith(expect.objectContaining({ id: 'dm-1' })));
    expect(calls).toContainEqual(['POST', '/api/dms', { username: 'bob' }]);
  });

  it('shows an unknown username refused by the DM API', async () => {
    stubApi((method, url) => {
      if (url.startsWith('/api/users?')) return jsonResponse(200, { users: [] });
      if (method === 'POST') return jsonResponse(404, { error: { code: 'user_not_found', message: 'no user named zed' } });
      return undefined;
    });
    render(wrap(<NewDm meId={me.id} onOpened={vi.fn()} />));
    await userEvent.type(screen.getByLabelText('To'), 'zed');
    await userEvent.click(screen.getByRole('button', { name: 'Open' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('no user named zed');
  });
});
