import { act, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { UserRef, WireMessage } from '../protocol';
import { fakeChat, roomView } from '../test/fakeChat';
import { ApiContext, type WithToken } from './ApiContext';
import { ChatView } from './ChatView';

const me: UserRef = { id: 'u1', username: 'alice' };
const bob: UserRef = { id: 'u2', username: 'bob' };
const carol: UserRef = { id: 'u3', username: 'carol' };

const withToken: WithToken = (call) => call('tok');
const wrap = (children: ReactNode) => <ApiContext.Provider value={withToken}>{children}</ApiContext.Provider>;

function stubMembers(...users: UserRef[]) {
  vi.stubGlobal(
    'fetch',
    vi.fn(async (url: string) =>
      url.endsWith('/members')
        ? new Response(JSON.stringify({ members: users.map((user) => ({ user, role: 'member', joined_at: 'x', online: false })) }), {
            status: 200,
            headers: { 'Content-Type': 'application/json' },
          })
        : new Response(JSON.stringify({ error: { code: 'not_found', message: 'no' } }), { status: 404 }),
    ),
  );
}

afterEach(() => {
  vi.unstubAllGlobals();
});

function msg(id: string, body = `body ${id}`, author = bob): WireMessage {
  return { room: 'team', id, client_id: null, author, body, sent_at: '2024-06-02T12:00:00Z' };
}

describe('ChatView: the "New messages" divider', () => {
  it('sits above the first unread message as the room was opened, and stays while the marker moves on', async () => {
    stubMembers(me, bob);
    const last = { id: '03', author: bob, preview: 'x', sent_at: '2024-06-02T12:00:00Z' };
    const { client, socket } = await fakeChat(me, [roomView('team', { name: 'Team', read_id: '01', unread: 2, last_message: last })]);
    render(wrap(<ChatView client={client} room="team" me={me} />));
    act(() => socket.receive({ type: 'joined', room: 'team', members: [me, bob], messages: [msg('01'), msg('02'), msg('03')] }));

    const divider = screen.getByRole('separator', { name: 'New messages' });
    const items = within(screen.getByTestId('message-list')).getAllByRole('listitem');
    const at = items.findIndex((li) => li.contains(divider));
    expect(items[at + 1]).toHaveAttribute('data-id', '02');

    // The client marks the room read (the list's marker moves), and more arrives: the divider stays.
    await vi.waitFor(() => expect(socket.sent).toContainEqual({ type: 'read', room: 'team', id: '03' }));
    act(() => socket.receive({ type: 'message', ...msg('04') }));
    expect(client.getSnapshot().list.rooms.team!.read_id).toBe('03');
    const again = within(screen.getByTestId('message-list')).getAllByRole('listitem');
    expect(again[again.findIndex((li) => li.contains(screen.getByRole('separator', { name: 'New messages' }))) + 1]).toHaveAttribute('data-id', '02');
  });

  it('is not shown in a room opened with nothing unread', async () => {
    stubMembers(me, bob);
    const last = { id: '02', author: bob, preview: 'x', sent_at: '2024-06-02T12:00:00Z' };
    const { client, socket } = await fakeChat(me, [roomView('team', { name: 'Team', read_id: '02', unread: 0, last_message: last })]);
    render(wrap(<ChatView client={client} room="team" me={me} />));
    act(() => socket.receive({ type: 'joined', room: 'team', members: [me], messages: [msg('01'), msg('02')] }));
    expect(screen.getAllByTestId('message')).toHaveLength(2);
    expect(screen.queryByRole('separator', { name: 'New messages' })).toBeNull();
  });
});

describe('ChatView: mentions', () => {
  it('offers the members the panel loaded and those online', async () => {
    stubMembers(me, bob);
    const { client, socket } = await fakeChat(me, [roomView('team', { name: 'Team' })]);
    render(wrap(<ChatView client={client} room="team" me={me} />));
    act(() => socket.receive({ type: 'joined', room: 'team', members: [me, carol], messages: [] }));
    await screen.findByText('bob', { selector: '.member-name' });
    await userEvent.type(screen.getByLabelText('Message #Team'), '@');
    const offered = within(screen.getByRole('listbox', { name: 'Members to mention' })).getAllByRole('option');
    expect(offered.map((o) => o.textContent)).toEqual(['@bob', '@carol']);
  });
});
