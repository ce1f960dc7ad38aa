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

  test('acquire: descriptors vspc opens for consoles share the ceiling with admitted sockets; release gives them back once', () => {
    let t = 0;
    const b = new FdBudget({ limit: 100, reserve: 20, countOpen: () => 70, now: () => t });
    const leases = [];
    for (let i = 0; i < 10; i++) leases.push(b.acquire());
    assert.ok(leases.every((l) => l !== null));
    assert.equal(b.inUse, 80);
    assert.equal(b.acquire(), null, 'the reserve is kept');
    assert.equal(b.admit(socket()), false, 'and connections are refused at the same ceiling');
    assert.equal(b.deferred, 1);
    assert.equal(b.refused, 1);
    assert.equal(b.canOpen(), false);
    leases[0]!.release();
    leases[0]!.release(); // idempotent
    assert.equal(b.inUse, 79);
    assert.equal(b.canOpen(), true);
    assert.equal(b.canOpen(2), false);
  });

  test('a burst of leases whose descriptors are not open yet: a re-count that lags behind does not hand them out twice, and releases never take the count below zero', () => {
    let real = 10;
    let t = 0;
    const b = new FdBudget({ limit: 100, reserve: 20, resyncMs: 1000, countOpen: () => real, now: () => t });
    // 70 listeners asked for at once; their listen() completes on later turns.
    const leases = Array.from({ length: 70 }, () => b.acquire());
    assert.ok(leases.every((l) => l !== null));
    t += 2000; // a re-count while none is open yet
    assert.equal(b.acquire(), null, 'still full: the 70 are held even though /proc does not show them yet');
    assert.equal(b.inUse, 80);
    real = 80; // they open
    t += 2000;
    assert.equal(b.acquire(), null);
    assert.equal(b.inUse, 80);
    for (const l of leases) l!.release();
    real = 10;
    assert.equal(b.inUse, 10, 'back to what the budget did not hand out');
    t += 2000;
    assert.equal(b.canOpen(70), true);
    assert.equal(b.inUse, 10);
  });

  test('onAvailable: a waiter is called once after a release (not while still full), and can cancel', async () => {
    const b = new FdBudget({ limit: 100, reserve: 20, countOpen: () => 79 });
    const lease = b.acquire()!;
    assert.equal(b.acquire(), null);
    let called = 0;
    let cancelledCalled = 0;
    b.onAvailable(() => called++);
    const cancel = b.onAvailable(() => cancelledCalled++);
    cancel();
    assert.equal(b.waiting, 1);
    const told = new Promise<void>((resolve) => b.onAvailable(() => resolve()));
    lease.release();
    await told;
    assert.equal(called, 1);
    assert.equal(cancelledCalled, 0);
    assert.equal(b.waiting, 0);
  });

  test('onAvailable: one freed descriptor wakes the oldest waiter (which takes it), not every waiter', async () => {
    const b = new FdBudget({ limit: 100, reserve: 20, countOpen: () => 78 });
    const first = b.acquire()!;
    const second = b.acquire()!;
    assert.equal(b.acquire(), null);
    const got: string[] = [];
    let told: () => void = () => undefined;
    const nextTold = () => new Promise<void>((resolve) => (told = resolve));
    for (const name of ['a', 'b', 'c']) {
      b.onAvailable(() => {
        if (b.acquire()) got.push(name);
        told();
      });
    }
    let wait = nextTold();
    first.release();
    await wait;
    assert.deepEqual(got, ['a']);
    assert.equal(b.waiting, 2, 'the others still wait');
    wait = nextTold();
    second.release();
    await wait;
    assert.deepEqual(got, ['a', 'b']);
    assert.equal(b.waiting, 1, 'c still waits: no room was left for it');
  });

  test("the admin API's share of the reserve: half of it, 16 to 1024", () => {
    assert.equal(new FdBudget({ limit: 512, countOpen: () => 0 }).adminConnections, 32);
    assert.equal(new FdBudget({ limit: 256, reserve: 20, countOpen: () => 0 }).adminConnections, 16);
    assert.equal(new FdBudget({ limit: 1_000_000, countOpen: () => 0 }).adminConnections, 1024);
    assert.equal(new FdBudget({ limit: Infinity, countOpen: () => 0 }).adminConnections, 1024);
    assert.notEqual(new FdBudget({ limit: Infinity, countOpen: () => 1e9 }).acquire(), null, 'no limit: always');
  });
});
