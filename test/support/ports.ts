/**
 * TCP ports for tests and the benchmark, obtained one way:
 *
 * - A listener in this process binds port 0 and reads the port it got (TestServer's VM
 *   and admin listeners, FakeProxy, scripted servers). Nothing to reserve.
 * - A port that must be known before anything listens on it (the client port range of
 *   a TestServer, the listeners of a vspc child process, a port that must be closed):
 *   `reservePortRange()` / `reservePort()`.
 *
 * A reservation is safe against the other test processes (test files run in parallel,
 * and several checkouts may run their suites at once on one machine): each port is
 * claimed by creating a lock file named after it in a shared directory, exclusively,
 * and is then checked to be bindable. Claims last until this process exits (so a
 * server restarted on the same range finds it still free of other tests); a claim
 * whose process is gone is taken over. Ports come from 20000–30000 by default: below
 * Linux's ephemeral range (32768–60999), so outgoing connections never take them.
 */
import net from 'node:net';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Tries to bind `port` on `host` and releases it at once. */
export function canBind(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

const LOCK_DIR = join(tmpdir(), 'vspc-test-ports');
const claimed = new Set<number>();
let exitHook = false;

function lockPath(port: number): string {
  return join(LOCK_DIR, String(port));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Claims `port` for this process; false if another live process (or this one) holds it. */
function claim(port: number): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lockPath(port), String(process.pid), { flag: 'wx' });
      claimed.add(port);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let owner = NaN;
      try {
        owner = Number(readFileSync(lockPath(port), 'utf8'));
      } catch {
        continue; // removed in between: try again
      }
      // A claim being written (empty file) or held by a live process stays.
      if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || alive(owner)) return false;
      rmSync(lockPath(port), { force: true });
    }
  }
  return false;
}

function release(ports: number[]): void {
  for (const p of ports) {
    if (!claimed.delete(p)) continue;
    rmSync(lockPath(p), { force: true });
  }
}

function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => release([...claimed]));
}

/**
 * Reserves `count` consecutive ports that no other test process holds and that are
 * free on 127.0.0.1 right now, from a random base in [from, to]. They stay reserved
 * for this process until it exits.
 */
export async function reservePortRange(count: number, o: { from?: number; to?: number; attempts?: number } = {}): Promise<{ start: number; end: number }> {
  const from = o.from ?? 20000;
  const to = o.to ?? 30000;
  const attempts = o.attempts ?? 200;
  if (to - from + 1 < count) throw new Error(`reservePortRange: ${from}-${to} has fewer than ${count} ports`);
  mkdirSync(LOCK_DIR, { recursive: true });
  installExitHook();
  for (let a = 0; a < attempts; a++) {
    const start = from + Math.floor(Math.random() * (to - from + 2 - count));
    const taken: number[] = [];
    let ok = true;
    for (let p = start; p < start + count && ok; p++) {
      ok = claim(p);
      if (ok) taken.push(p);
    }
    for (let p = start; p < start + count && ok; p++) ok = await canBind(p);
    if (ok) return { start, end: start + count - 1 };
    release(taken);
  }
  throw new Error(`reservePortRange: no ${count} consecutive free ports found in ${from}-${to} after ${attempts} attempts`);
}

/** One reserved port (see reservePortRange). */
export async function reservePort(): Promise<number> {
  return (await reservePortRange(1)).start;
}
