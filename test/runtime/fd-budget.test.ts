import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { FdBudget, softFileLimit } from '../../src/runtime/fd-budget.js';

const socket = () => new EventEmitter() as unknown as Socket;

describe('FdBudget', () => {
  test('admits up to the limit minus the reserve, counts closes, and reads the real count near the ceiling', () => {
    let real = 10;
    let t = 0;
    let scans = 0;
    const b = new FdBudget({ limit: 100, reserve: 20, countOpen: () => (scans++, real), now: () => t });
    const admitted: Socket[] = [];
    for (let i = 0; i < 70; i++) {
      const s = socket();
      assert.equal(b.admit(s), true, `socket ${i}`);
      admitted.push(s);
      real++;
    }
    assert.equal(b.inUse, 80);
    const refusedOne = socket();
    assert.equal(b.admit(refusedOne), false, 'the reserve is kept');
    assert.equal(b.refused, 1);
    // A flood at the ceiling re-reads /proc at most every 100 ms.
    const before = scans;
    for (let i = 0; i < 1000; i++) b.admit(socket());
    assert.ok(scans - before <= 1, `scans: ${scans - before}`);
    assert.equal(b.refused, 1001);
    // Closing frees room; so does time passing (the count is re-read).
    (admitted.pop() as unknown as EventEmitter).emit('close');
    real--;
    t += 200;
    assert.equal(b.admit(socket()), true);
  });

  test('descriptors opened elsewhere are found at the next resync', () => {
    let real = 10;
    let t = 0;
    const b = new FdBudget({ limit: 1000, reserve: 100, resyncMs: 1000, countOpen: () => real, now: () => t });
    real = 900; // log files, outgoing connections...
    assert.equal(b.admit(socket()), true, 'not yet known');
    t += 1000;
    assert.equal(b.admit(socket()), false, 'resynced: at the ceiling');
  });

  test('an unknown or unlimited limit refuses nothing; the real limit is read from /proc', () => {
    const b = new FdBudget({ limit: Infinity, countOpen: () => 1e9 });
    assert.equal(b.admit(socket()), true);
    const limit = softFileLimit();
    assert.ok(limit > 0);
  });
});
