/**
 * The `vspc` command line and the step from option values to a VspcConfig, both
 * generated from the table (table.ts): the commander options, the parse of each value,
 * the fields several options combine into (TLS from --cert/--key, the admin token),
 * the checks across options, and DEFAULTS.
 */
import { readFileSync, statSync } from 'node:fs';
import { Command, Option as CliOption } from 'commander';
import type { VspcConfig } from './config.js';
import { parseHostPort, rangesOverlap, readPem } from './parse.js';
import { FIXED_SETTINGS, MIN_SAFE_VMOTION_SECRET_BYTES, OPTIONS, PROXY_TLS_LISTEN_DEFAULT, optionName, type OptionSpec } from './table.js';
import { ConfigError } from '../errors.js';
import { isLoopbackHost } from '../util/net.js';
import { VERSION } from '../version.js';

/** Where an option's value came from, highest precedence first. */
export type Origin = 'cli' | 'env' | 'file' | 'default';
export const ORIGIN_RANK: Readonly<Record<Origin, number>> = { cli: 3, env: 2, file: 1, default: 0 };

/** Shorter admin tokens are refused: the admin API can forget every VM. */
export const MIN_TOKEN_LENGTH = 16;

/** Program options that are not settings (no config file key). */
export const NOT_SETTINGS: ReadonlySet<string> = new Set(['config', 'version', 'help']);

/**
 * The `vspc` program: `--config`, then every option of the table with a flag, in table
 * order (which is the `--help` order). Values stay strings, as typed, so that `--help`
 * shows defaults the way an operator writes them; configFromOptions parses them. A
 * deprecated alias is a hidden option of its own (loadConfiguration resolves it).
 */
export function buildProgram(): Command {
  const program = new Command('vspc')
    .description(
      'Console server for the serial consoles of a VM estate: VMware ESXi VMs connect their network ' +
        'serial ports in (vSPC URI telnet://HOST:13370); QEMU/KVM, Proxmox and libvirt serial sockets, ptys ' +
        'and host ttys are declared (consoles:) or discovered (--proxmox, --libvirt, discover:). Each console ' +
        'gets a sticky telnet port.',
    )
    .version(VERSION, '-V, --version')
    .option('--config <file>', 'config file, YAML (JSON if named *.json); keys: these options in camelCase, plus vms:, consoles:, discover: and tunnels:; options given here override it');
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    if (spec.flag === null) continue;
    const opt = new CliOption(spec.flag, spec.help);
    if (opt.attributeName() !== spec.key) throw new Error(`table.ts: ${spec.flag} has key ${spec.key}, commander calls it ${opt.attributeName()}`);
    if (spec.choices) opt.choices(spec.choices);
    if (spec.default !== undefined) opt.default(spec.default);
    if (spec.env) opt.env(spec.env);
    program.addOption(opt);
    if (spec.deprecatedAlias) {
      program.addOption(new CliOption(spec.deprecatedAlias.flag, `deprecated: use ${optionName(spec)}`).hideHelp());
    }
  }
  return program;
}

/** What the combiners below read: the raw values and where they came from. */
export interface CombineInputs {
  readonly values: Readonly<Record<string, unknown>>;
  readonly origin: Readonly<Record<string, Origin>>;
  readonly warnings: string[];
  /** The fields parsed one option at a time, so far. */
  readonly config: VspcConfig;
}

const text = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : String(v));

/**
 * Fields several options combine into, or whose value depends on another option, in
 * the order they are computed. Every `text` option of the table without a `parse` has
 * its field here (a test checks).
 */
export const COMBINED: { readonly [K in 'tls' | 'proxyTlsListen' | 'clientCa' | 'adminToken' | 'adminTls']: (inputs: CombineInputs) => VspcConfig[K] } = {
  tls: (inputs) => {
    const cert = text(inputs.values.cert);
    const key = text(inputs.values.key);
    if (!!cert !== !!key) {
      const field = cert ? '--key' : '--cert';
      throw new ConfigError(`${field}: --cert and --key go together`, { field });
    }
    const tls = cert && key ? { cert: readPem('--cert', cert), key: readPem('--key', key) } : null;
    const { portRange, tlsPortOffset } = inputs.config;
    if (tls) {
      const tlsRange = { start: portRange.start + tlsPortOffset, end: portRange.end + tlsPortOffset };
      if (tlsRange.end > 65535) {
        throw new ConfigError(`--tls-port-offset: port ${portRange.end} + ${tlsPortOffset} exceeds 65535`, { field: '--tls-port-offset' });
      }
      if (rangesOverlap(portRange, tlsRange)) {
        throw new ConfigError(
          `--tls-port-offset: telnets ports ${tlsRange.start}-${tlsRange.end} overlap --port-range ${portRange.start}-${portRange.end}; use an offset of at least ${portRange.end - portRange.start + 1}`,
          { field: '--tls-port-offset' },
        );
      }
    }
    return tls;
  },
  proxyTlsListen: (inputs) => {
    const given = inputs.config.proxyTlsListen;
    if (!inputs.config.tls) {
      if (given) throw new ConfigError('--proxy-tls-listen: needs --cert and --key', { field: '--proxy-tls-listen' });
      return null;
    }
    return given ?? parseHostPort('--proxy-tls-listen', PROXY_TLS_LISTEN_DEFAULT, '0.0.0.0');
  },
  clientCa: (inputs) => {
    const path = text(inputs.values.clientCa);
    if (path === undefined) return null;
    if (!inputs.config.tls) {
      throw new ConfigError('--client-ca: needs --cert and --key (client certificates are checked on telnets ports)', { field: '--client-ca' });
    }
    return readPem('--client-ca', path);
  },
  adminToken: (inputs) => adminToken(inputs),
  adminTls: ({ values }) => {
    const cert = text(values.adminCert);
    const key = text(values.adminKey);
    if (!!cert !== !!key) {
      // Name the one given: that is where a config file has a position.
      const field = cert ? '--admin-cert' : '--admin-key';
      throw new ConfigError(`${field}: --admin-cert and --admin-key go together`, { field });
    }
    return cert && key ? { cert: readPem('--admin-cert', cert), key: readPem('--admin-key', key) } : null;
  },
};

/** The token from --admin-token / VSPC_ADMIN_TOKEN / adminToken or the token file; the highest source wins. */
function adminToken({ values, origin, warnings }: CombineInputs): string | null {
  const direct = text(values.adminToken);
  const filePath = text(values.adminTokenFile);
  if (direct === undefined && filePath === undefined) return null;
  const rd = direct === undefined ? -1 : ORIGIN_RANK[origin.adminToken ?? 'default'];
  const rf = filePath === undefined ? -1 : ORIGIN_RANK[origin.adminTokenFile ?? 'default'];
  if (rd === rf) {
    throw new ConfigError('--admin-token-file: give either a token or a token file, not both', { field: '--admin-token-file' });
  }
  let token: string;
  let field: string;
  if (rd > rf) {
    token = direct!.trim();
    field = '--admin-token';
  } else {
    field = '--admin-token-file';
    try {
      token = readFileSync(filePath!, 'utf8').trim();
      if ((statSync(filePath!).mode & 0o004) !== 0) warnings.push(`admin token file ${filePath} is readable by every user; chmod 600 it`);
    } catch (err) {
      throw new ConfigError(`--admin-token-file: cannot read ${filePath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        field,
        value: filePath,
      });
    }
  }
  if (token.length < MIN_TOKEN_LENGTH || /\s/.test(token)) {
    throw new ConfigError(`${field}: the token must be at least ${MIN_TOKEN_LENGTH} characters without spaces (e.g. openssl rand -hex 32)`, { field });
  }
  return token;
}

/** Checks across options that set no field of their own. */
function checkAcross(config: VspcConfig): void {
  const pg = /^postgres(ql)?:\/\//i.test(config.dbPath);
  if ((config.clusterListen || config.clusterSecret) && !pg) {
    const field = config.clusterListen ? '--cluster-listen' : '--cluster-secret-file';
    throw new ConfigError(`${field}: the cluster link is for nodes sharing a PostgreSQL database (--db postgres://...)`, { field });
  }
  if (config.clusterListen && !config.clusterSecret) {
    throw new ConfigError('--cluster-secret-file: a cluster link needs the shared secret (the link is never open without authentication)', {
      field: '--cluster-secret-file',
    });
  }
  if (config.clusterSecret && !config.clusterListen) {
    throw new ConfigError('--cluster-listen: --cluster-secret-file is for the cluster link; give the address it listens on too', { field: '--cluster-listen' });
  }
  if (config.sshListen && !config.sshAuthorizedKeys && !config.sshKeysCommand) {
    throw new ConfigError('--ssh-listen: no key could log in: give --ssh-authorized-keys FILE, --ssh-keys-command CMD, or both', { field: '--ssh-listen' });
  }
  if (!isLoopbackHost(config.adminListen.host) && !config.adminToken) {
    throw new ConfigError(
      `--admin-listen: ${config.adminListen.host} is not a loopback address, so the admin API needs a token: ` +
        `give --admin-token-file FILE, set VSPC_ADMIN_TOKEN, or use --admin-token`,
      { field: '--admin-listen' },
    );
  }
}

/**
 * The configuration option values describe. `values` is keyed by the table's keys:
 * strings for text options (as typed, or numbers from a file), booleans for switches,
 * the checked VmSettings[] for `vms` (aliases already resolved, see loadConfiguration);
 * a missing value is the option's default, else unset. `origin` says where each came
 * from (it decides between --admin-token and --admin-token-file); warnings are pushed
 * to `warnings`. Throws ConfigError naming the flag (or the key of a file-only setting).
 */
export function configFromOptions(
  values: Readonly<Record<string, unknown>>,
  origin: Readonly<Record<string, Origin>> = {},
  warnings: string[] = [],
): VspcConfig {
  const out: Record<string, unknown> = { ...FIXED_SETTINGS };
  for (const spec of OPTIONS as readonly OptionSpec[]) {
    const raw = values[spec.key] ?? spec.default;
    if (spec.kind === 'switch') out[spec.field] = raw === undefined ? true : raw === true;
    else if (spec.kind === 'list') out[spec.field] = raw === undefined ? null : spec.parse!(Array.isArray(raw) ? raw.map(String).join(',') : String(raw), optionName(spec));
    else if (spec.kind === 'structured') out[spec.field] = raw === undefined ? spec.empty : raw;
    else if (spec.parse) out[spec.field] = raw === undefined ? null : spec.parse(String(raw), optionName(spec));
  }
  const config = out as unknown as VspcConfig;
  const inputs: CombineInputs = { values, origin, warnings, config };
  for (const [field, combine] of Object.entries(COMBINED) as Array<[keyof typeof COMBINED, (i: CombineInputs) => unknown]>) {
    (config as unknown as Record<string, unknown>)[field] = combine(inputs);
  }
  checkAcross(config);
  if (config.vmotionSecretBytes < MIN_SAFE_VMOTION_SECRET_BYTES) {
    warnings.push(
      `--vmotion-secret-bytes: ${config.vmotionSecretBytes} bytes is below the ${MIN_SAFE_VMOTION_SECRET_BYTES} VMware asks for; ` +
        'a shorter vMotion secret is easier to guess for whoever can reach the VM port while a VM migrates',
    );
  }
  return config;
}

/** Every option at its default, and the fixed settings. */
export const DEFAULTS: VspcConfig = configFromOptions({});
