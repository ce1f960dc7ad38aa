/**
 * The benchmark's orchestrator: starts (or targets) a vspc, forks load-generator
 * workers, runs the five phases and returns a report. Every phase is bounded by
 * timeouts; every child process is killed at the end, on error and on SIGINT.
 *
 *   scale       ramp to N VM serial ports, each negotiated, registered and listed;
 *               time, RSS/heap/fds per VM port
 *   storm       restart vspc with N VMs in its database; all reconnect at once; time
 *               until every one is back on its sticky port
 *   latency     keystroke → VM echo → client, through vspc and over a direct loopback
 *               pair; idle, then while background VMs stream
 *   throughput  VM → client bytes/s with one and with several clients per VM
 *   vmotion     sustained vMotions/s with traffic both ways, every byte checked
 *   ssh         S sessions through the SSH front door across C echoing consoles: setup
 *               rate (alone and during a flood of failed logins), RSS per session,
 *               keystroke latency via SSH and via telnet on the same consoles, VM →
 *               SSH client throughput
 *   tunnel      TCP over a serial line (bench/tunnel.ts): a real QEMU guest, raw line vs
 *               tunnel goodput each way over the emulated UART and virtio-serial,
 *               keystroke round trips idle and during bulk transfers, memory per stream
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostPort } from '../src/config/config.js';
import type { PortView } from '../src/admin/views.js';
import { VERSION } from '../src/version.js';
import { benchIdentity, distribution, Group, round, roundDistribution, sleep, type Distribution } from './common.js';
import type { UnixRestartResult } from './worker-api.js';
import { buildCRelay, startRelay, type RelayKind } from './relays.js';
import { globFigures } from './glob-bench.js';
import { killAll, removeTempDir, trackTempDir, WorkerHandle } from './ipc.js';
import { canBind, reservePortRange } from '../test/support/ports.js';
import { cpuPercent, fdLimit, machineInfo, type MachineInfo, type ProcSample } from './proc.js';
import { DEFAULT_CLUSTER_OPTIONS, runClusterPhase, type ClusterSection } from './cluster.js';
import { DEFAULT_TUNNEL_OPTIONS, runTunnelPhase, tunnelGuestProblem, type TunnelOptions, type TunnelSection } from './tunnel.js';
import { ExternalTarget, ServerProcess, type AdminEndpoint, type LoopDelay, type ServerMemory, type Target } from './server-process.js';

/**
 * An ed25519 key pair from ssh2. Its generateKeyPairSync (1.17) drops a leading zero
 * byte of the public key (a 31-byte key: a few pairs in a thousand), which no parser
 * accepts (vspc refused to start on such an authorized_keys line): draw again then.
 */
function ed25519KeyPair(comment: string): { private: string; public: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment });
    if (!(ssh2.utils.parseKey(pair.public) instanceof Error)) return pair;
  }
}

export const PHASES = ['scale', 'storm', 'latency', 'throughput', 'vmotion', 'unix', 'glob', 'ssh', 'tunnel', 'cluster'] as const;
export type Phase = (typeof PHASES)[number];
/** Phases run when none are named: not `cluster` (a PostgreSQL server and three more vspc processes; `--phases cluster`). */
export const DEFAULT_PHASES: readonly Phase[] = PHASES.filter((p) => p !== 'cluster');

export interface BenchOptions {
  /** N: VM serial ports for the scale and reconnect-storm phases. */
  vms: number;
  phases: Phase[];
  /** An existing deployment; without it the benchmark starts its own vspc. */
  target?: { proxy: HostPort; admin: AdminEndpoint; pid: number | null };
  /**
   * Client port range of the vspc the benchmark starts; every port must be free. Absent:
   * a free range is chosen (see privatePorts), never vspc's default 10000-19999.
   */
  portRange?: { start: number; end: number };
  /** Part of every benchmark VM's UUID. */
  namespace: number;
  /** Worker processes holding the N scale/storm VMs. */
  bulkWorkers: number;
  /** Connections in flight per worker while ramping up. */
  connectConcurrency: number;
  storm: { timeoutMs: number; retryMs: number };
  latency: { probes: number; streamers: number; streamBytesPerSec: number; tickMs: number; durationMs: number; intervalMs: number };
  throughput: { vms: number; clients: number[]; warmupMs: number; durationMs: number; chunkBytes: number; windowBytes: number; workers: number };
  vmotion: { vms: number; ratePerS: number; durationMs: number; gapMs: number; tickMs: number; outBytesPerTick: number; inBytesPerTick: number; workers: number };
  /**
   * Issue 13's figures: `consoles` unix-socket consoles (endpoints simulated in
   * `workers` processes) on a vspc of their own, all restarted at once after `downMs`;
   * `streams` of them stream against as many ESXi VMs on the same vspc.
   */
  unix: { consoles: number; downMs: number; streams: number; workers: number; timeoutMs: number };
  /** Issue 11's figure: the glob matcher's worst case at these name lengths (bytes). */
  glob: { sizes: number[]; pattern: string };
  /**
   * Measure the baselines beside vspc in the same run (a vspc the benchmark starts):
   * the minimal option-232 stub (scale, vMotion) and the do-nothing relays, Node and C
   * (throughput and echo while streaming).
   */
  baselines: boolean;
  /**
   * Memory figures of idle servers (scale, unix) are sampled once V8's young generation
   * has settled (see settledMemory): true by default; false samples 200 ms after one
   * full GC, as before 2026-11-30's idle-memory round.
   */
  memorySettle: boolean;
  ssh: SshOptions;
  tunnel: TunnelOptions;
  /**
   * The cluster phase: VM serial ports across three nodes, load generators per node, the nodes' console port range;
   * vMotions of each kind (same-node, cross-node) and the movers of each kind homed on each node.
   */
  cluster: { vms: number; workersPerNode: number; portRange?: { start: number; end: number }; vmotions: number; vmotionVms: number };
  /** More node options for the vspc the benchmark starts (e.g. --cpu-prof). */
  serverNodeArgs: string[];
  /** More vspc options for the vspc the benchmark starts. */
  serverArgs: string[];
  /** Forget the benchmark's VM serial ports at the end (external targets). */
  cleanup: boolean;
  /** Progress lines (stderr). */
  log: (line: string) => void;
  /** The command line, for the report. */
  command: string;
  /** Per-phase deadline. */
  phaseTimeoutMs: number;
}

export interface SshOptions {
  /** Sessions opened (half alone, half during the flood) ... */
  sessions: number;
  /** ... across this many echoing consoles. */
  consoles: number;
  /** Load-generator processes holding the sessions, and sessions being set up at once in each. */
  workers: number;
  concurrency: number;
  /** Lanes of failed logins from 127.0.0.2 while the second half is set up (0: no flood). */
  floodConcurrency: number;
  latencyProbes: number;
  latencyDurationMs: number;
  intervalMs: number;
  /** Each console's output while SSH throughput is measured. */
  streamBytesPerSec: number;
  streamTickMs: number;
  streamDurationMs: number;
}

export const DEFAULT_OPTIONS: BenchOptions = {
  vms: 5000,
  phases: [...DEFAULT_PHASES],
  namespace: 1,
  bulkWorkers: 2,
  connectConcurrency: 256,
  storm: { timeoutMs: 60_000, retryMs: 500 },
  latency: { probes: 8, streamers: 1000, streamBytesPerSec: 11_520, tickMs: 100, durationMs: 5000, intervalMs: 10 },
  throughput: { vms: 100, clients: [1, 4], warmupMs: 1000, durationMs: 5000, chunkBytes: 16 * 1024, windowBytes: 512 * 1024, workers: 2 },
  vmotion: { vms: 200, ratePerS: 500, durationMs: 10_000, gapMs: 20, tickMs: 20, outBytesPerTick: 64, inBytesPerTick: 4, workers: 2 },
  unix: { consoles: 2000, downMs: 2000, streams: 100, workers: 2, timeoutMs: 30_000 },
  glob: { sizes: [256, 512, 1024, 2048], pattern: '*a*a*a*c' },
  baselines: true,
  memorySettle: true,
  ssh: {
    sessions: 500,
    consoles: 100,
    workers: 2,
    // 16 in flight from one address: --ssh's per-address cap on connections not yet logged in.
    concurrency: 8,
    floodConcurrency: 8,
    latencyProbes: 8,
    latencyDurationMs: 5000,
    intervalMs: 10,
    streamBytesPerSec: 11_520,
    streamTickMs: 100,
    streamDurationMs: 3000,
  },
  tunnel: DEFAULT_TUNNEL_OPTIONS,
  cluster: { ...DEFAULT_CLUSTER_OPTIONS },
  serverNodeArgs: [],
  serverArgs: [],
  cleanup: true,
  log: (line) => process.stderr.write(`${line}\n`),
  command: 'vspc-bench',
  phaseTimeoutMs: 180_000,
};

export interface ScaleSection {
  workload: string;
  vmPorts: number;
  registered: number;
  listed: number;
  listenErrors: number;
  connectFailures: number;
  errors: string[];
  timeToRegisterS: number;
  registerRatePerS: number;
  /** Server CPU time spent while the N VMs connected, per VM (µs). */
  serverCpuUsPerRegistration: number | null;
  listMs: number;
  baseline: ResourceFigures | null;
  loaded: ResourceFigures | null;
  perVmPort: { rssKiB: number | null; heapUsedKiB: number | null; externalKiB: number | null; fds: number | null };
  fdLimit: number | null;
  /** VM ports the fd limit allows at the measured fds per port. */
  fdCeiling: number | null;
  /** The same ramp against the minimal option-232 stub in the same run (null: not measured). */
  stub?: ScaleFigures | null;
}

/** One ramp's figures (vspc's are in ScaleSection itself; the stub's here). */
export interface ScaleFigures {
  registered: number;
  timeToRegisterS: number;
  serverCpuUsPerRegistration: number | null;
  perVmPort: { rssKiB: number | null; heapUsedKiB: number | null; externalKiB: number | null; fds: number | null };
}

export interface ResourceFigures {
  rssMiB: number | null;
  heapUsedMiB: number | null;
  externalMiB: number | null;
  fds: number | null;
}

export interface StormSection {
  workload: string;
  vms: number;
  restarted: boolean;
  stopS: number | null;
  /** New process spawned → admin API answers (registry loaded, N listeners bound). */
  readyS: number | null;
  /** New process spawned (or drop, without restart) → every VM connected again. */
  allBackS: number;
  /** Admin API ready → every VM connected again. */
  allBackAfterReadyS: number | null;
  reconnected: number;
  /** Server CPU time from the new process's start (or the drop) until all were back. */
  serverCpuS: number | null;
  serverCpuUsPerVm: number | null;
  samePort: number;
  portChanged: number;
  missing: number;
  reconnectFailures: number;
  maxAttempts: number;
  errors: string[];
}

export interface LatencyFigures {
  vspc: Distribution;
  direct: Distribution;
  /** Through a minimal relay process: the cost of any user-space proxy hop on this machine. */
  relay: Distribution | null;
  /** Percentile of the through-vspc round trip minus the same percentile direct. */
  added: { p50: number; p99: number; max: number };
  /** Percentile through vspc minus the same percentile through the minimal relay. */
  addedOverRelay: { p50: number; p99: number; max: number } | null;
  /** The server's event-loop delay during the run (a server the benchmark started). */
  serverLoopDelay?: LoopDelay | null;
  errors: number;
}

export interface LatencySection {
  workload: string;
  probes: number;
  idle: LatencyFigures;
  loaded: (LatencyFigures & { streamers: number; streamedMBps: number; serverCpuPct: number | null }) | null;
}

/** What carried a throughput case: vspc, or a do-nothing relay (Node.js, C) in the same run. */
export type ThroughputTarget = 'vspc' | 'relay-node' | 'relay-c';

export interface ThroughputCase {
  target: ThroughputTarget;
  clientsPerVm: number;
  vms: number;
  clients: number;
  deliveredMBps: number;
  vmSentMBps: number;
  serverCpuPct: number | null;
  /** MB delivered per second of server CPU time. */
  mbPerServerCpuS: number | null;
  loadGenCpuPct: number;
  clientsDropped: number;
  /** Keystroke echo round trips through the same target while the streams ran (ms). */
  echo: Distribution | null;
  echoErrors: number;
}

export interface ThroughputSection {
  workload: string;
  cases: ThroughputCase[];
  /** Why a baseline is missing (e.g. no gcc for the C relay). */
  notes: string[];
}

export interface VmotionRun {
  /** Migrations per second asked for (0: as many as the VMs manage back to back). */
  targetPerS: number;
  ratePerS: number;
  completed: number;
  failed: number;
  /** Paced run: starts that found every VM still migrating. */
  missed: number;
  switchoverMs: Distribution;
  pauseMs: Distribution;
  /** Per worker: BEGIN → GOAHEAD, GOAHEAD → destination connected, → PEER-OK. */
  stepsMs: Array<Record<string, Distribution>>;
  bytesVmToClient: number;
  bytesClientToVm: number;
  lostBytes: number;
  vmsWithErrors: number;
  errors: string[];
  serverCounters: Record<string, number> | null;
  serverCpuPct: number | null;
  /** Server CPU time per completed vMotion, traffic of the run included (ms). */
  serverCpuMsPerVmotion: number | null;
  serverLoopDelay?: LoopDelay | null;
  /** Each load generator's own event-loop delay (ms): high values mean the generator, not vspc, was late. */
  loadGenLoopDelay?: Array<{ p99: number; max: number }>;
  /** Each load generator's CPU use during the run (% of one core): near 100 means the generator is the limit. */
  loadGenCpuPct?: number[];
}

export interface VmotionSection {
  workload: string;
  vms: number;
  /** At a fixed rate (--vmotion-rate): the switch-over times at that load. */
  paced: VmotionRun | null;
  /** Back to back: the most this machine sustains. */
  max: VmotionRun | null;
  /** The same runs against the minimal option-232 stub (same run, same VMs registered). */
  stub?: { paced: VmotionRun | null; max: VmotionRun | null } | null;
}

export interface UnixSection {
  workload: string;
  consoles: number;
  /** Declared by a reload → every console connected to its endpoint (listed as connected). */
  attachS: number;
  attached: number;
  listed: number;
  listMs: number;
  perConsole: { rssKiB: number | null; heapUsedKiB: number | null; externalKiB: number | null; fds: number | null };
  restart: UnixRestartResult & { downMs: number };
  /** VM → client MB/s from `streams` unix-socket consoles and as many ESXi VMs on the same vspc. */
  throughput: { streams: number; unix: ThroughputCase | null; esxi: ThroughputCase | null; ratio: number | null };
}

export interface GlobSection {
  workload: string;
  pattern: string;
  /** Per name length: median time per match (µs) and the matcher's own step count. */
  sizes: Array<{ bytes: number; usPerMatch: number; steps: number }>;
  /** Time at 2n / time at n, per doubling (linear: ≈ 2). */
  growth: number[];
  stepGrowth: number[];
}

export interface SshSetupFigures {
  sessions: number;
  failed: number;
  ratePerS: number;
  /** Connect → lock granted, per session (ms). */
  perSessionMs: Distribution;
  /** Server CPU time spent while these sessions were set up, per session (ms): what the setup costs vspc, whatever the machine's load. */
  serverCpuMsPerSession: number | null;
}

export interface SshSection {
  workload: string;
  consoles: number;
  sessions: number;
  errors: string[];
  alone: SshSetupFigures;
  /** The second half, while failed logins poured in from another address. */
  duringFlood: (SshSetupFigures & { floodAttempts: number; floodRejected: number; floodRefusedAtAccept: number; floodOther: number }) | null;
  perSession: { rssKiB: number | null; heapUsedKiB: number | null; fds: number | null };
  latency: { ssh: Distribution; telnet: Distribution; added: { p50: number; p99: number; max: number }; errors: number };
  throughput: { deliveredMBps: number; vmSentMBps: number; serverCpuPct: number | null; mbPerServerCpuS: number | null; sessionsOpenAfter: number };
}

export interface BenchReport {
  tool: string;
  version: string;
  startedAt: string;
  durationS: number;
  command: string;
  machine: MachineInfo;
  /** The vspc measured; `clientPorts`: the private client port range of one the benchmark started. */
  target: { owned: boolean; proxy: string; admin: string; clientPorts?: string };
  options: Omit<BenchOptions, 'log' | 'target'>;
  scale?: ScaleSection;
  storm?: StormSection;
  latency?: LatencySection;
  throughput?: ThroughputSection;
  vmotion?: VmotionSection;
  unix?: UnixSection;
  glob?: GlobSection;
  ssh?: SshSection;
  tunnel?: TunnelSection;
  cluster?: ClusterSection;
  /** Phase → error message, for phases that failed. */
  failures: Record<string, string>;
  /** Phase → why it did not run here and how to make it run (e.g. the tunnel phase without its QEMU guest). */
  notRun: Record<string, string>;
  /** What the vspc the benchmark started logged (at --log-level warn) in its last process. */
  serverLog?: { lines: number; top: Array<{ message: string; count: number }> };
}

const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));
const STUB_SCRIPT = fileURLToPath(new URL('./stub.js', import.meta.url));
const MiB = 1024 * 1024;

function mib(x: number | null | undefined): number | null {
  return x === null || x === undefined ? null : round(x / MiB, 1);
}

function hp(a: HostPort): string {
  return `${a.host}:${a.port}`;
}

/** Splits `total` into `parts` nearly equal slices: [{from, count}]. */
function slices(total: number, parts: number): Array<{ from: number; count: number }> {
  const out: Array<{ from: number; count: number }> = [];
  let from = 0;
  for (let i = 0; i < parts; i++) {
    const count = Math.floor(total / parts) + (i < total % parts ? 1 : 0);
    if (count > 0) out.push({ from, count });
    from += count;
  }
  return out;
}

function latencyFigures(r: { vspc: number[]; direct: number[]; relay: number[]; errors: number }): LatencyFigures {
  const v = distribution(r.vspc);
  const d = distribution(r.direct);
  const rl = r.relay.length > 0 ? distribution(r.relay) : null;
  const diff = (a: Distribution, b: Distribution) => ({ p50: round(a.p50 - b.p50), p99: round(a.p99 - b.p99), max: round(a.max - b.max) });
  return {
    vspc: roundDistribution(v),
    direct: roundDistribution(d),
    relay: rl ? roundDistribution(rl) : null,
    added: diff(v, d),
    addedOverRelay: rl ? diff(v, rl) : null,
    errors: r.errors,
  };
}

/** Runs the benchmark. Child processes are gone when the promise settles. */
export async function runBench(opts: BenchOptions): Promise<BenchReport> {
  const started = Date.now();
  const t0 = performance.now();
  const log = opts.log;
  const failures: Record<string, string> = {};
  const notRun: Record<string, string> = {};
  const workers: WorkerHandle[] = [];
  let tmp: string | null = null;
  let server: ServerProcess | null = null;
  let target: Target;
  let serverOpts: Parameters<typeof ServerProcess.spawn>[0] | null = null;
  /** The minimal option-232 stub (baseline), when measured. */
  let stub: ServerProcess | null = null;
  let sshPort: number | null = null;
  let sshKey: string | null = null;

  const report: BenchReport = {
    tool: 'vspc-bench',
    version: VERSION,
    startedAt: new Date(started).toISOString(),
    durationS: 0,
    command: opts.command,
    machine: machineInfo(),
    target: { owned: !opts.target, proxy: '', admin: '' },
    options: { ...opts, log: undefined, target: undefined } as unknown as BenchReport['options'],
    failures,
    notRun,
  };
  delete (report.options as Partial<BenchOptions>).log;
  delete (report.options as Partial<BenchOptions>).target;

  const spawnWorker = (name: string) => {
    const w = WorkerHandle.start(name, WORKER_SCRIPT);
    workers.push(w);
    return w;
  };

  try {
    if (opts.target) {
      target = new ExternalTarget(opts.target.proxy, opts.target.admin, opts.target.pid);
      await target.status();
    } else {
      tmp = mkdtempSync(join(tmpdir(), 'vspc-bench-'));
      trackTempDir(tmp);
      // Phases with servers of their own (cluster, tunnel) or none (glob) need no client ports here.
      const selfContained: readonly Phase[] = ['cluster', 'tunnel', 'glob'];
      const needed = opts.phases.every((p) => selfContained.includes(p)) ? 16 : opts.vms + opts.latency.probes + opts.throughput.vms + opts.vmotion.vms + opts.ssh.consoles + 16;
      const { range, proxyPort, adminPort } = await privatePorts(needed, opts.portRange);
      const sshArgs: string[] = [];
      if (opts.phases.includes('ssh')) {
        // The SSH front door, with one key for every benchmark session.
        sshPort = (await reservePortRange(1, { from: Math.max(proxyPort, adminPort) + 1, to: PRIVATE_PORTS.to })).start;
        const pair = ed25519KeyPair('vspc-bench');
        sshKey = pair.private;
        const keys = join(tmp, 'authorized_keys');
        // One key for every session: lift the per-key caps (32 connections, 10 sessions
        // each by default; docs/ssh.md) to the run's size.
        const cap = Math.max(opts.ssh.sessions, 1) + 16;
        writeFileSync(keys, `vspc-user="bench",vspc-max-connections="${cap}",vspc-max-sessions="${cap}" ${pair.public}\n`, { mode: 0o600 });
        sshArgs.push('--ssh-listen', `127.0.0.1:${sshPort}`, '--ssh-authorized-keys', keys, '--ssh-host-key-dir', join(tmp, 'ssh'));
      }
      serverOpts = { dbPath: join(tmp, 'vspc.db'), proxyPort, adminPort, portRange: range, extraArgs: [...sshArgs, ...opts.serverArgs], nodeArgs: opts.serverNodeArgs };
      report.target.clientPorts = `${range.start}-${range.end}`;
      server = ServerProcess.spawn(serverOpts);
      target = server;
      const readyMs = await server.waitReady(60_000);
      log(`vspc started (pid ${server.pid}) in ${Math.round(readyMs)} ms: proxy ${hp(server.proxy)}, admin ${server.admin.url}, ports ${range.start}-${range.end}`);
    }
    report.target.proxy = hp(target.proxy);
    report.target.admin = target.admin.url;

    const want = new Set(opts.phases);
    const bulkW = want.has('scale') || want.has('storm') || want.has('latency') ? slices(opts.vms, opts.bulkWorkers).map((s, i) => ({ ...s, w: spawnWorker(`bulk-${i}`) })) : [];
    let bulkConnected = false;
    let bulkPorts: Map<string, number> | null = null;

    // The minimal option-232 stub, the baseline of the scale and vMotion figures (same run).
    if (server && opts.baselines && (want.has('scale') || want.has('vmotion'))) {
      const own = await reservePortRange(2, { from: PRIVATE_PORTS.from, to: PRIVATE_PORTS.to });
      stub = ServerProcess.spawn({ dbPath: '', proxyPort: own.start, adminPort: own.end, portRange: { start: 0, end: 0 }, script: STUB_SCRIPT });
      const readyMs = await stub.waitReady(30_000);
      log(`option-232 stub started (pid ${stub.pid}) in ${Math.round(readyMs)} ms: proxy ${hp(stub.proxy)}`);
    }

    const phase = async <T>(name: Phase, fn: () => Promise<T>, timeoutMs = opts.phaseTimeoutMs): Promise<T | undefined> => {
      if (!want.has(name)) return undefined;
      log(`--- ${name}`);
      const p0 = performance.now();
      const lines0 = server?.logLines ?? 0;
      try {
        const r = await withDeadline(fn(), timeoutMs, `phase ${name}`);
        log(`--- ${name} done in ${((performance.now() - p0) / 1000).toFixed(1)} s`);
        if (server && server.logLines > lines0) {
          log(`    vspc logged ${server.logLines - lines0} warning/error lines: ${JSON.stringify(server.logSummary(5))}`);
        }
        return r;
      } catch (err) {
        const msg = err instanceof Error ? err.message : String(err);
        failures[name] = msg;
        log(`--- ${name} FAILED: ${msg}`);
        return undefined;
      }
    };

    const listBench = async (t: Target = target): Promise<{ rows: PortView[]; ms: number }> => {
      const l0 = performance.now();
      const all = await t.ports();
      const ms = performance.now() - l0;
      return { rows: all.filter((r) => r.key.startsWith('b7e4c000-')), ms };
    };

    type BulkSlice = { w: WorkerHandle; from: number; count: number };
    const connectBulk = async (t: Target = target, ws: BulkSlice[] = bulkW): Promise<{ connected: number; failed: number; errors: string[] }> => {
      const rs = await Promise.all(
        ws.map((b) =>
          b.w.ask(
            'bulk.connect',
            { proxy: t.proxy, namespace: opts.namespace, from: b.from, count: b.count, concurrency: opts.connectConcurrency, timeoutMs: 30_000 },
            opts.phaseTimeoutMs,
          ),
        ),
      );
      return { connected: rs.reduce((n, r) => n + r.connected, 0), failed: rs.reduce((n, r) => n + r.failed, 0), errors: rs.flatMap((r) => r.errors) };
    };

    /** Polls the status until `connected` VM serial ports have a connection; resolves with the time. */
    const waitConnected = async (connected: number, since: number, timeoutMs: number, t: Target = target): Promise<number> => {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const s = await t.status().catch(() => null);
        if (s && s.vmPortsConnected >= connected) return performance.now() - since;
        if (performance.now() > deadline) throw new Error(`only ${s?.vmPortsConnected ?? '?'} of ${connected} VM serial ports connected after ${timeoutMs} ms`);
        // Not faster: each status call walks every VM serial port in the server.
        await sleep(50);
      }
    };

    const resources = async (t: Target = target, settle = false): Promise<{ fig: ResourceFigures; mem: ServerMemory | null; proc: ProcSample | null }> => {
      const mem = settle && opts.memorySettle ? await settledMemory(t) : await t.memory(true);
      await sleep(200);
      const proc = t.sample();
      return {
        fig: { rssMiB: mib(proc?.rssBytes ?? mem?.rss), heapUsedMiB: mib(mem?.heapUsed), externalMiB: mib(mem?.external), fds: proc?.fds ?? null },
        mem,
        proc,
      };
    };

    type Resources = Awaited<ReturnType<typeof resources>>;
    /** Per-VM-port figures between two resource samples. */
    const perPort = (loaded: Resources, b: Resources, n: number) => {
      const per = (x: number | null | undefined, y: number | null | undefined) => (x === null || x === undefined || y === null || y === undefined ? null : round((x - y) / n / 1024, 2));
      return {
        rssKiB: per(loaded.proc?.rssBytes ?? loaded.mem?.rss, b.proc?.rssBytes ?? b.mem?.rss),
        heapUsedKiB: per(loaded.mem?.heapUsed, b.mem?.heapUsed),
        externalKiB: per(loaded.mem?.external, b.mem?.external),
        fds: loaded.proc && b.proc ? round((loaded.proc.fds - b.proc.fds) / n, 3) : null,
      };
    };

    // The baseline: the server before any benchmark VM connected.
    const baseStatus = await target.status();
    const base = await resources(target, true);
    const stubBase = stub ? await resources(stub, true) : null;

    // ------------------------------------------------------------------ scale
    report.scale = await phase('scale', async () => {
      const n = opts.vms;
      // The stub first, with load generators of its own; they leave when it is measured
      // (its N VM serial ports stay registered, as vspc's do, for the vMotion phase).
      let stubFigures: ScaleFigures | null = null;
      if (stub && stubBase) {
        const sw = slices(n, opts.bulkWorkers).map((sl, i) => ({ ...sl, w: spawnWorker(`stub-bulk-${i}`) }));
        const cpu0 = stub.sample();
        const s0 = performance.now();
        const connecting = connectBulk(stub, sw);
        connecting.catch(() => undefined);
        const ms = await waitConnected(n, s0, opts.phaseTimeoutMs - 10_000, stub);
        const cpu1 = stub.sample();
        const c = await connecting;
        await sleep(1000);
        const loaded = await resources(stub, true);
        stubFigures = {
          registered: c.connected,
          timeToRegisterS: round(ms / 1000, 2),
          serverCpuUsPerRegistration: cpu0 && cpu1 ? Math.round(((cpu1.cpuMs - cpu0.cpuMs) * 1000) / n) : null,
          perVmPort: perPort(loaded, stubBase, n),
        };
        log(`scale (stub): ${c.connected} VM serial ports in ${stubFigures.timeToRegisterS} s; RSS ${stubFigures.perVmPort.rssKiB} KiB per idle VM port`);
        await Promise.all(sw.map((b) => b.w.ask('bulk.disconnect', { timeoutMs: 30_000 }, 40_000))).catch((err: Error) => log(`stub: disconnecting the bulk VMs: ${err.message}`));
        await Promise.all(sw.map((b) => b.w.stop()));
      }
      const connectedBefore = baseStatus.vmPortsConnected;
      const cpu0 = target.sample();
      const s0 = performance.now();
      const connecting = connectBulk();
      connecting.catch(() => undefined);
      const registerMs = await waitConnected(connectedBefore + opts.vms, s0, opts.phaseTimeoutMs - 10_000);
      const cpu1 = target.sample();
      const c = await connecting;
      bulkConnected = c.connected > 0;
      const { rows, ms: listMs } = await listBench();
      const mine = new Set(Array.from({ length: opts.vms }, (_, i) => benchIdentity(opts.namespace, Group.bulk, i).formatted));
      const listed = rows.filter((r) => mine.has(r.key) && r.connected);
      bulkPorts = listening(listed, log);
      log(`scale: ${listed.length} VM serial ports registered in ${(registerMs / 1000).toFixed(2)} s, listed in ${Math.round(listMs)} ms`);
      await sleep(1000);
      const loaded = await resources(target, true);
      const pp = perPort(loaded, base, n);
      const limit = target.pid !== null ? fdLimit(target.pid) : null;
      const section: ScaleSection = {
        workload: `${n} simulated ESXi VM serial ports (host-first telnet + option 232 handshake, DO-PROXY, UUID, name), ${opts.bulkWorkers} load-generator process(es), ${opts.connectConcurrency} connects in flight each; each VM port has its own telnet listener; idle when measured, after a full GC${opts.memorySettle ? ' once the V8 new space had settled (every memory sample, vspc and stub, baseline and loaded)' : ''}${stubFigures ? '; the same against the minimal option-232 stub (bench/stub.ts: a client listener per VM port, nothing else) first' : ''}`,
        vmPorts: n,
        registered: c.connected,
        listed: listed.length,
        listenErrors: listed.filter((r) => r.listenError).length,
        connectFailures: c.failed,
        errors: c.errors,
        timeToRegisterS: round(registerMs / 1000, 2),
        registerRatePerS: Math.round((n / registerMs) * 1000),
        serverCpuUsPerRegistration: cpu0 && cpu1 ? Math.round(((cpu1.cpuMs - cpu0.cpuMs) * 1000) / n) : null,
        listMs: Math.round(listMs),
        baseline: base.fig,
        loaded: loaded.fig,
        perVmPort: pp,
        fdLimit: limit,
        fdCeiling: limit && pp.fds && loaded.proc ? Math.floor((limit - (base.proc?.fds ?? 0)) / pp.fds) : null,
        stub: stubFigures,
      };
      return section;
    });

    // ------------------------------------------------------------------ storm
    report.storm = await phase('storm', async () => {
      if (!bulkConnected) {
        const c = await connectBulk();
        bulkConnected = c.connected > 0;
      }
      if (!bulkPorts) {
        const { rows } = await listBench();
        bulkPorts = listening(rows.filter((r) => r.connected), log);
      }
      const before = bulkPorts;
      const n = opts.vms;
      let stopS: number | null = null;
      let readyS: number | null = null;
      let since: number;
      let reconnecting: Promise<Array<{ reconnected: number; failed: number; errors: string[]; attempts: Distribution }>>;
      const reconnect = () =>
        Promise.all(
          bulkW.map((b) =>
            b.w.ask(
              'bulk.reconnect',
              { timeoutMs: opts.storm.timeoutMs, retryMs: opts.storm.retryMs, connectTimeoutMs: 10_000 },
              opts.storm.timeoutMs + 30_000,
            ),
          ),
        );
      let connectedBase: number;
      if (server && serverOpts) {
        stopS = round((await server.stop(30_000)) / 1000, 2);
        log(`storm: vspc stopped in ${stopS} s`);
        await Promise.all(bulkW.map((b) => b.w.ask('bulk.waitClosed', { timeoutMs: 30_000 }, 40_000)));
        // The hosts retry (every ~retryMs) from now on; the new process starts at once.
        reconnecting = reconnect();
        server = ServerProcess.spawn(serverOpts);
        target = server;
        since = server.spawnedAt;
        readyS = round((await server.waitReady(opts.storm.timeoutMs)) / 1000, 2);
        log(`storm: new vspc ready after ${readyS} s`);
        connectedBase = 0;
      } else {
        // An operator's deployment is not restarted: every VM connection drops at once and comes back.
        const s = await target.status();
        connectedBase = s.vmPortsConnected - n;
        await Promise.all(bulkW.map((b) => b.w.ask('bulk.disconnect', { timeoutMs: 30_000 }, 40_000)));
        since = performance.now();
        reconnecting = reconnect();
      }
      reconnecting.catch(() => undefined);
      const stormCpu0 = server ? null : target.sample();
      const allMs = await waitConnected(connectedBase + n, since, opts.storm.timeoutMs);
      const stormCpu1 = target.sample();
      // A restarted server: all its CPU time so far (start-up included); else the window's.
      const stormCpuMs = stormCpu1 ? stormCpu1.cpuMs - (stormCpu0?.cpuMs ?? 0) : null;
      const rs = await reconnecting;
      const { rows } = await listBench();
      const now = listening(rows.filter((r) => r.connected), log);
      let same = 0;
      let changed = 0;
      let missing = 0;
      for (const [uuid, port] of before) {
        const p = now.get(uuid);
        if (p === undefined) missing++;
        else if (p === port) same++;
        else changed++;
      }
      bulkPorts = now;
      const section: StormSection = {
        workload: server
          ? `vspc restarted (SIGTERM, then a new process on the same database) with ${n} VM serial ports; every simulated host retries its connection every ~${opts.storm.retryMs} ms (jittered) from the moment the old process is gone, so all reconnect at once`
          : `external vspc (not restarted): all ${n} benchmark VM connections dropped at once and re-established at once`,
        vms: n,
        restarted: !!server,
        stopS,
        readyS,
        allBackS: round(allMs / 1000, 2),
        allBackAfterReadyS: readyS !== null ? round(allMs / 1000 - readyS, 2) : null,
        reconnected: rs.reduce((k, r) => k + r.reconnected, 0),
        serverCpuS: stormCpuMs === null ? null : round(stormCpuMs / 1000, 2),
        serverCpuUsPerVm: stormCpuMs === null ? null : Math.round((stormCpuMs * 1000) / n),
        samePort: same,
        portChanged: changed,
        missing,
        reconnectFailures: rs.reduce((k, r) => k + r.failed, 0),
        maxAttempts: Math.max(0, ...rs.map((r) => r.attempts.max)),
        errors: rs.flatMap((r) => r.errors),
      };
      log(`storm: all ${n} back after ${section.allBackS} s (same port: ${same}, changed: ${changed}, missing: ${missing})`);
      return section;
    });

    // ------------------------------------------------------------------ latency
    report.latency = await phase('latency', async () => {
      const L = opts.latency;
      const probeW = spawnWorker('probe');
      const relayW = spawnWorker('relay');
      const { echoPort } = await probeW.ask(
        'lat.setup',
        { proxy: target.proxy, admin: target.admin, namespace: opts.namespace, probes: L.probes, timeoutMs: 20_000 },
        60_000,
      );
      const { port: relayPort } = await relayW.ask('relay.start', { targetPort: echoPort });
      await probeW.ask('lat.relay', { port: relayPort, timeoutMs: 10_000 });
      const run = () =>
        probeW.ask(
          'lat.run',
          { durationMs: L.durationMs, intervalMs: L.intervalMs },
          L.durationMs + 30_000,
        );
      await target.loopDelay();
      const idle = latencyFigures(await run());
      idle.serverLoopDelay = await target.loopDelay();
      log(`latency idle: vspc p50 ${idle.vspc.p50} p99 ${idle.vspc.p99} ms; relay p50 ${idle.relay?.p50} p99 ${idle.relay?.p99} ms; direct p50 ${idle.direct.p50} p99 ${idle.direct.p99} ms`);
      let loaded: LatencySection['loaded'] = null;
      const streamers = Math.min(L.streamers, opts.vms);
      if (streamers > 0) {
        if (!bulkConnected) {
          const c = await connectBulk();
          bulkConnected = c.connected > 0;
        }
        if (!bulkPorts) {
          const { rows } = await listBench();
          bulkPorts = listening(rows.filter((r) => r.connected), log);
        }
        // The first `streamers` bulk VMs stream, each with one client.
        const ports: number[] = [];
        const perWorker: Array<{ w: WorkerHandle; from: number; count: number }> = [];
        let left = streamers;
        for (const b of bulkW) {
          const count = Math.min(left, b.count);
          if (count <= 0) break;
          perWorker.push({ w: b.w, from: 0, count });
          for (let i = b.from; i < b.from + count; i++) {
            const p = bulkPorts.get(benchIdentity(opts.namespace, Group.bulk, i).formatted);
            if (p) ports.push(p);
          }
          left -= count;
        }
        const clientW = spawnWorker('clients');
        const cc = await clientW.ask('clients.connect', { host: target.proxy.host, ports, concurrency: 64, timeoutMs: 20_000 }, 120_000);
        if (cc.connected < ports.length) log(`latency: only ${cc.connected} of ${ports.length} streamer clients connected: ${cc.errors.join('; ')}`);
        await Promise.all(perWorker.map((p) => p.w.ask('bulk.streamStart', { from: p.from, count: p.count, bytesPerSec: L.streamBytesPerSec, tickMs: L.tickMs })));
        await sleep(1000);
        const c1 = await clientW.ask('clients.bytes', {});
        const p1 = target.sample();
        await target.loopDelay();
        const r = await run();
        const loop = await target.loopDelay();
        const p2 = target.sample();
        const c2 = await clientW.ask('clients.bytes', {});
        await Promise.all(perWorker.map((p) => p.w.ask('bulk.streamStop', {})));
        await clientW.ask('clients.close', {}, 30_000);
        await clientW.stop();
        loaded = {
          ...latencyFigures(r),
          serverLoopDelay: loop,
          streamers: cc.connected,
          streamedMBps: round((c2.bytes - c1.bytes) / ((c2.at - c1.at) / 1000) / 1e6, 2),
          serverCpuPct: p1 && p2 ? round(cpuPercent(p1, p2), 1) : null,
        };
        log(
          `latency with ${cc.connected} streaming: vspc p50 ${loaded.vspc.p50} p99 ${loaded.vspc.p99} ms; relay p50 ${loaded.relay?.p50} p99 ${loaded.relay?.p99} ms; direct p50 ${loaded.direct.p50} p99 ${loaded.direct.p99} ms (streams ${loaded.streamedMBps} MB/s, server CPU ${loaded.serverCpuPct}%, loop delay p99 ${loop?.p99 ?? "n/a"} max ${loop?.max ?? "n/a"} ms, GC ${JSON.stringify(loop?.gc)})`,
        );
      }
      await probeW.ask('lat.teardown', {}, 30_000);
      await probeW.stop();
      await relayW.stop();
      const section: LatencySection = {
        workload:
          `${L.probes} echoing VMs with one telnet client each type one byte at a time (next one ${L.intervalMs} ms ± 50% after the echo), round trip measured in the client; ` +
          `"direct" is the same echo over a plain loopback TCP pair in the same process, "relay" through a minimal Node.js TCP relay in another process (what any user-space proxy hop costs on this machine); ` +
          `loaded = while ${streamers} other VMs each stream ${L.streamBytesPerSec} B/s (115200 baud: one ${Math.round((L.streamBytesPerSec * L.tickMs) / 1000)}-byte write every ${L.tickMs} ms, VMs at independent phases) to one client each; ${L.durationMs / 1000} s per run`,
        probes: L.probes,
        idle,
        loaded,
      };
      return section;
    });

    // The N idle VMs are not needed any more: free their connections (their listeners stay).
    if (bulkConnected && (want.has('throughput') || want.has('vmotion'))) {
      await Promise.all(bulkW.map((b) => b.w.ask('bulk.disconnect', { timeoutMs: 30_000 }, 40_000))).catch((err: Error) => log(`disconnecting the bulk VMs: ${err.message}`));
      bulkConnected = false;
    }
    for (const b of bulkW) await b.w.stop();

    // ------------------------------------------------------------------ throughput
    /**
     * One throughput case: the streams of `set` pour out on every worker while the
     * probes type through `echoPath`; delivered bytes, the carrier's CPU (`sample`)
     * and the echo round trips, over the same window.
     */
    const streamCase = async (
      tw: Array<{ w: WorkerHandle }>,
      set: 'vspc' | 'relay' | 'unix',
      sample: () => ProcSample | null,
      meta: { target: ThroughputTarget; clientsPerVm: number; vms: number },
      probe: { w: WorkerHandle; path: string } | null,
    ): Promise<ThroughputCase> => {
      const T = opts.throughput;
      await Promise.all(tw.map((t) => t.w.ask('tp.start', { chunkBytes: T.chunkBytes, windowBytes: T.windowBytes, set })));
      await sleep(T.warmupMs);
      const s1 = await Promise.all(tw.map((t) => t.w.ask('tp.sample', {})));
      const p1 = sample();
      const echo = probe ? probe.w.ask('lat.run', { durationMs: T.durationMs, intervalMs: opts.latency.intervalMs, paths: [probe.path] }, T.durationMs + 30_000) : sleep(T.durationMs).then(() => null);
      const e = await echo;
      const s2 = await Promise.all(tw.map((t) => t.w.ask('tp.sample', {})));
      const p2 = sample();
      await Promise.all(tw.map((t) => t.w.ask('tp.stop', {})));
      let delivered = 0;
      let sent = 0;
      let genCpu = 0;
      for (let i = 0; i < tw.length; i++) {
        const secs = (s2[i].at - s1[i].at) / 1000;
        delivered += (s2[i].delivered - s1[i].delivered) / secs;
        sent += (s2[i].sent - s1[i].sent) / secs;
        genCpu += ((s2[i].cpu.user + s2[i].cpu.system - s1[i].cpu.user - s1[i].cpu.system) / 1000 / (s2[i].at - s1[i].at)) * 100;
      }
      const cpu = p1 && p2 ? cpuPercent(p1, p2) : null;
      const c: ThroughputCase = {
        ...meta,
        clients: meta.vms * meta.clientsPerVm,
        deliveredMBps: round(delivered / 1e6, 1),
        vmSentMBps: round(sent / 1e6, 1),
        serverCpuPct: cpu === null ? null : round(cpu, 1),
        mbPerServerCpuS: cpu !== null && cpu > 0 ? round(delivered / 1e6 / (cpu / 100), 0) : null,
        loadGenCpuPct: round(genCpu, 1),
        clientsDropped: s2.reduce((n, x) => n + x.clientsDropped, 0),
        echo: e && probe ? roundDistribution(distribution(e.byPath[probe.path] ?? [])) : null,
        echoErrors: e?.errors ?? 0,
      };
      log(
        `throughput ${meta.target}${meta.target === 'vspc' ? ` ${meta.clientsPerVm} client(s)/VM` : ''}: ${c.deliveredMBps} MB/s delivered (VMs sent ${c.vmSentMBps} MB/s), CPU ${c.serverCpuPct}% = ${c.mbPerServerCpuS} MB per CPU-second, load generators ${c.loadGenCpuPct}%` +
          (c.echo ? `; echo p50 ${c.echo.p50} p99 ${c.echo.p99} ms` : ''),
      );
      return c;
    };

    report.throughput = await phase('throughput', async () => {
      const T = opts.throughput;
      const notes: string[] = [];
      const tw = slices(T.vms, T.workers).map((sl, i) => ({ ...sl, w: spawnWorker(`throughput-${i}`) }));
      // Keystroke echoes while the streams run: the latency probes' echoing VMs on vspc,
      // and the same echo through each relay.
      const probeW = spawnWorker('throughput-probe');
      const { echoPort } = await probeW.ask(
        'lat.setup',
        { proxy: target.proxy, admin: target.admin, namespace: opts.namespace, probes: opts.latency.probes, timeoutMs: 20_000 },
        60_000,
      );
      await Promise.all(tw.map((t) => t.w.ask('tp.setup', { proxy: target.proxy, admin: target.admin, namespace: opts.namespace, from: t.from, count: t.count, timeoutMs: 20_000 }, 120_000)));
      const cases: ThroughputCase[] = [];
      const vspcCase = async (perVm: number) => {
        await Promise.all(tw.map((t) => t.w.ask('tp.clients', { perVm, timeoutMs: 20_000 }, 120_000)));
        cases.push(await streamCase(tw, 'vspc', () => target.sample(), { target: 'vspc', clientsPerVm: perVm, vms: T.vms }, { w: probeW, path: 'vspc' }));
      };
      const relayCase = async (kind: RelayKind, binary: string | null) => {
        const vmPorts = await Promise.all(tw.map((t) => t.w.ask('tp.relayListen', { count: t.count })));
        const relay = await startRelay(kind, [...vmPorts.map((v) => v.port), echoPort], binary);
        try {
          await Promise.all(tw.map((t, i) => t.w.ask('tp.relayConnect', { port: relay.ports[i], timeoutMs: 20_000 }, 120_000)));
          await probeW.ask('lat.relay', { port: relay.ports[tw.length], timeoutMs: 10_000, name: kind });
          cases.push(await streamCase(tw, 'relay', () => relay.sample(), { target: kind, clientsPerVm: 1, vms: T.vms }, { w: probeW, path: kind }));
        } finally {
          await Promise.all(tw.map((t) => t.w.ask('tp.relayTeardown', {}, 30_000)));
          await probeW.ask('lat.unrelay', { name: kind });
          await relay.stop();
        }
      };
      const perVmList = [...T.clients];
      // One client per VM first (what the relays can be compared with), then the relays, then the rest.
      const first = perVmList.includes(1) ? 1 : perVmList[0];
      await vspcCase(first);
      if (server && opts.baselines) {
        await relayCase('relay-node', null);
        const c = buildCRelay();
        if ('path' in c) await relayCase('relay-c', c.path);
        else notes.push(`C relay not measured: ${c.error}`);
      }
      for (const perVm of perVmList) if (perVm !== first) await vspcCase(perVm);
      await Promise.all(tw.map((t) => t.w.ask('tp.teardown', {}, 30_000)));
      await Promise.all(tw.map((t) => t.w.stop()));
      await probeW.ask('lat.teardown', {}, 30_000);
      await probeW.stop();
      const section: ThroughputSection = {
        workload:
          `${T.vms} VMs write ${T.chunkBytes / 1024} KiB chunks of printable text (nothing to escape) as fast as their slowest client reads (at most ${T.windowBytes / 1024} KiB in flight per VM, below the 1 MiB slow-client limit); clients count bytes; ${T.workers} load-generator process(es) holding both ends; ${T.warmupMs / 1000} s warm-up, then ${T.durationMs / 1000} s measured; MB = 10^6 bytes. ` +
          `Meanwhile ${opts.latency.probes} echoing VMs with one client each type one byte at a time (next one ${opts.latency.intervalMs} ms ± 50% after the echo) through the same carrier. ` +
          `Baselines in the same run: the same streams and echoes through a do-nothing relay process, Node.js (bench/relay-node.ts) and single-threaded epoll C (bench/relay.c), one client per stream; CPU is the carrier's (vspc's or the relay's)`,
        cases,
        notes,
      };
      return section;
    });

    // ------------------------------------------------------------------ vMotion
    report.vmotion = await phase('vmotion', async () => {
      const V = opts.vmotion;
      const vw = slices(V.vms, V.workers).map((s, i) => ({ ...s, w: spawnWorker(`vmotion-${i}`) }));
      const setup = (t: Target) =>
        Promise.all(
          vw.map((w) =>
            w.w.ask('vm.setup', { proxy: t.proxy, admin: t.admin, namespace: opts.namespace, from: w.from, count: w.count, timeoutMs: 20_000 }, 120_000),
          ),
        );
      const quiesceMs = 10_000;
      const runOnce = async (ratePerS: number, target: Target, name = 'vspc'): Promise<VmotionRun> => {
        const before = (await target.status()).vmotions;
        const g1 = await Promise.all(vw.map((w) => w.w.ask('stats', {})));
        const p1 = target.sample();
        await target.loopDelay();
        const rs = await Promise.all(
          vw.map((t) =>
            t.w.ask(
              'vm.run',
              {
                durationMs: V.durationMs,
                gapMs: V.gapMs,
                ratePerS: ratePerS > 0 ? (ratePerS * t.count) / V.vms : 0,
                tickMs: V.tickMs,
                outBytesPerTick: V.outBytesPerTick,
                inBytesPerTick: V.inBytesPerTick,
                quiesceMs,
                timeoutMs: 10_000,
              },
              V.durationMs + quiesceMs + 60_000,
            ),
          ),
        );
        const loop = await target.loopDelay();
        const p2 = target.sample();
        const g2 = await Promise.all(vw.map((w) => w.w.ask('stats', {})));
        const after = (await target.status()).vmotions;
        const counters: Record<string, number> = {};
        for (const k of Object.keys(after)) counters[k] = after[k] - (k === 'pending' ? 0 : (before[k] ?? 0));
        const completed = rs.reduce((n, r) => n + r.completed, 0);
        const elapsed = Math.max(...rs.map((r) => r.elapsedMs));
        const run: VmotionRun = {
          targetPerS: ratePerS,
          ratePerS: round((completed / elapsed) * 1000, 1),
          completed,
          failed: rs.reduce((n, r) => n + r.failed, 0),
          missed: rs.reduce((n, r) => n + r.missed, 0),
          switchoverMs: roundDistribution(distribution(rs.flatMap((r) => r.switchover))),
          pauseMs: roundDistribution(distribution(rs.flatMap((r) => r.pause))),
          stepsMs: rs.map((r) => r.steps),
          bytesVmToClient: rs.reduce((n, r) => n + r.bytesVmToClient, 0),
          bytesClientToVm: rs.reduce((n, r) => n + r.bytesClientToVm, 0),
          lostBytes: rs.reduce((n, r) => n + r.lostVmToClient + r.lostClientToVm, 0),
          vmsWithErrors: rs.reduce((n, r) => n + r.vmsWithErrors, 0),
          errors: [...rs.flatMap((r) => r.errors), ...rs.flatMap((r) => r.errorDetails)].slice(0, 10),
          serverCounters: counters,
          serverCpuPct: p1 && p2 ? round(cpuPercent(p1, p2), 1) : null,
          serverCpuMsPerVmotion: p1 && p2 && completed > 0 ? round((p2.cpuMs - p1.cpuMs) / completed, 3) : null,
          serverLoopDelay: loop,
          loadGenLoopDelay: rs.map((r) => r.loadGenLoopDelay),
          loadGenCpuPct: g1.map((a, i) => {
            const b = g2[i];
            const wall = p1 && p2 ? p2.at - p1.at : Math.max(...rs.map((r) => r.elapsedMs));
            return round(((b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system) / 1000 / wall) * 100, 1);
          }),
        };
        log(
          `vmotion (${name}) ${ratePerS > 0 ? `paced at ${ratePerS}/s` : 'back to back'}: ${run.completed} completed (${run.ratePerS}/s), ${run.failed} failed, ${run.missed} missed; ` +
            `switch-over p50 ${run.switchoverMs.p50} p99 ${run.switchoverMs.p99} ms (steps p50/p99 ${Object.entries(run.stepsMs[0] ?? {})
              .map(([k, d]) => `${k} ${d.p50}/${d.p99}`)
              .join(', ')}); lost ${run.lostBytes} bytes, ${run.vmsWithErrors} VMs with errors; server CPU ${run.serverCpuPct}%, loop delay p99 ${loop?.p99 ?? "n/a"} max ${loop?.max ?? "n/a"} ms; load generators' loop delay ${JSON.stringify(run.loadGenLoopDelay)}, CPU ${JSON.stringify(run.loadGenCpuPct)}%`,
        );
        return run;
      };
      await setup(target);
      const paced = V.ratePerS > 0 ? await runOnce(V.ratePerS, target) : null;
      const max = await runOnce(0, target);
      await Promise.all(vw.map((t) => t.w.ask('vm.teardown', {}, 30_000)));
      // The same against the stub, with the same load generators.
      let stubRuns: VmotionSection['stub'] = null;
      if (stub) {
        await setup(stub);
        const sp = V.ratePerS > 0 ? await runOnce(V.ratePerS, stub, 'stub') : null;
        const sm = await runOnce(0, stub, 'stub');
        await Promise.all(vw.map((t) => t.w.ask('vm.teardown', {}, 30_000)));
        stubRuns = { paced: sp, max: sm };
      }
      await Promise.all(vw.map((t) => t.w.stop()));
      const section: VmotionSection = {
        workload:
          `${V.vms} VMs, each with one telnet client; every ${V.tickMs} ms each VM writes ${V.outBytesPerTick} bytes (paused from BEGIN to COMPLETE) and each client types ${V.inBytesPerTick} bytes; ` +
          `both streams are checked byte for byte at the other end after each run; ${V.workers} load-generator process(es); ` +
          `paced: migrations started at ${V.ratePerS}/s on VMs not migrating; max: every VM migrates again 0-${V.gapMs} ms after its last; ${V.durationMs / 1000} s each; ` +
          `switch-over = VMOTION-BEGIN sent → VMOTION-COMPLETE sent (GOAHEAD, new connection with telnet/232 negotiation, PEER, PEER-OK)` +
          (stubRuns ? `; then the same runs against the minimal option-232 stub (bench/stub.ts), with the same number of VM serial ports registered` : ''),
        vms: V.vms,
        paced,
        max,
        stub: stubRuns,
      };
      return section;
    });

    // ------------------------------------------------------------------ unix (issue 13)
    report.unix = await phase('unix', async () => {
      const U = opts.unix;
      if (!server || !tmp || !serverOpts) throw new Error('the unix phase needs a vspc the benchmark starts (not --target)');
      const dir = join(tmp, 'unix');
      mkdirSync(dir, { recursive: true });
      const configPath = join(tmp, 'unix-consoles.yaml');
      writeFileSync(configPath, 'consoles: []\n');
      // A vspc of its own: its memory per console is measured against itself before the consoles exist.
      const { range, proxyPort, adminPort } = await privatePorts(U.consoles + U.streams + 16);
      const uServer = ServerProcess.spawn({
        dbPath: join(tmp, 'unix.db'),
        proxyPort,
        adminPort,
        portRange: range,
        extraArgs: ['--config', configPath, ...opts.serverArgs],
        nodeArgs: opts.serverNodeArgs,
      });
      const extra: WorkerHandle[] = [];
      try {
        await uServer.waitReady(60_000);
        const uw = slices(U.consoles, U.workers).map((sl, i) => ({ ...sl, w: spawnWorker(`unix-${i}`) }));
        extra.push(...uw.map((u) => u.w));
        const eps = await Promise.all(uw.map((u) => u.w.ask('unix.listen', { dir, from: u.from, count: u.count }, 120_000)));
        const paths = eps.flatMap((e) => e.paths);
        await sleep(500);
        const ubase = await resources(uServer, true);
        // Declared all at once (a reload), as a hypervisor's consoles would be at start.
        const yaml = ['consoles:', ...paths.map((p, i) => `  - name: bench-unix-${i}\n    source: unix:${p}`)].join('\n') + '\n';
        writeFileSync(configPath, yaml);
        const a0 = performance.now();
        uServer.child.kill('SIGHUP');
        const attachMs = await waitConnected(U.consoles, a0, U.timeoutMs + 60_000, uServer);
        const l0 = performance.now();
        const rows = (await uServer.ports()).filter((r) => r.name?.startsWith('bench-unix-'));
        const listMs = performance.now() - l0;
        const portOf = new Map(rows.map((r) => [r.name, r]));
        log(`unix: ${U.consoles} unix-socket consoles declared and connected in ${(attachMs / 1000).toFixed(2)} s; listed ${rows.filter((r) => r.connected).length} in ${Math.round(listMs)} ms`);
        await sleep(1000);
        const uloaded = await resources(uServer, true);
        const perConsole = perPort(uloaded, ubase, U.consoles);
        log(`unix: RSS ${perConsole.rssKiB} KiB per idle console (heap ${perConsole.heapUsedKiB} KiB)`);
        // One counting client per console, then every endpoint restarts at once.
        await Promise.all(
          uw.map((u) =>
            u.w.ask(
              'unix.clients',
              {
                host: '127.0.0.1',
                ports: Array.from({ length: u.count }, (_, k) => portOf.get(`bench-unix-${u.from + k}`)?.port ?? 0),
                concurrency: 64,
                timeoutMs: 20_000,
              },
              180_000,
            ),
          ),
        );
        const rr = await Promise.all(uw.map((u) => u.w.ask('unix.restart', { downMs: U.downMs, timeoutMs: U.timeoutMs }, U.downMs + U.timeoutMs + 60_000)));
        const worst = (f: (d: Distribution) => number) => Math.max(...rr.map((r) => f(r.streamingMs)));
        const restart: UnixSection['restart'] = {
          downMs: U.downMs,
          endpoints: rr.reduce((n, r) => n + r.endpoints, 0),
          back: rr.reduce((n, r) => n + r.back, 0),
          within5s: rr.reduce((n, r) => n + r.within5s, 0),
          // Exact with one worker; with several, each percentile is the worst worker's.
          streamingMs: { n: rr.reduce((n, r) => n + r.streamingMs.n, 0), p50: worst((d) => d.p50), p90: worst((d) => d.p90), p99: worst((d) => d.p99), max: worst((d) => d.max), mean: worst((d) => d.mean) },
          reconnectMs: rr[0].reconnectMs,
          errors: rr.flatMap((r) => r.errors).slice(0, 5),
        };
        log(`unix: restart of ${restart.endpoints} endpoints after ${U.downMs} ms down: ${restart.back} streaming again (${restart.within5s} within 5 s); p50 ${restart.streamingMs.p50} p99 ${restart.streamingMs.p99} max ${restart.streamingMs.max} ms`);
        // Throughput from unix-socket consoles vs ESXi VMs on the same vspc, twice each, in the
        // order ESXi, unix, unix, ESXi: this vspc has just been through the 2,000-endpoint
        // restart and its rate drifts over the phase (the first case of the phase measured
        // up to 3× the third), so a fixed order (ESXi, unix, ESXi, unix) favoured ESXi.
        const streams = Math.min(U.streams, U.consoles);
        await Promise.all(uw.map((u) => u.w.ask('unix.streamSetup', { count: Math.ceil(streams / uw.length) })));
        const ew = slices(streams, opts.throughput.workers).map((sl, i) => ({ ...sl, w: spawnWorker(`unix-esxi-${i}`) }));
        extra.push(...ew.map((e) => e.w));
        await Promise.all(ew.map((t) => t.w.ask('tp.setup', { proxy: uServer.proxy, admin: uServer.admin, namespace: opts.namespace, from: t.from, count: t.count, timeoutMs: 20_000 }, 120_000)));
        await Promise.all(ew.map((t) => t.w.ask('tp.clients', { perVm: 1, timeoutMs: 20_000 }, 120_000)));
        const unixCases: ThroughputCase[] = [];
        const esxiCases: ThroughputCase[] = [];
        const esxiCase = async (): Promise<void> => {
          esxiCases.push(await streamCase(ew, 'vspc', () => uServer.sample(), { target: 'vspc', clientsPerVm: 1, vms: streams }, null));
        };
        const unixCase = async (): Promise<void> => {
          unixCases.push(await streamCase(uw, 'unix', () => uServer.sample(), { target: 'vspc', clientsPerVm: 1, vms: streams }, null));
        };
        for (const run of [esxiCase, unixCase, unixCase, esxiCase]) await run();
        const mean = (cs: ThroughputCase[]): ThroughputCase => ({
          ...cs[0],
          deliveredMBps: round(cs.reduce((n, c) => n + c.deliveredMBps, 0) / cs.length, 1),
          vmSentMBps: round(cs.reduce((n, c) => n + c.vmSentMBps, 0) / cs.length, 1),
          serverCpuPct: cs.every((c) => c.serverCpuPct !== null) ? round(cs.reduce((n, c) => n + (c.serverCpuPct ?? 0), 0) / cs.length, 1) : null,
          mbPerServerCpuS: cs.every((c) => c.mbPerServerCpuS !== null) ? round(cs.reduce((n, c) => n + (c.mbPerServerCpuS ?? 0), 0) / cs.length, 0) : null,
        });
        const unix = mean(unixCases);
        const esxi = mean(esxiCases);
        await Promise.all(ew.map((t) => t.w.ask('tp.teardown', {}, 30_000)));
        await Promise.all(uw.map((u) => u.w.ask('unix.teardown', {}, 30_000)));
        const section: UnixSection = {
          workload:
            `${U.consoles} consoles declared in the config file (source unix:PATH) of a vspc of their own, applied by one reload, each connecting to a unix socket server standing in for QEMU's -serial unix:PATH,server=on (${U.workers} load-generator process(es)); ` +
            `memory per idle console after a full GC${opts.memorySettle ? ' once the V8 new space had settled' : ''} against the same vspc before the consoles existed; restart: every endpoint closes and removes its socket at once, listens again ${U.downMs / 1000} s later, and writes a marker when vspc connects; a counting telnet client per console sees it; ` +
            `throughput: ${streams} of the consoles and ${streams} ESXi VMs on the same vspc stream ${opts.throughput.chunkBytes / 1024} KiB chunks to one client each as in [3], twice each in the order ESXi, unix, unix, ESXi (means)`,
          consoles: U.consoles,
          attachS: round(attachMs / 1000, 2),
          attached: rows.filter((r) => r.connected).length,
          listed: rows.length,
          listMs: Math.round(listMs),
          perConsole,
          restart,
          throughput: { streams, unix, esxi, ratio: esxi.deliveredMBps > 0 ? round(unix.deliveredMBps / esxi.deliveredMBps, 3) : null },
        };
        return section;
      } finally {
        for (const w of extra) await w.stop().catch(() => undefined);
        await uServer.stop(30_000).catch(() => uServer.kill());
      }
    });

    // ------------------------------------------------------------------ glob (issue 11)
    report.glob = await phase('glob', async () => {
      const G = opts.glob;
      const f = globFigures(G.pattern, G.sizes);
      log(`glob: ${f.sizes.map((x) => `${x.bytes} B ${x.usPerMatch} µs`).join(', ')}; growth per doubling ${f.growth.join(', ')} (steps ${f.stepGrowth.join(', ')})`);
      const section: GlobSection = {
        workload: `the VM-name glob matcher (src/util/glob.ts) with ${G.pattern} against names of only "a" (issue 11's worst case; a backtracking regex took 85 s at 1,000 characters), median of 9 timed rounds in the benchmark's own process; growth = time at 2n / time at n (linear: ≈ 2)`,
        pattern: G.pattern,
        ...f,
      };
      return section;
    });

    // ------------------------------------------------------------------ ssh
    report.ssh = await phase('ssh', async () => {
      const S = opts.ssh;
      if (!server || sshPort === null || sshKey === null) {
        log('ssh: skipped (it needs the vspc the benchmark starts, with its key)');
        return undefined;
      }
      const port = sshPort;
      const privateKey = sshKey;
      const vmW = spawnWorker('ssh-vms');
      const { names, ports } = await vmW.ask('ssh.setup', { proxy: target.proxy, admin: target.admin, namespace: opts.namespace, consoles: S.consoles, timeoutMs: 20_000 }, 120_000);
      const sw = slices(S.sessions, S.workers).map((x, i) => ({ ...x, w: spawnWorker(`ssh-${i}`) }));
      const before = await resources();
      const errors: string[] = [];
      const open = async (half: 0 | 1): Promise<SshSetupFigures> => {
        const t = performance.now();
        const c1 = target.sample();
        const rs = await Promise.all(
          sw.map((x) => {
            const first = Math.ceil(x.count / 2);
            const from = half === 0 ? x.from : x.from + first;
            const count = half === 0 ? first : x.count - first;
            return x.w.ask('ssh.open', { host: '127.0.0.1', port, privateKey, names, from, count, concurrency: S.concurrency, timeoutMs: 30_000 }, opts.phaseTimeoutMs);
          }),
        );
        const wall = (performance.now() - t) / 1000;
        const c2 = target.sample();
        const opened = rs.reduce((n, r) => n + r.opened, 0);
        errors.push(...rs.flatMap((r) => r.errors));
        return {
          sessions: opened,
          failed: rs.reduce((n, r) => n + r.failed, 0),
          ratePerS: round(opened / wall, 1),
          perSessionMs: roundDistribution(distribution(rs.flatMap((r) => r.perSession))),
          serverCpuMsPerSession: c1 && c2 && opened > 0 ? round((c2.cpuMs - c1.cpuMs) / opened, 2) : null,
        };
      };
      const alone = await open(0);
      log(`ssh: ${alone.sessions} sessions set up at ${alone.ratePerS}/s (p50 ${alone.perSessionMs.p50} p99 ${alone.perSessionMs.p99} ms; server CPU ${alone.serverCpuMsPerSession} ms per session)`);
      let duringFlood: SshSection['duringFlood'] = null;
      if (S.floodConcurrency > 0) {
        const floodW = spawnWorker('ssh-flood');
        const stranger = ed25519KeyPair('not authorized').private;
        await floodW.ask('ssh.floodStart', { host: '127.0.0.1', port, localAddress: '127.0.0.2', privateKey: stranger, concurrency: S.floodConcurrency });
        await sleep(500);
        const second = await open(1);
        const f = await floodW.ask('ssh.floodStop', {}, 30_000);
        await floodW.stop();
        duringFlood = { ...second, floodAttempts: f.attempts, floodRejected: f.rejected, floodRefusedAtAccept: f.refusedAtAccept, floodOther: f.other };
        if (f.errors.length > 0) errors.push(...f.errors.map((e) => `flood: ${e}`));
        log(
          `ssh: ${second.sessions} more at ${second.ratePerS}/s (p50 ${second.perSessionMs.p50} p99 ${second.perSessionMs.p99} ms; server CPU ${second.serverCpuMsPerSession} ms per session) during ${f.attempts} failed logins from 127.0.0.2 (${f.rejected} examined, ${f.refusedAtAccept} refused at accept)`,
        );
      } else {
        await open(1);
      }
      const after = await resources();
      const opened = alone.sessions + (duringFlood?.sessions ?? 0);
      const per = (a: number | null | undefined, b: number | null | undefined, unit: number) => (a !== null && a !== undefined && b !== null && b !== undefined && opened > 0 ? round((b - a) / unit / opened, 1) : null);
      const perSession = {
        rssKiB: per(before.proc?.rssBytes, after.proc?.rssBytes, 1024),
        heapUsedKiB: per(before.mem?.heapUsed, after.mem?.heapUsed, 1024),
        fds: per(before.proc?.fds, after.proc?.fds, 1),
      };
      log(`ssh: ${opened} sessions: RSS ${perSession.rssKiB} KiB, heap ${perSession.heapUsedKiB} KiB, ${perSession.fds} fds per session`);

      // Keystroke latency through SSH and through telnet, on the same consoles, in the same run.
      const probes = Math.min(S.latencyProbes, S.consoles, sw[0]?.count ?? 0);
      const lat = await sw[0].w.ask(
        'ssh.latency',
        { probes, telnetHost: target.proxy.host, telnetPorts: ports.slice(0, probes), durationMs: S.latencyDurationMs, intervalMs: S.intervalMs, timeoutMs: 20_000 },
        S.latencyDurationMs + 60_000,
      );
      const viaSsh = roundDistribution(distribution(lat.ssh));
      const viaTelnet = roundDistribution(distribution(lat.telnet));
      const latency = {
        ssh: viaSsh,
        telnet: viaTelnet,
        added: { p50: round(viaSsh.p50 - viaTelnet.p50), p99: round(viaSsh.p99 - viaTelnet.p99), max: round(viaSsh.max - viaTelnet.max) },
        errors: lat.errors,
      };
      if (lat.errorSamples.length > 0) errors.push(...lat.errorSamples.map((e) => `latency: ${e}`));
      log(`ssh latency: p50 ${viaSsh.p50} p99 ${viaSsh.p99} ms; telnet p50 ${viaTelnet.p50} p99 ${viaTelnet.p99} ms`);

      // VM → SSH clients: every console prints at a steady rate to its sessions.
      await vmW.ask('ssh.streamStart', { bytesPerSec: S.streamBytesPerSec, tickMs: S.streamTickMs });
      await sleep(500);
      // Stopped and restarted at once only to read the count sent so far.
      const sent1 = (await vmW.ask('ssh.streamStop', {})).bytesSent;
      await vmW.ask('ssh.streamStart', { bytesPerSec: S.streamBytesPerSec, tickMs: S.streamTickMs });
      const b1 = await Promise.all(sw.map((x) => x.w.ask('ssh.bytes', {})));
      const p1 = target.sample();
      await sleep(S.streamDurationMs);
      const b2 = await Promise.all(sw.map((x) => x.w.ask('ssh.bytes', {})));
      const p2 = target.sample();
      const sent2 = (await vmW.ask('ssh.streamStop', {})).bytesSent;
      let delivered = 0;
      for (let i = 0; i < sw.length; i++) delivered += (b2[i].bytes - b1[i].bytes) / ((b2[i].at - b1[i].at) / 1000);
      const cpu = p1 && p2 ? cpuPercent(p1, p2) : null;
      const throughput = {
        deliveredMBps: round(delivered / 1e6, 2),
        vmSentMBps: round((sent2 - sent1) / (S.streamDurationMs / 1000) / 1e6, 2),
        serverCpuPct: cpu === null ? null : round(cpu, 1),
        mbPerServerCpuS: cpu ? round(delivered / 1e6 / (cpu / 100), 1) : null,
        sessionsOpenAfter: b2.reduce((n, b) => n + b.open, 0),
      };
      log(`ssh throughput: ${throughput.deliveredMBps} MB/s to ${throughput.sessionsOpenAfter} sessions, server CPU ${throughput.serverCpuPct}%`);

      await Promise.all(sw.map((x) => x.w.ask('ssh.close', {}, 60_000)));
      await vmW.ask('ssh.teardown', {}, 30_000);
      await Promise.all([...sw.map((x) => x.w.stop()), vmW.stop()]);
      const section: SshSection = {
        workload:
          `${S.sessions} SSH sessions (ed25519 key, \`ssh console@vspc NAME\` without a terminal, ssh2 clients in ${S.workers} load-generator process(es), ${S.concurrency} set up at once in each) across ${S.consoles} echoing consoles; ` +
          `setup = TCP connect → key exchange → public-key login → exec → lock granted; the second half during ${S.floodConcurrency} lanes of failed logins with an unknown key from 127.0.0.2; ` +
          `RSS per session = server RSS after all sessions minus before, over the sessions; latency: one byte typed on ${probes} sessions and on a telnet client of the same consoles, alternately, echoed by the VM, ${S.latencyDurationMs / 1000} s; ` +
          `throughput: every console prints ${S.streamBytesPerSec} B/s (${S.streamTickMs} ms ticks) to its ${Math.round(S.sessions / S.consoles)} sessions for ${S.streamDurationMs / 1000} s`,
        consoles: S.consoles,
        sessions: S.sessions,
        errors: [...new Set(errors)].slice(0, 10),
        alone,
        duringFlood,
        perSession,
        latency,
        throughput,
      };
      return section;
    });

    // ------------------------------------------------------------------ tunnel
    // Self-contained: its own QEMU guest and its own vspc (whatever --target says), so
    // that vspc's RSS per stream is the tunnel's alone.
    const tunnelTimeoutMs = Math.max(opts.phaseTimeoutMs, 600_000);
    report.tunnel = await phase(
      'tunnel',
      async () => {
        const problem = tunnelGuestProblem();
        if (problem) {
          notRun.tunnel = problem;
          log(`tunnel: NOT RUN: ${problem}`);
          return undefined;
        }
        return runTunnelPhase(opts.tunnel, log, tunnelTimeoutMs, opts.serverNodeArgs);
      },
      tunnelTimeoutMs,
    );

    // ------------------------------------------------------------------ cluster
    // Self-contained: its own PostgreSQL, three nodes and a single-node SQLite vspc beside them.
    report.cluster = await phase('cluster', () =>
      runClusterPhase(
        {
          ...opts.cluster,
          connectConcurrency: opts.connectConcurrency,
          namespace: opts.namespace,
          phaseTimeoutMs: opts.phaseTimeoutMs,
          serverArgs: opts.serverArgs,
          nodeArgs: opts.serverNodeArgs,
        },
        log,
        spawnWorker,
      ),
    );

    if (!server && opts.cleanup) await forgetBenchPorts(target, log);
  } catch (err) {
    failures.setup = err instanceof Error ? err.message : String(err);
    log(`benchmark failed: ${failures.setup}`);
  } finally {
    await Promise.all(workers.map((w) => w.stop(3000).catch(() => undefined)));
    if (stub) await stub.stop(5000).catch(() => stub?.kill());
    if (server) {
      // Graceful, so that --cpu-prof writes its profile.
      await server.stop(30_000).catch(() => server?.kill());
      report.serverLog = { lines: server.logLines, top: server.logSummary(10) };
    }
    killAll();
    if (tmp) removeTempDir(tmp);
  }
  report.durationS = round((performance.now() - t0) / 1000, 1);
  return report;
}

/**
 * Ports for the vspc the benchmark starts, all free now and reserved against other
 * benchmark and test processes (test/support/ports.ts): its client port range and,
 * right after it, its proxy and admin ports. Chosen in 20000-32767: above vspc's default
 * client range 10000-19999 and its 13370-13372, so that a vspc already running on this
 * host with the defaults is never connected to; below Linux's ephemeral range
 * (32768-60999), so that the load generators' own outgoing sockets never take a port
 * the server needs. An explicit `range` is only checked: a port in it that is taken
 * (by a running vspc, say) would send benchmark clients to whatever holds it.
 */
export async function privatePorts(
  needed: number,
  range?: { start: number; end: number },
): Promise<{ range: { start: number; end: number }; proxyPort: number; adminPort: number }> {
  if (!range) {
    const block = await reservePortRange(needed + 2, { from: PRIVATE_PORTS.from, to: PRIVATE_PORTS.to });
    const end = block.start + needed - 1;
    return { range: { start: block.start, end }, proxyPort: end + 1, adminPort: end + 2 };
  }
  if (range.end - range.start + 1 < needed) throw new Error(`--port-range ${range.start}-${range.end} has fewer than the ${needed} ports this run needs`);
  for (let p = range.start; p <= range.end; p++) {
    if (!(await canBind(p))) {
      throw new Error(
        `--port-range ${range.start}-${range.end}: port ${p} is in use (a running vspc?); the benchmark's clients would reach whatever holds it. ` +
          'Give a free range, or leave --port-range out to have one chosen',
      );
    }
  }
  const own = await reservePortRange(2, { from: Math.max(range.end + 1, PRIVATE_PORTS.from), to: PRIVATE_PORTS.to });
  return { range, proxyPort: own.start, adminPort: own.end };
}

/** settledMemory: the new space's committed size must stay the same this long... */
const SETTLE_STABLE_MS = 10_000;
/** ...and the wait ends after this long in any case (the figure is then taken as it is). */
const SETTLE_MAX_MS = 30_000;

/**
 * memoryUsage() after a full GC, once V8's young generation has settled: polled every
 * second (each poll a full GC) until the new space's committed size has not changed for
 * SETTLE_STABLE_MS (at most SETTLE_MAX_MS).
 *
 * Why: a burst of work (start-up, 9,000 registrations, a reload declaring 2,000
 * consoles) makes V8 grow the new space (here from 1 to 32 MiB committed, resident once
 * used), and V8 shrinks it again at the first GC after ≈ 5 s of low allocation (its
 * allocation-throughput window), not at a GC right after the burst. Sampled 1 s after
 * the burst, "RSS per idle port" held up to 31 MiB of young generation the idle server
 * gives back seconds later: at 2,000 unix consoles ≈ 8 KiB per console, at 9,000 ESXi
 * ports ≈ 3.5 KiB, and the baselines (vspc before the consoles existed, the stub) were
 * sampled in whatever state their own start left them (bench/heap-diff.ts prints the
 * spaces). Every sample of a per-port memory figure (vspc and stub, baseline and loaded)
 * goes through here, so the figures compare idle with idle.
 */
export async function settledMemory(
  t: Pick<Target, 'memory'>,
  o: { stableMs: number; maxMs: number; pollMs: number } = { stableMs: SETTLE_STABLE_MS, maxMs: SETTLE_MAX_MS, pollMs: 1000 },
  /** The time source (milliseconds) and the wait between polls; a test gives a fake one, so that the outcome does not depend on how late its timers fire. */
  clock: { now(): number; sleep(ms: number): Promise<unknown> } = { now: () => performance.now(), sleep },
): Promise<ServerMemory | null> {
  const t0 = clock.now();
  let mem = await t.memory(true);
  let size = mem?.spaces?.new_space?.size;
  // A target that does not report its spaces (an operator's deployment) is taken as it is.
  if (size === undefined) return mem;
  let stableSince = clock.now();
  while (clock.now() - stableSince < o.stableMs && clock.now() - t0 < o.maxMs) {
    await clock.sleep(o.pollMs);
    const next = await t.memory(true);
    if (!next) return mem;
    mem = next;
    const s = next.spaces?.new_space?.size;
    if (s !== size) {
      size = s;
      stableSince = clock.now();
    }
  }
  return mem;
}

/** Where the benchmark's own vspc takes its ports (see privatePorts). */
export const PRIVATE_PORTS = { from: 20000, to: 32767 } as const;

async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Client port by VM key, for the VM serial ports whose client port vspc listens on. A
 * port vspc could not bind (listenError) is left out, and said: whatever holds it is
 * not the vspc under test, and the benchmark never connects to it.
 */
function listening(rows: PortView[], log: (l: string) => void): Map<string, number> {
  const bad = rows.filter((r) => r.listenError);
  if (bad.length > 0) log(`${bad.length} VM serial ports have no client listener (e.g. port ${bad[0].port}: ${bad[0].listenError}); no client connects to those`);
  return new Map(rows.filter((r) => !r.listenError).map((r) => [r.key, r.port]));
}

/** Removes the benchmark's VM serial ports from an operator's registry. */
async function forgetBenchPorts(target: Target, log: (l: string) => void): Promise<void> {
  const { adminPost } = await import('./server-process.js');
  const rows = (await target.ports()).filter((r) => r.key.startsWith('b7e4c000-'));
  let n = 0;
  for (const r of rows) {
    try {
      await adminPost(target.admin, `/api/v1/forget?vm=${r.port}`);
      n++;
    } catch (err) {
      log(`cleanup: cannot forget ${r.uuid}: ${(err as Error).message}`);
    }
  }
  log(`cleanup: forgot ${n} benchmark VM serial ports`);
}

