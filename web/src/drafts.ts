/**
 * What the user was writing in each room, kept while they look at other rooms and across a
 * reload of the tab (`sessionStorage`: a draft is the tab's, and goes when the tab closes).
 */
const PREFIX = 'chat.draft.';
/** Drafts kept at most; the oldest written is dropped first. */
const MAX_DRAFTS = 50;

const memory = new Map<string, string>();

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

export function loadDraft(room: string): string {
  return memory.get(room) ?? storage()?.getItem(PREFIX + room) ?? '';
}

export function saveDraft(room: string, text: string): void {
  memory.delete(room);
  if (text.length === 0) {
    storage()?.removeItem(PREFIX + room);
    return;
  }
  memory.set(room, text);
  while (memory.size > MAX_DRAFTS) {
    const oldest = memory.keys().next().value as string;
    memory.delete(oldest);
    storage()?.removeItem(PREFIX + oldest);
  }
  try {
    storage()?.setItem(PREFIX + room, text);
  } catch {
    // Storage full: the draft is still kept in memory for this page.
  }
}
