import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { emptyRoom, type RoomState } from '../store';
import { MessageList } from './MessageList';

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
