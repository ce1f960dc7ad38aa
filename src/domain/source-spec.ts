/**
 * A console's source as an operator writes it (config `consoles: - source:`) and as
 * discovery produces it, parsed and validated. The names follow QEMU's chardev
 * backends (`-serial unix:PATH,server=on`, `-chardev socket,...,telnet=on`, `udp`):
 *
 * | spec                                   | who connects | what it is                                   |
 * |----------------------------------------|--------------|----------------------------------------------|
 * | `unix:PATH`                            | vspc         | a socket QEMU serves (`server=on,wait=off`)  |
 * | `unix-listen:PATH`                     | QEMU         | vspc serves; QEMU `-chardev socket,reconnect` |
 * | `tcp:HOST:PORT`                        | vspc         | raw TCP (QEMU `-serial tcp::N,server=on`)    |
 * | `tcp-listen:HOST:PORT`                 | the peer     | vspc listens for one raw TCP peer            |
 * | `telnet:HOST:PORT`                     | vspc         | telnet with negotiation; BREAK as IAC BRK    |
 * | `udp:LOCALHOST:PORT@REMOTEHOST:PORT`   | both         | datagrams: vspc binds LOCAL, sends to REMOTE |
 * | `device:PATH?baud=N&data=8&parity=none&stop=1&flow=none` | vspc | a host tty, USB adapter, nmdm or pty |
 *
 * Pure data: parsing and formatting only. Throws `VspcError` `VSPC_SOURCE_INVALID`
 * with a message naming the part that is wrong (the config layer adds the position).
 */
import { VspcError } from '../errors.js';
import { hasUnsafeText, sanitizeText } from '../util/text.js';
import type { SerialLineSettings } from './serial-line.js';

export type FlowControl = 'none' | 'rtscts' | 'xonxoff';

/** Device settings: every field present (defaults filled in). */
export interface DeviceLine extends Required<SerialLineSettings> {
  flow: FlowControl;
}

export type SourceSpec =
  | { type: 'unix'; path: string }
  | { type: 'unix-listen'; path: string }
  | { type: 'tcp'; host: string; port: number }
  | { type: 'tcp-listen'; host: string; port: number }
  | { type: 'telnet'; host: string; port: number }
  | { type: 'udp'; local: { host: string; port: number }; remote: { host: string; port: number } }
  | { type: 'device'; path: string; line: DeviceLine };

export type SourceType = SourceSpec['type'];

export const SOURCE_TYPES: readonly SourceType[] = ['unix', 'unix-listen', 'tcp', 'tcp-listen', 'telnet', 'udp', 'device'];

export const DEFAULT_DEVICE_LINE: DeviceLine = { baudRate: 115200, dataSize: 8, parity: 'none', stopBits: '1', flow: 'none' };

/** Longest path accepted (Linux PATH_MAX); unix socket paths are further bounded by sun_path (107 bytes). */
const MAX_PATH = 4096;
const MAX_SUN_PATH = 107;

function invalid(text: string, why: string): never {
  const shown = sanitizeText(text.length > 120 ? text.slice(0, 117) + '...' : text);
  throw new VspcError('VSPC_SOURCE_INVALID', `${why} (in "${shown}")`, { value: sanitizeText(text.slice(0, 200)) });
}

function parsePort(text: string, part: string, whole: string): number {
  if (!/^\d{1,5}$/.test(part)) invalid(whole, `"${part}" is not a port number`);
  const n = Number(part);
  if (n < 1 || n > 65535) invalid(whole, `port ${n} is outside 1-65535`);
  return n;
}

/** `HOST:PORT`, `[V6]:PORT`, or `:PORT` (host defaults to 127.0.0.1: sources are local by default). */
function parseHostPort(part: string, whole: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\]:(.*)$/.exec(part);
  if (v6) return { host: v6[1], port: parsePort(whole, v6[2], whole) };
  const i = part.lastIndexOf(':');
  if (i < 0) invalid(whole, `"${part}" is not HOST:PORT`);
  const host = part.slice(0, i) || '127.0.0.1';
  if (host.includes(':')) invalid(whole, 'write IPv6 addresses as [addr]:port');
  return { host, port: parsePort(whole, part.slice(i + 1), whole) };
}

function parsePath(path: string, whole: string, unixSocket: boolean): string {
  if (path === '') invalid(whole, 'the path is empty');
  if (!path.startsWith('/')) invalid(whole, `"${path}" is not an absolute path`);
  if (path.includes('\0')) invalid(whole, 'the path contains a NUL byte');
  // Paths are shown in list/show and logs: a control or bidi character would reach screens.
  if (hasUnsafeText(path)) invalid(whole, 'the path contains control or invisible formatting characters');
  if (path.length > MAX_PATH) invalid(whole, 'the path is too long');
  if (unixSocket && Buffer.byteLength(path) > MAX_SUN_PATH) invalid(whole, `a unix socket path may have at most ${MAX_SUN_PATH} bytes`);
  return path;
}

function parseDeviceLine(query: string, whole: string): DeviceLine {
  const line: DeviceLine = { ...DEFAULT_DEVICE_LINE };
  if (query === '') return line;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const k = eq < 0 ? pair : pair.slice(0, eq);
    const v = eq < 0 ? '' : pair.slice(eq + 1);
    switch (k) {
      case 'baud':
        if (!/^\d{2,7}$/.test(v) || Number(v) < 50 || Number(v) > 4_000_000) invalid(whole, `baud "${v}" is not a rate between 50 and 4000000`);
        line.baudRate = Number(v);
        break;
      case 'data':
        if (!/^[5-8]$/.test(v)) invalid(whole, `data "${v}" is not 5, 6, 7 or 8`);
        line.dataSize = Number(v);
        break;
      case 'parity':
        if (!['none', 'odd', 'even', 'mark', 'space'].includes(v)) invalid(whole, `parity "${v}" is not none, odd, even, mark or space`);
        line.parity = v as DeviceLine['parity'];
        break;
      case 'stop':
        if (!['1', '1.5', '2'].includes(v)) invalid(whole, `stop "${v}" is not 1, 1.5 or 2`);
        line.stopBits = v as DeviceLine['stopBits'];
        break;
      case 'flow':
        if (!['none', 'rtscts', 'xonxoff'].includes(v)) invalid(whole, `flow "${v}" is not none, rtscts or xonxoff`);
        line.flow = v as FlowControl;
        break;
      default:
        invalid(whole, `unknown device setting "${k}" (baud, data, parity, stop, flow)`);
    }
  }
  return line;
}

/** Parses a source spec; throws `VSPC_SOURCE_INVALID` naming what is wrong. */
export function parseSourceSpec(text: string): SourceSpec {
  if (typeof text !== 'string') invalid(String(text), 'a source is a string such as unix:/run/qemu/vm.serial0');
  const whole = text.trim();
  const colon = whole.indexOf(':');
  if (colon < 0) invalid(whole, `no source type (one of ${SOURCE_TYPES.join(', ')})`);
  const type = whole.slice(0, colon);
  const rest = whole.slice(colon + 1);
  switch (type) {
    case 'unix':
    case 'unix-listen':
      return { type, path: parsePath(rest, whole, true) };
    case 'tcp':
    case 'tcp-listen':
    case 'telnet':
      return { type, ...parseHostPort(rest, whole) };
    case 'udp': {
      const at = rest.indexOf('@');
      if (at < 0) invalid(whole, 'udp needs LOCALHOST:PORT@REMOTEHOST:PORT');
      return { type, local: parseHostPort(rest.slice(0, at), whole), remote: parseHostPort(rest.slice(at + 1), whole) };
    }
    case 'device': {
      const q = rest.indexOf('?');
      const path = parsePath(q < 0 ? rest : rest.slice(0, q), whole, false);
      return { type, path, line: parseDeviceLine(q < 0 ? '' : rest.slice(q + 1), whole) };
    }
    default:
      return invalid(whole, `unknown source type "${type.slice(0, 32)}" (one of ${SOURCE_TYPES.join(', ')})`);
  }
}

function hostPort(a: { host: string; port: number }): string {
  return `${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}

/** The canonical text of a spec (what `list` shows; parseSourceSpec(formatSourceSpec(s)) equals s). */
export function formatSourceSpec(s: SourceSpec): string {
  switch (s.type) {
    case 'unix':
    case 'unix-listen':
      return `${s.type}:${s.path}`;
    case 'tcp':
    case 'tcp-listen':
    case 'telnet':
      return `${s.type}:${hostPort(s)}`;
    case 'udp':
      return `udp:${hostPort(s.local)}@${hostPort(s.remote)}`;
    case 'device': {
      const l = s.line;
      return `device:${s.path}?baud=${l.baudRate}&data=${l.dataSize}&parity=${l.parity}&stop=${l.stopBits}&flow=${l.flow}`;
    }
  }
}
