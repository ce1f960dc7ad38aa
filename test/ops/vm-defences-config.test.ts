/**
 * The options of the VM-side defences (docs/security.md) as `vspc` loads them: the
 * defaults and why they are what they are pinned here once, `--proxy-allow` as a
 * repeatable variadic flag, a comma list and a YAML list, and errors that name the
 * flag or the file position.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration, type LoadedConfiguration } from '../../src/config/load.js';
import { DEFAULTS } from '../../src/config/config.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../support/server.js';

const dir = tempDir('vspc-defences-');
after(() => dir.remove());
let n = 0;
function file(text: string): string {
  const p = join(dir.dir, `c${++n}.yaml`);
  writeFileSync(p, text);
  return p;
}
function load(args: string[]): LoadedConfiguration {
  const program = buildProgram().exitOverride();
  program.parse(['node', 'vspc', ...args]);
  return loadConfiguration(program);
}
function loadError(args: string[]): string {
  try {
    load(args);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('loaded without an error');
}

describe('VM-side defences: options', () => {
  test('defaults', () => {
    assert.equal(DEFAULTS.proxyAllow, null, 'any address (with a warning at start on a non-loopback VM port)');
    assert.equal(DEFAULTS.identifyTimeoutMs, 5000);
    assert.equal(DEFAULTS.takeoverProbeTimeoutMs, 2000);
    assert.equal(DEFAULTS.maxUnidentifiedPerAddress, 256);
    assert.equal(DEFAULTS.maxUnidentifiedConnections, 1024);
    assert.equal(DEFAULTS.registrationRate, 10);
    assert.equal(DEFAULTS.registrationBurst, 50);
    assert.equal(DEFAULTS.expireUnusedAfterMs, 3_600_000);
  });

  test('--proxy-allow: several values, repeated, comma-separated; duplicates dropped; canonical networks', () => {
    const c = load(['--proxy-allow', '10.1.2.3/8', '192.0.2.7', '--db', 'x.db', '--proxy-allow', '2001:db8::/32,10.0.0.0/8']).config;
    assert.deepEqual(c.proxyAllow?.map((b) => b.text), ['10.0.0.0/8', '192.0.2.7/32', '2001:db8::/32']);
  });

  test('proxyAllow in the file: a list or a comma string; the flag wins', () => {
    assert.deepEqual(load(['--config', file('proxyAllow: [10.0.0.0/8, 192.0.2.0/24]\n')]).config.proxyAllow?.map((b) => b.text), ['10.0.0.0/8', '192.0.2.0/24']);
    assert.deepEqual(load(['--config', file('proxyAllow: "10.0.0.0/8, 192.0.2.0/24"\n')]).config.proxyAllow?.map((b) => b.text), ['10.0.0.0/8', '192.0.2.0/24']);
    assert.deepEqual(
      load(['--config', file('proxyAllow:\n  - 10.0.0.0/8\n'), '--proxy-allow', '172.16.0.0/12']).config.proxyAllow?.map((b) => b.text),
      ['172.16.0.0/12'],
    );
  });

  test('errors name the flag, or the key at its file position', () => {
    assert.match(loadError(['--proxy-allow', '10.0.0.0/33']), /^--proxy-allow: "10\.0\.0\.0\/33": the prefix length must be 0-32$/);
    assert.match(loadError(['--proxy-allow', 'intranet']), /^--proxy-allow: "intranet" is not an IP address or network/);
    assert.match(loadError(['--config', file('db: x.db\nproxyAllow: [10.0.0.0/8, nope]\n')]), /:2:13: proxyAllow: "nope" is not an IP address/);
    assert.match(loadError(['--config', file('proxyAllow: {a: 1}\n')]), /:1:13: proxyAllow: expected a list of strings, got a mapping$/);
    assert.match(loadError(['--config', file('proxyAllow: []\n')]), /proxyAllow: an empty list \(leave the key out for the default\)$/);
    assert.match(loadError(['--registration-rate', 'fast']), /^--registration-rate: "fast" is not a number per second/);
    assert.match(loadError(['--registration-burst', '0']), /^--registration-burst: "0" is not a number \(1-1000000\)$/);
    assert.match(loadError(['--takeover-probe', 'soon']), /^--takeover-probe: "soon" is not a duration/);
  });

  test('rates may be fractional; 0 turns a limit off', () => {
    const c = load(['--registration-rate', '0.5', '--unidentified-per-address', '0', '--takeover-probe', '0', '--expire-unused-after', '0']).config;
    assert.equal(c.registrationRate, 0.5);
    assert.equal(c.maxUnidentifiedPerAddress, 0);
    assert.equal(c.takeoverProbeTimeoutMs, 0);
    assert.equal(c.expireUnusedAfterMs, 0);
  });
});
