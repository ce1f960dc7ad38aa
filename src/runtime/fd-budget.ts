/**
 * File descriptors as a budget, so that running out is seen, refused by us, and never
 * takes the admin API down with it.
 *
 * When a process reaches RLIMIT_NOFILE, libuv's accept loop closes pending connections
 * itself (its "EMFILE trick") and reports nothing to Node: the peers are dropped with no
 * log line and no metric, and the admin API cannot accept either; a listen() or an
 * open() fails with EMFILE wherever it happens to be. So everything vspc opens for a
 * console goes through this budget, which says no a little before the limit:
 *
 * - `admit(socket)`: an accepted VM, console-client or broker connection;
 * - `acquire()`: a descriptor vspc is about to open for a console — its client-port
 *   listener(s), the outgoing connection or listener of a source vspc maintains, its
 *   console log file — held until `release()`.
 *
 * What does not fit is refused (a connection) or deferred (the rest: the caller shows
 * "file descriptors exhausted" and tries again, see `onAvailable`). The last `reserve`
 * descriptors are never handed out: they are the admin API's (its connections are
 * capped from it, src/admin/admin-server.ts), the database's, vspc's own listeners',
 * and those of short reads (console log tails, discovery scans).
 *
 * Counting: `held`, every socket admitted and every lease acquired until it is closed
 * or released (exact), plus `untracked`, the descriptors the budget did not hand out
 * (the database, stdio, vspc's own listeners, admin connections, short reads). The
 * latter is read from /proc/self/fd at start and re-read every `resyncMs`, and near
 * the ceiling at most every 100 ms (reading /proc/self/fd costs about 2 ms per
 * thousand descriptors, too much per accept), as the count minus `held` — but never
 * below the count at start: a lease is acquired before its descriptor is opened (a
 * listen() completes on a later turn), so in a burst the count can lag behind `held`,
 * and subtracting it then would hand the same descriptors out twice. Linux only;
 * elsewhere, or when the limit is unlimited, nothing is refused.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';

export interface FdBudgetOptions {
  /** The soft RLIMIT_NOFILE; default: read from /proc/self/limits (Infinity when unknown). */
  limit?: number;
  /** Descriptors kept for the admin API, the database, vspc's own listeners and short reads; default max(64, 2% of the limit). */
  reserve?: number;
  /** How often the count is re-read from /proc, in ms (default 10 s). */
  resyncMs?: number;
  /** Descriptors open now; default: the entries of /proc/self/fd. */
  countOpen?: () => number;
  now?: () => number;
}

/** The soft "Max open files" of this process, or Infinity. */
export function softFileLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    return soft && /^\d+$/.test(soft) ? Number(soft) : Infinity;
  } catch {
    return Infinity;
  }
}

function countProcFds(): number {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return 0;
  }
}

/** A descriptor (or a few) held from the budget; `release()` is idempotent. */
export interface FdLease {
  release(): void;
}

/** The budget an admitted socket is counted in (see `admit`). */
const ADMITTED = Symbol('vspc.fdBudget');
type AdmittedSocket = Socket & { [ADMITTED]?: FdBudget };

/** A lease of `n` descriptors: one small object (every client-port listener holds one). */
class Lease implements FdLease {
  constructor(
    private budget: FdBudget | null,
    private readonly n: number,
  ) {}

  release(): void {
    const b = this.budget;
    if (!b) return;
    this.budget = null;
    b.freed(this.n);
  }
}

/** A lease that holds nothing (no limit to keep). */
const FREE: FdLease = { release: () => undefined };

/** How often waiters (onAvailable) are checked again while they wait, in ms. */
const WAITER_CHECK_MS = 1000;

export class FdBudget {
  readonly limit: number;
  readonly reserve: number;
  /** Connections refused because the budget was spent (metrics). */
  refused = 0;
  /** Descriptors vspc wanted to open for a console but deferred (acquire() said no; metrics). */
  deferred = 0;
  /** Descriptors handed out (admitted sockets, leases) and not yet given back. */
  private held = 0;
  /** Descriptors open that the budget did not hand out, as of the last count. */
  private untracked: number;
  /** The count at start: `untracked` is never taken below it. */
  private readonly floor: number;
  private lastSync: number;
  private readonly resyncMs: number;
  private readonly countOpen: () => number;
  private readonly now: () => number;
  private readonly waiters = new Set<() => void>();
  private notifyScheduled = false;
  private waiterTimer: NodeJS.Timeout | null = null;

  constructor(o: FdBudgetOptions = {}) {
    this.limit = o.limit ?? softFileLimit();
    this.reserve = o.reserve ?? Math.max(64, Math.ceil(this.limit * 0.02));
    this.resyncMs = o.resyncMs ?? 10_000;
    this.countOpen = o.countOpen ?? countProcFds;
    this.now = o.now ?? Date.now;
    this.floor = this.countOpen();
    this.untracked = this.floor;
    this.lastSync = this.now();
  }

  /** Descriptors in use, as far as the budget knows. */
  get inUse(): number {
    return this.untracked + this.held;
  }

  /** The most that `admit` and `acquire` hand out: the limit minus the reserve. */
  get ceiling(): number {
    return this.limit - this.reserve;
  }

  /**
   * The admin API's share of the reserve: connections it may hold at once (half the
   * reserve, 16 to 1024), the rest left for the database, vspc's own listeners and short
   * reads. With no limit, 1024.
   */
  get adminConnections(): number {
    if (!Number.isFinite(this.limit)) return 1024;
    return Math.min(1024, Math.max(16, Math.floor(this.reserve / 2)));
  }

  /** Whether `n` more descriptors fit under the ceiling now. */
  canOpen(n = 1): boolean {
    if (!Number.isFinite(this.limit)) return true;
    this.sync(n);
    return this.inUse + n <= this.ceiling;
  }

  /**
   * An accepted socket asks for its descriptor. True: counted until it closes. False:
   * the budget is spent; the caller closes it (the descriptor is freed at once) and
   * says so in its log.
   */
  admit(socket: Socket): boolean {
    if (!Number.isFinite(this.limit)) return true;
    if (!this.canOpen(1)) {
      this.refused++;
      return false;
    }
    this.held++;
    // A shared listener that finds the budget on the socket: no closure and no
    // once-wrapper per connection (every VM connection and vMotion destination is admitted).
    (socket as AdmittedSocket)[ADMITTED] = this;
    socket.on('close', FdBudget.onAdmittedClose);
    return true;
  }

  private static onAdmittedClose(this: AdmittedSocket): void {
    const budget = this[ADMITTED];
    if (!budget) return;
    this[ADMITTED] = undefined;
    budget.freed(1);
  }

  /**
   * `n` descriptors vspc is about to open (a listener, an outgoing connection, a log
   * file), counted until `release()`; null when they do not fit: the caller defers the
   * open and tries again later (`onAvailable`).
   */
  acquire(n = 1): FdLease | null {
    if (!Number.isFinite(this.limit)) return FREE;
    if (!this.canOpen(n)) {
      this.deferred++;
      return null;
    }
    this.held += n;
    return new Lease(this, n);
  }

  /**
   * Calls `retry` once, when descriptors may be available again: after a release or a
   * close the budget saw, or when a re-count (every second while anyone waits) finds
   * room. Returns a function that cancels the wait.
   */
  onAvailable(retry: () => void): () => void {
    const once = () => {
      this.waiters.delete(once);
      retry();
    };
    this.waiters.add(once);
    this.armWaiterTimer();
    return () => {
      this.waiters.delete(once);
    };
  }

  /** Waiters right now (tests, diagnostics). */
  get waiting(): number {
    return this.waiters.size;
  }

  private sync(n: number): void {
    const t = this.now();
    // Near the ceiling the estimate must be right: re-read it then too, but at most
    // every 100 ms, so that a flood against a full budget cannot buy a /proc scan per accept.
    const near = this.inUse + n >= this.ceiling && t - this.lastSync >= 100;
    if (t - this.lastSync >= this.resyncMs || near) {
      this.untracked = Math.max(this.floor, this.countOpen() - this.held);
      this.lastSync = t;
    }
  }

  /** @internal Lease and admitted sockets give their descriptors back here. */
  freed(n: number): void {
    this.held -= n;
    if (this.waiters.size > 0) this.scheduleNotify();
  }

  /**
   * Waiters are told once per turn of the event loop, after the closes of that turn,
   * oldest first and only while there is room: each one acquires at once when told, so
   * a freed descriptor wakes about one waiter, not all of them (hundreds of deferred
   * consoles would otherwise each retry, and fail, on every release).
   */
  private scheduleNotify(): void {
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      for (const w of [...this.waiters]) {
        if (!this.canOpen(1)) return;
        if (this.waiters.has(w)) w();
      }
    });
  }

  private armWaiterTimer(): void {
    if (this.waiterTimer || !Number.isFinite(this.limit)) return;
    this.waiterTimer = setInterval(() => {
      if (this.waiters.size === 0) {
        clearInterval(this.waiterTimer!);
        this.waiterTimer = null;
        return;
      }
      // Descriptors closed elsewhere (admin connections, short reads) are only seen by a re-count.
      this.lastSync = 0;
      this.scheduleNotify();
    }, WAITER_CHECK_MS);
    this.waiterTimer.unref();
  }
}
