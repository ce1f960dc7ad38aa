import { ProtocolError } from '../../errors.js';
import { Option, type NegotiationVerb } from './constants.js';
import { TelnetDecoder, type TelnetDecoderOptions } from './decoder.js';
import type { TelnetToken } from './tokens.js';
import { encodeCommand, encodeData, encodeNegotiation, encodeSubnegotiation } from './encoder.js';
import { OptionNegotiator, type NegotiatorHandlers, type OptionPolicy, type Side } from './negotiator.js';

const EMPTY = Buffer.alloc(0);

export interface TelnetSessionHandlers {
  /** Bytes for the peer. Returns what the transport's write() returned (backpressure). */
  write(bytes: Buffer): boolean;
  data?(data: Buffer): void;
  command?(command: number): void;
  subnegotiation?(option: number, payload: Buffer): void;
  optionChange?(side: Side, option: number, enabled: boolean): void;
  refused?(side: Side, option: number): void;
  /** A protocol violation. Reported once; the session ignores input afterwards. */
  error?(err: ProtocolError): void;
}

/**
 * One telnet endpoint without I/O: bytes in through `receive()`, events out through
 * handlers, bytes out through `handlers.write`. Used by the VM side, the client side
 * and the ESXi simulator alike. Keeps the decoder's BINARY mode in step with the
 * negotiated state of the peer's BINARY option, and encodes our data according to
 * our own BINARY state.
 *
 * A mode change takes effect right after the WILL/WONT BINARY that caused it, also
 * for the rest of the same chunk (the decoder pauses there, see `pauseOnBinary`).
 * Only the CR NUL rule depends on it.
 */
export class TelnetSession {
  readonly negotiator: OptionNegotiator;
  private readonly decoder: TelnetDecoder;
  private failed = false;
  /** Set by `stop()`: input is ignored from the next token on. */
  private stopped = false;

  constructor(
    policy: OptionPolicy,
    private readonly handlers: TelnetSessionHandlers,
    decoderOptions: TelnetDecoderOptions = {},
  ) {
    // pauseOnBinary: a WILL/WONT BINARY followed by data in the same chunk switches the
    // decoder before that data is decoded (TCP may merge the handshake and data).
    this.decoder = new TelnetDecoder({ ...decoderOptions, pauseOnBinary: true });
    this.negotiator = new OptionNegotiator(policy, new TelnetSession.NegotiationEvents(this));
  }

  /** The negotiator's events: one object per session, methods on a prototype (no closures per connection). */
  private static readonly NegotiationEvents = class implements NegotiatorHandlers {
    constructor(private readonly t: TelnetSession) {}
    send(verb: NegotiationVerb, option: number): void {
      this.t.handlers.write(encodeNegotiation(verb, option));
    }
    change(side: Side, option: number, enabled: boolean): void {
      if (side === 'him' && option === Option.BINARY) this.t.decoder.binary = enabled;
      this.t.handlers.optionChange?.(side, option, enabled);
    }
    refused(side: Side, option: number): void {
      this.t.handlers.refused?.(side, option);
    }
  };

  /** True once a protocol error was reported. */
  get hasFailed(): boolean {
    return this.failed;
  }

  /** True while the peer is inside an unfinished subnegotiation. */
  get inSubnegotiation(): boolean {
    return this.decoder.inSubnegotiation;
  }

  receive(chunk: Buffer): void {
    if (this.failed || this.stopped) return;
    // The common case on a data path: a chunk with nothing to decode is the data
    // itself (no token objects, no copies, no subarray).
    if (this.decoder.passThrough(chunk)) {
      this.handlers.data?.(chunk);
      return;
    }
    let input: Buffer | null = chunk;
    while (input !== null) {
      if (this.failed || this.stopped) return;
      this.receiveTokens(this.decoder.decode(input));
      input = this.decoder.hasPending ? EMPTY : null;
    }
  }

  private receiveTokens(tokens: TelnetToken[]): void {
    for (const t of tokens) {
      if (this.failed || this.stopped) return;
      switch (t.type) {
        case 'data':
          this.handlers.data?.(t.data);
          break;
        case 'command':
          this.handlers.command?.(t.command);
          break;
        case 'negotiation':
          this.negotiator.receive(t.verb, t.option);
          break;
        case 'subnegotiation':
          this.handlers.subnegotiation?.(t.option, t.payload);
          break;
        case 'error':
          this.fail(new ProtocolError(t.code, t.message, { offset: t.offset }));
          return;
      }
    }
  }

  /**
   * Ignore all further input, from the token after the one being handled (the rest of
   * the current chunk included), without reporting anything: the owner condemned the
   * peer and nothing more it says may be acted on. Sending still works.
   */
  stop(): void {
    this.stopped = true;
  }

  /** True once `stop()` was called. */
  get isStopped(): boolean {
    return this.stopped;
  }

  /** Report a protocol error found by a layer above (e.g. a bad option-232 payload). */
  fail(err: ProtocolError): void {
    if (this.failed) return;
    this.failed = true;
    this.handlers.error?.(err);
  }

  isEnabled(side: Side, option: number): boolean {
    return this.negotiator.isEnabled(side, option);
  }

  /** Sends console data, escaped for our current BINARY state. */
  sendData(data: Buffer): boolean {
    return this.handlers.write(encodeData(data, this.negotiator.isEnabled('us', Option.BINARY)));
  }

  sendCommand(command: number): boolean {
    return this.handlers.write(encodeCommand(command));
  }

  sendSubnegotiation(option: number, payload?: Uint8Array): boolean {
    return this.handlers.write(encodeSubnegotiation(option, payload));
  }

  /** Raw negotiation bytes, bypassing the Q method (simulating broken peers). */
  sendRawNegotiation(verb: NegotiationVerb, option: number): boolean {
    return this.handlers.write(encodeNegotiation(verb, option));
  }

  requestUs(option: number, enable = true): void {
    this.negotiator.requestUs(option, enable);
  }

  requestHim(option: number, enable = true): void {
    this.negotiator.requestHim(option, enable);
  }
}
