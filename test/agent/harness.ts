/**
 * Test harness for the guest agents (the C binary and the TypeScript agent): the
 * "serial line" is a real pty (socat `PTY,link=...` bridged to its stdio), the agent
 * runs as a child process on the pty slave, and the host side is the reference
 * TunnelEndpoint (role 'host') in the test process, driven with real time.
 *
 *   test ──write──► FaultyPipe ──► socat stdin ──► pty master ──► slave ◄── agent
 *   test ◄─receive─ FaultyPipe ◄── socat stdout ◄─ pty master ◄── slave ──► agent
 *
 * Every wait is on an event (a log line, bytes received, a stream state), bounded by
 * a timer that only fails the wait. Every child process is in a registry and is
 * killed by PID in every exit path (stop(), the test's after hooks, process exit).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  FrameDecoder,
  FrameType,
  Flag,
  TunnelEndpoint,
  decodeHello,
  encodeFrame,
  encodeHello,
  sessionTag,
  type Frame,
  type Hello,
  type TunnelEndpointOptions,
  type TunnelStream,
  type TunnelStreamError,
} from '../../src/protocol/tunnel/index.js';
import type { VspcError } from '../../src/errors.js';
import { Rng } from '../protocol/tunnel-sim.js';

/** Repository root (this file runs as dist/test/agent/harness.js). */
export const ROOT = new URL('../../../', import.meta.url).pathname;

export const now = (): number => performance.now();

// ------------------------------------------------------------------ child registry

const children = new Set<ChildProcess>();
let hooked = false;
function register(c: ChildProcess): void {
  children.add(c);
  c.once('exit', () => children.delete(c));
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const ch of children) {
      try {
        ch.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  });
}

/** The children this process started and has not seen exit: "pid command". */
export function liveChildren(): string[] {
  return [...children].map((c) => `${c.pid} ${c.spawnargs.join(' ')}`);
}

/** Resolves when `c` has exited (at once if it has). */
function exited(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => c.once('exit', () => resolve()));
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
async function stopChild(c: ChildProcess, graceMs = 2000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  c.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([exited(c), new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
  clearTimeout(timer);
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGKILL');
    await bounded(exited(c), 10_000, `pid ${c.pid} did not exit after SIGKILL`);
  }
}

export function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ agents

export type AgentKind = 'c' | 'ts';

let cAgentPath: string | undefined;
/**
 * Builds the C agent with packaging/build-agent.sh (stamp-based: instant when built) and
 * returns its path. VSPC_AGENT_BIN names another build to test instead (e.g. one with
 * -fsanitize=address,undefined; its vspc-agent-selftest next to it).
 */
export function buildCAgent(): { agent: string; selftest: string } {
  if (!cAgentPath && process.env.VSPC_AGENT_BIN) cAgentPath = process.env.VSPC_AGENT_BIN;
  if (!cAgentPath) {
    const out = execFileSync('bash', [join(ROOT, 'packaging/build-agent.sh'), '--print'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    cAgentPath = out.trim().split('\n').pop()!;
  }
  return { agent: cAgentPath, selftest: join(cAgentPath, '..', 'vspc-agent-selftest') };
}

export function agentCommand(kind: AgentKind, args: string[]): { file: string; argv: string[] } {
  if (kind === 'c') return { file: buildCAgent().agent, argv: args };
  const cli = join(ROOT, 'dist/src/cli/vspc-agent.js');
  if (!existsSync(cli)) throw new Error(`${cli} is missing: build first (npm run build:all)`);
  return { file: process.execPath, argv: [cli, ...args] };
}

/** A running agent: its stderr log, waits on log lines, stop/kill by PID. */
export class AgentProcess {
  private log = '';
  private readonly waiters = new Set<{ re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }>();
  readonly exitedP: Promise<void>;

  private constructor(
    readonly kind: AgentKind,
    readonly child: ChildProcess,
  ) {
    this.exitedP = exited(child);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      this.log += d;
      for (const w of [...this.waiters]) this.check(w);
    });
    child.stdout!.resume();
  }

  static start(kind: AgentKind, args: string[]): AgentProcess {
    const { file, argv } = agentCommand(kind, args);
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    register(child);
    return new AgentProcess(kind, child);
  }

  get pid(): number {
    return this.child.pid!;
  }
  get output(): string {
    return this.log;
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private check(w: { re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }): boolean {
    const re = new RegExp(w.re.source, w.re.flags.replace('g', ''));
    const m = re.exec(this.log.slice(w.from));
    if (!m) return false;
    this.waiters.delete(w);
    w.resolve(m);
    return true;
  }

  /** Waits for a log line matching `re` written after offset `from` (default: anywhere). */
  waitForLog(re: RegExp, timeoutMs = 10_000, from = 0): Promise<RegExpExecArray> {
    let w!: { re: RegExp; from: number; resolve: (m: RegExpExecArray) => void };
    const p = new Promise<RegExpExecArray>((resolve, reject) => {
      w = { re, from, resolve };
      if (this.check(w)) return;
      this.waiters.add(w);
      this.exitedP.then(() => {
        if (this.waiters.delete(w)) reject(new Error(`agent (${this.kind}) exited while waiting for ${re}; log:\n${this.log}`));
      });
    });
    return bounded(p, timeoutMs, `agent (${this.kind}) log ${re}; log so far:\n${this.log}`).finally(() => this.waiters.delete(w));
  }

  private readonly cursors = new Map<string, number>();
  /**
   * Waits for the next log line matching `re` after the previous match of the same
   * pattern (so successive calls see successive occurrences).
   */
  async waitForNext(re: RegExp, timeoutMs = 10_000): Promise<RegExpExecArray> {
    const key = re.source;
    const from = this.cursors.get(key) ?? 0;
    const m = await this.waitForLog(re, timeoutMs, from);
    this.cursors.set(key, from + m.index + m[0].length);
    return m;
  }

  /** SIGTERM (then SIGKILL after a bound). */
  stop(): Promise<void> {
    return stopChild(this.child);
  }

  /** SIGKILL: the agent dies without a word. */
  kill(): Promise<void> {
    return stopChild(this.child, 0, 'SIGKILL');
  }

  /** Peak resident memory (VmHWM), KiB, from /proc. */
  peakRssKiB(): number | undefined {
    try {
      const s = execFileSync('cat', [`/proc/${this.pid}/status`], { encoding: 'utf8' });
      const m = /VmHWM:\s+(\d+) kB/.exec(s);
      return m ? Number(m[1]) : undefined;
    } catch {
      return undefined;
    }
  }
}

// ------------------------------------------------------------------ the line

/** A pty made by socat: the agent gets the slave (`path`), the test its master through socat's stdio. */
export class PtyLine {
  private onData: (b: Buffer) => void = () => {};
  private onDrain: () => void = () => {};
  private readonly exitedP: Promise<void>;
  private gone = false;

  private constructor(
    readonly child: ChildProcess,
    readonly path: string,
    readonly slave: string,
  ) {
    this.exitedP = exited(child).then(() => {
      this.gone = true;
    });
    child.stdout!.on('data', (b: Buffer) => this.onData(b));
    child.stdin!.on('drain', () => this.onDrain());
    child.stdin!.on('error', () => {});
  }

  /** Starts socat with a pty whose slave is linked at `path`; resolves once the link exists. */
  static async start(path: string): Promise<PtyLine> {
    const child = spawn('socat', ['-d', '-d', '-b', '65536', 'STDIO', `PTY,link=${path}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    register(child);
    let err = '';
    const slave = await bounded(
      new Promise<string>((resolve, reject) => {
        child.stderr!.setEncoding('utf8');
        child.stderr!.on('data', (d: string) => {
          err += d;
          const m = /PTY is (\/dev\/pts\/\d+)/.exec(err);
          if (m && /starting data transfer loop/.test(err)) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`socat exited (${code}): ${err}`)));
        child.once('error', reject);
      }),
      10_000,
      `socat pty at ${path}`,
    ).catch(async (e) => {
      await stopChild(child, 0, 'SIGKILL');
      throw e;
    });
    return new PtyLine(child, path, slave);
  }

  get alive(): boolean {
    return !this.gone;
  }
  setHandlers(onData: (b: Buffer) => void, onDrain: () => void): void {
    this.onData = onData;
    this.onDrain = onDrain;
  }
  write(b: Uint8Array): boolean {
    if (this.gone || this.child.stdin!.destroyed) return false;
    return this.child.stdin!.write(b);
  }
  /** The line goes away: socat dies, the pty with it (the agent sees a hangup). */
  kill(): Promise<void> {
    return stopChild(this.child, 0, 'SIGKILL');
  }
  stop(): Promise<void> {
    return stopChild(this.child, 1000);
  }
}

// ------------------------------------------------------------------ faults

export interface FaultRates {
  /** Per byte: lose it. */
  drop?: number;
  /** Per byte: flip one bit. */
  flip?: number;
  /** Per byte: send it twice. */
  dup?: number;
}

/** Applies per-byte faults with a seeded PRNG; counts them. */
export class Faults {
  readonly rng: Rng;
  count = 0;
  bytes = 0;
  constructor(
    readonly rates: FaultRates,
    seed: number,
  ) {
    this.rng = new Rng(seed);
  }
  apply(b: Uint8Array): Uint8Array {
    const drop = this.rates.drop ?? 0;
    const flip = this.rates.flip ?? 0;
    const dup = this.rates.dup ?? 0;
    const total = drop + flip + dup;
    this.bytes += b.length;
    if (total <= 0) return b;
    const out: number[] = [];
    for (let i = 0; i < b.length; i++) {
      const x = this.rng.next();
      if (x >= total) {
        out.push(b[i]);
        continue;
      }
      this.count++;
      if (x < drop) continue;
      if (x < drop + flip) out.push(b[i] ^ (1 << this.rng.int(8)));
      else out.push(b[i], b[i]);
    }
    return Uint8Array.from(out);
  }
}

// ------------------------------------------------------------------ the host side

/** What the host's stream saw: data (hashed), end, close, reset. */
export class HostStream {
  received = 0;
  private readonly hash = createHash('sha256');
  private digestValue: string | undefined;
  opened = false;
  ended = false;
  closed = false;
  error: TunnelStreamError | undefined;
  keep: Buffer[] | undefined;
  /** Bytes delivered but not consumed yet (when consuming is held back). */
  holdConsume = false;
  drains = 0;

  constructor(
    readonly host: HostSide,
    readonly stream: TunnelStream,
  ) {}

  get digest(): string {
    this.digestValue ??= this.hash.digest('hex');
    return this.digestValue;
  }
  text(): string {
    return Buffer.concat(this.keep ?? []).toString('utf8');
  }

  /** Writes all of `data`, waiting for drain when the stream's send buffer is full. */
  async writeAll(data: Uint8Array, chunk = 16384, timeoutMs = 60_000): Promise<void> {
    for (let off = 0; off < data.length; off += chunk) {
      if (this.error) throw this.error;
      const ok = this.stream.write(data.subarray(off, Math.min(off + chunk, data.length)), now());
      this.host.after();
      if (!ok) {
        const d = this.drains;
        await this.host.until(() => this.drains > d || this.error !== undefined || this.closed, `drain of stream ${this.stream.id}`, timeoutMs);
      }
    }
  }
  end(): void {
    this.stream.end(now());
    this.host.after();
  }
  reset(code?: number): void {
    this.stream.reset(now(), code);
    this.host.after();
  }
  consumeHeld(): void {
    const n = this.stream.unconsumed;
    if (n > 0) this.stream.consume(n, now());
    this.host.after();
  }
}

export interface HostTransport {
  write(b: Uint8Array): boolean;
}

/**
 * The host: a TunnelEndpoint (role 'host') with real time and timers. `until(pred)`
 * waits for a condition re-checked after every event the endpoint sees.
 */
export class HostSide {
  ep: TunnelEndpoint;
  private transport: HostTransport | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly waiters = new Set<{ pred: () => boolean; resolve: () => void }>();
  readonly errors: VspcError[] = [];
  sessions = 0;
  peerRestarts = 0;
  downs = 0;
  private destroyed = false;

  constructor(transport: HostTransport | undefined, opts: Partial<Omit<TunnelEndpointOptions, 'role' | 'write'>> = {}) {
    this.transport = transport;
    this.ep = new TunnelEndpoint({
      ...opts,
      role: 'host',
      write: (b) => (this.transport ? this.transport.write(b) : false),
      handlers: {
        linkUp: (i) => {
          if (i.newSession) this.sessions++;
        },
        linkDown: () => this.downs++,
        peerRestarted: () => this.peerRestarts++,
        error: (e) => this.errors.push(e),
      },
    });
  }

  get up(): boolean {
    return this.ep.state === 'up';
  }

  start(): void {
    this.ep.start(now());
    this.after();
  }
  setTransport(t: HostTransport | undefined): void {
    this.transport = t;
    if (t && !this.destroyed) {
      this.ep.drained(now());
      this.after();
    }
  }
  receive(b: Uint8Array): void {
    if (this.destroyed) return;
    this.ep.receive(b, now());
    this.after();
  }
  drained(): void {
    if (this.destroyed) return;
    this.ep.drained(now());
    this.after();
  }

  /** Re-arms the timer and re-checks the waiters. Call after any call into the endpoint. */
  after(): void {
    if (this.destroyed) return;
    clearTimeout(this.timer);
    const d = this.ep.nextDeadline();
    if (d !== undefined) {
      this.timer = setTimeout(() => {
        if (this.destroyed) return;
        this.ep.poll(now());
        this.after();
      }, Math.max(0, Math.ceil(d - now())));
    }
    for (const w of [...this.waiters]) {
      if (w.pred()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  /** Resolves once `pred()` holds (checked now and after every endpoint event). */
  until(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    if (pred()) return Promise.resolve();
    let w!: { pred: () => boolean; resolve: () => void };
    const p = new Promise<void>((resolve) => {
      w = { pred, resolve };
      this.waiters.add(w);
    });
    return bounded(p, timeoutMs, what).finally(() => this.waiters.delete(w));
  }

  waitUp(timeoutMs = 20_000): Promise<void> {
    return this.until(() => this.up, 'the tunnel handshake', timeoutMs);
  }

  /** Opens a stream; data is hashed (and kept with `keep`), consumed at once unless `holdConsume`. */
  open(port: number, o: { keep?: boolean; holdConsume?: boolean; streamWindow?: number } = {}): HostStream {
    let hs!: HostStream;
    const s = this.ep.openStream(
      port,
      now(),
      {
        open: () => {
          hs.opened = true;
        },
        data: (chunk, st) => {
          hs.received += chunk.length;
          (hs as unknown as { hash: ReturnType<typeof createHash> }).hash.update(chunk);
          hs.keep?.push(Buffer.from(chunk));
          if (!hs.holdConsume) st.consume(chunk.length, now());
        },
        end: () => {
          hs.ended = true;
        },
        close: () => {
          hs.closed = true;
        },
        reset: (err) => {
          hs.error = err;
        },
        drain: () => {
          hs.drains++;
        },
      },
      o.streamWindow !== undefined ? { streamWindow: o.streamWindow } : {},
    );
    hs = new HostStream(this, s);
    if (o.keep) hs.keep = [];
    hs.holdConsume = o.holdConsume ?? false;
    this.after();
    return hs;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.ep.destroy();
    this.destroyed = true;
    clearTimeout(this.timer);
  }
}

// ------------------------------------------------------------------ TCP services

/** A TCP service on 127.0.0.1:0 with per-connection behaviour and a record of connections. */
export class Service {
  readonly conns = new Set<net.Socket>();
  accepted = 0;
  closedCount = 0;
  private readonly waiters = new Set<{ pred: () => boolean; resolve: () => void }>();

  private constructor(
    readonly server: net.Server,
    readonly port: number,
  ) {}

  static async start(onConn: (s: net.Socket, svc: Service) => void): Promise<Service> {
    const server = net.createServer({ allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const svc = new Service(server, (server.address() as net.AddressInfo).port);
    server.on('connection', (s) => {
      svc.accepted++;
      svc.conns.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        svc.conns.delete(s);
        svc.closedCount++;
        svc.changed();
      });
      onConn(s, svc);
      svc.changed();
    });
    return svc;
  }

  /** Echo: everything back; its end when the client ends (half-close kept). */
  static echo(): Promise<Service> {
    return Service.start((s) => s.pipe(s));
  }

  changed(): void {
    for (const w of [...this.waiters]) {
      if (w.pred()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  until(pred: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    if (pred()) return Promise.resolve();
    let w!: { pred: () => boolean; resolve: () => void };
    const p = new Promise<void>((resolve) => {
      w = { pred, resolve };
      this.waiters.add(w);
    });
    return bounded(p, timeoutMs, what).finally(() => this.waiters.delete(w));
  }

  close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ------------------------------------------------------------------ a whole rig

export interface RigOptions {
  kind: AgentKind;
  /** Ports for --allow (besides the echo service's). */
  allow?: number[];
  /** Faults on the bytes between host and line, per direction. */
  faults?: { h2a?: FaultRates; a2h?: FaultRates; seed?: number };
  host?: Partial<Omit<TunnelEndpointOptions, 'role' | 'write'>>;
  agentArgs?: string[];
  /** Further services the agent may reach (allowed; closed with the rig). */
  services?: Array<() => Promise<Service>>;
  /** No HostSide: the test drives the line itself (RawHost). */
  noHost?: boolean;
}

/**
 * A pty line, an agent on it, an echo service it may reach, and the host connected
 * to the line (started once the agent has the line open in raw mode).
 */
export class Rig {
  readonly dir: string;
  line!: PtyLine;
  agent!: AgentProcess;
  host!: HostSide;
  echo!: Service;
  readonly extra: Service[] = [];
  h2a: Faults | undefined;
  a2h: Faults | undefined;
  /** Called with each chunk going host → line (after faults); may return a replacement. */
  tapH2A: ((b: Uint8Array) => Uint8Array) | undefined;
  tapA2H: ((b: Uint8Array) => Uint8Array) | undefined;

  private constructor(readonly o: RigOptions) {
    this.dir = mkdtempSync(join(tmpdir(), 'vspc-agent-'));
  }

  get linePath(): string {
    return join(this.dir, 'line');
  }

  static async start(o: RigOptions): Promise<Rig> {
    const rig = new Rig(o);
    try {
      await rig.init();
    } catch (err) {
      await rig.close();
      throw err;
    }
    return rig;
  }

  private async init(): Promise<void> {
    const f = this.o.faults;
    if (f?.h2a) this.h2a = new Faults(f.h2a, (f.seed ?? 1) * 2 + 1);
    if (f?.a2h) this.a2h = new Faults(f.a2h, (f.seed ?? 1) * 2 + 2);
    this.echo = await Service.echo();
    for (const make of this.o.services ?? []) this.extra.push(await make());
    this.host = new HostSide(undefined, this.o.host);
    await this.startLine();
    await this.startAgent();
    if (this.o.noHost) return;
    this.connectHost();
    this.host.start();
  }

  allowArgs(): string[] {
    return [this.echo.port, ...this.extra.map((s) => s.port), ...(this.o.allow ?? [])].flatMap((p) => ['--allow', String(p)]);
  }

  async startLine(): Promise<void> {
    this.line = await PtyLine.start(this.linePath);
    this.line.setHandlers(
      (b) => {
        let x: Uint8Array = b;
        if (this.a2h) x = this.a2h.apply(x);
        if (this.tapA2H) x = this.tapA2H(x);
        this.host.receive(x);
      },
      () => this.host.drained(),
    );
  }

  /** Starts the agent on the line and waits until it has the line open (raw mode set). */
  async startAgent(extraArgs: string[] = []): Promise<void> {
    this.agent = AgentProcess.start(this.o.kind, ['--device', this.linePath, ...this.allowArgs(), '-v', ...(this.o.agentArgs ?? []), ...extraArgs]);
    await this.waitLineOpen();
  }

  /** Waits for the agent's next "line ... open" log line. */
  async waitLineOpen(timeoutMs = 15_000): Promise<void> {
    await this.agent.waitForNext(/line \S+ open \(/, timeoutMs);
  }

  /** Connects the host's output to the current line. */
  connectHost(): void {
    const line = this.line;
    this.host.setTransport({
      write: (b) => {
        let x = b;
        if (this.h2a) x = this.h2a.apply(x);
        if (this.tapH2A) x = this.tapH2A(x);
        return line.write(x);
      },
    });
  }

  disconnectHost(): void {
    this.host.setTransport(undefined);
  }

  async close(): Promise<void> {
    this.host?.destroy();
    await Promise.allSettled([this.agent?.stop(), this.line?.stop(), this.echo?.close(), ...this.extra.map((s) => s.close())]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Deterministic pseudo-random bytes. */
export function randomBytesSeeded(n: number, seed: number): Buffer {
  const rng = new Rng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) {
    const v = (rng.next() * 0x100000000) >>> 0;
    b[i] = v & 0xff;
    if (i + 1 < n) b[i + 1] = (v >>> 8) & 0xff;
    if (i + 2 < n) b[i + 2] = (v >>> 16) & 0xff;
    if (i + 3 < n) b[i + 3] = (v >>> 24) & 0xff;
  }
  return b;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

// ------------------------------------------------------------------ a raw host

/**
 * A host made of hand-built frames, for the stream rules the reference host never
 * breaks: it does the handshake itself, numbers its sequenced frames, ACKs every
 * sequenced frame of the agent at once and records them in order. No
 * retransmission: the pty loses nothing.
 */
export class RawHost {
  readonly boot: number;
  agentBoot = 0;
  tag = 0;
  private sndSeq = 0;
  rcvNext = 0;
  /** The agent's cumulative ack as last seen. */
  agentAck = 0;
  /** Frames of the agent without the AGENT direction flag (must stay 0). */
  noAgentFlag = 0;
  readonly delivered: Frame[] = [];
  readonly hellos: Hello[] = [];
  private readonly decoder = new FrameDecoder();
  private readonly waiters = new Set<{ pred: () => boolean; resolve: () => void }>();

  constructor(
    readonly line: PtyLine,
    boot = 0x0badcafe,
  ) {
    this.boot = boot;
    line.setHandlers(
      (b) => this.onBytes(b),
      () => {},
    );
  }

  private onBytes(b: Uint8Array): void {
    for (const f of this.decoder.decode(b)) {
      if (f.type === FrameType.HELLO) {
        const h = decodeHello(f.payload);
        if (h) {
          this.hellos.push(h);
          this.agentBoot = h.bootId;
        }
        continue;
      }
      if (f.tag !== this.tag) continue;
      if ((f.flags & Flag.AGENT) === 0) {
        this.noAgentFlag++; // the agent must mark every frame it sends (spec 5.4)
        continue;
      }
      this.agentAck = f.ack;
      if (f.type >= 0x10) {
        if (f.seq === this.rcvNext) {
          this.rcvNext = (this.rcvNext + 1) & 0xffff;
          this.delivered.push({ ...f, payload: Uint8Array.from(f.payload) });
        }
        this.ack();
      } else if (f.flags & Flag.POLL) {
        this.ack();
      }
    }
    for (const w of [...this.waiters]) {
      if (w.pred()) {
        this.waiters.delete(w);
        w.resolve();
      }
    }
  }

  until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    if (pred()) return Promise.resolve();
    let w!: { pred: () => boolean; resolve: () => void };
    const p = new Promise<void>((resolve) => {
      w = { pred, resolve };
      this.waiters.add(w);
    });
    return bounded(p, timeoutMs, what).finally(() => this.waiters.delete(w));
  }

  writeFrame(f: Frame): void {
    this.line.write(encodeFrame(f, true));
  }

  hello(o: Partial<Hello> = {}): void {
    const h: Hello = { version: 1, role: 0, flags: 0, window: 32, bootId: this.boot, peerBootId: this.agentBoot, maxPayload: 1024, ...o };
    this.writeFrame({ type: FrameType.HELLO, flags: 0, tag: 0, seq: 0, ack: 0, stream: 0, payload: encodeHello(h) });
  }

  /** HELLO exchange; resolves when the agent's HELLO names us (the agent is then up after our UP HELLO). */
  async handshake(): Promise<void> {
    this.hello({ peerBootId: 0 });
    await this.until(() => this.hellos.some((h) => h.peerBootId === this.boot), "the agent's HELLO naming us");
    this.tag = sessionTag(this.boot, this.agentBoot);
    this.hello({ flags: 1 });
  }

  ack(): void {
    this.writeFrame({ type: FrameType.ACK, flags: 0, tag: this.tag, seq: 0, ack: this.rcvNext, stream: 0, payload: new Uint8Array(0) });
  }

  /** The sequence number of our next sequenced frame. */
  get nextSeq(): number {
    return this.sndSeq;
  }

  /** A sequenced frame with the next sequence number. Returns its seq. */
  send(type: number, stream: number, payload: Uint8Array = new Uint8Array(0), o: { tag?: number } = {}): number {
    const seq = this.sndSeq;
    this.sndSeq = (this.sndSeq + 1) & 0xffff;
    this.writeFrame({ type, flags: 0, tag: o.tag ?? this.tag, seq, ack: this.rcvNext, stream, payload });
    return seq;
  }

  /** Waits for the next delivered frame after index `from` matching `pred`. */
  async expect(pred: (f: Frame) => boolean, what: string, from = 0, timeoutMs = 10_000): Promise<Frame> {
    await this.until(() => this.delivered.slice(from).some(pred), what, timeoutMs);
    return this.delivered.slice(from).find(pred)!;
  }
}
