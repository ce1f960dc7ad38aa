import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../domain/logger.js';
import { LISTENER_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import { PeerRefusedError, errorFields, type VspcErrorCode } from '../../errors.js';
import { socketPeer, type HostPort } from '../../util/net.js';
import { addressGroup, anyContains, type CidrBlock } from '../../util/cidr.js';
import { TokenBuckets } from '../../util/token-bucket.js';
import { setInheritedSocketOptions } from '../../util/socket-options.js';
import { EsxiConnection, KEEPALIVE_MS, type EsxiConnectionContext } from './connection.js';

/**
 * Why a VM-side connection was refused or dropped before it identified (metrics label):
 * - `not-allowed`: its address is outside `--proxy-allow` (at accept, before any protocol);
 * - `address-limit`: its address (IPv6: /64) already holds its share of unidentified connections;
 * - `unidentified-limit`: all unidentified connections are in use and its address is among the busiest;
 * - `evicted`: an unidentified connection of the busiest address, closed to make room for one of a less busy address;
 * - `registration-rate`: its address spent its quota of new serial port records;
 * - `live-vm`: it claimed a serial port whose connection answered the liveness probe.
 */
export type VmRefusalReason = 'not-allowed' | 'address-limit' | 'unidentified-limit' | 'evicted' | 'registration-rate' | 'live-vm';

export const VM_REFUSAL_REASONS: readonly VmRefusalReason[] = ['not-allowed', 'address-limit', 'unidentified-limit', 'evicted', 'registration-rate', 'live-vm'];

/** The accept-time and registration limits. Functions are read at each use (a reload may change them). */
export interface EsxiListenerLimits {
  /** Unidentified connections (negotiating, identifying, contending) at once, all addresses. */
  maxUnidentified: number;
  /** ... per source address (IPv6: /64); 0 = no per-address limit. */
  maxUnidentifiedPerAddress?: number;
  /** Networks that may connect; null = any address. */
  allow?(): readonly CidrBlock[] | null;
  /**
   * Extra room above both limits while vMotions await their destination (one each):
   * a destination is a new connection, told from a flood only once it speaks.
   */
  headroom?(): number;
  /** New serial port records per source address: per second after the burst; rate 0 = no limit. */
  registration?: { ratePerSecond: number; burst: number };
  /** A connection was refused or dropped (metrics). */
  onRefused?(reason: VmRefusalReason): void;
  /**
   * Asked for every accepted socket before anything else (the process's descriptor
   * budget, src/runtime/fd-budget.ts): false closes it at once (the owner logs and counts).
   */
  admit?(socket: net.Socket): boolean;
}

/** At most one log line per reason this often, with the count of those not logged. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

/**
 * Where ESXi hosts connect in: plain telnet and, with a certificate, telnets (TLS
 * from the first byte). Tracks open VM connections so shutdown can retire them, and
 * guards the shared pools (docs/security.md): the allow-list, the unidentified
 * connections (globally and per source address, with room kept for vMotion
 * destinations), and the rate at which one address may create serial port records.
 */
export class EsxiListener {
  readonly connections = new Set<EsxiConnection>();
  /** Connections still negotiating, identifying or contending: what the flood caps count, oldest first. */
  private readonly pending = new Set<EsxiConnection>();
  /** The same, by source address group (util/cidr.ts addressGroup), oldest first. */
  private readonly pendingByGroup = new Map<string, Set<EsxiConnection>>();
  private readonly groupOf = new WeakMap<EsxiConnection, string>();
  /**
   * Whether `pendingByGroup` is kept. Only a per-address limit or an eviction needs a
   * connection's address group; until one does, accepting costs no getpeername and no
   * address parsing (a vMotion destination identifies within milliseconds). Once on,
   * it stays on (it is built from `pending` when first needed).
   */
  private indexed = false;
  /** Address group by remote address: a host's many connections share one address. */
  private readonly groups = new Map<string, string>();
  /** Listeners whose accepted sockets carry TCP_NODELAY and keepalive already (setInheritedSocketOptions). */
  private readonly inherited = new WeakSet<net.Server>();
  private readonly servers: net.Server[] = [];
  private readonly registrations: TokenBuckets | null;
  /** Connections dropped at accept (allow-list and both unidentified limits; metrics and status). */
  refused = 0;
  private readonly refusalLog = new Map<string, { at: number; suppressed: number }>();
  private readonly limits: EsxiListenerLimits;
  /**
   * The budget of the lines every connection writes once or twice before it has
   * identified (opened, "not an ESXi host", closed; TLS handshake failures): a flood of
   * connections must not become a flood of lines. Identified VMs log on their own budget.
   */
  private readonly acceptLog: BudgetedLogger;

  constructor(
    private readonly ctx: Omit<EsxiConnectionContext, 'onClosed' | 'onSettled'>,
    private readonly logger: Logger,
    limits: number | EsxiListenerLimits = 1024,
  ) {
    this.limits = typeof limits === 'number' ? { maxUnidentified: limits } : limits;
    this.acceptLog = rateLimitedLogger(logger.child({ listener: 'vm' }), LISTENER_LOG_BUDGET, { scope: 'listener' });
    const r = this.limits.registration;
    this.registrations = r && r.ratePerSecond > 0 ? new TokenBuckets({ ratePerSecond: r.ratePerSecond, burst: r.burst }) : null;
  }

  async listen(addr: HostPort, secure: tls.SecureContextOptions | null): Promise<net.AddressInfo> {
    // The allow-list is checked on the raw TCP socket, before any byte is read: with TLS
    // the socket is then handed to a TLS server that does not listen itself, so a
    // refused address costs no handshake (and no "TLS handshake failed" line).
    let tlsServer: tls.Server | null = null;
    if (secure) {
      // The TLS socket wraps the accepted TCP socket, which carries the listener's options.
      tlsServer = tls.createServer({ ...secure }, (socket) => this.accept(socket, true, false));
      // Plain telnet (or junk) on the TLS port ends here: log and drop that socket only.
      tlsServer.on('tlsClientError', (err, socket) => {
        this.acceptLog.warn('TLS handshake failed on the VM port; closed', {
          peer: socketPeer(socket),
          ...errorFields(err),
        });
        this.ctx.onProtocolError?.('TLS_HANDSHAKE_FAILED');
        socket.destroy();
      });
    }
    const server = net.createServer((socket) => {
      if (this.limits.admit && !this.limits.admit(socket)) socket.destroy();
      else if (!this.allowed(socket)) socket.destroy();
      else if (tlsServer) tlsServer.emit('connection', socket);
      else this.accept(socket, false, this.inherited.has(server));
    });
    server.on('error', (err) => this.logger.error('VM listener error', errorFields(err)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.off('error', reject);
        // Once here instead of per accepted connection (Linux copies them to each).
        if (setInheritedSocketOptions(server, KEEPALIVE_MS)) this.inherited.add(server);
        resolve();
      });
    });
    this.servers.push(server);
    const bound = server.address() as net.AddressInfo;
    this.logger.info('listening for VMs', { address: bound.address, port: bound.port, tls: !!secure });
    return bound;
  }

  /** Unidentified connections now, all addresses (tests, status). */
  get unidentified(): number {
    return this.pending.size;
  }

  /** The address group of a remote address (util/cidr.ts addressGroup), remembered per address. */
  private groupFor(address: string): string {
    let g = this.groups.get(address);
    if (g === undefined) {
      // Bounded: a flood from many addresses must not grow it without end.
      if (this.groups.size >= 4096) this.groups.clear();
      g = addressGroup(address);
      this.groups.set(address, g);
    }
    return g;
  }

  /** Start keeping `pendingByGroup`, from the connections pending now. */
  private index(): void {
    if (this.indexed) return;
    this.indexed = true;
    for (const conn of this.pending) this.indexPending(conn, this.groupFor(conn.remoteAddress));
  }

  private indexPending(conn: EsxiConnection, group: string): void {
    this.groupOf.set(conn, group);
    let set = this.pendingByGroup.get(group);
    if (!set) this.pendingByGroup.set(group, (set = new Set()));
    set.add(conn);
  }

  private accept(socket: net.Socket, secure: boolean, optionsInherited: boolean): void {
    if (socket.destroyed) return; // gone during the TLS handshake
    const room = Math.max(0, this.limits.headroom?.() ?? 0);
    const perAddress = this.limits.maxUnidentifiedPerAddress ?? 0;
    const full = this.pending.size >= this.limits.maxUnidentified + room;
    if (perAddress > 0 || full) this.index();
    const group = this.indexed ? this.groupFor(socket.remoteAddress ?? '?') : null;
    const mine = group === null ? 0 : (this.pendingByGroup.get(group)?.size ?? 0);
    // One address must not use up the unidentified connections every host shares.
    if (perAddress > 0 && mine >= perAddress + room) {
      this.refuse(socket, 'address-limit', 'VSPC_ADDRESS_UNIDENTIFIED_LIMIT', 'too many unidentified VM connections from one address; refusing new ones', {
        limit: perAddress,
        address: group,
      });
      return;
    }
    // A flood of connections that never identify must not use up the file descriptors
    // that identified VMs and their clients need: past the cap, a connection from a
    // less busy address takes the place of the busiest address's oldest (an idle flood
    // is old, a real host identifies within milliseconds); one from the busiest is refused.
    if (full && !this.evictFor(group!, mine)) {
      this.refuse(socket, 'unidentified-limit', 'VSPC_UNIDENTIFIED_LIMIT', 'too many unidentified VM connections; refusing new ones', {
        limit: this.limits.maxUnidentified,
      });
      return;
    }
    const conn = new EsxiConnection(
      socket,
      this.connectionContext(optionsInherited),
      secure,
    );
    this.connections.add(conn);
    if (conn.state === 'negotiating') {
      this.pending.add(conn);
      if (group !== null) this.indexPending(conn, group);
    }
  }

  /** The context every connection of this listener shares (two: with and without inherited socket options). */
  private connectionContext(optionsInherited: boolean): EsxiConnectionContext {
    const i = optionsInherited ? 1 : 0;
    return (this.contexts[i] ??= {
      ...this.ctx,
      socketOptionsInherited: optionsInherited,
      acceptLogger: this.acceptLog,
      onClosed: this.onClosed,
      onSettled: this.onSettled,
      admitNewIdentity: this.onAdmit,
    });
  }
  private readonly contexts: Array<EsxiConnectionContext | undefined> = [];

  // One set of callbacks for every connection (not three closures each).
  private readonly onClosed = (c: EsxiConnection): void => {
    this.connections.delete(c);
  };
  private readonly onSettled = (c: EsxiConnection): void => this.settled(c);
  private readonly onAdmit = (c: EsxiConnection): boolean => this.admitNewIdentity(c);

  /** The allow-list (checked before any byte is read or written). False: refused and counted. */
  private allowed(socket: net.Socket): boolean {
    const allow = this.limits.allow?.() ?? null;
    if (allow === null) return true;
    const address = socket.remoteAddress;
    if (address !== undefined && anyContains(allow, address)) return true;
    this.refusedCount('not-allowed');
    this.logRefusal('not-allowed', 'security: VM connection from an address outside --proxy-allow; closed', {
      security: true,
      ...errorFields(new PeerRefusedError('VSPC_PEER_NOT_ALLOWED', 'address not in --proxy-allow')),
      peer: `${address ?? '?'}:${socket.remotePort ?? '?'}`,
    });
    return false;
  }

  /**
   * Makes room for a connection from `group` (holding `mine` unidentified ones) by
   * closing the oldest unidentified connection of the busiest address, if that address
   * holds more than `group` does. False: nothing evicted (`group` is among the busiest).
   */
  private evictFor(group: string, mine: number): boolean {
    let busiest: Set<EsxiConnection> | null = null;
    for (const set of this.pendingByGroup.values()) {
      if (!busiest || set.size > busiest.size) busiest = set;
    }
    if (!busiest || busiest.size <= mine) return false;
    const victim = busiest.values().next().value as EsxiConnection;
    this.refusedCount('evicted');
    this.logRefusal('evicted', 'security: unidentified VM connection closed to make room for another address', {
      security: true,
      ...errorFields(new PeerRefusedError('VSPC_UNIDENTIFIED_EVICTED', 'evicted: its address holds the most unidentified connections')),
      peer: victim.peer,
      forAddress: group,
      limit: this.limits.maxUnidentified,
    });
    victim.destroy('evicted: too many unidentified connections from its address');
    // destroy() settles it at once (onSettled), so the room is there now.
    return true;
  }

  private settled(conn: EsxiConnection): void {
    this.pending.delete(conn);
    const group = this.groupOf.get(conn);
    if (group === undefined) return;
    const set = this.pendingByGroup.get(group);
    set?.delete(conn);
    if (set?.size === 0) this.pendingByGroup.delete(group);
  }

  /** The registration quota of the connection's source address (token bucket). */
  private admitNewIdentity(conn: EsxiConnection): boolean {
    if (!this.registrations) return true;
    const group = addressGroup(conn.session.address);
    if (this.registrations.take(group, performance.now())) return true;
    this.limits.onRefused?.('registration-rate');
    this.logRefusal('registration-rate', 'security: new VM serial ports from one address exceed --registration-rate; refused', {
      security: true,
      ...errorFields(new PeerRefusedError('VSPC_REGISTRATION_RATE', 'registration quota of this address spent')),
      peer: conn.peer,
      address: group,
      ratePerSecond: this.limits.registration?.ratePerSecond,
      burst: this.limits.registration?.burst,
    });
    return false;
  }

  private refuse(socket: net.Socket, reason: VmRefusalReason, code: VspcErrorCode, message: string, fields: Record<string, unknown>): void {
    this.refusedCount(reason);
    this.logRefusal(reason, message, {
      security: true,
      ...errorFields(new PeerRefusedError(code, message)),
      peer: socketPeer(socket),
      ...fields,
    });
    socket.destroy();
  }

  private refusedCount(reason: VmRefusalReason): void {
    if (reason !== 'evicted') this.refused++;
    this.limits.onRefused?.(reason);
  }

  /** A refusal line, at most one per reason every REFUSAL_LOG_INTERVAL_MS (a flood must not flood the log). */
  private logRefusal(reason: string, message: string, fields: Record<string, unknown>): void {
    const now = performance.now();
    const state = this.refusalLog.get(reason);
    if (state && now - state.at < REFUSAL_LOG_INTERVAL_MS) {
      state.suppressed++;
      return;
    }
    this.refusalLog.set(reason, { at: now, suppressed: 0 });
    this.logger.warn(message, { ...fields, reason, refusedSoFar: this.refused, notLoggedSinceLastLine: state?.suppressed ?? 0 });
  }

  /**
   * Stop accepting new VM connections. The promise settles once every connection
   * the listeners accepted has closed (net.Server#close semantics), so callers
   * retire the connections before awaiting it.
   */
  stopAccepting(): Promise<void> {
    this.acceptLog.close();
    const done = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers.length = 0;
    return done.then(() => undefined);
  }
}
