/**
 * A message body with its small markup (see `markup.ts`): paragraphs of text with links,
 * inline code, bold and italics, and code blocks. Built from React elements only: a body
 * is never HTML, and links open in a new tab without telling the target where they came
 * from (`rel="noopener noreferrer"`).
 */
import { memo, type ReactNode } from 'react';
import { parseBody, type Span } from '../markup';

function renderSpans(spans: readonly Span[]): ReactNode[] {
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
      case 'strong':
        return <strong key={i}>{renderSpans(span.children)}</strong>;
      case 'em':
        return <em key={i}>{renderSpans(span.children)}</em>;
    }
  });
}

export const MessageBody = memo(function MessageBody({ body }: { body: string }) {
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
            {renderSpans(block.spans)}
          </p>
        ),
      )}
    </div>
  );
});
