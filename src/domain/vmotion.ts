import { RandomPool } from '../util/random-pool.js';
import type { Logger } from './logger.js';
import type { ConsoleSource } from './seams.js';
import type { ConsoleHub } from './console-hub.js';

/**
 * vMotion handoff. One Migration per VMOTION-BEGIN, keyed by the exact bytes
 * seq+secret (never by UUID: all serial ports of a VM share it).
 *
 *                      BEGIN (source attached)
 *   (none) ─────────────────────────────────────────▶ AwaitingPeer ── GOAHEAD(seq,secret) sent,
 *      ▲   BEGIN while shutting down / unattached:         │          client input held
 *      │   NOTNOW(seq)                                     │ PEER(seq+secret) on another connection
 *      │                                                   ▼
 *      │                                                 PeerOk ──── PEER-OK(seq) sent
 *      │          peer connection dies ◀──────────────────┘ │
 *      │          (back to AwaitingPeer)                     │ COMPLETE(seq) from the peer
 *      │                                                     ▼
 *      ├──── Completed: peer becomes the VM's source, held input delivered to it first,
 *      │                old source retired
 *      ├──── Aborted (ABORT from the source): held input delivered to the source
 *      ├──── Replaced (a second BEGIN from the same source)
 *      └──── TimedOut (no PEER/COMPLETE/ABORT in time): held input to the source if it
 *                     is still attached, else discarded and counted
 *
 * A source that dies mid-migration does not end it: the destination may still
 * arrive and complete (its data was paused anyway); the timeout bounds the wait.
 */
export type MigrationState = 'awaiting-peer' | 'peer-ok';
export type MigrationOutcome = 'completed' | 'aborted' | 'timed-out' | 'replaced' | 'refused';

/** What the coordinator needs from a VM connection; EsxiSession implements it. */
export interface VmotionEndpoint extends ConsoleSource {
  readonly id: number;
  /** The remote IP address (per-address budgets of cluster look-ups). */
  readonly address: string;
  readonly log: Logger;
  /** The hub this connection feeds, when it is a VM's attached source. */
  readonly hub: ConsoleHub | null;
  sendGoahead(seq: Buffer, secret: Buffer): void;
  sendNotNow(seq: Buffer): void;
  sendPeerOk(seq: Buffer): void;
  /** Presented a valid secret: waits for COMPLETE (no identify timeout, no registration). */
  markVmotionPeer(): void;
  /** Become `hub`'s source; returns the source it replaced. */
  adoptHub(hub: ConsoleHub): ConsoleSource | null;
  /** Stop being the hub's source without closing (late bytes still reach the hub). */
  retireFromHub(): void;
}

interface Migration {
  readonly key: string;
  readonly seq: Buffer;
  readonly hub: ConsoleHub;
  source: VmotionEndpoint;
  /** False once the source connection has closed. */
  sourceAlive: boolean;
  peer: VmotionEndpoint | null;
  state: MigrationState;
  readonly startedAt: number;
  timer: NodeJS.Timeout;
  /** BEGINs from this source that replaced a pending one in a row (MAX_REPLACED_BEGINS). */
  readonly replaced: number;
}

/**
 * Most VMOTION-BEGINs in a row that may replace a pending one on one connection. ESXi
 * sends a second BEGIN when it retries a vMotion; eight in a row is a flood.
 */
export const MAX_REPLACED_BEGINS = 8;

/** A history entry as kept (the ISO time is made when the history is read). */
interface StoredRecord extends Omit<VmotionRecord, 'startedAt'> {
  startedAtMs: number;
}

export interface VmotionRecord {
  startedAt: string;
  durationMs: number;
  outcome: MigrationOutcome;
  heldBytes: number;
  discardedBytes: number;
}

export interface VmotionCoordinatorOptions {
  timeoutMs: number;
  /**
   * Secret length in bytes (default 8, read at each BEGIN). VMware's "vMotion
   * Notification" asks for a cryptographically random secret; its current reference
   * concentrator sends 8 bytes, an older build 4 (test/fixtures/esxi-capture-vmotion.txt).
   */
  secretBytes?: number;
  /**
   * Where secrets come from (default: a pool of node:crypto random bytes, see
   * util/random-pool.ts); tests pass worst-case bytes (0xFF, IAC SE).
   */
  random?: (size: number) => Buffer;
}

export type VmotionCounters = Record<MigrationOutcome | 'begun' | 'bad-peer', number>;

/** A vMotion begun on another node, matched by a VMOTION-PEER on this one. */
export interface RemoteMigration {
  readonly seq: Buffer;
  /** Sequence + secret, as the peer presented them. */
  readonly token: Buffer;
  readonly consoleId: number;
  readonly sourceNode: string;
}

/**
 * Cross-node vMotion (a PostgreSQL cluster): what the coordinator needs from the
 * cluster. Implemented by src/access/cluster/vmotion-handover.ts; absent on one node.
 */
export interface ClusterVmotion {
  /** GOAHEAD is being sent: record the migration cluster-wide (sequence, secret, console, deadline). */
  publish(seq: Buffer, secret: Buffer, consoleId: number, deadline: number): void;
  /** The migration ended here (any outcome): its row goes. */
  withdraw(token: Buffer): void;
  /**
   * A VMOTION-PEER with no local match: the pending migration of another node whose
   * sequence and secret it carries (the secret compared in constant time), or null.
   * `from`: the peer's address; each address has a budget of look-ups (a flood of forged
   * PEERs must not become a flood of database queries).
   */
  find(token: Buffer, from: string): RemoteMigration | null;
  /**
   * COMPLETE from the destination of a remote migration: take the console over from
   * the source's node (held input first) and make `conn` its source. Asynchronous;
   * failures are the implementation's to log and to close `conn` for.
   */
  complete(conn: VmotionEndpoint, m: RemoteMigration): void;
}

export class VmotionCoordinator {
  private readonly byKey = new Map<string, Migration>();
  private readonly bySource = new Map<VmotionEndpoint, Migration>();
  private readonly byPeer = new Map<VmotionEndpoint, Migration>();
  /** Destinations here of migrations begun on another node (cluster). */
  private readonly remotePeers = new Map<VmotionEndpoint, RemoteMigration>();
  /** Set by the server in a cluster with the internal link. */
  cluster: ClusterVmotion | null = null;
  private readonly history = new WeakMap<ConsoleHub, StoredRecord[]>();
  private readonly pool = new RandomPool();
  /** Why every BEGIN is answered NOTNOW right now; null while vMotions are accepted. */
  private refusing: string | null = null;
  readonly counters: VmotionCounters = {
    begun: 0,
    completed: 0,
    aborted: 0,
    'timed-out': 0,
    replaced: 0,
    refused: 0,
    'bad-peer': 0,
  };

  constructor(
    private readonly options: VmotionCoordinatorOptions,
    private readonly logger: Logger,
  ) {}

  /** Migrations not yet finished (for tests and metrics). */
  get pending(): number {
    return this.byKey.size;
  }

  historyOf(hub: ConsoleHub): readonly VmotionRecord[] {
    return (this.history.get(hub) ?? []).map(({ startedAtMs, ...r }) => ({ startedAt: new Date(startedAtMs).toISOString(), ...r }));
  }

  /**
   * From now on every BEGIN is refused with NOTNOW, logged with `reason`: the
   * concentrator is going away (the default), or vMotions are paused on purpose (a
   * replay of a captured concentrator that refused one). Pending migrations go on.
   */
  refuseNew(reason = 'concentrator is shutting down'): void {
    this.refusing = reason;
  }

  /** Accept BEGINs again after `refuseNew` (not after a shutdown began: the server never calls it then). */
  acceptNew(): void {
    this.refusing = null;
  }

  begin(source: VmotionEndpoint, seq: Buffer): void {
    const hub = source.hub;
    const refuse = this.refusing ?? (!hub ? 'connection is not an identified VM serial port' : null);
    if (refuse || !hub) {
      this.counters.refused++;
      source.log.warn('vMotion refused (NOTNOW)', () => ({ reason: refuse, seq: seq.toString('hex') }));
      source.sendNotNow(seq);
      return;
    }
    const stale = this.bySource.get(source);
    const replaced = stale ? stale.replaced + 1 : 0;
    if (replaced > MAX_REPLACED_BEGINS) {
      // Each BEGIN costs a secret, a timer and (in a cluster) a database write: a source
      // that keeps replacing its vMotion is not an ESXi host retrying one.
      this.counters.refused++;
      source.log.warn('security: too many VMOTION-BEGINs replacing one another on one connection; closed', {
        security: true,
        limit: MAX_REPLACED_BEGINS,
        errorCode: 'VSPC_VMOTION_BEGIN_FLOOD',
      });
      this.end(stale!, 'replaced', { releaseTo: undefined });
      source.close('too many VMOTION-BEGINs');
      return;
    }
    if (stale) {
      source.log.warn('second VMOTION-BEGIN replaces the pending vMotion', () => ({
        staleSeq: stale.seq.toString('hex'),
        seq: seq.toString('hex'),
      }));
      // Keep holding: the held input carries over to the new migration.
      this.end(stale, 'replaced', { releaseTo: undefined });
    }
    const size = this.options.secretBytes ?? 8;
    const secret = this.options.random ? this.options.random(size) : this.pool.take(size);
    const key = Buffer.concat([seq, secret]).toString('latin1');
    const m: Migration = {
      key,
      seq: Buffer.from(seq),
      hub,
      source,
      sourceAlive: true,
      peer: null,
      state: 'awaiting-peer',
      startedAt: Date.now(),
      timer: this.armTimeout(key),
      replaced,
    };
    this.byKey.set(key, m);
    this.bySource.set(source, m);
    this.counters.begun++;
    // Hold before answering: nothing typed after GOAHEAD may reach the paused VM.
    hub.startHolding();
    if (this.cluster) {
      try {
        this.cluster.publish(m.seq, secret, hub.identity.id, m.startedAt + this.options.timeoutMs);
      } catch (err) {
        // The destination may still land on this node; elsewhere it will find no row.
        source.log.warn('vMotion not published to the cluster; a destination on another node will be refused', () => ({
          message: (err as Error).message,
        }));
      }
    }
    source.sendGoahead(seq, secret);
    source.log.info('vMotion begin: GOAHEAD sent', () => ({ seq: seq.toString('hex') }));
  }

  peer(conn: VmotionEndpoint, seqAndSecret: Buffer): boolean {
    const m = this.byKey.get(seqAndSecret.toString('latin1'));
    if (!m && this.cluster && !conn.hub && !this.remotePeers.has(conn)) {
      let remote: RemoteMigration | null = null;
      try {
        remote = this.cluster.find(seqAndSecret, conn.address);
      } catch (err) {
        conn.log.warn('cluster vMotion lookup failed', () => ({ message: (err as Error).message }));
      }
      if (remote) {
        this.remotePeers.set(conn, remote);
        // The source's node keeps the deadline of the migration; this node bounds the wait of its peer the same way.
        setTimeout(() => {
          if (this.remotePeers.get(conn) !== remote) return;
          this.remotePeers.delete(conn);
          conn.log.warn('vMotion peer of a migration begun on another node timed out before COMPLETE', { sourceNode: remote.sourceNode });
          conn.close('vMotion timed out');
        }, this.options.timeoutMs).unref();
        conn.markVmotionPeer();
        conn.sendPeerOk(remote.seq);
        conn.log.info('vMotion peer accepted for a migration begun on another node: PEER-OK sent', () => ({
          sourceNode: remote.sourceNode,
          seq: remote.seq.toString('hex'),
        }));
        return true;
      }
    }
    if (!m || m.peer || conn === m.source || conn.hub) {
      this.counters['bad-peer']++;
      conn.log.warn('security: VMOTION-PEER with an unknown or already used sequence/secret; refused and closed', {
        security: true,
        reason: !m ? 'no pending vMotion matches' : m.peer ? 'vMotion already has a peer' : 'peer is not a new connection',
        bytes: seqAndSecret.length,
      });
      conn.close('invalid vMotion peer');
      return false;
    }
    m.peer = conn;
    m.state = 'peer-ok';
    this.byPeer.set(conn, m);
    conn.markVmotionPeer();
    conn.sendPeerOk(m.seq);
    conn.log.info('vMotion peer accepted: PEER-OK sent', () => ({ vm: m.hub.displayName, seq: m.seq.toString('hex') }));
    return true;
  }

  complete(conn: VmotionEndpoint, seq: Buffer): void {
    const remote = this.remotePeers.get(conn);
    if (remote && remote.seq.equals(seq) && this.cluster) {
      this.remotePeers.delete(conn);
      this.cluster.complete(conn, remote);
      return;
    }
    const m = this.byPeer.get(conn);
    if (!m || !m.seq.equals(seq)) {
      conn.log.warn('VMOTION-COMPLETE ignored: not from the peer of a pending vMotion with that sequence', () => ({
        seq: seq.toString('hex'),
      }));
      return;
    }
    const old = m.source;
    const replaced = conn.adoptHub(m.hub);
    if (replaced && replaced !== old) replaced.close('superseded by vMotion');
    if (m.sourceAlive) old.retireFromHub();
    this.end(m, 'completed', { releaseTo: conn });
    if (m.sourceAlive) old.close('vMotion complete: VM moved to another connection');
  }

  abort(conn: VmotionEndpoint): void {
    const m = this.bySource.get(conn);
    if (!m) {
      conn.log.warn('VMOTION-ABORT ignored: no pending vMotion from this connection');
      return;
    }
    this.end(m, 'aborted', { releaseTo: conn });
  }

  /**
   * Cluster: the destination's node asks for a migration begun here (sequence +
   * secret, exactly). When it is pending without a local peer, it ends `completed`:
   * the old source retires (closed), and the held input is returned for the new owner,
   * while the hub keeps holding (input typed until the relay to the new owner is up).
   * Null when no such migration is pending.
   */
  handOver(token: Buffer): { hub: ConsoleHub; held: Buffer[] } | null {
    const m = this.byKey.get(token.toString('latin1'));
    if (!m || m.peer) return null;
    const held: Buffer[] = [];
    const collector: ConsoleSource = {
      kind: 'cluster',
      peer: 'cluster handover',
      write: (d) => (held.push(Buffer.from(d)), true),
      onDrain: () => undefined,
      close: () => undefined,
    };
    const old = m.source;
    if (m.sourceAlive) old.retireFromHub();
    this.end(m, 'completed', { releaseTo: collector });
    m.hub.startHolding();
    if (m.sourceAlive) old.close('vMotion complete: VM moved to another vspc node');
    return { hub: m.hub, held };
  }

  /** A connection closed: update any migration it takes part in. */
  closed(conn: VmotionEndpoint): void {
    this.remotePeers.delete(conn);
    const asSource = this.bySource.get(conn);
    if (asSource) {
      asSource.sourceAlive = false;
      conn.log.warn('vMotion source closed mid-migration; waiting for the destination until the timeout', () => ({
        vm: asSource.hub.displayName,
      }));
    }
    const asPeer = this.byPeer.get(conn);
    if (asPeer) {
      this.byPeer.delete(conn);
      asPeer.peer = null;
      asPeer.state = 'awaiting-peer';
      conn.log.warn('vMotion peer closed before COMPLETE; waiting for another peer until the timeout', () => ({
        vm: asPeer.hub.displayName,
      }));
    }
  }

  /** Drop all pending migrations (shutdown). */
  clear(): void {
    for (const m of [...this.byKey.values()]) this.end(m, 'timed-out', { releaseTo: m.sourceAlive ? m.source : null });
  }

  private armTimeout(key: string): NodeJS.Timeout {
    const t = setTimeout(() => {
      const m = this.byKey.get(key);
      if (!m) return;
      m.source.log.warn('vMotion timed out', { vm: m.hub.displayName, state: m.state, timeoutMs: this.options.timeoutMs });
      if (m.peer) m.peer.close('vMotion timed out');
      this.end(m, 'timed-out', { releaseTo: m.sourceAlive ? m.source : null });
    }, this.options.timeoutMs);
    t.unref();
    return t;
  }

  /**
   * Forget a migration. `releaseTo` undefined keeps the hub holding (replaced by a
   * new BEGIN); null discards held input; an endpoint receives it.
   */
  private end(m: Migration, outcome: MigrationOutcome, opts: { releaseTo: ConsoleSource | null | undefined }): void {
    clearTimeout(m.timer);
    this.byKey.delete(m.key);
    if (this.cluster) {
      try {
        this.cluster.withdraw(Buffer.from(m.key, 'latin1'));
      } catch {
        // The deadline makes a row left behind useless.
      }
    }
    if (this.bySource.get(m.source) === m) this.bySource.delete(m.source);
    if (m.peer && this.byPeer.get(m.peer) === m) this.byPeer.delete(m.peer);
    this.counters[outcome]++;
    const held = m.hub.heldInputBytes;
    let discarded = 0;
    if (opts.releaseTo !== undefined) {
      const r = m.hub.stopHolding(opts.releaseTo);
      discarded = r.refused + (opts.releaseTo ? 0 : held);
    }
    if (outcome === 'aborted' && m.peer) m.peer.close('vMotion aborted by the source');
    const durationMs = Date.now() - m.startedAt;
    const record: StoredRecord = { startedAtMs: m.startedAt, durationMs, outcome, heldBytes: held, discardedBytes: discarded };
    const list = this.history.get(m.hub) ?? [];
    list.push(record);
    if (list.length > 20) list.shift();
    this.history.set(m.hub, list);
    m.hub.report({ kind: 'vmotion', outcome, durationMs });
    const log = outcome === 'completed' && m.peer ? m.peer.log : m.source.log;
    log.info(`vMotion ${outcome}`, () => ({ vm: m.hub.displayName, seq: m.seq.toString('hex'), durationMs, heldBytes: held, discardedBytes: discarded }));
  }
}
