import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { errorFields } from '../../errors.js';
import { AccessError, accessError } from './errors.js';
import { DESCRIPTORS_EXHAUSTED, type DescriptorBudget, type DescriptorLease } from '../../domain/descriptors.js';

/** How one access method makes and removes a console's endpoint. */
export interface EndpointDriver<S, H> {
  /** `raw`, `unix`, `pty`: the key of the console's `accessErrors` and of log lines. */
  readonly method: string;
  /**
   * Which consoles' endpoints depend on each other: those with equal group keys (file
   * names are unique across the consoles of one directory sharing a name); null: on the
   * console alone. A console added, renamed or moved has only its own group's (old and
   * new) endpoints computed again, never every console's.
   */
  groupOf(hub: ConsoleHub): string | null;
  /**
   * The endpoint each of `hubs` should have now (null: none). `hubs` are in registry
   * order (by client port) and hold every console of each of their groups; the answer
   * for a console depends only on its group's consoles.
   */
  specs(hubs: readonly ConsoleHub[]): Map<ConsoleHub, S | null>;
  /** Specs with equal keys need no change of the endpoint. */
  keyOf(spec: S): string;
  /** Makes the endpoint; rejects with an AccessError (or a system error). */
  open(hub: ConsoleHub, spec: S): Promise<H>;
  /** Removes it (its clients stay attached to the hub until they leave or are closed). */
  close(handle: H, reason: string): Promise<void>;
}

interface Slot<S, H> {
  readonly spec: S;
  readonly key: string;
  handle: H | null;
  error: AccessError | null;
  retry: NodeJS.Timeout | null;
  /** The open under way, if any. */
  inflight: Promise<void> | null;
  retired: boolean;
  /** The endpoint's descriptor from the process's budget, held while it is open(ing). */
  lease: DescriptorLease | null;
  /** Waiting for descriptors: cancels the wait. */
  fdWait: (() => void) | null;
}

/** One console's endpoint of a method, for `show`. */
export interface EndpointState<S, H> {
  spec: S;
  handle: H | null;
  error: string | null;
}

/**
 * A console's endpoint for one access method (a raw TCP port, a unix socket, a pty),
 * following the registry and the configuration: made when a console becomes known or
 * the method is enabled for it, re-made when what it should be changes (a reload, a
 * rename that changes its file name), removed when the console is forgotten or the
 * method disabled. A failure is recorded on the hub (`accessErrors`, shown by `list`
 * and `show`), logged (at warn when it is new, then at debug) and retried after
 * `bindRetryMs`; it never touches the console's other endpoints.
 */
export class ConsoleEndpoints<S, H> {
  private readonly slots = new Map<ConsoleHub, Slot<S, H>>();
  private scheduled: NodeJS.Immediate | null = null;
  private closed = false;
  /** Consoles added, renamed or moved since the last pass: theirs (and their groups') are computed again. */
  private readonly dirty = new Set<ConsoleHub>();
  /** Every console computed again at the next pass (a reload). At start, the consoles loaded are each `added`. */
  private everything = false;
  /** Each console's group (driver.groupOf) when last computed, and each group's consoles. */
  private readonly groupOfHub = new Map<ConsoleHub, string>();
  private readonly groups = new Map<string, Set<ConsoleHub>>();
  /** How many consoles' specs were computed so far (tests: one registration must not compute every console's). */
  specsComputed = 0;

  constructor(
    private readonly registry: Registry,
    private readonly logger: Logger,
    private readonly driver: EndpointDriver<S, H>,
    private readonly options: {
      readonly bindRetryMs: number;
      /**
       * The process's descriptor budget: an endpoint (a listener, a pty) that does not
       * fit is not made now; the console shows "file descriptors exhausted" and it is
       * made as soon as descriptors are freed.
       */
      readonly descriptors?: DescriptorBudget;
    },
  ) {
    const changed = (hub: ConsoleHub) => {
      this.dirty.add(hub);
      this.later();
    };
    registry.on('added', changed);
    registry.on('renamed', changed);
    // Ports decide which console keeps a contested path (registry order).
    registry.on('moved', changed);
    registry.on('removed', (hub) => {
      // At once: a forgotten console takes no new client; the others of its group may change names.
      this.apply(hub, null, 'console forgotten');
      this.dirty.delete(hub);
      const group = this.leaveGroup(hub);
      if (group) for (const other of group) this.dirty.add(other);
      this.later();
    });
  }

  /** Re-reads what every console's endpoint should be (after a reload), on the next tick. */
  schedule(): void {
    this.everything = true;
    this.later();
  }

  /** Re-reads what every console's endpoint should be, now. */
  refresh(): void {
    if (this.closed) return;
    this.everything = false;
    this.dirty.clear();
    this.groupOfHub.clear();
    this.groups.clear();
    const hubs = this.registry.all();
    for (const hub of hubs) this.joinGroup(hub);
    const specs = this.specsOf(hubs);
    for (const hub of [...this.slots.keys()]) if (!specs.has(hub)) this.apply(hub, null, 'console forgotten');
    for (const [hub, spec] of specs) this.apply(hub, spec, 'configuration changed');
  }

  /** The next pass, on the next tick (one for all the changes of this tick). */
  private later(): void {
    if (this.closed || this.scheduled) return;
    this.scheduled = setImmediate(() => {
      this.scheduled = null;
      if (this.everything) this.refresh();
      else this.refreshChanged();
    });
  }

  /** Computes again the endpoints of the consoles that changed and of their groups (old and new), only. */
  private refreshChanged(): void {
    if (this.closed || this.dirty.size === 0) return;
    const hubs = new Set<ConsoleHub>();
    for (const hub of this.dirty) {
      hubs.add(hub);
      const before = this.leaveGroup(hub);
      if (before) for (const other of before) hubs.add(other);
      const now = this.joinGroup(hub);
      if (now) for (const other of now) hubs.add(other);
    }
    this.dirty.clear();
    // Registry order, as a full pass has it (it decides which console keeps a contested path).
    const ordered = [...hubs].sort((a, b) => a.identity.tcpPort - b.identity.tcpPort);
    for (const [hub, spec] of this.specsOf(ordered)) this.apply(hub, spec, 'configuration changed');
  }

  private specsOf(hubs: readonly ConsoleHub[]): Map<ConsoleHub, S | null> {
    this.specsComputed += hubs.length;
    return this.driver.specs(hubs);
  }

  /** Puts `hub` in the group the driver gives it now; returns that group's consoles (null: alone). */
  private joinGroup(hub: ConsoleHub): Set<ConsoleHub> | null {
    const key = this.driver.groupOf(hub);
    if (key === null) return null;
    this.groupOfHub.set(hub, key);
    let group = this.groups.get(key);
    if (!group) this.groups.set(key, (group = new Set()));
    group.add(hub);
    return group;
  }

  /** Takes `hub` out of its group; returns the consoles left in it (null: it was alone). */
  private leaveGroup(hub: ConsoleHub): Set<ConsoleHub> | null {
    const key = this.groupOfHub.get(hub);
    if (key === undefined) return null;
    this.groupOfHub.delete(hub);
    const group = this.groups.get(key);
    if (!group) return null;
    group.delete(hub);
    if (group.size === 0) this.groups.delete(key);
    return group;
  }

  state(hub: ConsoleHub): EndpointState<S, H> | null {
    const s = this.slots.get(hub);
    return s ? { spec: s.spec, handle: s.handle, error: s.error?.message ?? null } : null;
  }

  /** Every endpoint up now. */
  handles(): H[] {
    return [...this.slots.values()].flatMap((s) => (s.handle ? [s.handle] : []));
  }

  /** Removes every endpoint (shutdown); idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = null;
    const done: Array<Promise<void>> = [];
    for (const [hub, slot] of this.slots) {
      done.push(this.retire(hub, slot, 'vspc is shutting down'));
    }
    this.slots.clear();
    await Promise.all(done);
  }

  private apply(hub: ConsoleHub, spec: S | null, reason: string): void {
    const cur = this.slots.get(hub);
    const key = spec === null ? null : this.driver.keyOf(spec);
    if (cur && cur.key === key) return;
    if (!cur && key === null) return;
    const previous = cur ? this.retire(hub, cur, reason) : Promise.resolve();
    if (spec === null || key === null || this.closed) {
      this.slots.delete(hub);
      hub.clearAccessError(this.driver.method);
      return;
    }
    const slot: Slot<S, H> = { spec, key, handle: null, error: null, retry: null, inflight: null, retired: false, lease: null, fdWait: null };
    this.slots.set(hub, slot);
    // The old endpoint goes first: the new one may take the same path or port.
    slot.inflight = previous.then(() => this.attempt(hub, slot));
  }

  private async attempt(hub: ConsoleHub, slot: Slot<S, H>): Promise<void> {
    slot.retry = null;
    slot.fdWait = null;
    if (slot.retired) return;
    const budget = this.options.descriptors;
    if (budget && !slot.lease) {
      slot.lease = budget.acquire('listener', hub.displayName);
      if (!slot.lease) {
        // Not made now (the budget's owner logged it): shown on the console, made when descriptors are freed.
        slot.error = new AccessError('VSPC_ACCESS_FAILED', DESCRIPTORS_EXHAUSTED, { errorCode: 'VSPC_FD_BUDGET_SPENT' });
        hub.setAccessError(this.driver.method, DESCRIPTORS_EXHAUSTED);
        slot.fdWait = budget.whenAvailable(() => {
          slot.fdWait = null;
          if (!slot.retired) slot.inflight = this.attempt(hub, slot);
        });
        return;
      }
    }
    let handle: H;
    try {
      handle = await this.driver.open(hub, slot.spec);
    } catch (err) {
      slot.lease?.release();
      slot.lease = null;
      if (slot.retired) return;
      const e = err instanceof AccessError ? err : accessError(err, String((err as Error)?.message ?? err));
      const repeated = slot.error?.message === e.message;
      slot.error = e;
      hub.setAccessError(this.driver.method, e.message);
      const fields = { vm: hub.displayName, method: this.driver.method, retryMs: this.options.bindRetryMs, ...errorFields(e) };
      if (repeated) this.logger.debug('console endpoint still cannot be set up; will retry', fields);
      else this.logger.warn('console endpoint cannot be set up; will retry', fields);
      slot.retry = setTimeout(() => {
        slot.inflight = this.attempt(hub, slot);
      }, this.options.bindRetryMs);
      slot.retry.unref();
      return;
    } finally {
      slot.inflight = null;
    }
    if (slot.retired) {
      await this.driver.close(handle, 'replaced').catch(() => undefined);
      slot.lease?.release();
      slot.lease = null;
      return;
    }
    slot.handle = handle;
    if (slot.error) this.logger.info('console endpoint set up after all', { vm: hub.displayName, method: this.driver.method });
    slot.error = null;
    hub.clearAccessError(this.driver.method);
  }

  private async retire(hub: ConsoleHub, slot: Slot<S, H>, reason: string): Promise<void> {
    slot.retired = true;
    if (slot.retry) clearTimeout(slot.retry);
    slot.retry = null;
    slot.fdWait?.();
    slot.fdWait = null;
    if (slot.inflight) await slot.inflight;
    const handle = slot.handle;
    slot.handle = null;
    if (!handle) {
      slot.lease?.release();
      slot.lease = null;
      return;
    }
    try {
      await this.driver.close(handle, reason);
    } catch (err) {
      this.logger.warn('console endpoint could not be removed cleanly', { vm: hub.displayName, method: this.driver.method, ...errorFields(err) });
    } finally {
      slot.lease?.release();
      slot.lease = null;
    }
  }
}
