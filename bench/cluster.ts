/**
 * The cluster phase (`npm run bench -- --phases cluster`, issue 18): ESXi serial ports
 * across three vspc nodes sharing one PostgreSQL (a throwaway server started here, as
 * the tests do: test/support/postgres.ts), each node on its own loopback address
 * (127.0.0.2-127.0.0.4) with the same port numbers. Measured:
 *
 * - per node: time to register its third of the VM serial ports (all three nodes at
 *   once), and RSS per port; beside it, in the same run, one vspc on SQLite registering
 *   the same number of ports (the single-node figure);
 * - failover: half of node 2's and node 3's load leaves (so that the survivors can hold
 *   node 1's within their fd limits), node 1 is SIGKILLed, and its VMs reconnect (half
 *   to node 2, half to node 3) as ESXi does: time from the kill to every one of them
 *   registered and connected again, its console port bound on the new node.
 * - vMotion (after registration, before the failover): movers homed on every node, each
 *   with a telnet client attached on its home node, migrate back to back under light
 *   traffic both ways; half of them land their destination on the source's node
 *   ("same-node"), the other half on another node and back in turn ("cross-node": the
 *   nodes hand the console over through PostgreSQL and the cluster link, and the home
 *   node relays its client while the console is away). Both kinds run at once with the
 *   same concurrency: per kind, vMotions per second, switch-over (COMPLETE sent by the
 *   destination → its next bytes at the attached client; and → the bytes the client
 *   typed right after COMPLETE at the destination VM) and every byte checked.
 *
 * As root, every vspc's RLIMIT_NOFILE is raised (prlimit(1) on its pid) past the
 * shell's hard limit, so that a node can hold more than ~9,000 ports (two fds each).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HostPort } from '../src/config/config.js';
import { distribution, round, roundDistribution, sleep, type Distribution } from './common.js';
import { removeTempDir, trackTempDir, type WorkerHandle } from './ipc.js';
import { fdLimit } from './proc.js';
import { ServerProcess, type ServerMemory } from './server-process.js';
import { canBind, reservePortRange } from '../test/support/ports.js';
import { startPostgres } from '../test/support/postgres.js';

export interface ClusterBenchOptions {
  /** ESXi serial ports across the three nodes. */
  vms: number;
  /** Console port range shared by the nodes (unique cluster-wide); default below the ephemeral range. */
  portRange?: { start: number; end: number };
  /** Load-generator processes per node (at least 2: failover moves one node's load to two). */
  workersPerNode: number;
  connectConcurrency: number;
  namespace: number;
  phaseTimeoutMs: number;
  serverArgs: string[];
  nodeArgs: string[];
  /** vMotions of each kind (same-node, cross-node); 0: no vMotion measurement. */
  vmotions: number;
  /** Movers of each kind homed on each node (the concurrency of each kind is 3 × this). */
  vmotionVms: number;
}

export const DEFAULT_CLUSTER_OPTIONS = { vms: 27_000, workersPerNode: 2, vmotions: 300, vmotionVms: 4 } as const;

/** RLIMIT_NOFILE given to every vspc of the phase when the benchmark runs as root (fs.nr_open is the ceiling). */
const NODE_FD_LIMIT = 65_536;

/** Light traffic during the vMotions: every mover writes and its client types this much per tick. */
const VMOTION_TRAFFIC = { tickMs: 50, outBytesPerTick: 32, inBytesPerTick: 4, probeBytes: 16 } as const;

/** One kind of vMotion (destination on the source's node or on another) over all nodes. */
export interface ClusterVmotionFigures {
  movers: number;
  completed: number;
  failed: number;
  /** Completed per second of the kind's own run (both kinds run at once). */
  ratePerS: number;
  /** COMPLETE sent by the destination → the destination's next bytes at the attached client (ms). */
  switchoverOutMs: Distribution;
  /** COMPLETE sent → the bytes the client typed right after it at the destination VM (ms). */
  switchoverInMs: Distribution;
  /** BEGIN sent → PEER-OK received on the destination (ms). */
  handshakeMs: Distribution;
  bytesVmToClient: number;
  bytesClientToVm: number;
  lostBytes: number;
  duplicatedBytes: number;
  vmsWithErrors: number;
  errors: string[];
}

export interface ClusterNodeFigures {
  node: string;
  vmPorts: number;
  registered: number;
  /** Connections that timed out during the handshake and connected again. */
  retried: number;
  timeToRegisterS: number;
  registerRatePerS: number;
  rssMiB: number | null;
  rssKiBPerPort: number | null;
  fds: number | null;
  fdLimit: number | null;
}

export interface ClusterSection {
  workload: string;
  vms: number;
  nodes: ClusterNodeFigures[];
  /** All three nodes registering at once: until the last one is done. */
  allRegisteredS: number;
  /** One vspc on SQLite, the same number of ports as one node, in the same run. */
  sqlite: ClusterNodeFigures | null;
  failover: {
    killed: string;
    vmPorts: number;
    /** SIGKILL → every VM of the killed node registered and connected again on the others. */
    toAllBackS: number;
    /** VMs that a 60 s round of retries did not bring back (a later round did). */
    reconnectFailures: number;
    errors: string[];
  } | null;
  vmotion: { same: ClusterVmotionFigures; cross: ClusterVmotionFigures; loadGenLoopDelay: Array<{ p99: number; max: number }> } | null;
  limits: string;
}

const FIRST_ADDRESS = 2;

/** Console ports of the nodes: below Linux's ephemeral range (32768-60999), which outgoing connections need. */
function defaultRange(vms: number): { start: number; end: number } {
  const start = 2000;
  return { start, end: Math.min(32_767, start + vms + Math.max(500, Math.ceil(vms * 0.05))) };
}

function slices(total: number, parts: number): Array<{ from: number; count: number }> {
  const out: Array<{ from: number; count: number }> = [];
  let from = 0;
  for (let i = 0; i < parts; i++) {
    const count = Math.floor(total / parts) + (i < total % parts ? 1 : 0);
    out.push({ from, count });
    from += count;
  }
  return out;
}

async function waitConnected(t: ServerProcess, n: number, since: number, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = await t.status().catch(() => null);
    if (s && s.vmPortsConnected >= n) return performance.now() - since;
    if (performance.now() > deadline) throw new Error(`${t.proxy.host}: only ${s?.vmPortsConnected ?? '?'} of ${n} VM serial ports connected after ${timeoutMs} ms`);
    await sleep(100);
  }
}

async function rss(t: ServerProcess): Promise<{ rss: number | null; fds: number | null }> {
  const mem: ServerMemory | null = await t.memory(true).catch(() => null);
  await sleep(200);
  const p = t.sample();
  return { rss: p?.rssBytes ?? mem?.rss ?? null, fds: p?.fds ?? null };
}

interface Loaded {
  server: ServerProcess;
  name: string;
  workers: Array<{ w: WorkerHandle; from: number; count: number }>;
  base: { rss: number | null; fds: number | null };
}

/**
 * Connects every worker's slice to `l.server` and waits until all are registered; a VM
 * whose handshake timed out (registrations queue behind the database) connects again,
 * as ESXi retries, up to 5 rounds.
 */
async function load(l: Loaded, o: ClusterBenchOptions, count: number): Promise<{ ms: number; connected: number; errors: string[]; retried: number }> {
  const s0 = performance.now();
  let errors: string[] = [];
  let retried = 0;
  for (let round = 0; round < 5; round++) {
    const r = await Promise.all(
      l.workers.map((x) =>
        // Idempotent: only the worker's VMs without a connection connect (again).
        x.w.ask('bulk.connect', { proxy: l.server.proxy, namespace: o.namespace, from: x.from, count: x.count, concurrency: o.connectConcurrency, timeoutMs: 60_000 }, o.phaseTimeoutMs),
      ),
    );
    const failed = r.reduce((n, x) => n + x.failed, 0);
    errors = r.flatMap((x) => x.errors);
    if (failed === 0) break;
    retried += failed;
  }
  const ms = await waitConnected(l.server, count, s0, o.phaseTimeoutMs - 10_000);
  return { ms, connected: count, errors, retried };
}

async function figures(l: Loaded, count: number, r: { ms: number; connected: number; retried: number }): Promise<ClusterNodeFigures> {
  const after = await rss(l.server);
  return {
    node: l.name,
    vmPorts: count,
    registered: r.connected,
    retried: r.retried,
    timeToRegisterS: round(r.ms / 1000, 2),
    registerRatePerS: Math.round((count / r.ms) * 1000),
    rssMiB: after.rss === null ? null : round(after.rss / 1024 / 1024, 1),
    rssKiBPerPort: after.rss !== null && l.base.rss !== null ? round((after.rss - l.base.rss) / count / 1024, 2) : null,
    fds: after.fds,
    fdLimit: l.server.pid !== null ? fdLimit(l.server.pid) : null,
  };
}

export async function runClusterPhase(o: ClusterBenchOptions, log: (l: string) => void, spawnWorker: (name: string) => WorkerHandle): Promise<ClusterSection> {
  const hosts = [0, 1, 2].map((i) => `127.0.0.${FIRST_ADDRESS + i}`);
  for (const h of hosts) if (!(await canBind(0, h))) throw new Error(`cannot bind ${h}: the cluster phase needs 127.0.0.2-127.0.0.4 (Linux routes 127/8 to lo)`);
  const perNode = Math.floor(o.vms / 3);
  const wpn = Math.max(2, o.workersPerNode);
  const range = o.portRange ?? defaultRange(o.vms);
  if (range.end - range.start + 1 < o.vms) throw new Error(`cluster: port range ${range.start}-${range.end} is smaller than ${o.vms} VM serial ports`);
  const own = await reservePortRange(2);
  const tmp = mkdtempSync(join(tmpdir(), 'vspc-bench-cluster-'));
  trackTempDir(tmp);
  const servers: ServerProcess[] = [];
  const root = process.getuid?.() === 0;
  /** Why the nodes' descriptor limit could not be raised (null: raised, or not root). */
  let fdRaise: string | null = null;
  // The nodes' shared secret for the cluster link (cross-node vMotion relays through it).
  const secretFile = join(tmp, 'cluster.secret');
  writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  chmodSync(secretFile, 0o600);
  // Every owned console is one advisory lock in PostgreSQL's shared lock table, which
  // holds max_locks_per_transaction × (max_connections + max_prepared_transactions)
  // locks (64 × 50 here by default: too few for a cluster's consoles).
  const pg = await startPostgres(60_000, { max_locks_per_transaction: maxLocksFor(o.vms) });
  const spawn = (host: string, db: string, extra: string[]): ServerProcess => {
    const s = ServerProcess.spawn({ host, dbPath: db, proxyPort: own.start, adminPort: own.end, portRange: range, extraArgs: [...extra, '--broker-socket', 'off', ...o.serverArgs], nodeArgs: o.nodeArgs });
    servers.push(s);
    // Root with CAP_SYS_RESOURCE may raise a child's hard limit beyond its own;
    // descriptors opened from then on count against the new limit. Without the
    // capability (a container may drop it) the limit stays, and the figures say so.
    if (root && fdRaise === null && s.pid !== null) {
      try {
        execFileSync('prlimit', ['--pid', String(s.pid), `--nofile=${NODE_FD_LIMIT}:${NODE_FD_LIMIT}`], { stdio: ['ignore', 'ignore', 'pipe'] });
      } catch (err) {
        fdRaise = `prlimit --nofile=${NODE_FD_LIMIT}:${NODE_FD_LIMIT} refused (${String((err as { stderr?: Buffer }).stderr ?? err).trim().replace(/^prlimit: /, '')}${hasCapSysResource() ? '' : '; this process lacks CAP_SYS_RESOURCE'})`;
        log(`cluster: cannot raise the nodes' RLIMIT_NOFILE: ${fdRaise}`);
      }
    }
    return s;
  };
  const workersFor = (name: string, offset: number): Loaded['workers'] =>
    slices(perNode, wpn).map((s, i) => ({ w: spawnWorker(`cluster-${name}-${i}`), from: offset + s.from, count: s.count }));
  try {
    // ---- the single-node SQLite figure, one node's share of the load
    let sqlite: ClusterNodeFigures | null = null;
    {
      const server = spawn('127.0.0.1', join(tmp, 'single.db'), []);
      await server.waitReady(60_000);
      const l: Loaded = { server, name: 'single (SQLite)', workers: workersFor('single', 0), base: await rss(server) };
      const r = await load(l, o, perNode);
      sqlite = await figures(l, perNode, r);
      log(`cluster: single node on SQLite: ${r.connected} VM serial ports in ${sqlite.timeToRegisterS} s, RSS ${sqlite.rssKiBPerPort} KiB per port`);
      await Promise.all(l.workers.map((x) => x.w.ask('bulk.disconnect', { timeoutMs: 60_000 }, 90_000).catch(() => undefined)));
      await Promise.all(l.workers.map((x) => x.w.stop()));
      await server.stop(30_000);
    }

    // ---- three nodes on PostgreSQL
    const db = await pg.createDatabase();
    const nodes: Loaded[] = [];
    for (const [i, host] of hosts.entries()) {
      const server = spawn(host, db, ['--node-id', `node-${i + 1}`, '--cluster-listen', `${host}:0`, '--cluster-secret-file', secretFile]);
      await server.waitReady(60_000);
      nodes.push({ server, name: `node-${i + 1}`, workers: workersFor(`node${i + 1}`, i * perNode), base: await rss(server) });
    }
    log(`cluster: 3 nodes on PostgreSQL (${hosts.join(', ')}), console ports ${range.start}-${range.end}`);
    const t0 = performance.now();
    const results = await Promise.all(nodes.map((l) => load(l, o, perNode)));
    const allMs = performance.now() - t0;
    const nodeFigures = await Promise.all(nodes.map((l, i) => figures(l, perNode, results[i])));
    for (const f of nodeFigures) log(`cluster: ${f.node}: ${f.registered} VM serial ports in ${f.timeToRegisterS} s, RSS ${f.rssKiBPerPort} KiB per port, ${f.fds} fds of ${f.fdLimit}`);

    // ---- vMotion: same-node and cross-node side by side
    const vmotion = o.vmotions > 0 ? await runVmotions(nodes, o, log, spawnWorker) : null;

    // ---- failover: make room on the survivors, kill node 1, its VMs reconnect to them
    let failover: ClusterSection['failover'] = null;
    {
      const [dead, a, b] = nodes;
      await Promise.all([a.workers[wpn - 1], b.workers[wpn - 1]].map((x) => x.w.ask('bulk.disconnect', { timeoutMs: 60_000 }, 90_000)));
      const remaining = (l: Loaded) => l.workers.slice(0, wpn - 1).reduce((n, x) => n + x.count, 0);
      await Promise.all([a, b].map((l) => waitForCount(l.server, remaining(l), 60_000)));
      const toA = dead.workers.filter((_, i) => i % 2 === 0);
      const toB = dead.workers.filter((_, i) => i % 2 === 1);
      const want = (l: Loaded, moved: Loaded['workers']) => remaining(l) + moved.reduce((n, x) => n + x.count, 0);
      const k0 = performance.now();
      dead.server.kill();
      await dead.server.exited;
      // As ESXi does, a VM whose new connection is closed again (e.g. refused while
      // PostgreSQL has not yet dropped the dead node's locks: WILL-PROXY comes before
      // the registration) keeps retrying: rounds of bulk.reconnect until all are back.
      let back = false;
      let failed = 0;
      const errors: string[] = [];
      const reconnect = (xs: Loaded['workers'], to: HostPort) =>
        xs.map(async (x) => {
          await x.w.ask('bulk.waitClosed', { timeoutMs: 30_000 }, 40_000);
          while (!back) {
            const r = await x.w.ask('bulk.reconnect', { timeoutMs: 60_000, retryMs: 1000, connectTimeoutMs: 10_000, proxy: to }, 90_000);
            failed += r.failed;
            errors.push(...r.errors);
            if (r.reconnected === 0) await sleep(250);
          }
        });
      const rs = Promise.all([...reconnect(toA, a.server.proxy), ...reconnect(toB, b.server.proxy)]);
      rs.catch(() => undefined);
      try {
        await Promise.all([waitConnected(a.server, want(a, toA), k0, o.phaseTimeoutMs - 20_000), waitConnected(b.server, want(b, toB), k0, o.phaseTimeoutMs - 20_000)]);
      } finally {
        back = true;
      }
      const backMs = performance.now() - k0;
      await rs;
      failover = {
        killed: dead.name,
        vmPorts: perNode,
        toAllBackS: round(backMs / 1000, 2),
        reconnectFailures: failed,
        errors: errors.slice(0, 5),
      };
      log(`cluster: ${dead.name} SIGKILLed with ${perNode} VM serial ports: all back on node-2/node-3 after ${failover.toAllBackS} s`);
    }
    const limitNote = !root ? ' (the benchmark raises it with prlimit when run as root)' : fdRaise ? ` (not raised: ${fdRaise})` : ' (raised by the benchmark with prlimit, as root)';
    return {
      workload: `${o.vms} simulated ESXi VM serial ports across 3 vspc nodes (127.0.0.2-4) on one PostgreSQL ${pgVersion(pg.log())}(a throwaway server on a unix socket, fsync off, max_locks_per_transaction ${maxLocksFor(o.vms)}), ${perNode} per node from ${wpn} load-generator processes per node, all nodes registering at once; beside it one vspc on SQLite with ${perNode}; failover: half of node-2's and node-3's VMs leave, node-1 is SIGKILLed and its ${perNode} VMs reconnect to node-2 and node-3 (retry within 0.5-1.5 s)` +
        (vmotion
          ? `; vMotion (before the failover): ${o.vmotions} of each kind, back to back, by ${vmotion.same.movers} + ${vmotion.cross.movers} more VMs (${o.vmotionVms} of each kind homed on each node, a telnet client attached on its home node), both kinds at once; ` +
            `same-node: the destination connects to the source's node; cross-node: to another node, and back home the next time (the home node relays its client meanwhile); ` +
            `every ${VMOTION_TRAFFIC.tickMs} ms each VM writes ${VMOTION_TRAFFIC.outBytesPerTick} bytes (not between BEGIN and COMPLETE) and its client types ${VMOTION_TRAFFIC.inBytesPerTick}, every byte checked at the other end; ` +
            `switch-over: the destination writes ${VMOTION_TRAFFIC.probeBytes} bytes right after sending COMPLETE and the client types ${VMOTION_TRAFFIC.probeBytes}: COMPLETE → the last of them at the client (→ client) and at the destination VM connection (→ VM); a VM migrates again when both arrived`
          : ''),
      vms: o.vms,
      nodes: nodeFigures,
      allRegisteredS: round(allMs / 1000, 2),
      sqlite,
      failover,
      vmotion,
      limits:
        `each vspc process holds two fds per ESXi serial port (connection + listener) and RLIMIT_NOFILE is ${nodeFigures[0]?.fdLimit ?? '?'} per process here${limitNote}, so one node holds at most ~${Math.floor(((nodeFigures[0]?.fdLimit ?? 20000) - 200) / 2)} ports; ` +
        `the console ports of the cluster come from ${range.start}-${range.end} (below the ephemeral range: at most ${32_767 - 2000 + 1} from 2000); failover to two survivors needs each to have room for half of the dead node's`,
    };
  } finally {
    for (const s of servers) s.kill();
    await Promise.all(servers.map((s) => s.exited));
    await pg.stop();
    removeTempDir(tmp);
  }
}

async function runVmotions(nodes: Loaded[], o: ClusterBenchOptions, log: (l: string) => void, spawnWorker: (name: string) => WorkerHandle): Promise<NonNullable<ClusterSection['vmotion']>> {
  const proxies = nodes.map((l) => l.server.proxy);
  const per = slices(o.vmotions, nodes.length);
  const ws = nodes.map((_, i) => spawnWorker(`cluster-vmotion-${i + 1}`));
  try {
    await Promise.all(
      ws.map((w, i) =>
        w.ask('cvm.setup', { nodes: proxies, home: i, admin: nodes[i].server.admin, namespace: o.namespace, from: i * o.vmotionVms * 2, perKind: o.vmotionVms, timeoutMs: 60_000 }, 120_000),
      ),
    );
    const rs = await Promise.all(
      ws.map((w, i) => w.ask('cvm.run', { vmotionsPerKind: per[i].count, ...VMOTION_TRAFFIC, quiesceMs: 10_000, timeoutMs: 20_000 }, o.phaseTimeoutMs)),
    );
    const fig = (kind: 'same' | 'cross'): ClusterVmotionFigures => {
      const k = rs.map((r) => r[kind]);
      const completed = k.reduce((n, x) => n + x.completed, 0);
      return {
        movers: k.reduce((n, x) => n + x.movers, 0),
        completed,
        failed: k.reduce((n, x) => n + x.failed, 0),
        ratePerS: round((completed / Math.max(...k.map((x) => x.elapsedMs))) * 1000, 1),
        switchoverOutMs: roundDistribution(distribution(k.flatMap((x) => x.switchoverOut))),
        switchoverInMs: roundDistribution(distribution(k.flatMap((x) => x.switchoverIn))),
        handshakeMs: roundDistribution(distribution(k.flatMap((x) => x.handshake))),
        bytesVmToClient: k.reduce((n, x) => n + x.bytesVmToClient, 0),
        bytesClientToVm: k.reduce((n, x) => n + x.bytesClientToVm, 0),
        lostBytes: k.reduce((n, x) => n + x.lostVmToClient + x.lostClientToVm, 0),
        duplicatedBytes: k.reduce((n, x) => n + x.duplicated, 0),
        vmsWithErrors: k.reduce((n, x) => n + x.vmsWithErrors, 0),
        errors: [...k.flatMap((x) => x.errors), ...k.flatMap((x) => x.errorDetails)].slice(0, 10),
      };
    };
    const out = { same: fig('same'), cross: fig('cross'), loadGenLoopDelay: rs.map((r) => r.loadGenLoopDelay) };
    for (const [name, f] of [['same-node', out.same], ['cross-node', out.cross]] as const) {
      log(
        `cluster: ${name} vMotions: ${f.completed} completed (${f.ratePerS}/s, ${f.movers} at a time), ${f.failed} failed; switch-over to the client p50 ${f.switchoverOutMs.p50} p99 ${f.switchoverOutMs.p99} ms, ` +
          `to the VM p50 ${f.switchoverInMs.p50} p99 ${f.switchoverInMs.p99} ms; BEGIN → PEER-OK p50 ${f.handshakeMs.p50} p99 ${f.handshakeMs.p99} ms; lost ${f.lostBytes}, duplicated ${f.duplicatedBytes} bytes${f.errors.length ? `; errors: ${f.errors.join('; ')}` : ''}`,
      );
    }
    await Promise.all(ws.map((w) => w.ask('cvm.teardown', {}, 60_000)));
    return out;
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
  }
}

async function waitForCount(t: ServerProcess, n: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const s = await t.status().catch(() => null);
    if (s && s.vmPortsConnected <= n) return;
    if (performance.now() > deadline) throw new Error(`${t.proxy.host}: still ${s?.vmPortsConnected ?? '?'} VM serial ports connected, expected ${n}`);
    await sleep(100);
  }
}

/** max_locks_per_transaction for `consoles` owned at once by the nodes of a test server (max_connections 50), with room to spare. */
export function maxLocksFor(consoles: number): number {
  return Math.max(64, Math.ceil((consoles * 1.5 + 1000) / 50));
}

/** CAP_SYS_RESOURCE (bit 24) in this process's effective capabilities (Linux). */
function hasCapSysResource(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 24n)) !== 0n;
  } catch {
    return false;
  }
}

function pgVersion(log: string): string {
  const m = /PostgreSQL (\d+(\.\d+)?)/.exec(log);
  return m ? `${m[1]} ` : '';
}
