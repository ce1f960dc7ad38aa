/**
 * The host end of one serial tunnel (docs/tunnel-protocol.md, role `host`), attached
 * to the console that carries it as a special client:
 *
 * - the TunnelEndpoint's frames go to the console's source through the hub
 *   (`hub.fromClient`), the source's bytes come back through `deliver`;
 * - the client holds EXCLUSIVE (taken with force: whoever was attached is displaced),
 *   gets no scrollback replay and ignores notices, and the hub is dedicated to it
 *   (`hub.dedicatedTo`): every other client, telnet or otherwise, is refused with a
 *   reason naming the tunnel. So nobody can type into the line, and nothing vspc says
 *   to people ends up in the tunnel;
 * - backpressure: when the source's transport is full the hub pauses its clients
 *   (`pauseInput`); the endpoint's write then returns false until `resumeInput`. From
 *   the line, the endpoint consumes what arrives at once (credit keeps it bounded);
 * - time: one timer, on the earliest of the endpoint's `nextDeadline()`, the open
 *   timeouts of streams not answered yet, and the point at which a link that stays
 *   down is given up (its streams reset).
 *
 * Never re-entered: every call into the endpoint goes through `enter()`; input or a
 * drain that arrives meanwhile (a synchronous path through the source) waits for it.
 */
import { performance } from 'node:perf_hooks';
import type { ConsoleClient } from '../../domain/seams.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { Logger } from '../../domain/logger.js';
import { errorFields } from '../../errors.js';
import { CONNECTION_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import { MAX_LARGE_PAYLOAD, Reason, TunnelEndpoint, TunnelStreamError, type TunnelEndpointOptions, type TunnelEndpointState } from '../../protocol/tunnel/index.js';
import { TunnelDuplex } from './duplex.js';
import { tunnelConsoleRefusal, type TunnelLinkState, type TunnelLinkStatus } from '../../domain/tunnel-status.js';

export interface TunnelLinkOptions {
  /** The tunnel's name (logs, the client's peer text, the refusal reason). */
  name: string;
  /** A console client id (unique among all clients: the server's allocator). */
  clientId: number;
  logger: Logger;
  /** A stream whose OPEN is not answered within this is reset and its connection closed, ms. */
  openTimeoutMs?: number;
  /** A link down this long has its streams reset (their connections closed), ms. */
  giveUpAfterMs?: number;
  /** Endpoint options (tests: shorter keepalive, ...). */
  endpoint?: Partial<Omit<TunnelEndpointOptions, 'role' | 'write' | 'handlers'>>;
  /** State changes (for the manager: logs, metrics). */
  onState?(state: TunnelLinkState): void;
  /** "link up: new session" and "guest agent restarted": at most one line each this often, ms (default 10 s). */
  restartLogIntervalMs?: number;
}

/**
 * A guest restarting its agent in a loop (a HELLO with a fresh boot id each time) is
 * told in one "guest agent restarted" / "link up: new session" line per this long; the
 * others are counted in a `log lines suppressed for this endpoint` line (domain/log-budget.ts).
 */
const DEFAULT_RESTART_LOG_INTERVAL_MS = 10_000;

/** The link's state and counters: one shape in the domain, shared with the admin API's view. */
export type { TunnelLinkState, TunnelLinkStatus } from '../../domain/tunnel-status.js';

const DEFAULT_OPEN_TIMEOUT_MS = 30_000;
const DEFAULT_GIVE_UP_MS = 60_000;

const hex = (n: number): string => n.toString(16).padStart(8, '0');

export class TunnelLink implements ConsoleClient {
  readonly id: number;
  readonly peer: string;
  /** Not a person's telnet client: `who` shows VIA `tunnel`, metrics count it under method="tunnel". */
  readonly method = 'tunnel';
  readonly ep: TunnelEndpoint;
  private hubValue: ConsoleHub | null = null;
  private readonly duplexes = new Set<TunnelDuplex>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private inEp = false;
  private pendingInput: Buffer[] = [];
  private pendingDrain = false;
  private paused = false;
  private closed = false;
  private touchQueued = false;
  private stateValue: TunnelLinkState = 'handshaking';
  private stateSince = Date.now();
  private downSince: number | null = null;
  private streamsRefused = 0;
  private streamsReset = 0;
  private readonly openTimeoutMs: number;
  private readonly giveUpAfterMs: number;
  /** The link's log budget: a guest that keeps breaking the line (bad frames, restarts, streams reset) cannot flood the log. */
  private readonly log: BudgetedLogger;
  /** A tighter budget for the lines a guest causes at will by restarting its agent (see RESTART_LOG_INTERVAL_MS). */
  private readonly restartLog: BudgetedLogger;
  /** Called once when the link is closed (detached from its console, or shut down). */
  onClose: ((reason: string) => void) | null = null;

  constructor(private readonly o: TunnelLinkOptions) {
    this.id = o.clientId;
    this.peer = `tunnel ${o.name}`;
    this.openTimeoutMs = o.openTimeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS;
    this.giveUpAfterMs = o.giveUpAfterMs ?? DEFAULT_GIVE_UP_MS;
    this.log = rateLimitedLogger(o.logger.child({ tunnel: o.name }), CONNECTION_LOG_BUDGET, { scope: 'endpoint' });
    const restartMs = o.restartLogIntervalMs ?? DEFAULT_RESTART_LOG_INTERVAL_MS;
    this.restartLog = rateLimitedLogger(this.log, { burst: 1, perSecond: 1000 / restartMs }, { scope: 'endpoint', summaryIntervalMs: restartMs });
    this.ep = new TunnelEndpoint({
      // The host accepts large frames on every line; the agent, which knows its device,
      // announces them only on a lossless one (virtio-serial), and each side sends at most
      // what the other announced (docs/tunnel-protocol.md 5.1): a UART keeps 1 KiB frames.
      maxPayload: MAX_LARGE_PAYLOAD,
      ...o.endpoint,
      role: 'host',
      write: (bytes) => this.toLine(bytes),
      handlers: {
        linkUp: (i) => {
          this.setState('up');
          if (i.newSession) this.restartLog.info('tunnel link up: new session', { hostBootId: hex(i.bootId), agentBootId: hex(i.peerBootId) });
          else this.log.info('tunnel link up again', { agentBootId: hex(i.peerBootId) });
        },
        linkDown: () => {
          this.setState('down');
          this.log.warn('tunnel link down: the guest agent stopped answering (streams kept for now)', {
            streams: this.ep.streams.length,
            giveUpAfterMs: this.giveUpAfterMs,
          });
        },
        peerRestarted: (i) => {
          this.restartLog.info('tunnel guest agent restarted: its streams were reset', {
            oldAgentBootId: hex(i.oldPeerBootId),
            agentBootId: hex(i.newPeerBootId),
            streamsReset: i.streamsReset,
          });
        },
        // Version 1 agents open nothing; the endpoint answers NOT_ALLOWED without this handler.
        error: (err) => this.log.warn('tunnel: the line is not usable as it is', { errorCode: err.code, error: err.message }),
      },
    });
  }

  /** For `who` and `show` (the admin API reads these off any client). */
  get mode(): string {
    return this.hubValue?.modeOf(this) ?? 'exclusive';
  }
  connectedAt: number | undefined;

  get hub(): ConsoleHub | null {
    return this.hubValue;
  }

  get state(): TunnelLinkState {
    return this.stateValue;
  }

  /** The endpoint's own view (handshaking, up, down, ...). */
  get endpointState(): TunnelEndpointState {
    return this.ep.state;
  }

  /** Monotonic time for the endpoint. */
  now(): number {
    return performance.now();
  }

  /**
   * Attaches to `hub`: EXCLUSIVE with force (whoever was attached is told why and
   * displaced), no replay, and the hub dedicated to this link. Starts the handshake.
   */
  attach(hub: ConsoleHub): void {
    if (this.closed) throw new Error('tunnel link closed');
    this.hubValue = hub;
    hub.dedicatedTo = { clientId: this.id, reason: tunnelConsoleRefusal(hub.displayName, this.o.name) };
    const decision = hub.addClient(this, { request: 'exclusive', force: true, replay: false, user: 'tunnel' });
    if (!decision.granted) {
      // Cannot happen with force; keep the hub usable if it does.
      hub.dedicatedTo = null;
      this.hubValue = null;
      throw new Error(`tunnel ${this.o.name}: cannot attach to ${hub.displayName}: ${decision.reason}`);
    }
    this.connectedAt = Date.now();
    this.enter(() => this.ep.start(this.now()));
  }

  /**
   * A new stream to `port` in the guest, as a Duplex (see duplex.ts). The OPEN goes
   * out now, or when the link comes up. Throws VSPC_TUNNEL_TOO_MANY_STREAMS.
   */
  connect(port: number, who: string): TunnelDuplex {
    if (this.closed) throw new TunnelStreamError('VSPC_TUNNEL_STREAM_RESET', Reason.SHUTDOWN, false, 'the tunnel is closed');
    const d = new TunnelDuplex(port, { now: () => this.now(), touch: () => this.touch() });
    const stream = this.ep.openStream(port, this.now(), d.handlers());
    d.attach(stream);
    this.duplexes.add(d);
    d.once('tunnel-open', () => this.log.debug('tunnel stream open', { stream: stream.id, port, who }));
    d.once('close', () => this.duplexes.delete(d));
    d.on('error', (err: Error) => {
      if (err instanceof TunnelStreamError) {
        if (err.code === 'VSPC_TUNNEL_OPEN_FAILED') this.streamsRefused++;
        else this.streamsReset++;
      }
      this.log.info('tunnel stream failed', { stream: stream.id, port, who, error: err.message });
    });
    this.touch();
    return d;
  }

  /** The streams' Duplexes still open. */
  get openDuplexes(): number {
    return this.duplexes.size;
  }

  status(): TunnelLinkStatus {
    const st = this.ep.stats();
    return {
      state: this.stateValue,
      since: this.stateSince,
      rttMs: st.link.srtt === undefined ? null : Math.round(st.link.srtt * 10) / 10,
      rtoMs: Math.round(st.link.rto),
      retransmits: st.link.retransmits,
      timeouts: st.link.timeouts,
      framesSent: st.link.framesSent,
      framesReceived: st.link.framesReceived,
      lineBytesOut: st.framing.bytesOut,
      lineBytesIn: st.framing.bytesIn,
      discardedBytes: st.framing.discardedBytes,
      badFrames: st.framing.badCrc + st.framing.badCobs + st.framing.tooShort + st.framing.tooLong,
      echoes: st.link.echoes,
      sessions: st.link.sessions,
      peerRestarts: st.link.peerRestarts,
      linkDowns: st.link.linkDowns,
      streams: st.mux.streams,
      streamsOpened: st.mux.streamsOpened,
      streamsRefused: this.streamsRefused,
      streamsReset: this.streamsReset,
      bytesToGuest: st.mux.dataBytesSent,
      bytesFromGuest: st.mux.dataBytesReceived,
      hostBootId: hex(this.ep.bootId),
      agentBootId: this.ep.peerBootId === 0 ? null : hex(this.ep.peerBootId),
    };
  }

  // ------------------------------------------------------------- ConsoleClient

  deliver(data: Buffer): void {
    if (this.closed) return;
    if (this.inEp) {
      this.pendingInput.push(data);
      return;
    }
    this.enter(() => this.ep.receive(data, this.now()));
  }

  /** Notices are for people; a tunnel carries none. */
  notice(): void {}

  pauseInput(): void {
    this.paused = true;
  }

  resumeInput(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.closed) return;
    if (this.inEp) {
      this.pendingDrain = true;
      return;
    }
    this.enter(() => this.ep.drained(this.now()));
  }

  /**
   * Closed by the hub (kicked, console forgotten, vspc shutting down) or by the
   * manager. Every stream is reset (RESET(SHUTDOWN) sent while the source is still
   * there), their connections closed with an error, the endpoint stopped.
   */
  close(reason: string): void {
    if (this.closed) return;
    const hub = this.hubValue;
    if (hub) {
      try {
        if (!this.inEp && this.ep.state !== 'destroyed') this.enter(() => this.ep.resetAllStreams(this.now(), Reason.SHUTDOWN, 'tunnel closed'));
      } catch (err) {
        this.log.debug('tunnel: could not say goodbye to the streams', errorFields(err));
      }
    }
    this.closed = true;
    this.setState('closed');
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const err = new TunnelStreamError('VSPC_TUNNEL_STREAM_RESET', Reason.SHUTDOWN, false, reason.slice(0, 60));
    for (const d of [...this.duplexes]) d.destroy(err);
    this.duplexes.clear();
    this.ep.destroy();
    if (hub) {
      if (hub.dedicatedTo?.clientId === this.id) hub.dedicatedTo = null;
      hub.removeClient(this, reason);
    }
    this.hubValue = null;
    // What the budgets suppressed is summarised before the last line.
    this.restartLog.close();
    this.log.close();
    this.log.info('tunnel link closed', { reason });
    this.onClose?.(reason);
  }

  // ------------------------------------------------------------- internals

  /**
   * The endpoint writes frame by frame; the frames of one turn of the event loop go to
   * the console in one buffer (flushed in a microtask, before any I/O): one write
   * system call per batch instead of one per frame on a fast line. Bounded by what one
   * pump produces (the send window).
   */
  private toLine(bytes: Uint8Array): boolean {
    if (!this.hubValue) return false;
    // No copy yet: every frame is a fresh array.
    this.outBatch.push(bytes);
    if (this.outBatch.length === 1) queueMicrotask(this.flushBatch);
    return !this.paused;
  }

  private outBatch: Uint8Array[] = [];

  private readonly flushBatch = (): void => {
    const frames = this.outBatch;
    this.outBatch = [];
    const hub = this.hubValue;
    if (!hub || frames.length === 0) return;
    const one = frames.length === 1 ? frames[0] : Buffer.concat(frames);
    hub.fromClient(this, Buffer.from(one.buffer, one.byteOffset, one.byteLength));
  };

  private setState(s: TunnelLinkState): void {
    if (this.stateValue === s) return;
    this.stateValue = s;
    this.stateSince = Date.now();
    this.downSince = s === 'down' ? this.now() : null;
    this.o.onState?.(s);
  }

  /** Runs `fn` inside the endpoint guard, then what arrived meanwhile, then re-arms the timer. */
  private enter(fn: () => void): void {
    this.inEp = true;
    try {
      fn();
      while (!this.closed && (this.pendingInput.length > 0 || this.pendingDrain)) {
        const input = this.pendingInput;
        this.pendingInput = [];
        for (const b of input) this.ep.receive(b, this.now());
        if (this.pendingDrain) {
          this.pendingDrain = false;
          this.ep.drained(this.now());
        }
      }
    } catch (err) {
      this.log.error('tunnel endpoint failed; closing the tunnel link', { ...errorFields(err), stack: (err as Error)?.stack });
      this.inEp = false;
      this.close('internal error');
      return;
    } finally {
      this.inEp = false;
    }
    this.arm();
  }

  /** After stream calls from outside the endpoint: re-arm once, soon. */
  private touch(): void {
    if (this.touchQueued || this.closed) return;
    this.touchQueued = true;
    queueMicrotask(() => {
      this.touchQueued = false;
      if (!this.closed) this.arm();
    });
  }

  private nextWake(): number {
    let d = this.ep.nextDeadline() ?? Infinity;
    for (const x of this.duplexes) if (!x.opened) d = Math.min(d, x.openedAt + this.openTimeoutMs);
    if (this.downSince !== null && this.duplexes.size > 0) d = Math.min(d, this.downSince + this.giveUpAfterMs);
    return d;
  }

  private arm(): void {
    if (this.closed) return;
    const at = this.nextWake();
    // A timer due no later than needed is kept (an early wake-up just polls).
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    if (at === Infinity) return;
    this.timerAt = at;
    this.timer = setTimeout(() => this.wake(), Math.max(0, Math.ceil(at - this.now())));
  }

  private wake(): void {
    this.timer = null;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.now();
    for (const d of [...this.duplexes]) {
      if (!d.opened && now >= d.openedAt + this.openTimeoutMs) {
        this.log.info('tunnel stream: the guest did not answer the OPEN in time', { port: d.port, timeoutMs: this.openTimeoutMs, link: this.stateValue });
        d.abort(Reason.ABORTED, new TunnelStreamError('VSPC_TUNNEL_STREAM_RESET', Reason.LINK_DOWN, false, 'no answer from the guest agent'));
      }
    }
    if (this.downSince !== null && now >= this.downSince + this.giveUpAfterMs && this.duplexes.size > 0) {
      this.log.warn('tunnel link down for too long: resetting its streams', { streams: this.duplexes.size, downMs: Math.round(now - this.downSince) });
      const err = new TunnelStreamError('VSPC_TUNNEL_STREAM_RESET', Reason.LINK_DOWN, false, 'the tunnel link is down');
      for (const d of [...this.duplexes]) d.abort(Reason.ABORTED, err);
    }
    this.enter(() => this.ep.poll(this.now()));
  }
}
