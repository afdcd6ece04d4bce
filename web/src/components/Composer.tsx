/**
 * The send box. Enter sends; Shift+Enter starts a new line (and Enter while
 * an input method is composing text is left to the input method). ↑ in an
 * empty box edits the user's last message. A reply being written shows a
 * quote of the message it answers above the box; Escape drops it.
 *
 * Typing `@` and the start of a name offers the room's members whose name starts so (a
 * listbox tied to the box with `aria-activedescendant`, so the focus stays in the box): ↑/↓
 * choose, Enter or Tab puts `@name ` in, Escape closes the list; a click does the same.
 */
import { useId, useLayoutEffect, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { loadDraft, saveDraft } from '../drafts';
import { insertMention, mentionAt, suggestMembers } from '../mentions';
import { MAX_BODY_CHARS, bodyLength, bodyProblem, type ReplyRef, type UserRef } from '../protocol';

interface ComposerProps {
  /** The room's name as shown, for the label. */
  room: string;
  /** `#` for a room, `@` for a direct message. */
  sigil?: string;
  onSend: (body: string) => void;
  onTyping: () => void;
  /** The room's id: what is written and not sent is kept per room as a draft. */
  draftKey?: string;
  /** The message the next send answers, if any. */
  replyTo?: ReplyRef | null;
  onCancelReply?: () => void;
  /** ↑ in an empty box: starts editing the user's last message; `false` when there is none. */
  onEditLast?: () => boolean;
  /** The room's members, offered after `@`. */
  members?: readonly UserRef[];
  /** The signed-in user, who is not offered. */
  meId?: string;
}

/** The character count is shown once a message gets this close to the limit. */
const COUNTER_FROM = MAX_BODY_CHARS - 500;

const NO_MEMBERS: readonly UserRef[] = [];

export function Composer({
  room,
  sigil = '#',
  onSend,
  onTyping,
  draftKey,
  replyTo = null,
  onCancelReply,
  onEditLast,
  members = NO_MEMBERS,
  meId = '',
}: ComposerProps) {
  const [body, setBodyState] = useState(() => (draftKey === undefined ? '' : loadDraft(draftKey)));
  const setBody = (text: string) => {
    setBodyState(text);
    if (draftKey !== undefined) saveDraft(draftKey, text);
  };
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const id = useId();
  const length = bodyLength(body);

  /** Where the caret is, to find the `@name` being typed. */
  const [caret, setCaret] = useState(0);
  /** The `@` whose suggestions were closed (Escape, or leaving the box), by its position, until another is typed. */
  const [dismissed, setDismissed] = useState<number | null>(null);
  const [active, setActive] = useState(0);
  /** Where to put the caret after a mention was put in. */
  const placeCaret = useRef<number | null>(null);
  const typed = mentionAt(body, caret);
  const suggestions = typed === null || typed.start === dismissed ? [] : suggestMembers(members, typed.query, meId);
  const open = suggestions.length > 0;
  const current = open ? Math.min(active, suggestions.length - 1) : 0;
  const listId = `${id}-mentions`;
  const optionId = (i: number) => `${id}-mention-${i}`;

  useLayoutEffect(() => {
    const at = placeCaret.current;
    const el = input.current;
    if (at === null || el === null) return;
    placeCaret.current = null;
    el.focus();
    el.setSelectionRange(at, at);
  });

  const trackCaret = () => {
    const el = input.current;
    if (el !== null && el.selectionStart !== null) setCaret(el.selectionStart);
  };

  function choose(user: UserRef) {
    if (typed === null) return;
    const next = insertMention(body, typed, caret, user.username);
    setBody(next.text);
    setCaret(next.caret);
    setActive(0);
    placeCaret.current = next.caret;
  }

  /** Keys the open list of suggestions takes; `true` when one was taken. */
  function suggestionKey(e: KeyboardEvent<HTMLTextAreaElement>): boolean {
    if (!open || e.nativeEvent.isComposing) return false;
    switch (e.key) {
      case 'ArrowDown':
        setActive((current + 1) % suggestions.length);
        return true;
      case 'ArrowUp':
        setActive((current - 1 + suggestions.length) % suggestions.length);
        return true;
      case 'Enter':
      case 'Tab':
        if (e.shiftKey) return false;
        choose(suggestions[current]!);
        return true;
      case 'Escape':
        setDismissed(typed!.start);
        return true;
      default:
        return false;
    }
  }

  function submit(e?: FormEvent) {
    e?.preventDefault();
    const text = body.trim();
    const problem = bodyProblem(text);
    if (problem !== null) {
      setError(text.length === 0 ? null : problem);
      return;
    }
    onSend(text);
    setBody('');
    setError(null);
    input.current?.focus();
  }

  function onKeyDown(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (suggestionKey(e)) {
      e.preventDefault();
    } else if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === 'ArrowUp' && body.length === 0 && onEditLast !== undefined) {
      if (onEditLast()) e.preventDefault();
    } else if (e.key === 'Escape' && replyTo !== null && onCancelReply !== undefined) {
      e.preventDefault();
      onCancelReply();
    }
  }

  return (
    <form className="composer" onSubmit={submit} data-testid="composer">
      {replyTo !== null && (
        <div className="composer-reply" data-testid="composer-reply">
          <span className="muted">Replying to </span>
          <span className="reply-author">{replyTo.author.username}</span>{' '}
          <span className="reply-excerpt">{replyTo.deleted === true ? 'Message deleted' : (replyTo.excerpt ?? '')}</span>
          <button type="button" className="link" onClick={onCancelReply} aria-label="Cancel the reply">
            Cancel
          </button>
        </div>
      )}
      <label htmlFor={id} className="visually-hidden">
        Message {sigil}
        {room}
      </label>
      <textarea
        id={id}
        ref={input}
        name="message"
        rows={1}
        placeholder={`Message ${sigil}${room}`}
        value={body}
        onChange={(e) => {
          setBody(e.target.value);
          const at = e.target.selectionStart ?? e.target.value.length;
          setCaret(at);
          const now = mentionAt(e.target.value, at);
          if (now === null || now.start !== typed?.start) {
            setActive(0);
            if (now?.start !== dismissed) setDismissed(null);
          }
          if (error !== null) setError(null);
          if (e.target.value.length > 0) onTyping();
        }}
        onSelect={trackCaret}
        onClick={trackCaret}
        onKeyDown={onKeyDown}
        onBlur={() => setDismissed(typed?.start ?? null)}
        onFocus={() => setDismissed(null)}
        aria-autocomplete="list"
        aria-controls={open ? listId : undefined}
        aria-activedescendant={open ? optionId(current) : undefined}
        aria-describedby={`${id}-help`}
        aria-invalid={error !== null}
        autoFocus
      />
      {open && (
        <ul className="mention-suggestions" id={listId} role="listbox" aria-label="Members to mention" data-testid="mention-suggestions">
          {suggestions.map((user, i) => (
            <li
              key={user.id}
              id={optionId(i)}
              role="option"
              aria-selected={i === current}
              className={i === current ? 'mention-option active' : 'mention-option'}
              data-testid="mention-option"
              // Keeps the focus (and the caret) in the box.
              onMouseDown={(e) => e.preventDefault()}
              onMouseEnter={() => setActive(i)}
              onClick={() => choose(user)}
            >
              @{user.username}
            </li>
          ))}
        </ul>
      )}
      <button type="submit" className="primary" disabled={body.trim().length === 0 || length > MAX_BODY_CHARS}>
        Send
      </button>
      <p id={`${id}-help`} className="composer-help">
        {error !== null ? (
          <span className="field-error" role="alert">
            {error}
          </span>
        ) : (
          <span className="muted">Enter to send, Shift+Enter for a new line</span>
        )}
        {length >= COUNTER_FROM && (
          <span className={length > MAX_BODY_CHARS ? 'counter over' : 'counter'}>
            {length}/{MAX_BODY_CHARS}
          </span>
        )}
      </p>
    </form>
  );
}
