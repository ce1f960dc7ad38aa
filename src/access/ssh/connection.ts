/**
 * One SSH connection: public-key authentication (nothing else), the per-address
 * failure bucket, the login grace time, the session limit, refusals of everything
 * that is not a console session, keepalive and failure containment. Its sessions
 * (session.ts) do the rest.
 *
 *   handshake ──publickey OK (file or keys command, from=, signature)──▶ authenticated ──▶ closed
 *       │  └──failed attempt: counted; the address's bucket empty / too many tries──▶ closed
 *       └──login grace time over / protocol error / socket gone (counted past the free ones)──▶ closed
 *   authenticated ──time limit / rights withdrawn (reload) / too slow / 10 refused requests / keepalive unanswered / shutdown──▶ closed
 *   authenticated over the key's connection cap ──its sessions are told why (exit 3), then──▶ closed
 */
import type net from 'node:net';
import ssh2 from 'ssh2';
import type { AuthContext, Connection, ParsedKey, PublicKeyAuthContext, Session } from 'ssh2';
import type { Logger } from '../../domain/logger.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { errorFields, PeerRefusedError } from '../../errors.js';
import { CONNECTION_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import { socketCost } from '../../util/write-queue.js';
import { sanitizeText } from '../../util/text.js';
import type { AuthorizedKeys } from './authorized-keys.js';
import { fingerprintOf } from './fingerprint.js';
import type { KeysCommand } from './keys-command.js';
import type { FailureBuckets } from './rate-limit.js';
import type { KeyRights } from './rights.js';
import { Exit, formatDuration, SshSession, type Principal, type SessionHost } from './session.js';
import { installBreakRequests, rejectChannelOpen } from './ssh2-internals.js';

/** Failed attempts one connection may make (OpenSSH's MaxAuthTries is 6; agents with many keys try each). */
const MAX_TRIES_PER_CONNECTION = 20;
/** Refused requests: the first line is written, the others summed up (every 30 s, and when the connection goes). */
const REQUEST_LOG_BUDGET = { burst: 1, perSecond: 1 / 30 };

/** Sessions accepted only to tell the client why it is refused (a cap reached), at once on one connection; more are rejected silently. */
const MAX_REFUSAL_SESSIONS = 2;

/** Counters kept by the listener, for /metrics. */
export interface SshCounters {
  auth: { accepted: number; rejected: number };
  /** Connections dropped at accept (and, `key-connections`, refused after authentication: the key's cap), by reason. */
  refused: { 'rate-limited': number; 'too-many-unauthenticated': number; 'shutting-down': number; 'fd-budget': number; 'key-connections': number };
  /** Requests refused outright, by kind. */
  requests: Record<string, number>;
  /** Sessions ended by vspc, by reason. */
  ended: Record<string, number>;
}

/** What a connection needs of its listener. */
export interface ConnectionContext {
  readonly logger: Logger;
  readonly buckets: FailureBuckets;
  /** Connections that end without logging in that cost nothing (per address group); past these they cost a failure. */
  readonly freeCloses: FailureBuckets;
  readonly limits: { maxConnectionsPerKey: number; maxSessionsPerConnection: number; maxRefusedRequests: number };
  /** Takes one of the key's connection slots (false: `limit` are taken); given back by releaseKey. */
  claimKey(blob: string, limit: number): boolean;
  releaseKey(blob: string): void;
  /** The listener is closing: connections that end now are not the peer's doing. */
  shuttingDown(): boolean;
  readonly counters: SshCounters;
  keys(): AuthorizedKeys;
  readonly keysCommand: KeysCommand | null;
  consoles(): ConsoleHub[];
  listCaveat(): string | null;
  readonly loginGraceMs: number;
  readonly closeGraceMs: number;
  idleTimeoutMs(): number;
  maxSessionMs(): number;
  maxQueuedBytes(): number;
  readonly tail: ((hub: ConsoleHub, lines: number) => Promise<string>) | null;
  onSlowClientDropped?(): void;
  onProtocolError?(code: string): void;
  /** The connection is gone (or authenticated: `authenticated`). */
  connectionAuthenticated(c: SshConnection): void;
  connectionClosed(c: SshConnection): void;
  /** Whether break requests could be hooked into ssh2 (logged once when not). */
  breakUnsupported(): void;
}

type Lookup = { rights: KeyRights; key: ParsedKey } | { rights: null; reason: string };

type State = 'handshake' | 'authenticated' | 'closed';

/** The key type named at the start of a public key blob (`ssh-ed25519`...). */
function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return '?';
  const n = blob.readUInt32BE(0);
  return n > 0 && n < 64 && blob.length >= 4 + n ? blob.toString('latin1', 4, 4 + n) : '?';
}

/**
 * Why a login name is refused (null: it is not). The name is passed to the keys
 * command as an argument: one starting with `-` could pass for an option of it
 * (`--site=evil`), and blanks or control characters have no business in a name.
 */
export function badLoginName(name: string): string | null {
  if (name.startsWith('-')) return 'it starts with "-"';
  if (/[\s\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(name)) return 'it contains blanks or control characters';
  return null;
}

export class SshConnection implements SessionHost {
  readonly peer: string;
  readonly acceptedAt = Date.now();
  logger: Logger;
  /** The connection's log budget (its logger and that logger's children share it). */
  private readonly logBudget: BudgetedLogger;
  private state: State = 'handshake';
  private client: Connection | null = null;
  private principalValue: Principal | null = null;
  private readonly sessions = new Set<SshSession>();
  private readonly lookups = new Map<string, Promise<Lookup>>();
  private failures = 0;
  private graceTimer: NodeJS.Timeout | null;
  private maxTimer: NodeJS.Timeout | null = null;
  private destroyTimer: NodeJS.Timeout | null = null;
  private idleMsValue = 0;
  /** Rights being re-checked by the keys command (a reload): one at a time. */
  private recheckRunning = false;
  /** end() was called: no new sessions; the connection goes when its sessions have. */
  private ending = false;
  /** Cut off (too slow): said and counted once. */
  private cutOff = false;
  /** The address was already charged for this connection (failed tries, login grace time). */
  private charged = false;
  /** The key's connection slot (released on close), or why the key may not have one. */
  private keySlot: string | null = null;
  private overCap: string | null = null;
  private overCapTimer: NodeJS.Timeout | null = null;
  /** Sessions accepted only to say why they are refused. */
  private refusalSessions = 0;
  private sessionCapLogged = false;
  /** Requests refused outright: the first is logged, the rest counted (summed up by requestLog's budget). */
  private refusedRequests = 0;
  private requestLog: BudgetedLogger | null = null;

  constructor(
    private readonly ctx: ConnectionContext,
    readonly socket: net.Socket,
    /** The peer address, IPv4-mapped IPv6 as IPv4. */
    readonly address: string,
    /** What per-address limits count by (util/cidr.ts addressGroup): the IPv4 address, an IPv6 address's /64. */
    readonly group: string = address,
  ) {
    this.peer = `${address}:${socket.remotePort ?? '?'}`;
    // One line per request a peer repeats (a refused global request) must not become a log flood.
    this.logBudget = rateLimitedLogger(ctx.logger.child({ peer: this.peer, side: 'ssh' }), CONNECTION_LOG_BUDGET);
    this.logger = this.logBudget;
    socket.setNoDelay(true);
    // Half-open detection below SSH's own keepalive (which only starts once authenticated).
    socket.setKeepAlive(true, 30_000);
    socket.on('error', (err) => this.logger.debug('SSH socket error', errorFields(err)));
    socket.once('close', () => this.onClose());
    this.graceTimer = setTimeout(() => this.loginTimedOut(), ctx.loginGraceMs);
    this.graceTimer.unref();
  }

  get authenticated(): boolean {
    return this.state === 'authenticated';
  }

  get principal(): Principal {
    if (!this.principalValue) throw new Error('SSH connection not authenticated');
    return this.principalValue;
  }

  get principalOrNull(): Principal | null {
    return this.principalValue;
  }

  get attachedSessions(): number {
    let n = 0;
    for (const s of this.sessions) if (s.attachedTo) n++;
    return n;
  }

  /** ssh2 has read the client's version line and made its connection object. */
  adopt(client: Connection, software: string): void {
    this.client = client;
    this.logger = this.logger.child({ sshClient: sanitizeText(software).slice(0, 80) });
    if (!installBreakRequests(client)) this.ctx.breakUnsupported();
    client.on('authentication', (auth: AuthContext) => this.guard(() => this.onAuth(auth)));
    client.on('ready', () => this.guard(() => this.onReady()));
    client.on('session', (accept: () => Session, reject: () => void) => this.guard(() => this.onSession(accept, reject)));
    // Forwarding refused with a reason the client shows (ssh -W: "open failed: administratively prohibited: vspc: ...").
    client.on('tcpip', (_accept: unknown, reject: () => void) =>
      this.refused('port forwarding (direct-tcpip)', 'port-forwarding', () => rejectChannelOpen(client, reject, 'vspc: port forwarding is not offered')),
    );
    client.on('openssh.streamlocal', (_accept: unknown, reject: () => void) =>
      this.refused('socket forwarding (direct-streamlocal)', 'port-forwarding', () => rejectChannelOpen(client, reject, 'vspc: socket forwarding is not offered')),
    );
    client.on('request', (_accept: unknown, reject: (() => void) | undefined, name: string) =>
      this.refused(`global request ${JSON.stringify(String(name).slice(0, 40))}`, 'port-forwarding', reject),
    );
    client.on('error', (err: Error & { level?: string }) => this.onError(err));
  }

  // --- SessionHost

  get idleMs(): number {
    return this.idleMsValue;
  }

  get closeGraceMs(): number {
    return this.ctx.closeGraceMs;
  }

  get tail(): ((hub: ConsoleHub, lines: number) => Promise<string>) | null {
    return this.ctx.tail;
  }

  consoles(): ConsoleHub[] {
    return this.ctx.consoles();
  }

  listCaveat(): string | null {
    return this.ctx.listCaveat();
  }

  maxQueuedBytes(): number {
    return this.ctx.maxQueuedBytes();
  }

  /** What waits in the TCP socket, priced as util/write-queue.ts prices it (ssh2 writes each packet on its own). */
  socketQueued(): number {
    return socketCost(this.socket);
  }

  /**
   * Called once ssh2 has the socket (its data listener is in place): after each chunk
   * from the peer — once ssh2 has answered it (a refused request, a window adjust,
   * a channel failure) — what waits for the peer is checked against the queue bound.
   * A peer that sends requests and never reads the answers is cut off.
   */
  watchQueue(): void {
    const check = () => {
      if (this.state === 'closed' || this.socket.destroyed) return;
      const queued = this.socketQueued();
      const limit = this.ctx.maxQueuedBytes();
      if (queued > limit) return this.tooSlow(queued, limit);
      // A session holding its input (its output backed up): what the client typed meanwhile counts.
      for (const s of this.sessions) s.checkHeld();
    };
    this.socket.on('data', () => process.nextTick(check));
  }

  /**
   * A request vspc never grants. Refusing costs the peer nothing, so it is bounded: the
   * first is logged, the others counted (summed up when the connection goes), and the
   * connection is closed at `maxRefusedRequests`.
   */
  refused(what: string, kind = 'other', reject?: () => void): void {
    // Requests parsed after the connection was cut off are not answered, nor counted.
    if (this.state === 'closed' || this.cutOffForRequests) return;
    this.ctx.counters.requests[kind] = (this.ctx.counters.requests[kind] ?? 0) + 1;
    this.refusedRequests++;
    // One line for the first; the others are counted in one summary line (at close at the latest).
    this.requestLog ??= rateLimitedLogger(this.logger, REQUEST_LOG_BUDGET);
    this.requestLog.info('SSH request refused', { request: what, errorCode: 'VSPC_SSH_REQUEST_REFUSED' });
    const max = this.ctx.limits.maxRefusedRequests;
    if (this.refusedRequests >= max) {
      this.cutOffForRequests = true;
      this.logger.warn('too many refused SSH requests on one connection; closing it', {
        errorCode: 'VSPC_SSH_TOO_MANY_REQUESTS',
        refused: this.refusedRequests,
        last: what,
        limit: max,
        user: this.principalValue?.user,
      });
      this.count('too-many-requests');
      this.destroy();
      return;
    }
    reject?.();
  }

  private cutOffForRequests = false;

  tooSlow(queued: number, limit: number): void {
    if (this.state === 'closed' || this.cutOff) return;
    this.cutOff = true;
    this.logger.warn('SSH client too slow; disconnecting', {
      ...errorFields(new PeerRefusedError('VSPC_PEER_NOT_READING', `more than ${limit} bytes queued for the peer`)),
      queued,
      bytes: this.socket.writableLength,
      limit,
      user: this.principalValue?.user,
    });
    this.ctx.onSlowClientDropped?.();
    this.count('too-slow');
    this.destroy();
  }

  sessionEnded(session: SshSession): void {
    if (!this.sessions.delete(session)) return;
    if (session.refusal) this.refusalSessions--;
    // Over the key's cap: told, then gone.
    if (this.overCap && this.sessions.size === 0) this.client?.end();
    // Ending: the client closes the connection itself once its last channel is closed; this is for one that does not.
    if (this.ending && this.sessions.size === 0) this.client?.end();
  }

  // --- called by the listener

  /** Ends every session with `message` and the connection after them (shutdown, rights withdrawn). */
  end(message: string, reason: string): void {
    if (this.state === 'closed' || this.ending) return;
    this.ending = true;
    if (this.sessions.size > 0) this.count(reason);
    // Each session says why and sends its exit status; the client closes the connection
    // once its channels are closed (a disconnect now would cost it the exit status).
    for (const s of [...this.sessions]) s.end(Exit.ENDED, message);
    if (this.sessions.size === 0) this.client?.end();
    this.destroyTimer ??= setTimeout(() => this.destroy(), this.ctx.closeGraceMs);
    this.destroyTimer.unref();
  }

  destroy(): void {
    for (const s of [...this.sessions]) s.destroy();
    this.socket.destroy();
  }

  /**
   * After a reload: the key's rights from the new file (or the keys command, asked
   * again). Gone: the connection ends; narrowed: sessions beyond them end. A keys
   * command that fails changes nothing.
   */
  recheck(): void {
    const p = this.principalValue;
    if (!p || this.state !== 'authenticated') return;
    const entry = this.ctx.keys().get(p.blob);
    if (entry && p.rights.source === 'file') return this.apply(entry.rights);
    const command = this.ctx.keysCommand;
    if (!command) return entry ? this.apply(entry.rights) : this.withdraw('the key is no longer in the authorized keys');
    if (entry) return this.apply(entry.rights);
    if (this.recheckRunning) return;
    this.recheckRunning = true;
    void command.lookup({ loginName: p.loginName, keyType: p.keyType, key: p.blob, fingerprint: p.fingerprint }).then((r) => {
      this.recheckRunning = false;
      if (this.state !== 'authenticated') return;
      if (r.kind === 'allow') this.apply(r.rights);
      else if (r.kind === 'deny') this.withdraw(`the keys command denies the key: ${r.reason}`);
      else this.logger.warn('SSH key not re-checked (the keys command failed); its sessions go on', { reason: r.reason, user: p.user });
    });
  }

  private apply(rights: KeyRights): void {
    const p = this.principalValue!;
    if (rights.from && !rights.from.allows(this.address)) return this.withdraw('from= no longer allows this address');
    p.rights = rights;
    for (const s of [...this.sessions]) s.rightsChanged(rights);
  }

  private withdraw(why: string): void {
    this.logger.info('SSH key withdrawn on reload; ending its sessions', { user: this.principalValue?.user, fingerprint: this.principalValue?.fingerprint, why });
    this.end('your key no longer has access to vspc', 'withdrawn');
  }

  // --- authentication

  private onAuth(auth: AuthContext): void {
    if (this.state !== 'handshake') return auth.reject();
    if (!this.ctx.buckets.allows(this.group)) {
      this.charged = true;
      auth.reject();
      this.client?.end();
      return;
    }
    const badName = badLoginName(auth.username);
    if (badName) return this.authFailed(auth, `login name refused: ${badName}`, {});
    if (auth.method === 'none') return auth.reject(['publickey']);
    if (auth.method === 'publickey') {
      void this.onPublicKey(auth as PublicKeyAuthContext).catch((err: unknown) => {
        this.logger.error('internal error during SSH authentication; closing this connection', { ...errorFields(err), stack: (err as Error).stack });
        this.destroy();
      });
      return;
    }
    this.authFailed(auth, `${auth.method} authentication is not accepted (public keys only)`, {});
  }

  private async onPublicKey(auth: PublicKeyAuthContext): Promise<void> {
    const blob = auth.key.data;
    const b64 = blob.toString('base64');
    const fingerprint = fingerprintOf(blob);
    const keyType = keyTypeOf(blob);
    let pending = this.lookups.get(b64);
    if (!pending) {
      pending = this.lookup(auth.username, keyType, b64, fingerprint);
      this.lookups.set(b64, pending);
    }
    const found = await pending;
    if (this.state !== 'handshake') return;
    const fields = { fingerprint, keyType };
    if (!found.rights) return this.authFailed(auth, found.reason, fields);
    if (found.rights.from && !found.rights.from.allows(this.address)) return this.authFailed(auth, `from= does not allow ${this.address} (${found.rights.where})`, fields);
    // Without a signature the client asks whether this key would do; it signs next.
    if (!auth.signature || !auth.blob) return auth.accept();
    if (found.key.verify(auth.blob, auth.signature, auth.hashAlgo) !== true) return this.authFailed(auth, 'the signature does not verify', fields);
    // The key's cap on connections at once: the login goes through so that the client
    // can be told why (its sessions get the message, exit status 3), then it goes.
    const maxConnections = found.rights.maxConnections ?? this.ctx.limits.maxConnectionsPerKey;
    if (this.ctx.claimKey(b64, maxConnections)) this.keySlot = b64;
    else {
      this.overCap = `too many connections with this key at once (at most ${maxConnections}); close one and try again`;
      this.ctx.counters.refused['key-connections']++;
      this.logger.warn('SSH connection refused: too many connections with this key', {
        errorCode: 'VSPC_SSH_KEY_LIMIT',
        user: found.rights.user,
        fingerprint,
        limit: maxConnections,
      });
    }
    this.principalValue = {
      user: found.rights.user,
      loginName: sanitizeText(auth.username).slice(0, 64),
      keyType,
      fingerprint,
      blob: b64,
      rights: found.rights,
    };
    // A user whose agent offered other keys first is not punished for it.
    this.ctx.buckets.refund(this.group, this.failures);
    this.ctx.counters.auth.accepted++;
    this.logger.info('SSH user authenticated', {
      user: found.rights.user,
      loginName: this.principalValue.loginName,
      fingerprint,
      keyType,
      rights: found.rights.where,
      consoles: found.rights.consoles.toString(),
    });
    auth.accept();
  }

  private async lookup(loginName: string, keyType: string, b64: string, fingerprint: string): Promise<Lookup> {
    const entry = this.ctx.keys().get(b64);
    if (entry) return { rights: entry.rights, key: entry.key };
    const command = this.ctx.keysCommand;
    if (!command) return { rights: null, reason: 'the key is not authorized' };
    const r = await command.lookup({ loginName: sanitizeText(loginName).slice(0, 64), keyType, key: b64, fingerprint });
    if (r.kind !== 'allow') return { rights: null, reason: r.kind === 'deny' ? `the keys command denies it: ${r.reason}` : `the keys command failed: ${r.reason}` };
    const key = ssh2.utils.parseKey(`${keyType} ${b64}`);
    if (key instanceof Error || Array.isArray(key)) return { rights: null, reason: 'the key cannot be used (unsupported type)' };
    return { rights: r.rights, key: key as ParsedKey };
  }

  private authFailed(auth: AuthContext, reason: string, fields: Record<string, unknown>): void {
    this.failures++;
    this.ctx.counters.auth.rejected++;
    this.charged = true;
    const more = this.ctx.buckets.fail(this.group);
    this.logger.info('SSH authentication failed', {
      errorCode: 'VSPC_SSH_AUTH_FAILED',
      method: auth.method,
      loginName: sanitizeText(auth.username).slice(0, 64),
      reason,
      ...fields,
    });
    auth.reject(['publickey']);
    if (!more) {
      this.logger.warn('too many failed SSH authentications from this address; refusing its connections for a while', {
        errorCode: 'VSPC_SSH_RATE_LIMITED',
        address: this.address,
        ...(this.group !== this.address ? { group: this.group } : {}),
        retryAfterMs: this.ctx.buckets.retryAfter(this.group),
      });
      this.client?.end();
    } else if (this.failures >= MAX_TRIES_PER_CONNECTION) {
      this.logger.info('too many failed SSH authentications on one connection; closing it', { errorCode: 'VSPC_SSH_AUTH_FAILED', tries: this.failures });
      this.client?.end();
    }
  }

  private onReady(): void {
    if (this.state !== 'handshake' || !this.principalValue) return;
    this.state = 'authenticated';
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    const p = this.principalValue;
    this.logger = this.logger.child({ user: p.user });
    this.idleMsValue = p.rights.idleMs ?? this.ctx.idleTimeoutMs();
    const max = p.rights.maxSessionMs ?? this.ctx.maxSessionMs();
    if (max > 0) {
      this.maxTimer = setTimeout(() => {
        this.logger.info('SSH session time limit reached', { limitMs: max });
        this.end(`session time limit (${formatDuration(max)}) reached`, 'time-limit');
      }, max);
      this.maxTimer.unref();
    }
    this.ctx.connectionAuthenticated(this);
    if (this.overCap) {
      // Time to open a session and read why; then the connection goes.
      this.overCapTimer = setTimeout(() => this.destroy(), this.ctx.closeGraceMs);
      this.overCapTimer.unref();
    }
  }

  private onSession(accept: () => Session, reject: () => void): void {
    if (this.state !== 'authenticated' || this.ending) return reject();
    const max = this.principalValue?.rights.maxSessions ?? this.ctx.limits.maxSessionsPerConnection;
    let refusal = this.overCap;
    if (!refusal && this.sessions.size - this.refusalSessions >= max) {
      refusal = `too many sessions on this connection (at most ${max})`;
      this.ctx.counters.requests['sessions-per-connection'] = (this.ctx.counters.requests['sessions-per-connection'] ?? 0) + 1;
      if (!this.sessionCapLogged) {
        this.sessionCapLogged = true;
        this.logger.warn('SSH session refused: too many sessions on one connection', { errorCode: 'VSPC_SSH_KEY_LIMIT', limit: max, user: this.principalValue?.user });
      }
    }
    if (refusal) {
      // Accepted only to say why (a channel open failure carries no text); a few at once.
      if (this.refusalSessions >= MAX_REFUSAL_SESSIONS) return reject();
      this.refusalSessions++;
      this.sessions.add(new SshSession(accept(), this, refusal));
      return;
    }
    const session = new SshSession(accept(), this);
    this.sessions.add(session);
  }

  // --- failures

  private loginTimedOut(): void {
    this.graceTimer = null;
    if (this.state !== 'handshake') return;
    this.logger.info('SSH login not completed in time; closing', { errorCode: 'VSPC_SSH_LOGIN_TIMEOUT', limitMs: this.ctx.loginGraceMs });
    // A connection that never logs in counts as a failed attempt of its address.
    this.charged = true;
    this.ctx.buckets.fail(this.group);
    this.destroy();
  }

  private onError(err: Error & { level?: string }): void {
    if (this.state === 'closed') return;
    if (err.level === 'client-timeout') {
      this.logger.info('SSH peer did not answer keepalives; cut off', { errorCode: 'VSPC_SSH_KEEPALIVE_TIMEOUT', user: this.principalValue?.user });
      this.count('keepalive');
    } else if (err.level === 'socket') {
      this.logger.debug('SSH socket error', errorFields(err));
    } else if (err.level === 'client-authentication' || err.level === 'client-dns') {
      this.logger.info('SSH peer error', errorFields(err));
    } else {
      // Malformed packets, failed key exchange, a broken MAC...: this peer only.
      this.logger.warn('SSH protocol error from peer; closing', { errorCode: 'VSPC_SSH_PROTOCOL_ERROR', error: err.message, level: err.level });
      this.ctx.onProtocolError?.('VSPC_SSH_PROTOCOL_ERROR');
    }
    this.destroyTimer ??= setTimeout(() => this.destroy(), this.ctx.closeGraceMs);
    this.destroyTimer.unref();
  }

  private onClose(): void {
    if (this.state === 'closed') return;
    const was = this.state;
    this.state = 'closed';
    for (const t of [this.graceTimer, this.maxTimer, this.destroyTimer, this.overCapTimer]) if (t) clearTimeout(t);
    for (const s of [...this.sessions]) s.destroy();
    this.sessions.clear();
    if (this.keySlot) this.ctx.releaseKey(this.keySlot);
    this.keySlot = null;
    if (was === 'handshake') this.chargeUnauthenticated();
    // What the budgets suppressed is summarised before the last line.
    this.requestLog?.close();
    this.logBudget.close();
    if (was === 'authenticated') this.logger.info('SSH connection closed', { durationMs: Date.now() - this.acceptedAt });
    this.ctx.connectionClosed(this);
  }

  /**
   * The connection ended without logging in (key exchange and away, `none` only, a
   * scanner): free a few times per address, then a token of its failure bucket, so
   * that a flood of them is refused at accept like failed logins. Not when the address
   * was charged already (failed tries, grace time) nor at shutdown.
   */
  private chargeUnauthenticated(): void {
    if (this.charged || this.failures > 0 || this.ctx.shuttingDown()) return;
    this.charged = true;
    if (this.ctx.freeCloses.allows(this.group)) {
      this.ctx.freeCloses.fail(this.group);
      return;
    }
    const had = this.ctx.buckets.allows(this.group);
    if (!this.ctx.buckets.fail(this.group) && had) {
      this.logger.warn('too many SSH connections from this address ended without logging in; refusing its connections for a while', {
        errorCode: 'VSPC_SSH_RATE_LIMITED',
        address: this.address,
        ...(this.group !== this.address ? { group: this.group } : {}),
        retryAfterMs: this.ctx.buckets.retryAfter(this.group),
      });
    }
  }

  private count(reason: string): void {
    this.ctx.counters.ended[reason] = (this.ctx.counters.ended[reason] ?? 0) + 1;
  }

  /** Whatever goes wrong with one connection's requests costs that connection only. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error('internal error in an SSH connection; closing it', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy();
    }
  }
}

