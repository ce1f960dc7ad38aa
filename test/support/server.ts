import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';
import { VspcServer } from '../../src/server.js';
import { normalizeUuid } from '../../src/util/uuid.js';
import type { PortView } from '../../src/admin/views.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { SimulatedVm, TelnetUser, type SimulatedVmOptions } from './sim/index.js';
import { Option } from '../../src/protocol/telnet/constants.js';
import { LogCapture } from './log-capture.js';
import { reservePortRange } from './ports.js';

export const ROOT = new URL('../../../', import.meta.url).pathname;

/** Makes a temporary directory removed by the returned cleanup function. */
export function tempDir(prefix = 'vspc-test-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A self-signed certificate for localhost/127.0.0.1, made with certs/make-self-signed.sh. */
export function makeCert(dir: string): { cert: Buffer; key: Buffer; certPath: string; keyPath: string } {
  execFileSync('sh', [join(ROOT, 'certs/make-self-signed.sh'), dir, 'localhost'], { stdio: 'pipe', timeout: 20_000 });
  const certPath = join(dir, 'vspc.crt');
  const keyPath = join(dir, 'vspc.key');
  return { cert: readFileSync(certPath), key: readFileSync(keyPath), certPath, keyPath };
}

export interface TestServerOptions {
  /** Number of client ports in the range (default 8). With `tls`, 2N consecutive free ports are found and tlsPortOffset = N. */
  ports?: number;
  tls?: { cert: Buffer; key: Buffer };
  /** Reuse a database file / port range (restart). */
  dbPath?: string;
  portRange?: { start: number; end: number };
  config?: Partial<VspcConfig>;
  logLevel?: string;
}

/** A VspcServer running in-process on loopback with short timeouts and captured logs. */
export class TestServer {
  private closedFlag = false;
  private constructor(
    readonly server: VspcServer,
    readonly config: VspcConfig,
    readonly logs: LogCapture,
    private readonly removeDir: (() => void) | null,
  ) {}

  static async start(o: TestServerOptions = {}): Promise<TestServer> {
    const n = o.ports ?? 8;
    const range = o.portRange ?? (await reservePortRange(o.tls ? 2 * n : n));
    const portRange = o.portRange ?? { start: range.start, end: range.start + n - 1 };
    let removeDir: (() => void) | null = null;
    let dbPath = o.dbPath;
    if (!dbPath) {
      const t = tempDir();
      removeDir = t.remove;
      dbPath = join(t.dir, 'vspc.db');
    }
    const config: VspcConfig = {
      ...DEFAULTS,
      proxyListen: { host: '127.0.0.1', port: 0 },
      proxyTlsListen: o.tls ? { host: '127.0.0.1', port: 0 } : null,
      adminListen: { host: '127.0.0.1', port: 0 },
      tls: o.tls ?? null,
      dbPath,
      portRange,
      tlsPortOffset: portRange.end - portRange.start + 1,
      clientListenHost: '127.0.0.1',
      expireAfterMs: 0,
      humanTimeoutMs: 300,
      // Long enough for a TLS handshake and the negotiation on a loaded machine; tests of the deadline set their own.
      identifyTimeoutMs: 5000,
      subnegotiationTimeoutMs: 1000,
      closeGraceMs: 200,
      bindRetryMs: 200,
      // The default (auto: /run/vspc/broker.sock) is one path for the whole machine: tests that want a broker give their own.
      brokerSocket: null,
      ...o.config,
    };
    const logs = new LogCapture({ level: o.logLevel ?? 'debug' });
    try {
      const server = await VspcServer.start(config, logs.logger);
      return new TestServer(server, config, logs, removeDir);
    } catch (err) {
      removeDir?.();
      throw err;
    }
  }

  get proxyPort(): number {
    return this.server.addresses.proxy.port;
  }

  get proxyTlsPort(): number {
    const a = this.server.addresses.proxyTls;
    if (!a) throw new Error('no TLS proxy listener');
    return a.port;
  }

  get adminPort(): number {
    return this.server.addresses.admin.port;
  }

  get adminAddress(): string {
    return `127.0.0.1:${this.adminPort}`;
  }

  async api<T = unknown>(path: string): Promise<T> {
    const res = await fetch(`http://127.0.0.1:${this.adminPort}${path}`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  }

  ports(): Promise<PortView[]> {
    return this.api<PortView[]>('/api/v1/ports');
  }

  /** The hub of a VM serial port (uuid in any form). */
  hub(uuid: string, label = ''): ConsoleHub | undefined {
    const u = normalizeUuid(uuid);
    return u ? this.server.registry.get('esxi', u, label) : undefined;
  }

  /** Waits until the VM serial port is registered and connected; returns its hub. */
  async waitRegistered(uuid: string, label = '', timeoutMs = 5000): Promise<ConsoleHub> {
    let hub: ConsoleHub | undefined;
    await waitUntil(() => {
      hub = this.hub(uuid, label);
      return !!hub && hub.source !== null;
    }, timeoutMs, `VM ${uuid}${label ? `/${label}` : ''} registered`);
    return hub!;
  }

  /** Connects a simulated VM to the plain proxy port and waits until it is registered. */
  async connectVm(opts: Partial<SimulatedVmOptions> & { uuid: string; name: string }, cleanup?: Cleanup): Promise<{ vm: SimulatedVm; hub: ConsoleHub }> {
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: this.proxyPort, ...opts });
    cleanup?.add(() => vm.destroy());
    await vm.whenProxied(5000);
    const hub = await this.waitRegistered(opts.uuid, labelOf(opts.serviceUri));
    return { vm, hub };
  }

  /** Connects a telnet user to a VM serial port's client port and waits for BINARY both ways. */
  async connectUser(port: number, cleanup?: Cleanup, expectText = '[vspc: '): Promise<TelnetUser> {
    const user = await TelnetUser.connect({ host: '127.0.0.1', port });
    cleanup?.add(() => user.destroy());
    await user.waitForOptions([
      ['us', Option.BINARY],
      ['him', Option.BINARY],
      ['him', Option.ECHO],
      ['him', Option.SGA],
    ]);
    if (expectText) await user.waitFor(expectText, 3000);
    // The server has read our answers (WILL BINARY...) before any data of the test follows.
    await user.barrier();
    return user;
  }

  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    await this.server.close();
  }

  /** Close and remove the temporary directory (when this server made it). */
  async dispose(): Promise<void> {
    try {
      await this.close();
    } catch {
      this.server.destroy();
    }
    this.removeDir?.();
  }
}

/** A TestServer for one test, closed (with everything registered on `cleanup`) when the test ends. */
export async function startServer(
  t: { after(fn: () => unknown): void },
  opts: TestServerOptions = {},
): Promise<{ ts: TestServer; cleanup: Cleanup }> {
  const cleanup = new Cleanup();
  const ts = await TestServer.start(opts);
  t.after(async () => {
    await cleanup.run();
    await ts.dispose();
  });
  return { ts, cleanup };
}

export function labelOf(serviceUri?: string): string {
  if (!serviceUri) return '';
  const q = serviceUri.indexOf('?');
  return q < 0 ? '' : (new URLSearchParams(serviceUri.slice(q + 1)).get('port') ?? '');
}

/**
 * Polls `cond` every 10 ms until true; rejects after `timeoutMs` naming `what`. For
 * state that has no event to wait on (the registry, an HTTP answer); prefer an event
 * or a barrier where there is one.
 */
export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(10);
  }
}

/** `promise`, or a rejection naming `what` if it has not settled after `timeoutMs`. */
export async function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves once vspc has handled everything the VM and the users sent so far and
 * everything it forwarded has arrived at the other end: after it, "nothing more
 * arrived" is a fact, not a guess. Users' barriers first (their input is then
 * written to the VM connection), the VM's (the VM then has that input, and vspc has
 * written the VM's output to the users), the users' again (they then have it).
 */
export async function settle(vm: SimulatedVm | null, ...users: TelnetUser[]): Promise<void> {
  await Promise.all(users.map((u) => u.barrier()));
  if (vm) await vm.barrier();
  await Promise.all(users.map((u) => u.barrier()));
}

/** Runs registered cleanups in reverse order; each at most once, errors ignored. */
export class Cleanup {
  private fns: Array<() => unknown> = [];
  add(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    const fns = this.fns.reverse();
    this.fns = [];
    for (const fn of fns) {
      try {
        await fn();
      } catch {
        /* best effort */
      }
    }
  }
}

let uuidCounter = 0;
/** A fresh UUID in ESXi's text form, plus its 32-hex normal form. */
export function esxiUuid(): { text: string; hex: string } {
  const bytes = Buffer.alloc(16);
  bytes.writeUInt32BE(Date.now() % 0xffffffff, 0);
  bytes.writeUInt32BE(process.pid, 4);
  bytes.writeUInt32BE(++uuidCounter, 8);
  bytes.writeUInt32BE(Math.floor(Math.random() * 0xffffffff), 12);
  const hex = bytes.toString('hex');
  const pairs = hex.match(/../g)!;
  const text = `${pairs.slice(0, 8).join(' ')}-${pairs.slice(8).join(' ')}`;
  return { text, hex };
}

/** Every byte value 0..255, repeated, with IAC, CR NUL and CR LF sequences mixed in. */
export function binaryPayload(size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    out[i] = i < 256 ? i : x >> 16;
  }
  const specials = [Buffer.of(255), Buffer.of(255, 255), Buffer.of(13, 0), Buffer.of(13, 10), Buffer.of(13), Buffer.of(255, 240), Buffer.of(13, 255)];
  for (let i = 256, k = 0; i + 3 < size; i += 97, k++) specials[k % specials.length].copy(out, i);
  return out;
}
