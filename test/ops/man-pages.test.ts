/**
 * The manual pages packaging/vspc.1 and packaging/vspc-admin.1 are what
 * src/cli/manual.ts generates from the programs (options from the options table,
 * commands from vspc-admin) — so they cannot drift — and they render without
 * warnings. `--help` carries the same environment, files, exit status and examples.
 * After changing options or commands, regenerate the pages with
 *
 *   npm run man        (or: npm run build:all && VSPC_UPDATE_MAN=1 node test/run.mjs man-pages)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { manPages, roffText } from '../../src/cli/manual.js';
import { OPTIONS } from '../../src/config/table.js';
import type { Command } from 'commander';
import { buildProgram } from '../../src/config/options.js';
import { buildAdminProgram } from '../../src/cli/vspc-admin.js';
import { runNode, VSPC_ADMIN_JS, VSPC_JS } from '../support/cli.js';
import { ROOT } from '../support/server.js';

const pages = manPages();
const haveGroff = spawnSync('sh', ['-c', 'command -v groff'], { stdio: 'ignore' }).status === 0;

describe('manual pages', () => {
  for (const name of Object.keys(pages)) {
    test(`packaging/${name} is the generated page`, () => {
      const path = join(ROOT, 'packaging', name);
      let shown = '';
      try {
        shown = readFileSync(path, 'utf8');
      } catch {
        // missing: written below when updating, else a failure
      }
      if (shown !== pages[name] && process.env.VSPC_UPDATE_MAN === '1') {
        writeFileSync(path, pages[name]);
        return;
      }
      assert.equal(shown, pages[name], `packaging/${name} is out of date: run npm run man`);
    });

    test(`${name} renders without groff warnings`, () => {
      assert.ok(haveGroff, 'groff is not installed (test/support/guest/ensure-deps.sh installs groff-base as root)');
      const r = spawnSync('groff', ['-man', '-ww', '-z'], { input: pages[name], encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, '', 'no warnings');
    });
  }

  test('vspc.1 has every option and every config file key of the table; vspc-admin.1 every command', () => {
    const vspc = pages['vspc.1'];
    for (const spec of OPTIONS) {
      if (spec.flag) assert.ok(vspc.includes(roffText(spec.flag.split(' ')[0])), `${spec.flag} in vspc.1`);
      assert.ok(vspc.includes(`\\fB${roffText(spec.key)}\\fR`) || vspc.includes(`key: ${roffText(spec.key)};`), `config key ${spec.key} in vspc.1`);
    }
    for (const o of buildProgram().options.filter((x) => !x.hidden)) assert.ok(vspc.includes(roffText(o.long ?? o.flags)), `${o.flags} in vspc.1`);
    for (const section of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'OPTIONS', 'CONFIGURATION FILE', 'SIGNALS', 'ENVIRONMENT', 'FILES', 'EXIT STATUS', 'EXAMPLES', 'SEE ALSO']) {
      assert.match(vspc, new RegExp(`^\\.SH ${section}$`, 'm'), section);
    }
    const admin = pages['vspc-admin.1'];
    for (const cmd of ['list', 'show', 'who', 'kick', 'forget', 'set-port', 'log', 'rotate-logs', 'reload', 'status', 'connect']) {
      assert.match(admin, new RegExp(`^\\\\fBvspc\\\\-admin ${roffText(cmd).replace(/\\/g, '\\\\')}`, 'm'), `command ${cmd}`);
    }
    assert.ok(admin.includes(roffText('--follow')) && admin.includes(roffText('--fingerprint')), 'subcommand options too');
    // Every variable an option reads is in the ENVIRONMENT section of its page.
    const envOf = (cmd: Command): string[] => [...cmd.options.flatMap((o) => (o.envVar ? [o.envVar] : [])), ...cmd.commands.flatMap(envOf)];
    for (const [name, program] of [
      ['vspc.1', buildProgram()],
      ['vspc-admin.1', buildAdminProgram(() => undefined)],
    ] as const) {
      const env = pages[name].slice(pages[name].indexOf('.SH ENVIRONMENT'), pages[name].indexOf('.SH FILES'));
      for (const v of envOf(program)) assert.ok(env.includes(`\\fB${roffText(v)}\\fR`), `${v} in the ENVIRONMENT of ${name}`);
    }
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { man: string[] };
    assert.deepEqual(pkg.man, ['./packaging/vspc.1', './packaging/vspc-admin.1'], 'npm install -g installs them');
  });

  for (const [script, name] of [
    [VSPC_JS, 'vspc'],
    [VSPC_ADMIN_JS, 'vspc-admin'],
  ] as const) {
    test(`${name} --help: environment, files, exit status, examples, and where the manual is`, async () => {
      const r = await runNode(script, ['--help']);
      assert.equal(r.code, 0, r.stderr);
      for (const heading of ['Environment:', 'Files:', 'Exit status:', 'Examples:']) assert.match(r.stdout, new RegExp(`^${heading}$`, 'm'), heading);
      assert.match(r.stdout, /^ {2}VSPC_ADMIN_TOKEN {2}/m);
      assert.match(r.stdout, /^ {2}2 {3}/m, 'exit code 2 explained');
      assert.ok(r.stdout.includes(`man ${name} (packaging/${name}.1`), 'points to the manual');
    });
  }
});
