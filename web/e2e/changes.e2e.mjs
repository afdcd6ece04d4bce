/**
 * End-to-end test of messages that change (docs/protocol.md, "Changing messages") in the
 * web client: replies, edits, deletion and reactions between two users on two gateways,
 * live and after one of them was away, in real headless Chromium against the real
 * services (started by ./services.mjs, plus a second gateway on the same broker).
 *
 * Needs what chat.e2e.mjs needs: the three binaries, a built client in web/dist,
 * MongoDB/FerretDB and RabbitMQ (scripts/deps.sh), and Debian's `chromium`
 * (CHROMIUM_PATH overrides /usr/bin/chromium).
 *
 * Run: `npm run e2e` in web/, or `node --test web/e2e/changes.e2e.mjs` with a client
 * already built. Screenshots go to docs/screenshots/; service logs to
 * web/e2e/.artifacts/changes/ (printed on failure).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe } from 'node:test';
import { UI_TIMEOUT, browserHarness, password, screenshotDir } from './harness.mjs';
import { Service, freePort, startServices } from './services.mjs';

const TEST_TIMEOUT = 180_000;
/** Filler messages between the question and the end, so the question scrolls out of view. */
const FILLERS = 14;

/** A second gateway on the same broker, database and auth-service. */
let gateway2;

const h = browserHarness({
  name: 'changes',
  testTimeout: TEST_TIMEOUT,
  start: async (harness) => {
    const services = await startServices({ prefix: 'e2e_changes', logDir: harness.artifactsDir });
    const port = await freePort();
    gateway2 = new Service(
      'chat-gateway-2',
      'chat-gateway',
      {
        port,
        vars: {
          ...services.gateway.env.vars,
          GATEWAY__HTTP__PORT: String(port),
          GATEWAY__AMQP__INSTANCE_ID: `${services.names.gatewayInstance}-2`,
        },
      },
      harness.artifactsDir,
    );
    harness.extra.push(gateway2);
    await gateway2.start();
    return services;
  },
});
const { test, api, newUser } = h;

// ---- pages ----------------------------------------------------------------------

/** A new tab (its own session) of `user` on `gateway`, in room `room`. */
async function signedIn(user, gateway, room, viewport = { width: 1100, height: 700 }) {
  const page = await h.newPage({ viewport });
  const sent = [];
  page.on('websocket', (ws) => ws.on('framesent', (f) => typeof f.payload === 'string' && sent.push(JSON.parse(f.payload))));
  await page.goto(`${gateway.url}/r/${encodeURIComponent(room)}`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('current-user').waitFor();
  await page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
  return { page, sent };
}

function composer(page) {
  return page.getByTestId('composer').locator('textarea');
}

async function send(page, body) {
  await composer(page).fill(body);
  await composer(page).press('Enter');
  await message(page, body).waitFor();
}

/** The stored message whose body (or, with `deleted`, whose id) is given. */
function message(page, body) {
  return page
    .locator('[data-testid="message"][data-status="sent"]')
    .filter({ has: page.getByTestId('message-body').getByText(body, { exact: true }) })
    .first();
}

function byId(page, id) {
  return page.locator(`[data-testid="message"][data-id="${id}"]`);
}

/** Waits until `locator`'s text matches `expected` (a string or a RegExp). */
async function waitText(locator, expected) {
  await locator.waitFor();
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    const text = (await locator.textContent()) ?? '';
    if (typeof expected === 'string' ? text.includes(expected) : expected.test(text)) return;
    if (Date.now() > deadline) assert.fail(`expected ${expected} in ${JSON.stringify(text)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The reaction `emoji` under message `id`: its count and whether it is pressed. */
async function reaction(page, id, emoji) {
  // Read in one go in the page: the button may go away between two separate reads.
  return page.evaluate(
    ([messageId, e]) => {
      const button = document.querySelector(`[data-testid="message"][data-id="${messageId}"] [data-testid="reaction"][data-emoji="${e}"]`);
      if (button === null) return null;
      return { count: Number(button.querySelector('.reaction-count')?.textContent), mine: button.getAttribute('aria-pressed') === 'true' };
    },
    [id, emoji],
  );
}

async function waitReaction(page, id, emoji, expected) {
  const deadline = Date.now() + UI_TIMEOUT;
  for (;;) {
    const got = await reaction(page, id, emoji);
    if (JSON.stringify(got) === JSON.stringify(expected)) return;
    if (Date.now() > deadline) assert.fail(`reaction ${emoji} on ${id}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether message `id` is within the visible part of the message list. */
async function inView(page, id) {
  return page.evaluate((messageId) => {
    const list = document.querySelector('[data-testid="message-list"]');
    const el = document.querySelector(`[data-testid="message"][data-id="${messageId}"]`);
    if (list === null || el === null) return false;
    const a = list.getBoundingClientRect();
    const b = el.getBoundingClientRect();
    return b.top >= a.top - 1 && b.bottom <= a.bottom + 1;
  }, id);
}

// ---- the test ----------------------------------------------------------------------

describe('messages that change, in a real browser', { timeout: 600_000 }, () => {
  test('replies, edits, deletions and reactions reach the other gateway live and after a reconnect', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const created = await api('POST', '/api/rooms', ann.token, { kind: 'public', name: 'Changes', topic: '' });
    assert.equal(created.status, 201);
    const room = (await created.json()).id;
    const added = await api('POST', `/api/rooms/${encodeURIComponent(room)}/members`, ann.token, { username: ben.username });
    assert.ok(added.status === 200 || added.status === 201, `add ${ben.username}: ${added.status}`);

    const { page: a } = await signedIn(ann, h.services.gateway, room);
    const { page: b, sent: bSent } = await signedIn(ben, gateway2, room);

    // Ann writes; Ben replies to the first message, with its quote above his composer.
    await send(a, 'What time is the meeting?');
    await send(a, 'This one will be deleted');
    for (let i = 1; i <= FILLERS; i += 1) await send(a, `filler ${i}`);
    const question = await message(a, 'What time is the meeting?').getAttribute('data-id');
    const doomed = await message(a, 'This one will be deleted').getAttribute('data-id');
    await message(b, `filler ${FILLERS}`).waitFor();
    await message(b, 'What time is the meeting?').hover();
    await byId(b, question).getByRole('button', { name: `Reply to ${ann.username}` }).click();
    await waitText(b.getByTestId('composer-reply'), 'What time is the meeting?');
    await composer(b).fill('At three');
    await composer(b).press('Enter');
    const replyOnA = message(a, 'At three');
    await replyOnA.waitFor();
    await waitText(replyOnA.getByTestId('reply-quote'), `${ann.username} What time is the meeting?`);
    await waitText(message(b, 'At three').getByTestId('reply-quote'), 'What time is the meeting?');
    assert.equal(await b.getByTestId('composer-reply').count(), 0, 'the reply quote leaves the composer once sent');

    // The quote scrolls to the original and highlights it.
    assert.equal(await inView(a, question), false, 'the question is out of view before the quote is clicked');
    await replyOnA.getByTestId('reply-quote').click();
    await a.locator(`[data-testid="message"][data-id="${question}"].highlighted`).waitFor();
    await a.waitForFunction(
      (id) => {
        const list = document.querySelector('[data-testid="message-list"]').getBoundingClientRect();
        const el = document.querySelector(`[data-testid="message"][data-id="${id}"]`).getBoundingClientRect();
        return el.top >= list.top - 1 && el.bottom <= list.bottom + 1;
      },
      question,
    );

    // ↑ in the empty composer edits Ann's last message; Escape cancels.
    await composer(a).click();
    await composer(a).press('ArrowUp');
    const editLast = a.getByTestId('edit-input');
    assert.equal(await editLast.inputValue(), `filler ${FILLERS}`);
    await editLast.press('Escape');
    await editLast.waitFor({ state: 'detached' });

    // Ann edits the question; Ben sees the new text and "(edited)".
    await byId(a, question).hover();
    await byId(a, question).getByRole('button', { name: 'Edit your message' }).click();
    await a.getByTestId('edit-input').fill('What time is the meeting tomorrow?');
    await a.getByTestId('edit-input').press('Enter');
    await waitText(byId(b, question).getByTestId('message-body'), 'What time is the meeting tomorrow?');
    await byId(b, question).getByTestId('edited').waitFor();
    assert.equal(await byId(b, question).getByRole('button', { name: 'Edit your message' }).count(), 0, 'Ben cannot edit Ann’s message');

    // Ben reacts; Ann sees the count, Ben sees it as his.
    await byId(b, question).hover();
    await byId(b, question).getByRole('button', { name: 'Add a reaction' }).click();
    await b.getByRole('button', { name: 'React with 👍' }).click();
    await waitReaction(a, question, '👍', { count: 1, mine: false });
    await waitReaction(b, question, '👍', { count: 1, mine: true });
    await a.screenshot({ path: path.join(screenshotDir, 'changes-desktop.png') });

    // Ben's connection goes away; meanwhile Ann edits again, deletes a message and reacts.
    await b.context().setOffline(true);
    await b.getByTestId('connection-banner').waitFor();
    await byId(a, question).hover();
    await byId(a, question).getByRole('button', { name: 'Edit your message' }).click();
    await a.getByTestId('edit-input').fill('Meeting moved to Friday');
    await a.getByTestId('edit-input').press('Enter');
    await waitText(byId(a, question).getByTestId('message-body'), 'Meeting moved to Friday');
    await byId(a, doomed).hover();
    await byId(a, doomed).getByRole('button', { name: 'Delete your message' }).click();
    await a.getByRole('alertdialog', { name: 'Delete message' }).getByRole('button', { name: 'Delete' }).click();
    await byId(a, doomed).getByTestId('tombstone').waitFor();
    await byId(a, question).hover();
    await byId(a, question).getByRole('button', { name: 'Add a reaction' }).click();
    await a.getByRole('button', { name: 'React with 🎉' }).click();
    await waitReaction(a, question, '🎉', { count: 1, mine: true });
    // Clicking a reaction toggles it: Ann adds her 👍 to Ben's and takes it back.
    await byId(a, question).locator('[data-testid="reaction"][data-emoji="👍"]').click();
    await waitReaction(a, question, '👍', { count: 2, mine: true });
    await byId(a, question).locator('[data-testid="reaction"][data-emoji="👍"]').click();
    await waitReaction(a, question, '👍', { count: 1, mine: false });
    assert.equal(await byId(b, question).getByTestId('message-body').textContent(), 'What time is the meeting tomorrow?', 'Ben was away');

    // Ben comes back: without a reload he sees the final state.
    const sentBefore = bSent.length;
    await b.context().setOffline(false);
    await b.getByTestId('connection-banner').waitFor({ state: 'hidden', timeout: 30_000 });
    await waitText(byId(b, question).getByTestId('message-body'), 'Meeting moved to Friday');
    await byId(b, doomed).getByTestId('tombstone').waitFor();
    assert.equal(await byId(b, doomed).getByTestId('message-body').count(), 0, 'the deleted body is gone');
    await waitText(message(b, 'At three').getByTestId('reply-quote'), `${ann.username} Meeting moved to Friday`);
    await waitReaction(b, question, '🎉', { count: 1, mine: false });
    await waitReaction(b, question, '👍', { count: 1, mine: true });
    const rejoin = bSent.slice(sentBefore).find((f) => f.type === 'join' && f.room === room);
    assert.ok(rejoin?.since !== undefined && typeof rejoin.changes_since === 'string', `the rejoin carries since and changes_since: ${JSON.stringify(rejoin)}`);

    // Ben takes his reaction back; Ann sees it go.
    await byId(b, question).locator('[data-testid="reaction"][data-emoji="👍"]').click();
    await waitReaction(a, question, '👍', null);
    // Tall enough to show the whole conversation: the edited question, the tombstone and the reply.
    await b.setViewportSize({ width: 1100, height: 1250 });
    await b.screenshot({ path: path.join(screenshotDir, 'changes-reconnected.png') });
  });

  test('on a phone a tapped message shows its actions, each at least 44 px to tap', async () => {
    const cat = await newUser('cat');
    const created = await api('POST', '/api/rooms', cat.token, { kind: 'public', name: 'Phone', topic: '' });
    const room = (await created.json()).id;
    const { page } = await signedIn(cat, h.services.gateway, room, { width: 390, height: 740 });
    await send(page, 'tap targets');
    const row = message(page, 'tap targets').locator('.message-actions');
    assert.ok(((await row.boundingBox())?.height ?? 0) <= 1, 'the actions are out of sight until the message is tapped');
    await message(page, 'tap targets').getByTestId('message-body').click();
    const actions = message(page, 'tap targets').getByRole('button');
    const n = await actions.count();
    assert.ok(n >= 4, `reply, react, edit and delete: ${n}`);
    for (let i = 0; i < n; i += 1) {
      const box = await actions.nth(i).boundingBox();
      assert.ok(box !== null && box.height >= 44 && box.width >= 44, `button ${i} is at least 44 × 44: ${JSON.stringify(box)}`);
    }
  });
});
