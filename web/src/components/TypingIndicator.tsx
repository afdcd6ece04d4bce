/** "X is typing…" under the message list. The line keeps its height so the layout does not jump. */
import { typingText } from '../format';

export function TypingIndicator({ names }: { names: string[] }) {
  return (
    <div className="typing" aria-live="polite" data-testid="typing-indicator">
      {typingText(names)}
    </div>
  );
}
