/**
 * Making an EndpointRunner for a spec: the link factory for the spec's type comes from
 * a ConnectorRegistry (sources/qemu registers the socket types; a device module
 * registers `device`), the runner gets one child logger per endpoint.
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { LogFields, Logger } from '../../domain/logger.js';
import { CONNECTION_LOG_BUDGET, deferredLogger, rateLimitedLogger, type BudgetedLogger, type LoggerMaker } from '../../domain/log-budget.js';
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
  // (telnet commands, datagrams from elsewhere) must not flood the log. Budget, child
  // logger and fields are made on the first line written at an enabled level: an idle
  // console at `--log-level warn` never makes them.
  const logger = deferredLogger(ctx.logger, new EndpointLoggerMaker(ctx.logger, specText, hub));
  // Spread per endpoint: `links` may have getters on the running configuration (the
  // client queue limit, reloadable), read when an endpoint is made.
  const options: LinkOptions = ctx.links ? { ...DEFAULT_LINK_OPTIONS, ...ctx.links } : DEFAULT_LINK_OPTIONS;
  const connector = factory(spec, { logger, options });
  // Stopped is final: the runner closes the logger then (what the budget suppressed is summarised).
  const runner = new EndpointRunner(spec, connector, hub, { ...ctx, logger, ownedLogger: logger });
  if (ctx.start ?? true) runner.start();
  return runner;
}

/** Makes an endpoint's budgeted logger when its first line is written (see deferredLogger). */
class EndpointLoggerMaker implements LoggerMaker {
  constructor(
    private readonly parent: EndpointContext['logger'],
    private readonly specText: string,
    private readonly hub: ConsoleHub,
  ) {}

  makeLogger(): BudgetedLogger {
    // Fields read per line written: the console may be renamed while the endpoint runs
    // (registry, cluster mirror), and its lines should name it as it is then.
    return rateLimitedLogger(this.parent.child(() => this.logFields()), CONNECTION_LOG_BUDGET, { scope: 'endpoint' });
  }

  private logFields(): LogFields {
    return { endpoint: this.specText, console: this.hub.displayName };
  }
}
