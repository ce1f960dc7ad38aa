/**
 * The safety rules for a directory that gets unix sockets or pty links, and for what is
 * already at a socket path (src/access/common/paths.ts).
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkDirectory, checkSocketPath } from '../../src/access/common/paths.js';
import { AccessError } from '../../src/access/common/errors.js';
import { tempDir } from '../support/server.js';

const base = tempDir('vspc-paths-');
after(() => base.remove());
let n = 0;
function dir(mode: number): string {
  const d = join(base.dir, `d${++n}`);
  mkdirSync(d);
  chmodSync(d, mode);
  return d;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AccessError, String(err));
    return `${err.code}: ${err.message}`;
  }
  return 'ok';
}

describe('endpoint directories', () => {
  const me = process.getuid?.() ?? 0;
  test('ours and not writable by others: fine', async () => {
    assert.equal(await code(checkDirectory(dir(0o755))), 'ok');
    assert.equal(await code(checkDirectory(dir(0o700))), 'ok');
    assert.equal(await code(checkDirectory(dir(0o1777))), 'ok', 'the sticky bit protects our files');
  });
  test('missing, or not a directory', async () => {
    assert.match(await code(checkDirectory(join(base.dir, 'nope'))), /^VSPC_ACCESS_NO_DIRECTORY: the directory .* does not exist/);
    const f = join(base.dir, 'file');
    writeFileSync(f, '');
    assert.match(await code(checkDirectory(f)), /^VSPC_ACCESS_NO_DIRECTORY: .* is a regular file, not a directory$/);
  });
  test('group- or world-writable without the sticky bit, or someone else\'s', async () => {
    assert.match(await code(checkDirectory(dir(0o777))), /^VSPC_ACCESS_UNSAFE_DIRECTORY: .*writable by everyone \(mode 0777\)/);
    assert.match(await code(checkDirectory(dir(0o775))), /^VSPC_ACCESS_UNSAFE_DIRECTORY: .*writable by its group \(mode 0775\)/);
    // As another uid would see a directory of ours (neither theirs nor root's).
    if (me === 0) {
      const d = dir(0o755);
      execFileSync('chown', ['65534', d]);
      assert.match(await code(checkDirectory(d)), /^VSPC_ACCESS_UNSAFE_DIRECTORY: .*belongs to uid 65534/);
    }
    assert.match(await code(checkDirectory(dir(0o755), 12345)), me === 0 ? /^ok$/ : /UNSAFE/, "root's directories are fine for anyone");
  });
});

describe('what is at a socket path', () => {
  test('nothing, a stale socket, a live one, a symlink, a file', async () => {
    const d = dir(0o755);
    assert.equal(await checkSocketPath(join(d, 'free')), 'free');
    const stale = join(d, 'stale');
    execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', stale]);
    assert.equal(await checkSocketPath(stale), 'stale');
    const live = join(d, 'live');
    const server = net.createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(live, r));
    try {
      assert.match(await code(checkSocketPath(live)), /^VSPC_ACCESS_PATH_IN_USE: another process listens on /);
    } finally {
      server.close();
    }
    symlinkSync(stale, join(d, 'link'));
    assert.match(await code(checkSocketPath(join(d, 'link'))), /^VSPC_ACCESS_PATH_OCCUPIED: .* is a symbolic link, not a socket/);
    writeFileSync(join(d, 'file'), 'x');
    assert.match(await code(checkSocketPath(join(d, 'file'))), /^VSPC_ACCESS_PATH_OCCUPIED: .* is a regular file, not a socket/);
  });
});
