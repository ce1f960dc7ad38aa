/**
 * Real QEMU test guests: start a guest built by test/support/guest/build-guest.sh
 * (Debian cloud kernel + busybox initramfs with a root shell on ttyS0), stop it by
 * PID in every exit path, and talk to its serial consoles.
 *
 *   const guest = await startGuest({ serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off'] });
 *   const con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
 *   await con.waitForShell();
 *   const { output } = await con.run('uname -r');
 *   ...
 *   con.close(); await guest.stop();
 *
 * Synchronisation is on events only: startGuest resolves when QEMU answers on its
 * QMP socket (which happens once every chardev exists, so unix/tcp listeners are
 * bound and pty paths known); SerialConsole.waitFor resolves on the data event that
 * completes the awaited text. Timers only bound waits; none orders anything.
 *
 * Every QEMU started here is in a process-wide set killed (SIGKILL, by PID) on
 * process 'exit' and on SIGINT/SIGTERM; where util-linux's setpriv exists QEMU is
 * also started with a parent-death signal, so it dies with a SIGKILLed test process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, constants as fsConstants } from 'node:fs';
import net from 'node:net';
import tty from 'node:tty';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { randomBytes } from 'node:crypto';
import { LiveProcesses } from './procs.js';

/** Repository root (this file is compiled to dist/test/support/qemu.js). */
const ROOT = new URL('../../../', import.meta.url).pathname;

export const READY_MARKER = 'VSPC-GUEST-READY';
export const PROMPT = 'guest# ';

/** What build-guest.sh wrote into CACHE/variants/NAME/guest.json. */
export interface GuestArtifacts {
  variant: string;
  kernel: string;
  initrd: string;
  /** `uname -r` in the guest, e.g. 6.1.0-50-cloud-amd64. */
  kernelRelease: string;
  /** The Debian package the kernel came from, e.g. linux-image-6.1.0-50-cloud-amd64. */
  kernelPackage: string;
  /** Its version, e.g. 6.1.176-1 (appears in the guest's /proc/version). */
  kernelVersion: string;
  busyboxVersion: string;
  readyMarker: string;
  prompt: string;
}

export function guestCacheDir(): string {
  return process.env.VSPC_GUEST_CACHE || join(ROOT, '.cache', 'guest');
}

/** Reads the manifest of a built guest variant; a clear error when it was never built. */
export function guestArtifacts(variant = 'base'): GuestArtifacts {
  const manifest = join(guestCacheDir(), 'variants', variant, 'guest.json');
  let parsed: GuestArtifacts;
  try {
    parsed = JSON.parse(readFileSync(manifest, 'utf8')) as GuestArtifacts;
  } catch (err) {
    throw new Error(
      `QEMU test guest '${variant}' is not built (${manifest}: ${(err as Error).message}); ` +
        `run test/support/guest/build-guest.sh${variant === 'base' ? '' : ` --variant ${variant} ...`} ` +
        `(npm test does this)`,
    );
  }
  for (const f of [parsed.kernel, parsed.initrd]) {
    if (!existsSync(f)) throw new Error(`QEMU test guest '${variant}': ${f} is missing; rerun test/support/guest/build-guest.sh`);
  }
  return parsed;
}

// ------------------------------------------------------------------ process registry

// SIGKILL by PID on exit, SIGINT and SIGTERM (test/support/procs.ts).
const live = new LiveProcesses((c) => c.kill('SIGKILL'));

/** PIDs of the QEMU processes this process started and has not seen exit. */
export function liveGuestPids(): number[] {
  return [...live].map((c) => c.pid).filter((p): p is number => p !== undefined);
}

// ---------------------------------------------------------------------------- QMP

/** A minimal QMP client over an accepted socket (QEMU connects to us). */
class Qmp {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private greeted!: Promise<void>;
  readonly events: Array<{ event: string; data?: unknown }> = [];
  private closedError: Error | null = null;

  constructor(private readonly sock: net.Socket) {
    this.greeted = new Promise((resolve) => {
      this.onGreeting = resolve;
    });
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closedError = new Error('QMP connection closed');
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    });
  }

  private onGreeting: () => void = () => {};

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: { QMP?: unknown; id?: string; return?: unknown; error?: { class: string; desc: string }; event?: string; data?: unknown };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg.QMP) this.onGreeting();
      else if (msg.event) this.events.push({ event: msg.event, data: msg.data });
      else if (msg.id !== undefined) {
        const p = this.pending.get(String(msg.id));
        if (!p) continue;
        this.pending.delete(String(msg.id));
        if (msg.error) p.reject(new Error(`QMP error ${msg.error.class}: ${msg.error.desc}`));
        else p.resolve(msg.return);
      }
    }
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    await this.greeted;
    if (this.closedError) throw this.closedError;
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  destroy(): void {
    this.sock.destroy();
  }
}

// ------------------------------------------------------------------------- guests

export interface StartGuestOptions {
  /** Guest variant built by build-guest.sh (default 'base'); ignored with `artifacts`. */
  variant?: string;
  artifacts?: GuestArtifacts;
  /**
   * `-serial` backends in order: [0] is ttyS0 (the console with the shell), [1] ttyS1, ...
   * Any QEMU spec: 'unix:{dir}/ttyS0.sock,server=on,wait=off', 'tcp:127.0.0.1:PORT,server=on,wait=off',
   * 'telnet:127.0.0.1:PORT,server=on,wait=off', 'udp:127.0.0.1:R@127.0.0.1:L', 'pty', 'chardev:ID', 'null'.
   * Server sockets must use wait=off (QEMU would otherwise block before answering QMP).
   * Default: ['null'].
   */
  serial?: string[];
  /** Extra QEMU arguments (e.g. -chardev socket,id=c0,path=...,reconnect=1 / -device virtio-serial ...). */
  args?: string[];
  /** Appended to the kernel command line (which starts with `console=ttyS0 panic=-1`). */
  append?: string;
  memoryMb?: number;
  /** Directory for sockets; `{dir}` in `serial`/`args` is replaced by it. Default: a fresh temp dir, removed by stop(). */
  dir?: string;
  /** Bound on QEMU's start-up (until QMP answers). Default 30 s. */
  startTimeoutMs?: number;
  /** Bound between SIGTERM and SIGKILL in stop(). Default 3 s. */
  stopGraceMs?: number;
  qemuBinary?: string;
}

export interface GuestExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Guest {
  readonly pid: number;
  readonly artifacts: GuestArtifacts;
  /** Paths of pty backends, ordered serial0, serial1, ... then other chardevs in QEMU's order. */
  readonly ptyPaths: string[];
  /** pty path by chardev label (serial0, serial1, or a -chardev id). */
  readonly ptys: Record<string, string>;
  /** Socket directory; `path(name)` joins into it. */
  readonly dir: string;
  path(name: string): string;
  /** The QEMU command line, for diagnostics. */
  readonly argv: string[];
  /** Milliseconds since the epoch when QEMU was spawned (for boot-time measurements). */
  readonly spawnedAt: number;
  /**
   * Resolves when QEMU exits (for whatever reason); rejects after timeoutMs. (QEMU's
   * process handle does not keep Node's event loop alive, so waits are bounded by a
   * timer, which does.)
   */
  waitForExit(timeoutMs?: number): Promise<GuestExit>;
  /** How QEMU exited, or null while it runs. */
  exitStatus(): GuestExit | null;
  /** True once QEMU has exited. */
  hasExited(): boolean;
  /** What QEMU printed on stdout/stderr (last 64 KiB). */
  qemuOutput(): string;
  /** Runs a QMP command (e.g. 'query-chardev', 'system_reset'). */
  qmp<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  /** SIGTERM, then SIGKILL after stopGraceMs; waits for exit. Idempotent. */
  stop(): Promise<void>;
}

interface ChardevInfo {
  label: string;
  filename: string;
}

const QEMU_OUTPUT_LIMIT = 64 * 1024;
let setprivPath: string | null | undefined;

function findSetpriv(): string | null {
  if (setprivPath === undefined) {
    setprivPath = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;
  }
  return setprivPath;
}

function bounded<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(onTimeout()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Makes a temp directory for a guest's sockets (short path: unix socket paths are limited to 107 bytes). */
export function makeGuestDir(prefix = 'vspc-guest-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Starts a QEMU guest; resolves once QEMU runs and all its chardevs exist. */
export async function startGuest(o: StartGuestOptions = {}): Promise<Guest> {
  const artifacts = o.artifacts ?? guestArtifacts(o.variant ?? 'base');
  const ownsDir = o.dir === undefined;
  const dir = o.dir ?? makeGuestDir();
  const subst = (s: string): string => s.split('{dir}').join(dir);
  const qmpPath = join(dir, `qmp-${randomBytes(4).toString('hex')}.sock`);
  const startTimeoutMs = o.startTimeoutMs ?? 30_000;
  const stopGraceMs = o.stopGraceMs ?? 3_000;
  const serial = (o.serial ?? ['null']).map(subst);
  const append = ['console=ttyS0', 'panic=-1', o.append ?? ''].join(' ').trim();

  const qemuArgs = [
    '-accel', 'tcg',
    '-m', String(o.memoryMb ?? 256),
    '-smp', '1',
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-name', 'vspc-test-guest',
    '-kernel', artifacts.kernel,
    '-initrd', artifacts.initrd,
    '-append', append,
    // The monitor: QMP as a client of our listener, never on stdio.
    '-chardev', `socket,id=vspc-qmp,path=${qmpPath}`,
    '-mon', 'chardev=vspc-qmp,mode=control',
    ...serial.flatMap((s) => ['-serial', s]),
    ...(o.args ?? []).map(subst),
  ];
  const qemu = o.qemuBinary ?? 'qemu-system-x86_64';
  const setpriv = findSetpriv();
  const [file, argv] = setpriv
    ? [setpriv, ['--pdeathsig', 'SIGKILL', '--', qemu, ...qemuArgs]]
    : [qemu, qemuArgs];

  // Listen for QEMU's QMP connection before starting it.
  const qmpServer = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => qmpServer.once('connection', resolve));
  try {
    await new Promise<void>((resolve, reject) => {
      qmpServer.once('error', reject);
      qmpServer.listen(qmpPath, () => {
        qmpServer.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if (ownsDir) rmSync(dir, { recursive: true, force: true });
    throw new Error(`cannot listen for QEMU's QMP connection on ${qmpPath}: ${(err as Error).message}`);
  }

  let output = '';
  const ptysPrinted: Record<string, string> = {};
  const onOutput = (d: Buffer): void => {
    output = (output + d.toString('utf8')).slice(-QEMU_OUTPUT_LIMIT);
    for (const m of output.matchAll(/char device redirected to (\S+) \(label ([^)]+)\)/g)) ptysPrinted[m[2]] = m[1];
  };
  const spawnedAt = Date.now();
  const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let exitInfo: GuestExit | null = null;
  const exited = new Promise<GuestExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      live.delete(child);
      resolve(exitInfo);
    });
  });
  const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
  spawnError.catch(() => {});
  if (child.pid !== undefined) live.add(child);
  child.stdout!.on('data', onOutput);
  child.stderr!.on('data', onOutput);
  // Neither QEMU nor its pipes keep this process alive: a test that forgets stop()
  // still ends, and the 'exit' handler then kills QEMU.
  child.unref();
  (child.stdout as unknown as net.Socket).unref?.();
  (child.stderr as unknown as net.Socket).unref?.();

  let qmp: Qmp | null = null;
  let dirRemoved = false;
  const cleanupFiles = (): void => {
    qmpServer.close();
    qmp?.destroy();
    if (ownsDir && !dirRemoved) {
      dirRemoved = true;
      rmSync(dir, { recursive: true, force: true });
    } else rmSync(qmpPath, { force: true });
  };

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exitInfo && child.pid !== undefined) {
        child.kill('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const killed = new Promise<void>((resolve) => {
          timer = setTimeout(() => {
            if (!exitInfo) child.kill('SIGKILL');
            resolve();
          }, stopGraceMs);
        });
        await Promise.race([exited, killed]);
        clearTimeout(timer);
        // After SIGKILL the exit event follows; bound the wait anyway.
        await bounded(exited, 10_000, () => new Error(`QEMU pid ${child.pid} did not exit after SIGKILL`));
      }
      cleanupFiles();
    })();
    return stopping;
  };

  const describe = (): string => `qemu: ${[qemu, ...qemuArgs].join(' ')}\nQEMU output:\n${output || '(none)'}`;
  let chardevs: ChardevInfo[];
  try {
    const handshake = (async () => {
      const sock = await accepted;
      sock.unref();
      qmp = new Qmp(sock);
      qmpServer.close();
      await qmp.execute('qmp_capabilities');
      return qmp.execute<ChardevInfo[]>('query-chardev');
    })();
    chardevs = await bounded(
      Promise.race([
        handshake,
        spawnError,
        exited.then((e) => {
          throw new Error(`QEMU exited during start-up (code ${e.code}, signal ${e.signal})`);
        }),
      ]),
      startTimeoutMs,
      () => new Error(`QEMU did not answer QMP within ${startTimeoutMs} ms`),
    );
  } catch (err) {
    await stop().catch(() => {});
    throw new Error(`${(err as Error).message}\n${describe()}`);
  }

  const ptys: Record<string, string> = { ...ptysPrinted };
  for (const c of chardevs) if (c.filename.startsWith('pty:')) ptys[c.label] = c.filename.slice(4);
  const serialLabels = Object.keys(ptys)
    .filter((l) => /^serial\d+$/.test(l))
    .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
  const otherLabels = chardevs.map((c) => c.label).filter((l) => ptys[l] !== undefined && !serialLabels.includes(l));
  const ptyPaths = [...serialLabels, ...otherLabels].map((l) => ptys[l]);

  return {
    pid: child.pid!,
    artifacts,
    ptyPaths,
    ptys,
    dir,
    path: (name: string) => join(dir, name),
    argv: [qemu, ...qemuArgs],
    spawnedAt,
    waitForExit: (timeoutMs = 30_000) =>
      bounded(exited, timeoutMs, () => new Error(`QEMU pid ${child.pid} still running after ${timeoutMs} ms\n${describe()}`)),
    exitStatus: () => exitInfo,
    hasExited: () => exitInfo !== null,
    qemuOutput: () => output,
    qmp: <T = unknown>(command: string, args?: Record<string, unknown>) => {
      if (!qmp) return Promise.reject(new Error('QMP not connected'));
      return qmp.execute<T>(command, args);
    },
    stop,
  };
}

// ----------------------------------------------------------------- serial consoles

/** Shows control characters in error messages. */
function printable(s: string): string {
  return s.replace(/\r/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export interface WaitResult {
  /** Output from where the wait started up to the match (exclusive). */
  before: string;
  /** The matched text. */
  match: string;
  /** Capture groups of a RegExp pattern. */
  groups: string[];
}

interface Waiter {
  pattern: string | RegExp;
  what: string;
  start: number;
  resolve: (r: WaitResult) => void;
  reject: (e: Error) => void;
}

/**
 * One side of a serial console (a unix/tcp socket to a QEMU chardev, or a pty).
 * Accumulates everything received; waitFor() scans it from a cursor that each
 * successful wait advances past its match.
 */
export class SerialConsole {
  private text = '';
  private cursor = 0;
  private readonly waiters = new Set<Waiter>();
  private closedReason: string | null = null;
  private readonly decoder = new StringDecoder('utf8');
  private runCounter = 0;
  prompt = PROMPT;

  private constructor(
    private readonly input: NodeJS.ReadableStream & { destroy(): void },
    private readonly writeFn: (data: string | Buffer) => void,
    private readonly closeFn: () => void,
    readonly description: string,
  ) {
    input.on('data', (d: Buffer | string) => this.onData(typeof d === 'string' ? d : this.decoder.write(d)));
    input.on('error', (err: Error) => this.onClosed(`error: ${err.message}`));
    input.on('end', () => this.onClosed('end of stream'));
    input.on('close', () => this.onClosed('closed'));
  }

  /** Connects to a unix-socket chardev (QEMU `unix:PATH,server=on`). */
  static connectUnix(path: string, timeoutMs = 10_000): Promise<SerialConsole> {
    return SerialConsole.connect({ path }, `unix:${path}`, timeoutMs);
  }

  /** Connects to a TCP chardev (QEMU `tcp:HOST:PORT,server=on` or `telnet:...`; telnet bytes are not interpreted). */
  static connectTcp(port: number, host = '127.0.0.1', timeoutMs = 10_000): Promise<SerialConsole> {
    return SerialConsole.connect({ port, host }, `tcp:${host}:${port}`, timeoutMs);
  }

  /** Wraps an already-connected socket (e.g. one QEMU made to a test's listener). */
  static fromSocket(sock: net.Socket, description = 'socket'): SerialConsole {
    return new SerialConsole(
      sock,
      (d) => sock.write(d),
      () => sock.destroy(),
      description,
    );
  }

  /** Opens the host side of a pty chardev (QEMU `pty`) in raw mode. */
  static openPty(path: string): SerialConsole {
    const fd = openSync(path, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
    const rs = new tty.ReadStream(fd);
    rs.setRawMode(true);
    const ws = new tty.WriteStream(fd);
    // libuv reopens a pty slave for each stream (so it can be non-blocking) and
    // uses the new descriptors; ours is then only a duplicate, and would leak.
    const handleFd = (h: unknown): unknown => (h as { _handle?: { fd?: unknown } })._handle?.fd;
    const rfd = handleFd(rs);
    const wfd = handleFd(ws);
    if (typeof rfd === 'number' && typeof wfd === 'number' && rfd !== fd && wfd !== fd) closeSync(fd);
    return new SerialConsole(
      rs,
      (d) => ws.write(d),
      () => {
        rs.destroy();
        ws.destroy();
      },
      `pty:${path}`,
    );
  }

  private static connect(opts: net.NetConnectOpts, description: string, timeoutMs: number): Promise<SerialConsole> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(opts);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connecting to ${description} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(SerialConsole.fromSocket(sock, description));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`connecting to ${description}: ${err.message}`));
      });
    });
  }

  /** Everything received so far. */
  get output(): string {
    return this.text;
  }

  /** Output received after the last match (not yet consumed by a wait). */
  get pending(): string {
    return this.text.slice(this.cursor);
  }

  /** Skips everything received so far: the next wait only sees newer output. */
  skip(): void {
    this.cursor = this.text.length;
  }

  private onData(s: string): void {
    if (!s) return;
    this.text += s;
    for (const w of [...this.waiters]) this.check(w);
  }

  private onClosed(reason: string): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    for (const w of [...this.waiters]) {
      this.waiters.delete(w);
      w.reject(this.failure(`console ${this.description} ${reason} while waiting for ${w.what}`, w.start));
    }
  }

  private failure(message: string, start: number): Error {
    const seen = this.text.slice(Math.max(0, start - 200));
    const tail = seen.length > 3000 ? `...${seen.slice(-3000)}` : seen;
    return new Error(`${message}; output seen:\n${printable(tail) || '(nothing)'}`);
  }

  private check(w: Waiter): boolean {
    const hay = this.text.slice(w.start);
    let index = -1;
    let match = '';
    let groups: string[] = [];
    if (typeof w.pattern === 'string') {
      index = hay.indexOf(w.pattern);
      match = w.pattern;
    } else {
      const re = new RegExp(w.pattern.source, w.pattern.flags.replace('g', '').replace('y', ''));
      const m = re.exec(hay);
      if (m) {
        index = m.index;
        match = m[0];
        groups = m.slice(1).map((g) => g ?? '');
      }
    }
    if (index < 0) return false;
    this.waiters.delete(w);
    this.cursor = Math.max(this.cursor, w.start + index + match.length);
    w.resolve({ before: hay.slice(0, index), match, groups });
    return true;
  }

  /**
   * Resolves when the output after the cursor contains `pattern`; rejects after
   * timeoutMs (or when the console closes) with the output seen so far.
   */
  waitFor(pattern: string | RegExp, timeoutMs = 10_000, what?: string): Promise<WaitResult> {
    return new Promise<WaitResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const w: Waiter = {
        pattern,
        what: what ?? describePattern(pattern),
        start: this.cursor,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      if (this.check(w)) return;
      if (this.closedReason) {
        reject(this.failure(`console ${this.description} ${this.closedReason} before ${w.what}`, w.start));
        return;
      }
      this.waiters.add(w);
      timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(this.failure(`timed out after ${timeoutMs} ms waiting for ${w.what} on ${this.description}`, w.start));
      }, timeoutMs);
    });
  }

  /**
   * Waits for the guest's ready marker and then its shell prompt; resolves with the
   * milliseconds from `since` (e.g. guest.spawnedAt) to the prompt.
   */
  async waitForShell(timeoutMs = 60_000, since = Date.now()): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    await this.waitFor(READY_MARKER, timeoutMs, `the guest's ready marker "${READY_MARKER}" (the guest never booted?)`);
    await this.waitFor(this.prompt, Math.max(1, deadline - Date.now()), `the guest's shell prompt "${this.prompt}"`);
    return Date.now() - since;
  }

  send(data: string | Buffer): void {
    if (this.closedReason) throw new Error(`console ${this.description} ${this.closedReason}`);
    this.writeFn(data);
  }

  /** Sends a line terminated by CR (what a terminal's Enter key sends). */
  sendLine(line: string): void {
    this.send(`${line}\r`);
  }

  /**
   * Runs a shell command at the prompt and returns its output (CRs removed) and
   * exit status, then waits for the next prompt. Markers around the output are
   * built with shell arithmetic so that the echoed command line never matches them.
   */
  async run(command: string, timeoutMs = 20_000): Promise<{ output: string; status: number }> {
    const token = `VSPC${++this.runCounter}x${randomBytes(3).toString('hex')}`;
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(1, deadline - Date.now());
    this.sendLine(`echo ${token}B$((1)); ${command}; echo ${token}E$((1)):$?`);
    await this.waitFor(`${token}B1\r\n`, left(), `the start of the output of "${command}"`);
    const end = await this.waitFor(new RegExp(`${token}E1:(\\d+)`), left(), `the end of the output of "${command}"`);
    await this.waitFor(this.prompt, left(), `the prompt after "${command}"`);
    return { output: end.before.replace(/\r/g, '').replace(/\n$/, ''), status: Number(end.groups[0]) };
  }

  close(): void {
    this.closeFn();
    this.onClosed('closed by the test');
  }
}

function describePattern(p: string | RegExp): string {
  return typeof p === 'string' ? JSON.stringify(p) : String(p);
}
