/** The `vspc` command line: options, defaults and their validation (kept apart from main for tests). */
import { Command, Option as CliOption } from 'commander';
import {
  DEFAULTS,
  parseDuration,
  parseHostPort,
  parsePort,
  parsePortRange,
  parseSize,
  readPem,
  type VspcConfig,
} from '../config.js';
import { ConfigError } from '../errors.js';
import { VERSION } from '../version.js';

/** Commander argParser that turns our ConfigError into commander's "invalid argument". */
function arg<T>(field: string, parse: (field: string, v: string) => T): (v: string) => T {
  return (v) => parse(field, v);
}

export function buildProgram(): Command {
  const d = DEFAULTS;
  return new Command('vspc')
    .description(
      'Virtual serial port concentrator: VMware ESXi VMs connect their network serial ports in\n' +
        '(vSPC URI telnet://HOST:13370), and each VM serial port gets a sticky telnet port.',
    )
    .version(VERSION, '-V, --version')
    .option('--proxy-listen <host:port>', 'where ESXi hosts connect (plain telnet)', arg('--proxy-listen', (f, v) => parseHostPort(f, v, '0.0.0.0')), d.proxyListen)
    .option('--proxy-tls-listen <host:port>', 'where ESXi hosts connect with telnets:// (needs --cert/--key)', arg('--proxy-tls-listen', (f, v) => parseHostPort(f, v, '0.0.0.0')))
    .option('--cert <file>', 'TLS certificate (PEM) for telnets on the VM and client sides')
    .option('--key <file>', 'TLS private key (PEM)')
    .option('--admin-listen <host:port>', 'admin API (HTTP/JSON)', arg('--admin-listen', (f, v) => parseHostPort(f, v, '127.0.0.1')), d.adminListen)
    .option('--db <path>', 'SQLite database of VM serial ports and their ports', d.dbPath)
    .option('--port-range <start-end>', 'client telnet ports handed to VM serial ports', arg('--port-range', parsePortRange), d.portRange)
    .option('--tls-port-offset <n>', "a VM's telnets port is its telnet port plus this", arg('--tls-port-offset', (f, v) => parsePort(f, v)), d.tlsPortOffset)
    .option('--vm-listen-host <host>', 'address the per-VM client ports bind to', d.vmListenHost)
    .option('--service-name <name>', 'service name VMs must use in their vSPC port URI', d.serviceName)
    .option('--expire-after <duration>', 'forget VM serial ports not seen for this long (0 = never)', arg('--expire-after', parseDuration), d.expireAfterMs)
    .option('--identify-timeout <duration>', 'close VM connections that do not identify in time', arg('--identify-timeout', parseDuration), d.identifyTimeoutMs)
    .option('--human-timeout <duration>', 'explain and close connections without option 232 after', arg('--human-timeout', parseDuration), d.humanTimeoutMs)
    .option('--client-queue-limit <size>', 'bytes queued to a slow client before it is disconnected', arg('--client-queue-limit', parseSize), d.clientQueueLimit)
    .option('--vmotion-timeout <duration>', 'abandon a vMotion that does not finish in time', arg('--vmotion-timeout', parseDuration), d.vmotionTimeoutMs)
    .option('--vmotion-hold-limit <size>', 'client input held during a vMotion switch-over', arg('--vmotion-hold-limit', parseSize), d.vmotionHoldLimit)
    .option('--no-com-port', 'refuse COM-PORT (RFC 2217) instead of recording the guest UART settings')
    .addOption(new CliOption('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']).default('info'))
    .addOption(new CliOption('--log-format <format>', 'log format').choices(['json', 'text']).default('json'));
}

export function configFromOptions(o: Record<string, unknown>): VspcConfig {
  const cert = o.cert as string | undefined;
  const key = o.key as string | undefined;
  if (!!cert !== !!key) {
    const field = cert ? '--key' : '--cert';
    throw new ConfigError(`${field}: --cert and --key go together`, { field });
  }
  if (o.proxyTlsListen && !cert) {
    throw new ConfigError('--proxy-tls-listen: needs --cert and --key', { field: '--proxy-tls-listen' });
  }
  const tls = cert && key ? { cert: readPem('--cert', cert), key: readPem('--key', key) } : null;
  const range = o.portRange as VspcConfig['portRange'];
  const offset = o.tlsPortOffset as number;
  if (tls && range.end + offset > 65535) {
    throw new ConfigError(`--tls-port-offset: port ${range.end} + ${offset} exceeds 65535`, { field: '--tls-port-offset' });
  }
  return {
    ...DEFAULTS,
    proxyListen: o.proxyListen as VspcConfig['proxyListen'],
    proxyTlsListen: tls ? ((o.proxyTlsListen as VspcConfig['proxyTlsListen']) ?? { host: '0.0.0.0', port: 13372 }) : null,
    adminListen: o.adminListen as VspcConfig['adminListen'],
    tls,
    dbPath: o.db as string,
    portRange: range,
    tlsPortOffset: offset,
    vmListenHost: o.vmListenHost as string,
    serviceName: o.serviceName as string,
    expireAfterMs: o.expireAfter as number,
    identifyTimeoutMs: o.identifyTimeout as number,
    humanTimeoutMs: o.humanTimeout as number,
    clientQueueLimit: o.clientQueueLimit as number,
    vmotionTimeoutMs: o.vmotionTimeout as number,
    vmotionHoldLimit: o.vmotionHoldLimit as number,
    comPort: o.comPort as boolean,
  };
}

