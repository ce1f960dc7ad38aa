/** The config file's `tunnels:` list (docs/tunnels.md): what it accepts, and errors naming the key and position. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../support/server.js';

function load(t: { after(fn: () => unknown): void }, lines: string[]) {
  const dir = tempDir('vspc-tunnels-config-');
  t.after(() => dir.remove());
  const path = join(dir.dir, 'vspc.yaml');
  writeFileSync(path, lines.join('\n') + '\n');
  const program = buildProgram().exitOverride();
  program.parse(['node', 'vspc', '--config', path]);
  return () => loadConfiguration(program).config;
}

function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  assert.fail('no error');
}

describe('config tunnels:', () => {
  test('console: and source: tunnels with every kind of forward', (t) => {
    const c = load(t, [
      'tunnels:',
      '  - name: web01',
      '    console: web01:serial1',
      '    forwards:',
      '      - to: 22',
      '      - listen: 0.0.0.0:2201',
      '        to: 22',
      '      - listen: "[::1]:2202"',
      '        to: "22"',
      '      - listen: unix:/run/vspc/web01.sock?mode=0660',
      '        to: 22',
      '      - listen: unix:/run/vspc/web01-default.sock',
      '        to: 8080',
      '  - name: db01',
      '    source: unix:/run/qemu/db01.tunnel',
      '    forwards: [5432]',
      '  - name: bare',
      '    console: bare',
    ])();
    assert.deepEqual(c.tunnels, [
      {
        name: 'web01',
        console: 'web01:serial1',
        forwards: [
          { listen: { type: 'auto' }, to: 22 },
          { listen: { type: 'tcp', host: '0.0.0.0', port: 2201 }, to: 22 },
          { listen: { type: 'tcp', host: '::1', port: 2202 }, to: 22 },
          { listen: { type: 'unix', path: '/run/vspc/web01.sock', mode: 0o660 }, to: 22 },
          { listen: { type: 'unix', path: '/run/vspc/web01-default.sock', mode: 0o600 }, to: 8080 },
        ],
      },
      { name: 'db01', source: { type: 'unix', path: '/run/qemu/db01.tunnel' }, sourceText: 'unix:/run/qemu/db01.tunnel', forwards: [{ listen: { type: 'auto' }, to: 5432 }] },
      { name: 'bare', console: 'bare', forwards: [] },
    ]);
  });

  test('a console: tunnel may share its name with the declared console it names; a source: tunnel beside it needs its own', (t) => {
    const c = load(t, [
      'consoles:',
      '  - name: web01',
      '    source: unix:/run/qemu/web01.serial',
      'tunnels:',
      '  - name: web01',
      '    console: web01',
      '  - name: web01-tunnel',
      '    source: unix:/run/qemu/web01.tunnel',
    ])();
    assert.deepEqual(c.tunnels.map((x) => x.name), ['web01', 'web01-tunnel']);
  });

  const bad: Array<[string, string[], RegExp]> = [
    ['not a list', ['tunnels: web01'], /tunnels: expected a list/],
    ['no name', ['tunnels:', '  - console: web01'], /tunnels\.0: needs name:/],
    ['a name with a colon', ['tunnels:', '  - name: "a:b"', '    console: x'], /tunnels\.0\.name: may not contain/],
    ['two names in any case', ['tunnels:', '  - name: web', '    console: a', '  - name: WEB', '    console: b'], /tunnels\.1\.name: "WEB" is already the name of tunnels\[0\]/],
    ['console and source', ['tunnels:', '  - name: t', '    console: a', '    source: unix:/x'], /tunnels\.0: needs either console: .* or source: .*not both/],
    ['neither', ['tunnels:', '  - name: t', '    forwards: [22]'], /tunnels\.0: needs either console:/],
    ['a bad source', ['tunnels:', '  - name: t', '    source: "nope:x"'], /tunnels\.0\.source: /],
    ['an unknown key', ['tunnels:', '  - name: t', '    console: a', '    port: 22'], /tunnels\.0\.port: unknown key \(a tunnels entry has name, console, source, forwards\)/],
    ['a forward without to', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - listen: auto'], /tunnels\.0\.forwards\.0: needs to:/],
    ['a guest port out of range', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - to: 70000'], /tunnels\.0\.forwards\.0\.to: expected the guest port, 1-65535/],
    ['a bad listen', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - listen: localhost', '        to: 22'], /tunnels\.0\.forwards\.0\.listen: "localhost" is not auto, HOST:PORT or unix:PATH/],
    ['port 0', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - listen: 127.0.0.1:0', '        to: 22'], /use listen: auto for a sticky one/],
    ['a relative unix path', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - listen: unix:run/x.sock', '        to: 22'], /needs an absolute path/],
    ['a bad mode', ['tunnels:', '  - name: t', '    console: a', '    forwards:', '      - listen: unix:/run/x.sock?mode=0999', '        to: 22'], /mode "0999" is not an octal file mode/],
    ['two auto forwards to one port', ['tunnels:', '  - name: t', '    console: a', '    forwards: [22, 22]'], /tunnels\.0\.forwards\.1: a second auto forward to port 22/],
    [
      'one address twice',
      ['tunnels:', '  - name: a', '    console: a', '    forwards:', '      - listen: 127.0.0.1:2201', '        to: 22', '  - name: b', '    console: b', '    forwards:', '      - listen: 127.0.0.1:2201', '        to: 22'],
      /tunnels\.1\.forwards\.0\.listen: the same address as tunnels\[0\]\.forwards\[0\]/,
    ],
    [
      'a source: tunnel named like a declared console, in any case',
      ['consoles:', '  - name: other', '    source: unix:/run/qemu/other.serial', '  - name: web01', '    source: unix:/run/qemu/web01.serial', 'tunnels:', '  - name: WEB01', '    source: unix:/run/qemu/web01.tunnel'],
      /vspc\.yaml:7:11: tunnels\.0\.name: "WEB01" is already the name of consoles\[1\] .*e\.g\. WEB01-tunnel/,
    ],
  ];
  for (const [what, lines, message] of bad) {
    test(`refused: ${what}`, (t) => {
      assert.match(errorOf(load(t, lines)), message);
    });
  }
});
