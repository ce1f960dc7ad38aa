/**
 * Cross-node vMotion (docs/architecture.md, "Cluster (PostgreSQL)"; docs/vmotion.md):
 * the destination's connection of a vMotion lands on another node than the source's.
 *
 *   source's node S                               destination's node D
 *   BEGIN → GOAHEAD, row (token, console,          PEER(seq+secret): no local match →
 *     S, deadline) in `vmotions`, input held        row by its whole token (budgeted per
 *                                                   address), compared once more in
 *                                                   constant time → PEER-OK
 *                                                  COMPLETE → link to S: OPEN handover(token)
 *   coordinator.handOver(token): migration ends
 *     `completed`, old source retired, held
 *     input collected; registry.handOver: owner
 *     lock released (waited), ports closed here
 *   → NOTICE scrollback, DATA(scrollback),         (asked for with `handoverScrollback`)
 *     NOTICE held, DATA(held input) …
 *     NOTICE released                               registry.takeOver: lock claimed, hub
 *                                                   (new, given the old scrollback; or this
 *                                                   node's relay hub for the console, which
 *                                                   has its own); held input written to the
 *                                                   new source first, then what was held
 *                                                   here; ← CLOSE claimed
 *   S's hub, when it still has clients, becomes
 *   a relay: its source is a link stream to D
 *   (what D printed since it took over replayed
 *   first), input held meanwhile goes first.
 *
 * Forged secrets: a token matches no row (or fails the constant-time comparison): the
 * peer is refused as on one node. ABORT or the deadline delete the row (the
 * coordinator withdraws it when the migration ends); a row past its deadline is never
 * matched.
 */
import { timingSafeEqual } from 'node:crypto';
import { TokenBuckets } from '../../util/token-bucket.js';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { ConsoleSource } from '../../domain/seams.js';
import type { ClusterVmotion, RemoteMigration, VmotionCoordinator, VmotionEndpoint } from '../../domain/vmotion.js';
import type { ClusterLinks, NodeAddress, RemoteAttachment } from '../../domain/cluster-link.js';

/** What the service needs from the shared database. */
export interface VmotionStore {
  publish(tokenHex: string, seqHex: string, consoleId: number, deadline: number): void;
  withdraw(tokenHex: string): void;
  find(payloadHex: string): Array<{ token: string; seqLength: number; consoleId: number; sourceNode: string }>;
  nodeLink(node: string): NodeAddress | null;
}

export interface ClusterVmotionOptions {
  nodeId: string;
  registry: Registry;
  coordinator: VmotionCoordinator;
  links: ClusterLinks;
  store: VmotionStore;
}

/** A hub relayed to the console's new owner: its source is a link stream. */
class RelaySource implements ConsoleSource {
  readonly kind = 'cluster';
  attachment: RemoteAttachment | null = null;
  private drainListener: (() => void) | null = null;
  constructor(readonly peer: string) {}
  write(data: Buffer): boolean {
    return this.attachment ? this.attachment.write(data) : true;
  }
  onDrain(listener: () => void): void {
    this.drainListener = listener;
  }
  drained(): void {
    this.drainListener?.();
  }
  sendBreak(): void {
    this.attachment?.sendBreak();
  }
  close(reason: string): void {
    this.attachment?.close(reason);
  }
}

interface Relay {
  hub: ConsoleHub;
  source: RelaySource;
}


/** The most of the old owner's scrollback a handover keeps (the newest bytes); the hub keeps its own size of it. */
export const MAX_HANDOVER_SCROLLBACK = 16 * 1024 * 1024;

/** Cluster look-ups that matched nothing, per remote address: a burst, then this many a second. */
export const PEER_LOOKUP_BURST = 32;
export const PEER_LOOKUPS_PER_SECOND = 8;
export class ClusterVmotionService implements ClusterVmotion {
  /** Hubs of this node relayed to a console's new owner, by console id. */
  private readonly relays = new Map<number, Relay>();
  /** hub.bytesFromVm when this node took the console over (a relay's replay starts there). */
  private readonly takenAt = new WeakMap<ConsoleHub, number>();
  /** Consoles this node is taking over right now (their relay hubs keep holding input). */
  private readonly takingOver = new Set<number>();
  /** Cross-node vMotions completed here as the destination's node. */
  completedHere = 0;
  /**
   * Database look-ups for VMOTION-PEERs without a local match that matched nothing
   * either, per remote address (a PEER that matches is refunded): past the burst and
   * its rate, a PEER is refused without a query. Look-ups refused so far: `peersThrottled`.
   */
  private readonly peerLookups = new TokenBuckets({ ratePerSecond: PEER_LOOKUPS_PER_SECOND, burst: PEER_LOOKUP_BURST, maxKeys: 4096 });
  peersThrottled = 0;

  constructor(
    private readonly log: Logger,
    private readonly o: ClusterVmotionOptions,
  ) {
    // A relay nobody here uses any more would keep a READWRITE holder on the owner.
    o.registry.on('clientDetached', (hub) => this.relayIdle(hub));
  }

  /** Relays up (tests). */
  get relayCount(): number {
    return this.relays.size;
  }

  // --- ClusterVmotion (called by the coordinator)

  publish(seq: Buffer, secret: Buffer, consoleId: number, deadline: number): void {
    this.o.store.publish(Buffer.concat([seq, secret]).toString('hex'), seq.toString('hex'), consoleId, deadline);
  }

  withdraw(token: Buffer): void {
    this.o.store.withdraw(token.toString('hex'));
  }

  find(token: Buffer, from: string): RemoteMigration | null {
    // Bounded: a VMOTION-PEER payload is short (option 232 bounds it); nothing to look up for none.
    if (token.length < 2 || token.length > 256) return null;
    if (!this.peerLookups.take(from, Date.now())) {
      if (this.peersThrottled++ % 100 === 0) {
        this.log.warn('security: VMOTION-PEERs from one address past its budget of cluster look-ups; refused without a query', {
          security: true,
          address: from,
          refusedSoFar: this.peersThrottled,
          errorCode: 'VSPC_VMOTION_PEER_FLOOD',
        });
      }
      return null;
    }
    let found: RemoteMigration | null = null;
    for (const row of this.o.store.find(token.toString('hex'))) {
      if (row.sourceNode === this.o.nodeId) continue; // ours: the local map had it, or it ended
      const stored = Buffer.from(row.token, 'hex');
      // The query matched the whole token; compared once more, in constant time.
      if (stored.length === token.length && timingSafeEqual(stored, token) && !found) {
        found = { seq: token.subarray(0, row.seqLength), token: Buffer.from(token), consoleId: row.consoleId, sourceNode: row.sourceNode };
      }
    }
    // Only PEERs that matched nothing spend the budget: a host moving many VMs is not a guesser.
    if (found) this.peerLookups.refund(from);
    return found;
  }

  complete(conn: VmotionEndpoint, m: RemoteMigration): void {
    const started = Date.now();
    const log = conn.log.child({ sourceNode: m.sourceNode, consoleId: m.consoleId });
    let source: NodeAddress | null = null;
    try {
      source = this.o.store.nodeLink(m.sourceNode);
    } catch (err) {
      log.error('vMotion handover: database unavailable', { message: (err as Error).message, errorCode: 'VSPC_DB_UNAVAILABLE' });
    }
    if (!source) {
      log.error('vMotion handover impossible: the source\'s node advertises no cluster link', { errorCode: 'VSPC_LINK_UNAVAILABLE' });
      conn.close('vMotion source node unreachable');
      return;
    }
    // This node's relay of the console (it owned it before): its clients' input waits
    // here until the console is ours again, after what the source's node held.
    const relay = this.relays.get(m.consoleId) ?? null;
    relay?.hub.startHolding();
    this.takingOver.add(m.consoleId);
    const start = (): void => this.askHandover(conn, m, source!, relay, log, started);
    // Input the relay already took but still waits for the owner's credit must reach the
    // owner before the handover does (it is part of what the owner holds and hands back).
    if (relay?.source.attachment) relay.source.attachment.whenFlushed(start);
    else start();
  }

  private askHandover(conn: VmotionEndpoint, m: RemoteMigration, source: NodeAddress, relay: Relay | null, log: Logger, started: number): void {
    const held: Buffer[] = [];
    // The owner's scrollback (between the notices `scrollback` and `held`), at most
    // MAX_HANDOVER_SCROLLBACK bytes kept, the newest: the hub trims it to its own size.
    const scrollback: Buffer[] = [];
    let scrollbackBytes = 0;
    let into: 'held' | 'scrollback' = 'held';
    let claimed = false;
    const attachment = this.o.links.attach(
      source,
      {
        consoleId: m.consoleId,
        tcpPort: 0,
        request: 'readwrite',
        force: false,
        replay: false,
        peer: 'vmotion',
        method: 'cluster',
        handover: m.token.toString('hex'),
        handoverScrollback: true,
      },
      {
        accepted: () => undefined,
        data: (d) => {
          if (into === 'held') {
            held.push(d);
            return;
          }
          scrollback.push(d);
          scrollbackBytes += d.length;
          while (scrollback.length > 1 && scrollbackBytes - scrollback[0].length >= MAX_HANDOVER_SCROLLBACK) scrollbackBytes -= scrollback.shift()!.length;
        },
        notice: (text) => {
          if (text === 'scrollback' || text === 'held') {
            into = text;
            return;
          }
          if (text !== 'released' || claimed) return;
          claimed = true;
          this.claim(conn, m, held, scrollback, relay, attachment, log, started);
        },
        breakFromSource: () => undefined,
        drain: () => undefined,
        closed: (reason) => {
          if (claimed) return;
          this.takingOver.delete(m.consoleId);
          log.warn('vMotion handover refused by the source\'s node', { reason });
          if (relay) relay.hub.stopHolding(relay.source);
          conn.close(`vMotion handover failed: ${reason}`);
        },
      },
    );
  }

  // --- the source's side (called by the link server)

  /** The destination's node asks for a migration begun here (see the top of this file). */
  handover(token: Buffer, toNode: string): { held: Buffer[]; scrollback: Buffer; done(reason: string): void } | null {
    const r = this.o.coordinator.handOver(token);
    if (!r) return null;
    const hub = r.hub;
    // What a client attaching on the new owner is replayed (the new owner's hub starts empty).
    const scrollback = hub.scrollback.snapshot();
    // Its own relay (if any) is replaced: the console was ours, now it is toNode's.
    this.relays.delete(hub.identity.id);
    this.o.registry.handOver(hub);
    // The new owner writes the console's log from now on.
    hub.logged = false;
    this.log.info('vMotion handed over to another node', { vm: hub.displayName, toNode, heldBytes: r.held.reduce((n, b) => n + b.length, 0) });
    return {
      held: r.held,
      scrollback,
      done: (reason) => this.handedOver(hub, toNode, reason),
    };
  }

  /** What the console printed since this node took it over (a relay's replay). */
  outputSinceTakeover(hub: ConsoleHub): Buffer | null {
    const mark = this.takenAt.get(hub);
    if (mark === undefined) return null;
    const n = hub.bytesFromVm - mark;
    const all = hub.scrollback.snapshot();
    if (n > all.length) {
      this.log.warn('relay replay: the scrollback no longer holds everything printed since the takeover', { vm: hub.displayName, lostBytes: n - all.length });
      return all;
    }
    return all.subarray(all.length - n);
  }

  private relayIdle(hub: ConsoleHub): void {
    const id = hub.identity.id;
    const r = this.relays.get(id);
    if (!r || r.hub !== hub || hub.clients.size > 0 || this.takingOver.has(id)) return;
    this.relays.delete(id);
    r.source.close('no clients left on this node');
    hub.stopHolding(null);
    this.log.info('relay to the console\'s owner closed: no clients left here', { vm: hub.displayName });
  }

  /** Ends every relay (node stopping). */
  close(reason: string): void {
    for (const r of [...this.relays.values()]) {
      r.source.close(reason);
      r.hub.closeClients(reason);
    }
    this.relays.clear();
  }

  // --- internals

  private claim(
    conn: VmotionEndpoint,
    m: RemoteMigration,
    held: Buffer[],
    scrollback: Buffer[],
    relay: Relay | null,
    attachment: RemoteAttachment,
    log: Logger,
    started: number,
  ): void {
    this.takingOver.delete(m.consoleId);
    let hub: ConsoleHub;
    try {
      hub = this.o.registry.takeOver(m.consoleId, relay?.hub ?? null);
    } catch (err) {
      log.error('vMotion handover: cannot take the console over', { message: (err as Error).message, errorCode: (err as { code?: string }).code });
      attachment.close('claim failed');
      if (relay) relay.hub.stopHolding(relay.source);
      conn.close('vMotion handover failed');
      return;
    }
    if (relay) {
      this.relays.delete(m.consoleId);
      // Before `claimed` on the same link: the source's node sees this client leave first.
      relay.source.close('console taken over by this node');
      hub.logged = true;
    } else if (scrollback.length > 0) {
      // A hub new on this node: its replay starts with the old owner's. (A relay hub
      // has its own: it saw everything the console printed while it was relayed.)
      // Before adoptHub(), which flushes what the destination printed since COMPLETE.
      hub.scrollback.push(Buffer.concat(scrollback));
    }
    // The replay mark comes first: adoptHub() flushes what the destination printed since
    // its COMPLETE (kept while the handover went on), and the source's node, now a relay
    // of this one, must get those bytes too.
    this.takenAt.set(hub, hub.bytesFromVm);
    conn.adoptHub(hub);
    let bytes = 0;
    for (const b of held) {
      bytes += b.length;
      conn.write(b);
    }
    // Then what this node's clients typed during the handover.
    if (hub.isHolding) hub.stopHolding(conn);
    attachment.close('claimed');
    this.completedHere++;
    const durationMs = Date.now() - started;
    hub.report({ kind: 'vmotion', outcome: 'completed', durationMs });
    log.info('vMotion completed across nodes: this node owns the console now', { vm: hub.displayName, heldBytes: bytes, durationMs });
  }

  /** The destination's node closed the handover stream. */
  private handedOver(hub: ConsoleHub, toNode: string, reason: string): void {
    if (reason !== 'claimed') {
      this.log.warn('vMotion handover not completed by the destination\'s node; its clients here are closed', { vm: hub.displayName, toNode, reason });
      hub.stopHolding(null);
      hub.closeClients(`vMotion to node ${toNode} failed`);
      return;
    }
    if (hub.clients.size === 0) {
      hub.stopHolding(null);
      return;
    }
    let address: NodeAddress | null = null;
    try {
      address = this.o.store.nodeLink(toNode);
    } catch {
      address = null;
    }
    if (!address) {
      hub.stopHolding(null);
      hub.closeClients(`the console moved to node ${toNode}, which cannot be reached`);
      return;
    }
    this.relayTo(hub, address);
  }

  /** The hub's clients keep working: its source becomes a link stream to the new owner. */
  private relayTo(hub: ConsoleHub, owner: NodeAddress): void {
    const id = hub.identity.id;
    const source = new RelaySource(`node ${owner.node}`);
    const relay: Relay = { hub, source };
    this.relays.set(id, relay);
    source.attachment = this.o.links.attach(
      owner,
      {
        consoleId: id,
        tcpPort: hub.identity.tcpPort,
        request: 'readwrite',
        force: false,
        replay: false,
        sinceTakeover: true,
        peer: 'relay',
        method: 'cluster',
      },
      {
        accepted: () => {
          hub.attachSource(source);
          // Input typed since the handover, in order, before anything newer; unless this
          // node is taking the console back meanwhile: then it goes to the new source,
          // after what the owner held (input sent on the relay now would arrive there
          // after the handover and be lost).
          if (!this.takingOver.has(id)) hub.stopHolding(source);
        },
        data: (d) => hub.fromVm(d),
        notice: () => undefined,
        breakFromSource: () => hub.breakFromSource(source),
        drain: () => source.drained(),
        closed: (reason) => {
          if (this.relays.get(id) !== relay) return;
          this.relays.delete(id);
          hub.stopHolding(null);
          hub.closeClients(`the console's new owner (node ${owner.node}) ended the relay: ${reason}`);
        },
      },
    );
  }
}
