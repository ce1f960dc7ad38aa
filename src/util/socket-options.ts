import type { Server } from 'node:net';

/** The parts of Node's TCP handle (`server._handle`) used here; not a public API, so every use is guarded. */
interface TcpHandle {
  setNoDelay?(enable: boolean): number;
  setKeepAlive?(enable: boolean, delaySeconds: number): number;
}

/**
 * Sets TCP_NODELAY and keepalive (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
 * TCP_KEEPCNT, as `socket.setKeepAlive` would) once, on a listening socket. Linux
 * copies a listener's socket options to every connection it accepts (keepalive
 * timer included), so the connections need no setsockopt calls of their own: five
 * per connection otherwise, measurable when thousands of vMotions a second each open
 * one. Call after the server listens, before it accepts (the 'listening' callback).
 *
 * Returns true only when the options are now on the listener and the platform
 * passes them on (Linux); otherwise the caller sets them per connection as before.
 */
export function setInheritedSocketOptions(server: Server, keepAliveMs: number): boolean {
  if (process.platform !== 'linux') return false;
  const handle = (server as unknown as { _handle?: TcpHandle | null })._handle;
  if (!handle || typeof handle.setNoDelay !== 'function' || typeof handle.setKeepAlive !== 'function') return false;
  try {
    if (handle.setNoDelay(true) !== 0) return false;
    return handle.setKeepAlive(true, Math.max(1, Math.floor(keepAliveMs / 1000))) === 0;
  } catch {
    return false;
  }
}
