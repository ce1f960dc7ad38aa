/**
 * Preloaded into a vspc server that the benchmark starts (`node --import <this>`),
 * over the IPC channel the benchmark opened:
 *
 * - the server exits at once when the benchmark goes away (the channel closes), so no
 *   process is left behind even if the benchmark is killed hard;
 * - `{type: 'bench:memory', gc}` is answered with `process.memoryUsage()` (after a full
 *   GC when asked and the server runs with --expose-gc) and the event-loop utilisation;
 * - `{type: 'bench:loop'}` with the event-loop delay (p50/p99/max ms) since the last one;
 * - `{type: 'bench:heapsnapshot', path}`: a full GC, then a heap snapshot written to `path`
 *   (bench/heap-diff.ts).
 *
 * It does nothing when there is no IPC channel, and changes nothing else in the server.
 */
import { getHeapSpaceStatistics, writeHeapSnapshot } from 'node:v8';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';

if (process.send) {
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  // Garbage collections since the last 'bench:loop' (count, total and longest pause).
  const gcs = { count: 0, totalMs: 0, maxMs: 0, major: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcs.count++;
      gcs.totalMs += e.duration;
      gcs.maxMs = Math.max(gcs.maxMs, e.duration);
      // detail.kind: 1 scavenge (minor), 2 mark-sweep-compact (major), 4 incremental marking, 8 weak callbacks.
      if (((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0) === 2) gcs.major++;
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('disconnect', () => process.exit(70));
  process.on('message', (msg: unknown) => {
    const m = msg as { type?: string; id?: number; gc?: boolean } | null;
    if (m?.type === 'bench:loop') {
      // Event-loop delay since the last call (ms), then start over.
      const ms = (ns: number) => Math.round(ns / 1e4) / 100;
      const round = (x: number) => Math.round(x * 100) / 100;
      process.send?.({
        type: 'bench:loop',
        id: m.id,
        p50: ms(loop.percentile(50)),
        p99: ms(loop.percentile(99)),
        max: ms(loop.max),
        n: loop.count,
        gc: { count: gcs.count, major: gcs.major, totalMs: round(gcs.totalMs), maxMs: round(gcs.maxMs) },
      });
      loop.reset();
      Object.assign(gcs, { count: 0, totalMs: 0, maxMs: 0, major: 0 });
      return;
    }
    if (m?.type === 'bench:heapsnapshot') {
      // Used by bench/heap-diff.ts: a full GC first, so that the snapshot holds what is live.
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      gc?.();
      const path = writeHeapSnapshot((m as { path?: string }).path);
      process.send?.({ type: 'bench:heapsnapshot', id: m.id, path });
      return;
    }
    if (!m || m.type !== 'bench:memory') return;
    const gc = (globalThis as { gc?: () => void }).gc;
    if (m.gc && gc) {
      gc();
      gc();
    }
    const mem = process.memoryUsage();
    // Committed and used bytes of each V8 heap space (new, old, code, large objects...).
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, { size: s.space_size, used: s.space_used_size }]));
    process.send?.({ type: 'bench:memory', id: m.id, memory: { ...mem, spaces }, gcDone: !!(m.gc && gc), elu: performance.eventLoopUtilization() });
  });
  // The channel must not keep a server alive that wants to exit on its own.
  process.channel?.unref();
}
