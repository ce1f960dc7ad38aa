/**
 * Parsers for the console broker's options (--broker-socket, --broker-socket-mode,
 * --broker-socket-group). Each throws a ConfigError naming its flag.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';

/** Where the broker's socket is when nothing else is said: systemd's RuntimeDirectory=vspc (packaging/vspc.service). */
export const DEFAULT_BROKER_SOCKET = '/run/vspc/broker.sock';

/** The broker's socket: a path, or `auto` (the default path if its directory exists), or `off`. */
export interface BrokerSocketSetting {
  path: string;
  /** From `auto`: a missing directory or a failed bind is a warning, not a failed start. */
  auto: boolean;
}

export function parseBrokerSocket(field: string, text: string): BrokerSocketSetting | null {
  const t = text.trim();
  if (t === 'off') return null;
  if (t === 'auto') return { path: DEFAULT_BROKER_SOCKET, auto: true };
  if (t === '' || t.includes('\0')) throw new ConfigError(`${field}: give a socket path, auto or off`, { field, value: text });
  if (Buffer.byteLength(t) > 96) throw new ConfigError(`${field}: "${t}" is too long for a unix socket path (at most 96 bytes)`, { field, value: text });
  return { path: t, auto: false };
}

/** Octal permission bits such as 0660 or 660; the socket is useless without the owner's read+write. */
export function parseSocketMode(field: string, text: string): number {
  const t = text.trim();
  if (!/^0?[0-7]{3}$/.test(t)) throw new ConfigError(`${field}: "${text}" is not an octal mode like 0660`, { field, value: text });
  const mode = parseInt(t, 8);
  if ((mode & 0o600) !== 0o600) throw new ConfigError(`${field}: ${t} must give the owner read and write (0600 at least)`, { field, value: text });
  if ((mode & 0o002) !== 0) throw new ConfigError(`${field}: ${t} lets every user attach to every console; use a group (--broker-socket-group) instead`, { field, value: text });
  return mode;
}

/** A group by name (from /etc/group) or number. */
export function parseGroup(field: string, text: string, groupFile = '/etc/group'): { name: string; gid: number } {
  const t = text.trim();
  if (/^\d+$/.test(t)) {
    const gid = Number(t);
    if (gid > 0xfffffffe) throw new ConfigError(`${field}: ${t} is not a group id`, { field, value: text });
    return { name: t, gid };
  }
  let lines: string[] = [];
  try {
    lines = readFileSync(groupFile, 'utf8').split('\n');
  } catch {
    // No group file: only numbers work.
  }
  for (const line of lines) {
    const [name, , gid] = line.split(':');
    if (name === t && gid !== undefined && /^\d+$/.test(gid)) return { name: t, gid: Number(gid) };
  }
  throw new ConfigError(`${field}: no group "${t}" in ${groupFile} (give its name or number)`, { field, value: text });
}
