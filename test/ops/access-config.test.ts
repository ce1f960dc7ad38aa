/**
 * The config file's `access:` (global) and its per-console form in `vms:` and
 * `consoles:` entries, as `vspc --config` reads them: errors name the field and its
 * position, users and groups are resolved, modes are octal, the layers apply key by key.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { resolveConsoleAccess } from '../../src/config/vms.js';
import { lookupPrincipal, resolveAccess } from '../../src/config/access.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../support/server.js';

const dir = tempDir('vspc-access-config-');
after(() => dir.remove());
let n = 0;

function load(text: string) {
  const p = join(dir.dir, `a${++n}.yaml`);
  writeFileSync(p, text);
  const program = buildProgram().exitOverride();
  program.parse(['node', 'vspc', '--config', p]);
  return loadConfiguration(program).config;
}

function loadError(text: string): string {
  try {
    load(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  return assert.fail('loaded without an error');
}

const root = lookupPrincipal('group', '0')!.name;

describe('access: config', () => {
  test('defaults: telnet only', () => {
    const c = load('db: x.db\n');
    assert.deepEqual(c.access, {});
    assert.deepEqual(resolveConsoleAccess(c, { key: 'k', label: '', name: 'web01' }), { telnet: true, raw: false, unix: null, pty: null });
  });

  test('the global defaults, then vms: matches in order, then a declared console\'s own entry, key by key', () => {
    const c = load(
      [
        'access:',
        '  raw: true',
        '  unix: { dir: /run/x, protocol: telnet }',
        'vms:',
        '  - match: "web*"',
        `    access: { unix: { group: ${root}, mode: "0660" }, telnet: false }`,
        '  - match: web02',
        '    access: { unix: false, raw: false }',
        'consoles:',
        '  - name: router',
        '    source: tcp:127.0.0.1:4000',
        `    access: { pty: { link: /dev/vspc/router, mode: 660, group: ${root} } }`,
        '',
      ].join('\n'),
    );
    const web01 = resolveConsoleAccess(c, { key: 'k1', label: '', name: 'web01' });
    assert.deepEqual(web01, {
      telnet: false,
      raw: true,
      unix: { dir: '/run/x', mode: 0o660, owner: null, group: { name: root, id: 0 }, protocol: 'telnet' },
      pty: null,
    });
    assert.deepEqual(resolveConsoleAccess(c, { key: 'k2', label: '', name: 'web02' }), { telnet: false, raw: false, unix: null, pty: null });
    const router = resolveConsoleAccess(c, { kind: 'config', key: 'router', label: '', name: 'router' });
    assert.deepEqual(router.pty, { dir: '/run/vspc/pty', mode: 0o660, group: { name: root, id: 0 }, link: '/dev/vspc/router' });
    assert.equal(router.raw, true);
    assert.deepEqual(router.unix, { dir: '/run/x', mode: 0o600, owner: null, group: null, protocol: 'telnet' });
  });

  test('true turns a method on with the earlier layers\' fields; a mapping turns it on', () => {
    assert.deepEqual(resolveAccess([{ unix: false }, { unix: { dir: '/a' } }]).unix?.dir, '/a');
    assert.deepEqual(resolveAccess([{ unix: { dir: '/a' } }, { unix: false }, { unix: true }]).unix?.dir, '/a');
    assert.equal(resolveAccess([{ pty: true }]).pty?.dir, '/run/vspc/pty');
    assert.equal(resolveAccess([{ unix: true }]).unix?.mode, 0o600, 'unix sockets are 0600 unless configured');
  });

  test('modes are octal: "0660", "660", 0o660 and a bare YAML 0660 all mean 0660', () => {
    for (const v of ['"0660"', '"660"', '"0o660"', '0660', '660']) {
      const c = load(`access:\n  unix: { mode: ${v} }\n`);
      assert.equal(resolveAccess([c.access]).unix?.mode, 0o660, v);
    }
  });

  const errors: Array<[string, string, RegExp]> = [
    ['an unknown user names the field', 'access:\n  unix: { owner: no-such-user-vspc }\n', /:2:18: access\.unix\.owner: no such user "no-such-user-vspc" on this system$/],
    ['an unknown group in a vms: entry', 'vms:\n  - match: web01\n    access:\n      unix:\n        group: no-such-group-vspc\n', /:5:16: vms\.0\.access\.unix\.group: no such group "no-such-group-vspc"/],
    ['an unknown method', 'access:\n  ssh2: true\n', /:2:3: access\.ssh2: unknown access method \(there are telnet, raw, unix, pty\)$/],
    ['an unknown unix key', 'access:\n  unix: { path: /x }\n', /access\.unix\.path: unknown key \(unix has dir, mode, owner, group, protocol\)$/],
    ['pty has no owner', 'access:\n  pty: { owner: root }\n', /access\.pty\.owner: unknown key \(pty has dir, mode, group, link\)$/],
    ['a mode that is not octal', 'access:\n  unix: { mode: "0680" }\n', /access\.unix\.mode: expected an octal file mode/],
    ['setuid bits', 'access:\n  unix: { mode: "4755" }\n', /access\.unix\.mode: .*at most 0777/],
    ['a relative dir', 'access:\n  unix: { dir: run/vspc }\n', /access\.unix\.dir: "run\/vspc" is not an absolute path$/],
    ['a protocol', 'access:\n  unix: { protocol: ssh }\n', /access\.unix\.protocol: expected one of raw, telnet, got string "ssh"$/],
    ['raw is a switch', 'access:\n  raw: yes please\n', /access\.raw: expected true or false/],
    ['a link in the global access', 'access:\n  pty: { link: /dev/x }\n', /access\.pty\.link: a link names one console's pty/],
    ['a link for a pattern', 'vms:\n  - match: "web*"\n    access: { pty: { link: /dev/x } }\n', /vms\.0\.access\.pty\.link: a pty link needs one console, not the pattern "web\*"$/],
    ['access must be a mapping', 'access: true\n', /access: expected a mapping of telnet, raw, unix, pty, got boolean true$/],
    ['an unknown key in a consoles entry still names the keys', 'consoles:\n  - name: a\n    source: tcp:127.0.0.1:1\n    acess: {}\n', /consoles\.0\.acess: unknown key \(a consoles entry has name, source, lockMode, scrollback, port, log, greeting, notices, replay, access\)$/],
  ];
  for (const [what, text, re] of errors) {
    test(`error: ${what}`, () => assert.match(loadError(text), re));
  }

  test('users and groups by name or number, through NSS (getent)', () => {
    assert.deepEqual(lookupPrincipal('user', 'root'), { name: 'root', id: 0 });
    assert.deepEqual(lookupPrincipal('user', '0'), { name: 'root', id: 0 });
    assert.equal(lookupPrincipal('group', 'no-such-group-vspc'), null);
    assert.equal(lookupPrincipal('user', '-x'), null, 'never an option to getent');
  });
});
