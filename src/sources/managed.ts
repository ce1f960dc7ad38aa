/**
 * Consoles whose sources vspc maintains itself — declared in the config file
 * (`consoles:`) or found by discovery (Proxmox, libvirt, globs) — kept in step with the
 * registry: each wanted console is registered (a sticky port), gets an EndpointRunner
 * feeding its hub, and is re-pointed, renamed or stopped when the wanted set changes.
 *
 * Consoles come in groups (`config`, `proxmox`, ...); `set(group, wanted)` makes a
 * group exactly `wanted`, touching nothing else. What happens to a console that leaves
 * its group depends on why it left:
 * - `forget`: the operator removed it (a config reload): its record and port go;
 * - `stop`: its VM stopped (discovery): the endpoint stops, the record and its sticky
 *   port stay, so the console comes back on the same port when the VM starts again.
 *
 * In a cluster (a PostgreSQL registry) every node runs the same configuration and
 * discovery, and each console is served by exactly one of them: the first to claim it.
 * The others keep it as *elsewhere* and take it over when its owner goes (the owner's
 * process dies, or its database session ends): every `claimRetryMs` (with jitter, so
 * nodes that noticed the same death do not all ask at once) a node asks the database,
 * in one round trip for its whole list, which of those consoles nobody owns now, and
 * claims those, at most CLAIM_BATCH per turn of the event loop. A console keeps its
 * record, so the new owner binds the same port. A node that lost its database session
 * turns every console it served into *elsewhere* and claims again once it is back.
 */
import type { ConsoleHub } from '../domain/console-hub.js';
import type { ConsoleKind } from '../domain/identity.js';
import type { Logger } from '../domain/logger.js';
import type { Registry } from '../domain/registry.js';
import type { SourceSpec } from '../domain/source-spec.js';
import { StorageError, errorFields } from '../errors.js';
import { createEndpointWith, type EndpointContext } from './common/endpoint.js';
import type { ConnectorRegistry } from './common/link.js';
import type { EndpointRunner } from './common/runner.js';

/** One console a group wants. */
export interface WantedConsole {
  kind: ConsoleKind;
  key: string;
  label: string;
  /** Display name; null: not known. */
  name: string | null;
  spec: SourceSpec;
  /** Canonical spec text (formatSourceSpec): a change re-points the console. */
  specText: string;
}

export type LeaveMode = 'forget' | 'stop';

/** Cluster: how often a node asks which of its *elsewhere* consoles nobody owns (ms, before jitter of ±50%). */
export const CLAIM_RETRY_MS = 2000;
/** Cluster: most consoles claimed in one turn of the event loop (each claim is a few database round trips). */
export const CLAIM_BATCH = 200;

/** A wanted console another node owns: this node takes it if that node goes. */
interface Elsewhere {
  group: string;
  wanted: WantedConsole;
  /** Its record id (null: not known yet; claimed at the next turn). */
  id: number | null;
}

interface Managed {
  group: string;
  wanted: WantedConsole;
  hub: ConsoleHub;
  runner: EndpointRunner;
}

export interface SetResult {
  added: string[];
  removed: string[];
  repointed: string[];
  failed: string[];
  /** Cluster: owned by another node; this one takes them over if that node goes. */
  elsewhere: string[];
}

function idOf(w: Pick<WantedConsole, 'kind' | 'key' | 'label'>): string {
  return `${w.kind}\0${w.key}\0${w.label}`;
}

export class ManagedConsoles {
  private readonly byId = new Map<string, Managed>();
  /** Cluster: wanted consoles another node serves. */
  private readonly elsewhere = new Map<string, Elsewhere>();
  private claimTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly registry: Registry,
    private readonly connectors: ConnectorRegistry,
    private readonly logger: Logger,
    private readonly endpointOptions: Omit<EndpointContext, 'logger'> = {},
    private readonly claimRetryMs = CLAIM_RETRY_MS,
  ) {
    registry.on('disowned', (hub) => this.onDisowned(hub));
    registry.ownership?.onRegained(() => this.scheduleClaims(true));
  }

  /** Cluster: how many wanted consoles another node serves now. */
  get elsewhereCount(): number {
    return this.elsewhere.size;
  }

  /** The runner feeding `hub`, if vspc maintains its source. */
  runnerOf(hub: ConsoleHub): EndpointRunner | undefined {
    return this.managedEntry(hub)?.runner;
  }

  /** The group that keeps `hub` (`config`, `discovery`), or null when vspc does not maintain its source. */
  groupOf(hub: ConsoleHub): string | null {
    return this.managedEntry(hub)?.group ?? null;
  }

  private managedEntry(hub: ConsoleHub): Managed | undefined {
    return this.byId.get(idOf(hub.identity));
  }

  get size(): number {
    return this.byId.size;
  }

  /**
   * Makes `group` exactly `wanted`. A console that leaves the group is forgotten or
   * stopped (`leave`); one whose spec changed is re-pointed (its clients stay attached);
   * a new name renames the record. A console that cannot be registered (port range
   * exhausted) is logged and skipped; the others go on.
   */
  set(group: string, wanted: readonly WantedConsole[], leave: LeaveMode): SetResult {
    const result: SetResult = { added: [], removed: [], repointed: [], failed: [], elsewhere: [] };
    if (this.closed) return result;
    const next = new Map(wanted.map((w) => [idOf(w), w]));
    for (const [id, e] of [...this.elsewhere]) {
      if (e.group !== group) continue;
      if (next.has(id)) {
        // Still wanted: the node that serves it applies the change; this one keeps it for a takeover.
        e.wanted = next.get(id)!;
        next.delete(id);
        continue;
      }
      // Not forgotten from here: the node serving it forgets it when its configuration says so.
      this.elsewhere.delete(id);
      result.removed.push(e.wanted.name ?? e.wanted.key);
    }
    for (const [id, m] of [...this.byId]) {
      if (m.group !== group || next.has(id)) continue;
      this.byId.delete(id);
      m.runner.destroy(leave === 'forget' ? 'console removed from the configuration' : 'console no longer present');
      result.removed.push(m.hub.displayName);
      if (leave === 'forget') this.registry.forget(m.hub, 'removed from the configuration');
      else m.hub.endpoint = { ...m.runner.status, state: 'stopped', since: Date.now(), nextAttemptAt: null };
    }
    for (const [id, w] of next) {
      const m = this.byId.get(id);
      if (m && m.group !== group) {
        this.logger.warn('a console is wanted by two groups; the first one keeps it', { console: m.hub.displayName, group, heldBy: m.group });
        continue;
      }
      if (m) {
        if (w.name !== null && w.name !== m.hub.identity.name) this.registry.rename(m.hub, w.name);
        if (w.specText !== m.wanted.specText) {
          m.runner.destroy('source changed');
          m.runner = this.start(m.hub, w);
          result.repointed.push(m.hub.displayName);
        }
        m.wanted = w;
        continue;
      }
      this.add(id, group, w, result, false);
    }
    this.scheduleClaims();
    return result;
  }

  /** Registers and starts one wanted console; another node owning it puts it in `elsewhere`. */
  private add(id: string, group: string, w: WantedConsole, result: SetResult, takeover: boolean): void {
    let hub: ConsoleHub;
    try {
      hub = this.registry.register(w.kind, w.key, w.label, w.name).hub;
    } catch (err) {
      if (err instanceof StorageError && err.code === 'VSPC_CONSOLE_OWNED_ELSEWHERE') {
        const recordId = typeof err.context.id === 'number' ? err.context.id : null;
        this.elsewhere.set(id, { group, wanted: w, id: recordId });
        result.elsewhere.push(w.name ?? w.key);
        // A lost race at a takeover is routine; at start or reload the operator may want to know who serves it.
        if (!takeover) this.logger.info('console served by another vspc node; this node takes it over if that node goes', { console: w.name ?? w.key, group, owner: err.context.owner, port: err.context.port, errorCode: err.code });
        return;
      }
      this.logger.error('cannot register console', { kind: w.kind, key: w.key, label: w.label, source: w.specText, ...errorFields(err) });
      result.failed.push(w.name ?? w.key);
      return;
    }
    try {
      this.byId.set(id, { group, wanted: w, hub, runner: this.start(hub, w) });
      result.added.push(hub.displayName);
      if (takeover) this.logger.info('console taken over: no other vspc node serves it', { console: hub.displayName, group, port: hub.identity.tcpPort });
    } catch (err) {
      this.logger.error('cannot start console source', { console: hub.displayName, source: w.specText, ...errorFields(err) });
      result.failed.push(hub.displayName);
    }
  }

  /** This node lost its database session and with it `hub`: stop its source, and wait to take it over again. */
  private onDisowned(hub: ConsoleHub): void {
    const id = idOf(hub.identity);
    const m = this.byId.get(id);
    if (!m || m.hub !== hub) return;
    this.byId.delete(id);
    m.runner.destroy('this vspc node no longer owns the console');
    this.elsewhere.set(id, { group: m.group, wanted: m.wanted, id: hub.identity.id });
    this.scheduleClaims();
  }

  /** Next takeover turn, in about `claimRetryMs` (a quarter of it when `soon`), jittered ±50%. */
  private scheduleClaims(soon = false): void {
    if (this.closed || this.claimTimer || this.elsewhere.size === 0 || !this.registry.ownership) return;
    const base = soon ? this.claimRetryMs / 4 : this.claimRetryMs;
    this.claimTimer = setTimeout(() => {
      this.claimTimer = null;
      this.claimTurn();
    }, base * (0.5 + Math.random()));
    this.claimTimer.unref();
  }

  /** One takeover turn: ask which `elsewhere` consoles nobody owns, claim up to CLAIM_BATCH of them. */
  private claimTurn(): void {
    const own = this.registry.ownership;
    // Without a session nothing can be claimed (nor would the calls answer): onRegained starts again.
    if (this.closed || !own || !own.available) return;
    let free: Set<number>;
    try {
      free = new Set(own.unowned([...this.elsewhere.values()].flatMap((e) => (e.id === null ? [] : [e.id]))));
    } catch (err) {
      this.logger.warn('cannot ask the database which consoles are free to take over', errorFields(err));
      this.scheduleClaims();
      return;
    }
    const result: SetResult = { added: [], removed: [], repointed: [], failed: [], elsewhere: [] };
    let tried = 0;
    let more = false;
    for (const [id, e] of [...this.elsewhere]) {
      if (e.id !== null && !free.has(e.id)) continue;
      if (tried === CLAIM_BATCH) {
        more = true;
        break;
      }
      tried++;
      this.elsewhere.delete(id);
      this.add(id, e.group, e.wanted, result, true);
    }
    if (result.failed.length > 0) this.logger.warn('consoles not taken over', { failed: result.failed });
    if (more) {
      // The rest on the next turns of the event loop, not in one long block.
      this.claimTimer = setTimeout(() => {
        this.claimTimer = null;
        this.claimTurn();
      }, 0);
      this.claimTimer.unref();
    } else {
      this.scheduleClaims();
    }
  }

  /** Try the console's endpoint now (a watcher saw its socket appear). */
  kick(w: Pick<WantedConsole, 'kind' | 'key' | 'label'>): boolean {
    return this.byId.get(idOf(w))?.runner.kick() ?? false;
  }

  /** Graceful: every endpoint drains and closes. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopClaims();
    const all = [...this.byId.values()];
    this.byId.clear();
    await Promise.all(all.map((m) => m.runner.close('vspc is shutting down')));
  }

  /** Abort every endpoint now. Idempotent. */
  destroy(): void {
    this.closed = true;
    this.stopClaims();
    for (const m of this.byId.values()) m.runner.destroy('vspc stopped');
    this.byId.clear();
  }

  private stopClaims(): void {
    if (this.claimTimer) clearTimeout(this.claimTimer);
    this.claimTimer = null;
    this.elsewhere.clear();
  }

  private start(hub: ConsoleHub, w: WantedConsole): EndpointRunner {
    return createEndpointWith(this.connectors, w.spec, hub, { ...this.endpointOptions, logger: this.logger });
  }
}
