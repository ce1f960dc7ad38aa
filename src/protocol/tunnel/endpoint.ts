/**
 * TunnelEndpoint: one side (host or agent) of the serial tunnel. Ties the framing,
 * reliable-link and multiplexer layers together, sans-I/O:
 *
 * - bytes from the serial line go in through `receive(bytes, now)`;
 * - bytes for the line come out through the `write` callback, frame by frame; when it
 *   returns false the endpoint stops until `drained(now)` (Node stream semantics);
 * - timers: call `poll(now)` at `nextDeadline()` (absolute ms) or later;
 * - streams: `openStream(port, now, handlers)`, `TunnelStream.write/end/reset/consume`,
 *   and the `openRequest` handler for streams the peer opens.
 *
 * `now` is milliseconds on any monotonic clock, the same for every call; it must not go
 * backwards (a smaller value is treated as the largest seen). Nothing here reads a
 * clock, sets a timer or touches a socket.
 *
 * Callbacks run synchronously inside receive()/poll()/drained() and the stream
 * methods. From a callback you may use streams and openStream(), but not call
 * receive(), poll() or drained() (VSPC_TUNNEL_REENTRANT).
 */
import { MAX_LARGE_PAYLOAD, MAX_PAYLOAD, MAX_WINDOW, MIN_PAYLOAD, Reason, type TunnelRole } from './constants.js';
import { ProtocolError, TunnelError, TunnelErrorCode, type VspcError } from './errors.js';
import { FrameDecoder, encodeFrame, type FrameDecoderStats } from './framing.js';
import { ReliableLink, type KeepaliveConfig, type LinkStats, type RtoConfig } from './arq.js';
import { Multiplexer, type MuxStats, type StreamOptions, type TunnelStream, type TunnelStreamHandlers } from './mux.js';

export interface TunnelEndpointHandlers {
  /**
   * The link works: a new session was established (`newSession`, after start or a
   * peer restart), or the peer answered again after `linkDown`.
   */
  linkUp?(info: { newSession: boolean; bootId: number; peerBootId: number }): void;
  /** Keepalive: the peer stopped answering. Streams stay; they resume if it comes back with the same boot id. */
  linkDown?(): void;
  /**
   * The peer has a new boot id (it restarted or lost its state): every stream of the
   * old session was reset (their reset handlers ran first, reason PEER_RESTARTED).
   */
  peerRestarted?(info: { oldPeerBootId: number; newPeerBootId: number; streamsReset: number }): void;
  /**
   * The peer opens a stream to `port` (already checked against `allowPorts`). Call
   * `stream.accept(now, handlers)` or `stream.refuse(now, code)`, now or later (after
   * dialling). Without this handler every OPEN is refused with NOT_ALLOWED.
   */
  openRequest?(stream: TunnelStream, port: number): void;
  /** A HELLO we cannot work with: VSPC_TUNNEL_VERSION_MISMATCH, _ROLE_MISMATCH, _ECHO. Once per kind per session. */
  error?(err: VspcError): void;
}

export interface TunnelEndpointOptions {
  role: TunnelRole;
  /**
   * Transport write: one call per frame (1 to 1045 bytes; 16,465 with large frames). Return false when the
   * transport's buffer is full; call `drained(now)` when it can take more.
   */
  write(bytes: Uint8Array): boolean | void;
  handlers?: TunnelEndpointHandlers;
  /** Boot id (non-zero u32). Default: random (crypto.getRandomValues). */
  bootId?: number;
  /** Source of later boot ids (non-zero u32). Default: random. */
  newBootId?: () => number;
  /** Receive window and largest send window, frames, 1..128. Default 128. */
  window?: number;
  /**
   * Largest frame payload we accept (announced in HELLO) and send, bytes, 64..16384.
   * Frames sent are at most min(this, the peer's announcement). Above 1024 ("large
   * frames", spec 5.1) only for lossless lines: a lost byte costs the whole frame, and
   * a frame holds the line for its length. Default 1024.
   */
  maxPayload?: number;
  /** Shrink frames on lossy links (sender-side policy). Default true. */
  adaptivePayload?: boolean;
  /**
   * Delay-based congestion window (sender-side policy, TCP Vegas style): keeps the
   * transport buffer nearly empty without knowing the line rate. Default true.
   */
  delayBasedWindow?: boolean;
  /**
   * With the delay-based window: the queueing delay the sender aims at, ms. Bytes in
   * flight are capped to about the line's delivery rate × (base RTT + this) plus two
   * frames, and while several streams are open frames are cut to about 8 ms of line
   * time, so that an interactive frame waits behind little bulk. Default 5.
   */
  queueTargetMs?: number;
  /** Per-stream receive window (credit granted to the peer) at the start, bytes. Default 65536. */
  streamWindow?: number;
  /**
   * Largest window autotuning grows a stream's to (doubling while the peer uses all its
   * credit and the application keeps up; docs/tunnel-protocol.md 8.5), bytes. Default
   * 1 MiB; at most streamWindow: no autotuning.
   */
  maxStreamWindow?: number;
  /** Autotuning's growth over all streams together, bytes. Default 4 MiB. */
  windowBudget?: number;
  /** Per-stream send buffer above which write() returns false, bytes. Default 65536. */
  sendHighWaterMark?: number;
  /** Per-stream send buffer above which write() throws, bytes. Default 1 MiB. */
  maxSendBuffer?: number;
  /** Streams open at once (both directions). Default 256, at most 32767. */
  maxStreams?: number;
  /** Ports the peer may open (checked before openRequest). Default: no restriction. */
  allowPorts?: Iterable<number>;
  /** Count delivered data as consumed at once (no consume() calls). Default false. */
  autoConsume?: boolean;
  /** Queued bytes at or below which a stream counts as interactive and goes first. Default 256. */
  smallPayload?: number;
  rto?: Partial<RtoConfig>;
  keepalive?: Partial<KeepaliveConfig>;
  /** Longest ACK delay, ms. Default 10. */
  ackDelayMs?: number;
  /** ACK at once after this many in-order frames. Default 2. */
  ackEvery?: number;
  /** HELLO retry interval before the handshake completes, ms: first and largest. Default 200 / 2000. */
  hello?: { initialMs?: number; maxMs?: number };
  /** Send a 0x00 before a frame when nothing was sent for this long, ms. Default 20. */
  idleDelimiterMs?: number;
  /**
   * Pace output to this rate (token bucket), so that frames wait here, where the
   * scheduler can still reorder them, rather than in a deep transport buffer.
   * Default: no pacing (rely on write() returning false).
   */
  pacing?: { bytesPerSecond: number; burstBytes?: number };
}

export type TunnelEndpointState = 'new' | 'handshaking' | 'up' | 'down' | 'destroyed';

/** Snapshot of every counter. */
export interface TunnelEndpointStats {
  framing: FrameDecoderStats & { bytesOut: number; framesOut: number };
  link: LinkStats & {
    srtt: number | undefined;
    rttvar: number;
    rto: number;
    minRtt: number | undefined;
    cwnd: number;
    inFlight: number;
    payloadLimit: number;
    reorderBuffered: number;
  };
  mux: MuxStats & { streams: number; controlQueued: number };
}

function randomBootId(): number {
  const a = new Uint32Array(1);
  do globalThis.crypto.getRandomValues(a);
  while (a[0] === 0);
  return a[0];
}

function bad(what: string, value: unknown): never {
  throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `invalid option ${what}: ${String(value)}`, { option: what, value });
}

function intIn(name: string, v: number | undefined, def: number, min: number, max: number): number {
  const x = v ?? def;
  if (!Number.isInteger(x) || x < min || x > max) bad(name, x);
  return x;
}

function numIn(name: string, v: number | undefined, def: number, min: number, max: number): number {
  const x = v ?? def;
  if (typeof x !== 'number' || Number.isNaN(x) || x < min || x > max) bad(name, x);
  return x;
}

export class TunnelEndpoint {
  readonly role: TunnelRole;
  private readonly writeFn: (bytes: Uint8Array) => boolean | void;
  private readonly handlers: TunnelEndpointHandlers;
  private readonly decoder: FrameDecoder;
  private readonly link: ReliableLink;
  private readonly mux: Multiplexer;
  private readonly idleDelimiterMs: number;
  /** Pacing: bytes per ms, and how far (ms) output may run ahead of the paced wire. */
  private readonly pacing: { bytesPerMs: number; burstMs: number } | undefined;

  private started = false;
  private destroyed = false;
  private busy = false;
  private dirty = false;
  private writable = true;
  private lastNow = -Infinity;
  private lastTxAt = -Infinity;
  /** When the paced virtual wire is free again (ms). */
  private paceFreeAt = -Infinity;
  private paceBlocked = false;
  private bytesOut = 0;
  private framesOut = 0;

  /** Throws TunnelError VSPC_TUNNEL_BAD_ARGUMENT for an option out of range. */
  constructor(opts: TunnelEndpointOptions) {
    if (opts.role !== 'host' && opts.role !== 'agent') bad('role', opts.role);
    if (typeof opts.write !== 'function') bad('write', opts.write);
    this.role = opts.role;
    this.writeFn = opts.write;
    this.handlers = opts.handlers ?? {};
    const bootId = opts.bootId ?? randomBootId();
    if (!Number.isInteger(bootId) || bootId < 1 || bootId > 0xffffffff) bad('bootId', bootId);
    this.idleDelimiterMs = numIn('idleDelimiterMs', opts.idleDelimiterMs, 20, 0, Infinity);
    if (opts.pacing !== undefined) {
      const rate = numIn('pacing.bytesPerSecond', opts.pacing.bytesPerSecond, 0, 1, Infinity);
      const burst = numIn('pacing.burstBytes', opts.pacing.burstBytes, 2 * (MAX_PAYLOAD + 21), 1, Infinity);
      this.pacing = { bytesPerMs: rate / 1000, burstMs: (burst * 1000) / rate };
    }
    const rto: RtoConfig = {
      initialMs: numIn('rto.initialMs', opts.rto?.initialMs, 1000, 1, 3_600_000),
      minMs: numIn('rto.minMs', opts.rto?.minMs, 100, 1, 3_600_000),
      maxMs: numIn('rto.maxMs', opts.rto?.maxMs, 10_000, 1, 3_600_000),
      granularityMs: numIn('rto.granularityMs', opts.rto?.granularityMs, 1, 0, 60_000),
    };
    if (rto.minMs > rto.maxMs) bad('rto.minMs', rto.minMs);
    const keepalive: KeepaliveConfig = {
      idleMs: numIn('keepalive.idleMs', opts.keepalive?.idleMs, 2000, 1, Infinity),
      intervalMs: numIn('keepalive.intervalMs', opts.keepalive?.intervalMs, 1000, 1, Infinity),
      maxMissed: intIn('keepalive.maxMissed', opts.keepalive?.maxMissed, 4, 1, 1_000_000),
    };
    const maxPayload = intIn('maxPayload', opts.maxPayload, MAX_PAYLOAD, MIN_PAYLOAD, MAX_LARGE_PAYLOAD);
    this.decoder = new FrameDecoder(maxPayload);
    const maxStreams = intIn('maxStreams', opts.maxStreams, 256, 1, 0x7fff);
    const allow = opts.allowPorts === undefined ? undefined : new Set(opts.allowPorts);
    if (allow) for (const p of allow) if (!Number.isInteger(p) || p < 1 || p > 0xffff) bad('allowPorts', p);
    const newBootId = opts.newBootId ?? randomBootId;

    this.link = new ReliableLink(
      {
        role: this.role,
        bootId,
        newBootId,
        window: intIn('window', opts.window, 128, 1, MAX_WINDOW),
        maxPayload,
        adaptivePayload: opts.adaptivePayload ?? true,
        delayBasedWindow: opts.delayBasedWindow ?? true,
        queueTargetMs: numIn('queueTargetMs', opts.queueTargetMs, 5, 0, 60_000),
        rto,
        keepalive,
        ackDelayMs: numIn('ackDelayMs', opts.ackDelayMs, 10, 0, 60_000),
        ackEvery: intIn('ackEvery', opts.ackEvery, 2, 1, MAX_WINDOW),
        helloInitialMs: numIn('hello.initialMs', opts.hello?.initialMs, 200, 1, 3_600_000),
        helloMaxMs: numIn('hello.maxMs', opts.hello?.maxMs, 2000, 1, 3_600_000),
      },
      {
        canAccept: () => this.mux.canAccept(),
        deliver: (m, now) => this.mux.handle(m, now),
        pull: (max, urgentOnly) => this.mux.nextMessage(max, urgentOnly),
        streams: () => this.mux.streamCount,
        up: (info) => this.handlers.linkUp?.({ newSession: info.newSession, bootId: info.bootId, peerBootId: info.peerBootId }),
        down: () => this.handlers.linkDown?.(),
        sessionReset: (info) => {
          const n = this.mux.resetAll(Reason.PEER_RESTARTED, 'peer restarted');
          this.handlers.peerRestarted?.({ oldPeerBootId: info.oldPeerBootId, newPeerBootId: info.newPeerBootId, streamsReset: n });
        },
        protocolError: (err: ProtocolError) => this.handlers.error?.(err),
      },
    );
    this.mux = new Multiplexer(
      {
        role: this.role,
        streamWindow: intIn('streamWindow', opts.streamWindow, 65536, 1, 0xffffffff),
        maxStreamWindow: intIn('maxStreamWindow', opts.maxStreamWindow, 1 << 20, 1, 0xffffffff),
        windowBudget: intIn('windowBudget', opts.windowBudget, 4 << 20, 0, Number.MAX_SAFE_INTEGER),
        sendHighWaterMark: intIn('sendHighWaterMark', opts.sendHighWaterMark, 65536, 1, Number.MAX_SAFE_INTEGER),
        maxSendBuffer: intIn('maxSendBuffer', opts.maxSendBuffer, 1 << 20, 1, Number.MAX_SAFE_INTEGER),
        maxStreams,
        allowPorts: allow,
        autoConsume: opts.autoConsume ?? false,
        smallPayload: intIn('smallPayload', opts.smallPayload, 256, 0, Number.MAX_SAFE_INTEGER),
      },
      {
        kick: (now) => this.kick(now),
        openRequest: this.handlers.openRequest ? (s, p) => this.handlers.openRequest!(s, p) : undefined,
      },
    );
  }

  /** Our current boot id (a new one is drawn when an established session is abandoned). */
  get bootId(): number {
    return this.link.bootId;
  }
  /** The peer's boot id, 0 before its first HELLO. */
  get peerBootId(): number {
    return this.link.peerBootId;
  }
  get state(): TunnelEndpointState {
    if (this.destroyed) return 'destroyed';
    if (!this.started) return 'new';
    if (!this.link.established) return 'handshaking';
    return this.link.alive ? 'up' : 'down';
  }
  /** Handles of the streams that hold an id. */
  get streams(): TunnelStream[] {
    return this.mux.listStreams();
  }

  /** Starts the handshake (sends a HELLO). Idempotent. */
  start(now: number): void {
    this.checkCall();
    now = this.clock(now);
    if (this.started) return;
    this.started = true;
    this.link.start(now);
    this.pump(now);
  }

  /** Bytes from the serial line (any chunking). Starts the endpoint if needed. */
  receive(bytes: Uint8Array, now: number): void {
    this.checkCall();
    now = this.clock(now);
    if (!this.started) this.start(now);
    this.busy = true;
    try {
      const frames = this.decoder.decode(bytes);
      for (const f of frames) {
        if (this.destroyed) return;
        this.link.receiveFrame(f, now);
      }
    } finally {
      this.busy = false;
    }
    this.pump(now);
  }

  /** Runs due timers and sends what can be sent. Call at nextDeadline() or later; extra calls are harmless. */
  poll(now: number): void {
    this.checkCall();
    now = this.clock(now);
    if (!this.started) return;
    this.busy = true;
    try {
      this.link.poll(now);
    } finally {
      this.busy = false;
    }
    this.pump(now);
  }

  /** The transport can take bytes again (after write() returned false). */
  drained(now: number): void {
    this.checkCall();
    now = this.clock(now);
    this.writable = true;
    this.pump(now);
  }

  /**
   * Absolute time (ms) at which poll() must run next, or undefined when nothing is
   * scheduled (not started, destroyed). While write() is blocked, sending resumes on
   * drained() regardless.
   */
  nextDeadline(): number | undefined {
    if (!this.started || this.destroyed) return undefined;
    let d = this.link.nextDeadline();
    if (this.paceBlocked && this.pacing !== undefined && this.writable) {
      const t = this.paceResumeAt();
      if (d === undefined || t < d) d = t;
    }
    return d;
  }

  /**
   * Opens a stream to `port` on the peer (the agent dials 127.0.0.1:port). Data may
   * be written at once; it is sent after OPEN_OK. Before the link is up the OPEN waits.
   * Throws VSPC_TUNNEL_TOO_MANY_STREAMS, _BAD_ARGUMENT, _DESTROYED.
   */
  openStream(port: number, now: number, handlers: TunnelStreamHandlers = {}, opts: StreamOptions = {}): TunnelStream {
    this.checkAlive();
    now = this.clock(now);
    return this.mux.open(port, handlers, opts, now);
  }

  /**
   * Resets every stream with RESET(code) (default ABORTED), e.g. when the application
   * gives up on a link that stays down. Stream reset handlers are not called (as for
   * TunnelStream.reset). Throws VSPC_TUNNEL_BAD_ARGUMENT for a code outside 1..63.
   */
  resetAllStreams(now: number, code: number = Reason.ABORTED, text = ''): void {
    this.checkAlive();
    now = this.clock(now);
    for (const s of this.mux.listStreams()) s.reset(now, code, text);
  }

  /** Stops the endpoint: every stream is reset locally (SHUTDOWN), nothing more is sent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.link.stop();
    this.mux.resetAll(Reason.SHUTDOWN, 'endpoint destroyed');
  }

  stats(): TunnelEndpointStats {
    return {
      framing: { ...this.decoder.stats, bytesOut: this.bytesOut, framesOut: this.framesOut },
      link: {
        ...this.link.stats,
        srtt: this.link.srtt,
        rttvar: this.link.rttvar,
        rto: this.link.rto,
        minRtt: this.link.minRtt,
        cwnd: this.link.cwnd,
        inFlight: this.link.inFlight,
        payloadLimit: this.link.payloadLimit(),
        reorderBuffered: this.link.reorderBuffered,
      },
      mux: { ...this.mux.stats, streams: this.mux.streamCount, controlQueued: this.mux.controlQueued },
    };
  }

  // ---------------------------------------------------------------- internals

  private checkAlive(): void {
    if (this.destroyed) throw new TunnelError(TunnelErrorCode.DESTROYED, 'tunnel endpoint destroyed', {});
  }

  private checkCall(): void {
    this.checkAlive();
    if (this.busy) throw new TunnelError(TunnelErrorCode.REENTRANT, 'receive/poll/drained called from inside a tunnel callback', {});
  }

  private clock(now: number): number {
    if (typeof now !== 'number' || Number.isNaN(now)) bad('now', now);
    if (now < this.lastNow) now = this.lastNow;
    this.lastNow = now;
    return now;
  }

  /** Application calls land here: send now unless we are inside a callback (then the outer call sends). */
  private kick(now: number): void {
    if (this.destroyed) return;
    now = this.clock(now);
    if (this.busy) {
      this.dirty = true;
      return;
    }
    if (this.started) this.pump(now);
  }

  /** Earliest time the pacer lets the next frame go (same expression as the check, so no rounding gap). */
  private paceResumeAt(): number {
    return this.paceFreeAt - this.pacing!.burstMs;
  }

  private pump(now: number): void {
    if (this.destroyed || !this.started) return;
    this.busy = true;
    try {
      do {
        this.dirty = false;
        this.link.retryDelivery(now);
        this.paceBlocked = false;
        while (this.writable && !this.destroyed) {
          if (this.pacing !== undefined && now < this.paceResumeAt()) {
            this.paceBlocked = this.link.hasUrgentFrame() || (this.link.windowOpen && this.mux.hasPending());
            break;
          }
          const f = this.link.nextFrame(now);
          if (f === undefined) break;
          const bytes = encodeFrame(f, now - this.lastTxAt >= this.idleDelimiterMs);
          this.lastTxAt = now;
          this.bytesOut += bytes.length;
          this.framesOut++;
          if (this.pacing !== undefined) this.paceFreeAt = Math.max(this.paceFreeAt, now) + bytes.length / this.pacing.bytesPerMs;
          if (this.writeFn(bytes) === false) this.writable = false;
          // Sending may have freed control-queue room: deliver what the link held back.
          this.link.retryDelivery(now);
        }
      } while (this.dirty && !this.destroyed);
    } finally {
      this.busy = false;
    }
  }
}
