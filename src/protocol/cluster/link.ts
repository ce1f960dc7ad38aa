/**
 * The internal link between vspc nodes of a PostgreSQL cluster (docs/architecture.md,
 * "Cluster (PostgreSQL)"), sans-I/O: bytes in through `receive`, bytes out as the
 * return values of the encoders. The transport (TLS 1.2 with a pre-shared key,
 * src/access/cluster/) has authenticated the peer before the first byte arrives here.
 *
 * Frames: `u32 length` (big-endian, of what follows) + `u8 type` + payload, at most
 * `maxFrame` bytes after the length. Frame types:
 *
 *   HELLO  u16 version, node id (UTF-8)            both sides, first, once
 *   OPEN   u32 stream, u32 window, JSON header     dialer → acceptor: attach a client
 *   ACCEPT u32 stream, u32 window, JSON header     acceptor → dialer: attached (the lock granted)
 *   CLOSE  u32 stream, reason (UTF-8)              either side; before ACCEPT it is a refusal
 *   DATA   u32 stream, bytes                       either side, within the peer's credit
 *   CREDIT u32 stream, u32 bytes                   either side: the reader consumed that much
 *   NOTICE u32 stream, text (UTF-8)                acceptor → dialer: a message of vspc's
 *   BREAK  u32 stream                              either side: a serial BREAK
 *   PING   u32 token                               either side: are you there? (after HELLO)
 *   PONG   u32 token                               the answer to a PING, with its token
 *
 * Liveness is the transport's (link-connection.ts): a side that has received nothing
 * for a while sends a PING, and cuts the link when the silence goes on (a node that
 * vanished without FIN or RST: power loss, partition, SIGSTOP), so the streams end and
 * the owner releases that node's clients and their locks.
 *
 * Text from the peer (CLOSE reasons, NOTICE) is decoded with every control character
 * (C0, DEL, C1) and invisible formatting character replaced by `?` (src/util/text.ts):
 * it ends up on operators' terminals.
 *
 * States: `hello` (our HELLO sent, the peer's awaited: anything else is a protocol
 * error) → `open` → `closed` (after `destroy` or a protocol error: every later input
 * is refused). Streams are opened by the dialer only, with fresh nonzero ids.
 *
 * Backpressure is credit-based per stream: a sender may have at most the window its
 * peer granted (at OPEN/ACCEPT, then by CREDIT frames) in flight; a receiver that gets
 * more than it granted cuts the link (a peer cannot make it buffer more). So a slow
 * reader of one stream never stalls another, and memory per stream is bounded by the
 * window on both sides (a peer's grant counts for at most MAX_PEER_WINDOW, 1 MiB).
 */
import { ProtocolError } from '../../errors.js';
import { sanitizeText } from '../../util/text.js';

export const LINK_VERSION = 1;
export const FRAME_HEADER = 5;
/** Default bound on a frame after its length field (the DATA payload is at most this minus 5). */
export const DEFAULT_MAX_FRAME = 64 * 1024;
/** Default per-stream window (bytes in flight) each side grants. */
export const DEFAULT_WINDOW = 256 * 1024;
/**
 * The most a peer's window (OPEN/ACCEPT, plus its CREDITs) is taken for: a peer
 * granting 4 GiB gets no more than this in flight, so what a link buffers per stream
 * does not depend on what the peer claims.
 */
export const MAX_PEER_WINDOW = 1024 * 1024;
export const DEFAULT_MAX_STREAMS = 256;
/** A JSON header is small: who attaches, how. */
export const MAX_HEADER_BYTES = 4096;
const MAX_TEXT_BYTES = 4096;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export const enum FrameType {
  Hello = 1,
  Open = 2,
  Accept = 3,
  Close = 4,
  Data = 5,
  Credit = 6,
  Notice = 7,
  Break = 8,
  Ping = 9,
  Pong = 10,
}

export type LinkRole = 'dialer' | 'acceptor';
export type LinkState = 'hello' | 'open' | 'closed';

/** A JSON object carried by OPEN and ACCEPT (shapes: src/access/cluster/). */
export type LinkHeader = Record<string, unknown>;

export type LinkEvent =
  | { type: 'hello'; nodeId: string; version: number }
  /** `window`: what the dialer granted at OPEN (bytes the acceptor may send before a CREDIT). */
  | { type: 'open'; stream: number; header: LinkHeader; window: number }
  | { type: 'accept'; stream: number; header: LinkHeader }
  | { type: 'close'; stream: number; reason: string }
  | { type: 'data'; stream: number; data: Buffer }
  /** The peer granted more: `available` bytes may now be sent on the stream. */
  | { type: 'credit'; stream: number; available: number }
  | { type: 'notice'; stream: number; text: string }
  | { type: 'break'; stream: number }
  /** The peer asks for a PONG with this token (answer with `pong`). */
  | { type: 'ping'; token: number }
  | { type: 'pong'; token: number };

export interface LinkSessionOptions {
  role: LinkRole;
  nodeId: string;
  /** The node the dialer meant to reach (its HELLO must say so); the acceptor's is the TLS identity. */
  expectPeer?: string;
  maxFrame?: number;
  window?: number;
  maxStreams?: number;
}

interface StreamState {
  /** Bytes we may still send. */
  sendCredit: number;
  /** Bytes the peer may still send us (what we granted minus what arrived). */
  recvAllowed: number;
  accepted: boolean;
}

function fail(message: string, context: Record<string, unknown> = {}): never {
  throw new ProtocolError('VSPC_LINK_PROTOCOL', message, context);
}

function frame(type: FrameType, ...parts: Buffer[]): Buffer {
  const len = 1 + parts.reduce((n, p) => n + p.length, 0);
  const head = Buffer.allocUnsafe(FRAME_HEADER);
  head.writeUInt32BE(len, 0);
  head[4] = type;
  return Buffer.concat([head, ...parts], FRAME_HEADER - 1 + len);
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function utf8Bounded(text: string, max: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  return b.length <= max ? b : b.subarray(0, max);
}

function parseHeader(bytes: Buffer): LinkHeader {
  if (bytes.length > MAX_HEADER_BYTES) fail(`header of ${bytes.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    fail('header is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail('header is not a JSON object');
  return v as LinkHeader;
}

/**
 * One end of a link. Throws ProtocolError `VSPC_LINK_PROTOCOL` from `receive` on
 * anything the peer must not send; the caller logs it and cuts the connection.
 */
export class LinkSession {
  private st: LinkState = 'hello';
  private readonly maxFrame: number;
  readonly window: number;
  readonly maxStreams: number;
  private readonly streams = new Map<number, StreamState>();
  private nextId = 1;
  /** A partial length field (`headFill` bytes of 4). */
  private readonly head = Buffer.alloc(4);
  private headFill = 0;
  /** A partial frame after its length (type + payload, ≤ maxFrame bytes), `bodyFill` of it received. */
  private body: Buffer | null = null;
  private bodyFill = 0;
  peerNodeId: string | null = null;

  constructor(private readonly opts: LinkSessionOptions) {
    this.maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
    this.window = opts.window ?? DEFAULT_WINDOW;
    this.maxStreams = opts.maxStreams ?? DEFAULT_MAX_STREAMS;
    if (!NODE_ID.test(opts.nodeId)) throw new RangeError(`invalid node id ${JSON.stringify(opts.nodeId)}`);
  }

  get state(): LinkState {
    return this.st;
  }

  get streamCount(): number {
    return this.streams.size;
  }

  /** The largest DATA payload one frame carries. */
  get maxData(): number {
    return this.maxFrame - 5;
  }

  /** Our HELLO: the first bytes each side sends. */
  hello(): Buffer {
    const v = Buffer.allocUnsafe(2);
    v.writeUInt16BE(LINK_VERSION, 0);
    return frame(FrameType.Hello, v, Buffer.from(this.opts.nodeId, 'utf8'));
  }

  /** Dialer: a new stream asking the peer to attach a client. Returns its id and the bytes. */
  open(header: LinkHeader): { stream: number; bytes: Buffer } {
    this.mustBeOpen();
    if (this.opts.role !== 'dialer') throw new Error('only the dialer opens streams');
    if (this.streams.size >= this.maxStreams) throw new ProtocolError('VSPC_LINK_PROTOCOL', `too many streams (${this.maxStreams}) on this link`);
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    this.streams.set(id, { sendCredit: 0, recvAllowed: this.window, accepted: false });
    return { stream: id, bytes: frame(FrameType.Open, u32(id), u32(this.window), this.headerBytes(header)) };
  }

  /** Acceptor: the stream is attached. */
  accept(stream: number, header: LinkHeader): Buffer | null {
    const s = this.streams.get(stream);
    if (!s || this.st !== 'open') return null;
    s.accepted = true;
    s.recvAllowed = this.window;
    return frame(FrameType.Accept, u32(stream), u32(this.window), this.headerBytes(header));
  }

  /** Ends a stream (a refusal before ACCEPT). Idempotent: nothing for a stream that is gone. */
  close(stream: number, reason: string): Buffer | null {
    if (!this.streams.delete(stream) || this.st !== 'open') return null;
    return frame(FrameType.Close, u32(stream), utf8Bounded(reason, MAX_TEXT_BYTES));
  }

  /** Bytes we may send on the stream now (0 for one that is gone). */
  credit(stream: number): number {
    return this.streams.get(stream)?.sendCredit ?? 0;
  }

  /**
   * DATA frames for as much of `data` as the credit allows (split at maxData). `sent`
   * says how many bytes that is; the caller keeps the rest until a `credit` event.
   */
  data(stream: number, data: Buffer): { bytes: Buffer[]; sent: number } {
    const s = this.streams.get(stream);
    if (!s || this.st !== 'open') return { bytes: [], sent: 0 };
    const n = Math.min(s.sendCredit, data.length);
    const out: Buffer[] = [];
    for (let off = 0; off < n; off += this.maxData) {
      out.push(frame(FrameType.Data, u32(stream), data.subarray(off, Math.min(n, off + this.maxData))));
    }
    s.sendCredit -= n;
    return { bytes: out, sent: n };
  }

  /** We consumed `n` bytes of the stream's input: the peer may send that much more. */
  grant(stream: number, n: number): Buffer | null {
    const s = this.streams.get(stream);
    if (!s || n <= 0 || this.st !== 'open') return null;
    s.recvAllowed += n;
    return frame(FrameType.Credit, u32(stream), u32(n));
  }

  notice(stream: number, text: string): Buffer | null {
    if (!this.streams.has(stream) || this.st !== 'open') return null;
    return frame(FrameType.Notice, u32(stream), utf8Bounded(text, MAX_TEXT_BYTES));
  }

  sendBreak(stream: number): Buffer | null {
    if (!this.streams.has(stream) || this.st !== 'open') return null;
    return frame(FrameType.Break, u32(stream));
  }

  /** A PING (liveness probe); null before HELLO or after close. */
  ping(token: number): Buffer | null {
    return this.st === 'open' ? frame(FrameType.Ping, u32(token)) : null;
  }

  /** The answer to the peer's PING. */
  pong(token: number): Buffer | null {
    return this.st === 'open' ? frame(FrameType.Pong, u32(token)) : null;
  }

  /** No more input or output: every stream is gone. Idempotent. */
  destroy(): void {
    this.st = 'closed';
    this.streams.clear();
    this.body = null;
    this.headFill = 0;
  }

  /**
   * The peer's bytes. Throws ProtocolError (and the session is closed) on a violation.
   * Linear in the input however it is split: a frame's length is read once, its buffer
   * allocated then, and each later chunk copied in once (a peer sending a 64 KiB frame
   * in 1-byte TLS records costs 64 KiB of copying, not 2 GiB).
   */
  receive(chunk: Buffer): LinkEvent[] {
    if (this.st === 'closed') return [];
    const events: LinkEvent[] = [];
    let buf = chunk;
    try {
      for (;;) {
        if (this.body === null) {
          if (this.headFill === 0 && buf.length >= 4) {
            const len = this.frameLength(buf);
            if (buf.length >= 4 + len) {
              const ev = this.frameIn(buf[4], buf.subarray(5, 4 + len));
              buf = buf.subarray(4 + len);
              if (ev) events.push(ev);
              continue;
            }
            // Copied: a partial frame must not pin the (possibly large) chunk it came in.
            this.body = Buffer.allocUnsafe(len);
            this.bodyFill = buf.copy(this.body, 0, 4);
            break;
          }
          if (buf.length === 0) break;
          const n = buf.copy(this.head, this.headFill, 0, Math.min(4 - this.headFill, buf.length));
          this.headFill += n;
          buf = buf.subarray(n);
          if (this.headFill < 4) break;
          this.headFill = 0;
          this.body = Buffer.allocUnsafe(this.frameLength(this.head));
          this.bodyFill = 0;
        }
        const n = buf.copy(this.body, this.bodyFill, 0, Math.min(this.body.length - this.bodyFill, buf.length));
        this.bodyFill += n;
        buf = buf.subarray(n);
        if (this.bodyFill < this.body.length) break;
        const b = this.body;
        this.body = null;
        const ev = this.frameIn(b[0], b.subarray(1));
        if (ev) events.push(ev);
      }
    } catch (err) {
      this.destroy();
      throw err;
    }
    return events;
  }

  /** The length field at the start of `b`, checked against maxFrame. */
  private frameLength(b: Buffer): number {
    const len = b.readUInt32BE(0);
    if (len < 1 || len > this.maxFrame) fail(`frame length ${len} outside 1-${this.maxFrame}`, { length: len });
    return len;
  }

  private frameIn(type: number, body: Buffer): LinkEvent | null {
    if (this.st === 'hello') {
      if (type !== FrameType.Hello) fail(`frame type ${type} before HELLO`, { frameType: type });
      if (body.length < 3) fail('HELLO too short');
      const version = body.readUInt16BE(0);
      const nodeId = body.subarray(2).toString('utf8');
      if (version !== LINK_VERSION) fail(`link protocol version ${version} is not ${LINK_VERSION} (nodes of different vspc versions?)`, { version });
      if (!NODE_ID.test(nodeId)) fail('HELLO carries an invalid node id');
      if (this.opts.expectPeer !== undefined && nodeId !== this.opts.expectPeer) {
        fail(`peer says it is node ${nodeId}, expected ${this.opts.expectPeer}`, { peerNode: nodeId });
      }
      this.peerNodeId = nodeId;
      this.st = 'open';
      return { type: 'hello', nodeId, version };
    }
    if (type === FrameType.Hello) fail('second HELLO');
    if (body.length < 4) fail(`frame type ${type} too short`, { frameType: type });
    const id = body.readUInt32BE(0);
    const rest = body.subarray(4);
    switch (type) {
      case FrameType.Ping:
      case FrameType.Pong:
        if (rest.length !== 0) fail(`${type === FrameType.Ping ? 'PING' : 'PONG'} of the wrong size`);
        return { type: type === FrameType.Ping ? 'ping' : 'pong', token: id };
      case FrameType.Open: {
        if (this.opts.role !== 'acceptor') fail('OPEN sent to the dialer');
        if (id === 0 || this.streams.has(id)) fail(`OPEN of stream ${id} already open (or 0)`, { stream: id });
        if (this.streams.size >= this.maxStreams) fail(`more than ${this.maxStreams} streams`);
        if (rest.length < 4) fail('OPEN too short');
        const header = parseHeader(rest.subarray(4));
        const window = Math.min(rest.readUInt32BE(0), MAX_PEER_WINDOW);
        this.streams.set(id, { sendCredit: window, recvAllowed: 0, accepted: false });
        return { type: 'open', stream: id, header, window };
      }
      case FrameType.Accept: {
        if (this.opts.role !== 'dialer') fail('ACCEPT sent to the acceptor');
        const s = this.streams.get(id);
        if (!s) return null; // closed by us meanwhile
        if (s.accepted) fail(`second ACCEPT of stream ${id}`, { stream: id });
        if (rest.length < 4) fail('ACCEPT too short');
        const header = parseHeader(rest.subarray(4));
        s.accepted = true;
        s.sendCredit = Math.min(rest.readUInt32BE(0), MAX_PEER_WINDOW);
        return { type: 'accept', stream: id, header };
      }
      case FrameType.Close:
        if (rest.length > MAX_TEXT_BYTES) fail('CLOSE reason too long');
        // A CLOSE crossing ours: the stream is already gone here.
        if (!this.streams.delete(id)) return null;
        // Peer text bound for terminals and logs: controls (C0, C1, DEL) and invisible formatting become `?`.
        return { type: 'close', stream: id, reason: sanitizeText(rest.toString('utf8')) };
      case FrameType.Data: {
        const s = this.streams.get(id);
        // Data in flight when we closed the stream: counted against nothing, dropped.
        if (!s) return null;
        if (!s.accepted && this.opts.role === 'acceptor') fail(`DATA on stream ${id} before it was accepted`, { stream: id });
        if (rest.length > s.recvAllowed) fail(`DATA beyond the granted window on stream ${id}`, { stream: id, bytes: rest.length, allowed: s.recvAllowed });
        s.recvAllowed -= rest.length;
        return rest.length === 0 ? null : { type: 'data', stream: id, data: rest };
      }
      case FrameType.Credit: {
        if (rest.length !== 4) fail('CREDIT of the wrong size');
        const s = this.streams.get(id);
        if (!s) return null;
        const n = rest.readUInt32BE(0);
        if (n > 2 ** 31) fail('CREDIT overflow');
        // Capped like the window: a peer granting without bound gets MAX_PEER_WINDOW in flight.
        s.sendCredit = Math.min(s.sendCredit + n, MAX_PEER_WINDOW);
        return { type: 'credit', stream: id, available: s.sendCredit };
      }
      case FrameType.Notice:
        if (this.opts.role !== 'dialer') fail('NOTICE sent to the acceptor');
        if (rest.length > MAX_TEXT_BYTES) fail('NOTICE too long');
        return this.streams.has(id) ? { type: 'notice', stream: id, text: sanitizeText(rest.toString('utf8')) } : null;
      case FrameType.Break:
        if (rest.length !== 0) fail('BREAK with a payload');
        return this.streams.has(id) ? { type: 'break', stream: id } : null;
      default:
        fail(`unknown frame type ${type}`, { frameType: type });
    }
  }

  private headerBytes(header: LinkHeader): Buffer {
    const b = Buffer.from(JSON.stringify(header), 'utf8');
    if (b.length > MAX_HEADER_BYTES) throw new RangeError(`link header of ${b.length} bytes exceeds ${MAX_HEADER_BYTES}`);
    return b;
  }

  private mustBeOpen(): void {
    if (this.st !== 'open') throw new Error(`link is ${this.st}`);
  }
}
