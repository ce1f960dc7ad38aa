/**
 * Every access method on one console at once: they share its hub — one output reaches
 * a telnet user, a raw TCP client, a unix socket client and a pty reader alike; `show`
 * lists the endpoints, `who` and the metrics name each client's method.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { Child, startFromFile, waitShow } from '../support/access.js';
import { vspcAdmin } from '../support/cli.js';
import { nativeAddon } from '../../src/access/common/native.js';

test('telnet, raw, unix and pty clients of one console: one hub, one output, each method named', async (t) => {
  assert.ok(nativeAddon().addon, `vspc's native addon is not built (npm ci builds it): ${nativeAddon().error}`);
  const d = tempDir('vspc-access-all-');
  t.after(() => d.remove());
  chmodSync(d.dir, 0o755);
  const { ts, cleanup } = await startFromFile(t, ['access:', '  raw: true', `  unix: { dir: ${d.dir} }`, `  pty: { dir: ${join(d.dir)} }`, 'vms:', '  - match: all-ways', `    access: { pty: { link: ${join(d.dir, 'all-ways.pty')} } }`]);
  const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'all-ways' }, cleanup);
  const v = await waitShow(ts, 'all-ways', (x) => x.access.raw?.listening === true && x.access.unix?.listening === true && !!x.access.pty?.device, 'every endpoint up');

  const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
  const raw = new Child('socat', ['-', `TCP:127.0.0.1:${v.access.raw!.port}`], cleanup);
  const unix = new Child('socat', ['-', `UNIX-CONNECT:${v.access.unix!.path}`], cleanup);
  const pty = new Child('socat', ['-', `FILE:${v.access.pty!.link},rawer`], cleanup);
  await waitUntil(() => hub.clients.size === 4, 5000, 'four clients');
  vm.send('to everyone\r\n');
  await user.waitFor('to everyone', 3000);
  for (const c of [raw, unix, pty]) assert.equal((await c.stdout.wait('to everyone\r\n', 3000)).toString(), 'to everyone\r\n');

  const who = await vspcAdmin(ts.adminAddress, ['who']);
  assert.equal(who.code, 0, who.stderr);
  for (const m of ['telnet', 'raw', 'unix', 'pty']) assert.match(who.stdout, new RegExp(`^\\d+\\s+all-ways\\s+\\d+\\s+readwrite\\s+${m}\\s+`, 'm'), m);

  const show = await vspcAdmin(ts.adminAddress, ['show', 'all-ways']);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, new RegExp(`^  telnet: +127\\.0\\.0\\.1:${hub.identity.tcpPort}$`, 'm'));
  assert.match(show.stdout, new RegExp(`^  raw: +127\\.0\\.0\\.1:${v.access.raw!.port}$`, 'm'));
  assert.match(show.stdout, new RegExp(`^  unix socket: +${d.dir}/all-ways \\(root:- 0600, raw\\)$`, 'm'));
  assert.match(show.stdout, new RegExp(`^  pty: +${d.dir}/all-ways\\.pty -> /dev/pts/\\d+ \\(- 0600, open by a reader\\)$`, 'm'));
  assert.match(show.stdout, /^    #\d+  pty  pty:\S+  readwrite  since /m);

  const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`)).text();
  for (const m of ['telnet', 'raw', 'unix', 'pty']) assert.match(metrics, new RegExp(`^vspc_clients_by_method\\{method="${m}"\\} 1$`, 'm'));
  assert.match(metrics, /^vspc_clients 4$/m);
  const audit = ts.logs.filter((l) => l.audit === true && l.message === 'client attached').map((l) => l.method ?? 'telnet');
  assert.deepEqual(audit.sort(), ['pty', 'raw', 'telnet', 'unix']);
});
