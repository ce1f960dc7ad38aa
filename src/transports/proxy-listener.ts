import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../logger.js';
import { errorFields } from '../logger.js';
import type { HostPort } from '../config.js';
import { EsxiConnection, type EsxiConnectionContext } from './esxi-connection.js';

/**
 * Where ESXi hosts connect in: plain telnet and, with a certificate, telnets (TLS
 * from the first byte). Tracks open VM connections so shutdown can retire them.
 */
export class ProxyListener {
  readonly connections = new Set<EsxiConnection>();
  private readonly servers: net.Server[] = [];

  constructor(
    private readonly ctx: Omit<EsxiConnectionContext, 'onClosed'>,
    private readonly logger: Logger,
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
    const conn = new EsxiConnection(socket, { ...this.ctx, onClosed: (c) => this.connections.delete(c) }, secure);
    this.connections.add(conn);
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
