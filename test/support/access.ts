/**
 * Helpers for the access-method tests (raw TCP, unix sockets, ptys): real client
 * programs as child processes whose output is collected, and the server's view of a
 * console's endpoints.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteCollector } from './sim/index.js';
import type { VmDetailView } from '../../src/admin/views.js';
import type { VspcConfig } from '../../src/config/config.js';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { reservePortRange } from './ports.js';
import { startServer, tempDir, waitUntil, withTimeout, type Cleanup, type TestServer } from './server.js';

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

/**
 * A server started from config file lines (after the base: loopback listeners, a
 * temporary database, a reserved port range), as `vspc --config` reads them — users,
 * groups and modes resolved by the real parser — with the tests' short retry and
 * grace periods.
 */
export async function startFromFile(
  t: { after(fn: () => unknown): void },
  lines: string[],
  extra: Partial<VspcConfig> = {},
): Promise<{ ts: TestServer; cleanup: Cleanup; file: string }> {
  const dir = tempDir('vspc-access-config-');
  t.after(() => dir.remove());
  const ports = await reservePortRange(8);
  const file = join(dir.dir, 'vspc.yaml');
  const base = ['proxyListen: 127.0.0.1:0', 'adminListen: 127.0.0.1:0', `db: ${join(dir.dir, 'vspc.db')}`, `portRange: ${ports.start}-${ports.end}`];
  writeFileSync(file, [...base, ...lines].join('\n') + '\n');
  const program = buildProgram().exitOverride();
  program.parse(['--config', file], { from: 'user' });
  const loaded = loadConfiguration(program);
  const { ts, cleanup } = await startServer(t, {
    config: { ...loaded.config, bindRetryMs: 200, closeGraceMs: 200, clientLockWaitMs: 50, ptyPollMs: 50, ...extra },
  });
  return { ts, cleanup, file };
}
