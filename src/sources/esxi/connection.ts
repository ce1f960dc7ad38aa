import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { PeerRefusedError, ProtocolError, errorFields } from '../../errors.js';
import type { LogFields, Logger } from '../../domain/logger.js';
import { CONNECTION_LOG_BUDGET, deferredLogger, rateLimitedLogger, type BudgetedLogger, type LogBudget, type LoggerMaker } from '../../domain/log-budget.js';
import type { Registry } from '../../domain/registry.js';
import type { VmotionCoordinator } from '../../domain/vmotion.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { VspcServerProtocol } from '../../protocol/vmware/server-protocol.js';
import type { ProxyRequest } from '../../protocol/vmware/identity.js';
import { sourceReadBudget, type TurnBudget, type TurnBudgeted } from '../../util/turn-budget.js';
import { WriteQueue } from '../../util/write-queue.js';
import { InputAfterClose } from '../../util/input-after-close.js';
import {
  EsxiSession,
  type EsxiDeadline,
  type EsxiSessionContext,
  type EsxiSessionIo,
  type EsxiSessionOptions,
  type EsxiSessionState,
  type TakeoverResult,
} from './session.js';

/** The states of an ESXi connection are its session's (see the diagram in session.ts). */
export type EsxiConnectionState = EsxiSessionState;

export interface EsxiConnectionOptions extends EsxiSessionOptions {
  /** ms. How long `close()` waits for the peer to finish before destroying. */
  closeGraceMs: number;
  /**
   * Bytes. What may wait in the socket for an identified VM that does not read
   * (replies, client input, the input held during a vMotion), priced as util/write-queue.ts
   * prices it; past it the connection is dropped (VSPC_PEER_NOT_READING). Read at each
   * write. Default DEFAULT_VM_QUEUE_LIMIT. A connection that has not identified yet is
   * held to PENDING_VM_QUEUE_LIMIT (or this, when smaller).
   */
  maxQueuedBytes?: number;
}

/** The queue bound of an identified VM connection when the options give none: 3 MiB (see the server's). */
export const DEFAULT_VM_QUEUE_LIMIT = 3 * 1024 * 1024;
/**
 * The queue bound of a connection that has not identified yet: it is sent replies and
 * at most the explanation for people (under 1 KiB) — a real host reads them at once —
 * and there may be a thousand such connections (--max-unidentified).
 */
export const PENDING_VM_QUEUE_LIMIT = 64 * 1024;

export interface EsxiConnectionContext {
  registry: Registry;
  logger: Logger;
  options: EsxiConnectionOptions;
  /** vMotion events go to the coordinator, so this file stays about one connection. */
  vmotion: VmotionCoordinator;
  /** Called once when the connection is gone. */
  onClosed?(conn: EsxiConnection): void;
  /**
   * True when the listening socket already carries TCP_NODELAY and keepalive, which
   * Linux copies to every accepted socket (listener.ts sets them once): then the
   * connection does not set them again (three setsockopt calls per connection).
   */
  socketOptionsInherited?: boolean;
  /** Called when the connection is closed for a protocol error, with its code (metrics). */
  onProtocolError?(code: string): void;
  /** Called once when the connection leaves negotiating/identifying/contending (attached, vMotion peer or closed). */
  onSettled?(conn: EsxiConnection): void;
  /** Asked before the connection creates a new serial port record; false refuses it (see EsxiSessionContext). */
  admitNewIdentity?(conn: EsxiConnection): boolean;
  /** A takeover of a serial port that had a connection ended so (metrics). */
  onTakeover?(result: TakeoverResult): void;
  /** The connection was dropped for not reading what vspc sent it (metrics). */
  onNotReading?(): void;
  /**
   * The listener's budgeted logger, for the warning any connection can cause once at
   * will ("not an ESXi host"): a flood of connections shares one budget. Absent: the
   * connection's own logger.
   */
  acceptLogger?: Logger;
  /** The connection's own log budget. Default CONNECTION_LOG_BUDGET. */
  logBudget?: LogBudget;
  /**
   * Fairness between sources (util/turn-budget.ts): after this many bytes in one
   * event-loop turn the socket is paused until the next turn. Default: the budget all
   * VM-side sources share; null: none (read as fast as the socket delivers).
   */
  readBudget?: TurnBudget | null;
  /**
   * The clock the session's deadlines are computed on, in ms. Default: monotonic
   * (`performance.now`), so a wall-clock step cannot fire or defer a deadline. Tests
   * that mock timers pass a mocked clock.
   */
  clock?(): number;
}

let nextConnectionId = 1;

/** Keepalive idle time of VM connections: a host gone without a FIN is found by it. */
export const KEEPALIVE_MS = 30_000;

const monotonic = (): number => performance.now();

/** The connection a socket belongs to, for the listeners all VM sockets share. */
const OWNER = Symbol('vspc.esxiConnection');
type OwnedSocket = Socket & { [OWNER]?: EsxiConnection };


/** First byte of a TLS record carrying a handshake (ClientHello): RFC 8446 §5.1. */
const TLS_HANDSHAKE = 0x16;

/**
 * The socket glue of one ESXi connection: owns the socket (cork/uncork, keepalive,
 * the TLS-first-byte check, close with a grace period) and the one timer that
 * serves the session's deadlines. Everything the bytes mean is in `EsxiSession`,
 * which is also what the domain (hub, vMotion coordinator) sees of this connection.
 */
export class EsxiConnection implements TurnBudgeted, LoggerMaker {
  readonly kind = 'esxi';
  readonly id = nextConnectionId++;
  readonly session: EsxiSession;
  readonly connectedAt = Date.now();
  private sawFirstByte = false;
  private timer: NodeJS.Timeout | null = null;
  /** The deadline `timer` was armed for. */
  private armed: EsxiDeadline | null = null;
  private closeTimer: NodeJS.Timeout | null = null;
  /** Told when the socket drains (the hub resumes its clients' input). */
  private drainListener: (() => void) | null = null;
  /** Whether the shared 'drain' listener is on the socket: only once a write returned false. */
  private drainHooked = false;
  private readonly clock: () => number;
  private readonly budget: TurnBudget | null;
  budgetTurn = 0;
  budgetBytes = 0;
  /** Set when the session stopped reading for good (a condemned peer, too much input after the end): the budget must not resume it. */
  private readingStopped = false;
  /**
   * Input after vspc ended the connection: discarded, then no longer read
   * (util/input-after-close.ts). A peer refused for an unknown service name was read and
   * parsed at 370 MB/s for the whole close grace (5 s, 3 s of CPU).
   */
  private readonly afterClose = new InputAfterClose();
  /** The connection's log budget (its session's logger and that logger's children share it). */
  private readonly logBudget: BudgetedLogger;
  /** Everything written to the peer, counted (the queue bound). */
  private readonly queue: WriteQueue;

  constructor(
    private readonly socket: Socket,
    private readonly ctx: EsxiConnectionContext,
    readonly secure: boolean,
  ) {
    this.clock = ctx.clock ?? monotonic;
    this.budget = ctx.readBudget === undefined ? sourceReadBudget : ctx.readBudget;
    this.queue = new WriteQueue(socket);
    // One line per few bytes a peer sends (an unknown subcommand, VMOTION-ABORT) must not
    // become a log flood: the connection's lazy logger, on the connection's budget, both
    // made on the first line written at an enabled level (most connections write none
    // at the usual level: a vMotion destination, an idle VM serial port). The connection
    // is its maker (makeLogger): no closure per connection.
    this.logBudget = deferredLogger(ctx.logger, this);
    const glue = new EsxiConnection.Glue(this);
    this.session = new EsxiSession({ id: this.id, log: this.logBudget }, glue, glue);
    if (!ctx.socketOptionsInherited) {
      socket.setNoDelay(true);
      // Half-open detection: a host that vanished without FIN is found by keepalive.
      socket.setKeepAlive(true, KEEPALIVE_MS);
    }
    // Shared listeners (no closures per connection): they find this connection on the socket.
    (socket as OwnedSocket)[OWNER] = this;
    socket.on('data', EsxiConnection.onData);
    socket.on('error', EsxiConnection.onError);
    socket.on('close', EsxiConnection.onClose);
    // The opening offers leave in one write, not one per offer (see onSocketData).
    socket.cork();
    this.session.start(this.clock());
    socket.uncork();
    this.syncTimer();
    this.log.info('VM connection opened');
  }

  // The listeners every VM socket shares (`this` is the socket).
  private static onData(this: OwnedSocket, chunk: Buffer): void {
    this[OWNER]?.onSocketData(chunk);
  }

  private static onError(this: OwnedSocket, err: Error): void {
    this[OWNER]?.log.info('VM socket error', errorFields(err));
  }

  private static onClose(this: OwnedSocket): void {
    this[OWNER]?.onSocketClose();
  }

  private static onDrain(this: OwnedSocket): void {
    this[OWNER]?.drainListener?.();
  }

  /**
   * What the session needs from its owner (EsxiSessionIo and EsxiSessionContext) as one
   * object per connection whose methods live on a prototype, not a dozen closures per
   * connection. Inside the class body, so it may use the connection's private parts.
   */
  private static readonly Glue = class implements EsxiSessionIo, EsxiSessionContext {
    constructor(private readonly c: EsxiConnection) {}
    // EsxiSessionContext
    get registry(): EsxiConnectionContext['registry'] {
      return this.c.ctx.registry;
    }
    get vmotion(): EsxiConnectionContext['vmotion'] {
      return this.c.ctx.vmotion;
    }
    get options(): EsxiConnectionOptions {
      return this.c.ctx.options;
    }
    onSettled(): void {
      this.c.ctx.onSettled?.(this.c);
    }
    onProtocolError(code: string): void {
      this.c.ctx.onProtocolError?.(code);
    }
    admitNewIdentity(): boolean {
      const admit = this.c.ctx.admitNewIdentity;
      return admit ? admit(this.c) : true;
    }
    onTakeover(result: TakeoverResult): void {
      this.c.ctx.onTakeover?.(result);
    }
    acceptLog(): Logger | undefined {
      // Made only when written to (once per connection at most): the listener's budget, this connection's fields.
      const c = this.c;
      return c.ctx.acceptLogger?.child(() => c.logFields());
    }
    // EsxiSessionIo
    write(bytes: Buffer): boolean {
      return this.c.rawWrite(bytes);
    }
    end(): void {
      this.c.end();
    }
    destroy(): void {
      this.c.clearTimer();
      this.c.socket.destroy();
    }
    get destroyed(): boolean {
      return this.c.socket.destroyed;
    }
    remotePeer(): string {
      const s = this.c.socket;
      return `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
    }
    remoteAddress(): string {
      return this.c.socket.remoteAddress ?? '?';
    }
    onDrain(listener: () => void): void {
      this.c.setDrainListener(listener);
    }
    /** A condemned peer: its bytes stay in the kernel (TCP flow control stops it) until the close grace period aborts the socket. */
    stopReading(): void {
      this.c.stopReading();
    }
    deadlineChanged(): void {
      this.c.syncTimer();
    }
  };

  get log(): Logger {
    return this.session.log;
  }

  /**
   * The connection's log fields, computed per line written: the peer's address is asked
   * of the kernel (getpeername) only when something needs it (a log line that is
   * written, a takeover, the admin API).
   */
  logFields(): LogFields {
    return { conn: this.id, peer: this.peer, side: 'vm', tls: this.secure };
  }

  /** LoggerMaker (the deferred logger's): the connection's own logger on its own budget. */
  makeLogger(): BudgetedLogger {
    return rateLimitedLogger(this.ctx.logger.child(() => this.logFields()), this.ctx.logBudget ?? CONNECTION_LOG_BUDGET);
  }

  /** Remote end as `address:port` (asked of the kernel on first use). */
  get peer(): string {
    return this.session.peer;
  }

  /** The remote IP address as the socket reports it (on first use). */
  get remoteAddress(): string {
    return this.socket.remoteAddress ?? '?';
  }

  get state(): EsxiConnectionState {
    return this.session.state;
  }

  get uuid(): string | null {
    return this.session.uuid;
  }

  get vmName(): string | null {
    return this.session.vmName;
  }

  /** The console hub this connection feeds, when it is an identified VM serial port. */
  get hub(): ConsoleHub | null {
    return this.session.hub;
  }

  get proxyRequest(): ProxyRequest | null {
    return this.session.proxyRequest;
  }

  get protocol(): VspcServerProtocol {
    return this.session.protocol;
  }

  /** Graceful: flush what we wrote, then FIN; destroy if the peer lingers. Idempotent. */
  close(reason: string): void {
    this.session.close(reason);
  }

  /** Abort at once. Idempotent. */
  destroy(reason: string): void {
    this.session.destroy(reason);
  }

  // --- internals

  /**
   * Every byte for the peer goes through here: replies, client input, the explanation
   * for people. A peer whose queue passes the bound is dropped — a peer that asks for
   * replies and never reads them must not make vspc hold them without limit.
   */
  private rawWrite(bytes: Buffer): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    const ok = this.queue.write(bytes);
    if (!ok && !this.drainHooked) {
      // Node emits 'drain' only after a write returned false: listening from here on
      // misses none, and a VM whose socket never backs up costs no listener.
      this.drainHooked = true;
      this.socket.on('drain', EsxiConnection.onDrain);
    }
    const limit = this.queueLimit();
    if (this.queue.cost > limit) {
      this.notReading(limit);
      return true;
    }
    return ok;
  }

  private queueLimit(): number {
    const limit = this.ctx.options.maxQueuedBytes ?? DEFAULT_VM_QUEUE_LIMIT;
    const s = this.session.state;
    return s === 'negotiating' || s === 'identifying' || s === 'contending' ? Math.min(limit, PENDING_VM_QUEUE_LIMIT) : limit;
  }

  private notReading(limit: number): void {
    const queued = this.socket.writableLength;
    this.log.warn(
      'VM connection does not read what vspc sends; disconnected',
      errorFields(
        new PeerRefusedError('VSPC_PEER_NOT_READING', `more than ${limit} bytes queued for the peer`, { queued, writes: this.queue.writes, cost: this.queue.cost, limit, state: this.session.state }),
      ),
    );
    this.ctx.onNotReading?.();
    // Nothing more it sent is acted on (the rest of the chunk included).
    this.session.protocol.telnet.stop();
    this.session.destroy('not reading');
  }

  private end(): void {
    this.clearTimer();
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.ctx.options.closeGraceMs);
    this.closeTimer.unref();
  }

  private setDrainListener(listener: () => void): void {
    this.drainListener = listener;
  }

  private onSocketData(chunk: Buffer): void {
    if (!this.sawFirstByte) {
      this.sawFirstByte = true;
      // Have Node ask the kernel for the peer's address now, while the socket is open:
      // lines written after it closed (a vMotion peer gone, the console log's "VM
      // disconnected") still name it. One getpeername per connection that speaks; the
      // text is made only when something reads it.
      void this.socket.remoteAddress;
      if (chunk[0] === TLS_HANDSHAKE && !this.secure) {
        this.session.fail(new ProtocolError('VSPC_TLS_ON_PLAIN_PORT', 'TLS handshake on the plain telnet port (use the telnets port)'));
        return;
      }
    }
    // Everything we answer to one chunk (negotiation replies, option-232 answers,
    // GOAHEAD, held input after COMPLETE) leaves in one writev instead of a syscall per
    // reply; uncorked before this event handler returns, so nothing waits.
    this.socket.cork();
    try {
      this.session.receive(chunk, this.clock());
    } finally {
      this.socket.uncork();
    }
    this.syncTimer();
    if (this.session.discardsInput) {
      this.afterClose.discard(chunk.length, { pause: () => this.stopReading() }, this.log, 'VM connection');
    }
    // A VM pouring output waits for the next turn once it used its share of this one.
    this.budget?.charge(this, chunk.length);
  }

  /** For good: the turn budget does not resume it (the close grace ends the connection). */
  private stopReading(): void {
    this.readingStopped = true;
    this.socket.pause();
  }

  /** TurnBudgeted: the budget of this turn is used up. */
  pauseTurn(): void {
    this.socket.pause();
  }

  /** TurnBudgeted: a new turn. */
  resumeTurn(): void {
    if (!this.readingStopped && !this.socket.destroyed) this.socket.resume();
  }

  /**
   * Keep the one timer on the session's earliest deadline. Deadlines change only in
   * `start`/`receive`/`onTimer` (after which this runs) or disappear (a vMotion
   * coordinator call, a close): a timer left on a vanished deadline wakes up, finds
   * nothing due and re-arms, so no per-chunk timer is needed.
   */
  private syncTimer(): void {
    const d = this.session.deadline();
    if (d === null) {
      this.clearTimer();
      return;
    }
    if (this.timer && this.armed?.at === d.at && this.armed.kind === d.kind) return;
    this.clearTimer();
    this.armed = d;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.armed = null;
      // Node may run a timer up to a millisecond before the clock says its delay has
      // passed: the deadline this timer was armed for has arrived by definition.
      this.session.onTimer(Math.max(this.clock(), d.at));
      this.syncTimer();
    }, Math.max(0, d.at - this.clock()));
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.armed = null;
  }

  private onSocketClose(): void {
    this.session.transportClosed();
    this.clearTimer();
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.drainListener = null;
    // What the budget suppressed is summarised before the last line.
    this.logBudget.close();
    this.log.info('VM connection closed', { durationMs: Date.now() - this.connectedAt });
    this.ctx.onClosed?.(this);
  }
}
