import { CR, IAC, LF, NUL, SB, SE, type NegotiationVerb } from './constants.js';
import type { TelnetToken } from './tokens.js';

/**
 * Escapes data for the wire: every 255 is doubled, and in non-binary mode (RFC 854
 * NVT) a CR that is not followed by LF in the same buffer is sent as CR NUL. The
 * CR rule is stateless on purpose: a CR at the end of one buffer followed by LF at
 * the start of the next goes out as CR NUL LF, which any decoder reads back as
 * CR LF, so no state has to be carried between writes.
 * Returns the input itself when nothing needs escaping (the common case).
 */
export function encodeData(data: Uint8Array, binary = true): Buffer {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let extra = 0;
  let i = buf.indexOf(IAC);
  while (i >= 0) {
    extra++;
    i = buf.indexOf(IAC, i + 1);
  }
  if (!binary) {
    i = buf.indexOf(CR);
    while (i >= 0) {
      if (buf[i + 1] !== LF) extra++;
      i = buf.indexOf(CR, i + 1);
    }
  }
  if (extra === 0) return buf;
  const out = Buffer.allocUnsafe(buf.length + extra);
  let o = 0;
  for (let k = 0; k < buf.length; k++) {
    const b = buf[k];
    out[o++] = b;
    if (b === IAC) out[o++] = IAC;
    else if (!binary && b === CR && buf[k + 1] !== LF) out[o++] = NUL;
  }
  return out;
}

export function encodeCommand(command: number): Buffer {
  return Buffer.from([IAC, command]);
}

export function encodeNegotiation(verb: NegotiationVerb, option: number): Buffer {
  return Buffer.from([IAC, verb, option]);
}

/** `IAC SB option <payload with 255 doubled> IAC SE`. */
export function encodeSubnegotiation(option: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const body = encodeData(payload, true);
  const out = Buffer.allocUnsafe(body.length + 5);
  out[0] = IAC;
  out[1] = SB;
  out[2] = option;
  body.copy(out, 3);
  out[body.length + 3] = IAC;
  out[body.length + 4] = SE;
  return out;
}

/** Encodes any non-error token; the inverse of the decoder. */
export function encodeToken(token: Exclude<TelnetToken, { type: 'error' }>, binary = true): Buffer {
  switch (token.type) {
    case 'data':
      return encodeData(token.data, binary);
    case 'command':
      return encodeCommand(token.command);
    case 'negotiation':
      return encodeNegotiation(token.verb, token.option);
    case 'subnegotiation':
      return encodeSubnegotiation(token.option, token.payload);
  }
}
