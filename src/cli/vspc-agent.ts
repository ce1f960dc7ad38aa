#!/usr/bin/env node
/**
 * vspc-agent (TypeScript): the guest side of vspc's serial tunnel, for guests with
 * Node. Same options and behaviour as the static C agent built by
 * packaging/build-agent.sh (which needs no Node):
 *
 *   vspc-agent --device /dev/ttyS1 --allow 22 [--allow 8080] [--verbose]
 */
import { Command, CommanderError } from 'commander';
import { GuestAgent } from '../agent/agent.js';
import { VERSION } from '../version.js';

function collectPorts(value: string, previous: number[]): number[] {
  const out = [...previous];
  for (const part of value.split(',')) {
    const p = Number(part);
    if (!/^\d+$/.test(part) || p < 1 || p > 65535) throw new CommanderError(2, 'vspc-agent.badPort', `bad --allow value: ${value} (ports 1..65535, comma-separated)`);
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

function intOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new CommanderError(2, 'vspc-agent.badNumber', `${name} must be ${min}..${max}`);
    return n;
  };
}

export function main(argv: string[]): void {
  const program = new Command()
    .name('vspc-agent')
    .description("The guest side of vspc's serial tunnel: relays TCP streams opened by the vspc host over a serial line to 127.0.0.1:PORT.")
    .requiredOption('-d, --device <path>', 'serial device (e.g. /dev/ttyS1, /dev/hvc1, /dev/vport0p1)')
    .option('-a, --allow <ports>', 'ports the host may open, comma-separated, repeatable (default: 22 only)', collectPorts, [] as number[])
    .option('--max-streams <n>', 'streams at once', intOption('--max-streams', 1, 4096), 64)
    .option('--stream-window <bytes>', 'per-stream receive window, bytes', intOption('--stream-window', 1, 16 << 20), 65536)
    .option('--max-payload <bytes>', 'largest frame payload, 64..16384 (above 1024 only on a lossless line such as virtio-serial)', intOption('--max-payload', 64, 16384), 1024)
    .option('-v, --verbose', 'log streams (twice: more detail)', (_v: string, prev: number) => prev + 1, 0)
    .version(`vspc-agent ${VERSION} (TypeScript, tunnel protocol 1)`, '-V, --version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  try {
    program.parse(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code !== 'commander.helpDisplayed' && err.code !== 'commander.version' && err.code.startsWith('vspc-agent.')) {
        process.stderr.write(`vspc-agent: ${err.message}\n`);
      }
      process.exit(err.exitCode === 0 ? 0 : 2);
    }
    throw err;
  }
  const o = program.opts<{ device: string; allow: number[]; maxStreams: number; streamWindow: number; maxPayload: number; verbose: number }>();
  const agent = new GuestAgent({
    device: o.device,
    allow: o.allow.length > 0 ? o.allow : [22],
    verbose: o.verbose,
    maxStreams: o.maxStreams,
    streamWindow: o.streamWindow,
    maxPayload: o.maxPayload,
  });
  const stop = (): void => {
    process.stderr.write('vspc-agent: stopping (signal): closing every stream\n');
    agent.stop();
    // Let the RESETs reach the line, then go through process.exit(). (Not an unref'd
    // timer: if the event loop ran empty first, Node's teardown would busy-wait for a
    // write request on the closed tty handle that never completes.)
    setTimeout(() => process.exit(0), 100);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGHUP', stop);
  process.on('SIGUSR1', () => process.stderr.write(`vspc-agent: stats: ${JSON.stringify(agent.stats())}\n`));
  agent.start();
}

main(process.argv);
