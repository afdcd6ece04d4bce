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
});
