import type { Socket } from 'node:net';
import { ProtocolError } from '../../errors.js';
import type { Logger } from '../../domain/logger.js';
import { errorFields } from '../../errors.js';
import { VspcServerProtocol } from '../../protocol/vmware/server-protocol.js';
import type { ProxyRequest } from '../../protocol/vmware/identity.js';
import { BRK } from '../../protocol/telnet/constants.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleSource } from '../../domain/seams.js';
import type { VmotionCoordinator, VmotionEndpoint } from '../../domain/vmotion.js';
import type { ConsoleHub } from '../../domain/console-hub.js';

/**
 * Named states of one ESXi connection:
 *
 *   Negotiating --WILL 232--> Identifying --DO-PROXY(S) + VM-VC-UUID--> Attached
 *        |                        |   \--VMOTION-PEER(ok)--> VmotionPeer --COMPLETE--> Attached
 *        |                        |                                         (handled by the vMotion coordinator)
 *        +--WONT 232 / timeout--> Closed (after a plain-text explanation for humans)
 *   any --error / timeout / socket closed--> Closed
 */
export type EsxiConnectionState = 'negotiating' | 'identifying' | 'attached' | 'vmotion-peer' | 'closed';

export interface EsxiConnectionOptions {
  serviceName: string;
  comPort: boolean;
  maxSubnegotiation: number;
  /** Without option 232 by then, the peer is taken for a person and told what this port is. */
  humanTimeoutMs: number;
  /** Option 232 agreed but no DO-PROXY + UUID by then: close. */
  identifyTimeoutMs: number;
  /** An unfinished subnegotiation may stay open this long. */
  subnegotiationTimeoutMs: number;
  /** Serial output received before identification is kept up to this many bytes. */
  maxPreIdentifyBuffer: number;
  /** How long `close()` waits for the peer to finish before destroying. */
  closeGraceMs: number;
  /** For the explanation shown to people who telnet to the proxy port by hand. */
  proxyPortHint: string;
}

export interface EsxiConnectionContext {
  registry: Registry;
  logger: Logger;
  options: EsxiConnectionOptions;
  /** vMotion events go to the coordinator, so this file stays about one connection. */
  vmotion: VmotionCoordinator;
  /** Called once when the connection is gone. */
  onClosed?(conn: EsxiConnection): void;
  /** Called when the connection is closed for a protocol error, with its code (metrics). */
  onProtocolError?(code: string): void;
  /** Called once when the connection leaves negotiating/identifying (attached, vMotion peer or closed). */
  onSettled?(conn: EsxiConnection): void;
}

let nextConnectionId = 1;

const TLS_HANDSHAKE = 0x16;

export class EsxiConnection implements VmotionEndpoint {
  readonly kind = 'esxi';
  readonly id = nextConnectionId++;
  readonly peer: string;
  readonly protocol: VspcServerProtocol;
  log: Logger;
  private stateValue: EsxiConnectionState = 'negotiating';
  private proxy: ProxyRequest | null = null;
  private uuidValue: string | null = null;
  private nameValue: string | null = null;
  private hub: ConsoleHub | null = null;
  /** The hub this connection fed before a vMotion moved the VM away. */
  private retiringHub: ConsoleHub | null = null;
  private preIdentify: Buffer[] = [];
  private preIdentifyBytes = 0;
  private preIdentifyDropped = 0;
  private sawFirstByte = false;
  private timer: NodeJS.Timeout | null = null;
  private sbTimer: NodeJS.Timeout | null = null;
  private closeTimer: NodeJS.Timeout | null = null;
  private drainListener: (() => void) | null = null;
  readonly connectedAt = Date.now();

  constructor(
    private readonly socket: Socket,
    private readonly ctx: EsxiConnectionContext,
    readonly secure: boolean,
  ) {
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.log = ctx.logger.child({ conn: this.id, peer: this.peer, side: 'vm', tls: secure });
    const o = ctx.options;
    this.protocol = new VspcServerProtocol(
      { serviceName: o.serviceName, comPort: o.comPort, maxSubnegotiation: o.maxSubnegotiation },
      {
        write: (b) => this.rawWrite(b),
        data: (d) => this.onVmData(d),
        error: (err) => this.fail(err),
        command: (c) => this.log.debug('telnet command from VM', { command: c }),
        extensionEnabled: () => this.onExtensionEnabled(),
        extensionRefused: () => this.explainAndClose('peer refused option 232'),
        proxy: (req, accepted) => this.onProxy(req, accepted),
        uuid: (uuid) => this.onUuid(uuid),
        name: (name) => this.onName(name),
        comPort: (settings) => {
          if (this.hub) this.hub.lineSettings = { ...settings };
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

    socket.setNoDelay(true);
    // Half-open detection: a host that vanished without FIN is found by keepalive.
    socket.setKeepAlive(true, 30_000);
    socket.on('data', (chunk: Buffer) => this.onSocketData(chunk));
    socket.on('error', (err) => this.log.info('VM socket error', errorFields(err)));
    socket.on('close', () => this.onSocketClose());
    this.armTimer(o.humanTimeoutMs, () => this.explainAndClose(`no option 232 within ${o.humanTimeoutMs} ms`));
    // The opening offers leave in one write, not one per offer (see onSocketData).
    socket.cork();
    this.protocol.start();
    socket.uncork();
    this.log.info('VM connection opened');
  }

  get state(): EsxiConnectionState {
    return this.stateValue;
  }

  private setState(next: EsxiConnectionState): void {
    const wasPending = this.stateValue === 'negotiating' || this.stateValue === 'identifying';
    this.stateValue = next;
    if (wasPending && next !== 'negotiating' && next !== 'identifying') this.ctx.onSettled?.(this);
  }

  get uuid(): string | null {
    return this.uuidValue;
  }

  get vmName(): string | null {
    return this.nameValue;
  }

  get serialPort(): ConsoleHub | null {
    return this.hub;
  }

  get proxyRequest(): ProxyRequest | null {
    return this.proxy;
  }

  // --- ConsoleSource

  write(data: Buffer): boolean {
    if (this.stateValue === 'closed') return true;
    return this.protocol.sendData(data);
  }

  onDrain(listener: () => void): void {
    if (this.drainListener) this.socket.off('drain', this.drainListener);
    this.drainListener = listener;
    this.socket.on('drain', listener);
  }

  sendBreak(): void {
    if (this.stateValue !== 'closed') this.protocol.telnet.sendCommand(BRK);
  }

  /** Graceful: flush what we wrote, then FIN; destroy if the peer lingers. Idempotent. */
  close(reason: string): void {
    if (this.closeTimer || this.socket.destroyed) return;
    this.log.info('closing VM connection', { reason });
    this.leaveHub();
    this.setState('closed');
    this.clearTimers();
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.ctx.options.closeGraceMs);
    this.closeTimer.unref();
  }

  /** Abort at once. Idempotent. */
  destroy(reason: string): void {
    if (this.socket.destroyed) return;
    this.log.info('destroying VM connection', { reason });
    this.leaveHub();
    this.setState('closed');
    this.socket.destroy();
  }

  // --- used by the vMotion coordinator

  /** The connection presented a valid vMotion peer secret: it waits for COMPLETE. */
  markVmotionPeer(): void {
    this.clearTimer();
    this.setState('vmotion-peer');
  }

  /** Make this connection the given hub's source (vMotion COMPLETE). */
  adoptHub(hub: ConsoleHub): ConsoleSource | null {
    this.clearTimer();
    this.hub = hub;
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
    this.retiringHub = this.hub;
    this.hub = null;
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

  private rawWrite(bytes: Buffer): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    return this.socket.write(bytes);
  }

  private onSocketData(chunk: Buffer): void {
    if (!this.sawFirstByte) {
      this.sawFirstByte = true;
      if (chunk[0] === TLS_HANDSHAKE && !this.secure) {
        this.fail(new ProtocolError('VSPC_TLS_ON_PLAIN_PORT', 'TLS handshake on the plain telnet port (use the telnets port)'));
        return;
      }
    }
    // Everything we answer to one chunk (negotiation replies, option-232 answers,
    // GOAHEAD, held input after COMPLETE) leaves in one writev instead of a syscall per
    // reply; uncorked before this event handler returns, so nothing waits.
    this.socket.cork();
    try {
      this.protocol.receive(chunk);
    } catch (err) {
      // A bug or a storage failure while handling this peer's bytes must cost this
      // connection only, never the process and every other VM's console with it.
      this.log.error('internal error while handling VM data; closing this connection', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy('internal error');
      return;
    } finally {
      this.socket.uncork();
    }
    this.watchSubnegotiation();
  }

  /** Bound how long an `IAC SB` may stay open, without a timer per chunk. */
  private watchSubnegotiation(): void {
    if (this.protocol.telnet.inSubnegotiation) {
      if (!this.sbTimer && this.stateValue !== 'closed') {
        this.sbTimer = setTimeout(() => {
          this.fail(new ProtocolError('TELNET_SB_TIMEOUT', 'subnegotiation left open too long'));
        }, this.ctx.options.subnegotiationTimeoutMs);
        this.sbTimer.unref();
      }
    } else if (this.sbTimer) {
      clearTimeout(this.sbTimer);
      this.sbTimer = null;
    }
  }

  private onVmData(data: Buffer): void {
    const hub = this.hub ?? this.retiringHub;
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
    for (const c of chunks) this.hub?.fromVm(c);
  }

  private onExtensionEnabled(): void {
    if (this.stateValue !== 'negotiating') return;
    this.setState('identifying');
    this.log.debug('option 232 agreed');
    const ms = this.ctx.options.identifyTimeoutMs;
    this.armTimer(ms, () => this.fail(new ProtocolError('VSPC_IDENTIFY_TIMEOUT', `VM did not identify itself within ${ms} ms`)));
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
    if (this.hub) {
      const old = this.hub.identity.name;
      if (old !== name) {
        this.ctx.registry.rename(this.hub, name);
        this.log.info('VM renamed', { from: old, to: name });
        this.log = this.log.child({ vm: this.hub.displayName });
      }
    }
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
    this.log.info(created ? 'VM serial port registered' : 'VM serial port reconnected', {
      port: hub.identity.tcpPort,
      label: hub.identity.label,
    });
    if (previous) {
      // The host reconnected while its old TCP connection still looked alive: the new one wins.
      previous.close('superseded by a new connection from the VM');
    }
  }

  private leaveHub(): void {
    const hub = this.hub;
    if (!hub) return;
    this.hub = null;
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
    this.rawWrite(Buffer.from(text, 'latin1'));
    this.close('not an ESXi host');
  }

  private fail(err: ProtocolError): void {
    if (this.stateValue === 'closed') return;
    this.log.warn('protocol error; closing VM connection', errorFields(err));
    this.ctx.onProtocolError?.(err.code);
    this.destroy(err.code);
  }

  private onSocketClose(): void {
    this.leaveHub();
    this.setState('closed');
    this.clearTimers();
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (this.drainListener) this.socket.off('drain', this.drainListener);
    this.ctx.vmotion.closed(this);
    this.log.info('VM connection closed', { durationMs: Date.now() - this.connectedAt });
    this.ctx.onClosed?.(this);
  }

  private armTimer(ms: number, fn: () => void): void {
    this.clearTimer();
    this.timer = setTimeout(fn, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private clearTimers(): void {
    this.clearTimer();
    if (this.sbTimer) clearTimeout(this.sbTimer);
    this.sbTimer = null;
  }
}
