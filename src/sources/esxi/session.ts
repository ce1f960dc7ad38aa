import { ProtocolError, errorFields } from '../../errors.js';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleSource } from '../../domain/seams.js';
import type { VmotionCoordinator, VmotionEndpoint } from '../../domain/vmotion.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { BRK } from '../../protocol/telnet/constants.js';
import { VspcServerProtocol } from '../../protocol/vmware/server-protocol.js';
import type { ProxyRequest } from '../../protocol/vmware/identity.js';

/**
 * Named states of one ESXi connection:
 *
 *   negotiating --WILL 232--> identifying --DO-PROXY(S) + VM-VC-UUID--> attached
 *        |                        |   \--VMOTION-PEER(ok)--> vmotion-peer --COMPLETE--> attached
 *        |                        |                                         (decided by the vMotion coordinator)
 *        +--WONT 232 / human deadline--> closed (after a plain-text explanation for people)
 *   identifying --identify deadline--> closed
 *   any --protocol error / subnegotiation deadline / close / transport gone--> closed
 *
 * DO-PROXY + VM-VC-UUID also attach from `negotiating` (a host that sends option-232
 * subnegotiations without WILL 232 first is served, as before the split).
 */
export type EsxiSessionState = 'negotiating' | 'identifying' | 'attached' | 'vmotion-peer' | 'closed';

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
  /** True once the stream is aborted or gone, possibly before `transportClosed()` was called. */
  readonly destroyed: boolean;
  /** Register the one drain listener (the hub's); replaces the previous one. */
  onDrain(listener: () => void): void;
}

export interface EsxiSessionContext {
  registry: EsxiRegistry;
  vmotion: EsxiVmotion;
  options: EsxiSessionOptions;
  /** Called once when the session leaves negotiating/identifying (attached, vMotion peer or closed). */
  onSettled?(): void;
  /** Called when the session closes for a protocol error (or is refused/explained), with its code (metrics). */
  onProtocolError?(code: string): void;
}

export interface EsxiSessionInit {
  /** Connection number, for logs and the vMotion coordinator. */
  id: number;
  /** Remote end as `address:port`. */
  peer: string;
  /** Logger for this connection (already carrying conn/peer fields). */
  log: Logger;
}

/**
 * Which timer is due:
 * - `human`: no WILL 232 since `start()` (`humanTimeoutMs`): explain in plain text and close;
 * - `identify`: 232 agreed, no DO-PROXY + VM-VC-UUID (`identifyTimeoutMs`): VSPC_IDENTIFY_TIMEOUT;
 * - `subnegotiation`: an `IAC SB` open across chunks for `subnegotiationTimeoutMs`: TELNET_SB_TIMEOUT.
 */
export type EsxiDeadlineKind = 'human' | 'identify' | 'subnegotiation';

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
  readonly peer: string;
  readonly protocol: VspcServerProtocol;
  log: Logger;
  private stateValue: EsxiSessionState = 'negotiating';
  private proxy: ProxyRequest | null = null;
  private uuidValue: string | null = null;
  private nameValue: string | null = null;
  private hubValue: ConsoleHub | null = null;
  /**
   * A registration not logged yet because the VM's name was not known (a new VM: ESXi
   * answers GET-VM-NAME after VM-VC-UUID): logged when the name arrives, or when the
   * connection leaves without one, so that the one line carries the name.
   */
  private unloggedRegistration: { created: boolean } | null = null;
  /** The hub this connection fed before a vMotion moved the VM away. */
  private retiringHub: ConsoleHub | null = null;
  private preIdentify: Buffer[] = [];
  private preIdentifyBytes = 0;
  private preIdentifyDropped = 0;
  /** The human or identify deadline (one replaces the other), null once settled. */
  private main: (EsxiDeadline & { ms: number }) | null = null;
  /** Set while an `IAC SB` stays open across chunks. */
  private sbDeadline: number | null = null;
  private closeRequested = false;
  /** The `now` of the call being handled, for deadlines armed by protocol events. */
  private now = 0;

  constructor(
    init: EsxiSessionInit,
    private readonly ctx: EsxiSessionContext,
    private readonly io: EsxiSessionIo,
  ) {
    this.id = init.id;
    this.peer = init.peer;
    this.log = init.log;
    const o = ctx.options;
    this.protocol = new VspcServerProtocol(
      { serviceName: o.serviceName, comPort: o.comPort, maxSubnegotiation: o.maxSubnegotiation },
      {
        write: (b) => this.io.write(b),
        data: (d) => this.onVmData(d),
        error: (err) => this.fail(err),
        command: (c) => this.log.debug('telnet command from VM', { command: c }),
        extensionEnabled: () => this.onExtensionEnabled(),
        extensionRefused: () => this.explainAndClose('peer refused option 232'),
        proxy: (req, accepted) => this.onProxy(req, accepted),
        uuid: (uuid) => this.onUuid(uuid),
        name: (name) => this.onName(name),
        comPort: (settings) => {
          if (this.hubValue) this.hubValue.lineSettings = { ...settings };
          this.log.debug('guest UART settings', { ...settings });
        },
        knownSuboptions: (codes) => this.log.debug('VM known suboptions', { codes }),
        unknownSuboption: (code) => this.log.info('unknown option-232 subcommand', { code }),
        vmotionBegin: (seq) => this.ctx.vmotion.begin(this, seq),
        vmotionPeer: (ss) => void this.ctx.vmotion.peer(this, ss),
        vmotionComplete: (seq) => this.ctx.vmotion.complete(this, seq),
        vmotionAbort: () => this.ctx.vmotion.abort(this),
      },
    );
  }

  get state(): EsxiSessionState {
    return this.stateValue;
  }

  get uuid(): string | null {
    return this.uuidValue;
  }

  get vmName(): string | null {
    return this.nameValue;
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
      else this.fail(new ProtocolError('VSPC_IDENTIFY_TIMEOUT', `VM did not identify itself within ${ms} ms`));
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
  }

  // --- ConsoleSource

  write(data: Buffer): boolean {
    if (this.stateValue === 'closed') return true;
    return this.protocol.sendData(data);
  }

  onDrain(listener: () => void): void {
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
  }

  /** Abort at once. Idempotent. */
  destroy(reason: string): void {
    if (this.io.destroyed) return;
    this.log.info('destroying VM connection', { reason });
    this.leaveHub();
    this.setState('closed');
    this.io.destroy();
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
    this.log = this.log.child({ vm: hub.displayName, uuid: hub.identity.key });
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
    const wasPending = this.stateValue === 'negotiating' || this.stateValue === 'identifying';
    this.stateValue = next;
    if (wasPending && next !== 'negotiating' && next !== 'identifying') this.ctx.onSettled?.();
  }

  /** Bound how long an `IAC SB` may stay open: armed when a chunk ends inside one, not per chunk. */
  private watchSubnegotiation(now: number): void {
    if (this.protocol.telnet.inSubnegotiation) {
      if (this.sbDeadline === null && this.stateValue !== 'closed') this.sbDeadline = now + this.ctx.options.subnegotiationTimeoutMs;
    } else {
      this.sbDeadline = null;
    }
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
    this.preIdentify.push(Buffer.from(piece));
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
    this.preIdentify = [];
    this.preIdentifyBytes = 0;
    for (const c of chunks) this.hubValue?.fromVm(c);
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
    this.tryAttach();
  }

  private onName(name: string): void {
    this.nameValue = name;
    const hub = this.hubValue;
    if (hub) {
      const old = hub.identity.name;
      if (old !== name) {
        this.ctx.registry.rename(hub, name);
        // A name reported for the first time is not a rename (the registration line has it).
        if (old !== null) this.log.info('VM renamed', { from: old, to: name });
        this.log = this.log.child({ vm: hub.displayName });
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
    });
  }

  private tryAttach(): void {
    if (this.stateValue !== 'identifying' && this.stateValue !== 'negotiating') return;
    if (!this.proxy || !this.uuidValue) return;
    if (this.ctx.registry.get('esxi', this.uuidValue, this.proxy.label)?.isHolding) {
      // A vMotion of this serial port is under way: this is most likely its destination,
      // which must present VMOTION-PEER rather than take the port over by UUID.
      this.log.info('identified during a vMotion of this serial port; waiting for VMOTION-PEER');
      return;
    }
    let hub: ConsoleHub;
    let created: boolean;
    try {
      ({ hub, created } = this.ctx.registry.register('esxi', this.uuidValue, this.proxy.label, this.nameValue));
    } catch (err) {
      // Port range exhausted or the database is unwell: this VM cannot be served, the others can.
      this.log.error('cannot register VM serial port', errorFields(err));
      this.close('registration failed');
      return;
    }
    const previous = this.adoptHub(hub);
    this.unloggedRegistration = { created };
    if (hub.identity.name !== null) this.logRegistration();
    if (previous) {
      // The host reconnected while its old TCP connection still looked alive: the new one wins.
      previous.close('superseded by a new connection from the VM');
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
    this.log.warn('peer is not an ESXi host; explained and closed', { reason });
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
