/**
 * Proxmox VE discovery: QEMU serial sockets in `/var/run/qemu-server` (a VM with
 * `serialN: socket` gets `<vmid>.serialN`, a unix socket QEMU serves while the VM runs),
 * names from `/etc/pve/qemu-server/<vmid>.conf` (`name: web01`).
 *
 * Identity: key = the vmid (decimal, as Proxmox writes it), label = `serial0`..`serial3`
 * from the socket name; the console is `proxmox:<vmid>:serial<N>`, the same across VM
 * restarts and renames. Spec: `unix:<socket path>` (vspc connects; QEMU serves).
 *
 * Cheap rescans: one readdir of the socket directory (its entry types tell sockets
 * from other files without a stat), one stat per VM conf, and a conf is read only when
 * its stat signature changed. Only the conf's main section is read: `[PENDING]` changes
 * and `[snapshot]` sections that follow it do not name the running VM.
 */
import { join } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import { parseSourceSpec } from '../../domain/source-spec.js';
import {
  DEFAULT_MAX_FILE_BYTES,
  DEFAULT_MTIME_GRANULARITY_MS,
  FileMemo,
  errorText,
  mapLimit,
  readBounded,
  statOrNull,
  type FileNote,
} from './files.js';
import { NoteLog, StateLog, readRootDir } from './notes.js';
import { sanitizeName } from './text.js';
import type { DiscoveredConsole, Discovery } from './types.js';

export const DEFAULT_PROXMOX_RUN_DIR = '/var/run/qemu-server';
export const DEFAULT_PROXMOX_CONF_DIR = '/etc/pve/qemu-server';

/** `<vmid>.serial<N>` → vmid and label; null for any other name (`.qmp`, `.pid`, `.vnc`...). */
export function parseSerialSocketName(name: string): { vmid: string; label: string } | null {
  const dot = name.indexOf('.serial');
  if (dot <= 0 || dot > 9) return null; // vmids have at most 9 digits
  const vmid = name.slice(0, dot);
  const n = name.slice(dot + '.serial'.length);
  if (n.length !== 1 || n < '0' || n > '9') return null;
  if (vmid[0] < '1' || vmid[0] > '9') return null; // no leading zero: one spelling per VM
  for (let i = 1; i < vmid.length; i++) if (vmid[i] < '0' || vmid[i] > '9') return null;
  return { vmid, label: `serial${n}` };
}

/**
 * The VM name from a qemu-server conf: the last `name:` line of the main section (the
 * lines before the first `[section]` header). Null when there is none or it is empty
 * after sanitising. Linear in the text; any bytes are tolerated.
 */
export function parseProxmoxConfName(text: string): string | null {
  let name: string | null = null;
  let from = 0;
  while (from <= text.length) {
    let to = text.indexOf('\n', from);
    if (to < 0) to = text.length;
    const line = text.slice(from, to).trim();
    from = to + 1;
    if (line.startsWith('[')) break; // [PENDING], [special:cloudinit], [snapshot name]
    if (line.startsWith('#')) continue; // the description
    const colon = line.indexOf(':');
    if (colon < 0 || line.slice(0, colon).trimEnd() !== 'name') continue;
    name = line.slice(colon + 1);
  }
  return name === null ? null : sanitizeName(name);
}

export interface ProxmoxDiscoveryOptions {
  logger: Logger;
  /** Where QEMU's sockets live (default /var/run/qemu-server). */
  runDir?: string;
  /** Where the VM confs live (default /etc/pve/qemu-server: this node's VMs). */
  confDir?: string;
  /** Confs larger than this are not read (name null, log line); default 1 MiB. */
  maxFileBytes?: number;
  /** See files.ts DEFAULT_MTIME_GRANULARITY_MS. */
  mtimeGranularityMs?: number;
}

export class ProxmoxDiscovery implements Discovery {
  readonly kind = 'proxmox' as const;
  readonly description: string;
  readonly runDir: string;
  readonly confDir: string;
  private readonly logger: Logger;
  private readonly maxFileBytes: number;
  private readonly memo: FileMemo<string | null>;
  private readonly notes: NoteLog;
  private readonly rootState: StateLog;
  private dirs: string[] = [];
  private reads = 0;

  constructor(options: ProxmoxDiscoveryOptions) {
    this.runDir = options.runDir ?? DEFAULT_PROXMOX_RUN_DIR;
    this.confDir = options.confDir ?? DEFAULT_PROXMOX_CONF_DIR;
    this.description = `proxmox ${this.runDir}`;
    this.logger = options.logger.child({ discovery: 'proxmox' });
    this.maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.memo = new FileMemo(options.mtimeGranularityMs ?? DEFAULT_MTIME_GRANULARITY_MS);
    this.notes = new NoteLog(this.logger);
    this.rootState = new StateLog(this.logger);
  }

  get filesRead(): number {
    return this.reads;
  }

  watchDirs(): readonly string[] {
    return this.dirs;
  }

  async scan(): Promise<DiscoveredConsole[]> {
    const entries = await readRootDir(this.runDir, this.rootState, 'Proxmox socket directory', 'no Proxmox consoles');
    if (entries === null) {
      this.dirs = [];
      return [];
    }

    // Sockets by VM, in vmid then label order (readdir order is the filesystem's).
    const byVm = new Map<string, Array<{ label: string; path: string }>>();
    for (const e of entries) {
      const parsed = parseSerialSocketName(e.name);
      if (parsed === null || !e.isSocket()) continue;
      let list = byVm.get(parsed.vmid);
      if (!list) byVm.set(parsed.vmid, (list = []));
      list.push({ label: parsed.label, path: join(this.runDir, e.name) });
    }
    const vmids = [...byVm.keys()].sort((a, b) => Number(a) - Number(b));

    const confDirSt = await statOrNull(this.confDir).catch(() => null);
    this.dirs = confDirSt?.isDirectory() ? [this.runDir, this.confDir] : [this.runDir];

    const confs = new Set<string>();
    const bad = new Set<string>();
    const perVm = await mapLimit(vmids, 16, async (vmid) => {
      const confPath = join(this.confDir, `${vmid}.conf`);
      confs.add(confPath);
      const name = await this.confName(confPath);
      const out: DiscoveredConsole[] = [];
      for (const s of byVm.get(vmid)!.sort((a, b) => (a.label < b.label ? -1 : 1))) {
        try {
          const spec = parseSourceSpec(`unix:${s.path}`);
          out.push(Object.freeze({ kind: 'proxmox', key: vmid, label: s.label, name, spec, origin: s.path }));
        } catch (err) {
          bad.add(s.path);
          this.notes.report(s.path, [{ level: 'warn', message: 'Proxmox serial socket not usable as a source', fields: { error: (err as Error).message } }]);
        }
      }
      return out;
    });
    this.memo.retain(confs);
    this.notes.retain(new Set([...confs, ...bad]));
    return perVm.flat();
  }

  /** The name in a conf, from the memo when the conf is unchanged. */
  private async confName(path: string): Promise<string | null> {
    let st;
    try {
      st = await statOrNull(path);
    } catch (err) {
      this.notes.report(path, [{ level: 'warn', message: 'cannot stat Proxmox VM conf; name unknown', fields: { error: errorText(err) } }]);
      return null;
    }
    if (st === null) {
      // A VM whose conf lives on another node's directory (migrating) or was removed.
      this.notes.report(path, [{ level: 'debug', message: 'Proxmox VM conf not found; name unknown' }]);
      return null;
    }
    const cached = this.memo.get(path, st);
    if (cached !== undefined) return cached;
    const readAt = Date.now();
    this.reads++;
    const r = await readBounded(path, this.maxFileBytes);
    const notes: FileNote[] = [];
    let name: string | null = null;
    if (r.ok) name = parseProxmoxConfName(r.text);
    else notes.push({ level: 'warn', message: `Proxmox VM conf not read: ${r.reason}; name unknown`, fields: { detail: r.detail } });
    this.notes.report(path, notes);
    this.memo.set(path, r.signature, r.ok ? r.mtimeMs : st.mtimeMs, readAt, name);
    return name;
  }
}
