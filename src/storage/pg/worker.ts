/**
 * The PostgreSQL store's worker thread: owns the node's one database session (`pg`),
 * runs the repository's statements there in arrival order, and holds the advisory
 * locks that say which consoles this node owns. Because the locks are session-level,
 * they live exactly as long as this session: a node that dies (its process killed, its
 * connection cut) loses them in PostgreSQL itself, with no failure detector of ours.
 *
 * Requests arrive on `workerData.port`; each answer is posted back on that port, then
 * `workerData.flag` is set and notified, which wakes the main thread blocked in
 * `sync-call.ts`. Loss of the session is posted on parentPort as a `lost` event.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import pg from 'pg';
import { MIGRATIONS } from '../migrations.js';
import {
  ALLOC_LOCK_CLASS,
  APPLICATION_PREFIX,
  MIGRATE_LOCK_CLASS,
  NODE_LOCK_CLASS,
  OWNER_LOCK_CLASS,
  type Answer,
  type ClusterRecord,
  type Envelope,
  type OpenArgs,
  type WireError,
  type WorkerEvent,
  idleSessionTimeoutMs,
} from './protocol.js';
import type { ConsoleRecord, PortRange } from '../../domain/repository.js';

const { port, flag } = workerData as { port: MessagePort; flag: Int32Array };
const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

/** A record's columns as ConsoleRecord names them (ms timestamps as numbers), optionally of table alias `t`. */
const cols = (t = ''): string =>
  `${t}id::int AS id, ${t}kind, ${t}key, ${t}label, ${t}name, ${t}tcp_port AS "tcpPort", ${t}first_seen::float8 AS "firstSeen", ${t}last_seen::float8 AS "lastSeen"`;
const COLUMNS = cols();

class WorkerError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

let args: OpenArgs | null = null;
let client: pg.Client | null = null;
/** A connection attempt under way (requests wait for it). */
let connecting: Promise<pg.Client> | null = null;
/** Consoles whose owner lock this session holds (pg_try_advisory_lock is re-entrant: take each once). */
const held = new Set<number>();
let pingTimer: NodeJS.Timeout | null = null;
let reconnectTimer: NodeJS.Timeout | null = null;
let closing = false;
/** The session was lost and the main thread told; `regained` follows the next connection. */
let lostReported = false;

/**
 * pg's own words for a password it was never given are about its SASL code ("client
 * password must be a string"): say what the operator can do instead.
 */
function explainConnectError(message: string): string {
  if (/client password must be a string|password authentication.*no password|no password supplied/i.test(message))
    return `the server asks for a password and none was given: set PGPASSWORD in vspc's environment, put it in ~/.pgpass of the user vspc runs as, or in the URL (${message})`;
  return message;
}

function post(event: WorkerEvent): void {
  parentPort?.postMessage(event);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The session is gone (or no longer provably alive): every lock with it. */
function lose(c: pg.Client, reason: string): void {
  if (client !== c) return;
  client = null;
  held.clear();
  c.removeAllListeners('error');
  c.on('error', () => {});
  // Make sure the server side ends too, if it can still hear us.
  void c.end().catch(() => undefined);
  if (closing) return;
  if (!lostReported) {
    lostReported = true;
    post({ event: 'lost', reason });
  }
  scheduleReconnect();
}

function scheduleReconnect(): void {
  if (reconnectTimer || closing || !args) return;
  reconnectTimer = setTimeout(() => {
    reconnectTimer = null;
    connect().catch(() => scheduleReconnect());
  }, args.pingIntervalMs);
  reconnectTimer.unref();
}

async function connect(): Promise<pg.Client> {
  if (client) return client;
  if (connecting) return connecting;
  if (!args) throw new WorkerError('VSPC_DB_UNAVAILABLE', 'the PostgreSQL store is not open');
  const a = args;
  connecting = (async () => {
    const c = new pg.Client({
      connectionString: a.url,
      application_name: `${APPLICATION_PREFIX}${a.nodeId}`,
      connectionTimeoutMillis: a.pingTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: a.pingIntervalMs,
    });
    c.on('error', (err) => lose(c, `database connection failed: ${err.message}`));
    c.on('end', () => lose(c, 'database connection closed'));
    try {
      await c.connect();
    } catch (err) {
      c.removeAllListeners('end');
      throw new WorkerError('VSPC_DB_OPEN_FAILED', `cannot connect to PostgreSQL: ${explainConnectError(messageOf(err))}`, { db: redact(a.url) });
    }
    try {
      // One live session per node id: two nodes with one id would each think the other's consoles theirs.
      const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [NODE_LOCK_CLASS, a.nodeId]);
      if (!r.rows[0].ok) {
        throw new WorkerError('VSPC_NODE_ID_IN_USE', `node id ${a.nodeId} is in use by another live vspc on this database; give each node its own --node-id`, {
          nodeId: a.nodeId,
        });
      }
      // PostgreSQL ends a session that said nothing for this long (PostgreSQL 14+): a
      // node cut off from the database (a partition, a machine that froze) loses its
      // locks there even when no TCP keepalive or unix-socket close tells the server,
      // and always after the node itself gave them up (its first unanswered ping comes
      // at most pingIntervalMs after the last statement, and it waits pingTimeoutMs
      // for it; docs/decisions/0011-pg.md).
      await c.query(`SET idle_session_timeout = ${idleSessionTimeoutMs(a)}`).catch(() => undefined);
      await migrate(c);
      if (a.range) await ensureMark(c, a.range);
    } catch (err) {
      c.removeAllListeners('end');
      c.on('error', () => {});
      await c.end().catch(() => undefined);
      throw err;
    }
    client = c;
    if (lostReported) {
      lostReported = false;
      post({ event: 'regained' });
    }
    return c;
  })().finally(() => {
    connecting = null;
  });
  return connecting;
}

function redact(url: string): string {
  // A password in the URL never reaches a log line.
  return url.replace(/^([^:]+:\/\/[^:@/?#]*:)[^@/?#]*@/, '$1***@');
}

/**
 * The same numbered migrations as SQLite (`migrations.ts`, each one's `pg` text), one
 * transaction each with the version bump, under an advisory transaction lock so that
 * nodes starting together run each exactly once.
 */
async function migrate(c: pg.Client): Promise<void> {
  for (const m of MIGRATIONS) {
    await c.query('BEGIN');
    try {
      await c.query('SELECT pg_advisory_xact_lock($1, 0)', [MIGRATE_LOCK_CLASS]);
      await c.query('CREATE TABLE IF NOT EXISTS vspc_schema (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL)');
      const found = (await c.query<{ version: number }>('SELECT version FROM vspc_schema')).rows[0]?.version ?? 0;
      if (found > SCHEMA_VERSION) {
        throw new WorkerError(
          'VSPC_DB_TOO_NEW',
          `database has schema version ${found}, this vspc supports up to ${SCHEMA_VERSION}; upgrade vspc`,
          { found, supported: SCHEMA_VERSION },
        );
      }
      if (found < m.version) {
        try {
          await c.query(m.pg);
        } catch (err) {
          throw new WorkerError('VSPC_DB_MIGRATION_FAILED', `migration ${m.version} (${m.description}) failed: ${messageOf(err)}`, { version: m.version });
        }
        await c.query('INSERT INTO vspc_schema (version) VALUES ($1) ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version', [m.version]);
      }
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }
}

function startPing(): void {
  if (pingTimer || !args) return;
  const a = args;
  pingTimer = setInterval(() => {
    const c = client;
    if (!c) return;
    // A node that cannot show PostgreSQL it is alive gives up what it owns (the server
    // releases the locks when it notices the session is dead; docs/operations.md).
    const timer = setTimeout(() => lose(c, `database did not answer a ping within ${a.pingTimeoutMs} ms`), a.pingTimeoutMs);
    c.query('SELECT 1').then(
      () => clearTimeout(timer),
      (err: unknown) => {
        clearTimeout(timer);
        lose(c, `database ping failed: ${messageOf(err)}`);
      },
    );
  }, a.pingIntervalMs);
  pingTimer.unref();
}

async function tx<T>(c: pg.Client, body: () => Promise<T>): Promise<T> {
  await c.query('BEGIN');
  try {
    const out = await body();
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * The lowest port of `range` that no console or access port holds and that is not
 * reserved; null when none. Called under the allocation lock (ALLOC_LOCK_CLASS).
 *
 * Amortised O(1), like the SQLite store's cursor: the search starts at the range's
 * low-water mark (migration 7, `port_low_water`: every port below it is taken), so it
 * only looks at the ports taken since the mark last moved. The mark moves on with a
 * compare-and-set on its generation (see `allocated`). The search is the database's
 * `vspc_lowest_free` (migration 7), which `vspc_register` uses too.
 */
async function lowestFreePort(c: pg.Client, range: PortRange, reserved: number[]): Promise<{ port: number; gen: string | null } | null> {
  const r = await c.query<{ port: number; gen: string | null }>('SELECT port, gen::text AS gen FROM vspc_lowest_free($1, $2, $3::int[])', [range.start, range.end, reserved]);
  return r.rows[0] ?? null;
}

/**
 * `port` was just taken by the caller's transaction: every port from the mark to `port`
 * is now taken or reserved, so the range's mark moves to port + 1 — unless its
 * generation changed since `lowestFreePort` read it: a port was freed meanwhile (by
 * another session, whose trigger waited on this row, or by this transaction's own
 * move), possibly between the mark and `port`, and the mark stays where the frees left it.
 */
async function allocated(c: pg.Client, range: PortRange, gen: string | null, port: number): Promise<void> {
  if (gen === null) {
    // No row (ensureMark makes one first, so only if it was deleted by hand): one at the
    // range's start, which needs no agreement with a concurrent free.
    markedRanges.delete(range.start);
    await ensureMark(c, range);
    return;
  }
  await c.query('UPDATE port_low_water SET port = $3 WHERE range_start = $1 AND gen = $2::bigint', [range.start, gen, port + 1]);
}

/** Range starts whose mark row this worker knows to exist (rows are never deleted). */
const markedRanges = new Set<number>();

/**
 * Makes sure `range` has a committed mark row, in its own transaction (autocommit): when
 * the session opens (for the node's range) and before an allocation (another range, by
 * hand). Without a row (a new range start, or a database upgraded from schema 6 with
 * consoles in it) the first allocation inserted the mark one past its port, and a port
 * freed by a transaction that committed after the allocation's snapshot found no row to
 * lower or bump: free below the mark, never allocated again. A row at the range's start
 * holds the invariant trivially; from then on frees and allocations meet on it (trigger
 * vs compare-and-set on `gen`). Left: a free whose trigger ran before the row existed
 * and that commits after the next allocation (only while the first node of a range
 * starts; `forget` is one statement, so microseconds).
 */
async function ensureMark(c: pg.Client, range: PortRange): Promise<void> {
  if (markedRanges.has(range.start)) return;
  await c.query('INSERT INTO port_low_water (range_start, port) VALUES ($1, $1) ON CONFLICT (range_start) DO NOTHING', [range.start]);
  markedRanges.add(range.start);
}

function exhausted(range: PortRange, key: string, label: string): WorkerError {
  return new WorkerError(
    'VSPC_PORT_RANGE_EXHAUSTED',
    `no free port in range ${range.start}-${range.end} for ${key}${label ? ` (${label})` : ''}; widen --port-range or expire old VMs`,
    { range, uuid: key, label },
  );
}

async function byId(c: pg.Client, id: number): Promise<ConsoleRecord | undefined> {
  return (await c.query<ConsoleRecord>(`SELECT ${COLUMNS} FROM consoles WHERE id = $1`, [id])).rows[0];
}

async function handle(req: Envelope): Promise<unknown> {
  if (req.op === 'open') {
    args = req.args;
    await connect();
    startPing();
    return { schemaVersion: SCHEMA_VERSION };
  }
  if (req.op === 'close') {
    closing = true;
    if (pingTimer) clearInterval(pingTimer);
    if (reconnectTimer) clearTimeout(reconnectTimer);
    const c = client;
    client = null;
    held.clear();
    if (c) {
      c.removeAllListeners('end');
      await c.end().catch(() => undefined);
    }
    return null;
  }
  // Nothing to give up without a session: its locks went with it.
  if (req.op === 'release' && !client) return null;
  const c = await connect();
  switch (req.op) {
    case 'register': {
      // The hot path (a known console reconnecting) is one statement without the allocation lock.
      const seen = await c.query<ConsoleRecord>(
        `UPDATE consoles SET last_seen = $4, name = COALESCE($5, name) WHERE kind = $1 AND key = $2 AND label = $3 RETURNING ${COLUMNS}`,
        [req.kind, req.key, req.label, req.now, req.name],
      );
      if (seen.rows[0]) return { record: seen.rows[0], created: false };
      await ensureMark(c, req.range);
      // One allocator cluster-wide: vspc_register (migrations 7, 8) allocates under one
      // transaction lock, so the lowest free port it computes is still free when it
      // inserts; the UNIQUE constraints stay the guarantee. One statement, one round trip.
      const made = await c.query<ConsoleRecord & { created: boolean }>(
        `SELECT ${COLUMNS}, created FROM vspc_register($1, $2, $3, $4, $5, $6, $7, $8::int[], $9, $10)`,
        [req.kind, req.key, req.label, req.name, req.now, req.range.start, req.range.end, req.reserved, req.unused, ALLOC_LOCK_CLASS],
      );
      const row = made.rows[0];
      if (!row) throw exhausted(req.range, req.key, req.label);
      const { created, ...record } = row;
      return { record, created };
    }
    case 'getById':
      return (await byId(c, req.id)) ?? null;
    case 'list':
      return (await c.query<ConsoleRecord>(`SELECT ${COLUMNS} FROM consoles ORDER BY tcp_port`)).rows;
    case 'clusterList':
      return (
        await c.query<ClusterRecord>(
          `SELECT ${cols('c.')},
                  substr(a.application_name, ${APPLICATION_PREFIX.length + 1}) AS owner
             FROM consoles c
             LEFT JOIN pg_locks l
               ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
              AND l.classid::bigint = $1 AND l.objid::bigint = c.id
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid
            ORDER BY c.tcp_port`,
          [OWNER_LOCK_CLASS],
        )
      ).rows;
    case 'owners': {
      const r = await c.query<{ id: number; owner: string }>(
        `SELECT l.objid::int AS id, substr(a.application_name, ${APPLICATION_PREFIX.length + 1}) AS owner
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = $1`,
        [OWNER_LOCK_CLASS],
      );
      return r.rows.map((x) => [x.id, x.owner]);
    }
    case 'rename':
      if (((await c.query('UPDATE consoles SET name = $1 WHERE id = $2', [req.name, req.id])).rowCount ?? 0) === 0) {
        throw new WorkerError('VSPC_NOT_FOUND', `no serial port record with id ${req.id}`, { id: req.id });
      }
      return null;
    case 'touch':
      await c.query('UPDATE consoles SET last_seen = $1 WHERE id = $2', [req.now, req.id]);
      return null;
    case 'markUsed':
      await c.query('DELETE FROM unused_consoles WHERE console_id = $1', [req.id]);
      return null;
    case 'forget': {
      const r = await c.query<{ tcp_port: number }>('DELETE FROM consoles WHERE id = $1 RETURNING tcp_port', [req.id]);
      if (held.delete(req.id)) await c.query('SELECT pg_advisory_unlock($1, $2)', [OWNER_LOCK_CLASS, req.id]);
      return r.rows.length > 0;
    }
    case 'setPort':
      return tx(c, async () => {
        await c.query('SELECT pg_advisory_xact_lock($1, 0)', [ALLOC_LOCK_CLASS]);
        return movePort(c, req.id, req.port);
      });
    case 'relocate':
      await ensureMark(c, req.range);
      return tx(c, async () => {
        await c.query('SELECT pg_advisory_xact_lock($1, 0)', [ALLOC_LOCK_CLASS]);
        const rec = await byId(c, req.id);
        if (!rec) throw new WorkerError('VSPC_NOT_FOUND', `no console record with id ${req.id}`, { id: req.id });
        const free = await lowestFreePort(c, req.range, req.reserved);
        if (free === null) throw exhausted(req.range, rec.key, rec.label);
        const moved = await movePort(c, req.id, free.port);
        await allocated(c, req.range, free.gen, free.port);
        return moved;
      });
    case 'accessPort':
      await ensureMark(c, req.range);
      return tx(c, async () => {
        const existing = await c.query<{ p: number }>('SELECT tcp_port AS p FROM access_ports WHERE console_id = $1 AND method = $2', [req.id, req.method]);
        if (existing.rows[0]) return existing.rows[0].p;
        await c.query('SELECT pg_advisory_xact_lock($1, 0)', [ALLOC_LOCK_CLASS]);
        const rec = await byId(c, req.id);
        if (!rec) throw new WorkerError('VSPC_NOT_FOUND', `no console record with id ${req.id}`, { id: req.id });
        const raced = await c.query<{ p: number }>('SELECT tcp_port AS p FROM access_ports WHERE console_id = $1 AND method = $2', [req.id, req.method]);
        if (raced.rows[0]) return raced.rows[0].p;
        const free = await lowestFreePort(c, req.range, req.reserved);
        if (free === null) throw exhausted(req.range, rec.key, `${rec.label}/${req.method}`);
        await c.query('INSERT INTO access_ports (console_id, method, tcp_port) VALUES ($1, $2, $3)', [req.id, req.method, free.port]);
        await allocated(c, req.range, free.gen, free.port);
        return free.port;
      });
    case 'accessPorts':
      return (
        await c.query<{ method: string; p: number }>('SELECT method, tcp_port AS p FROM access_ports WHERE console_id = $1 ORDER BY method', [req.id])
      ).rows.map((r) => [r.method, r.p]);
    case 'expireCandidates':
      return (
        await c.query<ConsoleRecord & { neverUsed: boolean; accessPorts: number[] }>(
          `SELECT ${cols('c.')},
                  u.console_id IS NOT NULL AS "neverUsed"
             FROM consoles c LEFT JOIN unused_consoles u ON u.console_id = c.id
            WHERE c.last_seen < $1 OR (u.console_id IS NOT NULL AND c.last_seen < $2)
            ORDER BY c.tcp_port`,
          [req.cutoff, req.unusedCutoff],
        )
      ).rows;
    case 'expireDelete':
      return tx(c, async () => {
        const deleted: number[] = [];
        for (const id of req.ids) {
          // Re-checks the age and use (touched or used since selected: it stays), and
          // takes the console's owner lock for this transaction: a console another live
          // node owns is never expired under it.
          const r = await c.query(
            `DELETE FROM consoles WHERE id = $1
                AND (last_seen < $2 OR (id IN (SELECT console_id FROM unused_consoles) AND last_seen < $3))
                AND pg_try_advisory_xact_lock($4, $1::int)`,
            [id, req.cutoff, req.unusedCutoff, OWNER_LOCK_CLASS],
          );
          if ((r.rowCount ?? 0) > 0) deleted.push(id);
        }
        return deleted;
      });
    case 'claim': {
      if (held.has(req.id)) return { owned: true };
      const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [OWNER_LOCK_CLASS, req.id]);
      if (r.rows[0].ok) {
        held.add(req.id);
        return { owned: true };
      }
      const o = await c.query<{ owner: string }>(
        `SELECT substr(a.application_name, ${APPLICATION_PREFIX.length + 1}) AS owner
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = $1 AND l.objid::bigint = $2`,
        [OWNER_LOCK_CLASS, req.id],
      );
      return { owned: false, owner: o.rows[0]?.owner ?? null };
    }
    case 'unowned': {
      // One round trip for a node's whole list of consoles it wants and does not own:
      // which of them no live session owns (worth a claim now; a record deleted
      // meanwhile is registered again by the claim).
      const r = await c.query<{ id: number }>(
        `SELECT u.id::int AS id FROM unnest($2::bigint[]) AS u(id)
          WHERE NOT EXISTS (SELECT 1 FROM pg_locks l
                             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                               AND l.classid::bigint = $1 AND l.objid::bigint = u.id)`,
        [OWNER_LOCK_CLASS, req.ids.filter((id) => !held.has(id))],
      );
      return r.rows.map((x) => x.id);
    }
    case 'release':
      if (held.delete(req.id)) await c.query('SELECT pg_advisory_unlock($1, $2)', [OWNER_LOCK_CLASS, req.id]);
      return null;
    case 'advertise':
      await c.query(
        `INSERT INTO nodes (node_id, link_host, link_port, started, heartbeat) VALUES ($1, $2, $3, $4, $4)
           ON CONFLICT (node_id) DO UPDATE SET link_host = $2, link_port = $3, started = $4, heartbeat = $4`,
        [args!.nodeId, req.host, req.port, req.now],
      );
      return null;
    case 'heartbeat':
      await c.query('UPDATE nodes SET heartbeat = $2 WHERE node_id = $1', [args!.nodeId, req.now]);
      return null;
    case 'ownerLink': {
      // The owner is whoever holds the console's lock now (not a row that could be stale);
      // its link address is the row it advertised.
      const r = await c.query<{ node: string; host: string | null; port: number | null }>(
        `SELECT substr(a.application_name, ${APPLICATION_PREFIX.length + 1}) AS node, n.link_host AS host, n.link_port AS port
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           LEFT JOIN nodes n ON n.node_id = substr(a.application_name, ${APPLICATION_PREFIX.length + 1})
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = $1 AND l.objid::bigint = $2`,
        [OWNER_LOCK_CLASS, req.id],
      );
      const row = r.rows[0];
      return row ? { node: row.node, host: row.host, port: row.port } : null;
    }
    case 'nodes': {
      // Live: a session named vspc:<id> on this database now; the rows add where links listen (and nodes gone since).
      const r = await c.query<{ node: string; live: boolean; host: string | null; port: number | null; started: string | null; heartbeat: string | null }>(
        `WITH live AS (
           SELECT DISTINCT substr(application_name, ${APPLICATION_PREFIX.length + 1}) AS node FROM pg_stat_activity
            WHERE datname = current_database() AND application_name LIKE '${APPLICATION_PREFIX}%')
         SELECT coalesce(l.node, n.node_id) AS node, l.node IS NOT NULL AS live, n.link_host AS host, n.link_port AS port,
                n.started::text AS started, n.heartbeat::text AS heartbeat
           FROM live l FULL JOIN nodes n ON n.node_id = l.node
          ORDER BY 1 LIMIT 1000`,
      );
      return r.rows.map((row) => ({
        node: row.node,
        live: row.live,
        link: row.host === null || row.port === null ? null : `${row.host.includes(':') ? `[${row.host}]` : row.host}:${row.port}`,
        startedAt: row.started === null ? null : Number(row.started),
        heartbeatAt: row.heartbeat === null ? null : Number(row.heartbeat),
      }));
    }
    case 'nodeLink': {
      const r = await c.query<{ host: string; port: number }>('SELECT link_host AS host, link_port AS port FROM nodes WHERE node_id = $1', [req.node]);
      return r.rows[0] ? { node: req.node, host: r.rows[0].host, port: r.rows[0].port } : null;
    }
    case 'vmotionPublish':
      await c.query(
        `INSERT INTO vmotions (token, seq, console_id, source_node, created, deadline) VALUES (decode($1, 'hex'), decode($2, 'hex'), $3, $4, $5, $6)
           ON CONFLICT (token) DO NOTHING`,
        [req.token, req.seqHex, req.consoleId, args!.nodeId, req.now, req.deadline],
      );
      return null;
    case 'vmotionWithdraw':
      await c.query("DELETE FROM vmotions WHERE token = decode($1, 'hex')", [req.token]);
      return null;
    case 'vmotionFind': {
      // A VMOTION-PEER payload is the whole token (sequence + secret), as on one node: one
      // primary-key look-up, whatever other rows share its sequence (the caller compares
      // the token once more in constant time).
      const r = await c.query<{ token: string; seq_length: number; console_id: number; source_node: string; deadline: number }>(
        `SELECT encode(token, 'hex') AS token, length(seq) AS seq_length, console_id::int AS console_id, source_node, deadline::float8 AS deadline
           FROM vmotions
          WHERE token = decode($1, 'hex') AND deadline > $2`,
        [req.payload, req.now],
      );
      return r.rows.map((x) => ({ token: x.token, seqLength: x.seq_length, consoleId: x.console_id, sourceNode: x.source_node, deadline: x.deadline }));
    }
    case 'schemaVersion':
      return (await c.query<{ version: number }>('SELECT version FROM vspc_schema')).rows[0]?.version ?? 0;
  }
}

async function movePort(c: pg.Client, id: number, p: number): Promise<{ before: ConsoleRecord; after: ConsoleRecord }> {
  const rec = await byId(c, id);
  if (!rec) throw new WorkerError('VSPC_NOT_FOUND', `no serial port record with id ${id}`, { id });
  if (rec.tcpPort === p) return { before: rec, after: rec };
  const access = (await c.query<{ consoleId: number; method: string }>('SELECT console_id::int AS "consoleId", method FROM access_ports WHERE tcp_port = $1', [p])).rows[0];
  if (access) {
    throw new WorkerError('VSPC_PORT_IN_USE', `port ${p} is the ${access.method} port of console ${access.consoleId}`, { id, port: p, heldBy: access.consoleId });
  }
  const holder = (await c.query<ConsoleRecord>(`SELECT ${COLUMNS} FROM consoles WHERE tcp_port = $1`, [p])).rows[0];
  if (holder) {
    throw new WorkerError('VSPC_PORT_IN_USE', `port ${p} is held by ${holder.key}${holder.label ? ` (${holder.label})` : ''}`, { id, port: p, heldBy: holder.id });
  }
  await c.query('UPDATE consoles SET tcp_port = $1 WHERE id = $2', [p, id]);
  return { before: rec, after: { ...rec, tcpPort: p } };
}

function toWire(err: unknown): WireError {
  if (err instanceof WorkerError) return { code: err.code, message: err.message, details: err.details };
  const pgCode = (err as { code?: unknown } | null)?.code;
  if (pgCode === '23505') return { code: 'VSPC_PORT_IN_USE', message: messageOf(err), details: {} };
  // A row referring to a console another session deleted meanwhile (an access port for
  // a console just forgotten by another node): gone, as a look-up would have said.
  if (pgCode === '23503') return { code: 'VSPC_NOT_FOUND', message: `the console no longer exists: ${messageOf(err)}`, details: { sqlState: pgCode } };
  if (pgCode === '53200') {
    // Out of shared memory: almost always the lock table, where every owned console holds an advisory lock.
    return {
      code: 'VSPC_DB_UNAVAILABLE',
      message: `PostgreSQL: ${messageOf(err)}: each console a node serves holds an advisory lock; raise the server's max_locks_per_transaction (docs/operations.md, cluster section)`,
      details: { sqlState: pgCode },
    };
  }
  // Anything else the database said: the session may be unwell or the database away.
  return { code: 'VSPC_DB_UNAVAILABLE', message: `PostgreSQL: ${messageOf(err)}`, details: typeof pgCode === 'string' ? { sqlState: pgCode } : {} };
}

/** Requests run one at a time, in arrival order, like statements on one SQLite connection. */
let chain: Promise<void> = Promise.resolve();

port.on('message', (req: Envelope) => {
  chain = chain.then(async () => {
    let answer: Answer;
    try {
      answer = { seq: req.seq, ok: true, value: await handle(req) };
    } catch (err) {
      answer = { seq: req.seq, ok: false, error: toWire(err) };
    }
    if (req.reply) {
      port.postMessage(answer);
      Atomics.store(flag, 0, 1);
      Atomics.notify(flag, 0);
    } else if (!answer.ok) {
      post({ event: 'write-failed', op: req.op, error: answer.error });
    }
  });
});
