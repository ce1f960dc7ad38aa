/**
 * Every setting of vspc, declared once. Each option row says its flag, its config
 * file key, its help text, how its text is parsed, its default (as an operator types
 * it, shown by `--help`), the VspcConfig field it sets, and whether a reload applies
 * it. From this table come the `vspc` command line (options.ts), DEFAULTS, the keys a
 * config file may have (file.ts) and what a reload applies (reload.ts); the running
 * server supplies one applier per reloadable field (VspcServer.reloadAppliers), which
 * the ReloadAppliers type demands and a test checks.
 *
 * Settings no option sets (protocol bounds, grace periods) are in FIXED_SETTINGS
 * below, also typed so that every VspcConfig field is in exactly one of the two.
 */
import { readFileSync, statSync } from 'node:fs';
import type { HostPort } from '../util/net.js';
import { LOCK_MODES } from '../domain/locks.js';
import type { VspcConfig } from './config.js';
import {
  parseChoice,
  parseCount,
  parseDuration,
  parseHostPort,
  parseAbsolutePath,
  parseHostNames,
  parseNonEmpty,
  parsePort,
  parseReadableFile,
  parsePortRange,
  parseCidrList,
  parseRate,
  parseSize,
  parseSizeOrZero,
} from './parse.js';
import { ConfigError } from '../errors.js';
import type { Fail } from './file.js';
import { checkVms } from './vms.js';
import { checkConsoles, checkDiscoverGlobs } from './consoles.js';
import { DEFAULT_GLOB_BUDGET } from '../util/glob.js';
import { checkTunnels } from './tunnels.js';
import { parseBrokerSocket, parseGroup, parseSocketMode } from './broker.js';
import { checkAccess } from './access.js';

export const ADMIN_TOKEN_ENV = 'VSPC_ADMIN_TOKEN';
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export const LOG_FORMATS = ['json', 'text'] as const;
/**
 * vMotion secret length in bytes (VMOTION-GOAHEAD, VMware "vMotion Notification"): at
 * least 8 unless an operator lowers it, which is warned about; 4 is the shortest seen
 * from a concentrator that ESXi hosts accepted (test/fixtures/esxi-capture-vmotion.txt).
 */
export const MIN_SAFE_VMOTION_SECRET_BYTES = 8;
export const MIN_VMOTION_SECRET_BYTES = 4;
/** A subnegotiation payload stays small, and nothing suggests a host takes longer secrets. */
export const MAX_VMOTION_SECRET_BYTES = 64;
/** Where ESXi hosts connect with telnets:// when --cert/--key are given and --proxy-tls-listen is not. */
export const PROXY_TLS_LISTEN_DEFAULT = '0.0.0.0:13372';

/** A VspcConfig field. */
export type Field = keyof VspcConfig;

/**
 * What a reload does with an option: `false`, nothing until a restart (the change is
 * reported as `restartNeeded`); otherwise when the new value takes effect, in the
 * words of docs/operations.md's reload table.
 */
export type Reload = false | string;

/** One row of the table. */
export interface OptionSpec<F extends Field = Field, R extends Reload = Reload> {
  /** Commander's syntax (`--port-range <start-end>`, a switch `--no-com-port`); null: a config file key only. */
  readonly flag: string | null;
  /** The config file key: the long flag in camelCase (`--port-range` → `portRange`, `--no-com-port` → `comPort`). */
  readonly key: string;
  /**
   * `text`: a value parsed by `parse` (or combined with others, see DERIVED in options.ts);
   * `list`: several text values — a variadic, repeatable flag (`--proxy-allow A B`,
   * `--proxy-allow A --proxy-allow B`), commas within a value, or a list in the file —
   * given to `parse` joined by commas, unset (null) when none is given;
   * `switch`: true unless `--no-…`; `structured`: a config file value checked by
   * `check` (`vms:`, `consoles:`).
   */
  readonly kind: 'text' | 'list' | 'switch' | 'structured';
  /** For `structured`: checks the file's value, failing at the position of what is wrong. */
  readonly check?: (value: unknown, fail: Fail) => VspcConfig[F];
  /** For `structured`: the value when the file has none. */
  readonly empty?: VspcConfig[F];
  readonly help: string;
  /** The value when none is given, as an operator types it (shown by --help). Absent: unset, the field is null. */
  readonly default?: string;
  /** The only values allowed (shown by --help). */
  readonly choices?: readonly string[];
  /** An environment variable that gives the value (between the command line and the file). */
  readonly env?: string;
  /** An old name still accepted (flag and file key), with a deprecation warning. */
  readonly deprecatedAlias?: { readonly flag: string; readonly key: string };
  /** The VspcConfig field this option sets (options that share one are combined in options.ts). */
  readonly field: F;
  /** Text → value; throws ConfigError naming `name` (the flag, or the key for file-only settings). Absent: combined in options.ts. */
  readonly parse?: (text: string, name: string) => VspcConfig[F];
  readonly reload: R;
}

/** Infers each row's field and reload literally, so that the types below can be computed from the table. */
function option<F extends Field, R extends Reload>(spec: OptionSpec<F, R>): OptionSpec<F, R> {
  return spec;
}

const ON_DISCOVERY = 'at once: discovery restarts with the new settings (consoles found again keep their ports)';
const ON_NEW_CLIENTS = 'for clients that attach afterwards';
const ON_NEW_VM_CONNECTIONS = 'for VM connections accepted afterwards';
const ON_HUBS = 'at once: buffers resized (the most recent output kept), VM serial ports moved to their fixed ports; lock modes for clients that attach afterwards';

/**
 * `--db`: a SQLite file path, or a PostgreSQL URL (postgres:// or postgresql://, with a
 * host or a `?host=/socket/dir`). Any other `scheme://` is refused rather than taken for
 * a file name.
 */
export function parseDb(field: string, text: string): string {
  const t = text.trim();
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(t);
  if (!scheme) return text;
  if (!/^postgres(ql)?$/i.test(scheme[1])) {
    throw new ConfigError(`${field}: unsupported database URL scheme "${scheme[1]}://"; use a SQLite file path or postgres://user@host/database`, {
      field,
      value: scheme[1],
    });
  }
  // Not WHATWG URL parsing: `postgres://user@/db?host=/run/postgresql` (a socket, no host) is valid for libpq and pg.
  const m = /^[^:]+:\/\/(?:[^@/?#]*@)?([^/?#]*)(\/[^?#]*)?(\?[^#]*)?$/.exec(t);
  if (!m) throw new ConfigError(`${field}: not a valid PostgreSQL URL (postgres://user:password@host:port/database)`, { field });
  const [, host, path, query] = m;
  if (host === '' && !new URLSearchParams(query ?? '').get('host')) {
    throw new ConfigError(`${field}: a PostgreSQL URL needs a host (postgres://user@host/database, or ?host=/socket/dir)`, { field });
  }
  if (!path || path.length <= 1) {
    throw new ConfigError(`${field}: a PostgreSQL URL needs a database name (postgres://user@host/database)`, { field });
  }
  return t;
}

/**
 * `--cluster-listen`: HOST:PORT with an explicit host other nodes can reach (it is what
 * the node advertises), so not a wildcard address.
 */
export function parseClusterListen(field: string, text: string): HostPort {
  const hp = parseHostPort(field, text, '');
  if (isUnspecifiedHost(hp.host)) {
    throw new ConfigError(`${field}: give the address the other nodes reach this one on (it is advertised to them), not ${hp.host || 'no host'}`, {
      field,
      value: text,
    });
  }
  return hp;
}

/**
 * Every address of the host (no address other nodes could reach): empty, `0`, `0.0.0.0`
 * and other spellings of 0.0.0.0 (Linux's resolver takes `0` and `0.0` for it), `::`,
 * `[::]` and other spellings of the IPv6 unspecified address.
 */
function isUnspecifiedHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === '' || /^0+(?:\.0+){0,3}$/.test(h)) return true;
  return h.includes(':') && /^[0:]+$/.test(h);
}

/** Hex digits (128 bits) or base64 characters (24 bytes) a cluster secret has, at least. */
export const MIN_CLUSTER_SECRET = 32;

/**
 * Below these (bits per character, from charEntropy) a secret is taken as a few
 * characters repeated. Far enough below what random secrets give that one is never
 * refused: of 3 million random 32-character secrets the lowest were 2.73 (hex) and 3.73
 * (base64); under 2.25 a hex secret uses about 5 of its 16 digits, under 3 a base64
 * one about 8 of its 64 characters (for random secrets, odds far below one in a billion).
 * The earlier 3 and 4, with base64 lowercased, refused one `openssl rand -base64 24` in
 * 20. `abcd…` (2), `deadbeef…` (2.16), `Aa1+…` (2) are still refused.
 */
const MIN_SECRET_ENTROPY = { hex: 2.25, base64: 3 } as const;

/**
 * Shannon entropy of the text's own character frequencies, in bits per character: a
 * cheap test that a secret is not a few characters repeated. 32 random hex digits give
 * about 3.5 (16 symbols), 32 random base64 characters about 4.6; `aaaa…` gives 0.
 */
function charEntropy(text: string): number {
  const counts = new Map<string, number>();
  for (const ch of text) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let h = 0;
  for (const n of counts.values()) h -= (n / text.length) * Math.log2(n / text.length);
  return h;
}

/**
 * `--cluster-secret-file`: the cluster's shared secret (trailing white space ignored):
 * random data in a clear form, at least 128 bits of it — at least 32 hex digits, or at
 * least 32 base64 characters (24 bytes), e.g. made with `openssl rand -hex 32`. Refused
 * when the group or other users may read the file (it lets anyone into the cluster),
 * when it is neither form, or when it does not look random (a few characters repeated:
 * an impostor listener could try such secrets offline against a handshake).
 */
export function readClusterSecret(field: string, path: string): Buffer {
  const p = parseReadableFile(field, path);
  const mode = statSync(p).mode;
  if ((mode & 0o044) !== 0) {
    throw new ConfigError(`${field}: ${p} is readable by ${(mode & 0o004) !== 0 ? 'every user' : 'its group'} (mode ${(mode & 0o777).toString(8)}); chmod 600 it`, { field, value: p });
  }
  const secret = readFileSync(p, 'utf8').replace(/\s+$/, '');
  const hex = /^[0-9a-fA-F]+$/.test(secret);
  const base64 = !hex && /^[A-Za-z0-9+/_-]+={0,2}$/.test(secret);
  // A hex digit is one symbol in either case; base64's two cases are different characters.
  const repetitive = hex ? charEntropy(secret.toLowerCase()) < MIN_SECRET_ENTROPY.hex : charEntropy(secret) < MIN_SECRET_ENTROPY.base64;
  const why =
    !hex && !base64
      ? 'is neither hex digits nor base64'
      : secret.length < MIN_CLUSTER_SECRET
        ? `is ${secret.length} characters; it needs at least ${MIN_CLUSTER_SECRET} ${hex ? 'hex digits' : 'base64 characters'}`
        : repetitive
          ? 'does not look random (a few characters repeated)'
          : null;
  if (why !== null) {
    throw new ConfigError(`${field}: the secret in ${p} ${why}; make one with openssl rand -hex 32`, { field, value: p });
  }
  return Buffer.from(secret, 'utf8');
}

/** `--node-id`: a short name, also shown in the cluster-wide console list. */
export function parseNodeId(field: string, text: string): string {
  const t = text.trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(t)) {
    throw new ConfigError(`${field}: must be 1-63 letters, digits, '.', '_' or '-' (starting with a letter or digit), got ${JSON.stringify(text)}`, {
      field,
      value: text,
    });
  }
  return t;
}

/** The options, in `--help` order. */
export const OPTIONS = [
  option({
    flag: '--proxy-listen <host:port>',
    key: 'proxyListen',
    kind: 'text',
    field: 'proxyListen',
    help: 'where ESXi hosts connect (plain telnet)',
    default: '0.0.0.0:13370',
    parse: (t, f) => parseHostPort(f, t, '0.0.0.0'),
    reload: false,
  }),
  option({
    flag: '--proxy-tls-listen <host:port>',
    key: 'proxyTlsListen',
    kind: 'text',
    field: 'proxyTlsListen',
    help: `where ESXi hosts connect with telnets:// (with --cert/--key; default ${PROXY_TLS_LISTEN_DEFAULT})`,
    parse: (t, f) => parseHostPort(f, t, '0.0.0.0'),
    reload: false,
  }),
  option({ flag: '--cert <file>', key: 'cert', kind: 'text', field: 'tls', help: 'TLS certificate (PEM) for telnets on the VM and client sides', reload: false }),
  option({ flag: '--key <file>', key: 'key', kind: 'text', field: 'tls', help: 'TLS private key (PEM)', reload: false }),
  option({
    flag: '--admin-listen <host:port>',
    key: 'adminListen',
    kind: 'text',
    field: 'adminListen',
    help: 'admin API (HTTP/JSON)',
    default: '127.0.0.1:13371',
    parse: (t, f) => parseHostPort(f, t, '127.0.0.1'),
    reload: false,
  }),
  option({
    flag: '--admin-host-names <names>',
    key: 'adminHostNames',
    kind: 'text',
    field: 'adminHostNames',
    help: 'DNS names the admin API answers to besides IP addresses and localhost (comma list; a guard against DNS rebinding)',
    parse: (t, f) => parseHostNames(f, t),
    reload: 'at once: the next request is checked against the new names',
  }),
  option({
    flag: '--admin-token <token>',
    key: 'adminToken',
    kind: 'text',
    field: 'adminToken',
    help: 'bearer token the admin API requires (visible in ps: prefer the variable or --admin-token-file)',
    env: ADMIN_TOKEN_ENV,
    reload: 'at once: the next request needs the new token (rotate a token this way)',
  }),
  option({
    flag: '--admin-token-file <file>',
    key: 'adminTokenFile',
    kind: 'text',
    field: 'adminToken',
    help: 'read the admin API token from this file',
    reload: 'at once: the next request needs the new token (rotate a token this way)',
  }),
  option({ flag: '--admin-cert <file>', key: 'adminCert', kind: 'text', field: 'adminTls', help: 'serve the admin API over HTTPS with this certificate (PEM)', reload: false }),
  option({ flag: '--admin-key <file>', key: 'adminKey', kind: 'text', field: 'adminTls', help: 'private key (PEM) for --admin-cert', reload: false }),
  option({
    flag: '--db <path|url>',
    key: 'db',
    kind: 'text',
    field: 'dbPath',
    help: 'registry of consoles and their ports: a SQLite file, or postgres://user@host/db for a cluster of vspc nodes sharing one PostgreSQL database',
    default: 'vspc.db',
    parse: (t, f) => parseDb(f, t),
    reload: false,
  }),
  option({
    flag: '--node-id <name>',
    key: 'nodeId',
    kind: 'text',
    field: 'nodeId',
    help: "this vspc node's name in a PostgreSQL cluster (unique among the nodes; default: the host name)",
    parse: (t, f) => parseNodeId(f, t),
    reload: false,
  }),
  option({
    flag: '--cluster-listen <host:port>',
    key: 'clusterListen',
    kind: 'text',
    field: 'clusterListen',
    help: "the internal link other cluster nodes reach this one on (PostgreSQL only; advertised in the database; port 0: any free one), e.g. 10.0.0.2:7700",
    parse: (t, f) => parseClusterListen(f, t),
    reload: false,
  }),
  option({
    flag: '--cluster-secret-file <file>',
    key: 'clusterSecretFile',
    kind: 'text',
    field: 'clusterSecret',
    help: 'the secret every cluster node shares: random, at least 32 hex digits or 32 base64 characters, made with openssl rand -hex 32 (file mode 600: not readable by group or others)',
    parse: (t, f) => readClusterSecret(f, t),
    reload: false,
  }),
  option({
    flag: '--port-range <start-end>',
    key: 'portRange',
    kind: 'text',
    field: 'portRange',
    help: 'client telnet ports handed to VM serial ports',
    // Linux's default ip_local_port_range is 32768-60999: the default stays below it.
    default: '10000-19999',
    parse: (t, f) => parsePortRange(f, t),
    reload: false,
  }),
  option({
    flag: '--tls-port-offset <n>',
    key: 'tlsPortOffset',
    kind: 'text',
    field: 'tlsPortOffset',
    help: "a VM's telnets port is its telnet port plus this",
    default: '10000',
    parse: (t, f) => parsePort(f, t),
    reload: false,
  }),
  option({
    flag: '--client-listen-host <host>',
    key: 'clientListenHost',
    kind: 'text',
    field: 'clientListenHost',
    help: 'address the per-VM client ports bind to',
    default: '127.0.0.1',
    deprecatedAlias: { flag: '--vm-listen-host <host>', key: 'vmListenHost' },
    parse: (t, f) => parseNonEmpty(f, t).trim(),
    reload: false,
  }),
  option({
    flag: '--service-name <name>',
    key: 'serviceName',
    kind: 'text',
    field: 'serviceName',
    help: 'service name VMs must use in their vSPC port URI',
    default: 'vSPC.py',
    parse: (t, f) => {
      if (t.length === 0 || t.includes('?')) throw new ConfigError(`${f}: must be non-empty and contain no "?"`, { field: f });
      return t;
    },
    reload: ON_NEW_VM_CONNECTIONS,
  }),
  option({
    flag: '--expire-after <duration>',
    key: 'expireAfter',
    kind: 'text',
    field: 'expireAfterMs',
    help: 'forget VM serial ports not seen for this long (0 = never)',
    default: '90d',
    parse: (t, f) => parseDuration(f, t),
    reload: 'at once (the hourly check is re-armed)',
  }),
  option({
    flag: '--expire-unused-after <duration>',
    key: 'expireUnusedAfter',
    kind: 'text',
    field: 'expireUnusedAfterMs',
    help: 'forget sooner VM serial ports that never printed a byte nor had a client (0 = only --expire-after)',
    // A record nobody ever used costs a port and one or two listening fds: a flood of
    // made-up UUIDs must not hold them for 90 days. A real VM that prints nothing for
    // an hour after it disconnected loses only a port nobody knew.
    default: '1h',
    parse: (t, f) => parseDuration(f, t),
    reload: 'at once (the hourly check is re-armed)',
  }),
  option({
    flag: '--identify-timeout <duration>',
    key: 'identifyTimeout',
    kind: 'text',
    field: 'identifyTimeoutMs',
    help: 'close VM connections that agreed to option 232 but do not identify in time',
    // Real hosts identify within milliseconds of agreeing to option 232 (about 1 ms in
    // the capture in docs); 5 s allows several round trips of a slow WAN and a TCP
    // retransmission, and keeps an idle flood from holding sockets for long.
    default: '5s',
    parse: (t, f) => parseDuration(f, t),
    reload: ON_NEW_VM_CONNECTIONS,
  }),
  option({
    flag: '--proxy-allow <cidr...>',
    key: 'proxyAllow',
    kind: 'list',
    field: 'proxyAllow',
    help: 'networks that may connect as VMs, checked before any protocol (repeat or comma-separate; default: any)',
    parse: (t, f) => parseCidrList(f, t),
    reload: ON_NEW_VM_CONNECTIONS,
  }),
  option({
    flag: '--takeover-probe <duration>',
    key: 'takeoverProbe',
    kind: 'text',
    field: 'takeoverProbeTimeoutMs',
    help: 'a new connection for a VM serial port whose connection answers GET-VM-VC-UUID within this is refused (0 = the newest wins)',
    // ESXi answers within a round trip (well under a millisecond in the capture); 2 s
    // covers a slow WAN plus one TCP retransmission (initial RTO 1 s), and is all a host
    // that really reconnected waits when its old connection died without a FIN.
    default: '2s',
    parse: (t, f) => parseDuration(f, t),
    reload: 'for takeovers begun afterwards',
  }),
  option({
    flag: '--unidentified-per-address <n>',
    key: 'unidentifiedPerAddress',
    kind: 'text',
    field: 'maxUnidentifiedPerAddress',
    help: 'VM connections one source address (IPv6: its /64) may have negotiating or identifying at once (0 = no limit)',
    // A host identifies each connection within milliseconds, but one that reconnects
    // all its VMs at once (vspc restarted) may have hundreds of handshakes in flight.
    // A quarter of the shared pool (1024): four addresses always fit, and past the pool
    // the busiest address gives way (listener.ts). Hosts behind one NAT address need more.
    default: '256',
    parse: (t, f) => parseCount(f, t, 0, 1_000_000),
    reload: false,
  }),
  option({
    flag: '--registration-rate <per-second>',
    key: 'registrationRate',
    kind: 'text',
    field: 'registrationRate',
    help: 'new VM serial ports one source address may register per second once its burst is spent (0 = no limit)',
    // New records appear when a VM first connects; 10/s (50 at once) lets a host
    // bring up hundreds of new VMs within a minute (ESXi retries refused ones) while a
    // flood of made-up UUIDs fills 10,000 ports in 17 minutes instead of one.
    default: '10',
    parse: (t, f) => parseRate(f, t),
    reload: false,
  }),
  option({
    flag: '--registration-burst <n>',
    key: 'registrationBurst',
    kind: 'text',
    field: 'registrationBurst',
    help: 'new VM serial ports one source address may register at once before --registration-rate applies',
    default: '50',
    parse: (t, f) => parseCount(f, t, 1, 1_000_000),
    reload: false,
  }),
  option({
    flag: '--human-timeout <duration>',
    key: 'humanTimeout',
    kind: 'text',
    field: 'humanTimeoutMs',
    help: 'explain and close connections that do not speak option 232 by then',
    default: '5s',
    parse: (t, f) => parseDuration(f, t),
    reload: ON_NEW_VM_CONNECTIONS,
  }),
  option({
    flag: '--client-queue-limit <size>',
    key: 'clientQueueLimit',
    kind: 'text',
    field: 'clientQueueLimit',
    help: 'bytes queued to a slow client before it is disconnected',
    default: '1m',
    parse: (t, f) => parseSize(f, t),
    reload: 'at once, for every client',
  }),
  option({
    flag: '--vmotion-timeout <duration>',
    key: 'vmotionTimeout',
    kind: 'text',
    field: 'vmotionTimeoutMs',
    help: 'abandon a vMotion that does not finish in time',
    default: '60s',
    parse: (t, f) => parseDuration(f, t),
    reload: 'for vMotions begun afterwards',
  }),
  option({
    flag: '--vmotion-secret-bytes <n>',
    key: 'vmotionSecretBytes',
    kind: 'text',
    field: 'vmotionSecretBytes',
    help: `length of the random secret in VMOTION-GOAHEAD (below ${MIN_SAFE_VMOTION_SECRET_BYTES} only with a warning)`,
    // VMware's current reference concentrator uses 8; hosts are known to handle 4 to 8 (decisions/0007 and vmotion.md).
    default: '8',
    parse: (t, f) => parseCount(f, t, MIN_VMOTION_SECRET_BYTES, MAX_VMOTION_SECRET_BYTES, 'a number of bytes'),
    reload: 'for vMotions begun afterwards',
  }),
  option({
    flag: '--vmotion-hold-limit <size>',
    key: 'vmotionHoldLimit',
    kind: 'text',
    field: 'vmotionHoldLimit',
    help: 'client input held per VM serial port during a vMotion',
    default: '1m',
    parse: (t, f) => parseSize(f, t),
    reload: false,
  }),
  option({
    flag: '--scrollback <size>',
    key: 'scrollback',
    kind: 'text',
    field: 'scrollbackBytes',
    help: 'recent VM output replayed to a client when it attaches (0 = none)',
    default: '64k',
    parse: (t, f) => parseSizeOrZero(f, t),
    reload: ON_HUBS,
  }),
  option({
    flag: '--client-ca <file>',
    key: 'clientCa',
    kind: 'text',
    field: 'clientCa',
    help: 'telnets client ports accept only certificates signed by this CA (PEM)',
    reload: false,
  }),
  option({
    flag: '--client-idle-timeout <duration>',
    key: 'clientIdleTimeout',
    kind: 'text',
    field: 'clientIdleTimeoutMs',
    help: 'close console clients idle this long (0 = never)',
    default: '0',
    parse: (t, f) => parseDuration(f, t),
    reload: false,
  }),
  option({
    flag: '--ssh-listen <host:port>',
    key: 'sshListen',
    kind: 'text',
    field: 'sshListen',
    help: 'accept SSH (public keys only) for the console menu, e.g. 0.0.0.0:2222 (default: off)',
    parse: (t, f) => parseHostPort(f, t, '0.0.0.0'),
    reload: false,
  }),
  option({
    flag: '--ssh-host-key-dir <dir>',
    key: 'sshHostKeyDir',
    kind: 'text',
    field: 'sshHostKeyDir',
    help: "SSH host keys, created there on first start (default: the database's directory)",
    parse: (t, f) => parseNonEmpty(f, t),
    reload: false,
  }),
  option({
    flag: '--ssh-authorized-keys <file>',
    key: 'sshAuthorizedKeys',
    kind: 'text',
    field: 'sshAuthorizedKeys',
    help: 'OpenSSH authorized keys with vspc-consoles=, vspc-modes=, vspc-user=, from= options; re-read on reload',
    parse: (t, f) => parseReadableFile(f, t),
    reload: false,
  }),
  option({
    flag: '--ssh-keys-command <command>',
    key: 'sshKeysCommand',
    kind: 'text',
    field: 'sshKeysCommand',
    help: 'program asked about keys the file does not list (args: login name, key type, key, fingerprint; answers JSON)',
    parse: (t, f) => parseNonEmpty(f, t).trim(),
    reload: false,
  }),
  option({
    flag: '--ssh-idle-timeout <duration>',
    key: 'sshIdleTimeout',
    kind: 'text',
    field: 'sshIdleTimeoutMs',
    help: 'end SSH sessions idle this long (a key may say otherwise; 0 = never)',
    default: '0',
    parse: (t, f) => parseDuration(f, t),
    reload: 'for SSH sessions begun afterwards',
  }),
  option({
    flag: '--ssh-max-session <duration>',
    key: 'sshMaxSession',
    kind: 'text',
    field: 'sshMaxSessionMs',
    help: 'end SSH sessions after this long (a key may say otherwise; 0 = no limit)',
    default: '0',
    parse: (t, f) => parseDuration(f, t),
    reload: 'for SSH sessions begun afterwards',
  }),
  option({
    flag: '--broker-socket <path>',
    key: 'brokerSocket',
    kind: 'text',
    field: 'brokerSocket',
    help: 'unix socket of the console broker (vspc-admin console: consoles by name, no admin token); auto: /run/vspc/broker.sock when /run/vspc exists; off: none',
    default: 'auto',
    parse: (t, f) => parseBrokerSocket(f, t),
    reload: false,
  }),
  option({
    flag: '--broker-socket-mode <mode>',
    key: 'brokerSocketMode',
    kind: 'text',
    field: 'brokerSocketMode',
    help: 'permissions of the broker socket (who may write to it may list and attach to every console)',
    // Owner and group: who may use the broker is who is in its group (--broker-socket-group,
    // else vspc's own group), managed with usermod, no restart. Never "other".
    default: '0660',
    parse: (t, f) => parseSocketMode(f, t),
    reload: false,
  }),
  option({
    flag: '--broker-socket-group <group>',
    key: 'brokerSocketGroup',
    kind: 'text',
    field: 'brokerSocketGroup',
    help: "group of the broker socket, by name or number (default: vspc's own group)",
    parse: (t, f) => parseGroup(f, t),
    reload: false,
  }),
  option({
    flag: '--broker-listen <host:port>',
    key: 'brokerListen',
    kind: 'text',
    field: 'brokerListen',
    help: 'also serve the console broker on this TCP address (no authentication: keep it on loopback) (default: off)',
    parse: (t, f) => parseHostPort(f, t, '127.0.0.1'),
    reload: false,
  }),
  option({
    flag: '--log-dir <dir>',
    key: 'logDir',
    kind: 'text',
    field: 'logDir',
    help: 'write a console log file per VM serial port in this directory (default: no console logs)',
    parse: (t, f) => parseNonEmpty(f, t),
    reload: false,
  }),
  option({
    flag: '--log-max-size <size>',
    key: 'logMaxSize',
    kind: 'text',
    field: 'logMaxSize',
    help: 'rotate a console log file before it passes this size',
    default: '10m',
    parse: (t, f) => {
      const n = parseSize(f, t);
      if (n < 4096) throw new ConfigError(`${f}: ${n} bytes is too small (at least 4k)`, { field: f, value: t });
      return n;
    },
    reload: false,
  }),
  option({
    flag: '--log-keep <n>',
    key: 'logKeep',
    kind: 'text',
    field: 'logKeep',
    help: 'rotated console log files kept per VM serial port (0 = none)',
    default: '5',
    parse: (t, f) => parseCount(f, t, 0, 1000, 'a number of files'),
    reload: false,
  }),
  option({
    flag: '--log-mark-interval <duration>',
    key: 'logMarkInterval',
    kind: 'text',
    field: 'logMarkIntervalMs',
    help: 'timestamp mark in console logs that had output, this often (0 = none)',
    default: '1h',
    parse: (t, f) => parseDuration(f, t),
    reload: false,
  }),
  option({
    flag: '--no-com-port',
    key: 'comPort',
    kind: 'switch',
    field: 'comPort',
    help: 'refuse COM-PORT (RFC 2217) instead of recording the guest UART settings',
    reload: ON_NEW_VM_CONNECTIONS,
  }),
  option({
    flag: '--no-greeting',
    key: 'greeting',
    kind: 'switch',
    field: 'greeting',
    help: "clients get no greeting line naming the console when they attach (per console: vms:/consoles: greeting)",
    reload: ON_NEW_CLIENTS,
  }),
  option({
    flag: '--no-notices',
    key: 'notices',
    kind: 'switch',
    field: 'notices',
    help: 'clients get no [vspc: ...] notices (VM connected/disconnected, input discarded) in their stream',
    reload: ON_NEW_CLIENTS,
  }),
  option({
    flag: '--no-replay',
    key: 'replay',
    kind: 'switch',
    field: 'replay',
    help: 'clients get no scrollback replay when they attach, only live output',
    reload: ON_NEW_CLIENTS,
  }),
  option({
    flag: '--log-level <level>',
    key: 'logLevel',
    kind: 'text',
    field: 'logLevel',
    help: 'log level',
    choices: LOG_LEVELS,
    default: 'info',
    parse: (t, f) => parseChoice(f, t, LOG_LEVELS),
    reload: 'at once, every logger',
  }),
  option({
    flag: '--log-format <format>',
    key: 'logFormat',
    kind: 'text',
    field: 'logFormat',
    help: 'log format',
    choices: LOG_FORMATS,
    default: 'json',
    parse: (t, f) => parseChoice(f, t, LOG_FORMATS),
    reload: false,
  }),
  option({
    flag: null,
    key: 'defaultLockMode',
    kind: 'text',
    field: 'defaultLockMode',
    help: 'the lock a console client gets unless it asks for another',
    choices: LOCK_MODES,
    default: 'readwrite',
    parse: (t, f) => parseChoice(f, t, LOCK_MODES),
    reload: 'for clients that attach afterwards',
  }),
  option({ flag: null, key: 'vms', kind: 'structured', check: checkVms, empty: [], field: 'vms', help: 'per-VM settings (match, port, scrollback, lockMode, access)', reload: ON_HUBS }),
  option({
    flag: '--proxmox <run-dir>',
    key: 'proxmox',
    kind: 'text',
    field: 'proxmoxRunDir',
    help: "discover Proxmox VMs' serial sockets in this directory (usually /var/run/qemu-server)",
    parse: (t, f) => parseAbsolutePath(f, t),
    reload: ON_DISCOVERY,
  }),
  option({
    flag: '--proxmox-conf-dir <dir>',
    key: 'proxmoxConfDir',
    kind: 'text',
    field: 'proxmoxConfDir',
    help: 'where Proxmox keeps VM configs (for their names)',
    default: '/etc/pve/qemu-server',
    parse: (t, f) => parseAbsolutePath(f, t),
    reload: ON_DISCOVERY,
  }),
  option({
    flag: '--libvirt <run-dir>',
    key: 'libvirt',
    kind: 'text',
    field: 'libvirtRunDir',
    help: "discover libvirt domains' serial consoles from their runtime XML here (usually /run/libvirt/qemu)",
    parse: (t, f) => parseAbsolutePath(f, t),
    reload: ON_DISCOVERY,
  }),
  option({
    flag: '--discovery-rescan <duration>',
    key: 'discoveryRescan',
    kind: 'text',
    field: 'discoveryRescanMs',
    help: 'rescan discovered consoles this often besides watching the directories (0 = only watch)',
    default: '30s',
    parse: (t, f) => parseDuration(f, t),
    reload: ON_DISCOVERY,
  }),
  option({
    flag: null,
    key: 'discover',
    kind: 'structured',
    check: checkDiscoverGlobs,
    empty: [],
    field: 'discoverGlobs',
    help: 'consoles found by path pattern (glob, source, name)',
    reload: ON_DISCOVERY,
  }),
  option({
    flag: null,
    key: 'consoles',
    kind: 'structured',
    check: checkConsoles,
    empty: [],
    field: 'consoles',
    help: 'declared consoles (name, source, lockMode, scrollback, port, log, access)',
    reload: 'at once: consoles added, removed (their ports freed) or re-pointed; the others untouched',
  }),
  option({
    flag: null,
    key: 'tunnels',
    kind: 'structured',
    check: checkTunnels,
    empty: [],
    field: 'tunnels',
    help: 'serial tunnels: TCP into guests over a console (name, console or source, forwards of listen and to)',
    reload: "at once: tunnels added, removed (their streams reset) or changed; an unchanged tunnel's streams are untouched",
  }),
  option({
    flag: null,
    key: 'access',
    kind: 'structured',
    check: (v, fail) => checkAccess(v, fail),
    empty: {},
    field: 'access',
    help: 'access methods of every console: telnet, raw (TCP), unix (sockets), pty; vms:/consoles: entries override it',
    reload: 'at once: endpoints opened and closed (sticky raw ports kept in the database)',
  }),
] as const;

/** Any row of the table. */
export type AnyOption = (typeof OPTIONS)[number];
/** VspcConfig fields some option sets. */
export type OptionField = AnyOption['field'];
/** VspcConfig fields a reload applies to a running server. */
export type ReloadableField = Extract<AnyOption, { reload: string }>['field'];

/**
 * How a running server applies each reloadable field: called with the new value after
 * it was stored in the running configuration. Every reloadable field needs one (the
 * type says so; a test checks the server's at run time too).
 */
export type ReloadAppliers = { readonly [K in ReloadableField]: (value: VspcConfig[K]) => void };

/** Settings no option sets: bounds and timings fixed in code (tests may change them). */
export const FIXED_SETTINGS: { readonly [K in Exclude<Field, OptionField>]: VspcConfig[K] } = {
  subnegotiationTimeoutMs: 30_000,
  maxSubnegotiation: 64 * 1024,
  maxPreIdentifyBuffer: 64 * 1024,
  closeGraceMs: 5000,
  bindRetryMs: 30_000,
  clientLockWaitMs: 1000,
  // A reader that opens a console's pty sees output from at most this long after it opened it.
  ptyPollMs: 250,
  maxUnidentifiedConnections: 1024,
  sshLimits: {
    loginGraceMs: 30_000,
    keepaliveIntervalMs: 15_000,
    keepaliveCountMax: 3,
    authFailureBurst: 10,
    authFailureRefillMs: 6_000,
    maxUnauthenticated: 256,
    maxUnauthenticatedPerAddress: 16,
    keysCommandTimeoutMs: 5_000,
    keysCommandMaxOutput: 64 * 1024,
    keysCommandConcurrency: 8,
    maxQueuedBytes: null,
    freeUnauthenticatedCloses: 10,
    maxConnectionsPerKey: 32,
    maxSessionsPerConnection: 10,
    maxRefusedRequests: 10,
  },
  // A person picks from the menu before connecting (vspc-admin console lists, closes,
  // then connects to SELECT), so a connection chooses within a round trip or two: 5 s
  // is generous. A full pool closes its oldest connection for a newcomer (broker.ts).
  brokerLimits: { selectTimeoutMs: 5_000, maxPending: 256, maxRequests: 32, pageBytes: 32 * 1024, maxSubnegotiation: 4096, patternSteps: DEFAULT_GLOB_BUDGET },
};

/** The name errors use for an option: its long flag, or its key when it has no flag. */
export function optionName(spec: AnyOption | OptionSpec): string {
  return spec.flag === null ? spec.key : spec.flag.split(/[\s,]/)[0];
}

/** The fields a reload applies, from the table. */
export const RELOADABLE: ReadonlySet<Field> = new Set<Field>(OPTIONS.filter((o) => o.reload !== false).map((o) => o.field));

/**
 * The config file key(s) of a VspcConfig field, for reports: `cert/key` for `tls`,
 * `adminToken/adminTokenFile` for `adminToken`; a fixed setting keeps its field name.
 */
export function keyName(field: string): string {
  const keys = OPTIONS.filter((o) => o.field === field).map((o) => o.key);
  return keys.length > 0 ? keys.join('/') : field;
}
