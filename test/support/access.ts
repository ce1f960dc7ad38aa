/**
 * Helpers for the access-method tests (raw TCP, unix sockets, ptys): real client
 * programs as child processes whose output is collected, and the server's view of a
 * console's endpoints.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { ByteCollector } from './sim/index.js';
import type { VmDetailView } from '../../src/admin/views.js';
import { waitUntil, withTimeout, type Cleanup, type TestServer } from './server.js';

/** A program (socat, stty, ...) with stdin to write to and stdout/stderr collected. */
export class Child {
  readonly stdout = new ByteCollector();
  stderr = '';
  readonly proc: ChildProcess;
  readonly exit: Promise<number | null>;
  exited = false;

  constructor(cmd: string, args: string[], cleanup: Cleanup, options: SpawnOptions = {}) {
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options });
    this.proc.stdout!.on('data', (d: Buffer) => this.stdout.push(d));
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
    this.proc.stdin!.on('error', () => undefined);
    this.exit = new Promise((resolve) =>
      this.proc.on('close', (code) => {
        this.exited = true;
        this.stdout.end(`${cmd} exited (${code}): ${this.stderr.trim()}`);
        resolve(code);
      }),
    );
    this.proc.on('error', (err) => {
      this.stderr += String(err);
    });
    cleanup.add(() => this.kill());
  }

  write(data: Buffer | string): void {
    this.proc.stdin!.write(data);
  }

  code(ms = 8000): Promise<number | null> {
    return withTimeout(this.exit, ms, `${this.proc.spawnargs.join(' ')} exit (stderr: ${this.stderr})`);
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }
}

/** Every byte value once, 0..255. */
export function allBytes(): Buffer {
  return Buffer.from(Array.from({ length: 256 }, (_, i) => i));
}

/** `show` for a console. */
export function show(ts: TestServer, vm: string): Promise<VmDetailView> {
  return ts.api<VmDetailView>(`/api/v1/show?vm=${encodeURIComponent(vm)}`);
}

/** Waits until `show` satisfies `cond`; returns the last view. */
export async function waitShow(ts: TestServer, vm: string, cond: (d: VmDetailView) => boolean, what: string, timeoutMs = 5000): Promise<VmDetailView> {
  let last: VmDetailView | null = null;
  await waitUntil(async () => {
    last = await show(ts, vm);
    return cond(last);
  }, timeoutMs, `${what} (last: ${JSON.stringify((last as VmDetailView | null)?.access)})`);
  return last!;
}
