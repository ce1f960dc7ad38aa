/**
 * Making an EndpointRunner for a spec: the link factory for the spec's type comes from
 * a ConnectorRegistry (sources/qemu registers the socket types; a device module
 * registers `device`), the runner gets one child logger per endpoint.
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { Logger } from '../../domain/logger.js';
import { CONNECTION_LOG_BUDGET, rateLimitedLogger } from '../../domain/log-budget.js';
import { formatSourceSpec, type SourceSpec } from '../../domain/source-spec.js';
import { SourceError } from './errors.js';
import { DEFAULT_LINK_OPTIONS, type ConnectorRegistry, type LinkOptions } from './link.js';
import { EndpointRunner, type RunnerOptions } from './runner.js';

export interface EndpointContext extends RunnerOptions {
  /** The parent logger; each endpoint logs through a child with `endpoint` and `console`. */
  logger: Logger;
  /** Link settings (socket mode, datagram size, grace periods). */
  links?: Partial<LinkOptions>;
  /** Start at once (default true); false leaves start() to the caller. */
  start?: boolean;
}

export function createEndpointWith(registry: ConnectorRegistry, spec: SourceSpec, hub: ConsoleHub, ctx: EndpointContext): EndpointRunner {
  const factory = registry.get(spec.type);
  const specText = formatSourceSpec(spec);
  if (!factory) {
    throw new SourceError('VSPC_SOURCE_UNSUPPORTED', `no source is registered for ${spec.type}: (${specText})`, { type: spec.type, known: registry.types });
  }
  // The endpoint's lines (its links' included) on a budget: a peer that repeats itself
  // (telnet commands, datagrams from elsewhere) must not flood the log.
  const logger = rateLimitedLogger(ctx.logger.child({ endpoint: specText, console: hub.displayName }), CONNECTION_LOG_BUDGET, { scope: 'endpoint' });
  const options: LinkOptions = { ...DEFAULT_LINK_OPTIONS, ...ctx.links };
  const connector = factory(spec, { logger, options });
  const runner = new EndpointRunner(spec, connector, hub, { ...ctx, logger });
  // Stopped is final: what the budget suppressed is summarised then.
  runner.on('state', (status: { state: string }) => {
    if (status.state === 'stopped') logger.close();
  });
  if (ctx.start ?? true) runner.start();
  return runner;
}
