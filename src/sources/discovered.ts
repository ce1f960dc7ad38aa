/**
 * Discovered consoles made real: the discovery providers the configuration asks for
 * (Proxmox, libvirt, path patterns) watched as one, and after every scan the set of
 * consoles they found handed to ManagedConsoles as the `discovery` group. A console
 * that disappears (its VM stopped) is *stopped*, not forgotten: its record and sticky
 * port stay, so it comes back on the same port when the VM starts again.
 */
import type { Logger } from '../domain/logger.js';
import { formatSourceSpec } from '../domain/source-spec.js';
import { errorFields } from '../errors.js';
import { DiscoveryWatcher, GlobDiscovery, LibvirtDiscovery, ProxmoxDiscovery, type Discovery, type DiscoveredConsole } from './discovery/index.js';
import type { ManagedConsoles, WantedConsole } from './managed.js';

export interface DiscoverySettings {
  proxmoxRunDir: string | null;
  proxmoxConfDir: string;
  libvirtRunDir: string | null;
  discoverGlobs: ReadonlyArray<{ glob: string; source: string; name?: string; where?: string }>;
  discoveryRescanMs: number;
}

function wanted(c: DiscoveredConsole): WantedConsole {
  return { kind: c.kind, key: c.key, label: c.label, name: c.name, spec: c.spec, specText: formatSourceSpec(c.spec) };
}

export class DiscoveredConsoles {
  private watcher: DiscoveryWatcher | null = null;
  /** A restart (reload) waits for the previous start to settle. */
  private running: Promise<void> = Promise.resolve();

  constructor(
    private readonly managed: ManagedConsoles,
    private readonly logger: Logger,
  ) {}

  /** The providers the settings ask for (throws ConfigError for a bad `discover:` pattern). */
  static providers(s: DiscoverySettings, logger: Logger): Discovery[] {
    const out: Discovery[] = [];
    if (s.proxmoxRunDir) out.push(new ProxmoxDiscovery({ logger, runDir: s.proxmoxRunDir, confDir: s.proxmoxConfDir }));
    if (s.libvirtRunDir) out.push(new LibvirtDiscovery({ logger, runDir: s.libvirtRunDir }));
    s.discoverGlobs.forEach((g, i) =>
      out.push(new GlobDiscovery({ logger, pattern: g.glob, spec: g.source, ...(g.name ? { name: g.name } : {}), field: g.where ?? `discover.${i}` })),
    );
    return out;
  }

  /** (Re)starts discovery with these settings; resolves after the first scan was applied. */
  restart(s: DiscoverySettings): Promise<void> {
    this.running = this.running.then(() => this.doRestart(s));
    return this.running;
  }

  private async doRestart(s: DiscoverySettings): Promise<void> {
    await this.watcher?.close();
    this.watcher = null;
    const providers = DiscoveredConsoles.providers(s, this.logger);
    if (providers.length === 0) {
      this.apply([]);
      return;
    }
    const watcher = new DiscoveryWatcher(providers, { logger: this.logger, rescanIntervalMs: s.discoveryRescanMs });
    this.watcher = watcher;
    watcher.on('scanned', () => {
      if (this.watcher === watcher) this.apply(watcher.current());
    });
    try {
      this.apply(await watcher.watch());
    } catch (err) {
      this.logger.error('console discovery failed to start', errorFields(err));
    }
    this.logger.info('console discovery running', { providers: providers.map((p) => p.description), consoles: watcher.current().length });
  }

  private apply(found: readonly DiscoveredConsole[]): void {
    const r = this.managed.set('discovery', found.map(wanted), 'stop');
    if (r.added.length + r.removed.length + r.repointed.length + r.failed.length > 0) this.logger.info('discovered consoles changed', { ...r });
  }

  /** Stop watching (the endpoints are ManagedConsoles'). Idempotent. */
  async close(): Promise<void> {
    const w = this.watcher;
    this.watcher = null;
    await w?.close();
  }
}
