/**
 * Small pieces shared by the benchmark's orchestrator and its load-generator workers:
 * deterministic VM identities, percentiles, and a verifiable byte stream.
 */

/** Which set a benchmark VM belongs to (part of its UUID, so the sets never collide). */
export const Group = {
  /** Scale, reconnect storm and the latency phase's background streamers. */
  bulk: 1,
  /** Latency probes (echoing VMs). */
  probe: 2,
  /** vMotion phase. */
  vmotion: 3,
  /** Throughput phase. */
  throughput: 4,
  /** SSH phase: echoing consoles the SSH sessions attach to. */
  ssh: 5,
} as const;

export interface BenchIdentity {
  /** As ESXi sends it: `b7 e4 c0 00 ...-...`. */
  text: string;
  /** 32 lowercase hex digits (the registry's key). */
  hex: string;
  /** 8-4-4-4-12, as the admin API shows it. */
  formatted: string;
  name: string;
}

/**
 * A deterministic UUID per (namespace, group, index): a rerun against the same
 * database finds the same VM serial ports (and their sticky ports) again instead of
 * allocating new ones.
 */
export function benchIdentity(namespace: number, group: number, index: number): BenchIdentity {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0xb7e4c000, 0);
  b.writeUInt32BE(namespace >>> 0, 4);
  b.writeUInt16BE(group, 8);
  b.writeUInt16BE(0, 10);
  b.writeUInt32BE(index >>> 0, 12);
  const hex = b.toString('hex');
  const pairs = hex.match(/../g)!;
  return {
    text: `${pairs.slice(0, 8).join(' ')}-${pairs.slice(8).join(' ')}`,
    hex,
    formatted: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    name: `vspc-bench-${group}-${index}`,
  };
}

export interface Distribution {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles of `values` (ms or whatever unit they are in); zeros when empty. */
export function distribution(values: number[]): Distribution {
  if (values.length === 0) return { n: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const v = Float64Array.from(values).sort();
  const at = (q: number) => v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];
  let sum = 0;
  for (const x of v) sum += x;
  return { n: v.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v[v.length - 1], mean: sum / v.length };
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function roundDistribution(d: Distribution, digits = 3): Distribution {
  return { n: d.n, p50: round(d.p50, digits), p90: round(d.p90, digits), p99: round(d.p99, digits), max: round(d.max, digits), mean: round(d.mean, digits) };
}

// ---------------------------------------------------------------------------
// A verifiable stream: offset k of stream `s` holds PATTERN[(k + s) mod L]. The
// pattern is printable ASCII without CR, '[' or 255, so a concentrator notice
// (`\r\n[vspc: ...]\r\n`) inside a received stream is recognised by its CR, and
// nothing needs telnet escaping. L is prime, so a loss is caught at the next byte
// (and the byte counts catch a loss of a whole multiple of L).

const PATTERN_LENGTH = 4093;
const PATTERN: Buffer = (() => {
  const b = Buffer.alloc(PATTERN_LENGTH);
  let x = 0x2545f491;
  for (let i = 0; i < b.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    let c = 0x20 + ((x >>> 0) % 95); // 0x20..0x7e
    if (c === 0x5b) c = 0x2e; // no '['
    b[i] = i % 64 === 63 ? 0x0a : c;
  }
  return b;
})();
/** PATTERN twice, so any window of up to L bytes is one subarray. */
const DOUBLE = Buffer.concat([PATTERN, PATTERN]);

/** Writes the stream's next bytes. */
export class PatternSource {
  private pos: number;
  /** Bytes produced so far. */
  offset = 0;
  constructor(stream: number) {
    this.pos = stream % PATTERN_LENGTH;
  }
  /** The next `n` bytes (a fresh Buffer when n > L, else a view into a constant: do not modify). */
  next(n: number): Buffer {
    let out: Buffer;
    if (n <= PATTERN_LENGTH) {
      out = DOUBLE.subarray(this.pos, this.pos + n);
    } else {
      out = Buffer.allocUnsafe(n);
      for (let o = 0; o < n; ) {
        const take = Math.min(PATTERN_LENGTH, n - o);
        DOUBLE.copy(out, o, (this.pos + o) % PATTERN_LENGTH, ((this.pos + o) % PATTERN_LENGTH) + take);
        o += take;
      }
    }
    this.pos = (this.pos + n) % PATTERN_LENGTH;
    this.offset += n;
    return out;
  }
}

const CR = 0x0d;
const LF = 0x0a;

/**
 * Checks a received stream against `PatternSource(stream)`, byte for byte, with native
 * comparisons. With `notices`, concentrator notices are skipped (and counted).
 */
export class PatternChecker {
  private pos: number;
  /** Stream bytes received (notices excluded). */
  received = 0;
  /** Offset of the first byte that did not match, or -1. */
  firstMismatch = -1;
  mismatchedChunks = 0;
  notices = 0;
  /** Inside a notice: how many LFs of its two we have seen. */
  private inNotice = -1;

  constructor(stream: number, private readonly notices_ = true) {
    this.pos = stream % PATTERN_LENGTH;
  }

  push(chunk: Buffer): void {
    let i = 0;
    const len = chunk.length;
    while (i < len) {
      if (this.inNotice >= 0) {
        const lf = chunk.indexOf(LF, i);
        if (lf < 0) return;
        i = lf + 1;
        if (++this.inNotice === 2) {
          this.inNotice = -1;
          this.notices++;
        }
        continue;
      }
      let end = len;
      if (this.notices_) {
        const cr = chunk.indexOf(CR, i);
        if (cr >= 0) end = cr;
      }
      this.compare(chunk, i, end);
      i = end;
      if (i < len) {
        // A CR: the start of `\r\n[vspc: ...]\r\n`, which holds two LFs.
        this.inNotice = 0;
      }
    }
  }

  private compare(chunk: Buffer, from: number, to: number): void {
    let i = from;
    while (i < to) {
      const take = Math.min(PATTERN_LENGTH, to - i);
      const got = chunk.subarray(i, i + take);
      if (!got.equals(DOUBLE.subarray(this.pos, this.pos + take))) {
        if (this.firstMismatch < 0) {
          let k = 0;
          while (k < take && got[k] === DOUBLE[this.pos + k]) k++;
          this.firstMismatch = this.received + k;
        }
        this.mismatchedChunks++;
      }
      this.pos = (this.pos + take) % PATTERN_LENGTH;
      this.received += take;
      i += take;
    }
  }

  get ok(): boolean {
    return this.firstMismatch < 0;
  }
}

/** Printable filler without 255 (nothing to escape), for the throughput phase. */
export function fillerChunk(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let o = 0; o < size; o += PATTERN_LENGTH) PATTERN.copy(out, o, 0, Math.min(PATTERN_LENGTH, size - o));
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects after `ms` with a message naming `what`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const n = Math.max(1, Math.min(limit <= 0 ? items.length : limit, items.length));
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}
