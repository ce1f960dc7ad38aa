#!/usr/bin/env node
// Runs every compiled test file explicitly (Node 20's `node --test` does not find
// `.ts` files, and we want an exact list rather than its default glob), prints the
// runner's own spec output, then a plain "N passed, N failed" line computed from the
// TAP streams. Exits non-zero when a test failed, when no test ran, or when the
// runner itself failed.
//
// A test file whose source has the line `// vspc-test-runner: heavy` (the benchmark
// smoke test: load generators in child processes) does not run beside the others,
// where it would take their CPU and make their timeouts a matter of luck: the other
// files run first (in parallel, as node --test does), then the heavy ones, one at a
// time, with nothing else running.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';

const root = new URL('..', import.meta.url).pathname;
const testDir = join(root, 'dist', 'test');
const filter = process.argv.slice(2);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

let files;
try {
  files = walk(testDir);
} catch (err) {
  console.error(`test/run.mjs: cannot read ${testDir} (did the build run?): ${err.message}`);
  process.exit(2);
}
// Matched against the path under dist/test (a checkout's own path, e.g. /work/wt-tunnel, must not match).
if (filter.length > 0) files = files.filter((f) => filter.some((s) => relative(testDir, f).includes(s)));
if (files.length === 0) {
  console.error('test/run.mjs: no test files found');
  process.exit(2);
}

const HEAVY = /^\/\/ vspc-test-runner: heavy\b/m;
const heavy = files.filter((f) => HEAVY.test(readFileSync(f, 'utf8')));
const light = files.filter((f) => !heavy.includes(f));

let runCount = 0;
/** One `node --test` run of `list`; returns whether it succeeded, and its TAP text. */
function run(list, extraArgs) {
  // One TAP file per run, so that concurrent runs cannot read each other's summary.
  const tap = join(tmpdir(), `vspc-test-results-${process.pid}-${++runCount}.tap`);
  rmSync(tap, { force: true });
  const res = spawnSync(
    process.execPath,
    [
      '--enable-source-maps',
      '--test',
      '--test-timeout=120000',
      ...extraArgs,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      '--test-reporter=tap',
      `--test-reporter-destination=${tap}`,
      ...list.map((f) => relative(root, f)),
    ],
    { cwd: root, stdio: 'inherit', timeout: 30 * 60 * 1000 },
  );
  let text = '';
  try {
    text = readFileSync(tap, 'utf8');
  } catch {
    /* reported below */
  }
  rmSync(tap, { force: true });
  if (res.error) console.error(`test/run.mjs: runner failed: ${res.error.message}`);
  return { ok: !res.error && res.status === 0, text };
}

const runs = [];
if (light.length > 0) runs.push(run(light, []));
if (heavy.length > 0) {
  console.log(`\n# heavy test files, one at a time: ${heavy.map((f) => relative(testDir, f)).join(', ')}`);
  // Alone, a heavy file may take longer than the default bound (a real guest's UART
  // moves 20-60 KiB/s); each of its tests keeps its own, tighter timeout.
  runs.push(run(heavy, ['--test-concurrency=1', '--test-timeout=1800000']));
}

const num = (text, k) => {
  const m = text.match(new RegExp(`^# ${k} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
};
const total = (k) => runs.reduce((n, r) => n + num(r.text, k), 0);
const tests = total('tests');
const pass = total('pass');
const fail = total('fail') + total('cancelled');
const skipped = total('skipped') + total('todo');
console.log(`\n${files.length} test files${heavy.length ? ` (${heavy.length} heavy, run alone)` : ''}`);
console.log(`${pass} passed, ${fail} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (tests === 0) {
  console.error('test/run.mjs: no test ran');
  process.exit(1);
}
process.exit(runs.every((r) => r.ok) && fail === 0 ? 0 : 1);
