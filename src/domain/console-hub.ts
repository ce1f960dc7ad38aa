import type { ConsoleClient, ConsoleSource, EndpointStatus } from './seams.js';
import type { ConsoleIdentity } from './identity.js';
import { tunnelConsoleRefusal } from './tunnel-status.js';
import type { SerialLineSettings, SerialLineState } from './serial-line.js';
import { stripTerminalQueries } from '../util/terminal-queries.js';
import { describeAuth, LockTable, type ClientAuth, type LockDecision, type LockMode, type LockRequest } from './locks.js';

/** What a client that asked for a serial BREAK is told when the console's source cannot send one (ConsoleHub.sendBreak false). */
export const BREAK_NOT_SENT = "break not sent: this console's source cannot send a break";

export type { ConsoleIdentity } from './identity.js';

/** Where the VM stands, for `list` and for routing client input. */
export type ConsoleState = 'disconnected' | 'connected' | 'migrating';

/** What vspc adds to a console client's stream (see ConsoleHub.stream). */
export interface StreamOptions {
  greeting: boolean;
  notices: boolean;
  replay: boolean;
}

/**
 * The eight possible StreamOptions, frozen and shared by every console: a console's
 * `stream` is replaced, never changed in place, so thousands of consoles need no
 * object of their own. Index: greeting 4, notices 2, replay 1.
 */
const STREAM_OPTIONS: readonly Readonly<StreamOptions>[] = Array.from({ length: 8 }, (_, i) =>
  Object.freeze({ greeting: (i & 4) !== 0, notices: (i & 2) !== 0, replay: (i & 1) !== 0 }),
);

/** The shared, frozen StreamOptions with these switches. */
export function streamOptions(greeting: boolean, notices: boolean, replay: boolean): Readonly<StreamOptions> {
  return STREAM_OPTIONS[(greeting ? 4 : 0) | (notices ? 2 : 0) | (replay ? 1 : 0)];
}

export const DEFAULT_STREAM: Readonly<StreamOptions> = streamOptions(true, true, true);

export const DEFAULT_MAX_HELD_INPUT = 1024 * 1024;
export const DEFAULT_SCROLLBACK = 64 * 1024;

/** Things worth a timestamp in a console log and a line in the audit log. */
export type ConsoleEvent =
  | { kind: 'vm-connected'; peer: string }
  | { kind: 'vm-disconnected'; peer: string }
  | { kind: 'vmotion'; outcome: string; durationMs: number }
  /** The source sent a serial BREAK (ESXi: IAC BRK, or COM-PORT SET-CONTROL BREAK-ON); passed on to the clients. */
  | { kind: 'break-from-source'; peer: string }
  /**
   * `user`: the name the client gave (VSPC-CONTROL LOCK-REQUEST), when it gave one, or the
   * one its access method established (`auth`: SSH, with the key's fingerprint); `method`
   * and `origin`: the client's (ConsoleClient), when it has them.
   */
  | {
      kind: 'client-attached';
      clientId: number;
      peer: string;
      mode: string;
      user?: string;
      auth?: ClientAuth;
      tls?: boolean;
      force?: boolean;
      clients?: number;
      method?: string;
      origin?: ConsoleClient['origin'];
    }
  | { kind: 'client-detached'; clientId: number; peer: string; reason: string; user?: string }
  /** A client took the port over with --force; the displaced one was told and closed. */
  | {
      kind: 'client-takeover';
      clientId: number;
      peer: string;
      displacedClientId: number;
      displacedPeer: string;
      user?: string;
      displacedUser?: string;
    };

/**
 * Watches every VM serial port (console log files, metrics). Called synchronously on
 * the data path, so implementations must not block: buffer and write asynchronously.
 */
export interface ConsoleObserver {
  output?(hub: ConsoleHub, data: Buffer): void;
  event?(hub: ConsoleHub, event: ConsoleEvent): void;
}

/** The client set of every hub before its first client (never written). */
const NO_CLIENTS: ReadonlySet<ConsoleClient> = new Set();
const NO_ACCESS_ERRORS: ReadonlyMap<string, string> = new Map();

/** First size of a console's scrollback ring (it doubles as output arrives, up to the capacity). */
const SCROLLBACK_FIRST_RING = 4096;

/**
 * The last N bytes of VM output, replayed to a client on attach so it sees the
 * recent screen. Copied into a ring of its own, not kept as references to the
 * chunks received:
 *
 * - A chunk kept by reference lives as long as it is among the last N bytes: for a
 *   streaming VM about one event-loop turn, long enough to survive V8's young-generation
 *   collections and be promoted, so every chunk read (64 KiB, off-heap) ended in old
 *   space and was freed only by full collections. Measured (the bench's throughput phase,
 *   server under `--trace-gc`; docs/performance.md): 17–36 mark-compacts per run
 *   with references, 3 with no scrollback, and 20% more MB per server
 *   CPU-second without them. Keeping only the newest chunk by reference (until the
 *   next one, about a turn) still gave 36–38. Chunks now die young, with the socket
 *   read that made them; the price is one `memcpy` per chunk into the ring (12% of
 *   the server's busy time in a profile where GC went from 14% to 6%; the collections
 *   it saves grow with the heap, the copy does not).
 * - Bounded: the ring starts at 4 KiB at the first output and doubles as output
 *   arrives, up to the capacity; what falls out of the last N bytes is overwritten.
 *   A VM that printed a little holds about what it printed (at most twice that).
 * - Nothing is allocated until the first output: a VM serial port that never printed
 *   (an idle or powered-off VM known from the database) costs no bytes at all.
 */
export class Scrollback {
  private cap: number;
  /** The ring; its length grows to `cap`. Bytes [start, start + total) modulo its length. */
  private ring: Buffer | null = null;
  private start = 0;
  /** Bytes held (at most `cap`). */
  private total = 0;
  constructor(capacity: number) {
    this.cap = Math.max(0, capacity);
  }
  /** Configured size in bytes (follows `resize`). */
  get capacity(): number {
    return this.cap;
  }
  /** Bytes held now. */
  get length(): number {
    return this.total;
  }
  /** Appends a copy of `data` (only its last `capacity` bytes when longer); the oldest bytes make room. */
  push(data: Buffer): void {
    const cap = this.cap;
    if (cap === 0 || data.length === 0) return;
    const src = data.length > cap ? data.subarray(data.length - cap) : data;
    const want = Math.min(cap, this.total + src.length);
    if (this.ring === null || this.ring.length < want) this.grow(want);
    const ring = this.ring!;
    const size = ring.length;
    // src.length ≤ size: the write wraps at most once and never laps itself.
    const end = (this.start + this.total) % size;
    const first = Math.min(src.length, size - end);
    src.copy(ring, end, 0, first);
    if (first < src.length) src.copy(ring, 0, first);
    this.total += src.length;
    if (this.total > size) {
      this.start = (this.start + this.total - size) % size;
      this.total = size;
    }
  }
  /** A copy of the contents, oldest byte first. */
  snapshot(): Buffer {
    if (this.total === 0 || this.ring === null) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(this.total);
    this.copyOut(out);
    return out;
  }
  /** Replaces the contents with the last `capacity` bytes of `data` (nothing allocated for none). */
  replace(data: Buffer): void {
    this.start = 0;
    this.total = 0;
    this.push(data);
  }
  resize(capacity: number): void {
    const keep = this.snapshot();
    this.cap = Math.max(0, capacity);
    this.ring = null;
    this.replace(keep);
  }

  /** A larger ring (at least `want` bytes, doubling, at most `cap`) holding the same bytes from its start. */
  private grow(want: number): void {
    const old = this.ring;
    const size = Math.min(this.cap, Math.max(want, SCROLLBACK_FIRST_RING, old ? old.length * 2 : 0));
    // Not from Node's shared pool: a ring outlives any pooled neighbour.
    const ring = Buffer.allocUnsafeSlow(size);
    if (old !== null && this.total > 0) this.copyOut(ring);
    this.ring = ring;
    this.start = 0;
  }

  /** Copies the contents, oldest first, to the start of `out`. */
  private copyOut(out: Buffer): void {
    const ring = this.ring!;
    const first = Math.min(this.total, ring.length - this.start);
    ring.copy(out, 0, this.start, this.start + first);
    if (first < this.total) ring.copy(out, first, 0, this.total - first);
  }
}

/** What became of a client's line settings request. */
export interface LineSettingsResult {
  /** The settings in effect (empty when the source reports none). */
  settings: SerialLineSettings;
  /** False: nothing was changed, `refused` says why. */
  applied: boolean;
  refused?: string;
}

export interface HoldResult {
  /** Bytes delivered from the hold. */
  delivered: number;
  /** Bytes that did not fit under the bound and were refused (clients were told). */
  refused: number;
}

/**
 * One VM serial port: the meeting point of its source (the VM connection) and its
 * clients. Output fans out to every client; client input goes to the source, is
 * held in order while a vMotion switch-over is under way, or is discarded with a
 * notice while the VM is away (there is nothing to deliver it to).
 *
 * The hub never pauses the source because of a client: each client bounds its own
 * queue. The reverse backpressure (the VM's socket is full) pauses client reading.
 */
export class ConsoleHub {
  private src: ConsoleSource | null = null;
  /** Allocated when the first client attaches (shared and never written until then). */
  private clientSet: Set<ConsoleClient> = NO_CLIENTS as Set<ConsoleClient>;
  private holding = false;
  /** Input held during a migration (made on the first held chunk). */
  private held: Buffer[] | null = null;
  private heldBytes = 0;
  private heldOverflow = 0;
  private inputPaused = false;
  /** Clients' input is paused: the source did not take the last write (its buffer is full) and has not drained since. */
  get clientInputPaused(): boolean {
    return this.inputPaused;
  }
  /** The peer of a source that closed during a vMotion switch-over (see detachSource), until the migration ends. */
  private leftDuringMigration: string | null = null;
  /** Clients told the VM is away / that they are read-only: made on the first notice. */
  private toldDisconnected: WeakSet<ConsoleClient> | null = null;
  private toldReadOnly: WeakSet<ConsoleClient> | null = null;
  readonly locks = new LockTable();
  /** Lock given to clients that do not ask for one (stock telnet). */
  defaultLockMode: LockRequest = 'readwrite';

  connectedSince: number | null = null;
  bytesFromVm = 0;
  bytesToVm = 0;
  /**
   * How long the console has had its name, as an order (lower: longer): the record id
   * for consoles loaded at start, later numbers for a name given or changed since. Set
   * by the registry; among machines sharing a name the lowest keeps it (address.ts).
   */
  nameOrder: number;
  /** Set by the listener manager when the client port cannot be bound. */
  listenError: string | null = null;
  tlsListenError: string | null = null;
  /**
   * Why an endpoint of another access method (raw port, unix socket, pty) is not up, by
   * method; set by those methods' managers through setAccessError/clearAccessError.
   * Made on the first error: most consoles never have one.
   */
  private accessErrorMap: Map<string, string> | null = null;
  get accessErrors(): ReadonlyMap<string, string> {
    return this.accessErrorMap ?? NO_ACCESS_ERRORS;
  }
  setAccessError(method: string, message: string): void {
    (this.accessErrorMap ??= new Map()).set(method, message);
  }
  clearAccessError(method: string): void {
    this.accessErrorMap?.delete(method);
  }
  /** The serial line's settings, as the source last reported them (ESXi: the guest UART). */
  lineSettings: SerialLineSettings | null = null;
  /** BREAK, DTR/RTS, flow control, suspension and signature, as the source last reported them; null: never reported. */
  lineState: SerialLineState | null = null;
  /** For consoles whose source vspc maintains (declared, discovered): where it stands; null for ESXi. */
  endpoint: EndpointStatus | null = null;
  /** false: console logs keep no file for this console (a declared console's `log: false`). */
  logged = true;
  /**
   * What vspc adds to a client's stream besides the VM's bytes, unless the client asks
   * for less: the greeting line, notices (VM connected/disconnected, input discarded),
   * and the scrollback replay on attach. Machines (conserver on top, gdb, the tunnel)
   * want none of them; people like them.
   */
  stream: Readonly<StreamOptions> = DEFAULT_STREAM;
  /**
   * A console that carries something other than a terminal (a serial tunnel,
   * src/access/tunnel/): the one client it is dedicated to. Every other client is
   * refused with `reason`, whatever lock it asks for (--force too), by every access
   * method. Set and cleared by that client's owner.
   */
  dedicatedTo: { clientId: number; reason: string } | null = null;
  /**
   * The serial tunnel the config file dedicates this console to (`tunnels:`), whether
   * or not its link is attached now (between a kick and the link's return, too); null
   * for every other console. Set by the server from the config: such a console has no
   * console log and no scrollback, is refused to people, and is left out of the
   * consoles offered to people (broker, SSH front door).
   */
  carriesTunnel: string | null = null;

  readonly scrollback: Scrollback;
  /**
   * Where this console's output from before this process started can be read back (its
   * console log), set by the server: resolves with at most `maxBytes` of it, oldest
   * first. With it the scrollback survives a restart: see primeScrollback.
   */
  scrollbackPrimer: ((maxBytes: number) => Promise<Buffer>) | null = null;
  private priming: Promise<void> | null = null;
  private primed = false;

  constructor(
    readonly identity: ConsoleIdentity,
    private readonly maxHeldInput = DEFAULT_MAX_HELD_INPUT,
    scrollbackBytes = DEFAULT_SCROLLBACK,
    private readonly observer: ConsoleObserver | null = null,
  ) {
    this.scrollback = new Scrollback(scrollbackBytes);
    this.nameOrder = identity.id;
  }

  /** Whether the scrollback holds what it can (no primer, or priming done). */
  get scrollbackPrimed(): boolean {
    return this.primed || this.scrollbackPrimer === null || this.scrollback.capacity === 0;
  }

  /**
   * Fills the scrollback from the primer, once (later calls share the first): after a
   * restart the ring is empty while the console log still has the screen. The primer's
   * bytes (from before the start) go before what the ring holds (everything since),
   * the most recent `capacity` bytes kept. A primer that fails changes nothing.
   */
  primeScrollback(): Promise<void> {
    if (this.priming) return this.priming;
    const primer = this.scrollbackPrimer;
    const capacity = this.scrollback.capacity;
    if (!primer || capacity === 0) {
      this.primed = true;
      this.priming = Promise.resolve();
      return this.priming;
    }
    this.priming = primer(capacity)
      .then(
        (old) => {
          if (old.length > 0) this.scrollback.replace(Buffer.concat([old, this.scrollback.snapshot()]));
        },
        () => undefined,
      )
      .finally(() => {
        this.primed = true;
      });
    return this.priming;
  }

  /** Report an event to the observer (also used by the vMotion coordinator). */
  report(event: ConsoleEvent): void {
    this.observer?.event?.(this, event);
  }

  get source(): ConsoleSource | null {
    return this.src;
  }

  get clients(): ReadonlySet<ConsoleClient> {
    return this.clientSet;
  }

  get state(): ConsoleState {
    if (this.holding) return 'migrating';
    return this.src ? 'connected' : 'disconnected';
  }

  /**
   * The state people are shown: `connected`, `migrating`, or — with no source — why: a
   * maintained source's endpoint state (`waiting`, `listening`, `stopped`), `stopped` for
   * a console vspc maintained before (a discovered VM that has not come back since a
   * restart), `disconnected` for an ESXi VM (it connects in when it wants).
   */
  get displayState(): string {
    const s = this.state;
    if (s !== 'disconnected') return s;
    if (this.endpoint) return this.endpoint.state;
    return this.identity.kind === 'esxi' ? 'disconnected' : 'stopped';
  }

  /** Display name: the VM's name, else its UUID. */
  get displayName(): string {
    const base = this.identity.name ?? this.identity.key;
    return this.identity.label ? `${base}:${this.identity.label}` : base;
  }

  /**
   * Make `src` the VM's connection. Returns the connection it replaces (the caller
   * retires it), e.g. when a host reconnects before its old TCP connection died.
   */
  attachSource(src: ConsoleSource, now = Date.now()): ConsoleSource | null {
    const previous = this.src;
    this.src = src;
    this.connectedSince = now;
    src.onDrain(() => this.onSourceDrain(src));
    const quiet = this.leftDuringMigration !== null;
    this.leftDuringMigration = null;
    if (!previous && !quiet) {
      this.toldDisconnected = null;
      this.broadcastNotice('VM connected');
    }
    // The peer is read only by an observer that wants it (a console log): a vMotion's
    // new connection is not asked its address (getpeername) for nothing.
    this.report({
      kind: 'vm-connected',
      get peer() {
        return src.peer;
      },
    });
    return previous === src ? null : previous;
  }

  /**
   * The source went away. Ignored unless it is the current one. During a vMotion
   * switch-over the source leaving is part of the migration (a real ESXi host closes
   * its connection at the same moment as, or just before, the destination's COMPLETE):
   * clients are told nothing, the console stays `migrating`, and only a migration that
   * ends without a destination reports the disconnect (`stopHolding(null)`).
   */
  detachSource(src: ConsoleSource): boolean {
    if (this.src !== src) return false;
    this.src = null;
    this.connectedSince = null;
    if (this.inputPaused) this.resumeClients();
    if (this.holding) {
      this.leftDuringMigration = src.peer;
      return true;
    }
    this.broadcastNotice('VM disconnected; waiting for it to come back');
    this.report({
      kind: 'vm-disconnected',
      get peer() {
        return src.peer;
      },
    });
    return true;
  }

  /**
   * Serial output from the VM: to every client. Clients may keep `data` itself (a
   * socket write that has to wait holds the chunk, not a copy; the scrollback copies):
   * the caller must not modify it afterwards (a socket's chunks are never reused).
   */
  fromVm(data: Buffer): void {
    this.bytesFromVm += data.length;
    this.scrollback.push(data);
    this.observer?.output?.(this, data);
    for (const c of this.clientSet) c.deliver(data);
  }

  /** Input typed by a client. */
  fromClient(client: ConsoleClient, data: Buffer): void {
    if (this.locks.get(client.id)?.mode === 'readonly') {
      // Read-only clients never write to the VM; say so once rather than per keystroke.
      this.toldReadOnly ??= new WeakSet();
      if (!this.toldReadOnly.has(client)) {
        this.toldReadOnly.add(client);
        client.notice('read-only: your input is discarded');
      }
      return;
    }
    if (this.holding) {
      this.hold(client, data);
      return;
    }
    if (!this.src) {
      this.toldDisconnected ??= new WeakSet();
      if (!this.toldDisconnected.has(client)) {
        this.toldDisconnected.add(client);
        client.notice('VM is not connected; input discarded');
      }
      return;
    }
    this.bytesToVm += data.length;
    if (!this.src.write(data)) this.pauseClients();
  }

  /**
   * A serial BREAK to the VM; `from`: the client asking (a mirror sends it on that
   * client's stream). false: not sent, the source cannot send one (a `unix:` QEMU
   * serial socket is a byte stream) or there is none now; the caller tells its client.
   */
  sendBreak(from?: ConsoleClient): boolean {
    void from;
    const src = this.src;
    if (!src?.sendBreak) return false;
    src.sendBreak();
    return true;
  }

  /**
   * A serial BREAK from the VM's side: each client gets it the way its access method
   * can say it (telnet: IAC BRK), in order with the output around it; the console log
   * records it as an event line. Not part of the scrollback (it is not a byte).
   */
  breakFromSource(src: ConsoleSource): void {
    for (const c of this.clientSet) c.breakFromSource?.();
    this.report({ kind: 'break-from-source', peer: src.peer });
  }

  /**
   * A client asks to change the serial line (RFC 2217 SET-BAUDRATE, ...). Applied when
   * the client's lock lets it write and the source can act on it (a device); the
   * result carries the settings in effect afterwards (recorded in `lineSettings`), or
   * the unchanged ones with why nothing was applied. Never rejects.
   */
  async setLineSettings(client: ConsoleClient, change: SerialLineSettings): Promise<LineSettingsResult> {
    const unchanged = (refused: string): LineSettingsResult => ({ settings: { ...(this.lineSettings ?? {}) }, applied: false, refused });
    const mode = this.locks.get(client.id)?.mode;
    if (!mode || !this.clientSet.has(client)) return unchanged('not attached');
    if (mode === 'readonly') return unchanged('read-only');
    const src = this.src;
    if (!src) return unchanged('no source is connected');
    if (!src.setLineSettings) return unchanged(`a ${src.kind} source cannot change its line settings`);
    try {
      const now = await src.setLineSettings(change);
      if (this.src === src) this.lineSettings = { ...now };
      return { settings: { ...now }, applied: true };
    } catch (err) {
      return unchanged(String((err as Error)?.message ?? err));
    }
  }

  /**
   * Attach a client under a lock. Refused requests change nothing (the caller tells
   * the client why and closes it). When granted, the client first gets the
   * scrollback (the recent screen) less its terminal queries (stripTerminalQueries in
   * src/util/terminal-queries.ts), then live output, unfiltered; holders displaced by `force`
   * are told who took over and closed.
   */
  addClient(
    client: ConsoleClient,
    options: { request?: LockRequest; force?: boolean; user?: string; auth?: ClientAuth; replay?: boolean; tls?: boolean } = {},
  ): LockDecision {
    if (this.dedicatedTo !== null && this.dedicatedTo.clientId !== client.id) {
      return { granted: false, reason: this.dedicatedTo.reason, holders: this.locks.list() };
    }
    // Configured for a tunnel whose link is not attached this instant (kicked, about to
    // come back): still not a console for people.
    if (this.dedicatedTo === null && this.carriesTunnel !== null) {
      return { granted: false, reason: tunnelConsoleRefusal(this.displayName, this.carriesTunnel), holders: this.locks.list() };
    }
    const decision = this.locks.request(
      { clientId: client.id, peer: client.peer, user: options.user, auth: options.auth },
      options.request ?? this.defaultLockMode,
      options.force ?? false,
    );
    if (!decision.granted) return decision;
    for (const d of decision.displaced) {
      const displaced = [...this.clientSet].find((c) => c.id === d.clientId);
      if (!displaced) continue;
      this.clientSet.delete(displaced);
      const by = `${options.user ? `${options.user}@` : ''}${client.peer}${options.auth ? ` (${describeAuth(options.auth)})` : ''}`;
      displaced.close(`displaced by ${by}, who took ${decision.mode.toUpperCase()} with --force`);
      this.report({
        kind: 'client-takeover',
        clientId: client.id,
        peer: client.peer,
        displacedClientId: d.clientId,
        displacedPeer: d.peer,
        ...(options.user ? { user: options.user } : {}),
        ...(d.user ? { displacedUser: d.user } : {}),
      });
    }
    if (options.replay ?? true) {
      // History, not a program running now: its terminal queries (ESC [ 6 n, ...) would
      // be answered by the client's terminal, and the answers typed into the VM.
      const recent = stripTerminalQueries(this.scrollback.snapshot());
      if (recent.length > 0) client.deliver(recent);
    }
    if (this.clientSet === NO_CLIENTS) this.clientSet = new Set();
    this.clientSet.add(client);
    if (this.inputPaused) client.pauseInput();
    // During a vMotion switch-over the source may have left already (the destination
    // completes soon): that is not a disconnect, so say nothing. Not marked as told:
    // the first keystrokes still get "input discarded", once.
    if (!this.src && !this.holding) client.notice('VM is not connected; you will see its output when it comes back');
    this.report({
      kind: 'client-attached',
      clientId: client.id,
      peer: client.peer,
      mode: decision.mode,
      ...(options.user ? { user: options.user } : {}),
      ...(options.auth ? { auth: options.auth } : {}),
      ...(options.tls !== undefined ? { tls: options.tls } : {}),
      ...(options.force ? { force: true } : {}),
      clients: this.clientSet.size,
      ...(client.method ? { method: client.method } : {}),
      ...(client.origin ? { origin: client.origin } : {}),
    });
    return decision;
  }

  /** The lock mode a client holds, if attached. */
  modeOf(client: ConsoleClient): LockMode | undefined {
    return this.locks.get(client.id)?.mode;
  }

  /** The name a client gave when it asked for its lock (VSPC-CONTROL), if any. */
  userOf(client: ConsoleClient): string | undefined {
    return this.locks.get(client.id)?.user || undefined;
  }

  removeClient(client: ConsoleClient, reason = 'detached'): void {
    const user = this.userOf(client);
    this.locks.release(client.id);
    if (!this.clientSet.delete(client)) return;
    this.report({ kind: 'client-detached', clientId: client.id, peer: client.peer, reason, ...(user ? { user } : {}) });
  }

  /** Close every client with a reason (forget, shutdown). */
  closeClients(reason: string): void {
    for (const c of [...this.clientSet]) {
      this.locks.release(c.id);
      c.close(reason);
    }
    this.clientSet.clear();
  }

  // --- vMotion support: hold client input while the VM is paused for switch-over.

  get isHolding(): boolean {
    return this.holding;
  }

  get heldInputBytes(): number {
    return this.heldBytes;
  }

  startHolding(): void {
    this.holding = true;
  }

  /**
   * End the hold: deliver held input, in order, to `to` (the new connection after
   * COMPLETE, the old one after ABORT), or discard it when there is none.
   */
  stopHolding(to: ConsoleSource | null): HoldResult {
    const result = { delivered: 0, refused: this.heldOverflow };
    this.holding = false;
    const left = this.leftDuringMigration;
    if (left !== null && to === null && this.src === null) {
      // The migration ended without a destination after the source had left: now it is a disconnect.
      this.leftDuringMigration = null;
      this.broadcastNotice('VM disconnected; waiting for it to come back');
      this.report({ kind: 'vm-disconnected', peer: left });
    }
    const held = this.held;
    this.held = null;
    this.heldBytes = 0;
    this.heldOverflow = 0;
    if (to && held) {
      for (const chunk of held) {
        result.delivered += chunk.length;
        this.bytesToVm += chunk.length;
        if (!to.write(chunk)) this.pauseClients();
      }
    }
    return result;
  }

  private hold(client: ConsoleClient, data: Buffer): void {
    if (this.heldBytes + data.length > this.maxHeldInput) {
      // Past the bound we refuse input rather than grow without limit; the typist is told.
      this.heldOverflow += data.length;
      client.notice('VM is migrating and the input buffer is full; input discarded');
      return;
    }
    (this.held ??= []).push(data);
    this.heldBytes += data.length;
  }

  private onSourceDrain(src: ConsoleSource): void {
    if (src === this.src && this.inputPaused) this.resumeClients();
  }

  private pauseClients(): void {
    if (this.inputPaused) return;
    this.inputPaused = true;
    for (const c of this.clientSet) c.pauseInput();
  }

  private resumeClients(): void {
    this.inputPaused = false;
    for (const c of this.clientSet) c.resumeInput();
  }

  private broadcastNotice(text: string): void {
    for (const c of this.clientSet) c.notice(text);
  }
}
