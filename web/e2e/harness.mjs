/**
 * The frame the browser tests share: the real services (./services.mjs), one headless
 * Chromium, users signed up through the API, and pages that report uncaught errors and
 * Content-Security-Policy violations. `harness.test` fails a test that left either behind,
 * and when a test fails it prints the services' logs and screenshots its pages into the
 * suite's artifacts folder.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { chromium } from 'playwright-core';
import { apiRequest, distDir, killAllNow, repoDir, signUpAndLogIn, webDir } from './services.mjs';

export const screenshotDir = path.join(repoDir, 'docs', 'screenshots');
export const password = 'correct horse battery';
export const UI_TIMEOUT = 15_000;

/** Debian's Chromium (CHROMIUM_PATH overrides it) and the flags every browser test launches it with. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

/**
 * Registers the suite's `before`/`after` hooks and answers the harness:
 * - `name`: the artifacts folder, web/e2e/.artifacts/<name>;
 * - `start(harness)`: starts the services (returns what `startServices` returns); more
 *   services it starts go into `harness.extra`, whose logs are printed too and which are
 *   stopped at the end;
 * - `stop()`: anything else to stop after the services;
 * - `eachTest()`: runs before and after every test (e.g. to put a fault proxy back).
 */
export function browserHarness({ name, testTimeout, start, stop = async () => {}, eachTest = () => {} }) {
  const harness = {
    artifactsDir: path.join(webDir, 'e2e', '.artifacts', name),
    services: null,
    extra: [],
    browser: null,
    pageErrors: [],
    cspViolations: [],
    /** Pages opened by the test running now, screenshotted when it fails. */
    openPages: [],
    userCount: 0,
  };

  before(
    async () => {
      assert.ok(existsSync(path.join(distDir, 'index.html')), `${distDir}/index.html is missing: run \`npm run build\` in web/ first`);
      assert.ok(existsSync(chromiumPath), `${chromiumPath} not found: apt-get install -y chromium`);
      rmSync(harness.artifactsDir, { recursive: true, force: true });
      mkdirSync(harness.artifactsDir, { recursive: true });
      mkdirSync(screenshotDir, { recursive: true });
      harness.services = await start(harness);
      harness.browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs });
    },
    { timeout: 180_000 },
  );

  after(
    async () => {
      try {
        await harness.browser?.close();
      } finally {
        await Promise.allSettled([...harness.extra.map((s) => s.stop()), harness.services?.stop()]);
        await stop();
        killAllNow();
      }
    },
    { timeout: 60_000 },
  );

  /** A test that also fails on page errors or CSP violations, with logs and screenshots on failure. */
  harness.test = (testName, fn) =>
    it(testName, { timeout: testTimeout }, async (t) => {
      harness.openPages = [];
      eachTest();
      try {
        await fn();
        assert.deepEqual(harness.pageErrors, [], 'no uncaught errors in the pages');
        assert.deepEqual(harness.cspViolations, [], 'no Content-Security-Policy violations');
      } catch (e) {
        t.diagnostic(`service logs and failure screenshots are in ${harness.artifactsDir}`);
        for (const s of [...(harness.services?.all ?? []), ...harness.extra]) console.error(`---- ${s.name} log (tail)\n${s.logTail()}`);
        if (harness.pageErrors.length > 0) console.error(`---- page errors\n${harness.pageErrors.join('\n')}`);
        const slug = testName.replace(/[^a-z0-9]+/gi, '-').slice(0, 40);
        for (const [i, page] of harness.openPages.entries()) {
          if (!page.isClosed()) await page.screenshot({ path: path.join(harness.artifactsDir, `failure-${slug}-${i}.png`) }).catch(() => {});
        }
        throw e;
      } finally {
        eachTest();
        await Promise.allSettled(harness.openPages.map((p) => p.context().close()));
      }
    });

  /** A request to the (first) gateway's HTTP API; `token` null for none. */
  harness.api = (method, urlPath, token, body) => apiRequest(harness.services.gateway.url, method, urlPath, token, body);

  /** Signs up and logs in a user through the API; names are unique within the run. */
  harness.newUser = async (base) => {
    harness.userCount += 1;
    return signUpAndLogIn(harness.services.gateway.url, `${base}${harness.userCount}`, password);
  };

  /**
   * A browser context (its own session) whose pages report CSP violations; `initScript`
   * runs in each of its pages before theirs.
   */
  harness.newContext = async ({ viewport = { width: 1280, height: 800 }, colorScheme = 'light', initScript } = {}) => {
    const context = await harness.browser.newContext({ viewport, colorScheme });
    await context.exposeBinding('__reportCsp', (_source, text) => harness.cspViolations.push(text));
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__reportCsp?.(`${e.violatedDirective} blocked ${e.blockedURI || '(inline)'}`);
      });
    });
    if (initScript !== undefined) await context.addInitScript(initScript);
    return context;
  };

  /** A page in `context` (a new one of the given viewport when absent) that reports its errors. */
  harness.newPage = async ({ context, viewport } = {}) => {
    const page = await (context ?? (await harness.newContext({ viewport }))).newPage();
    page.setDefaultTimeout(UI_TIMEOUT);
    page.on('pageerror', (e) => harness.pageErrors.push(`${e.name}: ${e.message}`));
    harness.openPages.push(page);
    return page;
  };

  return harness;
}
