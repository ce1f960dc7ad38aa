/**
 * Untrusted SSH peers: each offender gets a clear log line and is cut off, and nobody
 * else is disturbed. A flood of failed authentications from one address (127.0.0.2)
 * empties its bucket and is then refused at accept while a user from 127.0.0.1 logs in
 * as usual; connections that never log in are capped and timed out; malformed packets
 * close that connection only; a client that stops reading is cut off at the queue
 * bound without slowing the VM or a telnet user of the same console; one that stops
 * answering keepalives (half-open) is cut off.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { DEFAULTS } from '../../src/config/config.js';
import { esxiUuid, tempDir, waitUntil, type Cleanup } from '../support/server.js';
import { haveOpenSsh, keyLine, makeKey, runSsh, SshProcess, sshArgs, startSshServer } from '../support/ssh.js';

// A missing prerequisite fails the suite with this message (npm test installs them as root).
const missing = haveOpenSsh() ? null : 'the OpenSSH client is not installed (test/support/guest/ensure-deps.sh)';

/** A raw TCP connection from `localAddress`; resolves with what it received once the server closes it. */
function rawConnection(port: number, cleanup: Cleanup, send: Buffer | null, localAddress = '127.0.0.1'): { closed: Promise<string>; socket: net.Socket } {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress });
  cleanup.add(() => socket.destroy());
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('error', () => undefined);
  if (send) socket.on('connect', () => socket.write(send));
  const closed = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not closed; got ${JSON.stringify(text)}`)), 10_000);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
  });
  return { closed, socket };
}

const limits = (l: Partial<typeof DEFAULTS.sshLimits>) => ({ sshLimits: { ...DEFAULTS.sshLimits, ...l } });

describe('SSH front door against hostile peers', () => {
  before(() => assert.ok(missing === null, missing ?? ''));
  test('a flood of failed authentications from one address is refused at accept; another address logs in as usual', async (t) => {
    const d = tempDir('vspc-ssh-flood-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const mallory = makeKey(d.dir, 'mallory');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')], { config: limits({ authFailureBurst: 5, authFailureRefillMs: 600_000 }) });
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const timed = async () => {
      const started = Date.now();
      const r = await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), s.cleanup);
      assert.equal(r.code, 0, r.stderr);
      return Date.now() - started;
    };
    const baseline = await timed();
    // Forty attempts with an unknown key from 127.0.0.2, eight at a time, while alice logs in from 127.0.0.1.
    const flood = async () => {
      for (let round = 0; round < 5; round++) {
        await Promise.all(
          Array.from({ length: 8 }, () => runSsh(sshArgs(s, mallory, ['-b', '127.0.0.2', 'console@127.0.0.1', 'list']), s.cleanup)),
        );
      }
    };
    const during: number[] = [];
    const logins = (async () => {
      for (let i = 0; i < 5; i++) during.push(await timed());
    })();
    await Promise.all([flood(), logins]);
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
    const refused = Number(/^vspc_ssh_connections_refused_total\{reason="rate-limited"\} (\d+)$/m.exec(metrics)?.[1]);
    const rejected = Number(/^vspc_ssh_auth_total\{result="rejected"\} (\d+)$/m.exec(metrics)?.[1]);
    assert.ok(refused >= 20, `most of the flood was refused at accept (${refused})\n${metrics}`);
    assert.ok(rejected <= 5 + 8, `only the bucket's worth of attempts (plus those in flight) was examined: ${rejected}`);
    await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_RATE_LIMITED' && l.address === '127.0.0.2');
    assert.equal(s.ts.logs.filter((l) => l.errorCode === 'VSPC_SSH_RATE_LIMITED').length, 1, 'one line, not one per refused connection');
    // Informational: the machine is shared, so no bound on times; every login succeeded.
    t.diagnostic(`alice's login: ${baseline} ms alone, ${during.join('/')} ms during the flood`);
    assert.equal(during.length, 5);
  });

  test('connections that never log in: capped per address at accept, closed after the login grace time', async (t) => {
    const d = tempDir('vspc-ssh-grace-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice)], { config: limits({ loginGraceMs: 500, maxUnauthenticatedPerAddress: 2 }) });
    const a = rawConnection(s.port, s.cleanup, null, '127.0.0.2');
    const b = rawConnection(s.port, s.cleanup, Buffer.from('SSH-2.0-lingering\r\n'), '127.0.0.2');
    await waitUntil(async () => /vspc_ssh_unauthenticated 2/.test(await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text())), 5000, 'two waiting');
    const third = rawConnection(s.port, s.cleanup, null, '127.0.0.2');
    assert.equal(await third.closed, '', 'dropped at accept: not even the version line');
    // Another address is not affected by 127.0.0.2's crowd.
    assert.equal((await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), s.cleanup)).code, 0);
    assert.match(await a.closed, /^SSH-2\.0-vspc/);
    assert.match(await b.closed, /^SSH-2\.0-vspc/);
    await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_LOGIN_TIMEOUT');
    await s.ts.logs.waitFor((l) => l.message === 'too many SSH connections not logged in yet; dropping new ones');
  });

  test('malformed packets close that connection only, with a log line; an attached session goes on', async (t) => {
    const d = tempDir('vspc-ssh-garbage-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')]);
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const session = new SshProcess(sshArgs(s, alice, ['console@127.0.0.1', 'web01']), s.cleanup);
    await session.waitFor(/READWRITE as alice/);
    // A version line, then a packet whose length field is absurd.
    const evil = rawConnection(s.port, s.cleanup, Buffer.concat([Buffer.from('SSH-2.0-evil\r\n'), Buffer.from([0x7f, 0xff, 0xff, 0xff]), Buffer.alloc(64, 0x41)]));
    await evil.closed;
    await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_PROTOCOL_ERROR');
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
    assert.match(metrics, /^vspc_protocol_errors_total\{side="client",kind="VSPC_SSH_PROTOCOL_ERROR"\} 1$/m);
    web01.vm.send('still here\r\n');
    await session.waitFor(/still here/);
    session.endInput();
    assert.equal((await session.exit()).code, 0);
  });

  test('a client that stops reading is cut off at the queue bound; the VM and a telnet user go on', async (t) => {
    const d = tempDir('vspc-ssh-slow-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')], { config: limits({ maxQueuedBytes: 256 * 1024 }) });
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const watcher = await s.ts.connectUser(web01.hub.identity.tcpPort, s.cleanup);
    const session = new SshProcess(sshArgs(s, alice, ['console@127.0.0.1', 'web01']), s.cleanup);
    await session.waitFor(/READWRITE as alice/);
    session.signal('SIGSTOP');
    s.cleanup.add(() => session.signal('SIGCONT'));
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    while (!s.ts.logs.find((l) => l.message === 'SSH client too slow; disconnecting') && sent < 256 * 1024 * 1024) {
      if (!web01.vm.send(chunk)) await web01.vm.whenDrained();
      sent += chunk.length;
      // The telnet watcher reads everything: the VM is never held back.
      if (sent % (4 * 1024 * 1024) === 0) await watcher.waitFor(sent, 10_000);
    }
    const line = await s.ts.logs.waitFor((l) => l.message === 'SSH client too slow; disconnecting', 5000);
    assert.equal(line.limit, 256 * 1024);
    assert.equal(line.user, 'alice');
    await waitUntil(() => web01.hub.clients.size === 1, 5000, 'alice gone, the watcher stays');
    web01.vm.send('after\r\n');
    await watcher.waitFor('after', 5000);
    const metrics = await fetch(`http://${s.ts.adminAddress}/metrics`).then((r) => r.text());
    assert.match(metrics, /^vspc_clients_dropped_slow_total 1$/m);
    assert.match(metrics, /^vspc_ssh_sessions_ended_total\{reason="too-slow"\} 1$/m);
  });

  test('a peer that stops answering keepalives (half-open) is cut off', async (t) => {
    const d = tempDir('vspc-ssh-keepalive-');
    t.after(() => d.remove());
    const alice = makeKey(d.dir, 'alice');
    const s = await startSshServer(t, [keyLine(alice, 'vspc-user="alice"')], { config: limits({ keepaliveIntervalMs: 200, keepaliveCountMax: 2 }) });
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const session = new SshProcess(sshArgs(s, alice, ['console@127.0.0.1', 'web01']), s.cleanup);
    await session.waitFor(/READWRITE as alice/);
    session.signal('SIGSTOP');
    s.cleanup.add(() => session.signal('SIGCONT'));
    const line = await s.ts.logs.waitFor((l) => l.errorCode === 'VSPC_SSH_KEEPALIVE_TIMEOUT', 5000);
    assert.equal(line.user, 'alice');
    await waitUntil(() => web01.hub.clients.size === 0, 5000, 'detached from the console');
  });
});
