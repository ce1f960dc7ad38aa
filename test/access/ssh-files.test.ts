/**
 * The SSH front door's files and processes: host keys (created once with mode 0600,
 * the same on every later start, refused when others can read them or when they are
 * not keys), and the keys command run for real (answers, denial, every failure kind,
 * the concurrency bound) — never throwing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadHostKeys } from '../../src/access/ssh/host-keys.js';
import { KeysCommand, type KeysCommandOutcome } from '../../src/access/ssh/keys-command.js';
import { DEFAULTS } from '../../src/config/config.js';
import { LogCapture } from '../support/log-capture.js';
import { tempDir } from '../support/server.js';

describe('SSH host keys', () => {
  test('created on first start (ed25519 and ECDSA P-256, mode 0600, .pub beside), read unchanged afterwards', (t) => {
    const d = tempDir('vspc-hostkeys-');
    t.after(() => d.remove());
    const dir = join(d.dir, 'state', 'keys');
    const first = loadHostKeys(dir);
    assert.deepEqual(first.map((k) => [k.type, k.created]), [['ssh-ed25519', true], ['ecdsa-sha2-nistp256', true]]);
    for (const k of first) {
      assert.equal(statSync(k.path).mode & 0o777, 0o600, k.path);
      // OpenSSH reads it and agrees on the fingerprint.
      const line = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', k.path], { encoding: 'utf8' });
      assert.equal(line.split(/\s+/)[1], k.fingerprint);
      assert.match(readFileSync(`${k.path}.pub`, 'utf8'), new RegExp(`^${k.type} `));
    }
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const again = loadHostKeys(dir);
    assert.deepEqual(again.map((k) => [k.fingerprint, k.created]), first.map((k) => [k.fingerprint, false]));
  });

  test('a key file others can read stops the start, naming it; so does one that is not a key', (t) => {
    const d = tempDir('vspc-hostkeys-');
    t.after(() => d.remove());
    const [ed] = loadHostKeys(d.dir);
    chmodSync(ed.path, 0o644);
    assert.throws(() => loadHostKeys(d.dir), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'VSPC_SSH_HOST_KEY_INSECURE');
      assert.match(err.message, /ssh_host_ed25519_key is accessible by group or others \(mode 0644\): chmod 600 it/);
      return true;
    });
    chmodSync(ed.path, 0o600);
    writeFileSync(ed.path, 'not a key\n');
    assert.throws(() => loadHostKeys(d.dir), (err: Error & { code?: string }) => err.code === 'VSPC_SSH_HOST_KEY_INVALID');
    // An operator's own key of the right type is used as it is.
    execFileSync('rm', ['-f', ed.path, `${ed.path}.pub`]);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', ed.path]);
    const mine = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', ed.path], { encoding: 'utf8' }).split(/\s+/)[1];
    assert.equal(loadHostKeys(d.dir)[0].fingerprint, mine);
  });
});

describe('SSH keys command', () => {
  const q = { loginName: 'console', keyType: 'ssh-ed25519', key: 'AAAAC3NzaC1lZDI1NTE5AAAAIFake', fingerprint: 'SHA256:abcdefgh' };

  function command(t: { after(fn: () => unknown): void }, body: string, limits: Partial<typeof DEFAULTS.sshLimits> = {}) {
    const d = tempDir('vspc-keyscmd-');
    t.after(() => d.remove());
    const path = join(d.dir, 'keys.sh');
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    const logs = new LogCapture();
    const counts: KeysCommandOutcome[] = [];
    const kc = new KeysCommand(`${path} --inventory prod`, { ...DEFAULTS.sshLimits, ...limits }, logs.logger, (o) => counts.push(o));
    return { kc, logs, counts };
  }

  test('gets its arguments after the fixed ones; allows; denies', async (t) => {
    const { kc, counts } = command(
      t,
      `[ "$1 $2 $3 $4 $6" = "--inventory prod console ssh-ed25519 SHA256:abcdefgh" ] || { echo "bad args: $*" >&2; exit 3; }
       [ -z "$VSPC_ADMIN_TOKEN" ] || exit 4
       echo '{"user": "carol", "consoles": ["web*"], "modes": ["readonly"]}'`,
    );
    process.env.VSPC_ADMIN_TOKEN = 'not-for-the-command-0123456789';
    try {
      const r = await kc.lookup(q);
      assert.equal(r.kind, 'allow', JSON.stringify(r));
      assert.equal(r.kind === 'allow' && r.rights.user, 'carol');
    } finally {
      delete process.env.VSPC_ADMIN_TOKEN;
    }
    const deny = command(t, `echo '{"deny": "not in the ops group"}'`);
    assert.deepEqual(await deny.kc.lookup(q), { kind: 'deny', reason: 'not in the ops group' });
    assert.deepEqual([...counts, ...deny.counts], ['allowed', 'denied']);
  });

  test('failures: exit status, timeout, too much output, not JSON, not there — logged and counted, never thrown', async (t) => {
    const cases: Array<[string, RegExp, Partial<typeof DEFAULTS.sshLimits>?]> = [
      ['echo oops >&2; exit 7', /exit status 7/],
      ['sleep 5', /no answer within 200 ms/, { keysCommandTimeoutMs: 200 }],
      ['head -c 100000 /dev/zero | tr "\\0" x', /output over 1024 bytes/, { keysCommandMaxOutput: 1024 }],
      ['echo not json', /not JSON/],
      ['echo \'{"consoles": []}\'', /non-empty array/],
    ];
    for (const [body, reason, limits] of cases) {
      const { kc, logs, counts } = command(t, body, limits);
      const started = Date.now();
      const r = await kc.lookup(q);
      assert.equal(r.kind, 'failed', body);
      assert.match((r as { reason: string }).reason, reason);
      assert.deepEqual(counts, ['failed']);
      const line = logs.find((l) => l.errorCode === 'VSPC_SSH_KEYS_COMMAND_FAILED');
      assert.ok(line, 'logged');
      assert.ok(Date.now() - started < 3000, 'the timeout kills it');
      if (body.includes('oops')) assert.equal(line.stderr, 'oops');
    }
    const missing = new KeysCommand('/nonexistent/keys-command', DEFAULTS.sshLimits, new LogCapture().logger, () => undefined);
    const r = await missing.lookup(q);
    assert.equal(r.kind, 'failed');
    assert.match((r as { reason: string }).reason, /cannot run: ENOENT/);
  });

  test('at most keysCommandConcurrency at once; the rest fail fast as busy', async (t) => {
    const { kc, counts } = command(t, `sleep 0.3; echo '{"consoles": ["*"]}'`, { keysCommandConcurrency: 2 });
    const results = await Promise.all([kc.lookup(q), kc.lookup(q), kc.lookup(q)]);
    assert.deepEqual(results.map((r) => r.kind).sort(), ['allow', 'allow', 'failed']);
    assert.deepEqual([...counts].sort(), ['allowed', 'allowed', 'busy']);
  });
});
