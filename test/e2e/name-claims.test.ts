/**
 * F8: a VM's name is a claim anyone on the VM port can make. The tester's attack: the
 * real `web01` connects from 127.0.0.1, then a peer on 127.0.0.2 registers a different
 * UUID named `web01`. The older console keeps the name — its by-name log link and its
 * broker spelling `web01` — the newcomer is `web01~2`; the admin API's ambiguity error
 * lists both; the claim is logged with `security: true` and counted. And VM names are
 * bounded: a 1,000-character VM-NAME is kept as 256 characters ending in `…`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULTS } from '../../src/config/config.js';
import { formatUuid } from '../../src/util/uuid.js';
import { BrokerPeer } from '../support/broker-client.js';
import { runNode, vspcAdmin, VSPC_ADMIN_JS } from '../support/cli.js';
import { esxiUuid, startServer, tempDir, waitUntil } from '../support/server.js';

/** Where a symbolic link points, or null when there is none (yet). */
function linkOf(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

test('F8: a second UUID calling itself web01 does not take the name: by-name link, broker spelling, admin ambiguity, security line, metric', async (t) => {
  const dir = tempDir('vspc-names-');
  t.after(() => dir.remove());
  const socket = join(dir.dir, 'broker.sock');
  const logDir = join(dir.dir, 'logs');
  const { ts, cleanup } = await startServer(t, {
    config: { logDir, logMarkIntervalMs: 0, brokerSocket: { path: socket, auto: false }, brokerLimits: DEFAULTS.brokerLimits },
  });
  const real = esxiUuid();
  const fake = esxiUuid();
  const { vm: realVm, hub: realHub } = await ts.connectVm({ uuid: real.text, name: 'web01', localAddress: '127.0.0.1' }, cleanup);
  realVm.send('real output\r\n');
  const link = join(logDir, 'by-name', 'web01.log');
  const realFile = join('..', `${formatUuid(real.hex)}.log`);
  await waitUntil(() => linkOf(link) === realFile, 5000, 'the real web01 linked');

  // The impostor: another UUID, another address, the same name; it prints too.
  const { vm: fakeVm, hub: fakeHub } = await ts.connectVm({ uuid: fake.text, name: 'web01', localAddress: '127.0.0.2' }, cleanup);
  fakeVm.send('impostor output\r\n');
  const fakeLink = join(logDir, 'by-name', 'web01~2.log');
  await waitUntil(() => linkOf(fakeLink) !== null, 5000, 'the newcomer linked as web01~2');
  assert.equal(readlinkSync(fakeLink), join('..', `${formatUuid(fake.hex)}.log`));
  realVm.send('more real output\r\n');
  await ts.server.consoleLogs!.flush();
  assert.equal(readlinkSync(link), realFile, 'web01.log still points at the real console');

  // Logged as a security event, with both identities, and counted.
  const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_NAME_TAKEN', 3000);
  assert.equal(line.security, true);
  assert.equal(line.uuid, formatUuid(fake.hex));
  assert.equal(line.heldBy, formatUuid(real.hex));
  assert.equal(line.spelledAs, 'web01~2');
  const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  assert.match(metrics, /^vspc_console_name_conflicts_total 1$/m);

  // The admin API: `web01` is ambiguous, the error lists both (by UUID and port).
  const amb = await vspcAdmin(ts.adminAddress, ['show', 'web01']);
  assert.equal(amb.code, 1);
  assert.match(amb.stderr, /"web01" matches 2 serial ports/);
  for (const u of [real, fake]) assert.ok(amb.stderr.includes(formatUuid(u.hex)), `the error names ${formatUuid(u.hex)}`);
  // `web01~2` is one spelling of the one rule, for the admin API too.
  const second = await vspcAdmin(ts.adminAddress, ['show', 'web01~2', '--json']);
  assert.equal(second.code, 0, second.stderr);
  assert.equal((JSON.parse(second.stdout) as { uuid: string }).uuid, formatUuid(fake.hex));

  // The broker: both listed, without UUIDs; `web01` is the real one.
  const names = await runNode(VSPC_ADMIN_JS, ['console', '--names', '--socket', socket]);
  assert.equal(names.code, 0, names.stderr);
  assert.equal(names.stdout, 'web01\nweb01~2\n');
  const p = await BrokerPeer.connect({ path: socket });
  cleanup.add(() => p.destroy());
  p.send({ kind: 'select', address: 'web01' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'alice' });
  await p.next('lock-granted');
  await p.waitText('more real output');
  assert.equal(realHub.clients.size, 1, 'attached to the real web01');
  assert.equal(fakeHub.clients.size, 0);
  assert.ok(!p.text.includes('impostor output'));
});

test('F8: VM-NAME is kept to 256 characters, cut with a marker; the stored name too', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const u = esxiUuid();
  const { hub } = await ts.connectVm({ uuid: u.text, name: `${'x'.repeat(300)}\u009b${'y'.repeat(700)}` }, cleanup);
  const name = hub.identity.name!;
  assert.equal(Array.from(name).length, 256);
  assert.equal(name, `${'x'.repeat(255)}…`);
  const list = await ts.ports();
  assert.equal(list.find((p) => p.uuid === formatUuid(u.hex))?.name, name);
});
