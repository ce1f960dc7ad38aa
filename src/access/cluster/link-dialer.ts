/**
 * The side of the cluster link that reaches other nodes: one TLS 1.2 PSK connection
 * per peer node, dialled when a client of this node first attaches to a console that
 * node owns, shared by every such client (one stream each), closed when the last
 * stream ends. Implements the domain's ClusterLinks seam for src/sources/cluster/.
 */
import { connect } from 'node:tls';
import type { Logger } from '../../domain/logger.js';
import type { ClusterLinks, NodeAddress, RemoteAttachHandlers, RemoteAttachment, RemoteAttachRequest } from '../../domain/cluster-link.js';
import type { LockMode } from '../../domain/locks.js';
import type { LinkEvent } from '../../protocol/cluster/link.js';
import { LINK_CIPHERS, LinkConnection, linkKey } from './link-connection.js';


/** How OpenSSL words a PSK handshake whose two keys differ (bad record MAC, decrypt error) or an unknown identity. */
const SECRET_MISMATCH = /bad record mac|decrypt(ion)? (error|failed)|unknown psk identity|handshake failure/i;
export interface ClusterLinkDialerOptions {
  nodeId: string;
  secret: Buffer;
  /** TCP connect + TLS handshake + HELLO, at most. */
  connectTimeoutMs?: number;
  window?: number;
  /** Liveness (link-connection.ts): PING after this much silence (default 5000 ms). */
  pingAfterMs?: number;
  /** Liveness: cut the link after this much silence (default 15000 ms). */
  idleTimeoutMs?: number;
  /** Client input waiting for the owner's credit, at most, per client (then `write` says false). */
  maxPendingInput?: number;
}

interface Peer {
  readonly address: NodeAddress;
  readonly link: LinkConnection;
  readonly streams: Map<number, Attachment>;
  /** Attachments asked for before the link was up. */
  readonly waiting: Attachment[];
}

class Attachment implements RemoteAttachment {
  stream = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private blocked = false;
  private flushWaiters: Array<() => void> = [];
  ended = false;

  constructor(
    private readonly peer: Peer,
    readonly request: RemoteAttachRequest,
    readonly handlers: RemoteAttachHandlers,
    private readonly maxPending: number,
    private readonly onEnd: (a: Attachment) => void,
  ) {}

  write(data: Buffer): boolean {
    if (this.ended) return true;
    this.pending.push(data);
    this.pendingBytes += data.length;
    this.flush();
    if (this.pendingBytes > this.maxPending) this.blocked = true;
    return !this.blocked;
  }

  sendBreak(): void {
    if (!this.ended && this.stream !== 0) this.peer.link.write(this.peer.link.session.sendBreak(this.stream));
  }

  whenFlushed(callback: () => void): void {
    if (this.ended || this.pendingBytes === 0) callback();
    else this.flushWaiters.push(callback);
  }

  private flushed(): void {
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w();
  }

  close(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.stream !== 0) this.peer.link.write(this.peer.link.session.close(this.stream, reason));
    this.onEnd(this);
    this.flushed();
  }

  /** Sends pending input within the stream's credit. */
  flush(): void {
    if (this.ended || this.stream === 0) return;
    const s = this.peer.link.session;
    while (this.pending.length > 0 && s.credit(this.stream) > 0) {
      const head = this.pending[0];
      const { bytes, sent } = s.data(this.stream, head);
      this.peer.link.write(bytes);
      this.pendingBytes -= sent;
      if (sent === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(sent);
    }
    if (this.blocked && this.pendingBytes <= this.maxPending / 2) {
      this.blocked = false;
      this.handlers.drain();
    }
    if (this.pendingBytes === 0) this.flushed();
  }

  /** The owner or the link ended it. */
  ended_(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.onEnd(this);
    this.flushed();
    this.handlers.closed(reason);
  }
}

export class ClusterLinkDialer implements ClusterLinks {
  private readonly peers = new Map<string, Peer>();
  private closing = false;

  constructor(
    private readonly log: Logger,
    private readonly opts: ClusterLinkDialerOptions,
  ) {}

  /** Links up or being set up, for tests and metrics. */
  get links(): number {
    return this.peers.size;
  }

  attach(owner: NodeAddress, request: RemoteAttachRequest, handlers: RemoteAttachHandlers): RemoteAttachment {
    let peer = this.peers.get(owner.node);
    if (peer && (peer.address.host !== owner.host || peer.address.port !== owner.port)) {
      // The node restarted elsewhere: its old link is stale.
      peer.link.destroy('peer node advertised a new address');
      peer = undefined;
    }
    peer ??= this.dial(owner);
    const a = new Attachment(peer, request, handlers, this.opts.maxPendingInput ?? 64 * 1024, (x) => this.ended(peer!, x));
    if (this.closing) {
      queueMicrotask(() => a.ended_('node stopping'));
      return a;
    }
    if (peer.link.open) this.openStream(peer, a);
    else peer.waiting.push(a);
    return a;
  }

  /** Cuts every link (their attachments end). Idempotent. */
  close(): void {
    this.closing = true;
    for (const p of [...this.peers.values()]) p.link.destroy('node stopping');
  }

  private dial(address: NodeAddress): Peer {
    const o = this.opts;
    const log = this.log.child({ peerNode: address.node, peer: `${address.host}:${address.port}` });
    const socket = connect({
      host: address.host,
      port: address.port,
      ciphers: LINK_CIPHERS,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      // No certificates: the PSK handshake authenticates both ends.
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: linkKey(o.secret, o.nodeId), identity: o.nodeId }),
    });
    const link = new LinkConnection(socket, log, {
      role: 'dialer',
      nodeId: o.nodeId,
      peerNode: address.node,
      helloTimeoutMs: o.connectTimeoutMs ?? 10_000,
      window: o.window,
      pingAfterMs: o.pingAfterMs,
      idleTimeoutMs: o.idleTimeoutMs,
    });
    const peer: Peer = { address, link, streams: new Map(), waiting: [] };
    this.peers.set(address.node, peer);
    let opened = false;
    link.onOpen = () => {
      opened = true;
      const waiting = peer.waiting.splice(0);
      for (const a of waiting) if (!a.ended) this.openStream(peer, a);
    };
    link.onEvent = (ev) => this.onEvent(peer, ev);
    link.onDrain(() => {
      for (const a of peer.streams.values()) a.flush();
    });
    link.onClosed((reason) => {
      if (this.peers.get(address.node) === peer) this.peers.delete(address.node);
      const all = [...peer.waiting.splice(0), ...peer.streams.values()];
      peer.streams.clear();
      // A PSK handshake with a different key fails inside TLS with OpenSSL's words only.
      const hint = !opened && SECRET_MISMATCH.test(reason) ? ' (does that node have the same --cluster-secret-file as this one?)' : '';
      for (const a of all) a.ended_(`cluster link to node ${address.node} lost: ${reason}${hint}`);
      if (hint) log.warn('cluster link handshake refused: the nodes\' secrets may differ', { reason, errorCode: 'VSPC_LINK_AUTH_FAILED' });
      else log.info('cluster link down', { reason });
    });
    return peer;
  }

  private openStream(peer: Peer, a: Attachment): void {
    const r = a.request;
    if (peer.link.session.streamCount >= peer.link.session.maxStreams) {
      // The owner refuses more than that many clients on one link (a protocol error there).
      queueMicrotask(() => a.ended_(`too many clients (${peer.link.session.maxStreams}) on the cluster link to node ${peer.address.node}`));
      return;
    }
    const { stream, bytes } = peer.link.session.open({
      consoleId: r.consoleId,
      tcpPort: r.tcpPort,
      request: r.request,
      force: r.force,
      replay: r.replay,
      peer: r.peer,
      method: r.method,
      ...(r.user !== undefined ? { user: r.user } : {}),
      ...(r.auth !== undefined ? { auth: r.auth } : {}),
      ...(r.sinceTakeover ? { sinceTakeover: true } : {}),
      ...(r.handover !== undefined ? { op: 'handover', token: r.handover, ...(r.handoverScrollback ? { scrollback: true } : {}) } : {}),
    });
    a.stream = stream;
    peer.streams.set(stream, a);
    peer.link.write(bytes);
  }

  private onEvent(peer: Peer, ev: LinkEvent): void {
    const a = 'stream' in ev ? peer.streams.get(ev.stream) : undefined;
    if (!a) return;
    switch (ev.type) {
      case 'accept':
        a.handlers.accepted(String(ev.header.mode) as LockMode);
        a.flush();
        return;
      case 'data':
        a.handlers.data(ev.data);
        // Delivered: each client bounds its own queue (and drops itself when slow), so
        // the owner may send as much again; a slow client never holds the link.
        peer.link.write(peer.link.session.grant(ev.stream, ev.data.length));
        return;
      case 'credit':
        a.flush();
        return;
      case 'notice':
        a.handlers.notice(ev.text);
        return;
      case 'break':
        a.handlers.breakFromSource();
        return;
      case 'close':
        peer.streams.delete(ev.stream);
        a.ended_(ev.reason);
        return;
      default:
        return;
    }
  }

  private ended(peer: Peer, a: Attachment): void {
    if (peer.streams.get(a.stream) === a) peer.streams.delete(a.stream);
    const i = peer.waiting.indexOf(a);
    if (i >= 0) peer.waiting.splice(i, 1);
    // The last client gone: the link goes too (dialled again on the next attach).
    if (peer.streams.size === 0 && peer.waiting.length === 0 && this.peers.get(peer.address.node) === peer) {
      this.peers.delete(peer.address.node);
      peer.link.close('no more clients on this link');
    }
  }
}
