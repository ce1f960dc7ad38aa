/**
 * A serial BREAK asked for on a console whose source cannot send one (a `unix:` QEMU
 * serial socket is a byte stream): the client is told so, on every way of asking —
 * telnet's IAC BRK (`send brk`, and `vspc-admin connect`'s Ctrl-] b) and the SSH front
 * door's Ctrl-] b — instead of being left to believe it
 * went out. (A source that can send one: the sources' own tests.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import ssh2 from 'ssh2';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import { DEFAULTS } from '../../src/config/config.js';
import { BRK } from '../../src/protocol/telnet/constants.js';
import { portTarget, runConsole } from '../../src/cli/connect.js';
import { Cleanup, startServer, tempDir, waitUntil, withTimeout } from '../support/server.js';
import { keyLine, makeKey } from '../support/ssh.js';
import { FakeSerial } from '../support/fake-serial.js';

const T = { timeout: 60_000 };
const NOT_SENT = "break not sent: this console's source cannot send a break";

describe("a break on a console whose source cannot send one", { timeout: 120_000 }, () => {
  test('telnet, vspc-admin connect and the SSH front door are told it was not sent', T, async (t) => {
    const d = tempDir('vspc-break-');
    const serial = await FakeSerial.start(join(d.dir, 'vm3.sock'));
    t.after(async () => {
      await serial.close();
      d.remove();
    });
    const alice = makeKey(d.dir, 'alice', 'alice@laptop');
    const keysFile = join(d.dir, 'authorized_keys');
    writeFileSync(keysFile, keyLine(alice, 'vspc-user="alice"') + '\n', { mode: 0o600 });
    const src = `unix:${serial.path}`;
    const { ts } = await startServer(t, {
      config: {
        consoles: [{ name: 'vm3', source: parseSourceSpec(src), sourceText: src }],
        sshListen: { host: '127.0.0.1', port: 0 },
        sshHostKeyDir: join(d.dir, 'hostkeys'),
        sshAuthorizedKeys: keysFile,
        sshLimits: DEFAULTS.sshLimits,
      },
    });
    await waitUntil(() => serial.conns.size === 1 && ts.server.registry.all().some((h) => h.displayName === 'vm3' && h.state === 'connected'), 10_000, 'vm3 connected');
    const hub = ts.server.registry.all().find((h) => h.displayName === 'vm3')!;
    const c = new Cleanup();
    t.after(() => c.run());

    // A stock telnet client's `send brk`: IAC BRK.
    const user = await ts.connectUser(hub.identity.tcpPort, c);
    const from = user.mark();
    user.sendCommand(BRK);
    await user.waitFor(`[vspc: ${NOT_SENT}]`, 5000, from);
    await ts.logs.waitFor((l) => l.message === 'break not sent: the source cannot send one' && l.level === 'debug', 5000);
    await user.close();

    // vspc-admin connect: Ctrl-] b says "break requested", and vspc's answer follows.
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let out = '';
    let err = '';
    stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
    const done = runConsole({ mode: 'readwrite', force: false, user: 'bob', escape: 0x1d, timeoutMs: 10_000 }, portTarget({ host: '127.0.0.1', port: hub.identity.tcpPort, tls: false }), { stdin, stdout, stderr });
    c.add(() => stdin.end());
    await waitUntil(() => hub.clients.size === 1, 10_000, 'vspc-admin connect attached');
    stdin.write(Buffer.from([0x1d, 0x62]));
    await waitUntil(() => out.includes(NOT_SENT), 10_000, `the notice (stdout: ${JSON.stringify(out)})`);
    assert.match(err, /break requested/);
    assert.doesNotMatch(err, /break sent/);
    stdin.end();
    await withTimeout(done, 10_000, 'vspc-admin connect ends');

    // The SSH front door: Ctrl-] b on a terminal (~B, the RFC 4335 request, goes the same way and is refused).
    const client = new ssh2.Client();
    c.add(() => client.end());
    const ready = once(client, 'ready');
    client.connect({ host: '127.0.0.1', port: ts.server.addresses.ssh!.port, username: 'console', privateKey: readFileSync(alice.path), readyTimeout: 10_000 });
    await withTimeout(ready, 10_000, 'SSH login');
    const channel = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
      client.exec('vm3', { pty: { term: 'xterm', rows: 24, cols: 80 } }, (e, ch) => (e ? reject(e) : resolve(ch))),
    );
    let sshOut = '';
    channel.on('data', (b: Buffer) => (sshOut += b.toString('utf8')));
    channel.stderr.on('data', (b: Buffer) => (sshOut += b.toString('utf8')));
    await waitUntil(() => hub.clients.size === 1, 10_000, 'the SSH client attached');
    channel.write(Buffer.from([0x1d, 0x62]));
    await waitUntil(() => sshOut.includes(NOT_SENT), 10_000, `the SSH notice (output: ${JSON.stringify(sshOut)})`);
    assert.doesNotMatch(sshOut, /break sent/);
    channel.end();
  });
});
