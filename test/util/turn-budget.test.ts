/**
 * util/turn-budget.ts and util/random-pool.ts: the per-turn read budget that keeps
 * streaming sources from starving keystrokes (issue 17), and the pool vMotion secrets
 * are drawn from. Synchronised on setImmediate turns, never on time.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TurnBudget, type TurnBudgeted } from '../../src/util/turn-budget.js';
import { RandomPool } from '../../src/util/random-pool.js';

class Source implements TurnBudgeted {
  budgetTurn = 0;
  budgetBytes = 0;
  paused = false;
  pauses = 0;
  resumed: (() => void) | null = null;
  pauseTurn(): void {
    this.paused = true;
    this.pauses++;
  }
  resumeTurn(): void {
    this.paused = false;
    this.resumed?.();
  }
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('TurnBudget', () => {
  test('a source is paused once it has read its budget in one turn, and resumed on the next turn', async () => {
    const budget = new TurnBudget(100);
    const s = new Source();
    assert.equal(budget.charge(s, 60), false);
    assert.equal(s.paused, false);
    assert.equal(budget.charge(s, 40), true);
    assert.equal(s.paused, true);
    assert.equal(budget.waiting, 1);
    const resumed = new Promise<void>((r) => (s.resumed = r));
    await resumed;
    assert.equal(s.paused, false);
    assert.equal(budget.waiting, 0);
  });

  test('the count starts again each turn: small reads in separate turns never pause', async () => {
    const budget = new TurnBudget(100);
    const s = new Source();
    for (let i = 0; i < 5; i++) {
      assert.equal(budget.charge(s, 99), false);
      await nextTurn();
    }
    assert.equal(s.pauses, 0);
  });

  test('sources are counted separately: a busy one does not pause a quiet one', () => {
    const budget = new TurnBudget(100);
    const busy = new Source();
    const quiet = new Source();
    budget.charge(busy, 500);
    assert.equal(budget.charge(quiet, 1), false);
    assert.equal(busy.paused, true);
    assert.equal(quiet.paused, false);
  });
});

describe('RandomPool', () => {
  test('hands out the requested number of bytes, never the same bytes twice, across refills', () => {
    const pool = new RandomPool(64);
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const b = pool.take(8);
      assert.equal(b.length, 8);
      const hex = b.toString('hex');
      assert.ok(!seen.has(hex), 'a secret repeated');
      seen.add(hex);
    }
    assert.equal(pool.take(200).length, 200, 'larger than the pool: drawn directly');
  });

  test('a taken secret is a copy: later draws do not change it', () => {
    const pool = new RandomPool(16);
    const a = pool.take(8);
    const copy = Buffer.from(a);
    pool.take(8);
    pool.take(8);
    assert.deepEqual(a, copy);
  });
});
