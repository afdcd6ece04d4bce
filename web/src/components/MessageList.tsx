/**
 * The conversation: stored messages in id order, then the user's own
 * messages still waiting for the server. Message bodies are rendered by
 * `MessageBody` as React elements (a small markup, links), never as HTML.
 * Consecutive messages of one author within a few minutes are grouped under
 * one name, and a separator names each new day.
 *
 * Scrolling: the view follows new messages while the reader is at the
 * bottom, keeps its place when older messages are added above, and asks for
 * older history when the reader scrolls near the top (or when the messages
 * do not yet fill the view).
 */
import { Fragment, useCallback, useLayoutEffect, useRef, useState } from 'react';
import { formatDay, formatFull, formatSentAt } from '../format';
import type { WireMessage } from '../protocol';
import type { OutboxEntry, RoomState } from '../store';
import { MessageBody } from './MessageBody';

interface MessageListProps {
  room: RoomState;
  /** The room's name as shown; its id when absent. */
  title?: string;
  /** Whether the live connection is up; pending messages say they are waiting when it is not. */
  connected: boolean;
  meId: string;
  meName: string;
  onLoadOlder: () => void;
  onRetry: (clientId: string) => void;
  /** Asks again for the latest messages after that failed. */
  onReloadLatest?: () => void;
}

/** How close to the top (px) the reader must scroll to load older messages. */
const LOAD_OLDER_THRESHOLD = 120;
/** How close to the bottom (px) still counts as "at the bottom". */
const STICK_THRESHOLD = 48;
/** A message this soon after the previous one of the same author is grouped under it. */
const GROUP_WITHIN_MS = 5 * 60_000;

/** Whether `m` continues `prev`: same author, same day, soon after. */
export function continues(prev: WireMessage | undefined, m: WireMessage): boolean {
  if (prev === undefined || prev.author.id !== m.author.id) return false;
  const a = Date.parse(prev.sent_at);
  const b = Date.parse(m.sent_at);
  return !Number.isNaN(a) && !Number.isNaN(b) && b - a >= 0 && b - a <= GROUP_WITHIN_MS && sameDay(a, b);
}

function sameDay(a: number, b: number): boolean {
  return new Date(a).toDateString() === new Date(b).toDateString();
}

export function MessageList({ room, title, connected, meId, meName, onLoadOlder, onRetry, onReloadLatest }: MessageListProps) {
  const scroller = useRef<HTMLDivElement>(null);
  const view = useRef({ atBottom: true, scrollTop: 0, scrollHeight: 0, firstId: null as string | null, lastId: null as string | null });
  /** Messages arrived below while the reader was scrolled up. */
  const [newBelow, setNewBelow] = useState(false);
  const { messages, outbox, hasMore, loadingOlder } = room;

  const maybeLoadOlder = useCallback(() => {
    const el = scroller.current;
    // After a failed load, wait for the reader to ask again rather than retrying in a loop.
    if (el === null || !hasMore || loadingOlder || room.error !== null) return;
    if (el.scrollTop < LOAD_OLDER_THRESHOLD || el.scrollHeight <= el.clientHeight) onLoadOlder();
  }, [hasMore, loadingOlder, room.error, onLoadOlder]);

  const remember = useCallback(() => {
    const el = scroller.current;
    if (el === null) return;
    view.current.atBottom = el.scrollHeight - el.scrollTop - el.clientHeight <= STICK_THRESHOLD;
    if (view.current.atBottom) setNewBelow(false);
    view.current.scrollTop = el.scrollTop;
    view.current.scrollHeight = el.scrollHeight;
  }, []);

  const firstId = messages[0]?.id ?? null;
  const lastId = messages[messages.length - 1]?.id ?? null;
  // Nothing to show yet, and the server has not said the room is empty: still loading.
  const loadingLatest = !room.historyLoaded && messages.length === 0 && outbox.length === 0;
  const lastOutbox = outbox[outbox.length - 1]?.clientId ?? null;

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el === null) return;
    const before = view.current;
    if (before.firstId !== null && firstId !== null && firstId < before.firstId) {
      // Older messages were added above: keep the same messages in view.
      el.scrollTop = before.scrollTop + (el.scrollHeight - before.scrollHeight);
    } else if (before.atBottom) {
      el.scrollTop = el.scrollHeight;
    } else if (lastId !== null && before.lastId !== null && lastId > before.lastId) {
      setNewBelow(true);
    }
    view.current.firstId = firstId;
    view.current.lastId = lastId;
    remember();
    maybeLoadOlder();
  }, [messages, outbox, firstId, lastId, remember, maybeLoadOlder]);

  const toBottom = () => {
    const el = scroller.current;
    if (el === null) return;
    el.scrollTop = el.scrollHeight;
    remember();
  };

  // Sending a message always brings the reader to the bottom.
  useLayoutEffect(() => {
    const el = scroller.current;
    if (el === null || lastOutbox === null) return;
    el.scrollTop = el.scrollHeight;
    remember();
  }, [lastOutbox, remember]);

  return (
    <div className="messages-frame">
      <div
        className="messages"
        ref={scroller}
        onScroll={() => {
          remember();
          maybeLoadOlder();
        }}
        role="log"
        aria-label={`Messages in ${title ?? room.room}`}
        aria-busy={loadingOlder || loadingLatest}
        tabIndex={0}
        data-testid="message-list"
      >
        <div className="history-edge">
          {hasMore ? (
            <button type="button" className="link" onClick={onLoadOlder} disabled={loadingOlder}>
              {loadingOlder ? 'Loading older messages…' : 'Load older messages'}
            </button>
          ) : (
            messages.length > 0 && <span className="muted">Beginning of the conversation</span>
          )}
        </div>
        {loadingLatest &&
          (room.error !== null && onReloadLatest !== undefined ? (
            <p className="empty muted" data-testid="history-failed">
              The conversation could not be loaded.{' '}
              <button type="button" className="link" onClick={onReloadLatest}>
                Try again
              </button>
            </p>
          ) : (
            <MessageSkeleton />
          ))}
        {room.historyLoaded && messages.length === 0 && outbox.length === 0 && !hasMore && (
          <p className="empty muted" data-testid="room-empty">
            No messages yet. Say hello!
          </p>
        )}
        <ol className="message-items">
          {messages.map((m, i) => {
            const prev = messages[i - 1];
            const newDay = prev === undefined || !sameDay(Date.parse(prev.sent_at), Date.parse(m.sent_at));
            return (
              <Fragment key={m.id}>
                {newDay && (
                  <li className="date-separator" data-testid="date-separator">
                    <span>{formatDay(m.sent_at)}</span>
                  </li>
                )}
                <StoredMessage message={m} mine={m.author.id === meId} grouped={!newDay && continues(prev, m)} />
              </Fragment>
            );
          })}
          {outbox.map((o) => (
            <OutgoingMessage key={o.clientId} entry={o} author={meName} connected={connected} onRetry={onRetry} />
          ))}
        </ol>
      </div>
      {newBelow && (
        <button type="button" className="new-below" data-testid="new-messages" onClick={toBottom}>
          New messages <span aria-hidden="true">↓</span>
        </button>
      )}
    </div>
  );
}

/** Grey placeholder lines where messages will appear, while the first page loads. */
function MessageSkeleton() {
  return (
    <div className="skeleton" role="status" data-testid="messages-loading">
      <span className="visually-hidden">Loading messages…</span>
      {[0, 1, 2, 3].map((i) => (
        <div key={i} className="skeleton-message" aria-hidden="true">
          <span className="skeleton-line short" />
          <span className={i % 2 === 0 ? 'skeleton-line' : 'skeleton-line medium'} />
        </div>
      ))}
    </div>
  );
}

interface StoredMessageProps {
  message: WireMessage;
  mine: boolean;
  /** Continues the previous message of the same author: the name and time are not repeated on screen. */
  grouped?: boolean;
}

function StoredMessage({ message, mine, grouped = false }: StoredMessageProps) {
  const className = `message${mine ? ' mine' : ''}${grouped ? ' grouped' : ''}`;
  return (
    <li className={className} data-testid="message" data-id={message.id} data-status="sent">
      <div className={grouped ? 'message-meta visually-hidden' : 'message-meta'}>
        <span className="author">{message.author.username}</span>
        <time dateTime={message.sent_at} title={formatFull(message.sent_at)}>
          {formatSentAt(message.sent_at)}
        </time>
      </div>
      <MessageBody body={message.body} />
    </li>
  );
}

interface OutgoingMessageProps {
  entry: OutboxEntry;
  author: string;
  connected: boolean;
  onRetry: (clientId: string) => void;
}

function OutgoingMessage({ entry, author, connected, onRetry }: OutgoingMessageProps) {
  const failed = entry.status === 'failed';
  return (
    <li
      className={failed ? 'message mine failed' : 'message mine pending'}
      data-testid="message"
      data-status={entry.status}
      data-client-id={entry.clientId}
    >
      <div className="message-meta">
        <span className="author">{author}</span>
        <span className="status">{failed ? 'Not sent' : connected ? 'Sending…' : 'Waiting for connection…'}</span>
      </div>
      <MessageBody body={entry.body} />
      {failed && (
        <div className="failure" role="alert">
          {entry.error !== null && <span>{entry.error} </span>}
          <button type="button" className="link" onClick={() => onRetry(entry.clientId)}>
            Retry
          </button>
        </div>
      )}
    </li>
  );
}
