import type net from 'node:net';
import type Database from 'better-sqlite3';
import type { Logger } from './logger.js';
import { errorFields } from './logger.js';
import { ephemeralPortRange, rangesOverlap, type VspcConfig } from './config.js';
import { openDatabase, closeDatabase } from './storage/database.js';
import { SerialPortStore } from './storage/serial-port-store.js';
import { Registry } from './domain/registry.js';
import { VmotionCoordinator } from './domain/vmotion.js';
import { ClientListeners } from './transports/client-listeners.js';
import { ProxyListener } from './transports/proxy-listener.js';
import { AdminServer } from './admin/admin-server.js';
import { adminRoutes } from './admin/routes.js';
import { VERSION } from './version.js';


export interface ServerAddresses {
  proxy: net.AddressInfo;
  proxyTls: net.AddressInfo | null;
  admin: net.AddressInfo;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Ports the allocator must never hand to a VM: our own listeners, and with TLS the
 * ports whose telnets twin (port + offset) would land on one of them.
 */
function reservedPorts(c: VspcConfig): number[] {
  const own = [c.proxyListen.port, c.adminListen.port, c.proxyTlsListen?.port ?? 0].filter((p) => p > 0);
  return c.tls ? [...own, ...own.map((p) => p - c.tlsPortOffset)] : own;
}

/**
 * The concentrator: storage, registry, VM listener(s), per-VM client listeners and
 * the admin API, wired together. `close()` drains and is idempotent; `destroy()`
 * aborts.
 */
export class VspcServer {
  readonly registry: Registry;
  readonly vmotion: VmotionCoordinator;
  readonly startedAt = Date.now();
  private readonly db: Database.Database;
  private readonly listeners: ClientListeners;
  private readonly proxy: ProxyListener;
  private readonly admin: AdminServer;
  private addressesValue: ServerAddresses | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;

  private constructor(
    readonly config: VspcConfig,
    private readonly logger: Logger,
  ) {
    this.db = openDatabase(config.dbPath);
    const store = new SerialPortStore(this.db, config.portRange, reservedPorts(config));
    this.registry = new Registry(store, { maxHeldInput: config.vmotionHoldLimit, scrollbackBytes: config.scrollbackBytes });
    this.vmotion = new VmotionCoordinator({ timeoutMs: config.vmotionTimeoutMs }, logger);
    const tlsOptions = config.tls
      ? {
          cert: config.tls.cert,
          key: config.tls.key,
          // Client certificates, when the operator gave a CA: no certificate, no console.
          ...(config.clientCa ? { ca: config.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        }
      : undefined;
    this.listeners = new ClientListeners(this.registry, logger, {
      host: config.vmListenHost,
      tlsPortOffset: config.tlsPortOffset,
      tls: tlsOptions,
      bindRetryMs: config.bindRetryMs,
      maxQueuedBytes: config.clientQueueLimit,
      maxSubnegotiation: config.maxSubnegotiation,
      closeGraceMs: config.closeGraceMs,
      lockWaitMs: config.clientLockWaitMs,
      idleTimeoutMs: config.clientIdleTimeoutMs,
    });
    this.proxy = new ProxyListener(
      {
        registry: this.registry,
        logger,
        vmotion: this.vmotion,
        options: {
          serviceName: config.serviceName,
          comPort: config.comPort,
          maxSubnegotiation: config.maxSubnegotiation,
          humanTimeoutMs: config.humanTimeoutMs,
          identifyTimeoutMs: config.identifyTimeoutMs,
          subnegotiationTimeoutMs: config.subnegotiationTimeoutMs,
          maxPreIdentifyBuffer: config.maxPreIdentifyBuffer,
          closeGraceMs: config.closeGraceMs,
          proxyPortHint: `telnet://<this host>:${config.proxyListen.port}`,
        },
      },
      logger,
    );
    this.admin = new AdminServer(
      adminRoutes({
        registry: this.registry,
        vmotion: this.vmotion,
        logger,
        tlsPortOf: (h) => this.listeners.tlsPortOf(h),
        status: () => this.status(),
      }),
      logger,
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

  status(): Record<string, unknown> {
    const all = this.registry.all();
    return {
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      vmPorts: all.length,
      vmPortsConnected: all.filter((h) => h.source).length,
      clients: all.reduce((n, h) => n + h.clients.size, 0),
      vmConnections: this.proxy.connections.size,
      vmotions: { ...this.vmotion.counters, pending: this.vmotion.pending },
    };
  }

  private async startListening(): Promise<void> {
    const c = this.config;
    this.warnAboutExposure();
    if (c.expireAfterMs > 0) this.expire();
    this.registry.load();
    const proxy = await this.proxy.listen(c.proxyListen, null);
    const proxyTls = c.proxyTlsListen && c.tls ? await this.proxy.listen(c.proxyTlsListen, { cert: c.tls.cert, key: c.tls.key }) : null;
    const admin = await this.admin.listen(c.adminListen);
    this.addressesValue = { proxy, proxyTls, admin };
    if (c.expireAfterMs > 0) {
      this.expiryTimer = setInterval(() => this.expire(), Math.min(c.expireAfterMs, 3_600_000));
      this.expiryTimer.unref();
    }
    this.logger.info('vspc started', {
      version: VERSION,
      db: c.dbPath,
      vmPorts: this.registry.size,
      portRange: `${c.portRange.start}-${c.portRange.end}`,
    });
  }

  private expire(): void {
    try {
      for (const hub of this.registry.expire(this.config.expireAfterMs)) {
        this.logger.info('VM serial port expired (not seen for too long)', { vm: hub.displayName, port: hub.identity.port });
      }
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
    if (!LOOPBACK.has(c.vmListenHost)) {
      // The plain telnet client ports exist even when telnets ones are offered too.
      this.logger.warn('VM client telnet ports listen on a non-loopback address: plain-text consoles are reachable on the network', {
        vmListenHost: c.vmListenHost,
        telnetsAlsoOffered: !!c.tls,
      });
    }
    if (!LOOPBACK.has(c.adminListen.host)) {
      this.logger.warn('admin API listens on a non-loopback address', { adminListen: c.adminListen });
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
    const accepting = this.proxy.stopAccepting();
    this.listeners.close();
    for (const hub of this.registry.all()) hub.closeClients('vspc is shutting down');
    for (const conn of this.proxy.connections) conn.close('vspc is shutting down');
    const grace = new Promise<void>((r) => setTimeout(r, this.config.closeGraceMs + 100).unref());
    await Promise.race([accepting, grace]);
    for (const conn of this.proxy.connections) conn.destroy('shutdown grace period over');
    this.vmotion.clear();
    await this.admin.close();
    closeDatabase(this.db);
    this.logger.info('vspc stopped');
  }

  /** Abort everything now. Idempotent. */
  destroy(): void {
    if (this.expiryTimer) clearInterval(this.expiryTimer);
    void this.proxy.stopAccepting();
    this.listeners.close();
    this.vmotion.refuseNew();
    for (const conn of this.proxy.connections) conn.destroy('server destroyed');
    this.vmotion.clear();
    for (const hub of this.registry.all()) hub.closeClients('vspc stopped');
    void this.admin.close();
    closeDatabase(this.db);
  }
}
