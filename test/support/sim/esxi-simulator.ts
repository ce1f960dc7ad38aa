/**
 * A simulated ESXi host's side of one VM serial port connection to a vSPC
 * concentrator, built on our own sans-I/O `TelnetSession` in the client role.
 *
 * Used by the end-to-end tests, the vMotion tests and the benchmark (possibly in a
 * separate process), so it imports no test framework and keeps per-connection cost
 * low: one TelnetSession, one growable byte buffer for the VM's received input
 * (can be turned off with `collectInput: false`), no timers unless a wait is pending.
 *
 * What the simulated host does (see ../shared/docs/vspc-protocol.md):
 *
 * - offers `WILL AUTHENTICATION` (a concentrator without in-band TLS refuses it),
 *   `WILL BINARY`, `WILL SGA`, `DO BINARY`, `DO SGA`, `WILL VMWARE-TELNET-EXT`
 *   and, with `comPort`, `WILL COM-PORT`;
 * - accepts the proxy's `WILL BINARY/SGA/ECHO` with DO and `DO BINARY/SGA/232/COM-PORT`
 *   with WILL (RFC 1143 via `OptionNegotiator`), refuses anything else;
 * - sends `KNOWN-SUBOPTIONS-1`, optionally the unsolicited `VM-VC-UUID`/`VM-NAME`, then
 *   `DO-PROXY <direction><serviceUri>`; answers `GET-VM-VC-UUID`/`GET-VM-NAME`;
 * - once COM-PORT is agreed, reports the guest UART (SET-BAUDRATE/DATASIZE/PARITY/STOPSIZE)
 *   and records the proxy's acknowledgements (code + 100);
 * - answers option-232 codes it does not know with `UNKNOWN-SUBOPTION-RCVD-1`;
 * - exposes protocol-level vMotion helpers (BEGIN/GOAHEAD/NOTNOW, PEER/PEER-OK,
 *   COMPLETE, ABORT) without any policy of its own;
 * - `barrier()`: an unknown subcommand whose UNKNOWN-SUBOPTION-RCVD-2 answer tells
 *   that the concentrator has handled everything sent before it (tests wait on it
 *   instead of sleeping).
 *
 * Negotiation order (`order`):
 * - `host-first` (default): the whole opening is sent right after connecting, before
 *   reading anything from the proxy: negotiation offers, KNOWN-SUBOPTIONS-1,
 *   [VM-VC-UUID, VM-NAME], DO-PROXY.
 * - `proxy-first`: nothing is sent until the proxy's first bytes arrived; they are
 *   answered first, then the host's own offers follow, and the option-232
 *   subcommands are sent once option 232 is agreed on the host's side.
 * - `shuffled`: the opening items of `host-first` in a seeded random order (`seed`),
 *   except that `WILL VMWARE-TELNET-EXT` always precedes the first option-232
 *   subnegotiation, as a real host would do.
 *
 * Segmentation (`segmentation`) applies to the bytes the host writes until the
 * proxy answered DO-PROXY (the handshake): `whole` writes the opening in one
 * `write()`, `bytewise` one byte per write (each after the previous write's
 * callback and an event-loop turn, with Nagle off, so they leave as separate
 * segments and an in-process reader reads them one by one), `random` in pieces of
 * 1..8 bytes (seeded). Serial data from `send()` is never split but keeps its
 * order behind pending handshake pieces.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { Option, type NegotiationVerb } from '../../../src/protocol/telnet/constants.js';
import { policyFromLists, type Side } from '../../../src/protocol/telnet/negotiator.js';
import { TelnetSession } from '../../../src/protocol/telnet/session.js';
import { ComPort, Ext, PROXY_KNOWN_SUBOPTIONS } from '../../../src/protocol/vmware/codes.js';

// ---------------------------------------------------------------------------
// Small shared utilities (also used by telnet-user.ts)

/** mulberry32: a tiny seeded PRNG, returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What `ByteCollector.wait` waits for: at least N bytes, a byte pattern, or a predicate over the bytes. */
export type ByteMatcher = number | string | Uint8Array | ((bytes: Buffer) => boolean);

function describeMatcher(m: ByteMatcher): string {
  if (typeof m === 'number') return `${m} bytes`;
  if (typeof m === 'string') return JSON.stringify(m);
  if (typeof m === 'function') return 'predicate';
  return `bytes [${[...m.subarray(0, 32)].join(' ')}${m.length > 32 ? ' ...' : ''}]`;
}

function preview(buf: Buffer): string {
  const tail = buf.length > 200 ? buf.subarray(buf.length - 200) : buf;
  return `${buf.length} bytes, ${buf.length > 200 ? 'ending in ' : ''}${JSON.stringify(tail.toString('latin1'))}`;
}

/**
 * An append-only byte buffer with amortised O(1) appends, plus bounded waits for
 * content. `bytes` returns a view; views stay valid (later appends never overwrite
 * bytes already stored, growth copies into a new buffer).
 */
export class ByteCollector {
  private buf: Buffer = Buffer.alloc(0);
  private len = 0;
  private waiters = new Set<() => void>();
  private endReason: string | null = null;
  /** Total bytes ever pushed (also counted when collection is off). */
  total = 0;

  constructor(public enabled = true) {}

  push(chunk: Buffer): void {
    this.total += chunk.length;
    if (this.enabled) {
      if (this.len + chunk.length > this.buf.length) {
        const grown = Buffer.allocUnsafe(Math.max(256, this.buf.length * 2, this.len + chunk.length));
        this.buf.copy(grown, 0, 0, this.len);
        this.buf = grown;
      }
      chunk.copy(this.buf, this.len);
      this.len += chunk.length;
    }
    for (const w of [...this.waiters]) w();
  }

  get bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }

  get length(): number {
    return this.len;
  }

  /** Forget what was collected (waits in progress use offsets, so only call between waits). */
  reset(): void {
    this.buf = Buffer.alloc(0);
    this.len = 0;
  }

  /** No more bytes will come: pending and later waits that are not satisfied fail at once. */
  end(reason: string): void {
    if (this.endReason) return;
    this.endReason = reason;
    for (const w of [...this.waiters]) w();
  }

  /**
   * Resolves with the collected bytes from `from` on, once `matcher` is satisfied by
   * them; rejects after `timeoutMs` or when the stream ended without a match.
   */
  wait(matcher: ByteMatcher, timeoutMs: number, from = 0, what = 'data'): Promise<Buffer> {
    const pattern = typeof matcher === 'string' ? Buffer.from(matcher, 'utf8') : matcher instanceof Uint8Array ? Buffer.from(matcher) : null;
    let scanned = from;
    const check = (): boolean => {
      const view = this.buf.subarray(Math.min(from, this.len), this.len);
      if (typeof matcher === 'number') return view.length >= matcher;
      if (typeof matcher === 'function') return matcher(view);
      const p = pattern!;
      const start = Math.max(from, scanned - p.length + 1);
      const found = this.buf.subarray(0, this.len).indexOf(p, start) >= 0;
      scanned = this.len;
      return found;
    };
    if (check()) return Promise.resolve(this.bytes.subarray(Math.min(from, this.len)));
    if (!this.enabled) return Promise.reject(new Error(`cannot wait for ${what}: collection is off`));
    return new Promise<Buffer>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (err) reject(err);
        else resolve(this.bytes.subarray(Math.min(from, this.len)));
      };
      const waiter = () => {
        if (check()) done();
        else if (this.endReason) {
          done(new Error(`${what}: ${this.endReason} before ${describeMatcher(matcher)} arrived (got ${preview(this.bytes.subarray(Math.min(from, this.len)))})`));
        }
      };
      const timer = setTimeout(() => {
        done(new Error(`${what}: timed out after ${timeoutMs} ms waiting for ${describeMatcher(matcher)} (got ${preview(this.bytes.subarray(Math.min(from, this.len)))})`));
      }, timeoutMs);
      this.waiters.add(waiter);
      if (this.endReason) waiter();
    });
  }
}

/** Connects a TCP or TLS socket and resolves once it is usable (TLS: after the handshake). */
export function connectSocket(
  host: string,
  port: number,
  tlsOptions: tls.ConnectionOptions | undefined,
  timeoutMs: number,
  localAddress?: string,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = tlsOptions
      ? tls.connect({ servername: net.isIP(host) ? undefined : host, ...tlsOptions, host, port, ...(localAddress ? { localAddress } : {}) } as tls.ConnectionOptions)
      : net.connect({ host, port, localAddress });
    const onError = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    const timer = setTimeout(() => onError(new Error(`connect to ${host}:${port} timed out after ${timeoutMs} ms`)), timeoutMs);
    socket.once('error', onError);
    socket.once(tlsOptions ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

// ---------------------------------------------------------------------------
// The simulated VM

/** FIN, then resolve on close, destroying the socket if the peer has not closed after 1 s. */
export function endSocket(socket: net.Socket, alreadyClosed: boolean): Promise<void> {
  return new Promise<void>((resolve) => {
    if (alreadyClosed) return resolve();
    const timer = setTimeout(() => socket.destroy(), 1000);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.end();
  });
}

/** Resolves on the socket's next `drain` or `close`. */
export function socketDrained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

export type NegotiationOrder = 'host-first' | 'proxy-first' | 'shuffled';
export type Segmentation = 'whole' | 'bytewise' | 'random';

export interface UartReport {
  baudRate?: number;
  dataSize?: number;
  /** RFC 2217 value: 1 none, 2 odd, 3 even, 4 mark, 5 space. */
  parity?: number;
  /** RFC 2217 value: 1 = 1 bit, 2 = 2 bits, 3 = 1.5 bits. */
  stopSize?: number;
}

export interface SimulatedVmOptions {
  host: string;
  port: number;
  /** telnets:// (TLS from the first byte). */
  tls?: tls.ConnectionOptions;
  /** UUID text as ESXi sends it, e.g. '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01'; sent verbatim. */
  uuid: string;
  /** VM name (UTF-8). */
  name: string;
  /** Raw VM-NAME payload instead of `name` (e.g. oversized or invalid UTF-8). */
  nameBytes?: Buffer;
  /** Service URI in DO-PROXY; default 'vSPC.py'. */
  serviceUri?: string;
  /** DO-PROXY direction byte; default 'S'. */
  direction?: string;
  order?: NegotiationOrder;
  /** Seed for `shuffled` order and `random` segmentation; default 1. */
  seed?: number;
  /** Send VM-VC-UUID and VM-NAME before DO-PROXY without being asked. */
  unsolicitedIdentity?: boolean;
  /** Offer WILL COM-PORT and, once agreed, report `uart`. */
  comPort?: boolean;
  /** UART settings reported over COM-PORT; default 9600 8N1. */
  uart?: UartReport;
  segmentation?: Segmentation;
  /** Default true. false: never sends DO-PROXY nor identity (a host that never identifies). */
  identify?: boolean;
  /** Answer GET-VM-VC-UUID / GET-VM-NAME (default true; false with `unsolicitedIdentity` proves the unsolicited path). */
  answerIdentityRequests?: boolean;
  /** Negotiate telnet and option 232 but do not send DO-PROXY (a vMotion destination). */
  skipDoProxy?: boolean;
  /** Offer WILL AUTHENTICATION first (default true). */
  offerAuthentication?: boolean;
  /** The codes announced in KNOWN-SUBOPTIONS-1. */
  knownSuboptions?: readonly number[];
  /** Raw bytes written right after the opening (misbehaviour). */
  injectAfterOpening?: Buffer;
  /** Keep the client input the VM receives in `input` (default true; benchmarks may turn it off). */
  collectInput?: boolean;
  connectTimeoutMs?: number;
  /** Connect from this local address (e.g. 127.0.0.2: another "host" on loopback). */
  localAddress?: string;
  /** `proxy-first`: if the proxy sent nothing by then, open anyway. Default 2000 ms. */
  proxyFirstWaitMs?: number;
}

export type VmotionBeginResult = { kind: 'goahead'; secret: Buffer } | { kind: 'notnow' };

/**
 * The option-232 subcommand `barrier()` sends: a code VMware does not define, which a
 * concentrator answers with UNKNOWN-SUBOPTION-RCVD-2 carrying it.
 */
export const BARRIER_SUBCOMMAND = 199;

/** What ESXi announces it knows: the same core table of subcommands as the proxy's. */
export const HOST_KNOWN_SUBOPTIONS: readonly number[] = PROXY_KNOWN_SUBOPTIONS;

/** Codes the simulated host understands when the proxy sends them. */
const HANDLED_FROM_PROXY = new Set<number>([
  Ext.KNOWN_SUBOPTIONS_2,
  Ext.UNKNOWN_SUBOPTION_RCVD_2,
  Ext.VMOTION_GOAHEAD,
  Ext.VMOTION_NOTNOW,
  Ext.VMOTION_PEER_OK,
  Ext.WILL_PROXY,
  Ext.WONT_PROXY,
  Ext.GET_VM_VC_UUID,
  Ext.GET_VM_NAME,
  Ext.GET_VM_BIOS_UUID,
  Ext.GET_VM_LOCATION_UUID,
]);

type OpeningItem = { kind: 'neg'; run: () => void } | { kind: 'ext'; run: () => void } | { kind: 'will-ext'; run: () => void };

interface QueuedWrite {
  bytes: Buffer;
  split: boolean;
}

export interface SimulatedVmEvents {
  /** Client input for the VM (unescaped). */
  data: [data: Buffer];
  /** An option-232 subnegotiation from the proxy. */
  ext: [code: number, payload: Buffer];
  /** A COM-PORT subnegotiation from the proxy. */
  comPort: [code: number, payload: Buffer];
  /** A telnet command from the proxy (e.g. BRK). */
  command: [command: number];
  /** The proxy broke the telnet protocol (the simulator stops parsing). */
  protocolError: [err: Error];
  close: [];
}

/** One simulated VM serial port connection. Create with `SimulatedVm.connect()`. */
export class SimulatedVm extends EventEmitter<SimulatedVmEvents> {
  readonly session: TelnetSession;
  /** Every WILL/WONT/DO/DONT the proxy sent, in order. */
  readonly negotiationsFromProxy: Array<{ verb: NegotiationVerb; option: number }> = [];
  /** Our requests the proxy refused (e.g. ['us', 37] for DONT AUTHENTICATION). */
  readonly refusedByProxy: Array<{ side: Side; option: number }> = [];
  /** The proxy's KNOWN-SUBOPTIONS-2 list, once received. */
  knownSuboptionsFromProxy: number[] | null = null;
  /** Codes the proxy reported in UNKNOWN-SUBOPTION-RCVD-2. */
  readonly unknownReportedByProxy: number[] = [];
  /** Option-232 codes from the proxy this host did not know (answered with UNKNOWN-SUBOPTION-RCVD-1). */
  readonly unknownFromProxy: number[] = [];
  /** COM-PORT replies from the proxy (code = ours + 100). */
  readonly uartAcks: Array<{ code: number; value: Buffer }> = [];
  /** The proxy's answer to DO-PROXY. */
  proxyAnswer: 'will' | 'wont' | null = null;
  /** How often the proxy asked GET-VM-VC-UUID / GET-VM-NAME. */
  identityRequests = { uuid: 0, name: 0 };
  /** Telnet commands (BRK, ...) the proxy sent. */
  readonly commands: number[] = [];
  /** The last socket error, if any. */
  socketError: Error | null = null;
  /** Protocol error in the proxy's byte stream, if any. */
  protocolError: Error | null = null;
  /** Our local TCP port (kept after the close). */
  readonly localPort: number;
  /** `127.0.0.1:54321`: this connection as the concentrator sees it (its `peer` log field). */
  readonly peerName: string;

  private readonly inputBytes: ByteCollector;
  private readonly opts: SimulatedVmOptions;
  private readonly rng: () => number;
  private batch: Buffer[] | null = null;
  private queue: QueuedWrite[] = [];
  private queuedBytes = 0;
  private pumping = false;
  private handshakeDone = false;
  private extSent = false;
  private openingSent = false;
  private proxyFirstPending = false;
  private closedFlag = false;
  private closing: Promise<void> | null = null;
  private changeListeners = new Set<() => void>();
  /** Barriers sent and not answered yet, oldest first (answers come in order). */
  private barriers: Array<{ resolve(): void; reject(err: Error): void }> = [];

  private constructor(
    private readonly socket: net.Socket,
    opts: SimulatedVmOptions,
  ) {
    super();
    this.opts = opts;
    this.localPort = socket.localPort ?? 0;
    this.peerName = `${socket.localAddress}:${socket.localPort}`;
    this.rng = seededRandom(opts.seed ?? 1);
    this.inputBytes = new ByteCollector(opts.collectInput ?? true);
    const comPort = opts.comPort ?? false;
    this.session = new TelnetSession(
      policyFromLists({
        us: [Option.BINARY, Option.SGA, Option.VMWARE_EXT, ...(comPort ? [Option.COM_PORT] : [])],
        him: [Option.BINARY, Option.SGA, Option.ECHO],
      }),
      {
        write: (b) => this.out(b),
        data: (d) => {
          this.inputBytes.push(d);
          this.emit('data', d);
        },
        command: (c) => {
          this.commands.push(c);
          this.emit('command', c);
        },
        subnegotiation: (option, payload) => this.onSubnegotiation(option, payload),
        optionChange: (side, option, enabled) => this.onOptionChange(side, option, enabled),
        refused: (side, option) => this.refusedByProxy.push({ side, option }),
        error: (err) => {
          this.protocolError = err;
          this.emit('protocolError', err);
        },
      },
    );
    // Record every negotiation the proxy sends (the negotiator does not report answers it absorbs).
    const negotiator = this.session.negotiator;
    const receive = negotiator.receive.bind(negotiator);
    negotiator.receive = (verb, option) => {
      this.negotiationsFromProxy.push({ verb, option });
      receive(verb, option);
    };

    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onSocketData(chunk));
    socket.on('error', (err) => {
      this.socketError = err;
    });
    socket.on('close', () => {
      this.closedFlag = true;
      this.queue = [];
      this.queuedBytes = 0;
      this.inputBytes.end('connection closed');
      const barriers = this.barriers;
      this.barriers = [];
      for (const b of barriers) b.reject(new Error('simulated VM: connection closed before the barrier was answered'));
      this.notify();
      this.emit('close');
    });
  }

  /** Connects and sends the opening (for `proxy-first`: after the proxy's first bytes were answered). */
  static async connect(opts: SimulatedVmOptions): Promise<SimulatedVm> {
    const socket = await connectSocket(opts.host, opts.port, opts.tls, opts.connectTimeoutMs ?? 5000, opts.localAddress);
    const vm = new SimulatedVm(socket, opts);
    await vm.open();
    return vm;
  }

  // --- state

  get closed(): boolean {
    return this.closedFlag;
  }

  /** The bytes clients typed that reached the VM (a view; see ByteCollector). */
  get input(): Buffer {
    return this.inputBytes.bytes;
  }

  /** Total input bytes received (counted even with collectInput: false). */
  get inputTotal(): number {
    return this.inputBytes.total;
  }


  isEnabled(side: Side, option: number): boolean {
    return this.session.isEnabled(side, option);
  }

  // --- waiting

  /** Resolves on WILL-PROXY; rejects on WONT-PROXY, close or timeout. */
  whenProxied(timeoutMs = 5000): Promise<void> {
    return this.until(
      () => {
        if (this.proxyAnswer === 'will') return { value: undefined };
        if (this.proxyAnswer === 'wont') throw new Error('proxy answered WONT-PROXY');
        if (this.closedFlag) throw new Error('connection closed before the proxy answered DO-PROXY');
        return undefined;
      },
      timeoutMs,
      'WILL-PROXY',
    );
  }

  /** Resolves once the connection is closed (by either side). */
  whenClosed(timeoutMs = 5000): Promise<void> {
    return this.until(() => (this.closedFlag ? { value: undefined } : undefined), timeoutMs, 'close');
  }

  /** Waits for client input: N bytes, a pattern or a predicate over `input` (from offset `from`). */
  waitForInput(matcher: ByteMatcher, timeoutMs = 5000, from = 0): Promise<Buffer> {
    return this.inputBytes.wait(matcher, timeoutMs, from, 'VM input');
  }

  /** Waits for an option-232 subnegotiation from the proxy that satisfies `match`. */
  waitForExt(match: (code: number, payload: Buffer) => boolean, timeoutMs = 5000): Promise<{ code: number; payload: Buffer }> {
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        this.off('ext', onExt);
        this.off('close', onClose);
      };
      const onExt = (code: number, payload: Buffer) => {
        if (!match(code, payload)) return;
        cleanup();
        resolve({ code, payload });
      };
      const onClose = () => {
        cleanup();
        reject(new Error('connection closed while waiting for an option-232 subcommand'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for an option-232 subcommand`));
      }, timeoutMs);
      this.on('ext', onExt);
      this.once('close', onClose);
      if (this.closedFlag) onClose();
    });
  }

  /**
   * Resolves once the concentrator has handled everything this VM sent before, and
   * everything it wrote to this VM before handling it has arrived (client input
   * included). It sends the unknown subcommand BARRIER_SUBCOMMAND: the concentrator
   * processes a connection's input in order and answers UNKNOWN-SUBOPTION-RCVD-2 in
   * the same write stream as the client input it forwards. The answer is not
   * recorded in `unknownReportedByProxy` nor emitted as `ext`. Needs option 232
   * agreed (after `whenProxied()`, or PEER-OK for a vMotion destination).
   * Rejects on close or timeout.
   */
  barrier(timeoutMs = 5000): Promise<void> {
    if (this.closedFlag) return Promise.reject(new Error('simulated VM: barrier on a closed connection'));
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
        reject(new Error(`simulated VM: barrier not answered after ${timeoutMs} ms`));
      }, timeoutMs);
      this.barriers.push(entry);
      this.sendExt(BARRIER_SUBCOMMAND);
    });
  }

  // --- sending

  /** Serial output of the VM, escaped by the TelnetSession. Returns the write's backpressure result. */
  send(data: Buffer | string): boolean {
    if (this.closedFlag) return false;
    return this.session.sendData(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  }

  /**
   * Resolves once the socket's write queue is empty (at once if it is, or if the
   * connection is closed): for senders that respect backpressure after `send()`
   * returned false (the benchmark).
   */
  whenDrained(): Promise<void> {
    if (this.closedFlag || this.socket.destroyed || (this.socket.writableLength === 0 && this.queue.length === 0)) return Promise.resolve();
    return socketDrained(this.socket);
  }

  /** A raw option-232 subcommand: `IAC SB 232 <code> <payload> IAC SE`. */
  sendExt(code: number, payload?: Uint8Array): void {
    if (this.closedFlag) return;
    this.session.sendSubnegotiation(Option.VMWARE_EXT, payload ? Buffer.concat([Buffer.of(code), payload]) : Buffer.of(code));
  }

  /** Arbitrary bytes, unescaped (misbehaviour). */
  sendRaw(bytes: Uint8Array): boolean {
    if (this.closedFlag) return false;
    return this.write(Buffer.from(bytes), false);
  }

  /** Stop reading the socket (misbehaviour: a host that never reads what the proxy sends; the kernel buffers fill). */
  stopReading(): void {
    this.socket.pause();
  }

  sendUuid(text = this.opts.uuid): void {
    this.sendExt(Ext.VM_VC_UUID, Buffer.from(text, 'latin1'));
  }

  sendName(name?: string): void {
    this.sendExt(Ext.VM_NAME, name !== undefined ? Buffer.from(name, 'utf8') : (this.opts.nameBytes ?? Buffer.from(this.opts.name, 'utf8')));
  }

  sendDoProxy(direction = this.opts.direction ?? 'S', uri = this.opts.serviceUri ?? 'vSPC.py'): void {
    this.sendExt(Ext.DO_PROXY, Buffer.concat([Buffer.from(direction, 'latin1'), Buffer.from(uri, 'utf8')]));
  }

  // --- vMotion (protocol level only)

  /**
   * Source host: VMOTION-BEGIN(seq). Resolves with the proxy's GOAHEAD (secret = its
   * payload minus the seq prefix) or NOTNOW; rejects on timeout (hosts wait about 5 s)
   * or close.
   */
  async vmotionBegin(seq: Buffer, timeoutMs = 5000): Promise<VmotionBeginResult> {
    const wait = this.waitForExt(
      (code, payload) =>
        (code === Ext.VMOTION_GOAHEAD || code === Ext.VMOTION_NOTNOW) &&
        payload.length >= seq.length &&
        payload.subarray(0, seq.length).equals(seq),
      timeoutMs,
    );
    this.sendExt(Ext.VMOTION_BEGIN, seq);
    const { code, payload } = await wait;
    return code === Ext.VMOTION_GOAHEAD ? { kind: 'goahead', secret: Buffer.from(payload.subarray(seq.length)) } : { kind: 'notnow' };
  }

  /**
   * Destination host: VMOTION-PEER(seq + secret). Resolves true on PEER-OK (whose
   * payload, the seq, must be a prefix of what we sent), false on timeout or close:
   * the protocol has no error reply.
   */
  async vmotionPeer(seqAndSecret: Buffer, timeoutMs = 2000): Promise<boolean> {
    const wait = this.waitForExt(
      (code, payload) =>
        code === Ext.VMOTION_PEER_OK && payload.length <= seqAndSecret.length && seqAndSecret.subarray(0, payload.length).equals(payload),
      timeoutMs,
    );
    this.sendExt(Ext.VMOTION_PEER, seqAndSecret);
    try {
      await wait;
      return true;
    } catch {
      return false;
    }
  }

  /** Destination host: VMOTION-COMPLETE(seq). */
  vmotionComplete(seq: Buffer): void {
    this.sendExt(Ext.VMOTION_COMPLETE, seq);
  }

  /** Source host: VMOTION-ABORT (no payload). */
  vmotionAbort(): void {
    this.sendExt(Ext.VMOTION_ABORT);
  }

  // --- closing

  /** Graceful: FIN, then wait for the close (destroying after 1 s). Idempotent. */
  close(): Promise<void> {
    this.closing ??= endSocket(this.socket, this.closedFlag);
    return this.closing;
  }

  /** Abort at once. Idempotent. */
  destroy(): void {
    this.socket.destroy();
  }

  // --- internals

  private async open(): Promise<void> {
    const order = this.opts.order ?? 'host-first';
    if (order === 'proxy-first') {
      this.proxyFirstPending = true;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.socket.off('data', onData);
          this.proxyFirstPending = false;
          if (!this.openingSent) this.sendOpening('proxy-first');
          resolve();
        }, this.opts.proxyFirstWaitMs ?? 2000);
        // Runs after onSocketData (registered first), which sends the opening.
        const onData = () => {
          clearTimeout(timer);
          resolve();
        };
        this.socket.once('data', onData);
        this.socket.once('close', onData);
      });
      return;
    }
    this.sendOpening(order);
  }

  private openingItems(withNegotiation: boolean, withExt: boolean): OpeningItem[] {
    const o = this.opts;
    const s = this.session;
    const items: OpeningItem[] = [];
    if (withNegotiation) {
      if (o.offerAuthentication ?? true) items.push({ kind: 'neg', run: () => s.requestUs(Option.AUTHENTICATION) });
      items.push({ kind: 'neg', run: () => s.requestUs(Option.BINARY) });
      items.push({ kind: 'neg', run: () => s.requestUs(Option.SGA) });
      items.push({ kind: 'neg', run: () => s.requestHim(Option.BINARY) });
      items.push({ kind: 'neg', run: () => s.requestHim(Option.SGA) });
      items.push({ kind: 'will-ext', run: () => s.requestUs(Option.VMWARE_EXT) });
      if (o.comPort) items.push({ kind: 'neg', run: () => s.requestUs(Option.COM_PORT) });
    }
    if (withExt) {
      for (const run of this.extOpening()) items.push({ kind: 'ext', run });
    }
    return items;
  }

  /** The option-232 subcommands of the opening, in the order a host sends them. */
  private extOpening(): Array<() => void> {
    const o = this.opts;
    const identify = o.identify ?? true;
    const runs: Array<() => void> = [() => this.sendExt(Ext.KNOWN_SUBOPTIONS_1, Buffer.from(o.knownSuboptions ?? HOST_KNOWN_SUBOPTIONS))];
    if (identify && o.unsolicitedIdentity) {
      runs.push(() => this.sendUuid());
      runs.push(() => this.sendName());
    }
    if (identify && !o.skipDoProxy) runs.push(() => this.sendDoProxy());
    return runs;
  }

  private sendOpening(order: NegotiationOrder, afterReceive?: Buffer): void {
    this.batch = [];
    try {
      // The proxy's offers are answered first (the policy does that inside receive()).
      if (afterReceive) this.session.receive(afterReceive);
      this.openingSent = true;
      if (order === 'proxy-first') {
        for (const item of this.openingItems(true, false)) item.run();
        if (this.session.isEnabled('us', Option.VMWARE_EXT)) this.sendExtOpening();
      } else {
        let items = this.openingItems(true, true);
        if (order === 'shuffled') items = this.shuffle(items);
        this.extSent = true;
        for (const item of items) item.run();
      }
      if (this.opts.injectAfterOpening) this.batch.push(Buffer.from(this.opts.injectAfterOpening));
    } finally {
      const bytes = Buffer.concat(this.batch);
      this.batch = null;
      if (bytes.length > 0) this.write(bytes, !this.handshakeDone);
    }
  }

  private sendExtOpening(): void {
    if (this.extSent) return;
    this.extSent = true;
    for (const run of this.extOpening()) run();
  }

  private shuffle(items: OpeningItem[]): OpeningItem[] {
    const a = [...items];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    // The ext subcommands keep their relative order (KNOWN, [UUID, NAME], DO-PROXY)...
    const extRuns = items.filter((x) => x.kind === 'ext');
    let k = 0;
    const out = a.map((x) => (x.kind === 'ext' ? extRuns[k++] : x));
    // ...and WILL 232 goes before the first of them.
    const willExt = out.findIndex((x) => x.kind === 'will-ext');
    const firstExt = out.findIndex((x) => x.kind === 'ext');
    if (firstExt >= 0 && willExt > firstExt) {
      const [w] = out.splice(willExt, 1);
      out.splice(firstExt, 0, w);
    }
    return out;
  }

  private onSocketData(chunk: Buffer): void {
    if (this.proxyFirstPending) {
      this.proxyFirstPending = false;
      if (!this.openingSent) {
        this.sendOpening('proxy-first', chunk);
        this.notify();
        return;
      }
    }
    // Replies to one chunk leave in one write (unless the handshake is being split on purpose).
    const cork = (this.opts.segmentation ?? 'whole') === 'whole';
    if (cork) this.socket.cork();
    try {
      this.session.receive(chunk);
    } finally {
      if (cork) this.socket.uncork();
    }
    this.notify();
  }

  private onOptionChange(side: Side, option: number, enabled: boolean): void {
    if (!enabled || side !== 'us') return;
    if (option === Option.VMWARE_EXT && this.openingSent) this.sendExtOpening();
    if (option === Option.COM_PORT) this.sendUart();
  }

  private sendUart(): void {
    const u = this.opts.uart ?? {};
    const baud = Buffer.alloc(5);
    baud[0] = ComPort.SET_BAUDRATE;
    baud.writeUInt32BE(u.baudRate ?? 9600, 1);
    this.session.sendSubnegotiation(Option.COM_PORT, baud);
    this.session.sendSubnegotiation(Option.COM_PORT, Buffer.of(ComPort.SET_DATASIZE, u.dataSize ?? 8));
    this.session.sendSubnegotiation(Option.COM_PORT, Buffer.of(ComPort.SET_PARITY, u.parity ?? 1));
    this.session.sendSubnegotiation(Option.COM_PORT, Buffer.of(ComPort.SET_STOPSIZE, u.stopSize ?? 1));
  }

  private onSubnegotiation(option: number, payload: Buffer): void {
    if (option === Option.COM_PORT) {
      if (payload.length > 0 && payload[0] >= ComPort.SERVER_OFFSET) {
        this.uartAcks.push({ code: payload[0], value: Buffer.from(payload.subarray(1)) });
      }
      this.emit('comPort', payload[0] ?? -1, payload.subarray(1));
      return;
    }
    if (option !== Option.VMWARE_EXT || payload.length === 0) return;
    const code = payload[0];
    const body = payload.subarray(1);
    const answer = (this.opts.identify ?? true) && (this.opts.answerIdentityRequests ?? true);
    switch (code) {
      case Ext.KNOWN_SUBOPTIONS_2:
        this.knownSuboptionsFromProxy = [...body];
        break;
      case Ext.UNKNOWN_SUBOPTION_RCVD_2:
        if (body[0] === BARRIER_SUBCOMMAND && this.barriers.length > 0) {
          this.barriers.shift()!.resolve();
          return;
        }
        this.unknownReportedByProxy.push(body[0] ?? -1);
        break;
      case Ext.WILL_PROXY:
        this.proxyAnswer = 'will';
        this.handshakeDone = true;
        break;
      case Ext.WONT_PROXY:
        this.proxyAnswer = 'wont';
        this.handshakeDone = true;
        break;
      case Ext.GET_VM_VC_UUID:
        this.identityRequests.uuid++;
        if (answer) this.sendUuid();
        break;
      case Ext.GET_VM_NAME:
        this.identityRequests.name++;
        if (answer) this.sendName();
        break;
      default:
        if (!HANDLED_FROM_PROXY.has(code)) {
          this.unknownFromProxy.push(code);
          this.sendExt(Ext.UNKNOWN_SUBOPTION_RCVD_1, Buffer.of(code));
        }
    }
    this.emit('ext', code, body);
  }

  /** Every byte from the TelnetSession. */
  private out(bytes: Buffer): boolean {
    if (this.batch) {
      this.batch.push(bytes);
      return true;
    }
    return this.write(bytes, !this.handshakeDone);
  }

  private write(bytes: Buffer, split: boolean): boolean {
    if (this.closedFlag || this.socket.destroyed) return false;
    const seg = this.opts.segmentation ?? 'whole';
    if (this.queue.length === 0 && (seg === 'whole' || !split)) return this.socket.write(bytes);
    this.queue.push({ bytes, split: split && seg !== 'whole' });
    this.queuedBytes += bytes.length;
    if (!this.pumping) void this.pump();
    return this.queuedBytes < 64 * 1024;
  }

  /** Writes queued pieces one at a time, each after the previous write completed. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const bytewise = (this.opts.segmentation ?? 'whole') === 'bytewise';
    try {
      while (this.queue.length > 0 && !this.socket.destroyed) {
        const item = this.queue[0];
        let piece: Buffer;
        if (!item.split) {
          piece = item.bytes;
          this.queue.shift();
        } else {
          const n = bytewise ? 1 : 1 + Math.floor(this.rng() * 8);
          piece = item.bytes.subarray(0, n);
          item.bytes = item.bytes.subarray(piece.length);
          if (item.bytes.length === 0) this.queue.shift();
        }
        this.queuedBytes -= piece.length;
        await new Promise<void>((resolve) => this.socket.write(piece, () => resolve()));
        // A loopback write completes at once; yield a full event-loop turn so that a reader
        // in this same process (the in-process server of the tests) reads each piece alone.
        if (item.split) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.pumping = false;
    }
  }

  private notify(): void {
    for (const l of [...this.changeListeners]) l();
  }

  /** Waits until `check` returns a value (or throws), re-checking after every received chunk and on close. */
  private until<T>(check: () => { value: T } | undefined, timeoutMs: number, what: string): Promise<T> {
    try {
      const r = check();
      if (r) return Promise.resolve(r.value);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<T>((resolve, reject) => {
      const finish = (fn: () => void) => {
        clearTimeout(timer);
        this.changeListeners.delete(listener);
        fn();
      };
      const listener = () => {
        try {
          const r = check();
          if (r) finish(() => resolve(r.value));
        } catch (err) {
          finish(() => reject(err));
        }
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))), timeoutMs);
      this.changeListeners.add(listener);
    });
  }
}
