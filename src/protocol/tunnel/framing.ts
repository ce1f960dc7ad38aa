/**
 * Framing layer: frames ↔ bytes. A frame body is a 10-byte header, a payload of at
 * most MAX_PAYLOAD bytes (MAX_LARGE_PAYLOAD where both sides announced large frames)
 * and a CRC-32C; on the wire the body is COBS-encoded and
 * followed by a 0x00 delimiter. The decoder is a byte-driven state machine (ws
 * receiver style): it accepts any chunking of the input, discards garbage, corrupt
 * and over-long frames, and resynchronises at the next delimiter. It never throws on
 * input, uses at most maxEncodedLength(its maxPayload) bytes of buffer, and runs in
 * linear time.
 */
import { CRC_SIZE, DELIMITER, HEADER_SIZE, MAX_LARGE_PAYLOAD, MAX_PAYLOAD, maxEncodedLength } from './constants.js';
import { cobsDecode, cobsEncode } from './cobs.js';
import { crc32c } from './crc32c.js';
import { TunnelError, TunnelErrorCode } from './errors.js';

/** One decoded frame. All integers are unsigned; `payload` is 0..MAX_LARGE_PAYLOAD bytes. */
export interface Frame {
  /** Frame type (FrameType). */
  type: number;
  /** Flag bits (Flag); unknown bits are ignored by receivers. */
  flags: number;
  /** Session tag (u16); 0 in HELLO. */
  tag: number;
  /** Sequence number (u16) of a sequenced frame; 0 otherwise. */
  seq: number;
  /** Cumulative acknowledgement (u16): the next sequence number the sender expects. */
  ack: number;
  /** Stream id (u16); 0 for link frames. */
  stream: number;
  payload: Uint8Array;
}

/**
 * The frame body: header, payload, CRC-32C (big-endian) over header and payload.
 * Throws TunnelError VSPC_TUNNEL_FRAME_TOO_LARGE when the payload exceeds
 * MAX_LARGE_PAYLOAD (what the peer accepts is the link's business: spec 5.1).
 */
export function encodeFrameBody(f: Frame): Uint8Array {
  if (f.payload.length > MAX_LARGE_PAYLOAD) {
    throw new TunnelError(TunnelErrorCode.FRAME_TOO_LARGE, `frame payload of ${f.payload.length} bytes exceeds ${MAX_LARGE_PAYLOAD}`, {
      length: f.payload.length,
    });
  }
  const n = HEADER_SIZE + f.payload.length;
  const body = new Uint8Array(n + CRC_SIZE);
  body[0] = f.type & 0xff;
  body[1] = f.flags & 0xff;
  body[2] = (f.tag >>> 8) & 0xff;
  body[3] = f.tag & 0xff;
  body[4] = (f.seq >>> 8) & 0xff;
  body[5] = f.seq & 0xff;
  body[6] = (f.ack >>> 8) & 0xff;
  body[7] = f.ack & 0xff;
  body[8] = (f.stream >>> 8) & 0xff;
  body[9] = f.stream & 0xff;
  body.set(f.payload, HEADER_SIZE);
  const crc = crc32c(body, 0, n);
  body[n] = crc >>> 24;
  body[n + 1] = (crc >>> 16) & 0xff;
  body[n + 2] = (crc >>> 8) & 0xff;
  body[n + 3] = crc & 0xff;
  return body;
}

/**
 * Wire bytes of one frame: COBS(body) then 0x00; with `leadingDelimiter`, a 0x00
 * first as well (flushes whatever garbage the line accumulated while idle).
 */
export function encodeFrame(f: Frame, leadingDelimiter = false): Uint8Array {
  const enc = cobsEncode(encodeFrameBody(f));
  const lead = leadingDelimiter ? 1 : 0;
  const out = new Uint8Array(lead + enc.length + 1);
  out.set(enc, lead);
  out[out.length - 1] = DELIMITER;
  return out;
}

/** Why a body was rejected. */
export type BodyError = 'short' | 'long' | 'crc';

/** Parses a decoded (un-COBSed) body; checks length (payload at most `maxPayload`) and CRC. */
export function decodeFrameBody(body: Uint8Array, maxPayload = MAX_PAYLOAD): Frame | BodyError {
  if (body.length < HEADER_SIZE + CRC_SIZE) return 'short';
  const n = body.length - CRC_SIZE;
  if (n - HEADER_SIZE > maxPayload) return 'long';
  const want = ((body[n] << 24) | (body[n + 1] << 16) | (body[n + 2] << 8) | body[n + 3]) >>> 0;
  if (crc32c(body, 0, n) !== want) return 'crc';
  return {
    type: body[0],
    flags: body[1],
    tag: (body[2] << 8) | body[3],
    seq: (body[4] << 8) | body[5],
    ack: (body[6] << 8) | body[7],
    stream: (body[8] << 8) | body[9],
    payload: body.subarray(HEADER_SIZE, n),
  };
}

/** Counters of a FrameDecoder; all monotonic. */
export interface FrameDecoderStats {
  /** Bytes given to decode(). */
  bytesIn: number;
  /** Frames accepted. */
  frames: number;
  /** Bytes thrown away (garbage, corrupt or over-long frames), delimiters excluded. */
  discardedBytes: number;
  /** Delimited runs that were not valid COBS. */
  badCobs: number;
  /** Frames whose CRC did not match. */
  badCrc: number;
  /** Runs too short to be a frame (fewer than header + CRC bytes). */
  tooShort: number;
  /** Runs longer than the largest frame accepted (cut at maxEncodedLength(maxPayload) bytes, then skipped). */
  tooLong: number;
}

/**
 * Incremental frame decoder. `decode(chunk)` returns the frames completed by that
 * chunk, in wire order. Bytes between delimiters that do not form a valid frame are
 * discarded and counted. Frames with a payload over `maxPayload` (default MAX_PAYLOAD;
 * at most MAX_LARGE_PAYLOAD: what this side announces in its HELLO) are discarded: a
 * run longer than their encoding is dropped at once and the decoder skips to the next
 * delimiter, so memory stays at maxEncodedLength(maxPayload) bytes.
 */
export class FrameDecoder {
  private readonly buf: Uint8Array;
  private readonly maxEncoded: number;
  private len = 0;
  private skipping = false;
  readonly stats: FrameDecoderStats = { bytesIn: 0, frames: 0, discardedBytes: 0, badCobs: 0, badCrc: 0, tooShort: 0, tooLong: 0 };

  constructor(readonly maxPayload = MAX_PAYLOAD) {
    if (!Number.isInteger(maxPayload) || maxPayload < 0 || maxPayload > MAX_LARGE_PAYLOAD) {
      throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `maxPayload must be an integer in 0..${MAX_LARGE_PAYLOAD}, got ${maxPayload}`, { maxPayload });
    }
    this.maxEncoded = maxEncodedLength(maxPayload);
    this.buf = new Uint8Array(this.maxEncoded);
  }

  /** Bytes of an unfinished frame currently held (at most maxEncodedLength(maxPayload)). */
  get bufferedBytes(): number {
    return this.len;
  }

  decode(chunk: Uint8Array): Frame[] {
    const out: Frame[] = [];
    this.stats.bytesIn += chunk.length;
    let i = 0;
    while (i < chunk.length) {
      const z = chunk.indexOf(DELIMITER, i);
      const end = z === -1 ? chunk.length : z;
      const n = end - i;
      if (this.skipping) {
        this.stats.discardedBytes += n;
      } else if (this.len + n <= this.maxEncoded) {
        this.buf.set(chunk.subarray(i, end), this.len);
        this.len += n;
      } else {
        this.stats.discardedBytes += this.len + n;
        this.stats.tooLong++;
        this.len = 0;
        this.skipping = true;
      }
      if (z === -1) break;
      this.endOfRun(out);
      i = z + 1;
    }
    return out;
  }

  private endOfRun(out: Frame[]): void {
    if (this.skipping) {
      this.skipping = false;
      return;
    }
    const len = this.len;
    this.len = 0;
    if (len === 0) return; // back-to-back delimiters: nothing to do
    const body = cobsDecode(this.buf, 0, len);
    if (body === null) {
      this.stats.badCobs++;
      this.stats.discardedBytes += len;
      return;
    }
    const f = decodeFrameBody(body, this.maxPayload);
    if (typeof f === 'string') {
      if (f === 'crc') this.stats.badCrc++;
      else if (f === 'short') this.stats.tooShort++;
      else this.stats.tooLong++;
      this.stats.discardedBytes += len;
      return;
    }
    this.stats.frames++;
    out.push(f);
  }
}
