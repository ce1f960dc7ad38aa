/**
 * A real conserver daemon (Debian's conserver-server) for the layering recipe of
 * docs/conserver.md, run in the foreground on loopback:
 *
 *   conserver -C DIR/conserver.cf -P DIR/conserver.passwd -p PORT -M 127.0.0.1
 *
 * conserver writes its pid file at a path fixed when it was built (`conserver -V`:
 * /run/conserver/conserver.pid on Debian) and removes it when it exits, which would
 * clobber a system conserver's. So, where the kernel allows it (root), it runs in a
 * private mount namespace with a directory of its own mounted on that path's
 * directory (`unshare --mount` + `mount --bind`, then `exec`: the PID is conserver's);
 * elsewhere only when no pid file is there. It is started detached (its own process
 * group, which its per-group children join), stopped by PID with SIGTERM (it passes it
 * on to its children), then SIGKILL to its process group if it lingers, and awaited;
 * every one still running is killed when this process exits.
 *
 * Also: `console` (conserver-client) run under `script` for a pty, the console logs,
 * and the docs/conserver.md code blocks the test uses. No test-framework imports;
 * every wait is bounded.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, mkdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { LiveProcesses } from './procs.js';

/** An executable on PATH (or in the sbin directories, which a non-root PATH lacks), or null. */
export function findProgram(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin'];
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

// ------------------------------------------------------------------ process registry

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
}

// Each conserver and its per-group children go by process group, on exit, SIGINT and SIGTERM.
const live = new LiveProcesses(killGroup);

/** Stops one child by PID: `signal`, then SIGKILL to its process group after `graceMs`; resolves once it has exited. */
async function stopChild(child: ChildProcess, exited: Promise<unknown>, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    try {
      process.kill(child.pid, signal);
    } catch {
      /* gone already */
    }
    const timer = setTimeout(() => killGroup(child), graceMs);
    await exited;
    clearTimeout(timer);
  }
  // Its per-group children, should any have outlived it.
  killGroup(child);
  live.delete(child);
}

// ------------------------------------------------------------------------ conserver

/** What `conserver -V` says about where it keeps its pid file. */
export function conserverPidFile(bin: string): string | null {
  try {
    const out = execFileSync(bin, ['-V'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
    return /default pidfile is `([^']+)'/.exec(out)?.[1] ?? null;
  } catch (err) {
    const out = String((err as { stdout?: unknown }).stdout ?? '');
    return /default pidfile is `([^']+)'/.exec(out)?.[1] ?? null;
  }
}

/**
 * How to keep conserver's pid file away from a system conserver's: a private mount
 * namespace (the argv prefix to run conserver under), plain (nothing to keep away
 * from), or a reason why the test cannot run here.
 */
export function conserverIsolation(bin: string, ownRunDir: string): { wrap: string[] } | { skip: string } {
  const pidFile = conserverPidFile(bin);
  if (!pidFile) return { skip: `cannot tell where ${bin} writes its pid file (conserver -V)` };
  const runDir = dirname(pidFile);
  mkdirSync(ownRunDir, { recursive: true });
  const unshare = findProgram('unshare');
  if (unshare && existsSync(runDir)) {
    const wrap = [unshare, '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$0" "$1" && shift && exec "$@"', ownRunDir, runDir];
    try {
      execFileSync(wrap[0], [...wrap.slice(1), 'true'], { stdio: 'ignore', timeout: 5000 });
      return { wrap };
    } catch {
      /* not allowed here (not root, or no CAP_SYS_ADMIN) */
    }
  }
  if (!existsSync(pidFile)) return { wrap: [] };
  return { skip: `${pidFile} exists (a conserver is running?) and no private mount namespace is possible here to keep ours away from it` };
}

export interface ConserverOptions {
  bin: string;
  cf: string;
  passwd: string;
  /** The master port (-p), on 127.0.0.1 (-M). */
  port: number;
  /** From conserverIsolation(). */
  wrap: string[];
  /** Until the master port accepts connections. */
  startTimeoutMs?: number;
}

/** A running conserver (the master process; it forks one child per console group). */
export class Conserver {
  stderr = '';
  stdout = '';
  private stopping: Promise<void> | null = null;

  private constructor(
    private readonly child: ChildProcess,
    readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
    readonly port: number,
  ) {}

  get pid(): number {
    return this.child.pid!;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  static async start(o: ConserverOptions): Promise<Conserver> {
    const argv = [...o.wrap, o.bin, '-C', o.cf, '-P', o.passwd, '-p', String(o.port), '-M', '127.0.0.1'];
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    live.add(child);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', () => resolve({ code: null, signal: null }));
    });
    const c = new Conserver(child, exited, o.port);
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => (c.stdout += s));
    child.stderr!.on('data', (s: string) => (c.stderr += s));
    const timeoutMs = o.startTimeoutMs ?? 10_000;
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        if (!c.running) throw new Error(`conserver exited before it listened on ${o.port}: ${c.stderr.slice(-2000)}`);
        if (await accepts(o.port)) return c;
        if (Date.now() > deadline) throw new Error(`conserver: not listening on ${o.port} after ${timeoutMs} ms: ${c.stderr.slice(-2000)}`);
        await delay(20);
      }
    } catch (err) {
      await c.stop();
      throw err;
    }
  }

  /** SIGTERM to the master (it passes it on and exits), SIGKILL to its group after `graceMs`; resolves once it has exited. Idempotent. */
  stop(graceMs = 3000): Promise<void> {
    this.stopping ??= stopChild(this.child, this.exited, 'SIGTERM', graceMs);
    return this.stopping;
  }
}

/** Whether something accepts a TCP connection on 127.0.0.1:port (closed again at once). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

// --------------------------------------------------------------- the console client

/**
 * `console` (conserver-client) with a pty, as a person runs it: under `script`, which
 * gives it a terminal and passes what is written to its stdin into that terminal.
 */
export class ConsoleClient {
  output = '';
  private stopping: Promise<void> | null = null;
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly waiters = new Set<() => void>();

  constructor(consoleBin: string, args: string[]) {
    const script = findProgram('script');
    if (!script) throw new Error('script (util-linux) not found');
    const command = [consoleBin, ...args].map(shellQuote).join(' ');
    this.child = spawn(script, ['-q', '-f', '-e', '-c', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    live.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        resolve({ code, signal });
        this.wake();
      });
      this.child.once('error', () => resolve({ code: null, signal: null }));
    });
    const take = (d: Buffer): void => {
      this.output += d.toString('latin1');
      this.wake();
    };
    this.child.stdout!.on('data', take);
    this.child.stderr!.on('data', take);
  }

  private readonly child: ChildProcess;

  get exitedPromise(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.exited;
  }

  write(text: string): void {
    this.child.stdin!.write(Buffer.from(text, 'latin1'));
  }

  /** Resolves once `text` has been printed (after offset `from`); rejects after `timeoutMs` or when the client has exited without it. */
  waitFor(text: string, timeoutMs = 10_000, from = 0): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.output.indexOf(text, from) >= 0) return finish(null);
        if (this.child.exitCode !== null || this.child.signalCode !== null) finish(new Error(`console exited without printing ${JSON.stringify(text)}; it printed ${JSON.stringify(this.output.slice(-1000))}`));
      };
      const finish = (err: Error | null): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`console: no ${JSON.stringify(text)} after ${timeoutMs} ms; it printed ${JSON.stringify(this.output.slice(-1000))}`)), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** SIGTERM to `script` (it hangs up the pty: `console` goes too), SIGKILL to the group if it lingers. Idempotent. */
  stop(graceMs = 3000): Promise<void> {
    this.stopping ??= stopChild(this.child, this.exited, 'SIGTERM', graceMs);
    return this.stopping;
  }
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// ------------------------------------------------------------------- the recipe text

/**
 * The code block that follows `<!-- conserver-recipe: NAME -->` in a Markdown file
 * (docs/conserver.md marks the blocks its test runs).
 */
export function recipeBlock(markdown: string, name: string): string {
  const marker = `<!-- conserver-recipe: ${name} -->`;
  const at = markdown.indexOf(marker);
  if (at < 0) throw new Error(`no ${marker} in the recipe`);
  const m = /```[^\n]*\n([\s\S]*?)\n```/.exec(markdown.slice(at + marker.length));
  if (!m) throw new Error(`no code block after ${marker}`);
  return m[1] + '\n';
}

/** A conserver console log file's text (latin1: byte for byte), '' while it does not exist. */
export function readLog(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return '';
  }
}

/** How many times `needle` occurs in `text`. */
export function occurrences(text: string, needle: string): number {
  let n = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}
