import { PeerRefusedError, ProtocolError, errorFields } from '../../errors.js';
import { LazyChildLogger, type LogFields, type Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleSource } from '../../domain/seams.js';
import type { VmotionCoordinator, VmotionEndpoint } from '../../domain/vmotion.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { BRK, Option } from '../../protocol/telnet/constants.js';
import { Ext } from '../../protocol/vmware/codes.js';
import { normalizeIp } from '../../util/cidr.js';
import { VspcServerProtocol, type ComPortState, type UartSettings, type VspcServerProtocolHandlers } from '../../protocol/vmware/server-protocol.js';
import type { SerialLineState } from '../../domain/serial-line.js';
import type { ProxyRequest } from '../../protocol/vmware/identity.js';

/**
 * Named states of one ESXi connection:
 *
 *   negotiating --WILL 232--> identifying --DO-PROXY(S) + VM-VC-UUID--> attached
 *        |                        |   \--VMOTION-PEER(ok)--> vmotion-peer --COMPLETE--> attached
 *        |                        |                                         (decided by the vMotion coordinator)
 *        |                        \--the serial port's connection is alive elsewhere--> contending
 *        +--WONT 232 / human deadline--> closed (after a plain-text explanation for people)
 *   identifying --identify deadline--> closed
 *   contending --old connection answers the probe--> closed (condemned: VSPC_VM_ALIVE)
 *   contending --no answer by the probe deadline / old connection gone--> identifying --> attached
 *   any --protocol error / subnegotiation deadline / close / transport gone--> closed
 *
 * DO-PROXY + VM-VC-UUID also attach from `negotiating` (a host that sends option-232
 * subnegotiations without WILL 232 first is served, as before the split).
 *
 * Takeover: when a VM serial port already has a live connection from another address,
 * a newcomer does not replace it at once (anyone may claim any UUID): the old one is
 * asked GET-VM-VC-UUID and the newcomer waits, `contending`, its output kept in the
 * pre-identification buffer and its VM-NAME unapplied, while client input still goes
 * to the old one. An answer refuses the newcomer; silence until the deadline (a host
 * gone without a FIN) or the old connection closing lets it take over.
 */
export type EsxiSessionState = 'negotiating' | 'identifying' | 'contending' | 'attached' | 'vmotion-peer' | 'closed';

/**
 * How a takeover of a VM serial port that had a connection ended (metrics):
 * - `same-address`: the newcomer came from the old connection's address, no probe;
 * - `no-probe`: probing is off (`takeoverProbeTimeoutMs` 0), the newest wins;
 * - `unanswered`: the old connection did not answer the probe in time and was dropped;
 * - `closed`: the old connection went away while it was probed;
 * - `refused`: the old connection answered: the newcomer was refused.
 */
/** Renames one connection may apply; a real host reports a new name rarely. */
const MAX_RENAMES_PER_CONNECTION = 16;

export const TAKEOVER_RESULTS = ['same-address', 'no-probe', 'unanswered', 'closed', 'refused'] as const;
export type TakeoverResult = (typeof TAKEOVER_RESULTS)[number];

const NO_FIELDS: Readonly<Record<string, unknown>> = Object.freeze({});

/** States in which a connection has not won a serial port yet (the listener's unidentified count). */
function isPending(state: EsxiSessionState): boolean {
  return state === 'negotiating' || state === 'identifying' || state === 'contending';
}

export interface EsxiSessionOptions {
  /** Service name a VM must ask for in DO-PROXY (the part of the URI before `?`). Read once, at construction. */
  serviceName: string;
  /** Answer WILL COM-PORT with DO and record the guest UART (RFC 2217). Read once, at construction. */
  comPort: boolean;
  /** Largest subnegotiation payload in bytes (after unescaping); larger is TELNET_SB_TOO_LONG. */
  maxSubnegotiation: number;
  /** ms. Without option 232 by then, the peer is taken for a person and told what this port is. Read at `start()`. */
  humanTimeoutMs: number;
  /** ms. Option 232 agreed but no DO-PROXY + UUID by then: VSPC_IDENTIFY_TIMEOUT. Read when 232 is agreed. */
  identifyTimeoutMs: number;
  /** ms. An unfinished `IAC SB` may stay open this long: TELNET_SB_TIMEOUT. */
  subnegotiationTimeoutMs: number;
  /** Bytes. Serial output received before identification is kept up to this many bytes. */
  maxPreIdentifyBuffer: number;
  /**
   * ms. Before a newcomer takes a serial port from a live connection at another
   * address, the old one must leave GET-VM-VC-UUID unanswered this long; an answer
   * refuses the newcomer. 0 or absent: no probe, the newest connection wins.
   * Read when a takeover begins.
   */
  takeoverProbeTimeoutMs?: number;
  /** For the explanation shown to people who telnet to the proxy port by hand, e.g. `telnet://<this host>:13370`. */
  proxyPortHint: string;
}

/** What the session needs from the registry (the domain seam that hands out hubs). */
export type EsxiRegistry = Pick<Registry, 'get' | 'register' | 'rename' | 'touch'>;

/** What the session tells the vMotion coordinator (src/domain/vmotion.ts). */
export type EsxiVmotion = Pick<VmotionCoordinator, 'begin' | 'peer' | 'complete' | 'abort' | 'closed'>;

/**
 * The byte stream under the session, owned by the caller (a TCP or TLS socket in
 * `connection.ts`, an array in the tests).
 */
export interface EsxiSessionIo {
  /** Bytes for the peer. Returns false when the transport's buffer is full (see `onDrain`). */
  write(bytes: Buffer): boolean;
  /** Flush what was written, then end the stream (FIN); the owner aborts it if the peer lingers. */
  end(): void;
  /** Abort the stream now. */
  destroy(): void;
  /** The remote end as `address:port`, when `EsxiSessionInit.peer` was not given (asked once, on first use). */
  remotePeer?(): string;
  /** The remote IP address, when `EsxiSessionInit.address` was not given (asked once, on first use). */
  remoteAddress?(): string;
  /** True once the stream is aborted or gone, possibly before `transportClosed()` was called. */
  readonly destroyed: boolean;
  /** Register the one drain listener (the hub's); replaces the previous one. */
  onDrain(listener: () => void): void;
  /** Stop reading the stream (a condemned peer): nothing more it sends is received. Optional. */
  stopReading?(): void;
  /**
   * `deadline()` changed outside a call of the owner's (another connection's probe
   * ended): re-arm the timer. The new deadline may already be due. Optional: without
   * it the owner must call `onTimer` on its own.
   */
  deadlineChanged?(): void;
}

export interface EsxiSessionContext {
  registry: EsxiRegistry;
  vmotion: EsxiVmotion;
  options: EsxiSessionOptions;
  /** Called once when the session leaves negotiating/identifying (attached, vMotion peer or closed). */
  onSettled?(): void;
  /** Called when the session closes for a protocol error (or is refused/explained), with its code (metrics). */
  onProtocolError?(code: string): void;
  /**
   * Asked before this connection creates a new serial port record (a UUID and label
   * never seen): false when its source address spent its registration quota; the
   * caller logs and counts, the session then closes. Absent: no quota.
   */
  admitNewIdentity?(): boolean;
  /** A takeover of a serial port that had a connection ended so (metrics). */
  onTakeover?(result: TakeoverResult): void;
  /**
   * The listener's budgeted logger with this connection's fields, asked only when the
   * once-per-connection warning any peer can cause ("not an ESXi host") is written, so
   * that a connection that never writes it costs no logger. Undefined: `log`.
   * `EsxiSessionInit.acceptLog`, when given, comes first.
   */
  acceptLog?(): Logger | undefined;
}

export interface EsxiSessionInit {
  /** Connection number, for logs and the vMotion coordinator. */
  id: number;
  /**
   * Remote end as `address:port`. Absent: asked of the transport (`io.remotePeer`) the
   * first time it is needed (a log line, a takeover, the admin API), so that a
   * connection nobody asks about (a vMotion destination) costs no `getpeername` and no
   * formatting.
   */
  peer?: string;
  /** The remote IP address (default: `io.remoteAddress`, else `peer` without its port), compared for the same-address takeover. */
  address?: string;
  /** Logger for this connection (already carrying conn/peer fields). */
  log: Logger;
  /**
   * The listener's budgeted logger (with the same fields), for the warning any
   * connection can cause once at will: "not an ESXi host". Default: `log`.
   */
  acceptLog?: Logger;
}

/**
 * Which timer is due:
 * - `human`: no WILL 232 since `start()` (`humanTimeoutMs`): explain in plain text and close;
 * - `identify`: 232 agreed, no DO-PROXY + VM-VC-UUID (`identifyTimeoutMs`): VSPC_IDENTIFY_TIMEOUT;
 * - `takeover-probe`: contending, the old connection did not answer GET-VM-VC-UUID in
 *   `takeoverProbeTimeoutMs`: it is dropped (VSPC_PROBE_UNANSWERED) and this one retries;
 * - `retry`: contending, the probe ended elsewhere (the old connection left): try to attach now;
 * - `subnegotiation`: an `IAC SB` open across chunks for `subnegotiationTimeoutMs`: TELNET_SB_TIMEOUT.
 */
export type EsxiDeadlineKind = 'human' | 'identify' | 'takeover-probe' | 'retry' | 'subnegotiation';

export interface EsxiDeadline {
  /** ms on the owner's clock (the `now` it passes in). */
  at: number;
  kind: EsxiDeadlineKind;
}

/**
 * One ESXi host's connection without sockets or timers (the ws receiver/websocket and
 * ssh2 Protocol split): bytes in through `receive(chunk, now)`, bytes out through
 * `io.write`, decisions out through the domain seams (registry, vMotion coordinator,
 * the console hub). Time enters only as the `now` arguments: the owner asks
 * `deadline()` after each call and calls `onTimer(now)` when it has passed.
 *
 * The session is what the domain sees of this connection: the hub's `ConsoleSource`
 * and the coordinator's `VmotionEndpoint`.
 *
 * Protocol: VMware "Using a Proxy with Virtual Serial Ports" (VMware Telnet Extension
 * Commands for Proxy Communication, Establish a VMware Telnet Extension Session,
 * vMotion Notification); the vMotion handoff is docs/vmotion.md.
 */
export class EsxiSession implements VmotionEndpoint {
  readonly kind = 'esxi';
  readonly id: number;
  readonly protocol: VspcServerProtocol;
  private peerValue: string | undefined;
  private addressValue: string | undefined;
  private normalizedAddress: string | null = null;
  /**
   * One logger for the connection's whole life: the VM's name and UUID are added to
   * its lines once it has a hub (and follow a rename) without a new child logger.
   * A child of a budgeted logger (log-budget.ts) shares the connection's budget. The
   * child is made on the first line written (LazyChildLogger): an idle VM serial port
   * that writes none at the configured level has no child logger and no fields closure.
   */
  readonly log: Logger;
  /** The listener's budgeted logger given at init (else the context's `acceptLog()`; else `log`). */
  private readonly acceptLog: Logger | undefined;
  /** Names applied on this connection (bounded: see onName). */
  private renames = 0;
  private stateValue: EsxiSessionState = 'negotiating';
  private proxy: ProxyRequest | null = null;
  private uuidValue: string | null = null;
  private nameValue: string | null = null;
  private hubValue: ConsoleHub | null = null;
  /** The hub named in this connection's log lines: the last one it fed (kept after it leaves). */
  private logHub: ConsoleHub | null = null;
  /**
   * A registration not logged yet because the VM's name was not known (a new VM: ESXi
   * answers GET-VM-NAME after VM-VC-UUID): logged when the name arrives, or when the
   * connection leaves without one, so that the one line carries the name.
   */
  private unloggedRegistration: { created: boolean; takeover?: TakeoverResult } | null = null;
  /** The hub this connection fed before a vMotion moved the VM away. */
  private retiringHub: ConsoleHub | null = null;
  /** Serial output before identification (made on the first such byte). */
  private preIdentify: Buffer[] | null = null;
  private preIdentifyBytes = 0;
  private preIdentifyDropped = 0;
  /** The human or identify deadline (one replaces the other), null once settled. */
  private main: (EsxiDeadline & { ms: number }) | null = null;
  /** Set while an `IAC SB` stays open across chunks. */
  private sbDeadline: number | null = null;
  private closeRequested = false;
  /** The `now` of the call being handled, for deadlines armed by protocol events. */
  private now = 0;
  /** A liveness probe this (attached) connection owes an answer to: GET-VM-VC-UUID sent at `at`; who waits on it, oldest first. */
  private probe: { at: number; contenders: EsxiSession[] } | null = null;
  /** Set when this connection is dropped for leaving a probe unanswered (the contenders' result). */
  private probeUnanswered = false;
  /** While contending: the connection whose probe decides. */
  private contested: EsxiSession | null = null;
  /** How the last contest ended, counted once this connection attaches. */
  private contestResult: TakeoverResult | null = null;
  /**
   * Client input written while the host has flow control suspended (RFC 2217
   * FLOWCONTROL-SUSPEND): kept in order and sent on RESUME. Bounded by the hub, which
   * stops reading its clients as soon as `write` returns false.
   */
  private suspendedInput: Buffer[] | null = null;
  private drainListener: (() => void) | null = null;

  /** LogFieldsSource (this.log): the VM's name and UUID once the connection has fed a hub. */
  logFields(): LogFields {
    return this.logHub ? { vm: this.logHub.displayName, uuid: this.logHub.identity.key } : NO_FIELDS;
  }

  constructor(
    init: EsxiSessionInit,
    private readonly ctx: EsxiSessionContext,
    private readonly io: EsxiSessionIo,
  ) {
    this.id = init.id;
    this.peerValue = init.peer;
    this.addressValue = init.address;
    this.log = new LazyChildLogger(init.log, this);
    this.acceptLog = init.acceptLog;
    const o = ctx.options;
    // Read per connection: `serviceName` and `comPort` may be getters on the running
    // configuration (reloadable, read where used), so they are not cached per listener.
    this.protocol = new VspcServerProtocol(
      { serviceName: o.serviceName, comPort: o.comPort, maxSubnegotiation: o.maxSubnegotiation },
      new EsxiSession.Events(this),
    );
  }

  /**
   * The protocol's events for one session: one small object whose methods live on a
   * prototype, rather than some twenty closures per connection (a cost every idle VM
   * serial port and every vMotion destination paid). Inside the class body, so it may
   * call the session's private methods.
   */
  private static readonly Events = class implements VspcServerProtocolHandlers {
    constructor(private readonly s: EsxiSession) {}
    write(b: Buffer): boolean {
      return this.s.io.write(b);
    }
    data(d: Buffer): void {
      this.s.onVmData(d);
    }
    error(err: ProtocolError): void {
      this.s.fail(err);
    }
    command(c: number): void {
      this.s.onCommand(c);
    }
    extensionEnabled(): void {
      this.s.onExtensionEnabled();
    }
    extensionRefused(): void {
      this.s.explainAndClose('peer refused option 232');
    }
    proxy(req: ProxyRequest, accepted: boolean): void {
      this.s.onProxy(req, accepted);
    }
    uuid(uuid: string): void {
      this.s.onUuid(uuid);
    }
    name(name: string): void {
      this.s.onName(name);
    }
    comPort(settings: UartSettings): void {
      const s = this.s;
      if (s.hubValue) s.hubValue.lineSettings = { ...settings };
      s.log.debug('guest UART settings', () => ({ ...settings }));
    }
    comPortState(state: ComPortState): void {
      const s = this.s;
      if (s.hubValue) s.hubValue.lineState = lineStateOf(state);
      s.log.debug('guest serial line state', () => ({ ...state }));
    }
    comPortBreak(): void {
      this.s.onCommand(BRK);
    }
    flowControl(suspended: boolean): void {
      this.s.onFlowControl(suspended);
    }
    purge(buffers: 'receive' | 'transmit' | 'both'): void {
      this.s.onPurge(buffers);
    }
    comPortIgnored(code: number, value: number | null): void {
      this.s.log.debug('COM-PORT command ignored (not defined from a client, or reserved)', { code, value });
    }
    knownSuboptions(codes: number[]): void {
      this.s.log.debug('VM known suboptions', { codes });
    }
    unknownSuboption(code: number): void {
      this.s.log.info('unknown option-232 subcommand', { code });
    }
    vmotionBegin(seq: Buffer): void {
      this.s.ctx.vmotion.begin(this.s, seq);
    }
    vmotionPeer(ss: Buffer): void {
      // A wrong secret is a guess: nothing more this peer says is worth reading
      // (1,000 pipelined guesses must not cost 1,000 evaluations and log lines).
      if (!this.s.ctx.vmotion.peer(this.s, ss)) this.s.condemn('invalid vMotion peer');
    }
    vmotionComplete(seq: Buffer): void {
      this.s.ctx.vmotion.complete(this.s, seq);
    }
    vmotionAbort(): void {
      this.s.ctx.vmotion.abort(this.s);
    }
  };

  get state(): EsxiSessionState {
    return this.stateValue;
  }

  /** Remote end as `address:port` (computed on first use). */
  get peer(): string {
    return (this.peerValue ??= this.io.remotePeer?.() ?? '?');
  }

  /** The remote IP address, normalised (IPv4-mapped IPv6 as IPv4); computed on first use. */
  get address(): string {
    if (this.normalizedAddress === null) {
      let given = this.addressValue ?? this.io.remoteAddress?.();
      if (given === undefined) {
        const peer = this.peer;
        given = peer.slice(0, Math.max(0, peer.lastIndexOf(':')));
      }
      this.normalizedAddress = normalizeIp(given);
    }
    return this.normalizedAddress;
  }

  get uuid(): string | null {
    return this.uuidValue;
  }

  get vmName(): string | null {
    return this.nameValue;
  }

  /**
   * Ended by vspc with nowhere for what it still sends to go: everything it sends is
   * discarded (a retiring vMotion source is not: its late output goes to the console).
   */
  get discardsInput(): boolean {
    return this.stateValue === 'closed' && this.retiringHub === null;
  }

  /** The hub this connection feeds while it is a console's attached source. */
  get hub(): ConsoleHub | null {
    return this.hubValue;
  }

  get proxyRequest(): ProxyRequest | null {
    return this.proxy;
  }

  // --- driven by the owner

  /**
   * Sends the opening offers (WILL BINARY/SGA/ECHO, DO BINARY/SGA/VMWARE-TELNET-EXT)
   * and starts the human deadline. `now` in ms on the owner's clock.
   */
  start(now: number): void {
    this.now = now;
    const ms = this.ctx.options.humanTimeoutMs;
    this.main = { kind: 'human', at: now + ms, ms };
    this.protocol.start();
  }

  /**
   * Bytes from the ESXi host, in any chunking. Never throws: a protocol error closes
   * the session with its code, and so does an internal error (a bug or a storage
   * failure while handling this peer's bytes costs this connection only).
   */
  receive(chunk: Buffer, now: number): void {
    this.now = now;
    try {
      this.protocol.receive(chunk);
    } catch (err) {
      this.log.error('internal error while handling VM data; closing this connection', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy('internal error');
      return;
    }
    this.watchSubnegotiation(now);
  }

  /** The earliest pending deadline, or null (none, or closed). */
  deadline(): EsxiDeadline | null {
    if (this.stateValue === 'closed') return null;
    const main = this.main ? { at: this.main.at, kind: this.main.kind } : null;
    if (this.sbDeadline === null) return main;
    if (main && main.at <= this.sbDeadline) return main;
    return { at: this.sbDeadline, kind: 'subnegotiation' };
  }

  /** Acts on every deadline at or before `now` (earliest first); later ones stay. */
  onTimer(now: number): void {
    this.now = now;
    for (let d = this.deadline(); d !== null && d.at <= now; d = this.deadline()) {
      if (d.kind === 'subnegotiation') {
        this.sbDeadline = null;
        this.fail(new ProtocolError('TELNET_SB_TIMEOUT', 'subnegotiation left open too long'));
        continue;
      }
      const ms = this.main?.ms ?? 0;
      this.main = null;
      if (d.kind === 'human') this.explainAndClose(`no option 232 within ${ms} ms`);
      else if (d.kind === 'identify') this.fail(new ProtocolError('VSPC_IDENTIFY_TIMEOUT', `VM did not identify itself within ${ms} ms`));
      else if (d.kind === 'takeover-probe') {
        this.contested?.probeExpired(ms, this);
        // The probe ended some other way without telling us: never stay contending without a deadline.
        if (this.stateValue === 'contending' && this.main === null) this.contestOpen('unanswered');
      } else this.retryAttach();
    }
  }

  /**
   * Close for a protocol error found outside the byte stream (the owner's TLS
   * first-byte check) or inside it. Logs, counts the code, aborts. No-op once closed.
   */
  fail(err: ProtocolError): void {
    if (this.stateValue === 'closed') return;
    this.log.warn('protocol error; closing VM connection', errorFields(err));
    this.ctx.onProtocolError?.(err.code);
    this.destroy(err.code);
  }

  /** The stream is gone (the socket's close event): leave the hub, tell the coordinator. */
  transportClosed(): void {
    this.leaveHub();
    this.setState('closed');
    this.sbDeadline = null;
    this.main = null;
    this.ctx.vmotion.closed(this);
    this.releaseContenders();
  }

  // --- ConsoleSource

  write(data: Buffer): boolean {
    if (this.stateValue === 'closed') return true;
    if (this.suspendedInput) {
      this.suspendedInput.push(Buffer.from(data));
      return false;
    }
    return this.protocol.sendData(data);
  }

  onDrain(listener: () => void): void {
    this.drainListener = listener;
    this.io.onDrain(listener);
  }

  sendBreak(): void {
    if (this.stateValue !== 'closed') this.protocol.telnet.sendCommand(BRK);
  }

  /** Graceful: leave the hub, flush what we wrote, then FIN (the owner destroys if the peer lingers). Idempotent. */
  close(reason: string): void {
    if (this.closeRequested || this.io.destroyed) return;
    this.closeRequested = true;
    this.log.info('closing VM connection', { reason });
    this.leaveHub();
    this.setState('closed');
    this.sbDeadline = null;
    this.main = null;
    this.io.end();
    this.releaseContenders();
  }

  /**
   * Close a misbehaving peer and stop reading it: the rest of the chunk being handled
   * and everything after is ignored (the transport stops reading; the grace period
   * then aborts it). For refusals where what else the peer says cannot matter.
   */
  condemn(reason: string): void {
    this.protocol.telnet.stop();
    this.io.stopReading?.();
    this.close(reason);
  }

  /** Abort at once. Idempotent. */
  destroy(reason: string): void {
    if (this.io.destroyed) return;
    this.log.info('destroying VM connection', { reason });
    this.leaveHub();
    this.setState('closed');
    this.io.destroy();
    this.releaseContenders();
  }

  // --- VmotionEndpoint (called by the vMotion coordinator)

  /** The connection presented a valid vMotion peer secret: it waits for COMPLETE. */
  markVmotionPeer(): void {
    this.main = null;
    this.setState('vmotion-peer');
  }

  /** Make this connection the given hub's source (identification, or vMotion COMPLETE). */
  adoptHub(hub: ConsoleHub): ConsoleSource | null {
    this.main = null;
    this.hubValue = hub;
    this.setState('attached');
    // ESXi reports the guest UART before it identifies itself: carry it over.
    if (Object.keys(this.protocol.uartSettings).length > 0) hub.lineSettings = { ...this.protocol.uartSettings };
    if (this.protocol.telnet.isEnabled('him', Option.COM_PORT)) hub.lineState = lineStateOf(this.protocol.comPortState);
    this.logHub = hub;
    const previous = hub.attachSource(this);
    this.flushPreIdentify();
    return previous;
  }

  /**
   * vMotion COMPLETE: the peer is now the hub's source. Bytes this connection still
   * delivers (sent before the VM paused, still in flight) go to the hub's clients;
   * nothing is written to it any more.
   */
  retireFromHub(): void {
    this.logRegistration();
    this.retiringHub = this.hubValue;
    this.hubValue = null;
  }

  sendGoahead(seq: Buffer, secret: Buffer): void {
    this.protocol.sendGoahead(seq, secret);
  }

  sendNotNow(seq: Buffer): void {
    this.protocol.sendNotNow(seq);
  }

  sendPeerOk(seq: Buffer): void {
    this.protocol.sendPeerOk(seq);
  }

  // --- internals

  private setState(next: EsxiSessionState): void {
    const wasPending = isPending(this.stateValue);
    this.stateValue = next;
    if (wasPending && !isPending(next)) this.ctx.onSettled?.();
  }

  /** Bound how long an `IAC SB` may stay open: armed when a chunk ends inside one, not per chunk. */
  private watchSubnegotiation(now: number): void {
    if (this.protocol.telnet.inSubnegotiation) {
      if (this.sbDeadline === null && this.stateValue !== 'closed') this.sbDeadline = now + this.ctx.options.subnegotiationTimeoutMs;
    } else {
      this.sbDeadline = null;
    }
  }

  /** IAC BRK from the host is the guest's serial BREAK: to the clients, like output (a late one from a retiring source too). */
  private onCommand(command: number): void {
    this.log.debug('telnet command from VM', { command });
    if (command !== BRK) return;
    const hub = this.hubValue ?? this.retiringHub;
    if (hub) hub.breakFromSource(this);
    else this.log.info('BREAK from the VM before it identified; dropped');
  }

  /** RFC 2217 section 5: the host asks us to stop (true) or restart sending serial data. */
  private onFlowControl(suspended: boolean): void {
    this.log.info(suspended ? 'VM suspended serial data from vspc (FLOWCONTROL-SUSPEND)' : 'VM resumed serial data from vspc (FLOWCONTROL-RESUME)');
    if (suspended) {
      this.suspendedInput ??= [];
      return;
    }
    const queued = this.suspendedInput ?? [];
    this.suspendedInput = null;
    let ok = true;
    for (const chunk of queued) ok = this.protocol.sendData(chunk);
    // The hub paused its clients when write() returned false: tell it to read again.
    if (ok) this.drainListener?.();
  }

  /** RFC 2217 PURGE-DATA: our transmit buffer is the input held while suspended, the receive buffer the output kept before identification. */
  private onPurge(buffers: 'receive' | 'transmit' | 'both'): void {
    let dropped = 0;
    if (buffers !== 'receive' && this.suspendedInput) {
      for (const c of this.suspendedInput) dropped += c.length;
      this.suspendedInput = [];
    }
    if (buffers !== 'transmit') {
      dropped += this.preIdentifyBytes;
      this.preIdentify = null;
      this.preIdentifyBytes = 0;
    }
    this.log.info('VM purged buffered data (PURGE-DATA)', { buffers, dropped });
  }

  private onVmData(data: Buffer): void {
    const hub = this.hubValue ?? this.retiringHub;
    if (hub) {
      hub.fromVm(data);
      return;
    }
    if (this.stateValue === 'closed') return;
    // Output before identification (boot messages while the handshake finishes): keep a bounded amount.
    const room = this.ctx.options.maxPreIdentifyBuffer - this.preIdentifyBytes;
    if (room <= 0) {
      this.preIdentifyDropped += data.length;
      return;
    }
    const piece = data.length > room ? data.subarray(0, room) : data;
    this.preIdentifyDropped += data.length - piece.length;
    (this.preIdentify ??= []).push(Buffer.from(piece));
    this.preIdentifyBytes += piece.length;
  }

  private flushPreIdentify(): void {
    if (this.preIdentifyDropped > 0) {
      this.log.warn('serial output before identification exceeded the buffer; excess dropped', {
        dropped: this.preIdentifyDropped,
        kept: this.preIdentifyBytes,
      });
    }
    const chunks = this.preIdentify;
    this.preIdentify = null;
    this.preIdentifyBytes = 0;
    if (chunks) for (const c of chunks) this.hubValue?.fromVm(c);
  }

  private onExtensionEnabled(): void {
    if (this.stateValue !== 'negotiating') return;
    this.setState('identifying');
    this.log.debug('option 232 agreed');
    const ms = this.ctx.options.identifyTimeoutMs;
    this.main = { kind: 'identify', at: this.now + ms, ms };
  }

  private onProxy(req: ProxyRequest, accepted: boolean): void {
    if (!accepted) {
      this.log.warn('DO-PROXY refused (WONT-PROXY)', {
        direction: req.direction,
        uri: req.uri,
        expectedService: this.ctx.options.serviceName,
      });
      this.ctx.onProtocolError?.('VSPC_PROXY_REFUSED');
      this.close(req.direction !== 'S' ? `direction ${JSON.stringify(req.direction)} is not supported` : 'unknown service name');
      return;
    }
    if (this.proxy) {
      if (this.proxy.label !== req.label) {
        this.fail(new ProtocolError('VSPC_PROXY_CHANGED', 'second DO-PROXY with a different port label'));
      }
      return;
    }
    this.proxy = req;
    this.tryAttach();
  }

  private onUuid(uuid: string): void {
    if (this.uuidValue && this.uuidValue !== uuid) {
      this.fail(new ProtocolError('VSPC_UUID_CHANGED', 'VM-VC-UUID changed on an open connection', { was: this.uuidValue, now: uuid }));
      return;
    }
    this.uuidValue = uuid;
    if (this.probe) this.probeAnswered();
    this.tryAttach();
  }

  private onName(name: string): void {
    this.nameValue = name;
    const hub = this.hubValue;
    if (hub) {
      const old = hub.identity.name;
      if (old !== name) {
        // A VM is renamed rarely (vCenter tells the host, which reports it once); a peer
        // renaming itself in a loop would cost a database write and a log line each time.
        if (++this.renames > MAX_RENAMES_PER_CONNECTION) {
          if (this.renames === MAX_RENAMES_PER_CONNECTION + 1) {
            this.log.warn('VM-NAME changes too often on this connection; further names ignored', { limit: MAX_RENAMES_PER_CONNECTION, security: true });
          }
          return;
        }
        this.ctx.registry.rename(hub, name);
        // A name reported for the first time is not a rename (the registration line has it).
        if (old !== null) this.log.info('VM renamed', { from: old, to: name });
      }
      this.logRegistration();
    }
  }

  /** The registration line (once per attach): name, UUID, label and port. */
  private logRegistration(): void {
    const pending = this.unloggedRegistration;
    const hub = this.hubValue;
    if (!pending || !hub) return;
    this.unloggedRegistration = null;
    this.log.info(pending.created ? 'VM serial port registered' : 'VM serial port reconnected', {
      vm: hub.displayName,
      name: hub.identity.name,
      uuid: hub.identity.key,
      label: hub.identity.label,
      port: hub.identity.tcpPort,
      ...(pending.takeover ? { takeover: pending.takeover } : {}),
    });
  }

  private tryAttach(): void {
    if (this.stateValue !== 'identifying' && this.stateValue !== 'negotiating') return;
    if (!this.proxy || !this.uuidValue) return;
    const existing = this.ctx.registry.get('esxi', this.uuidValue, this.proxy.label);
    if (existing?.isHolding) {
      // A vMotion of this serial port is under way: this is most likely its destination,
      // which must present VMOTION-PEER rather than take the port over by UUID.
      this.log.info('identified during a vMotion of this serial port; waiting for VMOTION-PEER');
      return;
    }
    const current = existing?.source ?? null;
    let takeover: TakeoverResult | null = this.contestResult;
    if (current && current !== this) {
      takeover = this.takeoverOf(current, existing!);
      if (takeover === null) return; // contending: the probe decides
    }
    if (!existing && this.ctx.admitNewIdentity && !this.ctx.admitNewIdentity()) {
      // The caller logged and counted (rate-limited); nothing this peer says matters now.
      this.condemn('registration quota of this address spent');
      return;
    }
    let hub: ConsoleHub;
    let created: boolean;
    try {
      // The name goes in only now: a connection that has not won never renames a port.
      ({ hub, created } = this.ctx.registry.register('esxi', this.uuidValue, this.proxy.label, this.nameValue));
    } catch (err) {
      // Port range exhausted or the database is unwell: this VM cannot be served, the others can.
      this.log.error('cannot register VM serial port', errorFields(err));
      this.close('registration failed');
      return;
    }
    this.contestResult = null;
    const previous = this.adoptHub(hub);
    this.unloggedRegistration = { created, ...(takeover ? { takeover } : {}) };
    if (hub.identity.name !== null) this.logRegistration();
    if (takeover) this.ctx.onTakeover?.(takeover);
    if (previous) {
      // The host reconnected while its old TCP connection still looked alive: the new one wins.
      previous.close('superseded by a new connection from the VM');
    }
  }

  /**
   * `current` feeds the serial port this connection claims. Returns how this connection
   * may take over now, or null after starting a contest (state `contending`).
   */
  private takeoverOf(current: ConsoleSource, hub: ConsoleHub): TakeoverResult | null {
    const probeMs = this.ctx.options.takeoverProbeTimeoutMs ?? 0;
    if (probeMs <= 0 || !(current instanceof EsxiSession)) return 'no-probe';
    // The host itself reconnecting (its old connection half-open) is the common case
    // and cannot be told from an impostor on the same address anyway.
    if (current.address === this.address) return 'same-address';
    const at = current.requestProbe(this, this.now);
    this.contested = current;
    this.setState('contending');
    this.main = { kind: 'takeover-probe', at: at + probeMs, ms: probeMs };
    this.log.info('VM serial port is connected elsewhere; probing that connection before taking it over', {
      vm: hub.displayName,
      livePeer: current.peer,
      probeTimeoutMs: probeMs,
    });
    return null;
  }

  /**
   * A contender asks this connection to prove it is alive: GET-VM-VC-UUID, which a
   * host answers with VM-VC-UUID. Contenders arriving while a probe is out wait on the
   * same one. Returns when the probe was sent (the contenders' deadlines count from it).
   */
  private requestProbe(contender: EsxiSession, now: number): number {
    if (!this.probe) {
      this.probe = { at: now, contenders: [] };
      this.protocol.telnet.sendSubnegotiation(Option.VMWARE_EXT, Buffer.of(Ext.GET_VM_VC_UUID));
      this.log.info('liveness probe sent (GET-VM-VC-UUID): another connection claims this serial port', { contender: contender.peer });
    }
    this.probe.contenders.push(contender);
    return this.probe.at;
  }

  /** VM-VC-UUID came back while a probe was out: this connection is alive, every contender is refused. */
  private probeAnswered(): void {
    const contenders = this.probe?.contenders ?? [];
    this.probe = null;
    for (const c of contenders) c.contestLost(this);
  }

  /** A contender's deadline passed: if the probe it waits on is still unanswered, this connection is dropped. */
  private probeExpired(ms: number, contender: EsxiSession): void {
    if (!this.probe?.contenders.includes(contender) || this.stateValue === 'closed') return;
    this.probeUnanswered = true;
    this.log.warn(
      'VM connection did not answer the liveness probe; replaced by the new connection',
      errorFields(new PeerRefusedError('VSPC_PROBE_UNANSWERED', `no VM-VC-UUID within ${ms} ms`, { probeTimeoutMs: ms, newPeer: contender.peer })),
    );
    this.destroy('did not answer the liveness probe');
  }

  /**
   * This connection is gone or leaving: the contenders waiting on its probe may take
   * over. They retry on their own timers (`retry` is due at once), with the time those
   * pass in, not from inside this call.
   */
  private releaseContenders(): void {
    const p = this.probe;
    if (!p) return;
    this.probe = null;
    const result: TakeoverResult = this.probeUnanswered ? 'unanswered' : 'closed';
    for (const c of p.contenders) c.contestOpen(result);
  }

  /** The connection this one contended with answered the probe: refused. */
  private contestLost(live: EsxiSession): void {
    if (this.stateValue !== 'contending') return;
    this.contested = null;
    this.main = null;
    const hub = live.hub;
    this.log.warn(
      'security: a second connection claimed a VM serial port whose connection is alive (it answered the liveness probe); refused',
      {
        security: true,
        ...errorFields(new PeerRefusedError('VSPC_VM_ALIVE', 'the serial port has a live connection')),
        vm: hub?.displayName,
        uuid: this.uuidValue,
        label: this.proxy?.label,
        livePeer: live.peer,
        claimedName: this.nameValue,
      },
    );
    this.ctx.onTakeover?.('refused');
    this.condemn('VM serial port is in use by a live connection');
  }

  /** The connection this one contended with left: try again (see releaseContenders). */
  private contestOpen(result: TakeoverResult): void {
    if (this.stateValue !== 'contending') return;
    this.contested = null;
    this.contestResult = result;
    this.setState('identifying');
    this.main = { kind: 'retry', at: 0, ms: 0 };
    this.io.deadlineChanged?.();
  }

  private retryAttach(): void {
    this.tryAttach();
    // Neither attached nor contending again (e.g. a vMotion began meanwhile): the identify deadline bounds the wait.
    if (this.stateValue === 'identifying' && this.main === null) {
      const ms = this.ctx.options.identifyTimeoutMs;
      this.main = { kind: 'identify', at: this.now + ms, ms };
    }
  }

  private leaveHub(): void {
    const hub = this.hubValue;
    if (!hub) return;
    this.logRegistration(); // never named: logged without the name rather than not at all
    this.hubValue = null;
    if (hub.detachSource(this)) {
      try {
        this.ctx.registry.touch(hub);
      } catch (err) {
        this.log.warn('cannot update last_seen', errorFields(err));
      }
      this.log.info('VM serial port disconnected');
    }
  }

  private explainAndClose(reason: string): void {
    if (this.stateValue !== 'negotiating') return;
    // One per connection, and anyone can open connections: on the listener's budget.
    (this.acceptLog ?? this.ctx.acceptLog?.() ?? this.log).warn('peer is not an ESXi host; explained and closed', { reason });
    this.ctx.onProtocolError?.('VSPC_NOT_ESXI');
    const text =
      '\r\nThis is vspc, a virtual serial port concentrator. This port is where VMware ESXi\r\n' +
      `hosts connect their VMs' network serial ports (vSPC URI ${this.ctx.options.proxyPortHint}).\r\n` +
      "To reach a VM's console, find its port with `vspc-admin list`, then\r\n" +
      '`telnet <this host> <port>`.\r\n';
    this.io.write(Buffer.from(text, 'latin1'));
    this.close('not an ESXi host');
  }
}

/** The domain's view of the RFC 2217 state (the masks only shape notifications vspc never needs to send). */
function lineStateOf(state: Readonly<ComPortState>): SerialLineState {
  const out: SerialLineState = { suspended: state.suspended };
  if (state.flowControl !== undefined) out.flowControl = state.flowControl;
  if (state.inboundFlowControl !== undefined) out.inboundFlowControl = state.inboundFlowControl;
  if (state.break !== undefined) out.break = state.break;
  if (state.dtr !== undefined) out.dtr = state.dtr;
  if (state.rts !== undefined) out.rts = state.rts;
  if (state.signature !== undefined) out.signature = state.signature;
  return out;
}
