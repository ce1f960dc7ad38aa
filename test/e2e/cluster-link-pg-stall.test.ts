/**
 * A stalled PostgreSQL (its backends SIGSTOPped: a partition, a stuck server) must not
 * freeze node A: the cluster lookups at attach time block at most briefly once, then
 * the database is marked unavailable and remote attaches are refused at once with
 * VSPC_LINK_UNAVAILABLE, while A's own console keeps flowing.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid } from '../support/server.js';
import { startLinkedCluster } from '../support/cluster-link.js';
import { BrokerPeer } from '../support/broker-client.js';

let pgServer: TestPostgres | undefined;
const c = new Cleanup();
const stopped: number[] = [];
after(async () => {
  for (const pid of stopped) try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
  await c.run();
  await pgServer?.stop();
});

test('a stalled PostgreSQL: a remote attach on node A does not block its event loop for a second', async () => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  const cluster = await startLinkedCluster(url, c, [{ id: 'node-a', host: '127.0.0.2' }, { id: 'node-b', host: '127.0.0.3' }], { brokerListen: { host: '127.0.0.1', port: 0 } });
  await cluster.nodes[1].ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, c);
  const tcp = cluster.nodes[0].ts.server.broker!.addresses.tcp!;
  const p = await BrokerPeer.connect({ host: '127.0.0.1', port: tcp.port });
  c.add(() => p.destroy());
  await p.list(); // mirrors made while the database answers
  // Stall every backend of the postmaster we started (PIDs of our own child's children).
  const kids = execFileSync('pgrep', ['-P', String(pgServer.pid)]).toString().trim().split('\n').map(Number).filter((n) => n > 0);
  for (const pid of kids) { process.kill(pid, 'SIGSTOP'); stopped.push(pid); }
  let worst = 0;
  let last = Date.now();
  const tick = setInterval(() => { const now = Date.now(); worst = Math.max(worst, now - last); last = now; }, 20);
  try {
    const t0 = Date.now();
    p.send({ kind: 'select', address: 'web01' });
    await p.next('selected', 0, 15_000).catch(() => undefined);
    p.send({ kind: 'lock-request', mode: 'readonly', force: false, user: 'x' });
    await Promise.race([p.waitClosed(15_000), p.next('lock-granted', 0, 15_000)]).catch(() => undefined);
    assert.ok(worst < 1000, `node A's event loop was blocked for ${worst} ms in one go (${Date.now() - t0} ms in all) by one attach while PostgreSQL stalled`);
  } finally {
    clearInterval(tick);
    for (const pid of stopped.splice(0)) try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
  }
});
