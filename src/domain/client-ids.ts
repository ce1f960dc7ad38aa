/**
 * Console client ids, unique across every access method: a hub's lock table and the
 * admin API's `kick --client ID` key clients by id, and a telnet and an SSH client of
 * the same console must never share one.
 */
let next = 1;

export function allocateClientId(): number {
  return next++;
}
