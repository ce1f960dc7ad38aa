/**
 * The SSH front door with the real OpenSSH client in batch mode, against a running
 * vspc with simulated ESXi VMs: `list` and `list --json`, direct connect, per-key
 * console rights (a key limited to `web*` neither sees nor reaches db01), an unknown
 * key and password / keyboard-interactive attempts refused, a read-only key whose
 * input never reaches the VM, lock conflicts between an SSH user and a telnet user
 * named correctly on both sides, the SSH user in `who`, the audit log, `status` and
 * `/metrics`, `--tail`, `from=`, and everything but console sessions refused
 * (forwarding, SFTP, other commands).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import ssh2 from 'ssh2';
import type { ClientView, StatusView } from '../../src/admin/views.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { portTarget, runConsole } from '../../src/cli/connect.js';
import { vspcAdmin } from '../support/cli.js';
import { Cleanup, esxiUuid, tempDir, waitUntil } from '../support/server.js';
import type { SimulatedVm } from '../support/sim/index.js';
import { haveOpenSsh, keyLine, makeKey, runSsh, SshProcess, sshArgs, startSshServer, type KeyPair, type SshServer } from '../support/ssh.js';

// A missing prerequisite fails the suite with this message (npm test installs them as root).
const missing = haveOpenSsh() ? null : 'the OpenSSH client is not installed (test/support/guest/ensure-deps.sh)';

/** A telnet user that names itself (VSPC-CONTROL, like `vspc-admin connect --user NAME`). */
function telnetUser(port: number, user: string, mode: 'readwrite' | 'exclusive', cleanup: Cleanup) {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  stdout.resume();
  const done = runConsole({ mode, force: false, user, escape: 0x1d, timeoutMs: 10_000 }, portTarget({ host: '127.0.0.1', port, tls: false }), { stdin, stdout, stderr });
  cleanup.add(() => stdin.end());
  return { done, stderr: () => err, leave: () => stdin.end() };
}

describe('SSH front door: batch mode', () => {
  before(() => assert.ok(missing === null, missing ?? ''));
  const c = new Cleanup();
  const afters: Array<() => unknown> = [];
  const keysDir = tempDir('vspc-ssh-keys-');
  const logDir = tempDir('vspc-ssh-logs-');
  let s: SshServer;
  let alice: KeyPair;
  let webonly: KeyPair;
  let reader: KeyPair;
  let stranger: KeyPair;
  let faraway: KeyPair;
  let web01: { vm: SimulatedVm; hub: ConsoleHub };
  let db01: { vm: SimulatedVm; hub: ConsoleHub };
  const ssh = (key: KeyPair | null, ...args: string[]) => sshArgs(s, key, ['console@127.0.0.1', ...args]);

  before(async () => {
    alice = makeKey(keysDir.dir, 'alice', 'alice@laptop');
    webonly = makeKey(keysDir.dir, 'webonly', 'wendy@laptop', 'ecdsa');
    reader = makeKey(keysDir.dir, 'reader', 'rita@laptop');
    stranger = makeKey(keysDir.dir, 'stranger', 'mallory@laptop');
    faraway = makeKey(keysDir.dir, 'faraway', 'far@laptop');
    s = await startSshServer({ after: (fn) => afters.push(fn) }, [
      '# the test keys',
      keyLine(alice, 'vspc-user="alice"'),
      keyLine(webonly, 'vspc-consoles="web*"'),
      keyLine(reader, 'vspc-user="rita",vspc-modes="readonly"'),
      keyLine(faraway, 'from="10.0.0.0/8"'),
    ], { config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
    web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, c);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web02' }, c);
    db01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'db01' }, c);
    web01.vm.send('login: \r\n');
  });
  after(async () => {
    await c.run();
    for (const fn of afters.reverse()) await fn();
    keysDir.remove();
    logDir.remove();
  });

  test('list and list --json: the consoles the key may reach, and who is attached', async () => {
    const all = await runSsh(ssh(alice, 'list'), c);
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stdout.split('\n')[0].replace(/\s+/g, ' '), 'NAME KIND STATE ATTACHED');
    assert.match(all.stdout, /^db01\s+esxi\s+connected\s+-$/m);
    assert.match(all.stdout, /^web01\s+esxi\s+connected\s+-$/m);
    const json = await runSsh(ssh(webonly, 'list', '--json'), c);
    assert.equal(json.code, 0, json.stderr);
    const rows = JSON.parse(json.stdout) as Array<{ name: string; kind: string; state: string; key: string; attached: unknown[] }>;
    assert.deepEqual(rows.map((r) => r.name), ['web01', 'web02'], 'db01 is not shown to a web* key');
    assert.deepEqual(Object.keys(rows[0]).sort(), ['attached', 'key', 'kind', 'label', 'name', 'state']);
    assert.equal(rows[0].kind, 'esxi');
  });

  test('direct connect: the scrollback, then live output; input reaches the VM; notices on stderr', async () => {
    const session = new SshProcess(ssh(alice, 'web01'), c);
    await session.waitFor(/READWRITE as alice; ~\. to disconnect/);
    await session.waitFor(/login: /);
    assert.match(session.stderr, /^\[vspc: web01 \(uuid [0-9a-f-]{36}\)\]$/m);
    web01.vm.send('Password: ');
    await session.waitFor(/Password: /);
    const from = web01.vm.input.length;
    session.write('secret\r');
    await web01.vm.waitForInput('secret\r', 5000, from);
    session.endInput();
    const r = await session.exit();
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes('[vspc'), 'vspc notices stay off stdout without a terminal');
  });

  test('a notice with control characters (another node\'s reason, a holder\'s name) reaches the SSH client with each replaced by ?', async () => {
    const session = new SshProcess(ssh(alice, 'web01'), c);
    await session.waitFor(/READWRITE as alice; ~\. to disconnect/);
    const client = [...web01.hub.clients][0];
    client.notice('\x1b]0;pwn\x07held by \x1b[31mmallory\u009b2J');
    await session.waitFor(/held by/);
    session.endInput();
    const r = await session.exit();
    assert.match(r.stderr, /^\[vspc: \?\]0;pwn\?held by \?\[31mmallory\?2J\]$/m);
    assert.ok(!/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0080-\u009f]/.test(r.stderr), JSON.stringify(r.stderr));
  });

  test('--raw: the console\'s bytes only, no greeting, notices or replay', async () => {
    const session = new SshProcess(ssh(alice, 'web01', '--raw'), c);
    await waitUntil(() => web01.hub.clients.size === 1, 5000, 'attached');
    web01.vm.send('live output\r\n');
    await session.waitFor(/live output/);
    const from = web01.vm.input.length;
    session.write('typed');
    await web01.vm.waitForInput('typed', 5000, from);
    session.endInput();
    const r = await session.exit();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'live output\r\n', 'no scrollback replay');
    assert.equal(r.stderr, '', 'no greeting, no notices');
  });

  test('a key limited to web* cannot reach db01 (nor its log), and is told as if it did not exist', async () => {
    const r = await runSsh(ssh(webonly, 'db01'), c);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /vspc: no console "db01" that this key may use \(try: list\)/);
    const none = await runSsh(ssh(webonly, 'nosuchvm'), c);
    assert.equal(none.stderr.replace('nosuchvm', 'db01'), r.stderr, 'the same answer for a console that does not exist');
    const tail = await runSsh(ssh(webonly, 'db01', '--tail', '5'), c);
    assert.equal(tail.code, 3);
    assert.equal(db01.hub.clients.size, 0);
  });

  test('an unknown key is refused, and logged with its fingerprint', async () => {
    const r = await runSsh(ssh(stranger, 'list'), c);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
    const line = await s.ts.logs.waitFor((l) => l.message === 'SSH authentication failed' && l.fingerprint === stranger.fingerprint);
    assert.equal(line.errorCode, 'VSPC_SSH_AUTH_FAILED');
    assert.equal(line.reason, 'the key is not authorized');
  });

  test('passwords and keyboard-interactive are refused: vspc offers public keys only', async () => {
    // The OpenSSH client, asked to use a password, finds nothing it may try.
    const r = await runSsh(sshArgs(s, null, ['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password,keyboard-interactive', 'console@127.0.0.1', 'list']), c);
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
    // A client that sends a password anyway is refused, and that is logged.
    for (const method of ['password', 'keyboard-interactive'] as const) {
      const err = await new Promise<Error>((resolve) => {
        const client = new ssh2.Client();
        client.on('ready', () => {
          client.end();
          resolve(new Error('logged in'));
        });
        client.on('error', (e) => resolve(e));
        client.on('keyboard-interactive', (_n, _i, _l, _p, finish) => finish(['hunter2']));
        client.connect({
          host: '127.0.0.1',
          port: s.port,
          username: 'console',
          ...(method === 'password' ? { password: 'hunter2' } : { tryKeyboard: true }),
          authHandler: [method === 'password' ? { type: 'password', username: 'console', password: 'hunter2' } : { type: 'keyboard-interactive', username: 'console', prompt: (_n: string, _i: string, _l: string, _p: unknown, finish: (r: string[]) => void) => finish(['hunter2']) }],
          readyTimeout: 10_000,
        } as unknown as ssh2.ConnectConfig);
      });
      assert.match(err.message, /All configured authentication methods failed/);
      await s.ts.logs.waitFor((l) => l.message === 'SSH authentication failed' && l.method === method && /public keys only/.test(String(l.reason)));
    }
  });

  test('from= keeps a key to its addresses', async () => {
    const r = await runSsh(ssh(faraway, 'list'), c);
    assert.equal(r.code, 255);
    await s.ts.logs.waitFor((l) => l.message === 'SSH authentication failed' && l.fingerprint === faraway.fingerprint && /from= does not allow 127\.0\.0\.1/.test(String(l.reason)));
  });

  test("a read-only key's input never reaches the VM, nor its break; it may not force", async () => {
    const session = new SshProcess(ssh(reader, 'web01'), c);
    await session.waitFor(/READONLY as rita/);
    const from = web01.vm.input.length;
    session.write('reboot\r');
    await session.waitFor(/read-only: your input is discarded/);
    await web01.vm.barrier();
    assert.equal(web01.vm.input.length, from, 'nothing reached the VM');
    session.endInput();
    assert.equal((await session.exit()).code, 0);
    const force = await runSsh(ssh(reader, 'web01', '--force'), c);
    assert.equal(force.code, 3);
    assert.match(force.stderr, /this key may not use --force/);
    const exclusive = await runSsh(ssh(reader, 'web01', '--mode', 'exclusive'), c);
    assert.match(exclusive.stderr, /this key may not take EXCLUSIVE \(allowed: readonly\)/);
  });

  test('lock conflicts name the holder on both sides: the SSH user with method and key, the telnet user by name', async () => {
    const port = web01.hub.identity.tcpPort;
    // alice (SSH) holds EXCLUSIVE; bob (telnet) is refused and told who holds it.
    const holder = new SshProcess(ssh(alice, 'web01', '--mode', 'exclusive'), c);
    await holder.waitFor(/EXCLUSIVE as alice/);
    const bob = telnetUser(port, 'bob', 'readwrite', c);
    assert.equal(await bob.done, 3);
    assert.match(bob.stderr(), new RegExp(`READWRITE refused: held by alice@127\\.0\\.0\\.1:\\d+ \\(ssh, key ${alice.fingerprint.replace(/[+/]/g, '\\$&')}, EXCLUSIVE since `));
    holder.endInput();
    await holder.exit();
    await waitUntil(() => web01.hub.clients.size === 0, 5000, 'alice gone');

    // bob (telnet) holds EXCLUSIVE; alice (SSH) is refused and told who holds it.
    const bob2 = telnetUser(port, 'bob', 'exclusive', c);
    await waitUntil(() => web01.hub.locks.list().some((h) => h.user === 'bob'), 5000, 'bob holds the lock');
    const refused = await runSsh(ssh(alice, 'web01'), c);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /vspc: web01: READWRITE refused: held by bob@127\.0\.0\.1:\d+ \(EXCLUSIVE since /);
    bob2.leave();
    await bob2.done;
    await waitUntil(() => web01.hub.clients.size === 0, 5000, 'bob gone');
  });

  test('the SSH user in who (API and CLI), the audit log, status and /metrics', async () => {
    const session = new SshProcess(ssh(alice, 'web01', '--mode', 'readonly'), c);
    await session.waitFor(/READONLY as alice/);
    const clients = await s.ts.api<ClientView[]>('/api/v1/clients');
    const mine = clients.find((x) => x.method === 'ssh');
    assert.ok(mine, JSON.stringify(clients));
    assert.equal(mine.user, 'alice');
    assert.equal(mine.keyFingerprint, alice.fingerprint);
    assert.equal(mine.mode, 'readonly');
    const who = await vspcAdmin(s.ts.adminAddress, ['who']);
    assert.match(who.stdout, new RegExp(`^${mine.id}\\s+web01\\s+\\d+\\s+readonly\\s+ssh\\s+alice@127\\.0\\.0\\.1:\\d+ \\(key ${alice.fingerprint.replace(/[+/]/g, '\\$&')}\\)`, 'm'));
    const audit = s.ts.logs.find((l) => l.audit === true && l.message === 'client attached' && l.clientId === mine.id);
    assert.ok(audit);
    assert.equal(audit.user, 'alice');
    assert.equal(audit.method, 'ssh');
    assert.equal(audit.keyFingerprint, alice.fingerprint);

    const status = await s.ts.api<StatusView>('/api/v1/status');
    assert.ok(status.ssh);
    assert.equal(status.ssh.listen, `127.0.0.1:${s.port}`);
    assert.ok(status.ssh.connections >= 1);
    assert.ok(status.ssh.attached >= 1);
    // The fingerprints vspc shows are those of the host keys ssh meets: ed25519, and
    // ECDSA for a client that knows no ed25519 (HostKeyAlgorithms limited to it).
    assert.deepEqual(status.ssh.hostKeys.map((k) => k.type), ['ssh-ed25519', 'ecdsa-sha2-nistp256']);
    for (const k of status.ssh.hostKeys) {
      const known = `${s.knownHosts}.${k.type}`;
      const r = await runSsh(sshArgs({ port: s.port, knownHosts: known }, alice, ['-o', `HostKeyAlgorithms=${k.type}`, 'console@127.0.0.1', 'list']), c);
      assert.equal(r.code, 0, r.stderr);
      const seen = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', known], { encoding: 'utf8' });
      assert.ok(seen.includes(k.fingerprint), `${k.type} ${k.fingerprint} in\n${seen}`);
    }
    const text = await vspcAdmin(s.ts.adminAddress, ['status']);
    assert.match(text.stdout, new RegExp(`^ssh: 127\\.0\\.0\\.1:${s.port} connections=\\d+ attached=\\d+$`, 'm'));
    assert.match(text.stdout, /^ssh host key: ssh-ed25519 SHA256:\S+$/m);

    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
    assert.match(metrics, /^vspc_ssh_connections\{user="alice"\} [1-9]/m);
    assert.match(metrics, /^vspc_ssh_attached\{user="alice"\} 1$/m);
    assert.match(metrics, /^vspc_ssh_auth_total\{result="rejected"\} [1-9]/m);
    session.endInput();
    await session.exit();
    await s.ts.logs.waitFor((l) => l.audit === true && l.message === 'client detached' && l.clientId === mine.id && l.keyFingerprint === alice.fingerprint);
  });

  test('NAME --tail N prints the end of the console log', async () => {
    web01.vm.send('kernel: ready\r\n');
    await waitUntil(async () => (await runSsh(ssh(alice, 'web01', '--tail', '3'), c)).stdout.includes('kernel: ready'), 5000, 'the log has the line');
    const r = await runSsh(ssh(alice, 'web01', '--tail', '3'), c);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.split('\n').length <= 4, r.stdout);
  });

  test('everything but console sessions is refused: other commands, port forwarding, SFTP', async () => {
    const cmd = await runSsh(ssh(alice, 'sh', '-c', 'id'), c);
    assert.equal(cmd.code, 2);
    assert.match(cmd.stderr, /vspc: unexpected "-c"/);
    assert.ok(!/uid=/.test(cmd.stdout + cmd.stderr));

    // At INFO, as a person's ssh logs: the refusal says why (ssh2's own reject would say "connect failed: " with no text).
    const info = (args: string[]) => args.map((a) => (a === 'LogLevel=ERROR' ? 'LogLevel=INFO' : a));
    const direct = await runSsh(info(sshArgs(s, alice, ['-W', `127.0.0.1:${s.ts.adminPort}`, 'console@127.0.0.1'])), c);
    assert.notEqual(direct.code, 0);
    assert.match(direct.stderr, /open failed: administratively prohibited: vspc: port forwarding is not offered/);

    const remote = await runSsh(sshArgs(s, alice, ['-N', '-o', 'ExitOnForwardFailure=yes', '-R', '0:127.0.0.1:9', 'console@127.0.0.1']), c);
    assert.notEqual(remote.code, 0);
    assert.match(remote.stderr, /remote port forwarding failed/);

    const sftp = await runSsh(['-b', '-', ...sshArgs(s, alice, []).map((a) => (a === '-p' ? '-P' : a)), 'console@127.0.0.1'], c, 'ls\n', 15_000, 'sftp');
    assert.notEqual(sftp.code, 0);
    assert.match(sftp.stderr, /subsystem request failed|Connection closed/);
    await s.ts.logs.waitFor((l) => l.message === 'SSH request refused' && l.request === 'SFTP');
    await s.ts.logs.waitFor((l) => l.message === 'SSH request refused' && /direct-tcpip/.test(String(l.request)));
    await s.ts.logs.waitFor((l) => l.message === 'SSH request refused' && /tcpip-forward/.test(String(l.request)));
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
    assert.match(metrics, /^vspc_ssh_requests_refused_total\{request="port-forwarding"\} [2-9]/m);
  });
});
