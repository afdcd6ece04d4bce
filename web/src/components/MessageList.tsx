/**
 * The conversation: stored messages in id order, then the user's own
 * messages still waiting for the server. Message bodies are rendered by
 * `MessageBody` as React elements (a small markup, links), never as HTML.
 * Consecutive messages of one author within a few minutes are grouped under
 * one name, and a separator names each new day.
 *
 * A message can be edited (in place: Enter saves, Escape cancels), deleted
 * (after a confirmation; a tombstone line stays), reacted to and replied to;
 * a reply shows a quote of the message it answers, which scrolls to that
 * message and highlights it briefly when it is loaded. The user's changes
 * that failed are shown under their message with a retry.
 *
 * Scrolling: the view follows new messages while the reader is at the
 * bottom, keeps its place when older messages are added above, and asks for
 * older history when the reader scrolls near the top (or when the messages
 * do not yet fill the view).
 */
import { Fragment, useCallback, useEffect, useLayoutEffect, useRef, useState, type KeyboardEvent } from 'react';
import { formatDay, formatFull, formatSentAt } from '../format';
import { messageControls } from '../permissions';
import { bodyProblem, type ReplyRef, type WireMessage } from '../protocol';
import { previewOf, type OutboxEntry, type PendingChange, type RoomState } from '../store';
import { mentions } from '../mentions';
import { MessageBody } from './MessageBody';
import { EmojiPicker, ReactionBar } from './Reactions';

/** What the user may do to the messages shown, and how; without it the list is read-only. */
export interface MessageActions {
  /** Whether the user may delete others' messages (an owner or admin of the room). */
  deleteOthers: boolean;
  /** The message being edited, if any. */
  editing: string | null;
  onStartEdit: (id: string | null) => void;
  onEdit: (id: string, body: string) => void;
  onDelete: (id: string) => void;
  onReact: (id: string, emoji: string, on: boolean) => void;
  onReply: (message: WireMessage) => void;
  onDismissChange: (clientId: string) => void;
}

/** How long a message stays highlighted after its reply quote was clicked. */
const HIGHLIGHT_MS = 2000;

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
  actions?: MessageActions;
  /** The first unread message when the room was opened: a "New messages" divider goes above it. */
  unreadFrom?: string | null;
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

export function MessageList({ room, title, connected, meId, meName, onLoadOlder, onRetry, onReloadLatest, actions, unreadFrom = null }: MessageListProps) {
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

  /** The message a reply quote pointed at, highlighted for a moment. */
  const [highlighted, setHighlighted] = useState<string | null>(null);
  useEffect(() => {
    if (highlighted === null) return;
    const t = setTimeout(() => setHighlighted(null), HIGHLIGHT_MS);
    return () => clearTimeout(t);
  }, [highlighted]);
  const jumpTo = useCallback((id: string) => {
    const el = scroller.current?.querySelector<HTMLElement>(`[data-testid="message"][data-id="${CSS.escape(id)}"]`);
    if (el == null) return;
    el.scrollIntoView?.({ block: 'center', behavior: 'smooth' });
    el.focus({ preventScroll: true });
    setHighlighted(id);
  }, []);
  const changes = room.changes ?? [];
  const byId = new Map(messages.map((m) => [m.id, m]));

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
                {m.id === unreadFrom && (
                  <li className="unread-divider-item">
                    {/* A separator's content is presentational: its label is what assistive technology reads. */}
                    <div className="unread-divider" role="separator" aria-label="New messages" data-testid="unread-divider">
                      <span aria-hidden="true">New messages</span>
                    </div>
                  </li>
                )}
                <StoredMessage
                  message={m}
                  mine={m.author.id === meId}
                  meId={meId}
                  meName={meName}
                  grouped={!newDay && m.id !== unreadFrom && continues(prev, m)}
                  highlighted={highlighted === m.id}
                  original={m.reply_to === undefined ? undefined : byId.get(m.reply_to.id)}
                  onJump={jumpTo}
                  actions={actions}
                  changes={changes.filter((c) => c.frame.id === m.id)}
                  onRetry={onRetry}
                />
              </Fragment>
            );
          })}
          {outbox.map((o) => (
            <OutgoingMessage key={o.clientId} entry={o} author={meName} connected={connected} onRetry={onRetry} onJump={jumpTo} />
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
  /** The signed-in user's name: a message of someone else that mentions it is highlighted. */
  meName?: string;
  /** Continues the previous message of the same author: the name and time are not repeated on screen. */
  grouped?: boolean;
  meId?: string;
  highlighted?: boolean;
  /** The message this one replies to, when it is loaded: its quote scrolls to it and shows its current state. */
  original?: WireMessage | undefined;
  onJump?: (id: string) => void;
  actions?: MessageActions | undefined;
  /** The user's pending or failed changes of this message. */
  changes?: readonly PendingChange[];
  onRetry?: (clientId: string) => void;
}

function StoredMessage({ message, mine, meName = '', grouped = false, meId = '', highlighted = false, original, onJump, actions, changes = [], onRetry }: StoredMessageProps) {
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [picking, setPicking] = useState(false);
  const item = useRef<HTMLLIElement>(null);
  /** A closed picker or confirmation gives the focus back to the message, so the keyboard stays here. */
  const refocus = () => setTimeout(() => item.current?.focus({ preventScroll: true }), 0);
  const deleted = message.deleted === true;
  const controls = actions === undefined ? null : messageControls(meId, message, actions.deleteOthers);
  const editing = actions !== undefined && actions.editing === message.id && !deleted;
  const mentioned = !mine && !deleted && meName.length > 0 && mentions(message.body, meName);
  const className = `message${mine ? ' mine' : ''}${grouped ? ' grouped' : ''}${deleted ? ' deleted' : ''}${highlighted ? ' highlighted' : ''}${mentioned ? ' mentioned' : ''}`;
  const pending = changes.filter((c) => c.status === 'pending');
  const failed = changes.filter((c) => c.status === 'failed');
  return (
    <li
      ref={item}
      className={className}
      data-testid="message"
      data-id={message.id}
      data-status="sent"
      data-version={message.version ?? 1}
      data-deleted={deleted || undefined}
      data-mentioned={mentioned || undefined}
      tabIndex={-1}
    >
      <div className={grouped ? 'message-meta visually-hidden' : 'message-meta'}>
        <span className="author">{message.author.username}</span>
        <time dateTime={message.sent_at} title={formatFull(message.sent_at)}>
          {formatSentAt(message.sent_at)}
        </time>
        {mentioned && <span className="visually-hidden">, mentions you</span>}
      </div>
      {message.reply_to !== undefined && !deleted && (
        <ReplyQuote reply={currentReply(message.reply_to, original)} loaded={original !== undefined} onJump={onJump} />
      )}
      {deleted ? (
        <p className="tombstone muted" data-testid="tombstone">
          Message deleted
        </p>
      ) : editing ? (
        <EditForm
          body={message.body}
          onSave={(body) => {
            if (body !== message.body) actions.onEdit(message.id, body);
            actions.onStartEdit(null);
          }}
          onCancel={() => actions.onStartEdit(null)}
        />
      ) : (
        <>
          <MessageBody body={message.body} meName={meName} />
          {message.edited_at !== undefined && (
            <span className="edited muted" data-testid="edited" title={`Edited ${formatFull(message.edited_at)}`}>
              (edited)
            </span>
          )}
        </>
      )}
      {!deleted && message.reactions !== undefined && (
        <ReactionBar
          reactions={message.reactions}
          onToggle={controls?.react ? (emoji, on) => actions!.onReact(message.id, emoji, on) : undefined}
        />
      )}
      {pending.some((c) => c.frame.type !== 'react') && (
        <span className="status muted" data-testid="change-pending">
          Saving…
        </span>
      )}
      {failed.map((c) => (
        <div key={c.clientId} className="failure" role="alert" data-testid="change-failed">
          <span>
            {changeVerb(c)}: {c.error ?? 'no answer from the server.'}{' '}
          </span>
          <button type="button" className="link" onClick={() => onRetry?.(c.clientId)}>
            Retry
          </button>{' '}
          <button type="button" className="link" onClick={() => actions?.onDismissChange(c.clientId)}>
            Dismiss
          </button>
        </div>
      ))}
      {confirmDelete && actions !== undefined && (
        <div className="banner banner-confirm" role="alertdialog" aria-label="Delete message">
          Delete this message for everyone?{' '}
          <button
            type="button"
            className="danger"
            onClick={() => {
              setConfirmDelete(false);
              actions.onDelete(message.id);
              refocus();
            }}
          >
            Delete
          </button>{' '}
          <button
            type="button"
            className="link"
            onClick={() => {
              setConfirmDelete(false);
              refocus();
            }}
            autoFocus
          >
            Cancel
          </button>
        </div>
      )}
      {picking && actions !== undefined && (
        <EmojiPicker
          onPick={(emoji) => {
            setPicking(false);
            refocus();
            const held = message.reactions?.find((r) => r.emoji === emoji);
            // Picking an emoji the user already reacted with leaves it on.
            if (held?.me !== true) actions.onReact(message.id, emoji, true);
          }}
          onClose={() => {
            setPicking(false);
            refocus();
          }}
        />
      )}
      {controls !== null && actions !== undefined && !editing && (controls.reply || controls.react || controls.edit || controls.delete) && (
        <div className="message-actions" role="group" aria-label={`Actions for the message of ${message.author.username}`}>
          {controls.reply && (
            <button type="button" className="action" onClick={() => actions.onReply(message)} aria-label={`Reply to ${message.author.username}`}>
              Reply
            </button>
          )}
          {controls.react && (
            <button type="button" className="action" aria-expanded={picking} onClick={() => setPicking((v) => !v)} aria-label="Add a reaction">
              React
            </button>
          )}
          {controls.edit && (
            <button type="button" className="action" onClick={() => actions.onStartEdit(message.id)} aria-label="Edit your message">
              Edit
            </button>
          )}
          {controls.delete && (
            <button type="button" className="action" onClick={() => setConfirmDelete(true)} aria-label={mine ? 'Delete your message' : `Delete the message of ${message.author.username}`}>
              Delete
            </button>
          )}
        </div>
      )}
    </li>
  );
}

/**
 * A reply's quote as the loaded original now is: edited, or deleted (then its text is shown
 * nowhere, even though the reply arrived with an excerpt of it).
 */
function currentReply(reply: ReplyRef, original: WireMessage | undefined): ReplyRef {
  if (original === undefined || reply.deleted === true) return reply;
  if (original.deleted === true) return { id: reply.id, author: reply.author, deleted: true };
  const excerpt = previewOf(original.body);
  return excerpt === reply.excerpt ? reply : { ...reply, excerpt };
}

function changeVerb(c: PendingChange): string {
  switch (c.frame.type) {
    case 'edit':
      return 'Not edited';
    case 'delete':
      return 'Not deleted';
    case 'react':
      return 'Reaction not saved';
  }
}

/** The quote of the message a reply answers; a button that shows that message when it is loaded. */
function ReplyQuote({ reply, loaded, onJump }: { reply: ReplyRef; loaded: boolean; onJump?: ((id: string) => void) | undefined }) {
  const excerpt = reply.deleted === true ? 'Message deleted' : (reply.excerpt ?? '');
  return (
    <button
      type="button"
      className={reply.deleted === true ? 'reply-quote deleted' : 'reply-quote'}
      data-testid="reply-quote"
      data-reply-to={reply.id}
      onClick={() => onJump?.(reply.id)}
      disabled={!loaded}
      aria-label={`In reply to ${reply.author.username}: ${excerpt}${loaded ? '. Show that message' : ''}`}
      title={loaded ? 'Show the message this replies to' : 'The message this replies to is not loaded'}
    >
      <span className="reply-author">{reply.author.username}</span> <span className="reply-excerpt">{excerpt}</span>
    </button>
  );
}

/** The body being edited in place: Enter saves, Shift+Enter starts a new line, Escape cancels. */
function EditForm({ body, onSave, onCancel }: { body: string; onSave: (body: string) => void; onCancel: () => void }) {
  const [text, setText] = useState(body);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    const el = input.current;
    if (el === null) return;
    el.focus();
    el.setSelectionRange(el.value.length, el.value.length);
  }, []);
  const save = () => {
    const trimmed = text.trim();
    const problem = bodyProblem(trimmed);
    if (problem !== null) {
      setError(problem);
      return;
    }
    onSave(trimmed);
  };
  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Escape') {
      e.preventDefault();
      onCancel();
    } else if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      save();
    }
  };
  return (
    <form
      className="edit-form"
      onSubmit={(e) => {
        e.preventDefault();
        save();
      }}
    >
      <textarea
        ref={input}
        aria-label="Edit message"
        value={text}
        rows={Math.min(8, text.split('\n').length)}
        onChange={(e) => {
          setText(e.target.value);
          setError(null);
        }}
        onKeyDown={onKeyDown}
        aria-invalid={error !== null}
        data-testid="edit-input"
      />
      {error !== null && (
        <span className="field-error" role="alert">
          {error}
        </span>
      )}
      <div className="edit-actions">
        <button type="submit" className="primary">
          Save
        </button>{' '}
        <button type="button" className="link" onClick={onCancel}>
          Cancel
        </button>
        <span className="muted"> Enter to save, Escape to cancel</span>
      </div>
    </form>
  );
}

interface OutgoingMessageProps {
  entry: OutboxEntry;
  author: string;
  connected: boolean;
  onRetry: (clientId: string) => void;
  onJump: (id: string) => void;
}

function OutgoingMessage({ entry, author, connected, onRetry, onJump }: OutgoingMessageProps) {
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
      {entry.replyTo !== undefined && <ReplyQuote reply={entry.replyTo} loaded onJump={onJump} />}
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
