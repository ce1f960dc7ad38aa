/**
 * The one glob meaning for every VM pattern (the config file's `vms: - match:`, the
 * admin API's `GET /api/v1/ports?match=`, the console broker's LIST-REQUEST): `*`
 * matches any run of characters (also none), `?` exactly one character, every other
 * character itself. There is no escape: a `*` or `?` in a pattern is always a
 * wildcard. Characters are Unicode code points (an emoji is one `?`). Pure; importable
 * from every layer.
 *
 * No regular expression is built from the pattern: a backtracking RegExp made from
 * `*a*a*a*c` took 85 s against a 1000-character name. The pattern is split at its
 * stars into segments `P0 * P1 * … * Pk`; a text matches when P0 is its prefix, Pk its
 * suffix (not overlapping P0), and P1 … Pk-1 occur in order between them. Taking each
 * middle segment at its leftmost occurrence is always right (a later occurrence
 * leaves less room for the rest, never more), so nothing is ever retried: each text
 * position is looked at once per segment search, and segments are searched with a
 * bit-parallel shift-and (one 32-bit word per 32 pattern characters, `?` included).
 * With a text of n and a pattern of m code points the work is O(n·⌈m/32⌉) — at most
 * (n + 1)·(m + 1) steps, and about n + m for the usual `web*` or `*a*a*a*c`. A pattern
 * with more literal characters than the text has is rejected without a scan.
 *
 * Patterns from people who are not trusted (the broker, the admin API) spend from a
 * `GlobBudget` per request: `test(text, budget)` throws `VSPC_PATTERN_TOO_EXPENSIVE`
 * once the request has used up its steps, so that no pattern, against any number of
 * names, can hold the event loop for long.
 */
import { VspcError } from '../errors.js';

/** Options of a compiled glob. */
export interface GlobOptions {
  /** Compare code points case-insensitively (each lowercased on its own). Default false. */
  ignoreCase?: boolean;
}

/** The result of one match, with the work it took (for tests and benchmarks). */
export interface GlobMatch {
  matched: boolean;
  /**
   * Work done: one step per pattern character compared against the text's ends, and
   * per text position scanned by a segment search times the segment's 32-bit words.
   */
  steps: number;
}

/**
 * Steps one request may spend matching (the broker's LIST-REQUEST, the admin API's
 * list filter): some tens of milliseconds of one core at worst (10-20 ns a step); a
 * pattern against ten thousand ordinary names needs less than half of it.
 */
export const DEFAULT_GLOB_BUDGET = 4_000_000;

/**
 * The matching work one request may do, shared by every text it matches. `spend`
 * throws `VSPC_PATTERN_TOO_EXPENSIVE` when the request goes past `limit`.
 */
export class GlobBudget {
  spent = 0;

  constructor(readonly limit: number = DEFAULT_GLOB_BUDGET) {}

  get remaining(): number {
    return Math.max(0, this.limit - this.spent);
  }

  get exceeded(): boolean {
    return this.spent > this.limit;
  }

  /** Counts `steps`; throws once the total is past the limit. */
  spend(steps: number): void {
    this.spent += steps;
    if (this.spent > this.limit) throw tooExpensive(this.limit);
  }
}

/** The error of a request whose pattern needed more than its budget. */
export function tooExpensive(limit: number): VspcError {
  return new VspcError('VSPC_PATTERN_TOO_EXPENSIVE', `pattern too expensive: matching it would take more than ${limit} steps; use a simpler pattern (fewer stars, a shorter run between them)`, {
    limit,
  });
}

const STAR = '*';
const ONE = '?';
/** Units are code points as numbers; the two wildcards get numbers no code point has. */
const STAR_UNIT = -1;
const ONE_UNIT = -2;

/** True when `text` contains a wildcard (`*` or `?`): it is a pattern rather than a literal name. */
export function hasWildcards(text: string): boolean {
  return text.includes(STAR) || text.includes(ONE);
}

/**
 * Lowercasing a code point may give several ('İ' → 'i̇'): such results get a number of
 * their own above the code points, the same one wherever they come from.
 */
const multiUnits = new Map<string, number>();
function unitOf(ch: string, lower: boolean): number {
  if (!lower) return ch.codePointAt(0)!;
  const l = ch.toLowerCase();
  const cp = l.codePointAt(0)!;
  if (l.length === 1 || (l.length === 2 && cp > 0xffff)) return cp;
  let u = multiUnits.get(l);
  if (u === undefined) {
    u = 0x110000 + multiUnits.size;
    multiUnits.set(l, u);
  }
  return u;
}

const ASCII = /^[\x00-\x7f]*$/;

/** Scratch space for a text's units, reused by every match (matching never nests). */
let scratch = new Int32Array(256);
const scratchState = new Uint32Array(64);

/**
 * The code points of `s` as units (each lowercased on its own with `lower`), in the
 * scratch array: valid until the next call. Returns how many there are.
 */
function unitsOf(s: string, lower: boolean): number {
  if (ASCII.test(s)) {
    if (scratch.length < s.length) scratch = new Int32Array(Math.max(s.length, scratch.length * 2));
    const out = scratch;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      out[i] = lower && c >= 65 && c <= 90 ? c + 32 : c;
    }
    return s.length;
  }
  const chars = Array.from(s);
  if (scratch.length < chars.length) scratch = new Int32Array(Math.max(chars.length, scratch.length * 2));
  for (let i = 0; i < chars.length; i++) scratch[i] = unitOf(chars[i], lower);
  return chars.length;
}

/** A run of the pattern without stars, ready for shift-and. */
class Segment {
  readonly length: number;
  /** 32-bit words per state. */
  readonly words: number;
  /** Per ASCII code: the positions it may stand at (its own and every `?`); undefined: only the `?`s. */
  private readonly ascii: Array<Uint32Array | undefined> = new Array<Uint32Array | undefined>(128);
  /** The same for other units. */
  private readonly other = new Map<number, Uint32Array>();
  /** The positions any unit may stand at (the `?`s). */
  private readonly anyMask: Uint32Array;

  constructor(readonly units: Int32Array) {
    this.length = units.length;
    this.words = Math.max(1, Math.ceil(units.length / 32));
    this.anyMask = new Uint32Array(this.words);
    units.forEach((u, i) => {
      if (u === ONE_UNIT) this.anyMask[i >>> 5] |= 1 << (i & 31);
    });
    units.forEach((u, i) => {
      if (u === ONE_UNIT) return;
      let m = this.maskOf(u);
      if (m === this.anyMask) {
        m = Uint32Array.from(this.anyMask);
        if (u < 128) this.ascii[u] = m;
        else this.other.set(u, m);
      }
      m[i >>> 5] |= 1 << (i & 31);
    });
  }

  private maskOf(u: number): Uint32Array {
    return (u < 128 ? this.ascii[u] : this.other.get(u)) ?? this.anyMask;
  }

  /** Whether the segment stands at `t[at …]` (the caller checked there is room). */
  matchesAt(t: Int32Array, at: number): boolean {
    const p = this.units;
    for (let j = 0; j < p.length; j++) if (p[j] !== ONE_UNIT && p[j] !== t[at + j]) return false;
    return true;
  }

  /**
   * The end of the leftmost occurrence within `t[from … to)`, or -1; `cap` bounds the
   * steps (-2 when they ran out). `work.steps` counts positions × words.
   */
  search(t: Int32Array, from: number, to: number, work: { steps: number }, cap: number): number {
    const L = this.length;
    if (L === 0) return from;
    if (to - from < L) return -1;
    const last = L - 1;
    if (this.words === 1) {
      const top = 1 << last;
      let d = 0;
      for (let i = from; i < to; i++) {
        if (++work.steps > cap) return -2;
        d = ((d << 1) | 1) & this.maskOf(t[i])[0];
        if ((d & top) !== 0) return i + 1;
      }
      return -1;
    }
    const W = this.words;
    const d = W <= scratchState.length ? scratchState.fill(0, 0, W) : new Uint32Array(W);
    const topWord = last >>> 5;
    const topBit = 1 << (last & 31);
    for (let i = from; i < to; i++) {
      work.steps += W;
      if (work.steps > cap) return -2;
      const m = this.maskOf(t[i]);
      for (let w = W - 1; w > 0; w--) d[w] = ((d[w] << 1) | (d[w - 1] >>> 31)) & m[w];
      d[0] = ((d[0] << 1) | 1) & m[0];
      if ((d[topWord] & topBit) !== 0) return i + 1;
    }
    return -1;
  }
}

/** A pattern compiled once and tested against many texts. */
export class Glob {
  /** Units of the pattern (lowercased with ignoreCase; the wildcards as STAR_UNIT, ONE_UNIT). */
  private readonly units: Int32Array;
  private readonly literals: number;
  private readonly ignoreCase: boolean;
  /** Null: the pattern has no star (the whole text, position by position). */
  private readonly first: Segment | null;
  private readonly middle: readonly Segment[];
  private readonly lastSegment: Segment | null;

  constructor(
    readonly pattern: string,
    options: GlobOptions = {},
  ) {
    this.ignoreCase = options.ignoreCase ?? false;
    const chars = Array.from(pattern);
    this.units = Int32Array.from(chars, (c) => (c === STAR ? STAR_UNIT : c === ONE ? ONE_UNIT : unitOf(c, this.ignoreCase)));
    this.literals = this.units.filter((u) => u !== STAR_UNIT).length;
    const runs: number[][] = [[]];
    for (const u of this.units) {
      if (u === STAR_UNIT) runs.push([]);
      else runs[runs.length - 1].push(u);
    }
    if (runs.length === 1) {
      this.first = null;
      this.middle = [];
      this.lastSegment = null;
    } else {
      this.first = new Segment(Int32Array.from(runs[0]));
      this.lastSegment = new Segment(Int32Array.from(runs[runs.length - 1]));
      this.middle = runs
        .slice(1, -1)
        .filter((r) => r.length > 0)
        .map((r) => new Segment(Int32Array.from(r)));
    }
  }

  /**
   * Whether the whole of `text` matches the pattern. With a budget, the steps are
   * spent from it, and it throws `VSPC_PATTERN_TOO_EXPENSIVE` once it is used up.
   */
  test(text: string, budget?: GlobBudget): boolean {
    return this.match(text, budget).matched;
  }

  /**
   * Whether the whole of `text` matches, and how many steps that took: one per code
   * point of the text read, plus the matching (at most (n + 1)·(m + 1) in all).
   */
  match(text: string, budget?: GlobBudget): GlobMatch {
    // Every non-star pattern position consumes one text position (UTF-16 units are at least the code points).
    if (this.literals > text.length) return { matched: false, steps: 0 };
    const cap = budget ? budget.remaining : Number.POSITIVE_INFINITY;
    // A text longer than what is left is not even read.
    if (budget && text.length > cap) budget.spend(text.length);
    const n = unitsOf(text, this.ignoreCase);
    const r = this.run(scratch, n, cap - n);
    r.steps += n;
    if (budget) budget.spend(r.steps); // throws past the limit
    return r;
  }

  /** Matches the first `n` units of `t`. */
  private run(t: Int32Array, n: number, cap: number): GlobMatch {
    if (this.literals > n) return { matched: false, steps: 0 };
    const work = { steps: 0 };
    if (this.first === null) {
      // No star: the same length (then literals === m), position by position.
      if (n !== this.units.length) return { matched: false, steps: 0 };
      const p = this.units;
      for (let i = 0; i < n; i++) {
        work.steps++;
        if (p[i] !== ONE_UNIT && p[i] !== t[i]) return { matched: false, steps: work.steps };
      }
      return { matched: true, steps: work.steps };
    }
    const first = this.first;
    const lastSeg = this.lastSegment!;
    // The ends first: cheap, and they fix the room the middle segments have.
    work.steps += first.length + lastSeg.length;
    if (!first.matchesAt(t, 0)) return { matched: false, steps: work.steps };
    const end = n - lastSeg.length;
    if (!lastSeg.matchesAt(t, end)) return { matched: false, steps: work.steps };
    let pos = first.length;
    for (const seg of this.middle) {
      const found = seg.search(t, pos, end, work, cap);
      if (found < 0) return { matched: false, steps: work.steps };
      pos = found;
    }
    return { matched: true, steps: work.steps };
  }
}

/** One-off match of `text` against `pattern`; compile a Glob to test many texts. */
export function globMatch(pattern: string, text: string, options: GlobOptions = {}): boolean {
  return new Glob(pattern, options).test(text);
}
