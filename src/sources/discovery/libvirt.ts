/**
 * libvirt discovery: the serial consoles of running QEMU domains, from libvirt's
 * runtime status files (`/run/libvirt/qemu/<name>.xml`: a `<domstatus>` wrapping the
 * live `<domain>`). Only the runtime XML names the pty a `type='pty'` serial got; the
 * file exists while the domain runs, so domains appear and disappear with it.
 *
 * Identity: key = the domain `<uuid>` (32 lowercase hex digits), label = the device's
 * `<alias name=...>` (libvirt assigns `serial0`, `console1`, ...), else `serial<N>` /
 * `console<N>` by position among the elements of that name. Name = `<name>`.
 *
 * | XML                                                        | spec                  |
 * |------------------------------------------------------------|-----------------------|
 * | `<serial type='unix'><source mode='bind' path='P'/>`       | `unix:P` (QEMU listens) |
 * | `<serial type='unix'><source mode='connect' path='P'/>`    | `unix-listen:P` (QEMU connects; also when mode is absent, libvirt's default) |
 * | `<serial type='pty'><source path='/dev/pts/N'/>`           | `device:/dev/pts/N`   |
 *
 * A `<console>` that is the same port as a `<serial>` (libvirt adds one for serial
 * port 0: `<target type='serial' port='0'/>`, same alias and pty) yields no second
 * console; a console of another target type (virtio, sclp) is a console of its own.
 * Other chardev types (file, tcp, udp, dev, spicevmc, ...) are left out (debug line).
 */
import { join } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import { parseSourceSpec, type SourceSpec } from '../../domain/source-spec.js';
import { normalizeUuid } from '../../util/uuid.js';
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
import { DEFAULT_XML_LIMITS, scanXml, type XmlLimits } from './xml.js';

export const DEFAULT_LIBVIRT_RUN_DIR = '/run/libvirt/qemu';

/** Serial and console elements read per domain (libvirt allows a handful; a flood is cut). */
const MAX_CHARDEVS = 64;
/** Longest `<name>`/`<uuid>` text kept while scanning. */
const MAX_TEXT = 4096;
/** Longest alias used as a label. */
const MAX_ALIAS = 64;

export interface LibvirtChardev {
  element: 'serial' | 'console';
  /** Position among the domain's elements of the same name. */
  index: number;
  type: string | null;
  /** `<console tty=...>` (older libvirt puts the pty there as well). */
  tty: string | null;
  sources: Array<{ mode: string | null; path: string | null }>;
  targetType: string | null;
  targetPort: string | null;
  alias: string | null;
}

export interface LibvirtDomain {
  name: string | null;
  uuid: string | null;
  chardevs: LibvirtChardev[];
}

export type LibvirtParse = { ok: true; domain: LibvirtDomain; notes: FileNote[] } | { ok: false; error: string };

/**
 * Reads the first `<domain>` (top level, or inside `<domstatus>`) of a domain or
 * runtime status XML: its direct `<name>` and `<uuid>`, and the `<serial>`/`<console>`
 * children of its `<devices>`.
 */
export function parseLibvirtDomain(text: string, limits: XmlLimits = DEFAULT_XML_LIMITS): LibvirtParse {
  let domainDepth = -1; // path length at which <domain> sits; -1 before, -2 after it closed
  let name: string | null = null;
  let uuid: string | null = null;
  const chardevs: LibvirtChardev[] = [];
  const counts = { serial: 0, console: 0 };
  let dropped = 0;
  let current: LibvirtChardev | null = null;
  let capture: 'name' | 'uuid' | null = null;

  const inDomain = (path: readonly string[], rel: string[]): boolean => {
    if (domainDepth < 0 || path.length !== domainDepth + 1 + rel.length) return false;
    for (let k = 0; k < rel.length; k++) if (path[domainDepth + 1 + k] !== rel[k]) return false;
    return true;
  };

  const result = scanXml(
    text,
    {
      open(el, attrs, path) {
        if (domainDepth === -1) {
          if (el === 'domain' && (path.length === 0 || (path.length === 1 && path[0] === 'domstatus'))) domainDepth = path.length;
          return;
        }
        if (inDomain(path, [])) {
          if (el === 'name' && name === null) {
            name = '';
            capture = 'name';
          } else if (el === 'uuid' && uuid === null) {
            uuid = '';
            capture = 'uuid';
          }
          return;
        }
        if (inDomain(path, ['devices']) && (el === 'serial' || el === 'console')) {
          const index = counts[el]++;
          if (chardevs.length >= MAX_CHARDEVS) {
            dropped++;
            return;
          }
          current = {
            element: el,
            index,
            type: attrs.get('type') ?? null,
            tty: attrs.get('tty') ?? null,
            sources: [],
            targetType: null,
            targetPort: null,
            alias: null,
          };
          chardevs.push(current);
          return;
        }
        if (current && path.length === domainDepth + 3 && path[domainDepth + 2] === current.element) {
          if (el === 'source' && current.sources.length < 8) current.sources.push({ mode: attrs.get('mode') ?? null, path: attrs.get('path') ?? null });
          else if (el === 'target' && current.targetType === null && current.targetPort === null) {
            current.targetType = attrs.get('type') ?? null;
            current.targetPort = attrs.get('port') ?? null;
          } else if (el === 'alias' && current.alias === null) current.alias = attrs.get('name') ?? null;
        }
      },
      close(el, path) {
        if (domainDepth >= 0 && path.length === domainDepth && el === 'domain') domainDepth = -2;
        else if (capture !== null && domainDepth >= 0 && path.length === domainDepth + 1 && el === capture) capture = null;
        else if (current && path.length === domainDepth + 2 && el === current.element) current = null;
      },
      text(t, path) {
        // Only the text directly inside the first <name>/<uuid> of the domain.
        if (capture === null || !inDomain(path, [capture])) return;
        if (capture === 'name' && name !== null && name.length < MAX_TEXT) name += t.slice(0, MAX_TEXT - name.length);
        if (capture === 'uuid' && uuid !== null && uuid.length < MAX_TEXT) uuid += t.slice(0, MAX_TEXT - uuid.length);
      },
    },
    limits,
  );
  if (!result.ok) return { ok: false, error: `${result.error} (at character ${result.offset})` };
  if (domainDepth === -1) return { ok: false, error: 'no <domain> element' };
  const notes: FileNote[] = [];
  if (dropped > 0) notes.push({ level: 'warn', message: `libvirt domain has more than ${MAX_CHARDEVS} serial/console devices; the rest are ignored`, fields: { dropped } });
  return { ok: true, domain: { name, uuid, chardevs }, notes };
}

/** A usable label from an alias: short, printable, no separators that confuse `kind:key:label`. */
function aliasLabel(alias: string | null): string | null {
  if (alias === null) return null;
  const a = sanitizeName(alias, MAX_ALIAS + 1);
  if (a === null || a.length > MAX_ALIAS) return null;
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i);
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f || c === 0x2e;
    if (!ok) return null;
  }
  return a;
}

function chardevPath(d: LibvirtChardev): { path: string | null; mode: string | null } {
  const withPath = d.sources.find((s) => s.path !== null && s.path !== '');
  if (withPath) return { path: withPath.path, mode: withPath.mode };
  if (d.type === 'pty' && d.tty) return { path: d.tty, mode: null };
  return { path: null, mode: d.sources[0]?.mode ?? null };
}

/** The spec vspc uses for one chardev, or why there is none. */
function chardevSpec(d: LibvirtChardev): { spec: SourceSpec } | { skip: string; level: 'debug' | 'warn' } {
  const { path, mode } = chardevPath(d);
  let text: string;
  switch (d.type) {
    case 'unix':
      if (path === null) return { skip: 'unix chardev without a source path', level: 'warn' };
      text = `${mode === 'bind' ? 'unix' : 'unix-listen'}:${path}`;
      break;
    case 'pty':
      // No path yet: the domain is starting (or this is an inactive config).
      if (path === null) return { skip: 'pty chardev without a path (not running?)', level: 'debug' };
      text = `device:${path}`;
      break;
    default:
      return { skip: `chardev type '${String(d.type).slice(0, 32)}' is not discovered (unix and pty are)`, level: 'debug' };
  }
  try {
    const spec = parseSourceSpec(text);
    // The path must survive the spec syntax unchanged (a '?' or trailing blank would not).
    if ((spec.type === 'unix' || spec.type === 'unix-listen' || spec.type === 'device') && spec.path !== path) {
      return { skip: 'chardev path cannot be written as a source spec', level: 'warn' };
    }
    return { spec };
  } catch (err) {
    return { skip: `chardev path rejected: ${(err as Error).message}`, level: 'warn' };
  }
}

/** Whether a `<console>` is the same port as one of the domain's `<serial>`s. */
function duplicatesSerial(c: LibvirtChardev, serials: readonly LibvirtChardev[]): boolean {
  const cPath = chardevPath(c).path;
  for (const s of serials) {
    if (c.alias !== null && c.alias === s.alias) return true;
    const sPath = chardevPath(s).path;
    if (cPath !== null && cPath === sPath) return true;
    // <console><target type='serial' port='N'/> is serial port N (type absent: serial on x86).
    if (c.targetType === null || c.targetType === 'serial') {
      const sPort = s.targetPort ?? String(s.index);
      if ((c.targetPort ?? '0') === sPort) return true;
    }
  }
  return false;
}

/** The consoles of one parsed domain, with notes about what was left out. */
export function libvirtConsoles(domain: LibvirtDomain, origin: string): { consoles: DiscoveredConsole[]; notes: FileNote[] } {
  const notes: FileNote[] = [];
  const uuid = domain.uuid === null ? undefined : normalizeUuid(domain.uuid.trim());
  if (uuid === undefined) {
    notes.push({ level: 'warn', message: 'libvirt domain XML without a valid <uuid>; its consoles are ignored' });
    return { consoles: [], notes };
  }
  const name = domain.name === null ? null : sanitizeName(domain.name);
  const serials = domain.chardevs.filter((d) => d.element === 'serial');
  const consoles: DiscoveredConsole[] = [];
  const labels = new Set<string>();
  for (const d of domain.chardevs) {
    if (d.element === 'console' && duplicatesSerial(d, serials)) continue;
    const label = aliasLabel(d.alias) ?? `${d.element}${d.index}`;
    const where = { uuid, device: `${d.element}[${d.index}]`, label };
    const r = chardevSpec(d);
    if ('skip' in r) {
      notes.push({ level: r.level, message: `libvirt ${d.element} not discovered: ${r.skip}`, fields: where });
      continue;
    }
    if (labels.has(label)) {
      notes.push({ level: 'warn', message: `libvirt ${d.element} has the label of an earlier device; ignored`, fields: where });
      continue;
    }
    labels.add(label);
    consoles.push(Object.freeze({ kind: 'libvirt', key: uuid, label, name, spec: r.spec, origin }));
  }
  return { consoles, notes };
}

export interface LibvirtDiscoveryOptions {
  logger: Logger;
  /** Where libvirt keeps runtime domain XML (default /run/libvirt/qemu). */
  runDir?: string;
  /** Files larger than this are skipped with a log line (default 1 MiB). */
  maxFileBytes?: number;
  /** See files.ts DEFAULT_MTIME_GRANULARITY_MS. */
  mtimeGranularityMs?: number;
  /** Most XML files read per scan (default 10,000). */
  maxFiles?: number;
  xmlLimits?: XmlLimits;
}

export class LibvirtDiscovery implements Discovery {
  readonly kind = 'libvirt' as const;
  readonly description: string;
  readonly runDir: string;
  private readonly logger: Logger;
  private readonly maxFileBytes: number;
  private readonly maxFiles: number;
  private readonly xmlLimits: XmlLimits;
  private readonly memo: FileMemo<DiscoveredConsole[]>;
  private readonly notes: NoteLog;
  private readonly rootState: StateLog;
  private dirs: string[] = [];
  private reads = 0;

  constructor(options: LibvirtDiscoveryOptions) {
    this.runDir = options.runDir ?? DEFAULT_LIBVIRT_RUN_DIR;
    this.description = `libvirt ${this.runDir}`;
    this.logger = options.logger.child({ discovery: 'libvirt' });
    this.maxFileBytes = options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES;
    this.maxFiles = options.maxFiles ?? 10_000;
    this.xmlLimits = options.xmlLimits ?? DEFAULT_XML_LIMITS;
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
    const entries = await readRootDir(this.runDir, this.rootState, 'libvirt runtime directory', 'no libvirt consoles');
    if (entries === null) {
      this.dirs = [];
      return [];
    }
    this.dirs = [this.runDir];
    let files = entries
      .filter((e) => e.name.endsWith('.xml') && !e.name.startsWith('.') && e.isFile())
      .map((e) => e.name)
      .sort();
    if (files.length > this.maxFiles) {
      this.notes.report(this.runDir, [{ level: 'warn', message: `more than ${this.maxFiles} domain XML files; the rest are ignored`, fields: { files: files.length } }]);
      files = files.slice(0, this.maxFiles);
    }
    const present = new Set<string>();
    const perFile = await mapLimit(files, 16, async (file) => {
      const path = join(this.runDir, file);
      present.add(path);
      return this.scanFile(path);
    });
    this.memo.retain(present);
    this.notes.retain(new Set([...present, this.runDir]));
    return perFile.flat();
  }

  private async scanFile(path: string): Promise<DiscoveredConsole[]> {
    let st;
    try {
      st = await statOrNull(path);
    } catch (err) {
      this.notes.report(path, [{ level: 'warn', message: 'cannot stat libvirt domain XML', fields: { error: errorText(err) } }]);
      return [];
    }
    if (st === null) return []; // gone since readdir: the domain stopped
    const cached = this.memo.get(path, st);
    if (cached) return cached;
    const readAt = Date.now();
    this.reads++;
    const r = await readBounded(path, this.maxFileBytes);
    if (!r.ok) {
      if (r.reason !== 'missing') this.notes.report(path, [{ level: 'warn', message: `libvirt domain XML skipped: ${r.reason}`, fields: { detail: r.detail } }]);
      this.memo.set(path, r.signature, st.mtimeMs, readAt, []);
      return [];
    }
    const parsed = parseLibvirtDomain(r.text, this.xmlLimits);
    let consoles: DiscoveredConsole[] = [];
    const notes: FileNote[] = [];
    if (!parsed.ok) {
      notes.push({ level: 'warn', message: 'libvirt domain XML skipped: malformed', fields: { detail: parsed.error } });
    } else {
      notes.push(...parsed.notes);
      const c = libvirtConsoles(parsed.domain, path);
      consoles = c.consoles;
      notes.push(...c.notes);
    }
    this.notes.report(path, notes);
    this.memo.set(path, r.signature, r.mtimeMs, readAt, consoles);
    return consoles;
  }
}
