import type { Duplex } from 'node:stream';
import type { Logger } from '../../domain/logger.js';
import type { ConsoleClient } from '../../domain/seams.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { LockDecision } from '../../domain/locks.js';
import { allocateClientId } from '../../domain/client-ids.js';
import { errorFields } from '../../errors.js';
import { InputAfterClose } from '../../util/input-after-close.js';


export interface StreamClientOptions {
  /** Bytes queued to a client that does not read (read on every write: a reload applies at once). */
  readonly maxQueuedBytes: number;
  readonly closeGraceMs: number;
  /** Close a client that has sent nothing for this long (0 = never). */
  readonly idleTimeoutMs: number;
  /** Called when a client is cut off (or, for `drop`, starts losing output) for not reading (metrics). */
  onSlowClientDropped?(): void;
}

/** What the access method says about one client. */
export interface StreamClientInfo {
  /** `raw`, `unix`, `pty`. */
  readonly method: string;
  readonly peer: string;
  readonly origin?: ConsoleClient['origin'];
  /**
   * Past `maxQueuedBytes`: `disconnect` the client (a socket: it reconnects when it can
   * keep up), or `drop` the output until the queue shrinks (a pty, which cannot be
   * disconnected: like a serial line without flow control, it loses what it could not take).
   */
  readonly whenTooSlow: 'disconnect' | 'drop';
  /** false: vspc closes the stream at once rather than with a FIN (a pty has no half-close). Default true. */
  readonly halfClose?: boolean;
  /** The stream ended: closed by its peer (`peer`), or by vspc (`vspc`: kicked, forgotten, shut down, refused). */
  onEnd?(how: 'peer' | 'vspc'): void;
}

/**
 * A console client that gets exactly the console's bytes, both ways: no negotiation, no
 * CR NUL rewriting, no notices, no greeting, no scrollback replay (a program reading a
 * raw stream cannot tell replayed bytes from new ones: a script waiting for `login:`
 * would match a prompt from an hour ago). It gets the console's default lock mode. The
 * transport is any duplex stream: a TCP or unix socket, a pty master.
 *
 *   connected ──attach (default lock)──granted──▶ attached ──peer closed / kicked / too slow / idle──▶ closed
 *                   └────────────────refused──▶ closed (nothing said: a raw stream has no place for it)
 */
export class StreamClient implements ConsoleClient {
  readonly id = allocateClientId();
  readonly connectedAt = Date.now();
  readonly secure = false;
  private state: 'new' | 'attached' | 'closed' = 'new';
  private log: Logger;
  private closeTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastInputAt = Date.now();
  private dropping = false;
  /** Input after vspc ended the stream: discarded, then no longer read (util/input-after-close.ts). */
  private readonly afterClose = new InputAfterClose();
  /** Output bytes dropped because the client did not read them (`drop`). */
  droppedBytes = 0;

  constructor(
    private readonly stream: Duplex,
    private readonly hub: ConsoleHub,
    logger: Logger,
    private readonly options: StreamClientOptions,
    private readonly info: StreamClientInfo,
  ) {
    this.log = logger.child({ client: this.id, peer: info.peer, side: 'client', vm: hub.displayName, method: info.method });
    stream.on('data', (chunk: Buffer) => this.receive(chunk));
    stream.on('error', (err: NodeJS.ErrnoException) => {
      // A pty master reads EIO when the last reader closes the slave: the normal end.
      if (err.code === 'EIO') this.log.debug('client stream ended (EIO)');
      else this.log.info('client stream error', errorFields(err));
    });
    stream.on('close', () => this.onStreamClosed());
  }

  get method(): string {
    return this.info.method;
  }

  get peer(): string {
    return this.info.peer;
  }

  get origin(): ConsoleClient['origin'] {
    return this.info.origin;
  }

  /** The lock mode held, once attached. */
  get mode(): string | undefined {
    return this.hub.modeOf(this);
  }

  get attached(): boolean {
    return this.state === 'attached';
  }

  /** Attach with the console's default lock mode; a refusal closes the stream. */
  attach(): LockDecision {
    const decision = this.hub.addClient(this, { replay: false });
    if (!decision.granted) {
      this.log.info('lock refused; closing (a raw client cannot be told why)', { reason: decision.reason });
      this.finish(decision.reason);
      return decision;
    }
    if (this.state === 'closed') return decision; // closed while attaching (displaced peers' callbacks)
    this.state = 'attached';
    this.log = this.log.child({ mode: decision.mode });
    this.log.debug('client attached', { clients: this.hub.clients.size });
    if (this.options.idleTimeoutMs > 0) this.armIdle();
    return decision;
  }

  // --- ConsoleClient

  deliver(data: Buffer): void {
    if (this.state === 'closed') return;
    const limit = this.options.maxQueuedBytes;
    if (this.info.whenTooSlow === 'drop') {
      if (this.stream.writableLength + data.length > limit) {
        if (!this.dropping) {
          this.dropping = true;
          this.log.warn('client does not keep up; dropping its output until it does', { queued: this.stream.writableLength, limit });
          this.options.onSlowClientDropped?.();
        }
        this.droppedBytes += data.length;
        return;
      }
      this.dropping = false;
      this.stream.write(data);
      return;
    }
    this.stream.write(data);
    if (this.stream.writableLength > limit) {
      this.log.warn('client too slow; disconnecting', { queued: this.stream.writableLength, limit });
      this.options.onSlowClientDropped?.();
      this.destroy('too slow: output queue over the limit');
    }
  }

  /** Raw clients get no text that is not the console's. */
  notice(text: string): void {
    this.log.debug('notice not sent to a raw client', { notice: text });
  }

  pauseInput(): void {
    this.stream.pause();
  }

  resumeInput(): void {
    if (this.state !== 'closed') this.stream.resume();
  }

  /** FIN after what is queued; destroyed if the peer lingers. Idempotent. */
  close(reason: string): void {
    this.finish(reason);
  }

  destroy(reason = 'aborted'): void {
    if (this.state === 'closed' && this.stream.destroyed) return;
    const first = this.state !== 'closed';
    this.state = 'closed';
    this.clearTimers();
    this.hub.removeClient(this, reason);
    this.stream.destroy();
    if (first) this.info.onEnd?.('vspc');
  }

  // --- internals

  private finish(reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    this.log.debug('closing client', { reason });
    this.hub.removeClient(this, reason);
    if (this.info.halfClose === false) {
      this.stream.destroy();
    } else {
      this.stream.end();
      this.closeTimer = setTimeout(() => this.stream.destroy(), this.options.closeGraceMs);
      this.closeTimer.unref();
    }
    this.info.onEnd?.('vspc');
  }

  private receive(chunk: Buffer): void {
    this.lastInputAt = Date.now();
    if (this.state === 'closed') {
      // Ended by vspc, it keeps sending: discarded, and past a bound no longer read.
      this.afterClose.discard(chunk.length, this.stream, this.log, 'client');
      return;
    }
    if (this.state !== 'attached') return;
    try {
      this.hub.fromClient(this, chunk);
    } catch (err) {
      // Whatever goes wrong with one client's input closes that client only.
      this.log.error('internal error while handling client input; closing this client', { ...errorFields(err), stack: (err as Error).stack });
      this.destroy('internal error');
    }
  }

  private onStreamClosed(): void {
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.clearTimers();
    this.hub.removeClient(this, 'connection closed');
    if (this.droppedBytes > 0) this.log.info('client gone; output dropped while it did not keep up', { droppedBytes: this.droppedBytes });
    this.info.onEnd?.('peer');
  }

  /** One timer per client, re-armed lazily: no timer work per keystroke. */
  private armIdle(): void {
    const ms = this.options.idleTimeoutMs;
    const wait = Math.max(0, this.lastInputAt + ms - Date.now());
    this.idleTimer = setTimeout(() => {
      if (this.state !== 'attached') return;
      if (Date.now() - this.lastInputAt >= ms) this.close(`idle for ${Math.round(ms / 1000)} s`);
      else this.armIdle();
    }, wait);
    this.idleTimer.unref();
  }

  private clearTimers(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}
