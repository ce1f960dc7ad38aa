/**
 * The QEMU chardev socket backends as console sources vspc maintains itself:
 * `unix:`, `unix-listen:`, `tcp:`, `tcp-listen:`, `telnet:`, `udp:` (one module each),
 * run by the shared EndpointRunner (sources/common: backoff, states, hub status).
 *
 *   const endpoint = createEndpoint(parseSourceSpec('unix:/run/qemu/vm1.serial0'), hub, { logger });
 *   ...
 *   endpoint.kick();          // a watcher saw the socket file appear
 *   await endpoint.close();   // forget / shutdown
 *
 * Other source types plug into the same registry:
 *
 *   const registry = registerQemuSources(new ConnectorRegistry()).register('device', deviceConnector);
 *   createEndpoint(spec, hub, { logger, registry });
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { SourceSpec } from '../../domain/source-spec.js';
import { createEndpointWith, type EndpointContext } from '../common/endpoint.js';
import { ConnectorRegistry } from '../common/link.js';
import type { EndpointRunner } from '../common/runner.js';
import { tcpListenConnector, unixListenConnector } from './listen.js';
import { tcpConnector } from './tcp.js';
import { telnetConnector } from './telnet.js';
import { udpConnector } from './udp.js';
import { unixConnector } from './unix.js';

export function registerQemuSources(registry: ConnectorRegistry): ConnectorRegistry {
  return registry
    .register('unix', unixConnector)
    .register('unix-listen', unixListenConnector)
    .register('tcp', tcpConnector)
    .register('tcp-listen', tcpListenConnector)
    .register('telnet', telnetConnector)
    .register('udp', udpConnector);
}

let defaultRegistry: ConnectorRegistry | null = null;

/** The QEMU socket types only. */
export function qemuRegistry(): ConnectorRegistry {
  defaultRegistry ??= registerQemuSources(new ConnectorRegistry());
  return defaultRegistry;
}

export interface CreateEndpointContext extends EndpointContext {
  /** Link factories by type; default: the QEMU socket types. */
  registry?: ConnectorRegistry;
}

/**
 * An EndpointRunner for `spec` feeding `hub`, started unless `ctx.start` is false.
 * Throws VSPC_SOURCE_UNSUPPORTED for a type the registry does not know (`device:`
 * unless registered).
 */
export function createEndpoint(spec: SourceSpec, hub: ConsoleHub, ctx: CreateEndpointContext): EndpointRunner {
  return createEndpointWith(ctx.registry ?? qemuRegistry(), spec, hub, ctx);
}

export { ConnectorRegistry } from '../common/link.js';
export { EndpointRunner, type EndpointDetail } from '../common/runner.js';
export { SOURCE_ERROR_CODES, SourceError } from '../common/errors.js';
export { DEFAULT_BACKOFF } from '../common/backoff.js';
