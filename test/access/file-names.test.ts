/**
 * The file names of per-console endpoints (unix sockets, pty links): safe in a
 * directory, injective, unique among the consoles of one directory, within the limits.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assignFileNames, consoleBaseName, encodeFileName, UNIX_PATH_MAX } from '../../src/access/common/file-names.js';
import type { ConsoleIdentity } from '../../src/domain/identity.js';

let nextId = 1;
function c(name: string | null, opts: { label?: string; key?: string; kind?: string; id?: number } = {}): { identity: ConsoleIdentity } {
  return {
    identity: {
      id: opts.id ?? nextId++,
      kind: opts.kind ?? 'esxi',
      key: opts.key ?? '421a5b7709c38e219f00aa105c2e7d01',
      label: opts.label ?? '',
      name,
      tcpPort: 10000,
    },
  };
}

describe('endpoint file names', () => {
  test('plain names stay readable; everything else is percent-encoded', () => {
    assert.equal(encodeFileName('web01'), 'web01');
    assert.equal(encodeFileName('web 01/a:b'), 'web%2001%2Fa%3Ab');
    assert.equal(encodeFileName('50%'), '50%25');
    assert.equal(encodeFileName('é'), '%C3%A9');
  });

  test('never `.`, `..` or a hidden file', () => {
    assert.equal(encodeFileName('.'), '%2E');
    assert.equal(encodeFileName('..'), '%2E.');
    assert.equal(encodeFileName('.bashrc'), '%2Ebashrc');
    assert.equal(encodeFileName('a.b'), 'a.b');
    for (const n of ['.', '..', '../etc/passwd', '/x']) assert.ok(!encodeFileName(n).includes('/') && !encodeFileName(n).startsWith('.'), n);
  });

  test('NAME@LABEL; the key while the name is not known', () => {
    assert.equal(consoleBaseName({ key: 'k', label: 'com2', name: 'web01' }), 'web01@com2');
    assert.equal(consoleBaseName({ key: 'k', label: 'a/b', name: 'web 01' }), 'web%2001@a%2Fb');
    assert.equal(consoleBaseName({ key: '421a5b7709c38e219f00aa105c2e7d01', label: '', name: null }), '421a5b77-09c3-8e21-9f00-aa105c2e7d01');
    // '@' inside a name is encoded: name "a@b" and name "a" with label "b" differ.
    const names = assignFileNames([c('a@b'), c('a', { label: 'b' })]);
    assert.deepEqual([...names.values()], ['a%40b', 'a@b']);
  });

  test('two consoles with one name: the declared one, else the oldest record, keeps it; the other gets NAME~KEY', () => {
    const older = c('web01', { id: 5, key: '00000000000000000000000000000005' });
    const newer = c('web01', { id: 9, key: '00000000000000000000000000000009' });
    let names = assignFileNames([newer, older]);
    assert.equal(names.get(older), 'web01');
    assert.equal(names.get(newer), 'web01~00000000-0000-0000-0000-000000000009');
    const declared = c('web01', { id: 20, kind: 'config', key: 'web01' });
    names = assignFileNames([newer, older, declared]);
    assert.equal(names.get(declared), 'web01');
    assert.equal(new Set(names.values()).size, 3);
    // A VM literally called "web01~..." cannot take the suffixed name: its '~' is encoded.
    const tricky = c('web01~00000000-0000-0000-0000-000000000009');
    assert.equal(assignFileNames([tricky]).get(tricky), 'web01%7E00000000-0000-0000-0000-000000000009');
  });

  test('long names are shortened to fit (a unix socket path has 107 bytes) and stay distinct', () => {
    const dir = '/run/vspc/console';
    const room = UNIX_PATH_MAX - dir.length - 1;
    const a = c('x'.repeat(300));
    const b = c('x'.repeat(299) + 'y');
    const names = assignFileNames([a, b], room);
    for (const n of names.values()) assert.ok(n.length <= room && `${dir}/${n}`.length <= UNIX_PATH_MAX, n);
    assert.notEqual(names.get(a), names.get(b));
    assert.match(names.get(a)!, /^x+~[0-9a-f]{12}$/);
    // An escape is never cut in half.
    const e = encodeFileName('é'.repeat(100), 40);
    assert.match(e, /^(%[0-9A-F]{2})*~[0-9a-f]{12}$/);
  });
});
