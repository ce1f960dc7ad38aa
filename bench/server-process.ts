/**
 * The vspc under test: either a server the benchmark starts as a child process
 * (`node dist/src/cli/vspc.js` with a temporary database, loopback only), or an
 * operator's running deployment given by its proxy and admin addresses.
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { HostPort } from '../src/config/config.js';
import type { PortView, StatusView } from '../src/admin/views.js';
import { AdminClient } from '../src/cli/admin-client.js';
import { spawnWithIpc } from './ipc.js';
import { sleep } from './common.js';
import { procAvailable, sampleProc, type ProcSample } from './proc.js';

export const VSPC_SCRIPT = fileURLToPath(new URL('../src/cli/vspc.js', import.meta.url));
const GUARD_URL = new URL('./child-guard.js', import.meta.url).href;

export interface ServerMemory {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** Committed (`size`) and used bytes per V8 heap space (`new_space`, `old_space`, ...). */
  spaces?: Record<string, { size: number; used: number }>;
}

/** Where the admin API is and how to authenticate (vspc --admin-token / --admin-cert). */
export interface AdminEndpoint {
  /** `http://HOST:PORT` or `https://HOST:PORT`. */
  url: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string | null;
  /** PEM CA certificate to trust for https. */
  ca?: string | null;
}

export function adminEndpoint(a: HostPort): AdminEndpoint {
  return { url: `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}` };
}

/** One admin API call through vspc-admin's client; resolves with the parsed JSON body. */
export function adminCall<T>(admin: AdminEndpoint, method: 'GET' | 'POST', path: string, timeoutMs = 30_000): Promise<T> {
  const url = new URL(admin.url);
  const secure = url.protocol === 'https:';
  const client = new AdminClient(
    { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) || (secure ? 443 : 80) },
    { token: admin.token, tls: secure ? { ca: admin.ca ? Buffer.from(admin.ca) : undefined } : null, timeoutMs },
  );
  return method === 'GET' ? client.get<T>(path) : client.post<T>(path);
}

export function adminGet<T>(admin: AdminEndpoint, path: string, timeoutMs = 30_000): Promise<T> {
  return adminCall<T>(admin, 'GET', path, timeoutMs);
}

export function adminPost<T>(admin: AdminEndpoint, path: string, timeoutMs = 30_000): Promise<T> {
  return adminCall<T>(admin, 'POST', path, timeoutMs);
}

export interface LoopDelay {
  p50: number;
  p99: number;
  max: number;
  n: number;
  /** Garbage collections in the same interval. */
  gc?: { count: number; major: number; totalMs: number; maxMs: number };
}

/** What `GET /api/v1/status` answers. */
export type ServerStatus = StatusView;

/** Common face of a started server and an external deployment. */
export interface Target {
  readonly proxy: HostPort;
  readonly admin: AdminEndpoint;
  /** The server's pid when its /proc entry is readable (same host), else null. */
  readonly pid: number | null;
  /** True when the benchmark started this server (it can be restarted). */
  readonly owned: boolean;
  status(): Promise<ServerStatus>;
  ports(): Promise<PortView[]>;
  /** memoryUsage() of the server, when it can be asked (a server we started). */
  memory(gc: boolean): Promise<ServerMemory | null>;
  /** Event-loop delay since the last call (a server we started). */
  loopDelay(): Promise<LoopDelay | null>;
  sample(): ProcSample | null;
}

abstract class TargetBase implements Target {
  abstract readonly proxy: HostPort;
  abstract readonly admin: AdminEndpoint;
  abstract readonly pid: number | null;
  abstract readonly owned: boolean;
  status(): Promise<ServerStatus> {
    return adminGet<ServerStatus>(this.admin, '/api/v1/status');
  }
  ports(): Promise<PortView[]> {
    return adminGet<PortView[]>(this.admin, '/api/v1/ports', 120_000);
  }
  memory(_gc: boolean): Promise<ServerMemory | null> {
    return Promise.resolve(null);
  }
  loopDelay(): Promise<LoopDelay | null> {
    return Promise.resolve(null);
  }
  sample(): ProcSample | null {
    if (this.pid === null) return null;
    try {
      return sampleProc(this.pid);
    } catch {
      return null;
    }
  }
}

export class ExternalTarget extends TargetBase {
  readonly owned = false;
  readonly pid: number | null;
  constructor(
    readonly proxy: HostPort,
    readonly admin: AdminEndpoint,
    pid: number | null,
  ) {
    super();
    this.pid = pid !== null && procAvailable(pid) ? pid : null;
  }
}

export interface ServerProcessOptions {
  dbPath: string;
  proxyPort: number;
  adminPort: number;
  portRange: { start: number; end: number };
  logLevel?: string;
  /** More vspc options, e.g. ['--scrollback', '0']. */
  extraArgs?: string[];
  /** More node options, e.g. ['--cpu-prof', '--cpu-prof-dir', 'prof']. */
  nodeArgs?: string[];
  /** Loopback address for the proxy, admin and client ports (default 127.0.0.1; a cluster node: 127.0.0.2 ...). */
  host?: string;
  /** Script to run instead of dist/src/cli/vspc.js. */
  script?: string;
}

/** A vspc server child process. */
export class ServerProcess extends TargetBase {
  readonly owned = true;
  readonly proxy: HostPort;
  readonly admin: AdminEndpoint;
  readonly spawnedAt = performance.now();
  stderr = '';
  private stderrLines = 0;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private memId = 1;

  private constructor(
    readonly child: ChildProcess,
    readonly options: ServerProcessOptions,
  ) {
    super();
    const host = options.host ?? '127.0.0.1';
    this.proxy = { host, port: options.proxyPort };
    this.admin = adminEndpoint({ host, port: options.adminPort });
    child.stdout?.on('data', () => undefined);
    child.stderr?.on('data', (d: Buffer) => {
      const text = d.toString('utf8');
      this.stderrLines += text.split('\n').length - 1;
      this.stderr += text;
      if (this.stderr.length > 256 * 1024) this.stderr = this.stderr.slice(-128 * 1024);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve({ code, signal });
      });
    });
  }

  get pid(): number | null {
    return this.exitInfo ? null : (this.child.pid ?? null);
  }

  /** Log lines the server wrote to stderr so far (warnings and errors at --log-level warn). */
  get logLines(): number {
    return this.stderrLines;
  }

  /** Distinct log messages (JSON lines' `message`) with their counts, from what stderr still holds. */
  logSummary(max = 10): Array<{ message: string; count: number }> {
    const counts = new Map<string, number>();
    for (const line of this.stderr.split('\n')) {
      if (!line.trim()) continue;
      let msg = line.slice(0, 200);
      try {
        const j = JSON.parse(line) as { message?: string; level?: string };
        if (j.message) msg = `${j.level ?? ''} ${j.message}`.trim();
      } catch {
        /* not JSON */
      }
      counts.set(msg, (counts.get(msg) ?? 0) + 1);
    }
    return [...counts].sort((a, b) => b[1] - a[1]).slice(0, max).map(([message, count]) => ({ message, count }));
  }

  static spawn(o: ServerProcessOptions): ServerProcess {
    const host = o.host ?? '127.0.0.1';
    const args = [
      '--proxy-listen',
      `${host}:${o.proxyPort}`,
      '--admin-listen',
      `${host}:${o.adminPort}`,
      '--client-listen-host',
      host,
      '--db',
      o.dbPath,
      '--port-range',
      `${o.portRange.start}-${o.portRange.end}`,
      '--expire-after',
      '0',
      '--log-level',
      o.logLevel ?? 'warn',
      // Every simulated host connects from 127.0.0.1: the per-address defences of a
      // real deployment (docs/security.md) would throttle the benchmark, not measure vspc.
      '--unidentified-per-address',
      '0',
      '--registration-rate',
      '0',
      ...(o.extraArgs ?? []),
    ];
    const nodeArgs = ['--expose-gc', '--import', GUARD_URL, ...(o.nodeArgs ?? [])];
    const child = spawnWithIpc(o.script ?? VSPC_SCRIPT, args, nodeArgs);
    return new ServerProcess(child, o);
  }

  /** Resolves once the admin API answers (the proxy port listens before it). */
  async waitReady(timeoutMs = 60_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.exitInfo) throw new Error(`vspc exited during start-up (${JSON.stringify(this.exitInfo)}): ${this.stderr.slice(-2000)}`);
      try {
        await adminGet(this.admin, '/api/v1/status', 2000);
        return performance.now() - this.spawnedAt;
      } catch {
        if (performance.now() > deadline) throw new Error(`vspc not ready after ${timeoutMs} ms: ${this.stderr.slice(-2000)}`);
        await sleep(20);
      }
    }
  }

  override memory(gc: boolean): Promise<ServerMemory | null> {
    return this.ask('bench:memory', { gc }, (m) => (m.memory as ServerMemory | undefined) ?? null);
  }

  /** A heap snapshot of the server after a full GC, written to `path` (slow: seconds); null if it cannot be asked. */
  heapSnapshot(path: string): Promise<string | null> {
    return this.ask('bench:heapsnapshot', { path }, (m) => (m.path as string | undefined) ?? null, 300_000);
  }

  /** Event-loop delay of the server since the last call (ms); null if it cannot be asked. */
  override loopDelay(): Promise<LoopDelay | null> {
    return this.ask('bench:loop', {}, (m) => {
      const d = m as unknown as LoopDelay;
      return { p50: d.p50, p99: d.p99, max: d.max, n: d.n, gc: d.gc };
    });
  }

  /** One request to the preloaded child guard over IPC; null if the child cannot answer within `timeoutMs` (10 s). */
  private ask<T>(type: string, payload: Record<string, unknown>, pick: (reply: Record<string, unknown>) => T, timeoutMs = 10_000): Promise<T | null> {
    if (this.exitInfo || !this.child.connected) return Promise.resolve(null);
    const id = this.memId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.child.off('message', onMsg);
        resolve(null);
      }, timeoutMs);
      const onMsg = (msg: unknown) => {
        const m = msg as Record<string, unknown> | null;
        if (m?.type !== type || m.id !== id) return;
        clearTimeout(timer);
        this.child.off('message', onMsg);
        resolve(pick(m));
      };
      this.child.on('message', onMsg);
      this.child.send({ type, id, ...payload });
    });
  }

  /** SIGTERM (graceful close), SIGKILL after `timeoutMs`. Resolves with how long it took. */
  async stop(timeoutMs = 30_000): Promise<number> {
    const t0 = performance.now();
    if (this.exitInfo) return 0;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
    return performance.now() - t0;
  }

  kill(): void {
    if (!this.exitInfo) this.child.kill('SIGKILL');
  }
}
