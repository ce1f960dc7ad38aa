/**
 * The process's file descriptors as seen by the parts that open them for consoles
 * (access methods' listeners, sources vspc maintains, console log files): every such
 * descriptor is asked for first, and one that does not fit is deferred, shown, and
 * tried again — never opened into EMFILE, which would take the admin API and vspc's
 * own listeners with it. The server implements it over src/runtime/fd-budget.ts (and
 * logs and counts the deferrals); tests give their own.
 */

/** What a console descriptor is for (log lines and metrics). */
export type DescriptorUse = 'listener' | 'source' | 'log-file';

/** Shown where a console waits for descriptors (`listenError`, an endpoint's `lastError`). */
export const DESCRIPTORS_EXHAUSTED = 'file descriptors exhausted';

/** A descriptor held from the budget; `release()` when it is closed (idempotent). */
export interface DescriptorLease {
  release(): void;
}

export interface DescriptorBudget {
  /**
   * One descriptor about to be opened for `use` of the console `consoleName`, or null
   * when the budget is spent (the budget's owner has logged it): defer, show
   * DESCRIPTORS_EXHAUSTED, and try again after `whenAvailable`.
   */
  acquire(use: DescriptorUse, consoleName: string): DescriptorLease | null;
  /** Calls `retry` once when descriptors may be available again; returns a cancel function. */
  whenAvailable(retry: () => void): () => void;
}
