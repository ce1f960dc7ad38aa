/**
 * The RFC 2217 COM-PORT-OPTION subnegotiation payloads (what lies between
 * `IAC SB 44` and `IAC SE`, IAC doubling already undone by the telnet decoder),
 * decoded into typed commands and encoded back. Both directions: codes 0-12 are the
 * client's, 100-112 the access server's.
 *
 * Sans-I/O and total: `decodeComPort` never throws. Any payload decodes, or is a
 * `ProtocolError` with a stable code:
 * - `VSPC_COMPORT_UNKNOWN`: a command code RFC 2217 does not define (13-99, 113-255);
 * - `VSPC_COMPORT_MALFORMED`: an empty payload, a value of the wrong length for its
 *   command (baud rate: 4 bytes; SUSPEND/RESUME: none; the rest: 1), or a SIGNATURE
 *   longer than MAX_SIGNATURE_BYTES.
 * Values are not judged here (a SET-DATASIZE of 9 decodes): what a value means, and
 * whether it is reserved, is the receiver's business (server.ts).
 */
import { ProtocolError } from '../../errors.js';
import { ComPort, LAST_COMMAND, PARITY_BY_CODE, STOP_BITS_BY_CODE } from './codes.js';

/** Longest SIGNATURE text accepted, in bytes (the RFC sets none; a name and a version fit easily). */
export const MAX_SIGNATURE_BYTES = 1024;

export type ComPortSender = 'client' | 'server';

export type ComPortCommand =
  /** Empty text: a request for the receiver's signature. */
  | { name: 'signature'; text: Buffer }
  /** 0 asks for the current rate. */
  | { name: 'set-baudrate'; value: number }
  | { name: 'set-datasize'; value: number }
  | { name: 'set-parity'; value: number }
  | { name: 'set-stopsize'; value: number }
  | { name: 'set-control'; value: number }
  | { name: 'notify-linestate'; value: number }
  | { name: 'notify-modemstate'; value: number }
  | { name: 'flowcontrol-suspend' }
  | { name: 'flowcontrol-resume' }
  | { name: 'set-linestate-mask'; value: number }
  | { name: 'set-modemstate-mask'; value: number }
  | { name: 'purge-data'; value: number };

export type ComPortCommandName = ComPortCommand['name'];

export interface ComPortMessage {
  sender: ComPortSender;
  command: ComPortCommand;
}

export type ComPortDecodeResult = { ok: true; message: ComPortMessage } | { ok: false; error: ProtocolError };

/** Command names by client code (0-12). */
export const COMMAND_NAMES: readonly ComPortCommandName[] = [
  'signature',
  'set-baudrate',
  'set-datasize',
  'set-parity',
  'set-stopsize',
  'set-control',
  'notify-linestate',
  'notify-modemstate',
  'flowcontrol-suspend',
  'flowcontrol-resume',
  'set-linestate-mask',
  'set-modemstate-mask',
  'purge-data',
];

const CODE_BY_NAME: ReadonlyMap<ComPortCommandName, number> = new Map(COMMAND_NAMES.map((n, i) => [n, i]));

/** The client code (0-12) of a command name. */
export function commandCode(name: ComPortCommandName): number {
  return CODE_BY_NAME.get(name)!;
}

function malformed(message: string, code: number, length: number): ComPortDecodeResult {
  return { ok: false, error: new ProtocolError('VSPC_COMPORT_MALFORMED', message, { comPortCode: code, length }) };
}

/** Decodes one COM-PORT payload. Never throws. */
export function decodeComPort(payload: Uint8Array): ComPortDecodeResult {
  if (payload.length === 0) return malformed('empty COM-PORT subnegotiation', -1, 0);
  const code = payload[0];
  let sender: ComPortSender;
  let base: number;
  if (code <= LAST_COMMAND) {
    sender = 'client';
    base = code;
  } else if (code >= ComPort.SERVER_OFFSET && code <= ComPort.SERVER_OFFSET + LAST_COMMAND) {
    sender = 'server';
    base = code - ComPort.SERVER_OFFSET;
  } else {
    return { ok: false, error: new ProtocolError('VSPC_COMPORT_UNKNOWN', `COM-PORT command ${code} is not defined by RFC 2217`, { comPortCode: code }) };
  }
  const name = COMMAND_NAMES[base];
  const body = payload.subarray(1);
  switch (name) {
    case 'signature':
      if (body.length > MAX_SIGNATURE_BYTES) return malformed(`COM-PORT SIGNATURE of ${body.length} bytes (at most ${MAX_SIGNATURE_BYTES})`, code, body.length);
      return { ok: true, message: { sender, command: { name, text: Buffer.from(body) } } };
    case 'set-baudrate':
      if (body.length !== 4) return malformed(`COM-PORT SET-BAUDRATE with ${body.length} value bytes (4 expected)`, code, body.length);
      return { ok: true, message: { sender, command: { name, value: ((body[0] << 24) | (body[1] << 16) | (body[2] << 8) | body[3]) >>> 0 } } };
    case 'flowcontrol-suspend':
    case 'flowcontrol-resume':
      if (body.length !== 0) return malformed(`COM-PORT ${name.toUpperCase()} with ${body.length} value bytes (none expected)`, code, body.length);
      return { ok: true, message: { sender, command: { name } } };
    default:
      if (body.length !== 1) return malformed(`COM-PORT ${name.toUpperCase()} with ${body.length} value bytes (1 expected)`, code, body.length);
      return { ok: true, message: { sender, command: { name, value: body[0] } } };
  }
}

/**
 * Encodes one COM-PORT payload (to be framed with `encodeSubnegotiation(44, ...)`,
 * which doubles IAC bytes, e.g. in a baud rate). Values are truncated to their field
 * (one byte; the baud rate to 32 bits); a signature longer than MAX_SIGNATURE_BYTES is
 * cut there.
 */
export function encodeComPort(message: ComPortMessage): Buffer {
  const c = message.command;
  const code = commandCode(c.name) + (message.sender === 'server' ? ComPort.SERVER_OFFSET : 0);
  switch (c.name) {
    case 'signature':
      return Buffer.concat([Buffer.of(code), c.text.subarray(0, MAX_SIGNATURE_BYTES)]);
    case 'set-baudrate': {
      const out = Buffer.alloc(5);
      out[0] = code;
      out.writeUInt32BE(c.value >>> 0, 1);
      return out;
    }
    case 'flowcontrol-suspend':
    case 'flowcontrol-resume':
      return Buffer.of(code);
    default:
      return Buffer.of(code, c.value & 0xff);
  }
}

// --- Values as the rest of vspc names them (the domain's SerialLineSettings shape).

export type ComPortParity = NonNullable<(typeof PARITY_BY_CODE)[number]>;
export type ComPortStopBits = NonNullable<(typeof STOP_BITS_BY_CODE)[number]>;

/** SET-PARITY value → name; undefined for 0 (a query) and reserved values. */
export function parityOf(value: number): ComPortParity | undefined {
  return PARITY_BY_CODE[value];
}

/** Name → SET-PARITY value; 0 when unknown. */
export function parityCode(parity: ComPortParity | undefined): number {
  return parity ? PARITY_BY_CODE.indexOf(parity) : 0;
}

/** SET-STOPSIZE value → name; undefined for 0 (a query) and reserved values. */
export function stopBitsOf(value: number): ComPortStopBits | undefined {
  return STOP_BITS_BY_CODE[value];
}

/** Name → SET-STOPSIZE value; 0 when unknown. */
export function stopBitsCode(stopBits: ComPortStopBits | undefined): number {
  return stopBits ? STOP_BITS_BY_CODE.indexOf(stopBits) : 0;
}

/** SET-DATASIZE value → data bits; undefined for 0 (a query) and values other than 5-8. */
export function dataSizeOf(value: number): number | undefined {
  return value >= 5 && value <= 8 ? value : undefined;
}
