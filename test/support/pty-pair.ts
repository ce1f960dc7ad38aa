/**
 * A pty pair from socat, for device-console tests:
 *
 *   socat -d -d pty,raw,echo=0,link=DIR/a pty,raw,echo=0,link=DIR/b
 *
 * vspc opens `a` (a symlink to one pty slave), the test talks through `b` (the other).
 * Ready once socat says it is in its transfer loop (stderr, no sleeping); stopped by
 * PID with SIGTERM, SIGKILL if it lingers, and awaited. `PtyEnd` is the test's side:
 * a tty read/write stream on `b` with awaitable output.
 *
 * No test-framework imports; every wait is bounded.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants, openSync, write } from 'node:fs';
import tty from 'node:tty';
import { join } from 'node:path';

export interface PtyPair {
  /** vspc's side: DIR/a (a symlink to /dev/pts/N). */
  readonly a: string;
  /** The test's side: DIR/b. */
  readonly b: string;
  /** The pty slaves socat made, as it reported them. */
  readonly ptys: [string, string];
  readonly pid: number;
  /** SIGTERM, SIGKILL after 2 s; resolves once socat has exited. Idempotent. */
  stop(): Promise<void>;
}

/** Starts socat; resolves once both ptys exist and the transfer loop runs. */
export function startPtyPair(dir: string, names: [string, string] = ['a', 'b'], timeoutMs = 5000): Promise<PtyPair> {
  const a = join(dir, names[0]);
  const b = join(dir, names[1]);
  const child = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stopping: Promise<void> | null = null;
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGTERM');
        } catch {
          /* gone already */
        }
        const timer = setTimeout(() => {
          try {
            if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }, 2000);
        await exited;
        clearTimeout(timer);
      }
    })();
    return stopping;
  };
  return new Promise((resolve, reject) => {
    let err = '';
    const ptys: string[] = [];
    const fail = (why: string): void => {
      clearTimeout(timer);
      void stop().then(() => reject(new Error(`socat: ${why}; stderr: ${err.slice(-500)}`)));
    };
    const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
    const onExit = (code: number | null, signal: string | null): void => fail(`exited (${code ?? signal}) before it was ready`);
    child.once('error', (e) => fail(e.message));
    child.once('exit', onExit);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      err += text;
      for (const m of text.matchAll(/PTY is (\/dev\/\S+)/g)) ptys.push(m[1]);
      if (/starting data transfer loop/.test(err) && ptys.length >= 2) {
        clearTimeout(timer);
        child.off('exit', onExit);
        // Keep reading stderr so socat never blocks on a full pipe.
        resolve({ a, b, ptys: [ptys[0], ptys[1]], pid: child.pid!, stop });
      }
    });
  });
}

/** The test's end of a pty: what arrives (awaitable) and a way to write. */
export class PtyEnd {
  private readonly fd: number;
  /** Owns the descriptor (libuv's tty handle closes it). */
  private readonly input: tty.ReadStream;
  private data = Buffer.alloc(0);
  private waiters = new Set<() => void>();
  private closedFlag = false;

  constructor(path: string) {
    this.fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK);
    this.input = new tty.ReadStream(this.fd);
    this.input.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    const closed = (): void => {
      this.closedFlag = true;
      this.wake();
    };
    this.input.on('error', closed);
    this.input.on('close', closed);
  }

  get received(): Buffer {
    return this.data;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Writes (small amounts: the descriptor is non-blocking). */
  write(data: string | Buffer): Promise<void> {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    return new Promise((resolve, reject) => write(this.fd, bytes, (err) => (err ? reject(err) : resolve())));
  }

  /** Stops reading (the pty fills up: backpressure towards vspc) / reads again. */
  pause(): void {
    this.input.pause();
  }

  resume(): void {
    this.input.resume();
  }

  /** Resolves once `want` has arrived (from offset `from`); rejects on timeout or close. */
  waitFor(want: string | Buffer, timeoutMs = 5000, from = 0): Promise<void> {
    const needle = typeof want === 'string' ? Buffer.from(want) : want;
    return this.until(() => this.data.subarray(from).includes(needle), timeoutMs, `${JSON.stringify(needle.toString('latin1').slice(0, 60))} on the pty`);
  }

  /** Resolves once `check()` holds (checked on every chunk); rejects on timeout or close. */
  until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (err) reject(err);
        else resolve();
      };
      const waiter = (): void => {
        if (check()) done();
        else if (this.closedFlag) done(new Error(`pty closed while waiting for ${what}; got ${JSON.stringify(this.data.toString('latin1').slice(-200))}`));
      };
      const timer = setTimeout(
        () => done(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(this.data.toString('latin1').slice(-200))}`)),
        timeoutMs,
      );
      this.waiters.add(waiter);
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Closes the descriptor (idempotent). */
  close(): void {
    this.input.destroy();
  }
}
