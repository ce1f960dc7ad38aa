/**
 * The console broker: console by name, without the admin API or its token, and
 * without ever telling a port number. A unix socket (file permissions decide who may
 * use it) and optionally a loopback TCP port speak telnet with VSPC-CONTROL; a client
 * lists the consoles (LIST-REQUEST) and picks one by name (SELECT); the connection is
 * then handed to the telnet access method as if it had come in on that console's own
 * port, and the lock request follows as usual. docs/console-protocol.md has the wire
 * format; catalogue.ts what a list reveals.
 */
import net from 'node:net';
import type { Logger } from '../../domain/logger.js';
import { LISTENER_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { HostPort } from '../../util/net.js';
import { errorFields } from '../../errors.js';
import { BrokerConnection, type BrokerHandover, type BrokerLimits } from './connection.js';
import { listenOnSocketFile, removeSocketFile, type SocketFileIdentity } from './socket-file.js';

export type { BrokerHandover, BrokerLimits } from './connection.js';

export interface BrokerOptions {
  /**
   * The consoles offered (default: the registry's). A cluster node adds mirrors of the
   * consoles other nodes own (src/sources/cluster/).
   */
  readonly consoles?: () => ConsoleHub[];
  /** Why a console may be missing from `consoles` now (a cluster node whose database does not answer), or null. */
  readonly listCaveat?: () => string | null;
  /** The unix socket, or null for none. */
  readonly socket: { readonly path: string; readonly mode: number; readonly gid: number | null } | null;
  /** The TCP listener (meant for loopback), or null for none. */
  readonly listen: HostPort | null;
  readonly limits: BrokerLimits;
  /** Output queued to a peer that does not read, at most (read when used: --client-queue-limit reloads). */
  readonly maxQueuedBytes: number;
  /** The process's descriptor budget (src/runtime/fd-budget.ts): false closes the socket at once. */
  admit?(socket: net.Socket): boolean;
  /** Hands a connection that selected a console to the telnet access method. */
  attach(handover: BrokerHandover): void;
  onProtocolError?(code: string): void;
  /** A connection was dropped for not reading what the broker sent it (metrics). */
  onNotReading?(): void;
}

/** Counters for status, metrics and tests. */
export interface BrokerCounters {
  accepted: number;
  selected: number;
  /**
   * Connections still choosing that were closed to make room for a newer one: the pool
   * of connections not handed over (--broker limits, maxPending) was full.
   */
  evicted: number;
}

export class ConsoleBroker {
  readonly counters: BrokerCounters = { accepted: 0, selected: 0, evicted: 0 };
  private readonly pendingSet = new Set<BrokerConnection>();
  private unixServer: net.Server | null = null;
  private tcpServer: net.Server | null = null;
  private socketFile: SocketFileIdentity | null = null;
  private tcpAddress: net.AddressInfo | null = null;
  private lastFullLog = 0;
  private closed = false;
  /** The budget of the line any connection can cause once at will (TLS on the broker), all connections together. */
  private readonly connectionLog: BudgetedLogger;

  constructor(
    private readonly registry: Registry,
    private readonly logger: Logger,
    private readonly options: BrokerOptions,
  ) {
    this.connectionLog = rateLimitedLogger(logger.child({ listener: 'broker' }), LISTENER_LOG_BUDGET, { scope: 'listener' });
  }

  /** Connections that have not chosen a console yet. */
  get pending(): number {
    return this.pendingSet.size;
  }

  /** Where the broker listens, once started. */
  get addresses(): { socket: string | null; tcp: net.AddressInfo | null } {
    return { socket: this.socketFile?.path ?? null, tcp: this.tcpAddress };
  }

  /**
   * Listen on the unix socket (unless `withoutSocket`) and the TCP address; rejects,
   * with nothing left listening, when one cannot be had. May be called again after a
   * rejection.
   */
  async start(withoutSocket = false): Promise<void> {
    this.closed = false;
    try {
      if (this.options.socket && !withoutSocket) {
        const server = this.server(() => `unix:${this.options.socket!.path}`);
        this.unixServer = server;
        this.socketFile = await listenOnSocketFile(server, this.options.socket);
      }
      if (this.options.listen) {
        const server = this.server((s) => `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`);
        this.tcpServer = server;
        const { host, port } = this.options.listen;
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host, port, exclusive: true }, () => {
            server.off('error', reject);
            resolve();
          });
        });
        this.tcpAddress = server.address() as net.AddressInfo;
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
    if (!this.socketFile && !this.tcpAddress) return;
    this.logger.info('console broker listening', { socket: this.socketFile?.path ?? null, tcp: this.tcpAddress ? `${this.tcpAddress.address}:${this.tcpAddress.port}` : null });
  }

  private server(peerOf: (s: net.Socket) => string): net.Server {
    const server = net.createServer((socket) => this.accept(socket, peerOf(socket)));
    const admit = this.options.admit;
    if (admit) {
      server.prependListener('connection', (raw: net.Socket) => {
        if (!admit(raw)) raw.destroy();
      });
    }
    server.on('error', (err) => this.logger.warn('console broker listener error', errorFields(err)));
    return server;
  }

  private accept(socket: net.Socket, peer: string): void {
    if (socket.destroyed || this.closed) {
      socket.destroy();
      return;
    }
    this.counters.accepted++;
    if (this.pendingSet.size >= this.options.limits.maxPending) this.evictOldest();
    const options = this.options;
    const conn = new BrokerConnection(socket, peer, {
      logger: this.logger,
      acceptLogger: this.connectionLog,
      limits: options.limits,
      consoles: options.consoles ?? (() => this.registry.all()),
      listCaveat: options.listCaveat,
      maxQueuedBytes: () => options.maxQueuedBytes,
      attach: (h) => {
        this.counters.selected++;
        options.attach(h);
      },
      settled: (c) => this.pendingSet.delete(c),
      onProtocolError: options.onProtocolError,
      onNotReading: options.onNotReading,
    });
    if (conn.pending) this.pendingSet.add(conn);
  }

  /**
   * The pool of connections still choosing is full: the oldest makes room for the
   * newcomer (as unidentified VM connections do, src/sources/esxi/listener.ts). A
   * legitimate client chooses within a round trip of connecting, so it is never the
   * oldest for long; connections held open without choosing are what goes. Logged at
   * most every 10 s, with the count.
   */
  private evictOldest(): void {
    const oldest = this.pendingSet.values().next().value;
    if (!oldest) return;
    this.counters.evicted++;
    const now = Date.now();
    if (now - this.lastFullLog >= 10_000) {
      this.lastFullLog = now;
      this.logger.warn('console broker: too many connections that have not chosen a console; the oldest make room for new ones', {
        pending: this.pendingSet.size,
        limit: this.options.limits.maxPending,
        evictedSoFar: this.counters.evicted,
        errorCode: 'VSPC_BROKER_FULL',
      });
    }
    // Out of the pool at once (close settles it); the socket goes after a short grace.
    oldest.close('too many connections are choosing a console; the oldest was closed to make room', 200);
  }

  /** Stop accepting, tell the connections still choosing, remove the socket file. */
  close(): void {
    this.closed = true;
    const servers = [this.unixServer, this.tcpServer].filter((s): s is net.Server => s !== null);
    this.unixServer = this.tcpServer = null;
    if (this.socketFile) removeSocketFile(this.socketFile);
    this.socketFile = null;
    for (const c of [...this.pendingSet]) c.close('vspc is shutting down', 200);
    this.connectionLog.close();
    // Not awaited: a server's close waits for every connection it accepted, and those
    // handed over are console clients, closed with their consoles.
    for (const s of servers) s.close();
  }

  /** Abort: stop listening, drop the connections still choosing, remove the socket file. */
  destroy(): void {
    this.closed = true;
    this.unixServer?.close();
    this.tcpServer?.close();
    this.unixServer = this.tcpServer = null;
    if (this.socketFile) removeSocketFile(this.socketFile);
    this.socketFile = null;
    for (const c of [...this.pendingSet]) c.destroy();
  }
}
