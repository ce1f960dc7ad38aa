/**
 * The cluster link's lifecycle on a real two-node cluster (test/support/cluster-link.ts):
 * the owner's link dropping under an attached client, reconnect afterwards, and a
 * client through node A that never reads while the VM on node B floods.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid, waitUntil } from '../support/server.js';
import { offeredOn, startLinkedCluster, type LinkedCluster } from '../support/cluster-link.js';
import { BrokerPeer } from '../support/broker-client.js';
import type { SimulatedVm } from '../support/sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

let pgServer: TestPostgres;
const c = new Cleanup();
let cluster: LinkedCluster;
let web01: { vm: SimulatedVm; hub: ConsoleHub };

before(async () => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  cluster = await startLinkedCluster(url, c, [{ id: 'node-a', host: '127.0.0.2' }, { id: 'node-b', host: '127.0.0.3' }], { brokerListen: { host: '127.0.0.1', port: 0 } });
  web01 = await cluster.nodes[1].ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, c);
  web01.vm.send('login: ');
  await web01.vm.barrier();
  await offeredOn(cluster.nodes[0], 'web01');
});
after(async () => {
  await c.run();
  await pgServer?.stop();
});

async function attach(nodeIdx: number, user: string, mode: 'readonly' | 'readwrite' = 'readonly'): Promise<BrokerPeer> {
  const tcp = cluster.nodes[nodeIdx].ts.server.broker!.addresses.tcp!;
  const p = await BrokerPeer.connect({ host: '127.0.0.1', port: tcp.port });
  c.add(() => p.destroy());
  p.send({ kind: 'select', address: 'web01' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode, force: false, user });
  await p.next('lock-granted');
  return p;
}

test('link cut under an attached client on A: the client is told and closed, nothing leaks on either side, a new attach re-dials', async () => {
  const a = cluster.nodes[0].ts.server;
  const b = cluster.nodes[1].ts.server;
  const p = await attach(0, 'ann');
  await p.waitText('login: ', 10_000);
  await waitUntil(() => web01.hub.clients.size === 1, 10_000, 'attached on the owner');
  // The link drops (what a SIGKILL of B or a reset looks like to A): cut B's side of every link.
  for (const l of [...(b.clusterLink as unknown as { links: Set<{ destroy(r: string): void }> }).links]) l.destroy('test: link cut');
  await p.waitClosed(10_000);
  assert.match(p.text + JSON.stringify(p.messages), /cluster link|lost|closed/i, 'the client is told why');
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'remote client gone on the owner');
  const dialer = (a as unknown as { clusterDialer: { links: number } }).clusterDialer;
  await waitUntil(() => dialer.links === 0, 10_000, 'no stale link kept on A');
  const again = await attach(0, 'ann2');
  web01.vm.send('after the cut\r\n');
  await again.waitText('after the cut', 10_000);
  again.destroy();
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'detached');
});

test('slow reader through node A: a client that never reads is dropped, the VM and a reader on B keep streaming', async () => {
  const slow = await attach(0, 'slow');
  const fast = await attach(1, 'fast');
  await waitUntil(() => web01.hub.clients.size === 2, 10_000, 'both attached on the owner');
  slow.socket.pause(); // never reads again
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  for (let i = 0; i < 320; i++) web01.vm.send(chunk); // 20 MiB
  web01.vm.send('END-OF-FLOOD');
  await fast.waitText('END-OF-FLOOD', 60_000);
  await waitUntil(() => web01.hub.clients.size === 1, 20_000, 'the slow client dropped on the owner');
  // Memory is bounded by construction (each queue and window has a bound, see
  // test/access/cluster-link-server-defences.test.ts); the process's RSS was too noisy
  // to assert (150-320 MB of growth for this flood with or without the bounds).
  fast.destroy();
  slow.destroy();
});
