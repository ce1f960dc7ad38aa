/**
 * The one glob meaning for every VM pattern (the config file's `vms: - match:` and
 * the admin API's `GET /api/v1/ports?match=`): `*` matches any run of characters
 * (also none), `?` exactly one character, every other character itself. There is no
 * escape: a `*` or `?` in a pattern is always a wildcard. Characters are Unicode code
 * points (an emoji is one `?`). Pure; importable from every layer.
 *
 * No regular expression is built from the pattern: a backtracking RegExp made from
 * `*a*a*a*c` took 85 s against a 1000-character name. This is the classic two-pointer
 * wildcard match that, on a mismatch, backtracks only to the last `*` seen. With a text
 * of n and a pattern of m code points it takes O(n·m) steps in the worst case (e.g.
 * `*aaaa…ab` against `aaaa…a`: every text position is tried for the literal run after
 * the star), O(n + m) in the usual case (`web*`, `*a*a*a*c`), and never more than
 * (n + 1)·(m + 1) steps. A pattern with more literal characters than the text has
 * is rejected without a scan.
 */

/** Options of a compiled glob. */
export interface GlobOptions {
  /** Compare code points case-insensitively (each lowercased on its own). Default false. */
  ignoreCase?: boolean;
}

/** The result of one match, with the work it took (for tests and benchmarks). */
export interface GlobMatch {
  matched: boolean;
  /** Loop iterations: each compares one pattern position with one text position, or skips a `*`. */
  steps: number;
}

const STAR = '*';
const ONE = '?';

/** True when `text` contains a wildcard (`*` or `?`): it is a pattern rather than a literal name. */
export function hasWildcards(text: string): boolean {
  return text.includes(STAR) || text.includes(ONE);
}

/** A pattern compiled once and tested against many texts. */
export class Glob {
  /** Code points of the pattern (lowercased with ignoreCase). */
  private readonly units: readonly string[];
  private readonly literals: number;
  private readonly ignoreCase: boolean;

  constructor(
    readonly pattern: string,
    options: GlobOptions = {},
  ) {
    this.ignoreCase = options.ignoreCase ?? false;
    this.units = codePoints(pattern, this.ignoreCase);
    this.literals = this.units.filter((u) => u !== STAR).length;
  }

  /** Whether the whole of `text` matches the pattern. */
  test(text: string): boolean {
    return this.match(text).matched;
  }

  /** Whether the whole of `text` matches, and how many steps that took (at most (n + 1)·(m + 1)). */
  match(text: string): GlobMatch {
    const p = this.units;
    const t = codePoints(text, this.ignoreCase);
    // Every non-star pattern position consumes one text position.
    if (this.literals > t.length) return { matched: false, steps: 0 };
    let pi = 0;
    let ti = 0;
    // The last star seen, and the text position it is currently assumed to stop at.
    let star = -1;
    let resume = 0;
    let steps = 0;
    while (ti < t.length) {
      steps++;
      if (pi < p.length && p[pi] !== STAR && (p[pi] === ONE || p[pi] === t[ti])) {
        pi++;
        ti++;
      } else if (pi < p.length && p[pi] === STAR) {
        // Try the star as empty first; on a later mismatch it grows by one.
        star = pi++;
        resume = ti;
      } else if (star >= 0) {
        // Backtrack to the last star only: earlier stars never need to change, since
        // the last one can absorb whatever they would have.
        pi = star + 1;
        ti = ++resume;
      } else {
        return { matched: false, steps };
      }
    }
    while (pi < p.length && p[pi] === STAR) {
      steps++;
      pi++;
    }
    return { matched: pi === p.length, steps };
  }
}

/** One-off match of `text` against `pattern`; compile a Glob to test many texts. */
export function globMatch(pattern: string, text: string, options: GlobOptions = {}): boolean {
  return new Glob(pattern, options).test(text);
}

function codePoints(s: string, lower: boolean): string[] {
  const out = Array.from(s);
  if (lower) for (let i = 0; i < out.length; i++) out[i] = out[i].toLowerCase();
  return out;
}
