/**
 * The one glob meaning (src/util/glob.ts): `*` any run, `?` one code point, the rest
 * literal, optionally in any case. Checked against a plain recursive reference on
 * small inputs, and on the inputs that froze the old RegExp for 85 s, by the number
 * of steps the matcher reports (no timing).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Glob, GlobBudget, globMatch, hasWildcards } from '../../src/util/glob.js';
import { VspcError } from '../../src/errors.js';

/** The definition, written as directly as possible (exponential: small inputs only). */
function reference(pattern: string, text: string, ignoreCase: boolean): boolean {
  const norm = (s: string) => Array.from(s, (c) => (ignoreCase ? c.toLowerCase() : c));
  const p = norm(pattern);
  const t = norm(text);
  const go = (i: number, j: number): boolean => {
    if (i === p.length) return j === t.length;
    if (p[i] === '*') return go(i + 1, j) || (j < t.length && go(i, j + 1));
    return j < t.length && (p[i] === '?' || p[i] === t[j]) && go(i + 1, j + 1);
  };
  return go(0, 0);
}

/** The textbook O(n·m) dynamic programme: for long inputs, where the recursive reference is too slow. */
function referenceDp(pattern: string, text: string): boolean {
  const p = Array.from(pattern);
  const t = Array.from(text);
  let row = new Array<boolean>(t.length + 1).fill(false);
  row[0] = true;
  for (const c of p) {
    const next = new Array<boolean>(t.length + 1).fill(false);
    if (c === '*') {
      next[0] = row[0];
      for (let j = 1; j <= t.length; j++) next[j] = row[j] || next[j - 1];
    } else {
      for (let j = 1; j <= t.length; j++) next[j] = row[j - 1] && (c === '?' || c === t[j - 1]);
    }
    row = next;
  }
  return row[t.length];
}

const stepBound = (pattern: string, text: string) => (Array.from(text).length + 1) * (Array.from(pattern).length + 1);

describe('glob: meaning', () => {
  test('examples: wildcards, whole-text match, code points, no escapes, regex characters are literal', () => {
    assert.equal(globMatch('web*', 'web01'), true);
    assert.equal(globMatch('web*', 'web'), true, '* matches nothing too');
    assert.equal(globMatch('web*', 'aweb01'), false, 'the whole text');
    assert.equal(globMatch('w?b01', 'web01'), true);
    assert.equal(globMatch('w?b01', 'wb01'), false, '? is exactly one');
    assert.equal(globMatch('*', ''), true);
    assert.equal(globMatch('?', ''), false);
    assert.equal(globMatch('', ''), true);
    assert.equal(globMatch('', 'a'), false);
    assert.equal(globMatch('vm-?', 'vm-😀'), true, '? is one code point, not one UTF-16 unit');
    assert.equal(globMatch('a.b', 'axb'), false, '. is a dot');
    assert.equal(globMatch('a.b', 'a.b'), true);
    assert.equal(globMatch('(a|b)+[x]$', '(a|b)+[x]$'), true, 'regex syntax is plain text');
    assert.equal(globMatch('a\\*', 'a\\bc'), true, 'no escape: a backslash is literal, * a wildcard');
  });

  test('case: exact by default, any case with ignoreCase', () => {
    assert.equal(globMatch('WEB*', 'web01'), false);
    assert.equal(globMatch('WEB*', 'web01', { ignoreCase: true }), true);
    assert.equal(globMatch('web?1', 'WEB01', { ignoreCase: true }), true);
    assert.equal(globMatch('ÄRGER*', 'ärger-01', { ignoreCase: true }), true);
  });

  test('hasWildcards', () => {
    assert.equal(hasWildcards('web01'), false);
    assert.equal(hasWildcards('web*'), true);
    assert.equal(hasWildcards('w?b'), true);
  });

  test('property: the same answer as the reference, within (n+1)(m+1) steps', () => {
    const pattern = fc.array(fc.constantFrom('a', 'b', 'A', '*', '?', '😀'), { maxLength: 8 }).map((a) => a.join(''));
    const text = fc.array(fc.constantFrom('a', 'b', 'A', 'B', '😀', '*'), { maxLength: 12 }).map((a) => a.join(''));
    fc.assert(
      fc.property(pattern, text, fc.boolean(), (p, t, ignoreCase) => {
        const r = new Glob(p, { ignoreCase }).match(t);
        assert.equal(r.matched, reference(p, t, ignoreCase), `${JSON.stringify(p)} vs ${JSON.stringify(t)}`);
        assert.ok(r.steps <= stepBound(p, t), `${r.steps} steps`);
      }),
      { numRuns: 5000, seed: 10 },
    );
  });
});

describe('glob: pathological patterns finish (the RegExp took 85 s on the first)', () => {
  test('*a*a*a*c against "a"×1000: no match, in linear steps', () => {
    const r = new Glob('*a*a*a*c').match('a'.repeat(1000));
    assert.equal(r.matched, false);
    assert.ok(r.steps <= 4 * 1000, `${r.steps} steps`);
  });

  test('1 KiB names, any case: right answers within the documented bound', () => {
    const kib = 1024;
    const cases: Array<[string, string, boolean]> = [
      ['*a*a*a*c', 'a'.repeat(kib - 1) + 'c', true],
      ['*a*a*a*c', 'A'.repeat(kib), false],
      ['*A*A*A*C', 'a'.repeat(kib - 1) + 'c', true],
      ['*?*?*?*?*?*?*?*?*?*?b', 'a'.repeat(kib), false],
      // The worst case of the algorithm: a long literal run after a star is retried at every text position.
      [`*${'a'.repeat(500)}b`, 'a'.repeat(kib), false],
      [`*${'a'.repeat(500)}b`, 'a'.repeat(kib - 1) + 'b', true],
      // More literals than the text has: rejected without a scan.
      [`*${'a'.repeat(kib + 1)}*`, 'a'.repeat(kib), false],
    ];
    for (const [pattern, text, expected] of cases) {
      const r = new Glob(pattern, { ignoreCase: true }).match(text);
      assert.equal(r.matched, expected, pattern.slice(0, 20));
      assert.ok(r.steps <= stepBound(pattern, text), `${pattern.slice(0, 20)}: ${r.steps} steps`);
    }
    assert.equal(new Glob(`*${'a'.repeat(kib + 1)}*`).match('a'.repeat(kib)).steps, 0);
  });
});

describe('glob: long segments (shift-and over several 32-bit words)', () => {
  test('property: segments of up to 100 characters give the reference answer', () => {
    // A two-letter alphabet and long runs: segments cross word boundaries (32, 64, 96).
    const run = fc.array(fc.constantFrom('a', 'a', 'a', 'b', '?'), { minLength: 0, maxLength: 100 }).map((a) => a.join(''));
    const pattern = fc.array(run, { minLength: 1, maxLength: 4 }).map((runs) => runs.join('*'));
    const text = fc.array(fc.constantFrom('a', 'a', 'a', 'b'), { maxLength: 300 }).map((a) => a.join(''));
    fc.assert(
      fc.property(pattern, text, (p, t) => {
        const r = new Glob(p).match(t);
        assert.equal(r.matched, referenceDp(p, t), `${JSON.stringify(p)} vs ${JSON.stringify(t)}`);
        assert.ok(r.steps <= stepBound(p, t), `${r.steps} steps`);
      }),
      { numRuns: 2000, seed: 11 },
    );
  });

  test('exact boundaries: 31, 32, 33, 64 and 65 characters between stars', () => {
    for (const L of [31, 32, 33, 63, 64, 65]) {
      const seg = 'a'.repeat(L - 1) + 'b';
      const g = new Glob(`*${seg}*`);
      assert.equal(g.test('x' + seg + 'y'), true, `L=${L} found`);
      assert.equal(g.test('a'.repeat(3 * L)), false, `L=${L} absent`);
      assert.equal(g.test('a'.repeat(L) + 'b'), true, `L=${L} at the end`);
      const q = new Glob(`*${'?'.repeat(L - 1)}b*`);
      assert.equal(q.test('c'.repeat(L - 1) + 'b'), true, `L=${L} with ?`);
      assert.equal(q.test('c'.repeat(L - 2) + 'b'), false, `L=${L} with ?, too short`);
    }
  });

  test("the tester's LIST pattern (*a…ab with 256 characters) against a 1,024-character name: linear in the name", () => {
    // The old two-pointer matcher took ~262,000 steps for this pair (every position retried).
    const pattern = `*${'a'.repeat(254)}b`;
    const name = 'a'.repeat(1024);
    const r = new Glob(pattern, { ignoreCase: true }).match(name);
    assert.equal(r.matched, false);
    assert.ok(r.steps <= 1024 + 256, `${r.steps} steps: the name read once, the suffix compared once`);
    const middle = new Glob(`*${'a'.repeat(254)}b*`, { ignoreCase: true }).match(name);
    assert.equal(middle.matched, false);
    // The name read once, then 8 words of state per position: about 9 × 1,024, against 254 × 1,024 before.
    assert.ok(middle.steps <= 9 * 1024, `${middle.steps} steps`);
  });
});

describe('glob: a budget per request', () => {
  test('steps are spent from the budget; past it, VSPC_PATTERN_TOO_EXPENSIVE', () => {
    const budget = new GlobBudget(10_000);
    const g = new Glob(`*${'a'.repeat(100)}b*`);
    const name = 'a'.repeat(200);
    const spent: number[] = [];
    let refused: unknown = null;
    for (let i = 0; i < 100 && refused === null; i++) {
      try {
        g.test(name, budget);
        spent.push(budget.spent);
      } catch (err) {
        refused = err;
      }
    }
    assert.ok(refused instanceof VspcError, 'refused');
    assert.equal((refused as VspcError).code, 'VSPC_PATTERN_TOO_EXPENSIVE');
    assert.match((refused as VspcError).message, /pattern too expensive/);
    assert.ok(spent.length > 3 && spent.length < 100, `${spent.length} names matched before the refusal`);
    assert.ok(budget.exceeded);
  });

  test('a match stops as soon as the budget is gone (it does not finish the text first)', () => {
    // Reading the text costs 4,000 steps, scanning it with a two-word segment 8,000 more.
    const budget = new GlobBudget(5000);
    const g = new Glob(`*${'a'.repeat(40)}b*`);
    assert.throws(() => g.test('a'.repeat(4000), budget), /pattern too expensive/);
    assert.ok(budget.spent <= 5002, `spent ${budget.spent}`);
    // A text longer than the whole budget is not read at all.
    const small = new GlobBudget(100);
    assert.throws(() => g.test('a'.repeat(1_000_000), small), /pattern too expensive/);
  });

  test('ordinary patterns against many ordinary names stay far inside the default budget', () => {
    const names = Array.from({ length: 10_000 }, (_, i) => `web-frontend-${String(i).padStart(5, '0')}.prod.example.com`);
    for (const p of ['web*', '*prod*', '*0?1*', '*a*a*a*c', '*frontend*example*']) {
      // One request: one pattern against every name (twice: NAME and NAME:LABEL, as the broker does).
      const budget = new GlobBudget();
      const g = new Glob(p, { ignoreCase: true });
      for (const n of names) g.test(n, budget) || g.test(`${n}:`, budget);
      assert.ok(budget.spent < budget.limit / 2, `${p}: spent ${budget.spent} of ${budget.limit}`);
    }
  });
});
