/**
 * What the PostgreSQL store's main-thread side (`pg-store.ts`) and its worker
 * (`worker.ts`) say to each other. Requests go over a MessagePort; the worker answers
 * on the same port and wakes the blocked main thread through a shared Int32Array
 * (see `sync-call.ts`). Events the main thread did not ask for (the connection was
 * lost) go over the worker's parentPort and arrive in the main event loop.
 */
import type { ConsoleRecord, PortRange } from '../../domain/repository.js';

/** Advisory lock key1 (int4) for console ownership: key2 is the console id. */
export const OWNER_LOCK_CLASS = 0x7653; // 'vS'
/** Advisory lock key1 for a node id (key2 = hashtext(node id)): one live node per id. */
export const NODE_LOCK_CLASS = 0x7654;
/** Advisory transaction lock (key1, 0) serialising port allocation across nodes. */
export const ALLOC_LOCK_CLASS = 0x7655;
/** Advisory transaction lock (key1, 0) serialising schema migrations across nodes. */
export const MIGRATE_LOCK_CLASS = 0x7656;
/** application_name of a node's session: `vspc:` + node id (pg_stat_activity shows it cluster-wide). */
export const APPLICATION_PREFIX = 'vspc:';

export interface OpenArgs {
  url: string;
  nodeId: string;
  /** The worker pings the database this often; a failed or late ping gives up ownership. */
  pingIntervalMs: number;
  /** ... and waits this long for an answer (also the connect timeout). */
  pingTimeoutMs: number;
  /** The node's port range: its allocator's mark row is made when the session opens (worker.ts ensureMark). */
  range?: { start: number; end: number };
}

/**
 * How long PostgreSQL lets a node's session idle before ending it (ms; the session's
 * `idle_session_timeout`): longer than a cut-off node takes to give its consoles up
 * (at most one ping interval plus one ping deadline), with 5 s to spare.
 */
export function idleSessionTimeoutMs(a: Pick<OpenArgs, 'pingIntervalMs' | 'pingTimeoutMs'>): number {
  return a.pingIntervalMs + a.pingTimeoutMs + 5000;
}

export type Request =
  | { op: 'open'; args: OpenArgs }
  | { op: 'close' }
  | { op: 'register'; kind: string; key: string; label: string; name: string | null; now: number; range: PortRange; reserved: number[]; unused: boolean }
  | { op: 'getById'; id: number }
  | { op: 'list' }
  | { op: 'clusterList' }
  | { op: 'rename'; id: number; name: string }
  | { op: 'touch'; id: number; now: number }
  | { op: 'markUsed'; id: number }
  | { op: 'forget'; id: number }
  | { op: 'setPort'; id: number; port: number }
  | { op: 'relocate'; id: number; range: PortRange; reserved: number[] }
  | { op: 'accessPort'; id: number; method: string; range: PortRange; reserved: number[] }
  | { op: 'accessPorts'; id: number }
  | { op: 'expireCandidates'; cutoff: number; unusedCutoff: number }
  | { op: 'expireDelete'; ids: number[]; cutoff: number; unusedCutoff: number }
  | { op: 'claim'; id: number }
  | { op: 'release'; id: number }
  | { op: 'unowned'; ids: number[] }
  | { op: 'owners' }
  | { op: 'advertise'; host: string; port: number; now: number }
  | { op: 'heartbeat'; now: number }
  | { op: 'ownerLink'; id: number }
  | { op: 'nodeLink'; node: string }
  | { op: 'nodes' }
  | { op: 'vmotionPublish'; token: string; seqHex: string; consoleId: number; now: number; deadline: number }
  | { op: 'vmotionWithdraw'; token: string }
  | { op: 'vmotionFind'; payload: string; now: number }
  | { op: 'schemaVersion' };

/** A request on the wire: `reply: false` for writes the main thread does not wait for. */
export type Envelope = Request & { seq: number; reply: boolean };

/** An error as it crosses the thread boundary; rebuilt as a StorageError. */
export interface WireError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export type Answer = { seq: number; ok: true; value: unknown } | { seq: number; ok: false; error: WireError };

/** Unasked events on the worker's parentPort. */
export type WorkerEvent =
  | { event: 'lost'; reason: string }
  | { event: 'regained' }
  | { event: 'write-failed'; op: string; error: WireError };

export type ClusterRecord = ConsoleRecord & { owner: string | null };

/** Where a node's internal link listens (the `nodes` table). */
export interface NodeLink {
  node: string;
  host: string;
  port: number;
}

/** A pending vMotion row whose sequence is a prefix of a VMOTION-PEER payload (hex: bytes cross the thread boundary as text). */
export interface VmotionRow {
  token: string;
  seqLength: number;
  consoleId: number;
  sourceNode: string;
  deadline: number;
}
