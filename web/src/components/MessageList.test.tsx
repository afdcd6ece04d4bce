import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { emptyRoom, type RoomState } from '../store';
import { MessageList, type MessageActions } from './MessageList';

const bob = { id: 'u-bob', username: 'bob' };

function room(patch: Partial<RoomState>): RoomState {
  return { ...emptyRoom('general'), joined: true, ...patch };
}

describe('MessageList', () => {
  it('renders a message body as text, never as HTML', () => {
    const payload = '<img src=x onerror="window.__xss=1"><b>bold</b>';
    const { container } = render(
      <MessageList
        room={room({
          messages: [{ room: 'general', id: '01', client_id: null, author: bob, body: payload, sent_at: '2024-06-01T12:00:00Z' }],
        })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    expect(screen.getByTestId('message-body')).toHaveTextContent(payload);
    expect(container.querySelector('img')).toBeNull();
    expect(container.querySelector('b')).toBeNull();
    expect((window as unknown as { __xss?: number }).__xss).toBeUndefined();
  });

  it('shows author and time for each message', () => {
    render(
      <MessageList
        room={room({
          messages: [{ room: 'general', id: '01', client_id: null, author: bob, body: 'hi', sent_at: '2024-06-01T12:00:00Z' }],
        })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    const item = screen.getByTestId('message');
    expect(item).toHaveTextContent('bob');
    expect(item.querySelector('time')).toHaveAttribute('datetime', '2024-06-01T12:00:00Z');
  });

  it('shows pending and failed own messages, with a retry button on failed ones', async () => {
    const onRetry = vi.fn();
    render(
      <MessageList
        room={room({
          outbox: [
            { clientId: 'c1', room: 'general', body: 'first', status: 'pending', error: null },
            { clientId: 'c2', room: 'general', body: 'second', status: 'failed', error: null },
          ],
        })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={onRetry}
      />,
    );
    const [pending, failed] = screen.getAllByTestId('message');
    expect(pending).toHaveAttribute('data-status', 'pending');
    expect(pending).toHaveTextContent('Sending…');
    expect(failed).toHaveAttribute('data-status', 'failed');
    expect(failed).toHaveTextContent('Not sent');
    await userEvent.click(screen.getByRole('button', { name: 'Retry' }));
    expect(onRetry).toHaveBeenCalledWith('c2');
  });

  it('says a pending message is waiting while the connection is down', () => {
    render(
      <MessageList
        room={room({ outbox: [{ clientId: 'c1', room: 'general', body: 'later', status: 'pending', error: null }] })}
        connected={false}
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    expect(screen.getByTestId('message')).toHaveTextContent('Waiting for connection…');
  });

  it('offers older messages when there are more', async () => {
    const onLoadOlder = vi.fn();
    render(
      <MessageList
        room={room({
          hasMore: true,
          error: 'offline',
          messages: [{ room: 'general', id: '05', client_id: null, author: bob, body: 'hi', sent_at: '2024-06-01T12:00:00Z' }],
        })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={onLoadOlder}
        onRetry={vi.fn()}
      />,
    );
    await userEvent.click(screen.getByRole('button', { name: 'Load older messages' }));
    expect(onLoadOlder).toHaveBeenCalledTimes(1);
  });

  it('renders links safely and a small markup, without HTML', () => {
    const body = 'read **this** at https://example.com/x and javascript:alert(1) `code`\n```\n<b>block</b>\n```';
    const { container } = render(
      <MessageList
        room={room({ messages: [{ room: 'general', id: '01', client_id: null, author: bob, body, sent_at: '2024-06-01T12:00:00Z' }] })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    const link = screen.getByRole('link', { name: 'https://example.com/x' });
    expect(link).toHaveAttribute('href', 'https://example.com/x');
    expect(link).toHaveAttribute('rel', 'noopener noreferrer');
    expect(link).toHaveAttribute('target', '_blank');
    expect(container.querySelectorAll('a')).toHaveLength(1);
    expect(container.querySelector('strong')).toHaveTextContent('this');
    expect(container.querySelector('pre code')).toHaveTextContent('<b>block</b>');
    expect(container.querySelector('b')).toBeNull();
  });

  it('groups consecutive messages of one author and separates days', () => {
    const at = (id: string, author: typeof bob, sent_at: string) => ({ room: 'general', id, client_id: null, author, body: `m${id}`, sent_at });
    const ann = { id: 'u-ann', username: 'ann' };
    render(
      <MessageList
        room={room({
          messages: [
            at('01', bob, '2024-06-01T12:00:00Z'),
            at('02', bob, '2024-06-01T12:01:00Z'),
            at('03', ann, '2024-06-01T12:02:00Z'),
            at('04', ann, '2024-06-01T12:30:00Z'),
            at('05', ann, '2024-06-03T09:00:00Z'),
          ],
        })}
        connected
        meId="u-me"
        meName="me"
        onLoadOlder={vi.fn()}
        onRetry={vi.fn()}
      />,
    );
    const grouped = screen.getAllByTestId('message').map((li) => li.classList.contains('grouped'));
    expect(grouped).toEqual([false, true, false, false, false]);
    expect(screen.getAllByTestId('date-separator')).toHaveLength(2);
  });

  it('offers "New messages" when messages arrive while the reader is scrolled up', async () => {
    const msgAt = (id: string) => ({ room: 'general', id, client_id: null, author: bob, body: `m${id}`, sent_at: '2024-06-01T12:00:00Z' });
    const props = { connected: true, meId: 'u-me', meName: 'me', onLoadOlder: vi.fn(), onRetry: vi.fn() };
    const first = room({ messages: [msgAt('01'), msgAt('02')], historyLoaded: true });
    const { rerender } = render(<MessageList room={first} {...props} />);
    const list = screen.getByTestId('message-list');
    // jsdom has no layout: make the list taller than its view, scrolled to the top.
    Object.defineProperty(list, 'scrollHeight', { configurable: true, value: 1000 });
    Object.defineProperty(list, 'clientHeight', { configurable: true, value: 300 });
    list.scrollTop = 0;
    list.dispatchEvent(new Event('scroll'));
    rerender(<MessageList room={{ ...first, messages: [...first.messages, msgAt('03')] }} {...props} />);
    const button = await screen.findByTestId('new-messages');
    await userEvent.click(button);
    expect(list.scrollTop).toBe(1000);
  });
});

describe('MessageList: changed messages', () => {
  const me = { id: 'u-me', username: 'me' };
  const base = { connected: true, meId: 'u-me', meName: 'me', onLoadOlder: vi.fn(), onRetry: vi.fn() };
  const at = '2024-06-01T12:00:00Z';
  function actions(patch: Partial<MessageActions> = {}): MessageActions {
    return {
      deleteOthers: false,
      editing: null,
      onStartEdit: vi.fn(),
      onEdit: vi.fn(),
      onDelete: vi.fn(),
      onReact: vi.fn(),
      onReply: vi.fn(),
      onDismissChange: vi.fn(),
      ...patch,
    };
  }

  it('shows a tombstone instead of a deleted body, and an (edited) label', () => {
    render(
      <MessageList
        room={room({
          messages: [
            { room: 'general', id: '01', client_id: null, author: bob, body: '', sent_at: at, deleted: true, version: 2 },
            { room: 'general', id: '02', client_id: null, author: bob, body: 'fixed', sent_at: at, edited_at: at, version: 2 },
          ],
        })}
        {...base}
        actions={actions()}
      />,
    );
    expect(screen.getByTestId('tombstone')).toHaveTextContent('Message deleted');
    expect(screen.getAllByTestId('message-body')).toHaveLength(1);
    expect(screen.getByTestId('edited')).toHaveTextContent('(edited)');
  });

  it('offers edit only on own messages and delete on others only to moderators, after a confirmation', async () => {
    const onDelete = vi.fn();
    const messages = [
      { room: 'general', id: '01', client_id: null, author: bob, body: 'theirs', sent_at: at },
      { room: 'general', id: '02', client_id: null, author: me, body: 'mine', sent_at: at },
    ];
    const { rerender } = render(<MessageList room={room({ messages })} {...base} actions={actions({ onDelete })} />);
    expect(screen.getAllByRole('button', { name: 'Edit your message' })).toHaveLength(1);
    expect(screen.queryByRole('button', { name: 'Delete the message of bob' })).toBeNull();
    rerender(<MessageList room={room({ messages })} {...base} actions={actions({ onDelete, deleteOthers: true })} />);
    await userEvent.click(screen.getByRole('button', { name: 'Delete the message of bob' }));
    expect(onDelete).not.toHaveBeenCalled();
    await userEvent.click(within(screen.getByRole('alertdialog', { name: 'Delete message' })).getByRole('button', { name: 'Delete' }));
    expect(onDelete).toHaveBeenCalledWith('01');
  });

  it('toggles a reaction: pressed when it is the user\'s, and clicking takes it back', async () => {
    const onReact = vi.fn();
    render(
      <MessageList
        room={room({
          messages: [
            {
              room: 'general',
              id: '01',
              client_id: null,
              author: bob,
              body: 'hi',
              sent_at: at,
              reactions: [
                { emoji: '👍', count: 2, me: true },
                { emoji: '🎉', count: 1 },
              ],
            },
          ],
        })}
        {...base}
        actions={actions({ onReact })}
      />,
    );
    const [thumbs, party] = screen.getAllByTestId('reaction');
    expect(thumbs).toHaveAttribute('aria-pressed', 'true');
    expect(party).toHaveAttribute('aria-pressed', 'false');
    await userEvent.click(thumbs!);
    await userEvent.click(party!);
    expect(onReact.mock.calls).toEqual([
      ['01', '👍', false],
      ['01', '🎉', true],
    ]);
    await userEvent.click(screen.getByRole('button', { name: 'Add a reaction' }));
    await userEvent.click(screen.getByRole('button', { name: 'React with 👀' }));
    expect(onReact).toHaveBeenLastCalledWith('01', '👀', true);
  });

  it('edits in place: Enter saves, Escape cancels', async () => {
    const onEdit = vi.fn();
    const onStartEdit = vi.fn();
    render(
      <MessageList
        room={room({ messages: [{ room: 'general', id: '02', client_id: null, author: me, body: 'mine', sent_at: at }] })}
        {...base}
        actions={actions({ editing: '02', onEdit, onStartEdit })}
      />,
    );
    const input = screen.getByRole('textbox', { name: 'Edit message' });
    await userEvent.keyboard(' again{Enter}');
    expect(onEdit).toHaveBeenCalledWith('02', 'mine again');
    await userEvent.type(input, '{Escape}');
    expect(onStartEdit).toHaveBeenLastCalledWith(null);
  });

  it('shows a reply quote that is disabled while the original is not loaded', () => {
    render(
      <MessageList
        room={room({
          messages: [
            {
              room: 'general',
              id: '05',
              client_id: null,
              author: me,
              body: 'answer',
              sent_at: at,
              reply_to: { id: '01', author: bob, excerpt: 'the question' },
            },
          ],
        })}
        {...base}
        actions={actions()}
      />,
    );
    const quote = screen.getByTestId('reply-quote');
    expect(quote).toHaveTextContent('bob the question');
    expect(quote).toBeDisabled();
  });

  it('opens the picker from the keyboard, and Escape closes it with the focus back on the message', async () => {
    render(
      <MessageList
        room={room({ messages: [{ room: 'general', id: '01', client_id: null, author: bob, body: 'hi', sent_at: at }] })}
        {...base}
        actions={actions()}
      />,
    );
    screen.getByRole('button', { name: 'Add a reaction' }).focus();
    await userEvent.keyboard('{Enter}');
    expect(screen.getByRole('button', { name: 'React with 👍' })).toHaveFocus();
    await userEvent.keyboard('{Escape}');
    expect(screen.queryByTestId('emoji-picker')).toBeNull();
    await vi.waitFor(() => expect(screen.getByTestId('message')).toHaveFocus());
  });

  it('quotes the loaded original as it is now: edited, or deleted without its text', () => {
    const reply = { id: '01', author: bob, excerpt: 'first words' };
    const answer = { room: 'general', id: '05', client_id: null, author: me, body: 'answer', sent_at: at, reply_to: reply };
    const { rerender } = render(
      <MessageList
        room={room({ messages: [{ room: 'general', id: '01', client_id: null, author: bob, body: 'second words', sent_at: at, version: 2 }, answer] })}
        {...base}
        actions={actions()}
      />,
    );
    expect(screen.getByTestId('reply-quote')).toHaveTextContent('bob second words');
    expect(screen.getByTestId('reply-quote')).toBeEnabled();
    rerender(
      <MessageList
        room={room({ messages: [{ room: 'general', id: '01', client_id: null, author: bob, body: '', sent_at: at, deleted: true, version: 3 }, answer] })}
        {...base}
        actions={actions()}
      />,
    );
    expect(screen.getByTestId('reply-quote')).toHaveTextContent('bob Message deleted');
    expect(screen.getByTestId('reply-quote')).not.toHaveTextContent('words');
  });
});
