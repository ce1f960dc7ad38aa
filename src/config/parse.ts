/**
 * Value parsers: the text an operator types (a flag's argument or a config file value)
 * to a typed value. Each takes the flag it parses for and throws a ConfigError whose
 * message starts with that flag (`--port-range: start 5 is greater than end 2`), so
 * the config file reader can re-state it at the key's file position.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { PortRange } from '../domain/repository.js';
import type { HostPort } from '../util/net.js';
import { parseCidr, type CidrBlock } from '../util/cidr.js';

/** A TCP port number 0-65535 (1-65535 without `allowZero`). */
export function parsePort(field: string, text: string, allowZero = true): number {
  if (!/^\d+$/.test(text.trim())) throw new ConfigError(`${field}: "${text}" is not a port number`, { field, value: text });
  const n = Number(text);
  if (n > 65535 || (!allowZero && n === 0)) {
    throw new ConfigError(`${field}: ${n} is outside ${allowZero ? 0 : 1}-65535`, { field, value: text });
  }
  return n;
}

/** "HOST:PORT", "[v6]:PORT" or ":PORT"/"PORT" (all interfaces of the default host). */
export function parseHostPort(field: string, text: string, defaultHost: string): HostPort {
  const t = text.trim();
  let host = defaultHost;
  let portText = t;
  const v6 = /^\[([^\]]+)\]:(.*)$/.exec(t);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else if (t.includes(':')) {
    const i = t.lastIndexOf(':');
    host = t.slice(0, i) || defaultHost;
    portText = t.slice(i + 1);
  }
  if (host.includes(':') && !v6) throw new ConfigError(`${field}: write IPv6 addresses as [addr]:port`, { field, value: text });
  if (!/^\d+$/.test(portText.trim())) {
    // `127.0.0.1` or `nohost`: a host without its port; `host:abc`: a port that is not one.
    const why = portText === t ? `"${t}" has no port` : `"${portText}" is not a port number`;
    throw new ConfigError(`${field}: ${why}: expected HOST:PORT, [IPv6]:PORT or PORT (e.g. ${defaultHost}:7000 or 7000)`, { field, value: text });
  }
  return { host, port: parsePort(field, portText) };
}

/** "START-END", both 1-65535, START ≤ END. */
export function parsePortRange(field: string, text: string): PortRange {
  const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not START-END`, { field, value: text });
  const start = parsePort(field, m[1], false);
  const end = parsePort(field, m[2], false);
  if (start > end) throw new ConfigError(`${field}: start ${start} is greater than end ${end}`, { field, value: text });
  return { start, end };
}

/** A duration in ms: a number with an optional unit ms, s (the default), m, h, d. */
export function parseDuration(field: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not a duration (e.g. 500ms, 30s, 5m, 90d)`, { field, value: text });
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
  return Math.round(Number(m[1]) * unit);
}

/** A size in bytes, at least 1: a number with an optional unit b, k/kib (1024), m/mib (1 MiB), any case. */
export function parseSize(field: string, text: string): number {
  const m = /^\s*(\d+)\s*(b|k|kib|m|mib)?\s*$/i.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not a size (e.g. 65536, 64k, 1m)`, { field, value: text });
  const unit = { b: 1, k: 1024, kib: 1024, m: 1 << 20, mib: 1 << 20 }[(m[2] ?? 'b').toLowerCase()]!;
  const n = Number(m[1]) * unit;
  if (n < 1) throw new ConfigError(`${field}: must be at least 1 byte`, { field, value: text });
  return n;
}

/** A size in bytes where `0` means none (scrollback). */
export function parseSizeOrZero(field: string, text: string): number {
  return text.trim() === '0' ? 0 : parseSize(field, text);
}

/** A whole number `min`-`max`; `what` names it in the error ("a number of files"). */
export function parseCount(field: string, text: string, min: number, max: number, what = 'a number'): number {
  const t = text.trim();
  if (!/^\d+$/.test(t) || Number(t) < min || Number(t) > max) {
    throw new ConfigError(`${field}: "${t}" is not ${what} (${min}-${max})`, { field, value: t });
  }
  return Number(t);
}

/** A non-negative decimal number of events per second (`10`, `0.5`); 0 means no limit where the option says so. */
export function parseRate(field: string, text: string): number {
  const t = text.trim();
  if (!/^\d+(\.\d+)?$/.test(t)) throw new ConfigError(`${field}: "${text}" is not a number per second (e.g. 10, 0.5)`, { field, value: text });
  return Number(t);
}

/** Networks, comma- or space-separated (`10.0.0.0/8, 192.0.2.7, 2001:db8::/32`), in the order given, duplicates dropped. */
export function parseCidrList(field: string, text: string): CidrBlock[] {
  const items = text.split(/[\s,]+/).filter((x) => x !== '');
  if (items.length === 0) throw new ConfigError(`${field}: give at least one network (e.g. 10.0.0.0/8)`, { field, value: text });
  const out = new Map<string, CidrBlock>();
  for (const item of items) {
    try {
      const block = parseCidr(item);
      out.set(block.text, block);
    } catch (err) {
      throw new ConfigError(`${field}: ${(err as Error).message}`, { field, value: item });
    }
  }
  return [...out.values()];
}

/** Any text but the empty one (paths, host names). */
export function parseNonEmpty(field: string, text: string): string {
  if (text.trim() === '') throw new ConfigError(`${field}: must not be empty`, { field });
  return text;
}

/** A path to a file that exists and can be read now (its contents are read where used). */
export function parseReadableFile(field: string, path: string): string {
  const p = parseNonEmpty(field, path).trim();
  try {
    accessSync(p, constants.R_OK);
    if (!statSync(p).isFile()) throw new Error('not a regular file');
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { field, value: p });
  }
  return p;
}

/** One of `choices`, exactly. */
export function parseChoice<T extends string>(field: string, text: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(text)) {
    throw new ConfigError(`${field}: expected one of ${choices.join(', ')}, got ${JSON.stringify(text)}`, { field, value: text });
  }
  return text as T;
}

/** The contents of a PEM file (certificate, key or CA); an error when unreadable or not PEM. */
export function readPem(field: string, path: string): Buffer {
  try {
    const pem = readFileSync(path);
    if (!pem.includes('-----BEGIN')) throw new Error('not a PEM file');
    return pem;
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as Error).message}`, { field, value: path });
  }
}

/** Linux's ephemeral port range (/proc/sys/net/ipv4/ip_local_port_range), to warn when --port-range overlaps it; null elsewhere. */
export function ephemeralPortRange(): PortRange | null {
  try {
    const [a, b] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return Number.isInteger(a) && Number.isInteger(b) ? { start: a, end: b } : null;
  } catch {
    return null;
  }
}

/** Whether two port ranges share a port. */
export function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.start <= b.end && b.start <= a.end;
}

/** An absolute file system path (a directory vspc reads). */
export function parseAbsolutePath(field: string, text: string): string {
  const t = text.trim();
  if (!t.startsWith('/') || t.includes('\0')) throw new ConfigError(`${field}: "${t}" is not an absolute path`, { field, value: text });
  return t;
}

/** A comma list of DNS names (lower-cased); each a plain host name, no port, no wildcard. */
export function parseHostNames(field: string, text: string): string[] {
  const names = text
    .split(',')
    .map((n) => n.trim().toLowerCase())
    .filter((n) => n !== '');
  for (const n of names) {
    if (n.length > 253 || !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(n)) {
      throw new ConfigError(`${field}: "${n.slice(0, 80)}" is not a host name`, { field, value: text });
    }
  }
  return names;
}
