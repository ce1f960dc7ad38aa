/**
 * Browser-borne attacks on the admin API, refused before any route runs.
 *
 * The API is plain HTTP on loopback by default, often without a token. A web page the
 * operator happens to open can still reach it: by DNS rebinding (a name the attacker
 * controls resolves to 127.0.0.1, so the browser sends `Host: evil.example`), or by a
 * cross-origin "simple" request (a form POST with `Content-Type: text/plain` needs no
 * CORS preflight). The rules, after the Fetch standard's definition of simple requests
 * and what docker/containerd and the Kubernetes API server do:
 *
 * 1. `Host` must be an IP literal, `localhost`, or a name the operator configured
 *    (`adminHostNames`): a rebinding page always sends its own name.
 * 2. A request a browser marks as cross-origin is refused: `Sec-Fetch-Site` other than
 *    `same-origin`/`none`, or an `Origin` that is not this API's own origin.
 * 3. Mutations (POST, DELETE) must carry `Content-Type: application/json`: not a
 *    CORS-safelisted type, so a foreign page cannot send one without a preflight, and
 *    preflights (OPTIONS) are never granted.
 *
 * `vspc-admin`, curl and scripts send none of the browser headers and pass rule 3 by
 * sending the header. Refusals are counted per rule for `/metrics`.
 */
import type http from 'node:http';
import { isIP } from 'node:net';

export type GuardRefusal = 'host' | 'origin' | 'content-type' | 'preflight';

export interface GuardResult {
  status: number;
  code: 'VSPC_ADMIN_BAD_HOST' | 'VSPC_ADMIN_CROSS_ORIGIN' | 'VSPC_ADMIN_CONTENT_TYPE' | 'VSPC_ADMIN_PREFLIGHT';
  reason: GuardRefusal;
  message: string;
}

/** The host part of a Host header value (`[::1]:13371` → `::1`), lower-cased. */
export function hostOf(header: string): string {
  const h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? h : h.slice(1, end);
  }
  const colon = h.lastIndexOf(':');
  // A bare IPv6 literal without brackets is not a valid Host header; keep it whole.
  return colon >= 0 && h.indexOf(':') === colon ? h.slice(0, colon) : h;
}

function allowedHost(host: string, names: readonly string[]): boolean {
  if (host === 'localhost' || isIP(host) !== 0) return true;
  return names.some((n) => n.toLowerCase() === host);
}

/**
 * Why `req` must be refused, or null. `hostNames`: extra names the API may be reached
 * by (besides IP literals and localhost).
 */
export function guardRequest(req: http.IncomingMessage, hostNames: readonly string[]): GuardResult | null {
  const hostHeader = req.headers.host;
  // HTTP/1.1 requires Host; HTTP/1.0 clients (and raw sockets) may omit it: no browser does.
  if (hostHeader !== undefined && !allowedHost(hostOf(hostHeader), hostNames)) {
    return {
      status: 421,
      code: 'VSPC_ADMIN_BAD_HOST',
      reason: 'host',
      message: `the admin API does not answer to the name "${hostOf(hostHeader).slice(0, 100)}" (IP addresses, localhost and adminHostNames only)`,
    };
  }
  const fetchSite = req.headers['sec-fetch-site'];
  if (typeof fetchSite === 'string' && fetchSite !== 'same-origin' && fetchSite !== 'none') {
    return { status: 403, code: 'VSPC_ADMIN_CROSS_ORIGIN', reason: 'origin', message: 'cross-site requests to the admin API are refused' };
  }
  const origin = req.headers.origin;
  if (typeof origin === 'string' && !sameOrigin(origin, hostHeader)) {
    return { status: 403, code: 'VSPC_ADMIN_CROSS_ORIGIN', reason: 'origin', message: 'cross-origin requests to the admin API are refused' };
  }
  if (req.method === 'OPTIONS') {
    return { status: 403, code: 'VSPC_ADMIN_PREFLIGHT', reason: 'preflight', message: 'the admin API grants no cross-origin access' };
  }
  if (req.method === 'POST' || req.method === 'DELETE') {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') {
      return {
        status: 415,
        code: 'VSPC_ADMIN_CONTENT_TYPE',
        reason: 'content-type',
        message: 'admin API calls that change something need "Content-Type: application/json"',
      };
    }
  }
  return null;
}

/** `Origin: null` (sandboxed frames, file: pages) is never this API's origin. */
function sameOrigin(origin: string, hostHeader: string | undefined): boolean {
  if (hostHeader === undefined) return false;
  try {
    const o = new URL(origin);
    return (o.protocol === 'http:' || o.protocol === 'https:') && o.host.toLowerCase() === hostHeader.trim().toLowerCase();
  } catch {
    return false;
  }
}
