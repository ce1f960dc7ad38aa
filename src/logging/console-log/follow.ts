/**
 * A reader following a console log as it is written (`vspc-admin log --follow`): the
 * manager hands it what it queues for the file, in order, after the file's last lines.
 * Bounded: a reader that falls `maxBuffered` bytes behind is cut off with a line
 * saying so, rather than making vspc hold its backlog.
 */

/** Where a follower's bytes go (the admin API's HTTP response). */
export interface FollowSink {
  write(chunk: Buffer): void;
  end(): void;
  /** Bytes written but not yet sent on. */
  readonly buffered: number;
}

export class LogFollower {
  /** Live output that arrived before the file's last lines were read; then null. */
  private pending: Buffer[] | null = [];
  private pendingBytes = 0;
  private ended = false;

  constructor(
    private readonly sink: FollowSink,
    private readonly maxBuffered: number,
    /** vspc's own line with this text (the file's format), for the end of the stream. */
    private readonly line: (text: string) => Buffer,
    private readonly onEnd: (f: LogFollower) => void,
  ) {}

  get isEnded(): boolean {
    return this.ended;
  }

  /** The file's last lines: sent first, then what arrived meanwhile. */
  start(initial: Buffer): void {
    if (this.ended || this.pending === null) return;
    if (initial.length > 0) this.sink.write(initial);
    const pending = this.pending;
    this.pending = null;
    this.pendingBytes = 0;
    for (const chunk of pending) this.sink.write(chunk);
    this.checkBacklog();
  }

  /** Bytes queued for the file (the console's output and vspc's lines). */
  deliver(chunk: Buffer): void {
    if (this.ended) return;
    if (this.pending) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes > this.maxBuffered) this.end('the log could not be read in time');
      return;
    }
    this.sink.write(chunk);
    this.checkBacklog();
  }

  /** Ends the stream, with a last line saying why (none when the reader went away). Idempotent. */
  end(reason: string | null): void {
    if (this.ended) return;
    this.ended = true;
    this.pending = null;
    if (reason !== null) this.sink.write(this.line(`log follow ended: ${reason}`));
    this.sink.end();
    this.onEnd(this);
  }

  private checkBacklog(): void {
    if (this.sink.buffered > this.maxBuffered) this.end(`the reader fell ${this.sink.buffered} bytes behind`);
  }
}
