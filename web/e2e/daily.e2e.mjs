/**
 * End-to-end test of the client's daily-use helpers, in real headless Chromium against the
 * real services (./services.mjs, through ./harness.mjs): the "New messages" divider, @mention
 * autocomplete and highlight, and desktop notifications. Each test signs up users of its own.
 *
 * Headless Chromium shows no notifications: the test grants the permission to the context and
 * records every `new Notification(…)` by wrapping `window.Notification` in an init script.
 *
 * Needs what chat.e2e.mjs needs: the three binaries, a built client in web/dist,
 * MongoDB/FerretDB and RabbitMQ (scripts/deps.sh), and Debian's `chromium`
 * (CHROMIUM_PATH overrides /usr/bin/chromium).
 *
 * Run: `npm run e2e` in web/, or `node --test web/e2e/daily.e2e.mjs` with a client already
 * built. Service logs go to web/e2e/.artifacts/daily/ (printed on failure).
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import { browserHarness, password } from './harness.mjs';
import { startServices } from './services.mjs';

const TEST_TIMEOUT = 120_000;

const h = browserHarness({
  name: 'daily',
  testTimeout: TEST_TIMEOUT,
  start: (harness) => startServices({ prefix: 'e2e_daily', logDir: harness.artifactsDir }),
});
const { test, api, newUser } = h;

// ---- the API ----------------------------------------------------------------------

async function createRoomByApi(owner, name) {
  const res = await api('POST', '/api/rooms', owner.token, { kind: 'public', name, topic: '' });
  assert.equal(res.status, 201, `create room ${name}`);
  return (await res.json()).id;
}

async function addMemberByApi(adder, room, user) {
  const res = await api('POST', `/api/rooms/${encodeURIComponent(room)}/members`, adder.token, { username: user.username });
  assert.ok(res.status === 201 || res.status === 200, `add ${user.username} to ${room}: ${res.status}`);
}

async function roomViewOf(user, room) {
  const list = await (await api('GET', '/api/rooms', user.token)).json();
  return list.rooms.find((r) => r.id === room);
}

/** Waits until `check` of `user`'s view of `room` holds (read markers are written within a second). */
async function untilView(user, room, check, what) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const view = await roomViewOf(user, room);
    if (view !== undefined && check(view)) return view;
    assert.ok(Date.now() < deadline, `${what}: ${JSON.stringify(view)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---- pages ----------------------------------------------------------------------

/** Records each notification the page creates, in `window.__notifications`, and keeps the last one. */
function recordNotifications() {
  const Real = window.Notification;
  window.__notifications = [];
  window.Notification = class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__notifications.push({ title, body: options.body, tag: options.tag });
      window.__lastNotification = this;
    }
  };
}

/** A new tab (its own session, or `context`) signed in as `user` at `urlPath`; `watch(page)` runs before it loads. */
async function signedIn(user, urlPath = '/', context = undefined, watch = () => {}) {
  const page = await h.newPage({ context });
  watch(page);
  await page.goto(`${h.services.gateway.url}${urlPath}`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('current-user').waitFor();
  await page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
  return page;
}

function sidebarLink(page, room) {
  return page.getByTestId('sidebar').locator(`[data-testid="room-link"][data-room="${room}"]`);
}

function composer(page) {
  return page.getByTestId('composer').locator('textarea');
}

function message(page, body) {
  return page
    .locator('[data-testid="message"][data-status="sent"]')
    .filter({ has: page.getByTestId('message-body').getByText(body, { exact: true }) });
}

async function send(page, body) {
  await composer(page).fill(body);
  await composer(page).press('Enter');
  await message(page, body).waitFor();
}

/** The body of the message right after the divider. */
function bodyAfterDivider(page) {
  return page.evaluate(() => {
    const divider = document.querySelector('[role="separator"][aria-label="New messages"]');
    return divider?.closest('li')?.nextElementSibling?.querySelector('[data-testid="message-body"]')?.textContent ?? null;
  });
}

// ---- the tests ----------------------------------------------------------------------

describe('daily-use helpers in a real browser', { timeout: 600_000 }, () => {
  test('opening a room shows "New messages" above the first unread message, and it stays while the room is read', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Standup');
    await addMemberByApi(ann, room, ben);
    const annPage = await signedIn(ann, `/r/${room}`);
    const benPage = await signedIn(ben, `/r/${room}`);

    // Ben reads the first message where it arrives, then goes back to his rooms.
    await send(annPage, 'Yesterday: the release notes');
    await message(benPage, 'Yesterday: the release notes').waitFor();
    await untilView(ben, room, (v) => v.unread === 0 && v.read_id !== null, 'the first message is read');
    assert.equal(await benPage.getByRole('separator', { name: 'New messages' }).count(), 0, 'nothing was unread when he opened it');
    await benPage.getByRole('link', { name: 'Rooms' }).first().click();
    await benPage.getByTestId('message-list').waitFor({ state: 'detached' });

    await send(annPage, 'Today: the migration');
    await send(annPage, 'Blocked: nothing');
    await sidebarLink(benPage, room).getByTestId('unread-badge').waitFor();

    // He opens the room: the divider sits right above the first of the two.
    await sidebarLink(benPage, room).click();
    await message(benPage, 'Blocked: nothing').waitFor();
    const divider = benPage.getByRole('separator', { name: 'New messages' });
    await divider.waitFor();
    assert.equal(await bodyAfterDivider(benPage), 'Today: the migration');

    // Being on screen marks them read; the divider does not move while the room stays open.
    await untilView(ben, room, (v) => v.unread === 0, 'the new messages are read');
    await send(annPage, 'One more thing');
    await message(benPage, 'One more thing').waitFor();
    assert.equal(await divider.count(), 1);
    assert.equal(await bodyAfterDivider(benPage), 'Today: the migration');

    // Opened again with nothing unread: no divider.
    await benPage.getByRole('link', { name: 'Rooms' }).first().click();
    await benPage.getByTestId('message-list').waitFor({ state: 'detached' });
    await sidebarLink(benPage, room).click();
    await message(benPage, 'One more thing').waitFor();
    assert.equal(await divider.count(), 0, 'no divider when nothing was unread');
  });

  test('@ in the send box offers the members, puts the chosen one in, and the mentioned user sees the message highlighted', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'Review');
    await addMemberByApi(ann, room, ben);
    const benPage = await signedIn(ben, `/r/${room}`);
    const annPage = await signedIn(ann, `/r/${room}`);
    await annPage.getByTestId('member-list').locator(`[data-user="${ben.username}"]`).waitFor();

    // Typing a prefix offers Ben (and not Ann herself); the keyboard picks him.
    await composer(annPage).click();
    await composer(annPage).pressSequentially(`please review, @${ben.username.slice(0, 2)}`);
    const offered = annPage.getByRole('listbox', { name: 'Members to mention' }).getByRole('option');
    await offered.first().waitFor();
    assert.deepEqual(await offered.allTextContents(), [`@${ben.username}`]);
    await composer(annPage).press('Enter');
    assert.equal(await composer(annPage).inputValue(), `please review, @${ben.username} `);
    assert.equal(await annPage.getByRole('listbox').count(), 0, 'the list closes');

    // A second mention, chosen with the mouse.
    await composer(annPage).pressSequentially('and @');
    await annPage.getByRole('option', { name: `@${ben.username}` }).click();
    const body = `please review, @${ben.username} and @${ben.username}`;
    assert.equal(await composer(annPage).inputValue(), `${body} `);
    await composer(annPage).press('Enter');
    await message(annPage, body).waitFor();

    // Ben sees it highlighted, each mention a span of its own; Ann's own copy is not highlighted.
    const seen = message(benPage, body);
    await seen.waitFor();
    assert.equal(await seen.getAttribute('data-mentioned'), 'true');
    assert.match(await seen.getAttribute('class'), /\bmentioned\b/);
    const spans = seen.getByTestId('mention');
    assert.equal(await spans.count(), 2);
    assert.equal(await spans.first().evaluate((el) => el.tagName), 'SPAN');
    assert.equal(await spans.first().getAttribute('data-me'), 'true');
    assert.equal(await message(annPage, body).getAttribute('data-mentioned'), null);
  });

  test('a DM message notifies while the DM is not on screen, and clicking the notification opens it', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const benContext = await h.newContext({ initScript: recordNotifications });
    await benContext.grantPermissions(['notifications'], { origin: h.services.gateway.url });
    const joined = [];
    const benPage = await signedIn(ben, '/', benContext, (page) =>
      page.on('websocket', (ws) =>
        ws.on('framereceived', (f) => {
          if (typeof f.payload !== 'string') return;
          const frame = JSON.parse(f.payload);
          if (frame.type === 'joined') joined.push(frame.room);
        }),
      ),
    );

    // Nothing is asked or shown before Ben turns them on.
    await benPage.getByRole('button', { name: 'Enable notifications' }).click();
    await benPage.getByRole('button', { name: 'Turn off notifications' }).waitFor();

    // Ann opens a DM with him; his client lists and joins it in the background.
    const opened = await api('POST', '/api/dms', ann.token, { username: ben.username });
    assert.equal(opened.status, 200);
    const dm = (await opened.json()).id;
    await sidebarLink(benPage, dm).waitFor();
    const deadline = Date.now() + 10_000;
    while (!joined.includes(dm)) {
      assert.ok(Date.now() < deadline, 'Ben joined the DM');
      await new Promise((r) => setTimeout(r, 100));
    }

    const annPage = await signedIn(ann, `/r/${dm}`);
    await send(annPage, 'Lunch at noon?');
    await benPage.waitForFunction(() => window.__notifications.length > 0);
    const [note, ...more] = await benPage.evaluate(() => window.__notifications);
    assert.deepEqual(note, { title: ann.username, body: 'Lunch at noon?', tag: `chat-${dm}` });
    assert.deepEqual(more, []);
    // Ann's own message notified nobody on her side (she has not turned them on, and it is hers).
    assert.equal(await annPage.evaluate(() => window.__notifications?.length ?? 0), 0);

    await benPage.evaluate(() => window.__lastNotification.dispatchEvent(new Event('click')));
    await benPage.waitForURL(`**/r/${dm}`);
    await message(benPage, 'Lunch at noon?').waitFor();
  });
});
