/**
 * Console log files: every byte a VM writes to its serial port, whether or not anyone
 * is attached, one file per VM serial port under `--log-dir`. See docs/console-logs.md.
 *
 * The observer hooks run synchronously on the data path, so they only append to a
 * per-file queue; one async loop per file does the I/O (one operation in flight per
 * file, so order is kept). The queue is bounded: past the bound, output is dropped and
 * counted, and a line in the file says how much. Console bytes never go to winston.
 */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../domain/logger.js';
import { errorFields } from '../errors.js';
import { formatUuid } from '../util/uuid.js';
import { displayKey } from '../domain/identity.js';
import type { ConsoleEvent, ConsoleObserver, ConsoleHub } from '../domain/console-hub.js';
import { consoleLogBaseName, nameLinkBaseName } from './names.js';

export interface ConsoleLogOptions {
  /** Directory of the log files (created when missing). */
  dir: string;
  logger: Logger;
  /** A file is rotated before a write would take it past this many bytes. */
  maxSize?: number;
  /** Rotated files kept: `x.log.1` (newest) … `x.log.<keep>`. 0 = none kept. */
  keep?: number;
  /** A timestamp mark this often in files that had output since the last mark; 0 = off. */
  markIntervalMs?: number;
  /** A disconnected VM's file is closed after this long without writes. */
  idleCloseMs?: number;
  /** Bytes queued per file waiting for the disk; past this, output is dropped and counted. */
  maxBuffered?: number;
  /** Bytes queued in all files together (many VMs and a stalled disk); past this, dropped too. */
  maxTotalBuffered?: number;
  /** After a disk error, a file is not retried for this long (its output is queued meanwhile). */
  retryMs?: number;
  /** Every VM serial port known (for `rotate()` of all). */
  ports?: () => Iterable<ConsoleHub>;
  /** Clock for the timestamps in the files (tests); timers use the real clock. */
  now?: () => number;
}

export const CONSOLE_LOG_DEFAULTS = {
  maxSize: 10 * 1024 * 1024,
  keep: 5,
  markIntervalMs: 3_600_000,
  idleCloseMs: 60_000,
  maxBuffered: 1024 * 1024,
  maxTotalBuffered: 64 * 1024 * 1024,
  retryMs: 5_000,
} as const;

/** Largest single write; also the most a file can be short of `maxSize` when it is rotated. */
const WRITE_BATCH = 64 * 1024;
/** While a file is busy, chunks smaller than this are copied into one buffer (not queued one by one). */
const COALESCE_BELOW = 4096;
/** vspc's own lines may exceed `maxBuffered` by this much (they are what says data was lost). */
const ANNOTATION_SLACK = 64 * 1024;
/** Longest read backwards by `tail` (lines without newlines do not make it read a whole file). */
const TAIL_MAX_BYTES = 1024 * 1024;
/** Consoles show what people type (passwords at a wrong prompt): not world-readable. */
const FILE_MODE = 0o640;
const DIR_MODE = 0o750;

type Op = () => Promise<void>;
type QueueItem = Buffer | Op;

/** One VM serial port's log file. */
class LogFile {
  readonly queue: QueueItem[] = [];
  /** Small chunks that arrived while busy, copied together; logically after `queue`. */
  acc: Buffer | null = null;
  accLen = 0;
  /** Bytes in `queue` and `acc`. */
  queuedBytes = 0;
  /** Bytes dropped since the last "dropped" line. */
  dropped = 0;
  handle: FileHandle | null = null;
  /** Size of the open file. */
  size = 0;
  /** Bytes beyond the header in the open file (a file holding only its header is never rotated). */
  body = 0;
  running: Promise<void> | null = null;
  outputSinceMark = false;
  /** Last byte queued, to start vspc's lines on a fresh line without blank lines. */
  lastByte = -1;
  idleTimer: NodeJS.Timeout | null = null;
  retryTimer: NodeJS.Timeout | null = null;
  retryAt = 0;
  readonly warned = new Set<string>();
  /** The VM name the by-name link was last made for (undefined: not checked yet). */
  linkedName: string | null | undefined = undefined;
  forgotten = false;

  constructor(
    readonly key: string,
    readonly base: string,
    public hub: ConsoleHub,
  ) {}

  /** Anything queued (data or operations)? */
  get pending(): boolean {
    return this.queue.length > 0 || this.accLen > 0;
  }

  /** Whether the VM is connected now: a disconnected VM's file is closed when idle. */
  get connected(): boolean {
    return this.hub.source !== null;
  }
}

function fsCode(err: unknown): string {
  return String((err as { code?: unknown })?.code ?? 'UNKNOWN');
}

function ignoreEnoent(err: unknown): void {
  if (fsCode(err) !== 'ENOENT') throw err;
}

/** Text for vspc's own lines: one line, no control characters, no closing bracket games. */
function clean(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, '?');
}

export function describeEvent(e: ConsoleEvent): string {
  switch (e.kind) {
    case 'vm-connected':
      return `VM connected from ${e.peer}`;
    case 'vm-disconnected':
      return `VM disconnected (was ${e.peer})`;
    case 'vmotion':
      return `vMotion ${e.outcome} after ${e.durationMs} ms`;
    case 'client-attached':
      return `client ${e.clientId} attached from ${e.peer} (${e.mode})`;
    case 'client-detached':
      return `client ${e.clientId} (${e.peer}) detached: ${e.reason}`;
    case 'client-takeover':
      return `client ${e.clientId} from ${e.peer} took over from client ${e.displacedClientId} (${e.displacedPeer})`;
  }
}

/**
 * The console logs of every VM serial port: a `ConsoleObserver` (pass it to the
 * Registry) plus the admin operations `tail` and `rotate`, and `forget` / `close`.
 */
export class ConsoleLogManager implements ConsoleObserver {
  readonly dir: string;
  private readonly o: Required<Omit<ConsoleLogOptions, 'ports' | 'logger' | 'dir'>>;
  private readonly log: Logger;
  private readonly ports: () => Iterable<ConsoleHub>;
  private readonly files = new Map<string, LogFile>();
  /** Hubs the registry dropped: their files are closed as soon as they are written. */
  private readonly forgottenHubs = new WeakSet<ConsoleHub>();
  private readonly markTimer: NodeJS.Timeout | null = null;
  private dirReady = false;
  private closing: Promise<void> | null = null;
  /** Set first thing in close(), before `closing` is assigned. */
  private shuttingDown = false;
  private handles = 0;
  /** Bytes queued in all files. */
  private totalQueued = 0;
  /** Bytes dropped in all files since start (for status / tests). */
  droppedTotal = 0;

  constructor(options: ConsoleLogOptions) {
    this.dir = options.dir;
    this.log = options.logger.child({ component: 'console-log' });
    this.ports = options.ports ?? (() => []);
    const d = CONSOLE_LOG_DEFAULTS;
    this.o = {
      maxSize: options.maxSize ?? d.maxSize,
      keep: options.keep ?? d.keep,
      markIntervalMs: options.markIntervalMs ?? d.markIntervalMs,
      idleCloseMs: options.idleCloseMs ?? d.idleCloseMs,
      maxBuffered: options.maxBuffered ?? d.maxBuffered,
      maxTotalBuffered: options.maxTotalBuffered ?? d.maxTotalBuffered,
      retryMs: options.retryMs ?? d.retryMs,
      now: options.now ?? Date.now,
    };
    if (this.o.markIntervalMs > 0) {
      this.markTimer = setInterval(() => this.mark(), this.o.markIntervalMs);
      this.markTimer.unref();
    }
  }

  /** Files open right now (VMs gone for a while have none). */
  get openHandles(): number {
    return this.handles;
  }

  /** The current log file of a VM serial port (it may not exist yet). */
  pathOf(hub: ConsoleHub): string {
    return join(this.dir, `${consoleLogBaseName(hub.identity.key, hub.identity.label)}.log`);
  }

  /** Creates the directory; a failure is a warning (consoles work without logs). */
  async init(): Promise<boolean> {
    try {
      await fsp.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
      await fsp.access(this.dir, fsp.constants.W_OK);
      this.dirReady = true;
      return true;
    } catch (err) {
      this.log.warn('console log directory is not usable; console logs will be retried per VM', { dir: this.dir, ...errorFields(err) });
      return false;
    }
  }

  // --- ConsoleObserver: synchronous, never throws, never waits.

  output(hub: ConsoleHub, data: Buffer): void {
    if (this.shuttingDown || data.length === 0) return;
    try {
      const f = this.fileOf(hub);
      f.outputSinceMark = true;
      this.checkLink(f);
      this.enqueue(f, data, false);
    } catch (err) {
      this.log.error('console log: unexpected error', errorFields(err));
    }
  }

  event(hub: ConsoleHub, e: ConsoleEvent): void {
    if (this.shuttingDown) return;
    try {
      const f = this.fileOf(hub);
      this.checkLink(f);
      this.annotate(f, describeEvent(e));
    } catch (err) {
      this.log.error('console log: unexpected error', errorFields(err));
    }
  }

  // --- Admin operations.

  /**
   * Rotate one VM serial port's log now, or every one's. An empty or missing file is
   * not rotated. Data queued before the call goes to the old file.
   */
  async rotate(hub?: ConsoleHub): Promise<void> {
    if (hub) return this.rotateOne(hub);
    const hubs = new Set<ConsoleHub>(this.ports());
    for (const f of this.files.values()) hubs.add(f.hub);
    const results = await Promise.allSettled([...hubs].map((h) => this.rotateOne(h)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /**
   * The last `lines` lines of the VM serial port's current log file (after writing
   * what is queued), read backwards from the end: at most 1 MiB is read however big
   * the file. '' when there is no file yet.
   */
  async tail(hub: ConsoleHub, lines: number): Promise<string> {
    const f = this.files.get(this.keyOf(hub));
    if (f) await this.settle(f);
    return readLastLines(this.pathOf(hub), lines, TAIL_MAX_BYTES);
  }

  /** Resolves when everything queued so far is written (or given up on). */
  async flush(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => this.settle(f)));
  }

  /** The registry dropped this VM serial port: write what is queued, then close its file. */
  forget(hub: ConsoleHub): void {
    this.forgottenHubs.add(hub);
    const f = this.files.get(this.keyOf(hub));
    if (!f || f.hub !== hub) return;
    f.forgotten = true;
    this.clearIdle(f);
    if (!f.running) this.finish(f);
  }

  /** Write everything queued, close every file, stop the timers. Idempotent. */
  close(): Promise<void> {
    this.shuttingDown = true;
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.markTimer) clearInterval(this.markTimer);
    for (const f of this.files.values()) {
      this.clearIdle(f);
      if (f.retryTimer) clearTimeout(f.retryTimer);
      f.retryTimer = null;
      f.forgotten = true;
      if (f.dropped > 0) this.pushDroppedLine(f);
      if (f.pending) this.kick(f);
      else this.finish(f);
    }
    await this.flush();
    // Whatever is still open (an op was running when close began) is closed here.
    await Promise.all([...this.files.values()].map((f) => this.closeHandle(f)));
    this.files.clear();
  }

  // --- Queueing (synchronous).

  private keyOf(hub: ConsoleHub): string {
    return `${hub.identity.key}/${hub.identity.label}`;
  }

  private fileOf(hub: ConsoleHub): LogFile {
    const key = this.keyOf(hub);
    let f = this.files.get(key);
    if (!f) {
      f = new LogFile(key, consoleLogBaseName(hub.identity.key, hub.identity.label), hub);
      this.files.set(key, f);
    } else if (f.hub !== hub && !this.forgottenHubs.has(hub)) {
      // Forgotten and registered again: same identity, same file. (A late event of
      // the forgotten hub still goes to the file but does not take it back.)
      f.hub = hub;
    }
    f.forgotten = this.forgottenHubs.has(f.hub);
    return f;
  }

  /** Before writing to the file: is the by-name link up to date with the VM's name? */
  private checkLink(f: LogFile): void {
    const name = f.hub.identity.name || null;
    if (name === f.linkedName) return;
    const previous = f.linkedName ?? null;
    f.linkedName = name;
    this.enqueueOp(f, () => this.updateLink(f, previous, name)).catch(() => undefined);
  }

  private annotate(f: LogFile, text: string): void {
    this.enqueue(f, this.line(f, text), true);
  }

  private line(f: LogFile, text: string): Buffer {
    const stamp = new Date(this.o.now()).toISOString();
    return Buffer.from(`${f.lastByte === 0x0a ? '' : '\r\n'}[vspc ${stamp} ${clean(text)}]\r\n`, 'utf8');
  }

  private enqueue(f: LogFile, data: Buffer, annotation: boolean): void {
    const slack = annotation ? ANNOTATION_SLACK : 0;
    if (f.queuedBytes + data.length > this.o.maxBuffered + slack || this.totalQueued + data.length > this.o.maxTotalBuffered + slack) {
      f.dropped += data.length;
      this.droppedTotal += data.length;
      this.warnOnce(f, 'DROPPED', 'console log cannot keep up: dropping console output (a line in the file says how much)', {
        maxBuffered: this.o.maxBuffered,
        maxTotalBuffered: this.o.maxTotalBuffered,
      });
      return;
    }
    if (f.dropped > 0) this.pushDroppedLine(f);
    this.push(f, data);
    this.kick(f);
  }

  private pushDroppedLine(f: LogFile): void {
    const n = f.dropped;
    f.dropped = 0;
    this.push(f, this.line(f, `${n} bytes of console output dropped: the log file could not keep up`));
  }

  private push(f: LogFile, data: Buffer): void {
    f.queuedBytes += data.length;
    this.totalQueued += data.length;
    f.lastByte = data[data.length - 1];
    if (data.length < COALESCE_BELOW && (f.running || f.retryTimer)) {
      // Busy: a flood of tiny chunks becomes a few buffers, not a long queue of objects.
      if (!f.acc || f.accLen + data.length > f.acc.length) {
        this.seal(f);
        f.acc = Buffer.allocUnsafe(WRITE_BATCH);
      }
      data.copy(f.acc, f.accLen);
      f.accLen += data.length;
      return;
    }
    this.seal(f);
    f.queue.push(data);
  }

  /** Moves the accumulated small chunks to the queue. */
  private seal(f: LogFile): void {
    if (f.acc && f.accLen > 0) f.queue.push(f.acc.subarray(0, f.accLen));
    f.acc = null;
    f.accLen = 0;
  }

  /** Queue an operation on the file, in order with its data. The result is the op's. */
  private enqueueOp(f: LogFile, op: Op): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.seal(f);
      f.queue.push(() => op().then(resolve, reject));
      this.kick(f);
    });
  }

  private kick(f: LogFile): void {
    this.clearIdle(f);
    if (f.running || !f.pending) return;
    if (f.retryTimer) return; // waiting out a disk error; the timer kicks
    f.running = this.run(f).finally(() => {
      f.running = null;
      if (f.pending && !f.retryTimer) this.kick(f);
      else this.finish(f);
    });
  }

  // --- The I/O loop (one per file, one operation at a time).

  private async run(f: LogFile): Promise<void> {
    for (;;) {
      if (f.queue.length === 0) this.seal(f);
      if (f.queue.length === 0) return;
      const head = f.queue[0];
      if (typeof head === 'function') {
        f.queue.shift();
        await head().catch(() => undefined); // the op's own promise carries the error
        continue;
      }
      if (!f.handle && !this.shuttingDown && Date.now() < f.retryAt) {
        f.retryTimer = setTimeout(() => {
          f.retryTimer = null;
          this.kick(f);
        }, f.retryAt - Date.now());
        f.retryTimer.unref();
        return;
      }
      let batch: Buffer | null = null;
      try {
        if (!f.handle) await this.open(f);
        // Rotate before a chunk that does not fit; a fresh file takes what fits.
        const next = Math.min(head.length, WRITE_BATCH);
        if (f.body > 0 && f.size + next > this.o.maxSize) {
          await this.rotateFile(f);
          await this.open(f);
        }
        batch = this.takeBatch(f, Math.max(1, Math.min(WRITE_BATCH, this.o.maxSize - f.size)));
        await writeAll(f.handle!, batch);
        f.size += batch.length;
        f.body += batch.length;
      } catch (err) {
        this.diskError(f, err, 'write', 'console log write failed; retrying in a while, output queued meanwhile');
        await this.closeHandle(f);
        f.retryAt = Date.now() + this.o.retryMs;
        if (batch) this.droppedTotal += batch.length;
        if (this.shuttingDown) {
          this.dropQueuedData(f);
        } else if (batch) {
          // Said in the file where the loss is, ahead of what is still queued.
          const note = Buffer.from(
            `\r\n[vspc ${new Date(this.o.now()).toISOString()} ${batch.length} bytes of console output lost: write failed (${clean(fsCode(err))})]\r\n`,
          );
          f.queue.unshift(note);
          f.queuedBytes += note.length;
          this.totalQueued += note.length;
        }
      }
    }
  }

  /** Up to `limit` bytes of queued data, in order; a chunk is split only if it comes first. */
  private takeBatch(f: LogFile, limit: number): Buffer {
    const parts: Buffer[] = [];
    let n = 0;
    while (f.queue.length > 0 && n < limit) {
      const head = f.queue[0];
      if (typeof head === 'function') break;
      const room = limit - n;
      if (head.length <= room) {
        f.queue.shift();
        parts.push(head);
        n += head.length;
      } else if (n === 0) {
        parts.push(head.subarray(0, room));
        f.queue[0] = head.subarray(room);
        n += room;
      } else {
        break;
      }
    }
    f.queuedBytes -= n;
    this.totalQueued -= n;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }

  private async open(f: LogFile): Promise<void> {
    if (!this.dirReady) {
      await fsp.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
      this.dirReady = true;
    }
    const path = join(this.dir, `${f.base}.log`);
    let h: FileHandle;
    try {
      h = await fsp.open(path, 'a', FILE_MODE);
    } catch (err) {
      if (fsCode(err) === 'ENOENT') this.dirReady = false; // the directory went away: recreate next time
      throw err;
    }
    this.handles++;
    try {
      const size = (await h.stat()).size;
      f.handle = h;
      f.size = size;
      f.body = size;
      if (size === 0) {
        const header = this.header(f);
        await writeAll(h, header);
        f.size = header.length;
      }
    } catch (err) {
      f.handle = null;
      this.handles--;
      await h.close().catch(() => undefined);
      throw err;
    }
  }

  /** First line of every new file: which VM serial port it is. */
  private header(f: LogFile): Buffer {
    const id = f.hub.identity;
    const uuid = displayKey(id);
    const stamp = new Date(this.o.now()).toISOString();
    const parts = [id.name ? `console log of VM ${JSON.stringify(clean(id.name))}` : 'console log of VM', `uuid ${uuid}`];
    if (id.label) parts.push(`label ${JSON.stringify(clean(id.label))}`);
    return Buffer.from(`[vspc ${stamp} ${parts.join(', ')}]\r\n`, 'utf8');
  }

  private async closeHandle(f: LogFile): Promise<void> {
    const h = f.handle;
    if (!h) return;
    f.handle = null;
    this.handles--;
    try {
      await h.close();
    } catch (err) {
      this.diskError(f, err, 'close', 'console log close failed');
    }
  }

  /** `x.log` → `x.log.1` → … → `x.log.<keep>` (the oldest is replaced); 0 keeps none. */
  private async rotateFile(f: LogFile): Promise<void> {
    await this.closeHandle(f);
    const path = join(this.dir, `${f.base}.log`);
    let size: number;
    try {
      size = (await fsp.stat(path)).size;
    } catch (err) {
      ignoreEnoent(err);
      return;
    }
    if (size === 0) return;
    if (this.o.keep === 0) {
      await fsp.unlink(path).catch(ignoreEnoent);
      return;
    }
    for (let i = this.o.keep - 1; i >= 1; i--) {
      await fsp.rename(`${path}.${i}`, `${path}.${i + 1}`).catch(ignoreEnoent);
    }
    await fsp.rename(path, `${path}.1`);
  }

  private rotateOne(hub: ConsoleHub): Promise<void> {
    if (this.shuttingDown) return Promise.resolve();
    const f = this.fileOf(hub);
    return this.enqueueOp(f, async () => {
      try {
        await this.rotateFile(f);
      } catch (err) {
        this.diskError(f, err, 'rotate', 'console log rotation failed');
        throw err;
      }
    });
  }

  /**
   * Keeps `by-name/<name>[@<label>].log` pointing at this file; on a rename the old
   * name's link goes (when it still points here). Two VMs of one name: the link
   * follows the one that was renamed or appeared last.
   */
  private async updateLink(f: LogFile, previous: string | null, name: string | null): Promise<void> {
    const linkDir = join(this.dir, 'by-name');
    const target = join('..', `${f.base}.log`);
    const label = f.hub.identity.label;
    try {
      if (previous && previous !== name) {
        const old = join(linkDir, `${nameLinkBaseName(previous, label)}.log`);
        if ((await fsp.readlink(old).catch(() => null)) === target) await fsp.unlink(old).catch(ignoreEnoent);
      }
      if (!name) return;
      const want = `${nameLinkBaseName(name, label)}.log`;
      const linkPath = join(linkDir, want);
      if ((await fsp.readlink(linkPath).catch(() => null)) === target) return;
      if (!this.dirReady) {
        await fsp.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
        this.dirReady = true;
      }
      await fsp.mkdir(linkDir, { recursive: true, mode: DIR_MODE });
      // Made aside and renamed over, so replacing another VM's link of that name is atomic.
      const tmp = join(linkDir, `.${want}.${process.pid}.tmp`);
      await fsp.unlink(tmp).catch(ignoreEnoent);
      await fsp.symlink(target, tmp);
      await fsp.rename(tmp, linkPath);
    } catch (err) {
      this.diskError(f, err, 'link', 'console log name link failed');
    }
  }

  // --- Idle close, marks, failures.

  /** The loop went idle: forgotten → close now; disconnected → close after idleCloseMs. */
  private finish(f: LogFile): void {
    if (f.running || f.pending) return;
    if (f.forgotten) {
      this.clearIdle(f);
      // Keep the entry until the handle is closed, so a re-registration queues behind it.
      f.running = this.closeHandle(f).finally(() => {
        f.running = null;
        if (f.pending) this.kick(f);
        else if (f.forgotten && this.files.get(f.key) === f) this.files.delete(f.key);
      });
      return;
    }
    if (!f.connected && f.handle && !f.idleTimer) {
      f.idleTimer = setTimeout(() => {
        f.idleTimer = null;
        if (!f.connected && !f.running && !f.pending) this.enqueueOp(f, () => this.closeHandle(f)).catch(() => undefined);
      }, this.o.idleCloseMs);
      f.idleTimer.unref();
    }
  }

  private clearIdle(f: LogFile): void {
    if (f.idleTimer) clearTimeout(f.idleTimer);
    f.idleTimer = null;
  }

  private mark(): void {
    if (this.shuttingDown) return;
    for (const f of this.files.values()) {
      if (!f.outputSinceMark) continue;
      f.outputSinceMark = false;
      this.annotate(f, 'mark');
    }
  }

  private dropQueuedData(f: LogFile): void {
    this.seal(f);
    const kept: QueueItem[] = [];
    for (const item of f.queue) {
      if (typeof item === 'function') kept.push(item);
      else this.droppedTotal += item.length;
    }
    f.queue.length = 0;
    f.queue.push(...kept);
    this.totalQueued -= f.queuedBytes;
    f.queuedBytes = 0;
  }

  /** One warning per VM serial port, operation and error code (ENOSPC, EACCES, …). */
  private diskError(f: LogFile, err: unknown, op: string, message: string): void {
    this.warnOnce(f, `${op}:${fsCode(err)}`, message, { ...errorFields(err) });
  }

  /** One warning per VM serial port and kind of trouble. */
  private warnOnce(f: LogFile, kind: string, message: string, fields: Record<string, unknown>): void {
    if (f.warned.has(kind)) return;
    f.warned.add(kind);
    this.log.warn(message, { vm: f.hub.displayName, file: join(this.dir, `${f.base}.log`), ...fields });
  }

  /** Waits for the file's loop to go idle (or to wait out a disk error). */
  private async settle(f: LogFile): Promise<void> {
    for (let i = 0; i < 1000 && f.running; i++) await f.running;
  }
}

async function writeAll(h: FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await h.write(data, off, data.length - off);
    off += bytesWritten;
  }
}

/**
 * The last `lines` lines of a file, reading backwards in 64 KiB blocks and at most
 * `maxBytes` (so a huge file, or one without newlines, is never read whole). A final
 * newline does not count as an empty last line. '' when the file does not exist.
 */
export async function readLastLines(path: string, lines: number, maxBytes = TAIL_MAX_BYTES): Promise<string> {
  if (!(lines > 0)) return '';
  let h: FileHandle;
  try {
    h = await fsp.open(path, 'r');
  } catch (err) {
    if (fsCode(err) === 'ENOENT') return '';
    throw err;
  }
  try {
    const size = (await h.stat()).size;
    const blocks: Buffer[] = [];
    let pos = size;
    let read = 0;
    let newlines = 0;
    let last = true;
    while (pos > 0 && read < maxBytes) {
      const len = Math.min(64 * 1024, pos, maxBytes - read);
      pos -= len;
      const buf = Buffer.alloc(len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await h.read(buf, got, len - got, pos + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      blocks.unshift(buf.subarray(0, got));
      read += len;
      for (let i = 0; i < got; i++) if (buf[i] === 0x0a) newlines++;
      if (last && got > 0 && buf[got - 1] === 0x0a) newlines--; // the file's final newline ends the last line
      last = false;
      if (newlines >= lines) break;
    }
    const data = Buffer.concat(blocks);
    // `data` ends at the end of the file; its final newline ends the last line.
    const end = data.length > 0 && data[data.length - 1] === 0x0a ? data.length - 1 : data.length;
    let start = 0;
    let seen = 0;
    for (let i = end - 1; i >= 0; i--) {
      if (data[i] === 0x0a && ++seen === lines) {
        start = i + 1;
        break;
      }
    }
    return data.subarray(start).toString('utf8');
  } finally {
    await h.close();
  }
}
