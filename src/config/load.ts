/**
 * Flags + environment + config file + defaults → VspcConfig. Precedence: flags >
 * environment (VSPC_ADMIN_TOKEN) > file > defaults. The file's keys are the table's
 * (table.ts): every option's key, a deprecated alias's old key, and the file-only
 * `defaultLockMode` and `vms`.
 */
import type { Command } from 'commander';
import type { VspcConfig } from './config.js';
import { describe, readConfigFile, type ConfigFile, type Fail, type KeyKind } from './file.js';
import { configFromOptions, ORIGIN_RANK, type Origin } from './options.js';
import { OPTIONS, optionName, type OptionSpec } from './table.js';
import { ConfigError } from '../errors.js';

export { ADMIN_TOKEN_ENV } from './table.js';
export { MIN_TOKEN_LENGTH, type Origin } from './options.js';

export interface LoadedConfiguration {
  config: VspcConfig;
  /** The same as config.logLevel / config.logFormat, for the code that creates the logger. */
  logLevel: string;
  logFormat: 'json' | 'text';
  /** The config file read, if any. */
  file: string | null;
  /** Not errors, but worth a log line once the logger exists. */
  warnings: string[];
  /** Deprecated names in use (`--vm-listen-host`, `vmListenHost`): a warning each, logged once per process. */
  deprecations: string[];
  /** Where each option's value came from (by table key): cli, env, file or default. */
  origin: Record<string, Origin>;
}

/** The config file's keys and how each value is checked: every table key, and each deprecated alias's key. */
export function fileKeys(): Map<string, KeyKind> {
  const keys = new Map<string, KeyKind>();
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    const kind: KeyKind =
      spec.kind === 'switch'
        ? { kind: 'boolean' }
        : spec.kind === 'structured'
          ? { kind: 'custom', check: spec.check! }
          : spec.kind === 'list'
            ? { kind: 'custom', check: (v, fail) => checkList(spec.key, v, fail) }
          : spec.choices
            ? { kind: 'choice', choices: spec.choices }
            : { kind: 'string' };
    keys.set(spec.key, kind);
    if (spec.deprecatedAlias) keys.set(spec.deprecatedAlias.key, kind);
  }
  return keys;
}

/** A `list` option's file value: a string (comma-separated), or a list of strings and numbers; given to the option's parser joined by commas. */
function checkList(key: string, value: unknown, fail: Fail): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) && value.length === 0) return fail([key], 'an empty list (leave the key out for the default)');
  if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) return value.join(',');
  return fail([key], `expected a list of strings, got ${describe(value)}`);
}

/** One option's value as one name (the option's own, or its deprecated alias) gives it. */
interface Given {
  value: unknown;
  origin: Origin;
}

/**
 * The configuration `program` (buildProgram, already parsed) describes: its flags,
 * its `--config` file, the environment and the defaults. Call again to reload: the
 * flags stay, the file is read anew. Throws ConfigError naming the flag, or the key
 * and its file position when the value came from the file.
 */
export function loadConfiguration(program: Command): LoadedConfiguration {
  const cli = program.opts<Record<string, unknown>>();
  const file = typeof cli.config === 'string' ? readConfigFile(cli.config, fileKeys()) : null;

  /** A name's value: from the command line or environment, else the file, else commander's default. */
  const given = (key: string, hasFlag: boolean): Given => {
    const source = hasFlag ? program.getOptionValueSource(key) : undefined;
    if (source === 'cli' || source === 'env') return { value: cli[key], origin: source as 'cli' | 'env' };
    if (file?.values.has(key)) return { value: file.values.get(key), origin: 'file' };
    return { value: hasFlag ? cli[key] : undefined, origin: 'default' };
  };

  const values: Record<string, unknown> = {};
  const origin: Record<string, Origin> = {};
  /** The file key a value was read under, when it is not the option's own (a deprecated alias). */
  const readAs: Record<string, string> = {};
  const deprecations: string[] = [];
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    let g = given(spec.key, spec.flag !== null);
    const alias = spec.deprecatedAlias;
    if (alias) {
      const old = given(alias.key, true);
      if (old.origin !== 'default') {
        const oldName = old.origin === 'file' ? alias.key : optionName({ ...spec, flag: alias.flag });
        const newName = old.origin === 'file' ? spec.key : optionName(spec);
        if (old.origin === g.origin) {
          const at = old.origin === 'file' ? `${file!.where([alias.key], true)}: ` : '';
          throw new ConfigError(`${at}${oldName}: is the deprecated name of ${newName}; give only ${newName}`, { field: oldName });
        }
        deprecations.push(`${oldName} is deprecated; use ${newName}`);
        if (ORIGIN_RANK[old.origin] > ORIGIN_RANK[g.origin]) {
          g = old;
          if (old.origin === 'file') readAs[spec.key] = alias.key;
        }
      }
    }
    if (g.value !== undefined) values[spec.key] = g.value;
    origin[spec.key] = g.origin;
  }

  const warnings: string[] = [];
  let config: VspcConfig;
  try {
    config = configFromOptions(values, origin, warnings);
  } catch (err) {
    throw file ? locate(err, file, origin, readAs) : err;
  }
  if (file) {
    config.vms = config.vms.map((v, i) => ({ ...v, where: file.where(['vms', i]) }));
    config.consoles = config.consoles.map((c, i) => ({ ...c, where: file.where(['consoles', i]) }));
  }
  // Fixed ports: never one of vspc's own listeners, never two consoles on one port.
  const own = new Set([config.proxyListen.port, config.adminListen.port, config.proxyTlsListen?.port ?? 0].filter((p) => p > 0));
  const fixed = new Map<number, string>();
  const entries: Array<[string, number, number | undefined]> = [
    ...config.vms.map((v, i): [string, number, number | undefined] => ['vms', i, v.tcpPort]),
    ...config.consoles.map((c, i): [string, number, number | undefined] => ['consoles', i, c.tcpPort]),
  ];
  for (const [list, i, tcpPort] of entries) {
    if (tcpPort === undefined) continue;
    const at = file ? `${file.where([list, i, 'port'])}: ` : '';
    if (own.has(tcpPort)) throw new ConfigError(`${at}${list}.${i}.port: ${tcpPort} is one of vspc's own listener ports`, { field: `${list}.${i}.port` });
    const other = fixed.get(tcpPort);
    if (other !== undefined) throw new ConfigError(`${at}${list}.${i}.port: port ${tcpPort} is already given to ${other}`, { field: `${list}.${i}.port` });
    fixed.set(tcpPort, `${list}[${i}]`);
  }
  // A tunnel with its own source: is a console named after the tunnel; beside a declared
  // console of the same name (in any case, as names are matched: src/domain/address.ts)
  // neither could be named alone, so refuse it here rather than serve two "web01"s.
  const declared = new Map(config.consoles.map((c, i): [string, number] => [c.name.toLowerCase(), i]));
  config.tunnels.forEach((t, i) => {
    if (t.source === undefined) return;
    const other = declared.get(t.name.toLowerCase());
    if (other === undefined) return;
    const at = file ? `${file.where(['tunnels', i, 'name'])}: ` : '';
    throw new ConfigError(
      `${at}tunnels.${i}.name: "${t.name}" is already the name of consoles[${other}] (names are compared in any case): a tunnel with source: is a console of its own, named after the tunnel, so give it another name, e.g. ${t.name}-tunnel`,
      { field: `tunnels.${i}.name` },
    );
  });
  return {
    config,
    logLevel: config.logLevel,
    logFormat: config.logFormat,
    file: file?.path ?? null,
    warnings,
    deprecations,
    origin,
  };
}

/** Re-states an option's error at the file position when the value came from the file. */
function locate(err: unknown, file: ConfigFile, origin: Record<string, Origin>, readAs: Record<string, string>): unknown {
  if (!(err instanceof ConfigError)) return err;
  const name = typeof err.context.field === 'string' ? err.context.field : '';
  const spec = (OPTIONS as readonly OptionSpec[]).find((o) => optionName(o) === name);
  if (!spec || origin[spec.key] !== 'file') return err;
  const key = readAs[spec.key] ?? spec.key;
  const rest = err.message.startsWith(`${name}: `) ? err.message.slice(name.length + 2) : err.message;
  return new ConfigError(`${file.where([key])}: ${key}: ${rest}`, { ...err.context, field: key, file: file.path });
}
