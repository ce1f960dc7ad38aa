/**
 * Child processes of a test (ssh, scp, tmux, ...) kept in one registry, each stopped by
 * its PID in every exit path: `stopAll()` in the test's after hook, and SIGKILL on
 * process exit. Every run is bounded.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

const everyone = new Set<ChildProcess>();
let hooked = false;

function killNow(c: ChildProcess, signal: NodeJS.Signals): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(c.pid, signal);
  } catch {
    /* gone */
  }
}

export class Procs {
  readonly live = new Set<ChildProcess>();

  spawn(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    this.live.add(c);
    everyone.add(c);
    c.once('exit', () => {
      this.live.delete(c);
      everyone.delete(c);
    });
    c.on('error', () => {});
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const x of everyone) killNow(x, 'SIGKILL');
      });
    }
    return c;
  }

  /** Runs to completion (stdin: `input`, then closed); SIGKILL by PID after `timeoutMs` (rejects). */
  run(cmd: string, args: string[], o: { input?: Buffer | string; timeoutMs?: number } = {}): Promise<RunResult> {
    const t0 = performance.now();
    const c = this.spawn(cmd, args);
    const out: Buffer[] = [];
    let err = '';
    c.stdout!.on('data', (b: Buffer) => out.push(b));
    c.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    c.stdin!.on('error', () => {});
    c.stdin!.end(o.input ?? '');
    const timeoutMs = o.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        killNow(c, 'SIGKILL');
        reject(new Error(`${cmd} ${args.join(' ')}: no exit after ${timeoutMs} ms; stderr: ${err}`));
      }, timeoutMs);
      c.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      c.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: Buffer.concat(out), stderr: err, ms: performance.now() - t0 });
      });
    });
  }

  /** SIGTERM to each by PID, SIGKILL after `graceMs`; resolves once all exited. */
  async stopAll(graceMs = 2000): Promise<void> {
    const all = [...this.live];
    for (const c of all) killNow(c, 'SIGTERM');
    await Promise.all(
      all.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => killNow(c, 'SIGKILL'), graceMs);
            c.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
  }
}

/** Kills a process that is not our child (a daemon such as the tmux server) by its PID. */
export function killPid(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

const registries: LiveProcesses[] = [];
let exitHooked = false;

/**
 * Long-lived children of one kind (QEMU guests, PostgreSQL servers, conserver) that must
 * not outlive the test process: each registry kills what it still holds, its own way
 * (`kill`: SIGKILL, PostgreSQL's immediate-shutdown SIGQUIT, a process group), on
 * process exit and on SIGINT/SIGTERM, after which the signal's default comes back.
 */
export class LiveProcesses {
  private readonly live = new Set<ChildProcess>();

  constructor(private readonly kill: (c: ChildProcess) => void) {
    registries.push(this);
  }

  add(c: ChildProcess): void {
    hookExit();
    this.live.add(c);
  }

  delete(c: ChildProcess): void {
    this.live.delete(c);
  }

  /** The children held now. */
  [Symbol.iterator](): IterableIterator<ChildProcess> {
    return this.live.values();
  }

  /** Kills every child still held, now. */
  killAll(): void {
    for (const c of this.live) {
      try {
        this.kill(c);
      } catch {
        /* gone */
      }
    }
    this.live.clear();
  }
}

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const killAll = (): void => {
    for (const r of registries) r.killAll();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    const onSignal = (): void => {
      killAll();
      // Listening for a signal cancels Node's default of dying from it: when no one
      // else listens, restore the default and die from the same signal.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
}
