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
