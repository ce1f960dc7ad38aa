/**
 * A VspcServerProtocol with every handler recorded, for the example and property
 * tests: events as plain comparable values, written bytes as chunks.
 */
import { ProtocolError } from '../../src/errors.js';
import { VspcServerProtocol, type UartSettings, type VspcServerProtocolHandlers, type VspcServerProtocolOptions } from '../../src/protocol/vmware/server-protocol.js';
import type { ProxyRequest } from '../../src/protocol/vmware/identity.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { Option } from '../../src/protocol/telnet/constants.js';

export type ProtocolEvent =
  | { type: 'data'; data: number[] }
  | { type: 'command'; command: number }
  | { type: 'extensionEnabled' }
  | { type: 'extensionRefused' }
  | { type: 'proxy'; request: ProxyRequest; accepted: boolean }
  | { type: 'uuid'; uuid: string }
  | { type: 'name'; name: string }
  | { type: 'knownSuboptions'; codes: number[] }
  | { type: 'comPort'; settings: UartSettings }
  | { type: 'vmotionBegin'; seq: number[] }
  | { type: 'vmotionPeer'; seqAndSecret: number[] }
  | { type: 'vmotionComplete'; seq: number[] }
  | { type: 'vmotionAbort' }
  | { type: 'unknownSuboption'; code: number }
  | { type: 'error'; code: string };

export interface Recorded {
  protocol: VspcServerProtocol;
  events: ProtocolEvent[];
  /** Every error object the error handler got (to check the class). */
  errors: unknown[];
  written: Buffer[];
  /** Written bytes since the last call. */
  take(): Buffer;
}

/** `more`: further handlers (RFC 2217 state, flow control, ...), called as given. */
export function recordProtocol(options: Partial<VspcServerProtocolOptions> = {}, more: Partial<VspcServerProtocolHandlers> = {}): Recorded {
  const events: ProtocolEvent[] = [];
  const errors: unknown[] = [];
  const written: Buffer[] = [];
  let taken = 0;
  const protocol = new VspcServerProtocol(
    { serviceName: 'vSPC.py', comPort: true, ...options },
    {
      write: (b) => {
        written.push(Buffer.from(b));
        return true;
      },
      data: (d) => events.push({ type: 'data', data: [...d] }),
      error: (err) => {
        errors.push(err);
        events.push({ type: 'error', code: err.code });
      },
      command: (command) => events.push({ type: 'command', command }),
      extensionEnabled: () => events.push({ type: 'extensionEnabled' }),
      extensionRefused: () => events.push({ type: 'extensionRefused' }),
      proxy: (request, accepted) => events.push({ type: 'proxy', request: { ...request }, accepted }),
      uuid: (uuid) => events.push({ type: 'uuid', uuid }),
      name: (name) => events.push({ type: 'name', name }),
      knownSuboptions: (codes) => events.push({ type: 'knownSuboptions', codes: [...codes] }),
      comPort: (settings) => events.push({ type: 'comPort', settings: { ...settings } }),
      vmotionBegin: (seq) => events.push({ type: 'vmotionBegin', seq: [...seq] }),
      vmotionPeer: (ss) => events.push({ type: 'vmotionPeer', seqAndSecret: [...ss] }),
      vmotionComplete: (seq) => events.push({ type: 'vmotionComplete', seq: [...seq] }),
      vmotionAbort: () => events.push({ type: 'vmotionAbort' }),
      unknownSuboption: (code) => events.push({ type: 'unknownSuboption', code }),
      ...more,
    },
  );
  return {
    protocol,
    events,
    errors,
    written,
    take() {
      const b = Buffer.concat(written.slice(taken));
      taken = written.length;
      return b;
    },
  };
}

/** Adjacent data events merged, empty ones dropped: chunking may split data anywhere. */
export function normaliseEvents(events: readonly ProtocolEvent[]): ProtocolEvent[] {
  const out: ProtocolEvent[] = [];
  for (const e of events) {
    if (e.type === 'data') {
      if (e.data.length === 0) continue;
      const last = out[out.length - 1];
      if (last?.type === 'data') last.data.push(...e.data);
      else out.push({ type: 'data', data: [...e.data] });
    } else {
      out.push(e);
    }
  }
  return out;
}

/** `IAC SB 232 <code> <payload> IAC SE`, 255 doubled. */
export function ext(code: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  return encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
}

/** Error codes VspcServerProtocol may report (telnet framing, then option 232). */
export const PROTOCOL_ERROR_CODES = [
  'TELNET_BAD_COMMAND',
  'TELNET_BAD_SB_ESCAPE',
  'TELNET_SB_TOO_LONG',
  'VSPC_BAD_EXT',
  'VSPC_BAD_DO_PROXY',
  'VSPC_BAD_UUID',
  'VSPC_BAD_NAME',
  'VSPC_BAD_VMOTION',
] as const;

export function isProtocolError(err: unknown): err is ProtocolError {
  return err instanceof ProtocolError;
}
