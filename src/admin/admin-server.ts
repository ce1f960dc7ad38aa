import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Logger } from '../domain/logger.js';
import { LISTENER_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../domain/log-budget.js';
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
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void this.dispatch(req, res);
    const server: http.Server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
    if (tls) {
      server.on('tlsClientError', (err: Error, socket: net.Socket) => {
        this.requestLog.info('TLS handshake failed on the admin API', { peer: `${socket.remoteAddress}:${socket.remotePort}`, ...errorFields(err) });
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
    this.server = server;
    const bound = server.address() as net.AddressInfo;
    this.logger.info('admin API listening', { address: bound.address, port: bound.port, tls: !!tls, token: !!this.options.token?.() });
    return bound;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    this.requestLog.close();
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
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = this.routes.find((r) => r.path === url.pathname && r.method === req.method);
    try {
      const guarded = guardRequest(req, this.options.hostNames?.() ?? []);
      if (guarded) {
        this.options.onRefused?.(guarded.reason);
        this.requestLog.warn('admin API request refused: looks browser-borne', {
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
        this.requestLog.warn('admin API request refused: no valid token', {
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
