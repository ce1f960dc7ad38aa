/**
 * The real OpenSSH client against a running vspc's SSH front door: key pairs made with
 * ssh-keygen, `ssh` runs in batch mode (stdout, stderr, exit status), and interactive
 * sessions in tmux (send keys, wait on the pane's content). Every wait is bounded;
 * every process and tmux server is killed by the cleanup, whatever happens.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';
import { startServer, tempDir, type Cleanup, type TestServer, type TestServerOptions } from './server.js';

/** ssh, ssh-keygen and tmux are there (test/support/guest/ensure-deps.sh installs them as root). */
export function haveOpenSsh(): boolean {
  try {
    execFileSync('ssh', ['-V'], { stdio: 'pipe' });
    execFileSync('ssh-keygen', ['-?'], { stdio: 'pipe' });
  } catch (err) {
    // ssh-keygen -? exits 1 after printing its usage: it exists.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
  }
  return true;
}

export function haveTmux(): boolean {
  try {
    execFileSync('tmux', ['-V'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

export interface KeyPair {
  /** The private key file (mode 0600). */
  path: string;
  /** The public key line (`ssh-ed25519 AAAA... comment`). */
  pub: string;
  /** `SHA256:...`, as ssh-keygen -l prints it. */
  fingerprint: string;
}

/** A new key pair in `dir` (ssh-keygen, no passphrase). */
export function makeKey(dir: string, name: string, comment = name, type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519'): KeyPair {
  const path = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', comment, '-f', path], { stdio: 'pipe', timeout: 20_000 });
  const pub = execFileSync('cat', [`${path}.pub`], { encoding: 'utf8' }).trim();
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${path}.pub`], { encoding: 'utf8' }).split(/\s+/)[1];
  return { path, pub, fingerprint };
}

/** One line of an authorized-keys file: `options key`. */
export function keyLine(key: KeyPair, options = ''): string {
  return options ? `${options} ${key.pub}` : key.pub;
}

export interface SshServer {
  ts: TestServer;
  cleanup: Cleanup;
  dir: string;
  port: number;
  /** The authorized-keys file. */
  keysFile: string;
  /** The client's known_hosts file (one per server: host key checks across restarts use their own). */
  knownHosts: string;
  /** Rewrites the authorized-keys file. */
  writeKeys(lines: string[]): void;
}

/** A TestServer with the SSH front door on 127.0.0.1, host keys and authorized keys in a temporary directory. */
export async function startSshServer(
  t: { after(fn: () => unknown): void },
  keyLines: string[],
  opts: { config?: Partial<VspcConfig>; server?: TestServerOptions; dir?: string } = {},
): Promise<SshServer> {
  let dir = opts.dir;
  if (!dir) {
    const d = tempDir('vspc-ssh-');
    t.after(() => d.remove());
    dir = d.dir;
  }
  const keysFile = join(dir, 'authorized_keys');
  const writeKeys = (lines: string[]) => {
    writeFileSync(keysFile, lines.join('\n') + '\n');
    chmodSync(keysFile, 0o600);
  };
  writeKeys(keyLines);
  const { ts, cleanup } = await startServer(t, {
    ...opts.server,
    config: {
      sshListen: { host: '127.0.0.1', port: 0 },
      sshHostKeyDir: join(dir, 'hostkeys'),
      sshAuthorizedKeys: keysFile,
      ...opts.config,
      sshLimits: { ...DEFAULTS.sshLimits, ...opts.config?.sshLimits },
      ...opts.server?.config,
    },
  });
  return { ts, cleanup, dir, port: ts.server.addresses.ssh!.port, keysFile, knownHosts: join(dir, 'known_hosts'), writeKeys };
}

/** The ssh options every test uses: this key only, our own known_hosts, never a prompt, no user config. */
export function sshArgs(s: { port: number; knownHosts: string }, key: KeyPair | null, extra: string[] = []): string[] {
  return [
    '-F', '/dev/null',
    ...(key ? ['-i', key.path] : []),
    '-o', `UserKnownHostsFile=${s.knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=accept-new',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=10',
    '-o', 'LogLevel=ERROR',
    '-p', String(s.port),
    ...extra,
  ];
}

export interface SshResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running `ssh`: its output so far, input, and its end. Killed by the cleanup. */
export class SshProcess {
  stdout = '';
  stderr = '';
  readonly done: Promise<SshResult>;
  private readonly proc: ChildProcess;
  private exited = false;
  private listeners = new Set<() => void>();

  constructor(args: string[], cleanup: Cleanup, input?: string, program = 'ssh') {
    this.proc = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    cleanup.add(() => this.kill());
    this.proc.stdout!.on('data', (d: Buffer) => {
      this.stdout += d.toString('utf8');
      this.notify();
    });
    this.proc.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString('utf8');
      this.notify();
    });
    this.proc.stdin!.on('error', () => undefined);
    if (input !== undefined) this.proc.stdin!.end(input);
    this.done = new Promise((resolve) => {
      this.proc.on('close', (code, signal) => {
        this.exited = true;
        this.notify();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      });
    });
  }

  write(data: string | Buffer): void {
    this.proc.stdin!.write(data);
  }

  endInput(): void {
    this.proc.stdin!.end();
  }

  /** Resolves once stdout+stderr match; rejects on exit first or after `timeoutMs`. */
  async waitFor(pattern: RegExp, timeoutMs = 10_000): Promise<void> {
    const ok = () => pattern.test(this.stdout) || pattern.test(this.stderr);
    if (ok()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (ok()) finish();
        else if (this.exited) finish(new Error(`ssh exited before ${pattern}; stdout ${JSON.stringify(this.stdout)} stderr ${JSON.stringify(this.stderr)}`));
      };
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}; stdout ${JSON.stringify(this.stdout)} stderr ${JSON.stringify(this.stderr)}`)), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  async exit(timeoutMs = 10_000): Promise<SshResult> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.done,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`ssh did not exit within ${timeoutMs} ms; stdout ${JSON.stringify(this.stdout)} stderr ${JSON.stringify(this.stderr)}`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }

  /** Sends a signal (SIGSTOP: a client that stops reading and answering; SIGCONT). */
  signal(sig: NodeJS.Signals): void {
    if (!this.exited) this.proc.kill(sig);
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

/** Runs `ssh ARGS` (or another program of OpenSSH's: sftp) to its end (stdin: `input`, or closed at once). */
export function runSsh(args: string[], cleanup: Cleanup, input = '', timeoutMs = 15_000, program = 'ssh'): Promise<SshResult> {
  return new SshProcess(args, cleanup, input, program).exit(timeoutMs);
}

let tmuxCounter = 0;

/**
 * An interactive program in a tmux pane of its own tmux server (a private socket):
 * `send` types, `waitFor` polls the pane's text (every 50 ms, bounded). `kill` ends
 * the tmux server; the cleanup calls it in every case.
 */
export class TmuxPane {
  private readonly socket: string;
  /** The program's exit status is written here by the pane's shell (tmux's own pane_dead_status is not always filled in). */
  private readonly statusFile: string;
  private killed = false;

  private constructor(socket: string) {
    this.socket = socket;
    this.statusFile = join(tmpdir(), `${socket}.status`);
  }

  /** Starts `argv` in a new detached 200x50 pane. */
  static start(argv: string[], cleanup: Cleanup): TmuxPane {
    const socket = `vspc-test-${process.pid}-${++tmuxCounter}`;
    const pane = new TmuxPane(socket);
    cleanup.add(() => pane.kill());
    rmSync(pane.statusFile, { force: true });
    const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const command = `${argv.map(quote).join(' ')}; echo $? > ${quote(pane.statusFile)}`;
    // remain-on-exit: the pane (and what the program printed last) stays after it exits.
    execFileSync('tmux', ['-L', socket, '-f', '/dev/null', 'new-session', '-d', '-x', '200', '-y', '50', '-s', 'vspc', command], { stdio: 'pipe', timeout: 10_000 });
    execFileSync('tmux', ['-L', socket, 'set-option', '-t', 'vspc', 'remain-on-exit', 'on'], { stdio: 'pipe', timeout: 10_000 });
    return pane;
  }

  /** The pane's text (with its scrollback). */
  capture(): string {
    try {
      return execFileSync('tmux', ['-L', this.socket, 'capture-pane', '-p', '-J', '-S', '-500', '-t', 'vspc'], { encoding: 'utf8', stdio: 'pipe', timeout: 10_000 });
    } catch {
      return '';
    }
  }

  /** The program's exit status once it has exited (written by the pane's shell), else null. */
  exitStatus(): number | null {
    try {
      const text = readFileSync(this.statusFile, 'utf8').trim();
      return text === '' ? null : Number(text);
    } catch {
      return null;
    }
  }

  /** tmux's view of the pane, for failure messages. */
  debug(): string {
    try {
      return execFileSync('tmux', ['-L', this.socket, 'display-message', '-p', '-t', 'vspc', 'pid=#{pane_pid} dead=#{pane_dead} status=#{pane_dead_status} signal=#{pane_dead_signal}'], { encoding: 'utf8', stdio: 'pipe', timeout: 10_000 }).trim();
    } catch (err) {
      return `tmux: ${(err as Error).message}`;
    }
  }

  /** Types literal text. */
  type(text: string): void {
    execFileSync('tmux', ['-L', this.socket, 'send-keys', '-t', 'vspc', '-l', text], { stdio: 'pipe', timeout: 10_000 });
  }

  /** Sends tmux key names (`Enter`, `C-]`, ...). */
  keys(...names: string[]): void {
    execFileSync('tmux', ['-L', this.socket, 'send-keys', '-t', 'vspc', ...names], { stdio: 'pipe', timeout: 10_000 });
  }

  /**
   * Polls the pane until `pattern` matches its text (without the empty lines below the
   * cursor: `$` is the end of what was printed) or `pattern(text)` is true; returns the text.
   */
  async waitFor(pattern: RegExp | ((text: string) => boolean), timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let text = '';
    for (;;) {
      text = this.capture().replace(/\n[\s\n]*$/, '');
      if (typeof pattern === 'function' ? pattern(text) : pattern.test(text)) return text;
      if (Date.now() > deadline) throw new Error(`tmux: timed out after ${timeoutMs} ms waiting for ${pattern}; the pane shows:\n${text}`);
      await delay(50);
    }
  }

  /** Polls until the program exited; returns its status. */
  async waitExit(timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.exitStatus();
      if (s !== null) return s;
      if (Date.now() > deadline) throw new Error(`tmux: the program did not exit within ${timeoutMs} ms; the pane shows:\n${this.capture()}`);
      await delay(50);
    }
  }

  kill(): void {
    if (this.killed) return;
    this.killed = true;
    try {
      execFileSync('tmux', ['-L', this.socket, 'kill-server'], { stdio: 'pipe', timeout: 10_000 });
    } catch {
      /* already gone */
    }
    rmSync(this.statusFile, { force: true });
  }
}
