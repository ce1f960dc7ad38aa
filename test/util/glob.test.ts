/**
 * The one glob meaning (src/util/glob.ts): `*` any run, `?` one code point, the rest
 * literal, optionally in any case. Checked against a plain recursive reference on
 * small inputs, and on the inputs that froze the old RegExp for 85 s, by the number
 * of steps the matcher reports (no timing).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Glob, globMatch, hasWildcards } from '../../src/util/glob.js';

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
