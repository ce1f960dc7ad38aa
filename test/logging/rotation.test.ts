/**
 * Rotation on its own: `rotateFiles` on plain files, the size rule, and an
 * AppendFileWriter with a rotation policy (by size and on demand). No hub.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mustRotate, rotateFiles, rotatedPath } from '../../src/logging/console-log/rotation.js';
import { AppendFileWriter } from '../../src/logging/console-log/writer.js';
import { LogFileError } from '../../src/logging/console-log/errors.js';

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'vspc-rotation-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function contents(path: string): Record<string, string> {
  const dir = join(path, '..');
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = readFileSync(join(dir, name), 'latin1');
  return out;
}

describe('rotateFiles', () => {
  test('x.log → x.log.1 → … → x.log.<keep>, the oldest replaced; missing or empty: nothing; keep 0 deletes', async (t) => {
    const p = join(tempDir(t), 'x.log');
    assert.equal(rotatedPath(p, 2), `${p}.2`);
    assert.equal(await rotateFiles(p, 3), false, 'missing');
    writeFileSync(p, '');
    assert.equal(await rotateFiles(p, 3), false, 'empty');
    assert.deepEqual(contents(p), { 'x.log': '' });

    writeFileSync(p, 'a');
    assert.equal(await rotateFiles(p, 3), true);
    assert.deepEqual(contents(p), { 'x.log.1': 'a' }, 'no gap needed: .2 and .3 missing is fine');
    for (const c of ['b', 'c', 'd']) {
      writeFileSync(p, c);
      await rotateFiles(p, 3);
    }
    assert.deepEqual(contents(p), { 'x.log.1': 'd', 'x.log.2': 'c', 'x.log.3': 'b' }, 'a went');

    writeFileSync(p, 'e');
    assert.equal(await rotateFiles(p, 1), true);
    assert.deepEqual(contents(p), { 'x.log.1': 'e', 'x.log.2': 'c', 'x.log.3': 'b' }, 'keep 1: only .1 is touched');

    writeFileSync(p, 'f');
    assert.equal(await rotateFiles(p, 0), true);
    assert.deepEqual(contents(p), { 'x.log.1': 'e', 'x.log.2': 'c', 'x.log.3': 'b' }, 'keep 0: deleted');
  });

  test('a rename that fails throws the file system error and leaves the file in place', async (t) => {
    const p = join(tempDir(t), 'x.log');
    writeFileSync(p, 'current');
    mkdirSync(`${p}.1`);
    writeFileSync(join(`${p}.1`, 'inside'), 'x');
    await assert.rejects(rotateFiles(p, 1), (err: NodeJS.ErrnoException) => ['EISDIR', 'ENOTEMPTY', 'EEXIST'].includes(String(err.code)));
    assert.equal(readFileSync(p, 'latin1'), 'current');
  });

  test('mustRotate: before a write that would pass maxSize, never a file holding only its header', () => {
    const policy = { maxSize: 1000, keep: 1 };
    assert.equal(mustRotate(policy, 900, 880, 100), false, 'fits exactly');
    assert.equal(mustRotate(policy, 901, 881, 100), true);
    assert.equal(mustRotate(policy, 20, 0, 5000), false, 'header only: a fresh file takes what fits');
    assert.equal(mustRotate({ maxSize: Infinity, keep: 1 }, 1e12, 1e12, 1e6), false);
  });
});

describe('AppendFileWriter with rotation', () => {
  test('by size: no file over maxSize, a header in each, keep N, bytes in order, big chunks split', async (t) => {
    const path = join(tempDir(t), 'x.log');
    const w = new AppendFileWriter({ path, rotation: { maxSize: 1000, keep: 2 }, header: () => Buffer.from('H\n') });
    const data = Buffer.alloc(6000);
    for (let i = 0; i < data.length; i++) data[i] = 0x21 + ((i / 97) | 0) % 90;
    let off = 0;
    for (const size of [100, 100, 1500, 37, 2500, 1]) {
      w.write(data.subarray(off, off + size));
      off += size;
      if (size === 1500) await w.flush(); // some batched, some not
    }
    w.write(data.subarray(off));
    await w.close();
    assert.deepEqual(readdirSync(join(path, '..')).sort(), ['x.log', 'x.log.1', 'x.log.2']);
    const bodies: Buffer[] = [];
    for (const file of [`${path}.2`, `${path}.1`, path]) {
      const b = readFileSync(file);
      assert.ok(b.length <= 1000, `${file}: ${b.length} bytes`);
      assert.equal(b.subarray(0, 2).toString(), 'H\n', 'a header in each file');
      bodies.push(b.subarray(2));
    }
    const kept = Buffer.concat(bodies);
    assert.ok(kept.length >= 2 * 900, `${kept.length} bytes kept`);
    assert.ok(kept.equals(data.subarray(data.length - kept.length)), 'the newest bytes, in order, none missing');
  });

  test('on demand: what was queued before goes to the old file; no new file until there is data; keep 0 deletes', async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'x.log');
    const w = new AppendFileWriter({ path, rotation: { maxSize: Infinity, keep: 2 } });
    w.write(Buffer.from('one\n'));
    assert.equal(await w.rotate(), true);
    assert.equal(existsSync(path), false, 'no new file yet');
    assert.equal(readFileSync(`${path}.1`, 'latin1'), 'one\n');
    assert.equal(await w.rotate(), false, 'nothing to rotate');
    w.write(Buffer.from('two\n'));
    const rotated = w.rotate();
    w.write(Buffer.from('three\n'));
    assert.equal(await rotated, true);
    await w.flush();
    assert.deepEqual(contents(path), { 'x.log': 'three\n', 'x.log.1': 'two\n', 'x.log.2': 'one\n' });
    await w.close();

    const d = new AppendFileWriter({ path: join(dir, 'y.log'), rotation: { maxSize: Infinity, keep: 0 } });
    d.write(Buffer.from('gone\n'));
    assert.equal(await d.rotate(), true);
    assert.equal(existsSync(join(dir, 'y.log')), false);
    assert.equal(existsSync(join(dir, 'y.log.1')), false);
    await d.close();
  });

  test('a failed rotation rejects with VSPC_LOG_ROTATE_FAILED and the writer goes on with the same file', async (t) => {
    const path = join(tempDir(t), 'x.log');
    const errors: LogFileError[] = [];
    const w = new AppendFileWriter({ path, rotation: { maxSize: Infinity, keep: 1 }, onError: (e) => errors.push(e) });
    w.write(Buffer.from('before\n'));
    await w.flush();
    mkdirSync(`${path}.1`);
    writeFileSync(join(`${path}.1`, 'inside'), 'x');
    await assert.rejects(w.rotate(), (err: unknown) => {
      assert.ok(err instanceof LogFileError);
      assert.equal(err.code, 'VSPC_LOG_ROTATE_FAILED');
      assert.equal(err.path, path);
      assert.ok(['EISDIR', 'ENOTEMPTY', 'EEXIST'].includes(String(err.sysCode)), String(err.sysCode));
      return true;
    });
    w.write(Buffer.from('after\n'));
    await w.close();
    assert.equal(readFileSync(path, 'latin1'), 'before\nafter\n');
    assert.deepEqual(errors, [], 'an on-demand rotation reports through its promise, not onError');
  });
});
