/**
 * A stalled PostgreSQL (its backends SIGSTOPped: a partition, a stuck server) must not
 * freeze node A: the cluster look-ups at attach time block at most briefly once (500 ms),
 * then the database is marked unavailable and remote attaches are refused at once with
 * VSPC_LINK_UNAVAILABLE. What is asserted is how many look-ups were made while the
 * database stalled (each one blocks the event loop); the worst block is printed.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid } from '../support/server.js';
import { offeredOn, startLinkedCluster } from '../support/cluster-link.js';
import { BrokerPeer } from '../support/broker-client.js';

let pgServer: TestPostgres | undefined;
const c = new Cleanup();
after(async () => {
  await c.run();
  await pgServer?.stop();
});

test('a stalled PostgreSQL: remote attaches on node A cost one bounded look-up, then are refused at once with VSPC_LINK_UNAVAILABLE', async (t) => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  const cluster = await startLinkedCluster(url, c, [{ id: 'node-a', host: '127.0.0.2' }, { id: 'node-b', host: '127.0.0.3' }], { brokerListen: { host: '127.0.0.1', port: 0 } });
  await cluster.nodes[1].ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, c);
  const a = cluster.nodes[0];
  // The list node A keeps showing once the database is unavailable must have web01, named.
  await offeredOn(a, 'web01');
  const tcp = a.ts.server.broker!.addresses.tcp!;
  const first = await BrokerPeer.connect({ host: '127.0.0.1', port: tcp.port });
  c.add(() => first.destroy());
  await first.list(); // mirrors made while the database answers
  // Every call of node A's store that reads the cluster blocks its event loop until answered or timed out.
  const pg = (a.ts.server as unknown as { pg: Record<string, (...args: unknown[]) => unknown> }).pg;
  let lookups = 0;
  for (const method of ['clusterList', 'ownerLink']) {
    const orig = pg[method];
    pg[method] = function (this: unknown, ...args: unknown[]) {
      lookups++;
      return orig.apply(this, args);
    };
  }
  const resume = pgServer.stallBackends();
  // For the diagnostic only: the event loop's longest delay while stalled.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  try {
    const attach = async (p: BrokerPeer) => {
      p.send({ kind: 'select', address: 'web01' });
      await p.next('selected', 0, 15_000);
      p.send({ kind: 'lock-request', mode: 'readonly', force: false, user: 'x' });
      await p.waitClosed(15_000);
      return p.text + JSON.stringify(p.messages);
    };
    const refusals = [await attach(first)];
    for (let i = 0; i < 2; i++) {
      const p = await BrokerPeer.connect({ host: '127.0.0.1', port: tcp.port });
      c.add(() => p.destroy());
      refusals.push(await attach(p));
    }
    t.diagnostic(`3 attaches while PostgreSQL stalled: ${lookups} look-up(s), worst event-loop delay ${Math.round(delay.max / 1e6)} ms`);
    for (const r of refusals) assert.match(r, /VSPC_LINK_UNAVAILABLE/);
    assert.equal(lookups, 1, 'the first look-up (bounded) marks the database unavailable; the next attaches ask nothing');
  } finally {
    delay.disable();
    resume();
  }
});
