/**
 * Request/response over a child's IPC channel, with a timeout on every call, and the
 * bookkeeping that guarantees no child outlives the benchmark.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import type { WorkerCall, WorkerCommand, WorkerReply, WorkerRequest, WorkerResponse } from './worker-api.js';

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  cmd: string;
}

/** Every child process the benchmark started; `killAll` ends them (SIGKILL). */
const children = new Set<ChildProcess>();

export function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Temporary directories removed when the benchmark exits, however it exits. */
const tempDirs = new Set<string>();

export function trackTempDir(dir: string): void {
  tempDirs.add(dir);
}

export function removeTempDir(dir: string): void {
  tempDirs.delete(dir);
  rmSync(dir, { recursive: true, force: true });
}

export function killAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  children.clear();
  for (const d of [...tempDirs]) {
    try {
      removeTempDir(d);
    } catch {
      /* best effort */
    }
  }
}

let exitHooksInstalled = false;
/**
 * Kill the children when this process exits or is interrupted. The children also
 * watch their IPC channel and exit when it closes, which covers a hard kill of
 * the benchmark itself.
 */
export function installExitHooks(onSignal?: (signal: NodeJS.Signals) => void): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      killAll();
      if (onSignal) onSignal(sig);
      else process.exit(130);
    });
  }
}

/** A forked load-generator worker (bench/worker.ts), asked commands of `WorkerApi`. */
export class WorkerHandle {
  private nextId = 1;
  private pending = new Map<number, Pending>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';
  private gone = false;

  private constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    track(proc);
    proc.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
      if (this.stderr.length > 64 * 1024) this.stderr = this.stderr.slice(-32 * 1024);
    });
    proc.on('message', (msg: unknown) => this.onMessage(msg));
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.gone = true;
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(new Error(`worker ${this.name} exited (${code ?? signal}) during ${p.cmd}${this.stderr ? `: ${this.stderr.trim().slice(-2000)}` : ''}`));
        }
        this.pending.clear();
        resolve({ code, signal });
      });
    });
  }

  static start(name: string, script: string, execArgv: string[] = []): WorkerHandle {
    const proc = fork(script, [name], {
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      execArgv: ['--enable-source-maps', ...execArgv],
    });
    return new WorkerHandle(name, proc);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Sends `cmd` with its request; resolves with the worker's response, rejects on its error, its exit or the timeout. */
  ask<K extends WorkerCommand>(cmd: K, req: WorkerRequest<K>, timeoutMs = 60_000): Promise<WorkerResponse<K>> {
    if (this.gone) return Promise.reject(new Error(`worker ${this.name} is gone`));
    const id = this.nextId++;
    return new Promise<WorkerResponse<K>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker ${this.name}: ${cmd} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: (v) => resolve(v as WorkerResponse<K>), reject, timer, cmd });
      const call: WorkerCall<K> = { id, cmd, args: req };
      this.proc.send(call);
    });
  }

  private onMessage(msg: unknown): void {
    const m = msg as WorkerReply | null;
    if (typeof m?.id !== 'number') return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(`worker ${this.name}: ${p.cmd}: ${m.error}`));
  }

  async stop(timeoutMs = 5000): Promise<void> {
    if (this.gone) return;
    try {
      await this.ask('shutdown', {}, timeoutMs);
    } catch {
      /* killed below */
    }
    const t = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** Spawns a node script with an IPC channel (used for the vspc server). */
export function spawnWithIpc(script: string, args: string[], nodeArgs: string[]): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  track(child);
  return child;
}
