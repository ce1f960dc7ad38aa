/**
 * A tunnel forward's listener: a TCP port (an `auto` sticky loopback port, or an
 * explicit HOST:PORT) or a unix socket (created with the configured mode, a stale
 * socket file replaced, anything else refused). Each accepted connection is handed to
 * the owner, which opens a tunnel stream for it only now: the guest port is dialled
 * when someone connects, so a service's greeting (the SSH banner) always has a reader.
 *
 * A listener that cannot bind records why (`error`, shown by `vspc-admin list`) and
 * tries again every `retryMs`.
 */
import net from 'node:net';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import type { Logger } from '../../domain/logger.js';
import { errorFields } from '../../errors.js';
import type { TunnelDuplex } from './duplex.js';

export interface ListenTarget {
  /** TCP: host and port; unix: path and mode. */
  tcp?: { host: string; port: number };
  unix?: { path: string; mode: number };
}

export class ForwardListener {
  private server: net.Server | null = null;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;
  /** Why the last bind failed; null while listening. */
  error: string | null = null;
  /** Bound address (`127.0.0.1:10005`, `/run/vspc/web01.sock`); null while not listening. */
  address: string | null = null;
  accepted = 0;
  readonly sockets = new Set<net.Socket>();

  constructor(
    readonly target: ListenTarget,
    private readonly onConnection: (socket: net.Socket) => void,
    private readonly logger: Logger,
    private readonly retryMs = 30_000,
    /**
     * Asked for every accepted connection first (the process's descriptor budget,
     * src/runtime/fd-budget.ts): false closes it at once, before a tunnel stream is opened.
     */
    private readonly admit?: (socket: net.Socket) => boolean,
  ) {}

  get description(): string {
    const t = this.target;
    return t.unix ? t.unix.path : `${t.tcp!.host}:${t.tcp!.port}`;
  }

  /** Binds now (resolves either way; a failure is recorded and retried). */
  async start(): Promise<void> {
    if (this.closed || this.server) return;
    try {
      await this.bind();
      this.error = null;
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.error = `${e.code ?? 'error'}: ${e.message}`;
      this.logger.warn('tunnel forward cannot listen; retrying', { listen: this.description, retryMs: this.retryMs, ...errorFields(err) });
      if (!this.closed) {
        this.retry = setTimeout(() => {
          this.retry = null;
          void this.start();
        }, this.retryMs);
        this.retry.unref();
      }
    }
  }

  private async bind(): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (s) => {
      // Refused by the descriptor budget (already destroyed, logged and counted by the budget's owner).
      if (s.destroyed) return;
      this.accepted++;
      this.sockets.add(s);
      s.once('close', () => this.sockets.delete(s));
      this.onConnection(s);
    });
    const admit = this.admit;
    if (admit) server.prependListener('connection', (s: net.Socket) => {
      if (!admit(s)) s.destroy();
    });
    const t = this.target;
    if (t.unix) await prepareUnixPath(t.unix.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const ready = () => {
        server.off('error', reject);
        resolve();
      };
      if (t.unix) server.listen(t.unix.path, ready);
      else server.listen({ host: t.tcp!.host, port: t.tcp!.port, exclusive: true }, ready);
    });
    if (t.unix) {
      try {
        chmodSync(t.unix.path, t.unix.mode);
      } catch (err) {
        server.close();
        throw err;
      }
    }
    server.on('error', (err) => this.logger.error('tunnel forward listener error', { listen: this.description, ...errorFields(err) }));
    if (this.closed) {
      server.close();
      return;
    }
    this.server = server;
    const a = server.address();
    this.address = typeof a === 'string' ? a : a ? `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : null;
    this.logger.info('tunnel forward listening', { listen: this.address });
  }

  /** Stops listening; open connections are closed too when `dropConnections`. Idempotent. */
  close(dropConnections = true): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const server = this.server;
    this.server = null;
    this.address = null;
    if (server) {
      server.close();
      if (this.target.unix) removeSocketFile(this.target.unix.path);
    }
    if (dropConnections) for (const s of this.sockets) s.destroy();
  }
}

/**
 * Makes `path` free for a unix listener: nothing there, or a socket nobody answers on
 * (left by a vspc that died), which is removed. A live socket or any other file is an
 * error (EADDRINUSE / EEXIST): vspc never deletes what is not its stale socket.
 */
async function prepareUnixPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw Object.assign(new Error(`something is listening on ${path}`), { code: 'EADDRINUSE' });
  unlinkSync(path);
}

function removeSocketFile(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    /* gone already */
  }
}

/**
 * Joins a client connection and a tunnel stream: bytes both ways with backpressure
 * (pipe), half-closes both ways, a reset of either side resets the other (the
 * socket with an RST, so the client sees an error rather than a clean end).
 */
export function joinSocket(socket: net.Socket, d: TunnelDuplex): void {
  socket.setNoDelay(true);
  socket.pipe(d);
  d.pipe(socket);
  d.on('error', () => {
    if (!socket.destroyed) socket.resetAndDestroy();
  });
  socket.on('error', () => {
    if (!d.destroyed) d.destroy();
  });
  socket.on('close', () => {
    // Closed without both directions ending cleanly (an abortive close): the stream too.
    if (!d.destroyed && !(d.writableFinished && d.readableEnded)) d.destroy();
  });
  d.on('close', () => {
    if (!socket.destroyed && socket.writableFinished && !socket.readable) socket.destroy();
  });
}
