/**
 * A message body with its small markup (see `markup.ts`): paragraphs of text with links,
 * inline code, bold and italics, and code blocks. Built from React elements only: a body
 * is never HTML, and links open in a new tab without telling the target where they came
 * from (`rel="noopener noreferrer"`). A mention is a span of its own, marked when it names the
 * signed-in user.
 */
import { memo, type ReactNode } from 'react';
import { parseBody, type Span } from '../markup';
import { namesUser } from '../mentions';

function renderSpans(spans: readonly Span[], meName: string): ReactNode[] {
  return spans.map((span, i) => {
    switch (span.kind) {
      case 'text':
        return span.text;
      case 'code':
        return <code key={i}>{span.text}</code>;
      case 'link':
        return (
          <a key={i} href={span.href} target="_blank" rel="noopener noreferrer">
            {span.text}
          </a>
        );
      case 'mention': {
        const me = meName.length > 0 && namesUser(span.name, meName);
        return (
          <span key={i} className={me ? 'mention me' : 'mention'} data-testid="mention" data-me={me || undefined}>
            @{span.name}
          </span>
        );
      }
      case 'strong':
        return <strong key={i}>{renderSpans(span.children, meName)}</strong>;
      case 'em':
        return <em key={i}>{renderSpans(span.children, meName)}</em>;
    }
  });
}

/** `meName`: the signed-in user's name, whose mentions are marked. */
export const MessageBody = memo(function MessageBody({ body, meName = '' }: { body: string; meName?: string }) {
  const blocks = parseBody(body);
  return (
    <div className="body" data-testid="message-body">
      {blocks.map((block, i) =>
        block.kind === 'codeBlock' ? (
          <pre key={i} className="code-block">
            <code>{block.text}</code>
          </pre>
        ) : (
          <p key={i} className="body-text">
            {renderSpans(block.spans, meName)}
          </p>
        ),
      )}
    </div>
  );
});
