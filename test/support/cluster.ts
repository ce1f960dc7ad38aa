/**
 * A vspc cluster for tests: N vspc nodes as child processes (`dist/src/cli/vspc.js`)
 * on one PostgreSQL database, each on its own loopback address (127.0.0.2, .3, .4 ...:
 * Linux routes all of 127/8 to lo) with its own `--node-id`, the same port numbers on
 * every address (as on separate machines). What else a cluster needs in front of it,
 * for ESXi hosts that reach "one address":
 *
 * - `TcpBalancer`: a loopback TCP load balancer (round robin over the nodes' proxy
 *   ports, skipping a node that refuses the connection: what HAProxy with health
 *   checks or DNS round robin with a retrying client does);
 * - `ReconnectingVm`: a simulated ESXi VM serial port that reconnects through the
 *   balancer whenever its connection closes, as ESXi does (test/support/sim);
 * - `TcpRelay`: a relay between a node and PostgreSQL's unix socket that can be
 *   black-holed (a network partition: nothing passes, nothing is closed).
 *
 * Every node process is registered in a LiveProcesses registry (test/support/procs.ts)
 * and SIGKILLed by PID on stop(), on process exit and on SIGINT/SIGTERM.
 */
import net from 'node:net';
import { EventEmitter, once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child, VSPC_JS } from './cli.js';
import { LiveProcesses } from './procs.js';
import { SimulatedVm } from './sim/index.js';
import { canBind, reservePortRange } from './ports.js';
import { tempDir, withTimeout } from './server.js';

const live = new LiveProcesses((c) => c.kill('SIGKILL'));

/** One structured log line of a node (its stderr is JSON lines). */
export type LogLine = Record<string, unknown> & { message?: string };

export interface ClusterNodeOptions {
  id: string;
  /** Loopback address the node listens on (proxy, admin, console ports). */
  host: string;
  proxyPort: number;
  adminPort: number;
  portRange: { start: number; end: number };
  dbUrl: string;
  /** Config file (YAML) to give with --config. */
  configPath?: string;
  /** Console logs directory (--log-dir). */
  logDir?: string;
  extraArgs?: string[];
}

/** One vspc node process. */
export class ClusterNode {
  child: Child | null = null;
  /** Lines of earlier runs of this node (restarts) followed by the current one's. */
  private earlier = '';

  constructor(readonly o: ClusterNodeOptions) {}

  get id(): string {
    return this.o.id;
  }
  get host(): string {
    return this.o.host;
  }
  get proxyPort(): number {
    return this.o.proxyPort;
  }
  get adminAddress(): string {
    return `${this.o.host}:${this.o.adminPort}`;
  }
  get pid(): number | undefined {
    return this.child?.proc.pid;
  }
  get running(): boolean {
    const p = this.child?.proc;
    return !!p && p.exitCode === null && p.signalCode === null;
  }

  /** Starts the process; resolves when it logged `vspc started`. */
  async start(timeoutMs = 30_000): Promise<void> {
    if (this.child) this.earlier += this.child.stderr;
    const o = this.o;
    const args = [
      '--proxy-listen', `${o.host}:${o.proxyPort}`,
      '--admin-listen', `${o.host}:${o.adminPort}`,
      '--db', o.dbUrl,
      '--node-id', o.id,
      '--port-range', `${o.portRange.start}-${o.portRange.end}`,
      '--client-listen-host', o.host,
      '--broker-socket', 'off',
      // Every VM of a test comes from one address (the balancer's): no per-address limits.
      '--registration-rate', '0',
      '--unidentified-per-address', '0',
      ...(o.configPath ? ['--config', o.configPath] : []),
      ...(o.logDir ? ['--log-dir', o.logDir] : []),
      ...(o.extraArgs ?? []),
    ];
    const child = new Child(VSPC_JS, args);
    this.child = child;
    live.add(child.proc);
    void child.exit.then(() => live.delete(child.proc));
    await child.waitForStderr(/"message":"vspc started"/, timeoutMs);
  }

  /** kill -9 by PID; resolves when the process is gone. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || !this.running) return;
    c.proc.kill('SIGKILL');
    await c.waitExit(10_000);
  }

  /** SIGTERM (a graceful stop), then SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    const c = this.child;
    if (!c || !this.running) return;
    c.proc.kill('SIGTERM');
    await c.waitExit(graceMs).catch(async () => {
      c.proc.kill('SIGKILL');
      await c.waitExit(5000);
    });
  }

  /** Every structured line this node logged (all its runs). */
  logs(): LogLine[] {
    const out: LogLine[] = [];
    for (const line of (this.earlier + (this.child?.stderr ?? '')).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogLine);
      } catch {
        /* a partial last line */
      }
    }
    return out;
  }

  /** Resolves with the first line of the current run matching `pred` (re-checked on every output chunk). */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000, what = 'a log line'): Promise<LogLine> {
    const c = this.child;
    if (!c) return Promise.reject(new Error(`node ${this.id} is not started`));
    return c.waitFor(() => this.currentLogs(c).find(pred), timeoutMs, `${what} on node ${this.id}`);
  }

  /** How many lines of the current run match `pred`. */
  countLogs(pred: (l: LogLine) => boolean): number {
    return this.child ? this.currentLogs(this.child).filter(pred).length : 0;
  }

  /** Resolves once `count` lines of the current run match `pred`. */
  waitForLogCount(pred: (l: LogLine) => boolean, count: number, timeoutMs = 30_000, what = 'log lines'): Promise<number> {
    const c = this.child;
    if (!c) return Promise.reject(new Error(`node ${this.id} is not started`));
    return c.waitFor(() => {
      const n = this.currentLogs(c).filter(pred).length;
      return n >= count ? n : undefined;
    }, timeoutMs, `${count} × ${what} on node ${this.id}`);
  }

  private parsedUpTo = 0;
  private parsed: LogLine[] = [];
  private parsedFor: Child | null = null;

  /** The current run's lines, parsed incrementally (a run of 300 VMs logs thousands). */
  private currentLogs(c: Child): LogLine[] {
    if (this.parsedFor !== c) {
      this.parsedFor = c;
      this.parsed = [];
      this.parsedUpTo = 0;
    }
    const text = c.stderr;
    const end = text.lastIndexOf('\n') + 1;
    if (end > this.parsedUpTo) {
      for (const line of text.slice(this.parsedUpTo, end).split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          this.parsed.push(JSON.parse(line) as LogLine);
        } catch {
          /* not JSON */
        }
      }
      this.parsedUpTo = end;
    }
    return this.parsed;
  }
}

export interface TestClusterOptions {
  /** How many nodes (at most 3: 127.0.0.2-127.0.0.4; more take 127.0.0.5 ...). */
  nodes: number;
  /** Database URL every node uses, or one per node (a node behind a TcpRelay). */
  dbUrl: string | ((index: number) => string);
  /** Console ports the cluster hands out (count). */
  consolePorts?: number;
  /** YAML config every node reads (the same file: a cluster runs one configuration). */
  config?: string;
  /** Console logs: each node writes in `<dir>/<node id>/`. */
  consoleLogs?: boolean;
  extraArgs?: string[];
  /** Start the nodes one after the other (default) or together. */
  together?: boolean;
}

/** Nodes `node-1` ... on 127.0.0.2 ...; proxy and admin ports are the same numbers on each address. */
export class TestCluster {
  private constructor(
    readonly nodes: ClusterNode[],
    readonly dir: { dir: string; remove: () => void },
    readonly portRange: { start: number; end: number },
  ) {}

  static async start(o: TestClusterOptions): Promise<TestCluster> {
    const hosts = Array.from({ length: o.nodes }, (_, i) => `127.0.0.${i + 2}`);
    // A prerequisite, not a reason to skip: Linux routes 127/8 to lo.
    for (const h of hosts) {
      if (!(await canBind(0, h))) throw new Error(`cannot bind ${h}: the cluster tests need the loopback addresses 127.0.0.2-127.0.0.${o.nodes + 1} (Linux routes 127/8 to lo)`);
    }
    const ports = await reservePortRange(2 + (o.consolePorts ?? 50));
    const dir = tempDir('vspc-cluster-');
    let configPath: string | undefined;
    if (o.config !== undefined) {
      configPath = join(dir.dir, 'vspc.yaml');
      writeFileSync(configPath, o.config);
    }
    const range = { start: ports.start + 2, end: ports.end };
    const nodes = hosts.map((host, i) => {
      const id = `node-${i + 1}`;
      const logDir = o.consoleLogs ? join(dir.dir, 'logs', id) : undefined;
      if (logDir) mkdirSync(logDir, { recursive: true });
      return new ClusterNode({
        id,
        host,
        proxyPort: ports.start,
        adminPort: ports.start + 1,
        portRange: range,
        dbUrl: typeof o.dbUrl === 'string' ? o.dbUrl : o.dbUrl(i),
        ...(configPath ? { configPath } : {}),
        ...(logDir ? { logDir } : {}),
        ...(o.extraArgs ? { extraArgs: o.extraArgs } : {}),
      });
    });
    const cluster = new TestCluster(nodes, dir, range);
    try {
      if (o.together) await Promise.all(nodes.map((n) => n.start()));
      else for (const n of nodes) await n.start();
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  node(id: string): ClusterNode {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** Console logs directory of a node. */
  logDir(id: string): string {
    return join(this.dir.dir, 'logs', id);
  }

  /** SIGKILLs every node still running (by PID) and removes the directory. Idempotent. */
  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill().catch(() => undefined)));
    this.dir.remove();
  }
}

// ------------------------------------------------------------------ one address for ESXi

/**
 * A loopback TCP load balancer: each connection goes to the next backend in turn; one
 * that refuses (a dead node) is skipped, every backend refusing closes the client.
 * Bytes are piped both ways with backpressure; either side closing closes the other.
 */
export class TcpBalancer {
  private readonly server = net.createServer((s) => this.accept(s));
  private next = 0;
  private readonly sockets = new Set<net.Socket>();
  /** Connections handed to each backend (`host:port` → count). */
  readonly handed = new Map<string, number>();

  constructor(private readonly backends: Array<{ host: string; port: number }>) {}

  async listen(host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, host, () => resolve());
    });
    return (this.server.address() as net.AddressInfo).port;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    const tryBackend = (left: number): void => {
      if (client.destroyed) return;
      if (left === 0) {
        client.destroy();
        return;
      }
      const b = this.backends[this.next++ % this.backends.length];
      const up = net.connect({ host: b.host, port: b.port });
      up.once('error', () => {
        up.destroy();
        tryBackend(left - 1);
      });
      up.once('connect', () => {
        up.removeAllListeners('error');
        const key = `${b.host}:${b.port}`;
        this.handed.set(key, (this.handed.get(key) ?? 0) + 1);
        this.sockets.add(up);
        up.on('close', () => {
          this.sockets.delete(up);
          client.destroy();
        });
        up.on('error', () => up.destroy());
        client.on('close', () => up.destroy());
        client.pipe(up);
        up.pipe(client);
        client.resume();
      });
    };
    tryBackend(this.backends.length);
  }

  /** Closes the listener and every connection. Idempotent. */
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * A simulated ESXi VM serial port that, like ESXi, reconnects when its connection
 * closes (to one address: the balancer), after a short random pause. Emits `proxied`
 * (with the connection) each time the concentrator accepted it, `closed` when a
 * connection ends. `stop()` ends it for good.
 */
export class ReconnectingVm extends EventEmitter<{ proxied: [vm: SimulatedVm]; closed: [] }> {
  current: SimulatedVm | null = null;
  /** Connections that reached WILL-PROXY. */
  proxiedCount = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly uuid: { text: string; hex: string },
    readonly name: string,
    private readonly target: { host: string; port: number },
    /** Pause before reconnecting, ms: uniformly in [min, max). */
    private readonly retry = { min: 50, max: 400 },
  ) {
    super();
  }

  start(): void {
    void this.attempt();
  }

  /** Resolves with the next proxied connection (the current one if it is up and `current` is true). */
  whenProxied(timeoutMs: number, acceptCurrent = true): Promise<SimulatedVm> {
    if (acceptCurrent && this.current && !this.current.closed && this.current.proxyAnswer === 'will') return Promise.resolve(this.current);
    return withTimeout(once(this, 'proxied'), timeoutMs, `${this.name} proxied`).then(([vm]) => vm as SimulatedVm);
  }

  private async attempt(): Promise<void> {
    if (this.stopped) return;
    let vm: SimulatedVm;
    try {
      vm = await SimulatedVm.connect({ host: this.target.host, port: this.target.port, uuid: this.uuid.text, name: this.name, connectTimeoutMs: 5000, collectInput: true });
    } catch {
      this.again();
      return;
    }
    if (this.stopped) {
      vm.destroy();
      return;
    }
    this.current = vm;
    vm.once('close', () => {
      if (this.current === vm) this.current = null;
      this.emit('closed');
      this.again();
    });
    vm.whenProxied(10_000).then(
      () => {
        if (vm.closed) return;
        this.proxiedCount++;
        this.emit('proxied', vm);
      },
      () => vm.destroy(),
    );
  }

  /**
   * ESXi's own behaviour being modelled, not a wait of the test's: a host retries a lost
   * serial-port connection after a pause (the jitter spreads a dead node's VMs over the
   * others). Tests wait on 'proxied' events, never on this timer.
   */
  private again(): void {
    if (this.stopped || this.timer) return;
    const { min, max } = this.retry;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.attempt();
    }, min + Math.random() * (max - min));
  }

  /** Stops reconnecting and aborts the connection. Idempotent. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.current?.destroy();
  }
}

// ------------------------------------------------------------------ a partition

/**
 * A loopback TCP relay to a unix socket (PostgreSQL's, for a node's `--db`), which can
 * be black-holed: from then on nothing passes either way and nothing is closed (new
 * connections are accepted and starved), as when a network between a node and its
 * database drops every packet.
 */
export class TcpRelay {
  private readonly server = net.createServer((s) => this.accept(s));
  private readonly pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  private readonly starved = new Set<net.Socket>();
  private holed = false;

  constructor(private readonly unixPath: string) {}

  async listen(host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, host, () => resolve());
    });
    return (this.server.address() as net.AddressInfo).port;
  }

  private accept(a: net.Socket): void {
    a.on('error', () => a.destroy());
    if (this.holed) {
      a.pause();
      this.starved.add(a);
      a.on('close', () => this.starved.delete(a));
      return;
    }
    const b = net.connect(this.unixPath);
    const pair = { a, b };
    this.pairs.add(pair);
    b.on('error', () => b.destroy());
    a.on('close', () => {
      this.pairs.delete(pair);
      if (!this.holed) b.destroy();
    });
    b.on('close', () => {
      this.pairs.delete(pair);
      if (!this.holed) a.destroy();
    });
    a.pipe(b);
    b.pipe(a);
  }

  /** Nothing passes any more, in either direction; no connection is closed. */
  blackhole(): void {
    this.holed = true;
    for (const { a, b } of this.pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  /** Closes the listener and every connection. Idempotent. */
  close(): Promise<void> {
    for (const { a, b } of this.pairs) {
      a.destroy();
      b.destroy();
    }
    for (const s of this.starved) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
