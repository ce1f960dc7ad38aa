/**
 * Authenticated (and not quite) SSH peers that abuse what vspc gives them, each cut
 * off at a documented bound (docs/ssh.md, Limits) with a log line and a metric:
 *
 * - a client that never reads but keeps typing at the menu: vspc's own writes (menu
 *   redraws, echo) count against the output bound like console output;
 * - a client whose output is backed up: its input is not read (backpressure) until it
 *   reads again;
 * - connections per key and sessions per connection: capped, with a message;
 * - refused requests (port forwarding...): the connection is closed after a few, with
 *   one line for the first and one for the lot;
 * - connections that end without logging in (key exchange, `none`, away) are charged
 *   to their address after a few free ones, then refused at accept;
 * - login names that could pass for options of the keys command are refused.
 *
 * The raw SSH peers are ssh2 clients (what an attacker would use); the refusals that
 * must read well are checked with the OpenSSH client.
 */
import { once } from 'node:events';
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { DEFAULTS } from '../../src/config/config.js';
import { ENV_REQUESTS_FREE } from '../../src/access/ssh/session.js';
import { esxiUuid, tempDir, waitUntil, withTimeout, type Cleanup } from '../support/server.js';
import { haveOpenSsh, keyLine, makeKey, runSsh, SshProcess, sshArgs, startSshServer, type KeyPair, type SshServer } from '../support/ssh.js';

// A missing prerequisite fails the suite with this message (npm test installs them as root).
const missing = haveOpenSsh() ? null : 'the OpenSSH client is not installed (test/support/guest/ensure-deps.sh)';

const limits = (l: Partial<typeof DEFAULTS.sshLimits>) => ({ sshLimits: { ...DEFAULTS.sshLimits, ...l } });

/** An ssh2 client logged in with `key` (rejects on its error, or after 10 s). */
async function login(s: SshServer, key: KeyPair | null, cleanup: Cleanup, extra: Partial<ssh2.ConnectConfig> = {}): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  cleanup.add(() => client.end());
  // events.once rejects on an 'error' event before 'ready'.
  const ready = once(client, 'ready');
  client.connect({
    host: '127.0.0.1',
    port: s.port,
    username: 'console',
    ...(key ? { privateKey: readFileSync(key.path) } : {}),
    readyTimeout: 10_000,
    ...extra,
  });
  await withTimeout(ready, 10_000, 'SSH login');
  return client;
}

/** Resolves when the client's connection is closed (rejects after `ms`). */
function closed(client: ssh2.Client, ms = 10_000): Promise<void> {
  client.on('error', () => undefined);
  return withTimeout(once(client, 'close').then(() => undefined), ms, 'the SSH connection closed');
}

async function metrics(s: SshServer): Promise<string> {
  return fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
}

function metric(text: string, re: RegExp): number {
  return Number(re.exec(text)?.[1] ?? 0);
}

describe('SSH front door against abusive clients', () => {
  before(() => assert.ok(missing === null, missing ?? ''));
  test('a client that never reads but keeps pressing Enter at the menu is cut off at the output bound', async (t) => {
    const d = tempDir('vspc-ssh-menuflood-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')], { config: limits({ maxQueuedBytes: 256 * 1024 }) });
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web02' }, s.cleanup);
    const client = await login(s, alice, s.cleanup);
    const gone = closed(client);
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
      client.shell({ term: 'xterm', cols: 80, rows: 24 }, (err, c) => (err ? reject(err) : resolve(c))),
    );
    // Never read; each Enter redraws the menu (a few hundred bytes for one byte in).
    ch.pause();
    ch.stderr.pause();
    // 64 KiB of Enter: some 20 MB of menus, far past the bound (256 KiB).
    const enter = Buffer.alloc(8 * 1024, 0x0d);
    let connected = true;
    void gone.then(() => (connected = false), () => undefined);
    for (let sent = 0; sent < 64 * 1024 && connected; sent += enter.length) {
      // The window spent (vspc no longer reads): wait for it, or for the cut.
      if (!ch.write(enter)) await Promise.race([new Promise((r) => ch.once('drain', r)), gone]);
    }
    const line = await s.ts.logs.waitFor((l) => l.message === 'SSH client too slow; disconnecting', 10_000);
    assert.equal(line.user, 'alice');
    assert.equal(line.limit, 256 * 1024);
    await gone;
    assert.equal(metric(await metrics(s), /^vspc_ssh_sessions_ended_total\{reason="too-slow"\} (\d+)$/m), 1);
  });

  test("a client whose output is backed up: its input waits (not read) until it reads again, then all of it arrives", async (t) => {
    const d = tempDir('vspc-ssh-backpressure-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')], { config: limits({ maxQueuedBytes: 16 * 1024 * 1024 }) });
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const client = await login(s, alice, s.cleanup);
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.exec('web01 --raw', (err, c) => (err ? reject(err) : resolve(c))));
    ch.pause();
    await waitUntil(() => web01.hub.clients.size === 1, 5000, 'attached');
    // 13 MiB: the client takes 2 to 4 MiB unread (its 2 MiB buffer, up to a 2 MiB window), so that vspc
    // holds 9 to 11 MiB: past its pause mark (half the bound, 8 MiB), short of the bound (16 MiB).
    const out = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 208; i++) if (!web01.vm.send(out)) await web01.vm.whenDrained();
    await waitUntil(() => ch.readableLength >= 2 * 1024 * 1024 - 64 * 1024, 10_000, 'the client window filled');
    await web01.vm.barrier();
    // Typed while the output waits: vspc does not read it.
    const before = web01.vm.input.length;
    ch.write(Buffer.alloc(100_000, 0x62));
    // A request on the connection after the data: answered once vspc has taken in everything before it.
    await new Promise<void>((resolve) => client.exec('list', (_err, c) => (c ? (c.on('close', () => resolve()), c.resume(), c.stderr.resume()) : resolve())));
    await web01.vm.barrier();
    assert.equal(web01.vm.input.length - before, 0, 'nothing typed reached the VM while the output was backed up');
    // It reads: the output drains, its input is read again, all of it.
    ch.resume();
    await waitUntil(() => web01.vm.input.length - before >= 100_000, 10_000, 'the input arrived');
    assert.equal(s.ts.logs.find((l) => l.message === 'SSH client too slow; disconnecting'), undefined);
  });

  test('connections per key and sessions per connection are capped: the client is told, the refusal logged and counted', async (t) => {
    const d = tempDir('vspc-ssh-keycap-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice",vspc-max-connections="1",vspc-max-sessions="2"')]);
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const session = new SshProcess(sshArgs(s, alice, ['console@127.0.0.1', 'web01', '--mode', 'readonly']), s.cleanup);
    await session.waitFor(/READONLY as alice/);
    // A second connection with the key: told why, exit status 3.
    const second = await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), s.cleanup);
    assert.equal(second.code, 3, second.stderr);
    assert.match(second.stderr, /vspc: too many connections with this key at once \(at most 1\)/);
    const line = await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_KEY_LIMIT' && l.message === 'SSH connection refused: too many connections with this key');
    assert.equal(line.user, 'alice');
    assert.equal(line.limit, 1);
    assert.equal(metric(await metrics(s), /^vspc_ssh_connections_refused_total\{reason="key-connections"\} (\d+)$/m), 1);
    // The first session goes on; once it has gone, the key may connect again.
    web01.vm.send('still here\r\n');
    await session.waitFor(/still here/);
    session.endInput();
    assert.equal((await session.exit()).code, 0);
    await waitUntil(async () => (await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), s.cleanup)).code === 0, 5000, 'a connection again');
    // Sessions on one connection: two, the third is told.
    const client = await login(s, alice, s.cleanup);
    const exec = (cmd: string) =>
      new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve, reject) =>
        client.exec(cmd, (err, c) => {
          if (err) return reject(err);
          let stdout = '';
          let stderr = '';
          c.on('data', (b: Buffer) => (stdout += b.toString()));
          c.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
          let code: number | null = null;
          c.on('exit', (n: number | null) => (code = n));
          c.on('close', () => resolve({ code, stderr, stdout }));
        }),
      );
    const open = () => new Promise<ssh2.ClientChannel>((resolve, reject) => client.exec('web01 --mode readonly', (err, c) => (err ? reject(err) : resolve(c))));
    const a = await open();
    const b = await open();
    a.resume();
    b.resume();
    await waitUntil(() => web01.hub.clients.size === 2, 5000, 'two attached');
    const third = await exec('list');
    assert.equal(third.code, 3);
    assert.match(third.stderr, /vspc: too many sessions on this connection \(at most 2\)/);
    await s.ts.logs.waitFor((l) => l.message === 'SSH session refused: too many sessions on one connection' && l.limit === 2);
    assert.equal(metric(await metrics(s), /^vspc_ssh_requests_refused_total\{request="sessions-per-connection"\} (\d+)$/m), 1);
    a.end();
    b.end();
  });

  test('refused requests: the first is logged, the connection is closed at the tenth with one line for the lot', async (t) => {
    const d = tempDir('vspc-ssh-reqflood-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')]);
    const client = await login(s, alice, s.cleanup);
    const gone = closed(client);
    for (let i = 0; i < 50; i++) client.forwardOut('127.0.0.1', 1, '127.0.0.1', 22, () => undefined);
    await gone;
    const line = await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_TOO_MANY_REQUESTS');
    assert.equal(line.refused, 10);
    assert.equal(line.user, 'alice');
    assert.equal(s.ts.logs.filter((l) => l.message === 'SSH request refused').length, 1, 'one line for the first, not one per request');
    // The others in one line when the connection goes (domain/log-budget.ts).
    const summary = await s.ts.logs.waitFor((l) => l.message === 'log lines suppressed for this connection' && (l.messages as Record<string, number>)?.['SSH request refused'] !== undefined);
    assert.deepEqual(summary.messages, { 'SSH request refused': 9 });
    const m = await metrics(s);
    assert.equal(metric(m, /^vspc_ssh_sessions_ended_total\{reason="too-many-requests"\} (\d+)$/m), 1);
    assert.equal(metric(m, /^vspc_ssh_requests_refused_total\{request="port-forwarding"\} (\d+)$/m), 10);
  });

  test('env requests: the first ENV_REQUESTS_FREE are declined quietly (LANG, LC_*), each further one counts toward the refusal limit; a signal request is refused and logged', async (t) => {
    const d = tempDir('vspc-ssh-envflood-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')]);
    // A signal request on a session: refused with its name, counted.
    const first = await login(s, alice, s.cleanup);
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => first.shell({ term: 'xterm', cols: 80, rows: 24 }, (err, c) => (err ? reject(err) : resolve(c))));
    ch.signal('INT');
    const sig = await s.ts.logs.waitFor((l) => l.message === 'SSH request refused' && String(l.request).startsWith('signal'));
    assert.equal(sig.request, 'signal "INT"');
    first.end();
    // ENV_REQUESTS_FREE + 9 variables: declined, the connection stays.
    const okEnv = Object.fromEntries(Array.from({ length: ENV_REQUESTS_FREE + 9 }, (_, i) => [`LC_X${i}`, 'C']));
    const second = await login(s, alice, s.cleanup);
    const out = await new Promise<string>((resolve, reject) =>
      second.exec('list', { env: okEnv }, (err, c) => {
        if (err) return reject(err);
        let text = '';
        c.on('data', (b: Buffer) => (text += b.toString()));
        c.on('close', () => resolve(text));
      }),
    );
    assert.match(out, /^NAME +KIND +STATE/, 'the exec ran after the declined variables');
    second.end();
    // One more: the tenth counted refusal closes the connection.
    const third = await login(s, alice, s.cleanup);
    const gone = closed(third);
    const tooMany = Object.fromEntries(Array.from({ length: ENV_REQUESTS_FREE + 10 }, (_, i) => [`LC_Y${i}`, 'C']));
    third.exec('list', { env: tooMany }, () => undefined);
    await gone;
    const line = await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_TOO_MANY_REQUESTS');
    assert.equal(line.refused, 10);
    assert.match(String(line.last), /^env/);
  });

  test('connections that end without logging in cost their address after the free ones; then it is refused at accept', async (t) => {
    const d = tempDir('vspc-ssh-kexflood-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice)], { config: limits({ freeUnauthenticatedCloses: 3, authFailureBurst: 3, authFailureRefillMs: 600_000 }) });
    // Key exchange, `none` (refused), away: from 127.0.0.3.
    const noneOnly = () =>
      new Promise<string>((resolve) => {
        const c = new ssh2.Client();
        s.cleanup.add(() => c.end());
        c.on('error', (e: Error & { level?: string }) => resolve(e.level ?? e.message));
        c.on('ready', () => resolve('ready'));
        c.connect({ host: '127.0.0.1', port: s.port, username: 'x', authHandler: ['none'], readyTimeout: 10_000, localAddress: '127.0.0.3' } as ssh2.ConnectConfig);
      });
    let attempts = 0;
    while (!s.ts.logs.find((l) => l.errorCode === 'VSPC_SSH_RATE_LIMITED') && attempts < 20) {
      attempts++;
      const r = await noneOnly();
      assert.notEqual(r, 'ready');
      await waitUntil(async () => metric(await metrics(s), /^vspc_ssh_unauthenticated (\d+)$/m) === 0, 5000, 'the connection gone');
    }
    assert.equal(attempts, 6, 'three free, then three from the bucket');
    const line = s.ts.logs.find((l) => l.errorCode === 'VSPC_SSH_RATE_LIMITED')!;
    assert.equal(line.address, '127.0.0.3');
    // Refused at accept now; another address logs in as usual.
    const refusedBefore = metric(await metrics(s), /^vspc_ssh_connections_refused_total\{reason="rate-limited"\} (\d+)$/m);
    await noneOnly();
    assert.equal(metric(await metrics(s), /^vspc_ssh_connections_refused_total\{reason="rate-limited"\} (\d+)$/m), refusedBefore + 1);
    assert.equal((await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), s.cleanup)).code, 0);
  });

  test('a login name that could pass for an option of the keys command is refused and never passed to it', async (t) => {
    const d = tempDir('vspc-ssh-loginname-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const called = join(d.dir, 'called');
    const script = join(d.dir, 'keys.sh');
    writeFileSync(script, `#!/bin/sh\necho "$*" >> ${called}\necho '{"consoles": ["*"]}'\n`);
    chmodSync(script, 0o755);
    const s = await startSshServer(t, [], { dir: d.dir, config: { sshKeysCommand: `${script} --site=prod` } });
    for (const name of ['--site=evil', 'a b', 'x\u0007y']) {
      await assert.rejects(login(s, alice, s.cleanup, { username: name }), /authentication methods failed/, name);
    }
    const lines = s.ts.logs.filter((l) => l.message === 'SSH authentication failed' && /^login name refused/.test(String(l.reason)));
    assert.ok(lines.some((l) => l.loginName === '--site=evil' && /starts with "-"/.test(String(l.reason))), JSON.stringify(lines));
    assert.ok(lines.some((l) => /blanks or control characters/.test(String(l.reason))));
    assert.equal(existsSync(called), false, 'the keys command was never run');
    assert.ok(metric(await metrics(s), /^vspc_ssh_auth_total\{result="rejected"\} (\d+)$/m) >= 3, 'counted as failures');
    // An ordinary name goes through to the command.
    assert.equal((await runSsh(sshArgs(s, alice, ['-l', 'console', '127.0.0.1', 'list']), s.cleanup)).code, 0);
    assert.match(readFileSync(called, 'utf8'), /^--site=prod console ssh-ed25519 /);
  });
});
