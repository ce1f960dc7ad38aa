/**
 * The options table (src/config/table.ts) is the one source of truth: the commander
 * program, DEFAULTS, the config file keys and the reload handling all come from it.
 * These checks keep its rows consistent, make a reloadable key without an applier in
 * the server fail, and cover the deprecated `--vm-listen-host` / `vmListenHost` alias.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram, COMBINED, configFromOptions } from '../../src/config/options.js';
import { FIXED_SETTINGS, OPTIONS, RELOADABLE, keyName, optionName, type OptionSpec } from '../../src/config/table.js';
import { fileKeys, loadConfiguration } from '../../src/config/load.js';
import { applyReload, createReloader, missingAppliers, type ReloadAppliers } from '../../src/config/reload.js';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';
import { ConfigError } from '../../src/errors.js';
import { ROOT, startServer, tempDir } from '../support/server.js';

const options = OPTIONS as readonly OptionSpec[];

describe('the options table', () => {
  test('each flag has the key commander derives from it, and --help lists every flag but the deprecated ones', () => {
    const help = buildProgram().helpInformation(); // buildProgram throws on a key that is not the flag in camelCase
    for (const o of options) {
      if (o.flag === null) continue;
      assert.ok(help.includes(`  ${o.flag} `), `--help shows ${o.flag}`);
      if (o.deprecatedAlias) assert.ok(!help.includes(o.deprecatedAlias.flag.split(' ')[0]), `--help hides ${o.deprecatedAlias.flag}`);
    }
  });

  test('DEFAULTS is the table: each default parsed, unset options null, switches on, fixed settings as declared', () => {
    for (const o of options) {
      const value = DEFAULTS[o.field];
      if (o.kind === 'switch') assert.equal(value, true, o.key);
      else if (o.kind === 'structured') assert.deepEqual(value, o.empty, o.key);
      else if (o.default !== undefined && o.parse) assert.deepEqual(value, o.parse(o.default, optionName(o)), o.key);
      else if (o.default === undefined) assert.equal(value, null, `${o.key} has no default: unset is null`);
    }
    for (const [k, v] of Object.entries(FIXED_SETTINGS)) assert.equal(DEFAULTS[k as keyof VspcConfig], v, k);
    const covered = new Set<string>([...options.map((o) => o.field), ...Object.keys(FIXED_SETTINGS)]);
    assert.deepEqual(Object.keys(DEFAULTS).filter((k) => !covered.has(k)), [], 'every field comes from the table or the fixed settings');
    assert.deepEqual(Object.keys(DEFAULTS).filter((k) => DEFAULTS[k as keyof VspcConfig] === undefined), []);
    // The documented values, once, here: a change of default is a deliberate one.
    assert.deepEqual(DEFAULTS.proxyListen, { host: '0.0.0.0', port: 13370 });
    assert.deepEqual(DEFAULTS.portRange, { start: 10000, end: 19999 });
    assert.equal(DEFAULTS.clientListenHost, '127.0.0.1');
    assert.equal(DEFAULTS.expireAfterMs, 90 * 86_400_000);
    assert.equal(DEFAULTS.scrollbackBytes, 64 * 1024);
    assert.equal(DEFAULTS.defaultLockMode, 'readwrite');
    assert.equal(DEFAULTS.logLevel, 'info');
  });

  test('parsed command line defaults equal DEFAULTS', () => {
    const program = buildProgram().exitOverride();
    program.parse([], { from: 'user' });
    assert.deepEqual(configFromOptions(program.opts()), DEFAULTS);
  });

  test('options that share a field agree on reload; fields without a parser are combined in options.ts', () => {
    for (const o of options) {
      const siblings = options.filter((x) => x.field === o.field);
      assert.ok(siblings.every((x) => x.reload === o.reload), `${o.field}: ${siblings.map((x) => x.key).join(', ')} disagree on reload`);
      if (o.kind === 'text' && !o.parse) assert.ok(o.field in COMBINED, `${o.key} has no parser and ${o.field} is not combined`);
    }
    for (const f of Object.keys(COMBINED)) assert.ok(options.some((o) => o.field === f), `COMBINED.${f} is a table field`);
  });

  test('the config file keys are the table keys plus the deprecated aliases', () => {
    const expected = options.flatMap((o) => [o.key, ...(o.deprecatedAlias ? [o.deprecatedAlias.key] : [])]).sort();
    assert.deepEqual([...fileKeys().keys()].sort(), expected);
    assert.deepEqual(keyName('tls'), 'cert/key');
    assert.deepEqual(keyName('adminToken'), 'adminToken/adminTokenFile');
    assert.deepEqual(keyName('expireAfterMs'), 'expireAfter');
  });

  test("docs/operations.md's reload table names every reloadable key and no other", () => {
    const doc = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
    const start = doc.indexOf('| applied at once |');
    assert.ok(start > 0, 'the reload table');
    const table = doc.slice(start, doc.indexOf('\n\n', start));
    const named = new Set([...table.matchAll(/`([A-Za-z]+)`/g)].map((m) => m[1]));
    for (const o of options) {
      if (o.reload !== false) assert.ok(named.has(o.key), `the reload table names ${o.key}`);
      else assert.ok(!named.has(o.key), `the reload table names ${o.key}, which needs a restart`);
    }
  });
});

describe('reload needs an applier for every reloadable key', () => {
  test("the running server has an applier for every key the table marks reloadable, and only those", async (t) => {
    const { ts } = await startServer(t);
    const appliers = ts.server.reloadAppliers as unknown as Record<string, unknown>;
    assert.deepEqual(missingAppliers(appliers), []);
    assert.deepEqual(Object.keys(appliers).sort(), [...RELOADABLE].sort(), 'an applier for a key the table says needs a restart');
  });

  test('a reloadable key without an applier is reported as needing a restart, and not stored', () => {
    const called: string[] = [];
    const appliers: Partial<ReloadAppliers> = {
      humanTimeoutMs: (v) => void called.push(`humanTimeoutMs=${v}`),
      // expireAfterMs: deliberately missing
    };
    assert.deepEqual(missingAppliers(appliers).includes('expireAfterMs'), true);
    const running: VspcConfig = { ...DEFAULTS };
    const report = applyReload(running, { ...DEFAULTS, humanTimeoutMs: 1, expireAfterMs: 2, dbPath: 'other.db' }, appliers);
    assert.deepEqual(report.applied, ['humanTimeout']);
    assert.deepEqual(report.restartNeeded.sort(), ['db', 'expireAfter']);
    assert.deepEqual(called, ['humanTimeoutMs=1']);
    assert.equal(running.humanTimeoutMs, 1);
    assert.equal(running.expireAfterMs, DEFAULTS.expireAfterMs, 'not applied, not stored');
    assert.equal(running.dbPath, DEFAULTS.dbPath);
  });
});

describe('--client-listen-host and its deprecated alias --vm-listen-host / vmListenHost', () => {
  const dir = tempDir('vspc-alias-');
  after(() => dir.remove());
  let n = 0;
  const file = (text: string) => {
    const p = join(dir.dir, `a${++n}.yaml`);
    writeFileSync(p, text);
    return p;
  };
  const load = (args: string[]) => {
    const program = buildProgram().exitOverride();
    program.parse(args, { from: 'user' });
    return { program, loaded: loadConfiguration(program) };
  };
  const loadError = (args: string[]): ConfigError => {
    try {
      load(args);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err;
    }
    assert.fail('loaded without an error');
  };

  test('the new name, no warning', () => {
    const { loaded } = load(['--client-listen-host', '127.0.0.2']);
    assert.equal(loaded.config.clientListenHost, '127.0.0.2');
    assert.deepEqual(loaded.deprecations, []);
    assert.equal(load(['--config', file('clientListenHost: 127.0.0.3\n')]).loaded.config.clientListenHost, '127.0.0.3');
  });

  test('the old flag and the old file key still work, with a deprecation warning', () => {
    const cli = load(['--vm-listen-host', '127.0.0.4']).loaded;
    assert.equal(cli.config.clientListenHost, '127.0.0.4');
    assert.equal(cli.origin.clientListenHost, 'cli');
    assert.deepEqual(cli.deprecations, ['--vm-listen-host is deprecated; use --client-listen-host']);
    const fromFile = load(['--config', file('vmListenHost: 127.0.0.5\n')]).loaded;
    assert.equal(fromFile.config.clientListenHost, '127.0.0.5');
    assert.equal(fromFile.origin.clientListenHost, 'file');
    assert.deepEqual(fromFile.deprecations, ['vmListenHost is deprecated; use clientListenHost']);
  });

  test('precedence holds across the names; both names in one place is an error', () => {
    const path = file('clientListenHost: 127.0.0.6\n');
    assert.equal(load(['--config', path, '--vm-listen-host', '127.0.0.7']).loaded.config.clientListenHost, '127.0.0.7', 'a flag beats the file');
    assert.equal(load(['--config', file('vmListenHost: 127.0.0.8\n'), '--client-listen-host', '127.0.0.9']).loaded.config.clientListenHost, '127.0.0.9');
    assert.match(
      loadError(['--client-listen-host', '127.0.0.1', '--vm-listen-host', '127.0.0.2']).message,
      /^--vm-listen-host: is the deprecated name of --client-listen-host; give only --client-listen-host$/,
    );
    const both = file('clientListenHost: 127.0.0.1\nvmListenHost: 127.0.0.2\n');
    assert.match(loadError(['--config', both]).message, new RegExp(`^${both}:2:1: vmListenHost: is the deprecated name of clientListenHost; give only clientListenHost$`));
  });

  test('a deprecation warning is logged once: not again on each reload', () => {
    const path = file('clientListenHost: 127.0.0.1\n');
    const { program, loaded } = load(['--config', path]);
    assert.deepEqual(loaded.deprecations, []);
    const warned: string[] = [];
    const logger = { info: () => undefined, warn: (m: string) => void warned.push(m), error: () => undefined };
    const reload = createReloader(program, { applyConfig: () => ({ file: null, applied: [], restartNeeded: [] }) }, logger, loaded);
    writeFileSync(path, 'vmListenHost: 127.0.0.1\n');
    reload();
    reload();
    assert.deepEqual(warned, ['vmListenHost is deprecated; use clientListenHost']);
    // One given at start (and logged then) is not repeated either.
    const started = load(['--vm-listen-host', '127.0.0.1']);
    const again: string[] = [];
    const reload2 = createReloader(started.program, { applyConfig: () => ({ file: null, applied: [], restartNeeded: [] }) }, { ...logger, warn: (m: string) => void again.push(m) }, started.loaded);
    reload2();
    assert.deepEqual(again, []);
  });
});
