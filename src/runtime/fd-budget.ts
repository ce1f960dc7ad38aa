/**
 * File descriptors as a budget, so that running out is seen, refused by us, and never
 * takes the admin API down with it.
 *
 * When a process reaches RLIMIT_NOFILE, libuv's accept loop closes pending connections
 * itself (its "EMFILE trick") and reports nothing to Node: the peers are dropped with no
 * log line and no metric, and the admin API cannot accept either. So vspc refuses new
 * VM and console connections itself a little before the limit — a clear log line, a
 * counter — and keeps the last `reserve` descriptors for the admin API, console log
 * files and the database.
 *
 * Counting: the descriptors open at start (read from /proc/self/fd once), plus every
 * socket admitted through `admit()` until it closes; re-read from /proc every
 * `resyncMs` (reading /proc/self/fd costs about 2 ms per thousand descriptors, too much
 * per accept). Linux only; elsewhere, or when the limit is unlimited, nothing is refused.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Socket } from 'node:net';

export interface FdBudgetOptions {
  /** The soft RLIMIT_NOFILE; default: read from /proc/self/limits (Infinity when unknown). */
  limit?: number;
  /** Descriptors kept for the admin API, log files and the database; default max(64, 2% of the limit). */
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

export class FdBudget {
  readonly limit: number;
  readonly reserve: number;
  /** Connections refused because the budget was spent (metrics). */
  refused = 0;
  private open: number;
  private lastSync: number;
  private readonly resyncMs: number;
  private readonly countOpen: () => number;
  private readonly now: () => number;

  constructor(o: FdBudgetOptions = {}) {
    this.limit = o.limit ?? softFileLimit();
    this.reserve = o.reserve ?? Math.max(64, Math.ceil(this.limit * 0.02));
    this.resyncMs = o.resyncMs ?? 10_000;
    this.countOpen = o.countOpen ?? countProcFds;
    this.now = o.now ?? Date.now;
    this.open = this.countOpen();
    this.lastSync = this.now();
  }

  /** Descriptors in use, as far as the budget knows. */
  get inUse(): number {
    return this.open;
  }

  /** The most that `admit` lets in: the limit minus the reserve. */
  get ceiling(): number {
    return this.limit - this.reserve;
  }

  /**
   * An accepted socket asks for its descriptor. True: counted until it closes. False:
   * the budget is spent; the caller closes it (the descriptor is freed at once) and
   * says so in its log.
   */
  admit(socket: Socket): boolean {
    if (!Number.isFinite(this.limit)) return true;
    const t = this.now();
    // Near the ceiling the estimate must be right: re-read it then too, but at most
    // every 100 ms, so that a flood against a full budget cannot buy a /proc scan per accept.
    const near = this.open + 1 >= this.ceiling && t - this.lastSync >= 100;
    if (t - this.lastSync >= this.resyncMs || near) {
      this.open = this.countOpen();
      this.lastSync = t;
    }
    if (this.open + 1 > this.ceiling) {
      this.refused++;
      return false;
    }
    this.open++;
    socket.once('close', () => {
      this.open--;
    });
    return true;
  }
}
