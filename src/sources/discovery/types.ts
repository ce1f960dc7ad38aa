/**
 * Console discovery: the serial consoles a hypervisor host exposes, found by reading
 * the host's own bookkeeping (Proxmox's socket directory and VM confs, libvirt's
 * runtime domain XML, operator-given path patterns) rather than declared one by one.
 *
 * Each provider (a `Discovery`) turns the current state of the host into a list of
 * `DiscoveredConsole`s; `DiscoveryWatcher` (watcher.ts) rescans providers and emits the
 * differences between successive scans as `added` / `removed` / `changed` events.
 *
 * Identity (kind, key, label) is stable across VM restarts, so that the registry keeps
 * a console's sticky port; the name and the spec may change (rename, new pty).
 */
import type { SourceSpec } from '../../domain/source-spec.js';

/** Which provider found a console; becomes the registry's `ConsoleKind`. */
export type DiscoveryKind = 'proxmox' | 'libvirt' | 'glob';

export interface DiscoveredConsole {
  readonly kind: DiscoveryKind;
  /** Stable within the kind: Proxmox vmid, libvirt domain UUID (32 lowercase hex), glob: the path. */
  readonly key: string;
  /** Which serial port of the machine: `serial0`, a libvirt alias, '' for glob. */
  readonly label: string;
  /** Display name (sanitised), null when unknown. May change without changing identity. */
  readonly name: string | null;
  /** Where vspc finds the console's bytes. May change (a pty path after a VM restart). */
  readonly spec: SourceSpec;
  /** The file the console was found in (socket, conf or XML): for logs and `show`. */
  readonly origin: string;
}

/** One provider of discovered consoles. */
export interface Discovery {
  readonly kind: DiscoveryKind;
  /** For log lines: the kind and the directory or pattern it reads. */
  readonly description: string;
  /**
   * A full rescan. A missing root directory means "no consoles" (the hypervisor is not
   * running or not installed); any other failure of the provider as a whole (root
   * unreadable) rejects, and the watcher keeps the provider's previous consoles.
   * Problems with single files (too big, malformed, unreadable) are logged once per
   * version of the file and leave that file's consoles out.
   */
  scan(): Promise<DiscoveredConsole[]>;
  /** Directories worth watching for changes, as of the last scan (existing ones only). */
  watchDirs(): readonly string[];
  /** Files read (not just stat'ed) since construction: rescans of an unchanged host read none. */
  readonly filesRead: number;
}

/** `kind:key:label` — the identity as one string (map key, log field). */
export function discoveredId(c: Pick<DiscoveredConsole, 'kind' | 'key' | 'label'>): string {
  return `${c.kind}:${c.key}:${c.label}`;
}
