/**
 * One user's live connection to the gateway, and the chat state it feeds.
 *
 * `ChatClient` owns the WebSocket: it joins the rooms the user asked for,
 * turns server events into store actions, tracks acknowledgements of the
 * user's own messages, and, when the socket drops, reconnects with backoff,
 * rejoins every room with `since` = the last message seen there, and pages
 * in from the history API whatever the server could not send at once. It
 * passes each fresh access token to the server in-band (`authenticate`), so
 * the connection outlives the token it was opened with; if the server closes
 * it for an expired token anyway (4001), the token is renewed and the client
 * reconnects at once. Components read its state through
 * `subscribe`/`getSnapshot` (the `useSyncExternalStore` contract) and never
 * touch the socket.
 *
 * Nothing here needs a browser: the socket and the history call are passed
 * in, so tests drive it with a fake socket and fake timers.
 */
import { ApiError, type HistoryCursor } from './api';
import { Backoff } from './backoff';
import {
  encodeClientFrame,
  newClientId,
  type ClientFrame,
  type HistoryPage,
  type ServerEvent,
  type UserRef,
  parseServerEvent,
} from './protocol';
import { chatReducer, initialChatState, lastSeenId, oldestId, type ChatAction, type ChatState } from './store';

/** The part of the browser's `WebSocket` that the client uses. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: Event) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
}

const OPEN = 1;

/** Close code of a connection whose access token expired without an `auth` frame renewing it. */
export const CLOSE_TOKEN_EXPIRED = 4001;

/** Close code of a connection whose user's account was deleted or disabled: never reconnect. */
export const CLOSE_ACCOUNT_REVOKED = 4003;

export interface ChatClientOptions {
  me: UserRef;
  /** The WebSocket address including the token; called for every attempt. */
  url: () => string;
  createSocket?: (url: string) => SocketLike;
  fetchHistory: (room: string, cursor: HistoryCursor, limit: number) => Promise<HistoryPage>;
  /**
   * Asked after a connection attempt failed before opening: a browser cannot
   * see the gateway's 401, so this tells an expired token apart from an
   * unreachable gateway. Resolves `false` when the token is no longer valid.
   */
  checkToken?: () => Promise<boolean>;
  /** Called once when the server no longer accepts the token. */
  onUnauthorized?: () => void;
  /**
   * Makes sure a fresh access token is available for `url`; called after the
   * server closed the connection because its token expired (4001), and the
   * client reconnects as soon as it resolves.
   */
  renewToken?: () => Promise<unknown>;
  backoff?: Backoff;
  /** How long an own message stays pending before it is shown as failed. */
  ackTimeoutMs?: number;
  /** How often to ping an otherwise quiet connection. */
  pingIntervalMs?: number;
  /** How long to wait for any frame after a ping before giving the connection up. */
  pongTimeoutMs?: number;
  /** Minimum gap between two `typing` frames for the same room. */
  typingThrottleMs?: number;
  historyPageSize?: number;
  newClientId?: () => string;
}

/** Connection-level error codes that say nothing about the rooms being joined. */
const IGNORED_ERRORS = new Set(['unauthorized', 'invalid_token', 'rate_limited']);

/** Upper bound on history pages fetched by one catch-up. */
const MAX_CATCH_UP_PAGES = 20;
/** The history API's largest page. */
const CATCH_UP_PAGE_SIZE = 100;

export class ChatClient {
  private state: ChatState = initialChatState;
  private readonly listeners = new Set<() => void>();
  private socket: SocketLike | null = null;
  private stopped = true;
  /** Rooms the user wants to be in, whether or not the server has confirmed yet. */
  private readonly wanted = new Set<string>();
  /** Own messages already written to the current socket. */
  private sentOnSocket = new Set<string>();
  private readonly ackTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly lastTyping = new Map<string, number>();
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private pongTimer: ReturnType<typeof setTimeout> | null = null;
  private typingTimer: ReturnType<typeof setInterval> | null = null;
  private readonly backoff: Backoff;
  /** A token handed over while the socket was still opening; sent once it is open. */
  private pendingAuth: string | null = null;
  private readonly opts: Required<Omit<ChatClientOptions, 'checkToken' | 'onUnauthorized' | 'renewToken' | 'backoff'>> &
    Pick<ChatClientOptions, 'checkToken' | 'onUnauthorized' | 'renewToken'>;

  constructor(options: ChatClientOptions) {
    this.backoff = options.backoff ?? new Backoff();
    this.opts = {
      createSocket: (url) => new WebSocket(url),
      ackTimeoutMs: 10_000,
      pingIntervalMs: 25_000,
      pongTimeoutMs: 10_000,
      typingThrottleMs: 2_500,
      historyPageSize: 50,
      newClientId,
      ...options,
    };
  }

  // ---- state for the UI -------------------------------------------------

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ChatState => this.state;

  private dispatch(action: ChatAction): void {
    const next = chatReducer(this.state, action);
    if (next === this.state) return;
    this.state = next;
    for (const l of this.listeners) l();
  }

  // ---- lifecycle ---------------------------------------------------------

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.typingTimer = setInterval(() => this.dispatch({ type: 'expireTyping', now: Date.now() }), 1000);
    this.connect();
  }

  /** Closes the connection for good (log out, leaving the page). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.clearReconnect();
    this.stopHeartbeat();
    if (this.typingTimer !== null) clearInterval(this.typingTimer);
    this.typingTimer = null;
    this.clearAllAckTimers();
    const socket = this.socket;
    this.socket = null;
    if (socket !== null) {
      detach(socket);
      socket.close(1000, 'bye');
    }
    this.dispatch({ type: 'stopped' });
  }

  /** Skips the remaining backoff wait, e.g. when the browser reports it is back online. */
  reconnectNow(): void {
    if (this.stopped || this.socket !== null) return;
    this.clearReconnect();
    this.connect();
  }

  /**
   * Hands a fresh access token to the live connection, which the server then
   * keeps open past the previous token's expiry. Without a connection there
   * is nothing to do: the next one is opened with the current token.
   */
  authenticate(token: string): void {
    if (this.write({ type: 'auth', token })) {
      this.pendingAuth = null;
    } else if (this.socket !== null) {
      // Still opening, possibly with the previous token in its address.
      this.pendingAuth = token;
    }
  }

  private connect(): void {
    this.dispatch({ type: 'connecting' });
    // `url()` carries the current token, so nothing handed over earlier needs sending.
    this.pendingAuth = null;
    let socket: SocketLike;
    try {
      socket = this.opts.createSocket(this.opts.url());
    } catch {
      this.scheduleReconnect(false);
      return;
    }
    this.socket = socket;
    this.sentOnSocket = new Set();
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.backoff.reset();
      this.dispatch({ type: 'opened' });
      this.startHeartbeat();
      if (this.pendingAuth !== null) this.write({ type: 'auth', token: this.pendingAuth });
      this.pendingAuth = null;
      for (const room of this.wanted) this.sendJoin(room);
    };
    socket.onmessage = (ev) => {
      this.heardFromServer();
      if (typeof ev.data !== 'string') return;
      const event = parseServerEvent(ev.data);
      if (event !== null) this.handle(event);
    };
    socket.onerror = () => {
      // Always followed by `close`, which does the work.
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      detach(socket);
      this.stopHeartbeat();
      if (ev.code === CLOSE_ACCOUNT_REVOKED) {
        // Every token of this account is refused from now on: retrying would only fail.
        this.unauthorized();
        return;
      }
      this.scheduleReconnect(!opened);
      if (ev.code === CLOSE_TOKEN_EXPIRED && this.opts.renewToken !== undefined) {
        // No need to wait out the backoff: the cause is known and about to be fixed.
        this.opts.renewToken().then(
          () => this.reconnectNow(),
          () => {
            // A session that has ended is reported by whoever renews tokens; otherwise the backoff retries.
          },
        );
      }
    };
  }

  private scheduleReconnect(neverOpened: boolean): void {
    if (this.stopped) return;
    // Messages in flight on the lost socket are written again after the rejoin.
    this.clearAllAckTimers();
    const delay = this.backoff.next();
    this.dispatch({ type: 'disconnected', retryAt: Date.now() + delay });
    this.clearReconnect();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.stopped && this.socket === null) this.connect();
    }, delay);
    if (neverOpened && this.opts.checkToken !== undefined) {
      this.opts.checkToken().then(
        (valid) => {
          if (!valid) this.unauthorized();
        },
        () => {
          // Unreachable auth service: treat like an unreachable gateway and keep retrying.
        },
      );
    }
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  private unauthorized(): void {
    if (this.stopped) return;
    this.stop();
    this.opts.onUnauthorized?.();
  }

  // A quiet connection is pinged; if nothing at all comes back in time the
  // connection is presumed dead (a half-open TCP connection never reports
  // `close` on its own) and replaced.
  private startHeartbeat(): void {
    this.stopHeartbeat();
    this.pingTimer = setInterval(() => {
      if (this.pongTimer !== null) return;
      this.write({ type: 'ping' });
      this.pongTimer = setTimeout(() => {
        this.pongTimer = null;
        const socket = this.socket;
        if (socket === null) return;
        this.socket = null;
        detach(socket);
        socket.close(4000, 'no answer to ping');
        this.stopHeartbeat();
        this.scheduleReconnect(false);
      }, this.opts.pongTimeoutMs);
    }, this.opts.pingIntervalMs);
  }

  private heardFromServer(): void {
    if (this.pongTimer !== null) clearTimeout(this.pongTimer);
    this.pongTimer = null;
  }

  private stopHeartbeat(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    if (this.pongTimer !== null) clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }

  private write(frame: ClientFrame): boolean {
    const socket = this.socket;
    if (socket === null || socket.readyState !== OPEN) return false;
    socket.send(encodeClientFrame(frame));
    return true;
  }

  // ---- rooms -------------------------------------------------------------

  join(room: string): void {
    this.wanted.add(room);
    this.dispatch({ type: 'joinRequested', room });
    this.sendJoin(room);
  }

  leave(room: string): void {
    if (!this.wanted.delete(room)) return;
    this.write({ type: 'leave', room });
    for (const entry of this.state.rooms[room]?.outbox ?? []) this.clearAckTimer(entry.clientId);
    this.dispatch({ type: 'left', room });
  }

  private sendJoin(room: string): void {
    const since = lastSeenId(this.state.rooms[room]);
    this.write(since === null ? { type: 'join', room } : { type: 'join', room, since });
  }

  // ---- messages ----------------------------------------------------------

  /** Queues a message; it is written now if the room is joined, otherwise once it is. */
  send(room: string, body: string): string {
    const clientId = this.opts.newClientId();
    this.dispatch({ type: 'queued', room, clientId, body });
    this.attempt(room, clientId, body);
    return clientId;
  }

  /** Sends a failed message again under the same client id. */
  retry(clientId: string): void {
    for (const r of Object.values(this.state.rooms)) {
      const entry = r.outbox.find((o) => o.clientId === clientId);
      if (entry === undefined) continue;
      this.dispatch({ type: 'retrying', clientId });
      this.sentOnSocket.delete(clientId);
      this.attempt(r.room, clientId, entry.body);
      return;
    }
  }

  private attempt(room: string, clientId: string, body: string): void {
    if (this.state.rooms[room]?.joined === true) this.transmit(room, clientId, body);
  }

  // The acknowledgement clock starts when the message is actually written:
  // while disconnected a message stays pending (the banner says why) and goes
  // out after the rejoin, rather than failing for want of a connection.
  private transmit(room: string, clientId: string, body: string): void {
    if (this.sentOnSocket.has(clientId)) return;
    if (!this.write({ type: 'send', room, client_id: clientId, body })) return;
    this.sentOnSocket.add(clientId);
    this.clearAckTimer(clientId);
    this.ackTimers.set(
      clientId,
      setTimeout(() => {
        this.ackTimers.delete(clientId);
        this.dispatch({ type: 'failed', clientId, error: null });
      }, this.opts.ackTimeoutMs),
    );
  }

  private clearAllAckTimers(): void {
    for (const t of this.ackTimers.values()) clearTimeout(t);
    this.ackTimers.clear();
  }

  private clearAckTimer(clientId: string): void {
    const t = this.ackTimers.get(clientId);
    if (t !== undefined) clearTimeout(t);
    this.ackTimers.delete(clientId);
  }

  typing(room: string): void {
    if (this.state.rooms[room]?.joined !== true) return;
    const now = Date.now();
    const last = this.lastTyping.get(room) ?? -Infinity;
    if (now - last < this.opts.typingThrottleMs) return;
    if (this.write({ type: 'typing', room })) this.lastTyping.set(room, now);
  }

  /** Loads the page of history before the oldest message shown. */
  async loadOlder(room: string): Promise<void> {
    const r = this.state.rooms[room];
    if (r === undefined || r.loadingOlder || !r.hasMore) return;
    this.dispatch({ type: 'olderLoading', room });
    try {
      const page = await this.opts.fetchHistory(room, { before: oldestId(r) }, this.opts.historyPageSize);
      this.dispatch({ type: 'olderLoaded', room, messages: page.messages, hasMore: page.has_more });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.unauthorized();
        return;
      }
      this.dispatch({ type: 'olderFailed', room, error: errorText(e, 'Could not load older messages') });
    }
  }

  // ---- server events -----------------------------------------------------

  private handle(event: ServerEvent): void {
    const me = this.opts.me;
    switch (event.type) {
      case 'joined': {
        if (!this.wanted.has(event.room)) return;
        this.dispatch({ type: 'joined', room: event.room, members: event.members, messages: event.messages, me: me.id });
        for (const m of event.messages) if (m.author.id === me.id && m.client_id !== null) this.clearAckTimer(m.client_id);
        // Messages written before the room was (re)joined go out now.
        for (const entry of this.state.rooms[event.room]?.outbox ?? []) {
          if (entry.status === 'pending') this.transmit(event.room, entry.clientId, entry.body);
        }
        const newest = event.messages[event.messages.length - 1]?.id;
        if (event.truncated && newest !== undefined) void this.catchUp(event.room, newest);
        return;
      }
      case 'message': {
        const { type: _type, ...message } = event;
        if (message.author.id === me.id && message.client_id !== null) this.clearAckTimer(message.client_id);
        this.dispatch({ type: 'messages', room: message.room, messages: [message], me: me.id });
        return;
      }
      case 'ack':
        this.clearAckTimer(event.client_id);
        this.dispatch({ type: 'ack', clientId: event.client_id, id: event.id, sentAt: event.sent_at, me });
        return;
      case 'presence':
        this.dispatch({ type: 'presence', room: event.room, user: event.user, online: event.state === 'online' });
        return;
      case 'typing':
        if (event.user.id !== me.id) this.dispatch({ type: 'typing', room: event.room, user: event.user, now: Date.now() });
        return;
      case 'pong':
      case 'authenticated':
        return;
      case 'lagged': {
        const from = lastSeenId(this.state.rooms[event.room]) ?? event.last_id;
        if (from !== null && this.wanted.has(event.room)) void this.catchUp(event.room, from);
        return;
      }
      case 'error':
        if (IGNORED_ERRORS.has(event.code) && event.client_id === undefined) {
          // Not about a room: a refused `auth` (the connection keeps its old expiry and is renewed
          // at the 4001 close) or a refused frame whose message, if any, times out and offers a retry.
          return;
        }
        if (event.client_id !== undefined) {
          this.clearAckTimer(event.client_id);
          const text = event.code === 'unavailable' ? 'Chat is busy right now; retry in a moment' : event.message;
          this.dispatch({ type: 'failed', clientId: event.client_id, error: text });
        } else if (event.room !== undefined) {
          this.dispatch({ type: 'roomError', room: event.room, error: event.message });
        } else {
          for (const room of this.wanted) {
            if (this.state.rooms[room]?.joined !== true) this.dispatch({ type: 'roomError', room, error: event.message });
          }
        }
        return;
    }
  }

  /**
   * Pages the history API forward from `after` until it has no more, for
   * messages the live connection did not deliver: the rest of a truncated
   * rejoin snapshot, or what was dropped while the connection lagged.
   * Merging by id makes any overlap with live messages harmless.
   */
  private async catchUp(room: string, from: string): Promise<void> {
    let after = from;
    try {
      for (let page = 0; page < MAX_CATCH_UP_PAGES; page += 1) {
        const result = await this.opts.fetchHistory(room, { after }, CATCH_UP_PAGE_SIZE);
        if (!this.wanted.has(room)) return;
        this.dispatch({ type: 'messages', room, messages: result.messages, me: this.opts.me.id });
        const newest = result.messages[result.messages.length - 1]?.id;
        if (!result.has_more || newest === undefined) return;
        after = newest;
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) this.unauthorized();
      // Otherwise the conversation keeps a hole until the next reload; live messages still arrive.
    }
  }
}

function detach(socket: SocketLike): void {
  socket.onopen = null;
  socket.onclose = null;
  socket.onmessage = null;
  socket.onerror = null;
}

function errorText(e: unknown, fallback: string): string {
  return e instanceof Error && e.message.length > 0 ? e.message : fallback;
}
