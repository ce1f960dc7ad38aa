/**
 * Generic discovery: every path matching an operator's pattern is a console, e.g.
 * `/dev/serial/by-id/*` with spec `device:{path}?baud=115200`, or `/run/myvms/*.sock`
 * with spec `unix:{path}`.
 *
 * Patterns: absolute paths whose segments may hold `*` (any run of characters, none
 * included) and `?` (one character); there is no `**`, no character class and no
 * escape. As in a shell, a wildcard does not match a leading `.` unless the segment
 * itself starts with `.`. Segments with wildcards are expanded with one readdir per
 * directory; matching is util/glob.ts (no regular expression; O(n·m) at worst, on
 * names of at most 255 bytes).
 *
 * Templates (name and spec): `{path}` the matched path, `{basename}` its last segment,
 * `{stem}` the basename without its last extension, `{dir}` the name of the directory
 * it is in. The spec must be `unix:{path}` or `device:{path}` (with device settings);
 * a matched path must be a socket (unix) or a character device (device), symlinks
 * followed (`/dev/serial/by-id/*` are symlinks to `/dev/ttyUSB*`).
 *
 * Identity: kind `glob`, key = the matched path (a by-id path names the adapter, not
 * the ttyUSB number it got), label ''.
 */
import { lstat, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import { parseSourceSpec } from '../../domain/source-spec.js';
import { ConfigError } from '../../errors.js';
import { Glob, hasWildcards } from '../../util/glob.js';
import { errorText, isNotFound, mapLimit } from './files.js';
import { NoteLog, StateLog } from './notes.js';
import { sanitizeName } from './text.js';
import type { DiscoveredConsole, Discovery } from './types.js';

/**
 * Whether a directory entry `name` matches one wildcard segment (util/glob.ts: `*`,
 * `?`, no regex), except that, as in a shell, a leading wildcard does not match a
 * leading `.`: hidden files need an explicit `.` in the pattern.
 */
export function matchSegment(pattern: string | Glob, name: string): boolean {
  const glob = typeof pattern === 'string' ? new Glob(pattern) : pattern;
  if ((glob.pattern[0] === '*' || glob.pattern[0] === '?') && name[0] === '.') return false;
  return glob.test(name);
}

type TemplatePart = string | { field: 'path' | 'basename' | 'stem' | 'dir' };
const FIELDS = ['path', 'basename', 'stem', 'dir'] as const;

/** Parses `unix:{path}`-style templates; throws ConfigError naming the bad part. */
export function parseTemplate(template: string, field: string): TemplatePart[] {
  const parts: TemplatePart[] = [];
  let from = 0;
  for (;;) {
    const open = template.indexOf('{', from);
    const close = template.indexOf('}', from);
    if (open < 0) {
      if (close >= 0) throw new ConfigError(`${field}: "}" without "{" in "${template}"`, { field });
      if (from < template.length) parts.push(template.slice(from));
      return parts;
    }
    if (close >= 0 && close < open) throw new ConfigError(`${field}: "}" without "{" in "${template}"`, { field });
    const end = template.indexOf('}', open + 1);
    if (end < 0) throw new ConfigError(`${field}: unterminated "{" in "${template}"`, { field });
    const name = template.slice(open + 1, end);
    if (!(FIELDS as readonly string[]).includes(name)) {
      throw new ConfigError(`${field}: unknown placeholder {${name.slice(0, 32)}} (known: ${FIELDS.map((f) => `{${f}}`).join(', ')})`, { field });
    }
    if (open > from) parts.push(template.slice(from, open));
    parts.push({ field: name as (typeof FIELDS)[number] });
    from = end + 1;
  }
}

/** The template fields of one path. */
export function pathFields(path: string): Record<(typeof FIELDS)[number], string> {
  const base = basename(path);
  const dot = base.lastIndexOf('.');
  return { path, basename: base, stem: dot > 0 ? base.slice(0, dot) : base, dir: basename(dirname(path)) };
}

export function renderTemplate(parts: readonly TemplatePart[], path: string): string {
  const f = pathFields(path);
  return parts.map((p) => (typeof p === 'string' ? p : f[p.field])).join('');
}

export interface GlobDiscoveryOptions {
  logger: Logger;
  /** Absolute path pattern, e.g. `/dev/serial/by-id/*`. */
  pattern: string;
  /** Source spec template: `unix:{path}` or `device:{path}?baud=115200`. */
  spec: string;
  /** Display name template (default `{basename}`). */
  name?: string;
  /** Most paths a scan accepts (default 10,000); more are ignored with a log line. */
  maxMatches?: number;
  /** Config position for error messages, e.g. `discovery.globs[2]`. */
  field?: string;
}

/** Most directories watched per pattern (a wide `/run/*\/x` pattern falls back to the periodic rescan). */
const MAX_WATCH_DIRS = 64;

export class GlobDiscovery implements Discovery {
  readonly kind = 'glob' as const;
  readonly description: string;
  readonly pattern: string;
  private readonly segments: string[];
  /** The compiled matcher of each segment with a wildcard, by level. */
  private readonly globs: Map<number, Glob>;
  private readonly specParts: TemplatePart[];
  private readonly nameParts: TemplatePart[];
  private readonly wants: 'socket' | 'char';
  private readonly maxMatches: number;
  private readonly logger: Logger;
  private readonly notes: NoteLog;
  private readonly rootState: StateLog;
  private dirs: string[] = [];

  constructor(options: GlobDiscoveryOptions) {
    const field = options.field ?? 'glob';
    this.pattern = options.pattern;
    if (typeof this.pattern !== 'string' || !this.pattern.startsWith('/')) throw new ConfigError(`${field}.pattern: "${String(this.pattern).slice(0, 120)}" is not an absolute path pattern`, { field: `${field}.pattern` });
    if (this.pattern.includes('\0')) throw new ConfigError(`${field}.pattern: contains a NUL byte`, { field: `${field}.pattern` });
    this.segments = this.pattern.split('/').filter((s) => s !== '' && s !== '.');
    if (this.segments.length === 0) throw new ConfigError(`${field}.pattern: "${this.pattern}" matches no file`, { field: `${field}.pattern` });
    for (const s of this.segments) {
      if (s.includes('**')) throw new ConfigError(`${field}.pattern: "**" is not supported (one "*" per level)`, { field: `${field}.pattern` });
      if (s === '..') throw new ConfigError(`${field}.pattern: ".." is not allowed`, { field: `${field}.pattern` });
    }
    this.globs = new Map(this.segments.flatMap((seg, i) => (hasWildcards(seg) ? [[i, new Glob(seg)] as const] : [])));
    this.specParts = parseTemplate(options.spec, `${field}.spec`);
    this.nameParts = parseTemplate(options.name ?? '{basename}', `${field}.name`);
    if (!this.specParts.some((p) => typeof p !== 'string' && p.field === 'path')) {
      throw new ConfigError(`${field}.spec: "${options.spec}" must contain {path}`, { field: `${field}.spec` });
    }
    // Validate the spec with a sample path: the type and the device settings.
    let sample;
    try {
      sample = parseSourceSpec(renderTemplate(this.specParts, '/dev/sample'));
    } catch (err) {
      throw new ConfigError(`${field}.spec: ${(err as Error).message}`, { field: `${field}.spec` });
    }
    if (sample.type === 'unix') this.wants = 'socket';
    else if (sample.type === 'device') this.wants = 'char';
    else throw new ConfigError(`${field}.spec: a glob source is unix:{path} or device:{path}, not ${sample.type}:`, { field: `${field}.spec` });
    this.maxMatches = options.maxMatches ?? 10_000;
    this.description = `glob ${this.pattern}`;
    this.logger = options.logger.child({ discovery: 'glob', pattern: this.pattern });
    this.notes = new NoteLog(this.logger);
    this.rootState = new StateLog(this.logger);
  }

  get filesRead(): number {
    return 0; // only directories and stats
  }

  watchDirs(): readonly string[] {
    return this.dirs;
  }

  async scan(): Promise<DiscoveredConsole[]> {
    const watched = new Set<string>();
    const noted = new Set<string>([this.pattern]);
    let candidates = ['/'];
    let truncated = false;
    for (let level = 0; level < this.segments.length; level++) {
      const seg = this.segments[level];
      const last = level === this.segments.length - 1;
      if (!hasWildcards(seg)) {
        candidates = candidates.map((d) => join(d, seg));
        if (last) for (const c of candidates) watched.add(dirname(c));
        continue;
      }
      const next: string[] = [];
      for (const dir of candidates) {
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch (err) {
          if (!isNotFound(err) && (err as { code?: unknown }).code !== 'ENOTDIR') {
            // A directory we cannot read is not "no consoles": fail the scan, keep the last result.
            if (level === 0 || candidates.length === 1) {
              this.rootState.set(`error:${errorText(err)}`, { level: 'warn', message: 'cannot read a directory of the glob', fields: { dir, error: errorText(err) } });
              throw err;
            }
            noted.add(dir);
            this.notes.report(dir, [{ level: 'warn', message: 'cannot read a directory of the glob', fields: { error: errorText(err) } }]);
          }
          continue;
        }
        watched.add(dir);
        for (const e of entries) {
          if (!matchSegment(this.globs.get(level) as Glob, e.name)) continue;
          // Intermediate levels need directories (symlinks checked when read).
          if (!last && !(e.isDirectory() || e.isSymbolicLink())) continue;
          if (next.length >= this.maxMatches) {
            truncated = true;
            break;
          }
          next.push(join(dir, e.name));
        }
      }
      candidates = next;
    }
    this.rootState.set('ok');
    if (truncated) this.notes.report(this.pattern, [{ level: 'warn', message: `glob matches more than ${this.maxMatches} paths; the rest are ignored` }]);
    else this.notes.report(this.pattern, []);

    const sorted = [...new Set(candidates)].sort();
    const found = await mapLimit(sorted, 16, async (path) => this.consoleAt(path));
    this.dirs = [...watched].sort().slice(0, MAX_WATCH_DIRS);
    this.notes.retain(new Set([...noted, ...sorted]));
    return found.filter((c): c is DiscoveredConsole => c !== null);
  }

  private async consoleAt(path: string): Promise<DiscoveredConsole | null> {
    let st;
    try {
      // A socket must be one itself: a symlink in a watched directory must not make vspc
      // relay whatever socket it points at (a QEMU monitor, docker.sock) to its users.
      // A tty may be reached through one: /dev/serial/by-id names are symlinks.
      st = this.wants === 'socket' ? await lstat(path) : await stat(path);
    } catch {
      return null; // vanished, a dangling symlink, or unreadable: not a console now
    }
    if (this.wants === 'socket' && st.isSymbolicLink()) {
      this.notes.report(path, [{ level: 'warn', message: 'a symbolic link where a socket is expected; not followed', fields: { security: true } }]);
      return null;
    }
    if (this.wants === 'socket' ? !st.isSocket() : !st.isCharacterDevice()) return null;
    try {
      const spec = parseSourceSpec(renderTemplate(this.specParts, path));
      if ((spec.type === 'unix' || spec.type === 'device') && !spec.path.includes(path)) throw new Error('the path does not survive the spec syntax');
      const name = sanitizeName(renderTemplate(this.nameParts, path));
      return Object.freeze({ kind: 'glob', key: path, label: '', name, spec, origin: path });
    } catch (err) {
      this.notes.report(path, [{ level: 'warn', message: 'matched path not usable as a source', fields: { error: (err as Error).message } }]);
      return null;
    }
  }
}
