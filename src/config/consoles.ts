/**
 * Declared consoles, the config file's `consoles:` list: sources vspc maintains itself
 * (a QEMU socket, a host tty, ...), each with a name and optional per-console settings.
 *
 *   consoles:
 *     - name: web01
 *       source: unix:/var/run/qemu-server/101.serial0
 *       lockMode: readwrite      # optional, as in vms:
 *       scrollback: 64k          # optional
 *       port: 10101              # optional fixed client port
 *       log: false               # optional: no console log file for this one
 *       access: { pty: { link: /dev/vspc/web01 } }   # optional: access methods (access.ts)
 *
 * A declared console's identity is (kind `config`, key = its name, label ''): renaming
 * it in the file makes a new console with a new port.
 */
import type { ConsoleSettings, DiscoverGlob } from './config.js';
import { formatSourceSpec, parseSourceSpec } from '../domain/source-spec.js';
import { VspcError } from '../errors.js';
import { hasUnsafeText } from '../util/text.js';
import { describe, type Fail } from './file.js';
import { checkConsoleSettings } from './vms.js';

/** The keys a `consoles:` entry may have (config file spelling). */
export const CONSOLE_ENTRY_KEYS = ['name', 'source', 'lockMode', 'scrollback', 'port', 'log', 'greeting', 'notices', 'replay', 'access'] as const;

/** Longest console name: it is a table cell, a file name part and a telnet greeting. */
export const MAX_CONSOLE_NAME = 128;

/** Checks the `consoles:` value of a config file; errors at the entry's position. */
export function checkConsoles(v: unknown, fail: Fail): ConsoleSettings[] {
  if (!Array.isArray(v)) fail(['consoles'], `expected a list of {${CONSOLE_ENTRY_KEYS.join(', ')}}, got ${describe(v)}`);
  const out: ConsoleSettings[] = [];
  const names = new Map<string, number>();
  (v as unknown[]).forEach((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(['consoles', i], `expected a mapping with name: and source:, got ${describe(entry)}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!(CONSOLE_ENTRY_KEYS as readonly string[]).includes(k)) fail(['consoles', i, k], `unknown key (a consoles entry has ${CONSOLE_ENTRY_KEYS.join(', ')})`, true);
    }
    if (typeof e.name !== 'string' || e.name.trim() === '') fail(['consoles', i, ...(e.name === undefined ? [] : ['name'])], 'needs name: the console name people use');
    const name = (e.name as string).trim();
    if (name.length > MAX_CONSOLE_NAME) fail(['consoles', i, 'name'], `longer than ${MAX_CONSOLE_NAME} characters`);
    if (hasUnsafeText(name)) fail(['consoles', i, 'name'], 'has control or invisible formatting characters');
    if (/[*?]/.test(name)) fail(['consoles', i, 'name'], 'may not contain * or ? (they are pattern characters)');
    const before = names.get(name.toLowerCase());
    if (before !== undefined) fail(['consoles', i, 'name'], `"${name}" is already the name of consoles[${before}] (names are compared in any case)`);
    names.set(name.toLowerCase(), i);
    if (typeof e.source !== 'string') fail(['consoles', i, ...(e.source === undefined ? [] : ['source'])], 'needs source: e.g. unix:/var/run/qemu-server/101.serial0 or device:/dev/ttyUSB0?baud=115200');
    let source;
    try {
      source = parseSourceSpec(e.source as string);
    } catch (err) {
      if (err instanceof VspcError && err.code === 'VSPC_SOURCE_INVALID') fail(['consoles', i, 'source'], err.message);
      throw err;
    }
    const s: ConsoleSettings = { name, source, sourceText: formatSourceSpec(source), ...checkConsoleSettings(e, ['consoles', i], fail) };
    if (e.log !== undefined) {
      if (typeof e.log !== 'boolean') fail(['consoles', i, 'log'], `expected true or false, got ${describe(e.log)}`);
      s.log = e.log as boolean;
    }
    out.push(s);
  });
  return out;
}

/** The keys a `discover:` entry may have. */
export const DISCOVER_ENTRY_KEYS = ['glob', 'source', 'name'] as const;

/**
 * Checks `discover:` (path patterns that become consoles). The pattern and templates
 * are checked in depth when discovery starts (src/sources/discovery/glob.ts); here the
 * shape, and what is obviously wrong.
 */
export function checkDiscoverGlobs(v: unknown, fail: Fail): DiscoverGlob[] {
  if (!Array.isArray(v)) fail(['discover'], `expected a list of {${DISCOVER_ENTRY_KEYS.join(', ')}}, got ${describe(v)}`);
  return (v as unknown[]).map((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(['discover', i], `expected a mapping with glob: and source:, got ${describe(entry)}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!(DISCOVER_ENTRY_KEYS as readonly string[]).includes(k)) fail(['discover', i, k], `unknown key (a discover entry has ${DISCOVER_ENTRY_KEYS.join(', ')})`, true);
    }
    if (typeof e.glob !== 'string' || !e.glob.startsWith('/')) fail(['discover', i, ...(e.glob === undefined ? [] : ['glob'])], 'needs glob: an absolute path pattern such as /dev/serial/by-id/*');
    if (typeof e.source !== 'string' || !/^(unix:|device:)\{path\}/.test(e.source)) {
      fail(['discover', i, ...(e.source === undefined ? [] : ['source'])], 'needs source: unix:{path} or device:{path}?baud=...');
    }
    if (e.name !== undefined && (typeof e.name !== 'string' || e.name.trim() === '')) fail(['discover', i, 'name'], 'a name template such as {basename}');
    return { glob: e.glob as string, source: e.source as string, ...(e.name !== undefined ? { name: (e.name as string).trim() } : {}) };
  });
}
