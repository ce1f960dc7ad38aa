import type net from 'node:net';
import type Database from 'better-sqlite3';
import type { Logger } from './logging/logger.js';
import { streamOptions, type ConsoleHub } from './domain/console-hub.js';
import { errorFields, VspcError } from './errors.js';
import { ephemeralPortRange, rangesOverlap, type VspcConfig } from './config/config.js';
import { openDatabase, closeDatabase } from './storage/database.js';
import { ConsoleStore } from './storage/console-store.js';
import { PgConsoleStore, isPostgresUrl } from './storage/pg/pg-store.js';
import { hostname } from 'node:os';
import type { ConsoleRepository } from './domain/repository.js';
import { Registry } from './domain/registry.js';
import { VmotionCoordinator } from './domain/vmotion.js';
import { TelnetListeners, type TelnetListenerOptions } from './access/telnet/listeners.js';
import { TelnetClient } from './access/telnet/client.js';
import { ConsoleBroker } from './access/broker/broker.js';
import { SshListener } from './access/ssh/listener.js';
import { ClusterLinkServer } from './access/cluster/link-server.js';
import { ClusterLinkDialer } from './access/cluster/link-dialer.js';
import { ClusterVmotionService } from './access/cluster/vmotion-handover.js';
import { ClusterMirrors } from './sources/cluster/mirror.js';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { RawListeners } from './access/raw/listeners.js';
import { UnixSocketListeners } from './access/unix/listeners.js';
import { PtyEndpoints } from './access/pty/ptys.js';
import { DiscoveredConsoles, ManagedConsoles, sourceConnectors } from './sources/index.js';
import { FdBudget } from './runtime/fd-budget.js';
import type { DescriptorBudget, DescriptorUse } from './domain/descriptors.js';
import { EsxiListener } from './sources/esxi/listener.js';
import { AdminServer } from './admin/admin-server.js';
import { adminRoutes, adminUpgrades, type AdminContext } from './admin/routes.js';
import { lookupConsoles } from './admin/resolve.js';
import { mayBeNamed } from './domain/address.js';
import { TunnelManager, joinSocket, type TunnelSpec } from './access/tunnel/index.js';
import { allocateClientId } from './domain/client-ids.js';
import type { AccessView, ClusterStatusView, StatusView } from './admin/views.js';
import { Metrics } from './admin/metrics.js';
import { LISTENER_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from './domain/log-budget.js';
import { isLoopbackHost, socketPeer } from './util/net.js';
import { applyReload, type ReloadAppliers, type ReloadReport } from './config/reload.js';
import { resolveConsoleAccess, resolveVmSettings } from './config/vms.js';
import type { ConsoleAccess } from './config/access.js';
import { VERSION } from './version.js';
import { displayKey } from './domain/identity.js';
import { ConsoleLogManager } from './logging/console-log.js';
import { createAuditObserver } from './logging/audit.js';
import { combineObserversWith } from './logging/observers.js';


/** What waits when a console descriptor is deferred, for the log line. */
const DEFERRED_WHAT: Record<DescriptorUse, string> = {
  listener: 'a console client port, socket or pty waits to be opened',
  source: 'a console source connection waits',
  'log-file': 'a console log file waits to be opened (its output is queued)',
};
/**
 * At most this many extra unidentified-connection slots for vMotion destinations: more
 * migrations than that at once are rare (ESXi runs a few per host), and a peer that
 * begins vMotions on its own consoles must not raise the flood caps at will.
 */
const MAX_VMOTION_HEADROOM = 32;

/** An applier for a value the server reads from its config each time it uses it. */
const readWhereUsed = (): void => undefined;

export interface ServerAddresses {
  proxy: net.AddressInfo;
  proxyTls: net.AddressInfo | null;
  admin: net.AddressInfo;
  /** The SSH front door (--ssh-listen), or null. */
  ssh: net.AddressInfo | null;
  /** The cluster link (--cluster-listen), or null. */
  cluster: { host: string; port: number } | null;
}

/**
 * Ports the allocator must never hand to a VM: our own listeners, and with TLS the
 * ports whose telnets twin (port + offset) would land on one of them.
 */
function reservedPorts(c: VspcConfig): number[] {
  const own = [c.proxyListen.port, c.adminListen.port, c.proxyTlsListen?.port ?? 0, c.brokerListen?.port ?? 0, c.sshListen?.port ?? 0].filter((p) => p > 0);
  // Fixed ports of the config file's `vms:` and `consoles:` are kept for them, not handed to others.
  const fixed = [...c.vms, ...c.consoles].flatMap((v) => (v.tcpPort !== undefined ? [v.tcpPort] : []));
  // So are the fixed TCP ports of tunnel forwards.
  for (const t of c.tunnels) for (const f of t.forwards) if (f.listen.type === 'tcp') fixed.push(f.listen.port);
  return [...(c.tls ? [...own, ...own.map((p) => p - c.tlsPortOffset)] : own), ...fixed];
}

/**
 * The concentrator: storage, registry, VM listener(s), per-VM client listeners and
 * the admin API, wired together. `close()` drains and is idempotent; `destroy()`
 * aborts.
 */
/** Longest a cluster lookup at attach time (owner, console list) blocks the event loop, in ms. */
const CLUSTER_LOOKUP_TIMEOUT_MS = 500;

export class VspcServer {
  readonly registry: Registry;
  readonly vmotion: VmotionCoordinator;
  /** Console log files (--log-dir), or null. */
  readonly consoleLogs: ConsoleLogManager | null;
  readonly startedAt = Date.now();
  /** Event counters for the admin API's /metrics. */
  readonly metrics: Metrics;
  /**
   * Re-reads the configuration (set by the CLI, which knows the flags and the config
   * file) for SIGHUP and `vspc-admin reload`; null: reload is not available.
   */
  reloadConfig: (() => ReloadReport) | null = null;
  /** The embedded SQLite database, or null in a PostgreSQL cluster (`pg`). */
  private readonly db: Database.Database | null;
  /** The shared PostgreSQL store (`--db postgres://...`), or null. */
  private readonly pg: PgConsoleStore | null;
  /** This node's id in a cluster (`--node-id`, default the host name); null with SQLite. */
  readonly nodeId: string | null;
  /** The cluster link (--cluster-listen): other nodes' clients attach here; null without. */
  readonly clusterLink: ClusterLinkServer | null = null;
  /** Dials the other nodes for this node's clients of their consoles; null without a link. */
  private readonly clusterDialer: ClusterLinkDialer | null = null;
  /** Mirrors of the consoles other nodes own, offered by the SSH front door and the broker. */
  readonly clusterMirrors: ClusterMirrors | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  /** Cross-node vMotion (with the cluster link); null otherwise. */
  readonly clusterVmotion: ClusterVmotionService | null = null;
  private readonly listeners: TelnetListeners;
  /** The log budget of the client ports' per-connection lines (see TelnetClientOptions.acceptLogger). */
  private readonly clientAcceptLog: BudgetedLogger;
  /** The SSH front door, when --ssh-listen is given. */
  readonly ssh: SshListener | null;
  /** The other access methods' endpoints: a raw TCP port, a unix socket, a pty per console. */
  private readonly raw: RawListeners;
  private readonly unix: UnixSocketListeners;
  readonly ptys: PtyEndpoints;
  /** The console broker (--broker-socket, --broker-listen), or null when both are off. */
  readonly broker: ConsoleBroker | null;
  /** Declared (and discovered) consoles whose sources vspc maintains itself. */
  readonly managed: ManagedConsoles;
  /** Serial tunnels (`tunnels:`): links on the consoles that carry them, and their forwards. */
  readonly tunnels: TunnelManager;
  /** Proxmox / libvirt / path-pattern discovery feeding `managed`. */
  private readonly discovered: DiscoveredConsoles;
  /** File descriptors as a budget: VM and console connections are refused before the limit. */
  private readonly fds = new FdBudget();
  private lastFdRefusalLog = 0;
  /** When each kind of console descriptor was last deferred in the log (rate limit). */
  private readonly lastFdDeferralLog = new Map<DescriptorUse, number>();
  /**
   * The budget as the parts that open descriptors for consoles see it (listeners,
   * sources vspc maintains, console log files): what does not fit is deferred, logged
   * at most every 10 s per kind with the count, and counted in /metrics.
   */
  private readonly consoleDescriptors: DescriptorBudget = {
    acquire: (use, consoleName) => {
      const lease = this.fds.acquire();
      if (lease) return lease;
      this.metrics.fdDeferred[use] = (this.metrics.fdDeferred[use] ?? 0) + 1;
      const now = Date.now();
      if (now - (this.lastFdDeferralLog.get(use) ?? 0) >= 10_000) {
        this.lastFdDeferralLog.set(use, now);
        this.logger.warn(`file descriptors nearly exhausted; ${DEFERRED_WHAT[use]} (the admin API keeps a reserve)`, {
          use,
          console: consoleName,
          inUse: this.fds.inUse,
          limit: this.fds.limit,
          reserve: this.fds.reserve,
          deferredSoFar: this.metrics.fdDeferred[use],
          errorCode: 'VSPC_FD_BUDGET_SPENT',
        });
      }
      return null;
    },
    whenAvailable: (retry) => this.fds.onAvailable(retry),
  };
  /** The records stored at start are loaded: names taken from now on are checked. */
  private loaded = false;
  private readonly proxy: EsxiListener;
  private readonly admin: AdminServer;
  private addressesValue: ServerAddresses | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly config: VspcConfig,
    private readonly logger: Logger,
  ) {
    let store: ConsoleRepository;
    if (isPostgresUrl(config.dbPath)) {
      // A cluster node: the registry is shared, ownership is PostgreSQL's (docs/decisions/0011-pg.md).
      this.db = null;
      this.nodeId = config.nodeId ?? hostname();
      this.pg = new PgConsoleStore({
        url: config.dbPath,
        nodeId: this.nodeId,
        range: config.portRange,
        reserved: reservedPorts(config),
        onWriteError: (op, err) => logger.error('database write failed', { op, ...errorFields(err) }),
        onRegained: () => logger.info('database session re-established; consoles are claimed again as their VMs reconnect', { node: this.nodeId }),
      });
      this.pg.onLost((reason) =>
        logger.error('database session lost: this node gave up every console it owned', { node: this.nodeId, reason, errorCode: 'VSPC_DB_UNAVAILABLE' }),
      );
      store = this.pg;
    } else {
      this.pg = null;
      this.nodeId = null;
      this.db = openDatabase(config.dbPath);
      // Group commit: a reconnect storm's thousands of last-seen updates share commits.
      store = new ConsoleStore(this.db, config.portRange, reservedPorts(config), {
        groupCommit: true,
        onCommitError: (err) => logger.error('database commit failed; the last registrations were not saved', errorFields(err)),
      });
    }
    this.consoleLogs = config.logDir
      ? new ConsoleLogManager({
          dir: config.logDir,
          logger,
          maxSize: config.logMaxSize,
          keep: config.logKeep,
          markIntervalMs: config.logMarkIntervalMs,
          ports: () => this.registry.all(),
          nameRank: (hub) => this.nameRankOf(hub),
          descriptors: this.consoleDescriptors,
        })
      : null;
    // Console logs (when configured) and the audit log (always) watch every hub.
    const observer = combineObserversWith(
      { onError: (err, index) => logger.error('serial port observer failed', { observer: index, ...errorFields(err) }) },
      this.consoleLogs,
      createAuditObserver(logger),
    );
    this.registry = new Registry(store, { maxHeldInput: config.vmotionHoldLimit, scrollbackBytes: config.scrollbackBytes, observer });
    // A forgotten or expired VM keeps no console log file open.
    this.registry.on('removed', (hub) => this.consoleLogs?.forget(hub));
    // Every expiry, also of records deleted at start-up before any hub exists: a sticky port goes.
    this.registry.on('expired', (r, hub) => {
      this.metrics.expired(r.reason);
      this.logger.info(r.reason === 'unused' ? 'VM serial port expired (never used: no client ever attached)' : 'VM serial port expired (not seen for too long)', {
        // As ConsoleHub.displayName has it.
        vm: hub?.displayName ?? `${r.name ?? r.key}${r.label ? `:${r.label}` : ''}`,
        kind: r.kind,
        ...(r.kind === 'esxi' ? { uuid: displayKey(r) } : { key: r.key }),
        label: r.label,
        port: r.tcpPort,
        lastSeen: new Date(r.lastSeen).toISOString(),
      });
    });
    this.metrics = new Metrics(this.registry);
    if (this.pg && config.clusterListen && config.clusterSecret) {
      // The internal link (docs/decisions/0012-cluster-link-tls-psk.md): serve this
      // node's consoles to the others' clients, reach theirs for this node's clients.
      const pg = this.pg;
      const registry = this.registry;
      const linkLog = logger.child({ component: 'cluster-link' });
      // Link addresses of nodes read from the nodes table (at each remote attach): they
      // keep a reserve of handshake slots on this node's listener during a flood.
      const nodeHosts = new Set<string>();
      this.clusterLink = new ClusterLinkServer(linkLog, {
        isNodeAddress: (ip) => nodeHosts.has(ip),
        nodeId: this.nodeId!,
        secret: config.clusterSecret,
        listen: config.clusterListen,
        consoleById: (id, tcpPort) => {
          const hub = registry.getByPort(tcpPort);
          return hub && hub.identity.id === id ? hub : undefined;
        },
        get maxQueuedBytes() { return config.clientQueueLimit; },
      });
      this.clusterDialer = new ClusterLinkDialer(linkLog, { nodeId: this.nodeId!, secret: config.clusterSecret });
      this.clusterMirrors = new ClusterMirrors(linkLog, {
        nodeId: this.nodeId!,
        // Lookups at attach time block the event loop (the store is synchronous): bounded
        // short, and after one fails none is tried for a while (ClusterMirrors.markUnavailable).
        clusterList: () => pg.clusterList(CLUSTER_LOOKUP_TIMEOUT_MS),
        ownerOf: (id) => {
          const o = pg.ownerLink(id, CLUSTER_LOOKUP_TIMEOUT_MS);
          if (o?.host && nodeHosts.size < 1024) nodeHosts.add(o.host);
          if (!o) return null;
          return o.host !== null && o.port !== null ? { node: o.node, host: o.host, port: o.port } : { node: o.node, noLink: true };
        },
        links: this.clusterDialer,
      });
      const mirrors = this.clusterMirrors;
      pg.onLost((reason) => mirrors.markUnavailable(reason));
    }
    this.metrics.fdBudget = this.fds;
    // Per-VM settings (vms:) apply when a VM serial port becomes known and when its name does.
    this.registry.on('added', (hub) => this.applyVmSettings(hub));
    // With console logs, a scrollback emptied by a restart is read back from the log (at the first attach).
    const logs = this.consoleLogs;
    if (logs) this.registry.on('added', (hub) => (hub.scrollbackPrimer = (max) => logs.recentOutput(hub, max)));
    this.registry.on('renamed', (hub) => this.applyVmSettings(hub));
    // Names shared by several machines: ranks change with every console added, removed or renamed.
    this.registry.on('added', (hub) => this.namesChanged(hub));
    this.registry.on('removed', () => this.namesChanged(null));
    this.registry.on('renamed', (hub) => this.namesChanged(hub));
    // Getters: values a reload may change (applyConfig) are read from `config` when used.
    this.vmotion = new VmotionCoordinator(
      {
        get timeoutMs() { return config.vmotionTimeoutMs; },
        get secretBytes() { return config.vmotionSecretBytes; },
      },
      logger,
    );
    if (this.pg && this.clusterDialer && this.clusterLink) {
      const pg = this.pg;
      this.clusterVmotion = new ClusterVmotionService(logger.child({ component: 'cluster-vmotion' }), {
        nodeId: this.nodeId!,
        registry: this.registry,
        coordinator: this.vmotion,
        links: this.clusterDialer,
        store: {
          publish: (token, seq, consoleId, deadline) => pg.vmotionPublish(token, seq, consoleId, deadline),
          withdraw: (token) => pg.vmotionWithdraw(token),
          // A VMOTION-PEER comes from anyone who reaches 13370: while the database is marked
          // unavailable none is looked up, and a look-up blocks at most CLUSTER_LOOKUP_TIMEOUT_MS.
          find: (payload) => {
            const mirrors = this.clusterMirrors;
            if (mirrors && !mirrors.databaseAvailable) return [];
            try {
              return pg.vmotionFind(payload, Date.now(), CLUSTER_LOOKUP_TIMEOUT_MS);
            } catch (err) {
              mirrors?.markUnavailable((err as Error).message);
              throw err;
            }
          },
          nodeLink: (node) => pg.nodeLink(node),
        },
      });
      this.vmotion.cluster = this.clusterVmotion;
      const service = this.clusterVmotion;
      this.clusterLink.setVmotion({
        handover: (token, toNode) => service.handover(token, toNode),
        outputSinceTakeover: (hub) => service.outputSinceTakeover(hub),
      });
    }
    const tlsOptions = config.tls
      ? {
          cert: config.tls.cert,
          key: config.tls.key,
          // Client certificates, when the operator gave a CA: no certificate, no console.
          ...(config.clientCa ? { ca: config.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        }
      : undefined;
    this.clientAcceptLog = rateLimitedLogger(logger.child({ listener: 'client' }), LISTENER_LOG_BUDGET, { scope: 'listener' });
    const accessOf = (hub: ConsoleHub): ConsoleAccess => resolveConsoleAccess(this.config, hub.identity);
    const clientOptions: TelnetListenerOptions = {
      host: config.clientListenHost,
      tlsPortOffset: config.tlsPortOffset,
      tls: tlsOptions,
      bindRetryMs: config.bindRetryMs,
      admit: (socket) => this.admit(socket, 'client'),
      descriptors: this.consoleDescriptors,
      enabled: (hub) => accessOf(hub).telnet,
      get maxQueuedBytes() { return config.clientQueueLimit; },
      onSlowClientDropped: () => this.metrics.slowClientDropped(),
      onTooManyRequests: () => this.metrics.peerCutOff('client', 'too-many-requests'),
      onProtocolError: (code) => this.metrics.protocolError('client', code),
      // The lines of clients not attached yet and of failed TLS handshakes, all client ports together.
      acceptLogger: this.clientAcceptLog,
      maxSubnegotiation: config.maxSubnegotiation,
      closeGraceMs: config.closeGraceMs,
      lockWaitMs: config.clientLockWaitMs,
      idleTimeoutMs: config.clientIdleTimeoutMs,
    };
    this.listeners = new TelnetListeners(this.registry, logger, clientOptions);
    this.broker =
      config.brokerSocket || config.brokerListen
        ? new ConsoleBroker(this.registry, logger, {
            ...(this.clusterMirrors ? { consoles: () => this.offeredConsoles(), listCaveat: () => this.clusterMirrors?.listCaveat ?? null } : {}),
            socket: config.brokerSocket ? { path: config.brokerSocket.path, mode: config.brokerSocketMode, gid: config.brokerSocketGroup?.gid ?? null } : null,
            listen: config.brokerListen,
            limits: config.brokerLimits,
            get maxQueuedBytes() { return config.clientQueueLimit; },
            admit: (socket) => this.admit(socket, 'client'),
            // The chosen console's client, exactly as if it had come in on the console's own telnet port.
            attach: (h) => void new TelnetClient(h.socket, h.hub, logger, clientOptions, false, h),
            onProtocolError: (code) => this.metrics.protocolError('client', code),
            onNotReading: () => this.metrics.peerCutOff('broker', 'not-reading'),
          })
        : null;
    const consoleLogs = this.consoleLogs;
    this.ssh = config.sshListen
      ? new SshListener(this.registry, logger, {
          ...(this.clusterMirrors ? { consoles: () => this.offeredConsoles(), listCaveat: () => this.clusterMirrors?.listCaveat ?? null } : {}),
          listen: config.sshListen,
          hostKeyDir: config.sshHostKeyDir ?? (isPostgresUrl(config.dbPath) ? process.cwd() : dirname(config.dbPath)),
          authorizedKeysFile: config.sshAuthorizedKeys,
          keysCommand: config.sshKeysCommand,
          limits: config.sshLimits,
          closeGraceMs: config.closeGraceMs,
          get idleTimeoutMs() { return config.sshIdleTimeoutMs; },
          get maxSessionMs() { return config.sshMaxSessionMs; },
          get maxQueuedBytes() { return config.sshLimits.maxQueuedBytes ?? config.clientQueueLimit; },
          tail: consoleLogs ? (hub, lines) => consoleLogs.tail(hub, lines) : null,
          onSlowClientDropped: () => this.metrics.slowClientDropped(),
          onProtocolError: (code) => this.metrics.protocolError('client', code),
          admit: (socket) => this.admit(socket, 'client'),
        })
      : null;
    // Raw, unix and pty clients: the console's bytes only (access/common/stream-client.ts).
    const streamOptions = {
      get maxQueuedBytes() { return config.clientQueueLimit; },
      closeGraceMs: config.closeGraceMs,
      idleTimeoutMs: config.clientIdleTimeoutMs,
      onSlowClientDropped: () => this.metrics.slowClientDropped(),
      bindRetryMs: config.bindRetryMs,
      // Each endpoint (a raw port, a unix socket, a pty) through the descriptor budget.
      descriptors: this.consoleDescriptors,
    };
    this.raw = new RawListeners(this.registry, logger, {
      ...streamOptions,
      get maxQueuedBytes() { return config.clientQueueLimit; },
      host: config.clientListenHost,
      enabled: (hub) => accessOf(hub).raw,
      admit: (socket) => this.admit(socket, 'client'),
    });
    this.unix = new UnixSocketListeners(this.registry, logger, {
      ...streamOptions,
      get maxQueuedBytes() { return config.clientQueueLimit; },
      settingsOf: (hub) => accessOf(hub).unix,
      admit: (socket) => this.admit(socket, 'client'),
      telnetClient: (socket, hub, via) => {
        new TelnetClient(socket, hub, logger, clientOptions, false, undefined, via);
      },
    });
    this.ptys = new PtyEndpoints(this.registry, logger, {
      ...streamOptions,
      get maxQueuedBytes() { return config.clientQueueLimit; },
      pollMs: config.ptyPollMs,
      settingsOf: (hub) => accessOf(hub).pty,
    });
    this.managed = new ManagedConsoles(this.registry, sourceConnectors(), logger, {
      descriptors: this.consoleDescriptors,
      // A source's queue holds client input (stopped at the socket's high-water mark) and
      // telnet negotiation replies: the client bound serves (read when an endpoint starts).
      links: {
        get maxQueuedBytes() { return config.clientQueueLimit; },
        onNotReading: () => this.metrics.peerCutOff('source', 'not-reading'),
      },
    });
    this.discovered = new DiscoveredConsoles(this.managed, logger);
    this.tunnels = new TunnelManager({
      registry: this.registry,
      lookup: (ref) => lookupConsoles(this.registry, ref),
      logger,
      clientId: () => allocateClientId(),
      bindRetryMs: config.bindRetryMs,
      // A console that starts or stops carrying a tunnel: no console log, no scrollback while it does.
      onBind: (hub) => this.applyVmSettings(hub),
      // A forward's connections are console connections: the descriptor budget first.
      admit: (socket) => this.admit(socket, 'client'),
    });
    this.proxy = new EsxiListener(
      {
        registry: this.registry,
        logger,
        vmotion: this.vmotion,
        onProtocolError: (code) => this.metrics.protocolError('vm', code),
        onTakeover: (result) => this.metrics.takeover(result),
        onNotReading: () => this.metrics.peerCutOff('vm', 'not-reading'),
        options: {
          get serviceName() { return config.serviceName; },
          get comPort() { return config.comPort; },
          maxSubnegotiation: config.maxSubnegotiation,
          get humanTimeoutMs() { return config.humanTimeoutMs; },
          get identifyTimeoutMs() { return config.identifyTimeoutMs; },
          get takeoverProbeTimeoutMs() { return config.takeoverProbeTimeoutMs; },
          subnegotiationTimeoutMs: config.subnegotiationTimeoutMs,
          maxPreIdentifyBuffer: config.maxPreIdentifyBuffer,
          closeGraceMs: config.closeGraceMs,
          // A VM's queue holds replies and client input (bounded by backpressure), and after a
          // vMotion the held input at once (IAC doubled at worst): room for both.
          get maxQueuedBytes() { return config.clientQueueLimit + 2 * config.vmotionHoldLimit; },
          proxyPortHint: `telnet://<this host>:${config.proxyListen.port}`,
        },
      },
      logger,
      {
        maxUnidentified: config.maxUnidentifiedConnections,
        maxUnidentifiedPerAddress: config.maxUnidentifiedPerAddress,
        allow: () => this.config.proxyAllow,
        // Each vMotion under way may bring one destination connection: keep room for it.
        // Capped: vMotions are begun by peers too, and each would otherwise buy one more slot.
        headroom: () => Math.min(this.vmotion.pending, MAX_VMOTION_HEADROOM),
        registration: { ratePerSecond: config.registrationRate, burst: config.registrationBurst },
        onRefused: (reason) => this.metrics.vmRefused(reason),
        admit: (socket) => this.admit(socket, 'vm'),
      },
    );
    const server = this;
    const adminContext: AdminContext = {
      registry: this.registry,
      ...(this.pg ? { clusterRecords: () => this.pg!.clusterList() } : {}),
      vmotion: this.vmotion,
      logger,
      tlsPortOf: (h) => this.listeners.tlsPortOf(h),
      status: () => this.status(),
      consoleLogs: this.consoleLogs ?? undefined,
      metrics: this.metrics,
      // Read per request: the CLI sets reloadConfig after start; without it there is no reload route to offer.
      get reload() {
        return server.reloadConfig ? () => server.reload() : undefined;
      },
      movePort: (hub, port, commit) => this.listeners.moveTo(hub, port, commit),
      ownPorts: () => {
        const a = this.addressesValue;
        const broker = this.broker?.addresses.tcp;
        return a ? [a.proxy.port, a.admin.port, ...(a.proxyTls ? [a.proxyTls.port] : []), ...(broker ? [broker.port] : []), ...(a.ssh ? [a.ssh.port] : [])] : [];
      },
      settingsOf: (h) => resolveVmSettings(this.config, h.identity),
      sshMetrics: () => this.ssh?.metrics() ?? null,
      managedBy: (h) => this.managed.groupOf(h),
      accessOf: (h) => this.accessView(h),
      tunnels: {
        list: () => this.tunnels.list(),
        of: (h) => {
          const name = this.tunnels.carrierOf(h);
          return name === null ? null : this.tunnels.status(name);
        },
        open: (name, port, who, socket) => this.openTunnelStream(name, port, who, socket),
      },
    };
    this.admin = new AdminServer(
      adminRoutes(adminContext),
      logger,
      {
        upgrades: adminUpgrades(adminContext),
        token: () => this.config.adminToken,
        onUnauthorized: () => this.metrics.adminUnauthorized++,
        onRefused: (reason) => this.metrics.adminRefused[reason]++,
        // Its share of the descriptor reserve; idle connections make room for new ones.
        maxConnections: this.fds.adminConnections,
        onConnectionShed: (outcome) => this.metrics.adminShed[outcome]++,
        // A tunnel stream lasts: it leaves the admin API's share for the budget proper.
        admitStream: (socket) => this.admit(socket, 'client'),
        hostNames: () => this.config.adminHostNames ?? [],
      },
    );
  }

  static async start(config: VspcConfig, logger: Logger): Promise<VspcServer> {
    const server = new VspcServer(config, logger);
    try {
      await server.startListening();
    } catch (err) {
      server.destroy();
      throw err;
    }
    return server;
  }

  get addresses(): ServerAddresses {
    if (!this.addressesValue) throw new Error('server not started');
    return this.addressesValue;
  }

  /** Nodes as last read, and when: `status` is also what /metrics reads, so the database is asked at most once a second. */
  private clusterNodes: { at: number; view: ClusterStatusView } | null = null;

  private clusterStatus(now = Date.now()): ClusterStatusView | null {
    const own = this.registry.ownership;
    if (!own) return null;
    if (this.clusterNodes && now - this.clusterNodes.at < 1000) return this.clusterNodes.view;
    // Rows are anyone's with database access: a time out of Date's range shows as none, not as a failed view.
    const iso = (ms: number | null) => (ms === null || !Number.isFinite(ms) || Math.abs(ms) > 8.64e15 ? null : new Date(ms).toISOString());
    let view: ClusterStatusView;
    if (!own.available) view = { node: own.nodeId, nodes: null, error: 'the database session is lost' };
    else {
      try {
        view = { node: own.nodeId, nodes: own.nodes().map((n) => ({ node: n.node, live: n.live, link: n.link, startedAt: iso(n.startedAt), heartbeatAt: iso(n.heartbeatAt) })) };
      } catch (err) {
        view = { node: own.nodeId, nodes: null, error: (err as Error).message };
      }
    }
    this.clusterNodes = { at: now, view };
    return view;
  }

  status(): StatusView {
    const all = this.registry.all();
    return {
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      vmPorts: all.length,
      vmPortsConnected: all.filter((h) => h.source).length,
      clients: all.reduce((n, h) => n + h.clients.size, 0),
      vmConnections: this.proxy.connections.size,
      vmConnectionsRefused: this.proxy.refused,
      vmotions: { ...this.vmotion.counters, pending: this.vmotion.pending },
      ssh: this.ssh?.status() ?? null,
      cluster: this.clusterStatus(),
    };
  }

  /** Where `hub` stands among the machines answering to its name (1: it has had the name longest). */
  private nameRankOf(hub: ConsoleHub): number {
    const name = hub.identity.name;
    if (!name) return 1;
    return this.registry.names.of(name, hub);
  }

  /**
   * A console was added, removed or renamed: the registry's ranks are up to date already
   * (it heard first); the console logs check their by-name links at their next write.
   * A console that took a name another machine already has (after the records loaded at
   * start) is logged with `security: true` and counted: anyone on the VM port can claim a
   * name, and the older console keeps it (its by-name log link, its broker spelling).
   */
  private namesChanged(hub: ConsoleHub | null): void {
    this.consoleLogs?.namesChanged();
    if (!hub || !this.loaded || !hub.identity.name) return;
    const rank = this.nameRankOf(hub);
    if (rank === 1) return;
    const name = hub.identity.name.toLowerCase();
    // The holder's consoles only (not every console): a name claimed again and again costs nothing more.
    const holder = this.registry.names
      .holders(name)
      .filter((h) => h.identity.name?.toLowerCase() === name)
      .sort((a, b) => a.identity.tcpPort - b.identity.tcpPort)
      .at(0);
    this.metrics.nameConflicts++;
    this.logger.warn('a console took a name another console already has; the older one keeps it (by-name log link, console broker)', {
      console: hub.displayName,
      kind: hub.identity.kind,
      ...(hub.identity.kind === 'esxi' ? { uuid: displayKey(hub.identity) } : { key: hub.identity.key }),
      spelledAs: `${hub.identity.name}~${rank}`,
      heldBy: holder ? (holder.identity.kind === 'esxi' ? displayKey(holder.identity) : holder.identity.key) : null,
      hint: 'if the older console is gone for good (a VM re-created with a new UUID), forget it: vspc-admin forget',
      errorCode: 'VSPC_NAME_TAKEN',
      security: true,
    });
  }

  /** A console's endpoints, every access method (`vspc-admin show`). */
  accessView(hub: ConsoleHub): AccessView {
    const telnet = this.listeners.has(hub);
    const tlsPort = this.listeners.tlsPortOf(hub);
    return {
      telnet: telnet ? { port: hub.identity.tcpPort, host: this.config.clientListenHost, listening: hub.listenError === null, error: hub.listenError } : null,
      telnets: telnet && tlsPort !== null ? { port: tlsPort, host: this.config.clientListenHost, listening: hub.tlsListenError === null, error: hub.tlsListenError } : null,
      raw: this.raw.describe(hub),
      unix: this.unix.describe(hub),
      pty: this.ptys.describe(hub),
    };
  }

  /** Opens and closes endpoints as the configuration now says (start, reload). */
  private refreshAccess(): void {
    this.listeners.refresh();
    this.raw.refresh();
    this.unix.refresh();
    this.ptys.refresh();
  }

  /**
   * The descriptor budget's decision for an accepted VM or console socket; a refusal is
   * logged (at most every 10 s, with the count) and counted in /metrics.
   */
  private admit(socket: import('node:net').Socket, side: 'vm' | 'client'): boolean {
    if (this.fds.admit(socket)) return true;
    const now = Date.now();
    if (now - this.lastFdRefusalLog >= 10_000) {
      this.lastFdRefusalLog = now;
      this.logger.warn('file descriptors nearly exhausted; refusing new connections (the admin API keeps a reserve)', {
        side,
        peer: socketPeer(socket),
        inUse: this.fds.inUse,
        limit: this.fds.limit,
        reserve: this.fds.reserve,
        refusedSoFar: this.fds.refused,
        errorCode: 'VSPC_FD_BUDGET_SPENT',
      });
    }
    return false;
  }

  private async startListening(): Promise<void> {
    const c = this.config;
    this.warnAboutExposure();
    await this.consoleLogs?.init();
    if (c.expireAfterMs > 0 || c.expireUnusedAfterMs > 0) this.expire();
    // The records first (before any VM connection could register one), their listeners only recorded.
    this.registry.load();
    this.loaded = true;
    // vspc's own listeners before any console's: consoles can then never take the
    // descriptors these need (a discovery directory of hundreds of sockets once stopped
    // vspc from starting: listen EMFILE).
    const proxy = await this.proxy.listen(c.proxyListen, null);
    const proxyTls = c.proxyTlsListen && c.tls ? await this.proxy.listen(c.proxyTlsListen, { cert: c.tls.cert, key: c.tls.key }) : null;
    // Before the admin API: once it answers, vspc's own listeners are up.
    const ssh = this.ssh ? await this.ssh.start() : null;
    const cluster = await this.startClusterLink();
    const admin = await this.admin.listen(c.adminListen, c.adminTls);
    await this.startBroker();
    this.addressesValue = { proxy, proxyTls, admin, ssh, cluster };
    // Then the consoles, each descriptor through the budget.
    this.listeners.start();
    this.applyConsoles(true);
    this.applyTunnels(true);
    await this.discovered.restart(this.config);
    // Each console's port listening (or its failure recorded) before vspc says it started.
    await this.listeners.settled();
    this.armExpiry();
    this.logger.info('vspc started', {
      version: VERSION,
      db: this.pg ? redactDbUrl(c.dbPath) : c.dbPath,
      ...(this.nodeId !== null ? { node: this.nodeId } : {}),
      vmPorts: this.registry.size,
      portRange: `${c.portRange.start}-${c.portRange.end}`,
    });
  }

  /**
   * The cluster link listening, and its address advertised in the database (the
   * `nodes` row) with a heartbeat, so that the other nodes can reach this one's consoles.
   */
  private async startClusterLink(): Promise<{ host: string; port: number } | null> {
    const link = this.clusterLink;
    const pg = this.pg;
    if (!link || !pg) return null;
    const a = await link.listen();
    pg.advertiseLink(a.host, a.port);
    this.heartbeatTimer = setInterval(() => pg.heartbeat(), 10_000);
    this.heartbeatTimer.unref();
    return a;
  }

  /** What the SSH front door and the broker offer in a cluster: this node's consoles and mirrors of the others'. */
  private offeredConsoles(): ConsoleHub[] {
    const own = this.registry.all();
    return this.clusterMirrors ? [...own, ...this.clusterMirrors.remoteConsoles()] : own;
  }

  /**
   * The console broker: a socket path or address given by the operator that cannot be
   * had stops vspc at start; with `--broker-socket auto` (the default) a missing
   * /run/vspc, or any failure on the default path, only turns the socket off.
   */
  private async startBroker(): Promise<void> {
    const broker = this.broker;
    if (!broker) return;
    const s = this.config.brokerSocket;
    if (s?.auto && !existsSync(dirname(s.path))) {
      this.logger.info('console broker socket off: its directory does not exist (give --broker-socket PATH, or run under the systemd unit)', { path: s.path });
      await broker.start(true);
      return;
    }
    try {
      await broker.start();
    } catch (err) {
      if (!s?.auto) throw err;
      this.logger.warn('console broker socket off: the default path cannot be used', { path: s.path, ...errorFields(err) });
      await broker.start(true);
    }
  }

  /**
   * (Re-)arms the expiry check: hourly, or every expireAfterMs / expireUnusedAfterMs
   * when one is shorter; none when both are 0.
   */
  private armExpiry(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.expiryTimer = null;
    const ages = [this.config.expireAfterMs, this.config.expireUnusedAfterMs].filter((ms) => ms > 0);
    if (ages.length > 0) {
      this.expiryTimer = setInterval(() => this.expire(), Math.min(...ages, 3_600_000));
      this.expiryTimer.unref();
    }
  }

  private expire(): void {
    const c = this.config;
    try {
      // Each expired record is logged and counted by the `expired` listener (see the constructor).
      this.registry.expireRecords({
        unseenMs: c.expireAfterMs > 0 ? c.expireAfterMs : Number.POSITIVE_INFINITY,
        unusedMs: c.expireUnusedAfterMs > 0 ? c.expireUnusedAfterMs : Number.POSITIVE_INFINITY,
      });
    } catch (err) {
      this.logger.error('expiry failed', errorFields(err));
    }
  }

  private warnAboutExposure(): void {
    const c = this.config;
    const eph = ephemeralPortRange();
    if (eph && rangesOverlap(eph, c.portRange)) {
      this.logger.warn('--port-range overlaps the OS ephemeral port range; outgoing connections may take VM ports', {
        portRange: c.portRange,
        ephemeral: eph,
      });
    }
    if (!isLoopbackHost(c.clientListenHost)) {
      // The plain telnet client ports exist even when telnets ones are offered too.
      this.logger.warn('VM client telnet ports listen on a non-loopback address: plain-text consoles are reachable on the network', {
        clientListenHost: c.clientListenHost,
        telnetsAlsoOffered: !!c.tls,
      });
    }
    const vmListeners = [c.proxyListen, ...(c.proxyTlsListen && c.tls ? [c.proxyTlsListen] : [])];
    if (!c.proxyAllow && vmListeners.some((l) => !isLoopbackHost(l.host))) {
      // Anyone who reaches the VM port can claim to be any VM (docs/security.md).
      this.logger.warn('the VM port listens on a non-loopback address without --proxy-allow: any host that reaches it can connect as a VM', {
        proxyListen: vmListeners.map((l) => `${l.host}:${l.port}`),
      });
    }
    if (c.brokerListen && !isLoopbackHost(c.brokerListen.host)) {
      // The broker asks nobody who they are: on the network anyone could attach to any console.
      this.logger.warn('the console broker listens on a non-loopback address: anyone who reaches it can list and attach to every console', {
        brokerListen: `${c.brokerListen.host}:${c.brokerListen.port}`,
      });
    }
    if (!isLoopbackHost(c.adminListen.host)) {
      this.logger.warn(
        c.adminTls ? 'admin API listens on a non-loopback address' : 'admin API listens on a non-loopback address without TLS: its token crosses the network in clear text',
        { adminListen: c.adminListen, tls: !!c.adminTls, token: !!c.adminToken },
      );
    }
  }

  /** SIGHUP / `vspc-admin reload`: re-read the configuration and apply it (see applyConfig). */
  reload(): ReloadReport {
    if (!this.reloadConfig) throw new VspcError('VSPC_RELOAD_UNAVAILABLE', 'this vspc has no configuration to re-read');
    try {
      // The SSH authorized keys are read and checked first: a broken file fails the
      // whole reload, leaving everything as it was.
      let keys;
      try {
        keys = this.ssh?.readKeys() ?? null;
      } catch (err) {
        this.logger.error('configuration reload failed; the running configuration is unchanged', errorFields(err));
        throw err;
      }
      const report = this.reloadConfig();
      if (this.ssh?.reload(keys) && !report.applied.includes('sshAuthorizedKeys')) report.applied.push('sshAuthorizedKeys');
      this.metrics.reloads.ok++;
      return report;
    } catch (err) {
      this.metrics.reloads.failed++;
      throw err;
    }
  }

  /**
   * How each reloadable setting takes effect here; which settings are reloadable is
   * table.ts's `reload` column, and the type demands an applier for each. Called with
   * the new value once it is stored in `config`. `readWhereUsed`: the value is read
   * from `config` through a getter each time it is used (see the constructor), so
   * storing it is applying it; test/e2e/reload.test.ts proves each one by behaviour.
   */
  readonly reloadAppliers: ReloadAppliers = {
    logLevel: (level) => {
      this.logger.level = level;
    },
    expireAfterMs: () => this.armExpiry(),
    expireUnusedAfterMs: () => this.armExpiry(),
    proxyAllow: readWhereUsed,
    takeoverProbeTimeoutMs: readWhereUsed,
    humanTimeoutMs: readWhereUsed,
    identifyTimeoutMs: readWhereUsed,
    serviceName: readWhereUsed,
    comPort: readWhereUsed,
    clientQueueLimit: readWhereUsed,
    sshIdleTimeoutMs: readWhereUsed,
    sshMaxSessionMs: readWhereUsed,
    vmotionTimeoutMs: readWhereUsed,
    vmotionSecretBytes: readWhereUsed,
    adminToken: readWhereUsed,
    // Console settings are pushed into each hub: its scrollback buffer, its default lock, its fixed port.
    scrollbackBytes: () => this.applyVmSettingsToAll(),
    defaultLockMode: () => this.applyVmSettingsToAll(),
    adminHostNames: readWhereUsed,
    greeting: () => this.applyVmSettingsToAll(),
    notices: () => this.applyVmSettingsToAll(),
    replay: () => this.applyVmSettingsToAll(),
    vms: () => {
      this.applyVmSettingsToAll();
      this.refreshAccess();
    },
    consoles: () => {
      this.applyConsoles(false);
      this.applyVmSettingsToAll();
      this.refreshAccess();
    },
    tunnels: () => this.applyTunnels(false),
    access: () => this.refreshAccess(),
    // Discovery restarts as a whole; consoles it finds again keep their records and ports.
    proxmoxRunDir: () => void this.discovered.restart(this.config),
    proxmoxConfDir: () => void this.discovered.restart(this.config),
    libvirtRunDir: () => void this.discovered.restart(this.config),
    discoverGlobs: () => void this.discovered.restart(this.config),
    discoveryRescanMs: () => void this.discovered.restart(this.config),
  };

  /**
   * The config file's `consoles:` made real: each declared console registered (kind
   * `config`, key = its name) with its endpoint running; removed ones forgotten. At
   * start, records of declared consoles that left the file while vspc was down are
   * forgotten too.
   */
  private applyConsoles(atStart: boolean): void {
    const wanted = this.config.consoles.map((c) => ({ kind: 'config', key: c.name, label: '', name: c.name, spec: c.source, specText: c.sourceText }));
    if (atStart) {
      const names = new Set(this.config.consoles.map((c) => c.name));
      for (const hub of this.registry.all()) {
        if (hub.identity.kind === 'config' && !names.has(hub.identity.key)) {
          this.logger.info('declared console no longer in the configuration; forgotten', { console: hub.displayName, port: hub.identity.tcpPort });
          this.registry.forget(hub, 'removed from the configuration');
        }
      }
    }
    const r = this.managed.set('config', wanted, 'forget');
    if (r.added.length + r.removed.length + r.repointed.length + r.failed.length > 0) {
      this.logger.info('declared consoles applied', { ...r });
    }
  }

  /**
   * The config file's `tunnels:` made real (src/access/tunnel/): a tunnel with its own
   * `source:` registers that console like a declared one (kind `tunnel`, key = the
   * tunnel's name); every tunnel then binds to its console and listens on its forwards.
   * At start, records of tunnel consoles that left the file are forgotten.
   */
  private applyTunnels(atStart: boolean): void {
    const own = this.config.tunnels.filter((t) => t.source !== undefined);
    if (atStart) {
      const names = new Set(own.map((t) => t.name.toLowerCase()));
      for (const hub of this.registry.all()) {
        if (hub.identity.kind === 'tunnel' && !names.has(hub.identity.key.toLowerCase())) {
          this.logger.info('tunnel console no longer in the configuration; forgotten', { console: hub.displayName, port: hub.identity.tcpPort });
          this.registry.forget(hub, 'removed from the configuration');
        }
      }
    }
    const wanted = own.map((t) => ({ kind: 'tunnel', key: t.name, label: '', name: t.name, spec: t.source!, specText: t.sourceText! }));
    const m = this.managed.set('tunnel', wanted, 'forget');
    const specs: TunnelSpec[] = this.config.tunnels.map((t) => ({
      name: t.name,
      carrier: t.source !== undefined ? { kind: 'tunnel', key: t.name, label: '' } : { ref: t.console! },
      carrierText: t.source !== undefined ? `source: ${t.sourceText}` : `console: ${t.console}`,
      forwards: t.forwards.map((f) => ({ listen: { ...f.listen }, to: f.to })),
    }));
    const r = this.tunnels.apply(specs);
    if (m.added.length + m.removed.length + m.repointed.length + m.failed.length + r.added.length + r.removed.length + r.changed.length > 0) {
      this.logger.info('tunnels applied', { ...r, consoles: m });
    }
  }

  /**
   * `vspc-admin tunnel NAME PORT` (the admin API's upgraded call): a stream to the
   * guest port, resolved once the agent accepted it; the returned function joins it to
   * the caller's socket. A caller that hangs up while waiting abandons the stream.
   */
  private async openTunnelStream(name: string, port: number, who: string, socket: net.Socket): Promise<(s: net.Socket, head: Buffer) => void> {
    const d = this.tunnels.connect(name, port, who);
    const abandon = () => d.destroy();
    socket.once('close', abandon);
    try {
      await new Promise<void>((resolve, reject) => {
        d.once('tunnel-open', resolve);
        d.once('error', reject);
        d.once('close', () => reject(new VspcError('VSPC_TUNNEL_STREAM_RESET', 'the stream closed before the guest answered')));
      });
    } finally {
      socket.off('close', abandon);
    }
    return (s, head) => {
      if (head.length > 0) d.write(head);
      joinSocket(s, d);
    };
  }

  /**
   * Apply a new configuration without dropping VM connections: what can change at run
   * time takes effect now (reloadAppliers) — for new connections where a value is read
   * at connect time — and the rest is reported as needing a restart.
   */
  applyConfig(next: VspcConfig): ReloadReport {
    return applyReload(this.config, next, this.reloadAppliers);
  }

  private applyVmSettingsToAll(): void {
    for (const hub of this.registry.all()) this.applyVmSettings(hub);
  }

  /**
   * The tunnel of `tunnels:` that carries `hub`, from the config alone (bound or not):
   * a `source:` tunnel's own console (kind `tunnel`, key = its name), or the console a
   * `console:` tunnel's reference names alone (several: the tunnel waits, so none is its
   * carrier). A reference is looked up only when it may name this console at all.
   */
  private configuredTunnelOf(hub: ConsoleHub): string | null {
    const bound = this.tunnels.carrierOf(hub);
    if (bound !== null) return bound;
    const id = hub.identity;
    for (const t of this.config.tunnels) {
      if (t.source !== undefined) {
        if (id.kind === 'tunnel' && id.label === '' && id.key.toLowerCase() === t.name.toLowerCase()) return t.name;
      } else if (t.console !== undefined && mayBeNamed(t.console, id)) {
        const found = lookupConsoles(this.registry, t.console);
        if (found.length === 1 && found[0] === hub) return t.name;
      }
    }
    return null;
  }

  /** The config file's settings for one VM serial port: default lock mode, scrollback size, fixed port. */
  private applyVmSettings(hub: ConsoleHub): void {
    const s = resolveVmSettings(this.config, hub.identity);
    // Clients already attached keep their locks; the default applies to the next ones.
    hub.defaultLockMode = s.lockMode ?? this.config.defaultLockMode;
    hub.logged = s.log ?? true;
    // Shared frozen objects (eight in all), not one per console.
    hub.stream = streamOptions(s.greeting ?? this.config.greeting, s.notices ?? this.config.notices, s.replay ?? this.config.replay);
    // A console configured to carry a tunnel has no console log and no scrollback (its
    // bytes are frames): decided by the config, not by the link being attached, so that
    // neither the link's own attach nor a kick (the link gone until it rebinds) is logged.
    hub.carriesTunnel = this.configuredTunnelOf(hub);
    if (hub.carriesTunnel !== null) hub.logged = false;
    const scrollback = hub.carriesTunnel !== null ? 0 : (s.scrollbackBytes ?? this.config.scrollbackBytes);
    if (hub.scrollback.capacity !== scrollback) hub.scrollback.resize(scrollback);
    if (s.tcpPort === undefined || s.tcpPort === hub.identity.tcpPort) return;
    const holder = this.registry.getByPort(s.tcpPort);
    if (holder) {
      this.logger.warn('fixed port from the config file is held by another VM serial port; not moved', {
        vm: hub.displayName,
        port: hub.identity.tcpPort,
        fixedPort: s.tcpPort,
        heldBy: holder.displayName,
      });
      return;
    }
    const from = hub.identity.tcpPort;
    try {
      this.registry.setPort(hub, s.tcpPort);
      this.logger.info('VM serial port moved to its fixed port from the config file', { vm: hub.displayName, from, to: s.tcpPort });
    } catch (err) {
      this.logger.warn('cannot move VM serial port to its fixed port', { vm: hub.displayName, port: from, fixedPort: s.tcpPort, ...errorFields(err) });
    }
  }

  /** Graceful: stop accepting, tell clients, close VM connections, checkpoint. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.logger.info('vspc shutting down');
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    // vMotions under way finish on this connection set or not at all: refuse new ones.
    this.vmotion.refuseNew();
    // Tunnels first: their streams are reset (RESET(SHUTDOWN) to the agents) while the sources are still there.
    this.tunnels.close();
    const accepting = this.proxy.stopAccepting();
    this.listeners.close();
    this.clientAcceptLog.close();
    const endpoints = Promise.all([this.raw.close(), this.unix.close(), this.ptys.close()]);
    this.broker?.close();
    // SSH sessions (menus too) are told and ended, within the grace period.
    const sshClosed = this.ssh?.close() ?? Promise.resolve();
    for (const hub of this.registry.all()) hub.closeClients('vspc is shutting down');
    this.clusterMirrors?.close('vspc is shutting down');
    this.clusterVmotion?.close('vspc is shutting down');
    this.clusterDialer?.close();
    const linkClosed = this.clusterLink?.close() ?? Promise.resolve();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    for (const conn of this.proxy.connections) conn.close('vspc is shutting down');
    const grace = new Promise<void>((r) => setTimeout(r, this.config.closeGraceMs + 100).unref());
    await Promise.race([accepting, grace]);
    // Sockets unlinked, pty links removed (each endpoint's close is a few system calls).
    await Promise.race([endpoints, grace]);
    for (const conn of this.proxy.connections) conn.destroy('shutdown grace period over');
    await sshClosed;
    await linkClosed;
    this.vmotion.clear();
    // After the connections, so their disconnect lines are in the console logs.
    await this.discovered.close();
    await this.managed.close();
    await this.consoleLogs?.close();
    await this.admin.close();
    this.closeStorage();
    this.logger.info('vspc stopped');
  }

  private closeStorage(): void {
    if (this.db) closeDatabase(this.db);
    // Ends the session: PostgreSQL releases every console this node owned.
    this.pg?.close();
  }

  /** Abort everything now. Idempotent. */
  destroy(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    this.tunnels.close();
    void this.proxy.stopAccepting();
    this.listeners.close();
    this.clientAcceptLog.close();
    void this.raw.close();
    void this.unix.close();
    void this.ptys.close();
    this.broker?.destroy();
    this.ssh?.destroy();
    this.clusterMirrors?.close('vspc stopped');
    this.clusterVmotion?.close('vspc stopped');
    this.clusterDialer?.close();
    void this.clusterLink?.close();
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.vmotion.refuseNew();
    for (const conn of this.proxy.connections) conn.destroy('server destroyed');
    this.vmotion.clear();
    for (const hub of this.registry.all()) hub.closeClients('vspc stopped');
    void this.discovered.close();
    this.managed.destroy();
    void this.consoleLogs?.close();
    void this.admin.close();
    this.closeStorage();
  }
}

/** A PostgreSQL URL as logs show it: without its password. */
function redactDbUrl(url: string): string {
  // A password in the URL never reaches a log line.
  return url.replace(/^([^:]+:\/\/[^:@/?#]*:)[^@/?#]*@/, '$1***@');
}
