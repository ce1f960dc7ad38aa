#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { parseHostPort } from '../config.js';
import { VspcError } from '../errors.js';
import type { PortView } from '../admin/views.js';
import { VERSION } from '../version.js';
import { AdminClient } from './admin-client.js';
import { formatTable } from './table.js';
import { addConnectCommand } from './connect.js';

/** `key: value` lines; nested objects (vMotion counters) as `key: a=1 b=2`. */
function formatStatus(s: Record<string, unknown>): string {
  const value = (v: unknown) =>
    v !== null && typeof v === 'object'
      ? Object.entries(v as Record<string, unknown>)
          .map(([k, x]) => `${k}=${String(x)}`)
          .join(' ')
      : String(v);
  return Object.entries(s).map(([k, v]) => `${k}: ${value(v)}`).join('\n') + '\n';
}

function client(program: Command): AdminClient {
  const o = program.opts<{ admin: string }>();
  return new AdminClient(parseHostPort('--admin', o.admin, '127.0.0.1'));
}

export function buildAdminProgram(out: (s: string) => void): Command {
  const program = new Command('vspc-admin')
    .description('Administer a running vspc through its admin API.')
    .version(VERSION, '-V, --version')
    .option('--admin <host:port>', 'address of the vspc admin API', '127.0.0.1:13371');

  program
    .command('list')
    .description('list VM serial ports, their client ports and who is connected')
    .option('--json', 'print a JSON array instead of a table')
    .action(async (opts: { json?: boolean }) => {
      const ports = await client(program).get<PortView[]>('/api/v1/ports');
      if (opts.json) {
        out(JSON.stringify(ports, null, 2) + '\n');
        return;
      }
      if (ports.length === 0) {
        out('No VM serial ports known yet. Point an ESXi VM serial port at this concentrator (see README).\n');
        return;
      }
      out(
        formatTable(
          ['PORT', 'TLS', 'NAME', 'LABEL', 'STATE', 'CLIENTS', 'PEER', 'UUID'],
          ports.map((p) => [
            String(p.port) + (p.listenError ? '!' : ''),
            p.tlsPort === null ? '-' : String(p.tlsPort),
            p.name ?? '?',
            p.label || '-',
            p.state,
            String(p.clients),
            p.peer ?? '-',
            p.uuid,
          ]),
        ),
      );
      const broken = ports.filter((p) => p.listenError);
      for (const p of broken) out(`! port ${p.port}: ${p.listenError}\n`);
    });

  program
    .command('status')
    .description('version, uptime and counts')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const s = await client(program).get<Record<string, unknown>>('/api/v1/status');
      if (opts.json) out(JSON.stringify(s, null, 2) + '\n');
      else out(formatStatus(s));
    });

  program
    .command('forget')
    .description('forget a VM serial port: drop its mapping, free its port, close its clients')
    .argument('<vm>', 'VM name, UUID (any case, with or without separators), port, or NAME:LABEL')
    .action(async (vm: string) => {
      const p = await client(program).post<PortView>(`/api/v1/forget?vm=${encodeURIComponent(vm)}`);
      out(`forgot ${p.name ?? p.uuid}${p.label ? `:${p.label}` : ''} (port ${p.port} is free again)\n`);
    });

  addConnectCommand(
    program,
    () => client(program),
    () => parseHostPort('--admin', program.opts<{ admin: string }>().admin, '127.0.0.1').host,
  );

  return program;
}

async function main(): Promise<void> {
  const program = buildAdminProgram((s) => process.stdout.write(s)).exitOverride();
  try {
    await program.parseAsync(process.argv);
    // `connect` leaves stdin and sockets behind; an explicit exit ends it (stdout is synchronous on Linux).
    process.exit(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    const code = err instanceof VspcError ? err.code : 'ERROR';
    process.stderr.write(`vspc-admin: ${(err as Error).message}\n`);
    process.exit(code === 'VSPC_CONFIG_INVALID' ? 2 : 1);
  }
}

await main();
