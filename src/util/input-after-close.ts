/**
 * What a peer sends after vspc ended its connection (FIN sent, the close grace running):
 * read and discarded up to INPUT_AFTER_CLOSE_LIMIT bytes (a paste in flight), then the
 * stream is no longer read — TCP flow control stops the peer — until the grace's timer
 * ends it. A peer flooding after being cut off costs 64 KiB of reads, not seconds of
 * them (docs/security.md, "input after the end").
 *
 * Not destroyed at once: closing a socket with unread input sends a reset, which throws
 * away what vspc wrote and the peer has not received yet (the output in flight, the
 * reason it was ended).
 */
export const INPUT_AFTER_CLOSE_LIMIT = 64 * 1024;

/** The one line written when a peer goes past the limit (a debug line: the close was already logged). */
interface DebugLog {
  debug(message: string, fields?: Record<string, unknown>): void;
}

/** One connection's count of input after its end. */
export class InputAfterClose {
  private bytes = 0;
  private stopped = false;

  /**
   * Counts `n` bytes received after the end; the first time the count passes the limit,
   * pauses `stream` and writes one debug line, `<who> keeps sending after vspc ended it;
   * no longer read`.
   */
  discard(n: number, stream: { pause(): unknown }, log: DebugLog, who: string): void {
    this.bytes += n;
    if (this.stopped || this.bytes <= INPUT_AFTER_CLOSE_LIMIT) return;
    this.stopped = true;
    stream.pause();
    log.debug(`${who} keeps sending after vspc ended it; no longer read`, { bytesAfterClose: this.bytes, limit: INPUT_AFTER_CLOSE_LIMIT });
  }
}
