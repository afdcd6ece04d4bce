/**
 * Desktop notifications for messages that want the user: every new message of a DM, and
 * messages that mention the user (`mentions.ts`), when the tab is hidden or the message is in
 * a room other than the one on screen. Never for the user's own messages, and only for live
 * `message` frames (`ChatClient.onLiveMessage`), never for what a `joined` snapshot, a
 * catch-up or a history page brings. At most one per room every `ROOM_QUIET_MS`; each carries
 * the room as its `tag`, so a newer one (or another tab's of the same message) replaces it.
 * Clicking one focuses the window and opens its room.
 *
 * The browser's Notification API is reached only through `NotificationApi`, so tests pass a
 * fake. Permission is asked only from a user's click (`NotificationToggle`), never on load, and
 * the user's choice to have them is kept per browser (`localStorage`).
 */
import { mentions } from './mentions';
import type { UserRef, WireMessage } from './protocol';
import { displayName, previewOf, type ChatState } from './store';

/** What the client needs of the browser's Notification API. */
export interface NotificationApi {
  /** `unsupported` when the browser has no notifications. */
  permission(): NotificationPermission | 'unsupported';
  /** Asks the user; call only from a user gesture. */
  request(): Promise<NotificationPermission>;
  show(title: string, options: { body: string; tag: string }, onClick: () => void): void;
}

/** The browser's notifications (`window.Notification`), looked up at each call. */
export const browserNotifications: NotificationApi = {
  permission: () => (typeof Notification === 'undefined' ? 'unsupported' : Notification.permission),
  request: async () => (typeof Notification === 'undefined' ? 'denied' : Notification.requestPermission()),
  show: (title, options, onClick) => {
    if (typeof Notification === 'undefined') return;
    let n: Notification;
    try {
      n = new Notification(title, options);
    } catch {
      // Some browsers (Chrome on Android) allow notifications only from a service worker.
      return;
    }
    n.onclick = () => {
      onClick();
      n.close();
    };
  },
};

/** Where the user's choice is kept. */
export const NOTIFICATIONS_KEY = 'chat.notifications';

/** Whether the user turned notifications on in this browser (and did not turn them off). */
export function notificationsWanted(): boolean {
  try {
    return window.localStorage.getItem(NOTIFICATIONS_KEY) === 'on';
  } catch {
    return false;
  }
}

export function setNotificationsWanted(on: boolean): void {
  try {
    window.localStorage.setItem(NOTIFICATIONS_KEY, on ? 'on' : 'off');
  } catch {
    // Storage refused (private mode): the choice lasts only as long as the toggle shows it.
  }
}

/** Shortest time between two notifications of one room. */
export const ROOM_QUIET_MS = 5_000;

/** Why a live message deserves a notification: a DM, or a mention; `null` when it does not. */
export function notificationFor(state: ChatState, message: WireMessage, me: UserRef): { title: string; body: string } | null {
  if (message.author.id === me.id || message.deleted === true) return null;
  if (state.visible && state.viewing === message.room) return null;
  const view = state.list.rooms[message.room];
  const body = previewOf(message.body);
  if (view?.kind === 'dm') return { title: message.author.username, body };
  if (!mentions(message.body, me.username)) return null;
  const where = view === undefined ? message.room : displayName(view);
  return { title: `${message.author.username} in #${where}`, body };
}

export interface NotifierOptions {
  me: UserRef;
  api: NotificationApi;
  state: () => ChatState;
  /** Shows the room (after the window was focused). */
  openRoom: (room: string) => void;
  /** Whether the user wants notifications; read at each message. */
  wanted?: () => boolean;
  now?: () => number;
  focusWindow?: () => void;
}

/** Decides, for each live message, whether to notify, and does. */
export class Notifier {
  private readonly lastShown = new Map<string, number>();
  private readonly opts: Required<NotifierOptions>;

  constructor(options: NotifierOptions) {
    this.opts = { wanted: notificationsWanted, now: Date.now, focusWindow: () => window.focus(), ...options };
  }

  /** A live `message` frame the client had not held before. */
  message = (message: WireMessage): void => {
    const { api, me } = this.opts;
    if (api.permission() !== 'granted' || !this.opts.wanted()) return;
    const note = notificationFor(this.opts.state(), message, me);
    if (note === null) return;
    const now = this.opts.now();
    const last = this.lastShown.get(message.room);
    if (last !== undefined && now - last < ROOM_QUIET_MS) return;
    this.lastShown.set(message.room, now);
    api.show(note.title, { body: note.body, tag: `chat-${message.room}` }, () => {
      this.opts.focusWindow();
      this.opts.openRoom(message.room);
    });
  };
}
