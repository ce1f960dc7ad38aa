import { createHash, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';

/**
 * Admin API authentication: a bearer token (`Authorization: Bearer <token>`), required
 * on every call when one is configured (--admin-token, VSPC_ADMIN_TOKEN,
 * --admin-token-file or the config file). Without one the API is open, which vspc
 * only allows on a loopback address (checked when the configuration is loaded).
 */

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(header: string | undefined): string | null {
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return m ? m[1] : null;
}

/** Constant-time comparison (of digests, so the length does not leak either). */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** Why a request is refused (answered 401), or null when it may proceed (or no token is expected). */
export function refusal(
  req: http.IncomingMessage,
  expected: string | null,
): { code: 'VSPC_AUTH_REQUIRED' | 'VSPC_AUTH_FAILED'; message: string } | null {
  if (expected === null) return null;
  const given = bearerToken(req.headers.authorization);
  if (given === null) {
    return {
      code: 'VSPC_AUTH_REQUIRED',
      message: 'this vspc admin API requires a token: send "Authorization: Bearer <token>" (vspc-admin: --token-file FILE or VSPC_ADMIN_TOKEN)',
    };
  }
  if (!tokenMatches(given, expected)) return { code: 'VSPC_AUTH_FAILED', message: 'the admin token was not accepted' };
  return null;
}
