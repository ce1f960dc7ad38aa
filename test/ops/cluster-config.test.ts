/**
 * The cluster options' checks (src/config/table.ts): the secret file's mode and
 * strength, the advertised link address. Each refusal names the field.
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

test('a group-readable secret file (0640) is refused', () => {
  const d = tempDir('vspc-cfg-');
  try {
    const p = join(d.dir, 's');
    writeFileSync(p, randomBytes(32).toString('hex'));
    chmodSync(p, 0o640);
    refused(() => readClusterSecret('--cluster-secret-file', p), '--cluster-secret-file');
  } finally {
    d.remove();
  }
});

test('a weak secret is refused: 32 of one letter, two letters alternating, a short one, one neither hex nor base64', () => {
  const d = tempDir('vspc-cfg-');
  try {
    const p = join(d.dir, 's');
    for (const weak of ['a'.repeat(32), 'ab'.repeat(32), 'deadbeef'.repeat(8), randomBytes(15).toString('hex'), 'correct horse battery staple, really!', 'Aa1+'.repeat(10)]) {
      writeFileSync(p, weak, { mode: 0o600 });
      refused(() => readClusterSecret('--cluster-secret-file', p), '--cluster-secret-file');
    }
  } finally {
    d.remove();
  }
});

test('a random secret is accepted: openssl rand -hex 32 / -hex 16 / -base64 24 forms, a trailing newline ignored', () => {
  const d = tempDir('vspc-cfg-');
  try {
    const p = join(d.dir, 's');
    // Two outputs of randomBytes that the check once refused as "a few characters repeated"
    // (it failed this test about once in 20 runs): 24 bytes of base64 whose characters,
    // lowercased, gave 3.72 bits each (under 4), and 16 bytes of hex giving 2.88 (under 3).
    const unlucky = ['JqP5/jE4/jhOvP4/1jnJ14FV2v49oUuj', 'fe00b0064506b08efbfb6d8eb04fbe0f'];
    for (const good of [randomBytes(32).toString('hex'), randomBytes(16).toString('hex').toUpperCase(), randomBytes(24).toString('base64'), randomBytes(32).toString('base64url'), ...unlucky]) {
      writeFileSync(p, `${good}\n`, { mode: 0o600 });
      assert.equal(readClusterSecret('--cluster-secret-file', p).toString(), good);
    }
  } finally {
    d.remove();
  }
});

test('--cluster-listen refuses every spelling of "all addresses" (0, 0.0, 0.0.0.0, ::, [::], [0:0::0]) and takes a real address', () => {
  for (const bad of ['0:7700', '0.0:7700', '0.0.0.0:7700', '[::]:7700', '[0:0::0]:7700', ':7700']) refused(() => parseClusterListen('--cluster-listen', bad), '--cluster-listen');
  assert.deepEqual(parseClusterListen('--cluster-listen', '10.0.0.2:7700'), { host: '10.0.0.2', port: 7700 });
  assert.deepEqual(parseClusterListen('--cluster-listen', 'node-b.example:0'), { host: 'node-b.example', port: 0 });
});
