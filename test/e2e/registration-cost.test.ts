/**
 * Registering a console costs O(1) in the number of consoles, counted without timing:
 * a registration once re-ranked every console's name (`nameRanks` over
 * `registry.all()`) and recomputed every console's raw, unix and pty endpoint, so that
 * registering 9,000 VMs took minutes (docs/performance.md, "registration"). Here every
 * VM registers in its own tick (the worst case: no pass is shared) and the test counts
 * what the registrations asked of the registry: never the list of every console, and one
 * raw port look-up per new console. The endpoints and ranks that result are checked too,
 * also after a rename and a forget that change another console's file names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import { esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { startFromFile } from '../support/access.js';
import { reservePortRange } from '../support/ports.js';
import { nativeAddon } from '../../src/access/common/native.js';
import { formatUuid } from '../../src/util/uuid.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

const VMS = 24;
/** Every fourth VM calls itself `web`: a name shared by several machines, ranked by age. */
const nameOf = (i: number) => (i % 4 === 0 ? 'web' : `vm-${i}`);

test('registering a console neither lists every console nor recomputes the others\' endpoints; ranks and file names stay right', async (t) => {
  assert.ok(nativeAddon().addon, `vspc's native addon is not built (npm ci builds it): ${nativeAddon().error}`);
  const d = tempDir('vspc-registration-cost-');
  t.after(() => d.remove());
  chmodSync(d.dir, 0o755);
  const unixDir = join(d.dir, 'unix');
  const ptyDir = join(d.dir, 'pty');
  for (const dir of [unixDir, ptyDir]) mkdirSync(dir, { mode: 0o755 });
  // A telnet and a raw port per console, and room to spare.
  const ports = await reservePortRange(2 * VMS + 8);
  const { ts, cleanup } = await startFromFile(t, ['access:', '  raw: true', `  unix: { dir: ${unixDir} }`, `  pty: { dir: ${ptyDir} }`], {
    portRange: ports,
    logDir: join(d.dir, 'logs'),
  });
  const registry = ts.server.registry;
  // Whatever start-up scheduled has run.
  await tick();

  // Spies on the registry's seams: every caller goes through these objects.
  let allCalls = 0;
  const realAll = registry.all.bind(registry);
  registry.all = () => {
    allCalls++;
    return realAll();
  };
  const portLookups = new Map<string, number>();
  const realAccessPort = registry.accessPort.bind(registry);
  registry.accessPort = (hub, method) => {
    portLookups.set(method, (portLookups.get(method) ?? 0) + 1);
    return realAccessPort(hub, method);
  };
  const sortsBefore = registry.names.sorts;

  const hubs: ConsoleHub[] = [];
  const uuids: string[] = [];
  for (let i = 0; i < VMS; i++) {
    const uuid = esxiUuid();
    uuids.push(uuid.hex);
    // One at a time: each registration's endpoint pass runs alone (connectVm waits for the registration).
    hubs.push((await ts.connectVm({ uuid: uuid.text, name: nameOf(i) }, cleanup)).hub);
    await tick();
  }
  const up = (h: ConsoleHub) => {
    const a = ts.server.accessView(h);
    return a.raw?.listening === true && a.unix?.listening === true && !!a.pty?.device;
  };
  await waitUntil(() => hubs.every(up), 10_000, 'every console\'s raw, unix and pty endpoints up');

  assert.equal(allCalls, 0, 'no registration listed every console (name ranks, endpoints)');
  assert.equal(portLookups.get('raw'), VMS, 'one raw port look-up per new console, none for the others');
  const webs = hubs.filter((_, i) => nameOf(i) === 'web');
  // Each `web` after the first changes that one name's ranks, read once (the conflict warning).
  assert.ok(registry.names.sorts - sortsBefore <= webs.length, `name sorts: ${registry.names.sorts - sortsBefore}`);

  // What the incremental bookkeeping gave is what the rule says.
  assert.deepEqual(
    webs.map((h) => registry.names.of('web', h)),
    webs.map((_, i) => i + 1),
    'the web that registered first keeps the name, the others rank by age',
  );
  const unixPath = (h: ConsoleHub) => ts.server.accessView(h).unix?.path;
  const ptyLink = (h: ConsoleHub) => ts.server.accessView(h).pty?.link;
  const dashed = (h: ConsoleHub) => formatUuid(uuids[hubs.indexOf(h)]);
  assert.equal(unixPath(webs[0]), join(unixDir, 'web'));
  assert.equal(ptyLink(webs[0]), join(ptyDir, 'web'));
  for (const h of webs.slice(1)) {
    assert.equal(unixPath(h), join(unixDir, `web~${dashed(h)}`));
    assert.equal(ptyLink(h), join(ptyDir, `web~${dashed(h)}`));
  }
  assert.equal(unixPath(hubs[1]), join(unixDir, 'vm-1'));

  // A rename into the shared name: the renamed console is the newest `web`; the one it left is free.
  const renamed = hubs[1];
  registry.rename(renamed, 'web');
  await waitUntil(() => unixPath(renamed) === join(unixDir, `web~${dashed(renamed)}`) && up(renamed), 5000, 'the renamed console\'s socket');
  assert.equal(registry.names.of('web', renamed), webs.length + 1);
  assert.equal(unixPath(webs[0]), join(unixDir, 'web'), 'the oldest web keeps its socket');

  // Forgetting the oldest web: the file names go by record age (docs/access-methods.md), so
  // the renamed console (an older record than the other webs) takes the plain ones; the
  // name's rank goes by how long each has had the name: the next web is now first.
  registry.forget(webs[0]);
  await waitUntil(() => unixPath(renamed) === join(unixDir, 'web') && ptyLink(renamed) === join(ptyDir, 'web') && up(renamed), 5000, 'the oldest record takes the plain file names');
  assert.equal(registry.names.of('web', webs[1]), 1);
  assert.equal(registry.names.of('web', renamed), webs.length);
  for (const h of webs.slice(1)) assert.equal(unixPath(h), join(unixDir, `web~${dashed(h)}`), 'the others keep theirs');
  assert.equal(allCalls, 0, 'nor did a rename or a forget');
});
