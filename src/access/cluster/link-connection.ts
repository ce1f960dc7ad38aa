/**
 * One authenticated link between two vspc nodes: a TLS 1.2 socket with a pre-shared
 * key (docs/decisions/0012-cluster-link-tls-psk.md) carrying a LinkSession
 * (src/protocol/cluster/link.ts). Both roles use it; what a stream means is the
 * caller's (link-server.ts serves remote clients, link-dialer.ts attaches them).
 *
 * Lifecycle: `hello` (TLS done, HELLOs exchanged within `helloTimeoutMs`) → `open` →
 * `closed`. `close()` ends the socket after what is queued; `destroy()` drops it.
 * Both are idempotent and end every stream (`onClosed` once).
 */
import { createHmac } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../../domain/logger.js';
import { LinkSession, type LinkEvent, type LinkRole } from '../../protocol/cluster/link.js';
import { VspcError } from '../../errors.js';

/**
 * The one PSK cipher suite of TLS 1.2 that is both AEAD and forward secret in OpenSSL
 * (RFC 7905; Node's TLS 1.3 has no external PSK). Not offered: DHE-PSK (never agreed:
 * the listener has no DH parameters), ECDHE-PSK-*-CBC (no AEAD), plain PSK (no forward
 * secrecy). docs/decisions/0012-cluster-link-tls-psk.md.
 */
export const LINK_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305';

/**
 * The pre-shared key of the link a node with `identity` opens: HMAC-SHA256 of the
 * identity under the cluster secret, so each node's key differs and a key seen in a
 * core dump of one node's TLS library does not let anyone speak as another node.
 */
export function linkKey(secret: Buffer, identity: string): Buffer {
  return createHmac('sha256', secret).update(`vspc cluster link v1\0${identity}`).digest();
}

export interface LinkConnectionOptions {
  role: LinkRole;
  nodeId: string;
  /** Dialer: the node it meant to reach. Acceptor: the TLS identity the peer presented. */
  peerNode: string;
  helloTimeoutMs: number;
  window?: number;
  maxStreams?: number;
  /** Nothing received for this long: send a PING (default 5000 ms). */
  pingAfterMs?: number;
  /** Nothing received for this long: the peer is gone, cut the link (default 15000 ms). */
  idleTimeoutMs?: number;
}

export class LinkConnection {
  readonly session: LinkSession;
  private helloTimer: NodeJS.Timeout | null;
  private liveTimer: NodeJS.Timeout | null = null;
  private lastRx = Date.now();
  private lastPing = 0;
  private pingToken = 0;
  private ended = false;
  private readonly closedListeners: Array<(reason: string) => void> = [];
  private readonly drainListeners: Array<() => void> = [];
  /** Called for every stream event after HELLO. */
  onEvent: (ev: LinkEvent) => void = () => undefined;
  onOpen: () => void = () => undefined;

  constructor(
    readonly socket: TLSSocket,
    readonly log: Logger,
    private readonly opts: LinkConnectionOptions,
  ) {
    this.session = new LinkSession({
      role: opts.role,
      nodeId: opts.nodeId,
      // Either side: the HELLO must name the node the TLS identity is (acceptor) or the one dialled (dialer).
      expectPeer: opts.peerNode,
      window: opts.window,
      maxStreams: opts.maxStreams,
    });
    // Small frames (keystrokes, CREDIT, a handover's steps) must not wait for Nagle's algorithm.
    socket.setNoDelay(true);
    // Beside the PINGs: the kernel notices a peer host that is gone even when we send nothing.
    socket.setKeepAlive(true, 5000);
    this.helloTimer = setTimeout(() => this.fail('no HELLO from the peer node in time', 'VSPC_LINK_AUTH_FAILED'), opts.helloTimeoutMs);
    this.helloTimer.unref();
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('drain', () => {
      for (const l of this.drainListeners) l();
    });
    socket.on('error', (err) => this.end(`link socket error: ${err.message}`));
    socket.on('close', () => this.end('link connection closed'));
    socket.on('end', () => this.end('peer node closed the link'));
    this.write(this.session.hello());
  }

  /** The node at the other end (acceptor: its TLS identity; dialer: the node dialled). */
  get peerNode(): string {
    return this.opts.peerNode;
  }

  get open(): boolean {
    return !this.ended && this.session.state === 'open';
  }

  get closed(): boolean {
    return this.ended;
  }

  onClosed(listener: (reason: string) => void): void {
    this.closedListeners.push(listener);
  }

  onDrain(listener: () => void): void {
    this.drainListeners.push(listener);
  }

  /** Bytes queued on the socket, not yet taken by the kernel (a slow peer's backlog). */
  get backlog(): number {
    return this.socket.writableLength;
  }

  /** Queue bytes on the socket. False: its buffer is above the high-water mark. */
  write(bytes: Buffer | null | Buffer[]): boolean {
    if (this.ended || bytes === null) return !this.ended;
    if (Array.isArray(bytes)) {
      let ok = true;
      for (const b of bytes) ok = this.socket.write(b) && ok;
      return ok;
    }
    return this.socket.write(bytes);
  }

  /** Ends the link after what is queued. */
  close(reason: string): void {
    if (this.ended) return;
    // What is queued (a last CLOSE frame) goes out before the FIN; a peer that never
    // closes its side is cut after a grace period.
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 5000).unref();
    this.end(reason, false);
  }

  destroy(reason: string): void {
    if (this.ended) return;
    this.socket.destroy();
    this.end(reason);
  }

  /**
   * Liveness: any byte from the peer counts; after `pingAfterMs` of silence a PING
   * asks for one, after `idleTimeoutMs` the link is cut (its streams end: the owner
   * releases the vanished node's clients and locks, the dialer's clients are told).
   */
  private startLiveness(): void {
    const pingAfter = this.opts.pingAfterMs ?? 5000;
    const idle = this.opts.idleTimeoutMs ?? 15_000;
    this.lastRx = Date.now();
    this.liveTimer = setInterval(() => {
      const now = Date.now();
      const silent = now - this.lastRx;
      if (silent >= idle) {
        const reason = `no traffic from the peer node for ${silent} ms (gone?)`;
        this.log.warn('cluster link peer silent; cut', { reason, errorCode: 'VSPC_LINK_UNAVAILABLE', peerNode: this.opts.peerNode });
        this.destroy(reason);
        return;
      }
      if (silent >= pingAfter && now - this.lastPing >= pingAfter) {
        this.lastPing = now;
        this.pingToken = (this.pingToken + 1) >>> 0;
        this.write(this.session.ping(this.pingToken));
      }
    }, Math.max(10, Math.min(pingAfter, idle) / 4));
    this.liveTimer.unref();
  }

  private receive(chunk: Buffer): void {
    if (this.ended) return;
    this.lastRx = Date.now();
    let events: LinkEvent[];
    try {
      events = this.session.receive(chunk);
    } catch (err) {
      const code = err instanceof VspcError ? err.code : 'VSPC_LINK_PROTOCOL';
      this.fail(`link protocol error: ${(err as Error).message}`, code);
      return;
    }
    for (const ev of events) {
      if (this.ended) return;
      if (ev.type === 'hello') {
        if (this.helloTimer) clearTimeout(this.helloTimer);
        this.helloTimer = null;
        this.log.info('cluster link up', { peerNode: ev.nodeId, role: this.opts.role });
        this.startLiveness();
        this.onOpen();
        continue;
      }
      if (ev.type === 'ping') {
        this.write(this.session.pong(ev.token));
        continue;
      }
      if (ev.type === 'pong') continue;
      this.onEvent(ev);
    }
  }

  /** The peer misbehaved: a log line and the cut. */
  private fail(reason: string, errorCode: string): void {
    if (this.ended) return;
    this.log.warn('security: cluster link peer cut off', { security: true, reason, errorCode, peerNode: this.opts.peerNode });
    this.destroy(reason);
  }

  private end(reason: string, destroySocket = true): void {
    if (this.ended) return;
    this.ended = true;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    if (this.liveTimer) clearInterval(this.liveTimer);
    this.liveTimer = null;
    this.session.destroy();
    if (destroySocket && !this.socket.destroyed) this.socket.destroy();
    for (const l of this.closedListeners) l(reason);
    this.closedListeners.length = 0;
  }
}
