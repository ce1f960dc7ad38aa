/**
 * kill -9 of the source's node between GOAHEAD and COMPLETE.
 * Two vspc node processes (test/support/cluster.ts ClusterNode, SIGKILLed by PID on
 * every exit path) joined by the cluster link on one real PostgreSQL. The VM's source
 * connection is on node-1; node-1 is killed after GOAHEAD; the destination then PEERs
 * and COMPLETEs on node-2. Expected: node-2 does not hang, refuses or closes the
 * destination, and the VM (reconnecting as ESXi does) ends up served by node-2.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { ClusterNode } from '../support/cluster.js';
import { writeSecretFile } from '../support/cluster-link.js';
import { reservePortRange } from '../support/ports.js';
import { SimulatedVm } from '../support/sim/index.js';

let pgServer: TestPostgres | undefined;
const c = new Cleanup();
after(async () => {
  await c.run();
  await pgServer?.stop();
});

test('kill -9 of the source\'s node between GOAHEAD and COMPLETE: the destination is closed, the VM comes back on the other node', async (t) => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  const dir = tempDir('vspc-attack-kill-');
  c.add(() => dir.remove());
  const secret = writeSecretFile(dir.dir);
  const ports = await reservePortRange(12);
  const nodes = ['127.0.0.2', '127.0.0.3'].map((host, i) => new ClusterNode({
    id: `node-${i + 1}`,
    host,
    proxyPort: ports.start,
    adminPort: ports.start + 1,
    portRange: { start: ports.start + 2, end: ports.end },
    dbUrl: url,
    extraArgs: ['--cluster-listen', `${host}:0`, '--cluster-secret-file', secret],
  }));
  for (const n of nodes) c.add(() => n.kill());
  for (const n of nodes) await n.start();
  const [n1, n2] = nodes;
  const id = esxiUuid();
  const vm = await SimulatedVm.connect({ host: n1.host, port: n1.proxyPort, uuid: id.text, name: 'killed-mid-vmotion' });
  c.add(() => vm.destroy());
  await waitUntil(async () => (await pgServer!.query(`SELECT 1 FROM consoles WHERE name = 'killed-mid-vmotion'`, [], url.slice(url.lastIndexOf('/') + 1, url.indexOf('?')))).length === 1, 10_000, 'registered');
  const seq = Buffer.from([0x0b, 0xad]);
  const r = await vm.vmotionBegin(seq);
  assert.equal(r.kind, 'goahead');
  await n1.kill();
  const dest = await SimulatedVm.connect({ host: n2.host, port: n2.proxyPort, uuid: id.text, name: 'killed-mid-vmotion', skipDoProxy: true });
  c.add(() => dest.destroy());
  const ok = await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]), 5000);
  if (ok) {
    dest.vmotionComplete(seq);
    await dest.whenClosed(15_000); // the handover to a dead node fails: closed, not hung
  }
  const logs = n2.logs().filter((l) => /vMotion/.test(String(l.message)));
  t.diagnostic(JSON.stringify({ peerOk: ok, logs: logs.map((l) => [l.message, l.reason ?? l.errorCode ?? '']) }));
  // ESXi reconnects the serial port: node-2 serves it.
  const again = await SimulatedVm.connect({ host: n2.host, port: n2.proxyPort, uuid: id.text, name: 'killed-mid-vmotion' });
  c.add(() => again.destroy());
  again.send('alive;');
  try {
    await waitUntil(() => n2.logs().some((l) => /VM serial port (reconnected|registered)/.test(String(l.message)) && JSON.stringify(l).includes('killed-mid-vmotion')), 15_000, 'node-2 serves the VM again');
  } finally {
    if (!n2.logs().some((l) => /VM serial port (reconnected|registered)/.test(String(l.message)))) console.log(n2.logs().slice(-15).map((l) => JSON.stringify(l).slice(0, 300)).join('\n'));
  }
});
