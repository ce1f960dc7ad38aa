/**
 * The writer's queue: data and operations in order, with the byte count the bounds
 * are checked against. Synchronous and I/O-free; the writer's loop consumes it.
 */

/** Largest single write; also the most a file can be short of `maxSize` when it is rotated. */
export const WRITE_BATCH = 64 * 1024;
/** While the writer is busy, chunks smaller than this are copied into one buffer (not queued one by one). */
const COALESCE_BELOW = 4096;

/** A bound on the bytes queued by many writers together, and the count of what they lost. */
export class QueueBudget {
  /** Bytes queued now, over every writer sharing this budget. */
  queued = 0;
  /** Bytes dropped or lost so far, over every writer sharing this budget. */
  lost = 0;
  /** @param limit bytes; past it, writes are dropped (like a writer's own `maxBuffered`). */
  constructor(readonly limit: number) {}
}

/** A queued operation; a barrier is a `flush()` waiting for what was queued before it. */
export interface Task {
  readonly barrier: boolean;
  /** Never rejects: the operation's own promise carries its result. */
  run(): Promise<void>;
  /** Not run after all (the writer was destroyed). */
  cancel(err: Error): void;
}

export class WriteQueue {
  private readonly items: Array<Buffer | Task> = [];
  /** Small chunks that arrived while busy, copied together; logically after `items`. */
  private acc: Buffer | null = null;
  private accLen = 0;
  /** Bytes in `items` and `acc`. */
  private queued = 0;

  constructor(private readonly budget: QueueBudget | undefined) {}

  /** Bytes queued. */
  get bytes(): number {
    return this.queued;
  }

  /** Anything queued (data or operations)? */
  get pending(): boolean {
    return this.items.length > 0 || this.accLen > 0;
  }

  /** Would `n` more bytes take this queue past `max`, or the shared budget past its limit (each plus `slack`)? */
  wouldExceed(n: number, max: number, slack: number): boolean {
    const b = this.budget;
    return this.queued + n > max + slack || (b !== undefined && b.queued + n > b.limit + slack);
  }

  /**
   * Appends data, kept as it is, or copied when small and `busy` (a flood of tiny
   * chunks becomes a few buffers, not a long queue of objects).
   */
  pushData(data: Buffer, busy: boolean): void {
    this.count(data.length);
    if (data.length < COALESCE_BELOW && busy) {
      if (!this.acc || this.accLen + data.length > this.acc.length) {
        this.seal();
        this.acc = Buffer.allocUnsafe(WRITE_BATCH);
      }
      data.copy(this.acc, this.accLen);
      this.accLen += data.length;
      return;
    }
    this.seal();
    this.items.push(data);
  }

  /** Puts data first, ahead of everything queued. */
  unshiftData(data: Buffer): void {
    this.count(data.length);
    this.items.unshift(data);
  }

  pushTask(task: Task): void {
    this.seal();
    this.items.push(task);
  }

  /** The next item, or undefined when the queue is empty. */
  peek(): Buffer | Task | undefined {
    if (this.items.length === 0) this.seal();
    return this.items[0];
  }

  /** Removes the next item, which must be a task (data leaves through `takeBatch`). */
  shiftTask(): void {
    this.items.shift();
  }

  /** Up to `limit` bytes of the data at the head, in order; a chunk is split only if it comes first. */
  takeBatch(limit: number): Buffer {
    const parts: Buffer[] = [];
    let n = 0;
    while (this.items.length > 0 && n < limit) {
      const head = this.items[0];
      if (!Buffer.isBuffer(head)) break;
      const room = limit - n;
      if (head.length <= room) {
        this.items.shift();
        parts.push(head);
        n += head.length;
      } else if (n === 0) {
        parts.push(head.subarray(0, room));
        this.items[0] = head.subarray(room);
        n += room;
      } else {
        break;
      }
    }
    this.count(-n);
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }

  /** Removes the data, keeping the tasks in order. @returns the bytes removed. */
  dropData(): number {
    this.seal();
    const tasks = this.items.filter((item): item is Task => !Buffer.isBuffer(item));
    this.items.length = 0;
    this.items.push(...tasks);
    return this.forget();
  }

  /** Removes everything. @returns the bytes and the tasks removed. */
  clear(): { bytes: number; tasks: Task[] } {
    this.seal();
    const tasks = this.items.filter((item): item is Task => !Buffer.isBuffer(item));
    this.items.length = 0;
    return { bytes: this.forget(), tasks };
  }

  /** Removes the `flush()` barriers. @returns them, in order. */
  takeBarriers(): Task[] {
    const barriers: Task[] = [];
    for (let i = 0; i < this.items.length; ) {
      const item = this.items[i];
      if (!Buffer.isBuffer(item) && item.barrier) {
        barriers.push(item);
        this.items.splice(i, 1);
      } else {
        i++;
      }
    }
    return barriers;
  }

  /** Moves the accumulated small chunks to the queue (before a task, or when nothing else is left). */
  private seal(): void {
    if (this.acc && this.accLen > 0) this.items.push(this.acc.subarray(0, this.accLen));
    this.acc = null;
    this.accLen = 0;
  }

  private count(n: number): void {
    this.queued += n;
    if (this.budget) this.budget.queued += n;
  }

  private forget(): number {
    const n = this.queued;
    this.count(-n);
    return n;
  }
}
