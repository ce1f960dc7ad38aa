/**
 * A hostile ESXi-side peer against cross-node vMotion (src/access/cluster/vmotion-handover.ts,
 * the `vmotions` table), and hostile rows against `vspc-admin status`'s cluster view. Two
 * in-process nodes on a real PostgreSQL (test/support/cluster-link.ts). From an attacker's
 * session: each case was found failing or checked holding there.
 *
 * Store calls are counted by wrapping the node's PgConsoleStore methods (the real
 * method still runs): each vmotionFind / vmotionPublish is a synchronous round-trip to
 * PostgreSQL during which the node's main thread is blocked in Atomics.wait.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid, waitUntil } from '../support/server.js';
import { startLinkedCluster, type LinkedCluster, type LinkedNode } from '../support/cluster-link.js';
import { SimulatedVm } from '../support/sim/index.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { vspcAdmin } from '../support/cli.js';
import { PEER_LOOKUP_BURST, PEER_LOOKUPS_PER_SECOND } from '../../src/access/cluster/vmotion-handover.js';
import { MAX_REPLACED_BEGINS } from '../../src/domain/vmotion.js';

let pgServer: TestPostgres;
let cluster: LinkedCluster;
const c = new Cleanup();

before(async () => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  cluster = await startLinkedCluster(url, c, [
    { id: 'node-a', host: '127.0.0.2' },
    { id: 'node-b', host: '127.0.0.3' },
  ]);
});
after(async () => {
  await c.run();
  await pgServer?.stop();
});

function dbName(): string {
  return cluster.url.slice(cluster.url.lastIndexOf('/') + 1, cluster.url.indexOf('?'));
}

async function vmOn(node: LinkedNode, uuid: string, name: string, skipDoProxy = false): Promise<SimulatedVm> {
  const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: node.ts.proxyPort, uuid, name, skipDoProxy });
  c.add(() => vm.destroy());
  return vm;
}

/** Counts (and times) calls of one method of a node's PostgreSQL store. */
function spy(node: LinkedNode, method: string): { calls: number; blockedMs: number; restore(): void } {
  const pg = (node.ts.server as unknown as { pg: Record<string, (...a: unknown[]) => unknown> }).pg;
  const orig = pg[method];
  const s = {
    calls: 0,
    blockedMs: 0,
    restore: () => {
      pg[method] = orig;
    },
  };
  pg[method] = function (this: unknown, ...args: unknown[]) {
    s.calls++;
    const t0 = process.hrtime.bigint();
    try {
      return orig.apply(this, args);
    } finally {
      s.blockedMs += Number(process.hrtime.bigint() - t0) / 1e6;
    }
  };
  c.add(() => s.restore());
  return s;
}

test('a flood of VMOTION-PEERs with random tokens from one address: a database look-up each only within the address\'s budget, then refused without one', async (t) => {
  const [, b] = cluster.nodes;
  const finds = spy(b, 'vmotionFind');
  const attempts = 150;
  let accepted = 0;
  const t0 = Date.now();
  // One connection per attempt: a refused PEER closes the connection.
  for (let batch = 0; batch < attempts; batch += 25) {
    const rs = await Promise.all(
      Array.from({ length: 25 }, async () => {
        const id = esxiUuid();
        const vm = await vmOn(b, id.text, 'guesser', true);
        const ok = await vm.vmotionPeer(randomBytes(10), 1000);
        vm.destroy();
        return ok;
      }),
    );
    accepted += rs.filter(Boolean).length;
  }
  t.diagnostic(`${attempts} forged PEERs from 127.0.0.1: ${finds.calls} vmotionFind calls, main thread blocked ${finds.blockedMs.toFixed(1)} ms in total`);
  assert.equal(accepted, 0, 'no forged PEER accepted');
  // The budget: a burst, then a rate; the bound grows only with the time the flood took.
  const bound = PEER_LOOKUP_BURST + Math.ceil((PEER_LOOKUPS_PER_SECOND * (Date.now() - t0)) / 1000) + 1;
  assert.ok(finds.calls <= bound, `at most ${bound} database look-ups for ${attempts} forged PEERs from one address; got ${finds.calls}`);
  assert.ok(finds.calls < attempts, 'some refused without a look-up');
  await b.ts.logs.waitFor((l) => l.errorCode === 'VSPC_VMOTION_PEER_FLOOD' && l.security === true, 5000);
});

test('VMOTION-BEGINs pipelined on one connection: past MAX_REPLACED_BEGINS replacing one another the connection is closed; no row is left', async (t) => {
  const [a] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'beginner');
  await a.ts.waitRegistered(id.text, '', 10_000);
  const publishes = spy(a, 'vmotionPublish');
  const n = 300;
  for (let i = 0; i < n; i++) vm.sendExt(Ext.VMOTION_BEGIN, Buffer.from([i >> 8, i & 0xff]));
  await vm.whenClosed(10_000);
  await a.ts.logs.waitFor((l) => l.errorCode === 'VSPC_VMOTION_BEGIN_FLOOD', 5000);
  await waitUntil(async () => (await pgServer.query('SELECT 1 FROM vmotions', [], dbName())).length === 0, 10_000, 'rows withdrawn');
  t.diagnostic(`${n} BEGINs on one connection: ${publishes.calls} vmotionPublish calls, main thread blocked ${publishes.blockedMs.toFixed(1)} ms`);
  assert.ok(publishes.calls <= MAX_REPLACED_BEGINS + 1, `at most ${MAX_REPLACED_BEGINS + 1} publishes; got ${publishes.calls}`);
});

test('16 hostile sources BEGIN with the victim\'s sequence: the victim\'s destination on the other node still finds its own row (the whole token is the key)', async () => {
  const [a, b] = cluster.nodes;
  const seq = Buffer.from([0x5e, 0x91]);
  const hostile: SimulatedVm[] = [];
  for (let i = 0; i < 16; i++) {
    const id = esxiUuid();
    const vm = await vmOn(a, id.text, `squatter-${i}`);
    await a.ts.waitRegistered(id.text, '', 10_000);
    assert.equal((await vm.vmotionBegin(seq)).kind, 'goahead');
    hostile.push(vm);
  }
  const id = esxiUuid();
  const victim = await vmOn(a, id.text, 'victim');
  await a.ts.waitRegistered(id.text, '', 10_000);
  const r = await victim.vmotionBegin(seq);
  assert.equal(r.kind, 'goahead');
  const token = Buffer.concat([seq, (r as { secret: Buffer }).secret]);
  const sharing = await pgServer.query(`SELECT encode(token, 'hex') AS t FROM vmotions WHERE seq = decode('${seq.toString('hex')}', 'hex')`, [], dbName());
  assert.equal(sharing.length, 17, '16 squatters + the victim share the sequence');
  assert.ok(sharing.some((x) => (x as { t: string }).t === token.toString('hex')), 'the victim\'s row is published and live');
  const dest = await vmOn(b, id.text, 'victim', true);
  assert.equal(await dest.vmotionPeer(token, 3000), true, 'the genuine destination got PEER-OK');
  for (const v of hostile) v.vmotionAbort();
  victim.vmotionAbort();
});

test('a completed cross-node vMotion\'s seq+secret replayed on either node, and a COMPLETE with no PEER, get nothing', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'replayed');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  const seq = Buffer.from([0x33, 0x44]);
  const r = await vm.vmotionBegin(seq);
  const token = Buffer.concat([seq, (r as { secret: Buffer }).secret]);
  const dest = await vmOn(b, id.text, 'replayed', true);
  assert.equal(await dest.vmotionPeer(token, 5000), true);
  dest.vmotionComplete(seq);
  await dest.barrier();
  await waitUntil(() => b.ts.server.registry.get('esxi', id.hex, '')?.source?.peer === `127.0.0.1:${dest.localPort}`, 10_000, 'moved to node B');
  await waitUntil(async () => (await pgServer.query(`SELECT 1 FROM vmotions WHERE token = decode('${token.toString('hex')}', 'hex')`, [], dbName())).length === 0, 5000, 'row withdrawn');
  for (const node of [a, b]) {
    const replay = await vmOn(node, id.text, 'replayed', true);
    assert.equal(await replay.vmotionPeer(token, 1000), false, `replay refused on ${node.id}`);
  }
  // COMPLETE from a connection that never sent PEER: ignored, the console stays put.
  const intruder = await vmOn(a, esxiUuid().text, 'intruder', true);
  intruder.vmotionComplete(seq);
  await intruder.barrier();
  assert.equal(b.ts.server.registry.get('esxi', id.hex, '')?.source?.peer, `127.0.0.1:${dest.localPort}`, 'nothing moved');
  assert.ok(hub);
});

test('terminal escapes in the `nodes` table (node id, link host) reach `vspc-admin status` only as "?"', async () => {
  const [a] = cluster.nodes;
  const now = Date.now();
  await pgServer.query(
    `INSERT INTO nodes (node_id, link_host, link_port, started, heartbeat) VALUES ($1, $2, 1, $3, $3)`,
    ['evil\x1b]0;pwned\x07\x1b[2J\u009b31m', 'h\x1b[1;31m\u202eost', now],
    dbName(),
  );
  // The view is cached for 1 s: poll until the row shows.
  let r = await vspcAdmin(a.ts.adminAddress, ['status']);
  await waitUntil(async () => /evil/.test((r = await vspcAdmin(a.ts.adminAddress, ['status'])).stdout), 10_000, 'the row in status');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!/[\x1b\x07\u009b\u202e]/.test(r.stdout), `no control characters in:\n${JSON.stringify(r.stdout)}`);
  assert.match(r.stdout, /evil\?\]0;pwned/);
  await pgServer.query(`DELETE FROM nodes WHERE node_id LIKE 'evil%'`, [], dbName());
});

test('one `nodes` row with an out-of-range heartbeat is shown without it; the other nodes stay listed', async () => {
  const [a] = cluster.nodes;
  await pgServer.query(
    `INSERT INTO nodes (node_id, link_host, link_port, started, heartbeat) VALUES ('skewed', 'h', 1, 0, 9000000000000000)`,
    [],
    dbName(),
  );
  c.add(() => pgServer.query(`DELETE FROM nodes WHERE node_id = 'skewed'`, [], dbName()).then(() => undefined));
  // The view is cached for 1 s: poll until it reflects the row (listed, or the view lost).
  let r = await vspcAdmin(a.ts.adminAddress, ['status']);
  await waitUntil(async () => /skewed|unknown/.test((r = await vspcAdmin(a.ts.adminAddress, ['status'])).stdout), 10_000, 'the row seen by status');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^\s+skewed\s+gone\s+h:1\s+-$/m, `the row with "-" in:\n${r.stdout}`);
  assert.match(r.stdout, new RegExp(`^\\s+${a.id} \\(this\\)`, 'm'), `node-a listed in:\n${r.stdout}`);
});

test('the source BEGINs then disconnects; the destination on the other node still completes, the console moves, nothing is left in `vmotions`', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'leaver');
  await a.ts.waitRegistered(id.text, '', 10_000);
  const seq = Buffer.from([0x71, 0x72]);
  const r = await vm.vmotionBegin(seq);
  const token = Buffer.concat([seq, (r as { secret: Buffer }).secret]);
  vm.destroy();
  await vm.whenClosed(5000);
  const dest = await vmOn(b, id.text, 'leaver', true);
  assert.equal(await dest.vmotionPeer(token, 5000), true);
  dest.vmotionComplete(seq);
  await dest.barrier();
  await waitUntil(() => b.ts.server.registry.get('esxi', id.hex, '')?.source?.peer === `127.0.0.1:${dest.localPort}`, 10_000, 'moved to node B');
  await waitUntil(async () => (await pgServer.query(`SELECT 1 FROM vmotions WHERE token = decode('${token.toString('hex')}', 'hex')`, [], dbName())).length === 0, 5000, 'row withdrawn');
  dest.send('after;');
  assert.equal(dest.closed, false);
});
