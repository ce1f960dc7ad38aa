/** The `vspc` command line: options, defaults and their validation (kept apart from main for tests). */
import { Command, Option as CliOption } from 'commander';
import {
  DEFAULTS,
  parseDuration,
  parseHostPort,
  parsePort,
  parsePortRange,
  parseSize,
  rangesOverlap,
  readPem,
  type VspcConfig,
} from './config.js';
import { ConfigError } from '../errors.js';
import { VERSION } from '../version.js';

/**
 * Options are taken as strings (so `--help` shows defaults as an operator would type
 * them) and validated together in `configFromOptions`, each error naming its flag.
 */
export function buildProgram(): Command {
  return new Command('vspc')
    .description(
      'Virtual serial port concentrator: VMware ESXi VMs connect their network serial ports in ' +
        '(vSPC URI telnet://HOST:13370) and each VM serial port gets a sticky telnet port.',
    )
    .version(VERSION, '-V, --version')
    .option('--config <file>', 'YAML or JSON config file (keys: these options in camelCase, plus vms:); options given here override it')
    .option('--proxy-listen <host:port>', 'where ESXi hosts connect (plain telnet)', '0.0.0.0:13370')
    .option('--proxy-tls-listen <host:port>', 'where ESXi hosts connect with telnets:// (with --cert/--key; default 0.0.0.0:13372)')
    .option('--cert <file>', 'TLS certificate (PEM) for telnets on the VM and client sides')
    .option('--key <file>', 'TLS private key (PEM)')
    .option('--admin-listen <host:port>', 'admin API (HTTP/JSON)', '127.0.0.1:13371')
    .addOption(
      new CliOption('--admin-token <token>', 'bearer token the admin API requires (visible in ps: prefer the variable or --admin-token-file)').env(
        'VSPC_ADMIN_TOKEN',
      ),
    )
    .option('--admin-token-file <file>', 'read the admin API token from this file')
    .option('--admin-cert <file>', 'serve the admin API over HTTPS with this certificate (PEM)')
    .option('--admin-key <file>', 'private key (PEM) for --admin-cert')
    .option('--db <path>', 'SQLite database of VM serial ports and their ports', DEFAULTS.dbPath)
    .option('--port-range <start-end>', 'client telnet ports handed to VM serial ports', '10000-19999')
    .option('--tls-port-offset <n>', "a VM's telnets port is its telnet port plus this", String(DEFAULTS.tlsPortOffset))
    .option('--vm-listen-host <host>', 'address the per-VM client ports bind to', DEFAULTS.vmListenHost)
    .option('--service-name <name>', 'service name VMs must use in their vSPC port URI', DEFAULTS.serviceName)
    .option('--expire-after <duration>', 'forget VM serial ports not seen for this long (0 = never)', '90d')
    .option('--identify-timeout <duration>', 'close VM connections that do not identify in time', '30s')
    .option('--human-timeout <duration>', 'explain and close connections that do not speak option 232 by then', '5s')
    .option('--client-queue-limit <size>', 'bytes queued to a slow client before it is disconnected', '1m')
    .option('--vmotion-timeout <duration>', 'abandon a vMotion that does not finish in time', '60s')
    .option('--vmotion-hold-limit <size>', 'client input held per VM serial port during a vMotion', '1m')
    .option('--scrollback <size>', 'recent VM output replayed to a client when it attaches (0 = none)', '64k')
    .option('--client-ca <file>', 'telnets client ports accept only certificates signed by this CA (PEM)')
    .option('--client-idle-timeout <duration>', 'close console clients idle this long (0 = never)', '0')
    .option('--log-dir <dir>', 'write a console log file per VM serial port in this directory (default: no console logs)')
    .option('--log-max-size <size>', 'rotate a console log file before it passes this size', '10m')
    .option('--log-keep <n>', 'rotated console log files kept per VM serial port (0 = none)', String(DEFAULTS.logKeep))
    .option('--log-mark-interval <duration>', 'timestamp mark in console logs that had output, this often (0 = none)', '1h')
    .option('--no-com-port', 'refuse COM-PORT (RFC 2217) instead of recording the guest UART settings')
    .addOption(new CliOption('--log-level <level>', 'log level').choices(['error', 'warn', 'info', 'debug']).default('info'))
    .addOption(new CliOption('--log-format <format>', 'log format').choices(['json', 'text']).default('json'));
}

function str(o: Record<string, unknown>, k: string): string {
  return String(o[k]);
}

/** --log-dir and friends (console log files, src/logging/console-log.ts). */
function consoleLogConfig(o: Record<string, unknown>): Pick<VspcConfig, 'logDir' | 'logMaxSize' | 'logKeep' | 'logMarkIntervalMs'> {
  const dir = o.logDir as string | undefined;
  if (dir !== undefined && dir.trim() === '') throw new ConfigError('--log-dir: must not be empty', { field: '--log-dir' });
  const keepText = str(o, 'logKeep').trim();
  if (!/^\d+$/.test(keepText) || Number(keepText) > 1000) {
    throw new ConfigError(`--log-keep: "${keepText}" is not a number of files (0-1000)`, { field: '--log-keep', value: keepText });
  }
  const logMaxSize = parseSize('--log-max-size', str(o, 'logMaxSize'));
  if (logMaxSize < 4096) {
    throw new ConfigError(`--log-max-size: ${logMaxSize} bytes is too small (at least 4k)`, { field: '--log-max-size', value: str(o, 'logMaxSize') });
  }
  return {
    logDir: dir ?? null,
    logMaxSize,
    logKeep: Number(keepText),
    logMarkIntervalMs: parseDuration('--log-mark-interval', str(o, 'logMarkInterval')),
  };
}

export function configFromOptions(o: Record<string, unknown>): VspcConfig {
  const cert = o.cert as string | undefined;
  const key = o.key as string | undefined;
  if (!!cert !== !!key) {
    const field = cert ? '--key' : '--cert';
    throw new ConfigError(`${field}: --cert and --key go together`, { field });
  }
  if (o.proxyTlsListen !== undefined && !cert) {
    throw new ConfigError('--proxy-tls-listen: needs --cert and --key', { field: '--proxy-tls-listen' });
  }
  const portRange = parsePortRange('--port-range', str(o, 'portRange'));
  const tlsPortOffset = parsePort('--tls-port-offset', str(o, 'tlsPortOffset'));
  const tls = cert && key ? { cert: readPem('--cert', cert), key: readPem('--key', key) } : null;
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
  if (o.clientCa !== undefined && !tls) {
    throw new ConfigError('--client-ca: needs --cert and --key (client certificates are checked on telnets ports)', { field: '--client-ca' });
  }
  const clientCa = o.clientCa !== undefined ? readPem('--client-ca', str(o, 'clientCa')) : null;
  const serviceName = str(o, 'serviceName');
  if (serviceName.length === 0 || serviceName.includes('?')) {
    throw new ConfigError('--service-name: must be non-empty and contain no "?"', { field: '--service-name' });
  }
  return {
    ...DEFAULTS,
    proxyListen: parseHostPort('--proxy-listen', str(o, 'proxyListen'), '0.0.0.0'),
    proxyTlsListen: tls
      ? o.proxyTlsListen !== undefined
        ? parseHostPort('--proxy-tls-listen', str(o, 'proxyTlsListen'), '0.0.0.0')
        : { host: '0.0.0.0', port: 13372 }
      : null,
    adminListen: parseHostPort('--admin-listen', str(o, 'adminListen'), '127.0.0.1'),
    tls,
    dbPath: str(o, 'db'),
    portRange,
    tlsPortOffset,
    vmListenHost: str(o, 'vmListenHost'),
    serviceName,
    expireAfterMs: parseDuration('--expire-after', str(o, 'expireAfter')),
    identifyTimeoutMs: parseDuration('--identify-timeout', str(o, 'identifyTimeout')),
    humanTimeoutMs: parseDuration('--human-timeout', str(o, 'humanTimeout')),
    clientQueueLimit: parseSize('--client-queue-limit', str(o, 'clientQueueLimit')),
    vmotionTimeoutMs: parseDuration('--vmotion-timeout', str(o, 'vmotionTimeout')),
    vmotionHoldLimit: parseSize('--vmotion-hold-limit', str(o, 'vmotionHoldLimit')),
    comPort: o.comPort as boolean,
    scrollbackBytes: str(o, 'scrollback') === '0' ? 0 : parseSize('--scrollback', str(o, 'scrollback')),
    clientIdleTimeoutMs: parseDuration('--client-idle-timeout', str(o, 'clientIdleTimeout')),
    ...consoleLogConfig(o),
    clientCa,
  };
}
