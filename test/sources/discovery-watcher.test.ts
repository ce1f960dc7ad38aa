/**
 * The discovery watcher: events are diffs of successive scans, driven by fs.watch,
 * by the periodic rescan (mock timers) or by scan(); never duplicated; failures keep
 * the last good state; close() is final. Tests synchronise on emitted events only.
 */
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import { LibvirtDiscovery } from '../../src/sources/discovery/libvirt.js';
import { ProxmoxDiscovery } from '../../src/sources/discovery/proxmox.js';
import type { DiscoveredConsole, Discovery } from '../../src/sources/discovery/types.js';
import { DiscoveryWatcher, type DiscoveryEvents, type ScanSummary } from '../../src/sources/discovery/watcher.js';
import { Sockets, recordingLogger, tempTree } from './discovery-support.js';

/** Resolves with the arguments of the first `event` matching `pred`; rejects after a generous guard time. */
function nextEvent<K extends keyof DiscoveryEvents>(w: DiscoveryWatcher, event: K, pred: (...args: DiscoveryEvents[K]) => boolean = () => true, guardMs = 15_000): Promise<DiscoveryEvents[K]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: DiscoveryEvents[K]) => {
      if (!pred(...args)) return;
      clearTimeout(timer);
      w.off(event, listener as never);
      resolve(args);
    };
    const timer = setTimeout(() => {
      w.off(event, listener as never);
      reject(new Error(`no matching '${event}' event; consoles now: ${w.current().map((c) => c.key).join(',')}; watching ${w.watchedDirs().join(',')}`));
    }, guardMs);
    w.on(event, listener as never);
  });
}

/** Every event as one line, in order. */
function record(w: DiscoveryWatcher): string[] {
  const log: string[] = [];
  const id = (c: DiscoveredConsole) => `${c.kind}:${c.key}:${c.label}`;
  w.on('added', (c) => log.push(`added ${id(c)} ${c.name}`));
  w.on('removed', (c) => log.push(`removed ${id(c)}`));
  w.on('changed', (c, before) => log.push(`changed ${id(c)} ${before.name}->${c.name}`));
  return log;
}

function proxmoxHost() {
  const tree = tempTree();
  const runDir = join(tree.root, 'run');
  const confDir = join(tree.root, 'conf');
  mkdirSync(runDir);
  mkdirSync(confDir);
  const sockets = new Sockets();
  return {
    ...tree,
    runDir,
    confDir,
    sockets,
    conf: (vmid: number, name: string) => writeFileSync(join(confDir, `${vmid}.conf`), `name: ${name}\nserial0: socket\n`),
    start: (vmid: number, n = 0) => sockets.listen(join(runDir, `${vmid}.serial${n}`)),
    stop: (vmid: number, n = 0) => sockets.close(join(runDir, `${vmid}.serial${n}`)),
    async done() {
      await sockets.closeAll();
      tree.cleanup();
    },
  };
}

/** A provider under the test's control. */
class FakeDiscovery implements Discovery {
  readonly kind = 'glob' as const;
  filesRead = 0;
  consoles: DiscoveredConsole[] = [];
  fail = false;
  gate: Promise<void> | null = null;
  constructor(readonly description: string) {}
  async scan(): Promise<DiscoveredConsole[]> {
    if (this.gate) await this.gate;
    if (this.fail) throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    return [...this.consoles];
  }
  watchDirs(): string[] {
    return [];
  }
}

function fake(key: string, name: string | null = key, path = `/run/${key}.sock`): DiscoveredConsole {
  return { kind: 'glob', key, label: '', name, spec: parseSourceSpec(`unix:${path}`), origin: path };
}

test('watcher: VMs starting, stopping and being renamed reach listeners through fs.watch alone', async (t) => {
  const h = proxmoxHost();
  const { logger } = recordingLogger();
  const w = new DiscoveryWatcher([new ProxmoxDiscovery({ logger, runDir: h.runDir, confDir: h.confDir })], { logger, rescanIntervalMs: 0, debounceMs: 20 });
  t.after(async () => {
    w.close();
    await h.done();
  });
  const log = record(w);
  h.conf(100, 'web01');
  h.conf(101, 'db01');
  await h.start(100);

  const initial = await w.watch();
  assert.deepEqual(initial.map((c) => c.key), ['100']);
  assert.deepEqual(w.watchedDirs(), [h.confDir, h.runDir].sort());

  let next = nextEvent(w, 'added', (c) => c.key === '101');
  await h.start(101);
  await next;
  next = nextEvent(w, 'removed', (c) => c.key === '100') as never;
  await h.stop(100);
  await next;
  const renamed = nextEvent(w, 'changed', (c) => c.key === '101');
  h.conf(101, 'db01-renamed');
  const [after, before] = await renamed;
  assert.equal(before.name, 'db01');
  assert.equal(after.name, 'db01-renamed');
  assert.deepEqual(log, ['added proxmox:100:serial0 web01', 'added proxmox:101:serial0 db01', 'removed proxmox:100:serial0', 'changed proxmox:101:serial0 db01->db01-renamed']);
  assert.deepEqual(
    w.current().map((c) => `${c.key}=${c.name}`),
    ['101=db01-renamed'],
  );
});

test('watcher: the periodic rescan finds what fs.watch would have (mock timers)', async (t) => {
  mock.timers.enable({ apis: ['setInterval'] });
  const h = proxmoxHost();
  const { logger } = recordingLogger();
  const w = new DiscoveryWatcher([new ProxmoxDiscovery({ logger, runDir: h.runDir, confDir: h.confDir })], { logger, watchFs: false, rescanIntervalMs: 30_000 });
  t.after(async () => {
    w.close();
    mock.timers.reset();
    await h.done();
  });
  const log = record(w);
  await w.watch();
  assert.deepEqual(w.watchedDirs(), []);
  h.conf(7, 'seven');
  await h.start(7, 2);
  assert.deepEqual(log, [], 'nothing without a rescan');
  let scanned = nextEvent(w, 'scanned');
  mock.timers.tick(30_000);
  const [summary] = await scanned;
  assert.deepEqual({ ...summary, durationMs: 0 }, { reason: 'periodic', consoles: 1, added: 1, removed: 0, changed: 0, filesRead: 1, durationMs: 0, failed: [] } satisfies ScanSummary);
  assert.deepEqual(log, ['added proxmox:7:serial2 seven']);
  scanned = nextEvent(w, 'scanned');
  mock.timers.tick(30_000);
  assert.equal((await scanned)[0].added, 0, 'an unchanged host: an empty diff');
  await h.stop(7, 2);
  scanned = nextEvent(w, 'scanned');
  mock.timers.tick(30_000);
  assert.equal((await scanned)[0].removed, 1);
  assert.deepEqual(log, ['added proxmox:7:serial2 seven', 'removed proxmox:7:serial2']);
});

test('watcher: concurrent scans coalesce and a console is never reported twice', async (t) => {
  const h = proxmoxHost();
  const { logger } = recordingLogger();
  const w = new DiscoveryWatcher([new ProxmoxDiscovery({ logger, runDir: h.runDir, confDir: h.confDir })], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(async () => {
    w.close();
    await h.done();
  });
  const log = record(w);
  let scans = 0;
  w.on('scanned', () => scans++);
  await w.watch();
  h.conf(1, 'one');
  await Promise.all([h.start(1, 0), h.start(1, 1), h.start(2, 0)]);
  scans = 0;
  // Ten requests at once: one scan runs, one more is queued behind it and serves the other nine.
  const results = await Promise.all(Array.from({ length: 10 }, () => w.scan()));
  assert.equal(scans, 2);
  for (const r of results) assert.equal(r.length, 3);
  await Promise.all([w.scan(), w.scan()]);
  assert.deepEqual(log.sort(), ['added proxmox:1:serial0 one', 'added proxmox:1:serial1 one', 'added proxmox:2:serial0 null']);
});

test('watcher: a new pty after a libvirt domain restart is a change, not a remove and add', async (t) => {
  const { root, cleanup } = tempTree();
  t.after(cleanup);
  const { logger } = recordingLogger();
  const xml = (pts: number) => `<domstatus><domain type='kvm' id='${pts}'><name>web01</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><devices><serial type='pty'><source path='/dev/pts/${pts}'/><target type='isa-serial' port='0'/><alias name='serial0'/></serial><console type='pty' tty='/dev/pts/${pts}'><source path='/dev/pts/${pts}'/><target type='serial' port='0'/><alias name='serial0'/></console></devices></domain></domstatus>`;
  writeFileSync(join(root, 'web01.xml'), xml(3));
  const w = new DiscoveryWatcher([new LibvirtDiscovery({ logger, runDir: root })], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(() => w.close());
  const log = record(w);
  await w.watch();
  const changed = nextEvent(w, 'changed');
  writeFileSync(join(root, 'web01.xml'), xml(12));
  await w.scan();
  const [after, before] = await changed;
  assert.equal(before.spec.type === 'device' && before.spec.path, '/dev/pts/3');
  assert.equal(after.spec.type === 'device' && after.spec.path, '/dev/pts/12');
  assert.deepEqual(log, ['added libvirt:4dea22b31d52d8f32516782e98ab3fa0:serial0 web01', 'changed libvirt:4dea22b31d52d8f32516782e98ab3fa0:serial0 web01->web01']);
});

test('watcher: a failing provider keeps its consoles (logged once); identities found twice are kept once', async (t) => {
  const { logger, lines } = recordingLogger();
  const a = new FakeDiscovery('fake a');
  const b = new FakeDiscovery('fake b');
  a.consoles = [fake('x'), fake('y')];
  b.consoles = [fake('y', 'y from b', '/run/other.sock'), fake('z')];
  const w = new DiscoveryWatcher([a, b], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(() => w.close());
  const log = record(w);
  await w.watch();
  assert.deepEqual(w.current().map((c) => `${c.key}:${c.name}`), ['x:x', 'y:y', 'z:z'], 'the first of a duplicate, in provider order');
  a.fail = true;
  let scanned = nextEvent(w, 'scanned');
  await w.scan();
  assert.deepEqual((await scanned)[0].failed, ['fake a']);
  await w.scan();
  assert.deepEqual(w.current().map((c) => c.key), ['x', 'y', 'z']);
  a.fail = false;
  a.consoles = [fake('x')];
  scanned = nextEvent(w, 'scanned');
  await w.scan();
  assert.deepEqual((await scanned)[0].failed, []);
  // y now comes from b only: its name and spec changed.
  assert.deepEqual(log, ['added glob:x: x', 'added glob:y: y', 'added glob:z: z', 'changed glob:y: y->y from b']);
  assert.equal(lines.filter((l) => l.message.includes('discovered twice')).length, 1, 'duplicates warned once, not per scan');
  assert.equal(lines.filter((l) => l.message.includes('providers failed')).length, 1);
});

test('watcher: a listener that throws is logged; the other events are still delivered', async (t) => {
  const { logger, lines } = recordingLogger();
  const p = new FakeDiscovery('fake');
  p.consoles = [fake('a'), fake('b')];
  const w = new DiscoveryWatcher([p], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(() => w.close());
  const seen: string[] = [];
  w.on('added', (c) => {
    seen.push(c.key);
    if (c.key === 'a') throw new Error('listener bug');
  });
  const [first, second] = await Promise.all([w.watch(), w.watch()]);
  assert.equal(first, second, 'watch() twice: one start');
  assert.deepEqual(seen, ['a', 'b']);
  assert.equal(lines.find((l) => l.level === 'error')?.fields.error, 'listener bug');
});

test('watcher: a provider returning something unusable is a logged error, not an unhandled rejection', async (t) => {
  const { logger, lines } = recordingLogger();
  const p = new FakeDiscovery('broken');
  p.consoles = [fake('k')];
  const w = new DiscoveryWatcher([p], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(() => w.close());
  const log = record(w);
  await w.watch();
  p.consoles = [{ kind: 'glob', key: 'k', label: '', name: 'k', spec: null, origin: '/x' } as unknown as DiscoveredConsole];
  await w.scan();
  assert.ok(lines.some((l) => l.level === 'error' && l.message === 'discovery scan failed'));
  p.consoles = [fake('k')];
  assert.deepEqual((await w.scan()).map((c) => c.key), ['k']);
  assert.deepEqual(log, ['added glob:k: k'], 'the failed scan changed nothing');
});

test('watcher: close() is idempotent and final; a scan in flight when it closes emits nothing', async (t) => {
  const { logger } = recordingLogger();
  const p = new FakeDiscovery('fake');
  const w = new DiscoveryWatcher([p], { logger, rescanIntervalMs: 1000 });
  t.after(() => w.close());
  const log = record(w);
  await w.watch();
  let open!: () => void;
  p.gate = new Promise((resolve) => (open = resolve));
  p.consoles = [fake('late')];
  const inFlight = w.scan();
  w.close();
  w.close();
  open();
  assert.deepEqual(await inFlight, []);
  assert.deepEqual(log, []);
  assert.equal(w.closed, true);
  // After close: nothing scans, nothing is emitted, the last known state is answered.
  p.consoles = [fake('later')];
  assert.deepEqual(await w.scan(), []);
  assert.deepEqual(await w.watch(), []);
  assert.deepEqual(log, []);
});

test('watcher: a socket directory removed and recreated is watched again', async (t) => {
  const h = proxmoxHost();
  const { logger } = recordingLogger();
  const w = new DiscoveryWatcher([new ProxmoxDiscovery({ logger, runDir: h.runDir, confDir: h.confDir })], { logger, rescanIntervalMs: 0, debounceMs: 20 });
  t.after(async () => {
    w.close();
    await h.done();
  });
  const log = record(w);
  await h.start(5);
  await w.watch();
  await h.stop(5);
  // Removed and recreated at once: the kernel may even give the new directory the old
  // inode number, so only the watch's own events tell that the old watch is dead.
  rmSync(h.runDir, { recursive: true });
  mkdirSync(h.runDir);
  const first = nextEvent(w, 'added', (c) => c.key === '6');
  await h.start(6);
  await first;
  // The new watch is live: a socket created later is found by a scan a filesystem event
  // started ('watch'), not only by the one scan that follows a new watch ('rewatch').
  let reason = '';
  for (let vmid = 7; vmid <= 9 && reason !== 'watch'; vmid++) {
    const found = new Promise<string>((resolve, reject) => {
      let hit = false;
      const onAdded = (c: DiscoveredConsole) => {
        if (c.key === String(vmid)) hit = true;
      };
      const onScanned = (s: ScanSummary) => {
        if (!hit) return;
        clearTimeout(guard);
        w.off('added', onAdded);
        w.off('scanned', onScanned);
        resolve(s.reason);
      };
      const guard = setTimeout(() => reject(new Error(`VM ${vmid} never reported: the recreated directory is not watched`)), 15_000);
      w.on('added', onAdded);
      w.on('scanned', onScanned);
    });
    await h.start(vmid);
    reason = await found;
  }
  assert.equal(reason, 'watch');
  assert.deepEqual(log.slice(0, 3), ['added proxmox:5:serial0 null', 'removed proxmox:5:serial0', 'added proxmox:6:serial0 null']);
  assert.ok(w.watchedDirs().includes(h.runDir));
});

test('watcher: 2,000 consoles; an unchanged host rescans without reading a file; one rename reads one conf', async (t) => {
  const h = proxmoxHost();
  const { logger } = recordingLogger();
  const vms = 500;
  for (let i = 0; i < vms; i++) h.conf(1000 + i, `vm-${i}`);
  for (let i = 0; i < vms; i++) await Promise.all([0, 1, 2, 3].map((n) => h.start(1000 + i, n)));
  const w = new DiscoveryWatcher([new ProxmoxDiscovery({ logger, runDir: h.runDir, confDir: h.confDir, mtimeGranularityMs: 0 })], { logger, watchFs: false, rescanIntervalMs: 0 });
  t.after(async () => {
    w.close();
    await h.done();
  });
  const summaries: ScanSummary[] = [];
  w.on('scanned', (s) => summaries.push(s));
  await w.watch();
  await w.scan();
  h.conf(1007, 'renamed');
  const changed: string[] = [];
  w.on('changed', (c) => changed.push(`${c.key}:${c.label}=${c.name}`));
  await w.scan();
  assert.deepEqual(
    summaries.map((s) => [s.consoles, s.added, s.changed, s.filesRead]),
    [
      [2000, 2000, 0, 500],
      [2000, 0, 0, 0],
      [2000, 0, 4, 1],
    ],
  );
  assert.deepEqual(changed, ['1007:serial0=renamed', '1007:serial1=renamed', '1007:serial2=renamed', '1007:serial3=renamed']);
  t.diagnostic(`scan times: ${summaries.map((s) => `${s.durationMs} ms`).join(', ')}`);
});
