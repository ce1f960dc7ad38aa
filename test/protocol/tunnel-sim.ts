/**
 * Deterministic discrete-event simulation of a serial line between two
 * TunnelEndpoints (host and agent), for the tunnel tests. Virtual time in ms; a
 * seeded PRNG drives every fault. Each direction has a bandwidth (bytes are
 * serialised one write() chunk after another), a latency, a transport buffer
 * (write() returns false above it, drained() follows when it empties), and faults:
 * per-byte bit flips, drops, duplicates and garbage insertion; per-chunk (≈ per
 * frame) drops, duplicates and reordering (extra delay).
 */
import { TunnelEndpoint, type TunnelEndpointOptions, type TunnelStream } from '../../src/protocol/tunnel/index.js';

/** mulberry32: small, fast, deterministic. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  u32(): number {
    return (this.int(0xffffffff) + 1) >>> 0;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

export interface Faults {
  /** Per byte: flip one random bit. */
  byteFlip?: number;
  /** Per byte: lose it. */
  byteDrop?: number;
  /** Per byte: send it twice. */
  byteDup?: number;
  /** Per byte: insert 1..16 random bytes (zeros included) before it. */
  garbage?: number;
  /** Per write() chunk (one frame): lose it whole. */
  frameDrop?: number;
  /** Per chunk: deliver it a second time, a little later. */
  frameDup?: number;
  /** Per chunk: delay it by up to reorderMaxMs extra, so later chunks overtake it. */
  reorder?: number;
  reorderMaxMs?: number;
}

export interface DirectionParams {
  bytesPerSecond: number;
  latencyMs: number;
  /** Transport buffer, bytes: write() returns false while more than this is unsent. */
  txBuffer: number;
  faults: Faults;
}

export type Side = 'host' | 'agent';
const other = (s: Side): Side => (s === 'host' ? 'agent' : 'host');

interface Event {
  t: number;
  n: number;
  fn: () => void;
}

class Heap {
  private a: Event[] = [];
  get size(): number {
    return this.a.length;
  }
  peek(): Event | undefined {
    return this.a[0];
  }
  private less(i: number, j: number): boolean {
    const x = this.a[i];
    const y = this.a[j];
    return x.t < y.t || (x.t === y.t && x.n < y.n);
  }
  push(e: Event): void {
    const a = this.a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  pop(): Event | undefined {
    const a = this.a;
    if (a.length === 0) return undefined;
    const top = a[0];
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(l, m)) m = l;
        if (r < a.length && this.less(r, m)) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m], a[i]];
        i = m;
      }
    }
    return top;
  }
}

export interface DirectionStats {
  chunks: number;
  bytes: number;
  /** Time the wire was busy, ms. */
  busyMs: number;
  faults: number;
}

class Direction {
  busyUntil = 0;
  queued = 0;
  blocked = false;
  readonly stats: DirectionStats = { chunks: 0, bytes: 0, busyMs: 0, faults: 0 };
  /** Chunks on the wire are copied here when a tap is installed. */
  tap: ((bytes: Uint8Array, t: number) => void) | undefined;
  constructor(
    private readonly sim: Sim,
    readonly from: Side,
    public p: DirectionParams,
  ) {}

  write(bytes: Uint8Array): boolean {
    const sim = this.sim;
    const now = sim.now;
    const n = bytes.length;
    const start = Math.max(now, this.busyUntil);
    const dur = (n * 1000) / this.p.bytesPerSecond;
    const end = start + dur;
    this.busyUntil = end;
    this.queued += n;
    this.stats.chunks++;
    this.stats.bytes += n;
    this.stats.busyMs += dur;
    this.tap?.(bytes, end);
    sim.schedule(end, () => {
      this.queued -= n;
      if (this.blocked && this.queued <= this.p.txBuffer) {
        this.blocked = false;
        sim.endpoint(this.from).drained(sim.now);
      }
    });
    const f = this.p.faults;
    const rng = sim.rng;
    if (!(f.frameDrop && rng.next() < f.frameDrop)) {
      const data = this.corrupt(bytes);
      let at = end + this.p.latencyMs;
      if (f.reorder && rng.next() < f.reorder) at += rng.next() * (f.reorderMaxMs ?? 50);
      const to = other(this.from);
      sim.schedule(at, () => sim.deliver(to, data));
      if (f.frameDup && rng.next() < f.frameDup) {
        const again = data.slice();
        sim.schedule(at + rng.next() * (f.reorderMaxMs ?? 20), () => sim.deliver(to, again));
      }
    } else {
      this.stats.faults++;
    }
    if (this.queued > this.p.txBuffer) {
      this.blocked = true;
      return false;
    }
    return true;
  }

  private corrupt(bytes: Uint8Array): Uint8Array {
    const f = this.p.faults;
    const flip = f.byteFlip ?? 0;
    const drop = f.byteDrop ?? 0;
    const dup = f.byteDup ?? 0;
    const garbage = f.garbage ?? 0;
    const total = flip + drop + dup + garbage;
    if (total <= 0) return bytes.slice();
    const rng = this.sim.rng;
    const out: number[] = [];
    // Geometric gaps between faults: O(faults) random draws, not O(bytes).
    const gap = (): number => Math.floor(Math.log(1 - rng.next()) / Math.log(1 - total));
    let nextFault = gap();
    for (let i = 0; i < bytes.length; i++) {
      if (i !== nextFault) {
        out.push(bytes[i]);
        continue;
      }
      this.stats.faults++;
      nextFault = i + 1 + gap();
      const k = rng.next() * total;
      if (k < flip) out.push(bytes[i] ^ (1 << rng.int(8)));
      else if (k < flip + drop) continue;
      else if (k < flip + drop + dup) out.push(bytes[i], bytes[i]);
      else {
        const g = 1 + rng.int(16);
        for (let j = 0; j < g; j++) out.push(rng.next() < 0.2 ? 0 : rng.int(256));
        out.push(bytes[i]);
      }
    }
    return Uint8Array.from(out);
  }
}

export type EndpointFactory = (side: Side, sim: Sim) => Omit<TunnelEndpointOptions, 'write' | 'role'>;

export interface SimOptions {
  seed: number;
  h2a: DirectionParams;
  a2h: DirectionParams;
  endpoint: EndpointFactory;
}

export class Sim {
  now = 0;
  readonly rng: Rng;
  private readonly heap = new Heap();
  private seqNo = 0;
  private readonly eps: Record<Side, TunnelEndpoint>;
  readonly dirs: Record<Side, Direction>;
  /** Incarnation per side; bumps on restart(). */
  readonly generation: Record<Side, number> = { host: 0, agent: 0 };
  private readonly factory: EndpointFactory;
  /** Checked after every event; throw to fail the run. */
  invariant: (() => void) | undefined;

  constructor(opts: SimOptions) {
    this.rng = new Rng(opts.seed);
    this.factory = opts.endpoint;
    this.dirs = { host: new Direction(this, 'host', opts.h2a), agent: new Direction(this, 'agent', opts.a2h) };
    this.eps = { host: this.make('host'), agent: this.make('agent') };
  }

  private make(side: Side): TunnelEndpoint {
    const dir = this.dirs[side];
    const opts = this.factory(side, this);
    return new TunnelEndpoint({ bootId: this.rng.u32(), newBootId: () => this.rng.u32(), ...opts, role: side, write: (b) => dir.write(b) });
  }

  endpoint(side: Side): TunnelEndpoint {
    return this.eps[side];
  }
  get host(): TunnelEndpoint {
    return this.eps.host;
  }
  get agent(): TunnelEndpoint {
    return this.eps.agent;
  }

  /** Starts both endpoints, the agent `agentDelayMs` later. */
  start(agentDelayMs = 0): void {
    this.eps.host.start(this.now);
    if (agentDelayMs <= 0) this.eps.agent.start(this.now);
    else this.schedule(this.now + agentDelayMs, () => this.eps.agent.start(this.now));
  }

  /** Replaces one side by a fresh endpoint (new boot id); the old one is destroyed; its bytes in flight still arrive. */
  restart(side: Side): TunnelEndpoint {
    this.eps[side].destroy();
    this.generation[side]++;
    this.dirs[side].blocked = false;
    const ep = this.make(side);
    this.eps[side] = ep;
    ep.start(this.now);
    return ep;
  }

  schedule(t: number, fn: () => void): void {
    this.heap.push({ t: Math.max(t, this.now), n: this.seqNo++, fn });
  }

  deliver(to: Side, data: Uint8Array): void {
    const ep = this.eps[to];
    if (ep.state === 'new' || ep.state === 'destroyed') return; // nobody reading the line yet
    ep.receive(data, this.now);
  }

  /**
   * Runs until `done()` holds (true) or virtual time would pass `untilMs` (false).
   * Throws when time stops advancing (a deadline that poll() does not move).
   */
  run(done: () => boolean, untilMs: number): boolean {
    let lastT = -1;
    let same = 0;
    for (;;) {
      if (done()) return true;
      const ev = this.heap.peek();
      const dh = this.eps.host.nextDeadline() ?? Infinity;
      const da = this.eps.agent.nextDeadline() ?? Infinity;
      let t = Math.min(ev?.t ?? Infinity, dh, da);
      if (t > untilMs) {
        this.now = Math.max(this.now, untilMs);
        return done();
      }
      if (t < this.now) t = this.now;
      this.now = t;
      if (t === lastT) {
        if (++same > 200_000) throw new Error(`sim: no progress at t=${t}`);
      } else {
        lastT = t;
        same = 0;
      }
      if (ev !== undefined && ev.t <= t) {
        this.heap.pop();
        ev.fn();
      } else {
        if (dh <= t) this.eps.host.poll(t);
        if (da <= t) this.eps.agent.poll(t);
      }
      this.invariant?.();
    }
  }
}

// ------------------------------------------------------------------ stream workload

export interface StreamPlan {
  /** Bytes the host sends to the agent. */
  h2a: Uint8Array;
  /** Bytes the agent sends back. */
  a2h: Uint8Array;
  /** write() chunk size. */
  chunk: number;
  /** When the host opens the stream, ms. */
  openAt: number;
  /** Agent "dial" delay before accept(), ms. */
  dialMs: number;
}

export interface StreamResult {
  plan: StreamPlan;
  port: number;
  agentRx: Uint8Array[];
  agentRxBytes: number;
  hostRxBytes: number;
  hostChunks: Uint8Array[];
  hostEnd: boolean;
  agentEnd: boolean;
  hostClose: boolean;
  agentClose: boolean;
  hostReset: string | undefined;
  agentReset: string | undefined;
  hostStream: TunnelStream | undefined;
  agentStream: TunnelStream | undefined;
}

/** Writes `data` in `chunk`-byte pieces respecting backpressure, then end(). Returns the drain handler. */
export function writer(getStream: () => TunnelStream | undefined, data: Uint8Array, chunk: number, sim: Sim): () => void {
  let off = 0;
  let ended = false;
  const pump = (): void => {
    const s = getStream();
    if (s === undefined || ended) return;
    if (s.state === 'CLOSED' || s.state === 'RESET_WAIT') return;
    while (off < data.length) {
      const n = Math.min(chunk, data.length - off);
      const ok = s.write(data.subarray(off, off + n), sim.now);
      off += n;
      if (!ok) return;
    }
    ended = true;
    s.end(sim.now);
  };
  return pump;
}

export const BASE_PORT = 10000;

/**
 * Sets up host-opened streams per `plans` (port BASE_PORT + index) with an agent
 * that accepts them after `dialMs`; both sides write their data and end. Use
 * `workloadEndpoint` as (part of) the sim's endpoint factory.
 */
export class Workload {
  readonly results: StreamResult[];
  /**
   * @param basePort stream i goes to basePort + i
   * @param consumeDelayMs > 0: receivers consume() each chunk this long after it
   *   arrived (a slow application); 0: autoConsume.
   */
  constructor(
    private readonly sim: Sim,
    plans: StreamPlan[],
    readonly basePort = BASE_PORT,
    private readonly consumeDelayMs = 0,
  ) {
    this.results = plans.map((plan, i) => ({
      plan,
      port: basePort + i,
      agentRx: [],
      agentRxBytes: 0,
      hostRxBytes: 0,
      hostChunks: [],
      hostEnd: false,
      agentEnd: false,
      hostClose: false,
      agentClose: false,
      hostReset: undefined,
      agentReset: undefined,
      hostStream: undefined,
      agentStream: undefined,
    }));
  }

  /** Schedules every OPEN. */
  schedule(offsetMs = 0): void {
    for (const r of this.results) this.sim.schedule(this.sim.now + offsetMs + r.plan.openAt, () => this.open(r));
  }

  private open(r: StreamResult): void {
    const sim = this.sim;
    const pump = writer(() => r.hostStream, r.plan.h2a, r.plan.chunk, sim);
    r.hostStream = sim.host.openStream(
      r.port,
      sim.now,
      {
        data: (c, s) => {
          r.hostChunks.push(c);
          r.hostRxBytes += c.length;
          this.consumeLater(s, c.length);
        },
      end: () => (r.hostEnd = true),
      close: () => (r.hostClose = true),
        reset: (err) => (r.hostReset = `${err.code}:${err.reasonName}`),
        drain: () => pump(),
      },
      { autoConsume: this.consumeDelayMs <= 0 },
    );
    pump();
  }

  private consumeLater(s: TunnelStream, n: number): void {
    if (this.consumeDelayMs <= 0) return;
    this.sim.schedule(this.sim.now + this.consumeDelayMs, () => s.consume(n, this.sim.now));
  }

  /** True when `port` belongs to this workload. */
  owns(port: number): boolean {
    return port >= this.basePort && port < this.basePort + this.results.length;
  }

  /** The agent's openRequest handler. */
  onOpenRequest = (stream: TunnelStream, port: number): void => {
    const r = this.results[port - this.basePort];
    if (r === undefined) {
      stream.refuse(this.sim.now);
      return;
    }
    const sim = this.sim;
    const gen = sim.generation.agent;
    const accept = (): void => {
      if (sim.generation.agent !== gen || stream.state !== 'OPEN_RECEIVED') return;
      r.agentStream = stream;
      const pump = writer(() => r.agentStream, r.plan.a2h, r.plan.chunk, sim);
      stream.accept(
        sim.now,
        {
          data: (c, s) => {
            r.agentRx.push(c);
            r.agentRxBytes += c.length;
            this.consumeLater(s, c.length);
          },
        end: () => (r.agentEnd = true),
        close: () => (r.agentClose = true),
          reset: (err) => (r.agentReset = `${err.code}:${err.reasonName}`),
          drain: () => pump(),
        },
        { autoConsume: this.consumeDelayMs <= 0 },
      );
      pump();
    };
    if (r.plan.dialMs <= 0) accept();
    else sim.schedule(sim.now + r.plan.dialMs, accept);
  };

  /** All streams finished cleanly on both sides. */
  done(): boolean {
    return this.results.every((r) => r.hostClose && r.agentClose);
  }

  /** Any stream ended in a reset. */
  failed(): boolean {
    return this.results.some((r) => r.hostReset !== undefined || r.agentReset !== undefined);
  }
}

export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const c of chunks) n += c.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

export const KiB = 1024;
