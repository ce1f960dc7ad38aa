import { ProtocolError } from '../../errors.js';
import { Option, type Side } from '../telnet/index.js';
import { policyFromLists, TelnetSession, type TelnetSessionHandlers } from '../telnet/index.js';
import { ComPort, ComPortControl, ComPortPurge, Ext, PROXY_KNOWN_SUBOPTIONS } from './codes.js';
import { VERSION } from '../../version.js';
import { sanitizeText } from '../../util/text.js';
import { parseDoProxyPayload, parseNamePayload, parseUuidPayload, type ProxyRequest } from './identity.js';

/** The guest UART's settings as the ESXi host reports them over RFC 2217 COM-PORT (same shape as the domain's SerialLineSettings). */
export interface UartSettings {
  baudRate?: number;
  dataSize?: number;
  parity?: 'none' | 'odd' | 'even' | 'mark' | 'space';
  stopBits?: '1' | '2' | '1.5';
}

const PARITY = [undefined, 'none', 'odd', 'even', 'mark', 'space'] as const;
const STOP_BITS = [undefined, '1', '2', '1.5'] as const;

export type OutboundFlowControl = 'none' | 'xon-xoff' | 'hardware' | 'dcd' | 'dsr';
export type InboundFlowControl = 'none' | 'xon-xoff' | 'hardware' | 'dtr';

/**
 * The rest of what an RFC 2217 client (the ESXi host) says about the guest's serial
 * line: SET-CONTROL (section 3), FLOWCONTROL-SUSPEND/RESUME and the notification masks
 * (sections 4-5), SIGNATURE (section 2). Fields are absent until the host set them;
 * the answers to the "request" values then give the defaults in brackets.
 */
export interface ComPortState {
  /** SET-CONTROL 1/2/3/17/19 [none]. */
  flowControl?: OutboundFlowControl;
  /** SET-CONTROL 14/15/16/18 [none]. */
  inboundFlowControl?: InboundFlowControl;
  /** SET-CONTROL 5/6: the guest holds its transmit line in BREAK [off]. */
  break?: boolean;
  /** SET-CONTROL 8/9 [on]. */
  dtr?: boolean;
  /** SET-CONTROL 11/12 [on]. */
  rts?: boolean;
  /** FLOWCONTROL-SUSPEND seen and no FLOWCONTROL-RESUME since: the host asked us to stop sending data. */
  suspended: boolean;
  /** SET-LINESTATE-MASK: which NOTIFY-LINESTATE bits the host wants (RFC default 0). */
  lineStateMask: number;
  /** SET-MODEMSTATE-MASK: which NOTIFY-MODEMSTATE bits the host wants (RFC default 255). */
  modemStateMask: number;
  /** The host's SIGNATURE text (controls and invisible formatting replaced, util/text.ts; at most 256 characters). */
  signature?: string;
}

const OUTBOUND_FLOW: ReadonlyMap<number, OutboundFlowControl> = new Map([
  [ComPortControl.FLOW_NONE, 'none'],
  [ComPortControl.FLOW_XON_XOFF, 'xon-xoff'],
  [ComPortControl.FLOW_HARDWARE, 'hardware'],
  [ComPortControl.FLOW_DCD, 'dcd'],
  [ComPortControl.FLOW_DSR, 'dsr'],
]);
const INBOUND_FLOW: ReadonlyMap<number, InboundFlowControl> = new Map([
  [ComPortControl.INBOUND_FLOW_NONE, 'none'],
  [ComPortControl.INBOUND_FLOW_XON_XOFF, 'xon-xoff'],
  [ComPortControl.INBOUND_FLOW_HARDWARE, 'hardware'],
  [ComPortControl.INBOUND_FLOW_DTR, 'dtr'],
]);
const codeOf = <T>(map: ReadonlyMap<number, T>, value: T): number => [...map].find(([, v]) => v === value)![0];

/**
 * What we agree to: BINARY, SGA and ECHO on our side; BINARY, SGA, option 232 (and
 * COM-PORT when enabled) on the host's. AUTHENTICATION is refused: we do not implement
 * the RFC 2941 SSL upgrade; operators who want TLS use telnets:// (TLS from the first
 * byte). Shared by every connection.
 */
const POLICY = policyFromLists({ us: [Option.BINARY, Option.SGA, Option.ECHO], him: [Option.BINARY, Option.SGA, Option.VMWARE_EXT] });
const POLICY_WITH_COM_PORT = policyFromLists({
  us: [Option.BINARY, Option.SGA, Option.ECHO],
  him: [Option.BINARY, Option.SGA, Option.VMWARE_EXT, Option.COM_PORT],
});

/** Longest SIGNATURE text kept from a host, in characters. */
export const MAX_SIGNATURE = 256;

export interface VspcServerProtocolOptions {
  /** Service name a VM must ask for in DO-PROXY (the part of the URI before `?`). */
  serviceName: string;
  /** Answer WILL COM-PORT with DO and record the guest's UART settings (else DONT). */
  comPort?: boolean;
  /** vspc's RFC 2217 SIGNATURE, sent when the host asks (default `vspc <version>`). */
  signature?: string;
  maxSubnegotiation?: number;
}

export interface VspcServerProtocolHandlers {
  write(bytes: Buffer): boolean;
  /** Serial output of the VM. */
  data(data: Buffer): void;
  error(err: ProtocolError): void;
  command?(command: number): void;
  /** The peer agreed to VMWARE-TELNET-EXT: this is an ESXi host. */
  extensionEnabled?(): void;
  /** The peer refused VMWARE-TELNET-EXT: not an ESXi host (a person with telnet, most likely). */
  extensionRefused?(): void;
  proxy?(request: ProxyRequest, accepted: boolean): void;
  uuid?(uuid: string): void;
  name?(name: string): void;
  knownSuboptions?(codes: number[]): void;
  /** SET-BAUDRATE/DATASIZE/PARITY/STOPSIZE answered: the settings now in effect. */
  comPort?(settings: UartSettings): void;
  /** Anything else of RFC 2217 changed what is recorded (SET-CONTROL, suspend/resume, masks, SIGNATURE). */
  comPortState?(state: ComPortState): void;
  /** SET-CONTROL BREAK-ON while the line was not in BREAK: the guest sent a serial BREAK. */
  comPortBreak?(): void;
  /** FLOWCONTROL-SUSPEND (true) / -RESUME (false): stop or restart sending serial data to the host. */
  flowControl?(suspended: boolean): void;
  /** PURGE-DATA: drop what is buffered for the host (`transmit`) and/or from it (`receive`). */
  purge?(buffers: 'receive' | 'transmit' | 'both'): void;
  /** A COM-PORT command that RFC 2217 does not define from a client, or a reserved value: ignored, no answer. */
  comPortIgnored?(code: number, value: number | null): void;
  vmotionBegin?(seq: Buffer): void;
  vmotionPeer?(seqAndSecret: Buffer): void;
  vmotionComplete?(seq: Buffer): void;
  vmotionAbort?(): void;
  /** The VM sent an option-232 code we do not know; we answered UNKNOWN-SUBOPTION-RCVD-2. */
  unknownSuboption?(code: number): void;
}

/**
 * The concentrator's side of one ESXi connection, without I/O (ssh2 Protocol style):
 * telnet negotiation as an ESXi host expects it, option 232 decoded into typed
 * events, and encoders for our replies. The transport owns timers, sockets and the
 * decision what an event means (registration, vMotion matching).
 */
/** `comPortState` before any RFC 2217 command changed it. */
const INITIAL_LINE: Readonly<ComPortState> = Object.freeze({ suspended: false, lineStateMask: 0, modemStateMask: 255 });

/** `uartSettings` before the host reported any. */
const NO_UART: Readonly<UartSettings> = Object.freeze({});

export class VspcServerProtocol {
  readonly telnet: TelnetSession;
  private knownSent = false;
  /** The UART settings the host reported over COM-PORT (made on the first one). */
  private uart: UartSettings | null = null;
  /** What RFC 2217 commands recorded (made on the first that changes it; see `line`). */
  private lineValue: ComPortState | null = null;

  constructor(
    private readonly options: VspcServerProtocolOptions,
    private readonly handlers: VspcServerProtocolHandlers,
  ) {
    this.telnet = new TelnetSession(options.comPort ? POLICY_WITH_COM_PORT : POLICY, new VspcServerProtocol.TelnetEvents(this), {
      maxSubnegotiation: options.maxSubnegotiation,
    });
  }

  /** The telnet session's events, as one object per connection (prototype methods, no closures). */
  private static readonly TelnetEvents = class implements TelnetSessionHandlers {
    constructor(private readonly p: VspcServerProtocol) {}
    write(b: Buffer): boolean {
      return this.p.handlers.write(b);
    }
    data(d: Buffer): void {
      this.p.handlers.data(d);
    }
    command(c: number): void {
      this.p.handlers.command?.(c);
    }
    subnegotiation(option: number, payload: Buffer): void {
      this.p.onSubnegotiation(option, payload);
    }
    optionChange(side: Side, option: number, enabled: boolean): void {
      this.p.onOptionChange(side, option, enabled);
    }
    refused(side: Side, option: number): void {
      if (side === 'him' && option === Option.VMWARE_EXT) this.p.handlers.extensionRefused?.();
    }
    error(err: ProtocolError): void {
      this.p.handlers.error(err);
    }
  };

  /** Opening offers, sent as soon as the connection is up. */
  start(): void {
    this.telnet.requestUs(Option.BINARY);
    this.telnet.requestUs(Option.SGA);
    this.telnet.requestUs(Option.ECHO);
    this.telnet.requestHim(Option.BINARY);
    this.telnet.requestHim(Option.SGA);
    this.telnet.requestHim(Option.VMWARE_EXT);
  }

  receive(chunk: Buffer): void {
    this.telnet.receive(chunk);
  }

  get extensionEnabled(): boolean {
    return this.telnet.isEnabled('him', Option.VMWARE_EXT);
  }

  get uartSettings(): Readonly<UartSettings> {
    return this.uart ?? NO_UART;
  }

  /** What RFC 2217 commands other than the four UART settings recorded. */
  get comPortState(): Readonly<ComPortState> {
    return this.lineValue ?? INITIAL_LINE;
  }

  /** The recorded state, to change: made on first use (a host without COM-PORT never does). */
  private get line(): ComPortState {
    return (this.lineValue ??= { ...INITIAL_LINE });
  }

  sendData(data: Buffer): boolean {
    return this.telnet.sendData(data);
  }

  requestIdentity(): void {
    this.sendExt(Ext.GET_VM_VC_UUID);
    this.sendExt(Ext.GET_VM_NAME);
  }

  sendGoahead(seq: Buffer, secret: Buffer): boolean {
    return this.sendExt(Ext.VMOTION_GOAHEAD, Buffer.concat([seq, secret]));
  }

  sendNotNow(seq: Buffer): boolean {
    return this.sendExt(Ext.VMOTION_NOTNOW, seq);
  }

  sendPeerOk(seq: Buffer): boolean {
    return this.sendExt(Ext.VMOTION_PEER_OK, seq);
  }

  private sendExt(code: number, payload?: Buffer): boolean {
    const body = payload ? Buffer.concat([Buffer.of(code), payload]) : Buffer.of(code);
    return this.telnet.sendSubnegotiation(Option.VMWARE_EXT, body);
  }

  private onOptionChange(side: Side, option: number, enabled: boolean): void {
    if (side === 'him' && option === Option.VMWARE_EXT && enabled) {
      this.sendKnownSuboptions();
      this.handlers.extensionEnabled?.();
    }
  }

  private sendKnownSuboptions(): void {
    if (this.knownSent) return;
    this.knownSent = true;
    this.sendExt(Ext.KNOWN_SUBOPTIONS_2, Buffer.from(PROXY_KNOWN_SUBOPTIONS));
  }

  private onSubnegotiation(option: number, payload: Buffer): void {
    if (option === Option.VMWARE_EXT) {
      try {
        this.onExtension(payload);
      } catch (err) {
        if (err instanceof ProtocolError) this.telnet.fail(err);
        else throw err;
      }
    } else if (option === Option.COM_PORT && this.telnet.isEnabled('him', Option.COM_PORT)) {
      this.onComPort(payload);
    }
    // Subnegotiations of options we did not agree to are ignored, as RFC 855 allows.
  }

  private onExtension(payload: Buffer): void {
    if (payload.length === 0) throw new ProtocolError('VSPC_BAD_EXT', 'empty option-232 subnegotiation');
    const code = payload[0];
    const body = payload.subarray(1);
    switch (code) {
      case Ext.KNOWN_SUBOPTIONS_1:
        // Some hosts announce their list before we asked; our list goes out once either way.
        this.sendKnownSuboptions();
        this.handlers.knownSuboptions?.([...body]);
        return;
      case Ext.UNKNOWN_SUBOPTION_RCVD_1:
        this.handlers.unknownSuboption?.(body[0] ?? -1);
        return;
      case Ext.DO_PROXY: {
        const request = parseDoProxyPayload(body);
        const accepted = request.direction === 'S' && request.service === this.options.serviceName;
        this.sendExt(accepted ? Ext.WILL_PROXY : Ext.WONT_PROXY);
        if (accepted) this.requestIdentity();
        this.handlers.proxy?.(request, accepted);
        return;
      }
      case Ext.VM_VC_UUID:
        this.handlers.uuid?.(parseUuidPayload(body));
        return;
      case Ext.VM_NAME:
        this.handlers.name?.(parseNamePayload(body));
        return;
      case Ext.VM_BIOS_UUID:
      case Ext.VM_LOCATION_UUID:
        return; // Defined and harmless; we identify by the VC UUID only.
      case Ext.VMOTION_BEGIN:
        this.handlers.vmotionBegin?.(body);
        return;
      case Ext.VMOTION_PEER:
        if (body.length === 0) throw new ProtocolError('VSPC_BAD_VMOTION', 'VMOTION-PEER without sequence and secret');
        this.handlers.vmotionPeer?.(body);
        return;
      case Ext.VMOTION_COMPLETE:
        this.handlers.vmotionComplete?.(body);
        return;
      case Ext.VMOTION_ABORT:
        this.handlers.vmotionAbort?.();
        return;
      default:
        this.sendExt(Ext.UNKNOWN_SUBOPTION_RCVD_2, Buffer.of(code));
        this.handlers.unknownSuboption?.(code);
    }
  }

  /**
   * One RFC 2217 command from the host (the client). Every command the RFC has the
   * access server answer is answered with code + 100 and the value now in effect;
   * FLOWCONTROL-SUSPEND/RESUME are not answered (section 5: they are requests to the
   * receiver, not settings); SIGNATURE with text is the host's own and is recorded;
   * NOTIFY-LINESTATE/MODEMSTATE go from the access server to the client only, so from
   * the host they are ignored, as are malformed payloads and reserved values.
   */
  private onComPort(payload: Buffer): void {
    if (payload.length === 0) return;
    const code = payload[0];
    const body = payload.subarray(1);
    const v = body.length === 1 ? body[0] : null;
    switch (code) {
      case ComPort.SIGNATURE:
        if (body.length === 0) {
          this.replyComPort(code, Buffer.from(this.options.signature ?? `vspc ${VERSION}`, 'utf8'));
        } else {
          // Another party's name and version: keep it printable and bounded for `show`.
          this.line.signature = [...sanitizeText(body.toString('utf8'))].slice(0, MAX_SIGNATURE).join('');
          this.stateChanged();
        }
        return;
      case ComPort.SET_BAUDRATE: {
        if (body.length !== 4) return this.ignoreComPort(code, null);
        const baud = body.readUInt32BE(0);
        if (baud !== 0) (this.uart ??= {}).baudRate = baud; // 0 asks for the current value
        const reply = Buffer.alloc(4);
        reply.writeUInt32BE(this.uart?.baudRate ?? 0);
        return this.replyUart(code, reply);
      }
      case ComPort.SET_DATASIZE:
        if (v === null) return this.ignoreComPort(code, null);
        if (v >= 5 && v <= 8) (this.uart ??= {}).dataSize = v;
        return this.replyUart(code, Buffer.of(this.uart?.dataSize ?? 0));
      case ComPort.SET_PARITY:
        if (v === null) return this.ignoreComPort(code, null);
        if (PARITY[v]) (this.uart ??= {}).parity = PARITY[v];
        return this.replyUart(code, Buffer.of(this.uart?.parity ? PARITY.indexOf(this.uart.parity) : 0));
      case ComPort.SET_STOPSIZE:
        if (v === null) return this.ignoreComPort(code, null);
        if (STOP_BITS[v]) (this.uart ??= {}).stopBits = STOP_BITS[v];
        return this.replyUart(code, Buffer.of(this.uart?.stopBits ? STOP_BITS.indexOf(this.uart.stopBits) : 0));
      case ComPort.SET_CONTROL:
        if (v === null) return this.ignoreComPort(code, null);
        return this.onSetControl(v);
      case ComPort.FLOWCONTROL_SUSPEND:
      case ComPort.FLOWCONTROL_RESUME: {
        const suspended = code === ComPort.FLOWCONTROL_SUSPEND;
        if (this.line.suspended === suspended) return;
        this.line.suspended = suspended;
        this.handlers.flowControl?.(suspended);
        this.stateChanged();
        return;
      }
      case ComPort.SET_LINESTATE_MASK:
      case ComPort.SET_MODEMSTATE_MASK:
        if (v === null) return this.ignoreComPort(code, null);
        if (code === ComPort.SET_LINESTATE_MASK) this.line.lineStateMask = v;
        else this.line.modemStateMask = v;
        this.replyComPort(code, Buffer.of(v));
        this.stateChanged();
        return;
      case ComPort.PURGE_DATA:
        if (v !== ComPortPurge.RECEIVE && v !== ComPortPurge.TRANSMIT && v !== ComPortPurge.BOTH) return this.ignoreComPort(code, v);
        this.handlers.purge?.(v === ComPortPurge.RECEIVE ? 'receive' : v === ComPortPurge.TRANSMIT ? 'transmit' : 'both');
        this.replyComPort(code, Buffer.of(v));
        return;
      default:
        // NOTIFY-LINESTATE/MODEMSTATE (server → client only), 13-99 (undefined), 100+
        // (the server's own codes): nothing a client asks of an access server.
        return this.ignoreComPort(code, v);
    }
  }

  /** SET-CONTROL (RFC 2217 section 3): requests are answered with the state, settings with the value set. */
  private onSetControl(v: number): void {
    const C = ComPortControl;
    const l = this.line;
    let answer: number;
    if (v === C.REQUEST_FLOW) answer = codeOf(OUTBOUND_FLOW, l.flowControl ?? 'none');
    else if (OUTBOUND_FLOW.has(v)) {
      l.flowControl = OUTBOUND_FLOW.get(v);
      answer = v;
    } else if (v === C.REQUEST_INBOUND_FLOW) answer = codeOf(INBOUND_FLOW, l.inboundFlowControl ?? 'none');
    else if (INBOUND_FLOW.has(v)) {
      l.inboundFlowControl = INBOUND_FLOW.get(v);
      answer = v;
    } else if (v === C.REQUEST_BREAK) answer = l.break ? C.BREAK_ON : C.BREAK_OFF;
    else if (v === C.BREAK_ON || v === C.BREAK_OFF) {
      const was = l.break ?? false;
      l.break = v === C.BREAK_ON;
      answer = v;
      // The rising edge is the guest's BREAK; holding it on is one BREAK, not many.
      if (l.break && !was) this.handlers.comPortBreak?.();
    } else if (v === C.REQUEST_DTR) answer = (l.dtr ?? true) ? C.DTR_ON : C.DTR_OFF;
    else if (v === C.DTR_ON || v === C.DTR_OFF) {
      l.dtr = v === C.DTR_ON;
      answer = v;
    } else if (v === C.REQUEST_RTS) answer = (l.rts ?? true) ? C.RTS_ON : C.RTS_OFF;
    else if (v === C.RTS_ON || v === C.RTS_OFF) {
      l.rts = v === C.RTS_ON;
      answer = v;
    } else return this.ignoreComPort(ComPort.SET_CONTROL, v); // 20-127: reserved
    this.replyComPort(ComPort.SET_CONTROL, Buffer.of(answer));
    this.stateChanged();
  }

  /** RFC 2217: the access server answers with code + 100 and the value now in effect. */
  private replyComPort(code: number, value: Buffer): void {
    this.telnet.sendSubnegotiation(Option.COM_PORT, Buffer.concat([Buffer.of(code + ComPort.SERVER_OFFSET), value]));
  }

  private replyUart(code: number, value: Buffer): void {
    this.replyComPort(code, value);
    this.handlers.comPort?.({ ...this.uartSettings });
  }

  private ignoreComPort(code: number, value: number | null): void {
    this.handlers.comPortIgnored?.(code, value);
  }

  private stateChanged(): void {
    this.handlers.comPortState?.({ ...this.comPortState });
  }
}
