/**
 * The config file as `vspc` loads it (same program, same parsers): validation errors
 * name the key and its file:line:col, flags override the file, the environment
 * carries the admin token, JSON works like YAML, and `vms:` settings resolve per VM
 * serial port.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration, type LoadedConfiguration } from '../../src/config/load.js';
import { resolveVmSettings, vmMatches } from '../../src/config/vms.js';
import { changedKeys } from '../../src/config/reload.js';
import { keyName } from '../../src/config/table.js';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/errors.js';
import { ROOT, tempDir } from '../support/server.js';

const dir = tempDir('vspc-config-');
after(() => dir.remove());
let n = 0;

/** Writes `text` to a fresh file; returns its path. */
function file(text: string, ext = 'yaml'): string {
  const p = join(dir.dir, `c${++n}.${ext}`);
  writeFileSync(p, text);
  return p;
}

/** Loads like `vspc ARGS` with the given environment additions. */
function load(args: string[], env: Record<string, string> = {}): LoadedConfiguration {
  const saved = { ...process.env };
  delete process.env.VSPC_ADMIN_TOKEN;
  Object.assign(process.env, env);
  try {
    const program = buildProgram().exitOverride();
    program.parse(['node', 'vspc', ...args]);
    return loadConfiguration(program);
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

function loadError(args: string[], env: Record<string, string> = {}): ConfigError {
  try {
    load(args, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail(`vspc ${args.join(' ')} loaded without an error`);
}

const TOKEN = '0123456789abcdef0123456789abcdef';

describe('config file: validation errors name the key and its position', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['unknown key, with a suggestion', 'db: x.db\nprotRange: 10000-10010\n', /:2:1: protRange: unknown key \(did you mean "portRange"\?\)$/],
    ['bad port range (start > end)', 'db: x.db\nportRange: 20000-10000\n', /:2:12: portRange: start 20000 is greater than end 10000$/],
    ['port range beyond 65535', 'portRange: "60000-70000"\n', /:1:12: portRange: 70000 is outside 1-65535$/],
    ['port range that is not START-END', 'portRange: lots\n', /:1:12: portRange: "lots" is not START-END$/],
    ['bad duration', 'expireAfter: soon\n', /:1:14: expireAfter: "soon" is not a duration/],
    ['bad listen address', 'proxyListen: "0.0.0.0:99999"\n', /:1:14: proxyListen: 99999 is outside 0-65535$/],
    ['a mapping where a string belongs', 'adminListen:\n  host: 127.0.0.1\n', /:2:3: adminListen: expected a string or number, got a mapping$/],
    ['a key without a value', 'db:\n', /:1:\d+: db: has no value$/],
    ['a switch that is not a boolean', 'comPort: "no"\n', /:1:10: comPort: expected true or false, got "no"$/],
    ['a choice outside its list', 'logFormat: xml\n', /:1:12: logFormat: expected one of json, text, got "xml"$/],
    ['a bad default lock mode', 'defaultLockMode: rw\n', /:1:18: defaultLockMode: expected one of readwrite, readonly, exclusive, excl_write, readonly_ok, got "rw"$/],
    ['vms that is not a list', 'vms: web01\n', /:1:6: vms: expected a list/],
    ['a vms entry without match', 'vms:\n  - port: 10001\n', /:2:5: vms\.0: needs match:/],
    ['an unknown key in a vms entry', 'vms:\n  - match: web01\n    prot: 10001\n', /:3:5: vms\.0\.prot: unknown key \(a vms entry has match, lockMode, scrollback, port, greeting, notices, replay, access\)$/],
    ['a bad fixed port', 'vms:\n  - match: web01\n    port: 0\n', /:3:11: vms\.0\.port: 0 is outside 1-65535$/],
    ['a fixed port for a pattern', 'vms:\n  - match: "web*"\n    port: 10001\n', /:3:11: vms\.0\.port: a fixed port needs one VM serial port, not the pattern "web\*"$/],
    ['a fixed port given twice', 'vms:\n  - match: a\n    port: 10001\n  - match: b\n    port: 10001\n', /:5:11: vms\.1\.port: port 10001 is already given to vms\[0\] \(a\)$/],
    ['a bad scrollback', 'vms:\n  - match: a\n    scrollback: lots\n', /:3:17: vms\.0\.scrollback: "lots" is not a size/],
    ['a fixed port that is an own listener port', 'proxyListen: 127.0.0.1:13999\nvms:\n  - match: a\n    port: 13999\n', /:4:11: vms\.0\.port: 13999 is one of vspc's own listener ports$/],
    ['YAML syntax', 'portRange: [10000\n', /:2:1: /],
    ['a list at the top', '- a\n- b\n', /:1:1: the config file must be a mapping of keys to values$/],
    ['a duplicate key', 'db: a.db\ndb: b.db\n', /:2:1: Map keys must be unique/],
  ];
  for (const [what, text, message] of cases) {
    test(what, () => {
      const path = file(text);
      const err = loadError(['--config', path]);
      assert.equal(err.code, 'VSPC_CONFIG_INVALID');
      assert.ok(err.message.startsWith(`${path}:`), err.message);
      assert.match(err.message, message);
    });
  }

  test('JSON files get the same checks and positions', () => {
    const path = file('{\n  "db": "x.db",\n  "portRange": "5-2"\n}\n', 'json');
    assert.match(loadError(['--config', path]).message, new RegExp(`^${path}:3:16: portRange: start 5 is greater than end 2$`));
  });

  test('a .json file is parsed as JSON: a trailing comma is an error at its position (YAML would take it)', () => {
    const text = '{\n  "db": "x.db",\n  "portRange": "11000-11999",\n}\n';
    const path = file(text, 'json');
    const err = loadError(['--config', path]);
    assert.equal(err.code, 'VSPC_CONFIG_INVALID');
    assert.equal(err.message, `${path}:3:29: JSON syntax error: trailing comma before "}" (JSON allows none)`);
    // The same text in a .yaml file is a YAML flow mapping, trailing comma and all.
    assert.deepEqual(load(['--config', file(text, 'yaml')]).config.portRange, { start: 11000, end: 11999 });
    // Upper-case extension, a trailing comma in a list, a comment, a missing comma, a stray word after the value.
    const bad: Array<[string, RegExp]> = [
      ['{"vms": [{"match": "a", "port": 10100},]}', /:1:39: JSON syntax error: trailing comma before "]"/],
      ['{\n  # no comments in JSON\n  "db": "x.db"\n}', /:2:3: JSON syntax error: a key \(a string in double quotes\) expected, found "#"$/],
      ['{"db": "x.db"\n "portRange": "1-2"}', /:2:2: JSON syntax error: "," or "}" expected, found "\\""$/],
      ['{"db": "x.db"} db', /:1:16: JSON syntax error: unexpected "d" after the JSON value$/],
      ['{"db": "x.db"', /:1:14: JSON syntax error: "," or "}" expected, found the end of the file$/],
    ];
    for (const [body, message] of bad) {
      const p = file(body, 'JSON');
      assert.match(loadError(['--config', p]).message, message, body);
    }
  });

  test('a missing file is an error naming --config', () => {
    assert.match(loadError(['--config', join(dir.dir, 'nope.yaml')]).message, /^--config: cannot read .*nope\.yaml: ENOENT$/);
  });

  test('a value checked together with others is reported where it came from', () => {
    const path = file('db: x.db\nproxyTlsListen: 0.0.0.0:13372\n');
    assert.match(loadError(['--config', path]).message, new RegExp(`^${path}:2:17: proxyTlsListen: needs --cert and --key$`));
    assert.match(loadError(['--proxy-tls-listen', '0.0.0.0:13372']).message, /^--proxy-tls-listen: needs --cert and --key$/);
  });
});

describe('config file: values, precedence and the environment', () => {
  test('an empty file gives the defaults; YAML and JSON give the same configuration', () => {
    const empty = load(['--config', file('# nothing yet\n')]);
    assert.deepEqual(empty.config.portRange, DEFAULTS.portRange);
    assert.equal(empty.config.dbPath, DEFAULTS.dbPath);
    const yaml = load(['--config', file('portRange: 11000-11999\nexpireAfter: 7d\ncomPort: false\nscrollback: 4k\nlogFormat: text\ndb: /tmp/x.db\n')]);
    const json = load(['--config', file('{"portRange":"11000-11999","expireAfter":"7d","comPort":false,"scrollback":4096,"logFormat":"text","db":"/tmp/x.db"}', 'json')]);
    assert.deepEqual(yaml.config, json.config);
    assert.deepEqual(yaml.config.portRange, { start: 11000, end: 11999 });
    assert.equal(yaml.config.expireAfterMs, 7 * 86_400_000);
    assert.equal(yaml.config.comPort, false);
    assert.equal(yaml.config.scrollbackBytes, 4096);
    assert.equal(yaml.logFormat, 'text');
    assert.ok(yaml.file?.endsWith('.yaml'));
  });

  test('flags override the file; the file overrides defaults', () => {
    const path = file('portRange: 11000-11999\ndb: from-file.db\nlogLevel: debug\n');
    const r = load(['--config', path, '--port-range', '12000-12099']);
    assert.deepEqual(r.config.portRange, { start: 12000, end: 12099 });
    assert.equal(r.config.dbPath, 'from-file.db');
    assert.equal(r.logLevel, 'debug');
    assert.equal(r.origin.portRange, 'cli');
    assert.equal(r.origin.db, 'file');
    assert.equal(r.origin.clientListenHost, 'default');
  });

  test('a bad value in the file does not matter when a flag overrides it', () => {
    const r = load(['--config', file('portRange: 5-2\n'), '--port-range', '12000-12099']);
    assert.deepEqual(r.config.portRange, { start: 12000, end: 12099 });
  });

  test('admin token: flag > VSPC_ADMIN_TOKEN > file; a token file is read and trimmed', () => {
    const tokenFile = join(dir.dir, 'token');
    writeFileSync(tokenFile, `${TOKEN}-file\n`);
    chmodSync(tokenFile, 0o600);
    const path = file(`adminToken: ${TOKEN}-conf\n`);
    assert.equal(load(['--config', path]).config.adminToken, `${TOKEN}-conf`);
    assert.equal(load(['--config', path], { VSPC_ADMIN_TOKEN: `${TOKEN}-env` }).config.adminToken, `${TOKEN}-env`);
    assert.equal(load(['--config', path, '--admin-token', `${TOKEN}-flag`], { VSPC_ADMIN_TOKEN: `${TOKEN}-env` }).config.adminToken, `${TOKEN}-flag`);
    assert.equal(load(['--config', path, '--admin-token-file', tokenFile], { VSPC_ADMIN_TOKEN: `${TOKEN}-env` }).config.adminToken, `${TOKEN}-file`);
    assert.equal(load(['--config', file(`adminTokenFile: ${tokenFile}\n`)]).config.adminToken, `${TOKEN}-file`);
    assert.equal(load([]).config.adminToken, null);
  });

  test('a world-readable token file is a warning', () => {
    const tokenFile = join(dir.dir, 'token-open');
    writeFileSync(tokenFile, TOKEN);
    chmodSync(tokenFile, 0o644);
    const r = load(['--admin-token-file', tokenFile]);
    assert.equal(r.config.adminToken, TOKEN);
    assert.match(r.warnings.join('\n'), /readable by every user/);
  });

  test('token errors: too short, unreadable file, token and file from the same place', () => {
    assert.match(loadError(['--admin-token', 'short']).message, /^--admin-token: the token must be at least 16 characters/);
    assert.match(loadError([], { VSPC_ADMIN_TOKEN: 'short' }).message, /^--admin-token: the token must be at least 16/);
    assert.match(loadError(['--admin-token-file', join(dir.dir, 'missing')]).message, /^--admin-token-file: cannot read .*missing: ENOENT$/);
    const both = file(`adminToken: ${TOKEN}\nadminTokenFile: /etc/x\n`);
    assert.match(loadError(['--config', both]).message, /adminTokenFile: give either a token or a token file, not both/);
  });

  test('a non-loopback admin listener needs a token; the error names the flag or the key', () => {
    assert.match(loadError(['--admin-listen', '0.0.0.0:13371']).message, /^--admin-listen: 0\.0\.0\.0 is not a loopback address, so the admin API needs a token: give --admin-token-file FILE, set VSPC_ADMIN_TOKEN/);
    const path = file('adminListen: 192.0.2.1:13371\n');
    assert.match(loadError(['--config', path]).message, new RegExp(`^${path}:1:14: adminListen: 192\\.0\\.2\\.1 is not a loopback address`));
    assert.equal(load(['--admin-listen', '0.0.0.0:13371'], { VSPC_ADMIN_TOKEN: TOKEN }).config.adminToken, TOKEN);
    assert.equal(load(['--admin-listen', '127.0.0.5:13371']).config.adminToken, null);
    assert.equal(load(['--admin-listen', '[::1]:13371']).config.adminToken, null);
  });

  test('--admin-cert and --admin-key go together', () => {
    assert.match(loadError(['--admin-cert', '/x.crt']).message, /^--admin-cert: --admin-cert and --admin-key go together$/);
    const path = file('adminKey: /x.key\n');
    assert.match(loadError(['--config', path]).message, new RegExp(`^${path}:1:11: adminKey: --admin-cert and --admin-key go together$`));
  });

  test('vms and defaultLockMode reach the configuration, with their positions', () => {
    const path = file('defaultLockMode: readonly\nvms:\n  - match: web01:com2\n    port: 10100\n    lockMode: excl_write\n  - match: "db-*"\n    scrollback: 256k\n');
    const c = load(['--config', path]).config;
    assert.equal(c.defaultLockMode, 'readonly');
    assert.deepEqual(
      c.vms.map(({ where: _w, ...v }) => v),
      [
        { match: 'web01:com2', tcpPort: 10100, lockMode: 'excl_write' },
        { match: 'db-*', scrollbackBytes: 256 * 1024 },
      ],
    );
    assert.equal(c.vms[1].where, `${path}:6:5`);
    assert.equal(load([]).config.defaultLockMode, 'readwrite');
  });

  test('the example config file in packaging/ is valid', () => {
    const r = load(['--config', join(ROOT, 'packaging/vspc.yaml')]);
    assert.equal(r.config.adminListen.host, '127.0.0.1');
    assert.ok(r.config.vms.length > 0);
  });

  test("the Dockerfile's command line is valid when VSPC_ADMIN_TOKEN is set, and refused without it", async () => {
    const { readFileSync } = await import('node:fs');
    const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
    const cmd = /^CMD (\[.*\])$/m.exec(docker);
    assert.ok(cmd, 'CMD line');
    const argv = JSON.parse(cmd[1]) as string[];
    assert.equal(argv[1], '/app/dist/src/cli/vspc.js');
    const args = argv.slice(2);
    assert.equal(load(args, { VSPC_ADMIN_TOKEN: TOKEN }).config.adminToken, TOKEN);
    assert.match(loadError(args).message, /^--admin-listen: .*needs a token/);
  });
});

describe('per-VM settings (vms:)', () => {
  const uuid = '421a5b77-09c3-8e21-9f00-aa105c2e7d01';
  const hex = uuid.replace(/-/g, '');
  const vm = (name: string | null, label = '') => ({ key: hex, label, name });

  test('match by name, glob, UUID in any form, and NAME:LABEL / UUID:LABEL', () => {
    assert.equal(vmMatches('web01', vm('web01')), true);
    assert.equal(vmMatches('web01', vm('web01', 'com2')), true, 'a name matches every label');
    assert.equal(vmMatches('web01', vm('web02')), false);
    assert.equal(vmMatches('web01', vm(null)), false, 'no name yet');
    assert.equal(vmMatches('web*', vm('web17')), true);
    assert.equal(vmMatches('w?b01', vm('web01')), true);
    assert.equal(vmMatches('web*', vm('db01')), false);
    // One glob meaning for every VM pattern (src/util/glob.ts): names match in any case, as in `vspc-admin list`.
    assert.equal(vmMatches('WEB01', vm('web01')), true, 'names match in any case');
    assert.equal(vmMatches('web*', vm('WEB17')), true, 'a pattern matches in any case');
    assert.equal(vmMatches(uuid.toUpperCase(), vm(null)), true);
    assert.equal(vmMatches('42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01', vm('x')), true);
    assert.equal(vmMatches(`{${hex}}`, vm('x', 'com2')), true);
    assert.equal(vmMatches(`${uuid}:com2`, vm('x', 'com2')), true);
    assert.equal(vmMatches(`${uuid}:com2`, vm('x', 'com1')), false);
    assert.equal(vmMatches('web01:com2', vm('web01', 'com2')), true);
    assert.equal(vmMatches('web01:com2', vm('web01', '')), false);
    assert.equal(vmMatches('a:b', vm('a:b')), true, 'a name with a colon matches whole');
  });

  test('every matching entry applies in order; a later one overrides field by field', () => {
    const config: Pick<VspcConfig, 'vms'> = {
      vms: [
        { match: 'web*', scrollbackBytes: 1024, lockMode: 'readonly' },
        { match: 'web01:com2', tcpPort: 10100 },
        { match: uuid, lockMode: 'exclusive' },
        { match: 'db01', scrollbackBytes: 9 },
      ],
    };
    assert.deepEqual(resolveVmSettings(config, { key: uuid, label: 'com2', name: 'web01' }), { scrollbackBytes: 1024, lockMode: 'exclusive', tcpPort: 10100 });
    assert.deepEqual(resolveVmSettings(config, { key: '00000000000000000000000000000001', label: '', name: 'web05' }), {
      scrollbackBytes: 1024,
      lockMode: 'readonly',
    });
    assert.deepEqual(resolveVmSettings(config, { key: '00000000000000000000000000000001', label: '', name: 'mail' }), {});
  });

  test('changedKeys compares by value (Buffers by content, vms without positions); keyName gives file keys', () => {
    const a: VspcConfig = { ...DEFAULTS, tls: { cert: Buffer.from('c'), key: Buffer.from('k') }, vms: [{ match: 'a', tcpPort: 1, where: 'x:1:1' }] };
    const b: VspcConfig = { ...DEFAULTS, tls: { cert: Buffer.from('c'), key: Buffer.from('k') }, vms: [{ match: 'a', tcpPort: 1, where: 'x:9:1' }] };
    assert.deepEqual(changedKeys(a, b), []);
    const c: VspcConfig = { ...b, portRange: { start: 1, end: 2 }, tls: { cert: Buffer.from('C'), key: Buffer.from('k') }, expireAfterMs: 5 };
    assert.deepEqual(changedKeys(a, c).map(keyName).sort(), ['cert/key', 'expireAfter', 'portRange']);
  });
});
