import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { startServer, esxiUuid, waitUntil } from '../support/server.js';

test('an internal error while handling one VM closes that connection only; the server and other VMs carry on', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const good = await ts.connectVm({ uuid: esxiUuid().text, name: 'good' }, cleanup);
  const user = await ts.connectUser(good.hub.identity.tcpPort, cleanup);
  const bad = await ts.connectVm({ uuid: esxiUuid().text, name: 'bad' }, cleanup);

  // Simulate a storage failure on the rename path (e.g. the disk went read-only).
  const registry = ts.server.registry;
  const rename = registry.rename.bind(registry);
  registry.rename = (port, name) => {
    if (name === 'renamed') throw new Error('SQLITE_READONLY: attempt to write a readonly database');
    rename(port, name);
  };
  bad.vm.sendExt(Ext.VM_NAME, Buffer.from('renamed'));
  await bad.vm.whenClosed(3000);
  const line = await ts.logs.waitFor((l) => l.message === 'internal error while handling VM data; closing this connection', 3000);
  assert.match(String(line.error), /SQLITE_READONLY/);

  good.vm.send('still streaming');
  await user.waitFor('still streaming', 3000);
  const list = await ts.ports();
  assert.equal(list.find((p) => p.name === 'good')?.connected, true);
  await waitUntil(() => bad.hub.source === null, 3000, 'bad VM detached');
});
