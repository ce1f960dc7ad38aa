/**
 * A throwaway PostgreSQL server for tests (Debian's `postgresql` package; npm test's
 * ensure-deps.sh installs it when run as root):
 *
 *   const pg = await startPostgres();
 *   const url = await pg.createDatabase();   // postgres://vspc@/vspc_1?host=/tmp/...
 *   ...
 *   await pg.stop();
 *
 * initdb into a temporary directory; the server listens on a unix socket in that
 * directory only (listen_addresses = ''), so it is reachable by nothing else. It refuses
 * to run as root: as root it runs as the `postgres` user (or `nobody`) through
 * setpriv, with the directory chowned to that user. startPostgres resolves when the
 * server logs that it accepts connections. The server is stopped by PID in every exit
 * path: stop(), process 'exit', SIGINT/SIGTERM (as test/support/qemu.ts does for QEMU),
 * and a parent-death signal for a SIGKILLed test process.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { LiveProcesses } from './procs.js';

const PG_BIN_DIRS = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'];

/** The directory with initdb and postgres, or null when PostgreSQL is not installed. */
export function postgresBinDir(): string | null {
  return PG_BIN_DIRS.find((d) => existsSync(join(d, 'postgres')) && existsSync(join(d, 'initdb'))) ?? null;
}

// SIGQUIT is PostgreSQL's immediate shutdown (its backends go too), on exit, SIGINT and SIGTERM.
const live = new LiveProcesses((c) => c.kill('SIGQUIT'));

/** uid/gid to run PostgreSQL as when we are root. */
function unprivilegedUser(): { name: string; uid: number; gid: number } {
  for (const name of ['postgres', 'nobody']) {
    const r = spawnSync('id', ['-u', name], { encoding: 'utf8' });
    const g = spawnSync('id', ['-g', name], { encoding: 'utf8' });
    if (r.status === 0 && g.status === 0) return { name, uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
  }
  throw new Error('running as root and neither the postgres nor the nobody user exists to run PostgreSQL as');
}

export class TestPostgres {
  private dbCount = 0;
  private stopped: Promise<void> | null = null;

  /** Use startPostgres. */
  constructor(
    readonly dir: string,
    private readonly proc: ChildProcess,
    private readonly exited: Promise<void>,
    /** Everything the server logged (stderr). */
    readonly log: () => string,
  ) {}

  /** The socket directory (a `?host=` in URLs). */
  get socketDir(): string {
    return this.dir;
  }

  get pid(): number {
    return this.proc.pid!;
  }

  url(database = 'postgres'): string {
    return `postgres://vspc@/${database}?host=${encodeURIComponent(this.dir)}`;
  }

  /** A fresh empty database; returns its URL. */
  async createDatabase(): Promise<string> {
    const name = `vspc_${process.pid}_${++this.dbCount}`;
    await this.query(`CREATE DATABASE ${name}`);
    return this.url(name);
  }

  /** Runs one statement as the superuser, on `database` (default postgres). */
  async query<T extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = [], database = 'postgres'): Promise<T[]> {
    const c = new pg.Client({ connectionString: this.url(database), connectionTimeoutMillis: 5000 });
    await c.connect();
    try {
      return (await c.query<T>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  private stalled: number[] = [];

  /**
   * Freezes every backend of this server with SIGSTOP (a stuck server, or a partition
   * that drops packets without a reset); the returned function resumes them (SIGCONT),
   * as does stop(). Backends are the postmaster's children (pgrep, from procps).
   */
  stallBackends(): () => void {
    const kids = execFileSync('pgrep', ['-P', String(this.pid)]).toString().trim().split('\n').map(Number).filter((n) => n > 0);
    for (const pid of kids) {
      process.kill(pid, 'SIGSTOP');
      this.stalled.push(pid);
    }
    return () => this.resumeBackends();
  }

  private resumeBackends(): void {
    for (const pid of this.stalled.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
  }

  /** Stops the server (immediate shutdown, by PID) and removes its directory. Idempotent. */
  stop(): Promise<void> {
    this.resumeBackends();
    this.stopped ??= (async () => {
      if (this.proc.exitCode === null && this.proc.signalCode === null) {
        this.proc.kill('SIGQUIT');
        const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
        await this.exited;
        clearTimeout(timer);
      }
      live.delete(this.proc);
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.stopped;
  }
}

/**
 * Starts a throwaway server; rejects (naming what it printed) if it does not come up
 * within `timeoutMs`. `settings`: more `-c name=value` (e.g. `max_locks_per_transaction`,
 * which bounds how many consoles a cluster can own: one advisory lock each).
 */
export async function startPostgres(timeoutMs = 60_000, settings: Record<string, string | number> = {}): Promise<TestPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (Debian package postgresql; npm test installs it when run as root)');
  const dir = mkdtempSync(join(tmpdir(), 'vspc-pg-'));
  const data = join(dir, 'data');
  const root = process.getuid?.() === 0;
  const user = root ? unprivilegedUser() : null;
  const asUser = (argv: string[]): string[] =>
    user ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--pdeathsig', 'KILL', '--', ...argv] : argv;
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chmodSync(dir, 0o700);
  }
  const init = spawnSync(asUser([join(bin, 'initdb')])[0], asUser([join(bin, 'initdb'), '-D', data, '-U', 'vspc', '--auth=trust', '-E', 'UTF8', '--no-sync']).slice(1), {
    encoding: 'utf8',
    timeout: timeoutMs,
  });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed (${init.status ?? init.signal}): ${init.stderr || init.stdout}`);
  }
  const argv = asUser([
    join(bin, 'postgres'),
    '-D',
    data,
    '-c',
    'listen_addresses=',
    '-c',
    `unix_socket_directories=${dir}`,
    '-c',
    'fsync=off',
    '-c',
    'max_connections=50',
    '-c',
    'shared_buffers=16MB',
    ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
  ]);
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(proc);
  let log = '';
  const exited = new Promise<void>((resolve) => proc.on('close', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`PostgreSQL did not start within ${timeoutMs} ms:\n${log}`)), timeoutMs);
      proc.stderr!.setEncoding('utf8');
      proc.stderr!.on('data', (d: string) => {
        log += d;
        if (log.includes('database system is ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`PostgreSQL exited at start:\n${log}`));
      });
    });
  } catch (err) {
    proc.kill('SIGKILL');
    live.delete(proc);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return new TestPostgres(dir, proc, exited, () => log);
}
