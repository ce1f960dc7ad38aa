/**
 * EndpointRunner: owns one maintained endpoint's lifecycle (a socket QEMU serves, a
 * socket vspc serves for QEMU, a device...), reconnecting with capped exponential
 * backoff, and keeps the hub's `endpoint` status current.
 *
 * Named states (the domain's EndpointState):
 *
 *   dial types (unix, tcp, telnet, udp, device):
 *
 *     start ──> connecting ──link──> connected ──lost──> waiting ──timer/kick──> connecting
 *                   │                                       ▲
 *                   └──────────────failed (error)───────────┘
 *
 *   listen types (unix-listen, tcp-listen):
 *
 *     start ──> connecting (bind) ──bound──> listening ──peer──> connected ──lost──> listening
 *                   │                             │  (a second peer while connected: refused, VSPC_SOURCE_BUSY)
 *                   └──failed──> waiting <──listener failed (peerless)
 *                                  └──timer/kick──> connecting (bind)
 *
 *   any ──close()/destroy()/the hub's source closed──> stopped  (final)
 *
 * On `connected` the link becomes the hub's ConsoleSource (hub.attachSource: clients
 * see "VM connected", console logs mark vm-connected); on loss it is detached
 * (vm-disconnected), so the gap is marked. Closing the hub's source (what the registry
 * does when a console is forgotten) stops the endpoint: vspc does not redial a link it
 * retired itself.
 *
 * Log lines are rate-limited so that an endpoint dead for hours does not flood the
 * log: the first failure of a kind at warn, repeats of the same error (same code and
 * OS code) at debug, a summary at info every `summaryIntervalMs` while it lasts, and
 * the recovery at info with the downtime.
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import { DESCRIPTORS_EXHAUSTED, type DescriptorBudget, type DescriptorLease } from '../../domain/descriptors.js';
import type { Logger, LogFields } from '../../domain/logger.js';
import type { ConsoleSource, EndpointState, EndpointStatus } from '../../domain/seams.js';
import type { SerialLineSettings } from '../../domain/serial-line.js';
import { formatSourceSpec, type SourceSpec } from '../../domain/source-spec.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { SourceError, asSourceError } from './errors.js';
import type { BoundListener, Connector, DialConnector, Link, LinkSink, ListenConnector } from './link.js';

export interface RunnerOptions {
  /**
   * The process's descriptor budget: each attempt (a dial, a listener) and each peer a
   * listener accepts asks it first; an attempt that does not fit waits (state
   * `waiting`, lastError DESCRIPTORS_EXHAUSTED) and is retried, a peer is refused.
   */
  descriptors?: DescriptorBudget;
  backoff?: Partial<BackoffOptions>;
  /** A dial that has not completed by then fails with VSPC_SOURCE_CONNECT_TIMEOUT. Default 10 s. */
  connectTimeoutMs?: number;
  /** While failures repeat (logged at debug), one info line this often. Default 15 min. */
  summaryIntervalMs?: number;
  /** Clock and randomness (tests). */
  now?: () => number;
  random?: () => number;
}

export interface RunnerContext extends RunnerOptions {
  /** The endpoint's logger (the runner adds nothing; the factory makes the child). */
  logger: Logger;
  /** Closed when the runner stops (final): a budgeted logger summarises what it suppressed. */
  ownedLogger?: { close(): void };
}

/** EndpointStatus plus what the runner knows beyond it (a superset: assignable to hub.endpoint). */
/** The endpoint's status (the domain's EndpointStatus has every detail the runner keeps). */
export type EndpointDetail = EndpointStatus;

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_SUMMARY_INTERVAL_MS = 15 * 60_000;

/** A drained close has this long before the runner destroys what is left. */
const CLOSE_SAFETY_MS = 30_000;

/** Where the rate limiting of failure lines stands. */
class FailureLog {
  private key: string | null = null;
  private repeats = 0;
  private lastInfoAt = 0;

  constructor(
    private readonly log: Logger,
    private readonly now: () => number,
    private readonly summaryIntervalMs: number,
  ) {}

  /** True while the current kind of failure has been logged and is repeating. */
  get repeating(): boolean {
    return this.repeats > 0;
  }

  /** A failure: warn the first time (per kind), debug after, an info summary now and then. */
  failure(key: string, message: string, fields: LogFields, summary: () => LogFields): void {
    const now = this.now();
    if (key !== this.key) {
      this.key = key;
      this.repeats = 0;
      this.lastInfoAt = now;
      this.log.warn(message, fields);
      return;
    }
    this.repeats++;
    if (now - this.lastInfoAt >= this.summaryIntervalMs) {
      this.lastInfoAt = now;
      this.log.info('endpoint still unavailable', { ...fields, ...summary() });
    } else {
      this.log.debug(message, fields);
    }
  }

  reset(): void {
    this.key = null;
    this.repeats = 0;
  }
}

let nextRunnerId = 1;

/** The default clock (one function for every runner, not a closure each). */
const wallClock = (): number => Date.now();

/**
 * Not an EventEmitter: an emitter's events object is a dictionary-mode object of
 * ≈ 180 bytes from its construction on, and a runner lives as long as its console;
 * the one event, `state`, has its listeners in an array made on the first `on`.
 */
export class EndpointRunner {
  readonly id = nextRunnerId++;
  readonly spec: SourceSpec;
  /** The canonical spec text (also `hub.endpoint.spec`). */
  readonly specText: string;
  readonly log: Logger;

  private readonly backoff: Backoff;
  private readonly now: () => number;
  private readonly connectTimeoutMs: number;
  /** The rate limiting of failure lines, made on the first failure (a console that never fails has none). */
  private failureLogValue: FailureLog | null = null;
  private readonly summaryIntervalMs: number;

  private stateValue: EndpointState = 'stopped';
  private since: number;
  private nextAttemptAt: number | null = null;
  private lastError: string | null = null;
  private reconnects = 0;
  private attempts = 0;
  private refusedPeers = 0;
  private refusalsLogged = 0;

  private started = false;
  private stopped = false;
  /** Bumped whenever an attempt's outcome stops mattering (new attempt, stop). */
  private generation = 0;
  private pendingDial: AbortController | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private listener: BoundListener | null = null;
  private listeningSince = 0;

  private link: Link | null = null;
  private source: ConsoleSource | null = null;
  private linkSince = 0;
  /** Start of the current outage (for the downtime in the recovery line); null while connected. */
  private outageSince: number | null;
  private failuresInOutage = 0;
  /** The last link lived less than resetAfterMs (with immediate redials: flapping, connect lines at debug). */
  private lastLinkWasShort = false;

  private closing: Promise<void> | null = null;
  private linkGone: (() => void) | null = null;

  private readonly descriptors: DescriptorBudget | null;
  private readonly ownedLogger: { close(): void } | null;
  /** `state` listeners (see `on`); none until the first. */
  private stateListeners: ((status: EndpointDetail) => void)[] | null = null;
  /** The descriptor of the attempt under way or of the live dialled link (dial), or of the listener (listen). */
  private attemptLease: DescriptorLease | null = null;
  /** The descriptor of the peer connected to our listener (listen types). */
  private peerLease: DescriptorLease | null = null;
  /** Waiting for descriptors: cancels the wait. */
  private fdWait: (() => void) | null = null;

  constructor(
    spec: SourceSpec,
    private readonly connector: Connector,
    readonly hub: ConsoleHub,
    ctx: RunnerContext,
  ) {
    this.spec = spec;
    this.specText = formatSourceSpec(spec);
    this.now = ctx.now ?? wallClock;
    this.backoff = new Backoff(ctx.backoff, ctx.random);
    this.connectTimeoutMs = ctx.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.log = ctx.logger;
    this.summaryIntervalMs = ctx.summaryIntervalMs ?? DEFAULT_SUMMARY_INTERVAL_MS;
    this.since = this.now();
    this.outageSince = this.since;
    this.descriptors = ctx.descriptors ?? null;
    this.ownedLogger = ctx.ownedLogger ?? null;
  }

  private failureLog(): FailureLog {
    return (this.failureLogValue ??= new FailureLog(this.log, this.now, this.summaryIntervalMs));
  }

  get state(): EndpointState {
    return this.stateValue;
  }

  get mode(): Connector['mode'] {
    return this.connector.mode;
  }

  /** The live link, if connected (tests, diagnostics). */
  get currentLink(): Link | null {
    return this.link;
  }

  get status(): EndpointDetail {
    return {
      spec: this.specText,
      state: this.stateValue,
      lastError: this.lastError,
      reconnects: this.reconnects,
      since: this.since,
      nextAttemptAt: this.nextAttemptAt,
      attempts: this.attempts,
      refusedPeers: this.refusedPeers,
      peer: this.link?.peer ?? null,
      note: this.link?.note ?? null,
    };
  }

  /** Begins (idempotent; nothing after close/destroy). */
  start(): this {
    if (this.started || this.stopped) return this;
    this.started = true;
    this.log.debug('endpoint started', { mode: this.connector.mode });
    this.attempt();
    return this;
  }

  /**
   * Try now instead of waiting out the backoff (a watcher saw the socket file
   * reappear). Returns whether an attempt was started.
   */
  kick(): boolean {
    if (this.stopped || !this.started || this.stateValue !== 'waiting') return false;
    this.log.debug('kicked: trying now');
    this.attempt();
    return true;
  }

  /**
   * Graceful stop: detaches from the hub, lets the link flush what was written to it,
   * releases a listener (removing a unix-listen socket file). Idempotent; resolves when
   * everything is released.
   */
  close(reason = 'endpoint closed'): Promise<void> {
    if (this.closing) return this.closing;
    this.stopped = true;
    this.cancelAttempt();
    const waits: Promise<void>[] = [];
    const link = this.link;
    if (link) {
      waits.push(this.linkClosed());
      this.leaveHub();
      link.close(reason);
    }
    if (this.listener) {
      const l = this.listener;
      this.listener = null;
      this.releaseAttempt();
      waits.push(l.close().catch((err) => this.log.warn('cannot release the listener', { error: String(err) })));
    }
    this.setState('stopped');
    this.log.info('endpoint stopped', { reason });
    let safety: NodeJS.Timeout | undefined;
    this.closing = Promise.race([
      Promise.all(waits).then(() => undefined),
      new Promise<void>((resolve) => {
        safety = setTimeout(() => {
          this.destroy('close did not finish in time');
          resolve();
        }, CLOSE_SAFETY_MS);
        safety.unref?.();
      }),
    ]).finally(() => clearTimeout(safety));
    return this.closing;
  }

  /** Abort everything at once. Idempotent. */
  destroy(reason = 'endpoint destroyed'): void {
    const wasStopped = this.stopped;
    this.stopped = true;
    this.cancelAttempt();
    const link = this.link;
    if (link) {
      this.leaveHub();
      link.destroy(reason);
    }
    if (this.listener) {
      const l = this.listener;
      this.listener = null;
      this.releaseAttempt();
      l.close().catch(() => {});
    }
    if (!wasStopped) {
      this.setState('stopped');
      this.log.info('endpoint destroyed', { reason });
    }
    if (!this.closing) this.closing = Promise.resolve();
  }

  // ------------------------------------------------------------------ attempts

  private attempt(): void {
    this.clearRetry();
    if (this.stopped) return;
    this.attempts++;
    const gen = ++this.generation;
    // The dial's socket or the listener: one descriptor, asked for before it is opened.
    this.releaseAttempt();
    if (this.descriptors) {
      const lease = this.descriptors.acquire('source', this.hub.displayName);
      if (!lease) {
        this.onAttemptFailed(new SourceError('VSPC_SOURCE_NO_DESCRIPTORS', DESCRIPTORS_EXHAUSTED));
        // Sooner than the backoff when descriptors are freed.
        this.fdWait ??= this.descriptors.whenAvailable(() => {
          this.fdWait = null;
          this.kick();
        });
        return;
      }
      this.attemptLease = lease;
    }
    this.setState('connecting');
    if (this.connector.mode === 'dial') this.dial(this.connector, gen);
    else this.bind(this.connector, gen);
  }

  /** Gives back the attempt's (the dialled link's, the listener's) descriptor. */
  private releaseAttempt(): void {
    this.attemptLease?.release();
    this.attemptLease = null;
  }

  private dial(connector: DialConnector, gen: number): void {
    const ac = new AbortController();
    this.pendingDial = ac;
    this.connectTimer = setTimeout(() => {
      ac.abort(new SourceError('VSPC_SOURCE_CONNECT_TIMEOUT', `no connection within ${this.connectTimeoutMs} ms`));
    }, this.connectTimeoutMs);
    this.connectTimer.unref?.();
    let p: Promise<Link>;
    try {
      p = connector.dial(ac.signal);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (link) => {
        if (gen !== this.generation || this.stopped) {
          link.destroy('endpoint no longer wants this connection');
          return;
        }
        this.endAttempt();
        this.onLink(link);
      },
      (err: unknown) => {
        if (gen !== this.generation || this.stopped) return;
        this.endAttempt();
        this.releaseAttempt();
        this.onAttemptFailed(asSourceError(err));
      },
    );
  }

  private bind(connector: ListenConnector, gen: number): void {
    const current = (): boolean => gen === this.generation && !this.stopped;
    let p: Promise<BoundListener>;
    try {
      p = connector.listen({
        incoming: (link) => {
          if (current()) this.onIncoming(link);
          else link.destroy('endpoint stopped');
        },
        failed: (err) => {
          if (current()) this.onListenerFailed(err);
        },
      });
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      (listener) => {
        if (!current()) {
          listener.close().catch(() => {});
          return;
        }
        this.listener = listener;
        this.listeningSince = this.now();
        this.setState('listening');
        this.log.info('listening for the peer', { address: listener.address });
      },
      (err: unknown) => {
        if (!current()) return;
        this.releaseAttempt();
        this.onAttemptFailed(asSourceError(err));
      },
    );
  }

  private endAttempt(): void {
    this.pendingDial = null;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  /** Abandons an attempt in flight and the retry timer (stop). */
  private cancelAttempt(): void {
    this.generation++;
    this.clearRetry();
    this.fdWait?.();
    this.fdWait = null;
    // A dial in flight gives its descriptor back; a live link keeps it until it closes.
    if (!this.link && !this.listener) this.releaseAttempt();
    const ac = this.pendingDial;
    this.endAttempt();
    ac?.abort(new SourceError('VSPC_SOURCE_CLOSED', 'endpoint stopped'));
  }

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.nextAttemptAt = null;
  }

  private onAttemptFailed(err: SourceError): void {
    this.reconnects++;
    this.failuresInOutage++;
    this.lastError = err.message;
    const delay = this.backoff.next();
    if (err.code === 'VSPC_SOURCE_NO_DESCRIPTORS') {
      // Every endpoint meets this at once: the budget's owner logs it (rate-limited), here it is detail.
      this.log.debug('no file descriptor for the endpoint now; will retry', { errorCode: err.code, retryInMs: delay });
      this.scheduleRetry(delay);
      return;
    }
    this.failureLog().failure(
      `attempt:${err.key}`,
      this.connector.mode === 'dial' ? 'cannot connect to the endpoint; will retry' : 'cannot listen; will retry',
      { errorCode: err.code, sysCode: err.sysCode, error: err.message, retryInMs: delay },
      () => this.outageFields(),
    );
    this.scheduleRetry(delay);
  }

  private scheduleRetry(delay: number): void {
    this.clearRetry();
    this.nextAttemptAt = this.now() + delay;
    this.setState('waiting');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.attempt();
    }, delay);
    this.retryTimer.unref?.();
  }

  private outageFields(): LogFields {
    return {
      failures: this.failuresInOutage,
      downMs: this.outageSince === null ? 0 : this.now() - this.outageSince,
      reconnects: this.reconnects,
    };
  }

  // --------------------------------------------------------------------- links

  private onIncoming(link: Link): void {
    if (!this.link && this.descriptors) {
      const lease = this.descriptors.acquire('source', this.hub.displayName);
      if (!lease) {
        // The budget's owner logged it; the peer (QEMU reconnects) tries again.
        this.refusedPeers++;
        this.lastError = `peer refused: ${DESCRIPTORS_EXHAUSTED}`;
        this.log.debug('peer refused: file descriptors exhausted', { peer: link.peer, errorCode: 'VSPC_FD_BUDGET_SPENT' });
        link.destroy(DESCRIPTORS_EXHAUSTED);
        this.emitStatus();
        return;
      }
      this.peerLease = lease;
    }
    if (this.link) {
      this.refusedPeers++;
      const fields = { peer: link.peer, connected: this.link.peer, refused: this.refusedPeers };
      // One line at warn per connected period, the rest at debug (a peer may hammer).
      if (this.refusalsLogged++ === 0) this.log.warn('second peer refused: this endpoint takes one peer at a time', { errorCode: 'VSPC_SOURCE_BUSY', ...fields });
      else this.log.debug('second peer refused', fields);
      link.destroy('busy: another peer is connected');
      this.emitStatus();
      return;
    }
    this.onLink(link);
  }

  private onLink(link: Link): void {
    const now = this.now();
    this.link = link;
    this.linkSince = now;
    this.refusalsLogged = 0;
    const downMs = this.outageSince === null ? 0 : now - this.outageSince;
    const fields: LogFields = { peer: link.peer, downMs, failures: this.failuresInOutage };
    if (link.note) fields.note = link.note;
    // Flapping (each link dies young, each redial succeeds): the loss was logged once, the connects are noise.
    if (this.lastLinkWasShort && this.failuresInOutage === 0 && (this.failureLogValue?.repeating ?? false)) this.log.debug('endpoint connected', fields);
    else this.log.info(this.reconnects > 0 ? 'endpoint connected again' : 'endpoint connected', fields);
    this.outageSince = null;
    this.failuresInOutage = 0;
    const source = this.makeSource(link);
    this.source = source;
    this.setState('connected');
    const previous = this.hub.attachSource(source);
    if (previous && previous !== source) previous.close('superseded by the endpoint vspc maintains');
    if (link.lineSettings) this.hub.lineSettings = { ...link.lineSettings };
    link.start(new RunnerSink(this, link));
  }

  /** @internal RunnerSink: the link ended. */
  onLinkClosed(link: Link, error: SourceError | null): void {
    if (link !== this.link) return;
    // Its descriptor: a dialled link's is the attempt's; a peer of our listener has its own.
    if (this.connector.mode === 'dial') this.releaseAttempt();
    this.peerLease?.release();
    this.peerLease = null;
    const now = this.now();
    const lived = now - this.linkSince;
    this.link = null;
    this.leaveHub();
    const gone = this.linkGone;
    this.linkGone = null;
    gone?.();
    if (this.stopped) return;

    const err = error ?? new SourceError('VSPC_SOURCE_CLOSED', 'the link was closed');
    this.reconnects++;
    this.lastError = err.message;
    this.outageSince = now;
    this.failuresInOutage = 0;
    const resetAfter = this.backoff.options.resetAfterMs;
    this.lastLinkWasShort = lived < resetAfter;
    const fields = { errorCode: err.code, sysCode: err.sysCode, error: err.message, livedMs: lived, peer: link.peer };
    if (!this.lastLinkWasShort) {
      // A real connection ended (VM stopped, QEMU restarted): start over quickly and loudly.
      this.backoff.reset();
      this.failureLogValue?.reset();
      this.log.info('endpoint connection lost', fields);
    } else {
      this.failureLog().failure(`lost:${err.key}`, 'endpoint connection lost soon after it was made', fields, () => this.outageFields());
    }

    if (this.connector.mode === 'listen' && this.listener) {
      this.setState('listening');
      return;
    }
    this.scheduleRetry(this.backoff.next());
  }

  private onListenerFailed(err: SourceError): void {
    const l = this.listener;
    this.listener = null;
    this.releaseAttempt();
    l?.close().catch(() => {});
    if (this.now() - this.listeningSince >= this.backoff.options.resetAfterMs) this.backoff.reset();
    this.log.warn('listener failed', { errorCode: err.code, sysCode: err.sysCode, error: err.message });
    // A connected peer outlives its listener; the rebind follows when it goes.
    if (this.link) {
      this.lastError = err.message;
      this.emitStatus();
      return;
    }
    this.onAttemptFailed(err);
  }

  private leaveHub(): void {
    const source = this.source;
    this.source = null;
    if (source) this.hub.detachSource(source);
  }

  private linkClosed(): Promise<void> {
    return new Promise((resolve) => {
      const prev = this.linkGone;
      this.linkGone = () => {
        prev?.();
        resolve();
      };
    });
  }

  /** The hub's view of the link: the ConsoleSource whose close() stops this endpoint. */
  private makeSource(link: Link): ConsoleSource {
    const source = new RunnerSource(this, link);
    if (link.sendBreak) source.sendBreak = () => link.sendBreak!();
    if (link.setLineSettings) source.setLineSettings = (s: SerialLineSettings) => link.setLineSettings!(s);
    return source;
  }

  // --------------------------------------------------------------------- state

  private setState(next: EndpointState): void {
    const changed = next !== this.stateValue;
    this.stateValue = next;
    if (changed) this.since = this.now();
    if (next !== 'waiting') this.nextAttemptAt = null;
    this.emitStatus();
    if (next === 'stopped') this.ownedLogger?.close();
  }

  private emitStatus(): void {
    const status = this.status;
    this.hub.endpoint = status;
    const listeners = this.stateListeners;
    if (listeners) for (const l of [...listeners]) l(status);
  }

  /** `state`: called with the new status after every change of state or status detail. */
  on(event: 'state', listener: (status: EndpointDetail) => void): this {
    if (event === 'state') (this.stateListeners ??= []).push(listener);
    return this;
  }

  /** Removes a `state` listener added with `on`. */
  off(event: 'state', listener: (status: EndpointDetail) => void): this {
    const listeners = this.stateListeners;
    const i = event === 'state' && listeners ? listeners.indexOf(listener) : -1;
    if (i >= 0) listeners!.splice(i, 1);
    return this;
  }
}

/**
 * What a live link sends its bytes and its end to: one small object per link, with
 * methods on the prototype instead of two closures and their context (an idle console
 * keeps its link for as long as the VM runs).
 */
class RunnerSink implements LinkSink {
  constructor(
    private readonly runner: EndpointRunner,
    private readonly link: Link,
  ) {}

  data(chunk: Buffer): void {
    this.runner.hub.fromVm(chunk);
  }

  closed(error: SourceError | null): void {
    this.runner.onLinkClosed(this.link, error);
  }
}

/** The hub's ConsoleSource for a live link (methods on the prototype, as RunnerSink). */
class RunnerSource implements ConsoleSource {
  readonly kind: SourceSpec['type'];
  readonly peer: string;
  declare sendBreak?: () => void;
  declare setLineSettings?: (s: SerialLineSettings) => Promise<SerialLineSettings>;

  constructor(
    private readonly runner: EndpointRunner,
    private readonly link: Link,
  ) {
    this.kind = runner.spec.type;
    this.peer = runner.specText;
  }

  write(data: Buffer): boolean {
    return this.link.write(data);
  }

  onDrain(listener: () => void): void {
    this.link.onDrain(listener);
  }

  close(reason: string): void {
    void this.runner.close(reason);
  }
}
