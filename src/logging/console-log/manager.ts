/**
 * Console log files: every byte a console's source sends, whether or not anyone is
 * attached, one file per console under `--log-dir`. See docs/console-logs.md.
 *
 * The manager is the `ConsoleObserver`: it maps each console (its identity, key +
 * label) to one `AppendFileWriter` and turns the hub's output and events into bytes for
 * it. The writers do the I/O, bounded and asynchronous; the observer hooks, which run
 * synchronously on the data path, only queue. Console bytes never go to the logger.
 */
import { join } from 'node:path';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { Logger } from '../../domain/logger.js';
import type { ConsoleEvent, ConsoleHub, ConsoleObserver } from '../../domain/console-hub.js';
import { errorFields, VspcError } from '../../errors.js';
import type { DescriptorBudget } from '../../domain/descriptors.js';
import { LogFileError } from './errors.js';
import { describeEvent, droppedText, headerLine, lostText, stampedLine, withoutOwnLines } from './format.js';
import { LogFollower, type FollowSink } from './follow.js';
import { rotatedPath } from './rotation.js';
import { moveNameLink } from './links.js';
import { consoleLogBaseName, nameLinkBaseName } from './names.js';
import { readLastLinesBytes, readRange } from './tail.js';
import { AppendFileWriter, QueueBudget, type Loss } from './writer.js';

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
  /**
   * Where the console stands among the machines sharing its name (1: it has had the name
   * longest; see nameRanks in src/domain/address.ts): its by-name link is `NAME` for 1,
   * `NAME~<rank>` otherwise, so that a newcomer never takes an older console's link.
   * Default: 1 for all. Call `namesChanged()` when ranks may have changed.
   */
  nameRank?: (hub: ConsoleHub) => number;
  /**
   * The process's descriptor budget: a file that does not fit is not opened now, its
   * output stays queued (within maxBuffered) and the open is retried after retryMs.
   */
  descriptors?: DescriptorBudget;
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

/** Followers (`vspc-admin log --follow`) at once, all consoles together. */
export const MAX_FOLLOWERS = 64;
/** Bytes a follower may fall behind before it is cut off. */
export const FOLLOWER_MAX_BUFFERED = 1024 * 1024;

/** A running `follow`: `stop()` when the reader goes away; `started` once the last lines are out. */
export interface LogFollow {
  readonly started: Promise<void>;
  stop(): void;
}

/** vspc's own lines may exceed `maxBuffered` by this much (they are what says data was lost). */
const ANNOTATION_SLACK = 64 * 1024;
/** Consoles show what people type (passwords at a wrong prompt): not world-readable. */
const FILE_MODE = 0o640;
const DIR_MODE = 0o750;

/** One console's log: its writer and what the manager remembers about it. */
class ConsoleLog {
  outputSinceMark = false;
  /** Last byte queued, to start vspc's lines on a fresh line without blank lines. */
  lastByte = -1;
  /** The name the by-name link was last made for (undefined: not checked yet). */
  linkedName: string | null | undefined = undefined;
  /** Its rank among the machines sharing the name (1: the plain name). */
  linkedRank = 1;
  /** `namesVersion` when the link was last checked. */
  linkVersion = -1;
  /** The registry dropped the hub: close the file as soon as it is written. */
  forgotten = false;
  /** Kinds of trouble already warned about (one warning each). */
  readonly warned = new Set<string>();
  /** Readers following this file (`vspc-admin log --follow`). */
  readonly followers = new Set<LogFollower>();
  readonly writer: AppendFileWriter;

  constructor(
    readonly key: string,
    readonly base: string,
    public hub: ConsoleHub,
    makeWriter: (self: ConsoleLog) => AppendFileWriter,
  ) {
    this.writer = makeWriter(this);
  }
}

/**
 * The console logs of every VM serial port: a `ConsoleObserver` (pass it to the
 * Registry) plus the admin operations `tail` and `rotate`, and `forget` / `close`.
 */
export class ConsoleLogManager implements ConsoleObserver {
  readonly dir: string;
  private readonly o: Required<Omit<ConsoleLogOptions, 'ports' | 'logger' | 'dir' | 'nameRank' | 'descriptors'>>;
  private readonly log: Logger;
  private readonly ports: () => Iterable<ConsoleHub>;
  private readonly nameRank: (hub: ConsoleHub) => number;
  private readonly descriptors: DescriptorBudget | null;
  /** Bumped by namesChanged(): every link is checked again at its next write. */
  private namesVersion = 0;
  private readonly files = new Map<string, ConsoleLog>();
  /** Hubs the registry dropped: their files are closed as soon as they are written. */
  private readonly forgottenHubs = new WeakSet<ConsoleHub>();
  private readonly budget: QueueBudget;
  private followerCount = 0;
  private readonly markTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  /** Set first thing in close(), before `closing` is assigned. */
  private shuttingDown = false;

  constructor(options: ConsoleLogOptions) {
    this.dir = options.dir;
    this.log = options.logger.child({ component: 'console-log' });
    this.ports = options.ports ?? (() => []);
    this.nameRank = options.nameRank ?? (() => 1);
    this.descriptors = options.descriptors ?? null;
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
    this.budget = new QueueBudget(this.o.maxTotalBuffered);
    if (this.o.markIntervalMs > 0) {
      this.markTimer = setInterval(() => this.mark(), this.o.markIntervalMs);
      this.markTimer.unref();
    }
  }

  /** Files open right now (VMs gone for a while have none). */
  get openHandles(): number {
    let n = 0;
    for (const f of this.files.values()) if (f.writer.isOpen) n++;
    return n;
  }

  /** Bytes of output dropped or lost, all files together, since start. */
  get droppedTotal(): number {
    return this.budget.lost;
  }

  /** Bytes queued for the disk now, all files together. */
  get queuedBytes(): number {
    return this.budget.queued;
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
      return true;
    } catch (err) {
      this.log.warn('console log directory is not usable; console logs will be retried per VM', { dir: this.dir, ...errorFields(err) });
      return false;
    }
  }

  // --- ConsoleObserver: synchronous, never throws, never waits.

  output(hub: ConsoleHub, data: Buffer): void {
    if (this.shuttingDown || data.length === 0 || !hub.logged) return;
    try {
      const f = this.fileOf(hub);
      f.outputSinceMark = true;
      this.checkLink(f);
      this.write(f, data, false);
    } catch (err) {
      this.log.error('console log: unexpected error', errorFields(err));
    }
  }

  event(hub: ConsoleHub, e: ConsoleEvent): void {
    if (this.shuttingDown || !hub.logged) return;
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
   *
   * @throws LogFileError `VSPC_LOG_ROTATE_FAILED` (the first failure when rotating all;
   *   the others are rotated regardless).
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
   *
   * @throws LogFileError `VSPC_LOG_READ_FAILED` when the file cannot be read.
   */
  async tail(hub: ConsoleHub, lines: number): Promise<string> {
    return (await this.tailBytes(hub, lines)).toString('utf8');
  }

  /** `tail` as the file's exact bytes (`vspc-admin log --raw`). */
  async tailBytes(hub: ConsoleHub, lines: number): Promise<Buffer> {
    await this.files.get(this.keyOf(hub))?.writer.flush();
    return readLastLinesBytes(this.pathOf(hub), lines);
  }

  /** `tail` of a rotated file: `file` 1 is `x.log.1`, the newest rotated one; 0 the current file. '' when missing. */
  async tailFileBytes(hub: ConsoleHub, lines: number, file: number): Promise<Buffer> {
    if (file === 0) return this.tailBytes(hub, lines);
    return readLastLinesBytes(rotatedPath(this.pathOf(hub), file), lines);
  }

  /**
   * The log files of a VM serial port that exist: the numbers of its rotated files,
   * newest (1) first. (The current file is 0 and always counts, even before it exists.)
   */
  async rotatedFiles(hub: ConsoleHub): Promise<number[]> {
    const prefix = `${consoleLogBaseName(hub.identity.key, hub.identity.label)}.log.`;
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (err) {
      throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot list ${this.dir}`, this.dir, err);
    }
    return names
      .filter((n) => n.startsWith(prefix) && /^[1-9]\d{0,5}$/.test(n.slice(prefix.length)))
      .map((n) => Number(n.slice(prefix.length)))
      .sort((a, b) => a - b);
  }

  /**
   * Every log file of the VM serial port, opened, oldest first (the rotated ones from
   * the highest number down, then the current file), in order with the writes: what
   * was queued before is in them, and no rotation can slip in while they are opened.
   * The caller reads and closes them.
   *
   * @throws LogFileError `VSPC_LOG_READ_FAILED` when one cannot be opened (the others are closed).
   */
  async openAll(hub: ConsoleHub): Promise<FileHandle[]> {
    const path = this.pathOf(hub);
    const open = async (): Promise<FileHandle[]> => {
      const numbers = await this.rotatedFiles(hub);
      const paths = [...numbers.reverse().map((n) => rotatedPath(path, n)), path];
      const handles: FileHandle[] = [];
      try {
        for (const p of paths) {
          try {
            handles.push(await fsp.open(p, 'r'));
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot read ${p}`, p, err);
          }
        }
        return handles;
      } catch (err) {
        await Promise.all(handles.map((h) => h.close().catch(() => undefined)));
        throw err;
      }
    };
    if (this.shuttingDown || !hub.logged) return open();
    return this.fileOf(hub).writer.enqueue(open);
  }

  /**
   * Follows the VM serial port's log: first its last `lines` lines (0: none), then every
   * byte queued for it — the console's output and vspc's own lines — as it is queued,
   * until `stop()`, the VM serial port is forgotten or expires, vspc shuts down, or the
   * reader falls too far behind; each of those ends the stream with a line saying why.
   * Nothing is lost or repeated between the last lines and what follows: the file is
   * read in order with the writes.
   */
  follow(hub: ConsoleHub, lines: number, sink: FollowSink): LogFollow {
    const f = this.fileOf(hub);
    const follower = new LogFollower(sink, FOLLOWER_MAX_BUFFERED, (text) => stampedLine(this.o.now(), text, false), (x) => {
      if (f.followers.delete(x)) this.followerCount--;
    });
    f.followers.add(follower);
    this.followerCount++;
    const path = this.pathOf(hub);
    const started = (lines > 0 ? f.writer.enqueue(() => readLastLinesBytes(path, lines)) : Promise.resolve(Buffer.alloc(0))).then(
      (initial) => follower.start(initial),
      (err: unknown) => follower.end(this.shuttingDown ? 'vspc is shutting down' : `the log cannot be read (${err instanceof LogFileError ? (err.sysCode ?? err.code) : String(err)})`),
    );
    return { started, stop: () => follower.end(null) };
  }

  /** Readers following a log right now (all consoles). */
  get activeFollowers(): number {
    return this.followerCount;
  }

  /**
   * What earlier runs of vspc logged for this console, most recent last, vspc's own
   * lines removed: at most `maxBytes`, starting at a line start when there was more.
   * Only the bytes the file had before this process wrote to it (found again if the
   * file has been rotated since); empty when there were none, the console is not
   * logged, or they are gone (rotated past --log-keep). For a scrollback emptied by a
   * restart (ConsoleHub.primeScrollback): everything since the start is in the ring.
   */
  async recentOutput(hub: ConsoleHub, maxBytes: number): Promise<Buffer> {
    const none = Buffer.alloc(0);
    if (this.shuttingDown || !hub.logged || maxBytes <= 0) return none;
    const f = this.fileOf(hub);
    const path = this.pathOf(hub);
    // A little more than asked: vspc's lines come out of it, and the first line may be cut.
    const want = maxBytes + 16 * 1024;
    return f.writer.enqueue(async () => {
      // The file's size when this process first touched it; untouched so far, all of it is earlier runs'.
      const inherited = f.writer.initialSize ?? (await fsp.stat(path).then((st) => st.size, () => 0));
      if (inherited === 0) return none;
      // Each rotation since the start moved those bytes one file up: x.log → x.log.1 → ...
      const r = f.writer.rotations;
      if (r > this.o.keep) return none;
      const from = Math.max(0, inherited - want);
      // From a line start: the first line of a cut stretch may be half of one of vspc's.
      const fromLine = (x: Buffer) => {
        const nl = x.indexOf(0x0a);
        return nl < 0 ? none : x.subarray(nl + 1);
      };
      let b = await readRange(r === 0 ? path : rotatedPath(path, r), from, inherited);
      if (from > 0) b = fromLine(b);
      b = withoutOwnLines(b);
      return b.length > maxBytes ? fromLine(b.subarray(b.length - maxBytes)) : b;
    });
  }

  /** Resolves when everything queued so far is written (or given up on, or waiting out a disk error). */
  async flush(): Promise<void> {
    await Promise.all([...this.files.values()].map((f) => f.writer.flush()));
  }

  /** The registry dropped this VM serial port: write what is queued, then close its file. */
  forget(hub: ConsoleHub): void {
    this.forgottenHubs.add(hub);
    const f = this.files.get(this.keyOf(hub));
    if (!f || f.hub !== hub) return;
    f.forgotten = true;
    for (const x of [...f.followers]) x.end('the VM serial port was forgotten');
    f.writer.checkIdle();
  }

  /** Write everything queued, close every file, stop the timers. Idempotent. */
  close(): Promise<void> {
    this.shuttingDown = true;
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.markTimer) clearInterval(this.markTimer);
    // Everything queued has been handed to them already.
    for (const f of this.files.values()) for (const x of [...f.followers]) x.end('vspc is shutting down');
    await Promise.all([...this.files.values()].map((f) => f.writer.close()));
    this.files.clear();
  }

  // --- Consoles to writers.

  private keyOf(hub: ConsoleHub): string {
    return `${hub.identity.key}/${hub.identity.label}`;
  }

  private fileOf(hub: ConsoleHub): ConsoleLog {
    const key = this.keyOf(hub);
    let f = this.files.get(key);
    if (!f) {
      f = this.newFile(key, hub);
      this.files.set(key, f);
    } else if (f.hub !== hub && !this.forgottenHubs.has(hub)) {
      // Forgotten and registered again: same identity, same file. (A late event of
      // the forgotten hub still goes to the file but does not take it back.)
      f.hub = hub;
    }
    f.forgotten = this.forgottenHubs.has(f.hub);
    return f;
  }

  private newFile(key: string, hub: ConsoleHub): ConsoleLog {
    const base = consoleLogBaseName(hub.identity.key, hub.identity.label);
    return new ConsoleLog(key, base, hub, (f) => new AppendFileWriter({
      path: join(this.dir, `${f.base}.log`),
      fileMode: FILE_MODE,
      dirMode: DIR_MODE,
      maxBuffered: this.o.maxBuffered,
      urgentSlack: ANNOTATION_SLACK,
      budget: this.budget,
      rotation: { maxSize: this.o.maxSize, keep: this.o.keep },
      retryMs: this.o.retryMs,
      header: () => headerLine(this.o.now(), f.hub.identity),
      // Forgotten: close once written. Connected: more is coming, keep it open. Else idle close.
      keepOpenMs: () => (f.forgotten ? 0 : f.hub.source !== null ? Infinity : this.o.idleCloseMs),
      lossNote: (loss) => this.lossNote(f, loss),
      onError: (err) => this.writerError(f, err),
      onIdleClosed: () => {
        // Kept until closed, so that a re-registration queues behind the close.
        if (f.forgotten && this.files.get(f.key) === f) this.files.delete(f.key);
      },
      ...(this.descriptors ? { acquire: () => this.descriptors!.acquire('log-file', f.hub.displayName) } : {}),
    }));
  }

  /**
   * Consoles were added, removed or renamed: a console's rank among those sharing its
   * name may have changed, so each by-name link is checked again at its next write.
   */
  namesChanged(): void {
    this.namesVersion++;
  }

  /** Before writing to the file: is the by-name link up to date with the VM's name (and its rank)? */
  private checkLink(f: ConsoleLog): void {
    const name = f.hub.identity.name || null;
    if (name === f.linkedName && f.linkVersion === this.namesVersion) return;
    f.linkVersion = this.namesVersion;
    const rank = name === null ? 1 : this.nameRank(f.hub);
    if (name === f.linkedName && rank === f.linkedRank) return;
    const previous = f.linkedName ?? null;
    const previousRank = f.linkedRank;
    f.linkedName = name;
    f.linkedRank = rank;
    const label = f.hub.identity.label;
    const from = previous === null ? null : nameLinkBaseName(previous, label, previousRank);
    const to = name === null ? null : nameLinkBaseName(name, label, rank);
    // In order with the data, so the link appears with the file's first bytes.
    f.writer
      .enqueue(() => moveNameLink(this.dir, `${f.base}.log`, from, to, DIR_MODE))
      .catch((err: unknown) => this.diskError(f, err, 'link', 'console log name link failed'));
  }

  private annotate(f: ConsoleLog, text: string): void {
    this.write(f, stampedLine(this.o.now(), text, f.lastByte === 0x0a), true);
  }

  private write(f: ConsoleLog, data: Buffer, annotation: boolean): void {
    if (!f.writer.write(data, { urgent: annotation })) return;
    f.lastByte = data[data.length - 1];
    for (const x of f.followers) x.deliver(data);
  }

  private lossNote(f: ConsoleLog, loss: Loss): Buffer {
    if (loss.cause === 'backlog') return stampedLine(this.o.now(), droppedText(loss.bytes), f.lastByte === 0x0a);
    return stampedLine(this.o.now(), lostText(loss.bytes, loss.sysCode ?? 'UNKNOWN'), false);
  }

  private rotateOne(hub: ConsoleHub): Promise<void> {
    if (this.shuttingDown) return Promise.resolve();
    const f = this.fileOf(hub);
    return f.writer.rotate().then(
      () => undefined,
      (err: unknown) => {
        this.diskError(f, err, 'rotate', 'console log rotation failed');
        throw err;
      },
    );
  }

  private mark(): void {
    if (this.shuttingDown) return;
    for (const f of this.files.values()) {
      if (!f.outputSinceMark) continue;
      f.outputSinceMark = false;
      this.annotate(f, 'mark');
    }
  }

  // --- Failures: one warning per console and kind of trouble, not one per write.

  private writerError(f: ConsoleLog, err: LogFileError): void {
    switch (err.code) {
      case 'VSPC_LOG_BACKLOG_FULL':
        this.warnOnce(f, 'DROPPED', 'console log cannot keep up: dropping console output (a line in the file says how much)', {
          maxBuffered: this.o.maxBuffered,
          maxTotalBuffered: this.o.maxTotalBuffered,
        });
        return;
      case 'VSPC_LOG_CLOSE_FAILED':
        this.diskError(f, err, 'close', 'console log close failed');
        return;
      default:
        if (err.cause instanceof VspcError && err.cause.code === 'VSPC_FD_BUDGET_SPENT') {
          // Every console meets this at once: the budget's owner logs it (rate-limited), here it is detail.
          this.log.debug('console log file not opened: file descriptors exhausted; output queued, retrying', { vm: f.hub.displayName, file: f.writer.path, errorCode: 'VSPC_FD_BUDGET_SPENT' });
          return;
        }
        // Open, write, size rotation: the output stays queued (or one write is lost, and said so).
        this.diskError(f, err, 'write', 'console log write failed; retrying in a while, output queued meanwhile');
    }
  }

  /** One warning per VM serial port, operation and error code (ENOSPC, EACCES, …). */
  private diskError(f: ConsoleLog, err: unknown, op: string, message: string): void {
    // The file system's error says what is wrong (errorCode ENOSPC, ...); `op` says what we were doing.
    const fields = errorFields(err instanceof LogFileError && err.cause !== undefined ? err.cause : err);
    this.warnOnce(f, `${op}:${String(fields.errorCode)}`, message, fields);
  }

  private warnOnce(f: ConsoleLog, kind: string, message: string, fields: Record<string, unknown>): void {
    if (f.warned.has(kind)) return;
    f.warned.add(kind);
    this.log.warn(message, { vm: f.hub.displayName, file: f.writer.path, ...fields });
  }
}
