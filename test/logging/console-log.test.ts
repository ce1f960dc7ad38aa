/**
 * ConsoleLogManager against real ConsoleHub hubs with fake sources and clients, on a
 * temporary directory: bytes land exactly, vspc's lines, marks, rotation, idle close,
 * disk errors and the bounded buffer; plus readLastLines (tail) and file names.
 *
 * No sleeps: `flush()` resolves when what was queued is written (or waiting out a
 * disk error), and the timer-driven behaviour (marks, idle close, retries) runs under
 * node:test's mock timers, advanced with `tick()`.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync, lstatSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import { ConsoleLogManager, readLastLines, type ConsoleLogOptions } from '../../src/logging/console-log.js';
import { consoleLogBaseName, encodeFilePart, NAME_MAX, nameLinkBaseName } from '../../src/logging/console-log/names.js';
import { tempLinkName } from '../../src/logging/console-log/links.js';
import { FakeClient, FakeSource, memoryLogger } from '../domain/fakes.js';

const T0 = Date.parse('2026-11-21T12:00:00.000Z');
const STAMP = '2026-11-21T12:00:00.000Z';
const UUID = '421a5b7709c38e219f00aa105c2e7d01';
const UUID_TEXT = '421a5b77-09c3-8e21-9f00-aa105c2e7d01';

/** Mock setTimeout / setInterval for this test (before the manager starts its timers). */
function mockTimers(t: TestContext): (ms: number) => void {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  return (ms) => t.mock.timers.tick(ms);
}

interface Fixture {
  dir: string;
  logs: ConsoleLogManager;
  lines: Array<Record<string, unknown>>;
  hub(opts?: { uuid?: string; label?: string; name?: string | null; id?: number }): ConsoleHub;
  file(hub: ConsoleHub, suffix?: string): Buffer;
  done(): Promise<void>;
}

function fixture(options: Partial<ConsoleLogOptions> = {}, ports: ConsoleHub[] = []): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'vspc-clog-'));
  const { logger, lines } = memoryLogger();
  const logs = new ConsoleLogManager({
    dir: join(dir, 'logs'),
    logger,
    now: () => T0,
    markIntervalMs: 0,
    ports: () => ports,
    ...options,
  });
  let nextId = 1;
  return {
    dir,
    logs,
    lines,
    hub: (o = {}) => {
      const h = new ConsoleHub(
        { id: o.id ?? nextId++, kind: 'esxi', key: o.uuid ?? UUID, label: o.label ?? '', name: o.name === undefined ? 'web-01' : o.name, tcpPort: 10001 },
        undefined,
        undefined,
        logs,
      );
      ports.push(h);
      return h;
    },
    file: (h, suffix = '') => readFileSync(logs.pathOf(h) + suffix),
    done: async () => {
      await logs.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Splits a file into its header line and the rest. */
function splitHeader(file: Buffer): { header: string; body: Buffer } {
  const i = file.indexOf('\r\n');
  assert.ok(i > 0, 'file has a header line');
  return { header: file.subarray(0, i).toString('utf8'), body: file.subarray(i + 2) };
}

/** Open file descriptors of this process pointing at `path` (Linux /proc). */
function fdsOpenOn(path: string): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

describe('console log file names', () => {
  test('<uuid>[-<label>].log, labels percent-encoded, long ones shortened with a hash', () => {
    assert.equal(consoleLogBaseName(UUID, ''), UUID_TEXT);
    assert.equal(consoleLogBaseName(UUID, 'com1'), `${UUID_TEXT}-com1`);
    assert.equal(consoleLogBaseName(UUID, 'a b/c%'), `${UUID_TEXT}-a%20b%2Fc%25`);
    // Injective: the encoded form of one label is not another label's.
    assert.notEqual(consoleLogBaseName(UUID, 'a b'), consoleLogBaseName(UUID, 'a%20b'));
    const long = consoleLogBaseName(UUID, 'é'.repeat(64));
    assert.ok(long.length < 200, long);
    assert.match(long, /~[0-9a-f]{12}$/);
    assert.notEqual(long, consoleLogBaseName(UUID, 'é'.repeat(63) + 'è'));
    assert.equal(encodeFilePart('..', 10), '..');
    assert.equal(nameLinkBaseName('web 01', ''), 'web%2001');
    // Issue 12 item 4: links are spelled like the CLI's NAME:LABEL (they were NAME@LABEL).
    assert.equal(nameLinkBaseName('a', 'b'), 'a:b');
    assert.notEqual(nameLinkBaseName('a:b', ''), nameLinkBaseName('a', 'b'));
    assert.notEqual(nameLinkBaseName('a@b', ''), nameLinkBaseName('a', 'b'));
  });

  test('every name made fits NAME_MAX, the temporary one used to replace a link too: 255-byte names and labels work', async () => {
    const longName = 'n'.repeat(255);
    const longLabel = 'é'.repeat(127) + 'x'; // 255 bytes, 763 once encoded
    const longKey = 'k'.repeat(255);
    const fits = (name: string) => assert.ok(Buffer.byteLength(name) <= NAME_MAX, `${Buffer.byteLength(name)} bytes: ${name}`);
    for (const [key, label] of [[UUID, longLabel], [longKey, longLabel], [longKey, ''], [UUID, '']]) {
      fits(`${consoleLogBaseName(key, label)}.log.99999999999999999999`);
    }
    for (const name of [longName, 'ü'.repeat(127) + 'x', '@'.repeat(255)]) {
      for (const label of ['', 'com1', longLabel]) fits(`${nameLinkBaseName(name, label)}.log`);
    }
    fits(tempLinkName());

    // End to end: this name and label used to fail with ENAMETOOLONG (the temporary link's name).
    const f = fixture({ keep: 3 });
    try {
      const h = f.hub({ label: longLabel, name: longName });
      h.fromVm(Buffer.from('x\n'));
      await f.logs.rotate(h);
      h.fromVm(Buffer.from('y\n'));
      await f.logs.flush();
      assert.deepEqual(f.lines.filter((l) => l.level === 'warn'), [], 'no warnings');
      const logDir = join(f.dir, 'logs');
      const byName = join(logDir, 'by-name');
      assert.deepEqual(readdirSync(byName), [`${nameLinkBaseName(longName, longLabel)}.log`], 'the link, and no temporary left');
      assert.equal(readlinkSync(join(byName, readdirSync(byName)[0])), join('..', basename(f.logs.pathOf(h))));
      assert.match(readFileSync(join(byName, readdirSync(byName)[0]), 'latin1'), /y\n$/);
      for (const name of [...readdirSync(logDir), ...readdirSync(byName)]) fits(name);
    } finally {
      await f.done();
    }
  });
});

describe('ConsoleLogManager', () => {
  test('VM output lands byte for byte, after a header, with no client attached', async () => {
    const f = fixture();
    try {
      const h = f.hub({ label: 'com1' });
      const src = new FakeSource();
      h.attachSource(src);
      const payload = Buffer.alloc(200_000);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
      for (let off = 0, k = 1; off < payload.length; k = (k * 13) % 997 + 1) {
        h.fromVm(payload.subarray(off, Math.min(payload.length, off + k)));
        off += k;
      }
      await f.logs.flush();
      assert.equal(f.logs.pathOf(h), join(f.dir, 'logs', `${UUID_TEXT}-com1.log`));
      const { header, body } = splitHeader(f.file(h));
      assert.equal(header, `[vspc ${STAMP} console log of VM "web-01", uuid ${UUID_TEXT}, label "com1"]`);
      const connected = Buffer.from(`\r\n[vspc ${STAMP} VM connected from fake-source]\r\n`);
      assert.deepEqual(body.subarray(0, connected.length), connected);
      assert.ok(body.subarray(connected.length).equals(payload), 'payload bytes exact');
      assert.equal(f.lines.length, 0, 'no warnings');
      assert.equal(statSync(f.logs.pathOf(h)).mode & 0o027, 0, 'not writable by the group, nothing for others');
    } finally {
      await f.done();
    }
  });

  test('a flood of one-byte chunks is coalesced and lands exactly', async () => {
    const f = fixture();
    try {
      const h = f.hub();
      const data = Buffer.alloc(300_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
      const t0 = Date.now();
      for (let i = 0; i < data.length; i++) h.fromVm(data.subarray(i, i + 1));
      await f.logs.flush();
      assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0} ms`);
      assert.ok(splitHeader(f.file(h)).body.equals(data));
      assert.equal(f.logs.droppedTotal, 0);
    } finally {
      await f.done();
    }
  });

  test('a timestamp line at connect, disconnect, vMotion, client attach/detach and takeover; on a fresh line', async () => {
    const f = fixture();
    try {
      const h = f.hub();
      const src = new FakeSource();
      h.attachSource(src);
      h.fromVm(Buffer.from('login: '));
      const a = new FakeClient();
      h.addClient(a);
      h.fromVm(Buffer.from('root\r\n'));
      h.report({ kind: 'vmotion', outcome: 'completed', durationMs: 1234 });
      h.report({ kind: 'client-takeover', clientId: 9, peer: '10.0.0.9:5', displacedClientId: a.id, displacedPeer: 'fake-client' });
      h.removeClient(a, 'taken over');
      h.detachSource(src);
      await f.logs.flush();
      const { body } = splitHeader(f.file(h));
      assert.equal(
        body.toString('utf8'),
        `\r\n[vspc ${STAMP} VM connected from fake-source]\r\n` +
          'login: ' +
          `\r\n[vspc ${STAMP} client ${a.id} attached from fake-client (readwrite)]\r\n` +
          'root\r\n' +
          `[vspc ${STAMP} vMotion completed after 1234 ms]\r\n` +
          `[vspc ${STAMP} client 9 from 10.0.0.9:5 took over from client ${a.id} (fake-client)]\r\n` +
          `[vspc ${STAMP} client ${a.id} (fake-client) detached: taken over]\r\n` +
          `[vspc ${STAMP} VM disconnected (was fake-source)]\r\n`,
      );
    } finally {
      await f.done();
    }
  });

  test('periodic marks only in files that had output since the last mark', async (t) => {
    const tick = mockTimers(t);
    const f = fixture({ markIntervalMs: 30 });
    try {
      const busy = f.hub({ uuid: 'a'.repeat(32), name: 'busy' });
      const quiet = f.hub({ uuid: 'b'.repeat(32), name: 'quiet' });
      quiet.report({ kind: 'vm-connected', peer: 'x' }); // an event is not output
      busy.fromVm(Buffer.from('hello\n'));
      const marks = () => (f.file(busy).toString('latin1').match(/\[vspc [^\]]* mark\]/g) ?? []).length;
      await f.logs.flush();
      assert.equal(marks(), 0, 'no mark before the interval');
      tick(30);
      await f.logs.flush();
      assert.equal(marks(), 1, 'first mark');
      tick(150);
      await f.logs.flush();
      assert.equal(marks(), 1, 'no second mark without output');
      busy.fromVm(Buffer.from('more\n'));
      tick(30);
      await f.logs.flush();
      assert.equal(marks(), 2, 'second mark');
      assert.equal(f.file(busy).toString('latin1').split('\n').filter((l) => l === `[vspc ${STAMP} mark]\r`).length, 2);
      assert.ok(!f.file(quiet).toString('latin1').includes('mark'), 'no mark in the quiet file');
    } finally {
      await f.done();
    }
  });

  test('rotation by size keeps --log-keep files, none over the limit, contents in order', async () => {
    const f = fixture({ maxSize: 1000, keep: 3 });
    try {
      const h = f.hub();
      const data = Buffer.alloc(5000);
      for (let i = 0; i < data.length; i++) data[i] = 33 + ((i / 100) | 0) % 90; // 100-byte runs of one char
      for (let i = 0; i < data.length; i += 100) {
        h.fromVm(data.subarray(i, i + 100));
        if (i % 700 === 0) await f.logs.flush(); // some batched, some not
      }
      await f.logs.flush();
      const path = f.logs.pathOf(h);
      const names = readdirSync(join(f.dir, 'logs')).filter((n) => n.startsWith(UUID_TEXT)).sort();
      assert.deepEqual(names, [`${UUID_TEXT}.log`, `${UUID_TEXT}.log.1`, `${UUID_TEXT}.log.2`, `${UUID_TEXT}.log.3`]);
      const bodies: Buffer[] = [];
      for (const suffix of ['.3', '.2', '.1', '']) {
        const file = readFileSync(path + suffix);
        assert.ok(file.length <= 1000, `${suffix || 'current'}: ${file.length} bytes`);
        const { header, body } = splitHeader(file);
        assert.match(header, /console log of VM "web-01"/);
        assert.ok(body.length > 0);
        bodies.push(body);
      }
      const kept = Buffer.concat(bodies);
      assert.ok(kept.length >= 3 * 800, `${kept.length} bytes kept`);
      assert.ok(kept.equals(data.subarray(data.length - kept.length)), 'rotated files hold the newest bytes, in order, none missing');
    } finally {
      await f.done();
    }
  });

  test('rotation on demand: one VM or all; empty or missing files are not rotated; keep 0 deletes', async () => {
    const ports: ConsoleHub[] = [];
    const f = fixture({ keep: 2 }, ports);
    try {
      const a = f.hub({ uuid: 'a'.repeat(32), name: 'a' });
      const b = f.hub({ uuid: 'b'.repeat(32), name: 'b' });
      a.fromVm(Buffer.from('one\n'));
      await f.logs.rotate(a);
      const pa = f.logs.pathOf(a);
      assert.equal(existsSync(pa), false, 'no new file until there is output');
      assert.equal(splitHeader(readFileSync(pa + '.1')).body.toString(), 'one\n');
      await f.logs.rotate(a); // nothing to rotate
      assert.equal(splitHeader(readFileSync(pa + '.1')).body.toString(), 'one\n');
      a.fromVm(Buffer.from('two\n'));
      b.fromVm(Buffer.from('bee\n'));
      await f.logs.rotate(); // all
      assert.equal(splitHeader(readFileSync(pa + '.1')).body.toString(), 'two\n');
      assert.equal(splitHeader(readFileSync(pa + '.2')).body.toString(), 'one\n');
      assert.equal(splitHeader(readFileSync(f.logs.pathOf(b) + '.1')).body.toString(), 'bee\n');
      a.fromVm(Buffer.from('three\n'));
      await f.logs.rotate(a);
      assert.equal(splitHeader(readFileSync(pa + '.2')).body.toString(), 'two\n', 'the oldest goes');
      assert.equal(existsSync(pa + '.3'), false);
      a.fromVm(Buffer.from('four\n'));
      await f.logs.flush();
      assert.equal(splitHeader(f.file(a)).body.toString(), 'four\n');
    } finally {
      await f.done();
    }
    const g = fixture({ keep: 0 });
    try {
      const h = g.hub();
      h.fromVm(Buffer.from('x\n'));
      await g.logs.rotate(h);
      assert.deepEqual(readdirSync(join(g.dir, 'logs')).filter((n) => n.endsWith('.log') || n.includes('.log.')), []);
    } finally {
      await g.done();
    }
  });

  test('a disconnected VM keeps no file open once idle; a connected one does; forget closes at once', async (t) => {
    const tick = mockTimers(t);
    const f = fixture({ idleCloseMs: 60 });
    try {
      const h = f.hub();
      const src = new FakeSource();
      h.attachSource(src);
      h.fromVm(Buffer.from('boot\n'));
      await f.logs.flush();
      const path = f.logs.pathOf(h);
      assert.equal(f.logs.openHandles, 1);
      assert.equal(fdsOpenOn(path), 1, 'one descriptor on the file');
      tick(200);
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 1, 'connected: kept open');
      h.detachSource(src);
      await f.logs.flush(); // the "VM disconnected" line is written; the idle countdown starts
      tick(59);
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 1, 'not idle for long enough yet');
      tick(1);
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 0, 'idle close');
      assert.equal(fdsOpenOn(path), 0, 'descriptor closed');
      // Reopened on the next line, closed again when idle.
      h.addClient(new FakeClient());
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 1);
      tick(60);
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 0, 'idle close again');
      assert.match(f.file(h).toString(), /VM disconnected \(was fake-source\)\]\r\n\[vspc [^\]]+ client \d+ attached from fake-client/);

      const g = f.hub({ uuid: 'e'.repeat(32) });
      const gsrc = new FakeSource();
      g.attachSource(gsrc);
      g.fromVm(Buffer.from('up\n'));
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 1);
      g.fromVm(Buffer.from('last words\n'));
      f.logs.forget(g);
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 0, 'closed after forget, without waiting for the idle timer');
      assert.match(f.file(g).toString(), /last words\n$/);
    } finally {
      await f.done();
    }
  });

  test('an unusable directory: one warning per kind, no throw, output kept queued and written once it works', async (t) => {
    const tick = mockTimers(t);
    const dir = mkdtempSync(join(tmpdir(), 'vspc-clog-'));
    try {
      const blocker = join(dir, 'notadir');
      writeFileSync(blocker, 'x');
      const { logger, lines } = memoryLogger();
      const logs = new ConsoleLogManager({ dir: join(blocker, 'logs'), logger, retryMs: 30, markIntervalMs: 0, now: Date.now });
      assert.equal(await logs.init(), false);
      assert.equal(lines.filter((l) => l.level === 'warn').length, 1, 'init warns');
      const h = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: null, tcpPort: 1 }, undefined, undefined, logs);
      for (let i = 0; i < 20; i++) {
        h.fromVm(Buffer.from(`line ${i}\n`));
        await logs.flush(); // tried (and failed), or waiting for the retry
        tick(10); // a retry every third line
      }
      await logs.flush();
      const writeWarnings = lines.filter((l) => l.message === 'console log write failed; retrying in a while, output queued meanwhile');
      assert.equal(writeWarnings.length, 1, JSON.stringify(lines));
      assert.equal(writeWarnings[0].errorCode, 'ENOTDIR');
      assert.equal(writeWarnings[0].vm, UUID);
      assert.equal(logs.openHandles, 0);
      // The operator fixes it: what was queued is written, in order, nothing lost.
      assert.ok(logs.queuedBytes > 0, 'output kept queued');
      rmSync(blocker);
      tick(30);
      await logs.flush();
      assert.ok(existsSync(join(blocker, 'logs', `${UUID_TEXT}.log`)), 'file after the fix');
      assert.equal(logs.queuedBytes, 0, 'all written');
      await logs.close();
      const body = splitHeader(readFileSync(join(blocker, 'logs', `${UUID_TEXT}.log`))).body.toString();
      assert.equal(body, Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join(''));
      assert.equal(logs.droppedTotal, 0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a full disk (ENOSPC via /dev/full): one warning, no throw, output held then counted as lost at close', async (t) => {
    const tick = mockTimers(t);
    const f = fixture({ retryMs: 20 });
    try {
      const h = f.hub();
      assert.equal(await f.logs.init(), true);
      symlinkSync('/dev/full', f.logs.pathOf(h));
      let bytes = 0;
      for (let i = 0; i < 10; i++) {
        const d = Buffer.from(`data ${i}\n`);
        bytes += d.length;
        assert.doesNotThrow(() => h.fromVm(d));
        await f.logs.flush();
        tick(15);
      }
      await f.logs.flush();
      const warnings = () => f.lines.filter((l) => l.level === 'warn');
      assert.equal(warnings().length, 1, JSON.stringify(f.lines));
      assert.equal(warnings()[0].errorCode, 'ENOSPC');
      assert.equal(warnings()[0].file, f.logs.pathOf(h));
      assert.equal(f.logs.openHandles, 0, 'the failed handle is closed');
      assert.equal(f.logs.droppedTotal, 0, 'still queued, waiting for space');
      await f.logs.close();
      assert.equal(f.logs.droppedTotal, bytes, 'given up at close, and counted');
      assert.equal(warnings().length, 1, 'still one warning');
      assert.ok(lstatSync(f.logs.pathOf(h)).isSymbolicLink());
    } finally {
      await f.done();
    }
  });

  test('a write that fails loses only its batch; the file says how many bytes, at that point', async (t) => {
    const tick = mockTimers(t);
    const f = fixture({ retryMs: 10 });
    const probe = await (await import('node:fs/promises')).open(join(tmpdir(), `vspc-probe-${process.pid}`), 'w');
    const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    rmSync(join(tmpdir(), `vspc-probe-${process.pid}`), { force: true });
    const realWrite = proto.write;
    let failNext = false;
    proto.write = function (this: unknown, ...args: unknown[]) {
      const data = args[0];
      if (failNext && Buffer.isBuffer(data) && data.includes('doomed')) {
        failNext = false;
        return Promise.reject(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' }));
      }
      return realWrite.apply(this, args);
    };
    try {
      const h = f.hub();
      h.fromVm(Buffer.from('before\n'));
      await f.logs.flush();
      failNext = true;
      h.fromVm(Buffer.from('doomed\n'));
      await f.logs.flush();
      h.fromVm(Buffer.from('after\n'));
      await f.logs.flush();
      assert.ok(!f.file(h).includes('after'), 'held until the retry');
      tick(10);
      await f.logs.flush();
      assert.equal(
        splitHeader(f.file(h)).body.toString(),
        `before\n\r\n[vspc ${STAMP} 7 bytes of console output lost: write failed (ENOSPC)]\r\nafter\n`,
      );
      assert.equal(f.logs.droppedTotal, 7);
      assert.equal(f.lines.filter((l) => l.level === 'warn' && l.errorCode === 'ENOSPC').length, 1);
    } finally {
      proto.write = realWrite;
      await f.done();
    }
  });

  test('past the per-VM buffer bound, output is dropped, counted, and said in the file', async () => {
    const f = fixture({ maxBuffered: 1000 });
    try {
      const h = f.hub();
      const chunk = (i: number) => Buffer.alloc(100, 0x41 + (i % 26));
      for (let i = 0; i < 50; i++) h.fromVm(chunk(i)); // one tick: nothing written yet
      assert.equal(f.logs.droppedTotal, 4000);
      await f.logs.flush();
      h.fromVm(Buffer.from('after\n'));
      await f.logs.flush();
      const { body } = splitHeader(f.file(h));
      const kept = Buffer.concat(Array.from({ length: 10 }, (_, i) => chunk(i)));
      assert.equal(
        body.toString('latin1'),
        kept.toString('latin1') + `\r\n[vspc ${STAMP} 4000 bytes of console output dropped: the log file could not keep up]\r\n` + 'after\n',
      );
      const w = f.lines.filter((l) => l.level === 'warn');
      assert.equal(w.length, 1);
      assert.match(String(w[0].message), /dropping console output/);
      assert.equal(w[0].maxBuffered, 1000);
    } finally {
      await f.done();
    }
  });

  test('the bound over all files holds too: many VMs cannot pile up memory', async () => {
    const f = fixture({ maxBuffered: 1000, maxTotalBuffered: 2500 });
    try {
      const hubs = [1, 2, 3, 4].map((i) => f.hub({ uuid: String(i).repeat(32), name: null }));
      for (const h of hubs) for (let i = 0; i < 10; i++) h.fromVm(Buffer.alloc(100, 0x61)); // 4000 bytes in one tick
      assert.equal(f.logs.droppedTotal, 1500, '2500 queued, the rest dropped');
      await f.logs.flush();
      const sizes = hubs.map((h) => (existsSync(f.logs.pathOf(h)) ? splitHeader(f.file(h)).body.length : 0));
      assert.deepEqual(sizes, [1000, 1000, 500, 0]);
    } finally {
      await f.done();
    }
  });

  test('a name link in by-name/ follows renames; the file follows the UUID', async () => {
    const f = fixture();
    try {
      const h = f.hub({ label: 'com1', name: 'web-01' });
      h.fromVm(Buffer.from('a\n'));
      await f.logs.flush();
      const byName = join(f.dir, 'logs', 'by-name');
      assert.equal(readlinkSync(join(byName, 'web-01:com1.log')), join('..', `${UUID_TEXT}-com1.log`));
      assert.equal(readFileSync(join(byName, 'web-01:com1.log'), 'latin1'), f.file(h).toString('latin1'));
      h.identity.name = 'web-02';
      h.fromVm(Buffer.from('b\n'));
      await f.logs.flush();
      assert.deepEqual(readdirSync(byName), ['web-02:com1.log']);
      assert.match(f.file(h).toString(), /a\nb\n$/, 'same file after the rename');
    } finally {
      await f.done();
    }
  });

  test('close() writes what is queued, closes every file, is idempotent; later output is ignored', async () => {
    const f = fixture();
    try {
      const h = f.hub();
      h.attachSource(new FakeSource());
      for (let i = 0; i < 100; i++) h.fromVm(Buffer.from(`${i},`));
      const p1 = f.logs.close();
      const p2 = f.logs.close();
      assert.equal(p1, p2);
      await p1;
      assert.equal(f.logs.openHandles, 0);
      assert.match(f.file(h).toString(), /0,1,2,.*,98,99,$/);
      h.fromVm(Buffer.from('late'));
      assert.equal(f.logs.queuedBytes, 0, 'nothing queued after close');
      await f.logs.flush();
      assert.equal(f.logs.openHandles, 0);
      assert.ok(!f.file(h).toString().includes('late'));
    } finally {
      await f.done();
    }
  });

  test('tail(hub, n) returns the last n lines, including output still queued', async () => {
    const f = fixture();
    try {
      const h = f.hub();
      assert.equal(await f.logs.tail(h, 5), '', 'no file yet');
      h.fromVm(Buffer.from('one\r\ntwo\r\nthree\r\nfour'));
      assert.equal(await f.logs.tail(h, 2), 'three\r\nfour');
      h.fromVm(Buffer.from('\r\n'));
      assert.equal(await f.logs.tail(h, 1), 'four\r\n');
      assert.equal(await f.logs.tail(h, 0), '');
    } finally {
      await f.done();
    }
  });
});

describe('readLastLines', () => {
  test('last N lines like tail -n, reading only the end of a big file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vspc-tail-'));
    try {
      const p = join(dir, 'x.log');
      writeFileSync(p, 'a\nb\nc\n');
      assert.equal(await readLastLines(p, 2), 'b\nc\n');
      assert.equal(await readLastLines(p, 3), 'a\nb\nc\n');
      assert.equal(await readLastLines(p, 10), 'a\nb\nc\n');
      writeFileSync(p, 'a\nb\nc');
      assert.equal(await readLastLines(p, 1), 'c');
      assert.equal(await readLastLines(p, 2), 'b\nc');
      writeFileSync(p, '\n\n');
      assert.equal(await readLastLines(p, 1), '\n');
      writeFileSync(p, '');
      assert.equal(await readLastLines(p, 3), '');
      assert.equal(await readLastLines(join(dir, 'missing.log'), 3), '');

      // 8 MiB of numbered lines, lines crossing the 64 KiB block boundaries.
      const lines: string[] = [];
      let size = 0;
      for (let i = 0; size < 8 << 20; i++) {
        const l = `line ${i} ${'x'.repeat(i % 300)}`;
        lines.push(l);
        size += l.length + 1;
      }
      writeFileSync(p, lines.join('\n') + '\n');
      const t0 = Date.now();
      assert.equal(await readLastLines(p, 500), lines.slice(-500).join('\n') + '\n');
      assert.ok(Date.now() - t0 < 2000);
      // A file without newlines: at most maxBytes come back.
      writeFileSync(p, Buffer.alloc(3 << 20, 0x41));
      assert.equal((await readLastLines(p, 5, 1 << 20)).length, 1 << 20);
      assert.equal(statSync(p).size, 3 << 20);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
