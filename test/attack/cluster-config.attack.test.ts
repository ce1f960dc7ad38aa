/**
 * ATTACK REPROS (branch attack-link): cluster options (src/config/table.ts). Each
 * asserts the expected refusal and fails on cluster-link 1b3fe1b.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readClusterSecret, parseClusterListen } from '../../src/config/table.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../support/server.js';

function refused(fn: () => unknown, field: string): void {
  assert.throws(fn, (e: unknown) => e instanceof ConfigError && e.message.startsWith(`${field}:`));
}

test('FINDING a group-readable secret file (0640) is accepted; --help promises "not readable by other users"', () => {
  const d = tempDir('vspc-attack-cfg-');
  try {
    const p = join(d.dir, 's');
    writeFileSync(p, randomBytes(32).toString('hex'));
    chmodSync(p, 0o640);
    refused(() => readClusterSecret('--cluster-secret-file', p), '--cluster-secret-file');
  } finally {
    d.remove();
  }
});

test('FINDING a 32-character secret of one repeated letter is accepted (an impostor listener can brute-force weak secrets offline)', () => {
  const d = tempDir('vspc-attack-cfg-');
  try {
    const p = join(d.dir, 's');
    writeFileSync(p, 'a'.repeat(32), { mode: 0o600 });
    refused(() => readClusterSecret('--cluster-secret-file', p), '--cluster-secret-file');
  } finally {
    d.remove();
  }
});

test('FINDING --cluster-listen 0:7700 (host "0" = every IPv4 address on Linux) passes the wildcard check and is advertised as "0"', () => {
  refused(() => parseClusterListen('--cluster-listen', '0:7700'), '--cluster-listen');
});
