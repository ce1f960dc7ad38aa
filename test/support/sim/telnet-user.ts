/**
 * A model of a stock `telnet` client (Linux netkit telnet) used by a person to reach
 * a VM's console port, or typed by mistake at the concentrator's VM port.
 *
 * Like netkit telnet given an explicit port, it initiates no negotiation and answers
 * the server's: `WILL ECHO/SGA/BINARY` → DO, `DO BINARY/SGA` → WILL, any other DO →
 * WONT (so `DO VMWARE-TELNET-EXT` is refused), any other WILL → DONT. Everything the
 * server sends as data is collected, unescaped, in `received`. `barrier()` tells
 * when the server has handled everything sent before it (tests wait on it instead
 * of sleeping).
 *
 * No test-framework imports; every wait is bounded.
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import type tls from 'node:tls';
import { DO, IAC, Option, WONT, type NegotiationVerb } from '../../../src/protocol/telnet/constants.js';
import { policyFromLists, type Side } from '../../../src/protocol/telnet/negotiator.js';
import { TelnetSession } from '../../../src/protocol/telnet/session.js';
import { ByteCollector, connectSocket, endSocket, socketDrained, type ByteMatcher } from './esxi-simulator.js';

export interface TelnetUserOptions {
  host: string;
  port: number;
  /** telnets: TLS from the first byte. */
  tls?: tls.ConnectionOptions;
  connectTimeoutMs?: number;
  /** Keep received data in `received` (default true). */
  collect?: boolean;
  /** Options besides BINARY and SGA this user may enable on its side (answers DO with WILL; offer one with `session.requestUs`), e.g. COM-PORT. */
  will?: number[];
}

/**
 * The option `barrier()` asks the server to enable (an unassigned telnet option
 * number: a server refuses it with WONT, every time, RFC 1143).
 */
export const BARRIER_OPTION = 127;

export interface TelnetUserEvents {
  /** Data from the server, unescaped. */
  data: [data: Buffer];
  close: [];
}

export class TelnetUser extends EventEmitter<TelnetUserEvents> {
  readonly session: TelnetSession;
  /** Every WILL/WONT/DO/DONT the server sent, in order. */
  readonly negotiationsReceived: Array<{ verb: NegotiationVerb; option: number }> = [];
  /** Telnet commands the server sent. */
  readonly commands: number[] = [];
  /** Subnegotiations the server sent (option and payload), in order. */
  readonly subnegotiationsReceived: Array<{ option: number; payload: Buffer }> = [];
  socketError: Error | null = null;
  protocolError: Error | null = null;
  /** Our local TCP port (kept after the close). */
  readonly localPort: number;
  /** `127.0.0.1:54321`: this connection as the server sees it. */
  readonly peerName: string;
  private readonly collector: ByteCollector;
  private closedFlag = false;
  private closing: Promise<void> | null = null;
  /** Barriers sent and not answered yet, oldest first (answers come in order). */
  private barriers: Array<{ resolve(): void; reject(err: Error): void }> = [];
  /** Re-checks of pending waits, run on every option change and on close. */
  private optionListeners = new Set<() => void>();

  private constructor(private readonly socket: net.Socket, opts: TelnetUserOptions) {
    super();
    this.localPort = socket.localPort ?? 0;
    this.peerName = `${socket.localAddress}:${socket.localPort}`;
    this.collector = new ByteCollector(opts.collect ?? true);
    this.session = new TelnetSession(
      policyFromLists({ us: [Option.BINARY, Option.SGA, ...(opts.will ?? [])], him: [Option.ECHO, Option.SGA, Option.BINARY] }),
      {
        write: (b) => (this.socket.destroyed ? false : this.socket.write(b)),
        data: (d) => {
          this.collector.push(d);
          this.emit('data', d);
        },
        command: (c) => this.commands.push(c),
        subnegotiation: (option, payload) => this.subnegotiationsReceived.push({ option, payload: Buffer.from(payload) }),
        optionChange: () => this.notifyOptions(),
        error: (err) => {
          this.protocolError = err;
        },
      },
    );
    const negotiator = this.session.negotiator;
    const receive = negotiator.receive.bind(negotiator);
    negotiator.receive = (verb, option) => {
      // The answer to a barrier is ours, not the server's negotiation: not recorded.
      if (verb === WONT && option === BARRIER_OPTION && this.barriers.length > 0) {
        this.barriers.shift()!.resolve();
        return;
      }
      this.negotiationsReceived.push({ verb, option });
      receive(verb, option);
    };
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      // Replies to one chunk leave in one write.
      socket.cork();
      try {
        this.session.receive(chunk);
      } finally {
        socket.uncork();
      }
    });
    socket.on('error', (err) => {
      this.socketError = err;
    });
    socket.on('close', () => {
      this.closedFlag = true;
      this.collector.end('connection closed');
      const barriers = this.barriers;
      this.barriers = [];
      for (const b of barriers) b.reject(new Error('telnet user: connection closed before the barrier was answered'));
      this.notifyOptions();
      this.emit('close');
    });
  }

  static async connect(opts: TelnetUserOptions): Promise<TelnetUser> {
    const socket = await connectSocket(opts.host, opts.port, opts.tls, opts.connectTimeoutMs ?? 5000);
    return new TelnetUser(socket, opts);
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Everything received so far (unescaped; a view that later data does not change). */
  get received(): Buffer {
    return this.collector.bytes;
  }

  /** `received` as latin1 text (one char per byte). */
  get text(): string {
    return this.collector.bytes.toString('latin1');
  }

  /** The current length of `received`: pass it as `from` to wait only for what comes next. */
  mark(): number {
    return this.collector.length;
  }

  isEnabled(side: Side, option: number): boolean {
    return this.session.isEnabled(side, option);
  }

  /**
   * Waits until the data received from offset `from` on contains the pattern (a
   * string is matched as UTF-8), reaches N bytes, or satisfies the predicate.
   * Resolves with the bytes from `from`; rejects on timeout or on close without a match.
   */
  waitFor(pattern: ByteMatcher, timeoutMs = 5000, from = 0): Promise<Buffer> {
    return this.collector.wait(pattern, timeoutMs, from, 'telnet user');
  }

  /** Waits until the options are enabled on the given sides (e.g. BINARY both ways). */
  waitForOptions(wanted: Array<[Side, number]>, timeoutMs = 5000): Promise<void> {
    const done = () => wanted.every(([side, opt]) => this.isEnabled(side, opt));
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.optionListeners.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (done()) finish();
        else if (this.closedFlag) finish(new Error('telnet user: connection closed during option negotiation'));
      };
      const timer = setTimeout(() => finish(new Error(`telnet user: options ${JSON.stringify(wanted)} not enabled after ${timeoutMs} ms`)), timeoutMs);
      this.optionListeners.add(check);
      check();
    });
  }

  /**
   * Resolves once the server has handled everything this user sent before, and
   * everything the server wrote to this user before handling it has arrived.
   *
   * It sends `DO <BARRIER_OPTION>`; the server processes a connection's input in
   * order and refuses the option with `WONT` in the same write stream as its data,
   * so the answer comes after both. Unlike AYT, it works whether or not the client
   * is attached yet and adds nothing to `received`. Rejects on close or timeout.
   */
  barrier(timeoutMs = 5000): Promise<void> {
    if (this.closedFlag || this.socket.destroyed) return Promise.reject(new Error('telnet user: barrier on a closed connection'));
    return new Promise((resolve, reject) => {
      const entry = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        const i = this.barriers.indexOf(entry);
        // Later barriers wait behind this one; its answer, if it ever comes, must not resolve them.
        if (i >= 0) this.barriers[i] = { resolve: () => undefined, reject: () => undefined };
        reject(new Error(`telnet user: barrier not answered after ${timeoutMs} ms`));
      }, timeoutMs);
      this.barriers.push(entry);
      this.socket.write(Buffer.of(IAC, DO, BARRIER_OPTION));
    });
  }

  /** Typed input, escaped for the wire (IAC doubled; CR NUL unless BINARY is on). */
  send(data: Buffer | string): boolean {
    if (this.closedFlag) return false;
    return this.session.sendData(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  }

  /** Resolves once the socket's write queue is empty (at once if it is, or if the connection is closed). */
  whenDrained(): Promise<void> {
    if (this.closedFlag || this.socket.destroyed || this.socket.writableLength === 0) return Promise.resolve();
    return socketDrained(this.socket);
  }

  /** A telnet command such as BRK or AYT. */
  sendCommand(command: number): boolean {
    if (this.closedFlag) return false;
    return this.session.sendCommand(command);
  }

  sendRaw(bytes: Uint8Array): boolean {
    if (this.closedFlag || this.socket.destroyed) return false;
    return this.socket.write(bytes);
  }

  /** Stop reading the socket (misbehaviour: a client that never reads; the kernel buffers fill). */
  stopReading(): void {
    this.socket.pause();
  }

  /** Read again after stopReading(). */
  resumeReading(): void {
    this.socket.resume();
  }

  whenClosed(timeoutMs = 5000): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('close', onClose);
        reject(new Error(`telnet user: not closed after ${timeoutMs} ms`));
      }, timeoutMs);
      const onClose = () => {
        clearTimeout(timer);
        resolve();
      };
      this.once('close', onClose);
    });
  }

  /** Graceful: FIN, then wait for the close (destroying after 1 s). Idempotent. */
  close(): Promise<void> {
    this.closing ??= endSocket(this.socket, this.closedFlag);
    return this.closing;
  }

  /** Abort at once. Idempotent. */
  destroy(): void {
    this.socket.destroy();
  }

  private notifyOptions(): void {
    for (const l of [...this.optionListeners]) l();
  }
}
