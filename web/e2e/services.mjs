/**
 * The real services for a browser test, as chat.e2e.mjs starts them:
 * auth-service, history-service and chat-gateway as processes on free ports,
 * in a database, exchange and queues of the run's own, the gateway serving
 * the built client from web/dist. Every process started here is killed when
 * the test process exits, whatever happens.
 *
 * Needs: the three binaries (default <repo>/target/debug, or CHAT_BIN_DIR),
 * MongoDB/FerretDB on 127.0.0.1:27017 and RabbitMQ on 127.0.0.1:5672
 * (scripts/deps.sh).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repoDir = path.resolve(webDir, '..');
/** The built client the gateway serves; CHAT_WEB_DIST names another build (e.g. an earlier one, to compare). */
export const distDir = process.env.CHAT_WEB_DIST ?? path.join(webDir, 'dist');
const binDir = process.env.CHAT_BIN_DIR ?? path.join(repoDir, 'target', 'debug');
/** The committed test-only signing key, named explicitly so no service creates a key file. */
export const testOnlySigningKey = readFileSync(path.join(repoDir, 'auth-service', 'config', 'dev-only-signing-key.pem'), 'utf8');

const children = new Set();

export function killAllNow() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
}
process.on('exit', killAllNow);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    killAllNow();
    process.exit(130);
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

export class Service {
  constructor(name, binary, env, logDir) {
    this.name = name;
    this.binary = binary;
    this.env = env;
    this.process = null;
    this.logFile = path.join(logDir, `${name}.log`);
  }

  get url() {
    return `http://127.0.0.1:${this.env.port}`;
  }

  async start() {
    const bin = path.join(binDir, this.binary);
    if (!existsSync(bin)) throw new Error(`${bin} not found: build the workspace first (cargo build --workspace)`);
    const log = createWriteStream(this.logFile, { flags: 'a' });
    log.write(`---- start ${new Date().toISOString()}\n`);
    const child = spawn(bin, [], {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1', ...this.env.vars },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    children.add(child);
    child.once('exit', () => children.delete(child));
    this.process = child;
    await this.waitReady(child);
  }

  async waitReady(child, timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${this.name} exited (${child.exitCode ?? child.signalCode}) before it was ready; see ${this.logFile}`);
      }
      try {
        const res = await fetch(`${this.url}/health/ready`, { signal: AbortSignal.timeout(2000) });
        if (res.status === 200) return;
      } catch {
        // Not listening yet.
      }
      await sleep(200);
    }
    throw new Error(`${this.name} was not ready within ${timeoutMs} ms; see ${this.logFile}`);
  }

  async stop() {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/** A JSON request to the HTTP API at `base` (a gateway or a service); `token` null for none. */
export function apiRequest(base, method, urlPath, token, body) {
  const headers = { Accept: 'application/json' };
  if (token !== null) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(`${base}${urlPath}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
}

/** Signs up `username` and logs in through the API at `base`: `{ username, token, id }`. */
export async function signUpAndLogIn(base, username, password) {
  const signup = await apiRequest(base, 'POST', '/api/auth/signup', null, { username, email: `${username}@example.com`, password });
  if (signup.status !== 201) throw new Error(`sign-up of ${username}: ${signup.status} ${await signup.text()}`);
  const login = await apiRequest(base, 'POST', '/api/auth/login', null, { username, password });
  if (login.status !== 200) throw new Error(`login of ${username}: ${login.status} ${await login.text()}`);
  const { access_token: token } = await login.json();
  const me = await (await apiRequest(base, 'GET', '/api/auth/me', token)).json();
  return { username, token, id: me.user.id };
}

/**
 * Starts auth-service, history-service and a gateway for a run named `prefix`
 * (unique names for its database, exchange, queues and gateway instance).
 * `gatewayVars` add to or override the gateway's settings.
 */
export async function startServices({ prefix, logDir, gatewayVars = {} }) {
  const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
  const names = {
    database: `${prefix}_${tag}`,
    exchange: `${prefix}_${tag}.chat`,
    historyQueue: `${prefix}_${tag}.history`,
    gatewayInstance: `${prefix.replaceAll('_', '-')}-${tag}`,
  };
  const authPort = await freePort();
  const auth = new Service(
    'auth-service',
    'auth-service',
    {
      port: authPort,
      vars: {
        AUTH__HTTP__PORT: String(authPort),
        AUTH__MONGODB__DATABASE: names.database,
        AUTH__AMQP__EXCHANGE: names.exchange,
        AUTH__PASSWORD__BCRYPT_COST: '4',
        AUTH__METRICS__PORT: '0',
        // The committed test-only key, named explicitly, so no key file is created in the working directory.
        AUTH__JWT__PRIVATE_KEY_PEM: testOnlySigningKey,
        // Several sign-ups from one address, and several logins per user within a minute.
        AUTH__LIMITS__ENABLED: 'false',
      },
    },
    logDir,
  );
  const historyPort = await freePort();
  const history = new Service(
    'history-service',
    'history-service',
    {
      port: historyPort,
      vars: {
        HISTORY__HTTP__PORT: String(historyPort),
        HISTORY__METRICS__PORT: '0',
        HISTORY__MONGODB__DATABASE: names.database,
        HISTORY__AMQP__EXCHANGE: names.exchange,
        HISTORY__AMQP__QUEUE: names.historyQueue,
        HISTORY__AUTH__URL: auth.url,
      },
    },
    logDir,
  );
  const gatewayPort = await freePort();
  const gateway = new Service(
    'chat-gateway',
    'chat-gateway',
    {
      port: gatewayPort,
      vars: {
        GATEWAY__HTTP__PORT: String(gatewayPort),
        GATEWAY__METRICS__PORT: '0',
        GATEWAY__AMQP__EXCHANGE: names.exchange,
        GATEWAY__AMQP__INSTANCE_ID: names.gatewayInstance,
        GATEWAY__AUTH__URL: auth.url,
        GATEWAY__HISTORY__URL: history.url,
        GATEWAY__WEB__DIR: distDir,
        // The test types and sends faster than a person.
        GATEWAY__LIMITS__MESSAGES_PER_SECOND: '1000',
        GATEWAY__LIMITS__MESSAGE_BURST: '1000',
        ...gatewayVars,
      },
    },
    logDir,
  );
  // The others fetch auth-service's signing keys at start, so it goes first.
  await auth.start();
  await Promise.all([history.start(), gateway.start()]);
  return {
    auth,
    history,
    gateway,
    names,
    all: [auth, history, gateway],
    stop: async () => {
      await Promise.allSettled([gateway.stop(), history.stop(), auth.stop()]);
    },
  };
}
