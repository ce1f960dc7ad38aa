/**
 * bench/harness.ts settledMemory: the per-port memory figures are sampled once V8's
 * young generation has settled (the new space's committed size unchanged for a while).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { settledMemory } from '../../bench/harness.js';
import type { ServerMemory } from '../../bench/server-process.js';

/** A target whose new space shrinks as V8's does after a burst: 32 MiB for a few samples, then 2, then 1. */
function shrinkingTarget(sizes: number[]): { memory(gc: boolean): Promise<ServerMemory | null>; calls: number } {
  const t = {
    calls: 0,
    memory(gc: boolean): Promise<ServerMemory | null> {
      assert.equal(gc, true, 'every sample after a full GC');
      const size = sizes[Math.min(t.calls, sizes.length - 1)];
      t.calls++;
      return Promise.resolve({ rss: 0, heapTotal: 0, heapUsed: t.calls, external: 0, arrayBuffers: 0, spaces: { new_space: { size, used: 0 } } });
    },
  };
  return t;
}

/**
 * A clock whose sleeps take exactly what they ask: with real timers, three 10 ms sleeps
 * took more than the 40 ms window on a loaded machine, and the window closed on 32 MiB.
 */
function fakeClock(): { now(): number; sleep(ms: number): Promise<void> } {
  let now = 0;
  return {
    now: () => now,
    sleep: async (ms: number) => {
      now += ms;
    },
  };
}

test('settledMemory waits past an unchanged new space until it shrank and stayed so', async () => {
  const MiB = 1 << 20;
  const t = shrinkingTarget([32 * MiB, 32 * MiB, 32 * MiB, 2 * MiB, 1 * MiB]);
  // Stable for 3 polls at 32 MiB would end too soon with a short window; this one spans 4 polls.
  const mem = await settledMemory(t, { stableMs: 40, maxMs: 5000, pollMs: 10 }, fakeClock());
  assert.equal(mem?.spaces?.new_space.size, 1 * MiB);
  assert.ok(t.calls >= 5 + 3, `kept sampling after the last change (${t.calls} samples)`);
});

test('settledMemory gives up at maxMs and returns the last sample; a target without spaces is sampled once', async () => {
  const MiB = 1 << 20;
  let n = 0;
  const flapping = {
    memory: (): Promise<ServerMemory | null> => Promise.resolve({ rss: 0, heapTotal: 0, heapUsed: ++n, external: 0, arrayBuffers: 0, spaces: { new_space: { size: (n % 2) * MiB, used: 0 } } }),
  };
  const mem = await settledMemory(flapping, { stableMs: 1000, maxMs: 50, pollMs: 5 }, fakeClock());
  assert.equal(mem?.heapUsed, n);
  let once = 0;
  const plain = { memory: (): Promise<ServerMemory | null> => Promise.resolve({ rss: 1, heapTotal: 0, heapUsed: ++once, external: 0, arrayBuffers: 0 }) };
  await settledMemory(plain, { stableMs: 1000, maxMs: 5000, pollMs: 5 }, fakeClock());
  assert.equal(once, 1);
});
