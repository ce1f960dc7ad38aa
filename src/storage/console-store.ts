/**
 * The sticky registry: each (VM UUID, serial port label) owns one telnet port for as
 * long as its record exists, across restarts, vMotion and range changes.
 *
 * Port allocation reads an in-memory bitmap of the ports held by records instead of
 * querying SQLite, because at startup thousands of VMs reconnect at once. The bitmap is
 * loaded in the constructor and kept in step by every method that adds, moves or
 * deletes a record. Another process (an admin tool) writing the same file can make it
 * stale; the UNIQUE constraint on tcp_port still guarantees correctness, and a conflict
 * makes the store reload the bitmap and retry.
 */
import type Database from 'better-sqlite3';
import { StorageError } from '../errors.js';
import type { ConsoleKind } from '../domain/identity.js';
import type { ConsoleRecord, ConsoleRepository, ExpiredRecord, PortRange } from '../domain/repository.js';

export type { ConsoleRecord, PortRange } from '../domain/repository.js';

const UUID_RE = /^[0-9a-f]{32}$/;
/** Longest key stored (the schema's CHECK says the same). */
const MAX_KEY_LENGTH = 1024;
const MAX_PORT = 65535;
/** Insert attempts before giving up on races with another process writing the file. */
const INSERT_ATTEMPTS = 3;

const COLUMNS = 'id, kind, key, label, name, tcp_port AS tcpPort, first_seen AS firstSeen, last_seen AS lastSeen';

/** A port (or key) already taken: a UNIQUE constraint, or the triggers that keep console and access ports apart. */
function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_TRIGGER';
}

function checkTimestamp(field: string, value: number): void {
  if (!Number.isSafeInteger(value)) {
    throw new StorageError('VSPC_ARG_INVALID', `${field} must be an integer of ms since the epoch, got ${String(value)}`, {
      field,
      value,
    });
  }
}

export interface ConsoleStoreOptions {
  /**
   * Commit the hot path's writes (registrations, last-seen updates, renames) once per
   * event-loop turn, in one transaction, instead of one transaction each: a SQLite
   * commit costs tens of microseconds and a reconnect storm makes thousands of them.
   * Reads on this connection see the writes at once, other connections at most one
   * turn later; a crash loses at most the last turn's writes (which the VMs repeat
   * when they reconnect). `closeDatabase` commits an open group.
   */
  groupCommit?: boolean;
  /** A group commit failed and its writes were rolled back. */
  onCommitError?: (err: unknown) => void;
}

export class ConsoleStore implements ConsoleRepository {
  readonly range: Readonly<PortRange>;
  private readonly options: ConsoleStoreOptions;
  /** A group-commit transaction is open (see `ConsoleStoreOptions.groupCommit`). */
  private groupOpen = false;

  private readonly db: Database.Database;
  /** used[p] === 1 when some record holds port p (in or out of the range). */
  private readonly used = new Uint8Array(MAX_PORT + 1);
  /** reserved[p] === 1 for ports never handed out (the concentrator's own listeners). */
  private readonly reserved = new Uint8Array(MAX_PORT + 1);
  /** Every port in [range.start, cursor) is used; the lowest free one is at or above it. */
  private cursor: number;

  private readonly stmts: {
    byKey: Database.Statement<[string, string, string], ConsoleRecord>;
    byId: Database.Statement<[number], ConsoleRecord>;
    byPort: Database.Statement<[number], ConsoleRecord>;
    all: Database.Statement<[], ConsoleRecord>;
    ports: Database.Statement<[], number>;
    seen: Database.Statement<[number, string | null, number]>;
    insert: Database.Statement<[string, string, string, string | null, number, number, number]>;
    touch: Database.Statement<[number, number]>;
    rename: Database.Statement<[string, number]>;
    forget: Database.Statement<[number], number>;
    move: Database.Statement<[number, number]>;
    olderThan: Database.Statement<[number, number], ConsoleRecord & { neverUsed: number }>;
    deleteIfOlder: Database.Statement<[number, number, number]>;
    insertUnused: Database.Statement<[number]>;
    markUsed: Database.Statement<[number]>;
    accessGet: Database.Statement<[number, string], number>;
    accessAll: Database.Statement<[number], { method: string; tcpPort: number }>;
    accessInsert: Database.Statement<[number, string, number]>;
    accessOf: Database.Statement<[number], number>;
    accessByPort: Database.Statement<[number], { consoleId: number; method: string }>;
  };

  /**
   * @param reserved ports that new allocations skip: the concentrator's own listen
   *   ports may lie inside the range (13370-13372 do in the default one).
   */
  constructor(db: Database.Database, range: PortRange, reserved: Iterable<number> = [], options: ConsoleStoreOptions = {}) {
    this.options = options;
    const { start, end } = range ?? ({} as PortRange);
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 1 || end > MAX_PORT || start > end) {
      throw new StorageError(
        'VSPC_PORT_RANGE_INVALID',
        `port range must be integers with 1 <= start <= end <= ${MAX_PORT}, got ${String(start)}-${String(end)}`,
        { range: { start, end } },
      );
    }
    this.db = db;
    this.range = Object.freeze({ start, end });
    this.cursor = start;
    for (const p of reserved) if (Number.isInteger(p) && p >= 1 && p <= MAX_PORT) this.reserved[p] = 1;
    this.stmts = {
      byKey: db.prepare(`SELECT ${COLUMNS} FROM consoles WHERE kind = ? AND key = ? AND label = ?`),
      byId: db.prepare(`SELECT ${COLUMNS} FROM consoles WHERE id = ?`),
      byPort: db.prepare(`SELECT ${COLUMNS} FROM consoles WHERE tcp_port = ?`),
      all: db.prepare(`SELECT ${COLUMNS} FROM consoles ORDER BY tcp_port`),
      ports: db.prepare<[], number>('SELECT tcp_port FROM consoles UNION ALL SELECT tcp_port FROM access_ports').pluck(),
      // COALESCE: a registration without a name (null) keeps the name we already know.
      seen: db.prepare('UPDATE consoles SET last_seen = ?, name = COALESCE(?, name) WHERE id = ?'),
      insert: db.prepare(
        'INSERT INTO consoles (kind, key, label, name, tcp_port, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      touch: db.prepare('UPDATE consoles SET last_seen = ? WHERE id = ?'),
      rename: db.prepare('UPDATE consoles SET name = ? WHERE id = ?'),
      forget: db.prepare<[number], number>('DELETE FROM consoles WHERE id = ? RETURNING tcp_port').pluck(),
      move: db.prepare('UPDATE consoles SET tcp_port = ? WHERE id = ?'),
      olderThan: db.prepare(
        `SELECT ${COLUMNS}, console_id IS NOT NULL AS neverUsed FROM consoles LEFT JOIN unused_consoles ON console_id = id ` +
          'WHERE last_seen < ? OR (console_id IS NOT NULL AND last_seen < ?) ORDER BY tcp_port',
      ),
      // Re-checks the age (and use) so a record touched or used since it was selected survives.
      deleteIfOlder: db.prepare(
        'DELETE FROM consoles WHERE id = ? AND (last_seen < ? OR (id IN (SELECT console_id FROM unused_consoles) AND last_seen < ?))',
      ),
      // A new console has carried nothing yet; markUsed takes it out (forget/expire: ON DELETE CASCADE).
      insertUnused: db.prepare('INSERT OR IGNORE INTO unused_consoles (console_id) VALUES (?)'),
      markUsed: db.prepare('DELETE FROM unused_consoles WHERE console_id = ?'),
      accessGet: db.prepare<[number, string], number>('SELECT tcp_port FROM access_ports WHERE console_id = ? AND method = ?').pluck(),
      accessAll: db.prepare('SELECT method, tcp_port AS tcpPort FROM access_ports WHERE console_id = ? ORDER BY method'),
      accessInsert: db.prepare('INSERT INTO access_ports (console_id, method, tcp_port) VALUES (?, ?, ?)'),
      accessOf: db.prepare<[number], number>('SELECT tcp_port FROM access_ports WHERE console_id = ?').pluck(),
      accessByPort: db.prepare('SELECT console_id AS consoleId, method FROM access_ports WHERE tcp_port = ?'),
    };
    this.reloadPorts();
  }

  /**
   * Sticky registration: returns the existing record for (kind, key, label) — updating
   * last_seen, and name when `name !== null` — or creates one on the lowest free port
   * of the range. Idempotent: a second call for the same key returns created=false.
   *
   * Throws `StorageError` `VSPC_ARG_INVALID` (an ESXi key that is not 32 lowercase hex,
   * an empty or oversized kind/key, bad `now`), `VSPC_PORT_RANGE_EXHAUSTED` ({range, uuid
   * (the key), label}).
   */
  register(
    kind: ConsoleKind,
    key: string,
    label: string,
    name: string | null,
    now: number = Date.now(),
  ): { record: ConsoleRecord; created: boolean } {
    if (typeof kind !== 'string' || kind.length < 1 || kind.length > 32) {
      throw new StorageError('VSPC_ARG_INVALID', `kind must be 1-32 characters, got ${JSON.stringify(kind)}`, { field: 'kind', value: kind });
    }
    if (kind === 'esxi' && (typeof key !== 'string' || !UUID_RE.test(key))) {
      // The field is named as ESXi knows it: the VM's vCenter UUID.
      throw new StorageError('VSPC_ARG_INVALID', `uuid must be 32 lowercase hex digits, got ${JSON.stringify(key)}`, {
        field: 'uuid',
        value: key,
      });
    }
    if (typeof key !== 'string' || key.length < 1 || key.length > MAX_KEY_LENGTH) {
      throw new StorageError('VSPC_ARG_INVALID', `key must be 1-${MAX_KEY_LENGTH} characters`, { field: 'key', value: String(key).slice(0, 80) });
    }
    if (typeof label !== 'string') {
      throw new StorageError('VSPC_ARG_INVALID', 'label must be a string', { field: 'label', value: label });
    }
    checkTimestamp('now', now);
    this.joinGroup();

    const existing = this.refreshExisting(kind, key, label, name, now);
    if (existing) return { record: existing, created: false };

    let lastError: unknown;
    for (let attempt = 0; attempt < INSERT_ATTEMPTS; attempt++) {
      const port = this.lowestFreePort(key, label);
      try {
        const info = this.stmts.insert.run(kind, key, label, name, port, now, now);
        // Only consoles a peer creates by connecting (ESXi) start unused and may expire
        // sooner; declared ones are the operator's. Outside a group the two inserts
        // commit apart: a crash between them leaves a record that counts as used, the
        // safe side (it keeps the long expiry).
        if (kind === 'esxi') this.stmts.insertUnused.run(Number(info.lastInsertRowid));
        this.used[port] = 1;
        this.cursor = port + 1;
        return {
          record: { id: Number(info.lastInsertRowid), kind, key, label, name, tcpPort: port, firstSeen: now, lastSeen: now },
          created: true,
        };
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        lastError = err;
        // Another process wrote the file: either it registered this key meanwhile...
        const raced = this.refreshExisting(kind, key, label, name, now);
        if (raced) return { record: raced, created: false };
        // ...or it took our port. Re-read which ports are really held and try again.
        this.reloadPorts();
      }
    }
    throw lastError;
  }

  get(kind: ConsoleKind, key: string, label: string): ConsoleRecord | undefined {
    return this.stmts.byKey.get(kind, key, label);
  }

  getById(id: number): ConsoleRecord | undefined {
    return this.stmts.byId.get(id);
  }

  getByPort(port: number): ConsoleRecord | undefined {
    return this.stmts.byPort.get(port);
  }

  /** All records, ordered by port. */
  list(): ConsoleRecord[] {
    return this.stmts.all.all();
  }

  /** Sets last_seen. A record that no longer exists (forgotten meanwhile) is ignored. */
  touch(id: number, now: number = Date.now()): void {
    checkTimestamp('now', now);
    this.joinGroup();
    this.stmts.touch.run(now, id);
  }

  /** Sets the display name. Throws `VSPC_NOT_FOUND` ({id}) if there is no such record. */
  rename(id: number, name: string): void {
    if (typeof name !== 'string') {
      throw new StorageError('VSPC_ARG_INVALID', 'name must be a string', { field: 'name', value: name });
    }
    this.joinGroup();
    if (this.stmts.rename.run(name, id).changes === 0) {
      throw new StorageError('VSPC_NOT_FOUND', `no serial port record with id ${id}`, { id });
    }
  }

  /** Deletes the record; its port becomes free for new VMs. True if a row was deleted. */
  forget(id: number): boolean {
    // Its access ports go with it (ON DELETE CASCADE): free them in the bitmap too.
    const access = this.stmts.accessOf.all(id);
    const port = this.stmts.forget.get(id);
    if (port === undefined) return false;
    this.release(port);
    for (const p of access) this.release(p);
    return true;
  }

  /**
   * The sticky TCP port of one access method (`raw`, ...) of a console: the existing one,
   * or the lowest free port of the range, recorded. Ports are one namespace with the
   * consoles' telnet ports.
   *
   * Throws `VSPC_NOT_FOUND` ({id}), `VSPC_ARG_INVALID` (method), `VSPC_PORT_RANGE_EXHAUSTED`.
   */
  accessPort(id: number, method: string): number {
    if (typeof method !== 'string' || method.length < 1 || method.length > 32 || method === 'telnet') {
      throw new StorageError('VSPC_ARG_INVALID', `access method must be 1-32 characters and not telnet, got ${JSON.stringify(method)}`, { field: 'method', value: method });
    }
    const existing = this.stmts.accessGet.get(id, method);
    if (existing !== undefined) return existing;
    const rec = this.stmts.byId.get(id);
    if (!rec) throw new StorageError('VSPC_NOT_FOUND', `no console record with id ${id}`, { id });
    let lastError: unknown;
    for (let attempt = 0; attempt < INSERT_ATTEMPTS; attempt++) {
      const port = this.lowestFreePort(rec.key, `${rec.label}/${method}`);
      try {
        this.stmts.accessInsert.run(id, method, port);
        this.used[port] = 1;
        this.cursor = port + 1;
        return port;
      } catch (err) {
        if (!isUniqueViolation(err)) throw err;
        lastError = err;
        const raced = this.stmts.accessGet.get(id, method);
        if (raced !== undefined) return raced;
        this.reloadPorts();
      }
    }
    throw lastError;
  }

  relocate(id: number): ConsoleRecord {
    const rec = this.stmts.byId.get(id);
    if (!rec) throw new StorageError('VSPC_NOT_FOUND', `no console record with id ${id}`, { id });
    // Held by another program on this host: not ours to hand out again in this process.
    this.reserved[rec.tcpPort] = 1;
    const port = this.lowestFreePort(rec.key, rec.label);
    return this.setPort(id, port);
  }

  /** Every access port of a console, by method. */
  accessPorts(id: number): Record<string, number> {
    return Object.fromEntries(this.stmts.accessAll.all(id).map((r) => [r.method, r.tcpPort]));
  }

  /**
   * Moves a record to `port` (1..65535; it may lie outside the range, and stays sticky).
   * Throws `StorageError` `VSPC_PORT_INVALID` ({id, port}), `VSPC_NOT_FOUND` ({id}),
   * `VSPC_PORT_IN_USE` ({id, port, heldBy}) when another record holds the port.
   */
  setPort(id: number, port: number): ConsoleRecord {
    if (!Number.isInteger(port) || port < 1 || port > MAX_PORT) {
      throw new StorageError('VSPC_PORT_INVALID', `port must be an integer 1..${MAX_PORT}, got ${String(port)}`, {
        id,
        port,
      });
    }
    // IMMEDIATE: the holder check and the move see the same state even if another
    // process writes the file.
    const { before, after } = this.db
      .transaction(() => {
        const rec = this.stmts.byId.get(id);
        if (!rec) throw new StorageError('VSPC_NOT_FOUND', `no serial port record with id ${id}`, { id });
        if (rec.tcpPort === port) return { before: rec, after: rec };
        const access = this.stmts.accessByPort.get(port);
        if (access) {
          this.used[port] = 1;
          throw new StorageError('VSPC_PORT_IN_USE', `port ${port} is the ${access.method} port of console ${access.consoleId}`, {
            id,
            port,
            heldBy: access.consoleId,
          });
        }
        const holder = this.stmts.byPort.get(port);
        if (holder) {
          this.used[port] = 1; // in case another process put it there
          throw new StorageError(
            'VSPC_PORT_IN_USE',
            `port ${port} is held by ${holder.key}${holder.label ? ` (${holder.label})` : ''}`,
            { id, port, heldBy: holder.id },
          );
        }
        this.stmts.move.run(port, id);
        return { before: rec, after: { ...rec, tcpPort: port } };
      })
      .immediate();
    if (before.tcpPort !== after.tcpPort) {
      this.release(before.tcpPort);
      this.used[after.tcpPort] = 1;
    }
    return after;
  }

  /**
   * Deletes the records whose last_seen < now - maxAgeMs — or, for records never used
   * (markUsed), last_seen < now - unusedMaxAgeMs — and for which keep(record) is false
   * (e.g. the VM is connected right now); returns the deleted records, ordered by port,
   * each with the rule that expired it. Either age may be Infinity (no limit of that kind). If keep
   * throws, nothing is deleted.
   */
  expire(maxAgeMs: number, keep: (r: ConsoleRecord) => boolean, now: number = Date.now(), unusedMaxAgeMs = Number.POSITIVE_INFINITY): ExpiredRecord[] {
    for (const [field, v] of [['maxAgeMs', maxAgeMs], ['unusedMaxAgeMs', unusedMaxAgeMs]] as const) {
      if (typeof v !== 'number' || Number.isNaN(v) || v < 0) {
        throw new StorageError('VSPC_ARG_INVALID', `${field} must be a non-negative number, got ${String(v)}`, { field, value: v });
      }
    }
    checkTimestamp('now', now);
    // An infinite age is a cutoff no last_seen is below.
    const cutoffOf = (age: number) => (Number.isFinite(age) ? now - age : Number.MIN_SAFE_INTEGER);
    const cutoff = cutoffOf(maxAgeMs);
    const unusedCutoff = cutoffOf(unusedMaxAgeMs);
    /** Access ports of the deleted records (removed with them by ON DELETE CASCADE). */
    const freed: number[] = [];
    const deleted = this.db
      .transaction(() => {
        const out: ExpiredRecord[] = [];
        for (const row of this.stmts.olderThan.all(cutoff, unusedCutoff)) {
          const { neverUsed, ...r } = row;
          if (keep(r)) continue;
          const access = this.stmts.accessOf.all(r.id);
          if (this.stmts.deleteIfOlder.run(r.id, cutoff, unusedCutoff).changes > 0) {
            out.push({ ...r, reason: neverUsed === 1 && r.lastSeen >= cutoff ? 'unused' : 'unseen' });
            freed.push(...access);
          }
        }
        return out;
      })
      .immediate();
    for (const r of deleted) this.release(r.tcpPort);
    for (const p of freed) this.release(p);
    return deleted;
  }

  /** Records that the console had a client; a no-op when already recorded or gone. */
  markUsed(id: number): void {
    this.joinGroup();
    this.stmts.markUsed.run(id);
  }

  /** Commits the current group of writes now (nothing to do without one). */
  flush(): void {
    if (!this.groupOpen) return;
    this.groupOpen = false;
    if (!this.db.open || !this.db.inTransaction) return;
    try {
      this.db.exec('COMMIT');
    } catch (err) {
      try {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
      } catch {
        /* the connection is unwell; the error below says so */
      }
      this.options.onCommitError?.(err);
    }
  }

  /** With group commit, opens this turn's transaction (committed on setImmediate). */
  private joinGroup(): void {
    if (!this.options.groupCommit || this.groupOpen || this.db.inTransaction) return;
    this.db.exec('BEGIN IMMEDIATE');
    this.groupOpen = true;
    setImmediate(() => this.flush());
  }

  /** The existing record for the key with last_seen/name refreshed, or undefined. */
  private refreshExisting(kind: ConsoleKind, key: string, label: string, name: string | null, now: number): ConsoleRecord | undefined {
    const row = this.stmts.byKey.get(kind, key, label);
    if (!row) return undefined;
    // changes === 0: deleted by another process between the two statements; treat as new.
    if (this.stmts.seen.run(now, name, row.id).changes === 0) return undefined;
    return { ...row, name: name ?? row.name, lastSeen: now };
  }

  /** Amortised O(1): the cursor only moves back when a port below it is released. */
  private lowestFreePort(uuid: string, label: string): number {
    const { start, end } = this.range;
    for (let p = this.cursor; p <= end; p++) {
      if (this.used[p] === 0 && this.reserved[p] === 0) {
        this.cursor = p;
        return p;
      }
    }
    this.cursor = end + 1;
    throw new StorageError(
      'VSPC_PORT_RANGE_EXHAUSTED',
      `no free port in range ${start}-${end} for ${uuid}${label ? ` (${label})` : ''}; widen --port-range or expire old VMs`,
      { range: { start, end }, uuid, label },
    );
  }

  private release(port: number): void {
    this.used[port] = 0;
    if (port >= this.range.start && port < this.cursor) this.cursor = port;
  }

  private reloadPorts(): void {
    this.used.fill(0);
    for (const p of this.stmts.ports.iterate()) this.used[p] = 1;
    this.cursor = this.range.start;
  }
}
