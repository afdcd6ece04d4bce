import { describe, expect, it } from 'vitest';
import { insertMention, mentionAt, mentions, suggestMembers } from './mentions';

const users = [
  { id: 'u1', username: 'alice' },
  { id: 'u2', username: 'Bob' },
  { id: 'u3', username: 'bobby' },
  { id: 'u4', username: 'carol' },
];

describe('mentions', () => {
  it('finds a whole-word mention, in any case', () => {
    expect(mentions('hey @alice, look', 'alice')).toBe(true);
    expect(mentions('hey @ALICE', 'alice')).toBe(true);
    expect(mentions('(@alice)', 'alice')).toBe(true);
    expect(mentions('thanks @alice.', 'alice')).toBe(true);
    expect(mentions('@alice', 'alice')).toBe(true);
  });

  it('does not take a longer name, an e-mail address or a bare name for a mention', () => {
    expect(mentions('hey @alicex', 'alice')).toBe(false);
    expect(mentions('hey @alice.smith', 'alice')).toBe(false);
    expect(mentions('mail alice@example.com', 'example')).toBe(false);
    expect(mentions('mail x@alice', 'alice')).toBe(false);
    expect(mentions('hey alice', 'alice')).toBe(false);
  });

  it('reads the name being typed before the caret', () => {
    expect(mentionAt('hi @bo', 6)).toEqual({ start: 3, query: 'bo' });
    expect(mentionAt('@', 1)).toEqual({ start: 0, query: '' });
    expect(mentionAt('hi @bo there', 12)).toBeNull();
    expect(mentionAt('mail me@ex', 10)).toBeNull();
    expect(mentionAt('hi @bo there', 6)).toEqual({ start: 3, query: 'bo' });
  });

  it('offers members whose name starts with what was typed, without the user', () => {
    expect(suggestMembers(users, 'bo', 'u1').map((u) => u.username)).toEqual(['Bob', 'bobby']);
    expect(suggestMembers(users, 'B', 'u1').map((u) => u.username)).toEqual(['Bob', 'bobby']);
    expect(suggestMembers(users, '', 'u1').map((u) => u.username)).toEqual(['Bob', 'bobby', 'carol']);
    expect(suggestMembers([...users, users[3]!], 'c', 'u1')).toHaveLength(1);
    expect(suggestMembers(users, '', 'u9', 2)).toHaveLength(2);
  });

  it('puts the chosen name in place of what was typed, followed by a space', () => {
    expect(insertMention('hi @bo', { start: 3, query: 'bo' }, 6, 'bobby')).toEqual({ text: 'hi @bobby ', caret: 10 });
    expect(insertMention('@b and more', { start: 0, query: 'b' }, 2, 'Bob')).toEqual({ text: '@Bob and more', caret: 5 });
  });
});
