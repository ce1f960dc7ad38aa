/**
 * A bounded, asynchronous, append-only file writer: one file, written in order by one
 * loop doing one operation at a time. It knows paths and bytes, nothing about what
 * the bytes are or who produces them.
 *
 * `write()` is synchronous and never throws or waits: it appends to a queue and starts
 * the loop if it is idle, so it can sit on a hot data path. The queue is bounded (per
 * writer, and optionally over many writers through a shared `QueueBudget`): past the
 * bound data is dropped and counted, and a note supplied by the owner goes into the
 * file where the data would have been. Disk errors never throw at the caller: they are
 * reported through `onError` with a `VSPC_LOG_*` code; a failed open keeps the data
 * queued and is retried after `retryMs`, a failed write loses that write only.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { LogFileError, sysCodeOf } from './errors.js';
import { VspcError } from '../../errors.js';
import { QueueBudget, WRITE_BATCH, WriteQueue, type Task } from './queue.js';
import { mustRotate, rotateFiles, type RotationPolicy } from './rotation.js';

export { QueueBudget, WRITE_BATCH };

export const WRITER_DEFAULTS = {
  fileMode: 0o640,
  dirMode: 0o750,
  maxBuffered: 1024 * 1024,
  urgentSlack: 64 * 1024,
  retryMs: 5_000,
} as const;

/** Bytes that did not reach the file, for the owner's note in the file. */
export interface Loss {
  bytes: number;
  /** `backlog`: refused while the queue was full; `write`: a write failed (`sysCode` says why). */
  cause: 'backlog' | 'write';
  sysCode?: string;
}

export interface AppendFileWriterOptions {
  /** The file. Its directory is created (mode `dirMode`) when missing. */
  path: string;
  /** Mode of a file created (default 0o640). */
  fileMode?: number;
  /** Mode of directories created (default 0o750). */
  dirMode?: number;
  /** Bytes queued past which `write()` drops (default 1 MiB). */
  maxBuffered?: number;
  /** Bytes an `urgent` write may go past the bounds by (default 64 KiB). */
  urgentSlack?: number;
  /** A bound shared with other writers (default: none). */
  budget?: QueueBudget;
  /** Size-based rotation, and what `rotate()` keeps (default: no size limit, keep 1). */
  rotation?: RotationPolicy;
  /** The first bytes of every new (empty) file, made when it is opened. */
  header?: () => Buffer;
  /** After a failed open or write, the file is not retried for this many ms (default 5000); data stays queued. */
  retryMs?: number;
  /**
   * How long (ms) the file stays open once everything queued is written: `Infinity`
   * (the default) until `close()`, 0 to close at once. Asked each time the queue drains.
   */
  keepOpenMs?: () => number;
  /** A note to put in the file where bytes went missing (null: none). */
  lossNote?: (loss: Loss) => Buffer | null;
  /** Every failure, as it happens (a dropped backlog once per episode). Must not throw. */
  onError?: (err: LogFileError) => void;
  /** Nothing queued, nothing running and no file open (after an idle close, say). */
  onIdleClosed?: () => void;
  /**
   * Asked before the file is opened, for its descriptor (the process's budget): null
   * means none now — the open fails with VSPC_LOG_OPEN_FAILED (cause VSPC_FD_BUDGET_SPENT),
   * the data stays queued and the open is retried after `retryMs`. The lease is released
   * when the file is closed.
   */
  acquire?: () => { release(): void } | null;
}

export class AppendFileWriter {
  readonly path: string;
  private readonly o: Required<Omit<AppendFileWriterOptions, 'path' | 'budget' | 'header' | 'lossNote' | 'onError' | 'onIdleClosed' | 'acquire'>>;
  private readonly budget: QueueBudget | undefined;
  private readonly queue: WriteQueue;
  /** Bytes dropped since the last note about it. */
  private dropped = 0;
  private lost = 0;
  private handle: FileHandle | null = null;
  /** The open file's descriptor lease (acquire), released with the handle. */
  private lease: { release(): void } | null = null;
  /** Size of the open file. */
  private size = 0;
  /** Bytes beyond the header in the open file (a file holding only its header is never rotated). */
  private body = 0;
  private running: Promise<void> | null = null;
  /** `flush()` barriers reached with nothing after them: released when the loop settles or moves on. */
  private settleWaiters: Task[] = [];
  /** A disk error happened: the next open waits for the retry timer. */
  private retryPending = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private destroyed = false;
  private closing: Promise<void> | null = null;
  private rotated = 0;
  /** Size of the file when this writer first opened or rotated it (null: not yet). */
  private initial: number | null = null;

  constructor(private readonly options: AppendFileWriterOptions) {
    this.path = options.path;
    this.budget = options.budget;
    this.queue = new WriteQueue(options.budget);
    const d = WRITER_DEFAULTS;
    this.o = {
      fileMode: options.fileMode ?? d.fileMode,
      dirMode: options.dirMode ?? d.dirMode,
      maxBuffered: options.maxBuffered ?? d.maxBuffered,
      urgentSlack: options.urgentSlack ?? d.urgentSlack,
      rotation: options.rotation ?? { maxSize: Infinity, keep: 1 },
      retryMs: options.retryMs ?? d.retryMs,
      keepOpenMs: options.keepOpenMs ?? (() => Infinity),
    };
  }

  /** Whether the file is open now. */
  get isOpen(): boolean {
    return this.handle !== null;
  }

  /**
   * The file's size when this writer first touched it (opened or rotated it): what
   * was there before anything of this writer's; null until then (the file is all
   * someone else's, e.g. an earlier run's).
   */
  get initialSize(): number | null {
    return this.initial;
  }

  /** Rotations done (files actually shifted) since this writer was made. */
  get rotations(): number {
    return this.rotated;
  }

  /** Bytes queued, not yet written. */
  get queuedBytes(): number {
    return this.queue.bytes;
  }

  /** Bytes that never reached the file: dropped (backlog), lost (failed writes), given up at close or destroy. */
  get lostBytes(): number {
    return this.lost;
  }

  /**
   * Queues `data` to be appended. Never throws, never waits. `data` is kept, not
   * copied (unless small and the writer busy): the caller must not reuse it.
   *
   * @param options.urgent may go past the bounds by `urgentSlack` (the owner's own
   *   notes, which say what was lost, should not be lost themselves).
   * @returns false when the data was refused: the writer is closed, or the queue is
   *   full (then the bytes are counted in `lostBytes` and noted in the file later).
   */
  write(data: Buffer, options: { urgent?: boolean } = {}): boolean {
    if (this.closed) return false;
    const n = data.length;
    if (n === 0) return true;
    if (this.queue.wouldExceed(n, this.o.maxBuffered, options.urgent ? this.o.urgentSlack : 0)) {
      if (this.dropped === 0) {
        this.report(new LogFileError('VSPC_LOG_BACKLOG_FULL', `log file cannot keep up: dropping data for ${this.path}`, this.path));
      }
      this.dropped += n;
      this.lose(n);
      return false;
    }
    if (this.dropped > 0) this.noteDropped();
    this.push(data);
    this.kick();
    return true;
  }

  /**
   * Runs `op` in order with the data: after everything queued before, before anything
   * queued after. Resolves or rejects with `op`'s result.
   *
   * @throws (rejects) LogFileError `VSPC_LOG_WRITER_CLOSED` when the writer is closed,
   *   or destroyed before `op` ran.
   */
  enqueue<T>(op: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(this.closedError('closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.pushTask({
        barrier: false,
        run: async () => {
          try {
            resolve(await op());
          } catch (err) {
            reject(err);
          }
        },
        cancel: reject,
      });
      this.kick();
    });
  }

  /**
   * Rotates the file now (see `rotateFiles`), in order with the data: what was queued
   * before goes to the old file. The next file is created when there is data for it.
   *
   * @returns whether anything was rotated (not when the file is missing or empty).
   * @throws (rejects) LogFileError `VSPC_LOG_ROTATE_FAILED` (with `sysCode`), or
   *   `VSPC_LOG_WRITER_CLOSED`.
   */
  rotate(): Promise<boolean> {
    return this.enqueue(async () => {
      await this.closeHandle();
      return this.rotateNow();
    });
  }

  /**
   * Resolves when everything queued before the call is written, or given up on, or
   * waiting out a disk error (then it stays queued for the retry: see `queuedBytes`).
   * Never rejects.
   */
  flush(): Promise<void> {
    if (this.retryTimer || (!this.running && !this.queue.pending)) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.queue.pushTask({ barrier: true, run: async () => resolve(), cancel: () => resolve() });
      this.kick();
    });
  }

  /** `keepOpenMs()` may have changed (to 0, say): apply it now rather than at the next write. */
  checkIdle(): void {
    if (!this.closed) this.kick();
  }

  /**
   * Refuses further writes, writes what is queued (one last attempt, without waiting
   * out a disk error: what still fails is counted in `lostBytes`), then closes the
   * file. Idempotent: every call returns the same promise. Never rejects.
   */
  close(): Promise<void> {
    if (!this.closing) {
      this.closed = true;
      this.clearTimers();
      if (this.dropped > 0) this.noteDropped();
      this.closing = this.shutDown();
    }
    return this.closing;
  }

  /**
   * Like `close()`, but discards what is queued (counted in `lostBytes`; queued
   * operations reject with `VSPC_LOG_WRITER_CLOSED`). The write in flight, if any,
   * finishes. Idempotent; `close()` afterwards resolves when the file is closed.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closed = true;
    this.clearTimers();
    this.dropped = 0;
    const { bytes, tasks } = this.queue.clear();
    this.lose(bytes);
    const err = this.closedError('destroyed');
    for (const task of tasks) task.cancel(err);
    this.closing ??= this.shutDown();
  }

  // --- Queueing (synchronous).

  private push(data: Buffer): void {
    this.queue.pushData(data, this.running !== null || this.retryTimer !== null);
  }

  private lose(n: number): void {
    this.lost += n;
    if (this.budget) this.budget.lost += n;
  }

  private noteDropped(): void {
    const bytes = this.dropped;
    this.dropped = 0;
    const note = this.options.lossNote?.({ bytes, cause: 'backlog' });
    if (note && note.length > 0) this.push(note);
  }

  private kick(): void {
    this.clearIdleTimer();
    if (this.running || this.retryTimer) return;
    if (this.queue.pending || (this.handle !== null && this.closeWhenDrained())) {
      this.running = this.loop()
        .catch((err: unknown) => this.report(err))
        .finally(() => {
          this.running = null;
          this.kick();
        });
      return;
    }
    this.settle();
  }

  /** Nothing to do now: arm the idle close, or say the file is closed. */
  private settle(): void {
    if (!this.handle) {
      this.options.onIdleClosed?.();
    } else {
      const ms = this.o.keepOpenMs();
      if (Number.isFinite(ms)) {
        this.idleTimer = setTimeout(() => {
          this.idleTimer = null;
          // Through the queue, so that data arriving meanwhile is written first.
          if (!this.running && !this.queue.pending && this.handle && !this.closed) this.enqueue(() => this.closeHandle()).catch(() => undefined);
        }, ms);
        this.idleTimer.unref();
      }
    }
    this.releaseWaiters();
  }

  private releaseWaiters(): void {
    if (this.settleWaiters.length === 0) return;
    for (const w of this.settleWaiters.splice(0)) void w.run();
  }

  private closeWhenDrained(): boolean {
    return this.closed || this.o.keepOpenMs() <= 0;
  }

  // --- The I/O loop (one at a time, one operation at a time).

  private async loop(): Promise<void> {
    for (;;) {
      const head = this.queue.peek();
      if (head === undefined) {
        if (this.handle && this.closeWhenDrained()) {
          await this.closeHandle();
          continue; // something may have been queued meanwhile
        }
        return;
      }
      this.releaseWaiters(); // the loop moves on to later items: flush() callers need not wait for those
      if (!Buffer.isBuffer(head)) {
        this.queue.shiftTask();
        if (head.barrier && !this.queue.pending) {
          // Last in the queue: resolve once the writer has settled (idle close armed, or
          // the file closed), so that what the caller sees next is the settled state.
          this.settleWaiters.push(head);
          continue;
        }
        await head.run(); // never rejects: the task's own promise carries its result
        continue;
      }
      if (!this.handle && this.retryPending && !this.closed) {
        this.waitToRetry();
        return;
      }
      let batch: Buffer | null = null;
      try {
        let h = this.handle ?? (await this.open());
        // Rotate before a chunk that does not fit; a fresh file takes what fits.
        const rotation = this.o.rotation;
        if (mustRotate(rotation, this.size, this.body, Math.min(head.length, WRITE_BATCH))) {
          await this.closeHandle();
          await this.rotateNow();
          h = await this.open();
        }
        batch = this.queue.takeBatch(Math.max(1, Math.min(WRITE_BATCH, rotation.maxSize - this.size)));
        try {
          await writeAll(h, batch);
        } catch (err) {
          throw new LogFileError('VSPC_LOG_WRITE_FAILED', `writing ${batch.length} bytes to ${this.path} failed`, this.path, err);
        }
        this.size += batch.length;
        this.body += batch.length;
      } catch (err) {
        this.report(err);
        await this.closeHandle();
        this.retryPending = true;
        if (batch) this.lose(batch.length);
        if (this.closed) this.lose(this.queue.dropData()); // closing, and the disk still fails: give up the data
        else if (batch) this.unshiftNote({ bytes: batch.length, cause: 'write', sysCode: err instanceof LogFileError ? err.sysCode : sysCodeOf(err) });
      }
    }
  }

  private async open(): Promise<FileHandle> {
    let h: FileHandle;
    const lease = this.options.acquire ? this.options.acquire() : null;
    if (this.options.acquire && !lease) {
      throw new LogFileError(
        'VSPC_LOG_OPEN_FAILED',
        `cannot open ${this.path} now: file descriptors exhausted`,
        this.path,
        new VspcError('VSPC_FD_BUDGET_SPENT', 'file descriptors exhausted'),
      );
    }
    try {
      h = await this.openFile();
    } catch (err) {
      lease?.release();
      throw new LogFileError('VSPC_LOG_OPEN_FAILED', `cannot open ${this.path}`, this.path, err);
    }
    this.lease = lease;
    try {
      const size = (await h.stat()).size;
      this.initial ??= size;
      let written = size;
      if (size === 0 && this.options.header) {
        const header = this.options.header();
        await writeAll(h, header);
        written = header.length;
      }
      this.handle = h;
      this.size = written;
      this.body = size;
      return h;
    } catch (err) {
      await h.close().catch(() => undefined);
      this.lease?.release();
      this.lease = null;
      throw new LogFileError('VSPC_LOG_OPEN_FAILED', `cannot start ${this.path}`, this.path, err);
    }
  }

  private async openFile(): Promise<FileHandle> {
    try {
      return await fsp.open(this.path, 'a', this.o.fileMode);
    } catch (err) {
      if (sysCodeOf(err) !== 'ENOENT') throw err;
      // The directory is missing (never made, or removed under us): make it, once.
      await fsp.mkdir(dirname(this.path), { recursive: true, mode: this.o.dirMode });
      return await fsp.open(this.path, 'a', this.o.fileMode);
    }
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    if (!h) return;
    this.handle = null;
    try {
      await h.close();
    } catch (err) {
      this.report(new LogFileError('VSPC_LOG_CLOSE_FAILED', `closing ${this.path} failed`, this.path, err));
    } finally {
      this.lease?.release();
      this.lease = null;
    }
  }

  private async rotateNow(): Promise<boolean> {
    try {
      if (this.initial === null) this.initial = await fsp.stat(this.path).then((st) => st.size, () => 0);
      const done = await rotateFiles(this.path, this.o.rotation.keep);
      if (done) this.rotated++;
      return done;
    } catch (err) {
      throw new LogFileError('VSPC_LOG_ROTATE_FAILED', `rotating ${this.path} failed`, this.path, err);
    }
  }

  private waitToRetry(): void {
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.retryPending = false;
      this.kick();
    }, this.o.retryMs);
    this.retryTimer.unref();
    // flush() callers stop waiting: the data stays queued for the retry.
    this.releaseWaiters();
    for (const barrier of this.queue.takeBarriers()) void barrier.run();
  }

  /** Said in the file where the loss is, ahead of what is still queued. */
  private unshiftNote(loss: Loss): void {
    const note = this.options.lossNote?.(loss);
    if (note && note.length > 0) this.queue.unshiftData(note);
  }

  private async shutDown(): Promise<void> {
    this.kick();
    while (this.running) await this.running;
    await this.closeHandle();
    this.releaseWaiters();
  }

  private report(err: unknown): void {
    const e = err instanceof LogFileError ? err : new LogFileError('VSPC_LOG_WRITE_FAILED', `unexpected error writing ${this.path}`, this.path, err);
    try {
      this.options.onError?.(e);
    } catch {
      // onError must not throw; if it does, the loop carries on regardless.
    }
  }

  private closedError(why: 'closed' | 'destroyed'): LogFileError {
    return new LogFileError('VSPC_LOG_WRITER_CLOSED', `the log writer for ${this.path} is ${why}`, this.path);
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  private clearTimers(): void {
    this.clearIdleTimer();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}

async function writeAll(h: FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await h.write(data, off, data.length - off);
    off += bytesWritten;
  }
}
