import type { Socket } from 'node:net';
import type { Logger } from '../../domain/logger.js';
import { CONNECTION_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import { errorFields, PeerRefusedError } from '../../errors.js';
import { TokenBuckets } from '../../util/token-bucket.js';
import { WRITE_OVERHEAD_BYTES, WriteQueue } from '../../util/write-queue.js';
import { AYT, BRK, encodeCommand, encodeData, Option, policyFromLists, TelnetSession, type TelnetSessionHandlers } from '../../protocol/telnet/index.js';
import { decodeControl, encodeControl, VSPC_CONTROL_OPTION, type ControlMessage, type StreamRequest } from '../../protocol/control/vspc-control.js';
import { ProtocolError } from '../../errors.js';
import type { ConsoleClient } from '../../domain/seams.js';
import { BREAK_NOT_SENT, DEFAULT_STREAM, type ConsoleHub, type StreamOptions } from '../../domain/console-hub.js';
import type { LockRequest } from '../../domain/locks.js';
import { describeKey } from '../../domain/identity.js';
import type { ComPortServer } from '../../protocol/rfc2217/index.js';
import { createComPortServer } from './com-port.js';
import { allocateClientId } from '../../domain/client-ids.js';
import { InputAfterClose } from '../../util/input-after-close.js';

export interface TelnetClientOptions {
  /**
   * Bytes queued to a client that does not read (output, notices, replies: everything
   * vspc writes to it, each write priced with its overhead as util/write-queue.ts does);
   * past this it is disconnected (VSPC_PEER_NOT_READING).
   */
  maxQueuedBytes: number;
  maxSubnegotiation: number;
  closeGraceMs: number;
  /**
   * How long to wait for a VSPC-CONTROL lock request before giving the default lock.
   * Stock telnet answers our DO 201 with WONT at once; only clients that say nothing
   * at all (e.g. netcat) wait this long.
   */
  lockWaitMs: number;
  /** Close a client that has sent nothing for this long (0 = never). */
  idleTimeoutMs: number;
  /** Called when a client is dropped for being too slow (metrics). */
  onSlowClientDropped?(): void;
  /** Called when a client is dropped for asking WHO faster than its budget (metrics). */
  onTooManyRequests?(): void;
  /**
   * The client listeners' budgeted logger, for the warnings any connection can cause
   * once at will (TLS on a plain port, a failed TLS handshake): a flood of connections
   * shares one budget. Absent: the client's own logger.
   */
  acceptLogger?: Logger;
  /** Called when a client is closed for a protocol error, with its code (metrics). */
  onProtocolError?(code: string): void;
}

/**
 * Client ids are unique across restarts as well as within one run: console logs and the
 * audit log outlive the process, and "client 3" from two runs would be ambiguous there.
 * Each id is at least the milliseconds since 2025-01-01 when the client connected, and
 * more than the previous id; a restart reuses none unless the previous run handed out
 * ids faster than one per millisecond right up to its end (or the clock went back).
 */
export function nextClientId(now = Date.now()): number {
  // One sequence for every access method (raw, unix and pty clients too): src/domain/client-ids.ts.
  return allocateClientId(now);
}

/**
 * A telnet connection negotiated elsewhere and handed over with a console chosen: the
 * console broker's (src/access/broker/), after SELECT. The session goes on as it is (its
 * options, VSPC-CONTROL included, stay agreed); `route` points its events at the client.
 */
export interface TelnetHandover {
  readonly session: TelnetSession;
  route(handlers: TelnetSessionHandlers): void;
  /** How the peer is shown (lock holders, who, the audit log); e.g. `unix:/run/vspc/broker.sock`. */
  readonly peer: string;
}

/**
 * Fan-out hands every client of a VM the same Buffer; escaping it once instead of
 * once per client keeps the per-chunk cost flat in the number of clients.
 */
const fanout = { input: null as Buffer | null, binary: true, output: null as Buffer | null };
function encodeForFanout(data: Buffer, binary: boolean): Buffer {
  if (fanout.input !== data || fanout.binary !== binary) {
    fanout.input = data;
    fanout.binary = binary;
    fanout.output = encodeData(data, binary);
  }
  return fanout.output!;
}

/** Keystrokes typed before the lock is settled (a second at most) are kept up to this. */
const MAX_EARLY_INPUT = 4096;
/** COM-PORT commands sent before the lock is settled are kept (then answered) up to this many. */
const MAX_EARLY_COM_PORT = 64;
/** How long a client's attach waits for the scrollback to be read back from the console log (after a restart). */
const SCROLLBACK_PRIME_WAIT_MS = 2000;
/**
 * WHO requests one client may make: 32 at once, then 8 a second. A WHO-REPLY grows with
 * the lock holders (names up to 64 bytes each): a 6-byte request can cost kilobytes of
 * JSON, so a client asking in a loop is disconnected (VSPC_PEER_TOO_MANY_REQUESTS)
 * rather than answered at whatever rate it can send. People ask from a menu.
 */
export const WHO_BUDGET = Object.freeze({ ratePerSecond: 8, burst: 32 });

/**
 * Named states of a console client:
 *
 *   Negotiating --WONT 201 / timeout--> attach with the default lock --granted--> Attached
 *        \--LOCK-REQUEST(mode, force)--> attach with that lock -------refused--> Closed
 *   Attached --socket closed / kicked / displaced / too slow--> Closed
 */
type ClientState = 'negotiating' | 'attached' | 'closed';

/**
 * An admin's telnet attached to one VM serial port. We WILL ECHO and SGA (so a stock
 * telnet goes to character mode and does not echo locally) and negotiate BINARY both
 * ways, so all 256 byte values pass unchanged. `vspc-admin connect` additionally
 * speaks VSPC-CONTROL to ask for a lock mode. A client that offers COM-PORT (RFC 2217,
 * WILL 44) gets DO and may set the console's serial line (com-port.ts).
 */
export class TelnetClient implements ConsoleClient {
  readonly id = nextClientId();
  readonly peer: string;
  readonly connectedAt = Date.now();
  private readonly session: TelnetSession;
  private log: Logger;
  /** This client's log budget (its logger and that logger's children share it). */
  private readonly logBudget: BudgetedLogger;
  /** Everything written to the client, counted (the queue bound). */
  private readonly queue: WriteQueue;
  private whoBudget: TokenBuckets | null = null;
  private state: ClientState = 'negotiating';
  private closeTimer: NodeJS.Timeout | null = null;
  private lockTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastInputAt = Date.now();
  private early: Buffer[] = [];
  /** Waiting, before the first attach, for the scrollback to be read back from the console log. */
  private primeWait: 'no' | 'waiting' | 'done' = 'no';
  private earlyBytes = 0;
  /** RFC 2217, once the client offered COM-PORT; commands before the lock is settled wait in earlyComPort. */
  private comPort: ComPortServer | null = null;
  private earlyComPort: Buffer[] = [];
  /** Output held while the client has FLOWCONTROL-SUSPENDed us (RFC 2217); null while not suspended. */
  private suspendedOutput: Buffer[] | null = null;
  private suspendedBytes = 0;
  /** Input after close(): discarded, then no longer read (util/input-after-close.ts). */
  private readonly afterClose = new InputAfterClose();
  user: string | undefined;
  /** What this client's stream carries besides the VM's bytes; settled at attach (until then, the defaults). */
  private stream: StreamOptions = { ...DEFAULT_STREAM };

  constructor(
    private readonly socket: Socket,
    private readonly hub: ConsoleHub,
    logger: Logger,
    private readonly options: TelnetClientOptions,
    readonly secure: boolean,
    /** Set when the console broker hands over a connection (no offers, no UUID in the greeting). */
    private readonly handover?: TelnetHandover,
    /** Telnet over another transport (a unix socket with `protocol: telnet`): its method, peer and origin. */
    private readonly via?: { method: string; peer: string; origin?: ConsoleClient['origin'] },
  ) {
    this.peer = handover?.peer ?? via?.peer ?? `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.queue = new WriteQueue(socket);
    const fields = {
      client: this.id,
      peer: this.peer,
      side: 'client',
      vm: hub.displayName,
      tls: secure,
      ...(handover ? { via: 'broker' } : {}),
      ...(via ? { method: via.method } : {}),
    };
    // One line per few bytes a client sends (a COM-PORT SIGNATURE) must not become a log flood.
    this.logBudget = rateLimitedLogger(logger.child(fields), CONNECTION_LOG_BUDGET);
    this.log = this.logBudget;
    const handlers: TelnetSessionHandlers = {
      write: (b) => this.write(b),
      data: (d) => this.onInput(d),
      command: (c) => this.onCommand(c),
      subnegotiation: (option, payload) => {
        if (option === VSPC_CONTROL_OPTION && this.session.isEnabled('him', VSPC_CONTROL_OPTION)) this.onControl(payload);
        else if (option === Option.COM_PORT && this.session.isEnabled('him', Option.COM_PORT)) this.onComPort(payload);
      },
      refused: (side, option) => {
        if (side === 'him' && option === VSPC_CONTROL_OPTION) this.attach(this.hub.defaultLockMode, false);
      },
      error: (err) => {
        this.log.warn('protocol error from client; closing', errorFields(err));
        this.options.onProtocolError?.(err.code);
        this.destroy(err.code);
      },
    };
    if (handover) {
      this.session = handover.session;
      handover.route(handlers);
    } else {
      this.session = new TelnetSession(
        policyFromLists({ us: [Option.ECHO, Option.SGA, Option.BINARY], him: [Option.BINARY, Option.SGA, VSPC_CONTROL_OPTION, Option.COM_PORT] }),
        handlers,
        { maxSubnegotiation: options.maxSubnegotiation },
      );
    }
    socket.setNoDelay(true);
    // Half-open detection: a client that vanished without FIN is found by keepalive.
    socket.setKeepAlive(true, 30_000);
    if (handover) {
      // The broker checked the first byte and has negotiated already.
      socket.on('data', (c: Buffer) => this.receive(c));
    } else {
      socket.once('data', (chunk: Buffer) => {
        // A TLS ClientHello on a plain port would otherwise be decoded as keystrokes for the VM.
        if (!secure && chunk[0] === 0x16) {
          // One per connection, and anyone can open connections: on the listeners' budget.
          (options.acceptLogger?.child(fields) ?? this.log).warn('TLS handshake on a plain telnet client port; closing (use the telnets port)', {
            errorCode: 'VSPC_TLS_ON_PLAIN_PORT',
          });
          this.options.onProtocolError?.('VSPC_TLS_ON_PLAIN_PORT');
          this.destroy('TLS on a plain port');
          return;
        }
        this.receive(chunk);
        socket.on('data', (c: Buffer) => this.receive(c));
      });
    }
    socket.on('error', (err) => this.log.info('client socket error', errorFields(err)));
    socket.on('close', () => this.onClose());

    if (!handover) {
      // One write for all the offers (and one per received chunk's replies, see receive()).
      socket.cork();
      this.session.requestUs(Option.ECHO);
      this.session.requestUs(Option.SGA);
      this.session.requestUs(Option.BINARY);
      this.session.requestHim(Option.BINARY);
      this.session.requestHim(Option.SGA);
      this.session.requestHim(VSPC_CONTROL_OPTION);
      socket.uncork();
    }
    this.lockTimer = setTimeout(() => this.attach(this.hub.defaultLockMode, false), options.lockWaitMs);
    this.lockTimer.unref();
    // The first client after a restart: the scrollback is read back from the console log while we negotiate.
    void this.hub.primeScrollback();
  }

  /** The lock mode held, once attached. */
  get mode(): string | undefined {
    return this.hub.modeOf(this);
  }

  get method(): string {
    return this.via?.method ?? (this.secure ? 'telnets' : 'telnet');
  }

  get origin(): ConsoleClient['origin'] {
    return this.via?.origin;
  }

  get attached(): boolean {
    return this.state === 'attached';
  }

  // --- ConsoleClient

  deliver(data: Buffer): void {
    if (this.state === 'closed') return;
    this.output(encodeForFanout(data, this.session.isEnabled('us', Option.BINARY)));
  }

  /**
   * A line from vspc, not from the VM. Dropped when this client's stream has notices
   * off, unless `always` (the greeting, which has its own switch; answers the client
   * asked for).
   */
  notice(text: string, always = false): void {
    if (!always && !this.stream.notices) return;
    if (this.state === 'closed') return;
    this.output(encodeData(Buffer.from(`\r\n[vspc: ${text}]\r\n`, 'utf8'), this.session.isEnabled('us', Option.BINARY)));
  }

  /** Console output and notices for the client: written, or held while it has suspended us (RFC 2217). */
  private output(bytes: Buffer): void {
    if (this.suspendedOutput) {
      this.suspendedOutput.push(bytes);
      this.suspendedBytes += bytes.length + WRITE_OVERHEAD_BYTES;
      this.checkQueue();
    } else {
      this.write(bytes);
    }
  }

  /**
   * Every byte for the client goes through here (output and notices, and the replies
   * its own requests cause: negotiation, WHO, COM-PORT), so that one bound covers what
   * vspc queues for it whatever made it queue.
   */
  private write(bytes: Buffer): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    const ok = this.queue.write(bytes);
    return this.checkQueue() ? true : ok;
  }

  /** Past the bound the client is dropped; true then. */
  private checkQueue(): boolean {
    if (this.socket.destroyed) return false;
    const queued = this.queue.cost + this.suspendedBytes;
    const limit = this.options.maxQueuedBytes;
    if (queued <= limit) return false;
    this.log.warn('client too slow; disconnecting', {
      ...errorFields(new PeerRefusedError('VSPC_PEER_NOT_READING', `more than ${limit} bytes queued for the client`)),
      queued,
      bytes: this.socket.writableLength,
      writes: this.queue.writes,
      limit,
      suspended: this.suspendedOutput !== null,
    });
    this.options.onSlowClientDropped?.();
    // Nothing more it sent is acted on (the rest of the chunk included). The queue is
    // already full: telling the client would only queue more, so just go.
    this.session.stop();
    this.destroy('too slow: output queue over the limit');
    return true;
  }

  private suspendOutput(suspended: boolean): void {
    if (suspended) {
      this.suspendedOutput ??= [];
      return;
    }
    const held = this.suspendedOutput;
    this.suspendedOutput = null;
    this.suspendedBytes = 0;
    if (held && held.length > 0) this.write(held.length === 1 ? held[0] : Buffer.concat(held));
  }

  /** A serial BREAK from the VM: IAC BRK, in order with the output around it (RFC 854), also while output is held. */
  breakFromSource(): void {
    if (this.state === 'closed') return;
    this.output(encodeCommand(BRK));
  }

  pauseInput(): void {
    this.socket.pause();
  }

  resumeInput(): void {
    if (this.state !== 'closed') this.socket.resume();
  }

  /** Tell the client why (LOCK-REVOKED too for VSPC-CONTROL clients), then FIN; destroy if it lingers. Idempotent. */
  close(reason: string): void {
    this.finish(reason, true);
  }

  private finish(reason: string, revoke: boolean): void {
    if (this.state === 'closed') return;
    // VSPC-CONTROL clients get the reason as a control message (LOCK-REFUSED was sent
    // already, or LOCK-REVOKED now); stock telnet users as a notice on screen.
    if (this.session.isEnabled('him', VSPC_CONTROL_OPTION)) {
      if (revoke) this.sendControl({ kind: 'lock-revoked', reason });
    } else {
      this.notice(reason);
    }
    this.state = 'closed';
    this.clearTimers();
    // The audit log has the detach with its reason (src/logging/audit.ts).
    this.log.debug('closing client', { reason });
    this.hub.removeClient(this, reason);
    // What was held for a suspended client goes out before the FIN.
    this.suspendOutput(false);
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.options.closeGraceMs);
    this.closeTimer.unref();
  }

  destroy(reason = 'aborted'): void {
    this.state = 'closed';
    this.clearTimers();
    this.hub.removeClient(this, reason);
    this.socket.destroy();
  }

  // --- internals

  private receive(chunk: Buffer): void {
    if (this.state === 'closed') {
      // Told to go (FIN sent), it keeps sending: nothing is acted on, and past a bound it is
      // no longer read; the close grace ends it.
      this.afterClose.discard(chunk.length, this.socket, this.log, 'client');
      return;
    }
    this.socket.cork();
    try {
      this.session.receive(chunk);
    } catch (err) {
      // Whatever goes wrong with one client's input closes that client only.
      this.log.error('internal error while handling client input; closing this client', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy('internal error');
    } finally {
      this.socket.uncork();
    }
  }

  private attach(request: LockRequest, force: boolean, asked: Partial<StreamRequest> = {}): void {
    if (this.state !== 'negotiating' || this.primeWait === 'waiting') return;
    if (this.lockTimer) clearTimeout(this.lockTimer);
    this.lockTimer = null;
    if (this.primeWait === 'no' && !this.hub.scrollbackPrimed) {
      // The replay should hold what the console log has: wait for it, but not for long.
      this.primeWait = 'waiting';
      const go = () => {
        if (this.primeWait !== 'waiting') return;
        clearTimeout(bound);
        this.primeWait = 'done';
        this.attach(request, force, asked);
      };
      const bound = setTimeout(go, SCROLLBACK_PRIME_WAIT_MS);
      bound.unref();
      void this.hub.primeScrollback().then(go);
      return;
    }
    const control = this.session.isEnabled('him', VSPC_CONTROL_OPTION);
    // The console's defaults, less what the client asked to leave out (VSPC-CONTROL flags).
    const stream = this.hub.stream;
    this.stream = {
      greeting: stream.greeting && !asked.noGreeting,
      notices: stream.notices && !asked.noNotices,
      replay: stream.replay && !asked.noReplay,
    };
    const id = this.hub.identity;
    // Through the broker the greeting names the console only: its users never learn UUIDs or ports.
    if (this.stream.greeting) {
      this.notice(this.handover ? this.hub.displayName : `${this.hub.displayName} (${describeKey(id)}${id.label ? `, port ${id.label}` : ''})`, true);
    }
    const decision = this.hub.addClient(this, { request, force, user: this.user, tls: this.secure, replay: this.stream.replay });
    if (!decision.granted) {
      this.log.info('lock refused', { request, reason: decision.reason });
      if (control) this.sendControl({ kind: 'lock-refused', reason: decision.reason });
      this.finish(decision.reason, false);
      return;
    }
    this.state = 'attached';
    this.log = this.log.child({ mode: decision.mode });
    if (control) this.sendControl({ kind: 'lock-granted', mode: decision.mode });
    if (this.options.idleTimeoutMs > 0) this.armIdle();
    const early = this.early;
    this.early = [];
    for (const chunk of early) this.hub.fromClient(this, chunk);
    const comPort = this.earlyComPort;
    this.earlyComPort = [];
    for (const payload of comPort) this.onComPort(payload);
  }

  /** One RFC 2217 command (the client agreed to COM-PORT). Kept until the lock is settled. */
  private onComPort(payload: Buffer): void {
    if (this.state === 'negotiating') {
      if (this.earlyComPort.length < MAX_EARLY_COM_PORT) this.earlyComPort.push(Buffer.from(payload));
      return;
    }
    if (this.state !== 'attached') return;
    this.comPort ??= createComPortServer(this.hub, this, this.log, {
      send: (p) => {
        if (this.state !== 'closed') this.session.sendSubnegotiation(Option.COM_PORT, p);
      },
      notice: (text) => this.notice(text),
      suspend: (s) => this.suspendOutput(s),
      canWrite: () => this.hub.modeOf(this) !== 'readonly',
    });
    this.comPort.receive(payload);
  }

  private onInput(data: Buffer): void {
    this.lastInputAt = Date.now();
    if (this.state === 'attached') {
      this.hub.fromClient(this, data);
    } else if (this.state === 'negotiating' && this.earlyBytes + data.length <= MAX_EARLY_INPUT) {
      this.early.push(Buffer.from(data));
      this.earlyBytes += data.length;
    }
  }

  private onControl(payload: Buffer): void {
    let msg: ControlMessage;
    try {
      msg = decodeControl(payload);
    } catch (err) {
      if (err instanceof ProtocolError) this.session.fail(err);
      return;
    }
    if (msg.kind === 'lock-request') {
      if (this.state !== 'negotiating') return; // One lock per connection; reconnect to change it.
      this.user = msg.user || undefined;
      this.attach(msg.mode, msg.force, msg);
    } else if (msg.kind === 'who') {
      this.whoBudget ??= new TokenBuckets({ ...WHO_BUDGET, maxKeys: 1 });
      if (!this.whoBudget.take('who', performance.now())) {
        this.tooManyRequests();
        return;
      }
      this.sendControl({ kind: 'who-reply', holders: this.hub.locks.list().map((h) => ({ ...h, self: h.clientId === this.id })) });
    }
    // Server-to-client messages from a client are ignored.
  }

  private tooManyRequests(): void {
    this.log.warn('client asks WHO faster than its budget; disconnecting', {
      ...errorFields(new PeerRefusedError('VSPC_PEER_TOO_MANY_REQUESTS', 'WHO requests over the budget')),
      burst: WHO_BUDGET.burst,
      perSecond: WHO_BUDGET.ratePerSecond,
    });
    this.options.onTooManyRequests?.();
    this.session.stop();
    this.close(`too many WHO requests (more than ${WHO_BUDGET.ratePerSecond} a second)`);
  }

  private sendControl(msg: ControlMessage): void {
    this.session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl(msg));
  }

  private onCommand(command: number): void {
    if (this.state !== 'attached') return;
    if (command === BRK) {
      if (this.hub.modeOf(this) === 'readonly') this.notice('read-only: break not sent');
      else if (!this.hub.sendBreak(this)) {
        this.log.debug('break not sent: the source cannot send one', { source: this.hub.source?.kind ?? null });
        this.notice(BREAK_NOT_SENT);
      }
    } else if (command === AYT) this.notice('yes, vspc is here', true);
  }

  /** One timer per client, re-armed lazily: no timer work per keystroke. */
  private armIdle(): void {
    const ms = this.options.idleTimeoutMs;
    const wait = Math.max(0, this.lastInputAt + ms - Date.now());
    this.idleTimer = setTimeout(() => {
      if (this.state !== 'attached') return;
      if (Date.now() - this.lastInputAt >= ms) this.close(`idle for ${Math.round(ms / 1000)} s`);
      else this.armIdle();
    }, wait);
    this.idleTimer.unref();
  }

  /** Timers and pending work of a client that is going: also unanswered COM-PORT commands. */
  private clearTimers(): void {
    this.comPort?.close();
    this.earlyComPort = [];
    if (this.lockTimer) clearTimeout(this.lockTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.lockTimer = null;
    this.idleTimer = null;
  }

  private onClose(): void {
    const wasAttached = this.state === 'attached';
    this.state = 'closed';
    this.clearTimers();
    if (this.closeTimer) clearTimeout(this.closeTimer);
    // The audit log has the detach (with the session's length).
    this.hub.removeClient(this, 'connection closed');
    // What the budget suppressed is summarised before the last line.
    this.logBudget.close();
    if (wasAttached) this.log.debug('client connection closed', { durationMs: Date.now() - this.connectedAt });
  }
}
