/**
 * AppendFileWriter on its own (no hub, no console): bytes in order, header, bounds and
 * loss notes, the shared budget, operations in order, idle close, disk errors and
 * retries, close/destroy. Timer-driven behaviour runs under node:test mock timers.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AppendFileWriter, QueueBudget, type AppendFileWriterOptions, type Loss } from '../../src/logging/console-log/writer.js';
import { LogFileError } from '../../src/logging/console-log/errors.js';

interface Harness {
  dir: string;
  errors: LogFileError[];
  losses: Loss[];
  make(options?: Partial<AppendFileWriterOptions>): AppendFileWriter;
}

/** A temporary directory, writers that report into arrays, all closed and removed after the test. */
function harness(t: TestContext): Harness {
  const dir = mkdtempSync(join(tmpdir(), 'vspc-writer-'));
  const errors: LogFileError[] = [];
  const losses: Loss[] = [];
  const writers: AppendFileWriter[] = [];
  t.after(async () => {
    await Promise.all(writers.map((w) => w.close()));
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    errors,
    losses,
    make: (options = {}) => {
      const w = new AppendFileWriter({
        path: join(dir, 'x.log'),
        onError: (e) => errors.push(e),
        lossNote: (loss) => {
          losses.push(loss);
          return Buffer.from(`<lost ${loss.bytes} ${loss.cause}${loss.sysCode ? ` ${loss.sysCode}` : ''}>`);
        },
        ...options,
      });
      writers.push(w);
      return w;
    },
  };
}

function mockTimers(t: TestContext): (ms: number) => void {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  return (ms) => t.mock.timers.tick(ms);
}

function pattern(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed + (i >> 9)) & 0xff;
  return b;
}

describe('AppendFileWriter', () => {
  test('appends byte for byte in order, small and large chunks; a header starts a new file only; directory and modes', async (t) => {
    const h = harness(t);
    const path = join(h.dir, 'sub', 'deeper', 'x.log');
    const w = h.make({ path, header: () => Buffer.from('H\n') });
    const data = pattern(300_000);
    // Chunk sizes from 1 byte to 20 KB: some coalesced while busy, some queued as they are.
    for (let off = 0, k = 1; off < data.length; k = (k * 17) % 20_011 + 1) {
      w.write(data.subarray(off, Math.min(data.length, off + k)));
      off += k;
    }
    assert.ok(w.queuedBytes > 0);
    await w.flush();
    assert.equal(w.queuedBytes, 0);
    assert.ok(readFileSync(path).equals(Buffer.concat([Buffer.from('H\n'), data])), 'header then the bytes, exact');
    assert.equal(statSync(path).mode & 0o027, 0, 'file: not writable by the group, nothing for others');
    assert.equal(statSync(join(h.dir, 'sub')).mode & 0o027, 0, 'directories: 0750 at most');
    assert.equal(w.isOpen, true, 'kept open by default');
    assert.deepEqual(h.errors, []);
    await w.close();
    assert.equal(w.isOpen, false);

    const again = h.make({ path, header: () => Buffer.from('H\n') });
    again.write(Buffer.from('more'));
    await again.flush();
    assert.equal(readFileSync(path).length, 2 + data.length + 4, 'an existing file gets no second header');
  });

  test('bounded: past maxBuffered writes are refused and counted; a note goes where they were; urgent writes get the slack', async (t) => {
    const h = harness(t);
    const w = h.make({ maxBuffered: 100, urgentSlack: 50 });
    const accepted: boolean[] = [];
    for (let i = 0; i < 10; i++) accepted.push(w.write(Buffer.alloc(20, 0x61 + i))); // one tick: nothing written yet
    assert.deepEqual(accepted, [true, true, true, true, true, false, false, false, false, false]);
    assert.equal(w.lostBytes, 100);
    assert.equal(w.queuedBytes, 100);
    assert.equal(w.write(Buffer.alloc(40, 0x7a), { urgent: true }), true, 'urgent: within the slack');
    assert.equal(w.write(Buffer.alloc(60, 0x7a), { urgent: true }), false, 'urgent: past the slack');
    await w.flush();
    assert.equal(
      readFileSync(w.path, 'latin1'),
      'a'.repeat(20) + 'b'.repeat(20) + 'c'.repeat(20) + 'd'.repeat(20) + 'e'.repeat(20) + '<lost 100 backlog>' + 'z'.repeat(40),
    );
    assert.deepEqual(h.losses, [{ bytes: 100, cause: 'backlog' }]);
    assert.deepEqual(
      h.errors.map((e) => e.code),
      ['VSPC_LOG_BACKLOG_FULL', 'VSPC_LOG_BACKLOG_FULL'],
      'reported once per episode (the urgent refusal began a second one)',
    );
    assert.equal(w.lostBytes, 160);
    await w.close();
    assert.match(readFileSync(w.path, 'latin1'), /<lost 60 backlog>$/, 'the last episode is noted at close');
  });

  test('a shared budget bounds many writers together and counts what they lose', async (t) => {
    const h = harness(t);
    const budget = new QueueBudget(150);
    const a = h.make({ path: join(h.dir, 'a.log'), budget, maxBuffered: 100 });
    const b = h.make({ path: join(h.dir, 'b.log'), budget, maxBuffered: 100 });
    assert.equal(a.write(Buffer.alloc(100, 0x61)), true);
    assert.equal(b.write(Buffer.alloc(100, 0x62)), false, 'within its own bound, past the shared one');
    assert.equal(b.write(Buffer.alloc(50, 0x62)), true);
    assert.equal(budget.queued, 150 + '<lost 100 backlog>'.length, 'both writers, and the note about what b dropped');
    await Promise.all([a.flush(), b.flush()]);
    assert.equal(budget.queued, 0);
    assert.equal(budget.lost, 100);
    assert.equal(b.lostBytes, 100);
    assert.equal(a.lostBytes, 0);
  });

  test('enqueue() runs an operation in order with the data and passes on its result or error', async (t) => {
    const h = harness(t);
    const w = h.make();
    w.write(Buffer.from('abc'));
    const size = w.enqueue(async () => statSync(w.path).size);
    w.write(Buffer.from('defg'));
    const failing = w.enqueue(async () => {
      throw Object.assign(new Error('nope'), { code: 'EXAMPLE' });
    });
    const after = w.enqueue(async () => statSync(w.path).size);
    assert.equal(await size, 3, 'after the data queued before, before the data queued after');
    await assert.rejects(failing, { code: 'EXAMPLE' });
    assert.equal(await after, 7, 'the writer carries on after a failed operation');
    assert.deepEqual(h.errors, []);
  });

  test('keepOpenMs: Infinity keeps the file open, N closes it after N ms idle, 0 once written; a write reopens it', async (t) => {
    const tick = mockTimers(t);
    const h = harness(t);
    let keep = Infinity;
    let idleClosed = 0;
    const w = h.make({ keepOpenMs: () => keep, onIdleClosed: () => idleClosed++ });
    w.write(Buffer.from('one\n'));
    await w.flush();
    assert.equal(w.isOpen, true);
    tick(24 * 3_600_000);
    await w.flush();
    assert.equal(w.isOpen, true, 'Infinity: open however long');

    keep = 50;
    w.checkIdle();
    tick(49);
    await w.flush();
    assert.equal(w.isOpen, true, 'not idle long enough');
    tick(1);
    await w.flush();
    assert.equal(w.isOpen, false, 'closed after 50 ms idle');
    assert.equal(idleClosed, 1);

    w.write(Buffer.from('two\n'));
    await w.flush();
    assert.equal(w.isOpen, true, 'reopened by a write');
    tick(30);
    w.write(Buffer.from('three\n')); // a write restarts the idle countdown
    await w.flush();
    tick(30);
    await w.flush();
    assert.equal(w.isOpen, true, '30 ms after the last write');
    tick(20);
    await w.flush();
    assert.equal(w.isOpen, false);

    keep = 0;
    w.write(Buffer.from('four\n'));
    await w.flush();
    assert.equal(w.isOpen, false, '0: closed as soon as written');
    assert.equal(readFileSync(w.path, 'latin1'), 'one\ntwo\nthree\nfour\n');
    assert.deepEqual(h.errors, []);
  });

  test('a failed open keeps the data queued, is retried after retryMs, and flush() does not wait for the retry', async (t) => {
    const tick = mockTimers(t);
    const h = harness(t);
    const blocker = join(h.dir, 'blocker');
    writeFileSync(blocker, 'x');
    const w = h.make({ path: join(blocker, 'x.log'), retryMs: 1000 });
    w.write(Buffer.from('one,'));
    await w.flush();
    assert.equal(h.errors.length, 1);
    assert.ok(h.errors[0] instanceof LogFileError);
    assert.equal(h.errors[0].code, 'VSPC_LOG_OPEN_FAILED');
    assert.equal(h.errors[0].sysCode, 'ENOTDIR');
    assert.equal(h.errors[0].path, w.path);
    assert.equal(w.queuedBytes, 4, 'kept queued');
    assert.equal(w.lostBytes, 0);
    w.write(Buffer.from('two,'));
    await w.flush();
    assert.equal(h.errors.length, 1, 'no new attempt before retryMs');
    tick(1000);
    await w.flush();
    assert.equal(h.errors.length, 2, 'retried, failed again');
    rmSync(blocker);
    tick(1000);
    await w.flush();
    assert.equal(readFileSync(w.path, 'latin1'), 'one,two,', 'everything, in order, once it works');
    assert.equal(w.queuedBytes, 0);
    assert.deepEqual(h.losses, []);
  });

  test('F5: the file descriptor is asked for before the open; none: the data waits (queued), retried; the lease goes with the file', async (t) => {
    const tick = mockTimers(t);
    const h = harness(t);
    let free = 0;
    let held = 0;
    const w = h.make({
      path: join(h.dir, 'fd.log'),
      retryMs: 1000,
      keepOpenMs: () => 0, // closed as soon as written
      acquire: () => {
        if (free === 0) return null;
        free--;
        held++;
        return { release: () => void (held--, free++) };
      },
    });
    w.write(Buffer.from('waits,'));
    await w.flush();
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].code, 'VSPC_LOG_OPEN_FAILED');
    assert.equal(h.errors[0].sysCode, 'VSPC_FD_BUDGET_SPENT');
    assert.match(h.errors[0].message, /file descriptors exhausted/);
    assert.equal(w.queuedBytes, 6, 'kept queued, nothing lost');
    free = 1;
    tick(1000);
    await w.flush();
    assert.equal(readFileSync(w.path, 'latin1'), 'waits,');
    assert.equal(held, 0, 'the file closed, its descriptor given back');
    assert.equal(free, 1);
    assert.deepEqual(h.losses, []);
  });

  test('a failed write loses that write only, says so where it was, and close gives up on the rest (counted)', async (t) => {
    const h = harness(t);
    const path = join(h.dir, 'full.log');
    symlinkSync('/dev/full', path);
    const w = h.make({ path, retryMs: 60_000 });
    w.write(Buffer.from('doomed'));
    await w.flush();
    assert.deepEqual(
      h.errors.map((e) => [e.code, e.sysCode]),
      [['VSPC_LOG_WRITE_FAILED', 'ENOSPC']],
    );
    assert.deepEqual(h.losses, [{ bytes: 6, cause: 'write', sysCode: 'ENOSPC' }]);
    assert.equal(w.lostBytes, 6);
    const note = '<lost 6 write ENOSPC>';
    assert.equal(w.queuedBytes, note.length, 'the note waits for the retry');
    assert.equal(w.isOpen, false, 'the failed handle is closed');
    await w.close(); // one last attempt, no waiting: fails, and the note is given up
    assert.equal(w.lostBytes, 6 + note.length);
    assert.equal(w.queuedBytes, 0);
    assert.equal(h.errors.length, 2);
  });

  test('close() is idempotent and writes everything first; afterwards writes are refused and operations rejected', async (t) => {
    const h = harness(t);
    const w = h.make();
    for (let i = 0; i < 100; i++) w.write(Buffer.from(`${i},`));
    const p1 = w.close();
    const p2 = w.close();
    assert.equal(p1, p2);
    await p1;
    assert.equal(w.isOpen, false);
    assert.equal(readFileSync(w.path, 'latin1'), Array.from({ length: 100 }, (_, i) => `${i},`).join(''));
    assert.equal(w.write(Buffer.from('late')), false);
    await w.flush();
    await assert.rejects(w.enqueue(async () => 1), { code: 'VSPC_LOG_WRITER_CLOSED' });
    await assert.rejects(w.rotate(), { code: 'VSPC_LOG_WRITER_CLOSED' });
    assert.equal(w.queuedBytes, 0);
    assert.doesNotMatch(readFileSync(w.path, 'latin1'), /late/);
  });

  test('destroy() discards what is queued (counted), rejects queued operations, is idempotent; close() then resolves', async (t) => {
    const h = harness(t);
    const w = h.make();
    w.write(Buffer.from('first'));
    await w.flush();
    const big = pattern(500_000);
    for (let off = 0; off < big.length; off += 50_000) w.write(big.subarray(off, off + 50_000));
    const op = w.enqueue(async () => 'ran');
    w.destroy();
    w.destroy();
    await assert.rejects(op, (err: unknown) => err instanceof LogFileError && err.code === 'VSPC_LOG_WRITER_CLOSED');
    await w.close();
    assert.equal(w.isOpen, false);
    assert.equal(w.queuedBytes, 0);
    const written = readFileSync(w.path).length - 'first'.length;
    assert.ok(w.lostBytes > 0, 'something was discarded');
    assert.equal(written + w.lostBytes, big.length, 'every byte written or counted as lost');
    assert.equal(w.write(Buffer.from('late')), false);
    assert.deepEqual(h.errors, []);
  });
});

test('the writer, rotation, tail, names and links know nothing about consoles (no domain imports)', () => {
  const dir = resolve(new URL('../../..', import.meta.url).pathname, 'src', 'logging', 'console-log');
  for (const file of ['writer.ts', 'rotation.ts', 'tail.ts', 'names.ts', 'links.ts', 'errors.ts']) {
    const text = readFileSync(join(dir, file), 'utf8');
    assert.doesNotMatch(text, /from\s+['"][^'"]*\/domain\//, `${file} imports the domain`);
    assert.doesNotMatch(text, /ConsoleHub|VM serial port/, `${file} mentions consoles`);
  }
});
