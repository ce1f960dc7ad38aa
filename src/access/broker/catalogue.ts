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
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import { lookupConsoles, uniqueAddresses } from '../../domain/address.js';
import type { ConsoleListEntry, SelectRefusal } from '../../protocol/control/vspc-control.js';
import { Glob, hasWildcards } from '../../util/glob.js';

/** The consoles the broker offers, ordered by name (any case), then label: the order of menus. */
export function offeredConsoles(all: readonly ConsoleHub[]): ConsoleHub[] {
  return all
    .filter((h) => h.identity.name !== null || h.identity.kind !== 'esxi')
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
 * NAME:LABEL, else a substring of either; any case; empty: everything.
 */
export function patternMatcher(pattern: string): (h: ConsoleHub) => boolean {
  if (pattern === '') return () => true;
  const texts = (h: ConsoleHub) => {
    const name = baseName(h);
    return h.identity.label ? [name, `${name}:${h.identity.label}`] : [name, `${name}:`];
  };
  if (hasWildcards(pattern)) {
    const glob = new Glob(pattern, { ignoreCase: true });
    return (h) => texts(h).some((t) => glob.test(t));
  }
  const needle = pattern.toLowerCase();
  return (h) => texts(h).some((t) => t.toLowerCase().includes(needle));
}

/** The entries LIST-REPLY carries for `offered` (see the top of this file for what they reveal). */
export function listEntries(offered: readonly ConsoleHub[], pattern = ''): ConsoleListEntry[] {
  const address = uniqueAddresses(offered, { uuids: false });
  const matches = patternMatcher(pattern);
  return offered.filter(matches).map((h) => ({
    name: baseName(h),
    label: h.identity.label,
    kind: h.identity.kind,
    state: stateOf(h),
    clients: h.clients.size,
    address: address(h),
  }));
}

export type Selection = { hub: ConsoleHub } | { refused: SelectRefusal; message: string; candidates: string[] };

const MAX_CANDIDATES = 20;

/**
 * The console SELECT `address` names among `offered`, by the one addressing rule
 * (src/domain/address.ts) without ports: a number is a name here. A refusal says why
 * and, when ambiguous, how to name each candidate.
 */
export function selectConsole(offered: readonly ConsoleHub[], address: string): Selection {
  const found = lookupConsoles(offered, address);
  if (found.length === 1) return { hub: found[0] };
  const shown = JSON.stringify(address.length > 80 ? `${address.slice(0, 80)}…` : address);
  if (found.length === 0) {
    return { refused: 'not-found', message: `no console named ${shown} (vspc-admin console lists them)`, candidates: [] };
  }
  const spell = uniqueAddresses(offered, { uuids: false });
  const candidates = found.map(spell).filter((a): a is string => a !== null);
  const alike = found.length - candidates.length;
  let message = `${shown} names ${found.length} consoles`;
  if (candidates.length > 0) {
    message += `: ${candidates.slice(0, MAX_CANDIDATES).join(', ')}${candidates.length > MAX_CANDIDATES ? `, and ${candidates.length - MAX_CANDIDATES} more` : ''}`;
  }
  if (alike > 0) message += `; ${alike} of them share one name and label, which only an administrator can tell apart (vspc-admin list)`;
  return { refused: 'ambiguous', message, candidates: candidates.slice(0, MAX_CANDIDATES) };
}
