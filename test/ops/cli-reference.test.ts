/**
 * The README's command reference is the programs' own `--help`, kept in sync here:
 * each fenced block that starts with "Usage: vspc ..." must equal that program's help
 * output. After changing options, regenerate the blocks with
 *
 *   npm run build && VSPC_UPDATE_README=1 node test/run.mjs cli-reference
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runNode, VSPC_ADMIN_JS, VSPC_JS } from '../support/cli.js';
import { ROOT } from '../support/server.js';

const README = join(ROOT, 'README.md');

/** The fenced block whose first line starts with `usage`: [start, end) offsets of its body. */
function blockOf(text: string, usage: string): [number, number] | null {
  const re = /^```[a-z]*\n/gm;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    const start = m.index + m[0].length;
    const end = text.indexOf('\n```', start);
    if (end < 0) return null;
    if (text.startsWith(usage, start)) return [start, end + 1];
    re.lastIndex = end + 4;
  }
  return null;
}

describe('README command reference', () => {
  for (const [script, usage] of [
    [VSPC_JS, 'Usage: vspc [options]'],
    [VSPC_ADMIN_JS, 'Usage: vspc-admin [options] [command]'],
  ] as const) {
    test(`the README shows the current output of \`${usage.split(' ')[1]} --help\``, async () => {
      const r = await runNode(script, ['--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.startsWith(usage), r.stdout);
      const text = readFileSync(README, 'utf8');
      const block = blockOf(text, usage);
      assert.ok(block, `README.md has a fenced block starting with "${usage}"`);
      const shown = text.slice(block[0], block[1]);
      if (shown !== r.stdout && process.env.VSPC_UPDATE_README === '1') {
        writeFileSync(README, text.slice(0, block[0]) + r.stdout + text.slice(block[1]));
        return;
      }
      assert.equal(shown, r.stdout, 'README.md is out of date: run VSPC_UPDATE_README=1 node test/run.mjs cli-reference');
    });
  }
});
