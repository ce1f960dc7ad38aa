/**
 * The registry's persistence seam: where consoles' sticky TCP ports are recorded.
 * The embedded default is SQLite (`src/storage/console-store.ts`); the domain only
 * sees this interface, so another engine is a new implementation, not a change here.
 *
 * Implementations must keep `tcpPort` unique across records and throw errors with
 * stable `VSPC_*` codes (see docs/errors.md).
 */
import type { ConsoleKind } from './identity.js';

/** An inclusive range of TCP ports. */
export interface PortRange {
  start: number;
  end: number;
}

/** One console's stored record. */
export interface ConsoleRecord {
  id: number;
  kind: ConsoleKind;
  /** Stable key within the kind (ESXi: VC UUID, 32 lowercase hex digits). */
  key: string;
  /** Which serial port of the machine; '' when there is only one. */
  label: string;
  /** Display name as last reported; null until known. */
  name: string | null;
  /** The sticky client TCP port. May lie outside the configured range (from an older range). */
  tcpPort: number;
  /** ms since the epoch. */
  firstSeen: number;
  /** ms since the epoch. */
  lastSeen: number;
}

export interface ConsoleRepository {
  /** Every record, ordered by TCP port. */
  list(): ConsoleRecord[];
  getById(id: number): ConsoleRecord | undefined;
  /**
   * Sticky registration: the existing record for (kind, key, label), with last_seen
   * (and the name, when not null) refreshed; or a new one on the lowest free port.
   * Throws `VSPC_PORT_RANGE_EXHAUSTED`, `VSPC_ARG_INVALID`.
   */
  register(kind: ConsoleKind, key: string, label: string, name: string | null, now?: number): { record: ConsoleRecord; created: boolean };
  /** Throws `VSPC_NOT_FOUND`. */
  rename(id: number, name: string): void;
  /** Sets last_seen (ms since the epoch); a record forgotten meanwhile is ignored. */
  touch(id: number, now?: number): void;
  /** Deletes the record and frees its port. True if there was one. */
  forget(id: number): boolean;
  /** Throws `VSPC_PORT_INVALID`, `VSPC_NOT_FOUND`, `VSPC_PORT_IN_USE`. */
  setPort(id: number, tcpPort: number): ConsoleRecord;
  /**
   * Moves a record to the lowest free port, never again handing out the one it leaves
   * (another program holds it) while this process runs. Throws `VSPC_NOT_FOUND`,
   * `VSPC_PORT_RANGE_EXHAUSTED`.
   */
  relocate(id: number): ConsoleRecord;
  /**
   * The sticky TCP port of an access method other than telnet (`raw`, ...) for a
   * console: allocated from the same range and namespace on first use. Throws
   * `VSPC_NOT_FOUND`, `VSPC_PORT_RANGE_EXHAUSTED`.
   */
  accessPort(id: number, method: string): number;
  /** Every access port of a console, by method. */
  accessPorts(id: number): Record<string, number>;
  /**
   * Deletes records unseen for `maxAgeMs` — or, when never used, for `unusedMaxAgeMs`
   * — for which `keep` is false; returns them, each with the rule that expired it.
   * Infinity: no age limit of that kind.
   */
  expire(maxAgeMs: number, keep: (r: ConsoleRecord) => boolean, now?: number, unusedMaxAgeMs?: number): ExpiredRecord[];
  /**
   * The console had a client attached (at most once per record matters): from
   * now on only `maxAgeMs` expires it. New records start unused; records from before
   * this was recorded count as used.
   */
  markUsed(id: number): void;
  /**
   * Present when the repository is shared by several vspc nodes (PostgreSQL): which
   * node owns which console. Absent for the embedded single-node store, where this
   * process owns every console.
   */
  readonly ownership?: ConsoleOwnership;
}

/**
 * Cluster ownership of consoles: every console is owned by at most one live node, the
 * one that holds its source connection. The implementation uses the database's own
 * mechanism (PostgreSQL session-level advisory locks), so a node that dies or loses its
 * database session loses its consoles without any failure detector of vspc's.
 */
export interface ConsoleOwnership {
  /** This node's id (`--node-id`). */
  readonly nodeId: string;
  /**
   * Takes ownership of a console for this node, or says which node has it (null when
   * the database cannot tell: the owner's session is ending). Idempotent for a console
   * this node already owns. Throws `VSPC_DB_UNAVAILABLE`.
   */
  claim(id: number): { owned: true } | { owned: false; owner: string | null };
  /**
   * Gives up a console this node owns; a no-op for others. `wait`: returns once the
   * database has let go (a vMotion handover: the destination's node claims it next);
   * otherwise not waited for.
   */
  release(id: number, wait?: boolean): void;
  /** Every record in the cluster with its owning node (null: nobody's right now), ordered by port. */
  clusterList(): Array<ConsoleRecord & { owner: string | null }>;
  /**
   * `listener` runs (in the event loop) when this node lost every console it owned:
   * its database session ended or stopped answering. The caller must stop serving them.
   */
  onLost(listener: (reason: string) => void): void;
  /** `listener` runs (in the event loop) when the session is back after a loss; the node owns nothing until it claims again. */
  onRegained(listener: () => void): void;
  /** False between a loss of the session and its return: claims would fail (or block until they time out). */
  readonly available: boolean;
  /**
   * Of these console ids, those no live node owns right now (one database round trip
   * for the whole list): the ones worth a `claim`. Throws
   * `VSPC_DB_UNAVAILABLE`.
   */
  unowned(ids: readonly number[]): number[];
  /**
   * The cluster's nodes: every node with a live database session, and every node that
   * advertised an internal link (a `nodes` row) even if gone since, ordered by id.
   * Throws `VSPC_DB_UNAVAILABLE`.
   */
  nodes(): ClusterNode[];
}

/** One node of a cluster as the database sees it (`vspc-admin status`). */
export interface ClusterNode {
  /** `--node-id`. */
  node: string;
  /** It holds a database session now (it owns its consoles and may claim more). */
  live: boolean;
  /** Its internal link (`--cluster-listen`), `host:port`; null: it advertised none. */
  link: string | null;
  /** When it last started with a link, and its last heartbeat (ms since the epoch); null without a `nodes` row. */
  startedAt: number | null;
  heartbeatAt: number | null;
}

/**
 * An expired record and why: `unseen` (past `maxAgeMs`, used or not) or `unused`
 * (no client ever attached, past the shorter `unusedMaxAgeMs`).
 */
export type ExpiredRecord = ConsoleRecord & { reason: 'unseen' | 'unused' };
