import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../../domain/logger.js';
import { errorFields, VspcError } from '../../errors.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { DESCRIPTORS_EXHAUSTED, type DescriptorBudget, type DescriptorLease } from '../../domain/descriptors.js';
import { TelnetClient, type TelnetClientOptions } from './client.js';
import { socketPeer } from '../../util/net.js';

export interface TelnetListenerOptions extends TelnetClientOptions {
  host: string;
  /** With TLS configured, each VM's telnets port is its telnet port plus this offset. */
  tlsPortOffset: number;
  tls?: tls.SecureContextOptions;
  /** A port that could not be bound is tried again after this long. */
  bindRetryMs: number;
  /**
   * Asked for every accepted socket before anything else (the process's descriptor
   * budget, src/runtime/fd-budget.ts): false closes it at once.
   */
  admit?(socket: net.Socket): boolean;
  /**
   * The process's descriptor budget for the listeners themselves: a listener that does
   * not fit is not bound, the console shows DESCRIPTORS_EXHAUSTED, and it is bound as
   * soon as descriptors are free again.
   */
  descriptors?: DescriptorBudget;
  /** Whether a console has telnet ports (the configuration's `access: telnet`); default: all. */
  enabled?(hub: ConsoleHub): boolean;
}

interface Listeners {
  plain: net.Server | null;
  secure: net.Server | null;
  retry: NodeJS.Timeout | null;
  /** Waiting for descriptors: cancels the wait. */
  waitFd: (() => void) | null;
}

/** What a client-port listener is for, kept on the server (see `listen`). */
interface PortRecord {
  readonly owner: TelnetListeners;
  readonly hub: ConsoleHub;
  readonly l: Listeners;
  readonly secure: boolean;
  readonly port: number;
  /** moveTo's first bind: its outcome goes there (once), not to the console. */
  first: { resolve(server: net.Server): void; reject(err: Error): void } | undefined;
  bound: boolean;
  /** Counted out of `binding` already. */
  settled: boolean;
}

const PORT = Symbol('vspc.clientPort');
type PortServer = net.Server & { [PORT]?: PortRecord };

/**
 * One telnet (and optionally telnets) listener per VM serial port, following the
 * registry: bound when a port becomes known, moved on `set-port`, closed when
 * forgotten. A bind failure (EADDRINUSE: something else holds the sticky port) is
 * logged, shown in `list` through the hub, and retried; it never stops the server.
 */
export class TelnetListeners {
  private readonly byHub = new Map<ConsoleHub, Listeners>();
  /** Listeners bound by `moveTo` for the port a console is about to move to. */
  private readonly prebound = new Map<ConsoleHub, Listeners>();
  /** The descriptor lease of each listener bound or being bound. */
  private readonly leases = new WeakMap<net.Server, DescriptorLease>();
  private closed = false;
  /** Until start(): consoles are recorded, not bound (vspc binds its own listeners first). */
  private started = false;
  /** Binds under way (neither listening nor failed yet): what `settled()` waits for. */
  private binding = 0;
  /** `settled()` calls waiting for `binding` to reach 0. */
  private bindWaiters: (() => void)[] = [];

  constructor(
    private readonly registry: Registry,
    private readonly logger: Logger,
    private readonly options: TelnetListenerOptions,
  ) {
    registry.on('added', (hub) => {
      if (this.options.enabled?.(hub) ?? true) this.open(hub);
    });
    registry.on('removed', (hub) => this.closeFor(hub));
    registry.on('moved', (hub) => {
      if (!this.byHub.has(hub)) return;
      this.closeFor(hub);
      const pre = this.prebound.get(hub);
      if (pre && !this.closed) {
        // `moveTo` bound the new port(s) already: they take over.
        this.prebound.delete(hub);
        this.byHub.set(hub, pre);
        hub.listenError = null;
        hub.tlsListenError = null;
      } else {
        this.open(hub);
      }
    });
  }

  /**
   * Bind every console's listener(s) known so far, and from now on each as it comes.
   * Until then they are only recorded: vspc binds its own listeners (VM, admin, broker)
   * first, so that consoles can never take the descriptors those need.
   */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    for (const [hub, l] of this.byHub) this.bind(hub, l);
  }

  /**
   * Resolves when every bind started so far has either listened or failed (and been
   * recorded on its console): vspc says it has started only then, so that a console
   * whose port is free accepts clients from that moment on.
   */
  async settled(): Promise<void> {
    while (this.binding > 0) await new Promise<void>((resolve) => this.bindWaiters.push(resolve));
  }

  /** Opens or closes each console's listeners as `enabled` now says (a reload). */
  refresh(): void {
    for (const hub of this.registry.all()) {
      const want = this.options.enabled?.(hub) ?? true;
      if (want && !this.byHub.has(hub)) this.open(hub);
      else if (!want && this.byHub.has(hub)) {
        this.closeFor(hub);
        hub.listenError = null;
        hub.tlsListenError = null;
      }
    }
  }

  /** Whether the console's telnet ports are open (or being retried). */
  has(hub: ConsoleHub): boolean {
    return this.byHub.has(hub);
  }

  tlsPortOf(hub: ConsoleHub): number | null {
    return this.options.tls ? hub.identity.tcpPort + this.options.tlsPortOffset : null;
  }

  /**
   * `set-port`: binds `port` (and its telnets twin) first, and only when that worked
   * calls `commit` (which moves the console in the registry and the store); the new
   * listeners then replace the old ones. A port that cannot be bound changes nothing:
   * rejects with VSPC_PORT_BIND_FAILED naming the port and the system's reason.
   */
  async moveTo(hub: ConsoleHub, port: number, commit: () => void): Promise<void> {
    const l: Listeners = { plain: null, secure: null, retry: null, waitFd: null };
    const close = () => {
      this.closeServer(l.plain);
      this.closeServer(l.secure);
    };
    try {
      l.plain = await this.bindOnce(hub, l, false, port);
      if (this.options.tls) l.secure = await this.bindOnce(hub, l, true, port + this.options.tlsPortOffset);
    } catch (err) {
      close();
      throw err;
    }
    this.prebound.set(hub, l);
    try {
      commit();
    } finally {
      // Still here: the commit failed (or moved nothing), so the new listeners go.
      if (this.prebound.get(hub) === l) {
        this.prebound.delete(hub);
        close();
      }
    }
  }

  private bindOnce(hub: ConsoleHub, l: Listeners, secure: boolean, port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      if (!this.listen(hub, l, secure, port, { resolve, reject })) {
        reject(new VspcError('VSPC_PORT_BIND_FAILED', `port ${port} is out of range`, { port }));
      }
    });
  }

  private open(hub: ConsoleHub): void {
    if (this.closed || this.byHub.has(hub)) return;
    const l: Listeners = { plain: null, secure: null, retry: null, waitFd: null };
    this.byHub.set(hub, l);
    if (this.started) this.bind(hub, l);
  }

  private bind(hub: ConsoleHub, l: Listeners): void {
    l.retry = null;
    l.waitFd = null;
    if (this.closed || this.byHub.get(hub) !== l) return;
    if (!l.plain) {
      l.plain = this.listen(hub, l, false, hub.identity.tcpPort);
    }
    const tlsPort = this.tlsPortOf(hub);
    if (tlsPort !== null && !l.secure) {
      l.secure = this.listen(hub, l, true, tlsPort);
    }
  }

  /** `first` (moveTo): report the first bind's outcome there instead of recording and retrying it. */
  private listen(
    hub: ConsoleHub,
    l: Listeners,
    secure: boolean,
    port: number,
    first?: { resolve(server: net.Server): void; reject(err: Error): void },
  ): net.Server | null {
    if (first && (port < 1 || port > 65535)) return null;
    if (port < 1 || port > 65535) {
      const msg = `port ${port} is out of range`;
      if (secure) hub.tlsListenError = msg;
      else hub.listenError = msg;
      return null;
    }
    const lease = this.options.descriptors ? this.options.descriptors.acquire('listener', hub.displayName) : null;
    if (this.options.descriptors && !lease) {
      // Not bound now (the budget's owner logged it): shown on the console, bound when descriptors are free.
      if (first) {
        first.reject(new VspcError('VSPC_PORT_BIND_FAILED', `port ${port} cannot be used now: ${DESCRIPTORS_EXHAUSTED}`, { port, errorCode: 'VSPC_FD_BUDGET_SPENT' }));
        return null;
      }
      if (secure) hub.tlsListenError = DESCRIPTORS_EXHAUSTED;
      else hub.listenError = DESCRIPTORS_EXHAUSTED;
      if (!l.waitFd && !this.closed && this.byHub.get(hub) === l) {
        l.waitFd = this.options.descriptors.whenAvailable(() => this.bind(hub, l));
      }
      return null;
    }
    const server = secure ? tls.createServer({ ...this.options.tls }) : net.createServer();
    // One record per listener, found by handlers every listener shares: an idle VM
    // serial port's listener costs no closures (there are thousands of them).
    (server as PortServer)[PORT] = { owner: this, hub, l, secure, port, first, bound: false, settled: false };
    if (lease) this.leases.set(server, lease);
    if (secure) {
      // Before the TLS handshake too: the raw socket already holds a descriptor.
      if (this.options.admit) server.prependListener('connection', TelnetListeners.onRawConnection);
      server.on('secureConnection', TelnetListeners.onSocket);
      server.on('tlsClientError', TelnetListeners.onTlsClientError);
    } else {
      // One 'connection' listener that admits, then serves: three event names in all
      // (connection, error, listening), which fit inside the server's events object.
      server.on('connection', TelnetListeners.onPlainSocket);
    }
    this.binding++;
    // A listener closed before it listened (moved or forgotten meanwhile) is settled by closeServer.
    server.on('error', TelnetListeners.onServerError);
    server.on('listening', TelnetListeners.onListening);
    server.listen({ host: this.options.host, port, exclusive: true });
    return server;
  }

  // The handlers every client-port listener shares (`this` is the server). Plain `on`,
  // not `once`: a once-wrapper is two more objects per listener; they guard themselves.
  private static onRawConnection(this: PortServer, raw: net.Socket): void {
    const r = this[PORT];
    if (r && !r.owner.options.admit!(raw)) raw.destroy();
  }

  private static onPlainSocket(this: PortServer, socket: net.Socket): void {
    const admit = this[PORT]?.owner.options.admit;
    if (admit && !admit(socket)) {
      socket.destroy();
      return;
    }
    TelnetListeners.onSocket.call(this, socket);
  }

  private static onSocket(this: PortServer, socket: net.Socket): void {
    const r = this[PORT];
    // Refused by the descriptor budget (already destroyed), or the hub was forgotten
    // between accept and here.
    if (!r || socket.destroyed || r.owner.byHub.get(r.hub) !== r.l) {
      socket.destroy();
      return;
    }
    new TelnetClient(socket, r.hub, r.owner.logger, r.owner.options, r.secure);
  }

  private static onTlsClientError(this: PortServer, err: Error, socket: tls.TLSSocket): void {
    const r = this[PORT];
    if (!r) return;
    const o = r.owner.options;
    (o.acceptLogger ?? r.owner.logger).info('TLS handshake failed on client port', { port: r.port, peer: socketPeer(socket), ...errorFields(err) });
    o.onProtocolError?.('TLS_HANDSHAKE_FAILED');
  }

  private static onListening(this: PortServer): void {
    const r = this[PORT];
    if (!r || r.bound) return;
    r.bound = true;
    r.owner.settle(r);
    if (!r.secure) r.owner.registry.bound(r.hub);
    if (r.first) {
      r.first.resolve(this);
      r.first = undefined;
      return;
    }
    if (r.secure) r.hub.tlsListenError = null;
    else r.hub.listenError = null;
  }

  private static onServerError(this: PortServer, err: NodeJS.ErrnoException): void {
    const r = this[PORT];
    if (r) r.owner.onListenError(this, r, err);
  }

  /** A bind has listened or failed (once per listener): what `settled()` waits for. */
  private settle(r: PortRecord): void {
    if (r.settled) return;
    r.settled = true;
    this.binding--;
    if (this.binding === 0) {
      const waiters = this.bindWaiters;
      this.bindWaiters = [];
      for (const w of waiters) w();
    }
  }

  private onListenError(server: net.Server, r: PortRecord, err: NodeJS.ErrnoException): void {
    const { hub, l, secure, port, first } = r;
    this.settle(r);
    const message = `${err.code ?? 'ERROR'}: cannot listen on ${this.options.host}:${port}`;
    if (first && !r.bound) {
      r.first = undefined;
      this.closeServer(server);
      first.reject(new VspcError('VSPC_PORT_BIND_FAILED', `port ${port} cannot be used: ${message}`, { port, errorCode: err.code }));
      return;
    }
    if (!secure && err.code === 'EADDRINUSE' && this.byHub.get(hub) === l) {
      const from = port;
      this.closeServer(server);
      if (this.registry.relocateFresh(hub)) {
        // A brand-new console whose first port another program holds: moved on at once.
        this.logger.info('a new console port is held by another program on this host; moved to the next free one', {
          vm: hub.displayName,
          from,
          to: hub.identity.tcpPort,
        });
        return;
      }
    }
    if (secure) {
      hub.tlsListenError = message;
      l.secure = null;
    } else {
      hub.listenError = message;
      l.plain = null;
    }
    this.logger.warn('cannot bind VM client port; will retry', {
      vm: hub.displayName,
      uuid: hub.identity.key,
      port,
      tls: secure,
      retryMs: this.options.bindRetryMs,
      ...errorFields(err),
    });
    this.closeServer(server);
    if (!l.retry && !this.closed && this.byHub.get(hub) === l) {
      l.retry = setTimeout(() => this.bind(hub, l), this.options.bindRetryMs);
      l.retry.unref();
    }
  }

  private closeFor(hub: ConsoleHub): void {
    const l = this.byHub.get(hub);
    if (!l) return;
    this.byHub.delete(hub);
    if (l.retry) clearTimeout(l.retry);
    l.waitFd?.();
    this.closeServer(l.plain);
    this.closeServer(l.secure);
  }

  /** Closes a listener (its descriptor goes at once) and gives its descriptor back to the budget. */
  private closeServer(server: net.Server | null): void {
    if (!server) return;
    // Closed before it listened: the bind is over (settled() must not wait for it).
    const r = (server as PortServer)[PORT];
    if (r) this.settle(r);
    server.close();
    this.leases.get(server)?.release();
    this.leases.delete(server);
  }

  /** Stop listening everywhere (connections already open are closed by their hubs). */
  close(): void {
    this.closed = true;
    for (const hub of [...this.byHub.keys()]) this.closeFor(hub);
  }
}
