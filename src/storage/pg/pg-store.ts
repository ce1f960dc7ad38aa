/**
 * The registry's repository on PostgreSQL (`--db postgres://...`), for several vspc
 * nodes sharing one database. docs/decisions/0011-pg.md says why it looks like this.
 *
 * The repository interface is synchronous (the registry and its callers were built on
 * better-sqlite3, which is), and so is this store: each call that needs an answer is
 * sent to a worker thread that owns the node's database session (`worker.ts`), and the
 * main thread blocks on a shared Int32Array (Atomics.wait, bounded by `callTimeoutMs`)
 * until the answer is posted back, then reads it with receiveMessageOnPort. Writes
 * nobody waits for (last-seen, first use) are posted and not waited for; they run in
 * order on the same session. Answers read only the database — there is no cache that
 * another node could make stale — and ports are allocated in the database under one
 * advisory transaction lock, with the UNIQUE constraints as the guarantee, so two
 * nodes never hand out the same port.
 *
 * Ownership (`ConsoleOwnership`) is a session-level advisory lock per console id, held
 * by that same session: it ends with the session, whether the node exits, is killed or
 * loses the database.
 */
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { StorageError, type VspcErrorCode } from '../../errors.js';
import type { VmotionRow } from './protocol.js';
import type { ConsoleKind } from '../../domain/identity.js';
import type { ClusterNode, ConsoleOwnership, ConsoleRecord, ConsoleRepository, ExpiredRecord, PortRange } from '../../domain/repository.js';
import type { Answer, ClusterRecord, OpenArgs, Request, WireError, WorkerEvent } from './protocol.js';

const UUID_RE = /^[0-9a-f]{32}$/;
const MAX_KEY_LENGTH = 1024;
const MAX_PORT = 65535;

export interface PgStoreOptions {
  url: string;
  nodeId: string;
  range: PortRange;
  /** Ports new allocations skip (this node's own listeners, fixed ports of the config). */
  reserved?: Iterable<number>;
  /** Longest a call blocks the event loop waiting for the database (default 5 s). */
  callTimeoutMs?: number;
  /** Connecting and migrating at start-up (default 30 s). */
  openTimeoutMs?: number;
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** A write nobody waited for failed (logged by the caller). */
  onWriteError?: (op: string, err: StorageError) => void;
  /** The session is back after a loss (the node owns nothing until it claims again). */
  onRegained?: () => void;
}

/** Is `text` a PostgreSQL connection URL (what `--db` takes for this store)? */
export function isPostgresUrl(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text);
}

function fromWire(e: WireError): StorageError {
  return new StorageError(e.code as VspcErrorCode, e.message, e.details ?? {});
}

export class PgConsoleStore implements ConsoleRepository, ConsoleOwnership {
  readonly range: Readonly<PortRange>;
  readonly nodeId: string;
  readonly ownership: ConsoleOwnership = this;
  private readonly worker: Worker;
  private readonly port: MessagePort;
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  private nextSeq = 1;
  private readonly reserved: Set<number>;
  private readonly callTimeoutMs: number;
  private readonly lostListeners: Array<(reason: string) => void> = [];
  private readonly regainedListeners: Array<() => void> = [];
  private up = true;
  private closed = false;

  /** Starts the worker, connects, takes the node id and migrates; throws `StorageError` (`VSPC_DB_OPEN_FAILED`, `VSPC_NODE_ID_IN_USE`, `VSPC_DB_TOO_NEW`, `VSPC_DB_MIGRATION_FAILED`). */
  constructor(private readonly options: PgStoreOptions) {
    const { start, end } = options.range ?? ({} as PortRange);
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 1 || end > MAX_PORT || start > end) {
      throw new StorageError('VSPC_PORT_RANGE_INVALID', `port range must be integers with 1 <= start <= end <= ${MAX_PORT}, got ${String(start)}-${String(end)}`, {
        range: { start, end },
      });
    }
    this.range = Object.freeze({ start, end });
    this.nodeId = options.nodeId;
    this.reserved = new Set([...(options.reserved ?? [])].filter((p) => Number.isInteger(p) && p >= 1 && p <= MAX_PORT));
    this.callTimeoutMs = options.callTimeoutMs ?? 5000;
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { port: port2, flag: this.flag }, transferList: [port2] });
    // The worker's session must not keep a stopping vspc alive; close() ends it properly.
    this.worker.unref();
    this.worker.on('message', (ev: WorkerEvent) => this.onEvent(ev));
    this.worker.on('error', (err) => this.onEvent({ event: 'lost', reason: `database worker failed: ${err.message}` }));
    const args: OpenArgs = {
      url: options.url,
      nodeId: options.nodeId,
      pingIntervalMs: options.pingIntervalMs ?? 2000,
      pingTimeoutMs: options.pingTimeoutMs ?? 5000,
    };
    try {
      this.call({ op: 'open', args }, options.openTimeoutMs ?? 30_000);
    } catch (err) {
      void this.worker.terminate();
      this.closed = true;
      throw err;
    }
  }

  // ------------------------------------------------------------------ the repository

  register(kind: ConsoleKind, key: string, label: string, name: string | null, now: number = Date.now()): { record: ConsoleRecord; created: boolean } {
    if (typeof kind !== 'string' || kind.length < 1 || kind.length > 32) {
      throw new StorageError('VSPC_ARG_INVALID', `kind must be 1-32 characters, got ${JSON.stringify(kind)}`, { field: 'kind', value: kind });
    }
    if (kind === 'esxi' && (typeof key !== 'string' || !UUID_RE.test(key))) {
      throw new StorageError('VSPC_ARG_INVALID', `uuid must be 32 lowercase hex digits, got ${JSON.stringify(key)}`, { field: 'uuid', value: key });
    }
    if (typeof key !== 'string' || key.length < 1 || key.length > MAX_KEY_LENGTH) {
      throw new StorageError('VSPC_ARG_INVALID', `key must be 1-${MAX_KEY_LENGTH} characters`, { field: 'key', value: String(key).slice(0, 80) });
    }
    if (typeof label !== 'string') throw new StorageError('VSPC_ARG_INVALID', 'label must be a string', { field: 'label', value: label });
    checkTimestamp('now', now);
    return this.call({ op: 'register', kind, key, label, name, now, range: this.range, reserved: [...this.reserved], unused: kind === 'esxi' }) as {
      record: ConsoleRecord;
      created: boolean;
    };
  }

  getById(id: number): ConsoleRecord | undefined {
    return (this.call({ op: 'getById', id }) as ConsoleRecord | null) ?? undefined;
  }

  list(): ConsoleRecord[] {
    return this.call({ op: 'list' }) as ConsoleRecord[];
  }

  rename(id: number, name: string): void {
    if (typeof name !== 'string') throw new StorageError('VSPC_ARG_INVALID', 'name must be a string', { field: 'name', value: name });
    // Not waited for (a VM reports its name right after registering: a round trip per
    // registration saved); in order on the session, like touch. A record deleted
    // meanwhile (never one this node owns: expiry takes the owner lock) is reported
    // through onWriteError as VSPC_NOT_FOUND.
    this.send({ op: 'rename', id, name });
  }

  touch(id: number, now: number = Date.now()): void {
    checkTimestamp('now', now);
    this.send({ op: 'touch', id, now });
  }

  markUsed(id: number): void {
    this.send({ op: 'markUsed', id });
  }

  forget(id: number): boolean {
    return this.call({ op: 'forget', id }) as boolean;
  }

  setPort(id: number, port: number): ConsoleRecord {
    if (!Number.isInteger(port) || port < 1 || port > MAX_PORT) {
      throw new StorageError('VSPC_PORT_INVALID', `port must be an integer 1..${MAX_PORT}, got ${String(port)}`, { id, port });
    }
    return (this.call({ op: 'setPort', id, port }) as { after: ConsoleRecord }).after;
  }

  relocate(id: number): ConsoleRecord {
    const rec = this.getById(id);
    if (!rec) throw new StorageError('VSPC_NOT_FOUND', `no console record with id ${id}`, { id });
    // Held by another program on this host: not ours to hand out again while this node runs.
    this.reserved.add(rec.tcpPort);
    return (this.call({ op: 'relocate', id, range: this.range, reserved: [...this.reserved] }) as { after: ConsoleRecord }).after;
  }

  accessPort(id: number, method: string): number {
    if (typeof method !== 'string' || method.length < 1 || method.length > 32 || method === 'telnet') {
      throw new StorageError('VSPC_ARG_INVALID', `access method must be 1-32 characters and not telnet, got ${JSON.stringify(method)}`, { field: 'method', value: method });
    }
    return this.call({ op: 'accessPort', id, method, range: this.range, reserved: [...this.reserved] }) as number;
  }

  accessPorts(id: number): Record<string, number> {
    return Object.fromEntries(this.call({ op: 'accessPorts', id }) as Array<[string, number]>);
  }

  expire(maxAgeMs: number, keep: (r: ConsoleRecord) => boolean, now: number = Date.now(), unusedMaxAgeMs = Number.POSITIVE_INFINITY): ExpiredRecord[] {
    for (const [field, v] of [['maxAgeMs', maxAgeMs], ['unusedMaxAgeMs', unusedMaxAgeMs]] as const) {
      if (typeof v !== 'number' || Number.isNaN(v) || v < 0) {
        throw new StorageError('VSPC_ARG_INVALID', `${field} must be a non-negative number, got ${String(v)}`, { field, value: v });
      }
    }
    checkTimestamp('now', now);
    const cutoffOf = (age: number) => (Number.isFinite(age) ? now - age : Number.MIN_SAFE_INTEGER);
    const cutoff = cutoffOf(maxAgeMs);
    const unusedCutoff = cutoffOf(unusedMaxAgeMs);
    const candidates = (this.call({ op: 'expireCandidates', cutoff, unusedCutoff }) as Array<ConsoleRecord & { neverUsed: boolean }>).filter(
      ({ neverUsed: _n, ...r }) => !keep(r),
    );
    if (candidates.length === 0) return [];
    // The worker re-checks age and use, and skips consoles another live node owns.
    const deleted = new Set(this.call({ op: 'expireDelete', ids: candidates.map((r) => r.id), cutoff, unusedCutoff }) as number[]);
    return candidates
      .filter((r) => deleted.has(r.id))
      .map(({ neverUsed, ...r }) => ({ ...r, reason: neverUsed && r.lastSeen >= cutoff ? ('unused' as const) : ('unseen' as const) }));
  }

  // ------------------------------------------------------------------ ownership

  claim(id: number): { owned: true } | { owned: false; owner: string | null } {
    return this.call({ op: 'claim', id }) as { owned: true } | { owned: false; owner: string | null };
  }

  release(id: number, wait = false): void {
    if (this.closed) return;
    if (wait) this.call({ op: 'release', id });
    else this.send({ op: 'release', id });
  }

  nodes(): ClusterNode[] {
    return this.call({ op: 'nodes' }) as ClusterNode[];
  }

  /** Where a node's link listens (its `nodes` row); null: it advertised none. */
  nodeLink(node: string): { node: string; host: string; port: number } | null {
    return this.call({ op: 'nodeLink', node }) as { node: string; host: string; port: number } | null;
  }

  /** Records a pending vMotion cluster-wide (hex token = sequence + secret). Throws `VSPC_DB_UNAVAILABLE`. */
  vmotionPublish(token: string, seq: string, consoleId: number, deadline: number, now = Date.now()): void {
    this.call({ op: 'vmotionPublish', token, seqHex: seq, consoleId, now, deadline });
  }

  /** Deletes a pending vMotion's row (not waited for). */
  vmotionWithdraw(token: string): void {
    if (this.closed) return;
    this.send({ op: 'vmotionWithdraw', token });
  }

  /** The pending vMotion (not past its deadline) whose token (sequence + secret) is `payload` (hex): zero or one row. */
  vmotionFind(payload: string, now = Date.now(), timeoutMs = this.callTimeoutMs): VmotionRow[] {
    return this.call({ op: 'vmotionFind', payload, now }, timeoutMs) as VmotionRow[];
  }

  /** `timeoutMs`: block at most this long (default `callTimeoutMs`), then `VSPC_DB_UNAVAILABLE`. */
  clusterList(timeoutMs = this.callTimeoutMs): ClusterRecord[] {
    return this.call({ op: 'clusterList' }, timeoutMs) as ClusterRecord[];
  }

  /** Console id → owning node, for every owned console of the cluster. */
  owners(): Map<number, string> {
    return new Map(this.call({ op: 'owners' }) as Array<[number, string]>);
  }

  /** Records where this node's internal link listens (the `nodes` row, replaced at each start). */
  advertiseLink(host: string, port: number, now = Date.now()): void {
    this.call({ op: 'advertise', host, port, now });
  }

  /** This node is alive (the `nodes` row's heartbeat; not waited for). */
  heartbeat(now = Date.now()): void {
    if (this.closed) return;
    this.send({ op: 'heartbeat', now });
  }

  /**
   * The node owning a console now and where its link listens (host/port null: it
   * advertised none); null when no live node owns it. Throws `VSPC_DB_UNAVAILABLE`.
   */
  ownerLink(id: number, timeoutMs = this.callTimeoutMs): { node: string; host: string | null; port: number | null } | null {
    return this.call({ op: 'ownerLink', id }, timeoutMs) as { node: string; host: string | null; port: number | null } | null;
  }

  onLost(listener: (reason: string) => void): void {
    this.lostListeners.push(listener);
  }

  onRegained(listener: () => void): void {
    this.regainedListeners.push(listener);
  }

  get available(): boolean {
    return this.up && !this.closed;
  }

  unowned(ids: readonly number[]): number[] {
    if (ids.length === 0) return [];
    return this.call({ op: 'unowned', ids: [...ids] }) as number[];
  }

  schemaVersion(): number {
    return this.call({ op: 'schemaVersion' }) as number;
  }

  /** Ends the session (releasing every lock this node holds) and the worker. Idempotent. */
  close(): void {
    if (this.closed) return;
    try {
      this.call({ op: 'close' }, 5000);
    } catch {
      // Terminating the worker drops the socket; PostgreSQL ends the session.
    }
    this.closed = true;
    void this.worker.terminate();
  }

  // ------------------------------------------------------------------ the thread boundary

  private onEvent(ev: WorkerEvent): void {
    if (ev.event === 'lost') {
      this.up = false;
      for (const l of this.lostListeners) l(ev.reason);
    } else if (ev.event === 'regained') {
      this.up = true;
      this.options.onRegained?.();
      for (const l of this.regainedListeners) l();
    } else if (ev.event === 'write-failed') {
      this.options.onWriteError?.(ev.op, fromWire(ev.error));
    }
  }

  /** Posts a write nobody waits for. */
  private send(req: Request): void {
    if (this.closed) throw new StorageError('VSPC_DB_UNAVAILABLE', 'the PostgreSQL store is closed', {});
    this.port.postMessage({ ...req, seq: this.nextSeq++, reply: false });
  }

  /** Posts a request and blocks until its answer (or `timeoutMs`). */
  private call(req: Request, timeoutMs = this.callTimeoutMs): unknown {
    if (this.closed) throw new StorageError('VSPC_DB_UNAVAILABLE', 'the PostgreSQL store is closed', {});
    const seq = this.nextSeq++;
    this.port.postMessage({ ...req, seq, reply: true });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Answers to calls that timed out earlier may come first: skip them.
      let m: { message: Answer } | undefined;
      while ((m = receiveMessageOnPort(this.port) as { message: Answer } | undefined) !== undefined) {
        if (m.message.seq !== seq) continue;
        if (m.message.ok) return m.message.value;
        throw fromWire(m.message.error);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new StorageError('VSPC_DB_UNAVAILABLE', `PostgreSQL did not answer ${req.op} within ${timeoutMs} ms`, { op: req.op, timeoutMs });
      }
      Atomics.wait(this.flag, 0, 0, left);
      // Reset before reading: an answer posted after this sets the flag again.
      Atomics.store(this.flag, 0, 0);
    }
  }
}

function checkTimestamp(field: string, value: number): void {
  if (!Number.isSafeInteger(value)) {
    throw new StorageError('VSPC_ARG_INVALID', `${field} must be an integer of ms since the epoch, got ${String(value)}`, { field, value });
  }
}
