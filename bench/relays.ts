/**
 * The do-nothing relays the benchmark measures vspc against (docs/performance.md):
 * a Node.js one (relay-node.ts) and a single-threaded epoll C one (relay.c, built here
 * with gcc by build-relay.sh, never committed). Each runs as a process of its own,
 * takes LISTEN:TARGET port pairs and prints the ports it bound.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { track } from './ipc.js';
import { sampleProc, type ProcSample } from './proc.js';

const NODE_RELAY = fileURLToPath(new URL('./relay-node.js', import.meta.url));
/** The C source and its build script stay in the source tree (bench/), next to dist/. */
const BUILD_SCRIPT = fileURLToPath(new URL('../../bench/build-relay.sh', import.meta.url));
const C_RELAY = fileURLToPath(new URL('./relay-c', import.meta.url));

export type RelayKind = 'relay-node' | 'relay-c';

/** Builds the C relay (if its binary is missing or older than relay.c). Returns the binary, or why there is none. */
export function buildCRelay(): { path: string } | { error: string } {
  const r = spawnSync('bash', [BUILD_SCRIPT, C_RELAY], { encoding: 'utf8' });
  if (r.error) return { error: `cannot run ${BUILD_SCRIPT}: ${r.error.message}` };
  if (r.status !== 0) return { error: (r.stderr || r.stdout || `build-relay.sh exited ${r.status}`).trim() };
  return { path: C_RELAY };
}

export class RelayProcess {
  private constructor(
    readonly kind: RelayKind,
    readonly child: ChildProcess,
    /** The ports it listens on, one per pair, in order. */
    readonly ports: number[],
  ) {}

  /** Starts a relay forwarding each new port i to 127.0.0.1:targets[i]. */
  static async start(kind: RelayKind, targets: number[], binary: string | null, timeoutMs = 10_000): Promise<RelayProcess> {
    const pairs = targets.map((t) => `0:${t}`);
    const child =
      kind === 'relay-c'
        ? spawn(binary ?? C_RELAY, pairs, { stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn(process.execPath, [NODE_RELAY, ...pairs], { stdio: ['pipe', 'pipe', 'pipe'] });
    track(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const ports = await new Promise<number[]>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${kind}: no ports line after ${timeoutMs} ms: ${stderr}`)), timeoutMs);
      child.stdout?.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        const line = /^ports((?: \d+)*)\n/m.exec(out);
        if (!line) return;
        clearTimeout(timer);
        resolve(line[1].trim().split(' ').map(Number));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${kind} exited (${code ?? signal}) at start: ${stderr}`));
      });
    });
    return new RelayProcess(kind, child, ports);
  }

  sample(): ProcSample | null {
    try {
      return this.child.pid ? sampleProc(this.child.pid) : null;
    } catch {
      return null;
    }
  }

  stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      this.child.once('exit', () => resolve());
      this.child.kill('SIGTERM');
      this.child.stdin?.end();
    });
  }
}

export const startRelay = RelayProcess.start;
