/**
 * Per-VM settings, the config file's `vms:` list: checking the entries, and which
 * entries apply to a console. A `match:` is a VM name pattern (src/util/glob.ts: `*`
 * and `?`, any case — the same meaning as `vspc-admin list PATTERN`), a UUID in any
 * form, or either followed by `:LABEL` (the label compared exactly).
 */
import type { LockModeName, VmSettings, VspcConfig } from './config.js';
import { LOCK_MODES as LOCK_MODE_NAMES } from '../domain/locks.js';
import { parsePort, parseSizeOrZero } from './parse.js';
import { asConfigError, describe, type Fail } from './file.js';
import { normalizeUuid } from '../util/uuid.js';
import { Glob, hasWildcards } from '../util/glob.js';
import type { ConsoleIdentity } from '../domain/identity.js';
import { checkAccess, resolveAccess, type AccessSettings, type ConsoleAccess } from './access.js';

/** The keys a `vms:` entry may have (config file spelling). */
export const VM_ENTRY_KEYS = ['match', 'lockMode', 'scrollback', 'port', 'greeting', 'notices', 'replay', 'access'] as const;

/** What a `vms:` and a `consoles:` entry share. */
export interface ConsoleSettingsCommon {
  lockMode?: LockModeName;
  scrollbackBytes?: number;
  tcpPort?: number;
  greeting?: boolean;
  notices?: boolean;
  replay?: boolean;
  access?: AccessSettings;
}

/**
 * The settings a `vms:` and a `consoles:` entry share: `lockMode`, `scrollback`, `port`,
 * `greeting`, `notices`, `replay`, `access`; errors at `at`'s key. `noLink`: why this
 * entry may not give a pty `link:` (a pattern that may match several consoles), or null.
 */
export function checkConsoleSettings(
  e: Record<string, unknown>,
  at: Array<string | number>,
  fail: Fail,
  noLink: string | null = null,
): ConsoleSettingsCommon {
  const s: ConsoleSettingsCommon = {};
  for (const k of ['greeting', 'notices', 'replay'] as const) {
    if (e[k] === undefined) continue;
    if (typeof e[k] !== 'boolean') fail([...at, k], `expected true or false, got ${describe(e[k])}`);
    s[k] = e[k] as boolean;
  }
  if (e.lockMode !== undefined) {
    if (typeof e.lockMode !== 'string' || !(LOCK_MODE_NAMES as readonly string[]).includes(e.lockMode)) {
      fail([...at, 'lockMode'], `expected one of ${LOCK_MODE_NAMES.join(', ')}, got ${JSON.stringify(e.lockMode)}`);
    }
    s.lockMode = e.lockMode as LockModeName;
  }
  if (e.scrollback !== undefined) {
    const text = typeof e.scrollback === 'number' || typeof e.scrollback === 'string' ? String(e.scrollback) : null;
    if (text === null) fail([...at, 'scrollback'], `expected a size (e.g. 65536, 64k, 1m, 0), got ${describe(e.scrollback)}`);
    s.scrollbackBytes = asConfigError([...at, 'scrollback'], fail, () => parseSizeOrZero('scrollback', text!));
  }
  if (e.port !== undefined) {
    const text = typeof e.port === 'number' || typeof e.port === 'string' ? String(e.port) : '';
    s.tcpPort = asConfigError([...at, 'port'], fail, () => parsePort('port', text, false));
  }
  if (e.access !== undefined) s.access = checkAccess(e.access, fail, { at: [...at, 'access'], global: false, noLink });
  return s;
}

/** Checks the `vms:` value of a config file; errors at the entry's position. */
export function checkVms(v: unknown, fail: Fail): VmSettings[] {
  if (!Array.isArray(v)) fail(['vms'], `expected a list of {${VM_ENTRY_KEYS.join(', ')}}, got ${describe(v)}`);
  const out: VmSettings[] = [];
  const tcpPorts = new Map<number, number>();
  (v as unknown[]).forEach((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(['vms', i], `expected a mapping with match:, got ${describe(entry)}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!(VM_ENTRY_KEYS as readonly string[]).includes(k)) fail(['vms', i, k], `unknown key (a vms entry has ${VM_ENTRY_KEYS.join(', ')})`, true);
    }
    if (typeof e.match !== 'string' || e.match.trim() === '') fail(['vms', i, ...(e.match === undefined ? [] : ['match'])], 'needs match: a VM name, UUID, or NAME:LABEL / UUID:LABEL');
    const match = (e.match as string).trim();
    const noLink = hasWildcards(match) ? `a pty link needs one console, not the pattern "${match}"` : null;
    const s: VmSettings = { match, ...checkConsoleSettings(e, ['vms', i], fail, noLink) };
    if (s.tcpPort !== undefined) {
      const tcpPort = s.tcpPort;
      if (hasWildcards(s.match)) fail(['vms', i, 'port'], `a fixed port needs one VM serial port, not the pattern "${s.match}"`);
      const other = tcpPorts.get(tcpPort);
      if (other !== undefined) fail(['vms', i, 'port'], `port ${tcpPort} is already given to vms[${other}] (${out[other].match})`);
      tcpPorts.set(tcpPort, i);
      s.tcpPort = tcpPort;
    }
    out.push(s);
  });
  return out;
}

/** What a `match:` is compared with: a console's key (a UUID in any form, compared normalised), label and name; the kind finds a declared console's own entry. */
export type VmRef = Pick<ConsoleIdentity, 'key' | 'label' | 'name'> & { kind?: ConsoleIdentity['kind'] };

/** The `vms:` settings that apply to one console (the admin API shows them as `settings`). */
export interface ResolvedVmSettings {
  lockMode?: LockModeName;
  scrollbackBytes?: number;
  /** Fixed client TCP port. */
  tcpPort?: number;
  /** false: no console log file (a declared console's `log:`). */
  log?: boolean;
  greeting?: boolean;
  notices?: boolean;
  replay?: boolean;
  /** The `access:` of the matching entries, in order (resolveConsoleAccess applies them). */
  access?: AccessSettings[];
}

/**
 * The `vms:` settings for one VM serial port: every entry whose `match` fits applies,
 * in file order, a later entry overriding an earlier one field by field.
 */
export function resolveVmSettings(config: Pick<VspcConfig, 'vms'> & Partial<Pick<VspcConfig, 'consoles'>>, vm: VmRef): ResolvedVmSettings {
  const out: ResolvedVmSettings = {};
  const key = normalizeUuid(vm.key) ?? vm.key;
  for (const entry of config.vms) {
    if (!vmMatches(entry.match, { key, label: vm.label, name: vm.name })) continue;
    if (entry.lockMode !== undefined) out.lockMode = entry.lockMode;
    if (entry.scrollbackBytes !== undefined) out.scrollbackBytes = entry.scrollbackBytes;
    if (entry.tcpPort !== undefined) out.tcpPort = entry.tcpPort;
    for (const k of ['greeting', 'notices', 'replay'] as const) if (entry[k] !== undefined) out[k] = entry[k];
    if (entry.access !== undefined) (out.access ??= []).push(entry.access);
  }
  // A declared console's own entry is the most specific: it wins over every vms: match.
  const own = vm.kind === 'config' ? config.consoles?.find((c) => c.name === vm.key) : undefined;
  if (own) {
    if (own.lockMode !== undefined) out.lockMode = own.lockMode;
    if (own.scrollbackBytes !== undefined) out.scrollbackBytes = own.scrollbackBytes;
    if (own.tcpPort !== undefined) out.tcpPort = own.tcpPort;
    if (own.log !== undefined) out.log = own.log;
    for (const k of ['greeting', 'notices', 'replay'] as const) if (own[k] !== undefined) out[k] = own[k];
    if (own.access !== undefined) (out.access ??= []).push(own.access);
  }
  return out;
}

/** A console's access methods: the global `access:`, then its vms: matches and its own entry (access.ts). */
export function resolveConsoleAccess(config: Pick<VspcConfig, 'vms' | 'access'> & Partial<Pick<VspcConfig, 'consoles'>>, vm: VmRef): ConsoleAccess {
  // Most configurations give access: globally only: no entry to match against each console.
  const perConsole = config.vms.some((v) => v.access !== undefined) || (config.consoles ?? []).some((c) => c.access !== undefined);
  return resolveAccess(perConsole ? [config.access, ...(resolveVmSettings(config, vm).access ?? [])] : [config.access]);
}

/**
 * Whether `match` names this console: a name pattern (glob `*` `?`, any case), a UUID
 * in any form, or either followed by `:LABEL` (exact). The whole of `match` is first
 * tried as a name, so a VM named `a:b` is matched by `a:b`.
 */
export function vmMatches(match: string, vm: VmRef): boolean {
  if (matchOne(match, null, vm)) return true;
  const colon = match.lastIndexOf(':');
  return colon > 0 && matchOne(match.slice(0, colon), match.slice(colon + 1), vm);
}

function matchOne(ref: string, label: string | null, vm: VmRef): boolean {
  if (label !== null && vm.label !== label) return false;
  const uuid = normalizeUuid(ref);
  if (uuid !== undefined && uuid === vm.key) return true;
  return vm.name !== null && new Glob(ref, { ignoreCase: true }).test(vm.name);
}
