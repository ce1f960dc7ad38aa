/** util/token-bucket.ts: burst, refill, per-key independence, the bound on remembered keys. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TokenBuckets } from '../../src/util/token-bucket.js';

test('a key spends its burst at once, then earns tokens at the rate, never more than the burst', () => {
  const b = new TokenBuckets({ ratePerSecond: 10, burst: 3 });
  assert.deepEqual([1, 2, 3, 4].map(() => b.take('a', 0)), [true, true, true, false]);
  assert.equal(b.take('a', 99), false, '0.99 of a token');
  assert.equal(b.take('a', 100), true, 'one token after 100 ms at 10/s');
  assert.equal(b.take('a', 100), false);
  // A long pause refills to the burst only.
  assert.deepEqual([1, 2, 3, 4].map(() => b.take('a', 60_000)), [true, true, true, false]);
});

test('keys are independent; a clock going backwards earns nothing', () => {
  const b = new TokenBuckets({ ratePerSecond: 1, burst: 1 });
  assert.equal(b.take('a', 1000), true);
  assert.equal(b.take('b', 1000), true);
  assert.equal(b.take('a', 1000), false);
  assert.equal(b.take('a', 0), false);
});

test('remembered keys are bounded: full buckets go first, then the least recently used', () => {
  const b = new TokenBuckets({ ratePerSecond: 1, burst: 2, maxKeys: 3 });
  b.take('a', 0);
  b.take('b', 0);
  b.take('c', 0);
  b.take('d', 5000); // a, b, c have refilled by now: forgotten
  assert.equal(b.size, 1);
  for (const k of ['e', 'f', 'g', 'h']) b.take(k, 5000);
  assert.equal(b.size, 3);
});
