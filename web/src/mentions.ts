/**
 * @mentions: finding the `@name` being typed in the composer, the members it could mean,
 * putting the chosen one in, and whether a message mentions someone.
 *
 * A mention is `@` and a username (3–32 of `[A-Za-z0-9_.-]`, the auth-service rule) that does
 * not follow a letter, digit or one of `_.-` (so an e-mail address is not one), taken as a whole
 * word, case-insensitively (usernames are unique regardless of case). A `.` or `-` at its end is
 * read as punctuation ("thanks @bob."), so `@bob.` mentions `bob`.
 */
import type { UserRef } from './protocol';

/** A mention in a text: `@`, then a name that starts and ends with a letter, digit or `_`. */
export const MENTION = /(?<![A-Za-z0-9_.@-])@([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)/g;

/** Most members offered at once. */
export const MAX_SUGGESTIONS = 8;

/** Whether `token` (a mention without its `@`) names `username`. */
export function namesUser(token: string, username: string): boolean {
  const name = username.toLowerCase();
  const t = token.toLowerCase();
  return t === name || t === name.replace(/[.-]+$/, '');
}

/** Whether `body` mentions `username` as a whole word. */
export function mentions(body: string, username: string): boolean {
  if (username.length === 0) return false;
  for (const m of body.matchAll(MENTION)) if (namesUser(m[1]!, username)) return true;
  return false;
}

/** The mention being typed: where its `@` is and what follows it up to the caret. */
export interface MentionQuery {
  start: number;
  query: string;
}

/** The `@name` the caret is at the end of, if any (the name may still be empty). */
export function mentionAt(text: string, caret: number): MentionQuery | null {
  const before = text.slice(0, caret);
  const m = /(?:^|[^A-Za-z0-9_.@-])@([A-Za-z0-9_.-]{0,32})$/.exec(before);
  if (m === null) return null;
  const query = m[1]!;
  return { start: caret - query.length - 1, query };
}

/** The members whose username starts with `query` (any case), by name, without `meId`. */
export function suggestMembers(members: readonly UserRef[], query: string, meId: string, limit = MAX_SUGGESTIONS): UserRef[] {
  const q = query.toLowerCase();
  const seen = new Set<string>();
  const out: UserRef[] = [];
  for (const m of members) {
    if (m.id === meId || seen.has(m.id) || !m.username.toLowerCase().startsWith(q)) continue;
    seen.add(m.id);
    out.push(m);
  }
  return out.sort((a, b) => a.username.localeCompare(b.username)).slice(0, limit);
}

/** The text with the mention being typed replaced by `@username `, and where the caret goes. */
export function insertMention(text: string, at: MentionQuery, caret: number, username: string): { text: string; caret: number } {
  const inserted = `@${username} `;
  const after = text.slice(caret).replace(/^[A-Za-z0-9_.-]*/, '').replace(/^ /, '');
  return { text: text.slice(0, at.start) + inserted + after, caret: at.start + inserted.length };
}
