#!/usr/bin/env node
import { CommanderError } from 'commander';
import type { VspcConfig } from '../config/config.js';
import { VspcError } from '../errors.js';
import { createLogger, errorFields, type LogFormat } from '../logging/logger.js';
import { VspcServer } from '../server.js';
import { buildProgram } from '../config/options.js';
import { loadConfiguration, type LoadedConfiguration } from '../config/load.js';
import { createReloader } from '../config/reload.js';
import { helpEpilogue, VSPC_MANUAL } from './help-text.js';

async function main(argv: string[]): Promise<void> {
  const program = buildProgram()
    .addHelpText('after', helpEpilogue(VSPC_MANUAL))
    .exitOverride()
    // commander's own errors (`error: unknown option '--bogus'`) carry the program's name like the others.
    .configureOutput({ outputError: (str, write) => write(`vspc: ${str}`) });
  let config: VspcConfig;
  let loaded: LoadedConfiguration;
  try {
    program.parse(argv);
    // Flags, then VSPC_ADMIN_TOKEN, then the --config file, then defaults.
    loaded = loadConfiguration(program);
    config = loaded.config;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help / --version exit 0; usage errors were already printed by commander.
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    process.stderr.write(`vspc: ${(err as Error).message}\n`);
    process.exit(2);
  }
  // The log's reader can go away (`vspc | tee` ended by Ctrl-C, a closed pipe). Its EPIPE
  // must not reach uncaughtException below, which would turn a clean shutdown into exit 70
  // with the database left open: consoles matter more than their logs, so carry on without.
  process.stderr.on('error', () => {});
  const logger = createLogger({ level: loaded.logLevel, format: loaded.logFormat as LogFormat });
  for (const warning of [...loaded.deprecations, ...loaded.warnings]) logger.warn(warning);
  if (loaded.file) logger.info('config file read', { file: loaded.file });
  // SIGHUP (systemctl reload) re-reads the config file once vspc runs; before that it is
  // ignored rather than fatal (Node's default for SIGHUP is to exit).
  let onHangup = (): void => void logger.warn('SIGHUP while vspc is starting; ignored');
  process.on('SIGHUP', () => onHangup());
  // Last resort: per-connection handlers already contain peer-triggered failures. Anything
  // reaching here is a bug with unknown state, so log it and exit for the supervisor to restart.
  process.on('uncaughtException', (err) => {
    logger.error('fatal: uncaught exception; exiting', { ...errorFields(err), stack: err.stack });
    setTimeout(() => process.exit(70), 100).unref();
  });
  // SIGTERM/SIGINT from the first moment: one that arrives while vspc starts (after its
  // 'vspc started' line, before start() has returned) is kept and acted on once started,
  // rather than killing the process with the database open (Node's default).
  let pendingSignal: string | null = null;
  let onStopSignal = (signal: string): void => {
    if (pendingSignal !== null) return;
    pendingSignal = signal;
    logger.info('signal received while starting; shutting down once started', { signal });
  };
  process.on('SIGTERM', () => onStopSignal('SIGTERM'));
  process.on('SIGINT', () => onStopSignal('SIGINT'));
  let server: VspcServer;
  try {
    server = await VspcServer.start(config, logger);
  } catch (err) {
    logger.error('vspc could not start', errorFields(err));
    process.stderr.write(`vspc: cannot start: ${(err as Error).message}${err instanceof VspcError ? ` (${err.code})` : ''}\n`);
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }
  // SIGHUP and `vspc-admin reload` re-read the config file; flags given at start stay.
  server.reloadConfig = createReloader(program, server, logger, loaded);
  onHangup = () => {
    try {
      server.reload();
    } catch {
      // Logged by the reloader; the running configuration is unchanged.
    }
  };
  // Exit once stderr (the log) has taken everything written so far.
  const exit = (code: number) => process.stderr.write('', () => process.exit(code));
  let signals = 0;
  const stop = (signal: string) => {
    signals++;
    if (signals > 1) {
      logger.warn('second signal: aborting', { signal });
      server.destroy();
      exit(1);
      return;
    }
    logger.info('signal received; shutting down', { signal });
    // Bounded: the grace period for VM connections, plus time for logs and the database.
    const limitMs = config.closeGraceMs + 10_000;
    setTimeout(() => {
      logger.error('shutdown did not finish in time; aborting', { limitMs });
      server.destroy();
      exit(1);
    }, limitMs).unref();
    server.close().then(
      () => exit(0),
      (err) => {
        logger.error('shutdown failed', errorFields(err));
        exit(1);
      },
    );
  };
  onStopSignal = stop;
  if (pendingSignal !== null) stop(pendingSignal);
}

await main(process.argv);
