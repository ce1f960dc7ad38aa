/** Several ConsoleObservers as one (the Registry takes one). */
import type { ConsoleEvent, ConsoleObserver, ConsoleHub } from '../domain/console-hub.js';

/**
 * Calls each observer in the order given. Observers run on the data path and must not
 * throw; if one does anyway, the others still run and the hub is not disturbed: the
 * error is passed to `onError` (default: one process warning per observer).
 * Returns undefined when there is nothing to observe.
 */
export function combineObservers(
  ...observers: Array<ConsoleObserver | null | undefined | false>
): ConsoleObserver | undefined {
  return combineObserversWith({}, ...observers);
}

export function combineObserversWith(
  options: { onError?: (err: unknown, index: number) => void },
  ...observers: Array<ConsoleObserver | null | undefined | false>
): ConsoleObserver | undefined {
  const list = observers.filter((o): o is ConsoleObserver => !!o);
  if (list.length === 0) return undefined;
  const warned = new Set<number>();
  const onError =
    options.onError ??
    ((err: unknown, index: number) => {
      if (warned.has(index)) return;
      warned.add(index);
      process.emitWarning(`serial port observer ${index} threw: ${String((err as Error)?.message ?? err)}`, 'VspcObserverWarning');
    });
  const outputs = list.map((o, i) => [o, i] as const).filter(([o]) => typeof o.output === 'function');
  const events = list.map((o, i) => [o, i] as const).filter(([o]) => typeof o.event === 'function');
  // With no output observer (console logs off) the hub's per-chunk call is skipped entirely.
  return {
    output: outputs.length === 0 ? undefined : (hub: ConsoleHub, data: Buffer): void => {
      for (const [o, i] of outputs) {
        try {
          o.output!(hub, data);
        } catch (err) {
          onError(err, i);
        }
      }
    },
    event(hub: ConsoleHub, event: ConsoleEvent): void {
      for (const [o, i] of events) {
        try {
          o.event!(hub, event);
        } catch (err) {
          onError(err, i);
        }
      }
    },
  };
}
