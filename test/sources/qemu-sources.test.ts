/**
 * The QEMU socket sources against real guests (test/support/qemu.ts: a busybox guest
 * under TCG, shell on ttyS0). Each endpoint feeds a ConsoleHub; the tests read what
 * the hub received with nobody attached, then type through the hub as a console
 * client would. Synchronised on events: bytes seen, state changes; timers only
 * bound the waits.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import { createEndpoint } from '../../src/sources/qemu/index.js';
import type { EndpointRunner } from '../../src/sources/common/runner.js';
import { PROMPT, READY_MARKER, guestArtifacts, makeGuestDir, startGuest, type Guest, type SerialConsole } from '../support/qemu.js';
import { reservePort } from '../support/ports.js';
import { recordingLogger, waitForState, waitForStatus } from './helpers.js';
import { WatchedHub, hubConsole } from './hub-console.js';

const BOOT_MS = 45_000;
const artifacts = guestArtifacts();

function tempGuestDir(t: TestContext): string {
  const dir = makeGuestDir('vspc-src-guest-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function guest(t: TestContext, options: Parameters<typeof startGuest>[0]): Promise<Guest> {
  const g = await startGuest({ artifacts, ...options });
  t.after(() => g.stop());
  return g;
}

function endpoint(t: TestContext, spec: string, watched: WatchedHub): { runner: EndpointRunner; logger: ReturnType<typeof recordingLogger> } {
  const logger = recordingLogger();
  const runner = createEndpoint(parseSourceSpec(spec), watched.hub, { logger });
  t.after(() => runner.destroy('test over'));
  return { runner, logger };
}

function console(t: TestContext, watched: WatchedHub, name: string): SerialConsole {
  const con = hubConsole(watched.hub, name);
  t.after(() => con.close());
  return con;
}

/** Boot output reached the hub with no client attached, up to the shell prompt. */
async function bootedThroughHub(watched: WatchedHub, from = 0): Promise<void> {
  await watched.waitFor(READY_MARKER, BOOT_MS, from);
  await watched.waitFor(PROMPT, BOOT_MS, watched.output.indexOf(READY_MARKER, from));
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** The `brk:` counter of a guest UART line in /proc/tty/driver/serial (absent = 0). */
async function breaks(con: SerialConsole, line: number): Promise<number> {
  const { output } = await con.run(`grep '^${line}:' /proc/tty/driver/serial`);
  const m = / brk:(\d+)/.exec(output);
  return m ? Number(m[1]) : 0;
}

describe('QEMU sources against real guests', { concurrency: false }, () => {
  test('unix: boot output reaches the hub unattended; uname through the hub; QEMU killed → waiting; restarted → reconnects by itself', { timeout: 150_000 }, async (t) => {
    const dir = tempGuestDir(t);
    const sock = join(dir, 'ttyS0.sock');
    const serial = [`unix:${sock},server=on,wait=off`];
    const g1 = await guest(t, { dir, serial });
    const watched = new WatchedHub('unix-guest');
    const { runner, logger } = endpoint(t, `unix:${sock}`, watched);
    await waitForState(runner, 'connected', 10_000);
    assert.equal(watched.hub.state, 'connected');
    await bootedThroughHub(watched);
    assert.equal(watched.hub.clients.size, 0, 'nobody was attached during the boot');
    assert.ok(watched.hub.scrollback.snapshot().toString('latin1').includes(READY_MARKER), 'the boot is in the scrollback');

    const con = console(t, watched, 'hub console');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);

    // Kill QEMU (a crash: its socket file stays behind, stale).
    process.kill(g1.pid, 'SIGKILL');
    await g1.waitForExit(10_000);
    const down = await waitForState(runner, 'waiting', 10_000);
    assert.equal(watched.hub.state, 'disconnected');
    assert.ok(down.lastError, 'lastError says why');
    assert.deepEqual(watched.events.map((e) => e.kind).filter((k) => k.startsWith('vm-')), ['vm-connected', 'vm-disconnected']);
    // It keeps trying while QEMU is away, until the backoff reaches its 5 s cap
    // (the loss and six failures: 100, 200, 400, 800, 1600, 3200 ms, then 5 s): the worst case.
    await waitForStatus(runner, (s) => s.state === 'waiting' && s.reconnects >= 7, 20_000, 'the backoff at its cap');
    const failed = runner.status;
    t.diagnostic(`while QEMU was down: ${failed.lastError}`);

    // QEMU again, same path: no kick. This time with wait=on: QEMU holds the guest until
    // a client connects, so the whole second boot is owed to vspc. (With wait=off, as
    // Proxmox runs it, whatever the guest prints before the next retry — up to the 5 s
    // cap — is dropped by QEMU itself; on a fast machine that is the whole boot.)
    const mark = watched.output.length;
    const g2Spawn = guest(t, { dir, serial: [`unix:${sock},server=on,wait=on`] });
    const [, g2] = await Promise.all([waitForState(runner, 'connected', 15_000), g2Spawn]);
    const reconnectMs = Date.now() - g2.spawnedAt;
    t.diagnostic(`reconnected ${reconnectMs} ms after QEMU was spawned`);
    assert.ok(logger.lines.some((l) => l.level === 'info' && l.message === 'endpoint connected again' && typeof l.fields.downMs === 'number'));
    await bootedThroughHub(watched, mark);
    assert.equal((await con.run('echo again-$((40+2))')).output, 'again-42');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);
  });

  test('tcp: -serial tcp:127.0.0.1:PORT,server=on,wait=off', { timeout: 90_000 }, async (t) => {
    const port = await reservePort();
    await guest(t, { serial: [`tcp:127.0.0.1:${port},server=on,wait=off`] });
    const watched = new WatchedHub('tcp-guest');
    const { runner } = endpoint(t, `tcp:127.0.0.1:${port}`, watched);
    await waitForState(runner, 'connected', 10_000);
    await bootedThroughHub(watched);
    const con = console(t, watched, 'hub console');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);
    assert.equal((await con.run('printf "%s\\n" tcp-$((6*7))')).output, 'tcp-42');
  });

  test('telnet: the shell over telnet:, and BREAK (IAC BRK) reaches the guest UART (brk counter rises)', { timeout: 120_000 }, async (t) => {
    const port0 = await reservePort();
    let port1 = await reservePort();
    while (port1 === port0) port1 = await reservePort();
    // ttyS0 (the shell, also the kernel console) and ttyS1 (the BREAK target: a break on
    // the console line would start a magic SysRq sequence) on telnet backends.
    await guest(t, { serial: [`telnet:127.0.0.1:${port0},server=on,wait=off`, `telnet:127.0.0.1:${port1},server=on,wait=off`] });
    const s0 = new WatchedHub('telnet-guest');
    const s1 = new WatchedHub('telnet-guest:ttyS1');
    const e0 = endpoint(t, `telnet:127.0.0.1:${port0}`, s0);
    const e1 = endpoint(t, `telnet:127.0.0.1:${port1}`, s1);
    await Promise.all([waitForState(e0.runner, 'connected', 10_000), waitForState(e1.runner, 'connected', 10_000)]);
    await bootedThroughHub(s0);
    const con = console(t, s0, 'hub console');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);

    // ttyS1 both ways through the second telnet endpoint. A reader holds it open.
    await con.run('stty -F /dev/ttyS1 raw -echo');
    const ttyS1 = console(t, s1, 'ttyS1 console');
    const reading = con.run(`sh -c 'exec </dev/ttyS1; echo s1-open-$((1+1)) >/dev/ttyS1; head -n1'`);
    await ttyS1.waitFor('s1-open-2', 10_000, 'the guest opening ttyS1');
    ttyS1.send('hello-over-telnet\n');
    assert.equal((await reading).output, 'hello-over-telnet');

    // BREAK: counted only while the port is open, so a reader keeps it open.
    await con.run('(exec </dev/ttyS1; while :; do cat >/dev/null; done) & echo $! >/tmp/reader');
    // One at a time: two breaks before the guest reads the line status register are one
    // (QEMU sets the BI bit again), so each is awaited in the counter before the next.
    const before = await breaks(con, 1);
    let count = before;
    for (let n = 1; n <= 2; n++) {
      s1.hub.sendBreak();
      for (let i = 0; i < 50 && count < before + n; i++) count = await breaks(con, 1);
      assert.equal(count, before + n, `break #${n} counted`);
    }
    t.diagnostic(`ttyS1 brk: ${before} → ${count}`);
    await con.run('kill $(cat /tmp/reader)');
  });

  test('unix-listen: QEMU (-chardev socket,reconnect=1) connects to vspc; vspc restarts → QEMU comes back', { timeout: 120_000 }, async (t) => {
    const dir = tempGuestDir(t);
    const path = join(dir, 'vspc-ttyS0.sock');
    const watched = new WatchedHub('listen-guest');
    const first = endpoint(t, `unix-listen:${path}`, watched);
    await waitForState(first.runner, 'listening', 10_000);
    await guest(t, { dir, serial: ['chardev:s0'], args: ['-chardev', `socket,id=s0,path=${path},reconnect=1`] });
    await waitForState(first.runner, 'connected', 10_000);
    await bootedThroughHub(watched);
    const con = console(t, watched, 'hub console');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);

    // vspc's side goes away (reload, restart) and comes back on the same path.
    await first.runner.close('restart');
    const second = endpoint(t, `unix-listen:${path}`, watched);
    const listening = Date.now();
    await waitForState(second.runner, 'connected', 10_000);
    t.diagnostic(`QEMU reconnected ${Date.now() - listening} ms after vspc listened again (reconnect=1)`);
    assert.equal((await con.run('echo back-$((40+2))')).output, 'back-42');
  });

  test('udp: -serial udp:127.0.0.1:RPORT@127.0.0.1:LPORT, both directions', { timeout: 90_000 }, async (t) => {
    const vspcPort = await freeUdpPort();
    let qemuPort = await freeUdpPort();
    while (qemuPort === vspcPort) qemuPort = await freeUdpPort();
    const watched = new WatchedHub('udp-guest');
    // vspc binds first so that QEMU's first datagrams find it.
    const { runner } = endpoint(t, `udp:127.0.0.1:${vspcPort}@127.0.0.1:${qemuPort}`, watched);
    const st = await waitForState(runner, 'connected', 10_000);
    assert.match(st.note ?? '', /bound/);
    await guest(t, { serial: [`udp:127.0.0.1:${vspcPort}@127.0.0.1:${qemuPort}`] });
    await bootedThroughHub(watched);
    const con = console(t, watched, 'hub console');
    assert.equal((await con.run('uname -r')).output, artifacts.kernelRelease);
    assert.equal((await con.run('echo udp-$((6*7))')).output, 'udp-42');
  });
});
