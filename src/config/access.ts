/**
 * Access methods, the config file's `access:` key: the global defaults, and the same
 * key in a `vms:` or `consoles:` entry for the consoles it matches.
 *
 *   access:                      # global defaults
 *     telnet: true               # the per-console telnet (and telnets) ports
 *     raw: false                 # a raw TCP port per console (sticky), on clientListenHost
 *     unix: false                # or { dir, mode, owner, group, protocol: raw|telnet }
 *     pty: false                 # or { dir, mode, group }
 *   vms:
 *     - match: web01
 *       access: { raw: true, unix: { group: web-admins, mode: "0660" } }
 *   consoles:
 *     - name: router
 *       source: device:/dev/ttyUSB0
 *       access: { pty: { link: /dev/vspc/router } }
 *
 * Layers apply in order — the built-in defaults, the global `access:`, every `vms:`
 * entry that matches (file order), a declared console's own entry — each key by key:
 * `telnet`/`raw` replace; `unix`/`pty` `false` turns the method off, `true` on, and a
 * mapping turns it on with its fields over the earlier layers' (so a console's
 * `unix: { group: web-admins }` keeps the global `dir` and `protocol`).
 *
 * Users and groups are resolved when the file is read (`getent`, so NSS sources count):
 * a name that does not exist is an error naming the field, as is a mode that is not
 * octal, a relative directory, or a `link:` that could apply to several consoles.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { isAbsolute, normalize } from 'node:path';
import { describe, type Fail } from './file.js';

/** The keys of an `access:` mapping. */
export const ACCESS_KEYS = ['telnet', 'raw', 'unix', 'pty'] as const;
export const UNIX_ACCESS_KEYS = ['dir', 'mode', 'owner', 'group', 'protocol'] as const;
export const PTY_ACCESS_KEYS = ['dir', 'mode', 'group', 'link'] as const;
export const UNIX_PROTOCOLS = ['raw', 'telnet'] as const;

/** A user or group named in the file, with its numeric id. */
export interface PrincipalSetting {
  name: string;
  id: number;
}

export interface UnixAccessFields {
  dir?: string;
  mode?: number;
  owner?: PrincipalSetting;
  group?: PrincipalSetting;
  protocol?: (typeof UNIX_PROTOCOLS)[number];
}

export interface PtyAccessFields {
  dir?: string;
  mode?: number;
  group?: PrincipalSetting;
  /** Only in a console's own entry: its link's path. */
  link?: string;
}

/** An `access:` mapping as written: every key optional. */
export interface AccessSettings {
  telnet?: boolean;
  raw?: boolean;
  unix?: boolean | UnixAccessFields;
  pty?: boolean | PtyAccessFields;
}

/** One console's access methods, every layer applied. */
export interface ConsoleAccess {
  telnet: boolean;
  raw: boolean;
  unix: { dir: string; mode: number; owner: PrincipalSetting | null; group: PrincipalSetting | null; protocol: 'raw' | 'telnet' } | null;
  pty: { dir: string; mode: number; group: PrincipalSetting | null; link: string | null } | null;
}

export const ACCESS_DEFAULTS = {
  unixDir: '/run/vspc/console',
  ptyDir: '/run/vspc/pty',
  mode: 0o600,
} as const;

/** Where a mapping is checked: the global key, or an entry's (whose `link:` must name one console). */
export interface AccessContext {
  /** `['access']` or `['vms', 3, 'access']`. */
  at: Array<string | number>;
  /** Global `access:`: no `link:`. */
  global: boolean;
  /** Why an entry's `link:` is not allowed (a vms: pattern), or null. */
  noLink?: string | null;
}

/** Checks an `access:` mapping; errors at the position of what is wrong. */
export function checkAccess(v: unknown, fail: Fail, ctx: AccessContext = { at: ['access'], global: true }): AccessSettings {
  const at = ctx.at;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(at, `expected a mapping of ${ACCESS_KEYS.join(', ')}, got ${describe(v)}`);
  const e = v as Record<string, unknown>;
  for (const k of Object.keys(e)) {
    if (!(ACCESS_KEYS as readonly string[]).includes(k)) fail([...at, k], `unknown access method (there are ${ACCESS_KEYS.join(', ')})`, true);
  }
  const out: AccessSettings = {};
  for (const k of ['telnet', 'raw'] as const) {
    if (e[k] === undefined) continue;
    if (typeof e[k] !== 'boolean') fail([...at, k], `expected true or false, got ${describe(e[k])}`);
    out[k] = e[k] as boolean;
  }
  if (e.unix !== undefined) out.unix = checkMethod(e.unix, [...at, 'unix'], fail, UNIX_ACCESS_KEYS, (m) => checkUnixFields(m, [...at, 'unix'], fail));
  if (e.pty !== undefined) out.pty = checkMethod(e.pty, [...at, 'pty'], fail, PTY_ACCESS_KEYS, (m) => checkPtyFields(m, [...at, 'pty'], fail, ctx));
  return out;
}

function checkMethod<T>(v: unknown, at: Array<string | number>, fail: Fail, keys: readonly string[], fields: (m: Record<string, unknown>) => T): boolean | T {
  if (typeof v === 'boolean') return v;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(at, `expected true, false or a mapping of ${keys.join(', ')}, got ${describe(v)}`);
  const m = v as Record<string, unknown>;
  for (const k of Object.keys(m)) {
    if (!keys.includes(k)) fail([...at, k], `unknown key (${at[at.length - 1]} has ${keys.join(', ')})`, true);
  }
  return fields(m);
}

function checkUnixFields(m: Record<string, unknown>, at: Array<string | number>, fail: Fail): UnixAccessFields {
  const out: UnixAccessFields = {};
  if (m.dir !== undefined) out.dir = checkPath(m.dir, [...at, 'dir'], fail);
  if (m.mode !== undefined) out.mode = checkMode(m.mode, [...at, 'mode'], fail);
  if (m.owner !== undefined) out.owner = checkPrincipal('user', m.owner, [...at, 'owner'], fail);
  if (m.group !== undefined) out.group = checkPrincipal('group', m.group, [...at, 'group'], fail);
  if (m.protocol !== undefined) {
    if (typeof m.protocol !== 'string' || !(UNIX_PROTOCOLS as readonly string[]).includes(m.protocol)) {
      fail([...at, 'protocol'], `expected one of ${UNIX_PROTOCOLS.join(', ')}, got ${describe(m.protocol)}`);
    }
    out.protocol = m.protocol as UnixAccessFields['protocol'];
  }
  return out;
}

function checkPtyFields(m: Record<string, unknown>, at: Array<string | number>, fail: Fail, ctx: AccessContext): PtyAccessFields {
  const out: PtyAccessFields = {};
  if (m.dir !== undefined) out.dir = checkPath(m.dir, [...at, 'dir'], fail);
  if (m.mode !== undefined) out.mode = checkMode(m.mode, [...at, 'mode'], fail);
  if (m.group !== undefined) out.group = checkPrincipal('group', m.group, [...at, 'group'], fail);
  if (m.link !== undefined) {
    if (ctx.global) fail([...at, 'link'], "a link names one console's pty: give it in that console's vms: or consoles: entry (here, use dir:)");
    if (ctx.noLink) fail([...at, 'link'], ctx.noLink);
    out.link = checkPath(m.link, [...at, 'link'], fail);
  }
  return out;
}

function checkPath(v: unknown, at: Array<string | number>, fail: Fail): string {
  if (typeof v !== 'string' || v.trim() === '') fail(at, `expected an absolute path, got ${describe(v)}`);
  const p = (v as string).trim();
  if (!isAbsolute(p)) fail(at, `"${p}" is not an absolute path`);
  if (p.includes('\0')) fail(at, 'has a NUL character');
  const n = normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

/**
 * A file mode in octal: "0660", "660", "0o660", or a YAML number whose digits are read
 * as octal (YAML reads `mode: 0660` as the decimal 660: it means 0660). At most 0777.
 */
export function checkMode(v: unknown, at: Array<string | number>, fail: Fail): number {
  const text = typeof v === 'number' && Number.isInteger(v) ? String(v) : typeof v === 'string' ? v.trim().replace(/^0o/i, '') : null;
  if (text === null || !/^[0-7]{1,4}$/.test(text)) fail(at, `expected an octal file mode such as "0600" or "0660", got ${describe(v)}`);
  const mode = parseInt(text!, 8);
  if (mode > 0o777) fail(at, `${JSON.stringify(v)}: only permission bits (at most 0777), no setuid, setgid or sticky bit`);
  return mode;
}

function checkPrincipal(kind: 'user' | 'group', v: unknown, at: Array<string | number>, fail: Fail): PrincipalSetting {
  const text = typeof v === 'number' && Number.isInteger(v) && v >= 0 ? String(v) : typeof v === 'string' && v.trim() !== '' ? v.trim() : null;
  if (text === null) fail(at, `expected a ${kind} name or number, got ${describe(v)}`);
  const found = lookupPrincipal(kind, text!);
  if (!found) fail(at, `no such ${kind} "${text}" on this system`);
  return found!;
}

/**
 * A user or group by name or number, through NSS (`getent passwd|group KEY`), else the
 * files in /etc when getent is missing. Null when there is none.
 */
export function lookupPrincipal(kind: 'user' | 'group', key: string): PrincipalSetting | null {
  if (key.includes(':') || key.includes('\n') || key.startsWith('-')) return null;
  const db = kind === 'user' ? 'passwd' : 'group';
  let line: string | null;
  try {
    line = execFileSync('getent', [db, key], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0] ?? null;
  } catch (err) {
    const e = err as { code?: string; status?: number };
    if (e.code !== 'ENOENT') return null; // exit 2: not found
    line = fromEtc(db, key);
  }
  if (!line) return null;
  const f = line.split(':');
  const id = Number(f[2]);
  return f[0] && Number.isInteger(id) ? { name: f[0], id } : null;
}

function fromEtc(db: 'passwd' | 'group', key: string): string | null {
  let text: string;
  try {
    text = readFileSync(`/etc/${db}`, 'utf8');
  } catch {
    return null;
  }
  return text.split('\n').find((l) => {
    const f = l.split(':');
    return f[0] === key || (/^\d+$/.test(key) && f[2] === key);
  }) ?? null;
}

/** The built-in defaults: telnet on, the others off. */
function defaults(): { telnet: boolean; raw: boolean; unix: { on: boolean; f: UnixAccessFields }; pty: { on: boolean; f: PtyAccessFields } } {
  return { telnet: true, raw: false, unix: { on: false, f: {} }, pty: { on: false, f: {} } };
}

/** One console's access methods: the layers (global first, then its entries in order) applied to the defaults. */
export function resolveAccess(layers: ReadonlyArray<AccessSettings | undefined>): ConsoleAccess {
  const a = defaults();
  for (const layer of layers) {
    if (!layer) continue;
    if (layer.telnet !== undefined) a.telnet = layer.telnet;
    if (layer.raw !== undefined) a.raw = layer.raw;
    if (layer.unix !== undefined) {
      if (typeof layer.unix === 'boolean') a.unix.on = layer.unix;
      else a.unix = { on: true, f: { ...a.unix.f, ...layer.unix } };
    }
    if (layer.pty !== undefined) {
      if (typeof layer.pty === 'boolean') a.pty.on = layer.pty;
      else a.pty = { on: true, f: { ...a.pty.f, ...layer.pty } };
    }
  }
  return {
    telnet: a.telnet,
    raw: a.raw,
    unix: a.unix.on
      ? {
          dir: a.unix.f.dir ?? ACCESS_DEFAULTS.unixDir,
          mode: a.unix.f.mode ?? ACCESS_DEFAULTS.mode,
          owner: a.unix.f.owner ?? null,
          group: a.unix.f.group ?? null,
          protocol: a.unix.f.protocol ?? 'raw',
        }
      : null,
    pty: a.pty.on
      ? { dir: a.pty.f.dir ?? ACCESS_DEFAULTS.ptyDir, mode: a.pty.f.mode ?? ACCESS_DEFAULTS.mode, group: a.pty.f.group ?? null, link: a.pty.f.link ?? null }
      : null,
  };
}
