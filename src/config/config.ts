/**
 * The configuration the server runs with (VspcConfig) and its defaults. Which option
 * sets which field, with what default, is declared once in table.ts; DEFAULTS is
 * computed from that table (options.ts).
 */
import type { SourceSpec } from '../domain/source-spec.js';
import type { PortRange } from '../domain/repository.js';
import type { HostPort } from '../util/net.js';
import type { LockRequest } from '../domain/locks.js';
import type { CidrBlock } from '../util/cidr.js';
import type { LOG_FORMATS, LOG_LEVELS } from './table.js';
import type { AccessSettings } from './access.js';
import { DEFAULTS as COMPUTED_DEFAULTS } from './options.js';
import type { BrokerSocketSetting } from './broker.js';

export type { HostPort } from '../util/net.js';
export {
  parseDuration,
  parseHostPort,
  parsePort,
  parsePortRange,
  parseSize,
  readPem,
  ephemeralPortRange,
  rangesOverlap,
} from './parse.js';

/** Everything the server needs, after validation. Durations in ms, sizes in bytes. */
export interface VspcConfig {
  proxyListen: HostPort;
  proxyTlsListen: HostPort | null;
  adminListen: HostPort;
  /** DNS names the admin API answers to besides IP literals and localhost (request-guard.ts); null = none. */
  adminHostNames: string[] | null;
  tls: { cert: Buffer; key: Buffer } | null;
  /** A SQLite file, or a PostgreSQL URL (postgres://...): see parseDb. */
  dbPath: string;
  /** This node's id in a PostgreSQL cluster; null: the host name. */
  nodeId: string | null;
  /** Where this node's internal cluster link listens, also the address it advertises (--cluster-listen); null: no link. */
  clusterListen: HostPort | null;
  /** The cluster's shared secret, read from --cluster-secret-file (the link's TLS pre-shared keys derive from it). */
  clusterSecret: Buffer | null;
  portRange: PortRange;
  /** A console's telnets TCP port is its telnet TCP port plus this. */
  tlsPortOffset: number;
  /** The address the per-console client ports bind to (--client-listen-host, formerly --vm-listen-host). */
  clientListenHost: string;
  serviceName: string;
  /** VM serial ports not seen for this long are forgotten; 0 = never. */
  expireAfterMs: number;
  humanTimeoutMs: number;
  /** Option 232 agreed but no DO-PROXY + UUID (or VMOTION-PEER) by then: closed. */
  identifyTimeoutMs: number;
  /** Networks that may connect as VMs (--proxy-allow); null = any address. */
  proxyAllow: CidrBlock[] | null;
  /**
   * Before a new connection takes a VM serial port from a live one at another address,
   * the old one is asked GET-VM-VC-UUID; an answer within this refuses the newcomer.
   * 0 = no probe, the newest connection wins.
   */
  takeoverProbeTimeoutMs: number;
  /** Unidentified VM connections one source address (IPv6: /64) may hold; 0 = no limit. */
  maxUnidentifiedPerAddress: number;
  /** New VM serial port records one source address may create per second (token bucket); 0 = no limit. */
  registrationRate: number;
  /** ... and at once. */
  registrationBurst: number;
  /** Records no client ever attached to are forgotten after this long unseen; 0 = only expireAfterMs. */
  expireUnusedAfterMs: number;
  subnegotiationTimeoutMs: number;
  maxSubnegotiation: number;
  maxPreIdentifyBuffer: number;
  clientQueueLimit: number;
  closeGraceMs: number;
  bindRetryMs: number;
  comPort: boolean;
  /** vMotion: a pending GOAHEAD/PEER not finished by then is abandoned. */
  vmotionTimeoutMs: number;
  /** vMotion: bytes of the random secret vspc sends in VMOTION-GOAHEAD (4-64; below 8 is warned about). */
  vmotionSecretBytes: number;
  /** vMotion: client input held during a switch-over, at most this many bytes. */
  vmotionHoldLimit: number;
  /** Recent VM output replayed to a client on attach. */
  scrollbackBytes: number;
  /** How often a console's pty is checked for a reader opening it (access method pty). */
  ptyPollMs: number;
  /** Wait this long for a VSPC-CONTROL lock request before giving a client the default lock. */
  clientLockWaitMs: number;
  /** Close console clients that typed nothing for this long (0 = never; keepalive still finds dead peers). */
  clientIdleTimeoutMs: number;
  /** With TLS: only clients with a certificate signed by this CA (PEM) may use telnets client ports. */
  clientCa: Buffer | null;
  /** VM-side connections still negotiating/identifying at once; past this new ones are dropped. */
  maxUnidentifiedConnections: number;
  /** The console broker's unix socket (--broker-socket); null = none. */
  brokerSocket: BrokerSocketSetting | null;
  /** Its permission bits (--broker-socket-mode). */
  brokerSocketMode: number;
  /** Its group (--broker-socket-group); null = vspc's own. */
  brokerSocketGroup: { name: string; gid: number } | null;
  /** The console broker on TCP too (--broker-listen); null = not. */
  brokerListen: HostPort | null;
  /** Bounds on broker connections that have not chosen a console (src/access/broker/connection.ts). */
  brokerLimits: BrokerLimits;
  /** Admin API bearer token (--admin-token, VSPC_ADMIN_TOKEN, --admin-token-file); null = none required. */
  adminToken: string | null;
  /** Serve the admin API over HTTPS with this certificate and key (--admin-cert/--admin-key). */
  adminTls: { cert: Buffer; key: Buffer } | null;
  /** Lock mode a client gets unless it asks for another (config file `defaultLockMode`). */
  defaultLockMode: LockModeName;
  /** Per-VM settings from the config file (`vms:`); see resolveVmSettings in vms.ts. */
  vms: VmSettings[];
  /** What vspc adds to a client's stream (greeting line, notices, scrollback replay); per console in vms:/consoles:. */
  greeting: boolean;
  notices: boolean;
  replay: boolean;
  /** Declared consoles from the config file (`consoles:`); see consoles.ts. */
  consoles: ConsoleSettings[];
  /** Serial tunnels from the config file (`tunnels:`); see tunnels.ts. */
  tunnels: TunnelSettings[];
  /** Access methods for every console (config file `access:`); entries of vms:/consoles: override it (access.ts). */
  access: AccessSettings;
  /** Proxmox discovery: the run directory of the VMs' serial sockets; null = off. */
  proxmoxRunDir: string | null;
  proxmoxConfDir: string;
  /** libvirt discovery: the directory of the domains' runtime XML; null = off. */
  libvirtRunDir: string | null;
  /** Consoles found by path pattern (`discover:`). */
  discoverGlobs: DiscoverGlob[];
  /** Discovery rescans this often besides watching (ms; 0 = only watch). */
  discoveryRescanMs: number;
  /** Console log files, one per VM serial port, in this directory (--log-dir); null = off. */
  logDir: string | null;
  /** A console log file is rotated before it would pass this many bytes (--log-max-size). */
  logMaxSize: number;
  /** Rotated console log files kept per VM serial port, `x.log.1` … (--log-keep). */
  logKeep: number;
  /** A timestamp mark in console logs that had output, this often; 0 = none (--log-mark-interval). */
  logMarkIntervalMs: number;
  /**
   * The process logger's level (--log-level). Whoever creates the logger sets it at
   * start (cli/vspc.ts); a reload sets it on the running server's logger.
   */
  logLevel: LogLevel;
  /** The process logger's format (--log-format); fixed at start. */
  logFormat: LogFormatName;
  /** The SSH front door (--ssh-listen); null = off. */
  sshListen: HostPort | null;
  /** Where the SSH host keys are kept (created on first start); null = the database's directory. */
  sshHostKeyDir: string | null;
  /** OpenSSH-format authorized keys with vspc's per-key options (--ssh-authorized-keys); re-read on every reload. */
  sshAuthorizedKeys: string | null;
  /** An external command deciding keys and rights, like AuthorizedKeysCommand (--ssh-keys-command). */
  sshKeysCommand: string | null;
  /** SSH sessions idle this long are ended, unless the key says otherwise (0 = never). */
  sshIdleTimeoutMs: number;
  /** SSH sessions last at most this long, unless the key says otherwise (0 = no limit). */
  sshMaxSessionMs: number;
  /** Bounds of the SSH front door fixed in code (tests shorten them). */
  sshLimits: SshLimits;
}

/** Bounds of the SSH front door (src/access/ssh/): time to log in, keepalive, the failed-authentication bucket, the keys command. */
export interface SshLimits {
  /** A connection not authenticated by then is closed (OpenSSH's LoginGraceTime). */
  loginGraceMs: number;
  /** SSH-level keepalive: a ping this often; a peer that misses `keepaliveCountMax` in a row is cut off. */
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  /** Failed authentications per source address: a bucket of this many ... */
  authFailureBurst: number;
  /** ... refilled by one every this many ms. An empty bucket refuses the address's connections until it refills. */
  authFailureRefillMs: number;
  /** Connections not yet authenticated, in all and per source address; past these, new ones are dropped at accept. */
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  /** The keys command: killed after this long; its output bounded; this many at once at most. */
  keysCommandTimeoutMs: number;
  keysCommandMaxOutput: number;
  keysCommandConcurrency: number;
  /** Output queued to one SSH session (channel and socket) before it is cut off; null = --client-queue-limit. */
  maxQueuedBytes: number | null;
  /**
   * Connections from one source address (IPv6: its /64) that end without logging in
   * (key exchange and away, `none` only) cost nothing this many times (refilled at
   * `authFailureRefillMs`); past that each costs a token of the address's failure bucket.
   */
  freeUnauthenticatedCloses: number;
  /** Authenticated connections of one key at once, and sessions of one connection (a key's vspc-max-connections / vspc-max-sessions win). */
  maxConnectionsPerKey: number;
  maxSessionsPerConnection: number;
  /** Requests refused outright (forwarding, X11, subsystems...) one connection may make before it is closed. */
  maxRefusedRequests: number;
}

/** See BrokerLimits in src/access/broker/connection.ts (the same shape). */
export interface BrokerLimits {
  selectTimeoutMs: number;
  maxPending: number;
  maxRequests: number;
  pageBytes: number;
  maxSubnegotiation: number;
  patternSteps: number;
}

export type { BrokerSocketSetting } from './broker.js';

export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormatName = (typeof LOG_FORMATS)[number];

/** Lock modes a config file may name: the domain's lock requests (src/domain/locks.ts). */
export { LOCK_MODES as LOCK_MODE_NAMES } from '../domain/locks.js';
export type LockModeName = LockRequest;

/** One `discover:` entry: paths matching `glob` become consoles with `source` (templates: {path} {basename} {stem} {dir}). */
export interface DiscoverGlob {
  glob: string;
  source: string;
  name?: string;
  where?: string;
}

/** One forward of a tunnel: where vspc listens, and the port in the guest it leads to. */
export interface TunnelForwardSettings {
  listen: { type: 'auto' } | { type: 'tcp'; host: string; port: number } | { type: 'unix'; path: string; mode: number };
  to: number;
}

/** One `tunnels:` entry (src/config/tunnels.ts): `console` (an existing console) or `source` (its own). */
export interface TunnelSettings {
  name: string;
  console?: string;
  source?: SourceSpec;
  /** The source as canonical text (formatSourceSpec). */
  sourceText?: string;
  forwards: TunnelForwardSettings[];
}

/** One `consoles:` entry of the config file (src/config/consoles.ts). */
export interface ConsoleSettings {
  name: string;
  source: SourceSpec;
  /** The source as canonical text (formatSourceSpec), for logs and comparisons. */
  sourceText: string;
  lockMode?: LockModeName;
  scrollbackBytes?: number;
  /** Fixed client TCP port (config file key `port`). */
  tcpPort?: number;
  greeting?: boolean;
  notices?: boolean;
  replay?: boolean;
  /** false: no console log file for this console. */
  log?: boolean;
  /** Access methods for this console, over the global `access:` and any vms: match. */
  access?: AccessSettings;
  /** Where the entry is written ("file:line:col"), for log lines. */
  where?: string;
}

/** One `vms:` entry of the config file. `match`: a VM name (glob * ?, any case), UUID, or either with `:LABEL`. */
export interface VmSettings {
  match: string;
  lockMode?: LockModeName;
  /** Scrollback size in bytes for the matching VM serial ports. */
  scrollbackBytes?: number;
  /** Fixed client TCP port for the matching VM serial port (config file key `port`). */
  tcpPort?: number;
  /** Stream switches for the matching consoles (see ConsoleHub.stream). */
  greeting?: boolean;
  notices?: boolean;
  replay?: boolean;
  /** Access methods for the matching consoles, over the global `access:`. */
  access?: AccessSettings;
  /** Where the entry is written ("file:line:col"), for log lines. */
  where?: string;
}

/** The configuration with every option at its default (table.ts) and the fixed settings. */
export const DEFAULTS: VspcConfig = COMPUTED_DEFAULTS;
