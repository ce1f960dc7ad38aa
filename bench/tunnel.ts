/**
 * The benchmark's `tunnel` phase (issue 16): TCP over a serial line against a real QEMU
 * guest, every tunnel figure beside the raw line measured in the same run.
 *
 * The guest is the `tunnel-ssh` test variant (test/support/tunnel-guest.ts: the static
 * C agent, busybox test services on 127.0.0.1 — 7 echo, 9 sha256 sink — and two the
 * phase starts: a source of N bytes on 5019 and a counting sink (`wc -c`) on 5020). Two tunnels in a vspc of the phase's own
 * (a child process, so that its RSS is the tunnel's alone): `uart` over the emulated
 * 16550 (ttyS1 on QEMU's unix socket, read by vspc itself; for the raw measurement a
 * reload takes the tunnel away and the phase reads the very same port), `virtio` over a
 * virtio-serial port. Per line:
 *
 *   raw        `size` bytes each way over the line without the tunnel (for the UART
 *              the tunnel's own ttyS1, its agent stopped; for virtio-serial a spare
 *              port of the same kind), driven by head/cat in the guest, timed on the host
 *   goodput    the same size through the tunnel: into the counting sink (the count
 *              checked) and out of the source (checked against the guest's digest).
 *              The raw reader discards what it reads (head >/dev/null), so the
 *              tunnel's must too: a sink hashing under TCG emulation costs the guest
 *              CPU the emulated UART's receive path needs (seen: 55–70 % of the raw
 *              line into sha256sum, 71–94 % into wc -c, same runs' raw line). The
 *              uploads under keystrokes go to the sha256 sink: every run still checks
 *              the digests of `repeats` uploads.
 *   keystroke  1 byte to the echo service and back, one at a time: idle, during an
 *              upload of `size` bytes and during a download of `size` bytes
 *
 * Raw and goodput are measured `repeats` times, alternately (raw then tunnel, then
 * tunnel then raw, ...), since a TCG guest on a shared machine moves the line's speed
 * by 2× between minutes: the figures are medians with their range, and the ratio is
 * also given per round (a raw run and the tunnel run next to it). The keystroke
 * samples under bulk transfers are pooled over `repeats` uploads and downloads.
 *
 * And memory per stream: vspc's RSS (after a GC) with N idle echo streams open minus
 * before, over N. Needs the test guest (`npm run pretest` builds it); without it the
 * phase is reported as not run, with the command that builds it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TunnelView } from '../src/admin/views.js';
import { guestArtifacts, SerialConsole, startGuest, type Guest } from '../test/support/qemu.js';
import { bounded } from '../test/agent/harness.js';
import { buildTunnelGuest, DROPBEAR, rawLine, SFTP_SERVER, socketPort, TUNNEL_VARIANT, type RawPort } from '../test/support/tunnel-guest.js';
import { distribution, round, roundDistribution, sleep, type Distribution } from './common.js';
import { removeTempDir, trackTempDir } from './ipc.js';
import { adminGet, adminPost, ServerProcess } from './server-process.js';

export interface TunnelOptions {
  /** Bytes per transfer over the emulated UART (raw, goodput, the bulk under keystrokes). */
  uartBytes: number;
  /** Bytes per transfer over virtio-serial. */
  virtioBytes: number;
  /** Keystroke round trips per run (idle; at most this many during each bulk transfer). */
  rttSamples: number;
  /** Idle streams opened for the memory figure. */
  idleStreams: number;
  /** Raw/goodput rounds per line (alternating), and bulk transfers under keystrokes each way. */
  repeats: number;
  /** The lines measured, in this order. */
  lines: TunnelLine[];
}

/** The guest's two tunnel lines: the emulated 16550 UART (ttyS1) and a virtio-serial port. */
export const TUNNEL_LINES = ['uart', 'virtio'] as const;
export type TunnelLine = (typeof TUNNEL_LINES)[number];

/**
 * virtio-serial moves 300–500 MiB/s from the guest under TCG (a raw `cat`): a transfer of
 * a few MiB is over in milliseconds, and its figure is the start (first round trips,
 * buffers filling), not the line's rate. 32 MiB lasts 0.1 s raw, 0.5 s through the tunnel.
 */
export const DEFAULT_TUNNEL_OPTIONS: TunnelOptions = { uartBytes: 256 * 1024, virtioBytes: 32 << 20, rttSamples: 30, idleStreams: 64, repeats: 3, lines: [...TUNNEL_LINES] };

/** Repeated measurements: the median, the range and every sample (in order). */
export interface Spread {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

function spread(values: number[], digits = 1): Spread {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length === 0 ? 0 : v.length % 2 === 1 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  return { median: round(mid, digits), min: round(v[0] ?? 0, digits), max: round(v[v.length - 1] ?? 0, digits), samples: values.map((x) => round(x, digits)) };
}

export interface TunnelLineFigures {
  line: 'uart' | 'virtio';
  bytes: number;
  /** Rounds of raw and tunnel measurements. */
  repeats: number;
  /** KiB/s over the line without the tunnel: medians of the rounds. */
  raw: { toGuestKiBps: number; fromGuestKiBps: number };
  /** KiB/s of stream data through the tunnel (the digest of every transfer checked): medians. */
  tunnel: { toGuestKiBps: number; fromGuestKiBps: number };
  /** Median tunnel goodput / median raw line, percent, in the same run. */
  goodputPct: { toGuest: number; fromGuest: number };
  /** Every round: raw and tunnel KiB/s, and tunnel / raw of the same round, percent. */
  rounds: {
    raw: { toGuest: Spread; fromGuest: Spread };
    tunnel: { toGuest: Spread; fromGuest: Spread };
    pct: { toGuest: Spread; fromGuest: Spread };
  };
  /** Keystroke round trips through the tunnel, ms. */
  rtt: { idle: Distribution; duringUpload: Distribution; duringDownload: Distribution };
  /** The bulk transfers under the keystrokes, KiB/s. */
  bulkUnderKeystrokesKiBps: { upload: number; download: number };
  /**
   * Not a target: the raw line from the guest with the tunnel's in-guest hop and
   * nothing else — the download source (busybox `nc -e cat`) read through loopback TCP
   * by `nc`, written to the line (virtio: the spare port; UART: ttyS1, its agent
   * stopped, as for the raw line) — KiB/s per round, and its median / the raw line's
   * median, percent. Busybox `nc` copies in small blocks: this measures `nc` as much as
   * TCP (guestTcpAlone is TCP itself).
   */
  rawViaGuestTcp?: { fromGuest: Spread; pctOfRaw: number };
  /**
   * Not a target (virtio-serial only): the guest's loopback TCP alone, no line at all —
   * the download source read by `dd`, 64 KiB at a time, into /dev/null, timed in the
   * guest — KiB/s per round, and its median / the raw line's median, percent. Every
   * tunnel byte from the guest crosses this path (a service's socket) before the
   * tunnel adds its own work.
   */
  guestTcpAlone?: { fromGuest: Spread; pctOfRaw: number };
  /** The tunnel's own view at the end: RTT, retransmissions, damaged frames. */
  link: { rttMs: number | null; retransmits: number; badFrames: number };
}

export interface TunnelSection {
  workload: string;
  guest: { variant: string; kernelRelease: string };
  lines: TunnelLineFigures[];
  memory: { streams: number; rssKiBPerStream: number | null; heapKiBPerStream: number | null; rssBeforeMiB: number | null; rssAfterMiB: number | null };
  errors: string[];
}

/** Why the phase cannot run here (and how to make it able to), or null. */
export function tunnelGuestProblem(): string | null {
  const build = 'build it with `npm run pretest` (= bash test/support/guest/ensure-deps.sh && bash test/support/guest/build-guest.sh && bash packaging/build-agent.sh; ensure-deps.sh as root), then rerun';
  try {
    guestArtifacts('base');
  } catch (err) {
    return `the QEMU test guest is not built (${(err as Error).message}); ${build}`;
  }
  for (const f of [DROPBEAR, SFTP_SERVER]) if (!existsSync(f)) return `${f} is missing (the tunnel guest ships it); ${build}`;
  const qemu = process.env.PATH?.split(':').some((d) => existsSync(join(d, 'qemu-system-x86_64')));
  if (!qemu) return `qemu-system-x86_64 is not installed; ${build}`;
  return null;
}

const KiB = 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const kibps = (bytes: number, ms: number): number => round(bytes / KiB / (ms / 1000), 1);

/**
 * `use` with something taken by `take` and given back by `giveBack` on every path, for a
 * measurement that borrows a line from vspc (onUartLine: the UART's agent stopped, its
 * tunnel removed by a reload, QEMU's socket connected).
 *
 * `take` may fail half-way: `giveBack` then gets `undefined` and must undo whatever part
 * was done (it is called for every failure of `take` or `use`). After a failure the
 * first error is the one thrown; a failure to give back is only passed to
 * `onGiveBackError`, so that the cause is not hidden behind one of its consequences.
 * On success a failure to give back is the error. `failed` tells `giveBack` whether an
 * error is on its way (it may then skip waiting for the line to recover).
 */
export async function onLoan<R, T>(
  take: () => Promise<R>,
  use: (r: R) => Promise<T>,
  giveBack: (r: R | undefined, failed: boolean) => Promise<void>,
  onGiveBackError: (err: Error) => void,
): Promise<T> {
  let r: R | undefined;
  let out: T;
  try {
    r = await take();
    out = await use(r);
  } catch (err) {
    await giveBack(r, true).catch((e: unknown) => onGiveBackError(e instanceof Error ? e : new Error(String(e))));
    throw err;
  }
  await giveBack(r, false);
  return out;
}

/** Bounded wait for an event-driven condition. */
async function until(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string, stepMs = 20): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await pred())) {
    if (performance.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

function connect(port: number, timeoutMs = 30_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect 127.0.0.1:${port}: timeout`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/**
 * host → guest: `data` into a sink, half-close, its answer back: the sha256 sink's digest
 * or the counting sink's byte count (`check`). Resolves with ms (first write → answer).
 */
async function upload(port: number, data: Buffer, timeoutMs: number, check: 'sha256' | 'count' = 'sha256'): Promise<number> {
  const s = await connect(port);
  let out = '';
  const t0 = performance.now();
  try {
    s.setEncoding('latin1');
    s.on('data', (d: string) => (out += d));
    const done = ended(s, timeoutMs, () => `upload of ${data.length} bytes: no digest after ${timeoutMs} ms`);
    s.end(data);
    await done;
  } finally {
    s.destroy();
  }
  const ms = performance.now() - t0;
  if (check === 'count') {
    if (out.trim() !== String(data.length)) throw new Error(`upload: the guest counted ${JSON.stringify(out.slice(0, 64))} bytes, sent ${data.length}`);
    return ms;
  }
  if (!out.startsWith(sha(data))) throw new Error(`upload: the guest's digest ${JSON.stringify(out.slice(0, 64))} is not the data's ${sha(data)}`);
  return ms;
}

/** Resolves at the socket's end; rejects on its error, or after `timeoutMs` with `what()`. */
function ended(s: net.Socket, timeoutMs: number, what: () => string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(what())), timeoutMs);
    s.once('end', () => {
      clearTimeout(timer);
      resolve();
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** guest → host: everything the source sends, until its end. Resolves with ms (first byte → end) and the digest. */
async function download(port: number, onBytes: (n: number) => void, timeoutMs: number): Promise<{ ms: number; bytes: number; digest: string }> {
  const s = await connect(port);
  const h = createHash('sha256');
  let bytes = 0;
  let t0 = 0;
  try {
    s.on('data', (d: Buffer) => {
      if (bytes === 0) t0 = performance.now();
      bytes += d.length;
      h.update(d);
      onBytes(bytes);
    });
    await ended(s, timeoutMs, () => `download: not finished after ${timeoutMs} ms (${bytes} bytes)`);
  } finally {
    s.destroy();
  }
  return { ms: performance.now() - t0, bytes, digest: h.digest('hex') };
}

/** An open connection to the echo service: one byte out, the same byte back, timed. */
class Echo {
  private got = '';
  private waiter: (() => void) | null = null;
  private constructor(readonly sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.got += d;
      this.waiter?.();
    });
    sock.on('error', () => undefined);
  }
  static async open(port: number): Promise<Echo> {
    return new Echo(await connect(port));
  }
  async rtt(ch: string, timeoutMs = 30_000): Promise<number> {
    const mark = this.got.length;
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo of ${JSON.stringify(ch)}: none after ${timeoutMs} ms`)), timeoutMs);
      this.waiter = () => {
        if (this.got.indexOf(ch, mark) >= 0) {
          clearTimeout(timer);
          this.waiter = null;
          resolve();
        }
      };
      this.sock.write(ch);
    });
    return performance.now() - t0;
  }
  close(): void {
    this.sock.destroy();
  }
}

/** Keystrokes (a–z) on `echo`, `gapMs` apart, until `n` samples or `stop()`. */
async function keystrokes(echo: Echo, n: number, stop: () => boolean = () => false, gapMs = 10): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n && !stop(); i++) {
    out.push(await echo.rtt(String.fromCharCode(0x61 + (i % 26))));
    await sleep(gapMs);
  }
  return out;
}

/** Runs the phase. Throws on a failure; the caller reports it. */
export async function runTunnelPhase(o: TunnelOptions, log: (l: string) => void, timeoutMs: number, nodeArgs: string[] = []): Promise<TunnelSection> {
  const artifacts = buildTunnelGuest();
  const dir = mkdtempSync(join(tmpdir(), 'vspc-bench-tunnel-'));
  trackTempDir(dir);
  const errors: string[] = [];
  // Kept in the JSON report's section, and printed: the tables have no row for them.
  const problem = (e: string) => {
    errors.push(e);
    log(`tunnel: WARNING ${e}`);
  };
  let guest: Guest | undefined;
  let con: SerialConsole | undefined;
  let server: ServerProcess | undefined;
  try {
    const t0 = performance.now();
    guest = await startGuest({
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
      append: 'vspc.agent=/dev/ttyS1 vspc.allow=7,9,5019,5020 vspc.services=1',
    });
    con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
    await con.waitForShell(120_000, guest.spawnedAt);
    log(`tunnel: guest ${TUNNEL_VARIANT} (${artifacts.kernelRelease}) booted in ${Math.round(performance.now() - t0)} ms`);
    const portOf = async (name: string): Promise<string> =>
      (await con!.run(`for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name)" = ${name} ] && echo /dev/\${p##*/}; done`)).output.trim();
    const vdev = await portOf('vspc.tunnel');
    const vraw = await portOf('vspc.raw');
    if (!/^\/dev\/vport\d+p\d+$/.test(vdev) || !/^\/dev\/vport\d+p\d+$/.test(vraw)) throw new Error(`virtio ports not found in the guest: ${vdev} / ${vraw}`);
    // --max-streams: the memory figure opens `idleStreams` at once (the agent's default is 64).
    await con.run(`(/usr/local/sbin/vspc-agent --device ${vdev} --allow 7,9,5019,5020 --max-streams ${Math.max(64, o.idleStreams + 8)} </dev/null >/var/log/agent-virtio.log 2>&1 & echo $! >/tmp/agent-virtio.pid)`);
    await con.run('(nc -ll -p 5020 -e wc -c </dev/null >/dev/null 2>&1 &)');

    // vspc with the two tunnels, on ports of its own.
    const { reservePortRange } = await import('../test/support/ports.js');
    const block = await reservePortRange(16, { from: 20000, to: 32767 });
    const range = { start: block.start, end: block.start + 13 };
    const cfg = join(dir, 'vspc.json');
    const forwards = [7, 9, 5019, 5020];
    // vspc reads QEMU's sockets itself, as in production: QEMU writes a UART's bytes one
    // per sendmsg() and stops the guest's transmitter when its socket buffer (a few
    // hundred such bytes) is full, so whoever reads the socket sets the pace, and a
    // relay process in between would measure itself. writeConfig(false) takes the UART
    // from vspc for the raw line (onUartLine).
    const writeConfig = (withUart: boolean) =>
      writeFileSync(
        cfg,
        JSON.stringify({
          tunnels: [
            ...(withUart ? [{ name: 'uart', source: `unix:${guest!.path('ttyS1.sock')}`, forwards }] : []),
            { name: 'virtio', source: `unix:${guest!.path('vport.sock')}`, forwards },
          ],
        }),
      );
    writeConfig(true);
    server = ServerProcess.spawn({ dbPath: join(dir, 'vspc.db'), proxyPort: block.start + 14, adminPort: block.start + 15, portRange: range, extraArgs: ['--config', cfg], nodeArgs });
    await server.waitReady(60_000);
    const srv = server;
    const guest0 = guest;
    const view = async (name: string): Promise<TunnelView> => {
      const v = (await adminGet<TunnelView[]>(srv.admin, '/api/v1/tunnels')).find((x) => x.name === name);
      if (!v) throw new Error(`vspc has no tunnel ${name}`);
      return v;
    };
    /** The tunnel up (with an agent other than `notAgent`, after a restart); its forward ports by guest port. */
    const waitUp = async (name: string, notAgent: string | null = null): Promise<Record<number, number>> => {
      let ports: Record<number, number> = {};
      await until(async () => {
        const v = await view(name);
        if (v.link?.state !== 'up' || v.link.agentBootId === notAgent || v.forwards.some((f) => !f.address)) return false;
        ports = Object.fromEntries(v.forwards.map((f) => [f.to, Number(f.address!.split(':').pop())]));
        return true;
      }, 120_000, `tunnel ${name} up`, 100);
      return ports;
    };

    const lines: TunnelLineFigures[] = [];
    for (const line of o.lines) {
      const size = line === 'uart' ? o.uartBytes : o.virtioBytes;
      const bound = Math.max(60_000, timeoutMs / 4);
      let ports = await waitUp(line);

      /** `size` bytes each way over the line without the tunnel. */
      const measureRaw = async (): Promise<{ toGuestMs: number; fromGuestMs: number }> => {
        if (line === 'virtio') return rawLine(con!, await socketPort(guest!.path('vraw.sock')), vraw, size, bound);
        return onUartLine((port) => rawLine(con!, port, '/dev/ttyS1', size, bound));
      };

      /**
       * UART: `f` with ttyS1 to itself: its agent stopped, vspc's UART tunnel removed by a
       * reload (so vspc lets go of QEMU's socket) and the socket connected here; then the
       * tunnel back (another reload) and up with the restarted agent.
       */
      const onUartLine = async <T>(f: (port: RawPort) => Promise<T>): Promise<T> => {
        const agent = (await view(line)).link!.agentBootId;
        return onLoan(
          async () => {
            const stopped = await con!.run('/etc/init.d/vspc-agent stop');
            if (stopped.status !== 0) throw new Error(`stopping the UART agent: ${stopped.output}`);
            writeConfig(false);
            await adminPost(srv.admin, '/api/v1/reload');
            await until(async () => (await adminGet<TunnelView[]>(srv.admin, '/api/v1/tunnels')).every((x) => x.name !== 'uart'), 30_000, 'the UART tunnel removed', 50);
            // QEMU accepts one client at a time: this connection is served once vspc's is gone.
            return socketPort(guest!.path('ttyS1.sock'));
          },
          f,
          // Also after a failure part-way (the config, the reload and the agent restored
          // whatever was done), but then without waiting up to 2 minutes for the link:
          // the phase ends on the error, which is the one reported.
          async (port, failed) => {
            port?.close();
            writeConfig(true);
            // The agent is restarted even when the reload fails; then the reload's error.
            const reloaded = await adminPost(srv.admin, '/api/v1/reload').then(
              () => null,
              (err: Error) => new Error(`reloading vspc with the UART tunnel back: ${err.message}`),
            );
            const started = await con!.run('VSPC_AGENT_DEVICE=/dev/ttyS1 VSPC_AGENT_ALLOW=7,9,5019,5020 /etc/init.d/vspc-agent start');
            if (reloaded) throw reloaded;
            if (started.status !== 0) throw new Error(`restarting the UART agent: ${started.output}`);
            if (!failed) ports = await waitUp(line, agent);
          },
          (err) => log(`tunnel uart: giving the line back to vspc after a failure: ${err.message}`),
        );
      };

      // The source of downloads: one file, served to every connection on 5019.
      const made = await con.run(`head -c ${size} /dev/urandom >/tmp/bulk.bin && sha256sum /tmp/bulk.bin`, bound);
      const guestDigest = made.output.trim().split(/\s+/)[0];
      await con.run('(nc -ll -p 5019 -e cat /tmp/bulk.bin </dev/null >/dev/null 2>&1 & echo $! >/tmp/source.pid)');
      await until(async () => (await con!.run('netstat -ltn | grep -c ":5019 "')).output.trim() !== '0', 10_000, 'the source listens', 100);

      /** The same bytes through the tunnel, each way: into the counting sink (count checked), from the source (digest checked). */
      const measureTunnel = async (): Promise<{ toGuestMs: number; fromGuestMs: number }> => {
        const data = randomBytes(size);
        const c0 = await cpuSnap();
        const toGuestMs = await upload(ports[5020], data, bound, 'count').catch((err: Error) => {
          throw new Error(`${line}: upload through the tunnel: ${err.message}`);
        });
        const c1 = await cpuSnap();
        const down = await download(ports[5019], () => undefined, bound).catch((err: Error) => {
          throw new Error(`${line}: download through the tunnel: ${err.message}`);
        });
        const c2 = await cpuSnap();
        if (c0 && c1 && c2) log(`tunnel ${line} cpu: upload ${cpuDiff(c0, c1, toGuestMs)}; download ${cpuDiff(c1, c2, down.ms)}`);
        if (down.bytes !== size || down.digest !== guestDigest) throw new Error(`download: ${down.bytes} bytes, digest ${down.digest}, the guest has ${size} with ${guestDigest}`);
        return { toGuestMs, fromGuestMs: down.ms };
      };

      // VSPC_BENCH_TUNNEL_CPU=1: CPU used per transfer (host: vspc, QEMU; guest: /proc/stat, agents).
      type Snap = { vspc: number; qemu: number; guest: number[]; agents: number };
      const cpuSnap = async (): Promise<Snap | null> => {
        if (!process.env.VSPC_BENCH_TUNNEL_CPU) return null;
        const ticks = (pid: number | null): number => {
          if (pid === null) return 0;
          const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
          return Number(f[11]) + Number(f[12]);
        };
        const g = (await con!.run('head -1 /proc/stat; for p in $(pidof vspc-agent); do cut -d" " -f14,15 /proc/$p/stat; done')).output.trim().split('\n');
        const guest = g[0].trim().split(/\s+/).slice(1).map(Number);
        const agents = g.slice(1).reduce((a, l) => a + l.split(' ').reduce((x, y) => x + Number(y), 0), 0);
        return { vspc: ticks(srv.pid), qemu: ticks(guest0.pid), guest, agents };
      };
      const cpuDiff = (a: Snap, b: Snap, ms: number): string => {
        const pct = (t: number) => `${Math.round((t * 10 * 100) / ms)}%`;
        const gd = b.guest.map((x, i) => x - a.guest[i]);
        const names = ['usr', 'nice', 'sys', 'idle', 'iow', 'irq', 'sirq'];
        return `host vspc ${pct(b.vspc - a.vspc)} qemu ${pct(b.qemu - a.qemu)}; guest ${names.map((n, i) => `${n} ${gd[i]}`).join(' ')} ticks, agents ${b.agents - a.agents} (${Math.round(ms)} ms)`;
      };
      /**
       * The raw line from the guest through an in-guest loopback TCP hop: the download
       * source → nc → the line (virtio: the spare port; UART: ttyS1 itself, its agent
       * stopped, as for the raw line), no tunnel. Busybox nc's small blocks are most of its cost.
       */
      const measureRawViaTcp = async (): Promise<number> => {
        /** `guestCmd` sends the source's bytes into the line; ms from the first byte on `port` to size − 1 KiB. */
        const viaNc = async (port: RawPort, guestCmd: string): Promise<number> => {
          let got = 0;
          let t1 = 0;
          const done = new Promise<void>((resolve) =>
            port.onData((b) => {
              if (got === 0) t1 = performance.now();
              got += b.length;
              if (got >= size - 1024) resolve();
            }),
          );
          con!.sendLine(`(${guestCmd}) &`);
          await bounded(done, bound, `${size} bytes from the guest through nc (got ${got})`);
          const ms = performance.now() - t1;
          // nc lets go of the line before anyone else opens it (a virtio-serial port takes
          // one opener; the UART's agent takes ttyS1 back).
          await con!.run('wait', bound);
          return ms;
        };
        if (line === 'uart') return onUartLine((port) => viaNc(port, 'exec 3<>/dev/ttyS1; stty raw -echo <&3; nc 127.0.0.1 5019 </dev/null >&3'));
        const port = await socketPort(guest!.path('vraw.sock'));
        try {
          return await viaNc(port, `exec 3<>${vraw}; nc 127.0.0.1 5019 </dev/null >&3`);
        } finally {
          port.close();
        }
      };

      /**
       * The guest's loopback TCP alone: the source read by `dd` (which counts; nc -e gives it the socket) into
       * /dev/null; ms, timed in the guest (adjtimex: microseconds; busybox date has no %N),
       * minus what taking a timestamp itself costs (two back to back) — unless that sample
       * is over half the transfer's time: on a loaded host one slow timestamp (the guest
       * descheduled) made a small transfer's time negative, so it is then not subtracted.
       */
      const measureGuestTcp = async (): Promise<number> => {
        const r = await con!.run(
          'now() { adjtimex | sed -n "s/.*tv_sec: *//p; s/.*tv_usec: *//p" | { read s; read u; echo $((s * 1000000 + u)); }; }; ' +
            'a=$(now); b=$(now); nc 127.0.0.1 5019 -e dd of=/dev/null bs=65536 iflag=fullblock </dev/null 2>/tmp/tcp.dd; c=$(now); ' +
            'echo "$((c - b)) $((b - a)) $(head -n1 /tmp/tcp.dd)"',
          bound,
        );
        const m = /^(\d+) (\d+) (\d+)\+(\d+) records in$/m.exec(r.output);
        const records = Math.floor(size / 65536) + (size % 65536 ? 1 : 0);
        if (r.status !== 0 || !m || Number(m[3]) + Number(m[4]) !== records || !(Number(m[1]) > 0)) {
          throw new Error(`the guest's loopback TCP alone: ${JSON.stringify(r.output)} (status ${r.status}; expected ${records} records)`);
        }
        const [elapsed, stamp] = [Number(m[1]), Number(m[2])];
        return (stamp < elapsed / 2 ? elapsed - stamp : elapsed) / 1000;
      };

      // Raw and tunnel alternately, the order swapped every round.
      const hops: number[] = [];
      const tcps: number[] = [];
      const raws: Array<{ toGuestMs: number; fromGuestMs: number }> = [];
      const tuns: Array<{ toGuestMs: number; fromGuestMs: number }> = [];
      for (let i = 0; i < o.repeats; i++) {
        if (i % 2 === 0) {
          raws.push(await measureRaw());
          tuns.push(await measureTunnel());
        } else {
          tuns.push(await measureTunnel());
          raws.push(await measureRaw());
        }
        hops.push(await measureRawViaTcp());
        // The UART is a thousand times slower than the guest's TCP: its transfers are too short to time TCP.
        if (line === 'virtio') tcps.push(await measureGuestTcp());
        log(
          `tunnel ${line} round ${i + 1}/${o.repeats}: raw line from the guest through an in-guest TCP hop ${kibps(size, hops[i])} KiB/s` +
            (tcps[i] ? `; the guest's loopback TCP alone ${kibps(size, tcps[i])} KiB/s` : ''),
        );
        log(
          `tunnel ${line} round ${i + 1}/${o.repeats}: raw line ${kibps(size, raws[i].toGuestMs)} / ${kibps(size, raws[i].fromGuestMs)} KiB/s, ` +
            `tunnel ${kibps(size, tuns[i].toGuestMs)} / ${kibps(size, tuns[i].fromGuestMs)} KiB/s (to / from the guest)`,
        );
      }
      const rounds = {
        raw: { toGuest: spread(raws.map((r) => kibps(size, r.toGuestMs))), fromGuest: spread(raws.map((r) => kibps(size, r.fromGuestMs))) },
        tunnel: { toGuest: spread(tuns.map((r) => kibps(size, r.toGuestMs))), fromGuest: spread(tuns.map((r) => kibps(size, r.fromGuestMs))) },
        pct: {
          toGuest: spread(raws.map((r, i) => (100 * r.toGuestMs) / tuns[i].toGuestMs)),
          fromGuest: spread(raws.map((r, i) => (100 * r.fromGuestMs) / tuns[i].fromGuestMs)),
        },
      };
      const raw = { toGuestKiBps: rounds.raw.toGuest.median, fromGuestKiBps: rounds.raw.fromGuest.median };
      const tunnel = { toGuestKiBps: rounds.tunnel.toGuest.median, fromGuestKiBps: rounds.tunnel.fromGuest.median };
      log(`tunnel ${line}: medians of ${o.repeats}: raw line ${raw.toGuestKiBps} / ${raw.fromGuestKiBps} KiB/s, goodput ${tunnel.toGuestKiBps} / ${tunnel.fromGuestKiBps} KiB/s (to / from the guest)`);

      // Keystrokes: idle, then during `repeats` uploads, then during `repeats` downloads.
      const echo = await Echo.open(ports[7]);
      let idle: number[];
      const duringUp: number[] = [];
      const duringDown: number[] = [];
      const bulkUp: number[] = [];
      const bulkDown: number[] = [];
      try {
        await echo.rtt('x'); // the stream is open
        idle = await keystrokes(echo, o.rttSamples);
        for (let i = 0; i < o.repeats; i++) {
          const v0 = (await view(line)).link!.bytesToGuest;
          let done = false;
          const t1 = performance.now();
          const up = upload(ports[9], randomBytes(size), bound).finally(() => (done = true));
          up.catch(() => undefined);
          await until(async () => done || (await view(line)).link!.bytesToGuest - v0 > size / 8, bound, 'the upload under way', 50);
          duringUp.push(...(await keystrokes(echo, o.rttSamples, () => done)));
          await up;
          bulkUp.push(kibps(size, performance.now() - t1));
        }
        for (let i = 0; i < o.repeats; i++) {
          let got = 0;
          let done = false;
          const t2 = performance.now();
          const dn = download(ports[5019], (n) => (got = n), bound).finally(() => (done = true));
          dn.catch(() => undefined);
          await until(() => done || got > size / 8, bound, 'the download under way');
          duringDown.push(...(await keystrokes(echo, o.rttSamples, () => done)));
          const d2 = await dn;
          if (d2.digest !== guestDigest) throw new Error('download under keystrokes: digest mismatch');
          bulkDown.push(kibps(size, performance.now() - t2));
        }
      } finally {
        echo.close();
      }
      await con.run('kill $(cat /tmp/source.pid); rm -f /tmp/bulk.bin /tmp/source.pid');
      // The agent's own counters (retransmissions, timeouts, damaged frames it received),
      // for the log: SIGUSR1 writes them as one line to its log.
      const [signal, logFile] = line === 'uart' ? ['/etc/init.d/vspc-agent stats >/dev/null', '/var/log/vspc-agent.log'] : ['kill -USR1 $(cat /tmp/agent-virtio.pid)', '/var/log/agent-virtio.log'];
      // Waits for the new line itself (bounded: 100 × 50 ms), not for a fixed time.
      const count = `grep -c 'stats:' ${logFile}`;
      const stats = await con.run(
        `n=$(${count}); ${signal} && i=0 && while [ "$(${count})" = "$n" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; grep 'stats:' ${logFile} | tail -n1`,
      );
      log(`tunnel ${line}: agent counters: ${stats.output.trim().replace(/^.*stats: /, '') || '(none)'}`);
      if (duringUp.length < 3) problem(`${line}: only ${duringUp.length} keystrokes during the uploads (make --tunnel-${line}-size larger)`);
      if (duringDown.length < 3) problem(`${line}: only ${duringDown.length} keystrokes during the downloads (make --tunnel-${line}-size larger)`);
      const lv = (await view(line)).link!;
      const fig: TunnelLineFigures = {
        line,
        bytes: size,
        repeats: o.repeats,
        raw,
        tunnel,
        goodputPct: { toGuest: round((100 * tunnel.toGuestKiBps) / raw.toGuestKiBps, 1), fromGuest: round((100 * tunnel.fromGuestKiBps) / raw.fromGuestKiBps, 1) },
        rounds,
        rtt: { idle: roundDistribution(distribution(idle), 1), duringUpload: roundDistribution(distribution(duringUp), 1), duringDownload: roundDistribution(distribution(duringDown), 1) },
        bulkUnderKeystrokesKiBps: { upload: spread(bulkUp).median, download: spread(bulkDown).median },
        link: { rttMs: lv.rttMs, retransmits: lv.retransmits, badFrames: lv.badFrames },
      };
      if (hops.length > 0) {
        const fromGuest = spread(hops.map((ms) => kibps(size, ms)));
        fig.rawViaGuestTcp = { fromGuest, pctOfRaw: round((100 * fromGuest.median) / raw.fromGuestKiBps, 1) };
      }
      if (tcps.length > 0) {
        const fromGuest = spread(tcps.map((ms) => kibps(size, ms)));
        fig.guestTcpAlone = { fromGuest, pctOfRaw: round((100 * fromGuest.median) / raw.fromGuestKiBps, 1) };
      }
      log(
        `tunnel ${line}: keystroke round trip p50 idle ${fig.rtt.idle.p50} ms, during uploads ${fig.rtt.duringUpload.p50} ms (p99 ${fig.rtt.duringUpload.p99}, ${fig.rtt.duringUpload.n} samples, bulk ${bulkUp.join(', ')} KiB/s), ` +
          `during downloads ${fig.rtt.duringDownload.p50} ms (p99 ${fig.rtt.duringDownload.p99}, ${fig.rtt.duringDownload.n} samples, bulk ${bulkDown.join(', ')} KiB/s)`,
      );
      lines.push(fig);
    }

    // Memory per stream: N idle echo streams on the virtio tunnel.
    const ports = await waitUp('virtio');
    const rss = async (): Promise<{ rss: number | null; heap: number | null }> => {
      const mem = await srv.memory(true);
      await sleep(200);
      return { rss: srv.sample()?.rssBytes ?? mem?.rss ?? null, heap: mem?.heapUsed ?? null };
    };
    const before = await rss();
    const idleStreams: Echo[] = [];
    try {
      for (let i = 0; i < o.idleStreams; i++) {
        const e = await Echo.open(ports[7]);
        idleStreams.push(e);
        await e.rtt('m');
      }
      const streams = (await view('virtio')).link!.streams;
      if (streams < o.idleStreams) problem(`memory: ${streams} streams open, wanted ${o.idleStreams}`);
      await sleep(500);
      const after = await rss();
      const per = (a: number | null, b: number | null) => (a === null || b === null ? null : round((b - a) / KiB / o.idleStreams, 1));
      const memory = {
        streams: o.idleStreams,
        rssKiBPerStream: per(before.rss, after.rss),
        heapKiBPerStream: per(before.heap, after.heap),
        rssBeforeMiB: before.rss === null ? null : round(before.rss / KiB / KiB, 1),
        rssAfterMiB: after.rss === null ? null : round(after.rss / KiB / KiB, 1),
      };
      log(`tunnel: ${o.idleStreams} idle streams: vspc RSS ${memory.rssBeforeMiB} → ${memory.rssAfterMiB} MiB = ${memory.rssKiBPerStream} KiB per stream (heap ${memory.heapKiBPerStream} KiB)`);
      return {
        workload:
          `QEMU guest (TCG, ${TUNNEL_VARIANT} test variant, kernel ${artifacts.kernelRelease}) with the static C agent; vspc (a child process of its own) with two tunnels: ` +
          `uart = emulated 16550 (ttyS1 on QEMU's unix socket, read by vspc itself), virtio = a virtio-serial port. Per line, ${o.uartBytes / KiB} KiB (UART) / ${o.virtioBytes / KiB} KiB (virtio) each way: ` +
          `raw = the same kind of port without the tunnel (UART: ttyS1 itself, its agent stopped; virtio: a spare port), head/cat in the guest, timed on the host — a floor of the line's capacity under emulation; ` +
          `goodput = the same bytes through the tunnel into a counting sink (wc -c: it discards, as the raw reader does; count checked) and from a file in the guest (busybox nc; digest checked), in the same run; ` +
          `raw and goodput ${o.repeats} times each, alternately (the order swapped every round): medians, ranges, and tunnel / raw per round; ` +
          `keystroke = 1 byte to an echo service (nc -e cat) and back through the tunnel, one at a time: ${o.rttSamples} idle, up to ${o.rttSamples} during each of ${o.repeats} uploads (into the sha256 sink, digests checked) and ${o.repeats} downloads of the same size (pooled); ` +
          `memory = vspc RSS after a GC with ${o.idleStreams} idle echo streams open, minus before, per stream`,
        guest: { variant: TUNNEL_VARIANT, kernelRelease: artifacts.kernelRelease },
        lines,
        memory,
        errors,
      };
    } finally {
      for (const e of idleStreams) e.close();
    }
  } finally {
    await server?.stop(15_000).catch(() => server?.kill());
    con?.close();
    await guest?.stop();
    removeTempDir(dir);
  }
}
