import { EventEmitter } from 'node:events';
import { ConsoleHub, type ConsoleEvent, type ConsoleObserver } from './console-hub.js';
import type { ConsoleKind } from './identity.js';
import { MAX_NAME_LENGTH, sanitizeText, truncateText } from '../util/text.js';
import type { ConsoleOwnership, ConsoleRecord, ConsoleRepository, ExpiredRecord } from './repository.js';
import { StorageError } from '../errors.js';
import { NameIndex } from './address.js';

export interface RegistryEvents {
  /** A VM serial port is known (at load or first registration): its client listener should exist. */
  added: [hub: ConsoleHub];
  /** Forgotten or expired: its listener goes, its clients are closed. */
  removed: [hub: ConsoleHub];
  /** Moved to another client port (`set-port`). */
  moved: [hub: ConsoleHub, oldPort: number];
  /** The VM reported a new name (per-VM settings may match by name). */
  renamed: [hub: ConsoleHub, oldName: string | null];
  /**
   * A record was deleted by expiry, with its hub when one was loaded (none at start-up,
   * where expiry runs before the records are loaded). One event per record.
   */
  expired: [record: ExpiredRecord, hub: ConsoleHub | null];
  /**
   * A client left a hub this registry made (also one it handed over to another node
   * and that still relays its clients there, see `handOver`).
   */
  clientDetached: [hub: ConsoleHub];
  /**
   * Cluster: this node lost its database session and with it the console (after
   * `removed`); its record stays and another node may own it now.
   */
  disowned: [hub: ConsoleHub];
}

/** `nameOrder`s of names given while running start here, above every record id. */
const NAME_ORDER_BASE = 2 ** 40;

/** A name as kept: safe to print (util/text.ts) and at most MAX_NAME_LENGTH code points. */
function boundName(name: string): string {
  return truncateText(sanitizeText(name), MAX_NAME_LENGTH);
}

function keyOf(kind: ConsoleKind, key: string, label: string): string {
  return `${kind}\0${key}\0${label}`;
}

/**
 * Every VM serial port the concentrator knows, backed by the SQLite store. Knows
 * nothing about transports: sources and clients attach to the hubs it hands out,
 * and listeners follow its events.
 */
export class Registry extends EventEmitter<RegistryEvents> {
  private readonly byKey = new Map<string, ConsoleHub>();
  private readonly byPort = new Map<number, ConsoleHub>();
  /** Names given or changed since start (nameOrder). */
  private namesGiven = 0;
  /** Hubs whose use (a byte, a client) is recorded in the store since this process started. */
  private readonly usedHubs = new WeakSet<ConsoleHub>();
  /** Consoles created by this process whose port was never bound (see relocateFresh). */
  private readonly fresh = new WeakSet<ConsoleHub>();
  /** What every hub reports to: the caller's observer, and the use of each console for the quick expiry. */
  private readonly observer: ConsoleObserver;
  /**
   * Cluster mode (a shared PostgreSQL repository): this node holds hubs only for the
   * consoles it owns. Null with the embedded store, where this process owns them all.
   */
  readonly ownership: ConsoleOwnership | null;
  /**
   * Where each console stands among the machines sharing its name (`nameRanks`), kept
   * as consoles are added, removed and renamed: a registration costs O(1) here, never a
   * re-ranking of every console (docs/performance.md, "registration").
   */
  readonly names = new NameIndex<ConsoleHub>();
  /** `all()`'s order (by client port), kept while consoles are only appended in port order; null: sort again when asked. */
  private sorted: ConsoleHub[] | null = null;

  constructor(
    private readonly store: ConsoleRepository,
    private readonly hubOptions: { maxHeldInput?: number; scrollbackBytes?: number; observer?: ConsoleObserver } = {},
  ) {
    super();
    // First of all listeners: whoever hears these events reads ranks that are already up to date.
    this.on('added', (hub) => this.names.add(hub));
    this.on('renamed', (hub) => this.names.add(hub));
    this.on('removed', (hub) => this.names.remove(hub));
    // Every change of the set of consoles or of their ports: `all()` sorts again (a new one at the end of the order is appended).
    this.on('added', (hub) => {
      const last = this.sorted?.at(-1);
      if (this.sorted && (!last || last.identity.tcpPort < hub.identity.tcpPort)) this.sorted.push(hub);
      else this.sorted = null;
    });
    this.on('removed', () => (this.sorted = null));
    this.on('moved', () => (this.sorted = null));
    const outer = hubOptions.observer;
    this.observer = {
      // Output alone does not count as use: a squatter prints one byte for that. A client
      // attaching does (someone cared about this console and may come back to its port).
      output: outer?.output ? (hub: ConsoleHub, data: Buffer) => outer.output!(hub, data) : undefined,
      event: (hub: ConsoleHub, event: ConsoleEvent) => {
        if (event.kind === 'client-attached') this.noteUse(hub);
        outer?.event?.(hub, event);
        if (event.kind === 'client-detached') this.emit('clientDetached', hub);
        // Cluster: a console belongs to the node holding its source connection. An ESXi
        // VM that left may come back through any node, so this one lets it go (after
        // the observers heard the disconnect, outside the hub's own call).
        if (event.kind === 'vm-disconnected' && this.ownership && hub.identity.kind === 'esxi') {
          setImmediate(() => {
            if (this.byKey.get(keyOf(hub.identity.kind, hub.identity.key, hub.identity.label)) === hub && hub.source === null && !hub.isHolding) {
              this.drop(hub, 'disconnected; it is served by whichever vspc node it reconnects to');
            }
          });
        }
      },
    };
    this.ownership = store.ownership ?? null;
    // The database session that proved this node's ownership is gone: so is every console.
    this.ownership?.onLost((reason) => this.releaseAll(`released: this node lost its database session (${reason})`));
  }

  /**
   * Create hubs for every stored record (at start-up), emitting `added` for each. In a
   * cluster, none: a node adopts a console when it claims it (its source connects).
   */
  load(): void {
    if (this.ownership) return;
    for (const r of this.store.list()) this.adopt(r, false);
  }

  /**
   * The next `nameOrder`: after every record id (ids are far below 2^40), so that a
   * name given or changed while running ranks after the names loaded at start.
   */
  private nextNameOrder(): number {
    return NAME_ORDER_BASE + ++this.namesGiven;
  }

  /** Cluster: drops every hub (records stay): this node no longer owns anything. Returns how many. */
  releaseAll(reason: string): number {
    const hubs = [...this.byKey.values()];
    for (const hub of hubs) this.drop(hub, reason);
    for (const hub of hubs) this.emit('disowned', hub);
    return hubs.length;
  }

  /**
   * A VM serial port identified itself: find or create its record (sticky port) and
   * hub. The name is updated when given.
   */
  register(kind: ConsoleKind, key: string, label: string, name: string | null, now = Date.now()): { hub: ConsoleHub; created: boolean } {
    const existing = this.byKey.get(keyOf(kind, key, label));
    if (this.ownership && !this.ownership.available) {
      // Cut off from the database: refuse at once (the VM retries, through another
      // node) rather than block the event loop for a call that cannot be answered.
      throw new StorageError('VSPC_DB_UNAVAILABLE', `this vspc node has no database session; ${kind} console ${key} is not registered here`, { kind, key, label });
    }
    const { record, created } = this.store.register(kind, key, label, name, now);
    if (existing) {
      const old = existing.identity.name;
      if (record.name !== null) existing.identity.name = boundName(record.name);
      if (existing.identity.name !== old) {
        existing.nameOrder = this.nextNameOrder();
        this.emit('renamed', existing, old);
      }
      return { hub: existing, created: false };
    }
    if (this.ownership) {
      // Only the node that owns a console serves it: two nodes feeding one console
      // would split its clients and its log.
      const claim = this.ownership.claim(record.id);
      if (!claim.owned) {
        throw new StorageError(
          'VSPC_CONSOLE_OWNED_ELSEWHERE',
          `${kind} console ${key}${label ? ` (${label})` : ''} is owned by vspc node ${claim.owner ?? '(one whose session is ending)'}`,
          { kind, key, label, owner: claim.owner, port: record.tcpPort, id: record.id },
        );
      }
    }
    const hub = this.adopt(record, true);
    if (created) this.fresh.add(hub);
    return { hub, created };
  }

  /**
   * The first port of a console created by this process turned out to be held by
   * another program on the host (the allocator only knows vspc's own records): nobody
   * can know that port yet, so move the console to the next free one rather than leave
   * it unbound. True when moved (emits `moved`); false for a console whose port may
   * already be known (it was bound, loaded from the store, or set by hand).
   */
  relocateFresh(hub: ConsoleHub): boolean {
    if (!this.fresh.has(hub)) return false;
    this.fresh.delete(hub);
    const old = hub.identity.tcpPort;
    const r = this.store.relocate(hub.identity.id);
    this.byPort.delete(old);
    hub.identity.tcpPort = r.tcpPort;
    this.byPort.set(r.tcpPort, hub);
    this.fresh.add(hub);
    this.emit('moved', hub, old);
    return true;
  }

  /** The console's port was bound: from now on it may be known, and is sticky. */
  bound(hub: ConsoleHub): void {
    this.fresh.delete(hub);
  }

  rename(hub: ConsoleHub, name: string): void {
    if (hub.identity.name === name) return;
    this.store.rename(hub.identity.id, name);
    const old = hub.identity.name;
    hub.identity.name = boundName(name);
    hub.nameOrder = this.nextNameOrder();
    this.emit('renamed', hub, old);
  }

  /** Record that the VM was seen now (connect, disconnect). */
  touch(hub: ConsoleHub, now = Date.now()): void {
    this.store.touch(hub.identity.id, now);
  }

  get(kind: ConsoleKind, key: string, label: string): ConsoleHub | undefined {
    return this.byKey.get(keyOf(kind, key, label));
  }

  getByPort(tcpPort: number): ConsoleHub | undefined {
    return this.byPort.get(tcpPort);
  }

  /**
   * Every console, by client port: a copy (O(n)), so not for a path taken once per
   * registration (each would cost O(n): quadratic over a start-up's registrations).
   */
  all(): ConsoleHub[] {
    this.sorted ??= [...this.byKey.values()].sort((a, b) => a.identity.tcpPort - b.identity.tcpPort);
    return this.sorted.slice();
  }

  get size(): number {
    return this.byKey.size;
  }

  /**
   * Cluster, cross-node vMotion: this node hands the console to the destination's node.
   * Its ownership is given up (waited for: the other node claims it next) and the hub
   * leaves the registry (`removed`: its ports close here, to be bound by the new owner),
   * but its clients and retiring source are left alone: the caller relays them.
   */
  handOver(hub: ConsoleHub): void {
    const k = keyOf(hub.identity.kind, hub.identity.key, hub.identity.label);
    if (this.byKey.get(k) !== hub) return;
    this.byKey.delete(k);
    this.byPort.delete(hub.identity.tcpPort);
    try {
      this.ownership?.release(hub.identity.id, true);
    } catch {
      // The session is gone: so is the ownership.
    }
    this.emit('removed', hub);
  }

  /**
   * Cluster, cross-node vMotion: this node takes a console over. Claims it and adopts
   * `relay` — this node's hub for it from an earlier handover, still serving clients
   * here — when given (its clients stay attached), else a new hub from the record.
   * Throws `VSPC_CONSOLE_OWNED_ELSEWHERE` when the claim fails, `VSPC_NOT_FOUND`.
   */
  takeOver(id: number, relay: ConsoleHub | null): ConsoleHub {
    const r = this.store.getById(id);
    if (!r) throw new StorageError('VSPC_NOT_FOUND', `no console record with id ${id}`, { id });
    const existing = this.byKey.get(keyOf(r.kind, r.key, r.label));
    if (existing) return existing;
    if (this.ownership) {
      const claim = this.ownership.claim(r.id);
      if (!claim.owned) {
        throw new StorageError('VSPC_CONSOLE_OWNED_ELSEWHERE', `console ${r.key} is owned by vspc node ${claim.owner ?? '(one whose session is ending)'}`, {
          owner: claim.owner,
        });
      }
    }
    if (!relay) return this.adopt(r, false);
    relay.identity.tcpPort = r.tcpPort;
    if (r.name !== null) relay.identity.name = boundName(r.name);
    this.byKey.set(keyOf(r.kind, r.key, r.label), relay);
    this.byPort.set(r.tcpPort, relay);
    this.emit('added', relay);
    return relay;
  }

  /** Drop a VM serial port: its row, its port, its listener and its clients. */
  forget(hub: ConsoleHub, reason = 'forgotten by the administrator'): void {
    this.store.forget(hub.identity.id);
    this.drop(hub, reason);
  }

  setPort(hub: ConsoleHub, tcpPort: number): void {
    const old = hub.identity.tcpPort;
    if (old === tcpPort) return;
    this.fresh.delete(hub);
    this.store.setPort(hub.identity.id, tcpPort);
    this.byPort.delete(old);
    hub.identity.tcpPort = tcpPort;
    this.byPort.set(tcpPort, hub);
    this.emit('moved', hub, old);
  }

  /**
   * Forget VM serial ports not seen for `maxAgeMs` that are neither connected nor in
   * use, so that long-gone VMs do not hold ports forever. Emits `expired` for every
   * record deleted (loaded or not); returns the hubs dropped.
   */
  expire(maxAgeMs: number, now = Date.now()): ConsoleHub[] {
    return this.expireRecords({ unseenMs: maxAgeMs, unusedMs: Number.POSITIVE_INFINITY }, now).map((x) => x.hub);
  }

  /**
   * Like `expire`, with the quick expiry of records never used: those unseen for
   * `unusedMs` go too. Ages in ms, Infinity for none. Returns the hubs dropped and
   * whether each was never used.
   */
  expireRecords(ages: { unseenMs: number; unusedMs: number }, now = Date.now()): Array<{ hub: ConsoleHub; reason: ExpiredRecord['reason'] }> {
    const gone = this.store.expire(
      ages.unseenMs,
      (r) => {
        const p = this.byKey.get(keyOf(r.kind, r.key, r.label));
        // In use, or a source vspc maintains is still trying (a declared console whose VM is off).
        return !!p && (p.source !== null || p.clients.size > 0 || (p.endpoint !== null && p.endpoint.state !== 'stopped'));
      },
      now,
      ages.unusedMs,
    );
    const dropped: Array<{ hub: ConsoleHub; reason: ExpiredRecord['reason'] }> = [];
    for (const r of gone) {
      const p = this.byKey.get(keyOf(r.kind, r.key, r.label));
      if (p) {
        this.drop(p, 'expired');
        dropped.push({ hub: p, reason: r.reason });
      }
      this.emit('expired', r, p ?? null);
    }
    return dropped;
  }

  /** The console's sticky TCP port for an access method other than telnet (see ConsoleRepository.accessPort). */
  accessPort(hub: ConsoleHub, method: string): number {
    return this.store.accessPort(hub.identity.id, method);
  }

  accessPorts(hub: ConsoleHub): Record<string, number> {
    return this.store.accessPorts(hub.identity.id);
  }

  lastSeen(hub: ConsoleHub): number | undefined {
    return this.store.getById(hub.identity.id)?.lastSeen;
  }

  /** `fresh`: registered now (not loaded at start): its name is the newest. */
  private adopt(r: ConsoleRecord, fresh: boolean): ConsoleHub {
    const o = this.hubOptions;
    const hub = new ConsoleHub(
      // Names stored by an older vspc may hold characters that are now refused at entry, or be longer than now kept.
      { id: r.id, kind: r.kind, key: r.key, label: r.label, name: r.name === null ? null : boundName(r.name), tcpPort: r.tcpPort },
      o.maxHeldInput,
      o.scrollbackBytes,
      this.observer,
    );
    if (fresh) hub.nameOrder = this.nextNameOrder();
    this.byKey.set(keyOf(r.kind, r.key, r.label), hub);
    this.byPort.set(r.tcpPort, hub);
    this.emit('added', hub);
    return hub;
  }

  /**
   * The console got a client: record it once, so that it keeps the long expiry. Called on the data path; a storage error must not cost the connection
   * (with group commit it surfaces, logged, at the commit).
   */
  private noteUse(hub: ConsoleHub): void {
    if (this.usedHubs.has(hub)) return;
    this.usedHubs.add(hub);
    try {
      this.store.markUsed(hub.identity.id);
    } catch {
      // The worst outcome is that this console expires after the shorter age.
    }
  }

  private drop(hub: ConsoleHub, reason: string): void {
    this.byKey.delete(keyOf(hub.identity.kind, hub.identity.key, hub.identity.label));
    try {
      this.ownership?.release(hub.identity.id);
    } catch {
      // The session is gone: so is the ownership.
    }
    this.byPort.delete(hub.identity.tcpPort);
    hub.closeClients(`VM serial port ${reason}`);
    hub.source?.close(`VM serial port ${reason}`);
    this.emit('removed', hub);
  }
}
