/**
 * The web client with a slow or failing backend, in real headless Chromium against the real
 * services (started by ./services.mjs), with the faults made real: history-service sits
 * behind a proxy (./faults.mjs) that answers 503 or holds its reads, and a page's WebSocket
 * goes through the test, which cuts or silences it. Each test signs up users of its own and
 * makes its own rooms.
 *
 * Needs what chat.e2e.mjs needs: the three binaries, a built client in web/dist,
 * MongoDB/FerretDB and RabbitMQ (scripts/deps.sh), and Debian's `chromium`.
 * Run: `node --test e2e/resilience.e2e.mjs` in web/ with a client already built.
 * Service logs go to web/e2e/.artifacts/resilience/ (printed on failure).
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { describe } from 'node:test';
import { controlWebSocket, startHistoryProxy } from './faults.mjs';
import { UI_TIMEOUT, browserHarness, password, screenshotDir } from './harness.mjs';
import { distDir, sleep, startServices } from './services.mjs';

const TEST_TIMEOUT = 150_000;
/**
 * The issue asks that a dead connection is noticed within a few seconds (the client pings
 * every 5 s and gives up 5 s without an answer); asserted with a generous bound for a loaded
 * machine.
 */
const DEAD_CONNECTION_BOUND_MS = 20_000;

let historyProxy;

const h = browserHarness({
  name: 'resilience',
  testTimeout: TEST_TIMEOUT,
  start: async (harness) => {
    historyProxy = await startHistoryProxy();
    // The gateway reaches history-service (join authorization, history reads, forwarded /api/rooms) only through the proxy.
    const services = await startServices({
      prefix: 'e2e_resilience',
      logDir: harness.artifactsDir,
      gatewayVars: { GATEWAY__HISTORY__URL: historyProxy.url },
    });
    historyProxy.target = services.history.url;
    return services;
  },
  stop: async () => historyProxy?.close(),
  // Every test starts and ends with history-service reachable.
  eachTest: () => {
    if (historyProxy !== undefined) historyProxy.mode = 'pass';
  },
});
const { test, api, newUser } = h;

// ---- users and the API -----------------------------------------------------------

async function createRoomByApi(owner, name) {
  const res = await api('POST', '/api/rooms', owner.token, { kind: 'public', name, topic: '' });
  assert.equal(res.status, 201, `create room ${name}`);
  return (await res.json()).id;
}

/** Every message of a room, read from history-service directly (not through the proxy). */
async function storedBodies(user, room) {
  const res = await fetch(`${h.services.history.url}/api/rooms/${encodeURIComponent(room)}/messages?limit=100`, {
    headers: { Authorization: `Bearer ${user.token}` },
  });
  assert.equal(res.status, 200);
  return (await res.json()).messages.map((m) => m.body);
}

// ---- pages ----------------------------------------------------------------------

/** A browser context that records whether its pages ever called a room empty, or showed it loading. */
function newContext(viewport = { width: 1280, height: 800 }, colorScheme = 'light') {
  return h.newContext({
    viewport,
    colorScheme,
    initScript: () => {
      new MutationObserver(() => {
        if (document.querySelector('[data-testid="room-empty"]') !== null) window.__sawEmpty = true;
        if (document.querySelector('[data-testid="messages-loading"]') !== null) window.__sawLoading = true;
      }).observe(document, { childList: true, subtree: true });
    },
  });
}

function newPage(context) {
  return h.newPage({ context });
}

/** Opens `urlPath` in a new browser (its own context) and logs in there as `user`. */
async function signedIn(user, urlPath = '/', { beforeLogin } = {}) {
  const page = await newPage(await newContext());
  if (beforeLogin !== undefined) await beforeLogin(page);
  await page.goto(`${h.services.gateway.url}${urlPath}`);
  await logIn(page, user);
  return page;
}

async function logIn(page, user) {
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('current-user').waitFor();
  assert.equal(await page.getByTestId('current-user').textContent(), user.username);
}

async function waitConnected(page) {
  await page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
}

function composer(page, label) {
  return page.getByLabel(`Message ${label}`);
}

async function send(page, label, body) {
  await composer(page, label).fill(body);
  await composer(page, label).press('Enter');
}

function messageWith(page, body, status = 'sent') {
  return page
    .locator(`[data-testid="message"][data-status="${status}"]`)
    .filter({ has: page.getByTestId('message-body').getByText(body, { exact: true }) });
}

async function expectMessage(page, body, timeout = UI_TIMEOUT) {
  await messageWith(page, body).first().waitFor({ timeout });
}

function roomIdOf(page) {
  const m = /\/r\/([^/?#]+)$/.exec(new URL(page.url()).pathname);
  assert.ok(m !== null, `a room address: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

/** A GET without decompression: the headers and the number of bytes on the wire. */
function rawGet(url, acceptEncoding) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers: { 'Accept-Encoding': acceptEncoding } }, (res) => {
        let bytes = 0;
        res.on('data', (chunk) => {
          bytes += chunk.length;
        });
        res.on('end', () => resolve({ headers: res.headers, bytes }));
      })
      .on('error', reject);
  });
}

// ---- the tests ----------------------------------------------------------------------

describe('the web client with a slow or failing backend', { timeout: 900_000 }, () => {
  test('a rejoin refused while history-service fails keeps the room, says it is catching up, and sends what waited once', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Standup');
    const annPage = await signedIn(ann, `/r/${room}`);
    let socket;
    const benPage = await signedIn(ben, `/r/${room}`, {
      beforeLogin: async (page) => {
        socket = await controlWebSocket(page);
      },
    });
    await waitConnected(annPage);
    await waitConnected(benPage);
    for (const body of ['before 1', 'before 2', 'before 3']) await send(annPage, '#Standup', body);
    for (const body of ['before 1', 'before 2', 'before 3']) await expectMessage(benPage, body);

    // history-service sheds everything; Ben's connection drops and his rejoin (with `since`) is refused.
    historyProxy.mode = 'fail';
    const joinsBefore = socket.connections;
    socket.cut();
    await benPage.getByTestId('catching-up').waitFor();
    assert.ok(socket.connections > joinsBefore, 'reconnected');
    assert.equal(await benPage.getByText(/history is unavailable/).count(), 0, 'no raw server message');
    assert.equal(await benPage.locator('.banner-error').count(), 0, 'no error banner');
    for (const body of ['before 1', 'before 2', 'before 3']) await expectMessage(benPage, body);

    // Ben writes while the room catches up; Ann goes on writing.
    await send(benPage, '#Standup', 'ben while away 1');
    await send(benPage, '#Standup', 'ben while away 2');
    for (const body of ['ann 1', 'ann 2', 'ann 3', 'ann 4']) await send(annPage, '#Standup', body);
    for (const body of ['ann 1', 'ann 2', 'ann 3', 'ann 4']) await expectMessage(annPage, body);
    await messageWith(benPage, 'ben while away 2', 'pending').waitFor();
    // Still refused a few seconds later: still catching up, nothing failed.
    await sleep(3_000);
    await benPage.getByTestId('catching-up').waitFor();
    assert.equal(await benPage.locator('[data-testid="message"][data-status="failed"]').count(), 0, 'nothing shown as failed');

    // history-service recovers: the retried join is answered (waits of 1, 2, 4, 8 … s), the gap is filled, the sends go out.
    historyProxy.mode = 'pass';
    const catchUp = 40_000;
    for (const body of ['ann 1', 'ann 2', 'ann 3', 'ann 4', 'ben while away 1', 'ben while away 2']) {
      await expectMessage(benPage, body, catchUp);
    }
    await benPage.getByTestId('catching-up').waitFor({ state: 'hidden' });
    for (const body of ['ben while away 1', 'ben while away 2']) await expectMessage(annPage, body);
    assert.equal(await messageWith(annPage, 'ben while away 1').count(), 1, 'shown once');

    // Stored exactly once each, in the order written.
    await sleep(500);
    const stored = await storedBodies(ann, room);
    assert.equal(stored.filter((b) => b === 'ben while away 1').length, 1, `stored once: ${stored}`);
    assert.equal(stored.filter((b) => b === 'ben while away 2').length, 1, `stored once: ${stored}`);
    assert.ok(stored.indexOf('ben while away 1') < stored.indexOf('ben while away 2'));
  });

  test('a room whose join came without history (the read timed out) loads it from the API and is never called empty', async () => {
    const ann = await newUser('ann');
    const cid = await newUser('cid');
    const room = await createRoomByApi(ann, 'Archive talk');
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    const bodies = Array.from({ length: 9 }, (_, i) => `old message ${i + 1}`);
    for (const body of bodies) await send(annPage, '#Archive talk', body);
    for (const body of bodies) await expectMessage(annPage, body);
    // Nobody in the room on the gateway any more, so it answers a join from history-service, not from memory.
    await annPage.context().close();
    await sleep(500);

    // history-service's reads now take 5 s: the gateway's (3 s) times out and joins without messages.
    historyProxy.mode = 'slowReads';
    historyProxy.delayMs = 5_000;
    const cidPage = await signedIn(cid, `/r/${room}`);
    for (const body of bodies) await expectMessage(cidPage, body, 30_000);
    assert.equal(await cidPage.evaluate(() => window.__sawEmpty === true), false, '"No messages yet" was never shown');
    assert.equal(await cidPage.evaluate(() => window.__sawLoading === true), true, 'a loading skeleton was shown meanwhile');
    await cidPage.getByTestId('messages-loading').waitFor({ state: 'detached' });
    assert.ok(
      historyProxy.seen.filter((s) => s === `GET /api/rooms/${room}/messages`).length >= 2,
      'the gateway read history, then the client asked the API',
    );
  });

  test('a room that is really empty says so', async () => {
    const ann = await newUser('ann');
    const room = await createRoomByApi(ann, 'Quiet corner');
    const annPage = await signedIn(ann, `/r/${room}`);
    await annPage.getByTestId('room-empty').waitFor();
  });

  test('going offline is shown at once, a silent connection within seconds, and presence is unknown meanwhile', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Lobby');
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    let socket;
    const benPage = await signedIn(ben, `/r/${room}`, {
      beforeLogin: async (page) => {
        socket = await controlWebSocket(page);
      },
    });
    await waitConnected(benPage);
    const annInBensList = benPage.locator(`[data-testid="member"][data-user="${ann.username}"]`);
    await benPage.locator(`[data-testid="member"][data-user="${ann.username}"][data-online="true"]`).waitFor();

    // The browser reports the network gone: the banner says so at once, nobody is shown online.
    await benPage.context().setOffline(true);
    const banner = benPage.getByTestId('connection-banner');
    await banner.waitFor({ timeout: 3_000 });
    assert.equal(await banner.getAttribute('data-state'), 'offline');
    assert.equal(await annInBensList.getAttribute('data-presence'), 'unknown');
    await send(benPage, '#Lobby', 'written offline');
    await messageWith(benPage, 'written offline', 'pending').waitFor();
    await benPage.context().setOffline(false);
    await expectMessage(benPage, 'written offline');
    await banner.waitFor({ state: 'hidden' });
    await expectMessage(annPage, 'written offline');

    // The connection goes silent (half-open: no close, no frames): missed pongs give it up within seconds.
    // The test's silence lets a new socket open at once, so the banner may show for only the
    // reconnect delay (a few hundred ms), shorter than a locator's polling: the page records the
    // first banner it renders, with the presence shown in the same commit.
    await benPage.evaluate((annName) => {
      window.__firstBanner = null;
      const seen = () => {
        const b = document.querySelector('[data-testid="connection-banner"]');
        if (b === null || window.__firstBanner !== null) return;
        const ann = document.querySelector(`[data-testid="member"][data-user="${annName}"]`);
        window.__firstBanner = { at: Date.now(), presence: ann?.getAttribute('data-presence') ?? null };
      };
      new MutationObserver(seen).observe(document.body, { childList: true, subtree: true, attributes: true });
    }, ann.username);
    const silencedAt = Date.now();
    socket.silent = true;
    const first = await (
      await benPage.waitForFunction(() => window.__firstBanner, null, { timeout: DEAD_CONNECTION_BOUND_MS })
    ).jsonValue();
    const noticedAfter = first.at - silencedAt;
    assert.ok(noticedAfter <= DEAD_CONNECTION_BOUND_MS, `noticed after ${noticedAfter} ms`);
    assert.equal(first.presence, 'unknown');
    socket.silent = false;
    await banner.waitFor({ state: 'hidden', timeout: 30_000 });
    await benPage.locator(`[data-testid="member"][data-user="${ann.username}"][data-presence="online"]`).waitFor();
  });

  test('on a phone every control is at least 44 px to tap, and the window title counts unread messages', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Pocket');
    const addBen = await api('POST', `/api/rooms/${room}/members`, ann.token, { username: ben.username });
    assert.ok(addBen.status === 200 || addBen.status === 201, `add ben: ${addBen.status}`);
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    const benPage = await newPage(await newContext({ width: 390, height: 844 }));
    await benPage.goto(h.services.gateway.url);
    await logIn(benPage, ben);
    await waitConnected(benPage);
    await benPage.getByTestId('sidebar').locator(`[data-room="${room}"]`).waitFor();
    assert.equal(await benPage.title(), 'Chat');

    await send(annPage, '#Pocket', 'one for the title');
    await benPage.waitForFunction(() => document.title === '(1) Chat');

    await benPage.getByTestId('sidebar').locator(`[data-room="${room}"]`).click();
    await composer(benPage, '#Pocket').waitFor();
    await expectMessage(benPage, 'one for the title');
    await benPage.waitForFunction(() => document.title === 'Chat');
    await composer(benPage, '#Pocket').fill('ready');
    const small = await benPage.evaluate(() =>
      [...document.querySelectorAll('button, a[href], select, input')]
        .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
        .map((el) => ({ el, box: el.getBoundingClientRect() }))
        .filter(({ box }) => box.width > 0 && (box.height < 44 || box.width < 44))
        .map(({ el, box }) => `${el.tagName} "${(el.textContent ?? '').trim().slice(0, 20)}" ${Math.round(box.width)}×${Math.round(box.height)}`),
    );
    assert.deepEqual(small, [], 'controls under 44 × 44 px');
  });

  test('a conversation with links, code and grouped messages, in dark mode on a desktop and a phone (screenshots)', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Release');
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    const lines = [
      'The **release notes** are up: https://example.com/notes',
      'Run `npm run build` first, then:',
      '```\ncargo build -p chat-gateway\n```',
      '<script>alert(1)</script> stays text, and so does javascript:alert(1)',
    ];
    for (const body of lines) await send(annPage, '#Release', body);
    // Stored, all four (their bodies are shown with markup, so they are counted rather than matched).
    await annPage.locator('[data-testid="message"][data-status="sent"]').nth(lines.length - 1).waitFor();
    const dark = async (viewport) => {
      const page = await newPage(await newContext(viewport, 'dark'));
      await page.goto(`${h.services.gateway.url}/r/${room}`);
      await logIn(page, ben);
      await waitConnected(page);
      await page.getByRole('link', { name: 'https://example.com/notes' }).waitFor();
      return page;
    };
    const desktop = await dark({ width: 1280, height: 800 });
    const link = desktop.getByRole('link', { name: 'https://example.com/notes' });
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await desktop.locator('.message.grouped').count(), lines.length - 1, 'grouped under one name');
    assert.equal(await desktop.locator('[data-testid="message-body"] a').count(), 1, 'one link, no javascript: link');
    assert.equal(await desktop.locator('[data-testid="message-body"] script').count(), 0);
    await desktop.locator('pre code').getByText('cargo build -p chat-gateway').waitFor();
    await desktop.getByText('Beginning of the conversation').waitFor();
    await desktop.screenshot({ path: path.join(screenshotDir, 'chat-dark-desktop.png') });
    const phone = await dark({ width: 390, height: 844 });
    await phone.getByText('Beginning of the conversation').waitFor();
    await phone.screenshot({ path: path.join(screenshotDir, 'chat-dark-phone.png') });
  });

  test('the gateway serves the built client compressed as the request allows', async () => {
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(readFileSync(path.join(distDir, 'index.html'), 'utf8'))?.[1];
    assert.ok(script !== undefined, 'the page names its script');
    const plain = statSync(path.join(distDir, script)).size;
    for (const [accept, encoding, suffix] of [
      ['br, gzip', 'br', '.br'],
      ['gzip', 'gzip', '.gz'],
      ['identity', undefined, ''],
    ]) {
      const { headers, bytes } = await rawGet(`${h.services.gateway.url}${script}`, accept);
      assert.equal(headers['content-encoding'], encoding, accept);
      assert.equal(headers.vary, 'accept-encoding');
      assert.match(headers['cache-control'], /immutable/);
      assert.equal(bytes, statSync(path.join(distDir, `${script}${suffix}`)).size, `${accept}: the precompressed copy`);
    }
    assert.ok(statSync(path.join(distDir, `${script}.br`)).size < plain / 3, 'brotli saves more than two thirds');
    // Chromium asks for it compressed and runs it.
    const page = await newPage(await newContext());
    const response = page.waitForResponse((r) => r.url().endsWith(script));
    await page.goto(h.services.gateway.url);
    assert.ok(['br', 'gzip'].includes((await response).headers()['content-encoding']));
    await page.getByRole('heading', { name: 'Log in' }).waitFor();
  });

  test('a room link opened signed out lands in the room after logging in, in its path and its earlier fragment form', async () => {
    const ann = await newUser('ann');
    const room = await createRoomByApi(ann, 'Shared link');
    for (const link of [`/r/${room}`, `/#/rooms/${room}`]) {
      const page = await signedIn(ann, link);
      await composer(page, '#Shared link').waitFor();
      assert.equal(roomIdOf(page), room, `after logging in from ${link}`);
    }
  });
});
