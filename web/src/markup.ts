/**
 * The small, safe markup of message bodies: links, `inline code`, ``` code blocks ```,
 * **bold** and *italics* (or _italics_). A body is parsed into a tree of plain values that
 * `MessageBody` renders as React elements, never as HTML, so nothing in a body can become
 * markup the client did not make. Only `http:` and `https:` addresses become links, and
 * `@name` mentions (`mentions.ts`) become spans of their own.
 */
import { MENTION } from './mentions';

export type Span =
  | { kind: 'text'; text: string }
  | { kind: 'code'; text: string }
  | { kind: 'link'; href: string; text: string }
  /** `name` is the mentioned username as written, without its `@`. */
  | { kind: 'mention'; name: string }
  | { kind: 'strong'; children: Span[] }
  | { kind: 'em'; children: Span[] };

export type Block = { kind: 'paragraph'; spans: Span[] } | { kind: 'codeBlock'; text: string };

const FENCE = /```(?:[a-zA-Z0-9_+-]*\n)?([\s\S]*?)```/g;
const BASE_INLINE =
  /(`[^`\n]+`)|(\*\*(?=\S)[^*\n]*?\S\*\*)|(\*(?=[^\s*])[^*\n]*?[^\s*]\*|\*[^\s*]\*)|((?<![A-Za-z0-9])_(?=[^\s_])[^_\n]*?[^\s_]_(?![A-Za-z0-9])|(?<![A-Za-z0-9])_[^\s_]_(?![A-Za-z0-9]))|(https?:\/\/[^\s<>"'`]+)/;
/** The inline markup, and mentions last (a mention inside code or an address stays part of it). */
const INLINE = new RegExp(`${BASE_INLINE.source}|${MENTION.source}`, 'g');
/** Characters that end a sentence rather than an address when they come last. */
const TRAILING = /[.,;:!?)\]}'"]+$/;

/** A link target, only for addresses of the web; anything else stays text. */
export function safeHref(candidate: string): string | null {
  try {
    const url = new URL(candidate);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

function pushText(out: Span[], text: string): void {
  if (text.length === 0) return;
  const last = out[out.length - 1];
  if (last?.kind === 'text') out[out.length - 1] = { kind: 'text', text: last.text + text };
  else out.push({ kind: 'text', text });
}

/** Spans of one piece of text without code blocks. */
export function parseInline(text: string, depth = 0): Span[] {
  const out: Span[] = [];
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    const start = m.index;
    pushText(out, text.slice(at, start));
    const [whole, code, strong, em1, em2, url, mentioned] = m;
    if (code !== undefined) {
      out.push({ kind: 'code', text: code.slice(1, -1) });
    } else if (strong !== undefined) {
      const inner = strong.slice(2, -2);
      if (depth < 2) out.push({ kind: 'strong', children: parseInline(inner, depth + 1) });
      else pushText(out, whole);
    } else if (em1 !== undefined || em2 !== undefined) {
      const inner = (em1 ?? em2)!.slice(1, -1);
      if (depth < 2) out.push({ kind: 'em', children: parseInline(inner, depth + 1) });
      else pushText(out, whole);
    } else if (mentioned !== undefined) {
      out.push({ kind: 'mention', name: mentioned });
    } else if (url !== undefined) {
      const trailing = TRAILING.exec(url)?.[0] ?? '';
      const address = url.slice(0, url.length - trailing.length);
      const href = safeHref(address);
      if (href === null) pushText(out, url);
      else {
        out.push({ kind: 'link', href, text: address });
        pushText(out, trailing);
      }
    }
    at = start + whole.length;
  }
  pushText(out, text.slice(at));
  return out;
}

/** The blocks of a message body: code blocks between ``` fences, and the text around them. */
export function parseBody(body: string): Block[] {
  const blocks: Block[] = [];
  let at = 0;
  for (const m of body.matchAll(FENCE)) {
    const before = body.slice(at, m.index).replace(/\n$/, '');
    if (before.length > 0) blocks.push({ kind: 'paragraph', spans: parseInline(before) });
    blocks.push({ kind: 'codeBlock', text: m[1]!.replace(/\n$/, '') });
    at = m.index + m[0].length;
  }
  const rest = at === 0 ? body : body.slice(at).replace(/^\n/, '');
  if (rest.length > 0 || blocks.length === 0) blocks.push({ kind: 'paragraph', spans: parseInline(rest) });
  return blocks;
}
