#!/usr/bin/env node
// Runs every compiled test file explicitly (Node 20's `node --test` does not find
// `.ts` files, and we want an exact list rather than its default glob), prints the
// runner's own spec output, then a plain "N passed, N failed" line computed from the
// TAP stream. Exits non-zero when a test failed, when no test ran, or when the
// runner itself failed.
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
if (filter.length > 0) files = files.filter((f) => filter.some((s) => f.includes(s)));
if (files.length === 0) {
  console.error('test/run.mjs: no test files found');
  process.exit(2);
}

// One TAP file per run, so that concurrent runs cannot read each other's summary.
const tap = join(tmpdir(), `vspc-test-results-${process.pid}.tap`);
rmSync(tap, { force: true });
const res = spawnSync(
  process.execPath,
  [
    '--enable-source-maps',
    '--test',
    '--test-timeout=120000',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files.map((f) => relative(root, f)),
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
const num = (k) => {
  const m = text.match(new RegExp(`^# ${k} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
};
const tests = num('tests');
const pass = num('pass');
const fail = num('fail') + num('cancelled');
const skipped = num('skipped') + num('todo');
console.log(`\n${files.length} test files`);
console.log(`${pass} passed, ${fail} failed${skipped ? `, ${skipped} skipped` : ''}`);
if (res.error) {
  console.error(`test/run.mjs: runner failed: ${res.error.message}`);
  process.exit(1);
}
if (tests === 0) {
  console.error('test/run.mjs: no test ran');
  process.exit(1);
}
process.exit(res.status === 0 && fail === 0 ? 0 : 1);
