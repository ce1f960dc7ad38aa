/**
 * What the console broker offers and how a name picks one: pure functions over the
 * registry's hubs (no sockets), used by each broker connection for LIST-REQUEST and
 * SELECT (docs/console-protocol.md, "The console broker").
 *
 * What a list entry reveals, and what it does not (the broker needs no admin token, so
 * anyone allowed to open its socket reads it):
 *
 * - name, label, kind, state and the number of clients: what a person needs to pick a
 *   console and to see whether someone is on it;
 * - never a UUID: the vCenter UUID is the only thing an ESXi VM presents to claim its
 *   console on the VM port, and an inventory identifier beyond that;
 * - never a port: people reach consoles by name, so ports can move (set-port) freely;
 * - never a peer address, endpoint spec or who is attached: the ESXi host's address and
 *   a source's path are infrastructure; WHO, once attached, names the holders, as on a
 *   console's own telnet port.
 *
 * ESXi consoles that have not reported a name yet are not offered (they could only be
 * named by UUID, which the list does not show).
 *
 * Names are claims (any peer on the VM port may call itself `web01`), so the broker
 * reads them ranked (src/domain/address.ts): when several machines answer to one name,
 * `web01` is the one that has had it longest and the others are `web01~2`, `web01~3`;
 * a newcomer cannot take the place of the console people reach by its name, and each
 * console keeps a spelling without UUIDs or ports.
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import { lookupConsoles, uniqueAddresses } from '../../domain/address.js';
import { tunnelConsoleRefusal } from '../../domain/tunnel-status.js';
import type { ConsoleListEntry, SelectRefusal } from '../../protocol/control/vspc-control.js';
import { Glob, GlobBudget, hasWildcards } from '../../util/glob.js';

/**
 * The consoles the broker offers, ordered by name (any case), then label: the order of
 * menus. Not those that carry a serial tunnel: nobody can attach to them (docs/tunnels.md).
 */
export function offeredConsoles(all: readonly ConsoleHub[]): ConsoleHub[] {
  return all
    .filter((h) => h.carriesTunnel === null && (h.identity.name !== null || h.identity.kind !== 'esxi'))
    .sort((a, b) => {
      const an = baseName(a).toLowerCase();
      const bn = baseName(b).toLowerCase();
      return an < bn ? -1 : an > bn ? 1 : a.identity.label.localeCompare(b.identity.label) || a.identity.id - b.identity.id;
    });
}

function baseName(h: ConsoleHub): string {
  return h.identity.name ?? h.identity.key;
}

function stateOf(h: ConsoleHub): string {
  return h.displayState;
}

/**
 * A LIST-REQUEST's pattern: `*` and `?` wildcards (src/util/glob.ts) against NAME and
 * NAME:LABEL, else a substring of either; any case; empty: everything. Matching spends
 * from `budget` (one per request): past it, `VSPC_PATTERN_TOO_EXPENSIVE` is thrown.
 */
export function patternMatcher(pattern: string, budget: GlobBudget = new GlobBudget()): (h: ConsoleHub) => boolean {
  if (pattern === '') return () => true;
  // A substring is the glob *PATTERN*: one matcher, one budget, one bound on the work.
  const glob = new Glob(hasWildcards(pattern) ? pattern : `*${pattern}*`, { ignoreCase: true });
  return (h) => {
    const name = baseName(h);
    return glob.test(name, budget) || glob.test(`${name}:${h.identity.label}`, budget);
  };
}

/**
 * The entries LIST-REPLY carries for `offered` (see the top of this file for what they
 * reveal). Throws `VSPC_PATTERN_TOO_EXPENSIVE` when matching `pattern` needs more than
 * one request's budget.
 */
export function listEntries(offered: readonly ConsoleHub[], pattern = '', budget: GlobBudget = new GlobBudget()): ConsoleListEntry[] {
  const address = uniqueAddresses(offered, { uuids: false, ranked: true });
  const matches = patternMatcher(pattern, budget);
  return offered.filter(matches).map((h) => ({
    name: baseName(h),
    label: h.identity.label,
    kind: h.identity.kind,
    state: stateOf(h),
    clients: h.clients.size,
    address: address(h),
  }));
}

/** `tunnel`: the name picks a console that carries a serial tunnel (refused as not offered, with the reason). */
export type Selection = { hub: ConsoleHub } | { refused: SelectRefusal; message: string; candidates: string[]; tunnel?: boolean };

const MAX_CANDIDATES = 20;

/**
 * The console SELECT `address` names among `offered` (`all`: every console, for the
 * reason a console that carries a serial tunnel is refused), by the one addressing rule
 * (src/domain/address.ts) without ports: a number is a name here. A refusal says why
 * and, when ambiguous, how to name each candidate.
 */
export function selectConsole(offered: readonly ConsoleHub[], address: string, all: readonly ConsoleHub[] = []): Selection {
  const found = lookupConsoles(offered, address, { ranked: true });
  if (found.length === 1) return { hub: found[0] };
  const shown = JSON.stringify(address.length > 80 ? `${address.slice(0, 80)}…` : address);
  if (found.length === 0) {
    // A console that carries a serial tunnel is not offered; named, it is refused with the reason.
    const carrier = lookupConsoles(all.filter((h) => h.carriesTunnel !== null), address);
    if (carrier.length === 1 && carrier[0].carriesTunnel !== null) {
      return { refused: 'not-found', message: tunnelConsoleRefusal(carrier[0].displayName, carrier[0].carriesTunnel), candidates: [], tunnel: true };
    }
    return { refused: 'not-found', message: `no console named ${shown} (vspc-admin console lists them)`, candidates: [] };
  }
  const spell = uniqueAddresses(offered, { uuids: false, ranked: true });
  const candidates = found.map(spell).filter((a): a is string => a !== null);
  const alike = found.length - candidates.length;
  let message = `${shown} names ${found.length} consoles`;
  if (candidates.length > 0) {
    message += `: ${candidates.slice(0, MAX_CANDIDATES).join(', ')}${candidates.length > MAX_CANDIDATES ? `, and ${candidates.length - MAX_CANDIDATES} more` : ''}`;
  }
  if (alike > 0) message += `; ${alike} of them share one name and label, which only an administrator can tell apart (vspc-admin list)`;
  return { refused: 'ambiguous', message, candidates: candidates.slice(0, MAX_CANDIDATES) };
}
