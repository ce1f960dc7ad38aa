/**
 * Issue 11's figure: the VM-name glob matcher (src/util/glob.ts) on its worst case
 * from the issue, `*a*a*a*c` against a name of only `a`s, at 256 B to 2 KiB. A
 * backtracking regex took 85 s at 1,000 characters; the matcher must grow linearly:
 * time (and its own step count) roughly doubling when the name doubles.
 */
import { Glob } from '../src/util/glob.js';
import { round } from './common.js';

export interface GlobFigures {
  sizes: Array<{ bytes: number; usPerMatch: number; steps: number }>;
  growth: number[];
  stepGrowth: number[];
}

/** Median of `rounds` timings of `reps` matches each, per size (runs in this process: no server needed). */
export function globFigures(pattern: string, sizes: number[], rounds = 9): GlobFigures {
  const glob = new Glob(pattern);
  const out: GlobFigures['sizes'] = [];
  for (const bytes of sizes) {
    const name = 'a'.repeat(bytes);
    const steps = glob.match(name).steps;
    // About 20 ms of work per round whatever the size.
    const reps = Math.max(10, Math.round(2_000_000 / Math.max(1, steps)));
    for (let i = 0; i < reps; i++) glob.test(name); // warm-up
    const times: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) glob.test(name);
      times.push(((performance.now() - t0) * 1000) / reps);
    }
    times.sort((a, b) => a - b);
    out.push({ bytes, usPerMatch: round(times[Math.floor(times.length / 2)], 3), steps });
  }
  const ratio = (f: (x: GlobFigures['sizes'][number]) => number) => out.slice(1).map((x, i) => round(f(x) / Math.max(1e-9, f(out[i])), 2));
  return { sizes: out, growth: ratio((x) => x.usPerMatch), stepGrowth: ratio((x) => x.steps) };
}
