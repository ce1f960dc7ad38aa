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
 */
import type { ConsoleHub } from '../domain/console-hub.js';
import type { ConsoleKind } from '../domain/identity.js';
import type { Logger } from '../domain/logger.js';
import type { Registry } from '../domain/registry.js';
import type { SourceSpec } from '../domain/source-spec.js';
import { errorFields } from '../errors.js';
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
}

function idOf(w: Pick<WantedConsole, 'kind' | 'key' | 'label'>): string {
  return `${w.kind}\0${w.key}\0${w.label}`;
}

export class ManagedConsoles {
  private readonly byId = new Map<string, Managed>();
  private closed = false;

  constructor(
    private readonly registry: Registry,
    private readonly connectors: ConnectorRegistry,
    private readonly logger: Logger,
    private readonly endpointOptions: Omit<EndpointContext, 'logger'> = {},
  ) {}

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
    const result: SetResult = { added: [], removed: [], repointed: [], failed: [] };
    if (this.closed) return result;
    const next = new Map(wanted.map((w) => [idOf(w), w]));
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
      let hub: ConsoleHub;
      try {
        hub = this.registry.register(w.kind, w.key, w.label, w.name).hub;
      } catch (err) {
        this.logger.error('cannot register console', { kind: w.kind, key: w.key, label: w.label, source: w.specText, ...errorFields(err) });
        result.failed.push(w.name ?? w.key);
        continue;
      }
      try {
        this.byId.set(id, { group, wanted: w, hub, runner: this.start(hub, w) });
        result.added.push(hub.displayName);
      } catch (err) {
        this.logger.error('cannot start console source', { console: hub.displayName, source: w.specText, ...errorFields(err) });
        result.failed.push(hub.displayName);
      }
    }
    return result;
  }

  /** Try the console's endpoint now (a watcher saw its socket appear). */
  kick(w: Pick<WantedConsole, 'kind' | 'key' | 'label'>): boolean {
    return this.byId.get(idOf(w))?.runner.kick() ?? false;
  }

  /** Graceful: every endpoint drains and closes. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.byId.values()];
    this.byId.clear();
    await Promise.all(all.map((m) => m.runner.close('vspc is shutting down')));
  }

  /** Abort every endpoint now. Idempotent. */
  destroy(): void {
    this.closed = true;
    for (const m of this.byId.values()) m.runner.destroy('vspc stopped');
    this.byId.clear();
  }

  private start(hub: ConsoleHub, w: WantedConsole): EndpointRunner {
    return createEndpointWith(this.connectors, w.spec, hub, { ...this.endpointOptions, logger: this.logger });
  }
}
