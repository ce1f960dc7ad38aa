import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../../domain/logger.js';
import { errorFields } from '../../errors.js';
import type { HostPort } from '../../util/net.js';
import { EsxiConnection, type EsxiConnectionContext } from './connection.js';

/**
 * Where ESXi hosts connect in: plain telnet and, with a certificate, telnets (TLS
 * from the first byte). Tracks open VM connections so shutdown can retire them.
 */
export class EsxiListener {
  readonly connections = new Set<EsxiConnection>();
  /** Connections still negotiating or identifying: what the flood cap counts. */
  private readonly pending = new Set<EsxiConnection>();
  private readonly servers: net.Server[] = [];
  /** Connections dropped because too many were still unidentified (metrics). */
  refused = 0;
  private lastRefusalLog = 0;

  constructor(
    private readonly ctx: Omit<EsxiConnectionContext, 'onClosed' | 'onSettled'>,
    private readonly logger: Logger,
    private readonly maxUnidentified = 1024,
  ) {}

  async listen(addr: HostPort, secure: tls.SecureContextOptions | null): Promise<net.AddressInfo> {
    const onSocket = (socket: net.Socket) => this.accept(socket, secure !== null);
    const server = secure ? tls.createServer({ ...secure }, onSocket) : net.createServer(onSocket);
    if (secure) {
      // Plain telnet (or junk) on the TLS port ends here: log and drop that socket only.
      server.on('tlsClientError', (err, socket) => {
        this.logger.warn('TLS handshake failed on the VM port; closed', {
          peer: `${socket.remoteAddress}:${socket.remotePort}`,
          ...errorFields(err),
        });
        this.ctx.onProtocolError?.('TLS_HANDSHAKE_FAILED');
        socket.destroy();
      });
    }
    server.on('error', (err) => this.logger.error('VM listener error', errorFields(err)));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.servers.push(server);
    const bound = server.address() as net.AddressInfo;
    this.logger.info('listening for VMs', { address: bound.address, port: bound.port, tls: !!secure });
    return bound;
  }

  private accept(socket: net.Socket, secure: boolean): void {
    // A flood of connections that never identify must not use up the file descriptors
    // that identified VMs and their clients need: past the cap, new ones are dropped.
    if (this.unidentified() >= this.maxUnidentified) {
      this.refused++;
      const now = Date.now();
      if (now - this.lastRefusalLog > 10_000) {
        this.lastRefusalLog = now;
        this.logger.warn('too many unidentified VM connections; refusing new ones', {
          peer: `${socket.remoteAddress}:${socket.remotePort}`,
          limit: this.maxUnidentified,
          refusedSoFar: this.refused,
        });
      }
      socket.destroy();
      return;
    }
    const conn = new EsxiConnection(
      socket,
      { ...this.ctx, onClosed: (c) => this.connections.delete(c), onSettled: (c) => this.pending.delete(c) },
      secure,
    );
    this.connections.add(conn);
    if (conn.state === 'negotiating') this.pending.add(conn);
  }

  private unidentified(): number {
    return this.pending.size;
  }

  /**
   * Stop accepting new VM connections. The promise settles once every connection
   * the listeners accepted has closed (net.Server#close semantics), so callers
   * retire the connections before awaiting it.
   */
  stopAccepting(): Promise<void> {
    const done = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    this.servers.length = 0;
    return done.then(() => undefined);
  }
}
