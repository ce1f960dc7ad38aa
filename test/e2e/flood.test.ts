import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, esxiUuid, waitUntil } from '../support/server.js';

test('a flood of silent connections is capped; identified VMs keep working and new VMs get in once the flood times out', async (t) => {
  const { ts, cleanup } = await startServer(t, { config: { maxUnidentifiedConnections: 5, humanTimeoutMs: 400 } });
  const good = await ts.connectVm({ uuid: esxiUuid().text, name: 'steady' }, cleanup);
  const user = await ts.connectUser(good.hub.identity.tcpPort, cleanup);

  const closed: boolean[] = [];
  const received = new Array<number>(20).fill(0);
  const sockets = Array.from({ length: 20 }, (_, i) => {
    const s = net.connect({ host: '127.0.0.1', port: ts.proxyPort });
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => (received[i] += d.length)); // read, so that the server's FIN is seen
    s.on('close', () => (closed[i] = true));
    cleanup.add(() => s.destroy());
    return s;
  });
  // 15 of the 20 are dropped at once, before any byte; the 5 admitted ones are sent vspc's
  // opening offers and wait for the human timeout. Told apart by what they received, not by
  // when they closed: a loaded machine may take longer than the 400 ms timeout to look.
  await waitUntil(() => closed.filter(Boolean).length >= 15, 3000, 'excess connections dropped');
  await waitUntil(() => received.filter((n) => n > 0).length + closed.filter((c, i) => c && received[i] === 0).length === 20, 3000, 'every connection admitted or dropped');
  assert.equal(closed.filter((c, i) => c && received[i] === 0).length, 15, 'fifteen dropped before any byte');
  assert.equal(received.filter((n) => n > 0).length, 5, 'the first five were admitted (sent the opening offers)');
  assert.ok(ts.logs.find((l) => l.message === 'too many unidentified VM connections; refusing new ones' && l.limit === 5));

  const status = await ts.api<{ vmConnectionsRefused: number }>('/api/v1/status');
  assert.ok(status.vmConnectionsRefused >= 15, 'refusals are counted for status and /metrics');
  good.vm.send('unaffected');
  await user.waitFor('unaffected', 3000);

  await waitUntil(() => closed.filter(Boolean).length === 20, 3000, 'the admitted ones timed out');
  const late = await ts.connectVm({ uuid: esxiUuid().text, name: 'after-the-flood' }, cleanup);
  assert.equal(late.hub.source !== null, true);
  void sockets;
});
