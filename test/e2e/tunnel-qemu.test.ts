/**
 * Serial tunnels end to end against a real QEMU guest (issue 16): the `tunnel-ssh`
 * variant (static C agent + dropbear on 127.0.0.1:22, test/support/tunnel-guest.ts),
 * vspc with two `tunnels:` entries — one over the emulated 16550 UART (ttyS1 on a unix
 * socket, through a fault-injecting relay that is clean unless a test turns it on), one
 * over a virtio-serial port — and the host's own OpenSSH client on each forward:
 * `ssh uname -r`, `scp` of 1 MiB both ways with checksums, an interactive session in
 * tmux that keeps answering during an scp, the agent killed mid-transfer, vspc
 * restarted, junk written by the guest onto the tunnel's port, and damaged bytes at 1 in
 * 1,000. Every QEMU, socat, ssh, scp and tmux process is stopped by its PID in every
 * exit path; every wait is bounded; nothing sleeps.
 */
// vspc-test-runner: heavy
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { TunnelSettings } from '../../src/config/config.js';
import type { TunnelView } from '../../src/admin/views.js';
import { SerialConsole, startGuest, type Guest } from '../support/qemu.js';
import { buildTunnelGuest, rawLine as rawLineOf, socketPort, type RawPort } from '../support/tunnel-guest.js';

const rawLine = (port: RawPort, guestDev: string, size: number) => rawLineOf(world().con, port, guestDev, size);
import { FaultRelay } from '../support/tunnel.js';
import { Procs, killPid } from '../support/procs.js';
import { startServer, waitUntil, type TestServer } from '../support/server.js';
import { reservePortRange } from '../support/ports.js';
import { bounded } from '../agent/harness.js';
import { VSPC_ADMIN_JS } from '../support/cli.js';

const MIB = 1 << 20;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const kib = (bytes: number, ms: number): string => `${((bytes / 1024) * 1000 / ms).toFixed(1)} KiB/s`;

/** Everything the tests share: one guest, one vspc (restarted once), the ssh setup. */
interface World {
  dir: string;
  guest: Guest;
  con: SerialConsole;
  relay: FaultRelay;
  ts: TestServer;
  dispose: () => Promise<void>;
  dbPath: string;
  portRange: { start: number; end: number };
  config: { tunnels: TunnelSettings[] };
  key: string;
  knownHosts: string;
  kernelRelease: string;
  procs: Procs;
  tmuxSocket: string;
  tmuxPid: number | null;
}

let w: World | undefined;
const world = (): World => {
  if (!w) throw new Error('the guest did not start (see the before hook)');
  return w;
};

async function tunnel(name: string): Promise<TunnelView> {
  const all = await world().ts.api<TunnelView[]>('/api/v1/tunnels');
  const v = all.find((x) => x.name === name);
  if (!v) throw new Error(`no tunnel ${name}`);
  return v;
}

async function waitUp(name: string, timeoutMs = 60_000): Promise<number> {
  let port = 0;
  await waitUntil(async () => {
    const v = await tunnel(name);
    if (v.link?.state !== 'up' || !v.forwards[0].address) return false;
    port = Number(v.forwards[0].address.split(':').pop());
    return true;
  }, timeoutMs, `tunnel ${name} up`);
  return port;
}

function sshOpts(): string[] {
  const x = world();
  return [
    '-F', '/dev/null',
    '-i', x.key,
    '-o', `UserKnownHostsFile=${x.knownHosts}`,
    '-o', 'StrictHostKeyChecking=accept-new',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=90',
    '-o', 'LogLevel=ERROR',
  ];
}

function ssh(port: number, command: string, timeoutMs = 120_000, input?: Buffer) {
  return world().procs.run('ssh', [...sshOpts(), '-p', String(port), 'root@127.0.0.1', command], { timeoutMs, input });
}

function scp(port: number, from: string, to: string, timeoutMs = 240_000) {
  return world().procs.run('scp', [...sshOpts(), '-P', String(port), from, to], { timeoutMs });
}

/** 1 MiB (or `size`) up and down through `port`; checksums compared; returns the times. */
async function scpBothWays(port: number, size: number, tag: string): Promise<{ upMs: number; downMs: number }> {
  const x = world();
  const data = randomBytes(size);
  const local = join(x.dir, `${tag}.up`);
  writeFileSync(local, data);
  const up = await scp(port, local, `root@127.0.0.1:/tmp/${tag}.up`);
  assert.equal(up.code, 0, `scp up: ${up.stderr}`);
  const sum = await ssh(port, `sha256sum /tmp/${tag}.up && head -c ${size} /dev/urandom >/tmp/${tag}.down && sha256sum /tmp/${tag}.down`);
  assert.equal(sum.code, 0, sum.stderr);
  const [upSum, downSum] = sum.stdout.toString().trim().split('\n').map((l) => l.split(/\s+/)[0]);
  assert.equal(upSum, sha(data), 'what arrived in the guest is what was sent');
  const back = join(x.dir, `${tag}.down`);
  const down = await scp(port, `root@127.0.0.1:/tmp/${tag}.down`, back);
  assert.equal(down.code, 0, `scp down: ${down.stderr}`);
  assert.equal(sha(readFileSync(back)), downSum, 'what arrived here is what the guest had');
  await ssh(port, `rm -f /tmp/${tag}.up /tmp/${tag}.down`);
  return { upMs: up.ms, downMs: down.ms };
}

/** Keystroke round trips in an interactive `ssh -tt ... cat` session (the pty's echo), ms. */
async function keystrokeRtts(port: number, samples: number): Promise<number[]> {
  const x = world();
  const c = x.procs.spawn('ssh', [...sshOpts(), '-tt', '-p', String(port), 'root@127.0.0.1', 'cat']);
  let out = '';
  const waiters = new Set<() => void>();
  c.stdout!.on('data', (b: Buffer) => {
    out += b.toString('latin1');
    for (const f of [...waiters]) f();
  });
  const until = (pred: () => boolean, what: string) =>
    bounded(new Promise<void>((resolve) => {
      const f = () => { if (pred()) { waiters.delete(f); resolve(); } };
      waiters.add(f);
      f();
    }), 60_000, what);
  try {
    // The session is up once a first line comes back.
    c.stdin!.write('ready\r');
    await until(() => /ready\r?\n.*ready/s.test(out), 'the session answers');
    const rtts: number[] = [];
    for (let i = 0; i < samples; i++) {
      const ch = String.fromCharCode(0x61 + (i % 26));
      const mark = out.length;
      const t0 = performance.now();
      c.stdin!.write(ch);
      await until(() => out.indexOf(ch, mark) >= 0, `the echo of keystroke ${i}`);
      rtts.push(performance.now() - t0);
    }
    c.stdin!.write('\r\x04');
    return rtts;
  } finally {
    c.kill('SIGTERM');
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function tmux(args: string[]) {
  return world().procs.run('tmux', ['-S', world().tmuxSocket, ...args], { timeoutMs: 15_000 });
}

describe('serial tunnels end to end (QEMU guest with dropbear; UART and virtio-serial)', { timeout: 1_800_000 }, () => {
  before(async () => {
    const artifacts = buildTunnelGuest();
    const dir = mkdtempSync(join(tmpdir(), 'vspc-tunnel-qemu-'));
    const procs = new Procs();
    const key = join(dir, 'id_ed25519');
    const kg = await procs.run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vspc-tunnel-test', '-f', key], { timeoutMs: 30_000 });
    assert.equal(kg.code, 0, kg.stderr);
    const blob = readFileSync(`${key}.pub`, 'utf8').trim().split(/\s+/)[1];
    const guest = await startGuest({
      artifacts,
      dir,
      memoryMb: 384,
      serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off', 'unix:{dir}/ttyS1.sock,server=on,wait=off'],
      args: [
        '-device', 'virtio-serial',
        '-chardev', 'socket,id=vt,path={dir}/vport.sock,server=on,wait=off',
        '-device', 'virtserialport,chardev=vt,name=vspc.tunnel',
        '-chardev', 'socket,id=vr,path={dir}/vraw.sock,server=on,wait=off',
        '-device', 'virtserialport,chardev=vr,name=vspc.raw',
      ],
      append: `vspc.agent=/dev/ttyS1 vspc.allow=22 vspc.agent_opts=-v vspc.sshkey=${blob}`,
    });
    let con: SerialConsole | undefined;
    let relay: FaultRelay | undefined;
    try {
      con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
      await con.waitForShell(120_000, guest.spawnedAt);
      // A second agent on the virtio-serial port (the first runs on ttyS1 under the init script).
      const vdev = (await con.run('for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = vspc.tunnel ] && echo /dev/${p##*/}; done')).output.trim();
      assert.match(vdev, /^\/dev\/vport\d+p\d+$/);
      await con.run(`(/usr/local/sbin/vspc-agent --device ${vdev} --allow 22 </dev/null >/var/log/agent-virtio.log 2>&1 &)`);
      const dropbear = await con.run('cat /run/dropbear.pid && ls /usr/lib/sftp-server');
      assert.equal(dropbear.status, 0, `dropbear runs: ${dropbear.output}`);
      relay = await FaultRelay.start(join(dir, 'uart-relay.sock'), guest.path('ttyS1.sock'));
      const uart = `unix:${relay.path}`;
      const virtio = `unix:${guest.path('vport.sock')}`;
      const config = {
        tunnels: [
          { name: 'uart', source: parseSourceSpec(uart), sourceText: uart, forwards: [{ listen: { type: 'auto' as const }, to: 22 }] },
          { name: 'virtio', source: parseSourceSpec(virtio), sourceText: virtio, forwards: [{ listen: { type: 'auto' as const }, to: 22 }] },
        ],
      };
      const portRange = await reservePortRange(16);
      const dbPath = join(dir, 'vspc.db');
      const started = await startServer({ after: () => undefined }, { dbPath, portRange, config });
      w = {
        dir,
        guest,
        con,
        relay,
        ts: started.ts,
        dispose: () => started.ts.dispose(),
        dbPath,
        portRange,
        config,
        key,
        knownHosts: join(dir, 'known_hosts'),
        kernelRelease: artifacts.kernelRelease,
        procs,
        tmuxSocket: join(dir, 'tmux.sock'),
        tmuxPid: null,
      };
    } catch (err) {
      con?.close();
      await relay?.close();
      await guest.stop();
      await procs.stopAll();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  });

  after(async () => {
    const x = w;
    w = undefined;
    if (!x) return;
    if (x.tmuxPid !== null) killPid(x.tmuxPid);
    await x.procs.stopAll();
    await x.dispose().catch(() => undefined);
    x.con.close();
    await x.relay.close();
    await x.guest.stop();
    rmSync(x.dir, { recursive: true, force: true });
    assert.equal(x.procs.live.size, 0, 'every ssh, scp and tmux stopped');
    assert.equal(x.guest.hasExited(), true, 'QEMU stopped');
  });

  test('ssh uname -r answers over the UART and over virtio-serial', { timeout: 300_000 }, async (t) => {
    for (const name of ['uart', 'virtio']) {
      const port = await waitUp(name, 120_000);
      const r = await ssh(port, 'uname -r');
      assert.equal(r.code, 0, `${name}: ${r.stderr}`);
      assert.equal(r.stdout.toString().trim(), world().kernelRelease);
      t.diagnostic(`${name}: ssh uname -r in ${r.ms.toFixed(0)} ms (connection, key exchange, command)`);
    }
    // The README's other recipe: no forward port, the tunnel's name as the host name.
    const x = world();
    const proxy = `${process.execPath} ${VSPC_ADMIN_JS} --admin ${x.ts.adminAddress} tunnel %h 22`;
    const r = await x.procs.run('ssh', [...sshOpts(), '-o', `ProxyCommand=${proxy}`, 'root@virtio', 'uname -r'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, `ssh -o ProxyCommand="vspc-admin tunnel %h 22": ${r.stderr}`);
    assert.equal(r.stdout.toString().trim(), x.kernelRelease);
  });

  test('scp of 1 MiB both ways, checksums match (UART, virtio); the raw lines beside', { timeout: 900_000 }, async (t) => {
    const x = world();
    for (const name of ['uart', 'virtio']) {
      const r = await scpBothWays(await waitUp(name), MIB, `scp-${name}`);
      t.diagnostic(`${name}: scp 1 MiB up ${r.upMs.toFixed(0)} ms (${kib(MIB, r.upMs)}), down ${r.downMs.toFixed(0)} ms (${kib(MIB, r.downMs)}), ssh start-up included`);
    }
    // The raw UART: the tunnel's own port (ttyS1), its agent stopped and the line taken
    // from vspc for the measurement (ttyS2 would share its interrupt with the console).
    const stopped = await x.con.run('/etc/init.d/vspc-agent stop');
    assert.equal(stopped.status, 0, stopped.output);
    const taps: Array<(b: Buffer) => void> = [];
    x.relay.divert((b) => taps.forEach((f) => f(b)));
    let uartRaw: { toGuestMs: number; fromGuestMs: number };
    try {
      uartRaw = await rawLine({ write: (b) => void x.relay.write(b), onData: (f) => void taps.push(f), close: () => undefined }, '/dev/ttyS1', 256 * 1024);
    } finally {
      x.relay.divert(null);
      await x.con.run('/etc/init.d/vspc-agent start');
    }
    t.diagnostic(`uart raw line (ttyS1 without the tunnel): to the guest ${kib(256 * 1024, uartRaw.toGuestMs)}, from it ${kib(256 * 1024, uartRaw.fromGuestMs)}`);
    const vraw = (await x.con.run('for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = vspc.raw ] && echo /dev/${p##*/}; done')).output.trim();
    const virtioRaw = await rawLine(await socketPort(x.guest.path('vraw.sock')), vraw, 4 * MIB);
    t.diagnostic(`virtio raw line: to the guest ${kib(4 * MIB, virtioRaw.toGuestMs)}, from it ${kib(4 * MIB, virtioRaw.fromGuestMs)}`);
  });

  test('an interactive session in tmux keeps answering while an scp runs (UART); keystroke round trips', { timeout: 900_000 }, async (t) => {
    const x = world();
    const port = await waitUp('uart');
    const idle = await keystrokeRtts(port, 15);
    t.diagnostic(`uart: keystroke round trip idle: median ${median(idle).toFixed(0)} ms, max ${Math.max(...idle).toFixed(0)} ms`);
    const sshCmd = ['ssh', ...sshOpts(), '-tt', '-p', String(port), 'root@127.0.0.1'].map((a) => `'${a}'`).join(' ');
    const started = await tmux(['new-session', '-d', '-x', '200', '-y', '50', '-s', 'tun', sshCmd]);
    assert.equal(started.code, 0, started.stderr);
    const pid = await tmux(['display-message', '-p', '-t', 'tun', '#{pid}']);
    x.tmuxPid = Number(pid.stdout.toString().trim());
    const pane = async () => (await tmux(['capture-pane', '-p', '-t', 'tun'])).stdout.toString();
    let seen = '';
    await waitUntil(async () => (seen = await pane()).includes('guest#'), 120_000, 'the shell prompt in tmux').catch((err: Error) => {
      throw new Error(`${err.message}; the pane shows:\n${seen}`);
    });
    const tick = async (n: number): Promise<number> => {
      const t0 = performance.now();
      await tmux(['send-keys', '-t', 'tun', `echo tick-$((${n}*1))`, 'Enter']);
      await waitUntil(async () => new RegExp(`^tick-${n}$`, 'm').test(await pane()), 60_000, `tick ${n} answered`);
      return performance.now() - t0;
    };
    await tick(1);
    // An scp of 1 MiB up, and the session answering meanwhile.
    const local = join(x.dir, 'bulk.up');
    const data = randomBytes(MIB);
    writeFileSync(local, data);
    let scpDone = false;
    const bulk = scp(port, local, 'root@127.0.0.1:/tmp/bulk.up').finally(() => (scpDone = true));
    await waitUntil(async () => ((await tunnel('uart')).link?.bytesToGuest ?? 0) > 128 * 1024 || scpDone, 120_000, 'the scp under way');
    const during: number[] = [];
    for (let n = 2; !scpDone && n < 40; n++) during.push(await tick(n));
    const rtts = scpDone ? [] : await keystrokeRtts(port, 10).catch(() => []);
    const r = await bulk;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(during.length >= 2, `the session answered ${during.length} times during the scp (${r.ms.toFixed(0)} ms)`);
    t.diagnostic(`uart: during a 1 MiB scp (${kib(MIB, r.ms)}): tmux commands answered in median ${median(during).toFixed(0)} ms (${during.length} of them, max ${Math.max(...during).toFixed(0)} ms)` +
      (rtts.length ? `; keystroke round trip median ${median(rtts).toFixed(0)} ms, max ${Math.max(...rtts).toFixed(0)} ms` : ''));
    const sum = await ssh(port, 'sha256sum /tmp/bulk.up; rm -f /tmp/bulk.up');
    assert.equal(sum.stdout.toString().split(/\s+/)[0], sha(data));
    await tmux(['send-keys', '-t', 'tun', 'exit', 'Enter']);
    await tmux(['kill-server']);
    killPid(x.tmuxPid);
    x.tmuxPid = null;
  });

  test('the agent killed mid-transfer: the scp fails, new connections work (its init script restarted it)', { timeout: 600_000 }, async () => {
    const x = world();
    const port = await waitUp('uart');
    const local = join(x.dir, 'killed.up');
    writeFileSync(local, randomBytes(4 * MIB));
    const before = (await tunnel('uart')).link!;
    const transfer = scp(port, local, 'root@127.0.0.1:/tmp/killed.up');
    let finished = false;
    void transfer.finally(() => (finished = true));
    await waitUntil(async () => finished || ((await tunnel('uart')).link?.bytesToGuest ?? 0) > before.bytesToGuest + 256 * 1024, 120_000, 'the transfer under way');
    assert.equal(finished, false, 'still running when the agent dies');
    const killed = await x.con.run('kill -9 "$(cat /run/vspc-agent.agent.pid)"');
    assert.equal(killed.status, 0, killed.output);
    const r = await transfer;
    assert.notEqual(r.code, 0, 'the scp whose stream died ends with an error');
    await waitUntil(async () => ((await tunnel('uart')).link?.peerRestarts ?? 0) > before.peerRestarts, 60_000, 'vspc saw the new agent');
    const again = await ssh(await waitUp('uart'), 'uname -r; rm -f /tmp/killed.up');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout.toString().trim(), x.kernelRelease);
  });

  test('vspc restarted: the agents resynchronise by themselves, the forwards keep their ports', { timeout: 300_000 }, async () => {
    const x = world();
    const ports = { uart: await waitUp('uart'), virtio: await waitUp('virtio') };
    const bootIds = { uart: (await tunnel('uart')).link!.agentBootId, virtio: (await tunnel('virtio')).link!.agentBootId };
    await x.dispose();
    const next = await startServer({ after: () => undefined }, { dbPath: x.dbPath, portRange: x.portRange, config: x.config });
    x.ts = next.ts;
    x.dispose = () => next.ts.dispose();
    for (const name of ['uart', 'virtio'] as const) {
      assert.equal(await waitUp(name, 120_000), ports[name], `${name}: the same forward port`);
      const v = await tunnel(name);
      assert.notEqual(v.link!.agentBootId, bootIds[name], `${name}: the agent drew a new boot id (rule R) after seeing a new host`);
      const r = await ssh(ports[name], 'uname -r');
      assert.equal(r.code, 0, r.stderr);
    }
  });

  test('the guest writes junk onto the tunnel port during a transfer: no corruption', { timeout: 600_000 }, async (t) => {
    const x = world();
    const port = await waitUp('uart');
    const before = (await tunnel('uart')).link!.discardedBytes;
    // Kernel-message-like lines and raw bytes written to ttyS1 by another process (the agent holds it in raw mode).
    x.con.sendLine('(i=0; while [ $i -lt 400 ]; do echo "[ 12.$i] random: crng init done; junk $i" >/dev/ttyS1; head -c 40 /dev/urandom >/dev/ttyS1; usleep 20000; i=$((i+1)); done; echo JUNK-DONE) &');
    const r = await scpBothWays(port, 512 * 1024, 'junk');
    const after = (await tunnel('uart')).link!;
    t.diagnostic(`uart with junk: 512 KiB up ${kib(512 * 1024, r.upMs)}, down ${kib(512 * 1024, r.downMs)}; ${after.discardedBytes - before} junk bytes discarded, ${after.badFrames} damaged frames`);
    assert.ok(after.discardedBytes > before, 'vspc discarded the junk');
    await x.con.waitFor('JUNK-DONE', 120_000);
  });

  test('a fault-injecting relay (drops, bit flips, duplicated bytes at 1 in 1,000 each way): checksums match', { timeout: 900_000 }, async (t) => {
    const x = world();
    const port = await waitUp('uart');
    const before = (await tunnel('uart')).link!;
    x.relay.setRates({ drop: 1e-3, flip: 1e-3, dup: 1e-3 });
    try {
      const r = await scpBothWays(port, 256 * 1024, 'faults');
      const after = (await tunnel('uart')).link!;
      t.diagnostic(
        `uart through 1/1000 faults: 256 KiB up ${kib(256 * 1024, r.upMs)}, down ${kib(256 * 1024, r.downMs)}; ` +
          `${x.relay.h2g.count}+${x.relay.g2h.count} byte faults, ${after.retransmits - before.retransmits} retransmissions, ${after.badFrames - before.badFrames} damaged frames`,
      );
      assert.ok(x.relay.h2g.count > 20 && x.relay.g2h.count > 20, 'faults were injected both ways');
      assert.ok(after.retransmits > before.retransmits);
    } finally {
      x.relay.setRates({});
    }
  });
});
