/**
 * Payload codecs of the individual frame types (all integers big-endian). Decoders
 * return undefined for a payload of the wrong length; they never throw.
 */
import { HELLO_SIZE, MAX_REASON_TEXT, MAX_SACK_BYTES } from './constants.js';
import { sanitizeText } from '../../util/text.js';

export interface Hello {
  /** Protocol version (1). */
  version: number;
  /** Role byte: 0 host, 1 agent. */
  role: number;
  /** HelloFlag bits (UP). */
  flags: number;
  /** Receive window of the sender, in frames (1..128). */
  window: number;
  /** Random non-zero u32 identifying the sender's session state. */
  bootId: number;
  /** The receiver's boot id as the sender knows it; 0 when unknown. */
  peerBootId: number;
  /** Largest frame payload the sender accepts (64..1024). */
  maxPayload: number;
}

export function encodeHello(h: Hello): Uint8Array {
  const b = new Uint8Array(HELLO_SIZE);
  const v = new DataView(b.buffer);
  b[0] = h.version;
  b[1] = h.role;
  b[2] = h.flags;
  b[3] = h.window;
  v.setUint32(4, h.bootId >>> 0);
  v.setUint32(8, h.peerBootId >>> 0);
  v.setUint16(12, h.maxPayload);
  return b;
}

/** Byte 0 (version) is readable in every version; the rest is version 1's layout. */
export function decodeHello(p: Uint8Array): Hello | undefined {
  if (p.length < 1) return undefined;
  if (p[0] === 1 && p.length < HELLO_SIZE) return undefined;
  if (p.length < HELLO_SIZE) return { version: p[0], role: 0, flags: 0, window: 0, bootId: 0, peerBootId: 0, maxPayload: 0 };
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return {
    version: p[0],
    role: p[1],
    flags: p[2],
    window: p[3],
    bootId: v.getUint32(4),
    peerBootId: v.getUint32(8),
    maxPayload: v.getUint16(12),
  };
}

/**
 * SACK bitmap of an ACK frame: bit (i % 8) of byte (i >> 3), least significant bit
 * first, set when frame ack + 1 + i has been received. `offsets` are the i values.
 * Trailing zero bytes are omitted.
 */
export function encodeSack(offsets: Iterable<number>): Uint8Array {
  const b = new Uint8Array(MAX_SACK_BYTES);
  let len = 0;
  for (const i of offsets) {
    if (i < 0 || i >= MAX_SACK_BYTES * 8) continue;
    b[i >> 3] |= 1 << (i & 7);
    len = Math.max(len, (i >> 3) + 1);
  }
  return b.subarray(0, len);
}

/** The offsets i of the set bits (frame ack + 1 + i received), ascending; at most 128. */
export function decodeSack(p: Uint8Array): number[] {
  const out: number[] = [];
  const n = Math.min(p.length, MAX_SACK_BYTES);
  for (let byte = 0; byte < n; byte++) {
    const v = p[byte];
    if (v === 0) continue;
    for (let bit = 0; bit < 8; bit++) if (v & (1 << bit)) out.push(byte * 8 + bit);
  }
  return out;
}

export interface OpenBody {
  /** Target TCP port on the acceptor's loopback. */
  port: number;
  /** Initial credit the opener grants: bytes the acceptor may send before a CREDIT. */
  credit: number;
}

export function encodeOpen(o: OpenBody): Uint8Array {
  const b = new Uint8Array(6);
  const v = new DataView(b.buffer);
  v.setUint16(0, o.port);
  v.setUint32(2, o.credit >>> 0);
  return b;
}

export function decodeOpen(p: Uint8Array): OpenBody | undefined {
  if (p.length !== 6) return undefined;
  const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
  return { port: v.getUint16(0), credit: v.getUint32(2) };
}

/** OPEN_OK (initial credit of the acceptor) and CREDIT (increment) carry one u32. */
export function encodeU32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

export function decodeU32(p: Uint8Array): number | undefined {
  if (p.length !== 4) return undefined;
  return new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(0);
}

export interface ReasonBody {
  code: number;
  /** UTF-8 text for logs, at most MAX_REASON_TEXT bytes; may be empty. */
  text: string;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: false });

/** OPEN_FAIL and RESET: code u8, then optional UTF-8 text (cut to MAX_REASON_TEXT bytes). */
export function encodeReason(r: ReasonBody): Uint8Array {
  let text = utf8.encode(r.text);
  if (text.length > MAX_REASON_TEXT) {
    // Cut at a character boundary (never in the middle of a multi-byte sequence).
    let cut = MAX_REASON_TEXT;
    while (cut > 0 && (text[cut] & 0xc0) === 0x80) cut--;
    text = text.subarray(0, cut);
  }
  const b = new Uint8Array(1 + text.length);
  b[0] = r.code & 0xff;
  b.set(text, 1);
  return b;
}

export function decodeReason(p: Uint8Array): ReasonBody | undefined {
  if (p.length < 1) return undefined;
  // The peer's words end up in log lines, admin API answers and `vspc-admin tunnel`'s
  // stderr: sanitised here, where they enter (util/text.ts), like every peer's text.
  return { code: p[0], text: sanitizeText(fromUtf8.decode(p.subarray(1, 1 + MAX_REASON_TEXT))) };
}
