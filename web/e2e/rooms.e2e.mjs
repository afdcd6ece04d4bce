/**
 * End-to-end test of rooms in the web client (docs/rooms.md), in real
 * headless Chromium against the real services (started by ./services.mjs as
 * chat.e2e.mjs starts them). Each test signs up users of its own and makes
 * its own rooms, so the tests do not depend on each other.
 *
 * Needs what chat.e2e.mjs needs: the three binaries, a built client in
 * web/dist, MongoDB/FerretDB and RabbitMQ (scripts/deps.sh), and Debian's
 * `chromium` (CHROMIUM_PATH overrides /usr/bin/chromium).
 *
 * Run: `npm run e2e` in web/ (builds the client first, runs every browser
 * test), or `node --test web/e2e/rooms.e2e.mjs` with a client already built.
 * Screenshots of the sidebar and the members panel go to docs/screenshots/;
 * service logs to web/e2e/.artifacts/rooms/ (printed on failure).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe } from 'node:test';
import { browserHarness, password, screenshotDir } from './harness.mjs';
import { startServices } from './services.mjs';

const TEST_TIMEOUT = 120_000;
/**
 * The issue asks that a kicked user's view shows the removal within 1 s; asserted with a
 * generous bound so a loaded machine does not fail it (the bench measures the real figure).
 */
const REMOVAL_BOUND_MS = 5_000;

const h = browserHarness({
  name: 'rooms',
  testTimeout: TEST_TIMEOUT,
  start: (harness) => startServices({ prefix: 'e2e_rooms', logDir: harness.artifactsDir }),
});
const { test, api, newUser } = h;

// ---- users and the API -----------------------------------------------------------

async function createRoomByApi(owner, kind, name) {
  const res = await api('POST', '/api/rooms', owner.token, { kind, name, topic: '' });
  assert.equal(res.status, 201, `create ${kind} room ${name}`);
  return (await res.json()).id;
}

async function addMemberByApi(adder, room, user) {
  const res = await api('POST', `/api/rooms/${encodeURIComponent(room)}/members`, adder.token, { username: user.username });
  assert.ok(res.status === 201 || res.status === 200, `add ${user.username} to ${room}: ${res.status}`);
}

// ---- pages ----------------------------------------------------------------------

/** A new tab (its own session) signed in as `user`, on the home screen or at `urlPath`. */
async function signedIn(user, urlPath = '/', viewport = undefined) {
  const page = await h.newPage({ viewport });
  await page.goto(`${h.services.gateway.url}${urlPath}`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('current-user').waitFor();
  assert.equal(await page.getByTestId('current-user').textContent(), user.username);
  return page;
}

async function waitConnected(page) {
  await page.getByTestId('connection-banner').waitFor({ state: 'hidden' });
}

function sidebarLink(page, room) {
  return page.getByTestId('sidebar').locator(`[data-testid="room-link"][data-room="${room}"]`);
}

function badge(page, room) {
  return sidebarLink(page, room).getByTestId('unread-badge');
}

function composer(page, label) {
  return page.getByLabel(`Message ${label}`);
}

async function send(page, label, body) {
  await composer(page, label).fill(body);
  await composer(page, label).press('Enter');
}

/** Waits until `body` is shown as a stored (acknowledged) message. */
async function expectMessage(page, body) {
  await page
    .locator('[data-testid="message"][data-status="sent"]')
    .filter({ has: page.getByTestId('message-body').getByText(body, { exact: true }) })
    .first()
    .waitFor();
}

function roomIdOf(page) {
  const m = /\/r\/([^/?#]+)$/.exec(new URL(page.url()).pathname);
  assert.ok(m !== null, `a room address: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

// ---- the tests ----------------------------------------------------------------------

describe('rooms in a real browser', { timeout: 900_000 }, () => {
  test('the gateway answers a room link with the client, so a deep link survives a reload', async () => {
    const res = await fetch(`${h.services.gateway.url}/r/some-room`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.match(await res.text(), /<div id="root">/);
  });

  test('an invited member sees a private room appear live with an unread badge, and reading it in one tab clears it in the other', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const annPage = await signedIn(ann);
    const ben1 = await signedIn(ben);
    const ben2 = await signedIn(ben);
    await waitConnected(ben1);
    await waitConnected(ben2);

    // Ann creates a private room through the form and lands in it.
    await annPage.getByTestId('sidebar').getByRole('link', { name: 'New room' }).click();
    await annPage.getByLabel('Name').fill('Launch plans');
    await annPage.getByLabel('Topic').fill('What ships on Friday');
    await annPage.getByLabel(/Private:/).check();
    await annPage.getByRole('button', { name: 'Create' }).click();
    await annPage.getByRole('heading', { name: 'Launch plans', exact: true }).waitFor();
    const room = roomIdOf(annPage);
    await waitConnected(annPage);
    await sidebarLink(annPage, room).waitFor();

    // She invites Ben from the members panel; both of Ben's tabs list the room without a reload.
    const members = annPage.getByTestId('member-list');
    await members.getByLabel('Add a member by username').fill(ben.username);
    await members.getByRole('button', { name: 'Add' }).click();
    await members.getByText(ben.username, { exact: true }).waitFor();
    await sidebarLink(ben1, room).waitFor();
    await sidebarLink(ben2, room).waitFor();
    assert.match(await sidebarLink(ben1, room).textContent(), /Launch plans/);

    // She writes; Ben's tabs show the message as unread, with its preview.
    await send(annPage, '#Launch plans', 'Welcome aboard, Ben');
    await expectMessage(annPage, 'Welcome aboard, Ben');
    for (const page of [ben1, ben2]) {
      await badge(page, room).waitFor();
      assert.match(await badge(page, room).textContent(), /^1 unread$/);
      assert.match(await sidebarLink(page, room).getByTestId('room-preview').textContent(), /Welcome aboard, Ben/);
    }

    // The screenshot of the sidebar with a badge.
    await ben2.screenshot({ path: path.join(screenshotDir, 'rooms-sidebar.png') });

    // Ben opens it in his first tab: the badge clears there and, through the read marker, in the other tab.
    await sidebarLink(ben1, room).click();
    await ben1.getByRole('heading', { name: 'Launch plans', exact: true }).waitFor();
    await expectMessage(ben1, 'Welcome aboard, Ben');
    await badge(ben1, room).waitFor({ state: 'detached' });
    await badge(ben2, room).waitFor({ state: 'detached' });

    // The server kept the marker: a reload of the other tab shows nothing unread either.
    await ben2.reload();
    await sidebarLink(ben2, room).waitFor();
    assert.equal(await badge(ben2, room).count(), 0, 'no badge after a reload');
    const list = await (await api('GET', '/api/rooms', ben.token)).json();
    assert.equal(list.rooms.find((r) => r.id === room)?.unread, 0);

    // The members panel at desktop width, as the owner sees it.
    await members.getByText(ben.username, { exact: true }).waitFor();
    await annPage.screenshot({ path: path.join(screenshotDir, 'rooms-members.png') });
  });

  test('someone who is not a member cannot open a private room by its link, nor read its history', async () => {
    const ann = await newUser('ann');
    const cid = await newUser('cid');
    const room = await createRoomByApi(ann, 'private', 'Secret plans');
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    await send(annPage, '#Secret plans', 'Only for members');
    await expectMessage(annPage, 'Only for members');

    const cidPage = await signedIn(cid, `/r/${room}`);
    const denied = cidPage.getByTestId('room-denied');
    await denied.waitFor();
    assert.equal(await denied.getAttribute('data-code'), 'not_found');
    assert.match(await denied.textContent(), /does not exist, or it is private/);
    assert.equal(await cidPage.getByTestId('message').count(), 0, 'no message of the room is shown');
    assert.equal(await composer(cidPage, `#${room}`).count(), 0, 'no send box');
    assert.equal(await sidebarLink(cidPage, room).count(), 0, 'not in the sidebar');

    // The API answers exactly as for a room that does not exist.
    const history = await api('GET', `/api/rooms/${room}/messages?limit=10`, cid.token);
    assert.equal(history.status, 404);
    assert.equal((await history.json()).error.code, 'not_found');
    const missing = await api('GET', '/api/rooms/no-such-room-here/messages?limit=10', cid.token);
    assert.equal(missing.status, 404);
    const directory = await (await api('GET', '/api/rooms/directory?q=Secret', cid.token)).json();
    assert.equal(directory.rooms.some((r) => r.id === room), false, 'a private room is not in the directory');
  });

  test('a kicked member sees the removal at once and can no longer open the room', async () => {
    const ann = await newUser('ann');
    const ben = await newUser('ben');
    const room = await createRoomByApi(ann, 'private', 'Crew');
    await addMemberByApi(ann, room, ben);

    const benPage = await signedIn(ben, `/r/${room}`);
    await waitConnected(benPage);
    await composer(benPage, '#Crew').waitFor();
    const annPage = await signedIn(ann, `/r/${room}`);
    await waitConnected(annPage);
    await send(annPage, '#Crew', 'Before the kick');
    await expectMessage(benPage, 'Before the kick');

    const kick = annPage.getByTestId('member-list').getByRole('button', { name: `Kick ${ben.username}` });
    await kick.waitFor();
    const started = Date.now();
    await kick.click();
    await benPage.getByTestId('room-removed').waitFor({ timeout: REMOVAL_BOUND_MS });
    const elapsed = Date.now() - started;
    assert.ok(elapsed <= REMOVAL_BOUND_MS, `removal shown after ${elapsed} ms`);
    assert.equal(await benPage.getByTestId('room-removed').getAttribute('data-reason'), 'kicked');
    assert.match(await benPage.getByTestId('room-removed').textContent(), /You were removed from this room/);
    assert.equal(await composer(benPage, '#Crew').count(), 0, 'the send box is gone');
    await sidebarLink(benPage, room).waitFor({ state: 'detached' });

    // Nothing written after the kick reaches him: opening the room again is refused like any private room.
    await send(annPage, '#Crew', 'After the kick');
    await expectMessage(annPage, 'After the kick');
    await benPage.reload();
    await benPage.getByTestId('room-denied').waitFor();
    assert.equal(await benPage.getByTestId('message').count(), 0);
    const history = await api('GET', `/api/rooms/${room}/messages?limit=10`, ben.token);
    assert.equal(history.status, 404);
  });

  test('two people start a direct message by username search and talk', async () => {
    const ann = await newUser('ann');
    const cid = await newUser('cid');
    const annPage = await signedIn(ann);
    const cidPage = await signedIn(cid);
    await waitConnected(cidPage);

    await annPage.getByTestId('sidebar').getByRole('link', { name: 'New message' }).click();
    await annPage.getByLabel('To', { exact: true }).fill(cid.username.slice(0, 3));
    await annPage.getByRole('button', { name: `Message ${cid.username}`, exact: true }).click();
    await annPage.getByRole('heading', { name: cid.username, exact: true }).waitFor();
    const dm = roomIdOf(annPage);
    assert.match(dm, /^dm-[0-9a-f]{40}$/);
    await waitConnected(annPage);
    await send(annPage, `@${cid.username}`, 'Hi Cid, a word in private?');
    await expectMessage(annPage, 'Hi Cid, a word in private?');

    // Cid's list shows the conversation, unread, under the other person's name.
    await badge(cidPage, dm).waitFor();
    assert.match(await sidebarLink(cidPage, dm).textContent(), new RegExp(`@${ann.username}`));
    await sidebarLink(cidPage, dm).click();
    await expectMessage(cidPage, 'Hi Cid, a word in private?');
    await send(cidPage, `@${ann.username}`, 'Sure, go ahead');
    await expectMessage(annPage, 'Sure, go ahead');

    // Opening it from the other side is the same room.
    const again = await api('POST', '/api/dms', cid.token, { username: ann.username });
    assert.equal(again.status, 200);
    assert.equal((await again.json()).id, dm);
  });
});
