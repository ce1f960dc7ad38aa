/**
 * Prometheus metrics, served by the admin API at `GET /metrics` in the text
 * exposition format (version 0.0.4), written by hand: a dozen series do not need a
 * client library. Gauges are read from the registry and the coordinator at scrape
 * time; the few events nothing else counts are counted here through small hooks
 * (`protocolError`, `slowClientDropped`, `peerCutOff`), which the transports call.
 */
import type { Registry } from '../domain/registry.js';
import type { GuardRefusal } from './request-guard.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import type { VmotionCoordinator } from '../domain/vmotion.js';
import type { TunnelView } from './views.js';

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * `reason` values of vspc_vm_connections_refused_total, always exposed (0 until they
 * happen): the VM-side defences of docs/security.md. The ESXi listener's
 * VmRefusalReason (src/sources/esxi/listener.ts) names the same set; a test keeps them equal.
 */
export const VM_REFUSAL_LABELS = ['not-allowed', 'address-limit', 'unidentified-limit', 'evicted', 'registration-rate', 'live-vm'] as const;

/** `result` values of vspc_vm_supersedes_total (the ESXi session's TakeoverResult). */
export const TAKEOVER_LABELS = ['same-address', 'no-probe', 'unanswered', 'closed', 'refused'] as const;

/**
 * Labels of vspc_peers_cut_off_total, always exposed (0 until they happen): peers
 * disconnected by a resource bound (docs/security.md, "Running out of resources").
 * `not-reading`: the peer's queue passed its bound (VSPC_PEER_NOT_READING,
 * VSPC_SOURCE_NOT_READING); `too-many-requests`: a console client's WHO budget
 * (VSPC_PEER_TOO_MANY_REQUESTS).
 */
export const PEER_CUT_OFF_LABELS = [
  { side: 'vm', reason: 'not-reading' },
  { side: 'client', reason: 'not-reading' },
  { side: 'broker', reason: 'not-reading' },
  { side: 'source', reason: 'not-reading' },
  { side: 'client', reason: 'too-many-requests' },
] as const;
export type PeerSide = 'vm' | 'client' | 'broker' | 'source';
export type PeerCutOffReason = 'not-reading' | 'too-many-requests';

/** `reason` values of vspc_vm_ports_expired_total. */
export const EXPIRY_LABELS = ['unseen', 'unused'] as const;

/** Event counters of one server. */
export class Metrics {
  /** "side\0kind" → count. */
  private readonly protocolErrors = new Map<string, number>();
  slowClientsDropped = 0;
  /** Consoles that took a name another machine already had (the older keeps it; docs/security.md). */
  nameConflicts = 0;
  /** "side\0reason" → peers disconnected by a resource bound (PEER_CUT_OFF_LABELS). */
  private readonly cutOff = new Map<string, number>(PEER_CUT_OFF_LABELS.map((l) => [`${l.side}\0${l.reason}`, 0]));
  /** The process's descriptor budget (src/runtime/fd-budget.ts), when there is one. */
  fdBudget: { readonly limit: number; readonly inUse: number; readonly refused: number } | null = null;
  /** Console descriptors deferred by the budget, by use (listener, source, log-file). */
  readonly fdDeferred: Record<string, number> = { listener: 0, source: 0, 'log-file': 0 };
  /** Admin API connections closed by its connection cap: an idle one evicted, or the newcomer refused. */
  readonly adminShed = { evicted: 0, refused: 0 };
  adminUnauthorized = 0;
  /** Admin API requests refused by the browser guard (src/admin/request-guard.ts), by rule. */
  readonly adminRefused: Record<GuardRefusal, number> = { host: 0, origin: 0, 'content-type': 0, preflight: 0 };
  readonly reloads = { ok: 0, failed: 0 };
  /** VM-side connections refused or dropped by a defence, by reason (VM_REFUSAL_LABELS; others are added as they come). */
  readonly vmRefusals: Record<string, number> = Object.fromEntries(VM_REFUSAL_LABELS.map((r) => [r, 0]));
  /** Takeovers of a VM serial port that had a connection, by result (TAKEOVER_LABELS). */
  readonly takeovers: Record<string, number> = Object.fromEntries(TAKEOVER_LABELS.map((r) => [r, 0]));
  /** VM serial ports forgotten by expiry, by reason (EXPIRY_LABELS). */
  readonly expiries: Record<string, number> = Object.fromEntries(EXPIRY_LABELS.map((r) => [r, 0]));
  /** Bytes of VM serial ports since forgotten or expired, so the totals never go down. */
  private retiredFromVm = 0;
  private retiredToVm = 0;

  constructor(registry?: Registry) {
    registry?.on('removed', (hub) => {
      this.retiredFromVm += hub.bytesFromVm;
      this.retiredToVm += hub.bytesToVm;
    });
  }

  /** A peer broke the protocol (or never spoke it) and was disconnected. `kind` is the error code. */
  protocolError(side: 'vm' | 'client', kind: string): void {
    const k = `${side}\0${kind}`;
    this.protocolErrors.set(k, (this.protocolErrors.get(k) ?? 0) + 1);
  }

  /** A VM-side connection was refused or dropped by a defence (listener, registration quota, liveness probe). */
  vmRefused(reason: string): void {
    this.vmRefusals[reason] = (this.vmRefusals[reason] ?? 0) + 1;
  }

  /** A takeover of a VM serial port ended so; `refused` also counts as a refusal (`live-vm`). */
  takeover(result: string): void {
    this.takeovers[result] = (this.takeovers[result] ?? 0) + 1;
    if (result === 'refused') this.vmRefused('live-vm');
  }

  /** A VM serial port was forgotten by expiry: `unseen` (--expire-after) or `unused` (--expire-unused-after). */
  expired(reason: string): void {
    this.expiries[reason] = (this.expiries[reason] ?? 0) + 1;
  }

  /** A console client was disconnected for not reading what vspc sent it (output, notices or replies). */
  slowClientDropped(): void {
    this.slowClientsDropped++;
    this.peerCutOff('client', 'not-reading');
  }

  /** A peer was disconnected by a resource bound: its queue (`not-reading`) or a request budget. */
  peerCutOff(side: PeerSide, reason: PeerCutOffReason): void {
    const k = `${side}\0${reason}`;
    this.cutOff.set(k, (this.cutOff.get(k) ?? 0) + 1);
  }

  peerCutOffCounts(): Array<{ side: string; reason: string; count: number }> {
    return [...this.cutOff].map(([k, count]) => {
      const [side, reason] = k.split('\0');
      return { side, reason, count };
    });
  }

  protocolErrorCounts(): Array<{ side: string; kind: string; count: number }> {
    return [...this.protocolErrors].map(([k, count]) => {
      const [side, kind] = k.split('\0');
      return { side, kind, count };
    });
  }

  bytesTotals(hubs: readonly ConsoleHub[]): { fromVm: number; toVm: number } {
    let fromVm = this.retiredFromVm;
    let toVm = this.retiredToVm;
    for (const h of hubs) {
      fromVm += h.bytesFromVm;
      toVm += h.bytesToVm;
    }
    return { fromVm, toVm };
  }
}

export interface MetricsInput {
  metrics: Metrics;
  hubs: readonly ConsoleHub[];
  vmotion: VmotionCoordinator;
  version: string;
  uptimeSeconds: number;
  /** Open VM-side TCP connections, identified or not. */
  vmConnections: number;
  /**
   * VM-side connections dropped at accept (status JSON). Not rendered: the metric is
   * labelled by reason from `metrics.vmRefusals`. Optional for callers built before.
   */
  vmConnectionsRefused?: number;
  /** The SSH front door's counters; null or absent when it is off. */
  ssh?: SshMetricsSnapshot | null;
  /** Serial tunnels (config file `tunnels:`); absent: no tunnel families. */
  tunnels?: readonly TunnelView[];
}

/** What the SSH front door (src/access/ssh/listener.ts) counts, for /metrics. */
export interface SshMetricsSnapshot {
  /** Authenticated SSH connections and, of their sessions, those attached to a console, by user. */
  sessionsByUser: ReadonlyArray<{ user: string; connections: number; attached: number }>;
  auth: { accepted: number; rejected: number };
  /** Connections dropped at accept, by reason. */
  refused: Readonly<Record<string, number>>;
  /** Requests refused outright (forwarding, X11, SFTP...), by kind. */
  requests: Readonly<Record<string, number>>;
  /** Sessions ended by vspc (time limit, withdrawn, too slow, keepalive, shutdown), by reason. */
  ended: Readonly<Record<string, number>>;
  keysCommand: Readonly<Record<string, number>>;
  /** Connections not logged in yet. */
  unauthenticated: number;
}

function sshFamilies(ssh: SshMetricsSnapshot): string[] {
  const byKey = (o: Readonly<Record<string, number>>, label: string) => Object.entries(o).map(([k, n]) => [{ [label]: k }, n] as Sample);
  return [
    family(
      'vspc_ssh_connections',
      'gauge',
      'Authenticated SSH connections, by user (the name their key gives).',
      ssh.sessionsByUser.map((u) => [{ user: u.user }, u.connections] as Sample),
    ),
    family(
      'vspc_ssh_attached',
      'gauge',
      'SSH sessions attached to a console, by user.',
      ssh.sessionsByUser.map((u) => [{ user: u.user }, u.attached] as Sample),
    ),
    family('vspc_ssh_unauthenticated', 'gauge', 'SSH connections not logged in yet.', ssh.unauthenticated),
    family('vspc_ssh_auth_total', 'counter', 'SSH logins accepted, and authentication attempts rejected.', [
      [{ result: 'accepted' }, ssh.auth.accepted],
      [{ result: 'rejected' }, ssh.auth.rejected],
    ]),
    family('vspc_ssh_connections_refused_total', 'counter', 'SSH connections dropped at accept, by reason (rate-limited, too-many-unauthenticated, shutting-down, fd-budget), or refused once their key was known (key-connections).', byKey(ssh.refused, 'reason')),
    family('vspc_ssh_requests_refused_total', 'counter', 'SSH requests refused outright, by kind (port-forwarding, other, sessions-per-connection).', byKey(ssh.requests, 'request')),
    family('vspc_ssh_sessions_ended_total', 'counter', 'SSH sessions ended by vspc, by reason (time-limit, withdrawn, too-slow, too-many-requests, keepalive, shutdown).', byKey(ssh.ended, 'reason')),
    family('vspc_ssh_keys_command_total', 'counter', 'Runs of the SSH keys command, by outcome (allowed, denied, failed, busy).', byKey(ssh.keysCommand, 'outcome')),
  ];
}

type Sample = [labels: Record<string, string>, value: number];

/** Escapes a label value: backslash, double quote and newline. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function family(name: string, type: 'gauge' | 'counter', help: string, samples: Sample[] | number): string {
  const rows = typeof samples === 'number' ? [[{}, samples] as Sample] : samples;
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of rows) {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
      .join(',');
    lines.push(`${name}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? value : 0}`);
  }
  return lines.join('\n');
}

/** The access methods always exposed in vspc_clients_by_method (others as they come, e.g. ssh). */
export const CLIENT_METHOD_LABELS = ['telnet', 'telnets', 'raw', 'unix', 'pty'] as const;

function clientsByMethod(hubs: readonly ConsoleHub[]): Sample[] {
  const n: Record<string, number> = Object.fromEntries(CLIENT_METHOD_LABELS.map((m) => [m, 0]));
  for (const h of hubs) {
    for (const c of h.clients) {
      const m = c.method ?? ((c as { secure?: boolean }).secure ? 'telnets' : 'telnet');
      n[m] = (n[m] ?? 0) + 1;
    }
  }
  return Object.entries(n).map(([method, count]) => [{ method }, count] as Sample);
}

/** Consoles counted by (kind, state), a maintained source's endpoint state when it is not connected. */
function consoleStates(hubs: readonly ConsoleHub[]): Sample[] {
  const counts = new Map<string, number>();
  for (const h of hubs) {
    const state = h.displayState;
    const k = `${h.identity.kind}\0${state}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].sort().map(([k, n]) => {
    const [kind, state] = k.split('\0');
    return [{ kind, state }, n] as Sample;
  });
}

function endpointReconnects(hubs: readonly ConsoleHub[]): Sample[] {
  const byKind = new Map<string, number>();
  for (const h of hubs) if (h.endpoint) byKind.set(h.identity.kind, (byKind.get(h.identity.kind) ?? 0) + h.endpoint.reconnects);
  return [...byKind].sort().map(([kind, n]) => [{ kind }, n] as Sample);
}

/** The whole exposition, one family per metric, ending in a newline. */
export function renderMetrics(i: MetricsInput): string {
  const hubs = i.hubs;
  const bytes = i.metrics.bytesTotals(hubs);
  const outcomes = Object.entries(i.vmotion.counters).filter(([k]) => k !== 'begun');
  const families = [
    family('vspc_build_info', 'gauge', 'vspc version (always 1).', [[{ version: i.version }, 1]]),
    family('vspc_uptime_seconds', 'gauge', 'Seconds since vspc started.', i.uptimeSeconds),
    family('vspc_vm_ports', 'gauge', 'VM serial ports known (records in the database).', hubs.length),
    family('vspc_vm_ports_connected', 'gauge', 'VM serial ports with a VM connection attached.', hubs.filter((h) => h.source !== null).length),
    family(
      'vspc_vm_ports_listen_errors',
      'gauge',
      'VM serial ports with a client endpoint that cannot be set up (telnet or telnets port, raw port, unix socket, pty); retried.',
      hubs.filter((h) => h.listenError || h.tlsListenError || h.accessErrors.size > 0).length,
    ),
    family(
      'vspc_consoles',
      'gauge',
      'Consoles by kind (esxi, config, proxmox, libvirt, glob, tunnel) and state (connected, disconnected, migrating; waiting, listening, stopped for sources vspc maintains).',
      consoleStates(hubs),
    ),
    family(
      'vspc_endpoint_reconnects_total',
      'counter',
      'Connections lost or attempts failed by sources vspc maintains (declared and discovered consoles), by kind.',
      endpointReconnects(hubs),
    ),
    family('vspc_vm_connections', 'gauge', 'Open VM-side TCP connections, including ones not identified yet.', i.vmConnections),
    family(
      'vspc_vm_connections_refused_total',
      'counter',
      'VM-side connections refused or dropped by a defence, by reason (not-allowed, address-limit, unidentified-limit, evicted, registration-rate, live-vm).',
      Object.entries(i.metrics.vmRefusals).map(([reason, n]) => [{ reason }, n] as Sample),
    ),
    family(
      'vspc_vm_supersedes_total',
      'counter',
      'Connections that claimed a VM serial port which had a connection, by result (same-address, no-probe, unanswered, closed, refused).',
      Object.entries(i.metrics.takeovers).map(([result, n]) => [{ result }, n] as Sample),
    ),
    family(
      'vspc_vm_ports_expired_total',
      'counter',
      'VM serial ports forgotten by expiry, by reason (unseen: --expire-after; unused: --expire-unused-after).',
      Object.entries(i.metrics.expiries).map(([reason, n]) => [{ reason }, n] as Sample),
    ),
    family('vspc_clients', 'gauge', 'Console clients attached, all VM serial ports.', hubs.reduce((n, h) => n + h.clients.size, 0)),
    family('vspc_clients_by_method', 'gauge', 'Console clients attached, by access method (telnet, telnets, raw, unix, pty; others as they attach: ssh, tunnel for the link of a serial tunnel).', clientsByMethod(hubs)),
    family('vspc_bytes_from_vm_total', 'counter', 'Serial output bytes received from VMs.', bytes.fromVm),
    family('vspc_bytes_to_vm_total', 'counter', 'Client input bytes sent to VMs.', bytes.toVm),
    family('vspc_vmotions_begun_total', 'counter', 'vMotions begun (VMOTION-BEGIN answered with GOAHEAD).', i.vmotion.counters.begun),
    family(
      'vspc_vmotions_total',
      'counter',
      'vMotions ended or refused, by outcome (completed, aborted, timed-out, replaced, refused, bad-peer).',
      outcomes.map(([outcome, n]) => [{ outcome }, n] as Sample),
    ),
    family('vspc_vmotions_pending', 'gauge', 'vMotions under way.', i.vmotion.pending),
    family(
      'vspc_protocol_errors_total',
      'counter',
      'Connections closed for a protocol error, by side (vm, client) and kind (error code).',
      i.metrics.protocolErrorCounts().map(({ side, kind, count }) => [{ side, kind }, count] as Sample),
    ),
    family('vspc_clients_dropped_slow_total', 'counter', 'Console clients disconnected because they did not read their output (or replies).', i.metrics.slowClientsDropped),
    family(
      'vspc_console_name_conflicts_total',
      'counter',
      'Consoles that took a name another console already had: the older keeps the name, the newer is NAME~N (by-name log link, console broker).',
      i.metrics.nameConflicts,
    ),
    family(
      'vspc_peers_cut_off_total',
      'counter',
      'Peers disconnected by a resource bound, by side (vm, client, broker, source) and reason (not-reading: its queue passed the bound; too-many-requests: a request budget).',
      i.metrics.peerCutOffCounts().map(({ side, reason, count }) => [{ side, reason }, count] as Sample),
    ),
    ...(i.metrics.fdBudget && Number.isFinite(i.metrics.fdBudget.limit)
      ? [
          family('vspc_fd_limit', 'gauge', 'The soft limit on open file descriptors (RLIMIT_NOFILE).', i.metrics.fdBudget.limit),
          family('vspc_fd_in_use', 'gauge', 'File descriptors in use, as the descriptor budget counts them.', i.metrics.fdBudget.inUse),
          family(
            'vspc_fd_budget_refused_total',
            'counter',
            'Connections refused at accept because the descriptor budget was spent (the reserve is kept for the admin API).',
            i.metrics.fdBudget.refused,
          ),
          family(
            'vspc_fd_budget_deferred_total',
            'counter',
            'Descriptors vspc wanted to open for a console but deferred because the budget was spent, by use (listener, source, log-file); each is retried.',
            Object.entries(i.metrics.fdDeferred).map(([use, n]) => [{ use }, n] as Sample),
          ),
        ]
      : []),
    family('vspc_admin_connections_shed_total', 'counter', 'Admin API connections closed by its connection cap: an idle one evicted for a newcomer, or the newcomer refused when all were busy.', [
      [{ outcome: 'evicted' }, i.metrics.adminShed.evicted],
      [{ outcome: 'refused' }, i.metrics.adminShed.refused],
    ]),
    family('vspc_config_reloads_total', 'counter', 'Configuration reloads (SIGHUP, vspc-admin reload), by result.', [
      [{ result: 'ok' }, i.metrics.reloads.ok],
      [{ result: 'failed' }, i.metrics.reloads.failed],
    ]),
    family('vspc_admin_unauthorized_total', 'counter', 'Admin API requests refused for want of a valid token.', i.metrics.adminUnauthorized),
    family(
      'vspc_admin_refused_total',
      'counter',
      'Admin API requests refused as browser-borne (foreign Host, cross-origin, simple-request mutation, preflight), by reason.',
      (Object.entries(i.metrics.adminRefused) as Array<[string, number]>).map(([reason, n]) => [{ reason }, n] as [Record<string, string>, number]),
    ),
    ...(i.ssh ? sshFamilies(i.ssh) : []),
    ...tunnelFamilies(i.tunnels ?? []),
  ];
  return families.join('\n') + '\n';
}

/** Per tunnel (label `tunnel`): link state, RTT, retransmissions, streams, bytes, line damage. */
function tunnelFamilies(tunnels: readonly TunnelView[]): string[] {
  if (tunnels.length === 0) return [];
  const per = (f: (t: TunnelView, link: NonNullable<TunnelView['link']>) => number | null): Sample[] =>
    tunnels.flatMap((t) => {
      const v = t.link ? f(t, t.link) : null;
      return v === null ? [] : [[{ tunnel: t.name }, v] as Sample];
    });
  return [
    family('vspc_tunnel_link_up', 'gauge', 'Serial tunnels whose link to the guest agent is up (1), or not: no console, handshaking, down (0).', tunnels.map((t) => [{ tunnel: t.name }, t.link?.state === 'up' ? 1 : 0] as Sample)),
    family('vspc_tunnel_rtt_seconds', 'gauge', 'Smoothed round-trip time of a serial tunnel link.', per((_, l) => (l.rttMs === null ? null : l.rttMs / 1000))),
    family('vspc_tunnel_retransmits_total', 'counter', 'Frames a serial tunnel sent again (lost or damaged on the line).', per((_, l) => l.retransmits)),
    family('vspc_tunnel_streams', 'gauge', 'Streams open through a serial tunnel.', per((_, l) => l.streams)),
    family('vspc_tunnel_streams_opened_total', 'counter', 'Streams opened through a serial tunnel (one per client connection).', per((_, l) => l.streamsOpened)),
    family('vspc_tunnel_streams_failed_total', 'counter', 'Streams of a serial tunnel that failed, by how (refused by the guest, reset).', [
      ...per((_, l) => l.streamsRefused).map(([lb, v]) => [{ ...lb, how: 'refused' }, v] as Sample),
      ...per((_, l) => l.streamsReset).map(([lb, v]) => [{ ...lb, how: 'reset' }, v] as Sample),
    ]),
    family('vspc_tunnel_bytes_total', 'counter', 'Stream payload bytes through a serial tunnel, by direction (to_guest, from_guest).', [
      ...per((_, l) => l.bytesToGuest).map(([lb, v]) => [{ ...lb, direction: 'to_guest' }, v] as Sample),
      ...per((_, l) => l.bytesFromGuest).map(([lb, v]) => [{ ...lb, direction: 'from_guest' }, v] as Sample),
    ]),
    family('vspc_tunnel_line_bytes_total', 'counter', 'Bytes on the serial line of a tunnel, framing included, by direction (out, in).', [
      ...per((_, l) => l.lineBytesOut).map(([lb, v]) => [{ ...lb, direction: 'out' }, v] as Sample),
      ...per((_, l) => l.lineBytesIn).map(([lb, v]) => [{ ...lb, direction: 'in' }, v] as Sample),
    ]),
    family('vspc_tunnel_bad_frames_total', 'counter', 'Damaged frames (bad CRC or COBS, truncated, over-long) a serial tunnel discarded.', per((_, l) => l.badFrames)),
    family('vspc_tunnel_agent_restarts_total', 'counter', 'Guest agent restarts (new boot id) a serial tunnel saw; each resets its streams.', per((_, l) => l.peerRestarts)),
    family('vspc_tunnel_link_downs_total', 'counter', 'Times a serial tunnel link was declared down (the guest agent stopped answering).', per((_, l) => l.linkDowns)),
  ];
}
