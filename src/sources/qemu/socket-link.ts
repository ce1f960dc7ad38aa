/**
 * A Link over one stream socket (unix or TCP), and the dialer shared by the `unix:`,
 * `tcp:` and `telnet:` sources. Raw bytes: what the socket delivers goes to the sink
 * as it is (no copy, no queue); input is written as it is. `TelnetLink` overrides the
 * two codec hooks.
 *
 * Failure containment (as in sources/esxi): an exception while handling the peer's
 * bytes (a bug, an observer failing) costs this link only: logged, link destroyed,
 * the runner redials.
 */
import net from 'node:net';
import type { Logger } from '../../domain/logger.js';
import { SourceError, connectError, linkError } from '../common/errors.js';
import type { Link, LinkOptions, LinkSink } from '../common/link.js';
import { sourceReadBudget, type TurnBudgeted } from '../../util/turn-budget.js';
import { WriteQueue } from '../../util/write-queue.js';

/** The link a socket belongs to, for the listeners every link's socket shares. */
const LINK = Symbol('vspc.socketLink');
type LinkedSocket = net.Socket & { [LINK]?: SocketLink };

export class SocketLink implements Link, TurnBudgeted {
  protected sink: LinkSink | null = null;
  /** Why the link ends, the first reason seen; undefined while none is known. */
  private why: SourceError | undefined;
  private byUs = false;
  private closeTimer: NodeJS.Timeout | null = null;
  private drainListener: (() => void) | null = null;
  private socketClosed = false;
  private reported = false;
  budgetTurn = 0;
  budgetBytes = 0;
  /** Everything written to the peer, counted (the queue bound). */
  private readonly queue: WriteQueue;

  constructor(
    protected readonly socket: net.Socket,
    readonly peer: string,
    protected readonly options: LinkOptions,
    protected readonly log: Logger,
  ) {
    this.queue = new WriteQueue(socket);
    // Shared listeners that find this link on the socket: no closures per link (an idle
    // console keeps its link for as long as the VM runs, and there may be thousands).
    (socket as LinkedSocket)[LINK] = this;
    socket.on('error', SocketLink.onSocketError);
    socket.on('close', SocketLink.onSocketCloseEvent);
  }

  private static onSocketError(this: LinkedSocket, err: Error): void {
    const link = this[LINK];
    if (link) link.why ??= linkError(err, link.peer);
  }

  private static onSocketCloseEvent(this: LinkedSocket): void {
    this[LINK]?.onSocketClose();
  }

  private static onSocketEnd(this: LinkedSocket): void {
    const link = this[LINK];
    if (link) link.why ??= new SourceError('VSPC_SOURCE_CLOSED', `${link.peer} closed the connection`);
  }

  private static onSocketData(this: LinkedSocket, chunk: Buffer): void {
    this[LINK]?.onData(chunk);
  }

  private onData(chunk: Buffer): void {
    try {
      this.receive(chunk);
    } catch (err) {
      this.log.error('internal error while handling endpoint data; closing this link', {
        error: String((err as Error)?.message ?? err),
        stack: (err as Error)?.stack,
      });
      this.fail(new SourceError('VSPC_SOURCE_INTERNAL', `internal error while handling data from ${this.peer}`, {}, { cause: err }));
      return;
    }
    // Fairness with the other sources (util/turn-budget.ts): a flood waits for the next turn.
    sourceReadBudget.charge(this, chunk.length);
  }

  start(sink: LinkSink): void {
    if (this.sink) return;
    this.sink = sink;
    if (this.socketClosed) {
      this.report();
      return;
    }
    this.socket.on('end', SocketLink.onSocketEnd);
    this.socket.on('data', SocketLink.onSocketData);
    this.started();
  }

  /** TurnBudgeted: this turn's share is used up. */
  pauseTurn(): void {
    this.socket.pause();
  }

  /** TurnBudgeted: a new turn. */
  resumeTurn(): void {
    if (!this.socket.destroyed) this.socket.resume();
  }

  /** Bytes from the peer (the codec hook: raw by default). */
  protected receive(chunk: Buffer): void {
    this.sink!.data(chunk);
  }

  /** Called once the link flows (a codec sends its opening here). */
  protected started(): void {}

  /** Input for the peer (the codec hook: raw by default). */
  write(data: Buffer): boolean {
    return this.rawWrite(data);
  }

  /**
   * Every byte for the peer goes through here (input, a codec's replies). Past the
   * queue bound the link is closed: a peer that asks for replies (telnet negotiation)
   * and never reads must not make vspc hold them without limit.
   */
  protected rawWrite(bytes: Buffer): boolean {
    if (this.socket.destroyed || this.socket.writableEnded) return true;
    const ok = this.queue.write(bytes);
    const limit = this.options.maxQueuedBytes;
    if (this.queue.cost > limit) {
      const queued = this.queue.cost;
      const err = new SourceError('VSPC_SOURCE_NOT_READING', `${this.peer} does not read what vspc sends: more than ${limit} bytes queued`, { queued, limit });
      this.log.warn('endpoint does not read what vspc sends; link closed', {
        errorCode: err.code,
        error: err.message,
        queued,
        bytes: this.socket.writableLength,
        writes: this.queue.writes,
        limit,
        peer: this.peer,
      });
      this.options.onNotReading?.();
      this.stopReading();
      this.fail(err);
      return true;
    }
    return ok;
  }

  /** Nothing more the peer sent is acted on (a codec stops its decoder). */
  protected stopReading(): void {}

  onDrain(listener: () => void): void {
    if (this.drainListener) this.socket.off('drain', this.drainListener);
    this.drainListener = listener;
    this.socket.on('drain', listener);
  }

  /** Ends the link because of `err` (protocol error, bug): at once. */
  protected fail(err: SourceError): void {
    this.why ??= err;
    this.socket.destroy();
  }

  close(_reason: string): void {
    if (this.closeTimer || this.socket.destroyed) return;
    this.byUs = true;
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.options.closeGraceMs);
    this.closeTimer.unref?.();
  }

  destroy(_reason: string): void {
    this.byUs = true;
    this.socket.destroy();
  }

  private onSocketClose(): void {
    this.socketClosed = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    if (this.drainListener) this.socket.off('drain', this.drainListener);
    this.drainListener = null;
    this.closedHook();
    if (this.sink) this.report();
  }

  /** Called once when the socket is gone (timers of a codec). */
  protected closedHook(): void {}

  private report(): void {
    if (this.reported) return;
    this.reported = true;
    const err = this.why ?? (this.byUs ? null : new SourceError('VSPC_SOURCE_CLOSED', `${this.peer} closed the connection`));
    this.sink!.closed(err);
  }
}

/**
 * Connects a stream socket; resolves once connected, rejects with a SourceError (or
 * with `signal.reason` when aborted: the socket is destroyed).
 */
export function dialSocket(opts: net.NetConnectOpts, peer: string, signal: AbortSignal): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const sock = net.connect(opts);
    const cleanup = (): void => {
      signal.removeEventListener('abort', onAbort);
      sock.off('error', onError);
      sock.off('connect', onConnect);
    };
    const onAbort = (): void => {
      cleanup();
      sock.on('error', () => {});
      sock.destroy();
      reject(signal.reason);
    };
    const onError = (err: Error): void => {
      cleanup();
      sock.destroy();
      reject(connectError(err, peer));
    };
    const onConnect = (): void => {
      cleanup();
      resolve(sock);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    sock.once('error', onError);
    sock.once('connect', onConnect);
  });
}

/** TCP sockets: no Nagle delay for keystrokes, keepalive to find a peer that vanished. */
export function tuneTcp(sock: net.Socket, options: LinkOptions): void {
  sock.setNoDelay(true);
  if (options.keepAliveMs > 0) sock.setKeepAlive(true, options.keepAliveMs);
}

/** `HOST:PORT` with IPv6 in brackets. */
export function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
