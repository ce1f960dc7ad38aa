import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { PortRange } from '../domain/repository.js';
import type { HostPort } from '../util/net.js';
import type { LockRequest } from '../domain/locks.js';

export type { HostPort } from '../util/net.js';

/** Everything the server needs, after validation. Durations in ms. */
export interface VspcConfig {
  proxyListen: HostPort;
  proxyTlsListen: HostPort | null;
  adminListen: HostPort;
  tls: { cert: Buffer; key: Buffer } | null;
  dbPath: string;
  portRange: PortRange;
  tlsPortOffset: number;
  vmListenHost: string;
  serviceName: string;
  /** VM serial ports not seen for this long are forgotten; 0 = never. */
  expireAfterMs: number;
  humanTimeoutMs: number;
  identifyTimeoutMs: number;
  subnegotiationTimeoutMs: number;
  maxSubnegotiation: number;
  maxPreIdentifyBuffer: number;
  clientQueueLimit: number;
  closeGraceMs: number;
  bindRetryMs: number;
  comPort: boolean;
  /** vMotion: a pending GOAHEAD/PEER not finished by then is abandoned. */
  vmotionTimeoutMs: number;
  /** vMotion: client input held during a switch-over, at most this many bytes. */
  vmotionHoldLimit: number;
  /** Recent VM output replayed to a client on attach. */
  scrollbackBytes: number;
  /** Wait this long for a VSPC-CONTROL lock request before giving a client the default lock. */
  clientLockWaitMs: number;
  /** Close console clients that typed nothing for this long (0 = never; keepalive still finds dead peers). */
  clientIdleTimeoutMs: number;
  /** With TLS: only clients with a certificate signed by this CA (PEM) may use telnets client ports. */
  clientCa: Buffer | null;
  /** VM-side connections still negotiating/identifying at once; past this new ones are dropped. */
  maxUnidentifiedConnections: number;
  /** Admin API bearer token (--admin-token, VSPC_ADMIN_TOKEN, --admin-token-file); null = none required. */
  adminToken: string | null;
  /** Serve the admin API over HTTPS with this certificate and key (--admin-cert/--admin-key). */
  adminTls: { cert: Buffer; key: Buffer } | null;
  /** Lock mode a client gets unless it asks for another (config file `defaultLockMode`). */
  defaultLockMode: LockModeName;
  /** Per-VM settings from the config file (`vms:`); see resolveVmSettings in config-file.ts. */
  vms: VmSettings[];
  /** Console log files, one per VM serial port, in this directory (--log-dir); null = off. */
  logDir: string | null;
  /** A console log file is rotated before it would pass this many bytes (--log-max-size). */
  logMaxSize: number;
  /** Rotated console log files kept per VM serial port, `x.log.1` … (--log-keep). */
  logKeep: number;
  /** A timestamp mark in console logs that had output, this often; 0 = none (--log-mark-interval). */
  logMarkIntervalMs: number;
}

/** Client lock modes a config file may name. */
/** Lock modes a config file may name: the domain's lock requests (src/domain/locks.ts). */
export { LOCK_MODES as LOCK_MODE_NAMES } from '../domain/locks.js';
export type LockModeName = LockRequest;

/** One `vms:` entry of the config file. `match`: a VM name (glob * ?), UUID, or either with `:LABEL`. */
export interface VmSettings {
  match: string;
  lockMode?: LockModeName;
  /** Scrollback size in bytes for the matching VM serial ports. */
  scrollbackBytes?: number;
  /** Fixed client port for the matching VM serial port. */
  port?: number;
  /** Where the entry is written ("file:line:col"), for log lines. */
  where?: string;
}

/** Linux's default ip_local_port_range is 32768-60999: our default stays below it. */
export const DEFAULT_PORT_RANGE: PortRange = { start: 10000, end: 19999 };

export const DEFAULTS: VspcConfig = {
  proxyListen: { host: '0.0.0.0', port: 13370 },
  proxyTlsListen: null,
  adminListen: { host: '127.0.0.1', port: 13371 },
  tls: null,
  dbPath: 'vspc.db',
  portRange: DEFAULT_PORT_RANGE,
  tlsPortOffset: 10000,
  vmListenHost: '127.0.0.1',
  serviceName: 'vSPC.py',
  expireAfterMs: 90 * 24 * 3600 * 1000,
  humanTimeoutMs: 5000,
  identifyTimeoutMs: 30_000,
  subnegotiationTimeoutMs: 30_000,
  maxSubnegotiation: 64 * 1024,
  maxPreIdentifyBuffer: 64 * 1024,
  clientQueueLimit: 1024 * 1024,
  closeGraceMs: 5000,
  bindRetryMs: 30_000,
  comPort: true,
  vmotionTimeoutMs: 60_000,
  vmotionHoldLimit: 1024 * 1024,
  scrollbackBytes: 64 * 1024,
  clientLockWaitMs: 1000,
  clientIdleTimeoutMs: 0,
  clientCa: null,
  maxUnidentifiedConnections: 1024,
  adminToken: null,
  adminTls: null,
  defaultLockMode: 'readwrite',
  vms: [],
  logDir: null,
  logMaxSize: 10 * 1024 * 1024,
  logKeep: 5,
  logMarkIntervalMs: 3_600_000,
};

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
  return { host, port: parsePort(field, portText) };
}

export function parsePortRange(field: string, text: string): PortRange {
  const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not START-END`, { field, value: text });
  const start = parsePort(field, m[1], false);
  const end = parsePort(field, m[2], false);
  if (start > end) throw new ConfigError(`${field}: start ${start} is greater than end ${end}`, { field, value: text });
  return { start, end };
}

export function parseDuration(field: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not a duration (e.g. 500ms, 30s, 5m, 90d)`, { field, value: text });
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's']!;
  return Math.round(Number(m[1]) * unit);
}

export function parseSize(field: string, text: string): number {
  const m = /^\s*(\d+)\s*(b|k|kib|m|mib)?\s*$/i.exec(text);
  if (!m) throw new ConfigError(`${field}: "${text}" is not a size (e.g. 65536, 64k, 1m)`, { field, value: text });
  const unit = { b: 1, k: 1024, kib: 1024, m: 1 << 20, mib: 1 << 20 }[(m[2] ?? 'b').toLowerCase()]!;
  const n = Number(m[1]) * unit;
  if (n < 1) throw new ConfigError(`${field}: must be at least 1 byte`, { field, value: text });
  return n;
}

export function readPem(field: string, path: string): Buffer {
  try {
    const pem = readFileSync(path);
    if (!pem.includes('-----BEGIN')) throw new Error('not a PEM file');
    return pem;
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as Error).message}`, { field, value: path });
  }
}

/** Reads Linux's ephemeral port range, to warn when our range overlaps it. */
export function ephemeralPortRange(): PortRange | null {
  try {
    const [a, b] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return Number.isInteger(a) && Number.isInteger(b) ? { start: a, end: b } : null;
  } catch {
    return null;
  }
}

export function rangesOverlap(a: PortRange, b: PortRange): boolean {
  return a.start <= b.end && b.start <= a.end;
}
