/**
 * Reading console logs back: following one as it is written (the last lines, then
 * every byte, nothing lost or repeated, bounded, ended with a reason), every file of
 * one in order, and what earlier runs logged (for a scrollback emptied by a restart),
 * without vspc's own lines.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import { ConsoleLogManager, withoutOwnLines, type ConsoleLogOptions, type FollowSink } from '../../src/logging/console-log.js';
import { stampedLine, headerLine } from '../../src/logging/console-log/format.js';
import { FakeClient, FakeSource, memoryLogger } from '../domain/fakes.js';

const UUID = '421a5b7709c38e219f00aa105c2e7d01';
const T0 = Date.parse('2026-11-21T12:00:00.000Z');

class MemorySink implements FollowSink {
  chunks: Buffer[] = [];
  ended = false;
  buffered = 0;
  write(chunk: Buffer): void {
    assert.equal(this.ended, false, 'no write after end');
    this.chunks.push(Buffer.from(chunk));
  }
  end(): void {
    this.ended = true;
  }
  get text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }
}

function setup(options: Partial<ConsoleLogOptions> = {}, dir = mkdtempSync(join(tmpdir(), 'vspc-follow-'))) {
  const { logger } = memoryLogger();
  const ports: ConsoleHub[] = [];
  const logs = new ConsoleLogManager({ dir, logger, now: () => T0, markIntervalMs: 0, ports: () => ports, ...options });
  const hub = (scrollback = 1024) => {
    const h = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: 'web-01', tcpPort: 10001 }, undefined, scrollback, logs);
    ports.push(h);
    return h;
  };
  return { dir, logs, hub, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

describe('withoutOwnLines', () => {
  test("takes out the header and vspc's timestamped lines, nothing else; binary-safe", () => {
    const header = headerLine(T0, { key: UUID, name: 'web-01', label: '' });
    const own = stampedLine(T0, 'VM connected from 10.0.0.5:1234', true);
    const own2 = stampedLine(T0, 'client 3 (1.2.3.4:5) detached: bye', false);
    const vm = Buffer.from('login: \xff\x00 [vspc is not a stamp]\r\n[vspc 2026 nope]\r\n', 'latin1');
    const file = Buffer.concat([header, own, vm, Buffer.from('half'), own2, Buffer.from('rest\r\n')]);
    assert.equal(withoutOwnLines(file).toString('latin1'), `${vm.toString('latin1')}half\r\nrest\r\n`);
    // A stamp that does not start a line is the console's own text.
    const inline = Buffer.from(`x${stampedLine(T0, 'mark', true).toString('latin1')}`, 'latin1');
    assert.deepEqual(withoutOwnLines(inline), inline);
  });
});

describe('ConsoleLogManager.follow', () => {
  test('the last lines, then every byte queued, in order, with nothing lost or repeated around the start', async (t) => {
    const f = setup();
    t.after(async () => {
      await f.logs.close();
      f.remove();
    });
    const hub = f.hub();
    hub.attachSource(new FakeSource());
    hub.fromVm(Buffer.from('one\r\ntwo\r\nthree\r\n'));
    const sink = new MemorySink();
    const follow = f.logs.follow(hub, 2, sink);
    // Queued before the last lines are read: must come after them, once.
    hub.fromVm(Buffer.from('four\r\n'));
    await follow.started;
    hub.fromVm(Buffer.from('five'));
    hub.addClient(new FakeClient());
    // The last 2 lines of the file, then each later byte once, in order; vspc's own lines are part of the log.
    assert.match(sink.text, /^two\r\nthree\r\nfour\r\nfive\r\n\[vspc /);
    const body = sink.text.replace(/\[vspc [^\]]*\]\r\n/g, '');
    assert.equal(body, 'two\r\nthree\r\nfour\r\nfive\r\n', 'each byte once, in order');
    assert.match(sink.text, /five\r\n\[vspc \S+ client \d+ attached from fake-client \(readwrite\)\]\r\n$/);
    assert.equal(f.logs.activeFollowers, 1);
    follow.stop();
    assert.equal(sink.ended, true);
    assert.equal(f.logs.activeFollowers, 0);
    hub.fromVm(Buffer.from('after stop'));
    assert.ok(!sink.text.includes('after stop'));
  });

  test('ends with a line saying why: the console forgotten, vspc shutting down; a reader too far behind is cut off', async (t) => {
    const f = setup();
    t.after(() => f.remove());
    const hub = f.hub();
    hub.attachSource(new FakeSource());
    const forgotten = new MemorySink();
    await f.logs.follow(hub, 0, forgotten).started;
    hub.fromVm(Buffer.from('bye'));
    f.logs.forget(hub);
    assert.equal(forgotten.ended, true);
    assert.match(forgotten.text, /^bye\r\n\[vspc \S+ log follow ended: the VM serial port was forgotten\]\r\n$/);

    const hub2 = f.hub();
    const slow = new MemorySink();
    await f.logs.follow(hub2, 0, slow).started;
    slow.buffered = 2 * 1024 * 1024;
    hub2.fromVm(Buffer.from('x'));
    assert.equal(slow.ended, true);
    assert.match(slow.text, /log follow ended: the reader fell 2097152 bytes behind\]\r\n$/);

    const atClose = new MemorySink();
    await f.logs.follow(hub2, 0, atClose).started;
    await f.logs.close();
    assert.equal(atClose.ended, true);
    assert.match(atClose.text, /log follow ended: vspc is shutting down\]\r\n$/);
    assert.equal(f.logs.activeFollowers, 0);
  });
});

describe('ConsoleLogManager: rotated files and earlier runs', () => {
  test('openAll: every file, oldest first; rotatedFiles lists them', async (t) => {
    const f = setup({ keep: 3 });
    t.after(async () => {
      await f.logs.close();
      f.remove();
    });
    const hub = f.hub();
    for (const part of ['first\r\n', 'second\r\n', 'third\r\n']) {
      hub.fromVm(Buffer.from(part));
      await f.logs.rotate(hub);
    }
    hub.fromVm(Buffer.from('current\r\n'));
    assert.deepEqual(await f.logs.rotatedFiles(hub), [1, 2, 3]);
    const handles = await f.logs.openAll(hub);
    const texts = await Promise.all(handles.map(async (h) => (await h.readFile()).toString('utf8')));
    await Promise.all(handles.map((h) => h.close()));
    assert.deepEqual(
      texts.map((x) => withoutOwnLines(Buffer.from(x)).toString()),
      ['first\r\n', 'second\r\n', 'third\r\n', 'current\r\n'],
    );
    assert.equal((await f.logs.tailFileBytes(hub, 5, 2)).toString().replace(/^\[vspc [^\]]*\]\r\n/, ''), 'second\r\n');
  });

  test('recentOutput: what earlier runs logged, without vspc\'s lines, at most N bytes from a line start; found again after a rotation', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vspc-follow-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // An earlier run: output, events, then shutdown.
    const before = setup({}, dir);
    const old = before.hub();
    old.attachSource(new FakeSource());
    old.fromVm(Buffer.from('boot line 1\r\nboot line 2\r\nlogin: '));
    old.detachSource([...[old.source!]][0]);
    await before.logs.close();

    // This run: the same console; it prints before anyone asks.
    const now = setup({ keep: 2 }, dir);
    t.after(() => now.logs.close());
    const hub = now.hub(64);
    hub.attachSource(new FakeSource());
    hub.fromVm(Buffer.from('\r\nnew boot\r\n'));
    const recent = await now.logs.recentOutput(hub, 1024);
    // The CRLF vspc put before its disconnect line stays (it cannot be told from the console's own).
    assert.equal(recent.toString(), 'boot line 1\r\nboot line 2\r\nlogin: \r\n');
    // At most N bytes, from a line start.
    assert.equal((await now.logs.recentOutput(hub, 20)).toString(), 'login: \r\n');

    // Priming the scrollback: earlier output first, then this run's, within capacity.
    hub.scrollbackPrimer = (max) => now.logs.recentOutput(hub, max);
    assert.equal(hub.scrollbackPrimed, false);
    await hub.primeScrollback();
    assert.equal(hub.scrollbackPrimed, true);
    const want = 'boot line 1\r\nboot line 2\r\nlogin: \r\n\r\nnew boot\r\n';
    assert.equal(hub.scrollback.snapshot().toString(), want.slice(-64));
    const late = new FakeClient();
    hub.addClient(late);
    assert.equal(late.output.toString(), want.slice(-64), 'a client attaching now sees it');

    // Rotated since the start: the earlier bytes are found in .1.
    await now.logs.rotate(hub);
    assert.equal((await now.logs.recentOutput(hub, 1024)).toString(), 'boot line 1\r\nboot line 2\r\nlogin: \r\n');
    assert.ok(readFileSync(now.logs.pathOf(hub) + '.1').includes('new boot'));
  });

  test('recentOutput is empty for a console new in this run', async (t) => {
    const f = setup();
    t.after(async () => {
      await f.logs.close();
      f.remove();
    });
    const hub = f.hub();
    hub.fromVm(Buffer.from('fresh\r\n'));
    assert.equal((await f.logs.recentOutput(hub, 1024)).length, 0);
    hub.scrollbackPrimer = (max) => f.logs.recentOutput(hub, max);
    await hub.primeScrollback();
    assert.equal(hub.scrollback.snapshot().toString(), 'fresh\r\n', 'the ring is left as it was');
  });
});
