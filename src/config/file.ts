/**
 * The config file (`vspc --config FILE`, YAML or JSON) and everything that follows
 * from it: reading and validating it with "file:line:col" errors, merging it under
 * the command-line flags, the per-VM settings (`vms:`), and what a reload may change.
 *
 * Keys are the long flags in camelCase (`--port-range` → `portRange`), derived from
 * the `vspc` program itself so a new flag is a new key without touching this file,
 * plus the file-only keys `defaultLockMode` and `vms`. Precedence: flags > environment
 * (VSPC_ADMIN_TOKEN) > file > defaults. See docs/operations.md and
 * docs/decisions/0006-yaml-config.md.
 */
import { readFileSync, statSync } from 'node:fs';
import type { Command, Option } from 'commander';
import { LineCounter, isMap, isScalar, isSeq, parseDocument, type Document, type Pair } from 'yaml';
import {
  DEFAULTS,
  LOCK_MODE_NAMES,
  parsePort,
  parseSize,
  readPem,
  type LockModeName,
  type VmSettings,
  type VspcConfig,
} from './config.js';
import { ConfigError } from '../errors.js';
import { normalizeUuid } from '../util/uuid.js';
import { isLoopbackHost } from '../util/net.js';
import type { ConsoleIdentity } from '../domain/identity.js';

export const ADMIN_TOKEN_ENV = 'VSPC_ADMIN_TOKEN';
/** Shorter tokens are refused: the admin API can forget every VM. */
export const MIN_TOKEN_LENGTH = 16;

const NOT_FILE_KEYS = new Set(['config', 'version', 'help']);
const VM_ENTRY_KEYS = ['match', 'lockMode', 'scrollback', 'port'];

/** How a key's value is checked before the flag parsers see it. */
type KeyKind = { kind: 'string' } | { kind: 'boolean' } | { kind: 'choice'; choices: readonly string[] } | { kind: 'vms' };

export { isLoopbackHost } from '../util/net.js';

/** The file's keys: every long option of `program` (camelCase), plus the file-only ones. */
export function fileKeys(program: Command): Map<string, KeyKind> {
  const keys = new Map<string, KeyKind>();
  for (const opt of program.options as readonly Option[]) {
    const attr = opt.attributeName();
    if (NOT_FILE_KEYS.has(attr) || !opt.long) continue;
    if (opt.negate || opt.isBoolean()) keys.set(attr, { kind: 'boolean' });
    else if (opt.argChoices) keys.set(attr, { kind: 'choice', choices: opt.argChoices });
    else keys.set(attr, { kind: 'string' });
  }
  if (!keys.has('defaultLockMode')) keys.set('defaultLockMode', { kind: 'choice', choices: LOCK_MODE_NAMES });
  keys.set('vms', { kind: 'vms' });
  return keys;
}

/** A read and type-checked config file. */
export interface ConfigFile {
  path: string;
  /** Top-level values: strings for valued flags, booleans for switches, VmSettings[] for `vms`. */
  values: Map<string, unknown>;
  /** "path:line:col" of the value at `at` (or of its key, with `key`). */
  where(at: ReadonlyArray<string | number>, key?: boolean): string;
}

/** Reads, parses and type-checks a config file; every error names the key and its position. */
export function readConfigFile(path: string, keys: Map<string, KeyKind>): ConfigFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`--config: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      field: '--config',
      value: path,
    });
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: true });
  const pos = (offset: number | undefined) => {
    const p = lines.linePos(offset ?? 0);
    return `${path}:${p.line}:${p.col}`;
  };
  const firstError = doc.errors[0];
  if (firstError) {
    const msg = firstError.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
    throw new ConfigError(`${pos(firstError.pos[0])}: ${msg}`, { field: '--config', file: path });
  }
  const where = (at: ReadonlyArray<string | number>, key = false): string => locate(doc, at, key, pos);
  const fail = (at: ReadonlyArray<string | number>, message: string, onKey = false): never => {
    throw new ConfigError(`${where(at, onKey)}: ${at.join('.')}: ${message}`, { field: at.join('.'), file: path });
  };

  const values = new Map<string, unknown>();
  if (doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null)) return { path, values, where };
  if (!isMap(doc.contents)) {
    throw new ConfigError(`${pos(doc.contents.range?.[0])}: the config file must be a mapping of keys to values`, { field: '--config', file: path });
  }
  const js = doc.toJS() as Record<string, unknown>;
  for (const item of doc.contents.items as Pair[]) {
    const name = isScalar(item.key) ? String(item.key.value) : String(item.key);
    const kind = keys.get(name);
    if (!kind) {
      const near = suggest(name, [...keys.keys()]);
      fail([name], `unknown key${near ? ` (did you mean "${near}"?)` : ''}`, true);
      continue;
    }
    values.set(name, checkValue(name, js[name], kind, fail));
  }
  return { path, values, where };
}

function checkValue(name: string, v: unknown, kind: KeyKind, fail: (at: Array<string | number>, message: string) => never): unknown {
  if (v === null || v === undefined) fail([name], 'has no value');
  switch (kind.kind) {
    case 'boolean':
      if (typeof v !== 'boolean') fail([name], `expected true or false, got ${JSON.stringify(v)}`);
      return v;
    case 'choice':
      if (typeof v !== 'string' || !kind.choices.includes(v)) fail([name], `expected one of ${kind.choices.join(', ')}, got ${JSON.stringify(v)}`);
      return v;
    case 'string':
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      if (typeof v !== 'string') fail([name], `expected a string or number, got ${describe(v)}`);
      return v;
    case 'vms':
      return checkVms(v, fail);
  }
}

function checkVms(v: unknown, fail: (at: Array<string | number>, message: string, onKey?: boolean) => never): VmSettings[] {
  if (!Array.isArray(v)) fail(['vms'], `expected a list of {match, lockMode, scrollback, port}, got ${describe(v)}`);
  const out: VmSettings[] = [];
  const ports = new Map<number, number>();
  (v as unknown[]).forEach((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(['vms', i], `expected a mapping with match:, got ${describe(entry)}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!VM_ENTRY_KEYS.includes(k)) fail(['vms', i, k], `unknown key (a vms entry has ${VM_ENTRY_KEYS.join(', ')})`, true);
    }
    if (typeof e.match !== 'string' || e.match.trim() === '') fail(['vms', i, ...(e.match === undefined ? [] : ['match'])], 'needs match: a VM name, UUID, or NAME:LABEL / UUID:LABEL');
    const s: VmSettings = { match: (e.match as string).trim() };
    if (e.lockMode !== undefined) {
      if (typeof e.lockMode !== 'string' || !(LOCK_MODE_NAMES as readonly string[]).includes(e.lockMode)) {
        fail(['vms', i, 'lockMode'], `expected one of ${LOCK_MODE_NAMES.join(', ')}, got ${JSON.stringify(e.lockMode)}`);
      }
      s.lockMode = e.lockMode as LockModeName;
    }
    if (e.scrollback !== undefined) {
      const text = typeof e.scrollback === 'number' || typeof e.scrollback === 'string' ? String(e.scrollback) : null;
      if (text === null) fail(['vms', i, 'scrollback'], `expected a size (e.g. 65536, 64k, 1m, 0), got ${describe(e.scrollback)}`);
      s.scrollbackBytes = asConfigError(['vms', i, 'scrollback'], fail, () => (text!.trim() === '0' ? 0 : parseSize('scrollback', text!)));
    }
    if (e.port !== undefined) {
      const text = typeof e.port === 'number' || typeof e.port === 'string' ? String(e.port) : '';
      const port = asConfigError(['vms', i, 'port'], fail, () => parsePort('port', text, false));
      if (/[*?]/.test(s.match)) fail(['vms', i, 'port'], `a fixed port needs one VM serial port, not the pattern "${s.match}"`);
      const other = ports.get(port);
      if (other !== undefined) fail(['vms', i, 'port'], `port ${port} is already given to vms[${other}] (${out[other].match})`);
      ports.set(port, i);
      s.port = port;
    }
    out.push(s);
  });
  return out;
}

/** Runs a flag parser and re-throws its error at the file position. */
function asConfigError<T>(at: Array<string | number>, fail: (at: Array<string | number>, message: string) => never, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return fail(at, err.message.replace(/^[^:]*: /, ''));
  }
}

function describe(v: unknown): string {
  if (v === null) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The closest known key, for "did you mean" (edit distance at most 3). */
function suggest(name: string, known: string[]): string | null {
  let best: string | null = null;
  let bestD = 4;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length];
}

/** Position of the node at `at` (its key with `key`), falling back to the nearest parent. */
function locate(doc: Document, at: ReadonlyArray<string | number>, key: boolean, pos: (offset: number | undefined) => string): string {
  let node: unknown = doc.contents;
  let offset: number | undefined = (doc.contents as { range?: number[] } | null)?.range?.[0];
  for (let i = 0; i < at.length; i++) {
    const seg = at[i];
    const last = i === at.length - 1;
    if (isMap(node)) {
      const pair = (node.items as Pair[]).find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) break;
      const keyNode = pair.key as { range?: number[] } | null;
      const valueNode = pair.value as { range?: number[] } | null;
      offset = (last && key ? keyNode?.range?.[0] : (valueNode?.range?.[0] ?? keyNode?.range?.[0])) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg] as { range?: number[] } | undefined;
      if (!item) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else break;
  }
  return pos(offset);
}

// ---------------------------------------------------------------------------
// Flags + file + environment → VspcConfig

export interface LoadedConfiguration {
  config: VspcConfig;
  logLevel: string;
  logFormat: 'json' | 'text';
  /** The config file read, if any. */
  file: string | null;
  /** Not errors, but worth a log line once the logger exists. */
  warnings: string[];
  /** Where each option's value came from: cli, env, file or default. */
  origin: Record<string, 'cli' | 'env' | 'file' | 'default'>;
}

/**
 * The configuration `program` (already parsed) describes: its flags, its `--config`
 * file, the environment and the defaults. Call again to reload: the flags stay, the
 * file is read anew. Throws ConfigError naming the flag, or the key and file position.
 */
export function loadConfiguration(
  program: Command,
  toConfig: (options: Record<string, unknown>) => VspcConfig,
): LoadedConfiguration {
  const cli = program.opts<Record<string, unknown>>();
  const keys = fileKeys(program);
  const file = typeof cli.config === 'string' ? readConfigFile(cli.config, keys) : null;
  const merged: Record<string, unknown> = {};
  const origin: LoadedConfiguration['origin'] = {};
  for (const opt of program.options as readonly Option[]) {
    const attr = opt.attributeName();
    if (NOT_FILE_KEYS.has(attr)) continue;
    const source = program.getOptionValueSource(attr);
    if (source === 'cli' || source === 'env') {
      merged[attr] = cli[attr];
      origin[attr] = source as 'cli' | 'env';
    } else if (file?.values.has(attr)) {
      merged[attr] = file.values.get(attr);
      origin[attr] = 'file';
    } else {
      merged[attr] = cli[attr];
      origin[attr] = 'default';
    }
  }
  for (const k of ['defaultLockMode', 'vms']) {
    if (!(k in merged) && file?.values.has(k)) {
      merged[k] = file.values.get(k);
      origin[k] = 'file';
    }
  }

  /** Re-states a flag's error at the file position when the value came from the file. */
  const located = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (!(err instanceof ConfigError) || !file) throw err;
      const flag = typeof err.context.field === 'string' ? err.context.field : '';
      const opt = (program.options as readonly Option[]).find((o) => o.long === flag);
      const attr = opt?.attributeName();
      if (!attr || origin[attr] !== 'file') throw err;
      const rest = err.message.startsWith(`${flag}: `) ? err.message.slice(flag.length + 2) : err.message;
      throw new ConfigError(`${file.where([attr])}: ${attr}: ${rest}`, { ...err.context, field: attr, file: file.path });
    }
  };

  let config!: VspcConfig;
  located(() => {
    config = toConfig(merged);
  });
  const warnings: string[] = [];
  located(() => {
    config.adminToken = adminToken(merged, origin, warnings);
  });
  located(() => {
    config.adminTls = adminTls(merged);
  });
  located(() => {
    if (!isLoopbackHost(config.adminListen.host) && !config.adminToken) {
      throw new ConfigError(
        `--admin-listen: ${config.adminListen.host} is not a loopback address, so the admin API needs a token: ` +
          `give --admin-token-file FILE, set ${ADMIN_TOKEN_ENV}, or use --admin-token`,
        { field: '--admin-listen' },
      );
    }
  });
  config.defaultLockMode = (merged.defaultLockMode as LockModeName | undefined) ?? DEFAULTS.defaultLockMode;
  config.vms = (merged.vms as VmSettings[] | undefined) ?? [];
  if (file) config.vms = config.vms.map((v, i) => ({ ...v, where: file.where(['vms', i]) }));
  const own = new Set([config.proxyListen.port, config.adminListen.port, config.proxyTlsListen?.port ?? 0].filter((p) => p > 0));
  config.vms.forEach((v, i) => {
    if (v.port !== undefined && own.has(v.port)) {
      const at = file ? `${file.where(['vms', i, 'port'])}: ` : '';
      throw new ConfigError(`${at}vms.${i}.port: ${v.port} is one of vspc's own listener ports`, { field: `vms.${i}.port` });
    }
  });
  return {
    config,
    logLevel: String(merged.logLevel ?? 'info'),
    logFormat: merged.logFormat === 'text' ? 'text' : 'json',
    file: file?.path ?? null,
    warnings,
    origin,
  };
}

const RANK = { cli: 3, env: 2, file: 1, default: 0 } as const;

/** The token from --admin-token / VSPC_ADMIN_TOKEN / adminToken or the token file; the highest source wins. */
function adminToken(o: Record<string, unknown>, origin: LoadedConfiguration['origin'], warnings: string[]): string | null {
  const direct = typeof o.adminToken === 'string' ? o.adminToken : undefined;
  const filePath = typeof o.adminTokenFile === 'string' ? o.adminTokenFile : undefined;
  if (direct === undefined && filePath === undefined) return null;
  const rd = direct === undefined ? -1 : RANK[origin.adminToken ?? 'default'];
  const rf = filePath === undefined ? -1 : RANK[origin.adminTokenFile ?? 'default'];
  if (rd === rf) {
    throw new ConfigError('--admin-token-file: give either a token or a token file, not both', { field: '--admin-token-file' });
  }
  let token: string;
  let field: string;
  if (rd > rf) {
    token = direct!.trim();
    field = '--admin-token';
  } else {
    field = '--admin-token-file';
    try {
      token = readFileSync(filePath!, 'utf8').trim();
      if ((statSync(filePath!).mode & 0o004) !== 0) warnings.push(`admin token file ${filePath} is readable by every user; chmod 600 it`);
    } catch (err) {
      throw new ConfigError(`--admin-token-file: cannot read ${filePath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        field,
        value: filePath,
      });
    }
  }
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new ConfigError(`${field}: the token must be at least ${MIN_TOKEN_LENGTH} characters without spaces (e.g. openssl rand -hex 32)`, { field });
  }
  return token;
}

function adminTls(o: Record<string, unknown>): VspcConfig['adminTls'] {
  const cert = o.adminCert as string | undefined;
  const key = o.adminKey as string | undefined;
  if (!!cert !== !!key) {
    // Name the one given: that is where a config file has a position.
    const field = cert ? '--admin-cert' : '--admin-key';
    throw new ConfigError(`${field}: --admin-cert and --admin-key go together`, { field });
  }
  return cert && key ? { cert: readPem('--admin-cert', cert), key: readPem('--admin-key', key) } : null;
}

// ---------------------------------------------------------------------------
// Per-VM settings

/** What a `match:` is compared with: a console's key (a UUID in any form, compared normalised), label and name. */
export type VmRef = Pick<ConsoleIdentity, 'key' | 'label' | 'name'>;

export interface ResolvedVmSettings {
  lockMode?: LockModeName;
  scrollbackBytes?: number;
  port?: number;
}

/**
 * The `vms:` settings for one VM serial port: every entry whose `match` fits applies,
 * in file order, a later entry overriding an earlier one field by field.
 */
export function resolveVmSettings(config: Pick<VspcConfig, 'vms'>, vm: VmRef): ResolvedVmSettings {
  const out: ResolvedVmSettings = {};
  const key = normalizeUuid(vm.key) ?? vm.key;
  for (const entry of config.vms) {
    if (!vmMatches(entry.match, { key, label: vm.label, name: vm.name })) continue;
    if (entry.lockMode !== undefined) out.lockMode = entry.lockMode;
    if (entry.scrollbackBytes !== undefined) out.scrollbackBytes = entry.scrollbackBytes;
    if (entry.port !== undefined) out.port = entry.port;
  }
  return out;
}

/** `match` is a name (glob: * ?), a UUID in any form, or either followed by `:LABEL`. */
export function vmMatches(match: string, vm: VmRef): boolean {
  if (matchOne(match, null, vm)) return true;
  const colon = match.lastIndexOf(':');
  return colon > 0 && matchOne(match.slice(0, colon), match.slice(colon + 1), vm);
}

function matchOne(ref: string, label: string | null, vm: VmRef): boolean {
  if (label !== null && vm.label !== label) return false;
  const uuid = normalizeUuid(ref);
  if (uuid !== undefined && uuid === vm.key) return true;
  return vm.name !== null && globToRegExp(ref).test(vm.name);
}

function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

// ---------------------------------------------------------------------------
// Reload

/** What SIGHUP / `vspc-admin reload` did. Keys are config file keys. */
export interface ReloadReport {
  file: string | null;
  /** Changed and now in effect. */
  applied: string[];
  /** Changed in the file but in effect only after a restart. */
  restartNeeded: string[];
}

/** VspcConfig keys a running server applies without dropping VM connections. */
export const RELOADABLE: ReadonlySet<keyof VspcConfig> = new Set<keyof VspcConfig>([
  'expireAfterMs',
  'humanTimeoutMs',
  'identifyTimeoutMs',
  'clientQueueLimit',
  'vmotionTimeoutMs',
  'scrollbackBytes',
  'serviceName',
  'comPort',
  'adminToken',
  'defaultLockMode',
  'vms',
]);

/** The config file key (flag in camelCase) for a VspcConfig key, for reports. */
export function keyName(k: string): string {
  const special: Record<string, string> = { dbPath: 'db', tls: 'cert/key', adminTls: 'adminCert/adminKey', adminToken: 'adminToken/adminTokenFile' };
  return special[k] ?? k.replace(/(Ms|Bytes)$/, '');
}

/** Keys whose values differ (Buffers by content; `vms` ignoring positions). */
export function changedKeys(a: VspcConfig, b: VspcConfig): Array<keyof VspcConfig> {
  const canon = (k: string, v: unknown) =>
    JSON.stringify(k === 'vms' ? (v as VmSettings[]).map(({ where: _w, ...rest }) => rest) : v, (_key, x: unknown) =>
      x && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' ? Buffer.from((x as { data: number[] }).data).toString('hex') : x,
    );
  const all = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof VspcConfig>;
  return [...all].filter((k) => canon(k, a[k]) !== canon(k, b[k]));
}

/** The server side of a reload (VspcServer). */
export interface ReloadTarget {
  applyConfig(next: VspcConfig): ReloadReport;
}

/**
 * The function behind SIGHUP and `vspc-admin reload`: reads the configuration again
 * (same flags, the file anew), applies it and logs what changed. On an invalid file it
 * logs and throws the ConfigError, changing nothing.
 */
export function createReloader(
  program: Command,
  toConfig: (options: Record<string, unknown>) => VspcConfig,
  server: ReloadTarget,
  logger: { level: string; info(m: string, meta?: object): unknown; warn(m: string, meta?: object): unknown; error(m: string, meta?: object): unknown },
  initial: LoadedConfiguration,
): () => ReloadReport {
  return () => {
    let next: LoadedConfiguration;
    try {
      next = loadConfiguration(program, toConfig);
    } catch (err) {
      logger.error('configuration reload failed; the running configuration is unchanged', {
        errorCode: (err as { code?: string }).code ?? 'UNKNOWN',
        error: (err as Error).message,
      });
      throw err;
    }
    const report = server.applyConfig(next.config);
    report.file = next.file;
    if (next.logLevel !== logger.level) {
      logger.level = next.logLevel;
      report.applied.push('logLevel');
    }
    if (next.logFormat !== initial.logFormat) report.restartNeeded.push('logFormat');
    for (const w of next.warnings) logger.warn(w);
    logger.info('configuration reloaded', { ...report });
    if (report.restartNeeded.length > 0) {
      logger.warn('some configuration changes take effect only after a restart', { keys: report.restartNeeded });
    }
    return report;
  };
}
