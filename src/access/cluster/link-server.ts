/**
 * The owning node's side of the cluster link: a TLS 1.2 PSK listener (only nodes
 * knowing the cluster secret get through the handshake) whose streams attach clients
 * of other nodes to this node's hubs, each as an ordinary ConsoleClient
 * (`RemoteClient`), under the lock its own client asked for. So lock modes meet on
 * the owner: every holder of a console, wherever it came in, is in its owner's lock
 * table.
 *
 * Defences (every peer is untrusted until its TLS handshake is done): handshakes
 * bounded in number (`maxHandshakes`, `maxHandshakesPerAddress`, a reserve for the
 * nodes table's addresses), by a first-byte deadline, and in time (`handshakeTimeoutMs`: plain TCP,
 * garbage and a wrong secret all fail there, with one log line each, rate-limited),
 * frames bounded and streams credit-limited by the protocol core, a remote client's
 * output queue bounded like any client's (past it the client is dropped as slow).
 */
import { createServer, type Server, type TLSSocket } from 'node:tls';
import type { Socket } from 'node:net';
import type { Logger } from '../../domain/logger.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { ConsoleClient } from '../../domain/seams.js';
import { allocateClientId } from '../../domain/client-ids.js';
import { LOCK_MODES, type ClientAuth, type LockRequest } from '../../domain/locks.js';
import type { LinkEvent } from '../../protocol/cluster/link.js';
import { LINK_CIPHERS, LinkConnection, linkKey } from './link-connection.js';
import type { HostPort } from '../../util/net.js';
import { sanitizeText } from '../../util/text.js';
import { stripTerminalQueries } from '../../util/terminal-queries.js';

const PSK_IDENTITY = Symbol('vspc.pskIdentity');
type PskSocket = { [PSK_IDENTITY]?: string };
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface ClusterLinkServerOptions {
  nodeId: string;
  secret: Buffer;
  listen: HostPort;
  /** A console this node owns, by its id and telnet port (both must match). */
  consoleById(id: number, tcpPort: number): ConsoleHub | undefined;
  /**
   * Cross-node vMotion, on the source's node: the migration with this token (sequence
   * + secret) is handed to the asking node. Null: none pending here. `done` is called
   * when the asker closed the stream (`claimed` when it owns the console now).
   */
  handover?(token: Buffer, toNode: string): { held: Buffer[]; scrollback: Buffer; done(reason: string): void } | null;
  /** What a console printed since this node took it over (a relay's replay); null: unknown. */
  outputSinceTakeover?(hub: ConsoleHub): Buffer | null;
  handshakeTimeoutMs?: number;
  /** Unauthenticated connections at once from addresses not in `isNodeAddress` (default 64). */
  maxHandshakes?: number;
  /** Unauthenticated connections at once from one remote address (default 4). */
  maxHandshakesPerAddress?: number;
  /** A connection that has sent no byte by then is cut (default 2000 ms: a TLS client speaks first). */
  firstByteTimeoutMs?: number;
  /**
   * Is `ip` the address of a node listed in the nodes table? Such addresses have a
   * reserve of handshake slots (as many again as `maxHandshakes`) that strangers
   * filling theirs cannot take, so real nodes still get in during a flood.
   */
  isNodeAddress?(ip: string): boolean;
  /** Output queued for a remote client beyond the link's window, at most (then it is dropped as slow). */
  maxQueuedBytes: number;
  window?: number;
  /** Liveness (link-connection.ts): PING after this much silence (default 5000 ms). */
  pingAfterMs?: number;
  /** Liveness: cut the link after this much silence (default 15000 ms). */
  idleTimeoutMs?: number;
  /** Remote clients (streams) on one link, at most (default 256; more is a protocol error). */
  maxStreamsPerLink?: number;
  /** Links from one node id at once, at most (default 4: a restart may briefly overlap the old one). */
  maxLinksPerNode?: number;
}

export class ClusterLinkServer {
  private server: Server | null = null;
  private readonly links = new Set<LinkConnection>();
  private handshaking = 0;
  /** Of those, the ones counted against the nodes' reserve. */
  private reserved = 0;
  /** TCP connections whose TLS handshake is not done, with their remote address and pool. */
  private readonly pending = new Map<Socket, { ip: string; reserve: boolean; timer: NodeJS.Timeout }>();
  private readonly pendingByIp = new Map<string, number>();
  /** Addresses nodes authenticated from before (bounded: the oldest forgotten past 1024). */
  private readonly nodeAddresses = new Set<string>();
  private refusedLogged = 0;
  private refusedWindowStart = 0;
  private addr: HostPort | null = null;
  /** Connections cut before or during authentication (plain TCP, wrong secret, garbage, timeouts, too many). */
  refused = 0;
  private vmotion: Pick<ClusterLinkServerOptions, 'handover' | 'outputSinceTakeover'> = {};

  constructor(
    private readonly log: Logger,
    private readonly opts: ClusterLinkServerOptions,
  ) {}

  /** Cross-node vMotion's hooks (set once the coordinator exists). */
  setVmotion(hooks: Pick<ClusterLinkServerOptions, 'handover' | 'outputSinceTakeover'>): void {
    this.vmotion = hooks;
  }

  get address(): HostPort | null {
    return this.addr;
  }

  /** TCP connections still in their TLS handshake. */
  get pendingHandshakes(): number {
    return this.handshaking;
  }

  get connections(): number {
    return this.links.size;
  }

  async listen(): Promise<HostPort> {
    const o = this.opts;
    const server = createServer({
      ciphers: LINK_CIPHERS,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      // No identity hint: it would tell any unauthenticated stranger this node's id (the dialer knows whom it dials).
      handshakeTimeout: o.handshakeTimeoutMs ?? 10_000,
      pskCallback: (socket, identity) => {
        if (!NODE_ID.test(identity) || identity === o.nodeId) return null;
        // Kept for after the handshake: Node gives the identity to this callback only.
        (socket as unknown as PskSocket)[PSK_IDENTITY] = identity;
        return linkKey(o.secret, identity);
      },
    });
    server.on('connection', (raw: Socket) => this.admit(raw));
    // Plain TCP, garbage, a wrong secret, a handshake too slow: the TLS layer fails it.
    server.on('tlsClientError', (err, socket) => {
      this.refuse(socket.remoteAddress, err.message);
      socket.destroy();
    });
    server.on('secureConnection', (socket: TLSSocket) => {
      // Node's TLSSocket keeps the TCP socket it wraps as `_parent` (not public API; without it the count only drops at close).
      const raw = (socket as unknown as { _parent?: Socket })._parent;
      if (raw) this.handshakeOver(raw);
      this.accepted(socket);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.listen.port, o.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.log.error('cluster link listener error', { message: err.message }));
    const a = server.address();
    this.addr = { host: o.listen.host, port: typeof a === 'object' && a ? a.port : o.listen.port };
    this.log.info('cluster link listening', { host: this.addr.host, port: this.addr.port });
    return this.addr;
  }

  /** Stops listening and cuts every link (their remote clients are detached). Idempotent. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const l of [...this.links]) l.destroy('node stopping');
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /**
   * A new TCP connection, not authenticated yet. Bounded three ways (a slowloris with
   * no secret must not lock real nodes out): per remote address, in total for
   * strangers with a reserve for the nodes table's addresses, and by a first-byte
   * deadline (a TLS client speaks first; a silent socket is cut in seconds, not at the
   * handshake timeout).
   */
  private admit(raw: Socket): void {
    const o = this.opts;
    const ip = raw.remoteAddress ?? '?';
    const fromIp = this.pendingByIp.get(ip) ?? 0;
    if (fromIp >= (o.maxHandshakesPerAddress ?? 4)) {
      this.refuse(ip, `too many unauthenticated connections from this address (${fromIp})`);
      raw.destroy();
      return;
    }
    const max = o.maxHandshakes ?? 64;
    let reserve = false;
    if (this.handshaking - this.reserved >= max) {
      let known = false;
      try {
        known = this.nodeAddresses.has(bareIp(ip)) || (o.isNodeAddress?.(bareIp(ip)) ?? false);
      } catch {
        known = false;
      }
      if (!known || this.reserved >= max) {
        this.refuse(ip, 'too many unauthenticated connections');
        raw.destroy();
        return;
      }
      reserve = true;
    }
    const timer = setTimeout(() => {
      if (this.pending.has(raw) && raw.bytesRead === 0) {
        this.refuse(ip, `no byte within ${o.firstByteTimeoutMs ?? 2000} ms`);
        raw.destroy();
      }
    }, o.firstByteTimeoutMs ?? 2000);
    timer.unref();
    this.handshaking++;
    if (reserve) this.reserved++;
    this.pendingByIp.set(ip, fromIp + 1);
    this.pending.set(raw, { ip, reserve, timer });
    raw.once('close', () => this.handshakeOver(raw));
  }

  private handshakeOver(raw: Socket): void {
    const p = this.pending.get(raw);
    if (!p) return;
    this.pending.delete(raw);
    clearTimeout(p.timer);
    this.handshaking--;
    if (p.reserve) this.reserved--;
    const n = (this.pendingByIp.get(p.ip) ?? 1) - 1;
    if (n <= 0) this.pendingByIp.delete(p.ip);
    else this.pendingByIp.set(p.ip, n);
  }

  /** One line per refused peer, at most 10 a minute (a flood costs no disk). */
  private refuse(peer: string | undefined, reason: string): void {
    this.refused++;
    const now = Date.now();
    if (now - this.refusedWindowStart > 60_000) {
      this.refusedWindowStart = now;
      this.refusedLogged = 0;
    }
    if (this.refusedLogged++ < 10) {
      this.log.warn('security: unauthenticated cluster link connection refused', {
        security: true,
        peer: peer ?? null,
        reason,
        errorCode: 'VSPC_LINK_AUTH_FAILED',
      });
    }
  }

  private accepted(socket: TLSSocket): void {
    // The PSK handshake proved the peer knows the key of the identity it presented.
    const identity = (socket as unknown as PskSocket)[PSK_IDENTITY] ?? '?';
    const log = this.log.child({ peerNode: identity, peer: `${socket.remoteAddress}:${socket.remotePort}` });
    if (socket.remoteAddress) {
      const ip = bareIp(socket.remoteAddress);
      this.nodeAddresses.delete(ip);
      this.nodeAddresses.add(ip);
      if (this.nodeAddresses.size > 1024) this.nodeAddresses.delete(this.nodeAddresses.values().next().value as string);
    }
    const fromNode = [...this.links].filter((l) => l.peerNode === identity).length;
    const maxLinks = this.opts.maxLinksPerNode ?? 4;
    if (fromNode >= maxLinks) {
      log.warn('security: cluster link peer cut off', { security: true, reason: `more than ${maxLinks} links from node ${identity}`, errorCode: 'VSPC_LINK_PROTOCOL' });
      socket.destroy();
      return;
    }
    const link = new LinkConnection(socket, log, {
      role: 'acceptor',
      nodeId: this.opts.nodeId,
      peerNode: identity,
      helloTimeoutMs: this.opts.handshakeTimeoutMs ?? 10_000,
      window: this.opts.window,
      maxStreams: this.opts.maxStreamsPerLink,
      pingAfterMs: this.opts.pingAfterMs,
      idleTimeoutMs: this.opts.idleTimeoutMs,
    });
    this.links.add(link);
    const clients = new Map<number, RemoteClient>();
    link.onEvent = (ev) => this.onEvent(link, clients, ev);
    link.onDrain(() => {
      for (const c of clients.values()) c.pump();
    });
    link.onClosed((reason) => {
      this.links.delete(link);
      for (const c of clients.values()) c.linkGone(`cluster link to node ${identity} closed: ${reason}`);
      clients.clear();
      log.info('cluster link down', { reason });
    });
  }

  private onEvent(link: LinkConnection, clients: Map<number, RemoteClient>, ev: LinkEvent): void {
    switch (ev.type) {
      case 'open': {
        const h = ev.header;
        if (h.op === 'handover') {
          this.handover(link, clients, ev.stream, h.token, h.scrollback === true);
          return;
        }
        const consoleId = Number(h.consoleId);
        const tcpPort = Number(h.tcpPort);
        const hub = Number.isSafeInteger(consoleId) && Number.isSafeInteger(tcpPort) ? this.opts.consoleById(consoleId, tcpPort) : undefined;
        if (!hub) {
          link.write(link.session.close(ev.stream, 'this node does not own that console (any more)'));
          return;
        }
        if (ev.window === 0) {
          // The replay and every output would wait on the owner for a window that may never come.
          link.write(link.session.close(ev.stream, 'no window granted'));
          return;
        }
        const request = typeof h.request === 'string' && (LOCK_MODES as readonly string[]).includes(h.request) ? (h.request as LockRequest) : 'readwrite';
        // From an authenticated node, but still text that ends up in logs and WHO: made safe to print.
        const peer = `${link.session.peerNodeId}/${typeof h.peer === 'string' ? sanitizeText(h.peer.slice(0, 200)) : '?'}`;
        const method = typeof h.method === 'string' && /^[a-z0-9-]{1,16}$/.test(h.method) ? h.method : 'telnet';
        const user = typeof h.user === 'string' && h.user.length <= 64 ? sanitizeText(h.user) : undefined;
        const auth = parseAuth(h.auth);
        const client = new RemoteClient(link, ev.stream, peer, method, link.session.peerNodeId ?? '?', this.opts.maxQueuedBytes, (why) => {
          clients.delete(ev.stream);
          hub.removeClient(client, why);
        });
        clients.set(ev.stream, client);
        client.hub = hub;
        const sinceTakeover = h.sinceTakeover === true;
        const decision = hub.addClient(client, {
          request,
          force: h.force === true,
          replay: h.replay !== false && !sinceTakeover,
          ...(user ? { user } : {}),
          ...(auth ? { auth } : {}),
        });
        if (!decision.granted) {
          clients.delete(ev.stream);
          link.write(link.session.close(ev.stream, decision.reason));
          return;
        }
        if (sinceTakeover) {
          const since = this.vmotion.outputSinceTakeover?.(hub) ?? null;
          // A replay like the hub's (ConsoleHub.addClient): without terminal queries.
          if (since && since.length > 0) client.deliver(stripTerminalQueries(since));
        }
        client.accepted(decision.mode);
        return;
      }
      case 'data': {
        const c = clients.get(ev.stream);
        if (!c?.hub) return;
        c.hub.fromClient(c, ev.data);
        c.consumed(ev.data.length);
        return;
      }
      case 'credit':
        clients.get(ev.stream)?.pump();
        return;
      case 'break': {
        const c = clients.get(ev.stream);
        if (c?.hub && c.hub.modeOf(c) !== 'readonly') c.hub.sendBreak(c);
        return;
      }
      case 'close': {
        const c = clients.get(ev.stream);
        if (!c) return;
        clients.delete(ev.stream);
        c.peerClosed(ev.reason);
        return;
      }
      default:
        // accept and notice go the other way: the protocol core refuses them for an acceptor.
        return;
    }
  }

  /**
   * The destination's node asks for a migration begun here: the console's scrollback
   * between the notices `scrollback` and `held` when it asks for it (`withScrollback`),
   * then the held input, then `released`.
   */
  private handover(link: LinkConnection, clients: Map<number, RemoteClient>, stream: number, tokenHex: unknown, withScrollback: boolean): void {
    const token = typeof tokenHex === 'string' && /^(?:[0-9a-f]{2}){2,256}$/.test(tokenHex) ? Buffer.from(tokenHex, 'hex') : null;
    const peerNode = link.session.peerNodeId ?? '?';
    const r = token && this.vmotion.handover ? this.vmotion.handover(token, peerNode) : null;
    if (!r) {
      link.log.warn('vMotion handover refused: no such migration pending here', { peerNode });
      link.write(link.session.close(stream, 'no such vMotion pending on this node'));
      return;
    }
    // A client in form only: it carries the held input within the stream's credit,
    // then the notice; its end (the asker's CLOSE) says whether the console was claimed.
    const sent = withScrollback ? r.scrollback.length : 0;
    const total = r.held.reduce((n, b) => n + b.length, 0) + sent;
    const carrier = new RemoteClient(link, stream, `${peerNode}/vmotion`, 'cluster', peerNode, total + 1, (why) => {
      clients.delete(stream);
      r.done(why);
    });
    carrier.onPeerClosed = (why) => r.done(why);
    clients.set(stream, carrier);
    if (withScrollback) {
      carrier.notice('scrollback');
      if (sent > 0) carrier.deliver(r.scrollback);
      carrier.notice('held');
    }
    for (const b of r.held) carrier.deliver(b);
    carrier.notice('released');
    carrier.accepted('handover');
  }
}

/** `::ffff:10.0.0.2` (an IPv4 peer on a dual-stack socket) as `10.0.0.2`. */
export function bareIp(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}

function parseAuth(v: unknown): ClientAuth | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.method !== 'string' || o.method.length > 16) return undefined;
  return typeof o.keyFingerprint === 'string' && o.keyFingerprint.length <= 128 ? { method: o.method, keyFingerprint: o.keyFingerprint } : { method: o.method };
}


/**
 * A client of another node, attached to a hub of this one through a link stream.
 * Output goes out within the stream's credit; what does not fit waits in a queue
 * bounded by `maxQueued` (past it the client is dropped as slow: the hub never
 * waits for it). Input is acknowledged (credit) as the hub takes it, and not while
 * the hub has paused the client (the VM's side is full).
 */
export class RemoteClient implements ConsoleClient {
  readonly id = allocateClientId();
  readonly origin: Readonly<Record<string, string>>;
  hub: ConsoleHub | null = null;
  private isAccepted = false;
  /** Output and notices in order: a notice is sent when the data before it was. */
  private queue: Array<Buffer | { notice: string }> = [];
  /** Called when the other node closes the stream (a handover's outcome). */
  onPeerClosed: ((reason: string) => void) | null = null;
  private queued = 0;
  private paused = false;
  private unacked = 0;
  private gone = false;

  constructor(
    private readonly link: LinkConnection,
    private readonly stream: number,
    readonly peer: string,
    readonly method: string,
    node: string,
    private readonly maxQueued: number,
    private readonly detach: (reason: string) => void,
  ) {
    this.origin = { viaNode: node };
  }

  accepted(mode: string): void {
    this.isAccepted = true;
    this.link.write(this.link.session.accept(this.stream, { mode }));
    this.pump();
  }

  deliver(data: Buffer): void {
    if (this.gone) return;
    if (this.queued + data.length > this.maxQueued) {
      const reason = `slow client: more than ${this.maxQueued} bytes of output queued over the cluster link`;
      this.link.log.warn('remote client too slow; disconnecting', { clientId: this.id, stream: this.stream, queued: this.queued, backlog: this.link.backlog, limit: this.maxQueued });
      this.close(reason);
      return;
    }
    this.queue.push(data);
    this.queued += data.length;
    if (this.isAccepted) this.pump();
  }

  /**
   * Sends what the stream's credit allows, while the socket's backlog is under the
   * slow-client bound: a peer that grants credit but does not read leaves the output
   * in this client's queue, which drops it as slow (the link's drain pumps again).
   */
  pump(): void {
    if (this.gone || !this.isAccepted) return;
    // Above the socket's high-water mark (16 KiB) a write has said false, so a drain comes.
    const maxBacklog = Math.max(this.maxQueued, 64 * 1024);
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (!Buffer.isBuffer(head)) {
        this.link.write(this.link.session.notice(this.stream, head.notice));
        this.queue.shift();
        continue;
      }
      if (this.link.backlog >= maxBacklog) break;
      if (this.link.session.credit(this.stream) <= 0) break;
      const { bytes, sent } = this.link.session.data(this.stream, head);
      this.link.write(bytes);
      this.queued -= sent;
      if (sent === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(sent);
    }
  }

  notice(text: string): void {
    if (this.gone) return;
    if (this.queue.length > 0 || !this.isAccepted) this.queue.push({ notice: text });
    else this.link.write(this.link.session.notice(this.stream, text));
  }

  breakFromSource(): void {
    if (!this.gone) this.link.write(this.link.session.sendBreak(this.stream));
  }

  consumed(n: number): void {
    this.unacked += n;
    if (!this.paused) this.ack();
  }

  pauseInput(): void {
    this.paused = true;
  }

  resumeInput(): void {
    this.paused = false;
    this.ack();
  }

  /** The hub closes it (displaced, forgotten, slow): the other node hears why. */
  close(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.link.write(this.link.session.close(this.stream, reason));
    this.detach(reason);
  }

  /** The other node detached it. */
  peerClosed(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.onPeerClosed?.(reason);
    this.hub?.removeClient(this, `detached on node ${this.origin.viaNode}: ${reason}`);
  }

  linkGone(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.onPeerClosed?.(reason);
    this.hub?.removeClient(this, reason);
  }

  private ack(): void {
    if (this.unacked === 0 || this.gone) return;
    this.link.write(this.link.session.grant(this.stream, this.unacked));
    this.unacked = 0;
  }
}
