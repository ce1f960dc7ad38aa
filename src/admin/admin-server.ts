import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Logger } from '../domain/logger.js';
import { LISTENER_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../domain/log-budget.js';
import { AdminApiError, errorFields } from '../errors.js';
import { socketPeer, type HostPort } from '../util/net.js';
import { refusal } from './auth.js';
import { guardRequest, type GuardRefusal } from './request-guard.js';

export interface AdminRoute {
  method: 'GET' | 'POST' | 'DELETE';
  /** Exact path, e.g. `/api/v1/ports`. */
  path: string;
  handle(url: URL): unknown | Promise<unknown>;
}

/** A route result sent as-is instead of as JSON (e.g. /metrics in the Prometheus text format). */
export class RawBody {
  constructor(
    readonly contentType: string,
    readonly text: string | Buffer,
  ) {}
}

/**
 * A call that becomes a byte stream (`GET /api/v1/tunnel` with `Connection: Upgrade`,
 * `Upgrade: vspc-tunnel`): after the same checks as every call (browser guard,
 * token), `open` checks the request and prepares the stream, throwing AdminApiError to
 * refuse (answered as JSON, nothing switched); then the answer is `101 Switching
 * Protocols` and `join` gets the socket (and any bytes that came with the request).
 */
export interface AdminUpgradeRoute {
  path: string;
  /** The Upgrade token, lower case (`vspc-tunnel`). */
  protocol: string;
  open(url: URL, peer: string, socket: net.Socket): Promise<(socket: net.Socket, head: Buffer) => void>;
}

/**
 * A route result whose body is written over time (`vspc-admin log --follow`, `--all`):
 * the server sends the headers, then `run` writes to the response and ends it. A
 * response still open when the admin API closes gets a moment to end, then is cut.
 * Errors before any byte are the route's to throw from `handle`; a failure of `run`
 * is logged and the response aborted.
 */
export class StreamBody {
  constructor(
    readonly contentType: string,
    readonly run: (out: http.ServerResponse) => void | Promise<void>,
  ) {}
}

/** How long the admin API waits, when it closes, for streamed responses to end by themselves. */
const STREAM_CLOSE_GRACE_MS = 2000;

export interface AdminServerOptions {
  /** Calls that become byte streams (see AdminUpgradeRoute). */
  upgrades?: AdminUpgradeRoute[];
  /** The bearer token every request must carry, read per request (a reload may change it); null = none. */
  token?: () => string | null;
  /** Called for each request refused for want of a valid token (metrics). */
  onUnauthorized?: () => void;
  /** Names (besides IP literals and localhost) the API may be addressed by, read per request. */
  hostNames?: () => readonly string[];
  /** Called for each request refused by the browser guard, with the rule (metrics). */
  onRefused?: (reason: GuardRefusal) => void;
  /**
   * Connections held at once, at most (a share of the descriptor reserve,
   * src/runtime/fd-budget.ts; default 256). Past it a newcomer closes the oldest
   * connection that has not sent a request, or is closed itself when every one is busy.
   */
  maxConnections?: number;
  /**
   * A connection about to become a byte stream (an Upgrade, e.g. a tunnel) asks the
   * process's descriptor budget for its descriptor: it then no longer counts against
   * maxConnections (a stream lasts, and would otherwise keep the API's share busy).
   * False: answered 503 VSPC_FD_BUDGET_SPENT, nothing switched.
   */
  admitStream?: (socket: net.Socket) => boolean;
  /** A connection closed by that cap: `evicted` (an idle one made room) or `refused` (the newcomer). */
  onConnectionShed?: (outcome: 'evicted' | 'refused') => void;
}

/** Headers must arrive within this long of connecting (or of the previous request). */
const HEADERS_TIMEOUT_MS = 5000;
/** A whole request (headers and body) within this long. */
const REQUEST_TIMEOUT_MS = 10_000;
/** How often Node checks those two. */
const TIMEOUT_CHECK_MS = 1000;
/** A TLS handshake within this long. */
const HANDSHAKE_TIMEOUT_MS = 5000;

export { AdminApiError } from '../errors.js';

/**
 * The admin API: HTTP with JSON bodies, on loopback by default. Responses are
 * `200 <json>` or `<status> {"error":{"code","message"}}`. Documented in
 * docs/admin-api.md; `vspc-admin` is its client.
 */
export class AdminServer {
  private server: http.Server | null = null;
  /** Streamed responses still open. */
  private readonly streams = new Set<http.ServerResponse>();
  /** Upgraded connections (vspc-admin tunnel): outside Node's HTTP bookkeeping, ended by close(). */
  private readonly upgraded = new Set<net.Socket>();
  /** Open connections (raw sockets), oldest first. */
  private readonly connections = new Set<net.Socket>();
  /** Connections that have sent a request (busy or done): never closed to make room. */
  private readonly requested = new WeakSet<net.Socket>();
  private lastShedLog = 0;
  private shed = 0;
  /**
   * The lines any caller can cause once per request (refusals, failed TLS handshakes):
   * on a budget, so that a loop of bad requests is counted (/metrics) rather than
   * written line by line. Admin actions and internal errors are not budgeted.
   */
  private readonly requestLog: BudgetedLogger;

  constructor(
    private readonly routes: AdminRoute[],
    private readonly logger: Logger,
    private readonly options: AdminServerOptions = {},
  ) {
    this.requestLog = rateLimitedLogger(logger.child({ listener: 'admin' }), LISTENER_LOG_BUDGET, { scope: 'listener' });
  }

  /** Listen on `addr`: HTTP, or HTTPS with `tls`. */
  async listen(addr: HostPort, tls: { cert: Buffer; key: Buffer } | null = null): Promise<net.AddressInfo> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // A TLS socket's raw socket is its _parent (what 'connection' saw).
      const raw = (req.socket as net.Socket & { _parent?: net.Socket })._parent ?? req.socket;
      this.requested.add(raw);
      // Whatever one request does wrong costs that request only, never the process.
      this.dispatch(req, res).catch((err: unknown) => {
        this.logger.error('admin API request failed', { ...errorFields(err), stack: (err as Error)?.stack });
        if (!res.headersSent) this.send(res, 500, { error: { code: 'VSPC_INTERNAL', message: 'internal error; the vspc log has the details' } });
        else res.destroy();
      });
    };
    // Idle connections cannot hold the reserve for long: headers within 5 s, checked every second.
    const timeouts = { headersTimeout: HEADERS_TIMEOUT_MS, requestTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: TIMEOUT_CHECK_MS };
    const server: http.Server = tls
      ? https.createServer({ cert: tls.cert, key: tls.key, handshakeTimeout: HANDSHAKE_TIMEOUT_MS, ...timeouts }, handler)
      : http.createServer(timeouts, handler);
    server.prependListener('connection', (socket: net.Socket) => this.accepted(socket));
    if (tls) {
      server.on('tlsClientError', (err: Error, socket: net.Socket) => {
        this.requestLog.info('TLS handshake failed on the admin API', { peer: socketPeer(socket), ...errorFields(err) });
      });
    }
    // Admin clients are short-lived; do not let idle keep-alive sockets hold shutdown (or descriptors).
    server.keepAliveTimeout = 1000;
    server.headersTimeout = HEADERS_TIMEOUT_MS;
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.logger.error('admin listener error', errorFields(err)));
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => void this.upgrade(req, socket, head));
    this.server = server;
    const bound = server.address() as net.AddressInfo;
    this.logger.info('admin API listening', { address: bound.address, port: bound.port, tls: !!tls, token: !!this.options.token?.() });
    return bound;
  }

  /**
   * Every accepted connection is counted; past maxConnections the oldest one that has
   * not sent a request makes room (a connection opened and left idle needs no token:
   * without this, a few hundred of them would take the descriptor reserve, and the
   * admin API with it). When all are busy, the newcomer is closed. Logged at most every
   * 10 s, with the count.
   */
  private accepted(socket: net.Socket): void {
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    const max = this.options.maxConnections ?? 256;
    if (this.connections.size <= max) return;
    let victim: net.Socket | null = null;
    for (const c of this.connections) {
      if (c !== socket && !this.requested.has(c)) {
        victim = c;
        break;
      }
    }
    const outcome = victim ? 'evicted' : 'refused';
    (victim ?? socket).destroy();
    this.connections.delete(victim ?? socket);
    this.shed++;
    this.options.onConnectionShed?.(outcome);
    const now = Date.now();
    if (now - this.lastShedLog >= 10_000) {
      this.lastShedLog = now;
      this.logger.warn(
        victim ? 'admin API: too many connections; the oldest idle one closed to make room' : 'admin API: too many connections, all busy; a new one refused',
        { limit: max, shedSoFar: this.shed, peer: socketPeer(socket), errorCode: 'VSPC_ADMIN_BUSY' },
      );
    }
  }

  /** Connections open now (tests, diagnostics). */
  get openConnections(): number {
    return this.connections.size;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    this.requestLog.close();
    // An upgraded stream is no longer the HTTP server's to close, yet server.close()
    // waits for it: end it (its far side sees EOF) and abort it after the grace time.
    for (const socket of this.upgraded) {
      socket.end();
      setTimeout(() => socket.destroy(), STREAM_CLOSE_GRACE_MS).unref();
    }
    await new Promise<void>((r) => {
      server.close(() => r());
      // Streams (log --follow) are usually ended already by their source: let them finish sending.
      const open = [...this.streams];
      if (open.length === 0) {
        server.closeAllConnections();
        return;
      }
      const cut = setTimeout(() => server.closeAllConnections(), STREAM_CLOSE_GRACE_MS);
      let left = open.length;
      for (const res of open) {
        res.once('close', () => {
          if (--left > 0) return;
          clearTimeout(cut);
          server.closeAllConnections();
        });
      }
    });
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // The API takes no body (parameters travel in the query string). A request that comes
    // with one is answered and its connection closed, rather than its body read until the
    // request timeout (10 s: a gigabyte on loopback, and 4 s of CPU, per connection).
    if (hasBody(req)) res.shouldKeepAlive = false;
    // A request target that is not a valid path (`//x:abc`, `//[`) is the client's error.
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin');
    } catch {
      this.send(res, 400, { error: { code: 'VSPC_ROUTE_NOT_FOUND', message: 'the request target is not a valid path' } });
      return;
    }
    const route = this.routes.find((r) => r.path === url.pathname && r.method === req.method);
    try {
      const guarded = guardRequest(req, this.options.hostNames?.() ?? []);
      if (guarded) {
        this.options.onRefused?.(guarded.reason);
        this.requestLog.warn('admin API request refused: looks browser-borne', {
          peer: socketPeer(req.socket),
          method: req.method,
          path: url.pathname,
          reason: guarded.code,
          security: true,
        });
        throw new AdminApiError(guarded.status, guarded.code, guarded.message);
      }
      const refused = refusal(req, this.options.token?.() ?? null);
      if (refused) {
        this.options.onUnauthorized?.();
        res.setHeader('www-authenticate', 'Bearer realm="vspc"');
        this.requestLog.warn('admin API request refused: no valid token', {
          peer: socketPeer(req.socket),
          method: req.method,
          path: url.pathname,
          reason: refused.code,
        });
        throw new AdminApiError(401, refused.code, refused.message);
      }
      if (!route) {
        const allowed = this.routes.filter((r) => r.path === url.pathname).map((r) => r.method);
        if (allowed.length > 0) res.setHeader('allow', allowed.join(', '));
        throw new AdminApiError(
          allowed.length > 0 ? 405 : 404,
          allowed.length > 0 ? 'VSPC_METHOD_NOT_ALLOWED' : 'VSPC_ROUTE_NOT_FOUND',
          `${req.method} ${url.pathname} is not an admin API call`,
        );
      }
      req.resume(); // Parameters travel in the query string; drain any body.
      const body = await route.handle(url);
      if (body instanceof StreamBody) this.stream(res, body, url.pathname);
      else if (body instanceof RawBody) this.sendRaw(res, 200, body);
      else this.send(res, 200, body);
    } catch (err) {
      if (err instanceof AdminApiError) {
        this.send(res, err.status, { error: { code: err.code, message: err.message } });
      } else {
        // Internal details (SQLITE_*, EACCES, paths) go to the log, never to the caller.
        this.logger.error('admin API call failed', { path: url.pathname, ...errorFields(err), stack: (err as Error)?.stack });
        this.send(res, 500, { error: { code: 'VSPC_INTERNAL', message: 'internal error; the vspc log has the details' } });
      }
    }
  }

  /** An Upgrade request: checked like any call, then switched to the route's byte stream. */
  private async upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): Promise<void> {
    const peer = socketPeer(socket);
    socket.on('error', () => {});
    let url = new URL('/', 'http://admin');
    try {
      try {
        url = new URL(req.url ?? '/', 'http://admin');
      } catch {
        throw new AdminApiError(400, 'VSPC_ROUTE_NOT_FOUND', 'the request target is not a valid path');
      }
      const guarded = guardRequest(req, this.options.hostNames?.() ?? []);
      if (guarded) {
        this.options.onRefused?.(guarded.reason);
        this.logger.warn('admin API request refused: looks browser-borne', { peer, method: req.method, path: url.pathname, reason: guarded.code, security: true });
        throw new AdminApiError(guarded.status, guarded.code, guarded.message);
      }
      const refused = refusal(req, this.options.token?.() ?? null);
      if (refused) {
        this.options.onUnauthorized?.();
        this.logger.warn('admin API request refused: no valid token', { peer, method: req.method, path: url.pathname, reason: refused.code });
        throw new AdminApiError(401, refused.code, refused.message);
      }
      const protocol = String(req.headers.upgrade ?? '').trim().toLowerCase();
      const route = (this.options.upgrades ?? []).find((r) => r.path === url.pathname);
      if (!route || req.method !== 'GET') throw new AdminApiError(404, 'VSPC_ROUTE_NOT_FOUND', `${req.method} ${url.pathname} with Upgrade is not an admin API call`);
      if (protocol !== route.protocol) {
        throw new AdminApiError(426, 'VSPC_TUNNEL_UPGRADE_REQUIRED', `${url.pathname} speaks "Upgrade: ${route.protocol}", not "${protocol.slice(0, 40)}"`);
      }
      // From here on a stream, not an admin call: out of the API's connection cap, into the budget.
      const raw = (socket as net.Socket & { _parent?: net.Socket })._parent ?? socket;
      this.requested.add(raw);
      if (this.options.admitStream && this.connections.has(raw)) {
        if (!this.options.admitStream(raw)) {
          throw new AdminApiError(503, 'VSPC_FD_BUDGET_SPENT', 'file descriptors nearly exhausted: no stream now; try again later');
        }
        this.connections.delete(raw);
      }
      const join = await route.open(url, peer, socket);
      if (socket.destroyed) return;
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${route.protocol}\r\n\r\n`);
      this.upgraded.add(socket);
      socket.once('close', () => this.upgraded.delete(socket));
      join(socket, head);
    } catch (err) {
      let status = 500;
      let body: unknown = { error: { code: 'VSPC_INTERNAL', message: 'internal error; the vspc log has the details' } };
      if (err instanceof AdminApiError) {
        status = err.status;
        body = { error: { code: err.code, message: err.message } };
      } else {
        this.logger.error('admin API call failed', { path: url.pathname, ...errorFields(err), stack: (err as Error)?.stack });
      }
      if (socket.destroyed) return;
      const text = JSON.stringify(body);
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
          `content-length: ${Buffer.byteLength(text)}\r\n${status === 401 ? 'www-authenticate: Bearer realm="vspc"\r\n' : ''}connection: close\r\n\r\n${text}`,
      );
    }
  }

  private stream(res: http.ServerResponse, body: StreamBody, path: string): void {
    res.writeHead(200, { 'content-type': body.contentType, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    res.flushHeaders(); // the reader learns at once that the stream is on
    this.streams.add(res);
    res.once('close', () => this.streams.delete(res));
    Promise.resolve()
      .then(() => body.run(res))
      .catch((err: unknown) => {
        this.logger.error('admin API stream failed', { path, ...errorFields(err), stack: (err as Error)?.stack });
        res.destroy();
      });
  }

  private sendRaw(res: http.ServerResponse, status: number, body: RawBody): void {
    res.writeHead(status, { 'content-type': body.contentType, 'content-length': Buffer.byteLength(body.text) });
    res.end(body.text);
  }

  private send(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

/** The request announces a body (RFC 9112 §6.3): a Transfer-Encoding, or a Content-Length other than 0. */
function hasBody(req: http.IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length.trim() !== '0';
}
