/**
 * What a load-generator worker (worker.ts) answers over its IPC channel: every
 * command with its request and its response. The orchestrator asks through
 * `WorkerHandle.ask()` (ipc.ts), the worker implements `WorkerHandlers`; both are
 * checked against this one table, so a renamed command or a changed field fails to
 * compile on both sides instead of at run time.
 *
 * On the wire: `{id, cmd, args}` → `{id, ok: true, result}` or `{id, ok: false, error}`
 * (values are structured-cloned: plain data only).
 */
import type { HostPort } from '../src/util/net.js';
import type { Distribution } from './common.js';
import type { AdminEndpoint } from './server-process.js';

/** A command that takes no arguments, or returns nothing of interest. */
export type Empty = Record<string, never>;

/** Where the VMs of a worker connect and how their serial ports are looked up. */
export interface VmSetupRequest {
  proxy: HostPort;
  admin: AdminEndpoint;
  namespace: number;
  /** First index (of this worker's slice) and how many VMs. */
  from: number;
  count: number;
  timeoutMs: number;
}

export interface ThroughputSample {
  at: number;
  /** Bytes received by all clients so far. */
  delivered: number;
  /** Bytes written by all VMs so far. */
  sent: number;
  clientsDropped: number;
  cpu: NodeJS.CpuUsage;
}

export interface VmotionRunRequest {
  durationMs: number;
  /** Back-to-back runs: each VM migrates again 0..gapMs after its last migration. */
  gapMs: number;
  /** Migrations per second started by this worker (paced); 0: every VM migrates back to back. */
  ratePerS: number;
  tickMs: number;
  outBytesPerTick: number;
  inBytesPerTick: number;
  /** After the run, how long to wait for the streams in flight to arrive. */
  quiesceMs: number;
  timeoutMs: number;
}

export interface VmotionRunResult {
  loadGenLoopDelay: { p99: number; max: number };
  completed: number;
  missed: number;
  failed: number;
  errors: string[];
  elapsedMs: number;
  switchover: number[];
  pause: number[];
  steps: { goahead: Distribution; connect: Distribution; peerOk: Distribution };
  bytesVmToClient: number;
  bytesClientToVm: number;
  lostVmToClient: number;
  lostClientToVm: number;
  vmsWithErrors: number;
  errorDetails: string[];
  notices: number;
  clientsClosed: number;
}

/** Cluster phase: one worker's movers, all homed on node `home` of `nodes` (the nodes' proxy ports). */
export interface ClusterVmSetupRequest {
  nodes: HostPort[];
  home: number;
  /** Admin API of the home node (its ports list holds the movers' client ports). */
  admin: AdminEndpoint;
  namespace: number;
  from: number;
  /** Movers of each kind (same-node and cross-node). */
  perKind: number;
  timeoutMs: number;
}

export interface ClusterVmRunRequest {
  /** vMotions of each kind this worker completes (or fails), back to back. */
  vmotionsPerKind: number;
  tickMs: number;
  outBytesPerTick: number;
  inBytesPerTick: number;
  /** Bytes written by the destination right after COMPLETE (and typed by the client): the switch-over probes. */
  probeBytes: number;
  quiesceMs: number;
  timeoutMs: number;
}

/** One kind of vMotion (destination on the source's node, or on another) of one worker. */
export interface ClusterVmKindResult {
  movers: number;
  completed: number;
  failed: number;
  errors: string[];
  elapsedMs: number;
  /** COMPLETE sent by the destination → the destination's first bytes after it at the attached client (ms). */
  switchoverOut: number[];
  /** COMPLETE sent → the bytes the client typed right after it at the destination VM connection (ms). */
  switchoverIn: number[];
  /** BEGIN sent → PEER-OK received (the migration itself, before COMPLETE). */
  handshake: number[];
  bytesVmToClient: number;
  bytesClientToVm: number;
  lostVmToClient: number;
  lostClientToVm: number;
  /** Bytes received beyond what was sent (duplicates), both ways. */
  duplicated: number;
  vmsWithErrors: number;
  errorDetails: string[];
}

/** Which streams of a throughput worker pour out. */
export type StreamSet = 'vspc' | 'relay' | 'unix';

export interface UnixRestartResult {
  endpoints: number;
  /** Endpoints whose console streamed again (the first bytes written after its return reached its client) before the deadline. */
  back: number;
  /** Endpoint listening again → those bytes at its client, per endpoint (ms). */
  streamingMs: Distribution;
  /** Endpoint listening again → vspc connected to it (ms). */
  reconnectMs: Distribution;
  /** Endpoints whose first bytes arrived within 5 s of its return. */
  within5s: number;
  errors: string[];
}

/** SSH sessions to open: session k attaches to `names[k % names.length]`. */
export interface SshOpenRequest {
  host: string;
  port: number;
  /** The key (OpenSSH private key text) the authorized-keys file lists. */
  privateKey: string;
  names: string[];
  /** Sessions this worker opens, numbered from `from` (for the console each attaches to). */
  from: number;
  count: number;
  concurrency: number;
  timeoutMs: number;
}

export interface WorkerApi {
  // Bulk VMs: scale, reconnect storm, background streamers.
  'bulk.connect': {
    req: { proxy: HostPort; namespace: number; from: number; count: number; concurrency: number; timeoutMs: number };
    res: { connected: number; failed: number; errors: string[]; ms: number; perVm: Distribution };
  };
  'bulk.waitClosed': { req: { timeoutMs: number }; res: { closed: number } };
  'bulk.reconnect': {
    /** `proxy`: reconnect there instead of where they were (their node died: another node of a cluster). */
    req: { timeoutMs: number; retryMs: number; connectTimeoutMs: number; proxy?: HostPort };
    res: { reconnected: number; failed: number; errors: string[]; ms: number; attempts: Distribution; proxiedAt: Distribution };
  };
  'bulk.streamStart': {
    req: { from: number; count: number; bytesPerSec: number; tickMs: number };
    res: { streamers: number; startedAt: number; chunkBytes: number };
  };
  'bulk.streamStop': { req: Empty; res: { bytesSent: number } };
  'bulk.disconnect': { req: { timeoutMs: number }; res: { disconnected: number } };
  // Plain counting clients (for the background streamers).
  'clients.connect': {
    req: { host: string; ports: number[]; concurrency: number; timeoutMs: number };
    res: { connected: number; failed: number; errors: string[]; ms: number };
  };
  'clients.bytes': { req: Empty; res: { bytes: number; open: number; at: number } };
  'clients.close': { req: Empty; res: Empty };
  // Latency probes.
  'lat.setup': {
    req: { proxy: HostPort; admin: AdminEndpoint; namespace: number; probes: number; timeoutMs: number };
    res: { probes: number; echoPort: number };
  };
  /** Connects every probe through a relay listening on `port` (to the probe worker's echo server) as path `name` (default 'relay'). */
  'lat.relay': { req: { port: number; timeoutMs: number; name?: string }; res: { relays: number } };
  'lat.unrelay': { req: { name: string }; res: Empty };
  'lat.run': {
    /** `paths`: which round trips to measure, in turn per keystroke ('vspc', 'direct', relay names); default vspc, direct, relay. */
    req: { durationMs: number; intervalMs: number; paths?: string[] };
    res: { vspc: number[]; direct: number[]; relay: number[]; byPath: Record<string, number[]>; errors: number; errorSamples: string[] };
  };
  'lat.teardown': { req: Empty; res: Empty };
  'relay.start': { req: { targetPort: number }; res: { port: number } };
  // Throughput.
  'tp.setup': { req: VmSetupRequest; res: { vms: number } };
  'tp.clients': { req: { perVm: number; timeoutMs: number }; res: { clients: number } };
  /**
   * Relay baselines: a listener standing in for the VMs of `count` streams (a relay
   * connects its accepted clients to it); the streams are made by `tp.relayConnect`.
   */
  'tp.relayListen': { req: { count: number }; res: { port: number } };
  /** `count` clients through the relay at `port`, each paired with the VM end the relay opens (set 'relay'). */
  'tp.relayConnect': { req: { port: number; timeoutMs: number }; res: { streams: number } };
  'tp.relayTeardown': { req: Empty; res: Empty };
  /** Streams of one set pour out: 'vspc' (tp.setup/tp.clients), 'relay' (tp.relayConnect) or 'unix' (unix.streamSetup). */
  'tp.start': { req: { chunkBytes: number; windowBytes: number; set?: StreamSet }; res: ThroughputSample };
  'tp.sample': { req: Empty; res: ThroughputSample };
  'tp.stop': { req: Empty; res: ThroughputSample };
  'tp.teardown': { req: Empty; res: Empty };
  // Unix-socket consoles (endpoints standing in for QEMU's `-serial unix:PATH,server=on`).
  'unix.listen': { req: { dir: string; from: number; count: number }; res: { paths: string[]; ms: number } };
  /** One counting telnet client per endpoint, `ports[i]` the client port of endpoint i (of this worker). */
  'unix.clients': { req: { host: string; ports: number[]; concurrency: number; timeoutMs: number }; res: { connected: number; failed: number; errors: string[] } };
  /** Every endpoint goes away at once (sockets closed, files removed) and comes back after `downMs`; see UnixRestartResult. */
  'unix.restart': { req: { downMs: number; timeoutMs: number }; res: UnixRestartResult };
  /** The first `count` endpoints and their clients become throughput streams (set 'unix'). */
  'unix.streamSetup': { req: { count: number }; res: { streams: number } };
  'unix.teardown': { req: Empty; res: Empty };
  // vMotion.
  'vm.setup': { req: VmSetupRequest; res: { vms: number } };
  'vm.run': { req: VmotionRunRequest; res: VmotionRunResult };
  'vm.teardown': { req: Empty; res: Empty };
  // Cluster phase: same-node and cross-node vMotions side by side.
  'cvm.setup': { req: ClusterVmSetupRequest; res: { vms: number } };
  'cvm.run': { req: ClusterVmRunRequest; res: { same: ClusterVmKindResult; cross: ClusterVmKindResult; loadGenLoopDelay: { p99: number; max: number } } };
  'cvm.teardown': { req: Empty; res: Empty };
  // SSH: echoing consoles (one worker), sessions through the SSH front door (others), a failing flood.
  'ssh.setup': {
    req: { proxy: HostPort; admin: AdminEndpoint; namespace: number; consoles: number; timeoutMs: number };
    res: { names: string[]; ports: number[] };
  };
  'ssh.open': {
    req: SshOpenRequest;
    res: { opened: number; failed: number; errors: string[]; ms: number; perSession: number[] };
  };
  'ssh.floodStart': { req: { host: string; port: number; localAddress: string; privateKey: string; concurrency: number }; res: Empty };
  'ssh.floodStop': { req: Empty; res: { attempts: number; rejected: number; refusedAtAccept: number; other: number; errors: string[] } };
  'ssh.latency': {
    req: { probes: number; telnetHost: string; telnetPorts: number[]; durationMs: number; intervalMs: number; timeoutMs: number };
    res: { ssh: number[]; telnet: number[]; errors: number; errorSamples: string[] };
  };
  'ssh.bytes': { req: Empty; res: { bytes: number; open: number; at: number; cpu: NodeJS.CpuUsage } };
  'ssh.streamStart': { req: { bytesPerSec: number; tickMs: number }; res: { streamers: number } };
  'ssh.streamStop': { req: Empty; res: { bytesSent: number } };
  'ssh.close': { req: Empty; res: { closed: number } };
  'ssh.teardown': { req: Empty; res: Empty };
  // The process.
  stats: { req: Empty; res: { cpu: NodeJS.CpuUsage; memory: NodeJS.MemoryUsage; pid: number } };
  shutdown: { req: Empty; res: Empty };
}

export type WorkerCommand = keyof WorkerApi;
export type WorkerRequest<K extends WorkerCommand> = WorkerApi[K]['req'];
export type WorkerResponse<K extends WorkerCommand> = WorkerApi[K]['res'];

/** The worker's side: one handler per command. */
export type WorkerHandlers = {
  [K in WorkerCommand]: (req: WorkerRequest<K>) => WorkerResponse<K> | Promise<WorkerResponse<K>>;
};

/** Orchestrator → worker. */
export interface WorkerCall<K extends WorkerCommand = WorkerCommand> {
  id: number;
  cmd: K;
  args: WorkerRequest<K>;
}

/** Worker → orchestrator. */
export type WorkerReply = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
