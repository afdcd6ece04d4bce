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
 * Rooms: the client keeps the user's room list (`fetchRooms`, fetched again
 * after every reconnect, since membership changes sent while away are lost)
 * and joins every listed room on the socket in the background, paced under
 * the server's frame rate limit, so that messages in rooms not on screen
 * still update the list's order and unread counts. The room on screen
 * (`open`) is joined first; when its newest message is shown in a visible
 * page the client moves the read marker (`read` frame, debounced), and the
 * server tells the user's other connections, which clear their badge.
 *
 * Changes of messages (edit, delete, react) are written like sends: each
 * has a client id, waits for its `ack`, is written again after a rejoin while
 * unacknowledged, and is offered for a retry under the same client id when it
 * fails. The server's `edited`, `deleted` and `reactions` frames, and the
 * `changes` of a rejoin (asked from the room's latest `changed_at`), update
 * the messages held.
 *
 * Nothing here needs a browser: the socket and the history call are passed
 * in, so tests drive it with a fake socket and fake timers.
 */
import { ApiError, type HistoryCursor } from './api';
import { Backoff } from './backoff';
import { apiErrorText, changeErrorText, errorCodeText, sendErrorText } from './errors';
import {
  type WireMessage,
  encodeClientFrame,
  newClientId,
  type ChangeFrame,
  type ChangesPage,
  type ClientFrame,
  type HistoryPage,
  type ReplyRef,
  type RemovalReason,
  type RoomView,
  type ServerEvent,
  type UserRef,
  parseServerEvent,
} from './protocol';
import {
  activityOf,
  chatReducer,
  initialChatState,
  lastSeenId,
  oldestId,
  type ChatAction,
  type ChatState,
} from './store';

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
  /** The room's change feed (`GET /api/rooms/R/changes`), for a rejoin whose `changes` were truncated. */
  fetchChanges?: (room: string, afterMs: number, limit: number) => Promise<ChangesPage>;
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
  /** The user's rooms (`GET /api/rooms`); without it the client keeps no room list. */
  fetchRooms?: () => Promise<RoomView[]>;
  /** How long the newest message of the room on screen must stay shown before it counts as read. */
  readDelayMs?: number;
  /** Background joins written per second, well under the server's frame rate limit. */
  joinsPerSecond?: number;
  /** Most rooms joined in the background; the server allows 100 per connection, some are kept for rooms opened by hand. */
  maxBackgroundRooms?: number;
}

/** Connection-level error codes that say nothing about the rooms being joined. */
const IGNORED_ERRORS = new Set(['unauthorized', 'invalid_token', 'rate_limited', 'invalid_marker']);

/** Join refusals that will not change by retrying: the room view says why instead of a banner. */
export const DENIAL_CODES = new Set(['not_found', 'forbidden', 'banned', 'archived']);

/** Upper bound on history pages fetched by one catch-up. */
const MAX_CATCH_UP_PAGES = 20;
/** The history API's largest page. */
const CATCH_UP_PAGE_SIZE = 100;
/** Attempts in a row at one catch-up page the server could not answer (about 80 s in all). */
const CATCH_UP_ATTEMPTS = 8;
const CATCH_UP_BACKOFF = { initialMs: 1_000, maxMs: 15_000, factor: 2, jitter: 0.5 };

/** Whether a failed request may succeed if asked again later: no answer, overload, a 5xx. */
function retryable(e: unknown): boolean {
  if (!(e instanceof ApiError)) return true;
  return e.status === 0 || e.status === 429 || e.status >= 500;
}

export class ChatClient {
  private state: ChatState = initialChatState;
  private readonly listeners = new Set<() => void>();
  private readonly liveListeners = new Set<(message: WireMessage) => void>();
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
  /** Rooms joined because the user asked (opened them), written at once rather than paced. */
  private readonly foreground = new Set<string>();
  /** Rooms from the list waiting for their paced `join`. */
  private joinQueue: string[] = [];
  private joinTimer: ReturnType<typeof setInterval> | null = null;
  /**
   * Joins written on this socket and not yet answered, oldest first: a refusal
   * that does not name its room is about the oldest (the server answers a
   * connection's frames in order).
   */
  private pendingJoins: string[] = [];
  /** The `since` of each join written on this socket: without one, `joined` carries the room's recent history. */
  private readonly joinSince = new Map<string, string | null>();
  /** The read marker the client last wrote per room, so that each is written once. */
  private readonly readWritten = new Map<string, string>();
  private readTimer: ReturnType<typeof setTimeout> | null = null;
  /** The message id the read timer is for. */
  private readCandidate: string | null = null;
  /** Rooms whose latest page of history is being loaded. */
  private readonly loadingLatest = new Set<string>();
  /**
   * Joins refused as `unavailable` (the server could not authorize or read history right
   * now), each retried after its own growing wait: the attempts so far and the pending timer.
   */
  private readonly joinRetries = new Map<string, { attempts: number; timer: ReturnType<typeof setTimeout> | null }>();
  /** Counts list fetches, so that only the newest answer is applied. */
  private listGeneration = 0;
  private readonly opts: Required<
    Omit<ChatClientOptions, 'checkToken' | 'onUnauthorized' | 'renewToken' | 'backoff' | 'fetchRooms' | 'fetchChanges'>
  > &
    Pick<ChatClientOptions, 'checkToken' | 'onUnauthorized' | 'renewToken' | 'fetchRooms' | 'fetchChanges'>;

  constructor(options: ChatClientOptions) {
    this.backoff = options.backoff ?? new Backoff();
    this.opts = {
      createSocket: (url) => new WebSocket(url),
      ackTimeoutMs: 10_000,
      // A dead connection (a half-open socket, a network that went away without the browser
      // noticing) is found within about 10 s; a ping every 5 s is far below the frame rate limit.
      pingIntervalMs: 5_000,
      pongTimeoutMs: 5_000,
      typingThrottleMs: 2_500,
      historyPageSize: 50,
      newClientId,
      readDelayMs: 500,
      joinsPerSecond: 10,
      maxBackgroundRooms: 90,
      ...options,
    };
  }

  // ---- state for the UI -------------------------------------------------

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ChatState => this.state;

  /**
   * Calls `listener` with each message that arrives live (a `message` frame) and was not held
   * yet, after the state has taken it; never with what a `joined` snapshot, a catch-up or a
   * history page brings. For notifications.
   */
  onLiveMessage(listener: (message: WireMessage) => void): () => void {
    this.liveListeners.add(listener);
    return () => this.liveListeners.delete(listener);
  }

  private dispatch(action: ChatAction): void {
    const next = chatReducer(this.state, action);
    if (next === this.state) return;
    this.state = next;
    this.scheduleRead();
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
    this.stopJoinPump();
    this.clearJoinRetries();
    if (this.readTimer !== null) clearTimeout(this.readTimer);
    this.readTimer = null;
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
   * The browser says whether it has a network (`online`/`offline` events). Going offline
   * gives the connection up at once rather than after the heartbeat's timeout, so the screen
   * says so and presence is shown as unknown; reconnect attempts go on with backoff (the
   * browser's idea of being offline can be wrong), and coming back online tries at once.
   */
  setOnline(online: boolean): void {
    if (this.stopped) return;
    this.dispatch({ type: 'network', online });
    if (online) {
      this.reconnectNow();
      return;
    }
    const socket = this.socket;
    if (socket === null) return;
    this.socket = null;
    detach(socket);
    socket.close(1000, 'offline');
    this.stopHeartbeat();
    this.stopJoinPump();
    this.scheduleReconnect(false);
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
    this.pendingJoins = [];
    this.joinSince.clear();
    this.readWritten.clear();
    this.stopJoinPump();
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.backoff.reset();
      this.dispatch({ type: 'opened' });
      this.startHeartbeat();
      if (this.pendingAuth !== null) this.write({ type: 'auth', token: this.pendingAuth });
      this.pendingAuth = null;
      // The room on screen first, then the others at a pace the server accepts, once the list
      // (which says what changed while the connection was away) has told which are still the user's.
      this.joinQueue = [];
      for (const room of this.wanted) {
        if (this.foreground.has(room)) this.sendJoin(room);
        else this.joinQueue.push(room);
      }
      if (this.opts.fetchRooms === undefined) this.startJoinPump();
      else void this.refreshRooms();
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
      this.stopJoinPump();
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

  /** Joins a room now (not paced), e.g. one the user opened. */
  join(room: string): void {
    const r = this.state.rooms[room];
    const again = r !== undefined && (r.denied !== null || r.removed !== null);
    this.foreground.add(room);
    this.joinQueue = this.joinQueue.filter((q) => q !== room);
    this.dispatch({ type: 'joinRequested', room });
    if (this.wanted.has(room) && !again) {
      // Already joined, or its join is on the way.
      if (r?.joined !== true && !this.pendingJoins.includes(room)) this.sendJoin(room);
      return;
    }
    this.wanted.add(room);
    this.sendJoin(room);
  }

  leave(room: string): void {
    this.foreground.delete(room);
    this.joinQueue = this.joinQueue.filter((q) => q !== room);
    if (!this.wanted.delete(room)) {
      if (this.state.rooms[room] !== undefined) this.dispatch({ type: 'left', room });
      return;
    }
    // A join still on its way is answered first (frames are handled in order), so it is left too.
    if (this.state.rooms[room]?.joined === true || this.pendingJoins.includes(room)) this.write({ type: 'leave', room });
    this.pendingJoins = this.pendingJoins.filter((r) => r !== room);
    for (const entry of this.state.rooms[room]?.outbox ?? []) this.clearAckTimer(entry.clientId);
    this.dispatch({ type: 'left', room });
  }

  /**
   * Shows a room: joins it first if needed, loads its latest history if it
   * was joined in the background, and from then on reads what arrives in it.
   */
  open(room: string): void {
    this.dispatch({ type: 'viewing', room });
    this.join(room);
    const r = this.state.rooms[room];
    if (r?.joined === true && !r.historyLoaded) void this.loadLatest(room);
  }

  /** The room is no longer on screen; it stays joined if it is in the user's list. */
  close(room: string): void {
    if (this.state.viewing === room) this.dispatch({ type: 'viewing', room: null });
    this.foreground.delete(room);
    if (this.state.list.rooms[room] === undefined) this.leave(room);
  }

  /** The user left `room` (or hid a DM): it goes from the list at once, before the server's `removed` arrives. */
  forget(room: string): void {
    this.removed(room, 'left');
  }

  /** Whether the page is visible; messages in a hidden page's open room stay unread. */
  setVisible(visible: boolean): void {
    this.dispatch({ type: 'visibility', visible });
  }

  /** Fetches the room list again (the source of truth) and joins rooms not joined yet. */
  async refreshRooms(): Promise<void> {
    const fetchRooms = this.opts.fetchRooms;
    if (fetchRooms === undefined || this.stopped) return;
    const generation = ++this.listGeneration;
    try {
      const rooms = await fetchRooms();
      if (generation !== this.listGeneration || this.stopped) return;
      this.dispatch({ type: 'roomsLoaded', rooms });
      this.syncSubscriptions();
    } catch (e) {
      if (generation !== this.listGeneration) return;
      if (e instanceof ApiError && e.status === 401) {
        this.unauthorized();
        return;
      }
      this.dispatch({ type: 'roomsFailed', error: `Could not load your rooms. ${apiErrorText(e)}` });
      // Rejoin the rooms known from before rather than none.
      this.startJoinPump();
    }
  }

  /** Records a room the user just created, joined or opened a DM to, without waiting for the server's event. */
  addRoom(view: RoomView): void {
    this.dispatch({ type: 'roomAdded', room: view });
    this.syncSubscriptions();
  }

  /**
   * Joins the listed rooms not joined yet (the most active first, up to the
   * background limit) and forgets rooms that left the list, unless on screen.
   */
  private syncSubscriptions(): void {
    const listed = this.state.list.rooms;
    for (const room of [...this.wanted]) {
      if (listed[room] === undefined && !this.foreground.has(room) && this.state.viewing !== room) this.leave(room);
    }
    const byActivity = Object.values(listed)
      .filter((v) => !v.archived)
      .sort((a, b) => activityOf(b) - activityOf(a));
    let background = [...this.wanted].filter((r) => !this.foreground.has(r)).length;
    for (const view of byActivity) {
      if (this.wanted.has(view.id)) continue;
      if (background >= this.opts.maxBackgroundRooms) break;
      background += 1;
      this.wanted.add(view.id);
      this.dispatch({ type: 'joinRequested', room: view.id });
      this.joinQueue.push(view.id);
    }
    this.startJoinPump();
  }

  private startJoinPump(): void {
    if (this.joinTimer !== null || this.joinQueue.length === 0) return;
    if (this.socket === null || this.socket.readyState !== OPEN) return;
    this.pumpJoins();
    if (this.joinQueue.length > 0) this.joinTimer = setInterval(() => this.pumpJoins(), 1000);
  }

  private pumpJoins(): void {
    for (let n = 0; n < this.opts.joinsPerSecond && this.joinQueue.length > 0; ) {
      const room = this.joinQueue.shift()!;
      if (!this.wanted.has(room) || this.state.rooms[room]?.joined === true) continue;
      this.sendJoin(room);
      n += 1;
    }
    if (this.joinQueue.length === 0) this.stopJoinPump();
  }

  private stopJoinPump(): void {
    if (this.joinTimer !== null) clearInterval(this.joinTimer);
    this.joinTimer = null;
  }

  private sendJoin(room: string): void {
    // A room joined in the background needs only what came after the list's last message;
    // a room opened without any messages yet asks for its recent ones.
    const listed = this.state.list.rooms[room]?.last_message?.id ?? null;
    const since = lastSeenId(this.state.rooms[room]) ?? (this.foreground.has(room) ? null : listed);
    const changesSince = this.state.rooms[room]?.changesSince ?? null;
    const frame: ClientFrame =
      since === null
        ? { type: 'join', room }
        : changesSince === null
          ? { type: 'join', room, since }
          : { type: 'join', room, since, changes_since: changesSince };
    if (this.write(frame)) {
      this.pendingJoins.push(room);
      this.joinSince.set(room, since);
    }
  }

  /** Loads the latest page of a room again, after it failed (the view's retry). */
  reloadLatest(room: string): void {
    if (this.state.rooms[room]?.historyLoaded === false) void this.loadLatest(room);
  }

  /**
   * Loads the latest page of a room whose `messages` do not reach back to its recent history:
   * joined in the background from its last known message, or joined while the gateway's
   * history read timed out.
   */
  private async loadLatest(room: string): Promise<void> {
    if (this.loadingLatest.has(room)) return;
    this.loadingLatest.add(room);
    try {
      const page = await this.opts.fetchHistory(room, { before: null }, this.opts.historyPageSize);
      if (this.wanted.has(room)) this.dispatch({ type: 'latestLoaded', room, messages: page.messages, hasMore: page.has_more });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        this.unauthorized();
        return;
      }
      this.dispatch({ type: 'latestFailed', room, error: `Could not load the conversation. ${apiErrorText(e)}` });
    } finally {
      this.loadingLatest.delete(room);
    }
  }

  // ---- read markers ------------------------------------------------------

  /**
   * The newest message of the room on screen is shown in a visible page and
   * is newer than the read marker: after a short delay (so that scrolling
   * through rooms does not write a marker for each), move the marker there.
   */
  private scheduleRead(): void {
    const candidate = this.readTarget();
    if (candidate === this.readCandidate) return;
    if (this.readTimer !== null) clearTimeout(this.readTimer);
    this.readTimer = null;
    this.readCandidate = candidate;
    if (candidate === null) return;
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      this.readCandidate = null;
      const room = this.state.viewing;
      const id = this.readTarget();
      if (room === null || id === null) return;
      if (this.write({ type: 'read', room, id })) {
        this.readWritten.set(room, id);
        this.dispatch({ type: 'readMoved', room, id, me: this.opts.me.id });
      }
    }, this.opts.readDelayMs);
  }

  /** The message id to mark read in the room on screen, or `null` when there is nothing to do. */
  private readTarget(): string | null {
    const { viewing, visible, rooms, list } = this.state;
    if (viewing === null || !visible) return null;
    const r = rooms[viewing];
    const view = list.rooms[viewing];
    // Without a role the server did not say the user is a member (a gateway that knows no rooms).
    if (r === undefined || view === undefined || view.role === null || !r.joined || !r.historyLoaded) return null;
    const newest = lastSeenId(r);
    if (newest === null) return null;
    if (view.read_id !== null && newest <= view.read_id) return null;
    if (this.readWritten.get(viewing) === newest) return null;
    return newest;
  }

  // ---- messages ----------------------------------------------------------

  /** Queues a message, a reply to `replyTo` if given; it is written now if the room is joined, otherwise once it is. */
  send(room: string, body: string, replyTo?: ReplyRef): string {
    const clientId = this.opts.newClientId();
    this.dispatch({ type: 'queued', room, clientId, body, ...(replyTo !== undefined ? { replyTo } : {}) });
    this.attempt(sendFrame(room, clientId, body, replyTo));
    return clientId;
  }

  /** Replaces the body of the user's message `id`. */
  edit(room: string, id: string, body: string): string {
    return this.change((clientId) => ({ type: 'edit', room, id, body, client_id: clientId }));
  }

  /** Deletes message `id` (the user's own, or anyone's for an owner or admin). */
  remove(room: string, id: string): string {
    return this.change((clientId) => ({ type: 'delete', room, id, client_id: clientId }));
  }

  /** Turns the user's reaction `emoji` to message `id` on or off. */
  react(room: string, id: string, emoji: string, on: boolean): string {
    return this.change((clientId) => ({ type: 'react', room, id, emoji, on, client_id: clientId }));
  }

  private change(make: (clientId: string) => ChangeFrame): string {
    const clientId = this.opts.newClientId();
    const frame = make(clientId);
    this.dispatch({ type: 'changeQueued', change: { clientId, room: frame.room, frame, status: 'pending', error: null } });
    this.attempt(frame);
    return clientId;
  }

  /** Puts a failed change aside without retrying it. */
  dismissChange(clientId: string): void {
    this.clearAckTimer(clientId);
    this.dispatch({ type: 'changeDismissed', clientId });
  }

  /** Sends a failed message or change again under the same client id. */
  retry(clientId: string): void {
    for (const r of Object.values(this.state.rooms)) {
      const entry = r.outbox.find((o) => o.clientId === clientId);
      const change = r.changes.find((c) => c.clientId === clientId);
      if (entry === undefined && change === undefined) continue;
      this.dispatch({ type: 'retrying', clientId });
      this.sentOnSocket.delete(clientId);
      this.attempt(entry !== undefined ? sendFrame(r.room, clientId, entry.body, entry.replyTo) : change!.frame);
      return;
    }
  }

  private attempt(frame: SendOrChange): void {
    if (this.state.rooms[frame.room]?.joined === true) this.transmit(frame);
  }

  // The acknowledgement clock starts when the message is actually written:
  // while disconnected a message stays pending (the banner says why) and goes
  // out after the rejoin, rather than failing for want of a connection.
  private transmit(frame: SendOrChange): void {
    const clientId = frame.client_id;
    if (this.sentOnSocket.has(clientId)) return;
    if (!this.write(frame)) return;
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
      this.dispatch({ type: 'olderFailed', room, error: `Could not load older messages. ${apiErrorText(e)}` });
    }
  }

  // ---- server events -----------------------------------------------------

  private handle(event: ServerEvent): void {
    const me = this.opts.me;
    switch (event.type) {
      case 'joined': {
        const retry = this.joinRetries.get(event.room);
        if (retry?.timer) clearTimeout(retry.timer);
        this.joinRetries.delete(event.room);
        this.pendingJoins = this.pendingJoins.filter((r) => r !== event.room);
        if (!this.wanted.has(event.room)) return;
        this.dispatch({
          type: 'joined',
          room: event.room,
          members: event.members,
          messages: event.messages,
          me: me.id,
          view: event.view,
          fresh: this.joinSince.get(event.room) === null,
          changes: event.changes,
        });
        const after = this.state.rooms[event.room];
        if (this.state.viewing === event.room && after !== undefined && !after.historyLoaded) void this.loadLatest(event.room);
        for (const m of event.messages) if (m.author.id === me.id && m.client_id !== null) this.clearAckTimer(m.client_id);
        // Messages written before the room was (re)joined go out now.
        for (const entry of this.state.rooms[event.room]?.outbox ?? []) {
          if (entry.status === 'pending') this.transmit(sendFrame(event.room, entry.clientId, entry.body, entry.replyTo));
        }
        for (const change of this.state.rooms[event.room]?.changes ?? []) {
          if (change.status === 'pending') this.transmit(change.frame);
        }
        if (event.changes_truncated) void this.catchUpChanges(event.room);
        if (this.state.viewing === event.room) void this.learnMyReactions(event.room);
        const newest = event.messages[event.messages.length - 1]?.id;
        if (event.truncated && newest !== undefined) void this.catchUp(event.room, newest);
        return;
      }
      case 'message': {
        const { type: _type, ...message } = event;
        if (message.author.id === me.id && message.client_id !== null) this.clearAckTimer(message.client_id);
        // Whether the room held it already is looked up only when someone listens: every live
        // message of every room passes here.
        const held = this.liveListeners.size === 0 ? undefined : this.state.rooms[message.room];
        const fresh = held !== undefined && !held.messages.some((m) => m.id === message.id);
        this.dispatch({ type: 'messages', room: message.room, messages: [message], me: me.id });
        if (fresh) for (const listener of this.liveListeners) listener(message);
        return;
      }
      case 'edited':
      case 'deleted':
      case 'reactions':
        this.dispatch({ type: 'applied', change: event, me: me.id });
        return;
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
      case 'removed':
        this.removed(event.room, event.reason);
        return;
      case 'room_added':
        this.addRoom(event.room);
        return;
      case 'room_updated':
        this.dispatch({ type: 'roomUpdated', room: event.room });
        return;
      case 'read':
        this.dispatch({ type: 'readMoved', room: event.room, id: event.id, me: me.id });
        return;
      case 'lagged': {
        // From the earlier of the two: after a broker outage the server's `last_id` can be older
        // than messages received live since (ids compare as strings).
        const seen = lastSeenId(this.state.rooms[event.room]);
        const from = seen !== null && event.last_id !== null && event.last_id < seen ? event.last_id : (seen ?? event.last_id);
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
          const isChange = Object.values(this.state.rooms).some((r) => r.changes.some((c) => c.clientId === event.client_id));
          const text = isChange ? changeErrorText(event.code) : sendErrorText(event.code);
          this.dispatch({ type: 'failed', clientId: event.client_id, error: text });
          return;
        }
        {
          const room = event.room ?? this.pendingJoins[0];
          if (room !== undefined) {
            this.pendingJoins = this.pendingJoins.filter((r) => r !== room);
            this.joinRefused(room, event.code, event.message);
          } else {
            for (const r of this.wanted) {
              if (this.state.rooms[r]?.joined !== true) this.dispatch({ type: 'roomError', room: r, error: errorCodeText(event.code) });
            }
          }
        }
        return;
    }
  }

  /**
   * A join was refused. For good (no such room, not allowed, banned, archived):
   * the room is no longer wanted and its view says why. A room joined only in
   * the background is dropped quietly when the connection holds too many.
   */
  private joinRefused(room: string, code: string, message: string): void {
    if (DENIAL_CODES.has(code)) {
      this.wanted.delete(room);
      this.joinQueue = this.joinQueue.filter((q) => q !== room);
      this.failOutbox(room, message);
      this.dispatch({ type: 'denied', room, code, message });
      return;
    }
    if (code === 'too_many_rooms' && !this.foreground.has(room)) {
      this.wanted.delete(room);
      this.dispatch({ type: 'left', room });
      return;
    }
    if (code === 'already_joined') return;
    if (code === 'unavailable' && this.wanted.has(room)) {
      // Not an error to show: the room keeps what it shows, says it is catching up, and its
      // waiting messages go out once the retried join is answered.
      this.retryJoin(room);
      this.dispatch({ type: 'catchingUp', room });
      return;
    }
    this.dispatch({ type: 'roomError', room, error: errorCodeText(code) });
  }

  /**
   * Joins `room` again after a wait that doubles with each refusal (1 s, 2 s, … 30 s, ±20%),
   * while it is still wanted; a reconnect joins every wanted room anyway.
   */
  private retryJoin(room: string): void {
    const retry = this.joinRetries.get(room) ?? { attempts: 0, timer: null };
    if (retry.timer !== null) return;
    const wait = Math.min(1000 * 2 ** retry.attempts, 30_000) * (0.8 + Math.random() * 0.4);
    retry.attempts += 1;
    retry.timer = setTimeout(() => {
      retry.timer = null;
      if (!this.wanted.has(room) || this.state.rooms[room]?.joined === true) return;
      if (this.socket === null || this.socket.readyState !== OPEN) return;
      if (this.foreground.has(room)) this.sendJoin(room);
      else {
        this.joinQueue.push(room);
        this.startJoinPump();
      }
    }, wait);
    this.joinRetries.set(room, retry);
  }

  private clearJoinRetries(): void {
    for (const retry of this.joinRetries.values()) {
      if (retry.timer !== null) clearTimeout(retry.timer);
    }
    this.joinRetries.clear();
  }

  /** The server took this connection out of `room`; own messages still waiting there will not go out. */
  private removed(room: string, reason: RemovalReason): void {
    this.wanted.delete(room);
    this.foreground.delete(room);
    this.joinQueue = this.joinQueue.filter((q) => q !== room);
    this.pendingJoins = this.pendingJoins.filter((r) => r !== room);
    this.failOutbox(room, 'You are no longer in this room');
    this.dispatch({ type: 'roomRemoved', room, reason });
    // Only the room on screen keeps its state, for the notice.
    if (this.state.viewing !== room) this.dispatch({ type: 'left', room });
  }

  private failOutbox(room: string, error: string): void {
    const r = this.state.rooms[room];
    for (const entry of [...(r?.outbox ?? []), ...(r?.changes ?? [])]) {
      this.clearAckTimer(entry.clientId);
      if (entry.status === 'pending') this.dispatch({ type: 'failed', clientId: entry.clientId, error });
    }
  }

  /**
   * Pages the change feed after a rejoin whose `changes` were truncated, from the latest
   * `changed_at` the room has received, until it has no more.
   */
  private async catchUpChanges(room: string): Promise<void> {
    const fetchChanges = this.opts.fetchChanges;
    if (fetchChanges === undefined) return;
    try {
      for (let page = 0; page < MAX_CATCH_UP_PAGES; page += 1) {
        const from = this.state.rooms[room]?.changesSince;
        const afterMs = from == null ? NaN : Date.parse(from);
        if (Number.isNaN(afterMs)) return;
        const result = await fetchChanges(room, afterMs, CATCH_UP_PAGE_SIZE);
        if (!this.wanted.has(room)) return;
        this.dispatch({ type: 'changed', room, messages: result.changes });
        if (!result.has_more || result.changes.length === 0) return;
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) this.unauthorized();
      // Otherwise the changes not fetched show once the messages are loaded again.
    }
  }

  /**
   * `joined` carries reaction counts without the user's own flags: when the room on screen
   * holds reactions whose flag is unknown, its latest history page (which has them) fills them in.
   */
  private async learnMyReactions(room: string): Promise<void> {
    const unknown = (this.state.rooms[room]?.messages ?? []).some((m) => (m.reactions ?? []).some((x) => x.me === undefined));
    if (!unknown) return;
    try {
      const page = await this.opts.fetchHistory(room, { before: null }, this.opts.historyPageSize);
      if (this.wanted.has(room)) this.dispatch({ type: 'changed', room, messages: page.messages });
    } catch {
      // Only the highlight of the user's own reactions is missing; toggling one still works.
    }
  }

  /**
   * Pages the history API forward from `after` until it has no more, for
   * messages the live connection did not deliver: the rest of a truncated
   * rejoin snapshot, or what was dropped while the connection lagged.
   * Merging by id makes any overlap with live messages harmless. A page the
   * server could not answer right now (shed `503` in a reconnect storm, 429,
   * no connection) is asked again after a growing wait, up to
   * `CATCH_UP_ATTEMPTS` times in a row: giving up leaves a hole in the
   * conversation until the next reload.
   */
  private async catchUp(room: string, from: string): Promise<void> {
    let after = from;
    const backoff = new Backoff(CATCH_UP_BACKOFF);
    for (let page = 0; page < MAX_CATCH_UP_PAGES; ) {
      let result: HistoryPage;
      try {
        result = await this.opts.fetchHistory(room, { after }, CATCH_UP_PAGE_SIZE);
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) {
          this.unauthorized();
          return;
        }
        if (!retryable(e) || backoff.attempts >= CATCH_UP_ATTEMPTS) return;
        const hinted = e instanceof ApiError && e.retryAfter !== null ? e.retryAfter * 1000 : 0;
        await new Promise((resolve) => setTimeout(resolve, Math.max(hinted, backoff.next())));
        if (this.stopped || !this.wanted.has(room)) return;
        continue;
      }
      backoff.reset();
      page += 1;
      if (!this.wanted.has(room)) return;
      this.dispatch({ type: 'messages', room, messages: result.messages, me: this.opts.me.id });
      const newest = result.messages[result.messages.length - 1]?.id;
      if (!result.has_more || newest === undefined) return;
      after = newest;
    }
  }
}

type SendOrChange = Extract<ClientFrame, { type: 'send' }> | ChangeFrame;

function sendFrame(room: string, clientId: string, body: string, replyTo: ReplyRef | undefined): SendOrChange {
  return replyTo === undefined ? { type: 'send', room, client_id: clientId, body } : { type: 'send', room, client_id: clientId, body, reply_to: replyTo.id };
}

function detach(socket: SocketLike): void {
  socket.onopen = null;
  socket.onclose = null;
  socket.onmessage = null;
  socket.onerror = null;
}
