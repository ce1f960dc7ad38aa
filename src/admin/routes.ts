import type net from 'node:net';
import type { FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../domain/logger.js';
import type { Registry } from '../domain/registry.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import type { VmotionCoordinator } from '../domain/vmotion.js';
import type { ReloadReport } from '../config/reload.js';
import type { ResolvedVmSettings } from '../config/vms.js';
import { ConfigError, VspcError, type VspcErrorCode } from '../errors.js';
import { formatUuid } from '../util/uuid.js';
import { sanitizeText } from '../util/text.js';
import { Glob, GlobBudget, hasWildcards } from '../util/glob.js';
import { AdminApiError, RawBody, StreamBody, type AdminRoute, type AdminUpgradeRoute } from './admin-server.js';
import { MAX_FOLLOWERS, type FollowSink, type LogFollow } from '../logging/console-log.js';
import { METRICS_CONTENT_TYPE, Metrics, renderMetrics, type SshMetricsSnapshot } from './metrics.js';
import { consoleAddresses, resolveVm } from './resolve.js';
import { CONSOLE_STATES, MAX_KICK_REASON, clientViews, endpointView, portView, remotePortView, serialLineView, uartView, type AccessView, type ClusterRecordView, type StatusView, type TunnelView, type VmDetailView } from './views.js';

/** What the admin API reads and acts on; the server passes itself in through this. */
export interface AdminContext {
  registry: Registry;
  /**
   * A PostgreSQL cluster's records with their owners, for the consoles this node holds
   * no hub for (the cluster-wide `list`); absent on a single node.
   */
  clusterRecords?(): ClusterRecordView[];
  vmotion: VmotionCoordinator;
  logger: Logger;
  tlsPortOf(hub: ConsoleHub): number | null;
  status(): StatusView;
  /** Console log files, when `--log-dir` is set (src/logging/console-log.ts). */
  consoleLogs?: {
    /** The last `lines` lines of the VM serial port's current console log. */
    tail(hub: ConsoleHub, lines: number): Promise<string>;
    /** The same as the file's exact bytes. */
    tailBytes(hub: ConsoleHub, lines: number): Promise<Buffer>;
    /** The same of rotated file `file` (1 the newest; 0 the current file). */
    tailFileBytes(hub: ConsoleHub, lines: number, file: number): Promise<Buffer>;
    /** The numbers of the rotated files that exist, ascending. */
    rotatedFiles(hub: ConsoleHub): Promise<number[]>;
    /** Every file, opened, oldest first, in order with the writes. */
    openAll(hub: ConsoleHub): Promise<FileHandle[]>;
    /** The last lines, then everything written, as it is written. */
    follow(hub: ConsoleHub, lines: number, sink: FollowSink): LogFollow;
    /** Readers following a log now. */
    readonly activeFollowers: number;
    /** Rotate one VM's log now, or all of them. */
    rotate(hub?: ConsoleHub): Promise<void>;
  };
  /** Event counters for `GET /metrics`. */
  metrics?: Metrics;
  /** The SSH front door's counters for `GET /metrics`; null when it is off. */
  sshMetrics?(): SshMetricsSnapshot | null;
  /** Re-read the configuration (`POST /api/v1/reload`); throws ConfigError when it is invalid. */
  reload?(): ReloadReport | Promise<ReloadReport>;
  /** vspc's own listener ports, which `set-port` must not hand to a VM. */
  ownPorts?(): number[];
  /** Matching work (glob steps) one `list PATTERN` may spend (default DEFAULT_GLOB_BUDGET, src/util/glob.ts). */
  patternSteps?: number;
  /**
   * `set-port`: bind the console's new client port(s), then `commit` (the registry's
   * move); rejects with VSPC_PORT_BIND_FAILED, changing nothing, when a port cannot be
   * bound. Without it (no client listeners), `commit` alone.
   */
  movePort?(hub: ConsoleHub, port: number, commit: () => void): Promise<void>;
  /** The group that maintains a console's source (`config`, `discovery`), or null (ESXi, stopped discovered ones). */
  managedBy?(hub: ConsoleHub): string | null;
  /** The config file's `vms:` settings for a VM serial port. */
  settingsOf?(hub: ConsoleHub): ResolvedVmSettings;
  /** Serial tunnels (src/access/tunnel/, config file `tunnels:`). */
  tunnels?: {
    list(): TunnelView[];
    /** The tunnel a console carries, if any. */
    of(hub: ConsoleHub): TunnelView | null;
    /**
     * A stream to `port` in the guest of tunnel `name`, resolved once the guest's agent
     * accepted it (its service answered the dial), with what joins it to the caller's
     * socket. Rejects with VspcError VSPC_TUNNEL_NOT_FOUND / _NOT_ATTACHED /
     * _TOO_MANY_STREAMS, or the guest's refusal (VSPC_TUNNEL_OPEN_FAILED) or a reset
     * (VSPC_TUNNEL_STREAM_RESET: no answer in time, the link down).
     */
    open(name: string, port: number, who: string, socket: net.Socket): Promise<(socket: net.Socket, head: Buffer) => void>;
  };
  /** A console's endpoints, by access method (`show`). */
  accessOf?(hub: ConsoleHub): AccessView;
}

export const DEFAULT_LOG_LINES = 50;
export const MAX_LOG_LINES = 10_000;
/** Highest rotated file number `file=` takes. */
export const MAX_LOG_FILE = 100_000;
/** Readers following console logs at once (`follow=1`). */
export const MAX_LOG_FOLLOWERS = MAX_FOLLOWERS;

/** The longest list pattern taken (characters), as the broker's LIST-REQUEST (256 bytes). */
export const MAX_LIST_PATTERN = 256;

/**
 * The list filter: with `*`/`?` wildcards the whole text matches the glob
 * (src/util/glob.ts, any case, as the config file's `vms: - match:`); without, a
 * substring in any case. At most MAX_LIST_PATTERN characters.
 */
function namePattern(pattern: string): Glob {
  if (Array.from(pattern).length > MAX_LIST_PATTERN) {
    throw new AdminApiError(400, 'VSPC_PATTERN_TOO_LONG', `the list pattern has more than ${MAX_LIST_PATTERN} characters`);
  }
  return new Glob(hasWildcards(pattern) ? pattern : `*${pattern}*`, { ignoreCase: true });
}

/**
 * `glob` against each console's display name, UUID and key, spending from one budget
 * for the whole request: a pattern that needs more is refused (400
 * VSPC_PATTERN_TOO_EXPENSIVE), so that no pattern holds the event loop for long.
 */
function filterByPattern(hubs: ConsoleHub[], glob: Glob, steps?: number): ConsoleHub[] {
  const budget = new GlobBudget(steps);
  try {
    return hubs.filter((h) => glob.test(h.displayName, budget) || glob.test(formatUuid(h.identity.key), budget) || glob.test(h.identity.key, budget));
  } catch (err) {
    if (err instanceof VspcError && err.code === 'VSPC_PATTERN_TOO_EXPENSIVE') throw new AdminApiError(400, err.code, err.message);
    throw err;
  }
}

/** The admin API's `settings` (docs/admin-api.md): the config file's spelling, `port` for the fixed TCP port. */
function settingsView(s: ResolvedVmSettings): VmDetailView['settings'] {
  // `access` is shown as the endpoints it made (`access`), not as the layers that made it.
  const { tcpPort, access: _access, ...rest } = s;
  return tcpPort === undefined ? rest : { port: tcpPort, ...rest };
}

/** The codes for a missing / invalid integer parameter, per parameter. */
const PARAM_CODES = {
  client: ['VSPC_CLIENT_REQUIRED', 'VSPC_CLIENT_INVALID'],
  port: ['VSPC_PORT_REQUIRED', 'VSPC_PORT_INVALID'],
  lines: ['VSPC_LINES_REQUIRED', 'VSPC_LINES_INVALID'],
  file: ['VSPC_LOG_FILE_INVALID', 'VSPC_LOG_FILE_INVALID'],
} as const satisfies Record<string, readonly [VspcErrorCode, VspcErrorCode]>;

function intParam(url: URL, name: keyof typeof PARAM_CODES, min: number, max: number, fallback?: number): number {
  const text = url.searchParams.get(name);
  const [required, invalid] = PARAM_CODES[name];
  if (text === null || text === '') {
    if (fallback !== undefined) return fallback;
    throw new AdminApiError(400, required, `give ${name}`);
  }
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new AdminApiError(400, invalid, `${name} must be an integer ${min}-${max}, got "${text.slice(0, 40)}"`);
  }
  return Number(text);
}

/** `state=a,b` (list): the states asked for, or null for all. */
function stateParam(url: URL): Set<string> | null {
  const text = url.searchParams.get('state');
  if (text === null || text === '') return null;
  const wanted = text.split(',').map((s) => s.trim().toLowerCase());
  for (const s of wanted) {
    if (!(CONSOLE_STATES as readonly string[]).includes(s)) {
      throw new AdminApiError(400, 'VSPC_STATE_INVALID', `state must be one or more of ${CONSOLE_STATES.join(', ')} (comma-separated), got "${s.slice(0, 40)}"`);
    }
  }
  return new Set(wanted);
}

/** `reason=TEXT` (kick): one line of text for people, or null when not given. */
function reasonParam(url: URL): string | null {
  const text = url.searchParams.get('reason');
  if (text === null) return null;
  const reason = sanitizeText(text.trim());
  if (reason === '' || reason.length > MAX_KICK_REASON) {
    throw new AdminApiError(400, 'VSPC_REASON_INVALID', `reason must be 1-${MAX_KICK_REASON} characters, got ${reason.length}`);
  }
  return reason;
}

/** A yes/no parameter: present as `1`, `true` or empty (`&force`). */
function flagParam(url: URL, name: string): boolean {
  const v = url.searchParams.get(name);
  return v !== null && ['', '1', 'true', 'yes'].includes(v.toLowerCase());
}

/** Copies `src` into `out` with backpressure, leaving `out` open; false when `out` closed first. */
async function pump(src: Readable, out: Writable): Promise<boolean> {
  try {
    for await (const chunk of src) {
      if (out.destroyed) return false;
      if (out.write(chunk as Buffer)) continue;
      const drained = await new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          out.off('drain', onDrain);
          out.off('close', onClose);
          resolve(ok);
        };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        out.on('drain', onDrain);
        out.on('close', onClose);
      });
      if (!drained) return false;
    }
    return !out.destroyed;
  } finally {
    src.destroy();
  }
}

/** The admin API's calls (documented in docs/admin-api.md). */
export function adminRoutes(ctx: AdminContext): AdminRoute[] {
  /** A console's view; `address` (resolve.ts) built once per request when viewing many. */
  const view = (h: ConsoleHub, address = consoleAddresses(ctx.registry)) => portView(h, ctx.registry, (x) => ctx.tlsPortOf(x), address(h));
  const vmOf = (url: URL) => resolveVm(ctx.registry, url.searchParams.get('vm'));

  const detail = (hub: ConsoleHub): VmDetailView => ({
    ...view(hub),
    displayName: hub.displayName,
    bytesFromVm: hub.bytesFromVm,
    bytesToVm: hub.bytesToVm,
    scrollbackBytes: hub.scrollback.capacity,
    uart: uartView(hub.lineSettings),
    serialLine: serialLineView(hub.lineState),
    clientList: clientViews(hub),
    vmotions: ctx.vmotion.historyOf(hub),
    settings: settingsView(ctx.settingsOf?.(hub) ?? {}),
    endpointStatus: endpointView(hub.endpoint),
    tunnel: ctx.tunnels?.of(hub) ?? null,
    access: ctx.accessOf?.(hub) ?? {
      telnet: { host: '', port: hub.identity.tcpPort, listening: hub.listenError === null, error: hub.listenError },
      telnets: null,
      raw: null,
      unix: null,
      pty: null,
    },
  });

  const setPort = async (hub: ConsoleHub, port: number, force: boolean) => {
    const before = hub.identity.tcpPort;
    if (port === before) return { ...view(hub), previousPort: before };
    if (port < 1024 && !force) {
      throw new AdminApiError(400, 'VSPC_PORT_PRIVILEGED', `port ${port} is a privileged port (below 1024); give force=1 to use it anyway`);
    }
    const own = new Set(ctx.ownPorts?.() ?? []);
    const tls = ctx.tlsPortOf(hub);
    const offset = tls === null ? null : tls - before;
    const wanted = offset === null ? [port] : [port, port + offset];
    if (offset !== null && port + offset > 65535) {
      throw new AdminApiError(400, 'VSPC_PORT_INVALID', `port ${port}: its telnets port ${port + offset} would exceed 65535`);
    }
    for (const p of wanted) {
      if (own.has(p)) throw new AdminApiError(409, 'VSPC_PORT_RESERVED', `port ${p} is one of vspc's own listener ports`);
      for (const other of ctx.registry.all()) {
        if (other === hub) continue;
        const otherTls = ctx.tlsPortOf(other);
        if (other.identity.tcpPort === p || otherTls === p) {
          throw new AdminApiError(409, 'VSPC_PORT_IN_USE', `port ${p} is used by ${other.displayName} (port ${other.identity.tcpPort})`);
        }
      }
    }
    const commit = () => ctx.registry.setPort(hub, port);
    try {
      // The new port is bound before anything is stored: a port another program holds is refused, not recorded.
      if (ctx.movePort) await ctx.movePort(hub, port, commit);
      else commit();
    } catch (err) {
      if (err instanceof VspcError && err.code === 'VSPC_PORT_IN_USE') throw new AdminApiError(409, err.code, err.message);
      if (err instanceof VspcError && err.code === 'VSPC_PORT_BIND_FAILED') {
        throw new AdminApiError(409, err.code, `${err.message}; ${hub.displayName} stays on port ${before}`);
      }
      throw err;
    }
    ctx.logger.info('VM serial port moved by the administrator', { vm: hub.displayName, from: before, to: port });
    const fixed = ctx.settingsOf?.(hub).tcpPort;
    return {
      ...view(hub),
      previousPort: before,
      ...(fixed !== undefined && fixed !== port
        ? { note: `the config file fixes this VM serial port at ${fixed}; a reload or restart moves it back` }
        : {}),
    };
  };

  return [
    {
      method: 'GET',
      path: '/api/v1/ports',
      handle: (url) => {
        const match = url.searchParams.get('match');
        const glob = match ? namePattern(match) : null;
        const states = stateParam(url);
        const all = ctx.registry.all();
        const hubs = glob ? filterByPattern(all, glob, ctx.patternSteps) : all;
        const address = consoleAddresses(ctx.registry);
        const views = hubs.map((h) => view(h, address));
        if (ctx.clusterRecords) {
          // The cluster-wide view: the consoles of the other nodes (and of none), from the shared database.
          const here = new Set(ctx.registry.all().map((h) => h.identity.id));
          for (const r of ctx.clusterRecords()) {
            if (here.has(r.id)) continue;
            const v = remotePortView(r);
            if (!glob || glob.test(v.address) || (v.uuid !== null && glob.test(v.uuid)) || glob.test(r.key)) views.push(v);
          }
          views.sort((a, b) => a.port - b.port);
        }
        return states ? views.filter((v) => states.has(v.state)) : views;
      },
    },
    { method: 'GET', path: '/api/v1/status', handle: () => ctx.status() },
    // Which port to dial for a VM (used by `vspc-admin connect`).
    { method: 'GET', path: '/api/v1/resolve', handle: (url) => view(resolveVm(ctx.registry, url.searchParams.get('vm'))) },
    { method: 'GET', path: '/api/v1/show', handle: (url) => detail(vmOf(url)) },
    { method: 'GET', path: '/api/v1/clients', handle: () => ctx.registry.all().flatMap(clientViews) },
    { method: 'GET', path: '/api/v1/tunnels', handle: () => ctx.tunnels?.list() ?? [] },
    {
      // Without the Upgrade headers (those go to adminUpgrades below).
      method: 'GET',
      path: '/api/v1/tunnel',
      handle: () => {
        throw new AdminApiError(426, 'VSPC_TUNNEL_UPGRADE_REQUIRED', '/api/v1/tunnel is a byte stream: send "Connection: Upgrade" and "Upgrade: vspc-tunnel" (vspc-admin tunnel NAME PORT)');
      },
    },
    {
      method: 'POST',
      path: '/api/v1/kick',
      handle: (url) => {
        const hub = vmOf(url);
        const id = url.searchParams.has('client') ? intParam(url, 'client', 1, Number.MAX_SAFE_INTEGER) : null;
        const targets = [...hub.clients].filter((c) => id === null || c.id === id);
        if (id !== null && targets.length === 0) {
          throw new AdminApiError(404, 'VSPC_CLIENT_NOT_FOUND', `no client ${id} on ${hub.displayName} (see vspc-admin who)`);
        }
        const reason = reasonParam(url);
        const kicked = clientViews(hub).filter((c) => targets.some((t) => t.id === c.id));
        // Each client is told (and the audit log's detach line says) why.
        for (const c of targets) c.close(`disconnected by the administrator${reason ? `: ${reason}` : ''}`);
        ctx.logger.info('clients disconnected by the administrator', { vm: hub.displayName, clients: kicked.map((c) => c.id), ...(reason ? { reason } : {}) });
        return { vm: hub.displayName, port: hub.identity.tcpPort, kicked };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/forget',
      handle: (url) => {
        const hub = vmOf(url);
        // A console the configuration or discovery keeps would be back (or half back)
        // at the next reload or scan: it is removed where it is declared.
        const group = ctx.managedBy?.(hub) ?? null;
        if (group !== null) {
          throw new AdminApiError(
            409,
            'VSPC_CONSOLE_MANAGED',
            group === 'config'
              ? `${hub.displayName} is declared in the config file (consoles:); remove it there and reload`
              : `${hub.displayName} is found by discovery; it is stopped when its VM goes, and can be forgotten then`,
          );
        }
        const v = view(hub);
        ctx.registry.forget(hub);
        ctx.logger.info('VM serial port forgotten by the administrator', { vm: hub.displayName, port: hub.identity.tcpPort });
        return v;
      },
    },
    {
      method: 'POST',
      path: '/api/v1/set-port',
      handle: (url) => setPort(vmOf(url), intParam(url, 'port', 1, 65535), flagParam(url, 'force')),
    },
    {
      method: 'GET',
      path: '/api/v1/log',
      handle: async (url) => {
        const hub = vmOf(url);
        const follow = url.searchParams.get('follow') === '1';
        const all = url.searchParams.get('all') === '1';
        const hasFile = url.searchParams.has('file');
        const asked = [follow && 'follow', all && 'all', hasFile && 'file'].filter((x): x is string => !!x);
        if (asked.length > 1) throw new AdminApiError(400, 'VSPC_LOG_QUERY_CONFLICT', `${asked.join(' and ')} do not go together`);
        // Following may start with no lines at all (only what comes next).
        const lines = intParam(url, 'lines', follow ? 0 : 1, MAX_LOG_LINES, DEFAULT_LOG_LINES);
        const file = intParam(url, 'file', 0, MAX_LOG_FILE, 0);
        const logs = ctx.consoleLogs;
        if (!logs) throw new AdminApiError(409, 'VSPC_CONSOLE_LOG_OFF', 'console logging is off (start vspc with --log-dir)');
        if ((follow || all) && !hub.logged) {
          throw new AdminApiError(409, 'VSPC_CONSOLE_LOG_OFF', `no console log is kept for ${hub.displayName} (log: false in its consoles: entry)`);
        }
        if (follow) {
          if (logs.activeFollowers >= MAX_LOG_FOLLOWERS) {
            throw new AdminApiError(503, 'VSPC_LOG_FOLLOW_LIMIT', `${MAX_LOG_FOLLOWERS} readers follow console logs already; try again when one has stopped`);
          }
          return new StreamBody('application/octet-stream', (res) => {
            const f = logs.follow(hub, lines, {
              write: (b) => void res.write(b),
              end: () => res.end(),
              get buffered() {
                return res.writableLength;
              },
            });
            res.once('close', () => f.stop());
          });
        }
        if (all) {
          const handles = await logs.openAll(hub);
          return new StreamBody('application/octet-stream', async (res) => {
            try {
              for (const h of handles) if (!(await pump(h.createReadStream({ autoClose: false }), res))) return; // the reader left (| head)
              res.end();
            } finally {
              await Promise.all(handles.map((h) => h.close().catch(() => undefined)));
            }
          });
        }
        if (file > 0 && !(await logs.rotatedFiles(hub)).includes(file)) {
          const have = await logs.rotatedFiles(hub);
          throw new AdminApiError(
            404,
            'VSPC_LOG_FILE_NOT_FOUND',
            `${hub.displayName} has no rotated console log file ${file} (${have.length === 0 ? 'none yet' : `it has ${have.join(', ')}`})`,
          );
        }
        // format=raw: the file's exact bytes (console output need not be UTF-8).
        if (url.searchParams.get('format') === 'raw') return new RawBody('application/octet-stream', await logs.tailFileBytes(hub, lines, file));
        const text = file === 0 ? await logs.tail(hub, lines) : (await logs.tailFileBytes(hub, lines, file)).toString('utf8');
        return { vm: hub.displayName, port: hub.identity.tcpPort, lines, ...(file > 0 ? { file } : {}), text };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/log/rotate',
      handle: async (url) => {
        const hub = url.searchParams.has('vm') ? vmOf(url) : undefined;
        if (!ctx.consoleLogs) throw new AdminApiError(409, 'VSPC_CONSOLE_LOG_OFF', 'console logging is off (start vspc with --log-dir)');
        await ctx.consoleLogs.rotate(hub);
        ctx.logger.info('console logs rotated by the administrator', { vm: hub?.displayName ?? 'all' });
        return { rotated: hub ? hub.displayName : 'all' };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/reload',
      handle: async () => {
        if (!ctx.reload) throw new AdminApiError(409, 'VSPC_RELOAD_UNAVAILABLE', 'this vspc has no configuration to re-read');
        try {
          return await ctx.reload();
        } catch (err) {
          if (err instanceof ConfigError) throw new AdminApiError(400, err.code, `${err.message} (the running configuration is unchanged)`);
          throw err;
        }
      },
    },
    {
      method: 'GET',
      path: '/metrics',
      handle: () => {
        const s = ctx.status();
        return new RawBody(
          METRICS_CONTENT_TYPE,
          renderMetrics({
            metrics: ctx.metrics ?? new Metrics(),
            hubs: ctx.registry.all(),
            vmotion: ctx.vmotion,
            version: s.version,
            uptimeSeconds: s.uptimeSeconds,
            vmConnections: s.vmConnections,
            vmConnectionsRefused: s.vmConnectionsRefused,
            ssh: ctx.sshMetrics?.() ?? null,
            tunnels: ctx.tunnels?.list() ?? [],
          }),
        );
      },
    },
  ];
}

/** HTTP status of a tunnel failure answered before the switch, by code. */
const TUNNEL_STATUS: Record<string, number> = {
  VSPC_TUNNEL_NOT_FOUND: 404,
  VSPC_TUNNEL_NOT_ATTACHED: 409,
  VSPC_TUNNEL_TOO_MANY_STREAMS: 503,
  VSPC_TUNNEL_OPEN_FAILED: 502,
  VSPC_TUNNEL_STREAM_RESET: 502,
};

/**
 * The admin API's byte streams: `GET /api/v1/tunnel?tunnel=NAME&port=PORT` with
 * `Upgrade: vspc-tunnel` (`vspc-admin tunnel NAME PORT`, an ssh ProxyCommand). Answered
 * `101` only once the guest accepted the stream, so a refusal is a JSON error the
 * client can print.
 */
export function adminUpgrades(ctx: AdminContext): AdminUpgradeRoute[] {
  const tunnels = ctx.tunnels;
  if (!tunnels) return [];
  return [
    {
      path: '/api/v1/tunnel',
      protocol: 'vspc-tunnel',
      open: async (url, peer, socket) => {
        const name = url.searchParams.get('tunnel');
        if (!name) throw new AdminApiError(400, 'VSPC_TUNNEL_REQUIRED', 'name the tunnel: tunnel=NAME');
        const port = intParam(url, 'port', 1, 65535);
        try {
          const join = await tunnels.open(name, port, `admin API ${peer}`, socket);
          ctx.logger.info('tunnel stream through the admin API', { tunnel: name, port, peer });
          return join;
        } catch (err) {
          const code = (err as VspcError)?.code;
          const status = typeof code === 'string' ? TUNNEL_STATUS[code] : undefined;
          if (status !== undefined) throw new AdminApiError(status, code as VspcErrorCode, (err as Error).message);
          throw err;
        }
      },
    },
  ];
}
