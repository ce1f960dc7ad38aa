/**
 * Client ids (issue 12 item 10): unique across restarts, not only within one run —
 * console logs and the audit log name clients by id and outlive the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextClientId } from '../../src/access/telnet/client.js';

const EPOCH = Date.UTC(2025, 0, 1);

test('each id is at least the milliseconds since 2025-01-01, and more than the one before (also when the clock goes back)', () => {
  const now = Date.now();
  const a = nextClientId(now);
  assert.ok(a >= now - EPOCH);
  const b = nextClientId(now);
  assert.equal(b, a + 1, 'two in the same millisecond');
  const c = nextClientId(now - 60_000);
  assert.equal(c, b + 1, 'an earlier clock never repeats an id');
  // A later run starts from its own clock: above every id this run handed out at
  // fewer than one per millisecond.
  const later = nextClientId(now + 3_600_000);
  assert.equal(later, now + 3_600_000 - EPOCH);
  assert.ok(Number.isSafeInteger(later));
});
