/**
 * While PostgreSQL stalls (backends SIGSTOPped: a partition, a stuck server), forged
 * VMOTION-PEERs — anyone on the proxy port can send them — must not freeze node B: the
 * first look-up blocks at most CLUSTER_LOOKUP_TIMEOUT_MS (500 ms) and marks the
 * database unavailable; the others are refused without a look-up, as remote attaches
 * are (test/e2e/cluster-link-pg-stall.test.ts). An attacker's session found each PEER
 * blocking up to 5 s. How long each wave took is printed, not asserted: what is
 * asserted is how many look-ups blocked.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid } from '../support/server.js';
import { startLinkedCluster } from '../support/cluster-link.js';
import { SimulatedVm } from '../support/sim/index.js';

let pgServer: TestPostgres | undefined;
const c = new Cleanup();
after(async () => {
  await c.run();
  await pgServer?.stop();
});

test('forged VMOTION-PEERs while PostgreSQL stalls: one bounded look-up, then refused without one; all refused', async (t) => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  const cluster = await startLinkedCluster(url, c, [{ id: 'node-a', host: '127.0.0.2' }, { id: 'node-b', host: '127.0.0.3' }]);
  const b = cluster.nodes[1];
  const pg = (b.ts.server as unknown as { pg: Record<string, (...a: unknown[]) => unknown> }).pg;
  const find = pg.vmotionFind;
  let lookups = 0;
  pg.vmotionFind = function (this: unknown, ...args: unknown[]) {
    lookups++;
    return find.apply(this, args);
  };
  // Three attacker connections, identified only as far as PEER needs (no DO-PROXY).
  const attackers: SimulatedVm[] = [];
  for (let i = 0; i < 6; i++) {
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: b.ts.proxyPort, uuid: esxiUuid().text, name: `g${i}`, skipDoProxy: true });
    c.add(() => vm.destroy());
    attackers.push(vm);
  }
  const resume = pgServer.stallBackends();
  try {
    let t0 = performance.now();
    const results = await Promise.all(attackers.slice(0, 3).map((vm) => vm.vmotionPeer(randomBytes(10), 20_000)));
    t.diagnostic(`3 forged PEERs during a PostgreSQL stall: all refused after ${Math.round(performance.now() - t0)} ms`);
    // A second wave, after the first look-up timed out: refused without a look-up.
    t0 = performance.now();
    const again = await Promise.all(attackers.slice(3).map((vm) => vm.vmotionPeer(randomBytes(10), 20_000)));
    t.diagnostic(`3 more forged PEERs, same stall: all refused after ${Math.round(performance.now() - t0)} ms`);
    assert.deepEqual([...results, ...again], [false, false, false, false, false, false]);
    assert.equal(lookups, 1, `one look-up blocked (the first, bounded); the other ${results.length + again.length - 1} refused without one`);
  } finally {
    resume();
  }
});
