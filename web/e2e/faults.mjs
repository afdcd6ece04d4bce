/**
 * Faults for the browser tests: a controllable HTTP proxy to put in front of history-service
 * (pass, answer 503 `unavailable`, or hold message reads for a while), and a switch on a
 * page's WebSocket (cut it, or silence it like a half-open connection).
 */
import http from 'node:http';
import { once } from 'node:events';

/**
 * An HTTP proxy to `target` (set once the service is up). `mode`:
 * - `pass`: forwards everything;
 * - `fail`: answers every request 503 `unavailable`, as an overloaded history-service does;
 * - `slowReads`: holds each `GET …/messages` for `delayMs` before forwarding it (other
 *   requests, e.g. join authorizations, pass at once).
 * `seen` counts the requests per method and path without the query.
 */
export async function startHistoryProxy() {
  const proxy = {
    target: null,
    mode: 'pass',
    delayMs: 5_000,
    seen: [],
    server: null,
    url: null,
    async close() {
      this.server.closeAllConnections();
      this.server.close();
      await once(this.server, 'close');
    },
  };
  const server = http.createServer((req, res) => {
    const pathOnly = (req.url ?? '').split('?')[0];
    proxy.seen.push(`${req.method} ${pathOnly}`);
    const forward = () => {
      if (proxy.target === null) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'upstream_unavailable', message: 'no target yet' } }));
        return;
      }
      const upstream = http.request(
        `${proxy.target}${req.url}`,
        { method: req.method, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      upstream.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      req.pipe(upstream);
    };
    if (proxy.mode === 'fail' && !pathOnly.startsWith('/health/')) {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' });
      res.end(JSON.stringify({ error: { code: 'unavailable', message: 'history read shed' } }));
      return;
    }
    if (proxy.mode === 'slowReads' && req.method === 'GET' && /\/messages$/.test(pathOnly)) {
      const timer = setTimeout(forward, proxy.delayMs);
      res.on('close', () => clearTimeout(timer));
      return;
    }
    forward();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  proxy.server = server;
  proxy.url = `http://127.0.0.1:${server.address().port}`;
  return proxy;
}

/**
 * Routes a page's WebSocket to the gateway through the test, so that it can be cut (closed
 * on both sides, as a dropped connection) or silenced (frames dropped both ways while the
 * socket stays open, as a half-open TCP connection or a network that went away).
 */
export async function controlWebSocket(page) {
  const control = {
    silent: false,
    connections: 0,
    current: null,
    /** Closes the page's socket (and the gateway's side), as a dropped connection. */
    cut() {
      const c = this.current;
      this.current = null;
      if (c === null) return;
      c.server.close({ code: 1000, reason: 'cut by the test' });
      c.ws.close({ code: 4500, reason: 'cut by the test' });
    },
  };
  await page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    const server = ws.connectToServer();
    const c = { ws, server };
    control.current = c;
    control.connections += 1;
    ws.onMessage((m) => {
      if (!control.silent) server.send(m);
    });
    server.onMessage((m) => {
      if (!control.silent) ws.send(m);
    });
    ws.onClose((code, reason) => server.close({ code: closeCode(code), reason }));
    server.onClose((code, reason) => ws.close({ code: closeCode(code), reason }));
  });
  return control;
}

/** A close code a script may send (1000 or 3000–4999); others (1001, 1006 …) become 1000. */
function closeCode(code) {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000;
}
