/**
 * What one maintained source type plugs into the EndpointRunner: a `Connector` that
 * either dials (unix, tcp, telnet, udp, device) or listens (unix-listen, tcp-listen),
 * and the `Link`s it produces, one per live connection.
 *
 * A link does not read until `start(sink)`: the runner first makes it the hub's source,
 * then lets bytes flow. Bytes go straight to `sink.data` (no copy, no queue: the hub
 * never pauses a source for its clients). `sink.closed` is called exactly once, also
 * after close()/destroy(), with why the link ended (null: vspc ended it).
 */
import type { Logger } from '../../domain/logger.js';
import type { SerialLineSettings } from '../../domain/serial-line.js';
import type { SourceSpec, SourceType } from '../../domain/source-spec.js';
import type { SourceError } from './errors.js';

export interface LinkSink {
  data(chunk: Buffer): void;
  closed(error: SourceError | null): void;
}

export interface Link {
  /** The far end as people read it: `unix:/run/qemu/vm.sock`, `127.0.0.1:4555`, ... */
  readonly peer: string;
  /** What `connected` means for this link when it is not obvious (udp: the port is bound). */
  readonly note?: string;
  start(sink: LinkSink): void;
  /** Input for the far end; false when the transport's buffer is full (wait for the drain listener). */
  write(data: Buffer): boolean;
  /** The one drain listener. */
  onDrain(listener: () => void): void;
  sendBreak?(): void;
  setLineSettings?(settings: SerialLineSettings): Promise<SerialLineSettings>;
  /** The line settings in effect (a device); the runner reports them into hub.lineSettings on connect. */
  readonly lineSettings?: SerialLineSettings;
  /** Graceful: flush what was written, then end; destroy after a grace period. Idempotent. */
  close(reason: string): void;
  /** At once. Idempotent. */
  destroy(reason: string): void;
}

/** vspc dials: each attempt is one `dial()`. */
export interface DialConnector {
  readonly mode: 'dial';
  /**
   * One attempt. Resolves with a live link (not started) or rejects with a SourceError.
   * When `signal` aborts, rejects promptly with `signal.reason` and releases everything.
   */
  dial(signal: AbortSignal): Promise<Link>;
}

export interface ListenHandlers {
  /** A peer connected (the runner accepts it or refuses it: one peer at a time). */
  incoming(link: Link): void;
  /** The bound listener failed; it is closed. */
  failed(error: SourceError): void;
}

export interface BoundListener {
  /** Where it listens, for logs. */
  readonly address: string;
  /** Stop accepting and release the address (a unix-listen socket file is removed). Idempotent. */
  close(): Promise<void>;
}

/** The peer dials vspc: one `listen()` binds for as long as it works. */
export interface ListenConnector {
  readonly mode: 'listen';
  /** Binds. Resolves once listening, or rejects with a SourceError. */
  listen(handlers: ListenHandlers): Promise<BoundListener>;
}

export type Connector = DialConnector | ListenConnector;

/** Settings shared by the link factories (each uses what applies to it). */
export interface LinkOptions {
  /** How long a graceful close waits for the peer before destroying. Default 2000. */
  closeGraceMs: number;
  /** unix-listen socket file mode. Default 0o600. */
  socketMode: number;
  /** udp: largest datagram sent; longer input is split. Default 1024 (fits an Ethernet MTU unfragmented). */
  maxDatagram: number;
  /** udp: bytes queued in the socket before write() returns false. Default 256 KiB. */
  udpHighWaterMark: number;
  /** telnet: an `IAC SB` left open this long closes the link. Default 10 s. */
  telnetSubnegotiationTimeoutMs: number;
  /** tcp, telnet: keepalive probe delay (half-open detection). Default 30 s. */
  keepAliveMs: number;
  /**
   * unix, tcp, telnet (and their listen types): bytes that may wait in the socket for a
   * peer that does not read (client input, which the hub stops at the socket's high-water
   * mark, and telnet negotiation replies, which the peer can ask for at will); past this
   * the link is closed (VSPC_SOURCE_NOT_READING) and the endpoint redialled. Default 1 MiB.
   */
  maxQueuedBytes: number;
  /** Called when a link is closed for not reading (metrics). */
  onNotReading?(): void;
}

export const DEFAULT_LINK_OPTIONS: Readonly<LinkOptions> = Object.freeze({
  closeGraceMs: 2000,
  socketMode: 0o600,
  maxDatagram: 1024,
  udpHighWaterMark: 256 * 1024,
  telnetSubnegotiationTimeoutMs: 10_000,
  keepAliveMs: 30_000,
  maxQueuedBytes: 1024 * 1024,
});

export interface ConnectorContext {
  /** The endpoint's logger. */
  logger: Logger;
  options: LinkOptions;
}

/** Makes the connector for one endpoint of one spec type. */
export type ConnectorFactory<S extends SourceSpec = SourceSpec> = (spec: S, ctx: ConnectorContext) => Connector;

/**
 * Link factories by spec type. The QEMU socket types register themselves
 * (sources/qemu: registerQemuSources); a device module registers `device` the same way.
 */
export class ConnectorRegistry {
  private readonly table = new Map<SourceType, ConnectorFactory>();

  register<T extends SourceType>(type: T, factory: ConnectorFactory<Extract<SourceSpec, { type: T }>>): this {
    this.table.set(type, factory as ConnectorFactory);
    return this;
  }

  get(type: SourceType): ConnectorFactory | undefined {
    return this.table.get(type);
  }

  has(type: SourceType): boolean {
    return this.table.has(type);
  }

  get types(): SourceType[] {
    return [...this.table.keys()];
  }
}
