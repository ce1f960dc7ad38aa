/**
 * The `device:` source against real ptys: a socat pty pair (vspc opens one end, the
 * test talks through the other), `stty -F` on vspc's end to see what reached the
 * tty, the pair killed and restarted for a device that vanishes and comes back, and
 * the bad input of issue 13 (not a tty, permission denied, a device locked by another
 * program, settings serialport cannot apply). Synchronised on events (runner states,
 * bytes seen, socat's own "ready" line); timers only bound the waits. Every socat is
 * stopped by its PID when its test ends, however it ends.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { createEndpointWith, type EndpointContext } from '../../src/sources/common/endpoint.js';
import { ConnectorRegistry } from '../../src/sources/common/link.js';
import type { EndpointRunner } from '../../src/sources/common/runner.js';
import { registerDeviceSource } from '../../src/sources/device/index.js';
import { FakeClient } from '../domain/fakes.js';
import { PtyEnd, startPtyPair, type PtyPair } from '../support/pty-pair.js';
import { makeHub, recordingLogger, waitForState, waitForStatus, type LogLine } from './helpers.js';

const WAIT = 10_000;
const run = promisify(execFile);
const ROOT = new URL('../../..', import.meta.url).pathname;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'vspc-dev-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function ptyPair(t: TestContext, dir: string, names?: [string, string]): Promise<PtyPair> {
  const p = await startPtyPair(dir, names);
  t.after(() => p.stop());
  return p;
}

function farEnd(t: TestContext, path: string): PtyEnd {
  const e = new PtyEnd(path);
  t.after(() => e.close());
  return e;
}

interface Started {
  runner: EndpointRunner;
  hub: ConsoleHub;
  client: FakeClient;
  lines: LogLine[];
}

function start(t: TestContext, spec: string, ctx: Partial<EndpointContext> = {}): Started {
  const { hub } = makeHub();
  const client = new FakeClient();
  hub.addClient(client);
  const logger = recordingLogger();
  const registry = registerDeviceSource(new ConnectorRegistry());
  const runner = createEndpointWith(registry, parseSourceSpec(spec), hub, { logger, backoff: { initialMs: 20, maxMs: 200 }, ...ctx });
  t.after(() => runner.destroy('test over'));
  return { runner, hub, client, lines: logger.lines };
}

/** Resolves when the client has received `text` (FakeClient.waitForOutput, bounded by WAIT). */
function waitForOutput(client: FakeClient, text: string | Buffer, timeoutMs = WAIT): Promise<void> {
  return client.waitForOutput(text, timeoutMs);
}

/** `stty -F path -a`: the speed and the flags (`cs8`, `-parenb`, `cstopb`, ...). */
async function stty(path: string): Promise<{ speed: number; flags: Set<string> }> {
  const { stdout } = await run('stty', ['-F', path, '-a'], { timeout: WAIT });
  const speed = Number(/speed (\d+) baud/.exec(stdout)?.[1]);
  return { speed, flags: new Set(stdout.split(/[\s;]+/).filter((w) => /^-?[a-z0-9]+$/.test(w))) };
}

function assertFlags(flags: Set<string>, want: string[]): void {
  for (const f of want) assert.ok(flags.has(f), `stty shows ${f} (got ${[...flags].filter((x) => /par|cs[5-8]|cstopb|crtscts|ix/.test(x)).join(' ')})`);
}

/** A client of the hub that holds a lock (the hub checks it for line changes). */
function attachClient(hub: ConsoleHub, request: 'readwrite' | 'readonly' = 'readwrite'): FakeClient {
  const c = new FakeClient();
  const d = hub.addClient(c, { request });
  assert.ok(d.granted);
  return c;
}

const PROBE = new URL('./fixtures/probe-device.js', import.meta.url).pathname;

/** Runs a device endpoint as an unprivileged user (root would not see EACCES) and returns its settled status. */
async function probeAsNobody(spec: string): Promise<{ status: { state: string; lastError: string | null }; errorCode: string | null; sysCode: string | null }> {
  const uid = process.getuid?.() === 0 ? 65534 : undefined;
  const { stdout } = await run(process.execPath, [PROBE, spec], { timeout: WAIT, uid, gid: uid });
  return JSON.parse(stdout);
}

describe('device: a pty pair from socat', () => {
  test('bytes both ways (all 256 values) through a ConsoleHub; the spec’s settings are on the tty and in hub.lineSettings', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    const pair = await ptyPair(t, dir);
    const far = farEnd(t, pair.b);
    const { runner, hub, client } = start(t, `device:${pair.a}?baud=9600&stop=2`);
    const st = await waitForState(runner, 'connected', WAIT);
    assert.equal(st.peer, `device:${pair.a}`);
    assert.equal(hub.state, 'connected');
    assert.deepEqual(hub.lineSettings, { baudRate: 9600, dataSize: 8, parity: 'none', stopBits: '2', flow: 'none' });
    const tty = await stty(pair.a);
    assert.equal(tty.speed, 9600);
    assertFlags(tty.flags, ['cstopb', 'cs8', '-parenb', '-crtscts']);

    await far.write('login: ');
    await waitForOutput(client, 'login: ');
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await far.write(all);
    await waitForOutput(client, all);
    hub.fromClient(client, all);
    hub.fromClient(client, Buffer.from('root\r'));
    await far.waitFor(Buffer.concat([all, Buffer.from('root\r')]));
  });

  test('baud and format changes from vspc reach the tty (stty), keep the link, and report what is in effect', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    const pair = await ptyPair(t, dir);
    const far = farEnd(t, pair.b);
    const { runner, hub, client, lines } = start(t, `device:${pair.a}?baud=115200`);
    await waitForState(runner, 'connected', WAIT);
    const user = attachClient(hub);

    let r = await hub.setLineSettings(user, { baudRate: 38400 });
    assert.equal(r.applied, true);
    assert.equal(r.settings.baudRate, 38400);
    assert.equal((await stty(pair.a)).speed, 38400);

    // Data bits, parity and stop bits need a reopen. Linux forces CS8 and clears PARENB
    // on a pty, so vspc reports 8 data bits and no parity: what the tty really does.
    r = await hub.setLineSettings(user, { dataSize: 7, parity: 'odd', stopBits: '2' });
    assert.equal(r.applied, true);
    assert.deepEqual(r.settings, { baudRate: 38400, dataSize: 8, parity: 'none', stopBits: '2', flow: 'none' });
    let tty = await stty(pair.a);
    assert.equal(tty.speed, 38400);
    assertFlags(tty.flags, ['parodd', 'cstopb', 'cs8', '-parenb']);

    r = await hub.setLineSettings(user, { parity: 'even', stopBits: '1', flow: 'rtscts' });
    tty = await stty(pair.a);
    assertFlags(tty.flags, ['-parodd', '-cstopb', 'crtscts', '-ixon']);
    assert.equal(r.settings.flow, 'rtscts');

    r = await hub.setLineSettings(user, { flow: 'xonxoff' });
    tty = await stty(pair.a);
    assertFlags(tty.flags, ['-crtscts', 'ixon', 'ixoff']);
    assert.deepEqual(hub.lineSettings, r.settings);

    // One continuous link for the runner and the hub; data still flows both ways.
    assert.equal(runner.status.reconnects, 0);
    assert.equal(runner.state, 'connected');
    assert.equal(lines.filter((l) => l.message.startsWith('endpoint connection lost')).length, 0);
    assert.equal(client.notices.filter((n) => /disconnected/.test(n)).length, 0);
    await far.write('after the reopen\r\n');
    await waitForOutput(client, 'after the reopen\r\n');
    hub.fromClient(client, Buffer.from('typed after\r'));
    await far.waitFor('typed after\r');
  });

  test('changes the tty cannot take are refused with the settings unchanged; a read-only client changes nothing', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    const pair = await ptyPair(t, dir);
    const { runner, hub } = start(t, `device:${pair.a}?baud=19200`);
    await waitForState(runner, 'connected', WAIT);
    const user = attachClient(hub);
    const before = { ...hub.lineSettings };

    for (const change of [{ parity: 'mark' as const }, { parity: 'space' as const }, { stopBits: '1.5' as const }, { dataSize: 9 }]) {
      const r = await hub.setLineSettings(user, change);
      assert.equal(r.applied, false, JSON.stringify(change));
      assert.match(r.refused!, /not supported/);
      assert.deepEqual(r.settings, before);
    }
    assert.equal((await stty(pair.a)).speed, 19200);

    const reader = attachClient(hub, 'readonly');
    const r = await hub.setLineSettings(reader, { baudRate: 9600 });
    assert.deepEqual(r, { settings: before, applied: false, refused: 'read-only' });
    assert.equal((await stty(pair.a)).speed, 19200);
    assert.equal(runner.state, 'connected');
  });

  test('the pty vanishes (socat killed): waiting with a clear error; socat back → reconnects by itself, settings kept', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    let pair = await ptyPair(t, dir);
    const { runner, hub, client } = start(t, `device:${pair.a}?baud=9600`);
    await waitForState(runner, 'connected', WAIT);
    const user = attachClient(hub);
    assert.equal((await hub.setLineSettings(user, { baudRate: 57600, stopBits: '2' })).applied, true);

    const waiting = waitForState(runner, 'waiting', WAIT);
    await pair.stop();
    const st = await waiting;
    assert.match(st.lastError!, /went away/);
    assert.equal(st.reconnects, 1);
    assert.equal(hub.state, 'disconnected');
    assert.ok(client.notices.some((n) => /disconnected/.test(n)));
    // While it is gone the link's path is gone too: NOT_FOUND, retried with backoff.
    await waitForStatus(runner, (s) => s.state === 'waiting' && /does not exist/.test(s.lastError ?? ''), WAIT, 'ENOENT while socat is away');

    pair = await ptyPair(t, dir);
    const far = farEnd(t, pair.b);
    const back = await waitForState(runner, 'connected', WAIT);
    assert.ok(back.reconnects >= 1);
    // The settings changed over the link stay with the endpoint.
    const tty = await stty(pair.a);
    assert.equal(tty.speed, 57600);
    assertFlags(tty.flags, ['cstopb']);
    assert.equal(hub.lineSettings?.baudRate, 57600);
    await far.write('back again\r\n');
    await waitForOutput(client, 'back again\r\n');
    hub.fromClient(client, Buffer.from('hello device\r'));
    await far.waitFor('hello device\r');
  });

  test('backpressure: a tty nobody reads fills up, the hub pauses its clients; reading again resumes them, every byte in order', { timeout: 60_000 }, async (t) => {
    const dir = tempDir(t);
    const pair = await ptyPair(t, dir);
    const far = farEnd(t, pair.b);
    const { runner, hub, client } = start(t, `device:${pair.a}`);
    await waitForState(runner, 'connected', WAIT);
    far.pause();
    const resumed = new Promise<void>((resolve) => {
      const original = client.resumeInput.bind(client);
      client.resumeInput = () => {
        original();
        resolve();
      };
    });
    const BLOCK = 4096;
    let sent = 0;
    for (let i = 0; !client.paused; i++) {
      // A fresh buffer each time, as socket reads give: the link queues it without copying.
      const block = Buffer.alloc(BLOCK, 0x30 + (i % 10));
      hub.fromClient(client, block);
      sent += block.length;
      if (sent > 64 * 1024 * 1024) assert.fail('64 MiB written and the hub never paused its clients');
      // Lets the device's writes complete between blocks, as socket reads would.
      await new Promise((r) => setImmediate(r));
    }
    assert.ok(client.paused);
    far.resume();
    await resumed;
    await far.until(() => far.received.length >= sent, WAIT, `${sent} bytes`);
    assert.equal(far.received.length, sent);
    for (let i = 0; i < sent / BLOCK; i++) {
      const b = far.received.subarray(i * BLOCK, (i + 1) * BLOCK);
      assert.ok(b.every((x) => x === 0x30 + (i % 10)), `block ${i} whole and in order`);
    }
  });
});

describe('device: bad input (clear errors, nothing else disturbed)', () => {
  test('not a tty, missing, settings serialport cannot apply: each waits with its code; a good device beside them works', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'file'), 'not a tty');
    mkdirSync(join(dir, 'dir'));
    const sock = net.createServer().listen(join(dir, 'sock'));
    t.after(() => sock.close());
    await new Promise((r) => sock.once('listening', r));
    const pair = await ptyPair(t, dir);
    const cases: Array<[string, string, RegExp]> = [
      [`device:${join(dir, 'file')}`, 'VSPC_SOURCE_NOT_A_TTY', /is a regular file, not a terminal/],
      [`device:${join(dir, 'dir')}`, 'VSPC_SOURCE_NOT_A_TTY', /is a directory, not a terminal/],
      ['device:/dev/null', 'VSPC_SOURCE_NOT_A_TTY', /not a terminal/],
      [`device:${join(dir, 'sock')}`, 'VSPC_SOURCE_NOT_A_TTY', /is a socket, not a terminal device \(use unix:/],
      [`device:${join(dir, 'missing')}`, 'VSPC_SOURCE_NOT_FOUND', /does not exist/],
      [`device:${pair.a}?parity=mark`, 'VSPC_SOURCE_LINE_UNSUPPORTED', /parity mark is not supported/],
      [`device:${pair.a}?stop=1.5`, 'VSPC_SOURCE_LINE_UNSUPPORTED', /1\.5 stop bits/],
    ];
    const bad = cases.map(([spec]) => start(t, spec));
    const good = start(t, `device:${pair.a}`);
    const far = farEnd(t, pair.b);
    for (const [i, [spec, code, message]] of cases.entries()) {
      const st = await waitForState(bad[i].runner, 'waiting', WAIT, `${spec} waiting`);
      assert.match(st.lastError!, message, spec);
      const warn = bad[i].lines.find((l) => l.level === 'warn');
      assert.equal(warn?.fields.errorCode, code, spec);
    }
    await waitForState(good.runner, 'connected', WAIT);
    await far.write('still here\r\n');
    await waitForOutput(good.client, 'still here\r\n');
    assert.equal(good.lines.filter((l) => l.level === 'warn' || l.level === 'error').length, 0);
  });

  test('permission denied (EACCES): a clear error and waiting', { timeout: 20_000 }, async (t) => {
    // The test suite runs as root (npm test installs its Debian packages that way): the
    // probe runs as another user so that the permission check is the kernel's.
    assert.equal(process.getuid?.(), 0, 'needs root to run the probe as another user');
    const dir = tempDir(t);
    chmodSync(dir, 0o755);
    const pair = await ptyPair(t, dir);
    // socat's pty slaves are root's, mode 0600: nobody may open them.
    const r = await probeAsNobody(`device:${pair.a}`);
    assert.equal(r.status.state, 'waiting');
    assert.equal(r.errorCode, 'VSPC_SOURCE_PERMISSION_DENIED');
    assert.equal(r.sysCode, 'EACCES');
    assert.match(r.status.lastError!, /EACCES: no permission to open .*mode 0600/);
  });

  test('a device another program holds locked (flock): VSPC_SOURCE_BUSY; the holder is not disturbed', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const pair = await ptyPair(t, dir);
    const far = farEnd(t, pair.b);
    const first = start(t, `device:${pair.a}`);
    await waitForState(first.runner, 'connected', WAIT);
    const second = start(t, `device:${pair.a}`);
    const st = await waitForState(second.runner, 'waiting', WAIT);
    assert.match(st.lastError!, /locked by another program/);
    assert.equal(second.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_BUSY');
    await far.write('to the holder\r\n');
    await waitForOutput(first.client, 'to the holder\r\n');
    assert.equal(first.runner.status.reconnects, 0);
  });

  test('vspc never lists serial ports (serialport’s list() runs udevadm and crashes without udev)', () => {
    const dir = join(ROOT, 'src/sources/device');
    for (const name of readdirSync(dir)) {
      const code = readFileSync(join(dir, name), 'utf8')
        .replace(/\/\*[\s\S]*?\*\//g, '')
        .replace(/\/\/.*$/gm, '');
      assert.doesNotMatch(code, /\.list\s*\(|\blist\s*\(\s*\)/, `${name} calls list()`);
    }
  });
});
