/**
 * A new console's first port turned out to be held by another program on the host (the
 * allocator knows only vspc's records): nobody can know that port yet, so the console
 * moves to the next free one at once instead of staying unbound. A known console's
 * port stays sticky (it is retried, and shown as broken).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { esxiUuid, startServer, waitUntil } from '../support/server.js';
import { reservePortRange } from '../support/ports.js';

function hold(port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

test('a new console whose first port another program holds moves to the next free one; a known one stays sticky', async (t) => {
  const range = await reservePortRange(4);
  const squatter = await hold(range.start);
  t.after(() => new Promise<void>((r) => squatter.close(() => r())));
  const { ts, cleanup } = await startServer(t, { portRange: range });
  const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'fresh01' }, cleanup);
  await waitUntil(() => hub.identity.tcpPort === range.start + 1 && hub.listenError === null, 5000, 'moved and bound');
  await ts.logs.waitFor((l) => l.message.startsWith('a new console port is held by another program') && l.from === range.start && l.to === range.start + 1, 3000);
  const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
  assert.ok(user);

  // A console that was bound once keeps its port even when another program takes it later.
  const port = hub.identity.tcpPort;
  await ts.server.registry.setPort(hub, range.start + 2);
  await waitUntil(() => hub.listenError === null, 5000, 'bound on its set port');
  assert.equal(hub.identity.tcpPort, range.start + 2);
  assert.notEqual(port, hub.identity.tcpPort);
});
