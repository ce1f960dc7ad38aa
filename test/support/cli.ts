import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './server.js';

export const VSPC_JS = join(ROOT, 'dist/src/cli/vspc.js');
export const VSPC_ADMIN_JS = join(ROOT, 'dist/src/cli/vspc-admin.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a CLI script with node to completion; kills it after `timeoutMs`. */
export function runNode(script: string, args: string[], timeoutMs = 15_000, env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')}: no exit after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

export function vspcAdmin(adminAddress: string, args: string[], timeoutMs = 15_000): Promise<CliResult> {
  return runNode(VSPC_ADMIN_JS, ['--admin', adminAddress, ...args], timeoutMs);
}

/** A long-running child whose output is collected; `kill()` in cleanup no matter what. */
export class Child {
  stdout = '';
  stderr = '';
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly proc: ChildProcess;
  private exited = false;
  /** Re-checks of pending waits, run on every chunk of output and on exit. */
  private listeners = new Set<() => void>();

  /** `wrap`: a command the node process runs under, e.g. `['prlimit', '--nofile=256']`. */
  constructor(script: string, args: string[], wrap: string[] = []) {
    const argv = [...wrap, process.execPath, script, ...args];
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString('utf8');
      this.notify();
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
      this.notify();
    });
    this.exit = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.exited = true;
        this.notify();
        resolve({ code, signal });
      });
    });
  }

  /** Resolves with stderr once it matches `pattern`; rejects if the child exits first or after `timeoutMs`. */
  async waitForStderr(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    await this.waitFor(() => (pattern.test(this.stderr) ? true : undefined), timeoutMs, `${pattern} on stderr`);
    return this.stderr;
  }

  /** Resolves with stdout once it matches `pattern`; rejects if the child exits first or after `timeoutMs`. */
  async waitForStdout(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    await this.waitFor(() => (pattern.test(this.stdout) ? true : undefined), timeoutMs, `${pattern} on stdout`);
    return this.stdout;
  }

  /**
   * Resolves with the first value `probe` returns (re-run on every chunk of output);
   * rejects if the child exits first or after `timeoutMs`, naming `what`.
   */
  waitFor<T>(probe: () => T | undefined, timeoutMs = 10_000, what = 'output'): Promise<T> {
    const first = probe();
    if (first !== undefined) return Promise.resolve(first);
    return new Promise((resolve, reject) => {
      const finish = (fn: () => void) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        fn();
      };
      const check = () => {
        const v = probe();
        if (v !== undefined) finish(() => resolve(v));
        else if (this.exited) finish(() => reject(new Error(`child exited before ${what}; stderr:\n${this.stderr}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${this.stderr}`))), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  async waitExit(timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`child did not exit within ${timeoutMs} ms; stderr:\n${this.stderr}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL if still running, and wait for it to go. */
  async kill(): Promise<void> {
    if (this.exited) return;
    this.proc.kill('SIGKILL');
    await this.waitExit(5000).catch(() => undefined);
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}
