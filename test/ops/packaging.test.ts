/**
 * packaging/: the systemd unit runs vspc as the dedicated user with raised LimitNOFILE, reloads by SIGHUP, and
 * its command line with the example config file is a configuration vspc accepts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { ROOT } from '../support/server.js';

const unit = readFileSync(join(ROOT, 'packaging/vspc.service'), 'utf8');

function directive(name: string): string[] {
  return [...unit.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]);
}

describe('packaging: systemd unit and example config', () => {
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
    // The console broker's default socket, /run/vspc/broker.sock, needs its directory; the
    // access methods unix and pty theirs (/run/vspc/console, /run/vspc/pty).
    assert.deepEqual(directive('RuntimeDirectory'), ['vspc vspc/console vspc/pty']);
    assert.ok(Number.parseInt(directive('TimeoutStopSec')[0], 10) >= 15, 'stop timeout covers the 5 s grace + 10 s bound');
  });

  test("ExecStart with the example config file is a configuration vspc accepts (database in the unit's state directory)", () => {
    const [execStart] = directive('ExecStart');
    const [env, node, script, ...args] = execStart.split(/\s+/);
    // No node path assumed: /usr/bin/node (NodeSource), /usr/local/bin/node (the tarball), or PATH as set.
    assert.equal(env, '/usr/bin/env');
    assert.equal(node, 'node');
    assert.equal(script, '/opt/vspc/dist/src/cli/vspc.js');
    assert.deepEqual(args, ['--config', '/etc/vspc/vspc.yaml']);
    const program = buildProgram().exitOverride();
    program.parse(['node', 'vspc', '--config', join(ROOT, 'packaging/vspc.yaml')]);
    const loaded = loadConfiguration(program);
    assert.equal(loaded.config.dbPath, '/var/lib/vspc/vspc.db');
    assert.equal(loaded.config.adminListen.host, '127.0.0.1');
  });
});
