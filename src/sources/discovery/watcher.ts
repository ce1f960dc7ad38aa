/**
 * The combined watcher: rescans every provider and emits what changed since the
 * previous scan. Events are always the difference between two successive full scans,
 * so a console is added once, removed once, and never reported twice however many
 * filesystem events or timer ticks led to the scan.
 *
 * Scans are triggered by `scan()`, by filesystem events on the providers' directories
 * (debounced: the first event starts a short timer, later ones ride along), and by a
 * periodic rescan (default every 30 s), because fs.watch misses events (FUSE
 * filesystems such as Proxmox's /etc/pve, directories recreated, inotify limits).
 * Scans never overlap: a request during a scan runs one more scan after it.
 *
 * A provider whose scan fails as a whole (its root directory unreadable) keeps its
 * previous consoles: a transient EACCES or EIO must not drop every console and re-add
 * it a moment later. Two consoles with one identity (two globs matching one path, a
 * stale libvirt file) keep the first, in provider order, with a warning.
 *
 * Events (listeners run synchronously; one that throws is logged, not propagated):
 * - `added` (console): new identity.
 * - `removed` (console): the identity is gone (VM stopped): the last known descriptor.
 * - `changed` (console, previous): same identity, another name or spec (a rename, a
 *   new pty after a restart).
 * - `scanned` (summary): after every completed scan, with or without changes.
 * Within one scan, removals come first, then changes, then additions; `current()`
 * already returns the new state while they are emitted.
 */
import { EventEmitter } from 'node:events';
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import { formatSourceSpec } from '../../domain/source-spec.js';
import { errorText } from './files.js';
import { discoveredId, type DiscoveredConsole, type Discovery } from './types.js';

/** What started a scan: `rewatch` is the scan after a directory watch was (re)created. */
export type ScanReason = 'initial' | 'manual' | 'watch' | 'rewatch' | 'periodic';

export interface ScanSummary {
  reason: ScanReason;
  /** Consoles after the scan. */
  consoles: number;
  added: number;
  removed: number;
  changed: number;
  /** Files read (not only stat'ed) by the providers during this scan. */
  filesRead: number;
  durationMs: number;
  /** Descriptions of providers whose scan failed (their previous consoles kept). */
  failed: string[];
}

export interface DiscoveryEvents {
  added: [console: DiscoveredConsole];
  removed: [console: DiscoveredConsole];
  changed: [console: DiscoveredConsole, previous: DiscoveredConsole];
  scanned: [summary: ScanSummary];
}

export interface DiscoveryWatcherOptions {
  logger: Logger;
  /** Periodic full rescan (default 30 s; 0 = none, only filesystem events and `scan()`). */
  rescanIntervalMs?: number;
  /** Delay between the first filesystem event and the scan it triggers (default 250 ms). */
  debounceMs?: number;
  /** Watch the providers' directories with fs.watch (default true). */
  watchFs?: boolean;
}

export const DEFAULT_RESCAN_INTERVAL_MS = 30_000;
export const DEFAULT_DEBOUNCE_MS = 250;

/** Same identity, same content (what `changed` is about: name and spec). */
export function sameConsole(a: DiscoveredConsole, b: DiscoveredConsole): boolean {
  return a.name === b.name && formatSourceSpec(a.spec) === formatSourceSpec(b.spec);
}

interface WatchedDir {
  watcher: FSWatcher;
  /** The directory's inode when watched: a directory recreated under another inode needs a new watch. */
  ino: number;
}

export class DiscoveryWatcher extends EventEmitter<DiscoveryEvents> {
  private readonly discoveries: readonly Discovery[];
  private readonly logger: Logger;
  private readonly rescanIntervalMs: number;
  private readonly debounceMs: number;
  private readonly watchFs: boolean;
  /** Each provider's last successful result. */
  private readonly lastResults: DiscoveredConsole[][];
  private state = new Map<string, DiscoveredConsole>();
  private inFlight: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private watching: Promise<DiscoveredConsole[]> | null = null;
  private isClosed = false;
  private interval: ReturnType<typeof setInterval> | null = null;
  private debounce: ReturnType<typeof setTimeout> | null = null;
  private debounceReason: ScanReason = 'watch';
  private readonly dirWatchers = new Map<string, WatchedDir>();
  private readonly watchFailures = new Set<string>();
  private lastDuplicates = '';
  private lastFailed = '';

  constructor(discoveries: readonly Discovery[], options: DiscoveryWatcherOptions) {
    super();
    this.discoveries = [...discoveries];
    this.logger = options.logger.child({ component: 'discovery' });
    this.rescanIntervalMs = options.rescanIntervalMs ?? DEFAULT_RESCAN_INTERVAL_MS;
    this.debounceMs = options.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    this.watchFs = options.watchFs ?? true;
    this.lastResults = this.discoveries.map(() => []);
    if (!(this.rescanIntervalMs >= 0) || !(this.debounceMs >= 0)) throw new RangeError('discovery intervals must be >= 0');
  }

  /** The consoles as of the last completed scan, in provider order. */
  current(): DiscoveredConsole[] {
    return [...this.state.values()];
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * A full rescan now (joins one already queued); resolves with the consoles after it.
   * After close() it scans nothing and resolves with the last known consoles.
   */
  async scan(): Promise<DiscoveredConsole[]> {
    await this.request('manual');
    return this.current();
  }

  /**
   * Starts watching: an initial scan (its consoles emitted as `added`), then filesystem
   * watches and the periodic rescan. Resolves with the consoles of the initial scan.
   * Attach listeners first. Calling it again returns the same promise; after close()
   * it starts nothing and resolves with the last known consoles.
   */
  async watch(): Promise<DiscoveredConsole[]> {
    if (this.isClosed) return this.current();
    this.watching ??= this.start();
    return this.watching;
  }

  private async start(): Promise<DiscoveredConsole[]> {
    await this.request('initial');
    if (!this.isClosed && this.rescanIntervalMs > 0) {
      this.interval = setInterval(() => void this.request('periodic'), this.rescanIntervalMs);
      this.interval.unref?.();
    }
    return this.current();
  }

  /** Stops timers and watches; a scan in flight completes without emitting. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    if (this.interval) clearInterval(this.interval);
    if (this.debounce) clearTimeout(this.debounce);
    this.interval = null;
    this.debounce = null;
    for (const w of this.dirWatchers.values()) w.watcher.close();
    this.dirWatchers.clear();
  }

  /** Directories currently watched (for tests and `show`). */
  watchedDirs(): string[] {
    return [...this.dirWatchers.keys()].sort();
  }

  private request(reason: ScanReason): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    if (!this.inFlight) {
      this.inFlight = this.runScan(reason)
        .catch((err: unknown) => {
          // A bug (a provider returning something unusable): logged, never an unhandled rejection.
          this.logger.error('discovery scan failed', { error: errorText(err), stack: (err as Error)?.stack });
        })
        .finally(() => {
          this.inFlight = null;
        });
      return this.inFlight;
    }
    // One scan queued behind the running one serves every request made meanwhile:
    // it starts after them, so it sees what they were asked about.
    this.queued ??= this.inFlight.then(() => {
      this.queued = null;
      return this.request(reason);
    });
    return this.queued;
  }

  private async runScan(reason: ScanReason): Promise<void> {
    const started = Date.now();
    const readsBefore = this.totalReads();
    const failedAt = new Set<number>();
    await Promise.all(
      this.discoveries.map(async (d, i) => {
        try {
          this.lastResults[i] = await d.scan();
        } catch (err) {
          failedAt.add(i);
          // The provider logged the failure itself (once per state); this is the watcher's view.
          this.logger.debug('discovery provider scan failed; keeping its previous consoles', { provider: d.description, error: errorText(err) });
        }
      }),
    );
    if (this.isClosed) return;
    const failed = this.discoveries.filter((_, i) => failedAt.has(i)).map((d) => d.description);

    const next = new Map<string, DiscoveredConsole>();
    const duplicates: string[] = [];
    for (const list of this.lastResults) {
      for (const c of list) {
        const id = discoveredId(c);
        const first = next.get(id);
        if (first) duplicates.push(`${id} (${c.origin}; kept ${first.origin})`);
        else next.set(id, c);
      }
    }
    this.noteOnce('lastDuplicates', duplicates.join('\n'), () =>
      this.logger.warn('consoles discovered twice under one identity; the first is kept', { duplicates: duplicates.slice(0, 20), count: duplicates.length }),
    );
    this.noteOnce('lastFailed', failed.join('\n'), () => this.logger.warn('discovery providers failed; their previous consoles are kept', { providers: failed }));

    const previous = this.state;
    const removed: DiscoveredConsole[] = [];
    const changed: Array<[DiscoveredConsole, DiscoveredConsole]> = [];
    const added: DiscoveredConsole[] = [];
    for (const [id, c] of previous) if (!next.has(id)) removed.push(c);
    for (const [id, c] of next) {
      const before = previous.get(id);
      if (!before) added.push(c);
      else if (!sameConsole(before, c)) changed.push([c, before]);
    }
    this.state = next;

    const summary: ScanSummary = {
      reason,
      consoles: next.size,
      added: added.length,
      removed: removed.length,
      changed: changed.length,
      filesRead: this.totalReads() - readsBefore,
      durationMs: Date.now() - started,
      failed,
    };
    const changes = added.length + removed.length + changed.length;
    this.logger[changes > 0 ? 'info' : 'debug']('discovery scan', { ...summary });
    for (const c of removed) this.safeEmit('removed', c);
    for (const [c, before] of changed) this.safeEmit('changed', c, before);
    for (const c of added) this.safeEmit('added', c);
    // A watch set up now may have missed what changed since this scan's readdir: one
    // more (debounced) scan covers that gap. Only when a watch was (re)created.
    if (this.watching !== null && this.watchFs && (await this.reconcileWatches())) this.soon('rewatch');
    if (this.isClosed) return;
    this.safeEmit('scanned', summary);
  }

  private totalReads(): number {
    return this.discoveries.reduce((n, d) => n + d.filesRead, 0);
  }

  private noteOnce(field: 'lastDuplicates' | 'lastFailed', value: string, log: () => void): void {
    if (this[field] === value) return;
    this[field] = value;
    if (value !== '') log();
  }

  private safeEmit<K extends keyof DiscoveryEvents>(event: K, ...args: DiscoveryEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: DiscoveryEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.logger.error('a discovery listener threw', { event, error: errorText(err), stack: (err as Error)?.stack });
    }
  }

  /** A scan after the debounce delay; requests meanwhile ride along (a filesystem event names the reason). */
  private soon(reason: 'watch' | 'rewatch'): void {
    if (this.isClosed) return;
    if (this.debounce) {
      if (reason === 'watch') this.debounceReason = 'watch';
      return;
    }
    this.debounceReason = reason;
    this.debounce = setTimeout(() => {
      this.debounce = null;
      void this.request(this.debounceReason);
    }, this.debounceMs);
    this.debounce.unref?.();
  }

  /** Watches the providers' directories; rewatches one recreated since; drops the rest. True when a watch was created. */
  private async reconcileWatches(): Promise<boolean> {
    let created = false;
    const wanted = new Set(this.discoveries.flatMap((d) => d.watchDirs()));
    for (const [dir, w] of this.dirWatchers) {
      if (wanted.has(dir)) continue;
      w.watcher.close();
      this.dirWatchers.delete(dir);
    }
    for (const dir of wanted) {
      let ino: number;
      try {
        ino = (await stat(dir)).ino;
      } catch {
        ino = -1;
      }
      if (this.isClosed) return false;
      const existing = this.dirWatchers.get(dir);
      if (existing && existing.ino === ino) continue;
      if (existing) {
        existing.watcher.close();
        this.dirWatchers.delete(dir);
      }
      if (ino === -1) continue;
      try {
        const self = basename(dir);
        const watcher = fsWatch(dir, { persistent: false }, (_event, file) => {
          // An event naming the directory itself: it was deleted or moved, and inotify
          // watches the old inode, which a recreated directory may even reuse. Drop the
          // watch; the scan below watches whatever is at the path now. (A file inside
          // with the directory's own name only costs a rewatch.)
          if (file === self && this.dirWatchers.get(dir)?.watcher === watcher) {
            watcher.close();
            this.dirWatchers.delete(dir);
          }
          this.soon('watch');
        });
        watcher.on('error', (err) => {
          this.logger.debug('directory watch ended; the periodic rescan continues', { dir, error: errorText(err) });
          watcher.close();
          if (this.dirWatchers.get(dir)?.watcher === watcher) this.dirWatchers.delete(dir);
        });
        this.dirWatchers.set(dir, { watcher, ino });
        this.watchFailures.delete(dir);
        created = true;
      } catch (err) {
        // ENOSPC (inotify watch limit), EACCES, ...: the periodic rescan still covers it.
        if (!this.watchFailures.has(dir)) {
          this.watchFailures.add(dir);
          this.logger.warn('cannot watch directory; relying on the periodic rescan', { dir, error: errorText(err) });
        }
      }
    }
    return created;
  }
}

/** Convenience: a watcher over the given providers, already watching. */
export async function watchDiscoveries(
  discoveries: readonly Discovery[],
  options: DiscoveryWatcherOptions,
  listeners: Partial<{ [K in keyof DiscoveryEvents]: (...args: DiscoveryEvents[K]) => void }> = {},
): Promise<DiscoveryWatcher> {
  const w = new DiscoveryWatcher(discoveries, options);
  for (const [event, fn] of Object.entries(listeners)) if (fn) w.on(event as keyof DiscoveryEvents, fn as never);
  await w.watch();
  return w;
}
