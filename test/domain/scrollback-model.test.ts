// Scrollback (src/domain/console-hub.ts) against a plain model: the last
// min(capacity, total) bytes of everything pushed, as a byte array. Random operation
// sequences (seeded, so a failure names its seed and replays) over push sizes at and
// around every power of two, views of larger buffers, replace, resize up/down/to 0.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Scrollback } from '../../src/domain/console-hub.js';
import { seededRandom } from '../support/sim/esxi-simulator.js';

const rng = seededRandom;

const CAPACITIES = [0, 1, 2, 3, 4095, 4096, 4097, 8191, 65536];

/** Sizes worth hitting: 0, 1, each power of two up to 128 KiB and its neighbours, the capacity and its neighbours. */
function sizes(cap: number): number[] {
  const out = new Set<number>([0, 1, 2, 3, cap - 1, cap, cap + 1, 2 * cap + 1]);
  for (let p = 1; p <= 1 << 17; p *= 2) for (const d of [-1, 0, 1]) out.add(p + d);
  return [...out].filter((n) => n >= 0);
}

function ringOf(sb: Scrollback): Buffer | null {
  return (sb as unknown as { ring: Buffer | null }).ring;
}

let counter = 0;
/** Bytes distinct from one push to the next (a wrong offset shows as a wrong byte). */
function bytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (counter++ * 31 + 7) & 0xff;
  return b;
}

function run(seed: number, cap0: number, steps: number): void {
  const r = rng(seed);
  let cap = cap0;
  const sb = new Scrollback(cap);
  let model: Buffer = Buffer.alloc(0);
  // Most bytes held since the ring was last dropped (resize): the ring is at most
  // max(4 KiB, twice that), and never more than the capacity.
  let peak = 0;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const trimmed = (b: Buffer): Buffer => (b.length > cap ? b.subarray(b.length - cap) : b);
  const where = (i: number, op: string): string => `seed ${seed} cap0 ${cap0} step ${i} (${op}, cap ${cap})`;
  for (let i = 0; i < steps; i++) {
    const x = r();
    let op: string;
    if (x < 0.7) {
      const n = pick(sizes(cap));
      let data = bytes(n);
      // Half the time a view into the middle of a larger buffer.
      if (r() < 0.5) {
        const big = Buffer.concat([bytes(1 + Math.floor(r() * 100)), data, bytes(1 + Math.floor(r() * 100))]);
        const start = Math.floor(r() * (big.length - n + 1));
        data = big.subarray(start, start + n);
      }
      op = `push ${data.length}`;
      sb.push(data);
      model = trimmed(Buffer.concat([model, data]));
      // Writing the caller's buffer afterwards must not change what is held.
      data.fill(0xee);
    } else if (x < 0.8) {
      op = 'snapshot';
      const s = sb.snapshot();
      // A copy: writing it leaves the scrollback as it was.
      s.fill(0xdd);
    } else if (x < 0.88) {
      const n = pick(sizes(cap));
      const data = bytes(n);
      op = `replace ${n}`;
      sb.replace(data);
      model = Buffer.from(trimmed(data));
      data.fill(0xee);
    } else {
      cap = pick(CAPACITIES.concat([cap * 2, Math.floor(cap / 2), cap + 1, Math.max(0, cap - 1)]));
      op = `resize ${cap}`;
      sb.resize(cap);
      model = Buffer.from(trimmed(model));
      peak = 0;
    }
    peak = Math.max(peak, model.length);
    assert.equal(sb.capacity, cap, where(i, op));
    assert.equal(sb.length, model.length, where(i, op));
    assert.ok(sb.snapshot().equals(model), where(i, op));
    const ring = ringOf(sb);
    const held = ring?.length ?? 0;
    assert.ok(held <= cap, `${where(i, op)}: ring ${held} > capacity`);
    assert.ok(held <= Math.max(4096, 2 * peak), `${where(i, op)}: ring ${held} for at most ${peak} bytes held`);
    if (peak === 0) assert.equal(ring, null, `${where(i, op)}: a ring before any byte`);
  }
}

describe('Scrollback against a model', () => {
  for (const cap of CAPACITIES) {
    test(`capacity ${cap}: random push/snapshot/replace/resize equal the last min(capacity, total) bytes`, () => {
      for (let seed = 1; seed <= 12; seed++) run(seed * 7919 + cap, cap, 150);
    });
  }

  test('1-byte pushes: linear work (bytes copied and rings allocated counted, not timed)', () => {
    const cap = 65536;
    const sb = new Scrollback(cap);
    const proto = Buffer.prototype as unknown as { copy: (...a: unknown[]) => number };
    const copy = proto.copy;
    const allocSlow = Buffer.allocUnsafeSlow;
    let copied = 0;
    let rings = 0;
    proto.copy = function (this: Buffer, ...a: unknown[]): number {
      const n = copy.apply(this, a);
      copied += n;
      return n;
    };
    Buffer.allocUnsafeSlow = (size: number) => {
      rings++;
      return allocSlow(size);
    };
    const one = Buffer.alloc(1);
    const N = 1_000_000;
    try {
      for (let i = 0; i < N; i++) {
        one[0] = i & 0xff;
        sb.push(one);
      }
    } finally {
      proto.copy = copy;
      Buffer.allocUnsafeSlow = allocSlow;
    }
    // One byte per push, plus the growth copies (4 KiB doubling to 64 KiB: under 64 KiB in all).
    assert.ok(copied <= N + cap, `copied ${copied} bytes for ${N} 1-byte pushes`);
    assert.ok(rings <= 5, `${rings} rings allocated (4, 8, 16, 32, 64 KiB)`);
    const s = sb.snapshot();
    assert.equal(s.length, cap);
    for (let k = 0; k < cap; k++) assert.equal(s[k], (N - cap + k) & 0xff);
  });
});
