/**
 * libvirt discovery against runtime status XML modelled on libvirt's own files
 * (test/fixtures/discovery: `<domstatus>` around `<domain>`), and against broken,
 * hostile and huge ones.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LibvirtDiscovery, libvirtConsoles, parseLibvirtDomain } from '../../src/sources/discovery/libvirt.js';
import { readBounded } from '../../src/sources/discovery/files.js';
import { FIXTURES, recordingLogger, summary, tempTree } from './discovery-support.js';

const WEB01 = '4dea22b31d52d8f32516782e98ab3fa0';
const DB02 = 'c7a5fdbdedaf9455926ad65c16db1809';

function fakeLibvirt() {
  const tree = tempTree();
  const runDir = join(tree.root, 'qemu');
  mkdirSync(runDir);
  const { logger, lines } = recordingLogger();
  return { ...tree, runDir, logger, lines, put: (file: string, xml: string) => writeFileSync(join(runDir, file), xml) };
}

/** A minimal domain with the given devices XML. */
function domain(devices: string, extra = ''): string {
  return `<domain type='kvm' id='1'><name>vm</name><uuid>00000000-0000-0000-0000-00000000000a</uuid>${extra}<devices>${devices}</devices></domain>`;
}

function consolesOf(xml: string): { list: string[]; notes: string[] } {
  const parsed = parseLibvirtDomain(xml);
  if (!parsed.ok) throw new Error(parsed.error);
  const r = libvirtConsoles(parsed.domain, '/x.xml');
  return { list: summary(r.consoles), notes: [...parsed.notes, ...r.notes].map((n) => `${n.level}: ${n.message}`) };
}

test('libvirt: runtime XML of a pty serial (with its duplicate <console>) and of unix serials', async (t) => {
  const h = fakeLibvirt();
  t.after(h.cleanup);
  copyFileSync(join(FIXTURES, 'web01.xml'), join(h.runDir, 'web01.xml'));
  copyFileSync(join(FIXTURES, 'db02.xml'), join(h.runDir, 'db02.xml'));
  writeFileSync(join(h.runDir, 'web01.pid'), '41237');
  mkdirSync(join(h.runDir, 'domain-3-web01'));
  const d = new LibvirtDiscovery({ logger: h.logger, runDir: h.runDir });
  const found = await d.scan();
  assert.deepEqual(summary(found), [
    `libvirt:${WEB01}:serial0 web01 device:/dev/pts/3`,
    `libvirt:${DB02}:console1 db02 device:/dev/pts/9`,
    `libvirt:${DB02}:serial0 db02 unix:/run/vms/db02.serial0.sock`,
    `libvirt:${DB02}:serial1 db02 unix-listen:/run/vspc/db02.serial1.sock`,
  ]);
  const pty = found.find((c) => c.key === WEB01)!;
  assert.equal(pty.origin, join(h.runDir, 'web01.xml'));
  assert.deepEqual(pty.spec, { type: 'device', path: '/dev/pts/3', line: { baudRate: 115200, dataSize: 8, parity: 'none', stopBits: '1', flow: 'none' } });
  // The file-backed serial2 is left out, with a debug line saying why.
  const skipped = h.lines.find((l) => l.message.includes("type 'file' is not discovered"));
  assert.equal(skipped?.level, 'debug');
  assert.equal(skipped?.fields.label, 'serial2');
  assert.deepEqual([...d.watchDirs()], [h.runDir]);
  assert.equal(d.filesRead, 2);
});

test('libvirt: a restarted domain keeps its identity and gets its new pty; a stopped one disappears', async (t) => {
  const h = fakeLibvirt();
  t.after(h.cleanup);
  const xml = readFileSync(join(FIXTURES, 'web01.xml'), 'utf8');
  h.put('web01.xml', xml);
  const d = new LibvirtDiscovery({ logger: h.logger, runDir: h.runDir, mtimeGranularityMs: 0 });
  const [before] = await d.scan();
  rmSync(join(h.runDir, 'web01.xml'));
  assert.deepEqual(await d.scan(), []);
  h.put('web01.xml', xml.replaceAll('/dev/pts/3', '/dev/pts/11').replace("id='3'", "id='4'"));
  const [after] = await d.scan();
  assert.deepEqual([after.kind, after.key, after.label], [before.kind, before.key, before.label]);
  assert.equal(after.spec.type === 'device' && after.spec.path, '/dev/pts/11');
});

test('libvirt: <console> duplicates are recognised by target port, alias or path; other consoles are their own', () => {
  // Older libvirt: no aliases, the console repeats the serial's pty.
  assert.deepEqual(
    consolesOf(domain(`<serial type='pty'><source path='/dev/pts/1'/><target port='0'/></serial><console type='pty' tty='/dev/pts/1'><source path='/dev/pts/1'/><target type='serial' port='0'/></console>`)).list,
    ['libvirt:0000000000000000000000000000000a:serial0 vm device:/dev/pts/1'],
  );
  // A console with only a target type='serial' port and nothing else in common.
  assert.equal(consolesOf(domain(`<serial type='pty'><source path='/dev/pts/1'/><target port='1'/></serial><console type='pty'><target type='serial' port='1'/></console>`)).list.length, 1);
  // A virtio console next to a serial: two consoles, positional label for the alias-less one.
  assert.deepEqual(
    consolesOf(domain(`<serial type='pty'><source path='/dev/pts/1'/><target port='0'/></serial><console type='pty'><source path='/dev/pts/2'/><target type='virtio' port='0'/></console>`)).list,
    ['libvirt:0000000000000000000000000000000a:console0 vm device:/dev/pts/2', 'libvirt:0000000000000000000000000000000a:serial0 vm device:/dev/pts/1'],
  );
  // Only a console (s390 sclp, or a guest with just virtio): it is discovered.
  assert.deepEqual(consolesOf(domain(`<console type='pty'><source path='/dev/pts/5'/><target type='sclp' port='0'/><alias name='console0'/></console>`)).list, [
    'libvirt:0000000000000000000000000000000a:console0 vm device:/dev/pts/5',
  ]);
  // Aliases missing: serial<N> by position among <serial>s.
  assert.deepEqual(
    consolesOf(domain(`<serial type='pty'><source path='/dev/pts/1'/></serial><serial type='pty'><source path='/dev/pts/2'/></serial>`)).list.map((l) => l.split(' ')[0].split(':')[2]),
    ['serial0', 'serial1'],
  );
});

test('libvirt: unix mode (bind: QEMU listens; connect or absent: QEMU connects), pty without a path, odd aliases, odd paths', () => {
  assert.deepEqual(
    consolesOf(
      domain(
        `<serial type='unix'><source mode='bind' path='/run/a.sock'/><alias name='serial0'/></serial>` +
          `<serial type='unix'><source mode='connect' path='/run/b.sock'/><alias name='serial1'/></serial>` +
          `<serial type='unix'><source path='/run/c.sock'/><alias name='ua-my serial'/></serial>`,
      ),
    ).list,
    [
      'libvirt:0000000000000000000000000000000a:serial0 vm unix:/run/a.sock',
      'libvirt:0000000000000000000000000000000a:serial1 vm unix-listen:/run/b.sock',
      'libvirt:0000000000000000000000000000000a:serial2 vm unix-listen:/run/c.sock',
    ],
  );
  // Not running yet (or an inactive config): no pty path, no console.
  const starting = consolesOf(domain(`<serial type='pty'><target port='0'/><alias name='serial0'/></serial>`));
  assert.deepEqual(starting.list, []);
  assert.match(starting.notes.join('\n'), /debug: .*without a path/);
  // Paths a spec cannot carry, or relative, or too long for a unix socket.
  const odd = consolesOf(
    domain(
      `<serial type='pty'><source path='/dev/pts/1?baud=9600'/></serial>` +
        `<serial type='pty'><source path='pts/2'/></serial>` +
        `<serial type='unix'><source mode='bind' path='/${'x'.repeat(120)}'/></serial>` +
        `<serial type='pty'><source path='/dev/pts/4 '/></serial>`,
    ),
  );
  assert.deepEqual(odd.list, []);
  assert.equal(odd.notes.filter((n) => n.startsWith('warn')).length, 4, odd.notes.join('\n'));
  // Two devices claiming one alias: the first wins.
  const twice = consolesOf(domain(`<serial type='pty'><source path='/dev/pts/1'/><alias name='serial0'/></serial><serial type='pty'><source path='/dev/pts/2'/><alias name='serial0'/></serial>`));
  assert.deepEqual(twice.list, ['libvirt:0000000000000000000000000000000a:serial0 vm device:/dev/pts/1']);
  assert.match(twice.notes.join('\n'), /label of an earlier device/);
});

test('libvirt: names are sanitised, entities decoded, only the domain\'s own <name>/<uuid> count', () => {
  const xml = `<domstatus><name>status-name</name><domain><metadata><name>meta</name><uuid>ffffffff-ffff-ffff-ffff-ffffffffffff</uuid></metadata><name>a&lt;b&gt;\u001b[2J\u202e&#x1b;c<!-- x --></name><name>second</name><uuid> 0000000000000000000000000000000B </uuid><devices><serial type='pty'><source path='/dev/pts/1'/></serial></devices></domain></domstatus>`;
  assert.deepEqual(consolesOf(xml).list, ['libvirt:0000000000000000000000000000000b:serial0 a<b>?[2J??c device:/dev/pts/1']);
  assert.deepEqual(consolesOf(domain('').replace('<name>vm</name>', '')).list, []);
  const noUuid = consolesOf(`<domain><name>x</name><devices><serial type='pty'><source path='/dev/pts/1'/></serial></devices></domain>`);
  assert.deepEqual(noUuid.list, []);
  assert.match(noUuid.notes.join(), /without a valid <uuid>/);
  assert.deepEqual(consolesOf(`<domain><uuid>not-a-uuid</uuid><devices><serial type='pty'><source path='/dev/pts/1'/></serial></devices></domain>`).list, []);
  const nameless = parseLibvirtDomain(`<domain><uuid>0000000000000000000000000000000c</uuid><devices><serial type='pty'><source path='/dev/pts/1'/></serial></devices></domain>`);
  assert.ok(nameless.ok);
  if (nameless.ok) assert.equal(libvirtConsoles(nameless.domain, '/x').consoles[0].name, null);
});

test('libvirt: malformed, huge, unrelated and hostile files are skipped with one log line each, the rest still found', async (t) => {
  const h = fakeLibvirt();
  t.after(h.cleanup);
  copyFileSync(join(FIXTURES, 'web01.xml'), join(h.runDir, 'web01.xml'));
  h.put('truncated.xml', readFileSync(join(FIXTURES, 'db02.xml'), 'utf8').slice(0, 700));
  h.put('garbage.xml', '\u0000\u00ff<<<>>>&&&"\'');
  h.put('network.xml', `<network><name>default</name><uuid>00000000000000000000000000000001</uuid></network>`);
  h.put('huge.xml', domain(`<serial type='pty'><source path='/dev/pts/8'/></serial>`, `<description>${'x'.repeat(2 * 1024 * 1024)}</description>`));
  h.put('many.xml', domain(`<serial type='pty'><source path='/dev/pts/1'/></serial>`.repeat(100)).replace('0000000a', '0000000d'));
  h.put('.hidden.xml', domain(`<serial type='pty'><source path='/dev/pts/1'/></serial>`));
  h.put('web01.xml.new', 'partial');
  execFileSync('mkfifo', [join(h.runDir, 'fifo.xml')]);
  symlinkSync(join(h.runDir, 'fifo.xml'), join(h.runDir, 'link.xml'));
  const d = new LibvirtDiscovery({ logger: h.logger, runDir: h.runDir, mtimeGranularityMs: 0 });
  const found = await d.scan();
  assert.deepEqual(
    found.map((c) => `${c.key}:${c.label}`),
    [`0000000000000000000000000000000d:serial0`, ...Array.from({ length: 63 }, (_, i) => `0000000000000000000000000000000d:serial${i + 1}`), `${WEB01}:serial0`],
    'many.xml: the first 64 devices; web01 found; nothing else',
  );
  const warns = () => h.lines.filter((l) => l.level === 'warn').map((l) => `${String(l.fields.file).split('/').pop()}: ${l.message} ${l.fields.detail ?? ''}`);
  const first = warns();
  assert.equal(first.length, 5, first.join('\n'));
  assert.match(first.find((w) => w.startsWith('truncated.xml'))!, /malformed/);
  assert.match(first.find((w) => w.startsWith('garbage.xml'))!, /malformed/);
  assert.match(first.find((w) => w.startsWith('network.xml'))!, /no <domain> element/);
  assert.match(first.find((w) => w.startsWith('huge.xml'))!, /too-big .*limit 1048576/);
  assert.match(first.find((w) => w.startsWith('many.xml'))!, /more than 64 serial\/console devices/);
  // The next scans (nothing changed) neither read nor log again.
  const reads = d.filesRead;
  await d.scan();
  await d.scan();
  assert.deepEqual(warns(), first);
  assert.equal(d.filesRead, reads, 'unchanged files, broken ones included, are not read again');
});

test('readBounded: never blocks on a FIFO, refuses what is not a regular file, bounds the size', async (t) => {
  const h = fakeLibvirt();
  t.after(h.cleanup);
  const fifo = join(h.runDir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  assert.deepEqual({ ...(await readBounded(fifo, 100)), signature: null }, { ok: false, reason: 'not-a-file', detail: 'not a regular file', signature: null });
  assert.equal((await readBounded(h.runDir, 100)).ok, false);
  assert.equal((await readBounded(join(h.runDir, 'none'), 100) as { reason: string }).reason, 'missing');
  h.put('ten', '0123456789');
  assert.equal((await readBounded(join(h.runDir, 'ten'), 10) as { text: string }).text, '0123456789');
  assert.equal((await readBounded(join(h.runDir, 'ten'), 9) as { reason: string }).reason, 'too-big');
  h.put('bom', '\ufeff<domain/>');
  assert.equal((await readBounded(join(h.runDir, 'bom'), 100) as { text: string }).text, '<domain/>');
});

test('libvirt: a missing runtime directory means no consoles', async (t) => {
  const h = fakeLibvirt();
  t.after(h.cleanup);
  const d = new LibvirtDiscovery({ logger: h.logger, runDir: join(h.root, 'nope') });
  assert.deepEqual(await d.scan(), []);
  assert.deepEqual([...d.watchDirs()], []);
});
