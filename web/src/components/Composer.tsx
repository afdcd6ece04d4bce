/**
 * The send box. Enter sends; Shift+Enter starts a new line (and Enter while
 * an input method is composing text is left to the input method). ↑ in an
 * empty box edits the user's last message. A reply being written shows a
 * quote of the message it answers above the box; Escape drops it.
 */
import { useId, useRef, useState, type FormEvent, type KeyboardEvent } from 'react';
import { loadDraft, saveDraft } from '../drafts';
import { MAX_BODY_CHARS, bodyLength, bodyProblem, type ReplyRef } from '../protocol';

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
}

/** The character count is shown once a message gets this close to the limit. */
const COUNTER_FROM = MAX_BODY_CHARS - 500;

export function Composer({ room, sigil = '#', onSend, onTyping, draftKey, replyTo = null, onCancelReply, onEditLast }: ComposerProps) {
  const [body, setBodyState] = useState(() => (draftKey === undefined ? '' : loadDraft(draftKey)));
  const setBody = (text: string) => {
    setBodyState(text);
    if (draftKey !== undefined) saveDraft(draftKey, text);
  };
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const id = useId();
  const length = bodyLength(body);

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
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
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
          if (error !== null) setError(null);
          if (e.target.value.length > 0) onTyping();
        }}
        onKeyDown={onKeyDown}
        aria-describedby={`${id}-help`}
        aria-invalid={error !== null}
        autoFocus
      />
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
