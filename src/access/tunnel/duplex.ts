/**
 * One tunnel stream as a Node Duplex, so that whatever carries it to a person — a
 * forward's TCP or unix socket, the admin API's upgraded connection (`vspc-admin
 * tunnel`), an SSH channel — is wired with `pipe()` and gets backpressure both ways:
 *
 * - towards the guest: `_write` hands a chunk to the stream and completes at once
 *   while the stream's send buffer is under its high-water mark, else on the stream's
 *   drain; the writer (a socket piped in) is paused meanwhile;
 * - from the guest: data is pushed to the readable side and *consumed* (credit granted
 *   to the agent again) only while the readable buffer has room, else when `_read`
 *   asks for more. The agent can therefore never have more than the stream window
 *   outstanding beyond what the reader has taken: bounded memory per stream.
 *
 * FIN ↔ end() both ways (half-close kept, `allowHalfOpen`), RESET ↔ destroy(err): a
 * reset by the guest destroys the duplex with a TunnelStreamError, destroying the
 * duplex resets the stream (ABORTED). `opened` tells whether the guest accepted the
 * OPEN (its service answered the dial).
 *
 * Stream calls are allowed inside endpoint callbacks (the handlers below run there);
 * after calls from outside, `touch()` lets the owner re-arm its timer.
 */
import { Duplex } from 'node:stream';
import { Reason, TunnelStreamError, type TunnelStream, type TunnelStreamHandlers } from '../../protocol/tunnel/index.js';

export interface TunnelDuplexHooks {
  /** The monotonic clock of the endpoint (ms). */
  now(): number;
  /** Called after a stream call made outside the endpoint's callbacks (re-arm the timer). */
  touch(): void;
}

/** Readable buffer before consumption (credit) is held back, bytes. */
const READ_HIGH_WATER_MARK = 64 * 1024;

export class TunnelDuplex extends Duplex {
  private stream: TunnelStream | null = null;
  private writeCallback: ((err?: Error | null) => void) | null = null;
  /** Bytes pushed to the readable side and not consumed yet (credit not granted back). */
  private held = 0;
  private streamDone = false;
  /** The guest accepted the OPEN. */
  opened = false;
  readonly openedAt: number;

  constructor(
    readonly port: number,
    private readonly hooks: TunnelDuplexHooks,
  ) {
    super({ allowHalfOpen: true, readableHighWaterMark: READ_HIGH_WATER_MARK, writableHighWaterMark: 16 * 1024 });
    this.openedAt = hooks.now();
  }

  /** The handlers to give `openStream`; then `attach(stream)` with what it returned. */
  handlers(): TunnelStreamHandlers {
    return {
      open: () => {
        this.opened = true;
        this.emit('tunnel-open');
      },
      data: (chunk) => this.onData(chunk),
      end: () => {
        this.push(null);
      },
      close: () => {
        this.streamDone = true;
      },
      reset: (err) => {
        this.streamDone = true;
        this.destroy(err);
      },
      drain: () => this.releaseWrite(),
    };
  }

  attach(stream: TunnelStream): void {
    this.stream = stream;
  }

  /** The stream id, once attached (for logs). */
  get streamId(): number | undefined {
    return this.stream?.id;
  }

  /**
   * Ends the stream abortively from our side with `code` on the wire and `err` for the
   * reader (open timeout, link given up, shutdown).
   */
  abort(code: number, err: Error): void {
    if (!this.streamDone && this.stream) {
      this.streamDone = true;
      this.stream.reset(this.hooks.now(), code, err.message.slice(0, 60));
    }
    this.destroy(err);
  }

  private onData(chunk: Uint8Array): void {
    this.held += chunk.length;
    if (this.push(Buffer.from(chunk))) this.consumeHeld();
  }

  private consumeHeld(): void {
    const s = this.stream;
    if (!s || this.held === 0) return;
    const n = Math.min(this.held, s.unconsumed);
    this.held = 0;
    if (n > 0) s.consume(n, this.hooks.now());
  }

  private releaseWrite(): void {
    const cb = this.writeCallback;
    this.writeCallback = null;
    cb?.();
  }

  override _read(): void {
    if (this.held > 0) {
      this.consumeHeld();
      this.hooks.touch();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const s = this.stream;
    if (!s || this.streamDone) {
      cb(new TunnelStreamError('VSPC_TUNNEL_STREAM_RESET', Reason.ABORTED, false, 'the tunnel stream is over'));
      return;
    }
    let ok: boolean;
    try {
      ok = s.write(chunk, this.hooks.now());
    } catch (err) {
      cb(err as Error);
      return;
    }
    this.hooks.touch();
    if (ok) cb();
    else this.writeCallback = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.stream && !this.streamDone) {
      this.stream.end(this.hooks.now());
      this.hooks.touch();
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const s = this.stream;
    if (s && !this.streamDone) {
      this.streamDone = true;
      // Abandoned by the reader (its socket reset, closed without a FIN, ...): RESET(ABORTED).
      s.reset(this.hooks.now(), Reason.ABORTED);
      this.hooks.touch();
    }
    const pending = this.writeCallback;
    this.writeCallback = null;
    pending?.(err ?? new Error('destroyed'));
    cb(err);
  }
}
