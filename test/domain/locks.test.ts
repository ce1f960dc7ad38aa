import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LockTable, parseLockMode, type LockMode, type LockRequest } from '../../src/domain/locks.js';

/**
 * Every combination: one existing holder of each mode (or none) × each request,
 * without force. `expect` is the granted mode, or null for a refusal.
 */
const TABLE: Array<[LockMode | null, LockRequest, LockMode | null]> = [
  [null, 'readwrite', 'readwrite'],
  [null, 'readonly', 'readonly'],
  [null, 'exclusive', 'exclusive'],
  [null, 'excl_write', 'excl_write'],
  [null, 'readonly_ok', 'readwrite'],

  ['readwrite', 'readwrite', 'readwrite'],
  ['readwrite', 'readonly', 'readonly'],
  ['readwrite', 'exclusive', null],
  ['readwrite', 'excl_write', null],
  ['readwrite', 'readonly_ok', 'readwrite'],

  ['readonly', 'readwrite', 'readwrite'],
  ['readonly', 'readonly', 'readonly'],
  ['readonly', 'exclusive', null],
  ['readonly', 'excl_write', 'excl_write'],
  ['readonly', 'readonly_ok', 'readwrite'],

  ['exclusive', 'readwrite', null],
  ['exclusive', 'readonly', null],
  ['exclusive', 'exclusive', null],
  ['exclusive', 'excl_write', null],
  ['exclusive', 'readonly_ok', null],

  ['excl_write', 'readwrite', null],
  ['excl_write', 'readonly', 'readonly'],
  ['excl_write', 'exclusive', null],
  ['excl_write', 'excl_write', null],
  ['excl_write', 'readonly_ok', 'readonly'],
];

describe('LockTable', () => {
  for (const [held, requested, expected] of TABLE) {
    test(`${held ?? 'nobody'} holds, ${requested} requested → ${expected ?? 'refused'}`, () => {
      const locks = new LockTable();
      if (held) {
        const first = locks.request({ clientId: 1, peer: '10.0.0.1:1000', user: 'alice' }, held);
        assert.equal(first.granted, true);
      }
      const d = locks.request({ clientId: 2, peer: '10.0.0.2:2000' }, requested);
      if (expected === null) {
        assert.equal(d.granted, false);
        if (!d.granted) {
          assert.match(d.reason, /alice@10\.0\.0\.1:1000/, 'the refusal names the holder');
          assert.match(d.reason, new RegExp(held!.toUpperCase()));
          assert.deepEqual(d.holders.map((h) => h.clientId), [1]);
        }
        assert.equal(locks.get(2), undefined);
        assert.equal(locks.size, held ? 1 : 0);
      } else {
        assert.equal(d.granted, true);
        if (d.granted) {
          assert.equal(d.mode, expected);
          assert.deepEqual(d.displaced, []);
        }
        assert.equal(locks.get(2)?.mode, expected);
        assert.equal(locks.size, held ? 2 : 1);
      }
    });
  }

  for (const [held, requested, expected] of TABLE.filter(([h, , e]) => h !== null && e === null)) {
    test(`force: ${requested} over ${held} displaces the holder`, () => {
      const locks = new LockTable();
      locks.request({ clientId: 1, peer: 'a' }, held!);
      const d = locks.request({ clientId: 2, peer: 'b' }, requested, true);
      assert.equal(d.granted, true);
      if (d.granted) assert.deepEqual(d.displaced.map((h) => h.clientId), [1]);
      assert.equal(locks.get(1), undefined);
      assert.ok(locks.get(2));
    });
  }

  test('force EXCL_WRITE displaces writers but keeps readers', () => {
    const locks = new LockTable();
    locks.request({ clientId: 1, peer: 'w1' }, 'readwrite');
    locks.request({ clientId: 2, peer: 'r1' }, 'readonly');
    locks.request({ clientId: 3, peer: 'w2' }, 'readwrite');
    const d = locks.request({ clientId: 4, peer: 'boss' }, 'excl_write', true);
    assert.ok(d.granted);
    if (d.granted) assert.deepEqual(d.displaced.map((h) => h.clientId).sort(), [1, 3]);
    assert.deepEqual(locks.list().map((h) => h.clientId).sort(), [2, 4]);
  });

  test('release frees the lock; re-requesting replaces the own entry', () => {
    const locks = new LockTable();
    locks.request({ clientId: 1, peer: 'a' }, 'exclusive');
    assert.equal(locks.request({ clientId: 2, peer: 'b' }, 'readonly').granted, false);
    locks.release(1);
    assert.equal(locks.request({ clientId: 2, peer: 'b' }, 'readonly').granted, true);
    // A holder asking again is not in conflict with itself.
    assert.equal(locks.request({ clientId: 2, peer: 'b' }, 'exclusive').granted, true);
    assert.equal(locks.size, 1);
  });

  test('parseLockMode accepts any case and dashes', () => {
    assert.equal(parseLockMode('EXCL-WRITE'), 'excl_write');
    assert.equal(parseLockMode('ReadOnly_OK'), 'readonly_ok');
    assert.equal(parseLockMode('write'), undefined);
  });
});
