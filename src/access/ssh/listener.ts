/**
 * The SSH front door (`--ssh-listen`): host keys, the listening socket, the checks at
 * accept (failure buckets, caps on connections not yet logged in) made before any
 * key exchange so that a flood costs little and slows no one else, the
 * authorized-keys file and the keys command, reload, status and counters.
 *
 * Access layer: it knows the registry and hubs (domain), not sources or config; the
 * server passes its settings in (getters for the ones a reload changes).
 */
import net from 'node:net';
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import ssh2 from 'ssh2';
import type { Connection } from 'ssh2';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { ConfigError, errorFields } from '../../errors.js';
import { MAX_FILE, parseAuthorizedKeys, type AuthorizedKeys } from './authorized-keys.js';
import { SshConnection, type ConnectionContext, type SshCounters } from './connection.js';
import { loadHostKeys, type HostKey } from './host-keys.js';
import { KeysCommand, type KeysCommandOutcome } from './keys-command.js';
import { FailureBuckets } from './rate-limit.js';
import { normalizeAddress } from './rights.js';
import { addressGroup } from '../../util/cidr.js';

/** The bounds the listener needs (config's SshLimits has these fields). */
export interface SshListenerLimits {
  loginGraceMs: number;
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  authFailureBurst: number;
  authFailureRefillMs: number;
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  keysCommandTimeoutMs: number;
  keysCommandMaxOutput: number;
  keysCommandConcurrency: number;
  freeUnauthenticatedCloses: number;
  maxConnectionsPerKey: number;
  maxSessionsPerConnection: number;
  maxRefusedRequests: number;
}

export interface SshListenerOptions {
  /** The consoles offered (default: the registry's); a cluster node adds mirrors of other nodes' consoles. */
  consoles?: () => ConsoleHub[];
  /** Why a console may be missing from `consoles` now (a cluster node whose database does not answer), or null. */
  listCaveat?: () => string | null;
  listen: { host: string; port: number };
  hostKeyDir: string;
  /** The authorized-keys file, re-read on every reload; null: only the keys command decides. */
  authorizedKeysFile: string | null;
  /** The keys command line (program and fixed arguments), or null. */
  keysCommand: string | null;
  limits: SshListenerLimits;
  closeGraceMs: number;
  /** Read when a session starts (a reload may change them). */
  readonly idleTimeoutMs: number;
  readonly maxSessionMs: number;
  /** Read on every write (a reload may change it). */
  readonly maxQueuedBytes: number;
  /** The end of a console's log (console logs on), for `NAME --tail N`; null when they are off. */
  tail: ((hub: ConsoleHub, lines: number) => Promise<string>) | null;
  onSlowClientDropped?(): void;
  onProtocolError?(code: string): void;
  /** The process's file descriptor budget: false refuses the socket (the caller logs and counts). */
  admit?(socket: net.Socket): boolean;
}

/** `status`: listen address, host keys, connections. */
export interface SshStatus {
  listen: string;
  hostKeys: Array<{ type: string; fingerprint: string }>;
  connections: number;
  attached: number;
}

/** For /metrics (the admin layer's SshMetricsSnapshot has this shape). */
export interface SshMetrics {
  sessionsByUser: Array<{ user: string; connections: number; attached: number }>;
  auth: { accepted: number; rejected: number };
  refused: Record<string, number>;
  requests: Record<string, number>;
  ended: Record<string, number>;
  keysCommand: Record<KeysCommandOutcome, number>;
  unauthenticated: number;
}

/** A reload's new authorized keys, read and checked but not yet in effect. */
export interface PendingKeys {
  readonly text: string;
  readonly keys: AuthorizedKeys;
}

export class SshListener {
  private hostKeysValue: HostKey[] = [];
  private ssh: ssh2.Server | null = null;
  private readonly server: net.Server;
  private keys: AuthorizedKeys = new Map();
  private keysText: string | null = null;
  private readonly keysCommand: KeysCommand | null;
  private readonly buckets: FailureBuckets;
  private readonly freeCloses: FailureBuckets;
  /** Authenticated connections by key (base64 blob), for the per-key cap. */
  private readonly byKey = new Map<string, number>();
  private readonly connections = new Set<SshConnection>();
  private readonly bySocket = new WeakMap<net.Socket, SshConnection>();
  /** Connections not logged in yet, by address, and those counted there. */
  private readonly unauthenticated = new Map<string, number>();
  private unauthenticatedTotal = 0;
  private readonly counted = new WeakSet<SshConnection>();
  private readonly counters: SshCounters = {
    auth: { accepted: 0, rejected: 0 },
    refused: { 'rate-limited': 0, 'too-many-unauthenticated': 0, 'shutting-down': 0, 'fd-budget': 0, 'key-connections': 0 },
    requests: {},
    ended: {},
  };
  private readonly keysCommandCounts: Record<KeysCommandOutcome, number> = { allowed: 0, denied: 0, failed: 0, busy: 0 };
  private readonly context: ConnectionContext;
  private address: net.AddressInfo | null = null;
  private closing = false;
  private breakWarned = false;
  private capWarnedAt = 0;
  private pruneTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly registry: Registry,
    private readonly logger: Logger,
    private readonly options: SshListenerOptions,
  ) {
    const log = logger.child({ side: 'ssh' });
    this.logger = log;
    const l = options.limits;
    this.buckets = new FailureBuckets({ burst: l.authFailureBurst, refillMs: l.authFailureRefillMs });
    this.freeCloses = new FailureBuckets({ burst: l.freeUnauthenticatedCloses, refillMs: l.authFailureRefillMs });
    this.keysCommand = options.keysCommand
      ? new KeysCommand(options.keysCommand, l, log, (o) => this.keysCommandCounts[o]++)
      : null;
    this.server = net.createServer({ pauseOnConnect: true }, (socket) => this.onSocket(socket));
    this.server.on('error', (err) => log.error('SSH listener error', errorFields(err)));
    const self = this;
    this.context = {
      logger: log,
      buckets: this.buckets,
      freeCloses: this.freeCloses,
      limits: { maxConnectionsPerKey: l.maxConnectionsPerKey, maxSessionsPerConnection: l.maxSessionsPerConnection, maxRefusedRequests: l.maxRefusedRequests },
      claimKey: (blob, limit) => {
        const n = self.byKey.get(blob) ?? 0;
        if (n >= limit) return false;
        self.byKey.set(blob, n + 1);
        return true;
      },
      releaseKey: (blob) => {
        const n = (self.byKey.get(blob) ?? 1) - 1;
        if (n <= 0) self.byKey.delete(blob);
        else self.byKey.set(blob, n);
      },
      shuttingDown: () => self.closing,
      counters: this.counters,
      keys: () => this.keys,
      keysCommand: this.keysCommand,
      consoles: options.consoles ?? (() => registry.all()),
      listCaveat: options.listCaveat ?? (() => null),
      loginGraceMs: l.loginGraceMs,
      closeGraceMs: options.closeGraceMs,
      idleTimeoutMs: () => options.idleTimeoutMs,
      maxSessionMs: () => options.maxSessionMs,
      maxQueuedBytes: () => options.maxQueuedBytes,
      tail: options.tail,
      onSlowClientDropped: options.onSlowClientDropped,
      onProtocolError: options.onProtocolError,
      connectionAuthenticated: (c) => self.release(c),
      connectionClosed: (c) => {
        self.release(c);
        self.connections.delete(c);
      },
      breakUnsupported: () => {
        if (self.breakWarned) return;
        self.breakWarned = true;
        log.warn('this ssh2 version does not expose break requests: ~B will be refused (the Ctrl-] menu still sends breaks)');
      },
    };
  }

  get hostKeys(): readonly HostKey[] {
    return this.hostKeysValue;
  }

  /**
   * Reads (or creates) the host keys and the authorized keys, then listens. Throws
   * VspcError for a host key problem, ConfigError for a bad authorized-keys file.
   */
  async start(): Promise<net.AddressInfo> {
    this.hostKeysValue = loadHostKeys(this.options.hostKeyDir);
    for (const k of this.hostKeysValue) {
      this.logger.info(k.created ? 'SSH host key created' : 'SSH host key', { type: k.type, fingerprint: k.fingerprint, path: k.path });
    }
    const pending = this.readKeys();
    if (pending) this.useKeys(pending);
    const l = this.options.limits;
    this.ssh = new ssh2.Server({
      hostKeys: this.hostKeysValue.map((k) => k.privateKey),
      ident: 'vspc',
      keepaliveInterval: l.keepaliveIntervalMs,
      keepaliveCountMax: l.keepaliveCountMax,
    });
    this.ssh.on('connection', (client: Connection, info: { header?: { versions?: { software?: string } } }) => this.onSshConnection(client, info));
    this.ssh.on('error', (err: Error) => this.logger.error('SSH server error', errorFields(err)));
    this.address = await new Promise<net.AddressInfo>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host: this.options.listen.host, port: this.options.listen.port, exclusive: true }, () => {
        this.server.off('error', onError);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
    this.pruneTimer = setInterval(() => {
      this.buckets.prune();
      this.freeCloses.prune();
    }, 60_000);
    this.pruneTimer.unref();
    this.logger.info('SSH front door listening', {
      listen: `${this.address.address}:${this.address.port}`,
      authorizedKeys: this.options.authorizedKeysFile,
      keys: this.keys.size,
      keysCommand: this.keysCommand?.text ?? null,
    });
    return this.address;
  }

  // --- reload

  /** Reads and checks the authorized-keys file (null: none configured). Throws ConfigError; changes nothing. */
  readKeys(): PendingKeys | null {
    const file = this.options.authorizedKeysFile;
    if (!file) return null;
    let text: string;
    try {
      const st = statSync(file);
      if (st.size > MAX_FILE) throw new Error(`larger than ${MAX_FILE} bytes`);
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`--ssh-authorized-keys: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        field: '--ssh-authorized-keys',
      });
    }
    const unsafe = unsafeKeysFile(file);
    if (unsafe) throw new ConfigError(`--ssh-authorized-keys: ${unsafe}`, { field: '--ssh-authorized-keys' });
    return { text, keys: parseAuthorizedKeys(text, file) };
  }

  /**
   * Puts new keys in effect for new logins, and re-checks every authenticated
   * connection: a key removed (or denied by the keys command) ends its sessions, one
   * whose consoles or modes were narrowed ends the sessions beyond them. Returns
   * whether the file changed.
   */
  reload(pending: PendingKeys | null): boolean {
    const changed = pending !== null && pending.text !== this.keysText;
    if (pending) this.useKeys(pending);
    if (changed) this.logger.info('SSH authorized keys re-read', { keys: this.keys.size });
    for (const c of this.connections) c.recheck();
    return changed;
  }

  private useKeys(p: PendingKeys): void {
    this.keys = p.keys;
    this.keysText = p.text;
  }

  // --- accept

  private onSocket(socket: net.Socket): void {
    const address = normalizeAddress(socket.remoteAddress ?? '?');
    // Per-address limits count an IPv6 peer by its /64 (one host routinely has all of it).
    const group = addressGroup(address);
    if (this.closing) {
      this.counters.refused['shutting-down']++;
      socket.destroy();
      return;
    }
    if (this.options.admit && !this.options.admit(socket)) {
      this.counters.refused['fd-budget']++;
      socket.destroy();
      return;
    }
    // Before any key exchange: an address that keeps failing, or a crowd of connections
    // that never log in, costs a socket and nothing more.
    if (!this.buckets.allows(group)) {
      this.counters.refused['rate-limited']++;
      socket.destroy();
      return;
    }
    const mine = this.unauthenticated.get(group) ?? 0;
    const l = this.options.limits;
    if (this.unauthenticatedTotal >= l.maxUnauthenticated || mine >= l.maxUnauthenticatedPerAddress) {
      this.counters.refused['too-many-unauthenticated']++;
      const now = Date.now();
      if (now - this.capWarnedAt > 60_000) {
        this.capWarnedAt = now;
        this.logger.warn('too many SSH connections not logged in yet; dropping new ones', {
          address,
          fromAddress: mine,
          total: this.unauthenticatedTotal,
          limits: { total: l.maxUnauthenticated, perAddress: l.maxUnauthenticatedPerAddress },
        });
      }
      socket.destroy();
      return;
    }
    this.unauthenticated.set(group, mine + 1);
    this.unauthenticatedTotal++;
    const conn = new SshConnection(this.context, socket, address, group);
    this.counted.add(conn);
    this.connections.add(conn);
    this.bySocket.set(socket, conn);
    // Still paused (pauseOnConnect): ssh2 resumes it once its data listener is in place.
    this.ssh!.injectSocket(socket);
    conn.watchQueue();
  }

  private onSshConnection(client: Connection, info: { header?: { versions?: { software?: string } } }): void {
    const socket = (client as unknown as { _sock?: net.Socket })._sock;
    const conn = socket ? this.bySocket.get(socket) : undefined;
    if (!conn) {
      this.logger.error('SSH connection without its socket record; closing it');
      client.end();
      return;
    }
    try {
      conn.adopt(client, String(info.header?.versions?.software ?? ''));
    } catch (err) {
      this.logger.error('internal error setting up an SSH connection; closing it', { ...errorFields(err), stack: (err as Error).stack });
      conn.destroy();
    }
  }

  /** Takes a connection out of the not-yet-logged-in counts (once). */
  private release(c: SshConnection): void {
    if (!this.counted.has(c)) return;
    this.counted.delete(c);
    const n = (this.unauthenticated.get(c.group) ?? 1) - 1;
    if (n <= 0) this.unauthenticated.delete(c.group);
    else this.unauthenticated.set(c.group, n);
    this.unauthenticatedTotal--;
  }

  // --- views

  status(): SshStatus {
    const a = this.address;
    let connections = 0;
    let attached = 0;
    for (const c of this.connections) {
      if (!c.authenticated) continue;
      connections++;
      attached += c.attachedSessions;
    }
    return {
      listen: a ? `${a.address}:${a.port}` : `${this.options.listen.host}:${this.options.listen.port}`,
      hostKeys: this.hostKeysValue.map((k) => ({ type: k.type, fingerprint: k.fingerprint })),
      connections,
      attached,
    };
  }

  metrics(): SshMetrics {
    const byUser = new Map<string, { connections: number; attached: number }>();
    for (const c of this.connections) {
      const p = c.principalOrNull;
      if (!p || !c.authenticated) continue;
      const u = byUser.get(p.user) ?? { connections: 0, attached: 0 };
      u.connections++;
      u.attached += c.attachedSessions;
      byUser.set(p.user, u);
    }
    return {
      sessionsByUser: [...byUser].map(([user, v]) => ({ user, ...v })).sort((a, b) => a.user.localeCompare(b.user)),
      auth: { ...this.counters.auth },
      refused: { ...this.counters.refused },
      requests: { ...this.counters.requests },
      ended: { ...this.counters.ended },
      keysCommand: { ...this.keysCommandCounts },
      unauthenticated: this.unauthenticatedTotal,
    };
  }

  // --- shutdown

  /** Stops accepting, tells every session, ends every connection; resolves when they are gone (destroyed after the grace period). */
  async close(message = 'vspc is shutting down'): Promise<void> {
    this.closing = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) c.end(message, 'shutdown');
    const gone = Promise.all(
      [...this.connections].map((c) => (c.socket.destroyed ? Promise.resolve() : new Promise<void>((r) => c.socket.once('close', () => r())))),
    );
    const grace = new Promise<void>((r) => setTimeout(r, this.options.closeGraceMs + 100).unref());
    await Promise.race([gone, grace]);
    this.destroy();
    await Promise.race([stopped, grace]);
  }

  destroy(): void {
    this.closing = true;
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.server.close();
    for (const c of [...this.connections]) c.destroy();
  }
}

/**
 * Why the authorized-keys file may not be trusted (null: it may), as OpenSSH's
 * StrictModes decides for ~/.ssh/authorized_keys: whoever can write the file — or
 * replace it, through its directory — can give themselves every console, `force`
 * included. The file and its directory must belong to root or to vspc's own user and
 * must not be writable by group or others (a directory with the sticky bit, like /tmp,
 * is allowed: others cannot replace a file they do not own there).
 */
export function unsafeKeysFile(file: string): string | null {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const check = (path: string, isDir: boolean): string | null => {
    const st = statSync(path);
    if (st.uid !== 0 && st.uid !== uid) return `${path} belongs to uid ${st.uid}, not to root or vspc's user (uid ${uid}): refused, as sshd's StrictModes would`;
    const sticky = isDir && (st.mode & 0o1000) !== 0;
    if ((st.mode & 0o022) !== 0 && !sticky) {
      return `${path} is writable by ${(st.mode & 0o002) !== 0 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): anyone who can change it can give themselves every console; chmod go-w ${path}`;
    }
    return null;
  };
  return check(file, false) ?? check(dirname(resolve(file)), true);
}
