/**
 * A message's reactions: one button per emoji with its count, pressed when the user is one
 * of them (toggling it takes the reaction back), and a small picker of common emoji.
 */
import { useEffect, useRef } from 'react';
import type { Reaction } from '../protocol';

/** The emoji the picker offers. */
export const PICKER_EMOJI: readonly string[] = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀'];

interface ReactionBarProps {
  reactions: readonly Reaction[];
  /** Turns the user's reaction `emoji` on or off; absent when reacting is not offered. */
  onToggle?: (emoji: string, on: boolean) => void;
}

export function ReactionBar({ reactions, onToggle }: ReactionBarProps) {
  if (reactions.length === 0) return null;
  return (
    <div className="reactions" role="group" aria-label="Reactions" data-testid="reactions">
      {reactions.map((r) => {
        const mine = r.me === true;
        const people = r.count === 1 ? '1 person' : `${r.count} people`;
        return (
          <button
            key={r.emoji}
            type="button"
            className={mine ? 'reaction mine' : 'reaction'}
            aria-pressed={mine}
            aria-label={`${r.emoji} ${people}${mine ? ', including you. Take back your reaction' : `. React with ${r.emoji}`}`}
            disabled={onToggle === undefined}
            onClick={() => onToggle?.(r.emoji, !mine)}
            data-testid="reaction"
            data-emoji={r.emoji}
            data-mine={mine}
          >
            <span aria-hidden="true">{r.emoji}</span> <span className="reaction-count">{r.count}</span>
          </button>
        );
      })}
    </div>
  );
}

interface EmojiPickerProps {
  onPick: (emoji: string) => void;
  onClose: () => void;
}

/** A row of common emoji; Escape closes it. The first one takes the focus. */
export function EmojiPicker({ onPick, onClose }: EmojiPickerProps) {
  const first = useRef<HTMLButtonElement>(null);
  useEffect(() => first.current?.focus(), []);
  return (
    <div
      className="emoji-picker"
      role="group"
      aria-label="Pick a reaction"
      data-testid="emoji-picker"
      onKeyDown={(e) => {
        if (e.key === 'Escape') {
          e.stopPropagation();
          onClose();
        }
      }}
    >
      {PICKER_EMOJI.map((emoji, i) => (
        <button
          key={emoji}
          ref={i === 0 ? first : undefined}
          type="button"
          className="emoji-choice"
          aria-label={`React with ${emoji}`}
          onClick={() => onPick(emoji)}
        >
          {emoji}
        </button>
      ))}
      <button type="button" className="link" onClick={onClose}>
        Close
      </button>
    </div>
  );
}
