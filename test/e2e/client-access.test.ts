import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { TelnetUser } from '../support/sim/index.js';
import { BRK } from '../../src/protocol/telnet/constants.js';
import { Cleanup, TestServer, startServer, esxiUuid, makeCert, settle, tempDir, waitUntil, withTimeout } from '../support/server.js';
import { VSPC_ADMIN_JS } from '../support/cli.js';
import { untrustedAdvice } from '../../src/cli/connect.js';

/** `vspc-admin connect` as a child process with stdin we can type into. */
class ConsoleChild {
  stdout = Buffer.alloc(0);
  stderr = '';
  readonly proc: ChildProcess;
  readonly exit: Promise<number | null>;
  private exited = false;
  /** Re-checks of pending waits, run on every chunk of output and on exit. */
  private listeners = new Set<() => void>();
  constructor(admin: string, args: string[]) {
    this.proc = spawn(process.execPath, [VSPC_ADMIN_JS, '--admin', admin, 'connect', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.stdout = Buffer.concat([this.stdout, d]);
      this.notify();
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
      this.notify();
    });
    this.exit = new Promise((r) =>
      this.proc.on('close', (code) => {
        this.exited = true;
        this.notify();
        r(code);
      }),
    );
  }
  type(data: string | Buffer): void {
    this.proc.stdin!.write(data);
  }
  waitStderr(re: RegExp, ms = 8000): Promise<void> {
    return this.waitOutput(() => re.test(this.stderr), ms, `${re} on stderr`);
  }
  waitStdout(text: string | Buffer, ms = 8000): Promise<void> {
    const want = Buffer.from(text);
    return this.waitOutput(() => this.stdout.includes(want), ms, `${JSON.stringify(want.toString('latin1'))} on stdout`);
  }
  async code(ms = 8000): Promise<number | null> {
    return withTimeout(this.exit, ms, `vspc-admin connect exit (stderr: ${this.stderr})`);
  }
  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
  private waitOutput(cond: () => boolean, ms: number, what: string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (cond()) finish();
        else if (this.exited) finish(new Error(`vspc-admin connect exited before ${what}; stderr: ${JSON.stringify(this.stderr)}`));
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${ms} ms waiting for ${what}; stderr: ${JSON.stringify(this.stderr)}`)), ms);
      this.listeners.add(check);
      check();
    });
  }
  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

const CTRL_BRACKET = '\x1d';

async function setup(t: { after: (fn: () => Promise<void>) => void }, opts: Parameters<typeof TestServer.start>[0] = {}) {
  const { ts, cleanup } = await startServer(t, opts);
  const id = esxiUuid();
  const { vm, hub } = await ts.connectVm({ uuid: id.text, name: `vm-${id.hex.slice(-6)}` }, cleanup);
  return { cleanup, ts, vm, hub, name: `vm-${id.hex.slice(-6)}` };
}

describe('client access: locks, vspc-admin connect, scrollback, slow clients, TLS', () => {
  test('connect: stdin reaches the VM, VM output reaches stdout, Ctrl-] d detaches with exit 0', async (t) => {
    const { cleanup, ts, vm, name } = await setup(t);
    const c = new ConsoleChild(ts.adminAddress, [name]);
    cleanup.add(() => c.kill());
    await c.waitStderr(/connected with READWRITE/);
    c.type('hello vm\r');
    await vm.waitForInput('hello vm\r', 5000);
    vm.send(Buffer.from([0x41, 0xff, 0x00, 0x0d, 0x0a, 0x42]));
    await c.waitStdout(Buffer.from([0x41, 0xff, 0x00, 0x0d, 0x0a, 0x42]), 5000);
    c.type(`${CTRL_BRACKET}b`);
    await waitUntil(() => vm.commands.includes(BRK), 5000, 'BREAK reached the VM');
    c.type(`${CTRL_BRACKET}w`);
    await c.waitStderr(/READWRITE since .*\(you\)/);
    c.type(`x${CTRL_BRACKET}${CTRL_BRACKET}y`);
    await vm.waitForInput(`hello vm\rx${CTRL_BRACKET}y`, 5000);
    c.type(`${CTRL_BRACKET}d`);
    assert.equal(await c.code(), 0);
    assert.match(c.stderr, /detached/);
  });

  test('a conflicting lock is refused with the holder named and exit code 3; --force takes over', async (t) => {
    const { cleanup, ts, vm, hub, name } = await setup(t);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const refused = new ConsoleChild(ts.adminAddress, [name, '--mode', 'exclusive', '--user', 'bob']);
    cleanup.add(() => refused.kill());
    assert.equal(await refused.code(), 3);
    assert.match(refused.stderr, /EXCLUSIVE refused: held by 127\.0\.0\.1:\d+ \(READWRITE since/);
    assert.equal(user.closed, false, 'the holder is untouched by a refused request');

    const boss = new ConsoleChild(ts.adminAddress, [name, '--mode', 'exclusive', '--force', '--user', 'alice']);
    cleanup.add(() => boss.kill());
    await boss.waitStderr(/connected with EXCLUSIVE/);
    await user.waitFor('displaced by alice@127.0.0.1', 5000);
    await user.whenClosed(5000);
    // Nobody else gets in while EXCLUSIVE is held, not even a reader; a stock telnet is told why.
    const late = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    cleanup.add(() => late.destroy());
    await late.waitFor('held by alice@127.0.0.1', 5000);
    await late.whenClosed(5000);
    boss.type('only me');
    await vm.waitForInput('only me', 5000);
    boss.type(`${CTRL_BRACKET}d`);
    assert.equal(await boss.code(), 0);
    await waitUntil(() => hub.locks.size === 0, 3000, 'lock released after detach');
  });

  test('a displaced connect client is told why and exits 4', async (t) => {
    const { cleanup, ts, name } = await setup(t);
    const first = new ConsoleChild(ts.adminAddress, [name, '--mode', 'excl_write', '--user', 'first']);
    cleanup.add(() => first.kill());
    await first.waitStderr(/connected with EXCL_WRITE/);
    // A reader may join an EXCL_WRITE holder; a second writer may not without --force.
    const reader = new ConsoleChild(ts.adminAddress, [name, '--mode', 'readonly_ok', '--user', 'reader']);
    cleanup.add(() => reader.kill());
    await reader.waitStderr(/connected with READONLY/);
    const second = new ConsoleChild(ts.adminAddress, [name, '--mode', 'excl_write', '--force', '--user', 'second']);
    cleanup.add(() => second.kill());
    await second.waitStderr(/connected with EXCL_WRITE/);
    assert.equal(await first.code(), 4);
    assert.match(first.stderr, /displaced by second@127\.0\.0\.1:\d+, who took EXCL_WRITE with --force/);
    assert.equal(reader.proc.exitCode, null, 'the reader stays');
  });

  test('READONLY clients: input is discarded with a one-time notice, never sent to the VM', async (t) => {
    const { cleanup, ts, vm, hub, name } = await setup(t);
    const ro = new ConsoleChild(ts.adminAddress, [name, '--mode', 'readonly']);
    cleanup.add(() => ro.kill());
    await ro.waitStderr(/connected with READONLY/);
    ro.type('rm -rf /\r');
    ro.type('again');
    await ro.waitStdout('read-only: your input is discarded');
    vm.send('output still flows');
    await ro.waitStdout('output still flows');
    // A barrier through vspc-admin connect: vspc answers `who` (Ctrl-] w) after it has
    // handled everything typed before; the VM's barrier then flushes its connection.
    ro.type(`${CTRL_BRACKET}w`);
    await ro.waitStderr(/READONLY since .*\(you\)/);
    await vm.barrier();
    assert.equal(vm.input.length, 0, 'the VM received nothing');
    assert.equal(ro.stdout.toString().split('read-only: your input is discarded').length - 1, 1, 'told once');
    // The per-VM default applies to stock telnet clients too.
    hub.defaultLockMode = 'readonly';
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    user.send('typed');
    await user.waitFor('read-only', 3000);
    await settle(vm, user);
    assert.equal(vm.input.length, 0);
  });

  test('configured lock modes: the global default and a per-VM override apply to stock telnet clients', async (t) => {
    const { cleanup, ts, vm, hub, name } = await setup(t, {
      config: { defaultLockMode: 'readonly', vms: [{ match: 'special-*', lockMode: 'exclusive' }] },
    });
    const watcher = await ts.connectUser(hub.identity.tcpPort, cleanup);
    watcher.send('ignored');
    await watcher.waitFor('read-only: your input is discarded', 3000);
    assert.equal(hub.modeOf([...hub.clients][0]), 'readonly');
    assert.equal(vm.input.length, 0);
    // A VM whose name matches the `vms:` entry gets EXCLUSIVE: the second client is refused.
    const special = await ts.connectVm({ uuid: esxiUuid().text, name: 'special-db' }, cleanup);
    const first = await ts.connectUser(special.hub.identity.tcpPort, cleanup);
    first.send('mine');
    await special.vm.waitForInput('mine', 3000);
    const second = await TelnetUser.connect({ host: '127.0.0.1', port: special.hub.identity.tcpPort });
    cleanup.add(() => second.destroy());
    await second.waitFor('EXCLUSIVE refused: held by 127.0.0.1', 3000);
    await second.whenClosed(3000);
    void name;
  });

  test('scrollback: a client attaching later sees the recent output first', async (t) => {
    const { cleanup, ts, vm, hub } = await setup(t, { config: { scrollbackBytes: 32 } });
    vm.send('0123456789abcdefghijklmnopqrstuvwxyz-END');
    await vm.barrier(); // the output is processed (in the scrollback)
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    await user.waitFor('-END', 3000);
    assert.match(user.text, /89abcdefghijklmnopqrstuvwxyz-END/);
    assert.doesNotMatch(user.text, /01234567/);
  });

  test('a stalled client is dropped; the fast client and the VM are unaffected', async (t) => {
    const { cleanup, ts, vm, hub } = await setup(t, { config: { clientQueueLimit: 256 * 1024, clientLockWaitMs: 50 } });
    const fast = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const stalled = net.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    cleanup.add(() => stalled.destroy());
    stalled.pause(); // Never reads: the kernel buffers fill, then the server's queue.
    await waitUntil(() => hub.clients.size === 2, 3000, 'both clients attached');
    const mark = fast.mark();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const total = 8 * 1024 * 1024;
    // The VM writes as fast as the fast client reads (the next chunk once it has the last).
    for (let sent = 0; sent < total; sent += chunk.length) {
      vm.send(chunk);
      await fast.waitFor(sent + chunk.length, 5000, mark);
    }
    await fast.waitFor(total, 20_000, mark);
    assert.equal(fast.received.length - mark, total);
    await waitUntil(() => hub.clients.size === 1, 5000, 'stalled client dropped');
    assert.ok(ts.logs.find((l) => l.message === 'client too slow; disconnecting' && typeof l.queued === 'number'));
    assert.equal(hub.bytesFromVm >= total, true);
    vm.send('still fine');
    await fast.waitFor('still fine', 3000);
  });

  test('a client ended while its paste is still arriving gets the output on its way and the reason, not a reset', async (t) => {
    const { cleanup, ts, vm, hub, name } = await setup(t, { config: { closeGraceMs: 5000 } });
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    await waitUntil(() => hub.clients.size === 1, 3000, 'attached');
    // Behind on its output (well under --client-queue-limit): some of it still waits in vspc's socket.
    user.stopReading();
    const output = 600 * 1024;
    vm.send(Buffer.alloc(output, 0x2e));
    await vm.barrier();
    const res = await fetch(`http://${ts.adminAddress}/api/v1/kick?vm=${name}&reason=paste-in-flight`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    // A paste it sent before it saw the end: far more than vspc reads after the end.
    user.sendRaw(Buffer.alloc(1024 * 1024, 0x61));
    user.resumeReading();
    await user.waitFor('disconnected by the administrator: paste-in-flight', 10_000);
    await user.whenClosed(10_000);
    assert.equal(user.text.split('.').length - 1, output, 'all the output that was on its way');
    await ts.logs.waitFor((l) => l.message === 'client keeps sending after vspc ended it; no longer read' && (l.bytesAfterClose as number) <= 128 * 1024);
  });

  test('connect --tls without --ca says what to do (--ca FILE or --fingerprint), with the fingerprint; --fingerprint pins the certificate', async (t) => {
    const dir = tempDir();
    t.after(() => dir.remove());
    const server = makeCert(dir.dir);
    const other = makeCert(join(dir.dir, 'other'));
    const fingerprint = new X509Certificate(server.cert).fingerprint256;
    const { cleanup, ts, vm, hub, name } = await setup(t, { tls: { cert: server.cert, key: server.key } });

    const bare = new ConsoleChild(ts.adminAddress, [name, '--tls']);
    cleanup.add(() => bare.kill());
    assert.equal(await bare.code(), 1);
    assert.match(bare.stderr, /the server's certificate is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT: self[- ]signed certificate\)/);
    assert.match(bare.stderr, /give the CA certificate that signed it: --ca FILE \(for vspc's self-signed certificate: the file vspc has as --cert, e\.g\. certs\/vspc\.crt\)/);
    assert.ok(bare.stderr.includes(`SHA-256 fingerprint ${fingerprint}`), bare.stderr);
    assert.ok(bare.stderr.includes(`--fingerprint ${fingerprint}`), bare.stderr);
    assert.match(bare.stderr, /it presents CN=localhost \(DNS:localhost, .*IP Address:127\.0\.0\.1/);

    // Another CA's certificate given: said so.
    const wrongCa = new ConsoleChild(ts.adminAddress, [name, '--tls', '--ca', other.certPath]);
    cleanup.add(() => wrongCa.kill());
    assert.equal(await wrongCa.code(), 1);
    assert.match(wrongCa.stderr, /the file given with --ca did not sign it/);

    // The advised fingerprint (any case, with or without colons) connects; input reaches the VM.
    const pinned = new ConsoleChild(ts.adminAddress, [name, '--tls', '--fingerprint', fingerprint.replace(/:/g, '').toLowerCase()]);
    cleanup.add(() => pinned.kill());
    await pinned.waitStderr(/connected with READWRITE/);
    pinned.type('pinned');
    await vm.waitForInput('pinned', 5000);
    pinned.type(`${CTRL_BRACKET}d`);
    assert.equal(await pinned.code(), 0);

    // Another certificate's fingerprint: refused before a byte is sent, so no client is ever attached.
    const attachedBefore = ts.logs.filter((l) => l.message === 'client attached').length;
    const wrongPin = new ConsoleChild(ts.adminAddress, [name, '--tls', '--fingerprint', new X509Certificate(other.cert).fingerprint256]);
    cleanup.add(() => wrongPin.kill());
    assert.equal(await wrongPin.code(), 1);
    assert.match(wrongPin.stderr, /the certificate's SHA-256 fingerprint is [0-9A-F:]{95}, not the one given with --fingerprint; not connecting/);
    await waitUntil(() => hub.clients.size === 0, 5000, 'no client left');
    assert.equal(ts.logs.filter((l) => l.message === 'client attached').length, attachedBefore);

    // A name the certificate does not list (no such name reaches this loopback port, so the advice itself).
    const advice = untrustedAdvice({ host: 'vspc.example', port: 20001 }, 'ERR_TLS_CERT_ALTNAME_INVALID', 'Hostname/IP does not match', {
      subject: 'CN=localhost',
      altNames: 'DNS:localhost, IP Address:127.0.0.1',
      fingerprint256: fingerprint,
      validTo: 'Jan  1 00:00:00 2030 GMT',
    });
    assert.match(advice, /^vspc\.example:20001: the certificate is not valid for the name "vspc\.example" \(ERR_TLS_CERT_ALTNAME_INVALID\)/);
    assert.match(advice, /connect with --host NAME, a name the certificate lists/);

    // Bad --fingerprint values are usage errors naming the option.
    const bad = new ConsoleChild(ts.adminAddress, [name, '--tls', '--fingerprint', 'AB:CD']);
    cleanup.add(() => bad.kill());
    assert.equal(await bad.code(), 2);
    assert.match(bad.stderr, /--fingerprint: "AB:CD" is not a SHA-256 fingerprint/);
  });

  test('telnets client port with a required client certificate: with one it works, without it is refused', async (t) => {
    const dir = tempDir();
    t.after(() => dir.remove());
    const server = makeCert(dir.dir);
    // An operator CA and a client certificate signed by it.
    const ossl = (args: string[]) => execFileSync('openssl', args, { cwd: dir.dir, stdio: 'pipe', timeout: 20_000 });
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.crt']);
    ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=admin', '-keyout', 'client.key', '-out', 'client.csr']);
    writeFileSync(join(dir.dir, 'ext.cnf'), 'extendedKeyUsage=clientAuth\n');
    ossl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'ext.cnf', '-out', 'client.crt']);

    const { cleanup, ts, vm, hub, name } = await setup(t, {
      tls: { cert: server.cert, key: server.key },
      config: { clientCa: readFileSync(join(dir.dir, 'ca.crt')) },
    });
    const tlsPort = hub.identity.tcpPort + ts.config.tlsPortOffset;

    const withCert = new ConsoleChild(ts.adminAddress, [
      name, '--tls', '--host', 'localhost', '--ca', server.certPath,
      '--cert', join(dir.dir, 'client.crt'), '--key', join(dir.dir, 'client.key'),
    ]);
    cleanup.add(() => withCert.kill());
    await withCert.waitStderr(/connected with READWRITE/);
    withCert.type('over tls');
    await vm.waitForInput('over tls', 5000);
    vm.send('secret output');
    await withCert.waitStdout('secret output');

    const without = new ConsoleChild(ts.adminAddress, [name, '--tls', '--host', 'localhost', '--ca', server.certPath]);
    cleanup.add(() => without.kill());
    assert.equal(await without.code(), 1);
    assert.doesNotMatch(without.stdout.toString(), /secret output/);
    await ts.logs.waitFor((l) => l.message === 'TLS handshake failed on client port' && l.port === tlsPort, 5000);
    assert.equal(hub.clients.size, 1, 'only the client with a certificate is attached');
  });
});
