/**
 * Raw TCP (ser2net's `raw`, remserial, `socat - TCP:HOST:PORT`): a TCP port per console
 * that gives exactly the console's bytes both ways — no telnet negotiation, no CR NUL
 * rewriting, no notices, no greeting, no scrollback replay (StreamClient says why).
 *
 * The port is sticky, one per console, allocated from --port-range in the same store
 * and port namespace as the telnet ports (Registry.accessPort(hub, 'raw')), and kept
 * in the store when the method is disabled, so that enabling it again brings the same
 * port back. It listens on --client-listen-host, like the telnet ports; a port that
 * cannot be bound is recorded on the console and retried.
 */
import net from 'node:net';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { errorFields } from '../../errors.js';
import { ConsoleEndpoints, type EndpointDriver } from '../common/endpoints.js';
import { AccessError, accessError } from '../common/errors.js';
import { StreamClient, type StreamClientOptions } from '../common/stream-client.js';
import type { DescriptorBudget } from '../../domain/descriptors.js';

export interface RawListenerOptions extends StreamClientOptions {
  host: string;
  bindRetryMs: number;
  /** The process's descriptor budget: an endpoint that does not fit waits (src/access/common/endpoints.ts). */
  descriptors?: DescriptorBudget;
  /** Whether a console has a raw port (the configuration's `access: raw`). */
  enabled(hub: ConsoleHub): boolean;
  /** The process's descriptor budget (src/runtime/fd-budget.ts): false closes the socket at once. */
  admit?(socket: net.Socket): boolean;
}

interface RawSpec {
  host: string;
  port: number;
}

interface RawHandle {
  server: net.Server;
  port: number;
}

/** The raw TCP port of every console that has the method enabled. */
export class RawListeners {
  private readonly endpoints: ConsoleEndpoints<RawSpec, RawHandle>;

  constructor(
    private readonly registry: Registry,
    private readonly logger: Logger,
    private readonly options: RawListenerOptions,
  ) {
    const driver: EndpointDriver<RawSpec, RawHandle> = {
      method: 'raw',
      // A raw port is the console's own (its sticky port): no other console changes it.
      groupOf: () => null,
      specs: (hubs) => new Map(hubs.map((h) => [h, this.specOf(h)])),
      keyOf: (s) => `${s.host}\0${s.port}`,
      open: (hub, spec) => this.listen(hub, spec),
      close: async (h) => {
        h.server.close();
      },
    };
    this.endpoints = new ConsoleEndpoints(registry, logger, driver, options);
  }

  /** Applies a new configuration (reload). */
  refresh(): void {
    this.endpoints.schedule();
  }

  /** The console's raw port and whether it listens; null when the method is off for it. */
  describe(hub: ConsoleHub): { host: string; port: number; listening: boolean; error: string | null } | null {
    const s = this.endpoints.state(hub);
    if (!s) return null;
    return { host: s.spec.host, port: s.spec.port, listening: s.handle !== null, error: s.error };
  }

  close(): Promise<void> {
    return this.endpoints.close();
  }

  private specOf(hub: ConsoleHub): RawSpec | null {
    if (!this.options.enabled(hub)) {
      if (!this.endpoints.state(hub)) hub.clearAccessError('raw');
      return null;
    }
    try {
      return { host: this.options.host, port: this.registry.accessPort(hub, 'raw') };
    } catch (err) {
      // The range is full (or the record was forgotten meanwhile): no raw port now; a later refresh tries again.
      if (!hub.accessErrors.has('raw')) this.logger.warn('no raw TCP port for a console', { vm: hub.displayName, ...errorFields(err) });
      hub.setAccessError('raw', `no raw port: ${(err as Error).message}`);
      return null;
    }
  }

  private listen(hub: ConsoleHub, spec: RawSpec): Promise<RawHandle> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((socket) => this.accept(hub, server, socket));
      const admit = this.options.admit;
      if (admit) server.prependListener('connection', (s: net.Socket) => {
        if (!admit(s)) s.destroy();
      });
      const onError = (err: NodeJS.ErrnoException) => {
        server.close();
        reject(
          err.code === 'EADDRINUSE'
            ? new AccessError('VSPC_ACCESS_ADDRESS_IN_USE', `EADDRINUSE: cannot listen on ${spec.host}:${spec.port} (another program holds the port)`, { port: spec.port, sysCode: err.code })
            : accessError(err, `cannot listen on ${spec.host}:${spec.port}`, { port: spec.port }),
        );
      };
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        server.on('error', (err) => this.logger.warn('raw TCP listener error', { vm: hub.displayName, port: spec.port, ...errorFields(err) }));
        resolve({ server, port: spec.port });
      });
      server.listen({ host: spec.host, port: spec.port, exclusive: true });
    });
  }

  private accept(hub: ConsoleHub, server: net.Server, socket: net.Socket): void {
    // Refused by the descriptor budget, or the endpoint was retired between accept and here.
    const current = this.endpoints.state(hub)?.handle?.server === server;
    if (socket.destroyed || !current) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    // Half-open detection: a client that vanished without FIN is found by keepalive.
    socket.setKeepAlive(true, 30_000);
    const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    const client = new StreamClient(socket, hub, this.logger, this.options, { method: 'raw', peer, whenTooSlow: 'disconnect' });
    client.attach();
  }
}
