/**
 * A reconnect storm, with the web client's own connection logic (`ChatClient` and its store,
 * as the browser runs them; only the WebSocket and `fetch` are Node's) against the real
 * services: 500 signed-in clients in one room, each with a message written while the gateway
 * is down, then the gateway restarted with history-service slowed behind a proxy
 * (./faults.mjs). Every client must end caught up (holding every message of the room) and
 * every one of its sends acknowledged and stored exactly once.
 *
 * Run by Vitest with its own configuration (`npm run e2e:storm`, in scripts/test.sh after the
 * browser tests, with `STORM_CLIENTS=200` to keep CI's time): it needs the three binaries,
 * MongoDB/FerretDB and RabbitMQ as the browser tests do, but no browser. `STORM_CLIENTS`
 * changes the number of clients (default 500).
 * Service logs go to web/e2e/.artifacts/storm/.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { WebSocket } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { fetchChanges, fetchHistory, listRooms } from '../src/api';
import { ChatClient, type SocketLike } from '../src/connection';
import type { ChatState } from '../src/store';
// @ts-expect-error: plain JavaScript test support, without type declarations
import { startHistoryProxy } from './faults.mjs';
// @ts-expect-error: plain JavaScript test support, without type declarations
import { apiRequest, killAllNow, signUpAndLogIn, sleep, startServices, webDir } from './services.mjs';

const CLIENTS = Number(process.env.STORM_CLIENTS ?? 500);
/** Messages the room holds before the storm, so that every rejoin has history to catch up on. */
const BEFORE = 20;
/** How long history-service's message reads are held by the proxy during the storm. */
const SLOW_READS_MS = 1_500;
/**
 * Bound on the whole recovery, for a loaded machine; the figures printed say how long it took
 * (here, on 2 cores running the services and the 500 clients: 239 s for 500, 19 s for 200).
 */
const RECOVERY_BOUND_MS = 600_000;
/** Longest the last messages may take to be stored once every client holds them. */
const STORED_BOUND_MS = 30_000;
/** Sign-ups, first joins and connects made at once while setting up. */
const SETUP_AT_ONCE = 16;

interface StormUser {
  username: string;
  id: string;
  token: string;
}

interface Services {
  auth: { url: string };
  history: { url: string };
  gateway: { url: string; start(): Promise<void>; stop(): Promise<void> };
  stop(): Promise<void>;
}

let services: Services;
let historyProxy: { mode: string; delayMs: number; target: string | null; close(): Promise<void> };
const clients: ChatClient[] = [];

/** Runs `work` over `items`, `atOnce` at a time. */
async function inBatches<T, R>(items: readonly T[], atOnce: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(atOnce, items.length) }, async () => {
      for (let index = next; index < items.length; index = next) {
        next += 1;
        results[index] = await work(items[index] as T);
      }
    }),
  );
  return results;
}

/** Makes `user` a member of `room` through the API, tried again while history-service sheds. */
async function becomeMember(user: StormUser, room: string): Promise<void> {
  for (;;) {
    const res: Response = await apiRequest(services.gateway.url, 'POST', `/api/rooms/${room}/join`, user.token);
    if (res.status === 200) return;
    expect(res.status, `join of ${user.username}`).toBe(503);
    await sleep(200);
  }
}

function newClient(user: StormUser): ChatClient {
  const wsBase = services.gateway.url.replace(/^http/, 'ws');
  return new ChatClient({
    me: { id: user.id, username: user.username },
    url: () => `${wsBase}/ws?token=${encodeURIComponent(user.token)}`,
    createSocket: (url) => new WebSocket(url) as unknown as SocketLike,
    fetchHistory: (room, cursor, limit) => fetchHistory(user.token, room, cursor, limit),
    fetchChanges: (room, afterMs, limit) => fetchChanges(user.token, room, afterMs, limit),
    fetchRooms: () => listRooms(user.token),
  });
}

/** How the clients for which `done` does not hold are, counted by kind (for a failure's message). */
function describeWaiting(done: (state: ChatState) => boolean): string {
  const kinds = new Map<string, number>();
  for (const client of clients) {
    const s = client.getSnapshot();
    if (done(s)) continue;
    const rooms = Object.values(s.rooms);
    const r = rooms[0];
    const kind =
      r === undefined
        ? `${s.connection.status}, no room`
        : `${s.connection.status}, joined ${r.joined}, outbox ${r.outbox.map((o) => o.status).join('+') || 'empty'}, ` +
          `${r.messages.length} messages, error ${r.error ?? 'none'}`;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([kind, n]) => `${n}× (${kind})`).join('; ');
}

/** Resolves once `done` holds for every client's state, or fails after `timeoutMs`. */
async function everyClient(what: string, timeoutMs: number, done: (state: ChatState) => boolean): Promise<number> {
  const started = Date.now();
  for (;;) {
    const waiting = clients.filter((c) => !done(c.getSnapshot())).length;
    if (waiting === 0) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      throw new Error(`${what}: ${waiting} of ${clients.length} clients not there after ${timeoutMs} ms; their states: ${describeWaiting(done)}`);
    }
    await sleep(250);
  }
}

describe('a reconnect storm of the web client', () => {
  beforeAll(async () => {
    const logDir = path.join(webDir, 'e2e', '.artifacts', 'storm');
    mkdirSync(logDir, { recursive: true });
    historyProxy = await startHistoryProxy();
    services = (await startServices({
      prefix: 'e2e_storm',
      logDir,
      gatewayVars: { GATEWAY__HISTORY__URL: (historyProxy as unknown as { url: string }).url },
    })) as Services;
    historyProxy.target = services.history.url;
    // The client's API module asks relative paths, as a page of the gateway does.
    const nodeFetch = globalThis.fetch;
    globalThis.fetch = (input, init) =>
      nodeFetch(typeof input === 'string' && input.startsWith('/') ? `${services.gateway.url}${input}` : input, init);
  }, 120_000);

  afterAll(async () => {
    for (const client of clients) client.stop();
    await historyProxy?.close();
    await services?.stop();
    killAllNow();
  });

  test(
    `${CLIENTS} clients catch up and each of their sends is stored once after a gateway restart with history slowed`,
    async () => {
      const users = await inBatches(
        Array.from({ length: CLIENTS }, (_, k) => k),
        SETUP_AT_ONCE,
        (k): Promise<StormUser> => signUpAndLogIn(services.gateway.url, `storm${k}`, 'correct horse battery staple'),
      );
      const [owner] = users;
      if (owner === undefined) throw new Error('no clients');
      const created: Response = await apiRequest(services.gateway.url, 'POST', '/api/rooms', owner.token, { kind: 'public', name: 'Storm', topic: '' });
      expect(created.status).toBe(201);
      const room = ((await created.json()) as { id: string }).id;
      await inBatches(users.slice(1), SETUP_AT_ONCE, (user) => becomeMember(user, room));

      // Every client signed in with the room open, as a browser tab would be.
      for (const user of users) {
        const client = newClient(user);
        clients.push(client);
        client.start();
        client.open(room);
        if (clients.length % SETUP_AT_ONCE === 0) await sleep(100);
      }
      await everyClient('joined', 120_000, (s) => s.rooms[room]?.joined === true);

      for (let k = 0; k < BEFORE; k += 1) clients[k % clients.length]?.send(room, `before ${k}`);
      await everyClient(
        'the first messages',
        60_000,
        (s) => (s.rooms[room]?.messages.filter((m) => m.body.startsWith('before ')).length ?? 0) === BEFORE,
      );

      // The gateway goes away; every client writes a message meanwhile; history-service slows.
      await services.gateway.stop();
      await everyClient('disconnected', 60_000, (s) => s.connection.status !== 'open');
      const sent = new Map<string, string>();
      clients.forEach((client, k) => {
        const body = `during the outage from ${users[k]?.username}`;
        sent.set(client.send(room, body), body);
      });
      historyProxy.delayMs = SLOW_READS_MS;
      historyProxy.mode = 'slowReads';
      const restartedAt = Date.now();
      await services.gateway.start();
      const readyAfter = Date.now() - restartedAt;

      const expected = BEFORE + CLIENTS;
      const caughtUp = await everyClient('caught up', RECOVERY_BOUND_MS, (s) => {
        const r = s.rooms[room];
        return r !== undefined && r.joined && r.outbox.length === 0 && r.messages.length >= expected;
      });
      historyProxy.mode = 'pass';

      // Each client holds every message once, its own with the id the server gave it.
      for (const [k, client] of clients.entries()) {
        const messages = client.getSnapshot().rooms[room]?.messages ?? [];
        const ids = messages.map((m) => m.id);
        expect(new Set(ids).size, `client ${k} holds no message twice`).toBe(ids.length);
        expect(ids.length, `client ${k} holds every message`).toBe(expected);
        const own = messages.filter((m) => m.author.id === users[k]?.id && m.body.startsWith('during the outage'));
        expect(own.length, `client ${k}'s outage message, once`).toBe(1);
      }

      // Stored: every send once (one id per client id), read page by page. Clients see a
      // message live as history-service consumes it, so the last ones may be stored a little
      // after every client holds them: read again until all are there, or a while has passed.
      const readStored = async (): Promise<{ id: string; client_id: string }[]> => {
        const found: { id: string; client_id: string }[] = [];
        let before: string | null = null;
        for (;;) {
          const query: string = before === null ? 'limit=100' : `limit=100&before=${before}`;
          const res: Response = await apiRequest(services.history.url, 'GET', `/api/rooms/${room}/messages?${query}`, owner.token);
          expect(res.status).toBe(200);
          const page = (await res.json()) as { messages: { id: string; client_id: string }[]; has_more: boolean };
          found.push(...page.messages);
          if (!page.has_more || page.messages.length === 0) return found;
          before = page.messages[0]?.id ?? null;
        }
      };
      let stored = await readStored();
      for (const storedBy = Date.now() + STORED_BOUND_MS; stored.length < expected && Date.now() < storedBy; ) {
        await sleep(200);
        stored = await readStored();
      }
      expect(stored.length).toBe(expected);
      expect(new Set(stored.map((m) => m.id)).size).toBe(expected);
      const storedClientIds = new Set(stored.map((m) => m.client_id));
      for (const clientId of sent.keys()) expect(storedClientIds.has(clientId), `client id ${clientId} stored`).toBe(true);

      console.log(
        `storm: ${CLIENTS} clients, gateway restarted with history reads held ${SLOW_READS_MS} ms: ` +
          `the gateway ready again ${readyAfter} ms after it was started, every client caught up ${caughtUp} ms later, ` +
          `${expected} messages held by each, ${stored.length} stored once each`,
      );
    },
    900_000,
  );
});
