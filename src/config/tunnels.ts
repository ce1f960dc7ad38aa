/**
 * Serial tunnels, the config file's `tunnels:` list (docs/tunnels.md): TCP into a
 * guest over a console that carries the tunnel protocol instead of a terminal.
 *
 *   tunnels:
 *     - name: web01
 *       console: web01:tunnel            # any console: declared, discovered, ESXi (NAME, NAME:LABEL, UUID:LABEL)
 *       # or: source: unix:/run/qemu/web01.tunnel   (the tunnel's own console, like a declared one)
 *       forwards:
 *         - to: 22                       # listen: auto (a sticky port on 127.0.0.1)
 *         - listen: 127.0.0.1:2222
 *           to: 22
 *         - listen: unix:/run/vspc/web01-ssh.sock?mode=0660
 *           to: 22
 */
import type { TunnelSettings, TunnelForwardSettings } from './config.js';
import { formatSourceSpec, parseSourceSpec } from '../domain/source-spec.js';
import { ConfigError, VspcError } from '../errors.js';
import { hasUnsafeText } from '../util/text.js';
import { describe, type Fail } from './file.js';
import { parseHostPort } from './parse.js';
import { MAX_CONSOLE_NAME } from './consoles.js';

export const TUNNEL_ENTRY_KEYS = ['name', 'console', 'source', 'forwards'] as const;
export const FORWARD_ENTRY_KEYS = ['listen', 'to'] as const;

/** Default mode of a forward's unix socket: vspc's own user only. */
export const DEFAULT_UNIX_MODE = 0o600;

/** `auto`, `HOST:PORT`, `[v6]:PORT`, `unix:/abs/path[?mode=0660]`; throws ConfigError naming `field`. */
export function parseForwardListen(field: string, text: string): TunnelForwardSettings['listen'] {
  const t = text.trim();
  if (t === 'auto') return { type: 'auto' };
  if (t.startsWith('unix:')) {
    const rest = t.slice(5);
    const q = rest.indexOf('?');
    const path = q < 0 ? rest : rest.slice(0, q);
    if (!path.startsWith('/')) throw new ConfigError(`${field}: "${t}": a unix socket needs an absolute path (unix:/run/vspc/web01.sock)`, { field, value: text });
    if (path.length > 107) throw new ConfigError(`${field}: the socket path is longer than a unix socket address allows (107 bytes)`, { field, value: text });
    let mode = DEFAULT_UNIX_MODE;
    if (q >= 0) {
      const params = new URLSearchParams(rest.slice(q + 1));
      for (const k of params.keys()) if (k !== 'mode') throw new ConfigError(`${field}: unknown parameter "${k}" (only mode=0NNN)`, { field, value: text });
      const m = params.get('mode') ?? '';
      if (!/^0?[0-7]{3}$/.test(m)) throw new ConfigError(`${field}: mode "${m}" is not an octal file mode such as 0600 or 0660`, { field, value: text });
      mode = parseInt(m, 8);
    }
    return { type: 'unix', path, mode };
  }
  if (!t.includes(':')) throw new ConfigError(`${field}: "${t}" is not auto, HOST:PORT or unix:PATH`, { field, value: text });
  const hp = parseHostPort(field, t, '127.0.0.1');
  if (hp.port === 0) throw new ConfigError(`${field}: port 0 is not a fixed port; use listen: auto for a sticky one`, { field, value: text });
  return { type: 'tcp', host: hp.host, port: hp.port };
}

function guestPort(v: unknown, at: Array<string | number>, fail: Fail): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(at, `expected the guest port, 1-65535, got ${describe(v)}`);
  return n;
}

/** A listen address as a key for duplicates: TCP by host and port, unix by path. */
function listenKey(l: TunnelForwardSettings['listen']): string | null {
  if (l.type === 'tcp') return `tcp ${l.host.toLowerCase()} ${l.port}`;
  if (l.type === 'unix') return `unix ${l.path}`;
  return null;
}

/** Checks the `tunnels:` value of a config file; errors at the entry's position. */
export function checkTunnels(v: unknown, fail: Fail): TunnelSettings[] {
  if (!Array.isArray(v)) fail(['tunnels'], `expected a list of {${TUNNEL_ENTRY_KEYS.join(', ')}}, got ${describe(v)}`);
  const out: TunnelSettings[] = [];
  const names = new Map<string, number>();
  const listens = new Map<string, string>();
  (v as unknown[]).forEach((entry, i) => {
    const at = ['tunnels', i];
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(at, `expected a mapping with name:, console: or source:, and forwards:, got ${describe(entry)}`);
    const e = entry as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!(TUNNEL_ENTRY_KEYS as readonly string[]).includes(k)) fail([...at, k], `unknown key (a tunnels entry has ${TUNNEL_ENTRY_KEYS.join(', ')})`, true);
    }
    if (typeof e.name !== 'string' || e.name.trim() === '') fail([...at, ...(e.name === undefined ? [] : ['name'])], 'needs name: the tunnel name (vspc-admin tunnel NAME PORT)');
    const name = (e.name as string).trim();
    if (name.length > MAX_CONSOLE_NAME) fail([...at, 'name'], `longer than ${MAX_CONSOLE_NAME} characters`);
    if (hasUnsafeText(name)) fail([...at, 'name'], 'has control or invisible formatting characters');
    if (/[*?:\s/]/.test(name)) fail([...at, 'name'], 'may not contain *, ?, :, / or spaces');
    const before = names.get(name.toLowerCase());
    if (before !== undefined) fail([...at, 'name'], `"${name}" is already the name of tunnels[${before}] (names are compared in any case)`);
    names.set(name.toLowerCase(), i);
    if ((e.console === undefined) === (e.source === undefined)) {
      fail(at, 'needs either console: (an existing console: NAME, NAME:LABEL, UUID:LABEL) or source: (the tunnel\'s own, e.g. unix:/run/qemu/web01.tunnel), not both');
    }
    const t: TunnelSettings = { name, forwards: [] };
    if (e.console !== undefined) {
      if (typeof e.console !== 'string' || e.console.trim() === '') fail([...at, 'console'], `expected a console name such as web01 or web01:tunnel, got ${describe(e.console)}`);
      const ref = (e.console as string).trim();
      if (hasUnsafeText(ref)) fail([...at, 'console'], 'has control or invisible formatting characters');
      t.console = ref;
    } else {
      if (typeof e.source !== 'string') fail([...at, 'source'], `expected a source such as unix:/run/qemu/web01.tunnel, got ${describe(e.source)}`);
      try {
        t.source = parseSourceSpec(e.source as string);
      } catch (err) {
        if (err instanceof VspcError && err.code === 'VSPC_SOURCE_INVALID') fail([...at, 'source'], err.message);
        throw err;
      }
      t.sourceText = formatSourceSpec(t.source);
    }
    const fw = e.forwards ?? [];
    if (!Array.isArray(fw)) fail([...at, 'forwards'], `expected a list of {listen, to}, got ${describe(fw)}`);
    const autos = new Set<number>();
    (fw as unknown[]).forEach((f, j) => {
      const fat = [...at, 'forwards', j];
      if (typeof f === 'number' || typeof f === 'string') {
        // Shorthand: `- 22` is `- to: 22` (listen: auto).
        const to = guestPort(f, fat, fail);
        if (autos.has(to)) fail(fat, `a second auto forward to port ${to}: one sticky port per guest port`);
        autos.add(to);
        t.forwards.push({ listen: { type: 'auto' }, to });
        return;
      }
      if (f === null || typeof f !== 'object' || Array.isArray(f)) fail(fat, `expected a mapping with to: (and listen:), got ${describe(f)}`);
      const fe = f as Record<string, unknown>;
      for (const k of Object.keys(fe)) {
        if (!(FORWARD_ENTRY_KEYS as readonly string[]).includes(k)) fail([...fat, k], `unknown key (a forward has ${FORWARD_ENTRY_KEYS.join(', ')})`, true);
      }
      if (fe.to === undefined) fail(fat, 'needs to: the port in the guest (e.g. 22)');
      const to = guestPort(fe.to, [...fat, 'to'], fail);
      let listen: TunnelForwardSettings['listen'] = { type: 'auto' };
      if (fe.listen !== undefined) {
        if (typeof fe.listen !== 'string') fail([...fat, 'listen'], `expected auto, HOST:PORT or unix:PATH, got ${describe(fe.listen)}`);
        try {
          listen = parseForwardListen('listen', fe.listen as string);
        } catch (err) {
          if (err instanceof ConfigError) fail([...fat, 'listen'], err.message.replace(/^listen: /, ''));
          throw err;
        }
      }
      if (listen.type === 'auto') {
        if (autos.has(to)) fail(fat, `a second auto forward to port ${to}: one sticky port per guest port`);
        autos.add(to);
      }
      const key = listenKey(listen);
      if (key !== null) {
        const other = listens.get(key);
        if (other !== undefined) fail([...fat, 'listen'], `the same address as ${other}`);
        listens.set(key, `tunnels[${i}].forwards[${j}]`);
      }
      t.forwards.push({ listen, to });
    });
    out.push(t);
  });
  return out;
}
