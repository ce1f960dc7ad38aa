/**
 * `vspc-admin console` (src/cli/console.ts) against a running vspc's console broker:
 * driven through tmux on a real terminal (the numbered menu, picking, typing, Ctrl-] d),
 * through pipes (the list, --names, exit codes, the holder named in a lock refusal),
 * and as other unix users (the socket's mode and group decide who may connect).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { esxiUuid, startServer, tempDir, type Cleanup, type TestServer } from '../support/server.js';
import { runNode, VSPC_ADMIN_JS, type CliResult } from '../support/cli.js';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';

const CTRL_BRACKET = 'C-]';

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** A tmux server of our own (-L), one session, polled with capture-pane; killed in every exit path. */
class Tmux {
  private static counter = 0;
  readonly socket = `vspc-broker-test-${process.pid}-${++Tmux.counter}`;
  /** The server's socket file: kill-server leaves it behind. */
  private socketPath: string | null = null;

  private tmux(args: string[]): string {
    return execFileSync('tmux', ['-L', this.socket, ...args], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Runs `argv` (node + vspc-admin ...) in a 160x40 pane; its exit status is printed as `[exit N]` and the pane kept. */
  start(argv: string[]): void {
    const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
    this.tmux(['new-session', '-d', '-x', '160', '-y', '40', '-s', 'test', `${quoted}; echo "[exit $?]"; sleep 600`]);
    this.socketPath = this.tmux(['display-message', '-p', '-t', 'test', '#{socket_path}']).trim() || null;
  }

  capture(): string {
    try {
      return this.tmux(['capture-pane', '-p', '-J', '-t', 'test', '-S', '-200']);
    } catch {
      return '';
    }
  }

  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const screen = this.capture();
      if (pattern.test(screen)) return screen;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${pattern} in the pane:\n${screen}`);
      await delay(100);
    }
  }

  keys(...keys: string[]): void {
    this.tmux(['send-keys', '-t', 'test', ...keys]);
  }

  type(text: string): void {
    this.tmux(['send-keys', '-t', 'test', '-l', text]);
  }

  kill(): void {
    try {
      this.tmux(['kill-server']);
    } catch {
      // Not running (any more).
    }
    if (this.socketPath) rmSync(this.socketPath, { force: true });
  }
}

async function brokerServer(t: { after(fn: () => unknown): void }, extra: Partial<VspcConfig> = {}) {
  const dir = tempDir('vspc-broker-cli-');
  t.after(() => dir.remove());
  const path = join(dir.dir, 'broker.sock');
  const { ts, cleanup } = await startServer(t, {
    config: { brokerSocket: { path, auto: false }, brokerLimits: DEFAULTS.brokerLimits, ...extra },
  });
  return { ts, cleanup, path, dir: dir.dir };
}

async function vm(ts: TestServer, cleanup: Cleanup, name: string) {
  return ts.connectVm({ uuid: esxiUuid().text, name }, cleanup);
}

function consoleCli(path: string, args: string[]): Promise<CliResult> {
  return runNode(VSPC_ADMIN_JS, ['console', '--socket', path, ...args]);
}

describe('vspc-admin console through the broker', () => {
  test('on a terminal: the numbered menu, pick by number, data both ways with the VM, Ctrl-] d detaches with exit 0', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const suffix = esxiUuid().hex.slice(-6);
    await vm(ts, cleanup, `alpha-${suffix}`);
    const { vm: beta, hub } = await vm(ts, cleanup, `beta-${suffix}`);
    const tmux = new Tmux();
    cleanup.add(() => tmux.kill());
    t.after(() => tmux.kill());
    tmux.start([process.execPath, VSPC_ADMIN_JS, 'console', '--socket', path, '--user', 'tess']);
    const menu = await tmux.waitFor(/console \(1-2 or a name; Enter to quit\):/);
    assert.match(menu, new RegExp(`1\\) alpha-${suffix} +esxi +connected`));
    assert.match(menu, new RegExp(`2\\) beta-${suffix} +esxi +connected`));
    assert.doesNotMatch(menu, new RegExp(String(hub.identity.tcpPort)), 'the menu shows no port');
    tmux.type('2');
    tmux.keys('Enter');
    await tmux.waitFor(/connected with READWRITE; Ctrl-\] for the menu/);
    assert.equal(hub.locks.list()[0]?.user, 'tess');
    beta.send('hello from the VM\r\n');
    await tmux.waitFor(/hello from the VM/);
    tmux.type('typed in tmux');
    tmux.keys('Enter');
    await beta.waitForInput('typed in tmux\r', 8000);
    tmux.keys(CTRL_BRACKET);
    await tmux.waitFor(/d detach, b break, w who, c continue/);
    tmux.type('w');
    await tmux.waitFor(/tess@unix:.*READWRITE since .*\(you\)/);
    tmux.keys(CTRL_BRACKET);
    tmux.type('d');
    const end = await tmux.waitFor(/\[exit \d+\]/);
    assert.match(end, /detached[\s\S]*\[exit 0\]/);
  });

  test('on a terminal: a name on the command line attaches at once; a lock refusal names the holder, exit 3', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const name = `gamma-${esxiUuid().hex.slice(-6)}`;
    const { hub } = await vm(ts, cleanup, name);
    const holder = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const tmux = new Tmux();
    cleanup.add(() => tmux.kill());
    t.after(() => tmux.kill());
    tmux.start([process.execPath, VSPC_ADMIN_JS, 'console', '--socket', path, name.toUpperCase(), '--mode', 'exclusive']);
    const screen = await tmux.waitFor(/\[exit \d+\]/);
    assert.match(screen, new RegExp(`lock refused: EXCLUSIVE refused: held by ${holder.peerName.replace(/\./g, '\\.')} \\(READWRITE since`));
    assert.match(screen, /\[exit 3\]/);
    assert.equal(holder.closed, false);
  });

  test('through pipes: the list, --names, --json; unknown and ambiguous names exit 1; no broker exits 1', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const suffix = esxiUuid().hex.slice(-6);
    const uuid = esxiUuid();
    await ts.connectVm({ uuid: uuid.text, name: `web-${suffix}` }, cleanup);
    await ts.connectVm({ uuid: uuid.text, name: `web-${suffix}`, serviceUri: 'vSPC.py?port=com2' }, cleanup);
    await vm(ts, cleanup, `db-${suffix}`);
    const list = await consoleCli(path, []);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^CONSOLE +KIND +STATE +CLIENTS\n/);
    assert.match(list.stdout, new RegExp(`web-${suffix}:com2 +esxi +connected +0`));
    const names = await consoleCli(path, ['--names']);
    assert.deepEqual(names.stdout.trim().split('\n'), [`db-${suffix}`, `web-${suffix}:`, `web-${suffix}:com2`]);
    const filtered = await consoleCli(path, ['--names', 'WEB-*']);
    assert.deepEqual(filtered.stdout.trim().split('\n'), [`web-${suffix}:`, `web-${suffix}:com2`]);
    const json = JSON.parse((await consoleCli(path, ['--json', 'db-'])).stdout) as unknown[];
    assert.deepEqual(json, [{ name: `db-${suffix}`, label: '', kind: 'esxi', state: 'connected', clients: 0, address: `db-${suffix}` }]);
    const unknown = await consoleCli(path, ['nope']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no console named "nope"/);
    const ambiguous = await consoleCli(path, [`web-${suffix}`]);
    assert.equal(ambiguous.code, 1);
    assert.match(ambiguous.stderr, new RegExp(`names 2 consoles: web-${suffix}:, web-${suffix}:com2`));
    const missing = await consoleCli(join(path, '..', 'none.sock'), ['--names']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /ENOENT: no socket there/);
    const usage = await runNode(VSPC_ADMIN_JS, ['console', '--socket', path, '--broker', '127.0.0.1:1', '--names']);
    assert.equal(usage.code, 2);
  });
});

/** Runs vspc-admin as another unix user. */
function runAs(user: string, args: string[], timeoutMs = 15_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('runuser', ['-u', user, '--', process.execPath, VSPC_ADMIN_JS, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`runuser ${user}: no exit after ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const asRoot = process.getuid?.() === 0 && hasCommand('useradd') && hasCommand('runuser') && hasCommand('groupadd');

describe('the broker socket: its mode and group decide who may connect', () => {
  test('a user outside the socket group is refused by the permissions; a member lists the consoles', async (t) => {
    assert.ok(asRoot, 'needs root, useradd, groupadd and runuser (npm test runs as root; ensure-deps installs passwd and util-linux)');
    const tag = `vb${process.pid % 100000}${Date.now() % 1000}`;
    const group = `${tag}g`;
    const outsider = `${tag}o`;
    const member = `${tag}m`;
    const removeAccounts = () => {
      for (const u of [outsider, member]) spawnSync('userdel', [u], { stdio: 'ignore' });
      spawnSync('groupdel', [group], { stdio: 'ignore' });
    };
    removeAccounts(); // a run killed halfway may have left them
    t.after(removeAccounts);
    try {
      execFileSync('groupadd', [group], { stdio: 'pipe' });
      execFileSync('useradd', ['-M', '-N', '-r', '-s', '/bin/false', outsider], { stdio: 'pipe' });
      execFileSync('useradd', ['-M', '-N', '-r', '-s', '/bin/false', '-G', group, member], { stdio: 'pipe' });
      const gid = Number(readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith(`${group}:`))!.split(':')[2]);
      const { ts, cleanup, path, dir } = await brokerServer(t, { brokerSocketMode: 0o660, brokerSocketGroup: { name: group, gid } });
      chmodSync(dir, 0o755); // the directory may be traversed; the socket decides
      await vm(ts, cleanup, `perm-${tag}`);
      const refused = await runAs(outsider, ['console', '--socket', path, '--names']);
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /EACCES: permission denied/);
      const allowed = await runAs(member, ['console', '--socket', path, '--names']);
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.equal(allowed.stdout, `perm-${tag}\n`);
      const attached = await runAs(member, ['console', '--socket', path, `perm-${tag}`, '--mode', 'readonly']);
      // stdin is not a terminal and ends at once: attached, then detached (exit 0).
      assert.equal(attached.code, 0, attached.stderr);
      assert.match(attached.stderr, /connected with READONLY/);
    } finally {
      removeAccounts();
    }
  });
});
