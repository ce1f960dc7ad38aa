/**
 * Preloaded into a vspc server that the benchmark starts (`node --import <this>`),
 * over the IPC channel the benchmark opened:
 *
 * - the server exits at once when the benchmark goes away (the channel closes), so no
 *   process is left behind even if the benchmark is killed hard;
 * - `{type: 'bench:memory', gc}` is answered with `process.memoryUsage()` (after a full
 *   GC when asked and the server runs with --expose-gc) and the event-loop utilisation;
 * - `{type: 'bench:loop'}` with the event-loop delay (p50/p99/max ms) since the last one.
 *
 * It does nothing when there is no IPC channel, and changes nothing else in the server.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

if (process.send) {
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  process.on('disconnect', () => process.exit(70));
  process.on('message', (msg: unknown) => {
    const m = msg as { type?: string; id?: number; gc?: boolean } | null;
    if (m?.type === 'bench:loop') {
      // Event-loop delay since the last call (ms), then start over.
      const ms = (ns: number) => Math.round(ns / 1e4) / 100;
      process.send?.({ type: 'bench:loop', id: m.id, p50: ms(loop.percentile(50)), p99: ms(loop.percentile(99)), max: ms(loop.max), n: loop.count });
      loop.reset();
      return;
    }
    if (!m || m.type !== 'bench:memory') return;
    const gc = (globalThis as { gc?: () => void }).gc;
    if (m.gc && gc) {
      gc();
      gc();
    }
    const mem = process.memoryUsage();
    process.send?.({ type: 'bench:memory', id: m.id, memory: mem, gcDone: !!(m.gc && gc), elu: performance.eventLoopUtilization() });
  });
  // The channel must not keep a server alive that wants to exit on its own.
  process.channel?.unref();
}
