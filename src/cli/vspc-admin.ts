#!/usr/bin/env node
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option as CliOption } from 'commander';
import { parseHostPort, type HostPort } from '../config/config.js';
import { ConfigError, VspcError } from '../errors.js';
import type { ReloadReport } from '../config/reload.js';
import { CONSOLE_STATES, MAX_KICK_REASON, type AccessView, type ClientView, type ClusterStatusView, type EndpointView, type PortView, type TunnelView, type VmDetailView } from '../admin/views.js';
import { VERSION } from '../version.js';
import { AdminClient } from './admin-client.js';
import { neutralizeTerminalStrings } from '../util/text.js';
import { formatTable } from './table.js';
import { addConnectCommand } from './connect.js';
import { addTunnelCommand } from './tunnel.js';
import { tunnelRows, tunnelTable } from './tunnel-views.js';
import { completionScript, consoleCandidates, CONSOLES_COMMAND, SHELLS, type Shell } from './completion.js';
import { addConsoleCommand } from './console.js';
import { helpEpilogue, VSPC_ADMIN_MANUAL } from './help-text.js';
import { sanitizeText } from '../util/text.js';

/** The `ssh` part of `status`: listen address, sessions, one line per host key (fingerprints to compare with what ssh shows). */
function formatSshStatus(ssh: unknown): string {
  if (!ssh || typeof ssh !== 'object') return 'ssh: off\n';
  const v = ssh as { listen?: string; connections?: number; attached?: number; hostKeys?: Array<{ type: string; fingerprint: string }> };
  let text = `ssh: ${v.listen ?? '?'} connections=${v.connections ?? 0} attached=${v.attached ?? 0}\n`;
  for (const k of v.hostKeys ?? []) text += `ssh host key: ${k.type} ${k.fingerprint}\n`;
  return text;
}

/** `key: value` lines; nested objects (vMotion counters) as `key: a=1 b=2`. */
function formatStatus(s: Record<string, unknown>): string {
  const { ssh, cluster, ...rest } = s;
  return formatPlainStatus(rest) + ('ssh' in s ? formatSshStatus(ssh) : '') + (cluster ? formatClusterStatus(cluster as ClusterStatusView) : '');
}

/** The cluster part of `status`: this node, then every node the database knows (ids and addresses come from the database: sanitised). */
function formatClusterStatus(c: ClusterStatusView, now = Date.now()): string {
  let text = `cluster: node ${sanitizeText(String(c.node))}\n`;
  if (!c.nodes) return text + `  nodes: unknown (${sanitizeText(String(c.error ?? 'no answer'))})\n`;
  const heard = (iso: string | null) => (iso ? since(iso, now) : '-');
  text += formatTable(
    ['NODE', 'STATE', 'LINK', 'LAST HEARTBEAT'],
    c.nodes.map((n) => [sanitizeText(n.node) + (n.node === c.node ? ' (this)' : ''), n.live ? 'live' : 'gone', n.link ? sanitizeText(n.link) : '- (no --cluster-listen)', heard(n.heartbeatAt)]),
  ).replace(/^(?=.)/gm, '  ');
  return text;
}

function formatPlainStatus(s: Record<string, unknown>): string {
  const value = (v: unknown) =>
    v !== null && typeof v === 'object'
      ? Object.entries(v as Record<string, unknown>)
          .map(([k, x]) => `${k}=${String(x)}`)
          .join(' ')
      : String(v);
  return Object.entries(s).map(([k, v]) => `${k}: ${value(v)}`).join('\n') + '\n';
}

/** "2026-11-21T13:01:04Z (3m ago)". */
function since(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  const ago = s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : s < 86400 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`;
  return `${iso.replace(/\.\d{3}Z$/, 'Z')} (${ago} ago)`;
}

/** A client as people know it: `user@address:port` when it gave a user name (VSPC-CONTROL), else its address. */
function clientWho(c: { peer: string; user?: string | null; method?: string; keyFingerprint?: string | null }): string {
  const who = c.user ? `${c.user}@${c.peer}` : c.peer;
  // An SSH client with the key its user logged in with (the method is in `who`'s VIA column).
  return c.keyFingerprint ? `${who} (key ${c.keyFingerprint})` : who;
}

function vmName(p: { name: string | null; key: string; label: string }): string {
  return `${p.name ?? p.key}${p.label ? `:${p.label}` : ''}`;
}

/** `show` rows for a maintained source's endpoint: spec, its state, last error, reconnects. */
function endpointRows(e: EndpointView | null): Array<[string, string]> {
  if (!e) return [];
  const rows: Array<[string, string]> = [
    ['source', e.spec],
    ['endpoint', `${e.state} since ${since(e.since)}${e.nextAttemptAt ? `, next attempt in ${Math.max(0, Math.round((Date.parse(e.nextAttemptAt) - Date.now()) / 1000))}s` : ''}${e.note ? ` (${e.note})` : ''}`],
    // Failed attempts and lost connections together: the count of times the endpoint was not there.
    ['failures', `${e.reconnects} of ${e.attempts} attempts${e.refusedPeers ? `, ${e.refusedPeers} peers refused` : ''}`],
  ];
  if (e.lastError) rows.push(['last error', e.lastError]);
  return rows;
}

/** `show` rows for a console's endpoints, one per access method that is on. */
function accessRows(a: AccessView | undefined): Array<[string, string]> {
  if (!a) return [];
  const state = (listening: boolean, error: string | null) => (listening ? '' : `  ! ${error ?? 'not set up yet'}`);
  const rows: Array<[string, string]> = [];
  if (a.telnet) rows.push(['telnet', `${a.telnet.host ? `${a.telnet.host}:` : ''}${a.telnet.port}${state(a.telnet.listening, a.telnet.error)}`]);
  else rows.push(['telnet', 'off']);
  if (a.telnets) rows.push(['telnets', `${a.telnets.host}:${a.telnets.port}${state(a.telnets.listening, a.telnets.error)}`]);
  if (a.raw) rows.push(['raw', `${a.raw.host}:${a.raw.port}${state(a.raw.listening, a.raw.error)}`]);
  if (a.unix) {
    const who = `${a.unix.owner}:${a.unix.group ?? '-'} ${a.unix.mode}, ${a.unix.protocol}`;
    rows.push(['unix socket', `${a.unix.path} (${who})${state(a.unix.listening, a.unix.error)}`]);
  }
  if (a.pty) {
    const dev = a.pty.device ? ` -> ${a.pty.device}` : '';
    const reader = a.pty.readerAttached ? ', open by a reader' : '';
    rows.push(['pty', `${a.pty.link}${dev} (${a.pty.group ?? '-'} ${a.pty.mode}${reader})${state(a.pty.device !== null && a.pty.error === null, a.pty.error)}`]);
  }
  return rows;
}

/** `list` totals: "12 consoles: 10 connected, 1 disconnected, 1 migrating; 3 clients". */
function totals(ports: readonly PortView[]): string {
  const byState = new Map<string, number>();
  for (const p of ports) byState.set(p.state, (byState.get(p.state) ?? 0) + 1);
  const order = [...CONSOLE_STATES, ...[...byState.keys()].filter((s) => !(CONSOLE_STATES as readonly string[]).includes(s))];
  const states = order.filter((s) => byState.has(s)).map((s) => `${byState.get(s)} ${s}`);
  const clients = ports.reduce((n, p) => n + p.clients, 0);
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  return `${plural(ports.length, 'console')}: ${states.join(', ')}; ${plural(clients, 'client')}\n`;
}

/** `--state a,b`: each one a state `list` shows, else a usage error naming the option. */
function parseStates(text: string): string {
  const states = text.split(',').map((s) => s.trim().toLowerCase());
  const bad = states.find((s) => !(CONSOLE_STATES as readonly string[]).includes(s));
  if (bad !== undefined) throw new InvalidArgumentError(`"${bad}" is not a state; use one or more of ${CONSOLE_STATES.join(', ')} (comma-separated).`);
  return states.join(',');
}

/** set-port's `<port>`: a whole number 1-65535, else a usage error (exit 2) naming the argument. */
function parsePortArgument(text: string): string {
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t) || Number(t) < 1 || Number(t) > 65535) throw new InvalidArgumentError(`"${text}" is not a port number; give a TCP port, 1-65535.`);
  return String(Number(t));
}

/** `--reason TEXT`: one line for the kicked clients and the audit log. */
function parseReason(text: string): string {
  const t = text.trim();
  if (t === '' || t.length > MAX_KICK_REASON) throw new InvalidArgumentError(`give a reason of 1-${MAX_KICK_REASON} characters (got ${t.length}).`);
  return t;
}

function readSecretFile(field: string, path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { field });
  }
}

interface GlobalOptions {
  admin: string;
  adminTls?: boolean;
  adminCa?: string;
  token?: string;
  tokenFile?: string;
}

/** `--admin` as host and port, and whether to speak HTTPS (https:// URL, --admin-tls, --admin-ca). */
export function adminAddress(program: Command): { addr: HostPort; tls: boolean } {
  const o = program.opts<GlobalOptions>();
  let address = o.admin;
  let tls = !!o.adminTls || o.adminCa !== undefined;
  const url = /^(https?):\/\/([^/]*)\/?$/i.exec(address);
  if (url) {
    tls ||= url[1].toLowerCase() === 'https';
    address = url[2];
  }
  return { addr: parseHostPort('--admin', address, '127.0.0.1'), tls };
}

/**
 * The admin API client the global options describe: `--admin` (host:port or an
 * http(s):// URL), `--admin-tls`/`--admin-ca`, and the token from `--token`,
 * `--token-file` or VSPC_ADMIN_TOKEN (in that order). Also used by `connect`.
 */
export function adminClientFrom(program: Command, timeoutMs?: number): AdminClient {
  const o = program.opts<GlobalOptions>();
  const { addr, tls } = adminAddress(program);
  const fromCli = program.getOptionValueSource('token') === 'cli';
  const token = fromCli ? o.token : o.tokenFile !== undefined ? readSecretFile('--token-file', o.tokenFile) : o.token;
  const ca = o.adminCa !== undefined ? Buffer.from(readSecretFile('--admin-ca', o.adminCa)) : undefined;
  return new AdminClient(addr, { token: token || null, tls: tls ? { ca } : null, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
}

export function buildAdminProgram(out: (s: string | Uint8Array) => void): Command {
  const program = new Command('vspc-admin')
    .description('Administer a running vspc through its admin API.')
    .version(VERSION, '-V, --version')
    .addOption(new CliOption('--admin <host:port>', 'address of the vspc admin API (or https://HOST:PORT)').env('VSPC_ADMIN').default('127.0.0.1:13371'))
    .option('--admin-tls', 'speak HTTPS to the admin API (vspc --admin-cert/--admin-key)')
    .option('--admin-ca <file>', "CA certificate (PEM) to trust for the admin API's HTTPS (implies --admin-tls)")
    .addOption(new CliOption('--token <token>', 'admin API token (visible in ps: prefer --token-file or the variable)').env('VSPC_ADMIN_TOKEN'))
    .option('--token-file <file>', 'read the admin API token from this file')
    .addHelpText('after', helpEpilogue(VSPC_ADMIN_MANUAL));
  const client = () => adminClientFrom(program);
  const vmArg = 'VM name (any case), NAME:LABEL, NAME: (its serial port without a label), UUID (any form, :LABEL too), or client port';
  const q = (vm: string) => `vm=${encodeURIComponent(vm)}`;

  program
    .command('list')
    .description('list VM serial ports, their client ports and who is connected')
    .argument('[pattern]', 'only VMs whose name (or NAME:LABEL, or UUID) matches: * and ? wildcards, else a substring; any case')
    .option('--state <states>', `only these states (comma-separated): ${CONSOLE_STATES.join(', ')}`, parseStates)
    .option('--json', 'print a JSON array instead of a table')
    .action(async (pattern: string | undefined, opts: { json?: boolean; state?: string }) => {
      const query = [pattern ? `match=${encodeURIComponent(pattern)}` : '', opts.state ? `state=${encodeURIComponent(opts.state)}` : ''].filter(Boolean).join('&');
      const ports = await client().get<PortView[]>(`/api/v1/ports${query ? `?${query}` : ''}`);
      if (opts.json) {
        out(JSON.stringify(ports, null, 2) + '\n');
        return;
      }
      // Serial tunnels on the consoles listed, or all of them unfiltered (an older vspc has none to tell).
      const tunnels = await client()
        .get<TunnelView[]>('/api/v1/tunnels')
        .catch(() => [] as TunnelView[]);
      if (ports.length === 0) {
        out(
          pattern
            ? `No VM serial port matches "${pattern}"${opts.state ? ` in state ${opts.state}` : ''}.\n`
            : opts.state
              ? `No VM serial port is ${opts.state.split(',').join(' or ')}.\n`
              : 'No consoles yet: point an ESXi VM serial port at this concentrator, declare consoles: in the config file, ' +
                'or let discovery find them (proxmox:, libvirt:, discover:); see README.\n',
        );
        // Tunnels waiting for a console, and why: what someone with an empty list most needs to see.
        if (!pattern && !opts.state && tunnels.length > 0) out('\n' + tunnelTable(tunnels));
        return;
      }
      // A PostgreSQL cluster's list says which node owns each console (a single node's has no such column).
      const cluster = ports.some((p) => typeof p.node === 'string');
      const rows = ports.map((p) => [
        String(p.port) + (p.listenError ? '!' : ''),
        p.tlsPort === null ? '-' : String(p.tlsPort),
        p.kind,
        p.name ?? '?',
        p.label || '-',
        p.state,
        String(p.clients),
        // Where the bytes come from: the endpoint vspc maintains, else the ESXi host's address.
        p.endpoint ?? p.peer ?? '-',
        p.key,
        ...(cluster ? [p.node ?? '-'] : []),
      ]);
      out(formatTable(['PORT', 'TLS', 'KIND', 'NAME', 'LABEL', 'STATE', 'CLIENTS', 'SOURCE', 'KEY', ...(cluster ? ['NODE'] : [])], rows));
      out(totals(ports));
      const broken = ports.filter((p) => p.listenError);
      for (const p of broken) out(`! port ${p.port}: ${p.listenError}\n`);
      const shown = new Set(ports.map(vmName));
      const mine = pattern || opts.state ? tunnels.filter((t) => t.console !== null && shown.has(t.console)) : tunnels;
      if (mine.length > 0) out('\n' + tunnelTable(mine));
    });

  program
    .command('show')
    .description('everything about one VM serial port: identity, ports, connection, clients, UART, vMotions, bytes')
    .argument('<vm>', vmArg)
    .option('--json', 'print JSON')
    .action(async (vm: string, opts: { json?: boolean }) => {
      const d = await client().get<VmDetailView>(`/api/v1/show?${q(vm)}`);
      if (opts.json) {
        out(JSON.stringify(d, null, 2) + '\n');
        return;
      }
      const rows: Array<[string, string]> = [
        ['name', d.name ?? '(not reported yet)'],
        ['kind', d.kind],
        [d.uuid !== null ? 'uuid' : 'key', d.uuid ?? d.key],
        ['label', d.label || '-'],
        ['port', `${d.port}${d.tlsPort !== null ? ` (telnets ${d.tlsPort})` : ''}${d.listenError ? `  ! ${d.listenError}` : ''}`],
        ...accessRows(d.access),
        ['state', d.state],
        ...endpointRows(d.endpointStatus),
        ['peer', d.peer ?? '-'],
        ['connected since', since(d.connectedSince)],
        ['last seen', since(d.lastSeen)],
        ['bytes', `${d.bytesFromVm} from the VM, ${d.bytesToVm} to the VM`],
        ['scrollback', `${d.scrollbackBytes} bytes`],
        ['guest UART', d.uart ? d.uart.summary : 'unknown (not reported over COM-PORT)'],
      ];
      // Older servers have no serialLine; nothing reported: no row.
      if (d.serialLine) {
        rows.push(['serial line', d.serialLine.summary]);
        if (d.serialLine.signature) rows.push(['VM signature', d.serialLine.signature]);
      }
      const s = d.settings;
      const set = [
        s.port !== undefined ? `port ${s.port}` : '',
        s.lockMode ? `lock ${s.lockMode}` : '',
        s.scrollbackBytes !== undefined ? `scrollback ${s.scrollbackBytes}` : '',
        s.log === false ? 'no console log' : '',
      ]
        .filter(Boolean)
        .join(', ');
      if (set) rows.push(['config file', set]);
      if (d.tunnel) rows.push(...tunnelRows(d.tunnel));
      rows.push(['clients', String(d.clientList.length)]);
      const width = Math.max(...rows.map(([k]) => k.length)) + 1;
      let text = `${vmName(d)}\n` + rows.map(([k, v]) => `  ${(k + ':').padEnd(width)} ${v}`).join('\n') + '\n';
      for (const c of d.clientList) text += `    #${c.id}  ${c.method ?? (c.tls ? 'telnets' : 'telnet')}  ${clientWho(c)}  ${c.mode}  since ${since(c.connectedSince)}\n`;
      text += `  ${'vMotions:'.padEnd(width)} ${d.vmotions.length === 0 ? 'none since vspc started' : String(d.vmotions.length)}\n`;
      for (const m of d.vmotions) {
        text += `    ${m.startedAt.replace(/\.\d{3}Z$/, 'Z')}  ${m.outcome} in ${m.durationMs} ms (held ${m.heldBytes} bytes${m.discardedBytes ? `, discarded ${m.discardedBytes}` : ''})\n`;
      }
      out(text);
    });

  program
    .command('who')
    .description('every console client attached, on all VM serial ports')
    .option('--json', 'print a JSON array')
    .action(async (opts: { json?: boolean }) => {
      const clients = await client().get<ClientView[]>('/api/v1/clients');
      if (opts.json) {
        out(JSON.stringify(clients, null, 2) + '\n');
        return;
      }
      if (clients.length === 0) {
        out('No clients attached.\n');
        return;
      }
      out(
        formatTable(
          ['ID', 'VM', 'PORT', 'MODE', 'VIA', 'PEER', 'SINCE'],
          clients.map((c) => [String(c.id), c.vm, String(c.port), c.mode, c.method ?? (c.tls ? 'telnets' : 'telnet'), clientWho(c), since(c.connectedSince)]),
        ),
      );
    });

  program
    .command('kick')
    .description("disconnect a VM serial port's clients (they are told why), or one of them")
    .argument('<vm>', vmArg)
    .option('--client <id>', 'only this client (the ID from vspc-admin who)')
    .option('--reason <text>', 'why: shown to the kicked clients and written to the audit log', parseReason)
    .action(async (vm: string, opts: { client?: string; reason?: string }) => {
      const r = await client().post<{ vm: string; port: number; kicked: ClientView[] }>(
        `/api/v1/kick?${q(vm)}${opts.client !== undefined ? `&client=${encodeURIComponent(opts.client)}` : ''}${
          opts.reason !== undefined ? `&reason=${encodeURIComponent(opts.reason)}` : ''
        }`,
      );
      if (r.kicked.length === 0) out(`${r.vm} (port ${r.port}) has no clients\n`);
      else out(`disconnected from ${r.vm} (port ${r.port}): ${r.kicked.map((c) => `#${c.id} ${clientWho(c)}`).join(', ')}\n`);
    });

  program
    .command('forget')
    .description('forget a VM serial port: drop its mapping, free its port, close its clients')
    .argument('<vm>', vmArg)
    .action(async (vm: string) => {
      const p = await client().post<PortView>(`/api/v1/forget?${q(vm)}`);
      out(`forgot ${vmName(p)} (port ${p.port} is free again)\n`);
    });

  program
    .command('set-port')
    .description('move a VM serial port to another client port (sticky; attached clients stay, new ones use the new port)')
    .argument('<vm>', vmArg)
    .argument('<port>', 'the new client telnet port (may lie outside --port-range); bound before anything changes', parsePortArgument)
    .option('--force', 'allow a privileged port (below 1024)')
    .action(async (vm: string, port: string, opts: { force?: boolean }) => {
      const p = await client()
        .post<PortView & { previousPort: number; note?: string }>(`/api/v1/set-port?${q(vm)}&port=${encodeURIComponent(port)}${opts.force ? '&force=1' : ''}`)
        .catch((err: unknown) => {
          // The API's message names its parameter (force=1); a person at the command line gives --force.
          if (err instanceof VspcError && err.code === 'VSPC_PORT_PRIVILEGED') {
            throw new VspcError(err.code, `port ${port} is a privileged port (below 1024); give --force to use it anyway`, err.context);
          }
          throw err;
        });
      out(p.previousPort === p.port ? `${vmName(p)} is already on port ${p.port}\n` : `moved ${vmName(p)} from port ${p.previousPort} to ${p.port}\n`);
      if (p.note) out(`note: ${p.note}\n`);
    });

  program
    .command('log')
    .description("the end of a VM serial port's console log (vspc --log-dir); --follow for what comes next")
    .argument('<vm>', vmArg)
    .option('--tail <n>', 'number of lines (with --follow: 0 for none)', '50')
    .addOption(new CliOption('-f, --follow', 'after the last lines, print new output as it is logged, until Ctrl-C (or the VM serial port is forgotten, or vspc stops)').conflicts(['file', 'all']))
    .addOption(new CliOption('--file <n>', 'a rotated file instead of the current one: 1 is the newest (NAME.log.1)').conflicts(['all']))
    .addOption(new CliOption('--all', 'every file kept, oldest first, whole (the whole history vspc has)').conflicts(['tail']))
    .option('--raw', "the log's exact bytes even on a terminal (by default a terminal gets them without title/clipboard/device-control strings)")
    .action(async (vm: string, opts: { tail: string; raw?: boolean; follow?: boolean; file?: string; all?: boolean }) => {
      // Console bytes are the VM's: on a terminal, what would act on the terminal itself
      // (OSC/DCS/APC/PM strings, C1 controls) is removed; colours and cursor moves stay.
      const clean = (b: Buffer) => (process.stdout.isTTY && !opts.raw ? neutralizeTerminalStrings(b) : b);
      if (opts.file !== undefined && !/^\d+$/.test(opts.file)) throw new ConfigError(`--file: "${opts.file}" is not a file number (1 is the newest rotated file)`, { field: '--file' });
      if (opts.follow || opts.all) {
        const query = opts.follow ? `follow=1&lines=${encodeURIComponent(opts.tail)}` : 'all=1';
        let last = 0x0a;
        await client().stream(`/api/v1/log?${q(vm)}&${query}&format=raw`, (chunk) => {
          if (chunk.length === 0) return;
          last = chunk[chunk.length - 1];
          out(clean(chunk));
        });
        if (last !== 0x0a && process.stdout.isTTY) out('\n');
        return;
      }
      const file = opts.file !== undefined ? `&file=${encodeURIComponent(opts.file)}` : '';
      let bytes = clean(await client().getBytes(`/api/v1/log?${q(vm)}&lines=${encodeURIComponent(opts.tail)}${file}&format=raw`));
      if (bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a && process.stdout.isTTY) bytes = Buffer.concat([bytes, Buffer.from('\n')]);
      out(bytes);
    });

  program
    .command('rotate-logs')
    .description('rotate the console log of one VM serial port now, or of all of them')
    .argument('[vm]', vmArg)
    .action(async (vm: string | undefined) => {
      const r = await client().post<{ rotated: string }>(`/api/v1/log/rotate${vm ? `?${q(vm)}` : ''}`);
      out(`rotated the console log${r.rotated === 'all' ? 's of all VM serial ports' : ` of ${r.rotated}`}\n`);
    });

  program
    .command('reload')
    .description('re-read the config file (like SIGHUP) and apply what can change without dropping VM connections')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const r = await client().post<ReloadReport>('/api/v1/reload');
      if (opts.json) {
        out(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      let text = `reloaded ${r.file ?? 'the configuration (no config file; flags and token file only)'}\n`;
      text += r.applied.length ? `applied: ${r.applied.join(', ')}\n` : 'nothing to apply\n';
      if (r.restartNeeded.length) text += `changed, but in effect only after a restart: ${r.restartNeeded.join(', ')}\n`;
      out(text);
    });

  program
    .command('status')
    .description('version, uptime and counts; on a cluster node, the nodes of the cluster')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const s = await client().get<Record<string, unknown>>('/api/v1/status');
      if (opts.json) out(JSON.stringify(s, null, 2) + '\n');
      else out(formatStatus(s));
    });

  addConnectCommand(program, client, () => adminAddress(program).addr.host);
  addConsoleCommand(program, (s) => out(s));
  addTunnelCommand(program, (timeoutMs) => adminClientFrom(program, timeoutMs));

  program
    .command('completion')
    .description('print a shell completion script (commands, options, console names from the running vspc)')
    .argument('<shell>', `${SHELLS.join(' or ')}; e.g. source <(vspc-admin completion bash)`, (s: string) => {
      if (!(SHELLS as readonly string[]).includes(s)) throw new InvalidArgumentError(`use ${SHELLS.join(' or ')}.`);
      return s;
    })
    .action((shell: Shell) => out(completionScript(program, shell)));

  // For the completion scripts: console spellings starting with a prefix, one a line.
  // Quick (one call, 1.5 s at most) and silent: a completion never prints an error.
  program
    .command(CONSOLES_COMMAND, { hidden: true })
    .argument('[prefix]', 'what has been typed', '')
    .action(async (prefix: string) => {
      try {
        const ports = await adminClientFrom(program, 1500).get<PortView[]>('/api/v1/ports');
        const found = consoleCandidates(ports, prefix);
        if (found.length) out(found.join('\n') + '\n');
      } catch {
        /* no vspc, no token, an old one: nothing to offer */
      }
    });

  return program;
}

/**
 * Resolves once everything written to `stream` so far has been handed to the OS. A
 * piped stdout is asynchronous: `process.exit()` right after a large write would cut
 * the output at the pipe's buffer size (64 KiB), so every exit path waits here first.
 */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || stream.writableLength === 0) {
      resolve();
      return;
    }
    stream.once('close', () => resolve());
    // Writes complete in order: this callback runs once everything before it is out (or failed).
    stream.write('', () => resolve());
  });
}

/** Exit once stdout and stderr have drained, whatever wrote to them (commands, commander's help). */
async function exit(code: number): Promise<never> {
  await Promise.all([drained(process.stdout), drained(process.stderr)]);
  process.exit(code);
}

async function main(): Promise<void> {
  // A reader that went away (`vspc-admin list | head -1`): stop quietly rather than crash on EPIPE.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? (process.exitCode ?? 0) : 1));
  }
  const program = buildAdminProgram((s) => process.stdout.write(s)).exitOverride();
  // Usage errors and --help of every command end here too (exit code 2 / 0, after draining);
  // commander's own errors (`error: unknown option '--bogus'`) carry the program's name like the others.
  const prefixed = (c: Command): void => {
    c.exitOverride().configureOutput({ outputError: (str, write) => write(`vspc-admin: ${str}`) });
    for (const sub of c.commands) prefixed(sub);
  };
  prefixed(program);
  try {
    await program.parseAsync(process.argv);
    // `connect` leaves stdin and sockets behind; an explicit exit ends it, after the output has drained.
    await exit(Number(process.exitCode ?? 0));
  } catch (err) {
    if (err instanceof CommanderError) await exit(err.exitCode === 0 ? 0 : 2);
    const code = err instanceof VspcError ? err.code : 'ERROR';
    // An error's text may carry a peer's words (a guest agent's refusal, a VM's name):
    // controls never reach the operator's terminal, whatever the server let through.
    const message = (err as Error).message.split('\n').map(sanitizeText).join('\n');
    process.stderr.write(`vspc-admin: ${message}\n`);
    await exit(code === 'VSPC_CONFIG_INVALID' ? 2 : 1);
  }
}

// Run only as the program itself (also through npm's bin link), not when imported (the manual generator builds the program).
if (invokedDirectly()) await main();

function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}
