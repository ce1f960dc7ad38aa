/** The config file's `consoles:` list: what it accepts, and errors naming the key and position. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { resolveVmSettings } from '../../src/config/vms.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../support/server.js';

function loadText(t: { after(fn: () => unknown): void }, yaml: string) {
  const dir = tempDir('vspc-consoles-config-');
  t.after(() => dir.remove());
  const path = join(dir.dir, 'vspc.yaml');
  writeFileSync(path, yaml);
  const program = buildProgram().exitOverride();
  program.parse(['node', 'vspc', '--config', path]);
  return { load: () => loadConfiguration(program), path };
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail('no error');
}

describe('config consoles:', () => {
  test('declared consoles are parsed with their settings; their own settings win over vms:', (t) => {
    const { load } = loadText(
      t,
      [
        'vms:',
        '  - match: "web*"',
        '    scrollback: 1k',
        '    lockMode: readonly',
        'consoles:',
        '  - name: web01',
        '    source: unix:/var/run/qemu-server/101.serial0',
        '    lockMode: exclusive',
        '    port: 10101',
        '    log: false',
        '  - name: router',
        '    source: "device:/dev/ttyUSB0?baud=9600"',
        '',
      ].join('\n'),
    );
    const c = load().config;
    assert.deepEqual(
      c.consoles.map(({ where: _w, ...rest }) => rest),
      [
        { name: 'web01', source: { type: 'unix', path: '/var/run/qemu-server/101.serial0' }, sourceText: 'unix:/var/run/qemu-server/101.serial0', lockMode: 'exclusive', tcpPort: 10101, log: false },
        {
          name: 'router',
          source: { type: 'device', path: '/dev/ttyUSB0', line: { baudRate: 9600, dataSize: 8, parity: 'none', stopBits: '1', flow: 'none' } },
          sourceText: 'device:/dev/ttyUSB0?baud=9600&data=8&parity=none&stop=1&flow=none',
        },
      ],
    );
    assert.deepEqual(resolveVmSettings(c, { kind: 'config', key: 'web01', label: '', name: 'web01' }), {
      scrollbackBytes: 1024,
      lockMode: 'exclusive',
      tcpPort: 10101,
      log: false,
    });
  });

  test('errors name the key and its position', (t) => {
    const cases: Array<[string, RegExp]> = [
      ['consoles:\n  - name: a\n    source: serial:/dev/ttyS0\n', /vspc\.yaml:3:13: consoles\.0\.source: unknown source type "serial"/],
      ['consoles:\n  - name: a\n    source: unix:relative\n', /vspc\.yaml:3:13: consoles\.0\.source: "relative" is not an absolute path/],
      ['consoles:\n  - source: unix:/x\n', /vspc\.yaml:2:5: consoles\.0: needs name:/],
      ['consoles:\n  - name: a\n', /consoles\.0: needs source:/],
      ['consoles:\n  - name: A\n    source: unix:/a\n  - name: a\n    source: unix:/b\n', /vspc\.yaml:4:11: consoles\.1\.name: "a" is already the name of consoles\[0\]/],
      ['consoles:\n  - name: "web*"\n    source: unix:/a\n', /consoles\.0\.name: may not contain \* or \?/],
      ['consoles:\n  - name: "a\\u202eb"\n    source: unix:/a\n', /consoles\.0\.name: has control or invisible formatting characters/],
      ['consoles:\n  - name: a\n    source: unix:/a\n    colour: red\n', /vspc\.yaml:4:5: consoles\.0\.colour: unknown key/],
      ['consoles:\n  - name: a\n    source: unix:/a\n    log: maybe\n', /consoles\.0\.log: expected true or false/],
      ['vms:\n  - match: x\n    port: 10100\nconsoles:\n  - name: a\n    source: unix:/a\n    port: 10100\n', /consoles\.0\.port: port 10100 is already given to vms\[0\]/],
      ['consoles: {}\n', /consoles: expected a list/],
    ];
    for (const [yaml, pattern] of cases) {
      const { load } = loadText(t, yaml);
      assert.match(errorOf(load).message, pattern, yaml);
    }
  });
});
