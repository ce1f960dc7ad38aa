/**
 * Proxmox discovery against a fake `/var/run/qemu-server` + `/etc/pve/qemu-server` in
 * a temp dir, with real listening unix sockets (and plain files that must be ignored).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ProxmoxDiscovery } from '../../src/sources/discovery/proxmox.js';
import { Sockets, recordingLogger, summary, tempTree } from './discovery-support.js';

function fakeHost() {
  const tree = tempTree();
  const runDir = join(tree.root, 'run');
  const confDir = join(tree.root, 'conf');
  mkdirSync(runDir);
  mkdirSync(confDir);
  const sockets = new Sockets();
  const { logger, lines } = recordingLogger();
  return {
    ...tree,
    runDir,
    confDir,
    sockets,
    logger,
    lines,
    conf: (vmid: number, text: string) => writeFileSync(join(confDir, `${vmid}.conf`), text),
    start: (vmid: number, n = 0) => sockets.listen(join(runDir, `${vmid}.serial${n}`)),
    stop: (vmid: number, n = 0) => sockets.close(join(runDir, `${vmid}.serial${n}`)),
    async done() {
      await sockets.closeAll();
      tree.cleanup();
    },
  };
}

test('Proxmox: every serial socket of every VM, named from its conf; other files ignored', async (t) => {
  const h = fakeHost();
  t.after(() => h.done());
  h.conf(100, 'boot: order=scsi0\nname: web01\nserial0: socket\nserial1: socket\n');
  h.conf(101, 'name: db01\nserial0: socket\n\n[PENDING]\nname: db01-new\n\n[before-upgrade]\nname: db01-old\nparent: x\n');
  // 102: no conf at all (a VM migrating in); 103: garbage; 104: too big.
  h.conf(103, Buffer.from([0, 255, 254, 10, 0x5b, 0, 10, 1, 2, 3]).toString('latin1'));
  h.conf(104, `name: big\n#${'x'.repeat(2048)}\n`);
  await h.start(100, 0);
  await h.start(100, 1);
  await h.start(101, 0);
  await h.start(102, 3);
  await h.start(103, 0);
  await h.start(104, 0);
  await h.sockets.listen(join(h.runDir, '100.qmp')); // QEMU's monitor: a socket, not a serial
  writeFileSync(join(h.runDir, '105.serial0'), 'not a socket');
  writeFileSync(join(h.runDir, '100.pid'), '4242\n');
  mkdirSync(join(h.runDir, '106.serial0'));

  const d = new ProxmoxDiscovery({ logger: h.logger, runDir: h.runDir, confDir: h.confDir, maxFileBytes: 1024 });
  const found = await d.scan();
  const run = h.runDir;
  assert.deepEqual(summary(found), [
    `proxmox:100:serial0 web01 unix:${run}/100.serial0`,
    `proxmox:100:serial1 web01 unix:${run}/100.serial1`,
    `proxmox:101:serial0 db01 unix:${run}/101.serial0`,
    `proxmox:102:serial3 (null) unix:${run}/102.serial3`,
    `proxmox:103:serial0 (null) unix:${run}/103.serial0`,
    `proxmox:104:serial0 (null) unix:${run}/104.serial0`,
  ]);
  assert.deepEqual(
    found.map((c) => c.origin),
    ['100.serial0', '100.serial1', '101.serial0', '102.serial3', '103.serial0', '104.serial0'].map((f) => join(run, f)),
    'vmid order, then label; origin is the socket',
  );
  assert.ok(Object.isFrozen(found[0]));
  const big = h.lines.find((l) => l.message.includes('too-big'));
  assert.equal(big?.level, 'warn');
  assert.equal(big?.fields.file, join(h.confDir, '104.conf'));
  assert.deepEqual([...d.watchDirs()], [h.runDir, h.confDir]);

  // A rescan of an unchanged host logs nothing new.
  const before = h.lines.filter((l) => l.level !== 'debug').length;
  await d.scan();
  assert.equal(h.lines.filter((l) => l.level !== 'debug').length, before);
});

test('Proxmox: VMs appear and disappear with their sockets; identity stays across a restart', async (t) => {
  const h = fakeHost();
  t.after(() => h.done());
  h.conf(200, 'name: app\n');
  const d = new ProxmoxDiscovery({ logger: h.logger, runDir: h.runDir, confDir: h.confDir });
  assert.deepEqual(await d.scan(), []);
  await h.start(200, 0);
  const first = await d.scan();
  assert.deepEqual(summary(first), [`proxmox:200:serial0 app unix:${h.runDir}/200.serial0`]);
  await h.stop(200, 0);
  assert.deepEqual(await d.scan(), []);
  await h.start(200, 0);
  const again = await d.scan();
  assert.deepEqual(
    again.map((c) => [c.kind, c.key, c.label]),
    first.map((c) => [c.kind, c.key, c.label]),
  );
});

test('Proxmox: a conf is read once and again only when it changes (renames seen)', async (t) => {
  const h = fakeHost();
  t.after(() => h.done());
  h.conf(300, 'name: before\n');
  h.conf(301, 'name: other\n');
  await h.start(300, 0);
  await h.start(300, 1);
  await h.start(301, 0);
  const d = new ProxmoxDiscovery({ logger: h.logger, runDir: h.runDir, confDir: h.confDir, mtimeGranularityMs: 0 });
  await d.scan();
  assert.equal(d.filesRead, 2, 'one read per VM, not per socket');
  await d.scan();
  assert.equal(d.filesRead, 2, 'unchanged confs are not read');
  h.conf(300, 'name: after-rename\n');
  const found = await d.scan();
  assert.equal(d.filesRead, 3);
  assert.deepEqual(
    found.map((c) => `${c.key}:${c.label}=${c.name}`),
    ['300:serial0=after-rename', '300:serial1=after-rename', '301:serial0=other'],
  );
  rmSync(join(h.confDir, '300.conf'));
  assert.equal((await d.scan()).find((c) => c.key === '300')?.name, null, 'conf gone: name unknown, console stays');
});

test('Proxmox: a conf written within the mtime granularity is read again (same size, same second)', async (t) => {
  const h = fakeHost();
  t.after(() => h.done());
  await h.start(400, 0);
  const when = new Date(Date.now() - 500); // modified "just now"
  h.conf(400, 'name: aaaa\n');
  utimesSync(join(h.confDir, '400.conf'), when, when);
  const d = new ProxmoxDiscovery({ logger: h.logger, runDir: h.runDir, confDir: h.confDir, mtimeGranularityMs: 2000 });
  assert.equal((await d.scan())[0].name, 'aaaa');
  // Same size, same mtime (a whole-second filesystem would show exactly this; here the
  // ctime still differs, FileMemo's own test covers the fully identical signature).
  h.conf(400, 'name: bbbb\n');
  utimesSync(join(h.confDir, '400.conf'), when, when);
  assert.equal((await d.scan())[0].name, 'bbbb', 'a racy read is not trusted');
  assert.equal(d.filesRead, 2);
  // Once the last modification is a granule old, the memo is trusted.
  const old = new Date(Date.now() - 60_000);
  utimesSync(join(h.confDir, '400.conf'), old, old);
  await d.scan();
  await d.scan();
  assert.equal(d.filesRead, 3);
});

test('Proxmox: a missing socket directory means no consoles (logged once); a socket path too long is skipped', async (t) => {
  const h = fakeHost();
  t.after(() => h.done());
  const runDir = join(h.root, 'absent');
  const d = new ProxmoxDiscovery({ logger: h.logger, runDir, confDir: h.confDir });
  assert.deepEqual(await d.scan(), []);
  assert.deepEqual(await d.scan(), []);
  assert.equal(h.lines.filter((l) => l.message.includes('not present')).length, 1);
  assert.deepEqual([...d.watchDirs()], []);

  // sun_path holds 107 bytes: a deep run directory cannot be connected to.
  const deep = join(h.root, 'd'.repeat(60), 'e'.repeat(40));
  mkdirSync(deep, { recursive: true });
  const deepSocket = join(deep, '7.serial0');
  // Listen at a short path and move the socket file in (the limit is on the address).
  await h.sockets.listen(join(h.root, 's'));
  renameSync(join(h.root, 's'), deepSocket);
  const d2 = new ProxmoxDiscovery({ logger: h.logger, runDir: deep, confDir: h.confDir });
  assert.deepEqual(await d2.scan(), []);
  const warn = h.lines.find((l) => l.message.includes('not usable as a source'));
  assert.equal(warn?.fields.file, deepSocket);
  assert.match(String(warn?.fields.error), /107 bytes/);
});
