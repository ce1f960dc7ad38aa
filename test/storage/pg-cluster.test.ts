/**
 * The PostgreSQL store and cluster ownership, against a real PostgreSQL server started
 * by the test itself (test/support/postgres.ts): the numbered migrations, two vspc
 * nodes on one database (sticky ports unique cluster-wide, one owner per console, the
 * cluster-wide admin list), a node's death — its database session terminated, or its
 * process SIGKILLed — releasing its consoles to the other node with the same ports.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { PgConsoleStore } from '../../src/storage/pg/pg-store.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { TestServer, Cleanup, esxiUuid, withTimeout, tempDir, waitUntil } from '../support/server.js';
import { SimulatedVm } from '../support/sim/index.js';
import { reservePortRange } from '../support/ports.js';
import { Child, VSPC_JS, runNode, vspcAdmin } from '../support/cli.js';
import type { PortView } from '../../src/admin/views.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

let pgServer: TestPostgres;

before(async () => {
  pgServer = await startPostgres();
});
after(async () => {
  await pgServer?.stop();
});

const KEY = (n: number) => n.toString(16).padStart(32, '0');

test('migrations: a fresh PostgreSQL database reaches the newest schema version with the same constraints as SQLite', async (t) => {
  const url = await pgServer.createDatabase();
  const store = new PgConsoleStore({ url, nodeId: 'm1', range: { start: 21000, end: 21009 } });
  t.after(() => store.close());
  assert.equal(store.schemaVersion(), MIGRATIONS[MIGRATIONS.length - 1].version);
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  const tables = (await pgServer.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", [], db)).map((r) => r.t);
  assert.deepEqual(tables, ['access_ports', 'consoles', 'nodes', 'port_low_water', 'unused_consoles', 'vmotions', 'vspc_schema']);
  // The database itself refuses what the schema forbids (as SQLite's CHECKs and triggers do).
  await assert.rejects(pgServer.query("INSERT INTO consoles (kind, key, tcp_port, first_seen, last_seen) VALUES ('esxi', 'NOT-HEX', 21001, 0, 0)", [], db), /check constraint/);
  const { record } = store.register('esxi', KEY(1), '', 'vm1');
  await assert.rejects(
    pgServer.query(`INSERT INTO access_ports (console_id, method, tcp_port) VALUES (${record.id}, 'raw', ${record.tcpPort})`, [], db),
    /tcp_port is a console port/,
  );
  // A second node opening the same database runs no migration again.
  const other = new PgConsoleStore({ url, nodeId: 'm2', range: { start: 21000, end: 21009 } });
  t.after(() => other.close());
  assert.equal(other.list().length, 1);
});

test('migrations: a database at version 1 (serial_ports) is upgraded keeping ids and ports; new ids continue after them', async (t) => {
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  await pgServer.query(MIGRATIONS[0].pg, [], db);
  await pgServer.query(`INSERT INTO serial_ports (id, uuid, label, name, tcp_port, first_seen, last_seen) VALUES (7, '${KEY(7)}', 'com2', 'old', 21005, 1, 2)`, [], db);
  await pgServer.query('CREATE TABLE vspc_schema (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL); INSERT INTO vspc_schema (version) VALUES (1)', [], db);
  const store = new PgConsoleStore({ url, nodeId: 'up', range: { start: 21000, end: 21009 } });
  t.after(() => store.close());
  assert.equal(store.schemaVersion(), MIGRATIONS[MIGRATIONS.length - 1].version);
  const old = store.getById(7);
  assert.equal(old?.tcpPort, 21005);
  assert.equal(old?.label, 'com2');
  assert.equal(old?.kind, 'esxi');
  const { record } = store.register('esxi', KEY(8), '', 'new');
  assert.ok(record.id > 7, `a new id after the copied ones, got ${record.id}`);
  assert.equal(record.tcpPort, 21000);
});

test('two stores on one database never allocate the same port, registering in turn; a key keeps its port through either', async (t) => {
  const url = await pgServer.createDatabase();
  const range = { start: 21100, end: 21299 };
  const a = new PgConsoleStore({ url, nodeId: 'pa', range });
  const b = new PgConsoleStore({ url, nodeId: 'pb', range });
  t.after(() => {
    a.close();
    b.close();
  });
  const ports: number[] = [];
  for (let i = 0; i < 40; i++) {
    ports.push(a.register('esxi', KEY(1000 + i), '', null).record.tcpPort);
    ports.push(b.register('esxi', KEY(2000 + i), '', null).record.tcpPort);
    ports.push(b.accessPort(b.register('esxi', KEY(2000 + i), '', null).record.id, 'raw'));
  }
  assert.equal(new Set(ports).size, ports.length, 'every console and access port distinct');
  // Sticky: the same key through the other node gets the same port.
  assert.equal(b.register('esxi', KEY(1000), '', null).record.tcpPort, ports[0]);
  assert.equal(b.register('esxi', KEY(1000), '', null).created, false);
});

test('the allocator: lowest free port first, also one freed by the other node (deleted, moved, cascaded); the low-water mark follows', async (t) => {
  const url = await pgServer.createDatabase();
  const range = { start: 21300, end: 21399 };
  const a = new PgConsoleStore({ url, nodeId: 'la', range });
  const b = new PgConsoleStore({ url, nodeId: 'lb', range });
  const sql = new (await import('pg')).default.Client({ connectionString: url });
  await sql.connect();
  t.after(async () => {
    a.close();
    b.close();
    await sql.end();
  });
  const mark = async () => (await sql.query<{ port: number }>('SELECT port FROM port_low_water WHERE range_start = $1', [range.start])).rows[0]?.port;
  const recs = [];
  for (let i = 0; i < 30; i++) recs.push((i % 2 ? a : b).register('esxi', KEY(3000 + i), '', null).record);
  assert.deepEqual(recs.map((r) => r.tcpPort), Array.from({ length: 30 }, (_, i) => range.start + i), 'dense from the start, in turn');
  assert.equal(await mark(), range.start + 30, 'the mark is one past the last port taken');
  // Freed by b (deleted): a's next allocation takes it.
  assert.equal(b.forget(recs[7].id), true);
  assert.equal(await mark(), range.start + 7, 'a delete lowers the mark in its own transaction');
  assert.equal(a.register('esxi', KEY(4000), '', null).record.tcpPort, range.start + 7);
  assert.equal(await mark(), range.start + 8, 'and the allocation moves it on past the port it took');
  // Freed by a move (setPort) and by a cascade (a console with an access port deleted).
  b.setPort(recs[3].id, range.start + 80);
  const raw = a.accessPort(recs[5].id, 'raw');
  assert.equal(raw, range.start + 3, 'the access port takes the port the move freed');
  assert.equal(a.forget(recs[5].id), true);
  assert.equal(await mark(), range.start + 3, 'the cascade freed the access port and the console port');
  assert.equal(b.register('esxi', KEY(4001), '', null).record.tcpPort, range.start + 3);
  assert.equal(a.register('esxi', KEY(4002), '', null).record.tcpPort, range.start + 5);
  assert.equal(await mark(), range.start + 6);
  assert.equal(b.relocate(recs[20].id).tcpPort, range.start + 30, 'relocate: the lowest free port (20 is its own until moved)');
  assert.equal(await mark(), range.start + 6, 'a relocation frees a port above the mark: the mark stays');
  assert.equal(a.register('esxi', KEY(4003), '', null).record.tcpPort, range.start + 20, 'the port the relocation freed');
  assert.equal(await mark(), range.start + 21);
  // The range full: exhausted, the mark past the end; a port freed at the top is found again.
  for (let i = 0; i < 100; i++) {
    try {
      a.register('esxi', KEY(5000 + i), '', null);
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'VSPC_PORT_RANGE_EXHAUSTED');
      break;
    }
  }
  assert.throws(() => b.register('esxi', KEY(6000), '', null), /no free port/);
  const top = b.register('esxi', KEY(5000), '', null).record;
  assert.equal(top.tcpPort, range.start + 31, 'the fill began after the relocated console\'s new port');
  assert.equal(b.forget(top.id), true);
  assert.equal(b.register('esxi', KEY(6001), '', null).record.tcpPort, top.tcpPort);
});

test('rename is not waited for but ordered on the session; a record gone meanwhile is reported through onWriteError as VSPC_NOT_FOUND', async (t) => {
  const url = await pgServer.createDatabase();
  const failed: Array<{ op: string; code: string }> = [];
  let reported: () => void = () => undefined;
  const a = new PgConsoleStore({
    url,
    nodeId: 'ra',
    range: { start: 21400, end: 21409 },
    onWriteError: (op, err) => {
      failed.push({ op, code: err.code });
      reported();
    },
  });
  t.after(() => a.close());
  const { record } = a.register('esxi', KEY(7000), '', null);
  a.rename(record.id, 'web01');
  assert.equal(a.getById(record.id)?.name, 'web01', 'the next call on the same session sees it');
  const gone = new Promise<void>((resolve) => (reported = resolve));
  a.rename(record.id + 1000, 'ghost');
  await withTimeout(gone, 5000, 'the failed rename reported');
  assert.deepEqual(failed, [{ op: 'rename', code: 'VSPC_NOT_FOUND' }]);
});

test('upgrade from schema 6 with consoles (no mark yet): a port freed while the first allocation runs stays below the mark, so it is allocated next', async (t) => {
  // attack-s21: the first allocation in a range with no port_low_water row inserted
  // the mark one past its port; a DELETE that committed after the allocation's
  // snapshot found no row to lower (or to bump the generation of), so its port stayed
  // below the mark, free and never allocated again (the range could even report
  // "exhausted" with that port free).
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  for (const m of MIGRATIONS.filter((m) => m.version <= 6)) await pgServer.query(m.pg, [], db);
  await pgServer.query('CREATE TABLE IF NOT EXISTS vspc_schema (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL)', [], db);
  await pgServer.query('INSERT INTO vspc_schema (version) VALUES (6) ON CONFLICT (one) DO UPDATE SET version = 6', [], db);
  const range = { start: 21400, end: 21409 };
  for (let i = 0; i < 5; i++) {
    await pgServer.query(`INSERT INTO consoles (kind, key, label, name, tcp_port, first_seen, last_seen) VALUES ('esxi', '${KEY(7000 + i)}', '', 'old${i}', ${range.start + i}, 1, 2)`, [], db);
  }
  const a = new PgConsoleStore({ url, nodeId: 'ua', range });
  const sql = new (await import('pg')).default.Client({ connectionString: url });
  await sql.connect();
  t.after(async () => {
    a.close();
    await sql.end().catch(() => undefined);
  });
  assert.equal(a.schemaVersion(), MIGRATIONS[MIGRATIONS.length - 1].version);
  const old2 = a.list().find((r) => r.tcpPort === range.start + 2)!;
  // Another node forgets console 2; its transaction commits after a's allocation read the
  // ports. It runs in a thread of its own: a.register() blocks this one, and (fixed) waits
  // for that transaction's lock on the mark row. The thread commits once a lock waiter
  // shows up in pg_locks (fixed) or when told to (register returned without waiting).
  const freer = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const pg = require(workerData.pgPath);
     (async () => {
       const c = new pg.Client({ connectionString: workerData.url });
       await c.connect();
       await c.query('BEGIN');
       await c.query('DELETE FROM consoles WHERE id = $1', [workerData.id]);
       let told = false;
       parentPort.on('message', () => { told = true; });
       parentPort.postMessage('deleted');
       for (;;) {
         if (told) break;
         const w = await c.query("SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted");
         if (w.rows[0].n > 0) break;
         await new Promise((r) => setImmediate(r));
       }
       await c.query('COMMIT');
       await c.end();
       parentPort.postMessage('committed');
     })().catch((err) => parentPort.postMessage('failed: ' + err.message));`,
    { eval: true, workerData: { pgPath: createRequire(import.meta.url).resolve('pg'), url, id: old2.id } },
  );
  t.after(() => freer.terminate());
  const said: string[] = [];
  const heard = (what: string) =>
    withTimeout(
      new Promise<void>((resolve) => {
        const check = () => (said.includes(what) ? resolve() : freer.once('message', (m: string) => (said.push(m), check())));
        check();
      }),
      10_000,
      `the freeing transaction: ${what}`,
    );
  await heard('deleted');
  const first = a.register('esxi', KEY(7100), '', null).record;
  assert.equal(first.tcpPort, range.start + 5, 'console 2 was still there for this allocation');
  freer.postMessage('commit');
  await heard('committed');
  const taken = new Set(a.list().map((r) => r.tcpPort));
  const mark = (await sql.query<{ port: number }>('SELECT port FROM port_low_water WHERE range_start = $1', [range.start])).rows[0]?.port ?? range.start;
  for (let p = range.start; p < mark; p++) assert.ok(taken.has(p), `port ${p} is below the mark ${mark} but free`);
  assert.equal(a.register('esxi', KEY(7101), '', null).record.tcpPort, range.start + 2, 'the freed port is the next one allocated');
});

test('frees lock the marks in range order: a forget whose trigger finds the marks in another physical order waits instead of deadlocking', async (t) => {
  // attack-s21: the trigger's UPDATE found the marks of [31000, ...] and [31010, ...]
  // by a bitmap heap scan, in physical order (here 31010 first), while a transaction
  // that freed a port below 31010 held only 31000's mark: two frees, each holding one
  // mark and waiting for the other's, "deadlock detected" (a forget failing in the
  // four-stores race below, one run in eight).
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  const store = new PgConsoleStore({ url, nodeId: 'dl', range: { start: 31010, end: 31200 } }); // its mark row first
  const pgLib = (await import('pg')).default;
  const a = new pgLib.Client({ connectionString: url });
  const b = new pgLib.Client({ connectionString: url });
  await a.connect();
  await b.connect();
  t.after(async () => {
    store.close();
    await Promise.allSettled([a.end(), b.end()]);
  });
  await a.query('INSERT INTO port_low_water (range_start, port) VALUES (31000, 31000)');
  const id = async (n: number, port: number) =>
    (await a.query<{ id: string }>(`INSERT INTO consoles (kind, key, label, name, tcp_port, first_seen, last_seen) VALUES ('esxi', '${KEY(n)}', '', null, ${port}, 1, 2) RETURNING id`)).rows[0].id;
  const low = await id(8001, 31005);
  const high1 = await id(8002, 31120);
  const high2 = await id(8003, 31130);
  await a.query('BEGIN');
  await a.query('DELETE FROM consoles WHERE id = $1', [low]); // holds 31000's mark only
  const other = b.query('DELETE FROM consoles WHERE id = $1', [high1]).then(() => 'ok', (err: Error) => err.message);
  await waitUntil(async () => (await pgServer.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted', [], db))[0].n > 0, 10_000, 'the other free waits');
  const mine = await a.query('DELETE FROM consoles WHERE id = $1', [high2]).then(() => 'ok', (err: Error) => err.message);
  await a.query(mine === 'ok' ? 'COMMIT' : 'ROLLBACK');
  assert.deepEqual([mine, await other], ['ok', 'ok']);
  const marks = await pgServer.query<{ range_start: number; port: number }>('SELECT range_start, port FROM port_low_water ORDER BY 1', [], db);
  assert.deepEqual(marks.map((m) => [m.range_start, m.port]), [[31000, 31000], [31010, 31010]]);
});

test('four stores in four threads racing (register, forget, setPort, access ports; ranges with one start and other ends, another start inside; reserved ports): no port twice, and every port below a mark is taken or reserved', async (t) => {
  // attack-s21. Each thread's store has its own database worker, and the threads run at
  // once, so that transactions really interleave; the database's UNIQUE constraints
  // would turn a port allocated twice into a VSPC_PORT_IN_USE of register/accessPort.
  const url = await pgServer.createDatabase();
  const db = url.slice(url.lastIndexOf('/') + 1, url.indexOf('?'));
  const reserved = [31005, 31050, 31100];
  const ranges = [
    { start: 31000, end: 31150 },
    { start: 31000, end: 31170 },
    { start: 31010, end: 31170 },
    { start: 31000, end: 31150 },
  ];
  const storeUrl = new URL('../../src/storage/pg/pg-store.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.storeUrl).then(({ PgConsoleStore }) => {
      const { url, i, range, reserved, ops } = workerData;
      const s = new PgConsoleStore({ url, nodeId: 'race' + i, range, reserved });
      let x = i * 7919 + 1;
      const rnd = (n) => ((x = (x * 1103515245 + 12345) >>> 0) >>> 8) % n;
      const mine = [];
      const errors = {};
      let k = 0;
      for (let op = 0; op < ops; op++) {
        const r = rnd(10);
        const what = r < 4 || mine.length === 0 ? 'register' : r < 6 ? 'forget' : r < 7 ? 'setPort' : r < 9 ? 'accessPort' : 'forgetAny';
        try {
          if (what === 'register') mine.push(s.register('esxi', (i * 100000 + k++).toString(16).padStart(32, '0'), '', null).record.id);
          else if (what === 'forget') s.forget(mine.splice(rnd(mine.length), 1)[0]);
          else if (what === 'setPort') s.setPort(mine[rnd(mine.length)], range.start + rnd(range.end - range.start + 20));
          else if (what === 'accessPort') s.accessPort(mine[rnd(mine.length)], 'm' + rnd(3));
          else { const all = s.list(); if (all.length > 0) s.forget(all[rnd(all.length)].id); }
        } catch (err) {
          const key = what + ':' + (err.code ?? err.message);
          errors[key] = (errors[key] ?? 0) + 1;
          if (!/PORT_IN_USE|NOT_FOUND|EXHAUSTED/.test(key)) errors[key + ': ' + err.message] = 1;
        }
      }
      s.close();
      parentPort.postMessage(errors);
    }).catch((err) => parentPort.postMessage({ failed: String(err && err.stack || err) }));`;
  const runs = ranges.map(
    (range, i) =>
      new Promise<Record<string, number>>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { storeUrl, url, i, range, reserved, ops: 500 } });
        t.after(() => w.terminate());
        w.once('message', (m: Record<string, number>) => resolve(m));
        w.once('error', reject);
      }),
  );
  const errors = await withTimeout(Promise.all(runs), 90_000, 'the four racing stores');
  for (const e of errors) {
    assert.equal(e.failed, undefined, String(e.failed));
    // setPort to a taken port, ids another thread forgot, a full range: expected; nothing else.
    const unexpected = Object.keys(e).filter((key) => !/^(setPort:VSPC_PORT_IN_USE|\w+:VSPC_NOT_FOUND|(register|accessPort):VSPC_PORT_RANGE_EXHAUSTED)$/.test(key));
    assert.deepEqual(unexpected, []);
  }
  const taken = [
    ...(await pgServer.query<{ p: number }>('SELECT tcp_port AS p FROM consoles', [], db)),
    ...(await pgServer.query<{ p: number }>('SELECT tcp_port AS p FROM access_ports', [], db)),
  ].map((r) => r.p);
  const set = new Set(taken);
  assert.equal(set.size, taken.length, 'no port twice');
  assert.ok(taken.length > 100, `${taken.length} ports taken at the end`);
  const marks = await pgServer.query<{ range_start: number; port: number }>('SELECT range_start, port FROM port_low_water', [], db);
  assert.equal(marks.length, 2, 'one mark per range start');
  for (const m of marks) {
    for (let p = m.range_start; p < m.port; p++) assert.ok(set.has(p) || reserved.includes(p), `port ${p} free below the mark ${m.port} of ${m.range_start}`);
  }
});

// ------------------------------------------------------------------ two vspc nodes

interface Node {
  ts: TestServer;
  id: string;
}

async function startNode(url: string, id: string, portRange: { start: number; end: number }, clientHost: string): Promise<Node> {
  const ts = await TestServer.start({ portRange, config: { dbPath: url, nodeId: id, clientListenHost: clientHost } });
  return { ts, id };
}

/** The next `added` hub for this UUID on a node's registry. */
function nextAdded(node: Node, hex: string): Promise<ConsoleHub> {
  return new Promise((resolve) => {
    const on = (hub: ConsoleHub) => {
      if (hub.identity.key !== hex) return;
      node.ts.server.registry.off('added', on);
      resolve(hub);
    };
    node.ts.server.registry.on('added', on);
  });
}

function nextRemoved(node: Node, hex: string): Promise<ConsoleHub> {
  return new Promise((resolve) => {
    const on = (hub: ConsoleHub) => {
      if (hub.identity.key !== hex) return;
      node.ts.server.registry.off('removed', on);
      resolve(hub);
    };
    node.ts.server.registry.on('removed', on);
  });
}

async function connectVm(node: Node, uuid: { text: string; hex: string }, name: string, c: Cleanup): Promise<{ vm: SimulatedVm; hub: ConsoleHub }> {
  const added = nextAdded(node, uuid.hex);
  const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: node.ts.proxyPort, uuid: uuid.text, name });
  c.add(() => vm.destroy());
  const hub = await withTimeout(added, 10_000, `${name} registered on node ${node.id}`);
  return { vm, hub };
}

const byName = (rows: PortView[], name: string) => rows.find((r) => r.name === name);

test('two vspc nodes on one PostgreSQL: unique sticky ports, one owner per console, the cluster-wide list; a dead node releases its consoles to the other with the same ports', async (t) => {
  const url = await pgServer.createDatabase();
  const range = await reservePortRange(8);
  const c = new Cleanup();
  const a = await startNode(url, 'node-a', range, '127.0.0.2');
  const b = await startNode(url, 'node-b', range, '127.0.0.3');
  t.after(async () => {
    await c.run();
    await a.ts.dispose();
    await b.ts.dispose();
  });
  const u1 = esxiUuid();
  const u2 = esxiUuid();
  const { hub: h1 } = await connectVm(a, u1, 'vm-one', c);
  const { hub: h2 } = await connectVm(b, u2, 'vm-two', c);
  const p1 = h1.identity.tcpPort;
  assert.notEqual(h2.identity.tcpPort, p1, 'node B never hands out the port node A gave');
  assert.ok(p1 >= range.start && p1 <= range.end);

  // The same VM knocking at node B while node A owns it: refused, A keeps it.
  const refused = await SimulatedVm.connect({ host: '127.0.0.1', port: b.ts.proxyPort, uuid: u1.text, name: 'vm-one' });
  c.add(() => refused.destroy());
  await refused.whenClosed(10_000);
  assert.ok(b.ts.logs.find((l) => JSON.stringify(l).includes('VSPC_CONSOLE_OWNED_ELSEWHERE')), 'node B says why');
  assert.equal(b.ts.server.registry.get('esxi', u1.hex, ''), undefined);
  assert.equal(h1.source !== null, true, 'node A still serves vm-one');

  // Either node's admin list shows the whole cluster, with owners. A VM's name reaches the
  // database after its registration (PgConsoleStore.rename is posted, not waited for): both
  // names are in both lists first.
  await waitUntil(
    async () => (await Promise.all([a, b].map((n) => n.ts.ports()))).every((rows) => byName(rows, 'vm-one') && byName(rows, 'vm-two')),
    10_000,
    'both names in either node\'s list',
  );
  for (const n of [a, b]) {
    const rows = await n.ts.ports();
    assert.equal(byName(rows, 'vm-one')?.node, 'node-a', `on ${n.id}`);
    assert.equal(byName(rows, 'vm-one')?.port, p1);
    assert.equal(byName(rows, 'vm-two')?.node, 'node-b', `on ${n.id}`);
    assert.equal(byName(rows, 'vm-two')?.port, h2.identity.tcpPort);
  }
  assert.equal(byName(await b.ts.ports(), 'vm-one')?.state, 'elsewhere');
  // vspc-admin list: a NODE column in a cluster.
  const listed = await vspcAdmin(b.ts.adminAddress, ['list']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /NODE/);
  assert.match(listed.stdout, new RegExp(`^${p1} .*vm-one .*elsewhere .*node-a\\s*$`, 'm'));

  // Node A's database session dies (as when its machine or network goes): PostgreSQL
  // releases its locks, node A gives up every console and closes their connections.
  const droppedOnA = nextRemoved(a, u1.hex);
  const terminated = await pgServer.query<{ ok: boolean }>("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'vspc:node-a'");
  assert.equal(terminated.length, 1);
  await withTimeout(droppedOnA, 10_000, 'node A drops vm-one after losing its session');
  assert.equal(a.ts.server.registry.size, 0);
  assert.ok(a.ts.logs.find((l) => l.message === 'database session lost: this node gave up every console it owned'));

  // The terminated backend releases its locks as it exits, a moment after node A saw
  // its connection fail: until then the cluster still names node A (a VM knocking at B
  // meanwhile is refused, and ESXi simply retries).
  await waitUntil(async () => byName(await b.ts.ports(), 'vm-one')?.node === null, 10_000, 'node A\'s locks released by PostgreSQL');
  // vm-one reconnects through node B: same sticky port, now owned by B.
  const { hub: moved } = await connectVm(b, u1, 'vm-one', c);
  assert.equal(moved.identity.tcpPort, p1, 'the console keeps its port on the other node');
  const rows = await b.ts.ports();
  assert.equal(byName(rows, 'vm-one')?.node, 'node-b');
  assert.equal(byName(rows, 'vm-one')?.state, 'connected');
});

test('a node killed with SIGKILL: its consoles are released by PostgreSQL and the other node takes them with the same ports', async (t) => {
  const url = await pgServer.createDatabase();
  const ports = await reservePortRange(10);
  const dir = tempDir();
  const c = new Cleanup();
  t.after(async () => {
    await c.run();
    dir.remove();
  });
  const adminA = `127.0.0.1:${ports.start + 1}`;
  const nodeA = new Child(VSPC_JS, [
    '--proxy-listen', `127.0.0.1:${ports.start}`,
    '--admin-listen', adminA,
    '--db', url,
    '--node-id', 'killed',
    '--port-range', `${ports.start + 2}-${ports.end}`,
    '--client-listen-host', '127.0.0.4',
    '--broker-socket', 'off',
  ]);
  c.add(() => nodeA.kill());
  await nodeA.waitForStderr(/"message":"vspc started"/, 30_000);
  const b = await startNode(url, 'survivor', { start: ports.start + 2, end: ports.end }, '127.0.0.5');
  c.add(() => b.ts.dispose());

  const u = esxiUuid();
  const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: ports.start, uuid: u.text, name: 'vm-killed' });
  c.add(() => vm.destroy());
  await vm.whenProxied(10_000);
  const registered = await nodeA.waitFor(() => /"message":"VM serial port registered"[^\n]*"port":(\d+)/.exec(nodeA.stderr)?.[1], 10_000, 'registration on node A');
  const port = Number(registered);
  // Node B sees it, owned by node A, through the shared database (named once node A's
  // rename, posted after the registration line, is done).
  let seen: PortView | undefined;
  await waitUntil(async () => (seen = byName(await b.ts.ports(), 'vm-killed')) !== undefined, 10_000, 'vm-killed in node B\'s list');
  assert.equal(seen?.node, 'killed');
  assert.equal(seen?.port, port);

  const vmGone = vm.whenClosed(10_000);
  nodeA.proc.kill('SIGKILL');
  await nodeA.waitExit(10_000);
  await vmGone;
  // PostgreSQL ends the dead node's session when its backend reads the closed socket
  // (asynchronously, a moment after the process is gone): then nobody owns the console.
  let after = byName(await b.ts.ports(), 'vm-killed');
  await waitUntil(async () => (after = byName(await b.ts.ports(), 'vm-killed'))?.node === null, 10_000, 'the dead node\'s ownership released by PostgreSQL');
  assert.equal(after?.node, null);
  assert.equal(after?.state, 'disconnected');
  const { hub } = await connectVm(b, u, 'vm-killed', c);
  assert.equal(hub.identity.tcpPort, port, 'same sticky port on the surviving node');
  assert.equal(byName(await b.ts.ports(), 'vm-killed')?.node, 'survivor');
});

test('--db with a URL of another scheme, or a bad --node-id: a clear error naming the field, non-zero exit', async () => {
  const bad = await runNode(VSPC_JS, ['--db', 'mysql://x@y/z', '--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /db: unsupported database URL scheme "mysql:\/\/"/);
  const noDb = await runNode(VSPC_JS, ['--db', 'postgres://x@y', '--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']);
  assert.notEqual(noDb.code, 0);
  assert.match(noDb.stderr, /db: a PostgreSQL URL needs a database name/);
  const badId = await runNode(VSPC_JS, ['--node-id', 'a b', '--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0']);
  assert.notEqual(badId.code, 0);
  assert.match(badId.stderr, /node-id: must be 1-63 letters/);
});

test('a server that asks for a password none was given: the error says to set PGPASSWORD or ~/.pgpass, not pg\'s SASL words; non-zero exit', async () => {
  // One role that must give a password (scram-sha-256); every other line of pg_hba.conf stays trust.
  await pgServer.query("CREATE ROLE pwuser LOGIN PASSWORD 'not-given'");
  const hba = join(pgServer.dir, 'data', 'pg_hba.conf');
  writeFileSync(hba, 'local all pwuser scram-sha-256\n' + readFileSync(hba, 'utf8'));
  await pgServer.query('SELECT pg_reload_conf()');
  const env = { ...process.env };
  delete env.PGPASSWORD;
  delete env.PGPASSFILE;
  const r = await runNode(VSPC_JS, ['--db', `postgres://pwuser@/postgres?host=${encodeURIComponent(pgServer.dir)}`, '--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--broker-socket', 'off', '--node-id', 'pw'], 15_000, env);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /the server asks for a password and none was given: set PGPASSWORD/);
  assert.match(r.stderr, /VSPC_DB_OPEN_FAILED/);
});
