import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/logging/logger.js';

export type LogLine = Record<string, unknown> & { level: string; message: string };

/**
 * Captures the JSON log lines of a logger in memory, so tests can assert on them.
 * `print` (or VSPC_TEST_LOGS=1) also echoes them to stderr for debugging.
 */
export class LogCapture {
  readonly lines: LogLine[] = [];
  readonly logger: Logger;
  private partial = '';
  private waiters = new Set<() => void>();

  constructor(options: { level?: string; print?: boolean } = {}) {
    const print = options.print ?? process.env.VSPC_TEST_LOGS === '1';
    const stream = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        const text = this.partial + chunk.toString('utf8');
        const parts = text.split('\n');
        this.partial = parts.pop() ?? '';
        for (const p of parts) {
          if (!p.trim()) continue;
          if (print) process.stderr.write(p + '\n');
          try {
            this.lines.push(JSON.parse(p) as LogLine);
          } catch {
            this.lines.push({ level: 'unparsed', message: p });
          }
        }
        for (const w of [...this.waiters]) w();
        cb();
      },
    });
    this.logger = createLogger({ level: options.level ?? 'debug', format: 'json', stream });
  }

  find(pred: (l: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(pred);
  }

  filter(pred: (l: LogLine) => boolean): LogLine[] {
    return this.lines.filter(pred);
  }

  /** Resolves with the first line (from index `from`) matching `pred`; rejects after `timeoutMs`. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 3000, from = 0, what = 'log line'): Promise<LogLine> {
    const check = () => this.lines.slice(from).find(pred);
    const hit = check();
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const l = check();
        if (l) {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(l);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const recent = this.lines.slice(-15).map((l) => JSON.stringify(l)).join('\n  ');
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n  ${recent}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Lines about one VM-side connection, by the peer address the server logged. */
  forPeer(peer: string): LogLine[] {
    return this.lines.filter((l) => l.peer === peer);
  }
}
