/**
 * The benchmark's command line: options become BenchOptions; a bad value names its
 * option and exits 2 before anything starts.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { benchOptionsFrom, buildBenchProgram } from '../../bench/cli.js';

const RUN = fileURLToPath(new URL('../../bench/run.js', import.meta.url));

function optionsOf(...args: string[]) {
  const p = buildBenchProgram().exitOverride();
  p.parse(args, { from: 'user' });
  return benchOptionsFrom(p.opts(), 'test');
}

describe('vspc-bench command line', () => {
  test('--tunnel-lines picks the tunnel phase\'s lines, in order, each once; both by default', () => {
    assert.deepEqual(optionsOf().tunnel.lines, ['uart', 'virtio']);
    assert.deepEqual(optionsOf('--tunnel-lines', 'virtio').tunnel.lines, ['virtio']);
    assert.deepEqual(optionsOf('--tunnel-lines', ' virtio, uart ,virtio').tunnel.lines, ['virtio', 'uart']);
    assert.deepEqual(optionsOf('--tunnel-lines', 'uart,uart').tunnel.lines, ['uart']);
  });

  test('an unknown or empty --tunnel-lines is an error naming the option and the known lines', () => {
    assert.throws(() => optionsOf('--tunnel-lines', 'uart,serial'), /--tunnel-lines: unknown line "serial" \(known: uart, virtio\)/);
    assert.throws(() => optionsOf('--tunnel-lines', ' , '), /--tunnel-lines: empty/);
    assert.throws(() => optionsOf('--tunnel-lines', ''), /--tunnel-lines: empty/);
    assert.throws(() => optionsOf('--tunnel-lines', 'UART'), /--tunnel-lines: unknown line "UART"/);
  });

  test('from the shell: exit status 2 and the message on stderr, nothing started', { timeout: 60_000 }, () => {
    const r = spawnSync(process.execPath, [RUN, '--phases', 'tunnel', '--tunnel-lines', 'bogus'], { encoding: 'utf8', timeout: 50_000 });
    assert.equal(r.status, 2, `stderr: ${r.stderr}`);
    assert.match(r.stderr, /--tunnel-lines: unknown line "bogus"/);
    assert.equal(r.stdout, '');
  });
});
