/**
 * `vspc-admin console [NAME]`: consoles by name through the console broker, with no
 * admin API and no token (docs/console-protocol.md, "The console broker"). Without a
 * name it lists the consoles (on a terminal: a numbered menu to pick from); with one it
 * attaches like `vspc-admin connect`, same menu, lock flags and exit codes.
 */
import net from 'node:net';
import { createInterface } from 'node:readline/promises';
import { userInfo } from 'node:os';
import { Option as CliOption, type Command } from 'commander';
import { Option, policyFromLists, TelnetSession } from '../protocol/telnet/index.js';
import { decodeControl, encodeControl, VSPC_CONTROL_OPTION, type ConsoleListEntry } from '../protocol/control/vspc-control.js';
import { parseLockMode } from '../domain/locks.js';
import { ConfigError, VspcError } from '../errors.js';
import { parseHostPort } from '../config/config.js';
import { DEFAULT_BROKER_SOCKET } from '../config/broker.js';
import { sanitizeText } from '../util/text.js';
import { describeSocketError, runConsole, type ConsoleIo, type ConsoleTarget } from './connect.js';
import { formatTable } from './table.js';

/** The environment variable naming the broker socket when --socket is not given. */
export const BROKER_SOCKET_ENV = 'VSPC_BROKER_SOCKET';

interface ConsoleCommandOptions {
  socket?: string;
  broker?: string;
  mode: string;
  force?: boolean;
  user?: string;
  names?: boolean;
  json?: boolean;
}

/** The broker endpoint the options name: `--broker host:port`, else the unix socket. */
export function brokerTarget(o: { socket?: string; broker?: string }): ConsoleTarget {
  if (o.broker !== undefined) {
    if (o.socket !== undefined) throw new ConfigError('--broker: give either --socket or --broker, not both', { field: '--broker' });
    const { host, port } = parseHostPort('--broker', o.broker, '127.0.0.1');
    return { dial: () => net.connect({ host, port }), readyEvent: 'connect', where: `${host}:${port}` };
  }
  const path = o.socket ?? DEFAULT_BROKER_SOCKET;
  return { dial: () => net.connect({ path }), readyEvent: 'connect', where: path };
}

/**
 * One LIST-REQUEST: connect, negotiate, ask, collect the LIST-REPLY pages, close.
 * Rejects with VSPC_BROKER_UNREACHABLE saying what went wrong.
 */
export function fetchConsoleList(target: ConsoleTarget, pattern: string, timeoutMs = 10_000): Promise<ConsoleListEntry[]> {
  return new Promise((resolve, reject) => {
    const entries: ConsoleListEntry[] = [];
    let said = '';
    let settled = false;
    const socket = target.dial();
    const done = (err: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err === null) resolve(entries);
      else reject(new VspcError('VSPC_BROKER_UNREACHABLE', `console broker ${target.where}: ${err}`, { where: target.where }));
    };
    const timer = setTimeout(() => done(`no list within ${timeoutMs} ms`), timeoutMs);
    const session = new TelnetSession(policyFromLists({ us: [Option.BINARY, Option.SGA, VSPC_CONTROL_OPTION], him: [Option.ECHO, Option.SGA, Option.BINARY] }), {
      write: (b) => socket.write(b),
      // Only the broker's own `[vspc: …]` lines come before a console is chosen; kept for the error.
      data: (d) => {
        if (said.length < 4096) said += d.toString('utf8');
      },
      subnegotiation: (option, payload) => {
        if (option !== VSPC_CONTROL_OPTION) return;
        try {
          const msg = decodeControl(payload);
          if (msg.kind !== 'list-reply') return;
          entries.push(...msg.entries);
          if (!msg.more) done(null);
        } catch (err) {
          done(`bad answer: ${(err as Error).message}`);
        }
      },
      refused: (side, option) => {
        if (side === 'us' && option === VSPC_CONTROL_OPTION) done('this is not a vspc console broker (it refused VSPC-CONTROL)');
      },
      error: (err) => done(`protocol error: ${err.message}`),
    });
    socket.on(target.readyEvent, () => {
      session.requestUs(Option.BINARY);
      session.requestUs(Option.SGA);
      session.requestUs(VSPC_CONTROL_OPTION);
      session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl({ kind: 'list-request', pattern }));
    });
    socket.on('data', (d: Buffer) => session.receive(d));
    socket.on('error', (err) => done(describeSocketError(err)));
    socket.on('close', () => {
      const why = sanitizeText(said.replace(/\r?\n/g, ' ')).trim();
      done(`closed before the list${why ? ` (${why})` : ''}`);
    });
  });
}

/** What a person types for an entry: its address, or NAME:LABEL when that is shared. */
function spelling(e: ConsoleListEntry): string {
  return e.address ?? (e.label ? `${e.name}:${e.label}` : e.name);
}

/** The list as a table for a pipe or a file. */
export function formatConsoleTable(entries: readonly ConsoleListEntry[]): string {
  return formatTable(
    ['CONSOLE', 'KIND', 'STATE', 'CLIENTS'],
    entries.map((e) => [spelling(e) + (e.address === null ? ' (shared name)' : ''), e.kind, e.state, String(e.clients)]),
  );
}

/** The numbered menu a terminal gets. */
export function formatConsoleMenu(entries: readonly ConsoleListEntry[]): string {
  const width = String(entries.length).length;
  const names = entries.map((e) => spelling(e) + (e.address === null ? ' (shared name)' : ''));
  const nameWidth = Math.max(...names.map((n) => n.length));
  const kindWidth = Math.max(...entries.map((e) => e.kind.length));
  const stateWidth = Math.max(...entries.map((e) => e.state.length));
  return (
    entries
      .map((e, i) => {
        const clients = e.clients === 0 ? '' : `${e.clients} client${e.clients === 1 ? '' : 's'}`;
        return `${String(i + 1).padStart(width)}) ${names[i].padEnd(nameWidth)}  ${e.kind.padEnd(kindWidth)}  ${e.state.padEnd(stateWidth)}  ${clients}`.trimEnd();
      })
      .join('\n') + '\n'
  );
}

/**
 * The menu's question, until a usable answer: a number, or a name (as typed, the
 * broker resolves it). Null: the person left (empty line, q, end of input).
 */
async function pick(entries: readonly ConsoleListEntry[], io: ConsoleIo): Promise<string | null> {
  const rl = createInterface({ input: io.stdin as NodeJS.ReadableStream, output: io.stderr as NodeJS.WritableStream, terminal: true });
  try {
    for (;;) {
      let answer: string;
      try {
        answer = (await rl.question(`console (1-${entries.length} or a name; Enter to quit): `)).trim();
      } catch {
        return null; // Input closed.
      }
      if (answer === '' || answer === 'q') return null;
      if (/^\d+$/.test(answer)) {
        const e = entries[Number(answer) - 1];
        if (!e) {
          io.stderr.write(`no number ${answer} in the menu\n`);
          continue;
        }
        if (e.address === null) {
          io.stderr.write(`${spelling(e)} shares its name and label with another console; an administrator can tell them apart\n`);
          continue;
        }
        return e.address;
      }
      return answer;
    }
  } finally {
    rl.close();
  }
}

/** Adds `console` to the vspc-admin program. */
export function addConsoleCommand(program: Command, out: (s: string) => void): void {
  program
    .command('console')
    .description('consoles by name through the console broker, no admin token: list them, or attach to one (Ctrl-] for the menu)')
    .argument('[name]', 'console to attach to: NAME, NAME:LABEL, NAME: (the one without a label); with --names/--json a pattern')
    .addOption(new CliOption('--socket <path>', `the broker's unix socket (default: ${DEFAULT_BROKER_SOCKET})`).env(BROKER_SOCKET_ENV))
    .option('--broker <host:port>', 'the broker on TCP instead (vspc --broker-listen)')
    .option('--mode <mode>', 'lock: readwrite, readonly, exclusive, excl_write, readonly_ok', 'readwrite')
    .option('--force', 'take the lock over from whoever holds it (they are told and disconnected)')
    .option('--user <name>', 'name shown to other users of this console', userInfo().username)
    .option('--names', 'print the console names, one per line (scripts, shell completion)')
    .option('--json', 'print the list as JSON')
    .action(async (name: string | undefined, opts: ConsoleCommandOptions) => {
      const mode = parseLockMode(String(opts.mode));
      if (!mode) throw new ConfigError(`--mode: "${String(opts.mode)}" is not one of readwrite, readonly, exclusive, excl_write, readonly_ok`, { field: '--mode' });
      const target = brokerTarget(opts);
      const io: ConsoleIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr };
      let chosen = name;
      if (opts.names || opts.json || chosen === undefined) {
        const entries = await fetchConsoleList(target, opts.names || opts.json ? (name ?? '') : '');
        if (opts.json) return out(JSON.stringify(entries, null, 2) + '\n');
        if (opts.names) return out(entries.map((e) => (e.address !== null ? `${e.address}\n` : '')).join(''));
        if (entries.length === 0) return out('No consoles.\n');
        if (!(process.stdin.isTTY && process.stdout.isTTY)) return out(formatConsoleTable(entries));
        out(formatConsoleMenu(entries));
        const answer = await pick(entries, io);
        if (answer === null) return;
        chosen = answer;
      }
      process.exitCode = await runConsole(
        { mode, force: !!opts.force, user: String(opts.user ?? ''), escape: 0x1d, timeoutMs: 10_000 },
        { ...target, select: chosen },
        io,
      );
    });
}
