/**
 * Stream multiplexer over the reliable, ordered message channel of the link layer:
 * OPEN / OPEN_OK / OPEN_FAIL, DATA with per-stream credit, FIN (half-close per
 * direction), RESET, CREDIT. Sans-I/O: messages in through `handle(msg, now)`,
 * messages out through `nextMessage(maxPayload)` (pulled by the link when its window
 * has room), application calls through `TunnelStream` handles.
 *
 * Scheduling: control messages (OPEN, OPEN_OK, OPEN_FAIL, RESET) first, then CREDIT
 * updates, then DATA/FIN round-robin over the streams that can send, one frame per
 * turn; streams with at most `smallPayload` bytes queued (interactive typing) are
 * served before bulk ones. A bulk transfer therefore delays a keystroke by at most
 * the frames already handed to the link.
 *
 * Memory: per stream, send data up to `maxSendBuffer` bytes (write() returns false
 * above `sendHighWaterMark`); received data is handed to the application at once and
 * the peer can never have more than the granted credit outstanding; the control queue
 * is bounded (`canAccept()` stops the link from delivering when it is full).
 *
 * Receive-window autotuning (docs/tunnel-protocol.md 8.5): a stream's window starts at
 * `streamWindow` and doubles, up to `maxStreamWindow`, each time the peer has used all
 * its credit while the application kept up (at most a quarter of the window
 * unconsumed): the window, not the reader, was what limited the stream — a fast line
 * whose round trip outlasts a window (virtio-serial: 64 KiB per 1–2 ms). A slow reader
 * never grows its window, and all growth together stays within `windowBudget` bytes,
 * returned when the stream ends; so the bound on held bytes is streams × streamWindow
 * + windowBudget. The window never shrinks during a stream (TCP's autotuning neither).
 */
import { FrameType, Reason, STREAM_ID_AGENT_BIT, STREAM_IDS_PER_SIDE, type TunnelRole } from './constants.js';
import { TunnelError, TunnelErrorCode, TunnelStreamError } from './errors.js';
import type { LinkMessage } from './arq.js';
import { decodeOpen, decodeReason, decodeU32, encodeOpen, encodeReason, encodeU32 } from './messages.js';

/** Named stream states (docs/tunnel-protocol.md, section 8.3). */
export type TunnelStreamState = 'OPEN_SENT' | 'OPEN_RECEIVED' | 'OPEN' | 'HALF_CLOSED_LOCAL' | 'HALF_CLOSED_REMOTE' | 'RESET_WAIT' | 'CLOSED';

/** Per-stream callbacks. All are optional and run synchronously inside endpoint calls. */
export interface TunnelStreamHandlers {
  /** Opener: the peer accepted (OPEN_OK). Data written before this is sent now. */
  open?(stream: TunnelStream): void;
  /** Data from the peer, in order. Counts against credit until consume() (or at once with autoConsume). */
  data?(chunk: Uint8Array, stream: TunnelStream): void;
  /** The peer half-closed: no more data will come (FIN). */
  end?(stream: TunnelStream): void;
  /** Both directions finished cleanly; the stream id is free again. */
  close?(stream: TunnelStream): void;
  /**
   * The stream failed: refused (err.code VSPC_TUNNEL_OPEN_FAILED), reset by the peer,
   * or reset locally because of a peer violation or a peer restart
   * (VSPC_TUNNEL_STREAM_RESET). Not called for the application's own reset().
   */
  reset?(err: TunnelStreamError, stream: TunnelStream): void;
  /** write() returned false earlier and the send buffer is below the high-water mark again. */
  drain?(stream: TunnelStream): void;
}

export interface StreamOptions {
  /** Our receive window for this stream: credit granted to the peer, bytes (1..2^32-1). */
  streamWindow?: number;
  /** Treat delivered data as consumed at once (no consume() calls). */
  autoConsume?: boolean;
}

export interface MuxConfig {
  role: TunnelRole;
  /** Default per-stream receive window, bytes: where every stream starts. */
  streamWindow: number;
  /** Largest window autotuning grows a stream's to, bytes (≤ streamWindow: no autotuning). */
  maxStreamWindow: number;
  /** Autotuning's growth over all streams together, bytes. */
  windowBudget: number;
  /** write() returns false while more than this many bytes are queued, bytes. */
  sendHighWaterMark: number;
  /** write() throws VSPC_TUNNEL_BUFFER_FULL beyond this many queued bytes. */
  maxSendBuffer: number;
  /** Streams (both directions, including those being opened). */
  maxStreams: number;
  /** Ports the peer may open; undefined: any port the openRequest handler accepts. */
  allowPorts: ReadonlySet<number> | undefined;
  autoConsume: boolean;
  /** Queued bytes at or below which a stream is scheduled before bulk streams. */
  smallPayload: number;
}

export interface MuxHooks {
  /** Something may be sendable now (called after application calls). */
  kick(now: number): void;
  /** The peer asks to open a stream to `port`; call stream.accept() or stream.refuse(), now or later. */
  openRequest: ((stream: TunnelStream, port: number) => void) | undefined;
}

/** Counters of the multiplexer (monotonic). */
export interface MuxStats {
  streamsOpened: number;
  streamsAccepted: number;
  openRequests: number;
  openRefused: number;
  resetsSent: number;
  resetsReceived: number;
  dataBytesSent: number;
  dataBytesReceived: number;
  dataMessagesSent: number;
  creditsSent: number;
  /** Receive windows doubled by autotuning (each a CREDIT beyond what was consumed). */
  windowGrowths: number;
  /** Messages for streams that no longer exist (or an earlier use of the id). */
  staleMessages: number;
  /** Stream protocol violations by the peer (each resets its stream). */
  protocolViolations: number;
  /** DATA beyond granted credit (each resets its stream with FLOW_CONTROL). */
  flowControlViolations: number;
  unknownMessages: number;
}

type Phase = 'opening-local' | 'opening-remote' | 'open' | 'abandoned' | 'closed';

interface StreamRecord {
  id: number;
  port: number;
  local: boolean;
  phase: Phase;
  finPending: boolean;
  finSent: boolean;
  finReceived: boolean;
  chunks: Uint8Array[];
  headOffset: number;
  queued: number;
  sendCredit: number;
  rxWindow: number;
  /** Bytes by which autotuning enlarged rxWindow (taken from the multiplexer's budget). */
  grown: number;
  granted: number;
  received: number;
  consumed: number;
  autoConsume: boolean;
  needDrain: boolean;
  inCreditQueue: boolean;
  handlers: TunnelStreamHandlers;
  handle: TunnelStream;
}

/** Control messages the peer may make us queue before the link stops delivering. */
function controlLimit(maxStreams: number): number {
  return 2 * maxStreams + 16;
}

/** Reason codes an application may put on the wire: 1..63 (64 and up are local-only). */
function checkWireReason(code: number): void {
  if (!Number.isInteger(code) || code < 1 || code > 63) {
    throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `reason code must be 1..63, got ${code}`, { code });
  }
}

function isU32(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 0xffffffff;
}

export class Multiplexer {
  private readonly cfg: MuxConfig;
  private readonly hooks: MuxHooks;
  private readonly streams = new Map<number, StreamRecord>();
  /** Σ grown over the streams: autotuning's share of windowBudget in use. */
  private grownTotal = 0;
  /** Scheduling order (round-robin ring) and cursor. */
  private order: StreamRecord[] = [];
  private cursor = 0;
  private control: LinkMessage[] = [];
  private creditQueue: StreamRecord[] = [];
  private nextId = 1;
  private readonly ownBit: number;
  readonly stats: MuxStats = {
    streamsOpened: 0,
    streamsAccepted: 0,
    openRequests: 0,
    openRefused: 0,
    resetsSent: 0,
    resetsReceived: 0,
    dataBytesSent: 0,
    dataBytesReceived: 0,
    dataMessagesSent: 0,
    creditsSent: 0,
    windowGrowths: 0,
    staleMessages: 0,
    protocolViolations: 0,
    flowControlViolations: 0,
    unknownMessages: 0,
  };

  constructor(cfg: MuxConfig, hooks: MuxHooks) {
    this.cfg = cfg;
    this.hooks = hooks;
    this.ownBit = cfg.role === 'host' ? 0 : STREAM_ID_AGENT_BIT;
  }

  /** Streams that hold an id (every state but CLOSED). */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Handles of the streams that hold an id. */
  listStreams(): TunnelStream[] {
    return [...this.streams.values()].map((r) => r.handle);
  }

  /** Bytes autotuning has added to receive windows, over the streams open now (≤ windowBudget). */
  get windowGrowth(): number {
    return this.grownTotal;
  }

  /** Control messages waiting to be sent. */
  get controlQueued(): number {
    return this.control.length;
  }

  canAccept(): boolean {
    return this.control.length < controlLimit(this.cfg.maxStreams);
  }

  /** True when nextMessage() would return something. */
  hasPending(): boolean {
    if (this.control.length > 0) return true;
    for (const r of this.creditQueue) if (this.creditIncrement(r) > 0) return true;
    for (const r of this.order) if (this.sendable(r)) return true;
    return false;
  }

  // ---------------------------------------------------------------- application side

  /** Opens a stream to `port` on the peer. Throws VSPC_TUNNEL_TOO_MANY_STREAMS or VSPC_TUNNEL_BAD_ARGUMENT. */
  open(port: number, handlers: TunnelStreamHandlers, opts: StreamOptions, now: number): TunnelStream {
    if (!Number.isInteger(port) || port < 1 || port > 0xffff) {
      throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `port must be 1..65535, got ${port}`, { port });
    }
    const window = opts.streamWindow ?? this.cfg.streamWindow;
    if (!isU32(window)) throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `streamWindow must be 1..2^32-1, got ${window}`, { window });
    const id = this.allocateId();
    const r = this.record(id, port, true, 'opening-local', window, opts.autoConsume ?? this.cfg.autoConsume, handlers);
    this.control.push({ type: FrameType.OPEN, stream: id, payload: encodeOpen({ port, credit: window }) });
    this.stats.streamsOpened++;
    this.hooks.kick(now);
    return r.handle;
  }

  private allocateId(): number {
    if (this.streams.size >= this.cfg.maxStreams) {
      throw new TunnelError(TunnelErrorCode.TOO_MANY_STREAMS, `${this.streams.size} streams open (maxStreams ${this.cfg.maxStreams})`, {
        maxStreams: this.cfg.maxStreams,
      });
    }
    for (let k = 0; k < STREAM_IDS_PER_SIDE; k++) {
      const id = this.ownBit | this.nextId;
      this.nextId = (this.nextId % STREAM_IDS_PER_SIDE) + 1;
      if (!this.streams.has(id)) return id;
    }
    throw new TunnelError(TunnelErrorCode.TOO_MANY_STREAMS, 'every stream id of our partition is in use', {});
  }

  private record(id: number, port: number, local: boolean, phase: Phase, window: number, autoConsume: boolean, handlers: TunnelStreamHandlers): StreamRecord {
    const r: StreamRecord = {
      id,
      port,
      local,
      phase,
      finPending: false,
      finSent: false,
      finReceived: false,
      chunks: [],
      headOffset: 0,
      queued: 0,
      sendCredit: 0,
      rxWindow: window,
      grown: 0,
      granted: window,
      received: 0,
      consumed: 0,
      autoConsume,
      needDrain: false,
      inCreditQueue: false,
      handlers,
      handle: undefined as unknown as TunnelStream,
    };
    r.handle = new TunnelStream(this, r);
    this.streams.set(id, r);
    this.order.push(r);
    return r;
  }

  /** @internal */
  write(r: StreamRecord, data: Uint8Array, now: number): boolean {
    if (r.phase === 'closed' || r.phase === 'abandoned') {
      throw new TunnelError(TunnelErrorCode.STREAM_CLOSED, `stream ${r.id} is closed`, { stream: r.id });
    }
    if (r.finPending || r.finSent) {
      throw new TunnelError(TunnelErrorCode.STREAM_ENDED, `write after end on stream ${r.id}`, { stream: r.id });
    }
    if (data.length > 0) {
      if (r.queued + data.length > this.cfg.maxSendBuffer) {
        throw new TunnelError(TunnelErrorCode.BUFFER_FULL, `stream ${r.id}: ${r.queued} bytes queued, write of ${data.length} exceeds ${this.cfg.maxSendBuffer}`, {
          stream: r.id,
          queued: r.queued,
        });
      }
      r.chunks.push(data.slice());
      r.queued += data.length;
      this.hooks.kick(now);
    }
    const ok = r.queued < this.cfg.sendHighWaterMark;
    if (!ok) r.needDrain = true;
    return ok;
  }

  /** @internal */
  end(r: StreamRecord, now: number): void {
    if (r.phase === 'closed' || r.phase === 'abandoned' || r.finPending || r.finSent) return;
    r.finPending = true;
    this.hooks.kick(now);
  }

  /** @internal */
  reset(r: StreamRecord, code: number, text: string, now: number): void {
    checkWireReason(code);
    if (r.phase === 'closed' || r.phase === 'abandoned') return;
    if (r.phase === 'opening-remote') {
      this.refuse(r, code, text, now);
      return;
    }
    this.control.push({ type: FrameType.RESET, stream: r.id, payload: encodeReason({ code, text }) });
    this.stats.resetsSent++;
    this.dropSendQueue(r);
    if (r.phase === 'opening-local') {
      // Keep the id until the peer answers the OPEN (spec 8.4): its answer is still coming.
      r.phase = 'abandoned';
      this.unschedule(r);
    } else {
      this.release(r);
    }
    this.hooks.kick(now);
  }

  /** @internal */
  accept(r: StreamRecord, handlers: TunnelStreamHandlers | undefined, opts: StreamOptions, now: number): void {
    if (r.phase !== 'opening-remote') {
      throw new TunnelError(TunnelErrorCode.STREAM_STATE, `stream ${r.id} is not waiting to be accepted`, { stream: r.id, state: r.handle.state });
    }
    if (handlers) r.handlers = handlers;
    if (opts.autoConsume !== undefined) r.autoConsume = opts.autoConsume;
    if (opts.streamWindow !== undefined) {
      if (!isU32(opts.streamWindow)) throw new TunnelError(TunnelErrorCode.BAD_ARGUMENT, `streamWindow must be 1..2^32-1`, { window: opts.streamWindow });
      r.rxWindow = r.granted = opts.streamWindow;
    }
    r.phase = 'open';
    this.control.push({ type: FrameType.OPEN_OK, stream: r.id, payload: encodeU32(r.rxWindow) });
    this.stats.streamsAccepted++;
    this.hooks.kick(now);
  }

  /** @internal */
  refuse(r: StreamRecord, code: number, text: string, now: number): void {
    checkWireReason(code);
    if (r.phase !== 'opening-remote') {
      throw new TunnelError(TunnelErrorCode.STREAM_STATE, `stream ${r.id} is not waiting to be accepted`, { stream: r.id, state: r.handle.state });
    }
    this.control.push({ type: FrameType.OPEN_FAIL, stream: r.id, payload: encodeReason({ code, text }) });
    this.stats.openRefused++;
    this.dropSendQueue(r);
    this.release(r);
    this.hooks.kick(now);
  }

  /** @internal */
  consume(r: StreamRecord, n: number, now: number): void {
    if (!Number.isInteger(n) || n < 0 || r.consumed + n > r.received) {
      throw new TunnelError(TunnelErrorCode.STREAM_STATE, `stream ${r.id}: consume(${n}) with ${r.received - r.consumed} bytes unconsumed`, {
        stream: r.id,
      });
    }
    r.consumed += n;
    if (this.queueCredit(r)) this.hooks.kick(now);
  }

  /** Queues a CREDIT when at least a quarter of the window can be granted again. */
  private queueCredit(r: StreamRecord): boolean {
    if (r.inCreditQueue || r.phase !== 'open' || r.finReceived) return false;
    if (this.creditIncrement(r) < Math.max(1, Math.floor(r.rxWindow / 4))) return false;
    r.inCreditQueue = true;
    this.creditQueue.push(r);
    return true;
  }

  /**
   * Autotuning (see the file comment): the peer just used its last byte of credit;
   * if the application kept up, double the window within maxStreamWindow and what is
   * left of windowBudget. True if it grew.
   */
  private grow(r: StreamRecord): boolean {
    if (r.phase !== 'open' || r.finReceived) return false;
    if (r.received - r.consumed > r.rxWindow / 4) return false;
    const by = Math.min(r.rxWindow, this.cfg.maxStreamWindow - r.rxWindow, this.cfg.windowBudget - this.grownTotal);
    // Less than a quarter more would only add a CREDIT message per grant.
    if (by < r.rxWindow / 4) return false;
    r.rxWindow += by;
    r.grown += by;
    this.grownTotal += by;
    this.stats.windowGrowths++;
    return true;
  }

  private creditIncrement(r: StreamRecord): number {
    if (r.phase !== 'open' || r.finReceived) return 0;
    return r.consumed + r.rxWindow - r.granted;
  }

  /** @internal */
  getState(r: StreamRecord): TunnelStreamState {
    switch (r.phase) {
      case 'opening-local':
        return 'OPEN_SENT';
      case 'opening-remote':
        return 'OPEN_RECEIVED';
      case 'abandoned':
        return 'RESET_WAIT';
      case 'closed':
        return 'CLOSED';
      default:
        if (r.finSent) return r.finReceived ? 'CLOSED' : 'HALF_CLOSED_LOCAL';
        return r.finReceived ? 'HALF_CLOSED_REMOTE' : 'OPEN';
    }
  }

  // ---------------------------------------------------------------- send side

  /**
   * The next message to send, payload at most `maxPayload` bytes (>= 64), or undefined.
   * `urgentOnly`: only what is small and latency-sensitive — control messages, credit
   * updates, and DATA/FIN of interactive streams (at most `smallPayload` bytes queued) —
   * which the link sends even when its delay budget is used up by bulk frames.
   */
  nextMessage(maxPayload: number, urgentOnly = false): LinkMessage | undefined {
    const c = this.control.shift();
    if (c !== undefined) return c;
    while (this.creditQueue.length > 0) {
      const r = this.creditQueue.shift()!;
      r.inCreditQueue = false;
      const inc = this.creditIncrement(r);
      if (inc <= 0) continue;
      r.granted += inc;
      this.stats.creditsSent++;
      return { type: FrameType.CREDIT, stream: r.id, payload: encodeU32(inc) };
    }
    const r = this.pick(urgentOnly);
    if (r === undefined) return undefined;
    if (r.queued > 0) {
      const n = Math.min(r.queued, r.sendCredit, maxPayload);
      const payload = this.take(r, n);
      r.sendCredit -= n;
      this.stats.dataBytesSent += n;
      this.stats.dataMessagesSent++;
      if (r.needDrain && r.queued < this.cfg.sendHighWaterMark) {
        r.needDrain = false;
        r.handlers.drain?.(r.handle);
      }
      return { type: FrameType.DATA, stream: r.id, payload };
    }
    r.finPending = false;
    r.finSent = true;
    const msg: LinkMessage = { type: FrameType.FIN, stream: r.id, payload: new Uint8Array(0) };
    this.maybeClosed(r);
    return msg;
  }

  private sendable(r: StreamRecord): boolean {
    if (r.phase !== 'open' || r.finSent) return false;
    return r.queued > 0 ? r.sendCredit > 0 : r.finPending;
  }

  /** Round-robin, one frame per turn; small queues (interactive) first. */
  private pick(smallOnly = false): StreamRecord | undefined {
    const n = this.order.length;
    if (n === 0) return undefined;
    let fallback = -1;
    for (let k = 0; k < n; k++) {
      const idx = (this.cursor + k) % n;
      const r = this.order[idx];
      if (!this.sendable(r)) continue;
      if (r.queued <= this.cfg.smallPayload) {
        this.cursor = (idx + 1) % n;
        return r;
      }
      if (fallback < 0) fallback = idx;
    }
    if (fallback < 0 || smallOnly) return undefined;
    this.cursor = (fallback + 1) % n;
    return this.order[fallback];
  }

  private take(r: StreamRecord, n: number): Uint8Array {
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const c = r.chunks[0];
      const k = Math.min(c.length - r.headOffset, n - o);
      out.set(c.subarray(r.headOffset, r.headOffset + k), o);
      o += k;
      r.headOffset += k;
      if (r.headOffset === c.length) {
        r.chunks.shift();
        r.headOffset = 0;
      }
    }
    r.queued -= n;
    return out;
  }

  // ---------------------------------------------------------------- receive side

  /** One in-order message from the peer. */
  handle(m: LinkMessage, now: number): void {
    switch (m.type) {
      case FrameType.OPEN:
        this.onOpen(m);
        return;
      case FrameType.OPEN_OK:
      case FrameType.OPEN_FAIL:
        this.onAnswer(m);
        return;
      case FrameType.DATA:
      case FrameType.FIN:
      case FrameType.RESET:
      case FrameType.CREDIT:
        this.onStreamMessage(m, now);
        return;
      default:
        this.stats.unknownMessages++;
    }
  }

  private isPeerId(id: number): boolean {
    return (id & STREAM_ID_AGENT_BIT) !== this.ownBit && (id & 0x7fff) !== 0;
  }

  private onOpen(m: LinkMessage): void {
    const id = m.stream;
    const body = decodeOpen(m.payload);
    if (!this.isPeerId(id) || body === undefined || body.port === 0 || body.credit === 0) {
      this.stats.protocolViolations++;
      this.control.push({ type: FrameType.OPEN_FAIL, stream: id, payload: encodeReason({ code: Reason.PROTOCOL, text: 'bad OPEN' }) });
      return;
    }
    this.stats.openRequests++;
    const existing = this.streams.get(id);
    if (existing !== undefined) {
      // The peer reuses an id we still hold: its old stream is gone on its side. Close
      // ours without a RESET (which would hit the new stream) and refuse the new one.
      this.stats.protocolViolations++;
      this.fail(existing, Reason.PROTOCOL, false, 'stream id reused while open');
      this.control.push({ type: FrameType.OPEN_FAIL, stream: id, payload: encodeReason({ code: Reason.PROTOCOL, text: 'stream id in use' }) });
      return;
    }
    const refuse = (code: number, text: string): void => {
      this.stats.openRefused++;
      this.control.push({ type: FrameType.OPEN_FAIL, stream: id, payload: encodeReason({ code, text }) });
    };
    if (this.streams.size >= this.cfg.maxStreams) return refuse(Reason.NO_RESOURCES, 'too many streams');
    if (this.cfg.allowPorts !== undefined && !this.cfg.allowPorts.has(body.port)) return refuse(Reason.NOT_ALLOWED, `port ${body.port} not allowed`);
    const handler = this.hooks.openRequest;
    if (handler === undefined) return refuse(Reason.NOT_ALLOWED, 'opening streams not allowed');
    const r = this.record(id, body.port, false, 'opening-remote', this.cfg.streamWindow, this.cfg.autoConsume, {});
    r.sendCredit = body.credit;
    handler(r.handle, body.port);
  }

  private onAnswer(m: LinkMessage): void {
    const r = this.streams.get(m.stream);
    if (r === undefined || !r.local || (r.phase !== 'opening-local' && r.phase !== 'abandoned')) {
      this.stats.staleMessages++;
      return;
    }
    if (r.phase === 'abandoned') {
      this.release(r); // the answer to an OPEN we already reset: the id is free now
      return;
    }
    if (m.type === FrameType.OPEN_OK) {
      const credit = decodeU32(m.payload);
      if (credit === undefined) {
        this.violation(r, 'bad OPEN_OK');
        return;
      }
      r.sendCredit = credit;
      r.phase = 'open';
      r.handlers.open?.(r.handle);
      return;
    }
    const reason = decodeReason(m.payload) ?? { code: Reason.PROTOCOL, text: '' };
    this.dropSendQueue(r);
    this.release(r);
    r.handlers.reset?.(new TunnelStreamError(TunnelErrorCode.OPEN_FAILED, reason.code, true, reason.text, { stream: r.id, port: r.port }), r.handle);
  }

  private onStreamMessage(m: LinkMessage, now: number): void {
    const r = this.streams.get(m.stream);
    // Unknown id, or an id we are (re)opening: a message from an earlier use of the id
    // that crossed our close (spec 8.4). Drop it.
    if (r === undefined || r.phase === 'opening-local' || r.phase === 'abandoned') {
      this.stats.staleMessages++;
      return;
    }
    if (r.phase === 'opening-remote' && m.type !== FrameType.RESET) {
      this.violation(r, 'message before OPEN_OK');
      return;
    }
    switch (m.type) {
      case FrameType.DATA: {
        if (r.finReceived) return this.violation(r, 'DATA after FIN');
        const n = m.payload.length;
        if (n === 0) return this.violation(r, 'empty DATA');
        if (r.received + n > r.granted) {
          this.stats.flowControlViolations++;
          this.resetLocal(r, Reason.FLOW_CONTROL, `DATA beyond credit (${r.received + n - r.granted} bytes over)`);
          return;
        }
        r.received += n;
        this.stats.dataBytesReceived += n;
        if (r.autoConsume) r.consumed += n;
        r.handlers.data?.(m.payload, r.handle);
        if (this.streams.get(r.id) !== r) return;
        if (r.received === r.granted && this.grow(r)) {
          if (this.queueCredit(r)) this.hooks.kick(now);
        } else if (r.autoConsume) this.queueCredit(r);
        return;
      }
      case FrameType.FIN:
        if (r.finReceived) return this.violation(r, 'second FIN');
        r.finReceived = true;
        r.handlers.end?.(r.handle);
        if (this.streams.get(r.id) === r) this.maybeClosed(r);
        return;
      case FrameType.RESET: {
        const reason = decodeReason(m.payload) ?? { code: Reason.PROTOCOL, text: '' };
        this.stats.resetsReceived++;
        if (r.phase === 'opening-remote') {
          // The opener gave up before our answer; it still waits for one (spec 8.4).
          this.control.push({ type: FrameType.OPEN_FAIL, stream: r.id, payload: encodeReason({ code: Reason.CANCELLED, text: '' }) });
          this.hooks.kick(now);
        }
        this.fail(r, reason.code, true, reason.text);
        return;
      }
      case FrameType.CREDIT: {
        const inc = decodeU32(m.payload);
        if (inc === undefined || inc === 0) return this.violation(r, 'bad CREDIT');
        if (r.finSent) return; // late credit for a direction we finished: harmless
        r.sendCredit += inc;
        if (r.sendCredit > 0xffffffff) return this.violation(r, 'credit above 2^32-1');
        return;
      }
    }
  }

  private violation(r: StreamRecord, text: string): void {
    this.stats.protocolViolations++;
    this.resetLocal(r, Reason.PROTOCOL, text);
  }

  /** We reset a stream because of the peer: tell the peer and the application. */
  private resetLocal(r: StreamRecord, code: number, text: string): void {
    if (r.phase === 'opening-remote') {
      this.control.push({ type: FrameType.OPEN_FAIL, stream: r.id, payload: encodeReason({ code, text }) });
    } else {
      this.control.push({ type: FrameType.RESET, stream: r.id, payload: encodeReason({ code, text }) });
      this.stats.resetsSent++;
    }
    this.fail(r, code, false, text);
  }

  /** Closes a stream without sending anything and reports it to the application. */
  private fail(r: StreamRecord, code: number, remote: boolean, text: string): void {
    this.dropSendQueue(r);
    this.release(r);
    r.handlers.reset?.(new TunnelStreamError(TunnelErrorCode.STREAM_RESET, code, remote, text, { stream: r.id, port: r.port }), r.handle);
  }

  private maybeClosed(r: StreamRecord): void {
    if (r.finSent && r.finReceived && r.phase === 'open') {
      this.release(r);
      r.handlers.close?.(r.handle);
    }
  }

  private dropSendQueue(r: StreamRecord): void {
    r.chunks = [];
    r.headOffset = 0;
    r.queued = 0;
    r.finPending = false;
    r.needDrain = false;
  }

  private unschedule(r: StreamRecord): void {
    const idx = this.order.indexOf(r);
    if (idx >= 0) {
      this.order.splice(idx, 1);
      if (this.cursor > idx) this.cursor--;
      if (this.cursor >= this.order.length) this.cursor = 0;
    }
  }

  private release(r: StreamRecord): void {
    r.phase = 'closed';
    this.grownTotal -= r.grown;
    r.grown = 0;
    this.unschedule(r);
    if (this.streams.get(r.id) === r) this.streams.delete(r.id);
  }

  /**
   * Drops every stream (the session is gone) and reports `code` (local) to each.
   * Queued messages are discarded; handlers may open new streams from their callbacks.
   */
  resetAll(code: number, text: string): number {
    const all = [...this.streams.values()];
    this.control = [];
    this.creditQueue = [];
    for (const r of all) {
      this.dropSendQueue(r);
      this.release(r);
    }
    for (const r of all) {
      r.handlers.reset?.(new TunnelStreamError(TunnelErrorCode.STREAM_RESET, code, false, text, { stream: r.id, port: r.port }), r.handle);
    }
    return all.length;
  }

  /** @internal */
  info(r: StreamRecord): { queued: number; sendCredit: number; unconsumed: number; received: number; granted: number; window: number } {
    return { queued: r.queued, sendCredit: r.sendCredit, unconsumed: r.received - r.consumed, received: r.received, granted: r.granted, window: r.rxWindow };
  }
}

/**
 * Application handle of one stream. Methods take `now` (ms, same clock as the
 * endpoint) because they may transmit at once. Errors: TunnelError with
 * VSPC_TUNNEL_STREAM_CLOSED, _STREAM_ENDED, _BUFFER_FULL, _STREAM_STATE.
 */
export class TunnelStream {
  /** @internal */
  constructor(
    private readonly mux: Multiplexer,
    private readonly rec: StreamRecord,
  ) {}

  /** Stream id (u16): 0x0001–0x7FFF opened by the host, 0x8001–0xFFFF by the agent. */
  get id(): number {
    return this.rec.id;
  }
  /** Target port named in the OPEN. */
  get port(): number {
    return this.rec.port;
  }
  /** True when this side opened the stream. */
  get initiatedLocally(): boolean {
    return this.rec.local;
  }
  get state(): TunnelStreamState {
    return this.mux.getState(this.rec);
  }
  /** Bytes written but not yet handed to the link. */
  get bufferedAmount(): number {
    return this.rec.queued;
  }
  /** Bytes we may still send before the peer grants more. */
  get sendCredit(): number {
    return this.rec.sendCredit;
  }
  /** Bytes delivered to the data handler and not consumed yet. */
  get unconsumed(): number {
    return this.rec.received - this.rec.consumed;
  }
  /** Total bytes we allowed the peer to send so far (initial window + CREDITs). */
  get grantedTotal(): number {
    return this.rec.granted;
  }
  /** Total bytes received on this stream. */
  get receivedTotal(): number {
    return this.rec.received;
  }

  /** Replaces the callbacks. */
  setHandlers(h: TunnelStreamHandlers): void {
    this.rec.handlers = h;
  }

  /**
   * Queues data (copied). Returns false once `sendHighWaterMark` bytes are queued;
   * wait for the drain handler. Allowed before the stream is open (sent after OPEN_OK).
   */
  write(data: Uint8Array, now: number): boolean {
    return this.mux.write(this.rec, data, now);
  }

  /** Half-closes our direction: FIN goes out after the queued data. Idempotent. */
  end(now: number): void {
    this.mux.end(this.rec, now);
  }

  /** Aborts the stream: queued data is dropped, RESET(code) goes out. Idempotent. */
  reset(now: number, code: number = Reason.ABORTED, text = ''): void {
    this.mux.reset(this.rec, code, text, now);
  }

  /** Marks `n` delivered bytes as consumed, so credit can be granted again. */
  consume(n: number, now: number): void {
    this.mux.consume(this.rec, n, now);
  }

  /** Acceptor: accepts an OPEN (sends OPEN_OK). Throws VSPC_TUNNEL_STREAM_STATE when not in OPEN_RECEIVED. */
  accept(now: number, handlers?: TunnelStreamHandlers, opts: StreamOptions = {}): void {
    this.mux.accept(this.rec, handlers, opts, now);
  }

  /** Acceptor: refuses an OPEN (sends OPEN_FAIL(code)). Throws VSPC_TUNNEL_STREAM_STATE when not in OPEN_RECEIVED. */
  refuse(now: number, code: number = Reason.REFUSED, text = ''): void {
    this.mux.refuse(this.rec, code, text, now);
  }
}
