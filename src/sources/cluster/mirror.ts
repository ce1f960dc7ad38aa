/**
 * Consoles another node of the cluster owns, seen from this one: a `MirrorHub` per
 * such console, whose source is the internal link to the owner. The SSH front door
 * and the console broker list and attach to mirrors exactly as to this node's own
 * hubs (`ClusterMirrors.consoles()` gives both).
 *
 * Each client attached to a mirror gets its own stream to the owner, where it is an
 * ordinary client of the owner's hub under the lock it asked for: lock modes are
 * decided where every holder is known, on the owner. The mirror's own lock table
 * only pre-checks among this node's clients (a conflict there is refused at once);
 * a refusal by the owner closes the client with the owner's reason. Output comes
 * from the owner per client (its scrollback replay included), input goes to the
 * owner within the stream's credit (the client is paused while the owner's window
 * is full).
 */
import { ConsoleHub, type LineSettingsResult } from '../../domain/console-hub.js';
import type { ConsoleClient, ConsoleSource } from '../../domain/seams.js';
import type { ClientAuth, LockDecision, LockRequest } from '../../domain/locks.js';
import type { ClusterLinks, NodeAddress, RemoteAttachment } from '../../domain/cluster-link.js';
import type { ConsoleRecord } from '../../domain/repository.js';
import type { Logger } from '../../domain/logger.js';
import type { SerialLineSettings } from '../../domain/serial-line.js';

/** A remote console as the database tells it: its record and owning node. */

/** The console's owner advertised no internal link (it runs without --cluster-listen). */
export interface NoLink {
  readonly node: string;
  readonly noLink: true;
}
export type RemoteRecord = ConsoleRecord & { owner: string };

export interface ClusterMirrorsOptions {
  nodeId: string;
  /** The cluster's consoles with their owners (one database round trip). */
  clusterList(): Array<ConsoleRecord & { owner: string | null }>;
  /** Where the node owning a console now listens; `noLink`: its owner advertised none; null: nobody owns it. */
  ownerOf(consoleId: number): NodeAddress | NoLink | null;
  links: ClusterLinks;
  /** After a failed lookup, the database is taken as unavailable this long (default 5000 ms). */
  retryAfterMs?: number;
}

/** The mirror's stand-in source: the owner, reached over the link. */
class LinkSource implements ConsoleSource {
  readonly kind = 'cluster';
  constructor(readonly peer: string) {}
  write(): boolean {
    return true;
  }
  onDrain(): void {}
  close(): void {}
}

export class MirrorHub extends ConsoleHub {
  private readonly remote = new Map<ConsoleClient, RemoteAttachment>();
  /** The lock mode the owner granted each client (ACCEPT), which is what counts there. */
  private readonly granted = new Map<ConsoleClient, string>();
  owner: string;

  constructor(
    record: RemoteRecord,
    private readonly mirrors: ClusterMirrors,
    private readonly links: ClusterLinks,
    private readonly log: Logger,
  ) {
    // No scrollback here: the owner replays its own to each client.
    super({ id: record.id, kind: record.kind, key: record.key, label: record.label, name: record.name, tcpPort: record.tcpPort }, undefined, 0, null);
    this.owner = record.owner;
    this.attachSource(new LinkSource(`node ${record.owner}`));
  }

  /** Where the console is: this node shows the owner's consoles as `node NAME`. */
  override get displayState(): string {
    return 'connected';
  }

  override addClient(
    client: ConsoleClient,
    options: { request?: LockRequest; force?: boolean; user?: string; auth?: ClientAuth; replay?: boolean; tls?: boolean } = {},
  ): LockDecision {
    const decision = super.addClient(client, { ...options, replay: false });
    if (!decision.granted) return decision;
    const owner = this.mirrors.ownerAddress(this.identity.id);
    if (!owner || 'noLink' in owner) {
      // Answered after the caller saw the grant, as a displaced client would be.
      const why = owner
        ? `console ${this.displayName} is served by node ${owner.node}, which has no internal link (start it with --cluster-listen and --cluster-secret-file) (VSPC_LINK_UNAVAILABLE)`
        : `console ${this.displayName} is not owned by a reachable node right now (VSPC_LINK_UNAVAILABLE)`;
      queueMicrotask(() => this.refused(client, why));
      return decision;
    }
    this.owner = owner.node;
    const attachment = this.links.attach(
      owner,
      {
        consoleId: this.identity.id,
        tcpPort: this.identity.tcpPort,
        request: options.request ?? this.defaultLockMode,
        force: options.force ?? false,
        replay: options.replay ?? true,
        peer: client.peer,
        method: client.method ?? 'telnet',
        ...(options.user ? { user: options.user } : {}),
        ...(options.auth ? { auth: options.auth } : {}),
      },
      {
        accepted: (mode) => {
          this.granted.set(client, mode);
          this.log.debug('remote attach accepted', { owner: owner.node, mode, clientId: client.id });
        },
        data: (data) => client.deliver(data),
        notice: (text) => client.notice(text),
        breakFromSource: () => client.breakFromSource?.(),
        drain: () => client.resumeInput(),
        closed: (reason) => this.refused(client, reason),
      },
    );
    this.remote.set(client, attachment);
    return decision;
  }

  override fromClient(client: ConsoleClient, data: Buffer): void {
    if (this.modeOf(client) === 'readonly') {
      super.fromClient(client, data); // says "read-only" once, discards
      return;
    }
    const a = this.remote.get(client);
    if (!a) return;
    this.bytesToVm += data.length;
    if (!a.write(data)) client.pauseInput();
  }

  /**
   * On the asking client's own stream (the owner checks that client's lock there);
   * without one (RFC 2217 via a com-port), on the stream of a client the owner granted
   * more than read-only.
   */
  override sendBreak(from?: ConsoleClient): boolean {
    // Passed on to the owner, whose console decides (true: passed on, not known to be sent).
    if (from) {
      const a = this.remote.get(from);
      a?.sendBreak();
      return a !== undefined;
    }
    for (const [c, a] of this.remote) {
      const mode = this.granted.get(c);
      if (mode !== undefined && mode !== 'readonly') {
        a.sendBreak();
        return true;
      }
    }
    return false;
  }

  override async setLineSettings(client: ConsoleClient, _change: SerialLineSettings): Promise<LineSettingsResult> {
    void client;
    return { settings: { ...(this.lineSettings ?? {}) }, applied: false, refused: `line settings are changed on the owning node (${this.owner})` };
  }

  override removeClient(client: ConsoleClient, reason = 'detached'): void {
    const a = this.remote.get(client);
    this.remote.delete(client);
    this.granted.delete(client);
    a?.close(reason);
    super.removeClient(client, reason);
  }

  override closeClients(reason: string): void {
    for (const a of this.remote.values()) a.close(reason);
    this.remote.clear();
    this.granted.clear();
    super.closeClients(reason);
  }

  /** The owner refused, detached or displaced the client, or the link broke. */
  private refused(client: ConsoleClient, reason: string): void {
    this.remote.delete(client);
    this.granted.delete(client);
    if (!this.clients.has(client)) return;
    super.removeClient(client, reason);
    client.close(reason);
  }
}

/**
 * The console list every access method of this node offers in a cluster: its own
 * hubs and a mirror of every console another live node owns. Mirrors are made when
 * listed and kept while they have clients (a list without a console drops its idle
 * mirror).
 */
export class ClusterMirrors {
  private readonly byId = new Map<number, MirrorHub>();
  /**
   * The cluster list, reused until the end of the current event-loop turn: an SSH menu
   * or a broker request that asks several times costs one query, and a console
   * registered on another node a moment ago is found by the next request.
   */
  private cache: Array<ConsoleRecord & { owner: string | null }> | null = null;
  /** The last list the database gave: shown while it is unavailable (attaches are refused then). */
  private lastGood: Array<ConsoleRecord & { owner: string | null }> = [];
  /** Until then the database is taken as unavailable: no lookup blocks the event loop. */
  private dbDownUntil = 0;

  constructor(
    private readonly log: Logger,
    private readonly opts: ClusterMirrorsOptions,
  ) {}

  /** Mirrors in use or listed lately (tests). */
  get size(): number {
    return this.byId.size;
  }

  /**
   * Every console another node owns, as mirrors. A database that does not answer gives
   * none (this node's own consoles still work).
   */
  remoteConsoles(): MirrorHub[] {
    let list = this.cache;
    if (!list) {
      if (!this.databaseAvailable) {
        list = this.lastGood;
      } else {
        try {
          list = this.opts.clusterList();
          this.lastGood = list;
        } catch (err) {
          this.markUnavailable((err as Error).message);
          list = this.lastGood;
        }
      }
      this.cache = list;
      setImmediate(() => (this.cache = null));
    }
    const seen = new Set<number>();
    const out: MirrorHub[] = [];
    for (const r of list) {
      if (r.owner === null || r.owner === this.opts.nodeId) continue;
      seen.add(r.id);
      let m = this.byId.get(r.id);
      if (!m || m.identity.tcpPort !== r.tcpPort || m.identity.key !== r.key) {
        if (m && m.clients.size > 0) {
          out.push(m);
          continue;
        }
        m = new MirrorHub(r as RemoteRecord, this, this.opts.links, this.log.child({ console: r.id, owner: r.owner }));
        this.byId.set(r.id, m);
      }
      m.identity.name = r.name;
      m.owner = r.owner;
      out.push(m);
    }
    for (const [id, m] of this.byId) if (!seen.has(id) && m.clients.size === 0) this.byId.delete(id);
    return out;
  }

  /**
   * The owner's link address now (read from the database at each attach, not cached).
   * Null at once while the database is marked unavailable: the attach is refused with
   * VSPC_LINK_UNAVAILABLE instead of each one blocking the event loop on a stalled
   * database (this node's own consoles keep flowing).
   */
  ownerAddress(consoleId: number): NodeAddress | NoLink | null {
    if (!this.databaseAvailable) return null;
    try {
      const a = this.opts.ownerOf(consoleId);
      return a && a.node !== this.opts.nodeId ? a : null;
    } catch (err) {
      this.markUnavailable((err as Error).message);
      return null;
    }
  }

  get databaseAvailable(): boolean {
    return Date.now() >= this.dbDownUntil;
  }

  /**
   * Said with "no such console" while the database does not answer: other nodes'
   * consoles then come from the last list it gave, where one registered since is
   * missing. Null while it answers.
   */
  get listCaveat(): string | null {
    return this.databaseAvailable ? null : 'the cluster database is not answering, so consoles of other nodes may be missing: try again in a few seconds';
  }

  /**
   * A lookup failed or the store lost its session: for `retryAfterMs` no lookup is
   * tried (the cluster list is the last one known; remote attaches are refused).
   */
  markUnavailable(reason: string): void {
    const wasUp = this.databaseAvailable;
    this.dbDownUntil = Date.now() + (this.opts.retryAfterMs ?? 5000);
    if (wasUp) {
      this.log.warn('cluster lookups unavailable; remote consoles refused until the database answers', { reason, errorCode: 'VSPC_LINK_UNAVAILABLE', retryAfterMs: this.opts.retryAfterMs ?? 5000 });
    }
  }

  /** Closes every mirror's clients (node stopping). */
  close(reason: string): void {
    for (const m of this.byId.values()) m.closeClients(reason);
    this.byId.clear();
  }
}
