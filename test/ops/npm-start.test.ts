/**
 * `kill -TERM <pid of npm start>` stops vspc: npm forwards the signal to its script's
 * shell, which the start script replaced with node (`exec node ...`), so vspc shuts
 * down cleanly and frees its ports, and npm exits.
 *
 * A real `npm start` process tree (npm → sh → exec node), run in a scratch package
 * whose `start` script is this repository's own, verbatim; only `build` is a no-op
 * there (the real one would empty dist/ under the running test suite), and dist/ is
 * this checkout's build, linked in. Bounded: every process is killed by its pid on
 * every way out.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, tempDir, waitUntil, withTimeout } from '../support/server.js';
import { canBind, reservePortRange } from '../support/ports.js';

/** Pids whose parent is `ppid` (from /proc). */
function childrenOf(ppid: number): Array<{ pid: number; cmdline: string }> {
  const out: Array<{ pid: number; cmdline: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const ppidOf = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppidOf !== ppid) continue;
      out.push({ pid: Number(name), cmdline: readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim() });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    // A zombie still has /proc/<pid>; it holds no ports, but count it as gone only once reaped.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

function killPid(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

const npmAvailable = spawnSync('npm', ['--version'], { stdio: 'ignore', timeout: 20_000 }).status === 0;

describe('npm start', () => {
  test('SIGTERM to the npm process stops vspc (exec in the start script): node exits, its ports are free, npm exits', { timeout: 90_000 }, async (t) => {
    assert.ok(npmAvailable, 'npm is not on PATH');
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { type: string; scripts: Record<string, string> };
    assert.match(pkg.scripts.start, /&& exec node dist\/src\/cli\/vspc\.js$/, 'the start script replaces its shell with node');
    const dir = tempDir('vspc-npm-start-');
    t.after(() => dir.remove());
    writeFileSync(
      join(dir.dir, 'package.json'),
      JSON.stringify({ name: 'vspc-npm-start-check', private: true, type: pkg.type, scripts: { start: pkg.scripts.start, build: 'node -e ""' } }, null, 2),
    );
    symlinkSync(join(ROOT, 'dist'), join(dir.dir, 'dist'));
    symlinkSync(join(ROOT, 'node_modules'), join(dir.dir, 'node_modules'));

    const ports = await reservePortRange(4);
    const [proxyPort, adminPort] = [ports.start, ports.start + 1];
    const args = [
      '--db', join(dir.dir, 'vspc.db'),
      '--proxy-listen', `127.0.0.1:${proxyPort}`,
      '--admin-listen', `127.0.0.1:${adminPort}`,
      '--port-range', `${ports.start + 2}-${ports.end}`,
    ];
    let npm: ChildProcess | null = null;
    let nodePid: number | undefined;
    t.after(() => {
      killPid(nodePid);
      killPid(npm?.pid);
    });
    npm = spawn('npm', ['start', '--', ...args], {
      cwd: dir.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' },
    });
    const npmPid = npm.pid!;
    let output = '';
    let onOutput = (): void => undefined;
    const collect = (d: Buffer) => {
      output += d.toString('utf8');
      onOutput();
    };
    npm.stdout!.on('data', collect);
    npm.stderr!.on('data', collect);
    const npmExit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => npm!.on('close', (code, signal) => resolve({ code, signal })));
    const started = new Promise<void>((resolve, reject) => {
      onOutput = () => {
        if (output.includes('vspc started')) resolve();
      };
      void npmExit.then((e) => reject(new Error(`npm start exited (${JSON.stringify(e)}) before vspc started:\n${output}`)));
    });
    await withTimeout(started, 30_000, `"vspc started" from npm start; output so far:\n${output}`);
    // npm's child is the shell of the script, which exec'ed node: one process, node running vspc.js.
    const kids = childrenOf(npmPid);
    const node = kids.find((k) => k.cmdline.includes('dist/src/cli/vspc.js'));
    assert.ok(node, `node is npm's child (the shell exec'ed it): ${JSON.stringify(kids)}`);
    nodePid = node.pid;
    assert.match(node.cmdline, /^node dist\/src\/cli\/vspc\.js /, 'no shell left between npm and node');
    assert.equal(await canBind(proxyPort), false, 'vspc holds its proxy port');
    assert.equal(await canBind(adminPort), false, 'vspc holds its admin port');

    process.kill(npmPid, 'SIGTERM');
    const exit = await withTimeout(npmExit, 30_000, `npm start to exit after SIGTERM; output:\n${output}`);
    await waitUntil(() => !alive(node.pid), 15_000, 'the node process to exit');
    assert.match(output, /signal received; shutting down.*SIGTERM/);
    assert.match(output, /vspc stopped/, 'a clean shutdown, not a kill');
    assert.equal(await canBind(proxyPort), true, 'the proxy port is free again');
    assert.equal(await canBind(adminPort), true, 'the admin port is free again');
    // npm reports the run as ended by the signal it forwarded, or as vspc's own clean exit.
    assert.ok(exit.code === 0 || exit.code === 143 || exit.signal === 'SIGTERM', JSON.stringify(exit));
  });
});
