/**
 * The config file's `tunnels:` made real. Each tunnel is bound to the console that
 * carries it (named by the addressing rule, or the console its own `source:` made),
 * follows the registry (a console that appears, is renamed, forgotten or replaced),
 * holds a TunnelLink on that console while bound, and listens on its forwards:
 *
 * - `auto`: a sticky port on 127.0.0.1, kept per (console, guest port) in the store's
 *   access ports (`tunnel:PORT`), so it survives restarts; it exists while the tunnel
 *   is bound (the port belongs to the console);
 * - `HOST:PORT` and `unix:PATH`: from the moment the tunnel is configured; a
 *   connection while the tunnel is not bound is closed at once.
 *
 * A client connection opens a stream (OPEN to the guest port) only when it arrives.
 * `connect(name, port)` gives the same to other access paths (the admin API's
 * `vspc-admin tunnel`, later an SSH front door's direct-tcpip channel).
 */
import type net from 'node:net';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleIdentity } from '../../domain/identity.js';
import { mayBeNamed } from '../../domain/address.js';
import { VspcError, errorFields } from '../../errors.js';
import { TunnelError } from '../../protocol/tunnel/index.js';
import type { TunnelDuplex } from './duplex.js';
import { ForwardListener, joinSocket } from './forwards.js';
import { TunnelLink, type TunnelLinkOptions, type TunnelLinkStatus } from './link.js';
import { autoPortMethod, formatListen, type ForwardSpec, type TunnelSpec } from './types.js';

export interface TunnelManagerOptions {
  registry: Registry;
  /** The consoles a reference names (the admin API's addressing rule); several: ambiguous. */
  lookup(ref: string): ConsoleHub[];
  logger: Logger;
  /** A console client id (unique among every access method's clients). */
  clientId(): number;
  /** For auto forwards. Default 127.0.0.1. */
  autoHost?: string;
  /** Retry interval of forwards that cannot bind, ms. Default 30 s. */
  bindRetryMs?: number;
  /** Link options for tests (timeouts, endpoint settings). */
  link?: Pick<TunnelLinkOptions, 'openTimeoutMs' | 'giveUpAfterMs' | 'endpoint'>;
  /** A stream was opened for a client (metrics). */
  onConnection?(tunnel: string, via: string): void;
  /**
   * A console is about to carry a tunnel (called before the link attaches), started
   * (`carrierOf` names it now) or stopped carrying one.
   */
  onBind?(hub: ConsoleHub): void;
  /**
   * Asked for every connection a forward accepts (the process's descriptor budget,
   * src/runtime/fd-budget.ts): false closes it at once.
   */
  admit?(socket: net.Socket): boolean;
}

export interface TunnelForwardStatus {
  /** As configured: `auto`, `127.0.0.1:2222`, `unix:/run/vspc/web01.sock?mode=0600`. */
  listen: string;
  /** Where it listens now (`127.0.0.1:10007`); null while not listening. */
  address: string | null;
  to: number;
  /** Why it does not listen; null when it does (or an auto forward waits for its console). */
  error: string | null;
  /** Connections accepted since vspc started, and open now. */
  accepted: number;
  connections: number;
}

/** One tunnel for `vspc-admin list/show` and /metrics. */
export interface TunnelStatus {
  name: string;
  /** `console: web01:tunnel` or `source: unix:/run/qemu/web01.tunnel`. */
  carrier: string;
  /** The console it is bound to (display name and telnet port); null while none. */
  console: string | null;
  consolePort: number | null;
  /** Why it is not bound (no such console, ambiguous); null when bound. */
  problem: string | null;
  /** No link while not bound. */
  link: TunnelLinkStatus | null;
  forwards: TunnelForwardStatus[];
  /** Client connections (forwards and others) through this tunnel since vspc started. */
  connectionsTotal: number;
}

interface Forward {
  spec: ForwardSpec;
  listener: ForwardListener | null;
}

/** The link counters that are totals (kept across a rebinding). */
const COUNTERS = [
  'retransmits',
  'timeouts',
  'framesSent',
  'framesReceived',
  'lineBytesOut',
  'lineBytesIn',
  'discardedBytes',
  'badFrames',
  'echoes',
  'sessions',
  'peerRestarts',
  'linkDowns',
  'streamsOpened',
  'streamsRefused',
  'streamsReset',
  'bytesToGuest',
  'bytesFromGuest',
] as const satisfies ReadonlyArray<keyof TunnelLinkStatus>;
type CounterKey = (typeof COUNTERS)[number];

class Tunnel {
  hub: ConsoleHub | null = null;
  link: TunnelLink | null = null;
  problem: string | null = null;
  forwards: Forward[] = [];
  connectionsTotal = 0;
  /** Counters of links that were closed (rebinding), so the totals never go down. */
  retired: Record<CounterKey, number> = Object.fromEntries(COUNTERS.map((k) => [k, 0])) as Record<CounterKey, number>;
  constructor(public spec: TunnelSpec) {}
}

export class TunnelManager {
  private readonly tunnels = new Map<string, Tunnel>();
  private rebindQueued = false;
  /** The next rebind binds every tunnel again (else those `changedConsoles` may concern). */
  private rebindAll = false;
  private changedConsoles: Array<{ identity: ConsoleIdentity; formerName: string | null }> = [];
  private closed = false;
  private readonly log: Logger;

  constructor(private readonly o: TunnelManagerOptions) {
    this.log = o.logger;
    // Only the tunnels whose carrier the console may be (or may make ambiguous): looking
    // every tunnel's reference up again costs O(consoles) each, once per registration.
    o.registry.on('added', (hub) => this.queueRebind({ identity: hub.identity, formerName: null }));
    o.registry.on('renamed', (hub, old) => this.queueRebind({ identity: hub.identity, formerName: old }));
    o.registry.on('removed', (hub) => this.queueRebind({ identity: hub.identity, formerName: null }));
  }

  /**
   * Makes the running tunnels exactly `specs`: new ones start, removed ones stop (their
   * streams reset, their listeners closed), changed ones restart (a changed forward
   * list only re-listens; a changed carrier re-binds).
   */
  apply(specs: readonly TunnelSpec[]): { added: string[]; removed: string[]; changed: string[] } {
    const r = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
    if (this.closed) return r;
    const next = new Map(specs.map((s) => [s.name.toLowerCase(), s]));
    for (const [k, t] of [...this.tunnels]) {
      if (next.has(k)) continue;
      this.tunnels.delete(k);
      this.stop(t, 'tunnel removed from the configuration');
      r.removed.push(t.spec.name);
    }
    for (const [k, spec] of next) {
      const t = this.tunnels.get(k);
      if (!t) {
        const n = new Tunnel(spec);
        this.tunnels.set(k, n);
        this.setForwards(n, spec.forwards);
        this.bind(n);
        r.added.push(spec.name);
        continue;
      }
      const carrierChanged = JSON.stringify(t.spec.carrier) !== JSON.stringify(spec.carrier) || t.spec.name !== spec.name;
      const forwardsChanged = JSON.stringify(t.spec.forwards) !== JSON.stringify(spec.forwards);
      if (!carrierChanged && !forwardsChanged) continue;
      t.spec = spec;
      if (carrierChanged) {
        this.unbind(t, 'the tunnel was re-pointed');
        this.setForwards(t, spec.forwards);
        this.bind(t);
      } else {
        this.setForwards(t, spec.forwards);
      }
      r.changed.push(spec.name);
    }
    return r;
  }

  /** The tunnel a console carries, if any (its console carries no people). */
  carrierOf(hub: ConsoleHub): string | null {
    for (const t of this.tunnels.values()) if (t.hub === hub) return t.spec.name;
    return null;
  }

  /** Whether a tunnel names this console exactly (its own `source:` console), bound or not. */
  ownsConsole(kind: string, key: string, label: string): boolean {
    for (const t of this.tunnels.values()) {
      const c = t.spec.carrier;
      if ('kind' in c && c.kind === kind && c.key === key && c.label === label) return true;
    }
    return false;
  }

  list(): TunnelStatus[] {
    return [...this.tunnels.values()].sort((a, b) => a.spec.name.localeCompare(b.spec.name)).map((t) => this.statusOf(t));
  }

  status(name: string): TunnelStatus | null {
    const t = this.tunnels.get(name.toLowerCase());
    return t ? this.statusOf(t) : null;
  }

  /**
   * A stream to `port` in the guest of tunnel `name`. Throws VspcError
   * VSPC_TUNNEL_NOT_FOUND, VSPC_TUNNEL_NOT_ATTACHED (no console carries it now), or the
   * endpoint's VSPC_TUNNEL_TOO_MANY_STREAMS / _BAD_ARGUMENT.
   */
  connect(name: string, port: number, who: string): TunnelDuplex {
    const t = this.tunnels.get(name.toLowerCase());
    if (!t) throw new VspcError('VSPC_TUNNEL_NOT_FOUND', `no tunnel named "${name}" (vspc-admin list shows the tunnels)`, { tunnel: name });
    return this.open(t, port, who);
  }

  /** Stops every tunnel: streams reset (RESET(SHUTDOWN) to the agents), listeners closed. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.tunnels.values()) this.stop(t, 'vspc is shutting down');
    this.tunnels.clear();
  }

  // ------------------------------------------------------------- internals

  private open(t: Tunnel, port: number, who: string): TunnelDuplex {
    const link = t.link;
    if (!link) {
      throw new VspcError('VSPC_TUNNEL_NOT_ATTACHED', `tunnel "${t.spec.name}" has no console now: ${t.problem ?? 'not bound'}`, { tunnel: t.spec.name });
    }
    const d = link.connect(port, who);
    t.connectionsTotal++;
    this.o.onConnection?.(t.spec.name, who);
    return d;
  }

  private statusOf(t: Tunnel): TunnelStatus {
    const link = t.link?.status() ?? null;
    if (link) for (const k of COUNTERS) link[k] += t.retired[k];
    return {
      name: t.spec.name,
      carrier: t.spec.carrierText,
      console: t.hub?.displayName ?? null,
      consolePort: t.hub?.identity.tcpPort ?? null,
      problem: t.problem,
      link,
      forwards: t.forwards.map((f) => ({
        listen: formatListen(f.spec.listen),
        address: f.listener?.address ?? null,
        to: f.spec.to,
        error: f.listener?.error ?? null,
        accepted: f.listener?.accepted ?? 0,
        connections: f.listener?.sockets.size ?? 0,
      })),
      connectionsTotal: t.connectionsTotal,
    };
  }

  /**
   * Binds again, on the next tick, the tunnels a change of `changed` may concern (a
   * carrier given by kind and key is a map look-up: always), or every tunnel (no
   * `changed`: a link closed).
   */
  private queueRebind(changed?: { identity: ConsoleIdentity; formerName: string | null }): void {
    if (this.closed) return;
    if (!changed) this.rebindAll = true;
    else if (!this.rebindAll) this.changedConsoles.push(changed);
    if (this.rebindQueued) return;
    this.rebindQueued = true;
    setImmediate(() => {
      this.rebindQueued = false;
      const all = this.rebindAll;
      const changes = this.changedConsoles;
      this.rebindAll = false;
      this.changedConsoles = [];
      if (this.closed) return;
      for (const t of this.tunnels.values()) {
        const c = t.spec.carrier;
        if (all || 'kind' in c || changes.some((x) => x.identity === t.hub?.identity || mayBeNamed(c.ref, x.identity, x.formerName))) this.bind(t);
      }
    });
  }

  /** The console the tunnel's carrier names now, or why there is none. */
  private resolve(t: Tunnel): { hub: ConsoleHub } | { problem: string } {
    const c = t.spec.carrier;
    if ('kind' in c) {
      const hub = this.o.registry.get(c.kind, c.key, c.label);
      return hub ? { hub } : { problem: 'its console is not registered (yet)' };
    }
    const found = this.o.lookup(c.ref);
    if (found.length === 1) return { hub: found[0] };
    if (found.length === 0) return { problem: `no console matches "${c.ref}" (yet)` };
    const how = found.some((h) => h.identity.label !== '') ? 'name one with NAME:LABEL' : 'they share a name and have no label, so NAME:LABEL cannot tell them apart: rename one, or name it as vspc-admin show suggests';
    return { problem: `"${c.ref}" matches ${found.length} consoles (${found.map((h) => h.displayName).join(', ')}); ${how}` };
  }

  private bind(t: Tunnel): void {
    if (this.closed) return;
    const r = this.resolve(t);
    const hub = 'hub' in r ? r.hub : null;
    if (hub !== null && hub === t.hub && t.link) return;
    const other = hub ? [...this.tunnels.values()].find((x) => x !== t && x.hub === hub) : undefined;
    if (other) {
      this.unbind(t, 'another tunnel holds the console');
      t.problem = `${hub!.displayName} already carries tunnel "${other.spec.name}"`;
      return;
    }
    if (t.hub && t.hub !== hub) this.unbind(t, hub ? 'the tunnel now names another console' : 'its console is gone');
    t.problem = 'problem' in r ? r.problem : null;
    if (!hub) return;
    // The console's settings first (no console log, no scrollback): the link's own attach
    // is already not a console event for people.
    this.o.onBind?.(hub);
    const link = new TunnelLink({
      ...this.o.link,
      name: t.spec.name,
      clientId: this.o.clientId(),
      logger: this.log,
    });
    try {
      link.attach(hub);
    } catch (err) {
      t.problem = (err as Error).message;
      this.log.error('tunnel cannot attach to its console', { tunnel: t.spec.name, console: hub.displayName, ...errorFields(err) });
      return;
    }
    t.hub = hub;
    t.link = link;
    link.onClose = (reason) => {
      if (t.link !== link) return;
      this.retire(t, link);
      t.link = null;
      t.hub = null;
      this.stopAutoForwards(t);
      this.o.onBind?.(hub);
      // Kicked, or the console forgotten: bind again if the console (or another) is there.
      if (!this.closed && this.tunnels.get(t.spec.name.toLowerCase()) === t) {
        t.problem = `detached: ${reason}`;
        this.queueRebind();
      }
    };
    this.log.info('tunnel attached to its console', { tunnel: t.spec.name, console: hub.displayName, port: hub.identity.tcpPort });
    this.startAutoForwards(t);
    this.o.onBind?.(hub);
  }

  private retire(t: Tunnel, link: TunnelLink): void {
    const s = link.status();
    for (const k of COUNTERS) t.retired[k] += s[k];
  }

  private unbind(t: Tunnel, reason: string): void {
    const link = t.link;
    const hub = t.hub;
    t.link = null;
    t.hub = null;
    this.stopAutoForwards(t);
    if (link) {
      this.retire(t, link);
      link.close(reason);
    }
    if (hub && !this.closed) this.o.onBind?.(hub);
  }

  private stop(t: Tunnel, reason: string): void {
    this.unbind(t, reason);
    for (const f of t.forwards) f.listener?.close();
    t.forwards = [];
  }

  /** Replaces the forward list: listeners whose spec is unchanged are kept. */
  private setForwards(t: Tunnel, specs: ForwardSpec[]): void {
    const keep = new Map<string, Forward>();
    for (const f of t.forwards) keep.set(JSON.stringify(f.spec), f);
    const next: Forward[] = [];
    for (const spec of specs) {
      const k = JSON.stringify(spec);
      const old = keep.get(k);
      if (old) {
        keep.delete(k);
        next.push(old);
        continue;
      }
      const f: Forward = { spec, listener: null };
      next.push(f);
      if (spec.listen.type !== 'auto') this.listen(t, f);
    }
    for (const f of keep.values()) f.listener?.close();
    t.forwards = next;
    if (t.hub) this.startAutoForwards(t);
  }

  private startAutoForwards(t: Tunnel): void {
    const hub = t.hub;
    if (!hub) return;
    for (const f of t.forwards) {
      if (f.spec.listen.type !== 'auto' || f.listener) continue;
      let port: number;
      try {
        port = this.o.registry.accessPort(hub, autoPortMethod(f.spec.to));
      } catch (err) {
        this.log.error('tunnel forward: no port for it', { tunnel: t.spec.name, to: f.spec.to, ...errorFields(err) });
        continue;
      }
      this.listen(t, f, port);
    }
  }

  private stopAutoForwards(t: Tunnel): void {
    for (const f of t.forwards) {
      if (f.spec.listen.type !== 'auto' || !f.listener) continue;
      f.listener.close();
      f.listener = null;
    }
  }

  private listen(t: Tunnel, f: Forward, autoPort?: number): void {
    const l = f.spec.listen;
    const target =
      l.type === 'unix'
        ? { unix: { path: l.path, mode: l.mode } }
        : l.type === 'tcp'
          ? { tcp: { host: l.host, port: l.port } }
          : { tcp: { host: this.o.autoHost ?? '127.0.0.1', port: autoPort! } };
    f.listener = new ForwardListener(target, (s) => this.accept(t, f, s), this.log.child({ tunnel: t.spec.name, to: f.spec.to }), this.o.bindRetryMs, this.o.admit ? (s) => this.o.admit!(s) : undefined);
    void f.listener.start();
  }

  private accept(t: Tunnel, f: Forward, socket: net.Socket): void {
    const who = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : `unix:${f.listener?.description ?? '?'}`;
    socket.on('error', () => {});
    let d: TunnelDuplex;
    try {
      d = this.open(t, f.spec.to, who);
    } catch (err) {
      const code = err instanceof VspcError || err instanceof TunnelError ? err.code : 'error';
      this.log.info('tunnel forward: connection refused', { tunnel: t.spec.name, to: f.spec.to, peer: who, reason: (err as Error).message, errorCode: code });
      socket.destroy();
      return;
    }
    joinSocket(socket, d);
  }
}
