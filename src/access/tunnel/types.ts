/**
 * What a tunnel is, as the server hands it to the TunnelManager (built from the config
 * file's `tunnels:`, src/config/tunnels.ts).
 */

/** Where a forward listens: a sticky loopback port (`auto`), a TCP address, or a unix socket. */
export type ForwardListen =
  | { type: 'auto' }
  | { type: 'tcp'; host: string; port: number }
  | { type: 'unix'; path: string; mode: number };

export interface ForwardSpec {
  listen: ForwardListen;
  /** The port in the guest (the agent dials 127.0.0.1:to). */
  to: number;
}

/**
 * The console that carries the tunnel: named by the admin API's addressing rule
 * (`NAME`, `NAME:LABEL`, `NAME:`, `UUID:LABEL`, a declared console's key), or exactly
 * (the console a tunnel's own `source:` registers).
 */
export type TunnelCarrier = { ref: string } | { kind: string; key: string; label: string };

export interface TunnelSpec {
  /** Unique among tunnels, any case. */
  name: string;
  carrier: TunnelCarrier;
  /** How the config file named the carrier (`console: web01:tunnel`, `source: unix:/run/...`), for views. */
  carrierText: string;
  forwards: ForwardSpec[];
}

/** `auto`, `HOST:PORT`, `unix:PATH?mode=0600`: the config file's spelling. */
export function formatListen(l: ForwardListen): string {
  if (l.type === 'auto') return 'auto';
  if (l.type === 'unix') return `unix:${l.path}?mode=0${l.mode.toString(8)}`;
  return `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
}

/** The access-port method under which an `auto` forward's sticky port is kept (Registry.accessPort). */
export function autoPortMethod(to: number): string {
  return `tunnel:${to}`;
}
