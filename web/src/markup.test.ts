import { describe, expect, it } from 'vitest';
import { parseBody, parseInline, safeHref } from './markup';

describe('message markup', () => {
  it('makes web addresses links, leaving sentence punctuation outside', () => {
    expect(parseInline('see https://example.com/a?b=1, then (http://x.org).')).toEqual([
      { kind: 'text', text: 'see ' },
      { kind: 'link', href: 'https://example.com/a?b=1', text: 'https://example.com/a?b=1' },
      { kind: 'text', text: ', then (' },
      { kind: 'link', href: 'http://x.org/', text: 'http://x.org' },
      { kind: 'text', text: ').' },
    ]);
  });

  it('never makes a link of another scheme', () => {
    for (const body of ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', 'data:text/html,<b>x</b>', 'vbscript:x', 'file:///etc/passwd']) {
      expect(parseInline(body).some((s) => s.kind === 'link'), body).toBe(false);
    }
    expect(safeHref('javascript:alert(1)')).toBeNull();
    expect(safeHref('https://ok.example')).toBe('https://ok.example/');
  });

  it('reads bold, italics and inline code, and leaves lone markers as text', () => {
    expect(parseInline('**big** and *small* and _also_ and `a*b*c`')).toEqual([
      { kind: 'strong', children: [{ kind: 'text', text: 'big' }] },
      { kind: 'text', text: ' and ' },
      { kind: 'em', children: [{ kind: 'text', text: 'small' }] },
      { kind: 'text', text: ' and ' },
      { kind: 'em', children: [{ kind: 'text', text: 'also' }] },
      { kind: 'text', text: ' and ' },
      { kind: 'code', text: 'a*b*c' },
    ]);
    expect(parseInline('2 * 3 * 4, snake_case_name, ** nothing **')).toEqual([
      { kind: 'text', text: '2 * 3 * 4, snake_case_name, ** nothing **' },
    ]);
  });

  it('splits code blocks from the text around them, keeping their text as it is', () => {
    expect(parseBody('before\n```js\nconst a = "<b>";\n**not bold**\n```\nafter')).toEqual([
      { kind: 'paragraph', spans: [{ kind: 'text', text: 'before' }] },
      { kind: 'codeBlock', text: 'const a = "<b>";\n**not bold**' },
      { kind: 'paragraph', spans: [{ kind: 'text', text: 'after' }] },
    ]);
    expect(parseBody('plain')).toEqual([{ kind: 'paragraph', spans: [{ kind: 'text', text: 'plain' }] }]);
    expect(parseBody('``` unclosed')).toEqual([{ kind: 'paragraph', spans: [{ kind: 'text', text: '``` unclosed' }] }]);
  });
});

describe('mentions in the markup', () => {
  it('makes a span of each @name, leaving sentence punctuation and e-mail addresses as text', () => {
    expect(parseInline('hi @bob.smith and @Al, mail me@example.com.')).toEqual([
      { kind: 'text', text: 'hi ' },
      { kind: 'mention', name: 'bob.smith' },
      { kind: 'text', text: ' and ' },
      { kind: 'mention', name: 'Al' },
      { kind: 'text', text: ', mail me@example.com.' },
    ]);
  });

  it('leaves a name inside code or an address alone, and finds one inside bold', () => {
    expect(parseInline('`@bob` https://x.org/@bob')).toEqual([
      { kind: 'code', text: '@bob' },
      { kind: 'text', text: ' ' },
      { kind: 'link', href: 'https://x.org/@bob', text: 'https://x.org/@bob' },
    ]);
    expect(parseInline('**@bob**')).toEqual([{ kind: 'strong', children: [{ kind: 'mention', name: 'bob' }] }]);
  });
});
