/**
 * One open tty as a Link: bytes from the device to the sink as they are read (no copy:
 * each read lands in a fresh region of a pool), input queued and written one chunk at
 * a time (write() returns false past the high-water mark; the drain listener runs
 * when the queue is empty again), BREAK and line changes in between writes.
 *
 * Line changes (one at a time, in order):
 * - baud rate only: serialport's update() on the open port (it flushes what the kernel
 *   had not sent yet, as a termios speed change does);
 * - data bits, parity, stop bits, flow control: serialport cannot change these on an
 *   open port, so the link reopens the tty with the new settings, holding a descriptor
 *   of its own across the swap (no hang-up, the kernel keeps the line). The runner and
 *   the hub see one continuous link; input typed meanwhile waits in the queue. If the
 *   new settings cannot be opened, the old ones are reopened and the change rejected.
 *
 * A pty cannot carry parity or other data sizes (Linux forces CS8 and clears PARENB on
 * ptys): for a pty the settings in effect say 8 data bits, no parity.
 *
 * `sink.closed` is called exactly once, after the port is closed (so a redial never
 * races the old descriptor's lock): null when vspc ended the link, else why the device
 * went away (VSPC_SOURCE_CLOSED: unplugged, the pty's other side closed).
 */
import type { Logger } from '../../domain/logger.js';
import type { SerialLineSettings } from '../../domain/serial-line.js';
import type { DeviceLine } from '../../domain/source-spec.js';
import { SourceError, sysCodeOf } from '../common/errors.js';
import type { Link, LinkSink } from '../common/link.js';
import { holdTty, openOptions, portOpenError, readBaudRate, unsupportedLine, type DevicePort, type OpenPort } from './port.js';

export interface DeviceLinkOptions {
  path: string;
  /** The settings the port was opened with. */
  line: DeviceLine;
  isPty: boolean;
  /** The rate the driver reported after the open (null: take the one asked for). */
  baudRate?: number | null;
  openPort: OpenPort;
  /** A graceful close waits this long for queued input to be written. */
  closeGraceMs: number;
  /** How long a BREAK holds the line (tcsendbreak(fd, 0) on Linux: 250 ms). */
  breakMs: number;
  /** Queued input bytes past which write() returns false. */
  highWaterMark: number;
  /**
   * A BREAK or a line change first waits for the write in flight, at most this long: a
   * device that holds its input back (flow control, nothing attached) must not keep a
   * client from changing the flow control. Past it the change goes ahead (a reopen then
   * drops the write it cancels, logged).
   */
  writeStallMs: number;
  log: Logger;
  /** The settings changed (the connector opens the next link with them). */
  lineChanged?(line: DeviceLine): void;
}

const POOL_SIZE = 64 * 1024;
const MIN_POOL_SPACE = 1024;

/** The modem lines vspc keeps asserted while it sets or clears BREAK. */
const LINES = { cts: false, dsr: false, dtr: true, rts: true, lowLatency: false };

function sameLine(a: DeviceLine, b: DeviceLine): boolean {
  return a.baudRate === b.baudRate && a.dataSize === b.dataSize && a.parity === b.parity && a.stopBits === b.stopBits && a.flow === b.flow;
}

export class DeviceLink implements Link {
  readonly peer: string;
  private readonly path: string;
  private readonly log: Logger;
  private port: DevicePort | null;
  private line: DeviceLine;
  private isPty: boolean;
  /** The rate the driver reports, when it does (it may differ from the one asked for). */
  private actualBaud: number | null;
  private sink: LinkSink | null = null;

  private why: SourceError | undefined;
  private byUs = false;
  /** No more I/O: the port is closed or closing for good. */
  private ended = false;
  private reported = false;
  private portReleased = false;
  private closing = false;
  private closeTimer: NodeJS.Timeout | null = null;

  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private inFlight = false;
  private wantDrain = false;
  private drainListener: (() => void) | null = null;
  private idleWaiters: Array<() => void> = [];

  /** BREAK and line changes run one at a time, in order. */
  private ops: Promise<unknown> = Promise.resolve();
  /** Writes wait while a BREAK or a line change is under way. */
  private holdWrites = 0;
  private breakQueued = false;
  private breakTimer: NodeJS.Timeout | null = null;
  private breakWarned = false;

  /** A reopen has the port swapped out. */
  private reopening = false;

  constructor(
    port: DevicePort,
    private readonly o: DeviceLinkOptions,
  ) {
    this.port = port;
    this.path = o.path;
    this.peer = `device:${o.path}`;
    this.line = { ...o.line };
    this.isPty = o.isPty;
    this.actualBaud = o.baudRate ?? null;
    this.log = o.log;
  }

  /** The settings in effect (a pty: always 8 data bits, no parity). */
  get lineSettings(): SerialLineSettings {
    const l = this.line;
    return {
      baudRate: this.actualBaud ?? l.baudRate,
      dataSize: this.isPty ? 8 : l.dataSize,
      parity: this.isPty ? 'none' : l.parity,
      stopBits: l.stopBits,
      flow: l.flow,
    };
  }

  start(sink: LinkSink): void {
    if (this.sink) return;
    this.sink = sink;
    if (this.ended) {
      if (this.portReleased) this.report();
      return;
    }
    this.readFrom(this.port!);
  }

  // ------------------------------------------------------------------ reading

  private readFrom(port: DevicePort): void {
    void this.readLoop(port);
  }

  private async readLoop(port: DevicePort): Promise<void> {
    // Each loop has its own pool: a chunk handed to the sink is never written over
    // (sockets keep a reference until it is sent), and a loop ending on a reopen cannot
    // share a region with the next one.
    let pool = Buffer.allocUnsafe(POOL_SIZE);
    let used = 0;
    while (this.port === port && !this.ended) {
      if (pool.length - used < MIN_POOL_SPACE) {
        pool = Buffer.allocUnsafe(POOL_SIZE);
        used = 0;
      }
      const start = used;
      let bytesRead: number;
      try {
        ({ bytesRead } = await port.read(pool, start, pool.length - start));
      } catch (err) {
        // Closed by us (reopen, close, destroy): the read is cancelled, nothing is wrong.
        if (this.port !== port || this.ended) return;
        this.lose(this.goneError(err));
        return;
      }
      if (this.ended || bytesRead <= 0) continue;
      used = start + bytesRead;
      try {
        this.sink!.data(pool.subarray(start, used));
      } catch (err) {
        this.log.error('internal error while handling device data; closing this link', {
          error: String((err as Error)?.message ?? err),
          stack: (err as Error)?.stack,
        });
        this.lose(new SourceError('VSPC_SOURCE_INTERNAL', `internal error while handling data from ${this.path}`, {}, { cause: err }));
        return;
      }
    }
  }

  private goneError(err: unknown): SourceError {
    const sysCode = sysCodeOf(err);
    const detail = String((err as Error)?.message ?? err);
    return new SourceError('VSPC_SOURCE_CLOSED', `${this.path} went away (${detail}): unplugged, or the pty's other side closed`, { sysCode, path: this.path });
  }

  // ------------------------------------------------------------------ writing

  write(data: Buffer): boolean {
    if (this.ended || this.closing) return true;
    if (data.length === 0) return this.queuedBytes < this.o.highWaterMark;
    this.queue.push(data);
    this.queuedBytes += data.length;
    this.pump();
    if (this.queuedBytes >= this.o.highWaterMark) {
      this.wantDrain = true;
      return false;
    }
    return true;
  }

  onDrain(listener: () => void): void {
    this.drainListener = listener;
  }

  private pump(): void {
    if (this.inFlight || this.holdWrites > 0 || this.ended || !this.port || this.queue.length === 0) return;
    const chunk = this.queue.length === 1 ? this.queue[0] : Buffer.concat(this.queue);
    this.queue = [];
    const port = this.port;
    this.inFlight = true;
    port.write(chunk).then(
      () => {
        this.inFlight = false;
        this.queuedBytes -= chunk.length;
        this.pump();
        if (!this.inFlight) this.wakeIdle();
        if (this.wantDrain && this.queuedBytes < this.o.highWaterMark && !this.ended) {
          this.wantDrain = false;
          this.drainListener?.();
        }
      },
      (err: unknown) => {
        this.inFlight = false;
        this.queuedBytes -= chunk.length;
        this.wakeIdle();
        if (this.ended) return;
        if (port !== this.port) {
          // Cancelled by a reopen that did not wait any longer for a device holding its input back.
          this.log.warn('input dropped: the device held it back while its settings changed', { path: this.path, bytes: chunk.length });
          this.pump();
          return;
        }
        this.lose(this.goneError(err));
      },
    );
  }

  /** Resolves once no write is in flight (the pump is held by the caller, or the queue is empty), or after `maxMs`. */
  private idle(maxMs?: number): Promise<void> {
    if (!this.inFlight) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve();
      };
      if (maxMs !== undefined) timer = setTimeout(done, maxMs);
      this.idleWaiters.push(done);
    });
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** Runs `op` after the ones before it, with writes held. */
  private exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      this.holdWrites++;
      try {
        await this.idle(this.o.writeStallMs);
        return await op();
      } finally {
        this.holdWrites--;
        this.pump();
      }
    };
    const p = this.ops.then(run, run);
    this.ops = p.catch(() => {});
    return p;
  }

  // ------------------------------------------------------------------ BREAK

  /**
   * A serial BREAK: queued input written first, then the line held in BREAK for
   * `breakMs` (TIOCSBRK, TIOCCBRK), input typed meanwhile waiting. Breaks asked for
   * while one is pending or under way are that break. A device that cannot signal one (a pty refuses
   * serialport's modem-line ioctl) is logged once.
   */
  sendBreak(): void {
    if (this.ended || this.closing || this.breakQueued) return;
    this.breakQueued = true;
    void this.exclusive(async () => {
      try {
        await this.breakNow();
      } finally {
        this.breakQueued = false;
      }
    });
  }

  private async breakNow(): Promise<void> {
    {
      const port = this.port;
      if (this.ended || !port) return;
      let onFailed: string | null = null;
      try {
        await port.set({ brk: true, ...LINES });
      } catch (err) {
        onFailed = String((err as Error)?.message ?? err);
      }
      await new Promise<void>((resolve) => {
        this.breakTimer = setTimeout(() => {
          this.breakTimer = null;
          resolve();
        }, this.o.breakMs);
      });
      // Cleared whatever happened: a driver may have set BREAK before failing on the modem lines.
      if (!this.ended && this.port === port) await port.set({ brk: false, ...LINES }).catch(() => {});
      if (onFailed !== null) {
        if (!this.breakWarned) {
          this.breakWarned = true;
          this.log.warn('BREAK not sent: the device refused it', { path: this.path, error: onFailed, pty: this.isPty });
        } else {
          this.log.debug('BREAK not sent: the device refused it', { path: this.path, error: onFailed });
        }
      } else {
        this.log.debug('BREAK sent', { path: this.path, ms: this.o.breakMs });
      }
    }
  }

  // ------------------------------------------------------------------ line settings

  /**
   * Applies `change` over the settings in effect; resolves with the settings now in
   * effect, or rejects (VSPC_SOURCE_LINE_UNSUPPORTED, or the device went away) with
   * the old settings still in effect.
   */
  setLineSettings(change: SerialLineSettings): Promise<SerialLineSettings> {
    return this.exclusive(async () => {
      if (this.ended || this.closing || !this.port) throw new SourceError('VSPC_SOURCE_CLOSED', `${this.path} is not open`, { path: this.path });
      const next: DeviceLine = { ...this.line };
      if (change.baudRate !== undefined) next.baudRate = change.baudRate;
      if (change.dataSize !== undefined) next.dataSize = change.dataSize;
      if (change.parity !== undefined) next.parity = change.parity;
      if (change.stopBits !== undefined) next.stopBits = change.stopBits;
      if (change.flow !== undefined) next.flow = change.flow;
      const why = unsupportedLine(next);
      if (why) throw new SourceError('VSPC_SOURCE_LINE_UNSUPPORTED', `${this.path}: ${why}`, { path: this.path });
      if (sameLine(next, this.line)) return this.lineSettings;
      const before = this.lineSettings;
      if (next.dataSize === this.line.dataSize && next.parity === this.line.parity && next.stopBits === this.line.stopBits && next.flow === this.line.flow) {
        const port = this.port;
        try {
          await port.update({ baudRate: next.baudRate });
        } catch (err) {
          throw new SourceError('VSPC_SOURCE_LINE_UNSUPPORTED', `${this.path}: baud rate ${next.baudRate} refused: ${(err as Error)?.message ?? err}`, { path: this.path });
        }
        this.line = next;
        this.actualBaud = await readBaudRate(port);
      } else {
        await this.reopen(next);
      }
      this.o.lineChanged?.({ ...this.line });
      this.log.info('device line settings changed', { path: this.path, from: before, to: this.lineSettings });
      return this.lineSettings;
    });
  }

  /** Closes the port and opens it again with `next` (writes are held by the caller). */
  private async reopen(next: DeviceLine): Promise<void> {
    // Fails when the device is going away (its read loop reports that).
    const hold = await holdTty(this.path);
    this.reopening = true;
    try {
      const old = this.port!;
      this.port = null;
      await old.close().catch(() => {});
      if (this.ended) return this.releasedWhileReopening();
      this.isPty = hold.isPty;
      let port: DevicePort;
      let failure: SourceError | null = null;
      try {
        port = await this.o.openPort(openOptions(this.path, next));
      } catch (err) {
        failure = portOpenError(this.path, err);
        try {
          port = await this.o.openPort(openOptions(this.path, this.line));
        } catch (err2) {
          this.reopening = false;
          this.lose(portOpenError(this.path, err2));
          throw failure;
        }
      }
      if (this.ended) {
        await port.close().catch(() => {});
        return this.releasedWhileReopening();
      }
      this.port = port;
      if (!failure) this.line = next;
      this.actualBaud = await readBaudRate(port);
      this.readFrom(port);
      if (failure) throw new SourceError('VSPC_SOURCE_LINE_UNSUPPORTED', `${failure.message} (the previous settings are back in effect)`, { path: this.path });
    } finally {
      this.reopening = false;
      await hold.release();
    }
  }

  /** destroy()/close() happened while the port was swapped out: finish their report. */
  private releasedWhileReopening(): never {
    this.portReleased = true;
    this.report();
    throw new SourceError('VSPC_SOURCE_CLOSED', `${this.path} was closed while its settings changed`, { path: this.path });
  }

  // ------------------------------------------------------------------ ending

  /** Graceful: writes what is queued (up to closeGraceMs), then closes the port. Idempotent. */
  close(_reason: string): void {
    if (this.closing || this.ended) return;
    this.closing = true;
    this.byUs = true;
    this.closeTimer = setTimeout(() => this.finish(), this.o.closeGraceMs);
    this.closeTimer.unref?.();
    void this.flushed().then(() => this.finish());
  }

  /** At once. Idempotent. */
  destroy(_reason: string): void {
    this.byUs = true;
    this.finish();
  }

  private async flushed(): Promise<void> {
    while (!this.ended && (this.queue.length > 0 || this.inFlight)) {
      if (!this.inFlight) {
        // Held by a BREAK or a line change: wait for it, then the queue moves again.
        await this.ops;
        this.pump();
        if (!this.inFlight && this.queue.length > 0) return;
      }
      await this.idle();
    }
  }

  /** The device went away, or a bug: end the link with `err`. */
  private lose(err: SourceError): void {
    this.why ??= err;
    this.finish();
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    if (this.breakTimer) clearTimeout(this.breakTimer);
    this.breakTimer = null;
    this.queue = [];
    this.queuedBytes = 0;
    this.drainListener = null;
    this.wakeIdle();
    const port = this.port;
    this.port = null;
    if (!port) {
      // A reopen has none right now: it reports when it sees `ended`.
      if (!this.reopening) {
        this.portReleased = true;
        this.report();
      }
      return;
    }
    port
      .close()
      .catch(() => {})
      .then(() => {
        this.portReleased = true;
        this.report();
      });
  }

  private report(): void {
    if (this.reported || !this.sink) return;
    this.reported = true;
    const err = this.why ?? (this.byUs ? null : new SourceError('VSPC_SOURCE_CLOSED', `${this.path} closed`, { path: this.path }));
    this.sink.closed(err);
  }
}
