/**
 * A load-generator process of the benchmark (forked by the orchestrator, driven over
 * IPC: the commands of `WorkerApi` in worker-api.ts). It holds simulated ESXi VM
 * connections (`SimulatedVm`) and telnet clients (`TelnetUser`) and runs one phase's
 * traffic at a time. Data is counted, not collected; where zero loss must be proven,
 * streams follow a known pattern and are checked byte for byte (`PatternChecker`).
 *
 * Everything is bounded: each command has its own deadline, and the process exits
 * when the orchestrator goes away (its IPC channel closes).
 */
import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import ssh2 from 'ssh2';
import type { HostPort } from '../src/util/net.js';
import type { PortView } from '../src/admin/views.js';
import type { ClusterVmKindResult, Empty, SshOpenRequest, StreamSet, ThroughputSample, VmotionRunRequest, VmotionRunResult, VmSetupRequest, WorkerApi, WorkerCall, WorkerCommand, WorkerHandlers, WorkerReply } from './worker-api.js';
import { adminGet, type AdminEndpoint } from './server-process.js';
import { Option } from '../src/protocol/telnet/constants.js';
import { SimulatedVm } from '../test/support/sim/esxi-simulator.js';
import { TelnetUser } from '../test/support/sim/telnet-user.js';
import {
  benchIdentity,
  distribution,
  fillerChunk,
  Group,
  mapLimit,
  PatternChecker,
  PatternSource,
  roundDistribution,
  sleep,
  type BenchIdentity,
} from './common.js';

const workerName = process.argv[2] ?? 'worker';

// ---------------------------------------------------------------------------
// Helpers

async function adminPorts(admin: AdminEndpoint): Promise<Map<string, PortView>> {
  const rows = await adminGet<PortView[]>(admin, '/api/v1/ports', 120_000);
  return new Map(rows.map((r) => [r.key, r]));
}

/** Waits until every identity is listed as connected; returns their client ports. */
async function waitListed(admin: AdminEndpoint, ids: BenchIdentity[], timeoutMs: number): Promise<number[]> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const rows = await adminPorts(admin);
    const ports = ids.map((id) => {
      const r = rows.get(id.formatted);
      // vspc could not bind the client port: whatever holds it is not vspc, never connect there.
      if (r?.listenError) throw new Error(`${id.formatted}: vspc has no listener on its client port ${r.port} (${r.listenError}); not connecting to it`);
      return r && r.connected ? r.port : -1;
    });
    if (ports.every((p) => p > 0)) return ports;
    if (performance.now() > deadline) {
      throw new Error(`${ports.filter((p) => p < 0).length} of ${ids.length} VM serial ports not listed as connected after ${timeoutMs} ms`);
    }
    await sleep(50);
  }
}

async function connectVm(proxy: HostPort, id: BenchIdentity, timeoutMs: number, extra: { skipDoProxy?: boolean } = {}): Promise<SimulatedVm> {
  const vm = await SimulatedVm.connect({
    host: proxy.host,
    port: proxy.port,
    uuid: id.text,
    name: id.name,
    collectInput: false,
    connectTimeoutMs: timeoutMs,
    ...extra,
  });
  if (!extra.skipDoProxy) {
    try {
      await vm.whenProxied(timeoutMs);
    } catch (err) {
      vm.destroy();
      throw err;
    }
  }
  return vm;
}

/** A telnet user with BINARY/ECHO/SGA agreed and the concentrator's greeting received. */
async function connectUser(host: string, port: number, timeoutMs: number): Promise<TelnetUser> {
  const user = await TelnetUser.connect({ host, port, collect: false, connectTimeoutMs: timeoutMs });
  try {
    let greeted = false;
    const onData = (d: Buffer) => {
      if (d.includes(']\r\n')) greeted = true;
    };
    user.on('data', onData);
    const deadline = performance.now() + timeoutMs;
    while (
      !greeted ||
      !user.isEnabled('us', Option.BINARY) ||
      !user.isEnabled('him', Option.BINARY) ||
      !user.isEnabled('him', Option.ECHO) ||
      !user.isEnabled('him', Option.SGA)
    ) {
      if (user.closed) throw new Error(`client on port ${port} closed during negotiation`);
      if (performance.now() > deadline) throw new Error(`client on port ${port}: negotiation not done after ${timeoutMs} ms`);
      await sleep(5);
    }
    user.off('data', onData);
    return user;
  } catch (err) {
    user.destroy();
    throw err;
  }
}

function r3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function firstErrors(errors: string[], max = 5): string[] {
  return [...new Set(errors)].slice(0, max);
}

// ---------------------------------------------------------------------------
// Bulk VMs: scale, reconnect storm, background streamers

interface BulkVm {
  id: BenchIdentity;
  conn: SimulatedVm | null;
}

const bulk: BulkVm[] = [];
let bulkProxy: HostPort | null = null;
let streamTimer: NodeJS.Timeout | null = null;
let streamSent = 0;

function attachBulk(b: BulkVm, vm: SimulatedVm): void {
  b.conn = vm;
  vm.once('close', () => {
    if (b.conn === vm) b.conn = null;
  });
}

async function bulkConnect(a: WorkerApi['bulk.connect']['req']): Promise<WorkerApi['bulk.connect']['res']> {
  bulkProxy = a.proxy;
  const t0 = performance.now();
  // Idempotent: VMs this worker already holds are reused (connected again only if needed).
  const known = new Map(bulk.map((b) => [b.id.hex, b]));
  const items: BulkVm[] = [];
  for (let i = a.from; i < a.from + a.count; i++) {
    const id = benchIdentity(a.namespace, Group.bulk, i);
    let b = known.get(id.hex);
    if (!b) {
      b = { id, conn: null };
      bulk.push(b);
    }
    if (!b.conn || b.conn.closed) items.push(b);
  }
  const errors: string[] = [];
  const times: number[] = [];
  await mapLimit(items, a.concurrency, async (b) => {
    const s = performance.now();
    try {
      attachBulk(b, await connectVm(a.proxy, b.id, a.timeoutMs));
      times.push(performance.now() - s);
    } catch (err) {
      errors.push(errorText(err));
    }
  });
  return { connected: items.length - errors.length, failed: errors.length, errors: firstErrors(errors), ms: performance.now() - t0, perVm: roundDistribution(distribution(times)) };
}

async function bulkWaitClosed(a: WorkerApi['bulk.waitClosed']['req']): Promise<WorkerApi['bulk.waitClosed']['res']> {
  const deadline = performance.now() + a.timeoutMs;
  while (bulk.some((b) => b.conn && !b.conn.closed)) {
    if (performance.now() > deadline) throw new Error(`${bulk.filter((b) => b.conn && !b.conn.closed).length} VM connections still open`);
    await sleep(20);
  }
  return { closed: bulk.length };
}

/** Every disconnected bulk VM reconnects at once, retrying (as an ESXi host does) until the deadline. */
async function bulkReconnect(a: WorkerApi['bulk.reconnect']['req']): Promise<WorkerApi['bulk.reconnect']['res']> {
  if (!bulkProxy) throw new Error('no bulk VMs');
  if (a.proxy) bulkProxy = a.proxy;
  const proxy = bulkProxy;
  const t0 = performance.now();
  const deadline = t0 + a.timeoutMs;
  const todo = bulk.filter((b) => !b.conn || b.conn.closed);
  const errors: string[] = [];
  const attempts: number[] = [];
  const times: number[] = [];
  await Promise.all(
    todo.map(async (b) => {
      for (let attempt = 1; ; attempt++) {
        try {
          attachBulk(b, await connectVm(proxy, b.id, a.connectTimeoutMs));
          attempts.push(attempt);
          times.push(performance.now() - t0);
          return;
        } catch (err) {
          if (performance.now() + a.retryMs > deadline) {
            errors.push(errorText(err));
            return;
          }
          await sleep(a.retryMs * (0.5 + Math.random()));
        }
      }
    }),
  );
  return {
    reconnected: todo.length - errors.length,
    failed: errors.length,
    errors: firstErrors(errors),
    ms: performance.now() - t0,
    attempts: distribution(attempts),
    proxiedAt: roundDistribution(distribution(times)),
  };
}

function bulkStreamStart(a: WorkerApi['bulk.streamStart']['req']): WorkerApi['bulk.streamStart']['res'] {
  if (streamTimer) clearInterval(streamTimer);
  const targets = bulk.slice(a.from, a.from + a.count);
  // Each VM writes one chunk per tick, at its own phase within the tick (VMs are not
  // synchronised): the tick is cut into slots of ~5 ms, VM k writes in slot k mod slots.
  const slotMs = Math.min(5, a.tickMs);
  const slots = Math.max(1, Math.round(a.tickMs / slotMs));
  const chunk = fillerChunk(Math.max(1, Math.round((a.bytesPerSec * a.tickMs) / 1000)));
  const bySlot: BulkVm[][] = Array.from({ length: slots }, () => []);
  targets.forEach((b, k) => bySlot[k % slots].push(b));
  streamSent = 0;
  const t0 = performance.now();
  let fired = 0;
  // One timer for all streamers, not one per connection; it catches up when late.
  streamTimer = setInterval(() => {
    const due = Math.floor((performance.now() - t0) / slotMs);
    for (; fired < due; fired++) {
      for (const b of bySlot[fired % slots]) {
        if (b.conn && !b.conn.closed) {
          b.conn.send(chunk);
          streamSent += chunk.length;
        }
      }
    }
  }, slotMs);
  return { streamers: targets.filter((b) => b.conn).length, startedAt: t0, chunkBytes: chunk.length };
}

function bulkStreamStop(): WorkerApi['bulk.streamStop']['res'] {
  if (streamTimer) clearInterval(streamTimer);
  streamTimer = null;
  return { bytesSent: streamSent };
}

async function bulkDisconnect(a: WorkerApi['bulk.disconnect']['req']): Promise<WorkerApi['bulk.disconnect']['res']> {
  await Promise.all(bulk.map((b) => b.conn?.close()));
  await bulkWaitClosed({ timeoutMs: a.timeoutMs });
  return { disconnected: bulk.length };
}

// ---------------------------------------------------------------------------
// Plain counting clients (for the background streamers)

const counting: TelnetUser[] = [];
let countingBytes = 0;

async function clientsConnect(a: WorkerApi['clients.connect']['req']): Promise<WorkerApi['clients.connect']['res']> {
  const t0 = performance.now();
  const errors: string[] = [];
  await mapLimit(a.ports, a.concurrency, async (port) => {
    try {
      const u = await connectUser(a.host, port, a.timeoutMs);
      u.on('data', (d) => {
        countingBytes += d.length;
      });
      counting.push(u);
    } catch (err) {
      errors.push(errorText(err));
    }
  });
  return { connected: a.ports.length - errors.length, failed: errors.length, errors: firstErrors(errors), ms: performance.now() - t0 };
}

function clientsBytes(): WorkerApi['clients.bytes']['res'] {
  return { bytes: countingBytes, open: counting.filter((u) => !u.closed).length, at: performance.now() };
}

async function clientsClose(): Promise<Empty> {
  await Promise.all(counting.map((u) => u.close()));
  counting.length = 0;
  return {};
}

// ---------------------------------------------------------------------------
// Latency probes: echoing VMs, one client each, and a direct loopback echo as baseline

interface Probe {
  vm: SimulatedVm;
  user: TelnetUser;
  direct: net.Socket;
  /** The same echo through relay processes, by name ('relay', 'relay-node', 'relay-c'). */
  relays: Map<string, net.Socket>;
}

const probes: Probe[] = [];
let echoServer: net.Server | null = null;

async function latSetup(a: WorkerApi['lat.setup']['req']): Promise<WorkerApi['lat.setup']['res']> {
  const ids = Array.from({ length: a.probes }, (_, i) => benchIdentity(a.namespace, Group.probe, i));
  const vms = await mapLimit(ids, 16, (id) => connectVm(a.proxy, id, a.timeoutMs));
  for (const vm of vms) vm.on('data', (d) => vm.send(d)); // the guest echoes what is typed
  const ports = await waitListed(a.admin, ids, a.timeoutMs);
  const users = await mapLimit(ports, 16, (p) => connectUser(a.proxy.host, p, a.timeoutMs));
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('error', () => undefined);
  });
  echoServer = server;
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const port = (server.address() as net.AddressInfo).port;
  const directs = await mapLimit(users, 16, () => connectRaw('127.0.0.1', port, a.timeoutMs));
  await sleep(100);
  for (let i = 0; i < vms.length; i++) probes.push({ vm: vms[i], user: users[i], direct: directs[i], relays: new Map() });
  return { probes: probes.length, echoPort: port };
}

/** Connects each probe to the echo server through a relay process as well (another path). */
async function latRelay(a: WorkerApi['lat.relay']['req']): Promise<WorkerApi['lat.relay']['res']> {
  const name = a.name ?? 'relay';
  const socks = await mapLimit(probes, 16, () => connectRaw('127.0.0.1', a.port, a.timeoutMs));
  probes.forEach((p, i) => {
    p.relays.get(name)?.destroy();
    p.relays.set(name, socks[i]);
  });
  await sleep(50);
  return { relays: socks.length };
}

function latUnrelay(a: WorkerApi['lat.unrelay']['req']): Empty {
  for (const p of probes) {
    p.relays.get(a.name)?.destroy();
    p.relays.delete(a.name);
  }
  return {};
}

// A minimal TCP relay (run in a process of its own): what any user-space proxy hop costs here.
let relayServer: net.Server | null = null;

async function relayStart(a: WorkerApi['relay.start']['req']): Promise<WorkerApi['relay.start']['res']> {
  const server = net.createServer((c) => {
    c.setNoDelay(true);
    const t = net.connect({ host: '127.0.0.1', port: a.targetPort });
    t.setNoDelay(true);
    c.on('data', (d) => t.write(d));
    t.on('data', (d) => c.write(d));
    c.on('error', () => t.destroy());
    t.on('error', () => c.destroy());
    c.on('close', () => t.destroy());
    t.on('close', () => c.destroy());
  });
  relayServer = server;
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  return { port: (server.address() as net.AddressInfo).port };
}

function connectRaw(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('direct connect timed out'));
    }, timeoutMs);
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.setNoDelay(true);
      resolve(s);
    });
  });
}

/** Sends one byte and resolves with the round trip in ms once it came back. */
function roundTrip(send: (b: Buffer) => void, source: { on(e: 'data', l: (d: Buffer) => void): unknown; off(e: 'data', l: (d: Buffer) => void): unknown }, byte: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let t0 = 0;
    const onData = (d: Buffer) => {
      if (!d.includes(byte)) return;
      const dt = performance.now() - t0;
      clearTimeout(timer);
      source.off('data', onData);
      resolve(dt);
    };
    const timer = setTimeout(() => {
      source.off('data', onData);
      reject(new Error(`no echo within ${timeoutMs} ms`));
    }, timeoutMs);
    source.on('data', onData);
    t0 = performance.now();
    send(Buffer.of(byte));
  });
}

async function latRun(a: WorkerApi['lat.run']['req']): Promise<WorkerApi['lat.run']['res']> {
  const names = a.paths ?? ['vspc', 'direct', 'relay'];
  const byPath: Record<string, number[]> = {};
  for (const n of names) byPath[n] = [];
  const errors: string[] = [];
  const deadline = performance.now() + a.durationMs;
  await Promise.all(
    probes.map(async (p, i) => {
      let k = i;
      await sleep(Math.random() * a.intervalMs);
      while (performance.now() < deadline) {
        const byte = 0x61 + (k++ % 26);
        try {
          for (const n of names) {
            if (n === 'vspc') byPath[n].push(await roundTrip((b) => p.user.send(b), p.user, byte, 5000));
            else if (n === 'direct') byPath[n].push(await roundTrip((b) => p.direct.write(b), p.direct, byte, 5000));
            else {
              const r = p.relays.get(n);
              if (r) byPath[n].push(await roundTrip((b) => r.write(b), r, byte, 5000));
            }
          }
        } catch (err) {
          errors.push(errorText(err));
          if (errors.length > 50) return;
        }
        await sleep(a.intervalMs * (0.5 + Math.random()));
      }
    }),
  );
  for (const n of names) byPath[n] = byPath[n].map(r3);
  return { vspc: byPath.vspc ?? [], direct: byPath.direct ?? [], relay: byPath.relay ?? [], byPath, errors: errors.length, errorSamples: firstErrors(errors) };
}

async function latTeardown(): Promise<Empty> {
  for (const p of probes) {
    p.direct.destroy();
    for (const r of p.relays.values()) r.destroy();
    p.user.destroy();
    await p.vm.close();
  }
  probes.length = 0;
  await new Promise<void>((r) => (echoServer ? echoServer.close(() => r()) : r()));
  echoServer = null;
  return {};
}

// ---------------------------------------------------------------------------
// Throughput: VMs pour output out as fast as their clients take it. The same pump
// drives three sets: VMs on vspc with telnet clients ('vspc'), plain streams through
// a relay process ('relay'), and unix-socket endpoints on vspc ('unix').

/** The VM end of a stream: where its output is written. */
interface StreamVm {
  send(b: Buffer): boolean;
  whenDrained(): Promise<void>;
  close(): Promise<void> | void;
  destroy(): void;
}

/** A client of a stream: counts what it receives. */
interface StreamClient {
  on(e: 'data', l: (d: Buffer) => void): unknown;
  readonly closed: boolean;
  close(): Promise<void> | void;
  destroy(): void;
}

interface TpVm {
  vm: StreamVm;
  port: number;
  users: StreamClient[];
  received: number[];
  sent: number;
  waitingDrain: boolean;
  /** Pouring out now (its set was started). */
  on: boolean;
}

/** A raw socket as either end of a stream. */
function rawEnd(s: net.Socket): StreamVm & StreamClient {
  return {
    send: (b) => s.write(b),
    whenDrained: () => (s.destroyed || s.writableLength === 0 ? Promise.resolve() : new Promise<void>((r) => {
      const done = () => {
        s.off('drain', done);
        s.off('close', done);
        r();
      };
      s.on('drain', done);
      s.on('close', done);
    })),
    on: (e, l) => s.on(e, l),
    get closed() {
      return s.destroyed;
    },
    close: () => {
      s.end();
    },
    destroy: () => s.destroy(),
  };
}

const tp: TpVm[] = [];
const relayTp: TpVm[] = [];
const unixTp: TpVm[] = [];
let tpActive: TpVm[] = tp;
let tpChunk: Buffer = Buffer.alloc(0);
let tpWindow = 0;
let tpDelivered = 0;
let tpSent = 0;
let tpProxy: HostPort | null = null;

function setOf(name: StreamSet | undefined): TpVm[] {
  return name === 'relay' ? relayTp : name === 'unix' ? unixTp : tp;
}

async function tpSetup(a: VmSetupRequest): Promise<WorkerApi['tp.setup']['res']> {
  tpProxy = a.proxy;
  const ids = Array.from({ length: a.count }, (_, i) => benchIdentity(a.namespace, Group.throughput, a.from + i));
  const vms = await mapLimit(ids, 32, (id) => connectVm(a.proxy, id, a.timeoutMs));
  const ports = await waitListed(a.admin, ids, a.timeoutMs);
  vms.forEach((vm, i) => tp.push({ vm, port: ports[i], users: [], received: [], sent: 0, waitingDrain: false, on: false }));
  return { vms: tp.length };
}

/** Counts a client's bytes and keeps its stream pouring. */
function addClient(v: TpVm, u: StreamClient): void {
  const k = v.users.length;
  v.users.push(u);
  v.received.push(0);
  u.on('data', (d) => {
    v.received[k] += d.length;
    tpDelivered += d.length;
    if (v.on && !v.waitingDrain) tpPump(v);
  });
}

async function tpClients(a: WorkerApi['tp.clients']['req']): Promise<WorkerApi['tp.clients']['res']> {
  await Promise.all(tp.flatMap((v) => v.users.map((u) => u.close())));
  for (const v of tp) {
    v.users = [];
    v.received = [];
  }
  const jobs = tp.flatMap((v) => Array.from({ length: a.perVm }, () => v));
  await mapLimit(jobs, 32, async (v) => addClient(v, await connectUser(tpProxy!.host, v.port, a.timeoutMs)));
  await sleep(200); // scrollback replays and greetings are over
  return { clients: jobs.length };
}

// Relay streams: the relay connects each client to this listener; the client's first
// 4 bytes (its stream number) tell which one it is.
let relayVmServer: net.Server | null = null;
const relayWaiting = new Map<number, (s: net.Socket) => void>();

async function tpRelayListen(_a: WorkerApi['tp.relayListen']['req']): Promise<WorkerApi['tp.relayListen']['res']> {
  if (!relayVmServer) {
    const server = net.createServer((s) => {
      s.setNoDelay(true);
      s.on('error', () => undefined);
      let head = Buffer.alloc(0);
      const onHead = (d: Buffer) => {
        head = Buffer.concat([head, d]);
        if (head.length < 4) return;
        s.off('data', onHead);
        relayWaiting.get(head.readUInt32BE(0))?.(s);
      };
      s.on('data', onHead);
    });
    relayVmServer = server;
    await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => r()));
  }
  return { port: (relayVmServer.address() as net.AddressInfo).port };
}

async function tpRelayConnect(a: WorkerApi['tp.relayConnect']['req']): Promise<WorkerApi['tp.relayConnect']['res']> {
  const count = tp.length;
  await mapLimit(
    Array.from({ length: count }, (_, i) => i),
    32,
    async (i) => {
      const vmEnd = new Promise<net.Socket>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`relay stream ${i}: the relay did not connect in ${a.timeoutMs} ms`)), a.timeoutMs);
        relayWaiting.set(i, (s) => {
          clearTimeout(timer);
          relayWaiting.delete(i);
          resolve(s);
        });
      });
      const c = await connectRaw('127.0.0.1', a.port, a.timeoutMs);
      c.on('error', () => undefined);
      const id = Buffer.alloc(4);
      id.writeUInt32BE(i);
      c.write(id);
      const v: TpVm = { vm: rawEnd(await vmEnd), port: a.port, users: [], received: [], sent: 0, waitingDrain: false, on: false };
      addClient(v, rawEnd(c));
      relayTp.push(v);
    },
  );
  return { streams: relayTp.length };
}

async function tpRelayTeardown(): Promise<Empty> {
  for (const v of relayTp) {
    v.on = false;
    v.vm.destroy();
    for (const u of v.users) u.destroy();
  }
  relayTp.length = 0;
  return {};
}

function minReceived(v: TpVm): number {
  let m = Infinity;
  for (const r of v.received) if (r < m) m = r;
  return m === Infinity ? v.sent : m;
}

function tpPump(v: TpVm): void {
  while (v.on && v.sent - minReceived(v) < tpWindow) {
    const ok = v.vm.send(tpChunk);
    v.sent += tpChunk.length;
    tpSent += tpChunk.length;
    if (!ok) {
      v.waitingDrain = true;
      void v.vm.whenDrained().then(() => {
        v.waitingDrain = false;
        tpPump(v);
      });
      return;
    }
  }
}

function tpStart(a: WorkerApi['tp.start']['req']): ThroughputSample {
  tpChunk = fillerChunk(a.chunkBytes);
  tpWindow = a.windowBytes;
  for (const set of [tp, relayTp, unixTp]) for (const v of set) v.on = false;
  tpActive = setOf(a.set);
  for (const v of tpActive) {
    v.sent = 0;
    v.received = v.received.map(() => 0);
  }
  tpDelivered = 0;
  tpSent = 0;
  for (const v of tpActive) v.on = true;
  for (const v of tpActive) tpPump(v);
  return tpSample();
}

function tpSample(): ThroughputSample {
  const dropped = tpActive.reduce((n, v) => n + v.users.filter((u) => u.closed).length, 0);
  return { at: performance.now(), delivered: tpDelivered, sent: tpSent, clientsDropped: dropped, cpu: process.cpuUsage() };
}

async function tpStop(): Promise<ThroughputSample> {
  for (const v of tpActive) v.on = false;
  const s = tpSample();
  await sleep(200);
  return s;
}

async function tpTeardown(): Promise<Empty> {
  for (const v of tp) v.on = false;
  await Promise.all(tp.flatMap((v) => [...v.users.map((u) => u.close()), v.vm.close()]));
  tp.length = 0;
  await tpRelayTeardown();
  relayVmServer?.close();
  relayVmServer = null;
  return {};
}

// ---------------------------------------------------------------------------
// Unix-socket consoles: endpoints standing in for QEMU (`-serial unix:PATH,server=on,wait=off`)

interface UnixEndpoint {
  path: string;
  server: net.Server | null;
  /** vspc's connection to it. */
  conn: net.Socket | null;
  /** Resolves each time vspc connects. */
  connected: Array<(s: net.Socket) => void>;
  client: TelnetUser | null;
  /** Restart bookkeeping: when it listened again, when vspc connected, when its client saw the marker. */
  backAt: number;
  reconnectedAt: number;
  streamingAt: number;
}

const endpoints: UnixEndpoint[] = [];
/** Written by an endpoint when vspc connects after a restart; its client watches for it. */
let restartMarker: Buffer | null = null;

function listenEndpoint(e: UnixEndpoint): Promise<void> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    e.conn?.destroy();
    e.conn = s;
    e.reconnectedAt = performance.now();
    if (restartMarker) s.write(restartMarker);
    for (const f of e.connected.splice(0)) f(s);
    s.on('close', () => {
      if (e.conn === s) e.conn = null;
    });
  });
  e.server = server;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: e.path, backlog: 16 }, () => {
      server.off('error', reject);
      e.backAt = performance.now();
      resolve();
    });
  });
}

async function unixListen(a: WorkerApi['unix.listen']['req']): Promise<WorkerApi['unix.listen']['res']> {
  const t0 = performance.now();
  for (let i = a.from; i < a.from + a.count; i++) {
    endpoints.push({ path: `${a.dir}/ep-${i}.sock`, server: null, conn: null, connected: [], client: null, backAt: 0, reconnectedAt: 0, streamingAt: 0 });
  }
  await mapLimit(endpoints, 64, (e) => listenEndpoint(e));
  return { paths: endpoints.map((e) => e.path), ms: performance.now() - t0 };
}

async function unixClients(a: WorkerApi['unix.clients']['req']): Promise<WorkerApi['unix.clients']['res']> {
  const errors: string[] = [];
  await mapLimit(a.ports, a.concurrency, async (port, i) => {
    try {
      const u = await connectUser(a.host, port, a.timeoutMs);
      const e = endpoints[i];
      e.client = u;
      u.on('data', (d) => {
        if (restartMarker && e.streamingAt === 0 && d.includes(restartMarker)) e.streamingAt = performance.now();
      });
    } catch (err) {
      errors.push(errorText(err));
    }
  });
  return { connected: a.ports.length - errors.length, failed: errors.length, errors: firstErrors(errors) };
}

async function unixRestart(a: WorkerApi['unix.restart']['req']): Promise<WorkerApi['unix.restart']['res']> {
  // A hypervisor restart: every endpoint goes away at once (its socket file with it)...
  await Promise.all(
    endpoints.map(
      (e) =>
        new Promise<void>((resolve) => {
          e.conn?.destroy();
          e.conn = null;
          e.backAt = 0;
          e.reconnectedAt = 0;
          e.streamingAt = 0;
          if (!e.server) return resolve();
          e.server.close(() => resolve());
          e.server = null;
        }),
    ),
  );
  restartMarker = Buffer.from(`~back-${Date.now()}~`, 'latin1');
  await sleep(a.downMs);
  // ...and comes back at once: each starts listening again, vspc finds it by itself.
  await Promise.all(endpoints.map((e) => listenEndpoint(e)));
  const deadline = performance.now() + a.timeoutMs;
  while (endpoints.some((e) => e.streamingAt === 0) && performance.now() < deadline) await sleep(20);
  const back = endpoints.filter((e) => e.streamingAt > 0);
  const streaming = back.map((e) => e.streamingAt - e.backAt);
  const reconnect = endpoints.filter((e) => e.reconnectedAt > 0).map((e) => e.reconnectedAt - e.backAt);
  const missing = endpoints.filter((e) => e.streamingAt === 0);
  return {
    endpoints: endpoints.length,
    back: back.length,
    streamingMs: roundDistribution(distribution(streaming)),
    reconnectMs: roundDistribution(distribution(reconnect)),
    within5s: streaming.filter((ms) => ms <= 5000).length,
    errors: missing.slice(0, 5).map((e) => `${e.path}: ${e.reconnectedAt > 0 ? 'vspc connected, but nothing reached its client' : 'vspc did not connect'}`),
  };
}

async function unixStreamSetup(a: WorkerApi['unix.streamSetup']['req']): Promise<WorkerApi['unix.streamSetup']['res']> {
  unixTp.length = 0;
  for (const e of endpoints.slice(0, a.count)) {
    if (!e.conn || !e.client) continue;
    const conn = e.conn;
    const v: TpVm = { vm: rawEnd(conn), port: 0, users: [], received: [], sent: 0, waitingDrain: false, on: false };
    addClient(v, e.client);
    unixTp.push(v);
  }
  return { streams: unixTp.length };
}

async function unixTeardown(): Promise<Empty> {
  for (const v of unixTp) v.on = false;
  unixTp.length = 0;
  for (const e of endpoints) {
    e.client?.destroy();
    e.conn?.destroy();
    e.server?.close();
  }
  endpoints.length = 0;
  restartMarker = null;
  return {};
}

// ---------------------------------------------------------------------------
// vMotion: VMs migrate again and again while output and typing flow; every byte is checked

interface MoverVm {
  id: BenchIdentity;
  index: number;
  conn: SimulatedVm;
  user: TelnetUser;
  /** VM output stream (sent by whichever connection is current). */
  out: PatternSource;
  /** What the client received. */
  outCheck: PatternChecker;
  /** Client input stream. */
  in: PatternSource;
  /** What the VM received, across all its connections in order. */
  inCheck: PatternChecker;
  paused: boolean;
  seq: number;
}

const movers: MoverVm[] = [];
let moverProxy: HostPort | null = null;

/** A moving VM's streams: output pattern 2·index, input pattern 2·index + 1, each checked byte for byte. */
function newMover(id: BenchIdentity, index: number, conn: SimulatedVm, user: TelnetUser): MoverVm {
  return {
    id,
    index,
    conn,
    user,
    out: new PatternSource(index * 2),
    outCheck: new PatternChecker(index * 2, true),
    in: new PatternSource(index * 2 + 1),
    inCheck: new PatternChecker(index * 2 + 1, false),
    paused: false,
    seq: 0,
  };
}

/** What is wrong with a mover's two streams (a byte out of pattern, or not all of it arrived), or null. */
function moverFault(m: MoverVm): string | null {
  if (m.outCheck.ok && m.inCheck.ok && m.outCheck.received === m.out.offset && m.inCheck.received === m.in.offset) return null;
  return `${m.id.name}: out ${m.outCheck.received}/${m.out.offset} (first mismatch ${m.outCheck.firstMismatch}), in ${m.inCheck.received}/${m.in.offset} (first mismatch ${m.inCheck.firstMismatch})`;
}

/** Traffic both ways for every mover, on one timer (a VM paused for its vMotion sends nothing). */
function moverTraffic(ms: readonly MoverVm[], a: { tickMs: number; outBytesPerTick: number; inBytesPerTick: number }): NodeJS.Timeout {
  return setInterval(() => {
    for (const m of ms) {
      if (!m.paused && !m.conn.closed) m.conn.send(m.out.next(a.outBytesPerTick));
      if (!m.user.closed) m.user.send(m.in.next(a.inBytesPerTick));
    }
  }, a.tickMs);
}

function listenInput(m: MoverVm, vm: SimulatedVm): void {
  vm.on('data', (d) => m.inCheck.push(d));
}

async function vmSetup(a: VmSetupRequest): Promise<WorkerApi['vm.setup']['res']> {
  moverProxy = a.proxy;
  const ids = Array.from({ length: a.count }, (_, i) => benchIdentity(a.namespace, Group.vmotion, a.from + i));
  const vms = await mapLimit(ids, 32, (id) => connectVm(a.proxy, id, a.timeoutMs));
  const ports = await waitListed(a.admin, ids, a.timeoutMs);
  const users = await mapLimit(ports, 32, (p) => connectUser(a.proxy.host, p, a.timeoutMs));
  for (let i = 0; i < ids.length; i++) {
    const index = a.from + i;
    const m = newMover(ids[i], index, vms[i], users[i]);
    listenInput(m, m.conn);
    m.user.on('data', (d) => m.outCheck.push(d));
    movers.push(m);
  }
  return { vms: movers.length };
}

interface MigrationTiming {
  ms: number;
  pauseMs: number;
  goaheadMs: number;
  connectMs: number;
  peerOkMs: number;
}

async function migrate(m: MoverVm, timeoutMs: number): Promise<MigrationTiming> {
  const seq = Buffer.alloc(4);
  seq.writeUInt32BE(((m.index & 0xffff) << 16) | (++m.seq & 0xffff));
  const src = m.conn;
  m.paused = true;
  const t0 = performance.now();
  try {
    const r = await src.vmotionBegin(seq, timeoutMs);
    if (r.kind !== 'goahead') throw new Error('NOTNOW');
    const t1 = performance.now();
    // The destination host opens a new connection and presents seq + secret.
    const dest = await connectVm(moverProxy!, m.id, timeoutMs, { skipDoProxy: true });
    const t2 = performance.now();
    listenInput(m, dest);
    if (!(await dest.vmotionPeer(Buffer.concat([seq, r.secret]), timeoutMs))) {
      dest.destroy();
      src.vmotionAbort();
      throw new Error('no PEER-OK');
    }
    const t3 = performance.now();
    dest.vmotionComplete(seq);
    m.conn = dest;
    return { ms: t3 - t0, pauseMs: t3 - t1, goaheadMs: t1 - t0, connectMs: t2 - t1, peerOkMs: t3 - t2 };
  } finally {
    m.paused = false;
  }
}

async function vmRun(a: VmotionRunRequest): Promise<VmotionRunResult> {
  const switchover: number[] = [];
  const pauses: number[] = [];
  const steps = { goahead: [] as number[], connect: [] as number[], peerOk: [] as number[] };
  const errors: string[] = [];
  const traffic = moverTraffic(movers, a);
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const t0 = performance.now();
  const deadline = t0 + a.durationMs;
  let completed = 0;
  let missed = 0;
  const once = async (m: MoverVm) => {
    try {
      const r = await migrate(m, a.timeoutMs);
      switchover.push(r.ms);
      pauses.push(r.pauseMs);
      steps.goahead.push(r.goaheadMs);
      steps.connect.push(r.connectMs);
      steps.peerOk.push(r.peerOkMs);
      completed++;
    } catch (err) {
      errors.push(errorText(err));
    }
  };
  if (a.ratePerS > 0) {
    // Open loop: start migrations at a fixed rate on VMs that are not migrating; a start
    // that finds every VM busy is counted as missed (the rate was not sustained).
    const idle = [...movers];
    const running = new Set<Promise<void>>();
    let started = 0;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        const now = performance.now();
        const due = Math.floor(((Math.min(now, deadline) - t0) / 1000) * a.ratePerS);
        for (; started < due; started++) {
          const m = idle.shift();
          if (!m) {
            missed++;
            continue;
          }
          const p = once(m).then(() => {
            running.delete(p);
            idle.push(m);
          });
          running.add(p);
        }
        if (now >= deadline) {
          clearInterval(timer);
          void Promise.all(running).then(() => resolve());
        }
      }, 2);
    });
  } else {
    await Promise.all(
      movers.map(async (m) => {
        await sleep(Math.random() * a.gapMs);
        while (performance.now() < deadline && errors.length <= 100) {
          await once(m);
          if (a.gapMs > 0) await sleep(a.gapMs * Math.random());
        }
      }),
    );
  }
  const elapsedMs = performance.now() - t0;
  loop.disable();
  clearInterval(traffic);
  // Let everything in flight arrive, then compare what was sent with what arrived.
  const settled = performance.now() + a.quiesceMs;
  const pendingOf = () => movers.filter((m) => m.outCheck.received < m.out.offset || m.inCheck.received < m.in.offset).length;
  while (pendingOf() > 0 && performance.now() < settled) await sleep(20);
  let sentOut = 0;
  let gotOut = 0;
  let sentIn = 0;
  let gotIn = 0;
  let corrupt = 0;
  let notices = 0;
  const firstBad: string[] = [];
  for (const m of movers) {
    sentOut += m.out.offset;
    gotOut += m.outCheck.received;
    sentIn += m.in.offset;
    gotIn += m.inCheck.received;
    notices += m.outCheck.notices;
    const bad = moverFault(m);
    if (bad) {
      corrupt++;
      if (firstBad.length < 5) firstBad.push(bad);
    }
  }
  return {
    loadGenLoopDelay: { p99: Math.round(loop.percentile(99) / 1e4) / 100, max: Math.round(loop.max / 1e4) / 100 },
    completed,
    missed,
    failed: errors.length,
    errors: firstErrors(errors),
    elapsedMs,
    switchover: switchover.map(r3),
    pause: pauses.map(r3),
    steps: {
      goahead: roundDistribution(distribution(steps.goahead)),
      connect: roundDistribution(distribution(steps.connect)),
      peerOk: roundDistribution(distribution(steps.peerOk)),
    },
    bytesVmToClient: sentOut,
    bytesClientToVm: sentIn,
    lostVmToClient: sentOut - gotOut,
    lostClientToVm: sentIn - gotIn,
    vmsWithErrors: corrupt,
    errorDetails: firstBad,
    notices,
    clientsClosed: movers.filter((m) => m.user.closed).length,
  };
}

async function vmTeardown(): Promise<Empty> {
  await Promise.all(movers.flatMap((m) => [m.user.close(), m.conn.close()]));
  movers.length = 0;
  return {};
}

// ---------------------------------------------------------------------------
// Cluster phase: vMotions whose destination lands on the source's node ('same') or on
// another node ('cross'), side by side. Every mover is homed on one node (its telnet
// client stays attached there throughout); a 'cross' mover goes to its other node and
// back in turn (its client is relayed by the home node while it is away).

type ClusterKind = 'same' | 'cross';

interface ClusterMover extends MoverVm {
  kind: ClusterKind;
  home: number;
  other: number;
  /** Node whose connection is the source now. */
  at: number;
  /** Switch-over probes in flight: resolved when the client / the destination has received up to the offset. */
  outWait: { offset: number; resolve: () => void } | null;
  inWait: { offset: number; resolve: () => void } | null;
}

const cmovers: ClusterMover[] = [];
let clusterNodes: HostPort[] = [];

function checkWaits(m: ClusterMover): void {
  if (m.outWait && m.outCheck.received >= m.outWait.offset) {
    const w = m.outWait;
    m.outWait = null;
    w.resolve();
  }
  if (m.inWait && m.inCheck.received >= m.inWait.offset) {
    const w = m.inWait;
    m.inWait = null;
    w.resolve();
  }
}

function listenClusterInput(m: ClusterMover, vm: SimulatedVm): void {
  vm.on('data', (d) => {
    m.inCheck.push(d);
    // Only input that reached the current connection ends the input probe.
    if (vm === m.conn) checkWaits(m);
  });
}

async function cvmSetup(a: WorkerApi['cvm.setup']['req']): Promise<WorkerApi['cvm.setup']['res']> {
  clusterNodes = a.nodes;
  const home = a.nodes[a.home];
  const count = a.perKind * 2;
  const ids = Array.from({ length: count }, (_, i) => benchIdentity(a.namespace, Group.vmotion, a.from + i));
  const vms = await mapLimit(ids, 16, (id) => connectVm(home, id, a.timeoutMs));
  const ports = await waitListed(a.admin, ids, a.timeoutMs);
  const users = await mapLimit(ports, 16, (p) => connectUser(home.host, p, a.timeoutMs));
  for (let i = 0; i < count; i++) {
    const index = a.from + i;
    const m: ClusterMover = {
      ...newMover(ids[i], index, vms[i], users[i]),
      kind: i % 2 === 0 ? 'same' : 'cross',
      home: a.home,
      // Cross movers of a node spread over both other nodes.
      other: (a.home + 1 + ((i >> 1) % (a.nodes.length - 1))) % a.nodes.length,
      at: a.home,
      outWait: null,
      inWait: null,
    };
    listenClusterInput(m, m.conn);
    m.user.on('data', (d) => {
      m.outCheck.push(d);
      checkWaits(m);
    });
    cmovers.push(m);
  }
  return { vms: cmovers.length };
}

interface ClusterMigration {
  handshakeMs: number;
  outMs: number;
  inMs: number;
}

function waitFor(m: ClusterMover, which: 'outWait' | 'inWait', offset: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      m[which] = null;
      reject(new Error(`${which === 'outWait' ? 'output' : 'input'} probe not delivered within ${timeoutMs} ms`));
    }, timeoutMs);
    m[which] = {
      offset,
      resolve: () => {
        clearTimeout(timer);
        resolve(performance.now());
      },
    };
    checkWaits(m);
  });
}

async function clusterMigrate(m: ClusterMover, probeBytes: number, timeoutMs: number): Promise<ClusterMigration> {
  const to = m.kind === 'same' ? m.at : m.at === m.home ? m.other : m.home;
  const seq = Buffer.alloc(4);
  seq.writeUInt32BE(((m.index & 0xffff) << 16) | (++m.seq & 0xffff));
  const src = m.conn;
  m.paused = true;
  const t0 = performance.now();
  let tC = 0;
  try {
    const r = await src.vmotionBegin(seq, timeoutMs);
    if (r.kind !== 'goahead') throw new Error('NOTNOW');
    const dest = await connectVm(clusterNodes[to], m.id, timeoutMs, { skipDoProxy: true });
    listenClusterInput(m, dest);
    if (!(await dest.vmotionPeer(Buffer.concat([seq, r.secret]), timeoutMs))) {
      dest.destroy();
      src.vmotionAbort();
      throw new Error(`no PEER-OK from node ${to + 1}`);
    }
    tC = performance.now();
    dest.vmotionComplete(seq);
    m.conn = dest;
    m.at = to;
  } finally {
    m.paused = false;
  }
  // The probes: the destination writes, the client types, right after COMPLETE.
  m.conn.send(m.out.next(probeBytes));
  const outDone = waitFor(m, 'outWait', m.out.offset, timeoutMs);
  if (!m.user.closed) m.user.send(m.in.next(probeBytes));
  const inDone = waitFor(m, 'inWait', m.in.offset, timeoutMs);
  // Both settle (each has its deadline): no rejection is left unhandled.
  const [o, i] = await Promise.allSettled([outDone, inDone]);
  if (o.status === 'rejected') throw o.reason;
  if (i.status === 'rejected') throw i.reason;
  return { handshakeMs: tC - t0, outMs: o.value - tC, inMs: i.value - tC };
}

async function cvmRun(a: WorkerApi['cvm.run']['req']): Promise<WorkerApi['cvm.run']['res']> {
  const traffic = moverTraffic(cmovers, a);
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const t0 = performance.now();
  const runKind = async (kind: ClusterKind) => {
    const ms = cmovers.filter((m) => m.kind === kind);
    const res = { completed: 0, errors: [] as string[], out: [] as number[], in: [] as number[], handshake: [] as number[], elapsedMs: 0 };
    let left = a.vmotionsPerKind;
    // Bounded concurrency: each mover migrates again as soon as its last vMotion's probes arrived.
    await Promise.all(
      ms.map(async (m) => {
        while (left > 0 && res.errors.length <= 100) {
          left--;
          try {
            const r = await clusterMigrate(m, a.probeBytes, a.timeoutMs);
            res.out.push(r3(r.outMs));
            res.in.push(r3(r.inMs));
            res.handshake.push(r3(r.handshakeMs));
            res.completed++;
          } catch (err) {
            res.errors.push(`${m.id.name}: ${errorText(err)}`);
          }
        }
      }),
    );
    res.elapsedMs = performance.now() - t0;
    return { ms, res };
  };
  const [same, cross] = await Promise.all([runKind('same'), runKind('cross')]);
  loop.disable();
  clearInterval(traffic);
  const settled = performance.now() + a.quiesceMs;
  const pendingOf = () => cmovers.filter((m) => m.outCheck.received < m.out.offset || m.inCheck.received < m.in.offset).length;
  while (pendingOf() > 0 && performance.now() < settled) await sleep(20);
  const result = ({ ms, res }: Awaited<ReturnType<typeof runKind>>): ClusterVmKindResult => {
    let sentOut = 0;
    let gotOut = 0;
    let sentIn = 0;
    let gotIn = 0;
    let duplicated = 0;
    let bad = 0;
    const details: string[] = [];
    for (const m of ms) {
      sentOut += m.out.offset;
      gotOut += Math.min(m.outCheck.received, m.out.offset);
      sentIn += m.in.offset;
      gotIn += Math.min(m.inCheck.received, m.in.offset);
      duplicated += Math.max(0, m.outCheck.received - m.out.offset) + Math.max(0, m.inCheck.received - m.in.offset);
      const fault = moverFault(m);
      if (fault) {
        bad++;
        if (details.length < 5) details.push(fault);
      }
    }
    return {
      movers: ms.length,
      completed: res.completed,
      failed: res.errors.length,
      errors: firstErrors(res.errors),
      elapsedMs: res.elapsedMs,
      switchoverOut: res.out,
      switchoverIn: res.in,
      handshake: res.handshake,
      bytesVmToClient: sentOut,
      bytesClientToVm: sentIn,
      lostVmToClient: sentOut - gotOut,
      lostClientToVm: sentIn - gotIn,
      duplicated,
      vmsWithErrors: bad,
      errorDetails: details,
    };
  };
  return {
    same: result(same),
    cross: result(cross),
    loadGenLoopDelay: { p99: Math.round(loop.percentile(99) / 1e4) / 100, max: Math.round(loop.max / 1e4) / 100 },
  };
}

async function cvmTeardown(): Promise<Empty> {
  await Promise.all(cmovers.flatMap((m) => [m.user.close(), m.conn.close()]));
  cmovers.length = 0;
  return {};
}

// ---------------------------------------------------------------------------

async function shutdown(): Promise<Empty> {
  bulkStreamStop();
  for (const v of tpActive) v.on = false;
  for (const b of bulk) b.conn?.destroy();
  for (const u of counting) u.destroy();
  for (const p of probes) {
    p.vm.destroy();
    p.user.destroy();
    p.direct.destroy();
    for (const r of p.relays.values()) r.destroy();
  }
  relayServer?.close();
  for (const v of [...tp, ...relayTp, ...unixTp]) {
    v.vm.destroy();
    for (const u of v.users) u.destroy();
  }
  for (const e of endpoints) e.server?.close();
  for (const m of [...movers, ...cmovers]) {
    m.conn.destroy();
    m.user.destroy();
  }
  setTimeout(() => process.exit(0), 50);
  return {};
}

// ---------------------------------------------------------------------------
// SSH: echoing consoles, sessions through the SSH front door, a flood of failed logins

const sshVms: SimulatedVm[] = [];
let sshStreamTimer: NodeJS.Timeout | null = null;
let sshStreamSent = 0;

interface SshConn {
  client: ssh2.Client;
  stream: ssh2.ClientChannel;
  closed: boolean;
}

const sshSessions: SshConn[] = [];
let sshBytes = 0;

async function sshSetup(a: WorkerApi['ssh.setup']['req']): Promise<WorkerApi['ssh.setup']['res']> {
  const ids = Array.from({ length: a.consoles }, (_, i) => benchIdentity(a.namespace, Group.ssh, i));
  const vms = await mapLimit(ids, 16, (id) => connectVm(a.proxy, id, a.timeoutMs));
  for (const vm of vms) vm.on('data', (d) => vm.send(d)); // the guest echoes what is typed
  sshVms.push(...vms);
  const ports = await waitListed(a.admin, ids, a.timeoutMs);
  return { names: ids.map((id) => id.name), ports };
}

/** Logs in with the key and attaches to `name` (exec, no terminal); resolves once vspc granted the lock. */
function sshSession(o: { host: string; port: number; privateKey: string; name: string; timeoutMs: number }): Promise<SshConn> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let done = false;
    const fail = (err: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      client.end();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`ssh session to ${o.name} not attached within ${o.timeoutMs} ms`)), o.timeoutMs);
    client.on('error', fail);
    client.on('ready', () => {
      // As OpenSSH does for interactive sessions: keystrokes leave at once.
      client.setNoDelay(true);
      client.exec(o.name, (err, stream) => {
        if (err) return fail(err);
        const conn: SshConn = { client, stream, closed: false };
        let said = '';
        stream.stderr.on('data', (d: Buffer) => {
          if (done) return;
          said += d.toString('latin1');
          if (/(READWRITE|READONLY|EXCLUSIVE|EXCL_WRITE) as /.test(said)) {
            done = true;
            clearTimeout(timer);
            resolve(conn);
          } else if (/refused|no console/.test(said)) fail(new Error(said.trim().slice(0, 200)));
        });
        stream.on('data', (d: Buffer) => {
          sshBytes += d.length;
        });
        stream.on('close', () => {
          conn.closed = true;
          fail(new Error(`session to ${o.name} closed before it was attached: ${said.trim().slice(0, 200)}`));
        });
      });
    });
    client.connect({ host: o.host, port: o.port, username: 'console', privateKey: o.privateKey, readyTimeout: o.timeoutMs, hostVerifier: () => true });
  });
}

async function sshOpen(a: SshOpenRequest): Promise<WorkerApi['ssh.open']['res']> {
  const t0 = performance.now();
  const errors: string[] = [];
  const perSession: number[] = [];
  const ks = Array.from({ length: a.count }, (_, i) => a.from + i);
  await mapLimit(ks, a.concurrency, async (k) => {
    const s0 = performance.now();
    try {
      sshSessions.push(await sshSession({ host: a.host, port: a.port, privateKey: a.privateKey, name: a.names[k % a.names.length], timeoutMs: a.timeoutMs }));
      perSession.push(r3(performance.now() - s0));
    } catch (err) {
      errors.push(errorText(err));
    }
  });
  return { opened: a.count - errors.length, failed: errors.length, errors: firstErrors(errors), ms: performance.now() - t0, perSession };
}

let flood: { stop: boolean; lanes: Promise<void>[]; attempts: number; rejected: number; refused: number; other: number; errors: string[] } | null = null;

/** One login with a key vspc does not know; how it ended. */
function failedLogin(a: WorkerApi['ssh.floodStart']['req']): Promise<'rejected' | 'refused' | 'other'> {
  return new Promise((resolve) => {
    const client = new ssh2.Client();
    let settled = false;
    const end = (how: 'rejected' | 'refused' | 'other', err?: Error) => {
      if (settled) return;
      settled = true;
      if (how === 'other' && err && flood && flood.errors.length < 5) flood.errors.push(err.message);
      client.end();
      resolve(how);
    };
    client.on('ready', () => end('other', new Error('an unknown key logged in')));
    client.on('error', (err: Error & { level?: string }) => {
      if (/authentication methods failed/.test(err.message)) end('rejected');
      else if (/ECONNRESET|before handshake|Connection lost|EPIPE|closed/.test(`${err.message} ${(err as NodeJS.ErrnoException).code ?? ''}`)) end('refused');
      else end('other', err);
    });
    client.on('close', () => end('refused'));
    client.connect({ host: a.host, port: a.port, localAddress: a.localAddress, username: 'console', privateKey: a.privateKey, readyTimeout: 10_000, hostVerifier: () => true });
  });
}

function sshFloodStart(a: WorkerApi['ssh.floodStart']['req']): Empty {
  const f = { stop: false, lanes: [] as Promise<void>[], attempts: 0, rejected: 0, refused: 0, other: 0, errors: [] as string[] };
  flood = f;
  for (let i = 0; i < a.concurrency; i++) {
    f.lanes.push(
      (async () => {
        while (!f.stop) {
          f.attempts++;
          const how = await failedLogin(a);
          if (how === 'rejected') f.rejected++;
          else if (how === 'refused') f.refused++;
          else f.other++;
          // A few hundred attempts a second per lane at most: a flood, not a fork bomb of the generator.
          await sleep(5);
        }
      })(),
    );
  }
  return {};
}

async function sshFloodStop(): Promise<WorkerApi['ssh.floodStop']['res']> {
  const f = flood;
  if (!f) return { attempts: 0, rejected: 0, refusedAtAccept: 0, other: 0, errors: [] };
  f.stop = true;
  await Promise.all(f.lanes);
  flood = null;
  return { attempts: f.attempts, rejected: f.rejected, refusedAtAccept: f.refused, other: f.other, errors: f.errors };
}

async function sshLatency(a: WorkerApi['ssh.latency']['req']): Promise<WorkerApi['ssh.latency']['res']> {
  const n = Math.min(a.probes, sshSessions.length, a.telnetPorts.length);
  const users = await mapLimit(a.telnetPorts.slice(0, n), 16, (p) => connectUser(a.telnetHost, p, a.timeoutMs));
  const viaSsh: number[] = [];
  const viaTelnet: number[] = [];
  const errors: string[] = [];
  const deadline = performance.now() + a.durationMs;
  try {
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const s = sshSessions[i];
        const u = users[i];
        let k = i;
        await sleep(Math.random() * a.intervalMs);
        while (performance.now() < deadline) {
          const byte = 0x61 + (k++ % 26);
          try {
            viaSsh.push(await roundTrip((b) => s.stream.write(b), s.stream, byte, 5000));
            viaTelnet.push(await roundTrip((b) => u.send(b), u, byte, 5000));
          } catch (err) {
            errors.push(errorText(err));
            if (errors.length > 50) return;
          }
          await sleep(a.intervalMs * (0.5 + Math.random()));
        }
      }),
    );
  } finally {
    for (const u of users) u.destroy();
  }
  return { ssh: viaSsh.map(r3), telnet: viaTelnet.map(r3), errors: errors.length, errorSamples: firstErrors(errors) };
}

function sshBytesNow(): WorkerApi['ssh.bytes']['res'] {
  return { bytes: sshBytes, open: sshSessions.filter((s) => !s.closed).length, at: performance.now(), cpu: process.cpuUsage() };
}

function sshStreamStart(a: WorkerApi['ssh.streamStart']['req']): WorkerApi['ssh.streamStart']['res'] {
  const chunk = fillerChunk(Math.max(1, Math.round((a.bytesPerSec * a.tickMs) / 1000)));
  sshStreamTimer = setInterval(() => {
    for (const vm of sshVms) {
      if (!vm.closed) {
        vm.send(chunk);
        sshStreamSent += chunk.length;
      }
    }
  }, a.tickMs);
  return { streamers: sshVms.length };
}

function sshStreamStop(): WorkerApi['ssh.streamStop']['res'] {
  if (sshStreamTimer) clearInterval(sshStreamTimer);
  sshStreamTimer = null;
  return { bytesSent: sshStreamSent };
}

async function sshClose(): Promise<WorkerApi['ssh.close']['res']> {
  const n = sshSessions.length;
  await Promise.all(
    sshSessions.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.closed) return resolve();
          const timer = setTimeout(resolve, 2000);
          s.client.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          s.client.end();
        }),
    ),
  );
  sshSessions.length = 0;
  return { closed: n };
}

async function sshTeardown(): Promise<Empty> {
  sshStreamStop();
  await Promise.all(sshVms.map((vm) => vm.close()));
  sshVms.length = 0;
  return {};
}

function stats(): WorkerApi['stats']['res'] {
  return { cpu: process.cpuUsage(), memory: process.memoryUsage(), pid: process.pid };
}

const handlers: WorkerHandlers = {
  'bulk.connect': bulkConnect,
  'bulk.waitClosed': bulkWaitClosed,
  'bulk.reconnect': bulkReconnect,
  'bulk.streamStart': bulkStreamStart,
  'bulk.streamStop': bulkStreamStop,
  'bulk.disconnect': bulkDisconnect,
  'clients.connect': clientsConnect,
  'clients.bytes': clientsBytes,
  'clients.close': clientsClose,
  'lat.setup': latSetup,
  'lat.relay': latRelay,
  'lat.unrelay': latUnrelay,
  'lat.run': latRun,
  'relay.start': relayStart,
  'lat.teardown': latTeardown,
  'tp.setup': tpSetup,
  'tp.clients': tpClients,
  'tp.start': tpStart,
  'tp.sample': tpSample,
  'tp.stop': tpStop,
  'tp.teardown': tpTeardown,
  'tp.relayListen': tpRelayListen,
  'tp.relayConnect': tpRelayConnect,
  'tp.relayTeardown': tpRelayTeardown,
  'unix.listen': unixListen,
  'unix.clients': unixClients,
  'unix.restart': unixRestart,
  'unix.streamSetup': unixStreamSetup,
  'unix.teardown': unixTeardown,
  'vm.setup': vmSetup,
  'vm.run': vmRun,
  'vm.teardown': vmTeardown,
  'cvm.setup': cvmSetup,
  'cvm.run': cvmRun,
  'cvm.teardown': cvmTeardown,
  'ssh.setup': sshSetup,
  'ssh.open': sshOpen,
  'ssh.floodStart': sshFloodStart,
  'ssh.floodStop': sshFloodStop,
  'ssh.latency': sshLatency,
  'ssh.bytes': sshBytesNow,
  'ssh.streamStart': sshStreamStart,
  'ssh.streamStop': sshStreamStop,
  'ssh.close': sshClose,
  'ssh.teardown': sshTeardown,
  stats,
  shutdown,
};

/** Runs the handler of `call.cmd` (typed by the command). */
function dispatch<K extends WorkerCommand>(call: WorkerCall<K>): Promise<unknown> {
  const h = handlers[call.cmd] as ((req: WorkerApi[K]['req']) => unknown) | undefined;
  if (!h) return Promise.reject(new Error(`unknown command ${String(call.cmd)}`));
  return Promise.resolve().then(() => h(call.args));
}

if (!process.send) {
  process.stderr.write(`${workerName}: must be started by the benchmark (needs an IPC channel)\n`);
  process.exit(2);
}
process.on('disconnect', () => process.exit(0));
process.on('message', (msg: unknown) => {
  const call = msg as WorkerCall;
  const reply = (r: WorkerReply) => process.send?.(r);
  dispatch(call).then(
    (result) => reply({ id: call.id, ok: true, result }),
    (err: unknown) => reply({ id: call.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
  );
});
// Socket errors are reported on the objects; nothing may crash the worker silently.
process.on('uncaughtException', (err) => {
  process.stderr.write(`${workerName}: uncaught ${err.stack ?? String(err)}\n`);
});
