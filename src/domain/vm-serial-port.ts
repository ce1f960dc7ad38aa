import type { ConsoleClient, SerialSource } from './ports.js';

export interface SerialPortIdentity {
  /** Registry row id. */
  readonly id: number;
  readonly uuid: string;
  readonly label: string;
  name: string | null;
  /** Sticky client-facing TCP port. */
  port: number;
}

/** Where the VM stands, for `list` and for routing client input. */
export type VmLinkState = 'disconnected' | 'connected' | 'migrating';

export const DEFAULT_MAX_HELD_INPUT = 1024 * 1024;

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
export class VmSerialPort {
  private src: SerialSource | null = null;
  private readonly clientSet = new Set<ConsoleClient>();
  private holding = false;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private heldOverflow = 0;
  private inputPaused = false;
  private toldDisconnected = new WeakSet<ConsoleClient>();

  connectedSince: number | null = null;
  bytesFromVm = 0;
  bytesToVm = 0;
  /** Set by the listener manager when the client port cannot be bound. */
  listenError: string | null = null;
  tlsListenError: string | null = null;
  /** Extra facts a source reports (ESXi: UART settings). */
  details: Record<string, unknown> = {};

  constructor(
    readonly identity: SerialPortIdentity,
    private readonly maxHeldInput = DEFAULT_MAX_HELD_INPUT,
  ) {}

  get source(): SerialSource | null {
    return this.src;
  }

  get clients(): ReadonlySet<ConsoleClient> {
    return this.clientSet;
  }

  get state(): VmLinkState {
    if (this.holding) return 'migrating';
    return this.src ? 'connected' : 'disconnected';
  }

  /** Display name: the VM's name, else its UUID. */
  get displayName(): string {
    const base = this.identity.name ?? this.identity.uuid;
    return this.identity.label ? `${base}:${this.identity.label}` : base;
  }

  /**
   * Make `src` the VM's connection. Returns the connection it replaces (the caller
   * retires it), e.g. when a host reconnects before its old TCP connection died.
   */
  attachSource(src: SerialSource, now = Date.now()): SerialSource | null {
    const previous = this.src;
    this.src = src;
    this.connectedSince = now;
    src.onDrain(() => this.onSourceDrain(src));
    if (!previous) {
      this.toldDisconnected = new WeakSet();
      this.broadcastNotice('VM connected');
    }
    return previous === src ? null : previous;
  }

  /** The source went away. Ignored unless it is the current one. */
  detachSource(src: SerialSource): boolean {
    if (this.src !== src) return false;
    this.src = null;
    this.connectedSince = null;
    if (this.inputPaused) this.resumeClients();
    this.broadcastNotice('VM disconnected; waiting for it to come back');
    return true;
  }

  /** Serial output from the VM: to every client. */
  fromVm(data: Buffer): void {
    this.bytesFromVm += data.length;
    for (const c of this.clientSet) c.deliver(data);
  }

  /** Input typed by a client. */
  fromClient(client: ConsoleClient, data: Buffer): void {
    if (this.holding) {
      this.hold(client, data);
      return;
    }
    if (!this.src) {
      if (!this.toldDisconnected.has(client)) {
        this.toldDisconnected.add(client);
        client.notice('VM is not connected; input discarded');
      }
      return;
    }
    this.bytesToVm += data.length;
    if (!this.src.write(data)) this.pauseClients();
  }

  sendBreak(): void {
    this.src?.sendBreak?.();
  }

  addClient(client: ConsoleClient): void {
    this.clientSet.add(client);
    if (this.inputPaused) client.pauseInput();
    if (!this.src) {
      this.toldDisconnected.add(client);
      client.notice('VM is not connected; you will see its output when it comes back');
    }
  }

  removeClient(client: ConsoleClient): void {
    this.clientSet.delete(client);
  }

  /** Close every client with a reason (forget, shutdown). */
  closeClients(reason: string): void {
    for (const c of [...this.clientSet]) c.close(reason);
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
  stopHolding(to: SerialSource | null): HoldResult {
    const result = { delivered: 0, refused: this.heldOverflow };
    this.holding = false;
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    this.heldOverflow = 0;
    if (to) {
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
    this.held.push(data);
    this.heldBytes += data.length;
  }

  private onSourceDrain(src: SerialSource): void {
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
