#!/usr/bin/env node
import { CommanderError } from 'commander';
import type { VspcConfig } from '../config.js';
import { VspcError } from '../errors.js';
import { createLogger, errorFields, type LogFormat } from '../logger.js';
import { VspcServer } from '../server.js';
import { buildProgram, configFromOptions } from './vspc-options.js';

async function main(argv: string[]): Promise<void> {
  const program = buildProgram().exitOverride();
  let config: VspcConfig;
  let opts: Record<string, unknown>;
  try {
    program.parse(argv);
    opts = program.opts();
    config = configFromOptions(opts);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help / --version exit 0; usage errors were already printed by commander.
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    process.stderr.write(`vspc: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const logger = createLogger({ level: opts.logLevel as string, format: opts.logFormat as LogFormat });
  // Last resort: per-connection handlers already contain peer-triggered failures. Anything
  // reaching here is a bug with unknown state, so log it and exit for the supervisor to restart.
  process.on('uncaughtException', (err) => {
    logger.error('fatal: uncaught exception; exiting', { ...errorFields(err), stack: err.stack });
    setTimeout(() => process.exit(70), 100).unref();
  });
  let server: VspcServer;
  try {
    server = await VspcServer.start(config, logger);
  } catch (err) {
    logger.error('vspc could not start', errorFields(err));
    process.stderr.write(`vspc: cannot start: ${(err as Error).message}${err instanceof VspcError ? ` (${err.code})` : ''}\n`);
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }
  let signals = 0;
  const stop = (signal: string) => {
    signals++;
    if (signals > 1) {
      logger.warn('second signal: aborting', { signal });
      server.destroy();
      process.exit(1);
    }
    logger.info('signal received; shutting down', { signal });
    server.close().then(
      () => process.exit(0),
      (err) => {
        logger.error('shutdown failed', errorFields(err));
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

await main(process.argv);
