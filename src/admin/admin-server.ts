import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Logger } from '../domain/logger.js';
import { AdminApiError, errorFields } from '../errors.js';
import type { HostPort } from '../util/net.js';
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
}

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

  constructor(
    private readonly routes: AdminRoute[],
    private readonly logger: Logger,
    private readonly options: AdminServerOptions = {},
  ) {}

  /** Listen on `addr`: HTTP, or HTTPS with `tls`. */
  async listen(addr: HostPort, tls: { cert: Buffer; key: Buffer } | null = null): Promise<net.AddressInfo> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // Whatever one request does wrong costs that request only, never the process.
      this.dispatch(req, res).catch((err: unknown) => {
        this.logger.error('admin API request failed', { ...errorFields(err), stack: (err as Error)?.stack });
        if (!res.headersSent) this.send(res, 500, { error: { code: 'VSPC_INTERNAL', message: 'internal error; the vspc log has the details' } });
        else res.destroy();
      });
    };
    const server: http.Server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
    if (tls) {
      server.on('tlsClientError', (err: Error, socket: net.Socket) => {
        this.logger.info('TLS handshake failed on the admin API', { peer: `${socket.remoteAddress}:${socket.remotePort}`, ...errorFields(err) });
      });
    }
    // Admin clients are short-lived; do not let idle keep-alive sockets hold shutdown.
    server.keepAliveTimeout = 1000;
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
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

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
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
        this.logger.warn('admin API request refused: looks browser-borne', {
          peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
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
        this.logger.warn('admin API request refused: no valid token', {
          peer: `${req.socket.remoteAddress}:${req.socket.remotePort}`,
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
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
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
      const join = await route.open(url, peer, socket);
      if (socket.destroyed) return;
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${route.protocol}\r\n\r\n`);
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
