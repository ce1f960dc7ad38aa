/**
 * Console client ids, unique across every access method (a hub's lock table and the
 * admin API's `kick --client ID` key clients by id: a telnet and a raw client of the
 * same console must never share one) and across restarts as well as within one run:
 * console logs and the audit log outlive the process, and "client 3" from two runs
 * would be ambiguous there. Each id is at least the milliseconds since 2025-01-01 when
 * the client connected, and more than the previous id; a restart reuses none unless the
 * previous run handed out ids faster than one per millisecond right up to its end (or
 * the clock went back).
 */
const CLIENT_ID_EPOCH = Date.UTC(2025, 0, 1);
let lastClientId = 0;

export function allocateClientId(now = Date.now()): number {
  lastClientId = Math.max(lastClientId + 1, now - CLIENT_ID_EPOCH);
  return lastClientId;
}
