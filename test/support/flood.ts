/**
 * A peer that keeps writing after vspc ended its connection: writes `chunk` with
 * backpressure until the socket closes or `bound` bytes were written, and returns the
 * bytes written. Event driven (drain, close); a destroyed socket ends the loop at once.
 * A test asserts the result is under `bound`: vspc stopped reading, so the kernel's
 * buffers filled and the writes stalled until the close grace ended the connection.
 */
import type net from 'node:net';

export async function writeUntilClosed(socket: net.Socket, chunk: Buffer, bound: number): Promise<number> {
  let closed = socket.destroyed;
  socket.once('close', () => (closed = true));
  let sent = 0;
  while (!closed && !socket.destroyed && sent < bound) {
    sent += chunk.length;
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve) => {
        socket.once('drain', resolve);
        socket.once('close', resolve);
      });
    }
  }
  return sent;
}
