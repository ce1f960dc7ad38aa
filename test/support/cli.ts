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
export function runNode(script: string, args: string[], timeoutMs = 15_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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

  constructor(script: string, args: string[]) {
    this.proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString('utf8')));
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
    this.exit = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.exited = true;
        resolve({ code, signal });
      });
    });
  }

  async waitForStderr(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.stderr)) {
      if (this.exited) throw new Error(`child exited before ${pattern} appeared on stderr:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern} on stderr:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.stderr;
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
}
