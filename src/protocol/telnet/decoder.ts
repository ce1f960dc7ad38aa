import { CR, FIRST_COMMAND, IAC, NUL, SB, SE, DO, DONT, WILL, WONT, Option, type NegotiationVerb } from './constants.js';
import type { TelnetErrorCode, TelnetToken } from './tokens.js';

export interface TelnetDecoderOptions {
  /** Largest subnegotiation payload accepted, in bytes (after unescaping). Default 64 KiB. */
  maxSubnegotiation?: number;
  /**
   * Whether the peer sends in BINARY mode (it said WILL BINARY and we agreed). In
   * non-binary mode RFC 854's NVT rules apply: CR NUL means a bare CR, so the NUL is
   * dropped; CR LF stays as it is.
   */
  binary?: boolean;
  /**
   * Stop decoding right after a WILL/WONT BINARY (which may switch `binary`) and keep
   * the rest of the chunk (`hasPending`) until the next `decode()` call, so that the
   * owner can apply the mode change to the bytes that follow in the same chunk.
   */
  pauseOnBinary?: boolean;
}

/** Named states of the decoder (ws receiver style: one switch, no hidden flags). */
const enum State {
  Data,
  /** Last byte was CR in non-binary mode: a following NUL is dropped. */
  DataCr,
  Iac,
  /** IAC WILL/WONT/DO/DONT seen, waiting for the option byte. */
  Negotiation,
  /** IAC SB seen, waiting for the option byte. */
  SbOption,
  SbData,
  SbIac,
  /** A protocol error was reported; everything after it is ignored. */
  Failed,
}

const IAC_BYTE = Buffer.from([IAC]);
export const DEFAULT_MAX_SUBNEGOTIATION = 64 * 1024;

/**
 * Incremental telnet decoder. `decode(chunk)` returns the tokens completed by that
 * chunk, in wire order; partial constructs are carried to the next call. It never
 * throws on any input: protocol violations come back as one `error` token, after
 * which the decoder is `failed` and ignores further input (the connection owner
 * logs and closes). Memory is bounded by the chunk plus `maxSubnegotiation`.
 */
/**
 * `sbParts` outside a subnegotiation: one shared empty array instead of one per
 * connection (`IAC SB` makes a new one before anything is pushed). Frozen, so that a
 * push to it would throw instead of leaking bytes between connections.
 */
const NO_PARTS = Object.freeze([]) as unknown as Buffer[];

export class TelnetDecoder {
  private state: State = State.Data;
  private verb: NegotiationVerb = WILL;
  private sbOption = 0;
  /** The open subnegotiation's pieces: a new array at each `IAC SB`, none between them. */
  private sbParts: Buffer[] = NO_PARTS;
  private sbLength = 0;
  /**
   * Data pieces of the current chunk not yet emitted (merged into one token); made on
   * the first data that is not passed through whole (an idle connection has none).
   */
  private dataParts: Buffer[] | null = null;
  private readonly maxSubnegotiation: number;
  binary: boolean;
  /** Total bytes consumed, for error offsets in logs. */
  private consumed = 0;
  private readonly pauseOnBinary: boolean;
  /** Rest of a chunk not decoded yet (see `pauseOnBinary`). */
  private pending: Buffer | null = null;

  constructor(options: TelnetDecoderOptions = {}) {
    this.maxSubnegotiation = options.maxSubnegotiation ?? DEFAULT_MAX_SUBNEGOTIATION;
    this.binary = options.binary ?? false;
    this.pauseOnBinary = options.pauseOnBinary ?? false;
  }

  /** True when a paused `decode()` left bytes to decode (call `decode()` again, e.g. with an empty chunk). */
  get hasPending(): boolean {
    return this.pending !== null;
  }

  /** True once a protocol error has been reported. */
  get failed(): boolean {
    return this.state === State.Failed;
  }

  /** True while inside `IAC SB ... ` with no `IAC SE` yet (the owner may time this out). */
  get inSubnegotiation(): boolean {
    return this.state === State.SbOption || this.state === State.SbData || this.state === State.SbIac;
  }

  /**
   * True when `chunk` is nothing but data that `decode` would return as one data token
   * unchanged, with the decoder in the same state after it: no IAC in it (and, in
   * non-binary mode, no CR), nothing carried over from the last chunk. The caller then
   * uses the chunk itself as the data; it has been counted as consumed. False: call
   * `decode`.
   */
  passThrough(chunk: Uint8Array): boolean {
    if (this.state !== State.Data || this.pending !== null || (this.dataParts !== null && this.dataParts.length > 0) || chunk.length === 0 || !Buffer.isBuffer(chunk)) return false;
    if (chunk.indexOf(IAC) >= 0) return false;
    if (!this.binary && chunk.indexOf(CR) >= 0) return false;
    this.consumed += chunk.length;
    return true;
  }

  decode(chunk: Uint8Array): TelnetToken[] {
    let buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.pending) {
      buf = buf.length > 0 ? Buffer.concat([this.pending, buf]) : this.pending;
      this.pending = null;
    }
    const tokens: TelnetToken[] = [];
    const len = buf.length;
    let i = 0;
    while (i < len) {
      switch (this.state) {
        case State.Data: {
          let j: number;
          if (this.binary) {
            j = buf.indexOf(IAC, i);
          } else {
            j = i;
            while (j < len && buf[j] !== IAC && buf[j] !== CR) j++;
            if (j === len) j = -1;
          }
          const end = j < 0 ? len : j;
          if (j >= 0 && buf[j] === CR) {
            // Keep the CR itself; decide on the next byte.
            (this.dataParts ??= []).push(buf.subarray(i, j + 1));
            this.state = State.DataCr;
            i = j + 1;
            break;
          }
          if (end > i) (this.dataParts ??= []).push(buf.subarray(i, end));
          if (j < 0) {
            i = len;
          } else {
            this.state = State.Iac;
            i = j + 1;
          }
          break;
        }
        case State.DataCr:
          // CR NUL is a bare CR: drop the NUL. Anything else is ordinary input.
          if (buf[i] === NUL) i++;
          this.state = State.Data;
          break;
        case State.Iac: {
          const b = buf[i++];
          if (b === IAC) {
            (this.dataParts ??= []).push(IAC_BYTE);
            this.state = State.Data;
          } else if (b === WILL || b === WONT || b === DO || b === DONT) {
            this.verb = b;
            this.state = State.Negotiation;
          } else if (b === SB) {
            this.state = State.SbOption;
          } else if (b >= FIRST_COMMAND) {
            this.flushData(tokens);
            tokens.push({ type: 'command', command: b });
            this.state = State.Data;
          } else {
            this.fail(tokens, 'TELNET_BAD_COMMAND', `IAC followed by non-command byte ${b}`, i - 1);
            return tokens;
          }
          break;
        }
        case State.Negotiation: {
          this.flushData(tokens);
          const option = buf[i++];
          tokens.push({ type: 'negotiation', verb: this.verb, option });
          this.state = State.Data;
          if (this.pauseOnBinary && option === Option.BINARY && (this.verb === WILL || this.verb === WONT) && i < len) {
            // The owner may switch `binary` now; the rest is decoded in the next call.
            this.pending = Buffer.from(buf.subarray(i));
            this.consumed += i;
            return tokens;
          }
          break;
        }
        case State.SbOption:
          this.sbOption = buf[i++];
          this.sbParts = [];
          this.sbLength = 0;
          this.state = State.SbData;
          break;
        case State.SbData: {
          const j = buf.indexOf(IAC, i);
          const end = j < 0 ? len : j;
          if (end > i && !this.appendSb(tokens, buf.subarray(i, end), end)) return tokens;
          if (j < 0) {
            i = len;
          } else {
            this.state = State.SbIac;
            i = j + 1;
          }
          break;
        }
        case State.SbIac: {
          const b = buf[i++];
          if (b === IAC) {
            if (!this.appendSb(tokens, IAC_BYTE, i)) return tokens;
            this.state = State.SbData;
          } else if (b === SE) {
            this.flushData(tokens);
            // Buffer.concat always allocates: the payload is the caller's to keep.
            tokens.push({ type: 'subnegotiation', option: this.sbOption, payload: Buffer.concat(this.sbParts, this.sbLength) });
            this.sbParts = NO_PARTS;
            this.sbLength = 0;
            this.state = State.Data;
          } else {
            this.fail(tokens, 'TELNET_BAD_SB_ESCAPE', `IAC ${b} inside subnegotiation of option ${this.sbOption}`, i - 1);
            return tokens;
          }
          break;
        }
        case State.Failed:
          this.consumed += len;
          return tokens;
      }
    }
    this.consumed += len;
    this.flushData(tokens);
    return tokens;
  }

  private appendSb(tokens: TelnetToken[], piece: Buffer, at: number): boolean {
    this.sbLength += piece.length;
    if (this.sbLength > this.maxSubnegotiation) {
      this.fail(
        tokens,
        'TELNET_SB_TOO_LONG',
        `subnegotiation of option ${this.sbOption} exceeds ${this.maxSubnegotiation} bytes`,
        at,
      );
      return false;
    }
    // Copy now: the chunk belongs to the socket and the payload must outlive it.
    this.sbParts.push(piece === IAC_BYTE ? piece : Buffer.from(piece));
    return true;
  }

  private flushData(tokens: TelnetToken[]): void {
    const parts = this.dataParts;
    if (parts === null || parts.length === 0) return;
    // A lone unescaped 255 must not hand out the shared constant buffer.
    const data = parts.length > 1 ? Buffer.concat(parts) : parts[0] === IAC_BYTE ? Buffer.from(IAC_BYTE) : parts[0];
    tokens.push({ type: 'data', data });
    // Emptied, not replaced: no new array per data token (the token holds the bytes, not the array).
    parts.length = 0;
  }

  private fail(tokens: TelnetToken[], code: TelnetErrorCode, message: string, indexInChunk: number): void {
    this.flushData(tokens);
    tokens.push({ type: 'error', code, message, offset: this.consumed + indexInChunk });
    this.state = State.Failed;
    this.sbParts = NO_PARTS;
    this.sbLength = 0;
  }
}
