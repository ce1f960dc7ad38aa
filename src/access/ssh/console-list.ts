/**
 * The consoles an SSH key may reach, as the menu, `list` and `list --json` show them,
 * and the lookup of the console a user names. Pure (reads hubs, writes nothing).
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import { displayKey } from '../../domain/identity.js';
import { lookupConsoles, uniqueAddresses } from '../../domain/address.js';
import { tunnelConsoleRefusal } from '../../domain/tunnel-status.js';
import { sanitizeText } from '../../util/text.js';
import type { KeyRights } from './rights.js';

/** One row: name, kind, state and who is attached. */
export interface ConsoleEntry {
  name: string;
  kind: string;
  key: string;
  label: string;
  state: string;
  attached: Array<{ user: string | null; mode: string; method: string }>;
}

/**
 * The consoles `rights` allow, ordered by name (the menu's numbers follow this order).
 * Not those that carry a serial tunnel: nobody can attach to them (docs/tunnels.md).
 */
export function permittedConsoles(all: readonly ConsoleHub[], rights: KeyRights): ConsoleHub[] {
  return all.filter((h) => h.carriesTunnel === null && rights.consoles.allows(h.identity)).sort((a, b) => a.displayName.localeCompare(b.displayName) || a.identity.id - b.identity.id);
}

/** The consoles `rights` allow that carry a serial tunnel: never listed, but a name that picks one is told why not. */
export function permittedTunnelConsoles(all: readonly ConsoleHub[], rights: KeyRights): ConsoleHub[] {
  return all.filter((h) => h.carriesTunnel !== null && rights.consoles.allows(h.identity));
}

export function entryOf(hub: ConsoleHub): ConsoleEntry {
  const attached = hub.locks.list().map((h) => ({
    user: h.user ? sanitizeText(h.user) : null,
    mode: h.mode,
    method: h.auth?.method ?? 'telnet',
  }));
  return {
    name: hub.displayName,
    kind: hub.identity.kind,
    key: displayKey(hub.identity),
    label: hub.identity.label,
    state: hub.state === 'disconnected' && hub.endpoint ? hub.endpoint.state : hub.state,
    attached,
  };
}

function attachedText(e: ConsoleEntry): string {
  if (e.attached.length === 0) return '-';
  return e.attached.map((a) => `${a.user ?? 'someone'} (${a.mode}${a.method === 'ssh' ? '' : `, ${a.method}`})`).join(', ');
}

/** A numbered table, lines joined with `eol` (`\r\n` on a terminal). */
export function renderTable(hubs: readonly ConsoleHub[], eol: string, numbered: boolean): string {
  const rows = hubs.map((h, i) => {
    const e = entryOf(h);
    return [...(numbered ? [String(i + 1)] : []), e.name, e.kind, e.state, attachedText(e)];
  });
  const head = [...(numbered ? ['#'] : []), 'NAME', 'KIND', 'STATE', 'ATTACHED'];
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, c) => (c === cells.length - 1 ? cell : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join(eol) + eol;
}

export function renderJson(hubs: readonly ConsoleHub[]): string {
  return JSON.stringify(hubs.map(entryOf), null, 2) + '\n';
}

/**
 * The console `target` names among `hubs` (the permitted ones): a menu number (when
 * `numbered`), else vspc's one addressing rule (domain/address.ts: NAME, NAME:LABEL,
 * a UUID, any case; never a port). A name the key may not reach is not found, exactly
 * like one that does not exist.
 */
export function findConsole(
  hubs: readonly ConsoleHub[],
  target: string,
  numbered: boolean,
  tunnelConsoles: readonly ConsoleHub[] = [],
): { hub: ConsoleHub } | { error: string; notFound: boolean } {
  if (numbered && /^\d+$/.test(target)) {
    const i = Number(target);
    if (i >= 1 && i <= hubs.length) return { hub: hubs[i - 1] };
    return { error: `no console number ${target} (1-${hubs.length})`, notFound: false };
  }
  const found = lookupConsoles(hubs, target);
  if (found.length === 1) return { hub: found[0] };
  if (found.length > 1) {
    // Each with a spelling that names it alone (never a UUID or port); consoles that share
    // a name and label have none, and only the menu tells them apart.
    const spell = uniqueAddresses(hubs, { uuids: false });
    const alike = found.some((h) => spell(h) === null);
    const how = alike ? (numbered ? '; pick one by its number in the menu' : '; some share one name and label: pick one from the menu (ssh without a console name)') : '';
    return { error: `${sanitizeText(target).slice(0, 80)} names several consoles: ${found.map((h) => spell(h) ?? h.displayName).join(', ')}${how}`, notFound: false };
  }
  // A console the key may use but that carries a serial tunnel (not listed): say why not.
  const carrier = lookupConsoles(tunnelConsoles, target);
  if (carrier.length === 1 && carrier[0].carriesTunnel !== null) return { error: tunnelConsoleRefusal(carrier[0].displayName, carrier[0].carriesTunnel), notFound: false };
  return { error: `no console ${JSON.stringify(sanitizeText(target).slice(0, 80))} that this key may use (try: list)`, notFound: true };
}
