/**
 * Reliable link layer: the HELLO handshake with boot ids, a selective-repeat ARQ over
 * u16 sequence numbers (cumulative ack in every frame + SACK bitmap in ACK frames),
 * RFC 6298 retransmission timeout with Karn's rule and exponential backoff, fast
 * retransmit, delayed acks and keepalive. Sans-I/O: frames in through
 * `receiveFrame(frame, now)`, frames out through `nextFrame(now)` (pulled by the
 * endpoint when the transport can take them), timers through `poll(now)` and
 * `nextDeadline()`. Time is in milliseconds on any monotonic clock.
 *
 * Memory: at most `window` unacknowledged frames (each ≤ MAX_PAYLOAD) on the send
 * side and `window` frames in the reorder buffer on the receive side.
 */
import {
  FIRST_RELIABLE_TYPE,
  Flag,
  FRAME_OVERHEAD,
  FrameType,
  HelloFlag,
  MAX_LARGE_PAYLOAD,
  MAX_PAYLOAD,
  MAX_WINDOW,
  MIN_PAYLOAD,
  PROTOCOL_VERSION,
  Role,
  type TunnelRole,
} from './constants.js';
import { ProtocolError, TunnelErrorCode, type TunnelErrorCodeValue } from './errors.js';
import type { Frame } from './framing.js';
import { crc32c } from './crc32c.js';
import { decodeHello, decodeSack, encodeHello, encodeSack } from './messages.js';

/** A sequenced message: what the mux hands to the link and gets back in order. */
export interface LinkMessage {
  /** A sequenced frame type (>= 0x10). */
  type: number;
  stream: number;
  payload: Uint8Array;
}

/** Signed distance a - b in u16 serial-number arithmetic, in [-32768, 32767]. */
export function seqDiff(a: number, b: number): number {
  return ((a - b + 0x8000) & 0xffff) - 0x8000;
}

/**
 * Session tag of a pair of boot ids: the low 16 bits of CRC-32C over the host's boot
 * id then the agent's (each u32 big-endian). Both sides compute the same value; the
 * direction of a frame is in its Flag.AGENT bit, not in the tag (spec 5.4).
 */
export function sessionTag(hostBootId: number, agentBootId: number): number {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, hostBootId >>> 0);
  v.setUint32(4, agentBootId >>> 0);
  return crc32c(b) & 0xffff;
}

/** Retransmission timeout parameters, milliseconds (RFC 6298 section 2). */
export interface RtoConfig {
  /** RTO before the first RTT sample. Default 1000. */
  initialMs: number;
  /** Lower bound. Default 100 (a serial link has no delayed-ACK peer of 200 ms to wait for). */
  minMs: number;
  /** Upper bound, also of the exponential backoff. Default 10000. */
  maxMs: number;
  /** Clock granularity G. Default 1. */
  granularityMs: number;
}

/** Keepalive parameters. */
export interface KeepaliveConfig {
  /** Silence (no valid frame received) before the first probe, ms. Default 2000. */
  idleMs: number;
  /** Interval between probes, ms. Default 1000. */
  intervalMs: number;
  /** Unanswered probes after which the link is declared down. Default 4. */
  maxMissed: number;
}

export interface ReliableLinkConfig {
  role: TunnelRole;
  /** Our boot id: random, non-zero u32. */
  bootId: number;
  /** Draws a fresh boot id (non-zero u32) when an established session is abandoned. */
  newBootId: () => number;
  /** Our receive window and largest send window, in frames (1..128). */
  window: number;
  /** Largest payload we accept and send (64..1024). */
  maxPayload: number;
  /** Shrink frames when the link loses many (see payloadLimit). */
  adaptivePayload: boolean;
  /**
   * Delay-based congestion window (TCP Vegas style): keep only a few frames queued
   * between us and the peer, so that a deep transport buffer does not fill with a
   * whole window (keystroke latency, spurious timeouts). See `cwnd`.
   */
  delayBasedWindow: boolean;
  /**
   * With `delayBasedWindow`: the queueing delay aimed at, ms. Bytes in flight are also
   * capped to deliveryRate · (minRtt + queueTargetMs) + 1–2 frames (see byteCap), and
   * frames shrink to about INTERACTIVE_FRAME_MS of line time while several streams
   * are open (see payloadLimit).
   */
  queueTargetMs: number;
  rto: RtoConfig;
  keepalive: KeepaliveConfig;
  /** Longest delay of a cumulative ACK, ms. Default 10. */
  ackDelayMs: number;
  /** ACK at once after this many in-order frames. Default 2. */
  ackEvery: number;
  /** First HELLO retry interval before the handshake completes, ms (doubles). Default 200. */
  helloInitialMs: number;
  /** Largest HELLO retry interval, ms. Default 2000. */
  helloMaxMs: number;
}

export interface ReliableLinkHooks {
  /** Whether the upper layer can take a message now (bounded control queue). */
  canAccept(): boolean;
  /** The next in-order message. */
  deliver(msg: LinkMessage, now: number): void;
  /**
   * The next message to send with a payload of at most `maxPayload` bytes, if any;
   * `urgentOnly`: only a small latency-sensitive one (control, credit, an interactive
   * stream's data), for when the byte budget is used up by bulk frames.
   */
  pull(maxPayload: number, urgentOnly: boolean): LinkMessage | undefined;
  /** Streams open now (several: frames are kept short so that none waits long behind another). */
  streams?(): number;
  /** The session is established (`newSession`) or the link answered again after being down. */
  up(info: { newSession: boolean; bootId: number; peerBootId: number; now: number }): void;
  /** Keepalive: `maxMissed` probes went unanswered. */
  down(now: number): void;
  /** An established session was abandoned because the peer has a new boot id. */
  sessionReset(info: { oldPeerBootId: number; newPeerBootId: number; now: number }): void;
  /** A HELLO we cannot work with (version, role, echo); reported once per kind per session. */
  protocolError(err: ProtocolError): void;
}

/** Counters of the link layer (monotonic) and current RTT state. */
export interface LinkStats {
  hellosSent: number;
  hellosReceived: number;
  sessions: number;
  peerRestarts: number;
  framesSent: number;
  retransmits: number;
  fastRetransmits: number;
  timeouts: number;
  acksSent: number;
  probesSent: number;
  linkDowns: number;
  framesReceived: number;
  duplicates: number;
  outOfWindow: number;
  outOfOrder: number;
  staleAcks: number;
  badTag: number;
  noSession: number;
  badHello: number;
  versionMismatch: number;
  roleMismatch: number;
  echoes: number;
  unknownType: number;
  rttSamples: number;
  /** ACK frames with the DUP flag received (our spurious retransmissions, or link duplicates). */
  dupReports: number;
}

interface OutFrame {
  seq: number;
  msg: LinkMessage;
  /** Time of the latest transmission. */
  sentAt: number;
  txCount: number;
  /** Transmission order index of the latest transmission (for loss detection). */
  txIndex: number;
  sacked: boolean;
  /** Declared lost, waiting to be retransmitted. */
  lost: boolean;
  /** The congestion window was (nearly) full when this frame went: its RTT may grow cwnd. */
  cwndLimited: boolean;
  /** Bytes on the line (payload + FRAME_OVERHEAD). */
  wire: number;
  /** `delivered` and `deliveredAt` when this frame was (last) sent: its delivery-rate sample. */
  dlv: number;
  dlvAt: number;
}

/** Frames sent after a frame that must be acknowledged before it counts as lost (initial value). */
export const DUP_THRESHOLD = 3;
/** Largest reordering threshold after spurious retransmissions raised it. */
export const MAX_DUP_THRESHOLD = 16;
/**
 * Prior of the loss estimate at session start: one loss per LOSS_PRIOR_BYTES wire
 * bytes (≈ 270-byte payloads). It fades after ~64 transmissions, so a clean line
 * reaches full-size frames within about a hundred frames, while a very noisy one never
 * has to retransmit frames that are too big to get through.
 */
const LOSS_PRIOR_BYTES = 4000;
/** Smallest payload the adaptive frame size goes down to. */
export const MIN_ADAPTIVE_PAYLOAD = MIN_PAYLOAD;
/** Vegas: grow the window while fewer frames than this are estimated queued. */
export const VEGAS_ALPHA = 1.5;
/** Vegas: shrink the window while more frames than this are estimated queued. */
export const VEGAS_BETA = 3;
/** Vegas: queueing delay always tolerated before shrinking / growth stops, ms (fast lines). */
export const VEGAS_LOW_MS = 25;
export const VEGAS_HIGH_MS = 50;
/** Smallest congestion window, frames. */
export const MIN_CWND = 4;
/** Congestion window at session start, frames. */
export const INITIAL_CWND = 8;
/** While several streams are open, a frame takes at most about this long on the line, ms. */
export const INTERACTIVE_FRAME_MS = 8;
/** ... but its payload is never cut below this, bytes. */
export const MIN_INTERACTIVE_PAYLOAD = 128;
/** Bytes beyond the byte cap that urgent (interactive, control) frames may use. */
export const URGENT_ALLOWANCE = 1024;
/** Smallest byte cap, in frames of the current size. */
export const MIN_CAP_FRAMES = 3;
/** The delivery-rate estimate is the largest sample of the last this many ms (or 8 RTTs, if longer). */
export const RATE_WINDOW_MS = 2000;
/** Weight of one transmission in the loss estimate (EWMA). */
const LOSS_EWMA = 1 / 64;

/** The handshake/ARQ state machine of one endpoint. See docs/tunnel-protocol.md, sections 5–7. */
export class ReliableLink {
  private readonly cfg: ReliableLinkConfig;
  private readonly hooks: ReliableLinkHooks;
  private readonly roleByte: number;
  /** Flag.AGENT for the agent, 0 for the host: the direction bit of every frame we send. */
  private readonly dirFlag: number;

  /** Our current boot id (changes when an established session is abandoned). */
  bootId: number;
  /** The peer's boot id, 0 until a HELLO was received. */
  peerBootId = 0;
  private started = false;
  /** Handshake complete: sequence state is live. */
  established = false;
  /** Keepalive view: false after `maxMissed` unanswered probes. */
  alive = false;
  private tag = 0;
  private peerWindow = 1;
  private peerMaxPayload = MIN_PAYLOAD;
  private reported = new Set<TunnelErrorCodeValue>();

  private helloDue = false;
  private helloAt = Infinity;
  private helloInterval: number;

  private sndUna = 0;
  private sndNxt = 0;
  private inflight: OutFrame[] = [];
  private txCounter = 0;
  private highestAckedTx = 0;
  private rtoDeadline: number | undefined;
  /** Smoothed RTT, ms; undefined before the first sample. */
  srtt: number | undefined;
  rttvar = 0;
  /** Current retransmission timeout, ms (backed off after timeouts). */
  rto: number;

  private rcvNext = 0;
  private reorder = new Map<number, LinkMessage>();
  private ackNow = false;
  private ackPending = 0;
  private ackDeadline: number | undefined;
  private delivering = false;

  private lastRxAt = 0;
  /** A valid frame arrived since the last RTO expiry (the peer is alive). */
  private heardSinceRto = true;
  private probes = 0;
  private lastProbeAt = 0;
  private probeDue = false;

  private lossW = 1;
  private bytesW = LOSS_PRIOR_BYTES;
  private dupThreshold = DUP_THRESHOLD;
  private sawDuplicate = false;
  /** Smallest RTT sample of the session among near-full-size frames, ms. */
  minRtt: number | undefined;
  /** Congestion window, frames (fractional); new frames only while fewer are in flight. */
  cwnd = INITIAL_CWND;
  private slowStart = true;
  /** Wire bytes acknowledged so far in this session, and when the count last grew. */
  private delivered = 0;
  private deliveredAt = 0;
  /** Delivery rate, bytes/ms: the largest sample in the current window (0: none yet). */
  deliveryRate = 0;
  private rateAt = 0;

  readonly stats: LinkStats = {
    hellosSent: 0,
    hellosReceived: 0,
    sessions: 0,
    peerRestarts: 0,
    framesSent: 0,
    retransmits: 0,
    fastRetransmits: 0,
    timeouts: 0,
    acksSent: 0,
    probesSent: 0,
    linkDowns: 0,
    framesReceived: 0,
    duplicates: 0,
    outOfWindow: 0,
    outOfOrder: 0,
    staleAcks: 0,
    badTag: 0,
    noSession: 0,
    badHello: 0,
    versionMismatch: 0,
    roleMismatch: 0,
    echoes: 0,
    unknownType: 0,
    rttSamples: 0,
    dupReports: 0,
  };

  constructor(cfg: ReliableLinkConfig, hooks: ReliableLinkHooks) {
    this.cfg = cfg;
    this.hooks = hooks;
    this.roleByte = Role[cfg.role];
    this.dirFlag = cfg.role === 'agent' ? Flag.AGENT : 0;
    this.bootId = cfg.bootId;
    this.helloInterval = cfg.helloInitialMs;
    this.rto = cfg.rto.initialMs;
  }

  /** Frames sent but not yet acknowledged (cumulatively or by SACK). */
  get inFlight(): number {
    let n = 0;
    for (const f of this.inflight) if (!f.sacked) n++;
    return n;
  }

  /** Sequence numbers between the oldest unacknowledged frame and the next new one. */
  get windowUsed(): number {
    return seqDiff(this.sndNxt, this.sndUna);
  }

  /** Frames held in the reorder buffer. */
  get reorderBuffered(): number {
    return this.reorder.size;
  }

  /** Effective send window: min(ours, the peer's), frames. */
  get sendWindow(): number {
    return Math.min(this.cfg.window, this.peerWindow);
  }

  /** Starts the handshake: a HELLO goes out at the next nextFrame(). */
  start(now: number): void {
    if (this.started) return;
    this.started = true;
    this.helloDue = true;
    this.helloAt = now + this.helloInterval;
  }

  /** Stops everything (the endpoint was destroyed). */
  stop(): void {
    this.started = false;
    this.established = false;
    this.alive = false;
    this.inflight = [];
    this.reorder.clear();
  }

  /**
   * Largest payload to put in the next frame: min(ours, the peer's), reduced when
   * `adaptivePayload` is on and frames get lost. With an estimated per-byte loss
   * probability e (losses per transmitted byte, EWMA over the last ~64 transmissions)
   * and h bytes of overhead per frame, goodput s/(s+h)·(1−e)^(s+h) is largest at
   * s = (−h + √(h² + 4h/e)) / 2; the result is clamped to [64, max].
   */
  payloadLimit(): number {
    let cap = Math.min(this.cfg.maxPayload, this.peerMaxPayload);
    if (this.cfg.delayBasedWindow && this.deliveryRate > 0 && this.severalStreams) {
      // Several streams: a frame on the line holds up every other stream's next frame,
      // so keep each to about INTERACTIVE_FRAME_MS of line time.
      const short = Math.floor(this.deliveryRate * INTERACTIVE_FRAME_MS) - FRAME_OVERHEAD;
      cap = Math.min(cap, Math.max(MIN_INTERACTIVE_PAYLOAD, short));
    }
    if (!this.cfg.adaptivePayload || this.lossW <= 1e-6 || this.bytesW <= 0) return cap;
    const e = this.lossW / this.bytesW;
    const h = FRAME_OVERHEAD;
    const s = (-h + Math.sqrt(h * h + (4 * h) / e)) / 2;
    return Math.max(Math.min(MIN_ADAPTIVE_PAYLOAD, cap), Math.min(cap, Math.floor(s)));
  }

  // ---------------------------------------------------------------- receive side

  receiveFrame(f: Frame, now: number): void {
    if (!this.started) return;
    if (f.type === FrameType.HELLO) {
      this.onHello(f, now);
      return;
    }
    if ((f.flags & Flag.AGENT) === this.dirFlag) {
      // Our own frame came back (spec 5.4): its ack and seq are ours, not the peer's.
      this.stats.echoes++;
      this.report(TunnelErrorCode.ECHO, 'our own frames come back: the line echoes (tty not in raw mode?)', {});
      return;
    }
    if (!this.established) {
      this.stats.noSession++;
      return;
    }
    if (f.tag !== this.tag) {
      this.stats.badTag++;
      return;
    }
    this.stats.framesReceived++;
    this.heard(now);
    this.onAck(f.ack, f.type === FrameType.ACK ? f.payload : undefined, now);
    if (f.type === FrameType.ACK && f.flags & Flag.DUP) this.onDupReport();
    if (f.flags & Flag.POLL) this.ackNow = true;
    if (f.type >= FIRST_RELIABLE_TYPE) this.onSequenced(f, now);
    else if (f.type !== FrameType.ACK) this.stats.unknownType++;
  }

  /** Retries delivery of in-order messages held back while the upper layer was full. */
  retryDelivery(now: number): void {
    if (this.established) this.deliverInOrder(now);
  }

  private heard(now: number): void {
    this.lastRxAt = now;
    this.heardSinceRto = true;
    this.probes = 0;
    this.probeDue = false;
    if (!this.alive) {
      this.alive = true;
      // Back from an outage: resend what is outstanding now rather than after the
      // backed-off RTO, and forget the backoff (the outage was not congestion).
      for (const f of this.inflight) if (!f.sacked) f.lost = true;
      this.rto = this.computeRto();
      this.hooks.up({ newSession: false, bootId: this.bootId, peerBootId: this.peerBootId, now });
    }
  }

  private onHello(f: Frame, now: number): void {
    this.stats.hellosReceived++;
    const h = decodeHello(f.payload);
    if (!h) {
      this.stats.badHello++;
      return;
    }
    if (h.version !== PROTOCOL_VERSION) {
      this.stats.versionMismatch++;
      this.report(TunnelErrorCode.VERSION_MISMATCH, `peer speaks tunnel protocol version ${h.version}, we speak ${PROTOCOL_VERSION}`, {
        peerVersion: h.version,
      });
      return;
    }
    if (h.bootId === this.bootId) {
      this.stats.echoes++;
      this.report(TunnelErrorCode.ECHO, 'our own HELLO came back: the line echoes (tty not in raw mode?)', {});
      return;
    }
    if (h.role === this.roleByte) {
      this.stats.roleMismatch++;
      this.report(TunnelErrorCode.ROLE_MISMATCH, `peer has our role (${this.cfg.role})`, { role: h.role });
      return;
    }
    if (h.bootId === 0 || h.window === 0 || h.maxPayload < MIN_PAYLOAD || (h.role !== Role.host && h.role !== Role.agent)) {
      this.stats.badHello++;
      return;
    }
    if (this.peerBootId !== 0 && h.bootId !== this.peerBootId) {
      const old = this.peerBootId;
      const was = this.established;
      this.resetSession(now);
      if (was) {
        // Rule R (spec 5.3): leaving an established session draws a new boot id, so the
        // peer is sure to see a change even if it never saw ours go.
        let id = this.cfg.newBootId() >>> 0;
        while (id === 0 || id === this.bootId || id === h.bootId) id = (id * 2654435761 + 1) >>> 0;
        this.bootId = id;
        this.stats.peerRestarts++;
        this.peerBootId = h.bootId;
        this.hooks.sessionReset({ oldPeerBootId: old, newPeerBootId: h.bootId, now });
      }
    }
    if (!this.established) {
      this.peerBootId = h.bootId;
      this.peerWindow = Math.min(h.window, MAX_WINDOW);
      this.peerMaxPayload = Math.min(h.maxPayload, MAX_LARGE_PAYLOAD);
      if (h.peerBootId === this.bootId) this.establish(now);
    } else if (h.bootId === this.peerBootId) {
      this.heard(now);
    }
    if (!(h.peerBootId === this.bootId && h.flags & HelloFlag.UP)) this.helloDue = true;
  }

  private report(code: TunnelErrorCodeValue, message: string, context: Record<string, unknown>): void {
    if (this.reported.has(code)) return;
    this.reported.add(code);
    this.hooks.protocolError(new ProtocolError(code, message, context));
  }

  private establish(now: number): void {
    this.established = true;
    this.alive = true;
    this.tag = this.cfg.role === 'host' ? sessionTag(this.bootId, this.peerBootId) : sessionTag(this.peerBootId, this.bootId);
    this.sndUna = this.sndNxt = this.rcvNext = 0;
    this.inflight = [];
    this.reorder.clear();
    this.lastRxAt = now;
    this.probes = 0;
    this.probeDue = false;
    this.helloAt = Infinity;
    this.helloInterval = this.cfg.helloInitialMs;
    this.reported.clear();
    // Large frames on both sides (spec 5.1): the agent announces them only on a line it
    // knows to be lossless (virtio-serial), so start at full size instead of fading the
    // prior over hundreds of frames; a loss still shrinks them at once.
    this.lossW = Math.min(this.cfg.maxPayload, this.peerMaxPayload) > MAX_PAYLOAD ? 0 : 1;
    this.bytesW = LOSS_PRIOR_BYTES;
    this.dupThreshold = DUP_THRESHOLD;
    this.sawDuplicate = false;
    this.heardSinceRto = true;
    this.minRtt = undefined;
    this.cwnd = INITIAL_CWND;
    this.slowStart = true;
    this.delivered = 0;
    this.deliveredAt = now;
    this.deliveryRate = 0;
    this.rateAt = 0;
    this.stats.sessions++;
    this.hooks.up({ newSession: true, bootId: this.bootId, peerBootId: this.peerBootId, now });
  }

  private resetSession(now: number): void {
    this.established = false;
    this.alive = false;
    this.tag = 0;
    this.inflight = [];
    this.reorder.clear();
    this.sndUna = this.sndNxt = this.rcvNext = 0;
    this.ackNow = false;
    this.ackPending = 0;
    this.ackDeadline = undefined;
    this.rtoDeadline = undefined;
    this.srtt = undefined;
    this.rttvar = 0;
    this.rto = this.cfg.rto.initialMs;
    this.probes = 0;
    this.probeDue = false;
    this.helloInterval = this.cfg.helloInitialMs;
    this.helloAt = now + this.helloInterval;
  }

  private onSequenced(f: Frame, now: number): void {
    const d = seqDiff(f.seq, this.rcvNext);
    if (d < 0 || this.reorder.has(f.seq)) {
      this.stats.duplicates++;
      this.sawDuplicate = true;
      this.ackNow = true;
      return;
    }
    if (d >= this.cfg.window) {
      this.stats.outOfWindow++;
      this.ackNow = true;
      return;
    }
    this.reorder.set(f.seq, { type: f.type, stream: f.stream, payload: f.payload });
    if (d > 0) {
      this.stats.outOfOrder++;
      this.ackNow = true; // a hole: tell the sender now (SACK) so it can repair it early
    }
    this.deliverInOrder(now);
  }

  private deliverInOrder(now: number): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      let m: LinkMessage | undefined;
      while (this.established && (m = this.reorder.get(this.rcvNext)) !== undefined && this.hooks.canAccept()) {
        this.reorder.delete(this.rcvNext);
        this.rcvNext = (this.rcvNext + 1) & 0xffff;
        this.ackPending++;
        this.hooks.deliver(m, now);
      }
    } finally {
      this.delivering = false;
    }
    if (this.ackPending >= this.cfg.ackEvery) this.ackNow = true;
    else if (this.ackPending > 0 && this.ackDeadline === undefined) this.ackDeadline = now + this.cfg.ackDelayMs;
  }

  private onAck(ack: number, sack: Uint8Array | undefined, now: number): void {
    const d = seqDiff(ack, this.sndUna);
    if (d < 0 || d > seqDiff(this.sndNxt, this.sndUna)) {
      this.stats.staleAcks++;
      return;
    }
    let progress = d > 0;
    for (let k = 0; k < d; k++) {
      const f = this.inflight.shift()!;
      if (!f.sacked) this.acked(f, now);
    }
    this.sndUna = ack;
    if (sack !== undefined) {
      for (const i of decodeSack(sack)) {
        const idx = i + 1;
        if (idx >= this.inflight.length) break;
        const f = this.inflight[idx];
        if (!f.sacked) {
          f.sacked = true;
          f.lost = false;
          this.acked(f, now);
          progress = true;
        }
      }
    }
    if (progress) {
      // RFC 6298 (5.2, 5.3): restart the timer on new acknowledgements, stop it when
      // nothing is outstanding.
      this.rtoDeadline = this.hasOutstanding() ? now + this.rto : undefined;
      this.detectLosses();
    }
  }

  private acked(f: OutFrame, now: number): void {
    this.delivered += f.wire;
    this.deliveredAt = now;
    // Delivery rate (as BBR): bytes acknowledged between this frame's sending and its
    // acknowledgement, over that time. A window max: an application that pauses
    // (typing) gives low samples without lowering the estimate at once.
    if (f.txCount === 1 && now > f.dlvAt) {
      const rate = (this.delivered - f.dlv) / (now - f.dlvAt);
      const windowMs = Math.max(RATE_WINDOW_MS, 8 * (this.srtt ?? 0));
      if (rate >= this.deliveryRate || now - this.rateAt > windowMs) {
        this.deliveryRate = rate;
        this.rateAt = now;
      }
    }
    // Karn: only frames sent once give an RTT sample.
    if (f.txCount === 1) this.sample(now - f.sentAt, f.cwndLimited, f.msg.payload.length);
    // A resent frame acknowledged sooner after its retransmission than any round trip
    // takes was acknowledged for its original copy: its latest transmission says
    // nothing about which later frames got through.
    const ambiguous = f.txCount > 1 && now - f.sentAt < (this.minRtt ?? 0);
    if (!ambiguous && f.txIndex > this.highestAckedTx) this.highestAckedTx = f.txIndex;
    this.outcome(f.msg.payload.length, false);
  }

  private sample(r: number, cwndLimited = false, payload = 0): void {
    r = Math.max(0, r);
    if (this.srtt === undefined) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.stats.rttSamples++;
    this.rto = this.computeRto(); // a valid sample also ends any backoff
    // The base RTT of the delay-based window: from frames of about the current full
    // size only, since a frame's own serialisation is part of its round trip (a 1 KiB
    // frame needs 20 ms at 50 KiB/s, a keystroke frame under 1 ms).
    if (payload >= 0.75 * this.payloadLimit() && (this.minRtt === undefined || r < this.minRtt)) this.minRtt = r;
    if (this.cfg.delayBasedWindow) this.vegas(r, cwndLimited);
  }

  /**
   * TCP Vegas on a dedicated line. Queueing delay = rtt − minRtt − tolerance (the
   * tolerance, ackDelayMs + 2 ms, keeps delayed ACKs from looking like a queue); frames
   * queued ≈ cwnd · delay / rtt, i.e. delay / (rtt / cwnd), rtt / cwnd being the time a
   * frame takes on a busy line. Grow (one per sample in slow start, else 2/cwnd, about
   * one per round trip) while the delay is under max(VEGAS_ALPHA frames, VEGAS_LOW_MS)
   * and the window was the limit; shrink by 2/cwnd above max(VEGAS_BETA frames,
   * VEGAS_HIGH_MS) (by one above twice that). The line stays busy — the window exceeds
   * the bandwidth-delay product by the queued frames — while the transport buffer
   * holds only a few frames (or ≤ 50 ms of them on fast lines), however deep it is.
   */
  private vegas(r: number, cwndLimited: boolean): void {
    const minRtt = this.minRtt ?? r;
    const delay = Math.max(0, r - minRtt - this.cfg.ackDelayMs - 2);
    const frameMs = r / this.cwnd;
    const low = Math.max(VEGAS_ALPHA * frameMs, VEGAS_LOW_MS);
    const high = Math.max(VEGAS_BETA * frameMs, VEGAS_HIGH_MS);
    if (delay < low) {
      if (cwndLimited) this.cwnd += this.slowStart ? 1 : 2 / this.cwnd;
    } else {
      this.slowStart = false;
      if (delay > 2 * high) this.cwnd -= 1;
      else if (delay > high) this.cwnd -= 2 / this.cwnd;
    }
    this.cwnd = Math.min(Math.max(this.cwnd, MIN_CWND), this.sendWindow);
  }

  private computeRto(): number {
    const { initialMs, minMs, maxMs, granularityMs } = this.cfg.rto;
    if (this.srtt === undefined) return Math.min(Math.max(initialMs, minMs), maxMs);
    const rto = this.srtt + Math.max(granularityMs, 4 * this.rttvar);
    return Math.min(Math.max(rto, minMs), maxMs);
  }

  private hasOutstanding(): boolean {
    for (const f of this.inflight) if (!f.sacked) return true;
    return false;
  }

  /**
   * The peer got a frame twice: one of our retransmissions was probably spurious
   * (reordering, or an ACK lost). Undo its weight in the loss estimate and tolerate
   * more reordering before a fast retransmit.
   */
  private onDupReport(): void {
    this.stats.dupReports++;
    this.lossW = Math.max(0, this.lossW - 1);
    this.dupThreshold = Math.min(this.dupThreshold + 1, MAX_DUP_THRESHOLD);
  }

  private detectLosses(): void {
    for (const f of this.inflight) {
      if (!f.sacked && !f.lost && this.highestAckedTx >= f.txIndex + this.dupThreshold) {
        f.lost = true;
        this.stats.fastRetransmits++;
        this.outcome(f.msg.payload.length, true);
      }
    }
  }

  private outcome(payload: number, lost: boolean): void {
    this.lossW = this.lossW * (1 - LOSS_EWMA) + (lost ? 1 : 0);
    this.bytesW = this.bytesW * (1 - LOSS_EWMA) + payload + FRAME_OVERHEAD;
  }

  // ---------------------------------------------------------------- timers

  /** Runs the timers that are due: HELLO retry, delayed ACK, RTO, keepalive. */
  poll(now: number): void {
    if (!this.started) return;
    if (!this.established) {
      if (now >= this.helloAt) {
        this.helloDue = true;
        this.helloInterval = Math.min(this.helloInterval * 2, this.cfg.helloMaxMs);
        this.helloAt = now + this.helloInterval;
      }
      return;
    }
    if (this.ackDeadline !== undefined && now >= this.ackDeadline) {
      this.ackDeadline = undefined;
      if (this.ackPending > 0) this.ackNow = true;
    }
    if (this.rtoDeadline !== undefined && now >= this.rtoDeadline) this.onRto(now);
    if (now >= this.keepaliveDeadline()) {
      if (this.probes >= this.cfg.keepalive.maxMissed && this.alive) {
        this.alive = false;
        this.stats.linkDowns++;
        this.hooks.down(now);
      }
      this.probeDue = true;
      this.probes++;
      this.lastProbeAt = now;
    }
  }

  private keepaliveDeadline(): number {
    const k = this.cfg.keepalive;
    return this.probes === 0 ? this.lastRxAt + k.idleMs : this.lastProbeAt + k.intervalMs;
  }

  /**
   * RTO expiry (RFC 6298 5.4–5.7). Every unacknowledged frame that has itself been
   * outstanding for a whole RTO is declared lost (at least the oldest one): resending
   * all of them, not only the oldest, keeps a heavily damaged line moving, and the
   * delay-based window keeps the transport buffer short, so such timeouts are rarely
   * spurious. Then the RTO backs off until a valid RTT sample arrives: it doubles (up
   * to maxMs) while the peer is silent, but is at most twice the computed RTO while
   * frames from the peer keep arriving — frames are being damaged then, the peer is not
   * gone, and a dedicated line has no congestion to back off from.
   */
  private onRto(now: number): void {
    this.stats.timeouts++;
    let marked = false;
    let oldest: OutFrame | undefined;
    for (const f of this.inflight) {
      if (f.sacked) continue;
      oldest ??= f;
      if (!f.lost && now - f.sentAt >= this.rto) {
        f.lost = true;
        marked = true;
        this.outcome(f.msg.payload.length, true);
      }
    }
    if (!marked && oldest !== undefined && !oldest.lost) {
      oldest.lost = true;
      this.outcome(oldest.msg.payload.length, true);
    }
    this.rto = this.heardSinceRto ? Math.min(2 * this.computeRto(), this.cfg.rto.maxMs) : Math.min(this.rto * 2, this.cfg.rto.maxMs);
    this.heardSinceRto = false;
    this.rtoDeadline = oldest !== undefined ? now + this.rto : undefined;
    this.dupThreshold = DUP_THRESHOLD; // we waited a whole RTO: be quicker to repair again
  }

  /** Earliest time poll() has work, or undefined when not started. */
  nextDeadline(): number | undefined {
    if (!this.started) return undefined;
    if (!this.established) return this.helloAt;
    let d = this.keepaliveDeadline();
    if (this.ackDeadline !== undefined && this.ackDeadline < d) d = this.ackDeadline;
    if (this.rtoDeadline !== undefined && this.rtoDeadline < d) d = this.rtoDeadline;
    return d;
  }

  // ---------------------------------------------------------------- send side

  /** True when nextFrame() would return a frame, ignoring the upper layer's queue. */
  hasUrgentFrame(): boolean {
    if (this.helloDue) return true;
    if (!this.established) return false;
    if (this.probeDue || this.ackNow) return true;
    for (const f of this.inflight) if (f.lost && !f.sacked) return true;
    return false;
  }

  /**
   * True when a new sequenced frame may go: the sequence window (min of both sides'
   * windows) has room and, with the delay-based window, fewer than cwnd frames are in
   * flight (frames declared lost do not count: they left the pipe).
   */
  get windowOpen(): boolean {
    if (!this.seqWindowOpen) return false;
    if (!this.cfg.delayBasedWindow) return true;
    let n = 0;
    for (const f of this.inflight) if (!f.sacked && !f.lost) n++;
    return n < Math.floor(this.cwnd) && this.bytesInFlight < this.byteCap();
  }

  private get seqWindowOpen(): boolean {
    return this.established && seqDiff(this.sndNxt, this.sndUna) < this.sendWindow;
  }

  /** Wire bytes of the frames in flight (sent, not acknowledged, not declared lost). */
  get bytesInFlight(): number {
    let b = 0;
    for (const f of this.inflight) if (!f.sacked && !f.lost) b += f.wire;
    return b;
  }

  /**
   * Frames the byte cap allows beyond the bandwidth-delay product: two with one stream
   * (the frame on the line and the ACK granularity, every second frame: a bulk
   * transfer alone keeps the line busy), one while several streams are open — then a
   * keystroke waits behind every byte in flight, and the second frame cost it a frame
   * time (about 8 ms, the frames being short) for no goodput the bulk transfer kept
   * (the simulator's "interactive round trip during a bulk transfer": goodput
   * 89–98 % either way, the keystroke's p50 8 ms lower).
   */
  capSlackFrames(): number {
    return this.severalStreams ? 1 : 2;
  }

  /** Several streams open (hooks.streams): frames are kept short and the byte cap tighter. */
  private get severalStreams(): boolean {
    return (this.hooks.streams?.() ?? 1) > 1;
  }

  /**
   * Largest number of wire bytes in flight with the delay-based window: what the line
   * delivers in a base round trip plus `queueTargetMs` (deliveryRate · (minRtt +
   * target)), plus capSlackFrames() frames of the current size. Whatever the transport
   * buffers in front of the line (a unix socket's ~200 KiB before QEMU's UART), at most
   * about `queueTargetMs` plus a frame of data waits there, ahead of a keystroke.
   * Infinity before the first rate sample (cwnd alone limits the start).
   */
  byteCap(): number {
    if (this.deliveryRate <= 0 || this.minRtt === undefined) return Infinity;
    const frame = this.payloadLimit() + FRAME_OVERHEAD;
    return Math.max(MIN_CAP_FRAMES * frame, this.deliveryRate * (this.minRtt + this.cfg.queueTargetMs) + this.capSlackFrames() * frame);
  }

  /**
   * The next frame to transmit, by priority: HELLO, ACK (probe or due), retransmission
   * (lowest sequence number first), new message (if the window has room). The caller
   * must transmit it (its timestamps start now).
   */
  nextFrame(now: number): Frame | undefined {
    if (!this.started) return undefined;
    if (this.helloDue) {
      this.helloDue = false;
      this.stats.hellosSent++;
      const up = this.established ? HelloFlag.UP : 0;
      return {
        type: FrameType.HELLO,
        flags: this.dirFlag,
        tag: 0,
        seq: 0,
        ack: 0,
        stream: 0,
        payload: encodeHello({
          version: PROTOCOL_VERSION,
          role: this.roleByte,
          flags: up,
          window: this.cfg.window,
          bootId: this.bootId,
          peerBootId: this.peerBootId,
          maxPayload: this.cfg.maxPayload,
        }),
      };
    }
    if (!this.established) return undefined;
    if (this.probeDue || this.ackNow) {
      const poll = this.probeDue;
      this.probeDue = false;
      this.ackNow = false;
      this.ackPending = 0;
      this.ackDeadline = undefined;
      if (poll) this.stats.probesSent++;
      else this.stats.acksSent++;
      const flags = this.dirFlag | (poll ? Flag.POLL : 0) | (this.sawDuplicate ? Flag.DUP : 0);
      this.sawDuplicate = false;
      return { type: FrameType.ACK, flags, tag: this.tag, seq: 0, ack: this.rcvNext, stream: 0, payload: this.sackBitmap() };
    }
    for (const f of this.inflight) {
      if (f.lost && !f.sacked) {
        f.lost = false;
        f.txCount++;
        f.sentAt = now;
        f.txIndex = ++this.txCounter;
        f.dlv = this.delivered;
        f.dlvAt = this.deliveredAt;
        this.stats.retransmits++;
        this.rtoDeadline ??= now + this.rto;
        return this.sequencedFrame(f);
      }
    }
    // A new message: any while the window is open; while only the byte budget is used up
    // (by bulk frames), an urgent one still goes within URGENT_ALLOWANCE — a keystroke
    // does not wait for the next ACK.
    const open = this.windowOpen;
    if (open || (this.cfg.delayBasedWindow && this.seqWindowOpen && this.bytesInFlight < this.byteCap() + URGENT_ALLOWANCE)) {
      const m = this.hooks.pull(this.payloadLimit(), !open);
      if (m !== undefined) {
        let flying = 0;
        for (const g of this.inflight) if (!g.sacked && !g.lost) flying++;
        // The window limits us when it is (nearly) full; in slow start, when half of it is
        // in use (as Linux does), since a burst fills it only towards its end.
        const cwndLimited = this.slowStart ? 2 * (flying + 1) >= this.cwnd : flying + 2 >= Math.floor(this.cwnd);
        const f: OutFrame = {
          seq: this.sndNxt,
          msg: m,
          sentAt: now,
          txCount: 1,
          txIndex: ++this.txCounter,
          sacked: false,
          lost: false,
          cwndLimited,
          wire: m.payload.length + FRAME_OVERHEAD,
          // A frame sent onto an idle line starts its rate sample now, not at the last delivery.
          dlv: this.delivered,
          dlvAt: this.bytesInFlight === 0 ? now : this.deliveredAt,
        };
        this.inflight.push(f);
        this.sndNxt = (this.sndNxt + 1) & 0xffff;
        this.rtoDeadline ??= now + this.rto;
        this.stats.framesSent++;
        return this.sequencedFrame(f);
      }
    }
    return undefined;
  }

  private sequencedFrame(f: OutFrame): Frame {
    // The cumulative ack rides along; it satisfies a pending delayed ACK.
    this.ackPending = 0;
    this.ackDeadline = undefined;
    return { type: f.msg.type, flags: this.dirFlag, tag: this.tag, seq: f.seq, ack: this.rcvNext, stream: f.msg.stream, payload: f.msg.payload };
  }

  private sackBitmap(): Uint8Array {
    if (this.reorder.size === 0) return new Uint8Array(0);
    const offsets: number[] = [];
    for (const seq of this.reorder.keys()) {
      const d = seqDiff(seq, this.rcvNext);
      if (d >= 1) offsets.push(d - 1);
    }
    return encodeSack(offsets);
  }
}
