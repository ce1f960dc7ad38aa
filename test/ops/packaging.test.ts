/**
 * packaging/: the systemd unit is valid (systemd-analyze verify, where available),
 * runs vspc as the dedicated user with raised LimitNOFILE, reloads by SIGHUP, and
 * its command line with the example config file is a configuration vspc accepts.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram, configFromOptions } from '../../src/cli/vspc-options.js';
import { loadConfiguration } from '../../src/config-file.js';
import { ROOT, tempDir } from '../helpers/server.js';

const unit = readFileSync(join(ROOT, 'packaging/vspc.service'), 'utf8');

function directive(name: string): string[] {
  return [...unit.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]);
}

describe('packaging: systemd unit and example config', () => {
  const dir = tempDir('vspc-packaging-');
  after(() => dir.remove());

  test('a dedicated user (created by the sysusers file), raised LimitNOFILE, SIGHUP reload, state in /var/lib/vspc', () => {
    assert.deepEqual(directive('User'), ['vspc']);
    assert.deepEqual(directive('Group'), ['vspc']);
    const sysusers = readFileSync(join(ROOT, 'packaging/vspc.sysusers'), 'utf8');
    assert.match(sysusers, /^u vspc - ".+" \/var\/lib\/vspc /m);
    assert.ok(Number(directive('LimitNOFILE')[0]) >= 65536, 'LimitNOFILE');
    assert.deepEqual(directive('ExecReload'), ['/bin/kill -HUP $MAINPID']);
    assert.deepEqual(directive('KillSignal'), ['SIGTERM']);
    assert.deepEqual(directive('StateDirectory'), ['vspc']);
    assert.deepEqual(directive('WorkingDirectory'), ['/var/lib/vspc']);
    assert.ok(Number.parseInt(directive('TimeoutStopSec')[0], 10) >= 15, 'stop timeout covers the 5 s grace + 10 s bound');
  });

  test("ExecStart with the example config file is a configuration vspc accepts (database in the unit's state directory)", () => {
    const [execStart] = directive('ExecStart');
    const [node, script, ...args] = execStart.split(/\s+/);
    assert.equal(node, '/usr/bin/node');
    assert.equal(script, '/opt/vspc/dist/src/cli/vspc.js');
    assert.deepEqual(args, ['--config', '/etc/vspc/vspc.yaml']);
    const program = buildProgram().exitOverride();
    program.parse(['node', 'vspc', '--config', join(ROOT, 'packaging/vspc.yaml')]);
    const loaded = loadConfiguration(program, configFromOptions);
    assert.equal(loaded.config.dbPath, '/var/lib/vspc/vspc.db');
    assert.equal(loaded.config.adminListen.host, '127.0.0.1');
  });

  test('systemd-analyze verify accepts the unit', (t) => {
    if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
      t.skip('systemd-analyze is not installed');
      return;
    }
    // Verify against this machine's node binary (the unit names Debian's /usr/bin/node).
    const copy = join(dir.dir, 'vspc.service');
    writeFileSync(copy, unit.replace('/usr/bin/node ', `${process.execPath} `));
    // It reports problems (unknown directives, bad values) on stderr, often with exit code 0.
    const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
  });
});
