import type { Socket } from 'node:net';
import type { Logger } from '../../domain/logger.js';
import { CONNECTION_LOG_BUDGET, rateLimitedLogger, type BudgetedLogger } from '../../domain/log-budget.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { errorFields, PeerRefusedError, ProtocolError, VspcError } from '../../errors.js';
import { Option, policyFromLists, TelnetSession, type TelnetSessionHandlers } from '../../protocol/telnet/index.js';
import { decodeControl, encodeControl, VSPC_CONTROL_OPTION, type ConsoleListEntry, type ControlMessage } from '../../protocol/control/vspc-control.js';
import { WriteQueue } from '../../util/write-queue.js';
import { listEntries, offeredConsoles, selectConsole } from './catalogue.js';
import { GlobBudget } from '../../util/glob.js';
import { InputAfterClose } from '../../util/input-after-close.js';

/** Bounds on one broker connection (fixed settings, `brokerLimits`). */
export interface BrokerLimits {
  /** A connection that has not selected a console by then is told and closed. */
  readonly selectTimeoutMs: number;
  /** Connections not yet handed over, at most; past this the oldest is closed for each newcomer. */
  readonly maxPending: number;
  /** LIST-REQUESTs and SELECTs one connection may send before it is closed. */
  readonly maxRequests: number;
  /** A LIST-REPLY carries at most this many bytes of JSON; longer lists take several. */
  readonly pageBytes: number;
  /** The telnet decoder's bound on a subnegotiation on broker connections. */
  readonly maxSubnegotiation: number;
  /** Matching work (glob steps, src/util/glob.ts) one LIST-REQUEST may spend; past it the request is refused. */
  readonly patternSteps: number;
}

/** What the broker hands to the telnet access method once a console is chosen (a TelnetHandover, plus where). */
export interface BrokerHandover {
  readonly socket: Socket;
  readonly hub: ConsoleHub;
  readonly session: TelnetSession;
  route(handlers: TelnetSessionHandlers): void;
  readonly peer: string;
}

export interface BrokerConnectionContext {
  /** Each connection logs through a child with a budget of its own. */
  readonly logger: Logger;
  /** The broker's budgeted logger, for the line any connection can cause once at will (TLS on the broker). Absent: the connection's. */
  readonly acceptLogger?: Logger;
  readonly limits: BrokerLimits;
  /** The registry's consoles now (read per request). */
  consoles(): readonly ConsoleHub[];
  /** Added to "no console named ..." when not null (a cluster node whose database does not answer). */
  listCaveat?(): string | null;
  /** Output queued to a peer that does not read, at most (--client-queue-limit); past it the connection is dropped. */
  maxQueuedBytes(): number;
  /** The connection was dropped for not reading what the broker sent it (metrics). */
  onNotReading?(): void;
  attach(handover: BrokerHandover): void;
  /** The connection left the pending set (handed over or closed). */
  settled(conn: BrokerConnection, outcome: 'selected' | 'closed'): void;
  onProtocolError?(code: string): void;
}

/**
 * One connection to the console broker until it has chosen a console:
 *
 *   negotiating ──WILL 201──▶ selecting ──SELECT(found)──▶ handed over (a TelnetClient from here on)
 *       │                      │  ├─LIST-REQUEST──▶ LIST-REPLY …, stays
 *       │                      │  └─SELECT(not found / ambiguous)──▶ SELECT-REFUSED, stays
 *       └─WONT 201 (stock telnet)──▶ told what this is, closed
 *   any ──select deadline / too many requests / protocol error / too slow / close()──▶ closed
 *
 * Input that is not VSPC-CONTROL before a console is chosen is ignored (nothing is
 * kept), as is a LOCK-REQUEST or WHO: the lock is asked of the console, after SELECTED.
 */
export class BrokerConnection {
  private state: 'negotiating' | 'selecting' | 'handed-over' | 'closed' = 'negotiating';
  private readonly session: TelnetSession;
  /** Where the session's events go: this connection's handlers, then the client's. */
  private target: Omit<TelnetSessionHandlers, 'write'>;
  private requests = 0;
  private readonly deadline: NodeJS.Timeout;
  private closeTimer: NodeJS.Timeout | null = null;
  private readonly log: BudgetedLogger;
  /** Everything written to the peer before the handover, counted (the queue bound). */
  private readonly queue: WriteQueue;
  /** After the handover: the client's writer (its queue bound and its cut-off). */
  private writer: ((bytes: Buffer) => boolean) | null = null;
  private readonly onData = (chunk: Buffer) => this.receive(chunk);
  private readonly onClose = () => this.closed();
  private readonly onError = (err: Error) => this.log.debug('broker connection error', errorFields(err));
  private firstChunk = true;
  /** Input after close(): discarded, then no longer read (util/input-after-close.ts). */
  private readonly afterClose = new InputAfterClose();

  constructor(
    private readonly socket: Socket,
    readonly peer: string,
    private readonly ctx: BrokerConnectionContext,
  ) {
    this.queue = new WriteQueue(socket);
    this.log = rateLimitedLogger(ctx.logger.child({ side: 'broker', peer }), CONNECTION_LOG_BUDGET);
    this.target = {
      subnegotiation: (option, payload) => {
        if (option === VSPC_CONTROL_OPTION && this.session.isEnabled('him', VSPC_CONTROL_OPTION)) this.onControl(payload);
      },
      optionChange: (side, option, enabled) => {
        if (side === 'him' && option === VSPC_CONTROL_OPTION && enabled && this.state === 'negotiating') this.state = 'selecting';
      },
      refused: (side, option) => {
        // A stock telnet client: this endpoint has nothing for it but a pointer.
        if (side === 'him' && option === VSPC_CONTROL_OPTION) this.close("this is vspc's console broker; use: vspc-admin console [NAME]");
      },
      error: (err) => {
        this.log.info('protocol error on the broker; closing', errorFields(err));
        this.ctx.onProtocolError?.(err.code);
        this.destroy();
      },
    };
    this.session = new TelnetSession(
      // A console port's policy (src/access/telnet/client.ts), RFC 2217 COM-PORT included: the
      // session goes on as that console's after SELECTED, with what was agreed here.
      policyFromLists({ us: [Option.ECHO, Option.SGA, Option.BINARY], him: [Option.BINARY, Option.SGA, VSPC_CONTROL_OPTION, Option.COM_PORT] }),
      {
        write: (b) => this.write(b),
        data: (d) => this.target.data?.(d),
        command: (c) => this.target.command?.(c),
        subnegotiation: (o, p) => this.target.subnegotiation?.(o, p),
        optionChange: (s, o, e) => this.target.optionChange?.(s, o, e),
        refused: (s, o) => this.target.refused?.(s, o),
        error: (e) => this.target.error?.(e),
      },
      { maxSubnegotiation: ctx.limits.maxSubnegotiation },
    );
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('close', this.onClose);
    socket.on('error', this.onError);
    this.deadline = setTimeout(() => {
      this.log.debug('no console selected in time; closing', { errorCode: 'VSPC_BROKER_SELECT_TIMEOUT', timeoutMs: ctx.limits.selectTimeoutMs });
      const ms = ctx.limits.selectTimeoutMs;
      this.close(`no console selected within ${ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`}`);
    }, ctx.limits.selectTimeoutMs);
    this.deadline.unref();
    // The same offers as a console's telnet port: after the handover nothing is renegotiated.
    socket.cork();
    this.session.requestUs(Option.ECHO);
    this.session.requestUs(Option.SGA);
    this.session.requestUs(Option.BINARY);
    this.session.requestHim(Option.BINARY);
    this.session.requestHim(Option.SGA);
    this.session.requestHim(VSPC_CONTROL_OPTION);
    socket.uncork();
  }

  /** True until handed over or closed. */
  get pending(): boolean {
    return this.state === 'negotiating' || this.state === 'selecting';
  }

  /** Tell the peer why (a `[vspc: …]` line), FIN, destroy after the grace period. Idempotent. */
  close(reason: string, graceMs = 1000): void {
    if (!this.pending) return;
    this.log.debug('closing broker connection', { reason });
    this.settle('closed');
    this.session.stop();
    this.session.sendData(Buffer.from(`\r\n[vspc: ${reason}]\r\n`, 'utf8'));
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), graceMs);
    this.closeTimer.unref();
  }

  destroy(): void {
    if (this.pending) this.settle('closed');
    this.socket.destroy();
  }

  private settle(outcome: 'selected' | 'closed'): void {
    this.state = outcome === 'selected' ? 'handed-over' : 'closed';
    clearTimeout(this.deadline);
    this.ctx.settled(this, outcome);
    // What the budget suppressed is summarised now; the client logs on its own from here.
    this.log.close();
  }

  /**
   * Every byte for the peer goes through here (negotiation replies, lists, notices), and
   * after the handover on to the client's writer. Past the bound the peer is dropped: a
   * peer that makes the broker answer (toggling an option, asking for lists) and never
   * reads must not make vspc hold the answers without limit.
   */
  private write(bytes: Buffer): boolean {
    if (this.writer) return this.writer(bytes);
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    const ok = this.queue.write(bytes);
    const limit = this.ctx.maxQueuedBytes();
    if (this.queue.cost > limit) {
      this.log.warn('broker connection does not read what vspc sends; disconnected', {
        ...errorFields(new PeerRefusedError('VSPC_PEER_NOT_READING', `more than ${limit} bytes queued for the peer`)),
        queued: this.queue.cost,
        bytes: this.socket.writableLength,
        writes: this.queue.writes,
        limit,
      });
      this.ctx.onNotReading?.();
      this.session.stop();
      this.destroy();
      return true;
    }
    return ok;
  }

  private receive(chunk: Buffer): void {
    if (this.state === 'closed') {
      // Told to go (FIN sent), it keeps sending: discarded, and past a bound no longer read.
      this.afterClose.discard(chunk.length, this.socket, this.log, 'broker connection');
      return;
    }
    if (this.firstChunk) {
      this.firstChunk = false;
      if (chunk[0] === 0x16) {
        // A TLS ClientHello: nothing here speaks TLS.
        (this.ctx.acceptLogger?.child({ side: 'broker', peer: this.peer }) ?? this.log).info('TLS handshake on the console broker; closing', { errorCode: 'VSPC_TLS_ON_PLAIN_PORT' });
        this.ctx.onProtocolError?.('VSPC_TLS_ON_PLAIN_PORT');
        this.destroy();
        return;
      }
    }
    this.socket.cork();
    try {
      this.session.receive(chunk);
    } catch (err) {
      this.log.error('internal error on a broker connection; closing it', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy();
    } finally {
      this.socket.uncork();
    }
  }

  private onControl(payload: Buffer): void {
    if (this.state !== 'selecting') return;
    let msg: ControlMessage;
    try {
      msg = decodeControl(payload);
    } catch (err) {
      if (err instanceof ProtocolError) this.session.fail(err);
      return;
    }
    if (msg.kind !== 'list-request' && msg.kind !== 'select') return;
    if (++this.requests > this.ctx.limits.maxRequests) {
      this.log.info('too many requests on one broker connection; closing', { limit: this.ctx.limits.maxRequests, errorCode: 'VSPC_BROKER_TOO_MANY_REQUESTS' });
      this.close(`more than ${this.ctx.limits.maxRequests} requests on one connection`);
      return;
    }
    if (msg.kind === 'list-request') this.list(msg.pattern);
    else this.select(msg.address);
  }

  private send(msg: ControlMessage): void {
    this.session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl(msg));
  }

  private list(pattern: string): void {
    let entries: ConsoleListEntry[];
    try {
      entries = listEntries(offeredConsoles(this.ctx.consoles()), pattern, new GlobBudget(this.ctx.limits.patternSteps));
    } catch (err) {
      if (!(err instanceof VspcError) || err.code !== 'VSPC_PATTERN_TOO_EXPENSIVE') throw err;
      // Refused, and the connection closed: another expensive pattern costs a new connection.
      this.log.info('broker list refused: pattern too expensive', { pattern: pattern.slice(0, 80), errorCode: err.code, limit: err.context.limit });
      this.close(err.message);
      return;
    }
    const pages = paginate(entries, this.ctx.limits.pageBytes);
    pages.forEach((page, i) => this.send({ kind: 'list-reply', more: i < pages.length - 1, entries: page }));
    this.log.debug('broker list', { pattern, entries: entries.length, pages: pages.length });
  }

  private select(address: string): void {
    const all = this.ctx.consoles();
    const choice = selectConsole(offeredConsoles(all), address, all);
    if ('refused' in choice) {
      const caveat = choice.refused === 'not-found' && !choice.tunnel ? this.ctx.listCaveat?.() : null;
      this.log.info('broker select refused', { address, reason: choice.refused });
      this.send({ kind: 'select-refused', reason: choice.refused, message: caveat ? `${choice.message}; ${caveat}` : choice.message, candidates: choice.candidates });
      return;
    }
    const hub = choice.hub;
    this.log.info('console selected through the broker', { console: hub.displayName });
    this.send({ kind: 'selected', name: hub.displayName });
    this.settle('selected');
    this.socket.off('data', this.onData);
    this.socket.off('close', this.onClose);
    this.socket.off('error', this.onError);
    // Synchronous: the rest of this chunk (a LOCK-REQUEST sent right behind the SELECT)
    // already goes to the client's handlers.
    this.ctx.attach({
      socket: this.socket,
      hub,
      session: this.session,
      peer: this.peer,
      route: (handlers) => {
        this.target = handlers;
        this.writer = handlers.write;
      },
    });
  }

  private closed(): void {
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (this.pending) this.settle('closed');
    this.log.close();
  }
}

/**
 * Entries in pages whose JSON is at most `pageBytes` (an entry longer than that alone
 * gets a page of its own); always at least one page, so an empty list is one empty reply.
 */
export function paginate(entries: readonly ConsoleListEntry[], pageBytes: number): ConsoleListEntry[][] {
  const pages: ConsoleListEntry[][] = [];
  let page: ConsoleListEntry[] = [];
  let size = 2; // []
  for (const e of entries) {
    const n = Buffer.byteLength(JSON.stringify(e)) + 1; // and a comma
    if (page.length > 0 && size + n > pageBytes) {
      pages.push(page);
      page = [];
      size = 2;
    }
    page.push(e);
    size += n;
  }
  pages.push(page);
  return pages;
}
