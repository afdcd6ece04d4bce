/**
 * End-to-end test of the web client in real headless Chromium against the
 * real services: auth-service, history-service and chat-gateway are started
 * here as processes on free ports, each run with its own database, exchange
 * and queue names, and the gateway serves the built client from web/dist.
 *
 * Needs: the three binaries (default <repo>/target/debug, or CHAT_BIN_DIR),
 * a built client in web/dist, MongoDB/FerretDB on 127.0.0.1:27017 and
 * RabbitMQ on 127.0.0.1:5672 (scripts/deps.sh), and Debian's `chromium`
 * (CHROMIUM_PATH overrides /usr/bin/chromium).
 *
 * Run: `npm run e2e` in web/ (builds the client first), or
 * `node web/e2e/chat.e2e.mjs` / `node --test web/e2e/chat.e2e.mjs` with a
 * client already built.
 * Screenshots of the chat view go to docs/screenshots/; service logs to
 * web/e2e/.artifacts/ (printed on failure).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { chromiumArgs, chromiumPath } from './harness.mjs';
import { Service, distDir, freePort, killAllNow, repoDir, sleep, testOnlySigningKey, webDir } from './services.mjs';

const artifactsDir = path.join(webDir, 'e2e', '.artifacts');
const screenshotDir = path.join(repoDir, 'docs', 'screenshots');

/** Unique per run, so the run has a database, exchange and queues of its own. */
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
const names = {
  database: `e2e_web_${tag}`,
  exchange: `e2e_web_${tag}.chat`,
  historyQueue: `e2e_web_${tag}.history`,
  gatewayInstance: `e2e-web-${tag}`,
  // Users and rooms live in the run's own database, so plain names cannot collide.
  room: 'general',
  alice: 'alice',
  bob: 'bob',
};
const password = 'correct horse battery';

const STEP_TIMEOUT = 90_000;
const UI_TIMEOUT = 15_000;
/** Long enough for the client's reconnect backoff after a gateway restart. */
const RECONNECT_TIMEOUT = 45_000;
const RECENT_ON_JOIN = 20;
const CATCH_UP_LIMIT = 5;
/** Access-token lifetime in the token-refresh scenario. */
const SHORT_TTL_SECS = 10;

// ---- processes ------------------------------------------------------------

/** An auth-service on a free port, in the run's database; `vars` add to or override its settings. */
async function authService(name, vars = {}) {
  const port = await freePort();
  return new Service(name, 'auth-service', {
    port,
    vars: {
      AUTH__HTTP__PORT: String(port),
      AUTH__MONGODB__DATABASE: names.database,
      AUTH__AMQP__EXCHANGE: names.exchange,
      AUTH__PASSWORD__BCRYPT_COST: '4',
      // Metrics on a free port of their own, so the two instances never collide.
      AUTH__METRICS__PORT: '0',
      // The committed test-only key, named explicitly (both instances sign with it): without
      // it each would create a key file of its own in the working directory.
      AUTH__JWT__PRIVATE_KEY_PEM: testOnlySigningKey,
      // Several sign-ups from one address, and several logins per user within a minute.
      AUTH__LIMITS__ENABLED: 'false',
      ...vars,
    },
  }, artifactsDir);
}

/**
 * A chat-gateway on a free port in front of `upstreamAuth` and the run's
 * history-service, on the run's exchange, serving the built client.
 */
async function gatewayService(name, upstreamAuth, instanceId, vars = {}) {
  const port = await freePort();
  return new Service(name, 'chat-gateway', {
    port,
    vars: {
      GATEWAY__HTTP__PORT: String(port),
      // Gateways run side by side: each metrics listener on a free port.
      GATEWAY__METRICS__PORT: '0',
      GATEWAY__AMQP__EXCHANGE: names.exchange,
      GATEWAY__AMQP__INSTANCE_ID: instanceId,
      GATEWAY__AUTH__URL: upstreamAuth.url,
      GATEWAY__HISTORY__URL: history.url,
      GATEWAY__WEB__DIR: distDir,
      // The test types and sends faster than a person.
      GATEWAY__LIMITS__MESSAGES_PER_SECOND: '1000',
      GATEWAY__LIMITS__MESSAGE_BURST: '1000',
      ...vars,
    },
  }, artifactsDir);
}

// ---- browser helpers --------------------------------------------------------


/**
 * Installed in every page before the app loads:
 * - keeps a handle on the app's WebSockets so a test can cut one client off
 *   (and keep it off) while the gateway stays up for everyone else, or hold
 *   back its in-band `auth` frames as a frozen tab would;
 * - counts connections, `auth` frames and `authenticated` answers, and
 *   records close codes;
 * - records every state the connection banner shows, to prove no
 *   disconnect was visible;
 * - reports Content-Security-Policy violations to the test.
 */
function testHooks() {
  const Native = window.WebSocket;
  const control = {
    blocked: false,
    dropAuth: false,
    sockets: new Set(),
    opened: 0,
    authSent: 0,
    authenticated: 0,
    closeCodes: [],
    banners: [],
  };
  window.__chatTest = control;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      // A same-origin path that is not a WebSocket: the attempt fails like an unreachable
      // gateway, without breaking the page's Content-Security-Policy.
      super(control.blocked ? String(url).replace('/ws?', '/not-a-socket?') : url, protocols);
      control.sockets.add(this);
      this.addEventListener('open', () => {
        control.opened += 1;
      });
      this.addEventListener('message', (ev) => {
        if (typeof ev.data === 'string' && ev.data.includes('"authenticated"')) control.authenticated += 1;
      });
      this.addEventListener('close', (ev) => {
        control.sockets.delete(this);
        control.closeCodes.push(ev.code);
      });
    }

    send(data) {
      if (typeof data === 'string' && data.startsWith('{"type":"auth"')) {
        if (control.dropAuth) return;
        control.authSent += 1;
      }
      super.send(data);
    }
  };
  new MutationObserver(() => {
    const banner = document.querySelector('[data-testid="connection-banner"]');
    const state = banner === null ? 'none' : (banner.dataset.state ?? 'shown');
    if (control.banners[control.banners.length - 1] !== state) control.banners.push(state);
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__reportCsp?.(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} in ${e.sourceFile}:${e.lineNumber}`);
  });
}

/** The test's view of a page's hooks (see `testHooks`). */
function hooks(page) {
  return page.evaluate(() => {
    const { sockets: _sockets, ...counts } = window.__chatTest;
    return counts;
  });
}

async function cutOff(page) {
  await page.evaluate(() => {
    window.__chatTest.blocked = true;
    for (const socket of window.__chatTest.sockets) socket.close();
  });
}

async function reconnect(page) {
  await page.evaluate(() => {
    window.__chatTest.blocked = false;
  });
}

async function newPage(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport });
  await context.exposeBinding('__reportCsp', (_source, text) => cspViolations.push(text));
  await context.addInitScript(testHooks);
  return watch(await context.newPage());
}

function watch(page) {
  page.setDefaultTimeout(UI_TIMEOUT);
  page.on('pageerror', (e) => pageErrors.push(`${e.name}: ${e.message}`));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return page;
}

async function signUp(page, username, base = gateway.url) {
  await page.goto(base);
  await page.getByRole('link', { name: 'Sign up' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Email').fill(`${username}@example.com`);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByRole('heading', { name: 'Join a room' }).waitFor();
  assert.equal(await page.getByTestId('current-user').textContent(), username);
}

async function logIn(page, username, pass, base = gateway.url) {
  await page.goto(base);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(pass);
  await page.getByRole('button', { name: 'Log in' }).click();
}

async function openRoom(page, room) {
  await page.getByLabel('Room').fill(room);
  await page.getByRole('button', { name: 'Join' }).click();
  await page.getByRole('heading', { name: room, exact: true }).waitFor();
  await waitConnected(page);
}

/** The tokens the browser keeps in its `localStorage` (shared by its tabs). */
async function storedTokens(page) {
  const raw = await page.evaluate(() => window.localStorage.getItem('chat.session'));
  assert.ok(raw !== null, 'a session is stored');
  return JSON.parse(raw).tokens;
}

function refreshWith(service, refreshToken) {
  return fetch(`${service.url}/api/auth/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
}

async function waitConnected(page, timeout = UI_TIMEOUT) {
  await page.getByTestId('connection-banner').waitFor({ state: 'hidden', timeout });
}

function composer(page, room = names.room) {
  return page.getByLabel(`Message #${room}`);
}

async function send(page, body, room = names.room) {
  await composer(page, room).fill(body);
  await composer(page, room).press('Enter');
}

/** The list item of the (single) message whose body is exactly `body`. */
function messageWithBody(page, body) {
  return page.getByTestId('message').filter({ has: page.getByTestId('message-body').getByText(body, { exact: true }) });
}

async function expectMessage(page, body, { author, status = 'sent', timeout = UI_TIMEOUT } = {}) {
  const item = messageWithBody(page, body);
  await item.first().waitFor({ timeout });
  await page.waitForFunction(
    ([text, wanted]) =>
      [...document.querySelectorAll('[data-testid="message"]')].some(
        (el) => el.querySelector('[data-testid="message-body"]')?.textContent === text && el.dataset.status === wanted,
      ),
    [body, status],
    { timeout },
  );
  assert.equal(await item.count(), 1, `"${body}" is shown once`);
  if (author !== undefined) assert.match(await item.textContent(), new RegExp(`^${author}`));
}

/** Every message is settled, shown once, and in id (= time) order. */
async function assertConversationIsClean(page) {
  const items = await page.getByTestId('message').evaluateAll((els) =>
    els.map((el) => ({ id: el.dataset.id ?? null, status: el.dataset.status })),
  );
  assert.ok(items.length > 0);
  assert.deepEqual(
    items.filter((m) => m.status !== 'sent'),
    [],
    'no message left pending or failed',
  );
  const ids = items.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'no message shown twice');
  assert.deepEqual(ids, [...ids].sort(), 'messages in id order');
}

// ---- the run -------------------------------------------------------------------

let auth;
let history;
let gateway;
let browser;
const pageErrors = [];
/** Content-Security-Policy violations reported by any page; the gateway's policy must hold. */
const cspViolations = [];
/** Pages of the two users, kept across steps. */
let alice;
let bob;

before(
  async () => {
    assert.ok(existsSync(path.join(distDir, 'index.html')), `${distDir}/index.html is missing: run \`npm run build\` in web/ first`);
    assert.ok(existsSync(chromiumPath), `${chromiumPath} not found: apt-get install -y chromium`);
    rmSync(artifactsDir, { recursive: true, force: true });
    mkdirSync(artifactsDir, { recursive: true });
    mkdirSync(screenshotDir, { recursive: true });

    auth = await authService('auth-service');
    const historyPort = await freePort();
    history = new Service('history-service', 'history-service', {
      port: historyPort,
      vars: {
        HISTORY__HTTP__PORT: String(historyPort),
        // Any free port for /metrics, so that runs side by side do not collide on 9182.
        HISTORY__METRICS__PORT: '0',
        HISTORY__MONGODB__DATABASE: names.database,
        HISTORY__AMQP__EXCHANGE: names.exchange,
        HISTORY__AMQP__QUEUE: names.historyQueue,
        HISTORY__AUTH__URL: auth.url,
      },
    }, artifactsDir);
    gateway = await gatewayService('chat-gateway', auth, names.gatewayInstance, {
      // Small limits, so that a short test reaches them: the snapshot in `joined`,
      // and how much a rejoin catches up before answering `truncated`.
      GATEWAY__HISTORY__RECENT_ON_JOIN: String(RECENT_ON_JOIN),
      GATEWAY__HISTORY__CATCH_UP_LIMIT: String(CATCH_UP_LIMIT),
    });
    // The others fetch auth-service's signing keys at start, so it goes first.
    await auth.start();
    await Promise.all([history.start(), gateway.start()]);

    // Playwright gives every launch a fresh temporary profile and removes it on close.
    browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
  },
  { timeout: 180_000 },
);

after(
  async () => {
    try {
      await browser?.close();
    } finally {
      await Promise.allSettled([gateway?.stop(), history?.stop(), auth?.stop()]);
      killAllNow();
    }
  },
  { timeout: 60_000 },
);

/**
 * A `step` function for one scenario. Steps build on each other; once one
 * fails the rest would only repeat its failure, so they are skipped. A failure
 * prints the services' logs and saves screenshots of the scenario's pages.
 */
function scenario(services, pages) {
  let failed = false;
  return (name, fn) =>
    it(name, { timeout: STEP_TIMEOUT }, async (t) => {
      if (failed) {
        t.skip('an earlier step failed');
        return;
      }
      try {
        await fn();
      } catch (e) {
        failed = true;
        t.diagnostic(`service logs and failure screenshots are in ${artifactsDir}`);
        for (const s of services()) if (s) console.error(`---- ${s.name} log (tail)\n${s.logTail()}`);
        if (pageErrors.length > 0) console.error(`---- page errors\n${pageErrors.join('\n')}`);
        if (cspViolations.length > 0) console.error(`---- CSP violations\n${cspViolations.join('\n')}`);
        for (const [who, page] of pages()) {
          if (page && !page.isClosed()) {
            await page.screenshot({ path: path.join(artifactsDir, `failure-${who}.png`) }).catch(() => {});
          }
        }
        throw e;
      }
    });
}

describe('web client in a real browser', { timeout: 600_000 }, () => {
  const step = scenario(
    () => [auth, history, gateway],
    () => [
      ['alice', alice],
      ['bob', bob],
    ],
  );

  step('the gateway serves the client', async () => {
    const res = await fetch(`${gateway.url}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    // Everything below runs under the gateway's policy, which forbids inline scripts and styles.
    assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.match(await res.text(), /<div id="root">/);
  });

  step('two people sign up and join the same room', async () => {
    alice = await newPage();
    bob = await newPage();
    await signUp(alice, names.alice);
    await signUp(bob, names.bob);
    await openRoom(alice, names.room);
    await openRoom(bob, names.room);
    await alice.getByTestId('member-list').getByText(names.bob, { exact: true }).waitFor();
    await bob.getByTestId('member-list').getByText(names.alice, { exact: true }).waitFor();
  });

  step('messages go both ways and each sees the other’s', async () => {
    await send(alice, 'Hello from Alice');
    await expectMessage(alice, 'Hello from Alice', { author: names.alice });
    await expectMessage(bob, 'Hello from Alice', { author: names.alice });

    await bob.getByLabel(`Message #${names.room}`).pressSequentially('Hi Alice');
    await alice.getByTestId('typing-indicator').getByText(`${names.bob} is typing…`).waitFor();
    await bob.getByLabel(`Message #${names.room}`).press('Enter');
    await expectMessage(bob, 'Hi Alice', { author: names.bob });
    await expectMessage(alice, 'Hi Alice', { author: names.bob });

    await send(alice, 'line one\nline two');
    await expectMessage(bob, 'line one\nline two', { author: names.alice });
  });

  step('a reload keeps the conversation', async () => {
    await bob.reload();
    await bob.getByRole('heading', { name: names.room, exact: true }).waitFor();
    await waitConnected(bob);
    for (const body of ['Hello from Alice', 'Hi Alice', 'line one\nline two']) await expectMessage(bob, body);
    const bodies = await bob.getByTestId('message-body').allTextContents();
    assert.deepEqual(bodies, ['Hello from Alice', 'Hi Alice', 'line one\nline two'], 'in order, once each');
  });

  step('a gateway restart shows the banner, then the client reconnects and can send again', async () => {
    await gateway.stop();
    for (const page of [alice, bob]) {
      await page.getByTestId('connection-banner').getByText('Disconnected').waitFor();
    }
    // Written while the gateway is down: stays pending and goes out after the reconnect.
    await send(alice, 'Sent during the outage');
    await alice.locator('[data-testid="message"][data-status="pending"]').waitFor();

    await gateway.start();
    await waitConnected(alice, RECONNECT_TIMEOUT);
    await waitConnected(bob, RECONNECT_TIMEOUT);

    await expectMessage(bob, 'Sent during the outage', { author: names.alice, timeout: RECONNECT_TIMEOUT });
    await expectMessage(alice, 'Sent during the outage', { author: names.alice, timeout: RECONNECT_TIMEOUT });
    await send(bob, 'Back again');
    await expectMessage(alice, 'Back again', { author: names.bob });
    await expectMessage(bob, 'Back again', { author: names.bob });
    for (const page of [alice, bob]) {
      for (const body of ['Hello from Alice', 'Hi Alice']) assert.equal(await messageWithBody(page, body).count(), 1);
    }
  });

  step('a message body is shown as text, never run as HTML', async () => {
    const payload = '<img src=x onerror="window.__xss=1">';
    await send(alice, payload);
    await expectMessage(bob, payload, { author: names.alice });
    await expectMessage(alice, payload, { author: names.alice });
    for (const page of [alice, bob]) {
      assert.equal(await page.evaluate(() => window.__xss), undefined);
      assert.equal(await page.getByTestId('message-list').locator('img').count(), 0);
    }
  });

  step('a wrong password is refused with a clear message', async () => {
    const page = await newPage();
    await logIn(page, names.bob, 'not the password');
    await page.getByRole('alert').getByText('Wrong username or password.').waitFor();
    assert.equal(await page.getByTestId('current-user').count(), 0);
    await page.context().close();
  });

  step('the room picker remembers recent rooms', async () => {
    await alice.getByRole('link', { name: 'Rooms' }).click();
    await alice.getByRole('heading', { name: 'Join a room' }).waitFor();
    await alice.getByRole('link', { name: `#${names.room}` }).click();
    await alice.getByRole('heading', { name: names.room, exact: true }).waitFor();
    await waitConnected(alice);
    await expectMessage(alice, 'Back again');
  });

  step('screenshots of the chat view at desktop and phone width', async () => {
    await alice.setViewportSize({ width: 1280, height: 800 });
    await expectMessage(alice, 'Back again');
    await alice.screenshot({ path: path.join(screenshotDir, 'chat-desktop.png') });

    const phone = await newPage({ width: 390, height: 844 });
    await logIn(phone, names.bob, password);
    await phone.getByRole('heading', { name: 'Join a room' }).waitFor();
    await openRoom(phone, names.room);
    await expectMessage(phone, 'Back again');
    // The phone layout has no room for the member sidebar; it sits behind a toggle.
    assert.equal(await phone.getByTestId('member-list').isVisible(), false);
    await phone.screenshot({ path: path.join(screenshotDir, 'chat-phone.png') });
    await phone.context().close();
  });

  step('a client cut off for a while catches up on everything it missed, once', async () => {
    await cutOff(bob);
    await bob.getByTestId('connection-banner').getByText('Disconnected').waitFor();
    const missed = Array.from({ length: CATCH_UP_LIMIT + 3 }, (_, i) => `Missed ${i + 1}`);
    for (const body of missed) await send(alice, body);
    for (const body of missed) await expectMessage(alice, body);

    await reconnect(bob);
    await waitConnected(bob, RECONNECT_TIMEOUT);
    // More were missed than the rejoin catches up at once; the client pages in the rest.
    for (const body of missed) await expectMessage(bob, body);
    await send(bob, 'Caught up');
    await expectMessage(alice, 'Caught up');
    await assertConversationIsClean(bob);
    await assertConversationIsClean(alice);
  });

  step('scrolling up loads older history', async () => {
    for (let i = 1; i <= RECENT_ON_JOIN; i += 1) await send(alice, `Filler ${i}`);
    await expectMessage(bob, `Filler ${RECENT_ON_JOIN}`);
    await bob.reload();
    await waitConnected(bob);
    await expectMessage(bob, `Filler ${RECENT_ON_JOIN}`);
    const list = bob.getByTestId('message-list');
    await list.getByRole('button', { name: 'Load older messages' }).waitFor();
    assert.equal(await messageWithBody(bob, 'Hello from Alice').count(), 0, 'the first message is not in the snapshot');

    await list.evaluate((el) => {
      el.scrollTop = 0;
    });
    await expectMessage(bob, 'Hello from Alice');
    await list.getByText('Beginning of the conversation').waitFor();
    await assertConversationIsClean(bob);
    assert.deepEqual(
      await bob.getByTestId('message-body').allTextContents(),
      await alice.getByTestId('message-body').allTextContents(),
      'both see the same conversation',
    );
  });

  step('logging out ends the session', async () => {
    const { refreshToken } = await storedTokens(alice);
    const loggedOut = alice.waitForResponse((r) => r.url().endsWith('/api/auth/logout'));
    await alice.getByRole('button', { name: 'Log out' }).click();
    await alice.getByRole('heading', { name: 'Log in' }).waitFor();
    assert.equal((await loggedOut).status(), 204);
    assert.equal((await refreshWith(gateway, refreshToken)).status, 401, 'the session is revoked on the server');
    await alice.reload();
    await alice.getByRole('heading', { name: 'Log in' }).waitFor();
    assert.equal(await alice.getByTestId('current-user').count(), 0);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
    assert.deepEqual(cspViolations, [], 'no Content-Security-Policy violations');
  });
});

describe('silent token refresh with short-lived access tokens', { timeout: 300_000 }, () => {
  // A second auth-service that issues short-lived access tokens, and a gateway in front of it;
  // same database, exchange and history-service as above.
  let shortAuth;
  let shortGateway;
  let carol;
  let dave;
  const room = 'refresh';
  const ttlMs = SHORT_TTL_SECS * 1000;

  before(
    async () => {
      shortAuth = await authService('auth-service-short-ttl', { AUTH__JWT__ACCESS_TTL_SECS: String(SHORT_TTL_SECS) });
      shortGateway = await gatewayService('chat-gateway-short-ttl', shortAuth, `${names.gatewayInstance}-short-ttl`);
      await shortAuth.start();
      await shortGateway.start();
    },
    { timeout: 120_000 },
  );

  after(
    async () => {
      await Promise.allSettled([carol?.context().close(), dave?.context().close()]);
      await Promise.allSettled([shortGateway?.stop(), shortAuth?.stop()]);
    },
    { timeout: 60_000 },
  );

  const step = scenario(
    () => [shortAuth, history, shortGateway],
    () => [
      ['carol', carol],
      ['dave', dave],
    ],
  );

  step('two people sign in with short-lived access tokens and chat', async () => {
    carol = await newPage();
    dave = await newPage();
    await signUp(carol, 'carol', shortGateway.url);
    await signUp(dave, 'dave', shortGateway.url);
    assert.equal((await storedTokens(carol)).accessLifetimeMs, ttlMs);
    await openRoom(carol, room);
    await openRoom(dave, room);
    await send(carol, 'Hi Dave', room);
    await expectMessage(dave, 'Hi Dave', { author: 'carol' });
  });

  step('tokens are renewed in place: the chat keeps working past several expiries without a visible disconnect', async () => {
    const first = await storedTokens(carol);
    for (const page of [carol, dave]) {
      await page.evaluate(() => {
        window.__chatTest.banners = [];
      });
    }
    // Two and a half lifetimes of chatting: each page's first token expired twice over.
    const until = Date.now() + 2.5 * ttlMs;
    for (let i = 1; Date.now() < until; i += 1) {
      await send(carol, `Carol ${i}`, room);
      await expectMessage(dave, `Carol ${i}`, { author: 'carol' });
      await expectMessage(carol, `Carol ${i}`, { author: 'carol' });
      await send(dave, `Dave ${i}`, room);
      await expectMessage(carol, `Dave ${i}`, { author: 'dave' });
      await expectMessage(dave, `Dave ${i}`, { author: 'dave' });
      await sleep(2_000);
    }
    for (const [who, page] of [
      ['carol', carol],
      ['dave', dave],
    ]) {
      const h = await hooks(page);
      assert.equal(h.opened, 1, `${who} kept the connection it opened first`);
      assert.deepEqual(h.closeCodes, [], `${who}'s connection never closed`);
      assert.ok(h.authSent >= 2, `${who} sent fresh tokens in-band (${h.authSent})`);
      assert.equal(h.authenticated, h.authSent, `the gateway accepted each of ${who}'s tokens`);
      assert.deepEqual(
        h.banners.filter((b) => b !== 'none'),
        [],
        `no connection banner was shown to ${who}`,
      );
      await assertConversationIsClean(page);
    }
    const now = await storedTokens(carol);
    assert.notEqual(now.accessToken, first.accessToken, 'the stored access token was renewed');
    assert.notEqual(now.refreshToken, first.refreshToken, 'the stored refresh token was rotated');
    assert.ok(now.accessExpiresAt > Date.now(), 'the stored access token is current');
  });

  step('a reload after the first tokens expired signs back in silently', async () => {
    await dave.reload();
    await dave.getByRole('heading', { name: room, exact: true }).waitFor();
    await waitConnected(dave);
    await expectMessage(dave, 'Hi Dave', { author: 'carol' });
    await send(dave, 'Reloaded', room);
    await expectMessage(carol, 'Reloaded', { author: 'dave' });
  });

  step('a connection whose token ran out is closed by the gateway, then renewed and reopened', async () => {
    // A frozen tab: the token is refreshed, but the live connection never hears of it.
    await carol.evaluate(() => {
      window.__chatTest.dropAuth = true;
    });
    await carol.waitForFunction(() => window.__chatTest.closeCodes.includes(4001), null, { timeout: 3 * ttlMs });
    await carol.evaluate(() => {
      window.__chatTest.dropAuth = false;
    });
    await waitConnected(carol);
    assert.equal((await hooks(carol)).opened, 2, 'one new connection');
    await send(dave, 'After the lapse', room);
    await expectMessage(carol, 'After the lapse', { author: 'dave' });
    await send(carol, 'Back in', room);
    await expectMessage(dave, 'Back in', { author: 'carol' });
    await assertConversationIsClean(carol);
  });

  step('tabs of one browser share the session, and two tabs refreshing at the same moment present the refresh token once', async () => {
    const context = carol.context();
    // Both new tabs start from an access token that has already expired, so each refreshes as it opens.
    await carol.evaluate(() => {
      const session = JSON.parse(window.localStorage.getItem('chat.session'));
      session.tokens.accessExpiresAt = Date.now() - 1_000;
      window.localStorage.setItem('chat.session', JSON.stringify(session));
    });
    const tabs = [watch(await context.newPage()), watch(await context.newPage())];
    const refreshes = [];
    for (const tab of tabs) {
      tab.on('request', (r) => {
        if (r.url().endsWith('/api/auth/refresh')) refreshes.push(r.url());
      });
    }
    await Promise.all(tabs.map((tab) => tab.goto(`${shortGateway.url}/r/${room}`)));
    for (const tab of tabs) {
      // Signed in without a log-in form: the session is the browser's.
      await tab.getByRole('heading', { name: room, exact: true }).waitFor();
      assert.equal(await tab.getByTestId('current-user').textContent(), 'carol');
      await waitConnected(tab);
    }
    assert.ok(refreshes.length <= 1, `one refresh for both tabs (${refreshes.length})`);

    // The session goes on through the next refreshes, in every tab.
    const { refreshToken } = await storedTokens(carol);
    await carol.waitForFunction(
      (before) => JSON.parse(window.localStorage.getItem('chat.session') ?? '{}').tokens?.refreshToken !== before,
      refreshToken,
      { timeout: ttlMs + UI_TIMEOUT },
    );
    await sleep(ttlMs);
    for (const [i, page] of [carol, ...tabs].entries()) {
      assert.equal(await page.getByTestId('current-user').textContent(), 'carol', `tab ${i} is still signed in`);
      await send(page, `Still signed in ${i}`, room);
      await expectMessage(dave, `Still signed in ${i}`, { author: 'carol' });
    }
    await Promise.all(tabs.map((tab) => tab.close()));
  });

  step('a session revoked elsewhere ends at the next refresh with a clear message', async () => {
    const { refreshToken } = await storedTokens(dave);
    const res = await fetch(`${shortGateway.url}/api/auth/logout`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refresh_token: refreshToken }),
    });
    assert.equal(res.status, 204);
    await dave.getByRole('heading', { name: 'Log in' }).waitFor({ timeout: ttlMs + UI_TIMEOUT });
    await dave.getByText('Your session has ended. Please log in again.').waitFor();
    assert.equal(await dave.getByTestId('current-user').count(), 0);
  });

  step('no page broke the Content-Security-Policy or threw', async () => {
    assert.deepEqual(cspViolations, [], 'no Content-Security-Policy violations');
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  });
});
