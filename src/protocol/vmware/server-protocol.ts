import { ProtocolError } from '../../errors.js';
import { Option, type Side } from '../telnet/index.js';
import { policyFromLists, TelnetSession } from '../telnet/index.js';
import { ComPort, Ext, PROXY_KNOWN_SUBOPTIONS } from './codes.js';
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

export interface VspcServerProtocolOptions {
  /** Service name a VM must ask for in DO-PROXY (the part of the URI before `?`). */
  serviceName: string;
  /** Answer WILL COM-PORT with DO and record the guest's UART settings (else DONT). */
  comPort?: boolean;
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
  comPort?(settings: UartSettings): void;
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
export class VspcServerProtocol {
  readonly telnet: TelnetSession;
  private knownSent = false;
  private readonly uart: UartSettings = {};

  constructor(
    private readonly options: VspcServerProtocolOptions,
    private readonly handlers: VspcServerProtocolHandlers,
  ) {
    this.telnet = new TelnetSession(
      policyFromLists({
        us: [Option.BINARY, Option.SGA, Option.ECHO],
        // AUTHENTICATION is refused: we do not implement the RFC 2941 SSL upgrade;
        // operators who want TLS use telnets:// (TLS from the first byte).
        him: [Option.BINARY, Option.SGA, Option.VMWARE_EXT, ...(options.comPort ? [Option.COM_PORT] : [])],
      }),
      {
        write: (b) => this.handlers.write(b),
        data: (d) => this.handlers.data(d),
        command: (c) => this.handlers.command?.(c),
        subnegotiation: (option, payload) => this.onSubnegotiation(option, payload),
        optionChange: (side, option, enabled) => this.onOptionChange(side, option, enabled),
        refused: (side, option) => {
          if (side === 'him' && option === Option.VMWARE_EXT) this.handlers.extensionRefused?.();
        },
        error: (err) => this.handlers.error(err),
      },
      { maxSubnegotiation: options.maxSubnegotiation },
    );
  }

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
    return this.uart;
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

  private onComPort(payload: Buffer): void {
    if (payload.length < 2) return;
    const code = payload[0];
    const v = payload[1];
    let reply: Buffer;
    switch (code) {
      case ComPort.SET_BAUDRATE: {
        if (payload.length !== 5) return;
        const baud = payload.readUInt32BE(1);
        if (baud !== 0) this.uart.baudRate = baud; // 0 asks for the current value
        reply = Buffer.alloc(4);
        reply.writeUInt32BE(this.uart.baudRate ?? 0);
        break;
      }
      case ComPort.SET_DATASIZE:
        if (v >= 5 && v <= 8) this.uart.dataSize = v;
        reply = Buffer.of(this.uart.dataSize ?? 0);
        break;
      case ComPort.SET_PARITY:
        if (PARITY[v]) this.uart.parity = PARITY[v];
        reply = Buffer.of(this.uart.parity ? PARITY.indexOf(this.uart.parity) : 0);
        break;
      case ComPort.SET_STOPSIZE:
        if (STOP_BITS[v]) this.uart.stopBits = STOP_BITS[v];
        reply = Buffer.of(this.uart.stopBits ? STOP_BITS.indexOf(this.uart.stopBits) : 0);
        break;
      default:
        return; // Line/modem state, flow control, purge: nothing to record.
    }
    // RFC 2217: the access server answers with code + 100 and the value now in effect.
    this.telnet.sendSubnegotiation(Option.COM_PORT, Buffer.concat([Buffer.of(code + ComPort.SERVER_OFFSET), reply]));
    this.handlers.comPort?.({ ...this.uart });
  }
}
