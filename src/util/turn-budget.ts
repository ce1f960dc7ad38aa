/**
 * Fairness between byte sources that share one event loop: each source may read a
 * bounded number of bytes per event-loop turn, then it is paused and resumed on the
 * next turn (setImmediate: after the poll phase that served everyone else).
 *
 * Why: libuv reads a readable socket up to 32 times (64 KiB each) in one go, so one
 * turn with 100 VMs pouring output moved tens of megabytes, and a keystroke that
 * arrived meanwhile waited for all of it, twice (in, and the echo out). With a budget
 * a streaming source moves about one read per turn, and a keystroke waits for one
 * read per busy source instead of a socket window each.
 *
 * The cost is paid only by sources that exceed the budget: one pause and one resume
 * per turn (Node stops reading the socket after at most one more read, which it keeps
 * for the resume). Nothing is dropped or reordered: a paused source's bytes wait in
 * the kernel (TCP flow control holds the sender) or in its stream's buffer, in order.
 *
 * Sans-I/O apart from the one `setImmediate` per turn with traffic.
 */

/** A source the budget can pause for the rest of a turn. */
export interface TurnBudgeted {
  /** Bookkeeping owned by TurnBudget: the turn these bytes were counted in. */
  budgetTurn: number;
  /** Bytes counted in `budgetTurn`. */
  budgetBytes: number;
  /** Stop reading until `resumeTurn` (e.g. `socket.pause()`). */
  pauseTurn(): void;
  /** Read again (e.g. `socket.resume()`), unless reading stopped for another reason meanwhile. */
  resumeTurn(): void;
}

/** Bytes a source may read per event-loop turn before it waits for the next one. */
export const DEFAULT_BYTES_PER_TURN = 16 * 1024;

export class TurnBudget {
  private turn = 1;
  private scheduled = false;
  private paused: TurnBudgeted[] = [];

  constructor(readonly bytesPerTurn = DEFAULT_BYTES_PER_TURN) {}

  /** Sources paused until the next turn (tests, metrics). */
  get waiting(): number {
    return this.paused.length;
  }

  /**
   * `source` has just handled `bytes` it read. Returns true when that used up its
   * budget for this turn: it has been paused (`pauseTurn`) and will be resumed on the
   * next turn.
   */
  charge(source: TurnBudgeted, bytes: number): boolean {
    if (source.budgetTurn !== this.turn) {
      source.budgetTurn = this.turn;
      source.budgetBytes = 0;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.nextTurn);
    }
    source.budgetBytes += bytes;
    if (source.budgetBytes < this.bytesPerTurn) return false;
    source.pauseTurn();
    this.paused.push(source);
    return true;
  }

  private readonly nextTurn = (): void => {
    this.scheduled = false;
    this.turn++;
    const list = this.paused;
    if (list.length === 0) return;
    this.paused = [];
    for (const s of list) s.resumeTurn();
  };
}

/** The one budget every VM-side source of the process shares (they share the event loop). */
export const sourceReadBudget = new TurnBudget();
