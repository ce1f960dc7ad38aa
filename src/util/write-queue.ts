/**
 * What a socket holds for a peer that does not read, counted the way it costs memory.
 *
 * `socket.writableLength` counts bytes, but a queued write costs far more than its
 * bytes when it is small: Node keeps each one as its own Buffer and queue entry
 * (measured on Node 20: 24 MB of 7-byte replies held 528 MB of heap, about 150 bytes
 * per write besides the bytes). Replies are small (3-byte negotiation answers, 7-byte
 * option-232 answers), so a bound on bytes alone would let a peer that asks for
 * replies and never reads hold twenty times the bound. `WriteQueue` counts each write
 * until Node has handed it to the kernel (its callback) and prices it at its bytes
 * plus WRITE_OVERHEAD_BYTES.
 */

/** What a queued write is priced at beyond its bytes (about 150 bytes measured, rounded up). */
export const WRITE_OVERHEAD_BYTES = 256;

/** The part of a net.Socket (or TLSSocket) the queue uses. */
export interface QueueSocket {
  write(chunk: Uint8Array, callback: (err?: Error | null) => void): boolean;
  readonly writableLength: number;
}

export class WriteQueue {
  /** Writes not yet handed to the kernel. */
  private pending = 0;
  /**
   * Writes handed to the kernel at once (the socket's queue was empty right after
   * them) whose callbacks are still to come: Node calls them on the next tick, in
   * order, before any later write's.
   */
  private stale = 0;
  /** One callback for every write: no allocation per write. */
  private readonly written = (): void => {
    if (this.stale > 0) this.stale--;
    else if (this.pending > 0) this.pending--;
  };

  constructor(private readonly socket: QueueSocket) {}

  /** `socket.write(bytes)`, counted. */
  write(bytes: Uint8Array): boolean {
    this.pending++;
    const ok = this.socket.write(bytes, this.written);
    if (this.socket.writableLength === 0) {
      // Nothing waits: every write so far is with the kernel (a peer that reads costs nothing).
      this.stale += this.pending;
      this.pending = 0;
    }
    return ok;
  }

  /** Writes queued and not yet handed to the kernel. */
  get writes(): number {
    return this.pending;
  }

  /** Bytes waiting in the socket plus WRITE_OVERHEAD_BYTES for each write not yet handed to the kernel. */
  get cost(): number {
    return this.socket.writableLength + this.pending * WRITE_OVERHEAD_BYTES;
  }
}

/**
 * What a socket holds for its peer when vspc does not make the writes itself (a library
 * does: ssh2 writes its packets to the socket), priced the same way: the bytes waiting
 * plus WRITE_OVERHEAD_BYTES for each write Node has buffered and not handed to libuv
 * yet (its writable state's `bufferedRequestCount`; bytes alone when Node does not
 * expose it).
 */
export function socketCost(socket: { readonly writableLength: number }): number {
  const state = (socket as { _writableState?: { bufferedRequestCount?: unknown } })._writableState;
  const writes = typeof state?.bufferedRequestCount === 'number' ? state.bufferedRequestCount : 0;
  return socket.writableLength + writes * WRITE_OVERHEAD_BYTES;
}
