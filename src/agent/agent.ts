/**
 * The TypeScript guest agent: the agent side of the serial tunnel
 * (docs/tunnel-protocol.md) for guests that have Node, and for tests. It drives a
 * TunnelEndpoint (role 'agent') from src/protocol/tunnel/ — the same code as the
 * host — over a serial device, and relays each stream the host opens to
 * 127.0.0.1:port when the port is allow-listed (default: 22 only).
 *
 * Behaviour matches the C agent (src/agent/c/vspc-agent.c); both pass
 * test/agent/conformance.test.ts:
 * - the line: the device is opened, a tty is put in raw mode (`stty raw -echo ...`
 *   on the descriptor; Node's own raw mode keeps ONLCR output translation, which
 *   would corrupt frames), and reopened with backoff when it goes away (EIO, hangup,
 *   end of file). The session survives a line outage; only a new host boot id resets
 *   the streams.
 * - streams: credit is granted as the local socket accepts bytes (the write callback),
 *   so a slow service stops the host; a socket is paused while its stream has as many
 *   bytes queued as it has credit, so at most one socket read beyond the credit is
 *   held. FIN ↔ socket.end() (half-close), RESET ↔ resetAndDestroy().
 *
 * Not reentrant with the endpoint: every entry (line data, timers, socket events)
 * calls into the endpoint once and then re-arms the timer.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, constants as fsConstants, openSync } from 'node:fs';
import net from 'node:net';
import tty from 'node:tty';
import { performance } from 'node:perf_hooks';
import {
  Reason,
  TunnelEndpoint,
  reasonName,
  type TunnelEndpointStats,
  type TunnelStream,
  type TunnelStreamHandlers,
} from '../protocol/tunnel/index.js';

export type AgentLogLevel = 'warn' | 'info' | 'debug';

export interface GuestAgentOptions {
  /** Serial device: /dev/ttyS1, /dev/hvc1, /dev/vport0p1, a pty slave, ... */
  device: string;
  /** Ports the host may open on 127.0.0.1. Default [22]. */
  allow?: number[];
  /** Log sink. Default: stderr lines `vspc-agent: ...` for warn, and info/debug per `verbose`. */
  log?: (level: AgentLogLevel, message: string) => void;
  /** 0: state changes only; 1: streams; 2: more detail (default sink only). */
  verbose?: number;
  /** Streams at once. Default 64. */
  maxStreams?: number;
  /** Per-stream receive window (credit granted to the host), bytes. Default 65536. */
  streamWindow?: number;
  /**
   * Largest frame payload announced and sent, bytes, 64..16384. Default 1024. Above
   * 1024 ("large frames", docs/tunnel-protocol.md 5.1) only on a lossless line
   * (virtio-serial): the C agent picks 16384 there by itself; this agent builds its
   * endpoint before the line exists, so it is told.
   */
  maxPayload?: number;
  /** Dial timeout, ms. Default 10000. */
  dialTimeoutMs?: number;
  /** Line reopen backoff, ms. Default 100 doubling to 2000. */
  reopenInitialMs?: number;
  reopenMaxMs?: number;
  /** Puts a tty descriptor in raw mode. Default: `stty raw -echo ...` with the tty as its stdin. */
  makeRaw?: (fd: number, device: string) => void;
}

interface Line {
  write(bytes: Uint8Array): boolean;
  close(): void;
}

const STTY_RAW = ['raw', '-echo', '-echonl', '-iexten', '-ixon', '-ixoff', '-crtscts', 'clocal', 'cread', 'cs8', '-parenb', '-cstopb', 'min', '1', 'time', '0'];

/** cfmakeraw() through stty(1) (coreutils or busybox), on the descriptor itself. */
export function sttyRaw(fd: number): void {
  try {
    execFileSync('stty', STTY_RAW, { stdio: [fd, 'ignore', 'pipe'] });
  } catch {
    // A minimal stty may lack a flag (e.g. crtscts): the essentials then.
    execFileSync('stty', ['raw', '-echo', '-echonl', '-iexten', '-ixon', '-ixoff', 'cs8', '-parenb', 'min', '1', 'time', '0'], { stdio: [fd, 'ignore', 'pipe'] });
  }
}

function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e?.code ? `${e.code}${e.message && !e.message.includes(e.code) ? ` (${e.message})` : ''}` : String((err as Error)?.message ?? err);
}

/** One relayed stream: a tunnel stream and its TCP connection to the guest service. */
interface Relay {
  stream: TunnelStream;
  sock: net.Socket;
  paused: boolean;
}

export class GuestAgent {
  readonly endpoint: TunnelEndpoint;
  private readonly opts: Required<Omit<GuestAgentOptions, 'log' | 'makeRaw'>> & Pick<GuestAgentOptions, 'makeRaw'>;
  private readonly logFn: (level: AgentLogLevel, message: string) => void;
  private line: Line | undefined;
  private lineGen = 0;
  private reopenDelay: number;
  private reopenTimer: NodeJS.Timeout | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private stopped = false;
  private missingLogged = false;
  private lineQuiet = false;
  private readonly relays = new Set<Relay>();
  private readonly dialing = new Set<net.Socket>();

  constructor(opts: GuestAgentOptions) {
    const allow = opts.allow && opts.allow.length > 0 ? [...new Set(opts.allow)] : [22];
    for (const p of allow) if (!Number.isInteger(p) || p < 1 || p > 65535) throw new RangeError(`bad port in allow list: ${p}`);
    this.opts = {
      device: opts.device,
      allow,
      verbose: opts.verbose ?? 0,
      maxStreams: opts.maxStreams ?? 64,
      streamWindow: opts.streamWindow ?? 65536,
      maxPayload: opts.maxPayload ?? 1024,
      dialTimeoutMs: opts.dialTimeoutMs ?? 10_000,
      reopenInitialMs: opts.reopenInitialMs ?? 100,
      reopenMaxMs: opts.reopenMaxMs ?? 2000,
      makeRaw: opts.makeRaw,
    };
    this.reopenDelay = this.opts.reopenInitialMs;
    this.logFn =
      opts.log ??
      ((level, message) => {
        if (level === 'warn' || (level === 'info' && this.opts.verbose >= 1) || (level === 'debug' && this.opts.verbose >= 2)) {
          process.stderr.write(`vspc-agent: ${message}\n`);
        }
      });
    this.endpoint = new TunnelEndpoint({
      role: 'agent',
      write: (b) => this.writeLine(b),
      allowPorts: allow,
      maxStreams: this.opts.maxStreams,
      streamWindow: this.opts.streamWindow,
      maxPayload: this.opts.maxPayload,
      handlers: {
        linkUp: (i) =>
          i.newSession
            ? this.log('warn', `link up: new session with host ${hex(i.peerBootId)} (agent boot id ${hex(i.bootId)})`)
            : this.log('warn', `link up again (host ${hex(i.peerBootId)} answers)`),
        linkDown: () => this.log('warn', `link down: host ${hex(this.endpoint.peerBootId)} stopped answering (streams kept)`),
        peerRestarted: (i) =>
          this.log('warn', `host restarted (boot id ${hex(i.oldPeerBootId)} -> ${hex(i.newPeerBootId)}): ${i.streamsReset} stream(s) reset; new agent boot id ${hex(this.endpoint.bootId)}`),
        openRequest: (s, port) => this.dial(s, port),
        error: (err) => this.log('warn', `${err.code}: ${err.message}`),
      },
    });
  }

  /** Opens the line and starts the handshake. */
  start(): void {
    this.log('warn', `vspc-agent (TypeScript) starting: device ${this.opts.device}, allowed ports ${this.opts.allow.join(',')}, boot id ${hex(this.endpoint.bootId)}`);
    this.openLine();
    this.endpoint.start(now());
    this.after();
  }

  /** Stops: every stream is reset (SHUTDOWN, best effort), sockets and the line are closed. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    try {
      this.endpoint.resetAllStreams(now(), Reason.SHUTDOWN, 'agent stopping');
    } catch {
      /* destroyed already */
    }
    for (const r of this.relays) r.sock.destroy();
    for (const s of this.dialing) s.destroy();
    this.endpoint.destroy();
    clearTimeout(this.timer);
    clearTimeout(this.reopenTimer);
    this.line?.close();
    this.line = undefined;
  }

  stats(): TunnelEndpointStats & { relays: number } {
    return { ...this.endpoint.stats(), relays: this.relays.size };
  }

  // ------------------------------------------------------------------ the line

  private log(level: AgentLogLevel, message: string): void {
    this.logFn(level, message);
  }

  private writeLine(bytes: Uint8Array): boolean {
    if (!this.line) return false; // dropped; drained() follows the reopen, ARQ repairs
    return this.line.write(bytes);
  }

  private openLine(): void {
    if (this.stopped) return;
    const dev = this.opts.device;
    let fd: number;
    try {
      fd = openSync(dev, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK);
    } catch (err) {
      this.log(this.missingLogged ? 'debug' : 'warn', `cannot open ${dev}: ${describeError(err)} (retrying)`);
      this.missingLogged = true;
      this.scheduleReopen();
      return;
    }
    const gen = ++this.lineGen;
    let good = false; // a frame arrived on this opening of the line
    const lost = (why: string): void => {
      if (gen !== this.lineGen || this.stopped) return;
      this.lineGen++;
      // A virtio port hangs up while the host side is not connected: one line, not a pair per retry.
      const loud = good || !this.lineQuiet;
      this.log(loud ? 'warn' : 'debug', `line ${dev} lost (${why}): reopening in ${this.reopenDelay} ms${loud && !good ? ' (retrying quietly until a frame arrives)' : ''}`);
      this.lineQuiet = !good;
      this.line?.close();
      this.line = undefined;
      this.scheduleReopen();
    };
    const onData = (d: Buffer): void => {
      if (gen !== this.lineGen || this.stopped) return;
      const before = good ? 0 : this.endpoint.stats().framing.frames;
      this.endpoint.receive(d, now());
      if (!good && this.endpoint.stats().framing.frames > before) {
        good = true;
        this.lineQuiet = false;
      }
      if (this.endpoint.state === 'up') this.reopenDelay = this.opts.reopenInitialMs;
      this.resumeReaders();
      this.after();
    };
    const onDrain = (): void => {
      if (gen !== this.lineGen || this.stopped) return;
      this.endpoint.drained(now());
      this.after();
    };
    let kind: string;
    if (tty.isatty(fd)) {
      try {
        (this.opts.makeRaw ?? sttyRaw)(fd, dev);
      } catch (err) {
        this.log('warn', `cannot put ${dev} in raw mode: ${describeError(err)}`);
        closeSync(fd);
        this.reopenDelay = this.opts.reopenMaxMs;
        this.scheduleReopen();
        return;
      }
      const rs = new tty.ReadStream(fd);
      const ws = new tty.WriteStream(fd);
      // tty.WriteStream makes its handle blocking (for terminals on stdout): a full line
      // would then stop the whole agent, reading included, and a peer that waits for
      // us to read before it reads (socat on a pty, a UART FIFO) would deadlock with it.
      (ws as unknown as { _handle?: { setBlocking?: (b: boolean) => void } })._handle?.setBlocking?.(false);
      // libuv reopens a pty slave for each stream; ours is then a spare duplicate.
      const handleFd = (h: unknown): unknown => (h as { _handle?: { fd?: unknown } })._handle?.fd;
      const rfd = handleFd(rs);
      const wfd = handleFd(ws);
      if (typeof rfd === 'number' && typeof wfd === 'number' && rfd !== fd && wfd !== fd) closeSync(fd);
      rs.on('data', onData);
      rs.on('error', (err) => lost(describeError(err)));
      rs.on('end', () => lost('end of file / hangup'));
      ws.on('error', (err) => lost(describeError(err)));
      ws.on('drain', onDrain);
      this.line = {
        write: (b) => ws.write(b),
        close: () => {
          rs.destroy();
          ws.destroy();
        },
      };
      kind = 'tty, raw 8N1, no flow control';
    } else {
      // A virtio port or a FIFO: plain blocking file streams (reads on libuv's pool).
      closeSync(fd);
      const rfd = openSync(dev, fsConstants.O_RDWR | fsConstants.O_NOCTTY);
      const rs = createReadStream('', { fd: rfd, autoClose: false, highWaterMark: 4096 });
      const ws = createWriteStream('', { fd: rfd, autoClose: false });
      rs.on('data', (d) => onData(d as Buffer));
      rs.on('error', (err) => lost(describeError(err)));
      rs.on('end', () => lost('end of file / hangup'));
      ws.on('error', (err) => lost(describeError(err)));
      ws.on('drain', onDrain);
      let closed = false;
      this.line = {
        write: (b) => ws.write(b),
        close: () => {
          if (closed) return;
          closed = true;
          rs.destroy();
          ws.destroy();
          try {
            closeSync(rfd);
          } catch {
            /* already closed */
          }
        },
      };
      kind = 'not a tty';
    }
    this.missingLogged = false;
    this.log(this.lineQuiet ? 'debug' : 'warn', `line ${dev} open (${kind})`);
    // Whatever was refused while the line was away may go now.
    this.endpoint.drained(now());
    this.after();
  }

  private scheduleReopen(): void {
    if (this.stopped) return;
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => this.openLine(), this.reopenDelay);
    this.reopenDelay = Math.min(this.reopenDelay * 2, this.opts.reopenMaxMs);
  }

  /** After any call into the endpoint: re-arm the timer for its next deadline. */
  private after(): void {
    if (this.stopped) return;
    const d = this.endpoint.nextDeadline();
    if (d === undefined) return;
    if (this.timer !== undefined && d >= this.timerAt) return;
    clearTimeout(this.timer);
    this.timerAt = d;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Infinity;
      if (this.stopped) return;
      this.endpoint.poll(now());
      this.after();
    }, Math.max(0, Math.ceil(d - now())));
  }

  // ------------------------------------------------------------------ streams

  private dial(stream: TunnelStream, port: number): void {
    const id = hex(stream.id, 4);
    this.log('debug', `stream ${id}: dialling 127.0.0.1:${port}`);
    const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    this.dialing.add(sock);
    let settled = false;
    const refuse = (code: number, text: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.dialing.delete(sock);
      sock.destroy();
      if (stream.state === 'OPEN_RECEIVED') {
        this.log('info', `stream ${id} (port ${port}): refused ${reasonName(code)} (${text})`);
        stream.refuse(now(), code, text);
        this.after();
      }
    };
    const timer = setTimeout(() => refuse(Reason.UNREACHABLE, 'connect timeout'), this.opts.dialTimeoutMs);
    // The host may reset the stream while we dial (the endpoint answers OPEN_FAIL(CANCELLED)).
    stream.setHandlers({ reset: () => refuse(Reason.CANCELLED, 'cancelled') });
    sock.once('error', (err: NodeJS.ErrnoException) => refuse(err.code === 'ECONNREFUSED' ? Reason.REFUSED : Reason.UNREACHABLE, describeError(err)));
    sock.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.dialing.delete(sock);
      if (stream.state !== 'OPEN_RECEIVED') {
        sock.destroy();
        return;
      }
      sock.setNoDelay(true);
      this.relay(stream, sock, port);
      this.after();
    });
  }

  private relay(stream: TunnelStream, sock: net.Socket, port: number): void {
    const id = hex(stream.id, 4);
    const r: Relay = { stream, sock, paused: false };
    this.relays.add(r);
    let done = false;
    let sawEnd = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      this.relays.delete(r);
    };
    const handlers: TunnelStreamHandlers = {
      data: (chunk, s) => {
        const n = chunk.length;
        // Credit comes back once the socket has taken the bytes.
        sock.write(chunk, (err) => {
          if (err || this.stopped || s.state === 'CLOSED') return;
          s.consume(n, now());
          this.after();
        });
      },
      end: () => {
        this.log('debug', `stream ${id}: FIN from host`);
        sock.end();
      },
      close: () => {
        this.log('info', `stream ${id} (port ${port}) closed`);
        finish();
      },
      reset: (err) => {
        this.log('info', `stream ${id} (port ${port}): reset (${err.reasonName}${err.remote ? ' by host' : ''})`);
        finish();
        sock.resetAndDestroy();
      },
    };
    stream.accept(now(), handlers);
    this.log('info', `stream ${id}: connected to 127.0.0.1:${port}`);
    sock.on('data', (d: Buffer) => {
      if (done || stream.state === 'CLOSED' || stream.state === 'HALF_CLOSED_LOCAL') return;
      stream.write(d, now());
      if (stream.bufferedAmount >= stream.sendCredit && !r.paused) {
        r.paused = true;
        sock.pause();
      }
      this.after();
    });
    sock.on('end', () => {
      if (done) return;
      sawEnd = true;
      this.log('debug', `stream ${id}: end of data from the service, FIN`);
      stream.end(now());
      this.after();
    });
    sock.on('error', (err) => {
      if (done) return;
      this.log('info', `stream ${id} (port ${port}): service connection failed (${describeError(err)}): RESET ABORTED`);
      finish();
      stream.reset(now(), Reason.ABORTED, describeError(err));
      this.after();
    });
    sock.on('close', () => {
      // After 'end' and our end() this is the normal close (the stream closes when the
      // FINs have crossed). Closed otherwise without an error: abort the stream rather
      // than leave it hanging.
      if (done || sawEnd) return;
      if (stream.state !== 'CLOSED') {
        finish();
        stream.reset(now(), Reason.ABORTED, 'connection closed');
        this.after();
      }
    });
  }

  /** Credit may have arrived: resume sockets whose stream can send again. */
  private resumeReaders(): void {
    for (const r of this.relays) {
      if (r.paused && r.stream.bufferedAmount < r.stream.sendCredit) {
        r.paused = false;
        r.sock.resume();
      }
    }
  }
}

function now(): number {
  return performance.now();
}

function hex(n: number, width = 8): string {
  return (n >>> 0).toString(16).padStart(width, '0');
}
