/** Network address helpers. Pure; importable from every layer. */

/** A TCP listen or connect address. `host` is a name or an IP literal (IPv6 without brackets). */
export interface HostPort {
  host: string;
  port: number;
}

/** True for `localhost`, `::1` and 127.0.0.0/8: addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * `host:port` of a socket's peer for logs and views (IPv6 in brackets). A socket reset
 * before its address was read (a TLS handshake the peer abandoned) has none: `?`, never
 * "undefined:undefined".
 */
export function socketPeer(socket: { readonly remoteAddress?: string; readonly remotePort?: number }): string {
  const host = socket.remoteAddress;
  if (host === undefined) return '?';
  return `${host.includes(':') ? `[${host}]` : host}:${socket.remotePort ?? '?'}`;
}
