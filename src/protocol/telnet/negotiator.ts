import { DO, DONT, WILL, WONT, type NegotiationVerb } from './constants.js';

/**
 * RFC 1143 "Q method" option negotiation. For every option and each side ("us":
 * options we perform, enabled by the peer's DO; "him": options the peer performs,
 * enabled by its WILL) we keep one of four states plus a one-bit queue. This
 * guarantees every request is answered exactly once and negotiation never loops,
 * even when both ends ask at once.
 *
 * Sans-I/O: bytes to send leave through `handlers.send`; state changes are
 * reported through `handlers.change`.
 */
export const enum Q {
  No = 0,
  Yes = 1,
  WantNo = 2,
  WantYes = 3,
}

export type Side = 'us' | 'him';

export interface OptionPolicy {
  /** May we enable `option` on our side when the peer sends DO? */
  acceptUs(option: number): boolean;
  /** May the peer enable `option` on its side (we answer its WILL with DO)? */
  acceptHim(option: number): boolean;
}

export function policyFromLists(lists: { us?: readonly number[]; him?: readonly number[] }): OptionPolicy {
  const us = new Set(lists.us ?? []);
  const him = new Set(lists.him ?? []);
  return { acceptUs: (o) => us.has(o), acceptHim: (o) => him.has(o) };
}

export interface NegotiatorHandlers {
  send(verb: NegotiationVerb, option: number): void;
  /** The effective state of an option changed (entered or left YES). */
  change?(side: Side, option: number, enabled: boolean): void;
  /** Our request to enable was refused (WANTYES answered with the negative). */
  refused?(side: Side, option: number): void;
  /** The peer broke the protocol in a harmless way (e.g. answered DONT with WILL). */
  anomaly?(side: Side, option: number, message: string): void;
}

/** Per option and side: state in the low 2 bits, the "opposite queued" bit above. */
const QUEUE_OPPOSITE = 4;

/** Where a side's three bits sit in an option's state byte. */
const SHIFT: Readonly<Record<Side, number>> = { us: 0, him: 4 };

/**
 * Options with a slot of their own in the state table (those vspc, ESXi and telnet
 * clients use or commonly offer: BINARY, ECHO, SGA, STATUS, TIMING-MARK, TTYPE, NAWS,
 * TSPEED, LFLOW, LINEMODE, XDISPLOC, ENVIRON, AUTHENTICATION, ENCRYPT, NEW-ENVIRON,
 * COM-PORT, VSPC-CONTROL, VMWARE-TELNET-EXT). Any other option's state, if it ever
 * leaves NO, lives in a map made on demand.
 */
const SLOTTED = [0, 1, 3, 5, 6, 24, 31, 32, 33, 34, 35, 36, 37, 38, 39, 44, 201, 232];
// Six fields of three slots each (see OptionNegotiator's fields).
if (SLOTTED.length > 18) throw new Error('negotiator: more slotted options than state fields');
const SLOT = new Int8Array(256).fill(-1);
SLOTTED.forEach((option, i) => (SLOT[option] = i));

export class OptionNegotiator {
  /**
   * Per option: our side's state and queue bit in the low nibble, the peer's in the
   * high one; three options' bytes per field (24 bits: a small integer V8 keeps inside
   * the object). Six fields instead of two 256-byte tables per connection, or a
   * Uint8Array (184 bytes with its ArrayBuffer): thousands of idle VM serial ports and
   * their clients each have one.
   */
  private w0 = 0;
  private w1 = 0;
  private w2 = 0;
  private w3 = 0;
  private w4 = 0;
  private w5 = 0;
  private others: Map<number, number> | null = null;

  constructor(
    private readonly policy: OptionPolicy,
    private readonly handlers: NegotiatorHandlers,
  ) {}

  state(side: Side, option: number): Q {
    return this.get(side, option & 255) & 3;
  }

  isEnabled(side: Side, option: number): boolean {
    return this.state(side, option) === Q.Yes;
  }

  /** Feed a received WILL/WONT/DO/DONT. */
  receive(verb: NegotiationVerb, option: number): void {
    switch (verb) {
      case WILL:
        return this.receivePositive('him', option);
      case WONT:
        return this.receiveNegative('him', option);
      case DO:
        return this.receivePositive('us', option);
      case DONT:
        return this.receiveNegative('us', option);
    }
  }

  /** Ask to enable (`true`) or disable an option on our side (WILL/WONT). */
  requestUs(option: number, enable: boolean): void {
    this.request('us', option, enable);
  }

  /** Ask the peer to enable (`true`) or disable an option on its side (DO/DONT). */
  requestHim(option: number, enable: boolean): void {
    this.request('him', option, enable);
  }

  /** Both sides' state byte of an option. */
  private raw(option: number): number {
    const slot = SLOT[option];
    return slot >= 0 ? (this.word(slot) >> ((slot % 3) * 8)) & 255 : (this.others?.get(option) ?? 0);
  }

  private word(slot: number): number {
    switch ((slot / 3) | 0) {
      case 0:
        return this.w0;
      case 1:
        return this.w1;
      case 2:
        return this.w2;
      case 3:
        return this.w3;
      case 4:
        return this.w4;
      default:
        return this.w5;
    }
  }

  private setSlot(slot: number, value: number): void {
    const shift = (slot % 3) * 8;
    const w = (this.word(slot) & ~(255 << shift)) | ((value & 255) << shift);
    switch ((slot / 3) | 0) {
      case 0:
        this.w0 = w;
        break;
      case 1:
        this.w1 = w;
        break;
      case 2:
        this.w2 = w;
        break;
      case 3:
        this.w3 = w;
        break;
      case 4:
        this.w4 = w;
        break;
      default:
        this.w5 = w;
    }
  }

  private store(option: number, value: number): void {
    const slot = SLOT[option];
    if (slot >= 0) this.setSlot(slot, value);
    else if (value === 0) this.others?.delete(option);
    else (this.others ??= new Map()).set(option, value);
  }

  /** State and queue bit of one side of an option. */
  private get(side: Side, option: number): number {
    return (this.raw(option) >> SHIFT[side]) & 7;
  }

  private positiveVerb(side: Side): NegotiationVerb {
    return side === 'us' ? WILL : DO;
  }

  private negativeVerb(side: Side): NegotiationVerb {
    return side === 'us' ? WONT : DONT;
  }

  private accepts(side: Side, option: number): boolean {
    return side === 'us' ? this.policy.acceptUs(option) : this.policy.acceptHim(option);
  }

  private set(side: Side, option: number, q: Q, queueOpposite = false): void {
    const shift = SHIFT[side];
    const before = this.raw(option);
    const wasYes = ((before >> shift) & 3) === Q.Yes;
    this.store(option, (before & ~(7 << shift)) | ((q | (queueOpposite ? QUEUE_OPPOSITE : 0)) << shift));
    const isYes = q === Q.Yes;
    if (wasYes !== isYes) this.handlers.change?.(side, option, isYes);
  }

  /** The peer says WILL (for "him") or DO (for "us"). */
  private receivePositive(side: Side, option: number): void {
    const cur = this.get(side, option);
    const q = cur & 3;
    const opposite = (cur & QUEUE_OPPOSITE) !== 0;
    switch (q) {
      case Q.No:
        if (this.accepts(side, option)) {
          this.set(side, option, Q.Yes);
          this.handlers.send(this.positiveVerb(side), option);
        } else {
          this.handlers.send(this.negativeVerb(side), option);
        }
        return;
      case Q.Yes:
        return; // Already enabled: answering again is what causes loops.
      case Q.WantNo:
        // We asked to disable and the peer answered positively: RFC 1143 calls this an error.
        this.handlers.anomaly?.(side, option, 'disable request answered with enable');
        this.set(side, option, opposite ? Q.Yes : Q.No);
        return;
      case Q.WantYes:
        if (opposite) {
          // We changed our mind while waiting: now ask to disable.
          this.set(side, option, Q.WantNo);
          this.handlers.send(this.negativeVerb(side), option);
        } else {
          this.set(side, option, Q.Yes);
        }
        return;
    }
  }

  /** The peer says WONT (for "him") or DONT (for "us"). */
  private receiveNegative(side: Side, option: number): void {
    const cur = this.get(side, option);
    const q = cur & 3;
    const opposite = (cur & QUEUE_OPPOSITE) !== 0;
    switch (q) {
      case Q.No:
        return;
      case Q.Yes:
        this.set(side, option, Q.No);
        this.handlers.send(this.negativeVerb(side), option);
        return;
      case Q.WantNo:
        if (opposite) {
          this.set(side, option, Q.WantYes);
          this.handlers.send(this.positiveVerb(side), option);
        } else {
          this.set(side, option, Q.No);
        }
        return;
      case Q.WantYes:
        this.set(side, option, Q.No);
        this.handlers.refused?.(side, option);
        return;
    }
  }

  private request(side: Side, option: number, enable: boolean): void {
    const cur = this.get(side, option);
    const q = cur & 3;
    const opposite = (cur & QUEUE_OPPOSITE) !== 0;
    if (enable) {
      switch (q) {
        case Q.No:
          this.set(side, option, Q.WantYes);
          this.handlers.send(this.positiveVerb(side), option);
          return;
        case Q.Yes:
          return; // Already enabled.
        case Q.WantNo:
          // Queue the enable until the pending disable is answered.
          if (!opposite) this.set(side, option, Q.WantNo, true);
          return;
        case Q.WantYes:
          // Cancel a queued disable, if any; the enable is already in flight.
          if (opposite) this.set(side, option, Q.WantYes);
          return;
      }
    } else {
      switch (q) {
        case Q.No:
          return; // Already disabled.
        case Q.Yes:
          this.set(side, option, Q.WantNo);
          this.handlers.send(this.negativeVerb(side), option);
          return;
        case Q.WantNo:
          if (opposite) this.set(side, option, Q.WantNo);
          return;
        case Q.WantYes:
          if (!opposite) this.set(side, option, Q.WantYes, true);
          return;
      }
    }
  }
}
