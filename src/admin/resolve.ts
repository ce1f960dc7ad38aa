import type { Registry } from '../domain/registry.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import { displayKey } from '../domain/identity.js';
import { normalizeUuid } from '../util/uuid.js';
import { AdminApiError } from './admin-server.js';

/**
 * The one way to name a console, for every command that takes one (docs/admin-api.md,
 * "Addressing a console"; the README's `<vm>`):
 *
 * - a client port number (`10001`) names the console on that port;
 * - `NAME` names the consoles whose name is NAME in any case (as `list` patterns are);
 * - `NAME:` names the VM's serial port without a label, `NAME:LABEL` a labelled one
 *   (the label in any case too);
 * - a UUID in any case, with or without separators, and `UUID:` / `UUID:LABEL`, likewise;
 *   a console of another kind also answers to its key (`vspc-admin list`'s KEY).
 *
 * A reference matching several consoles is an error that lists each with a spelling
 * that names it alone (`web01:`, `web01:com2`, a UUID, or its port).
 */
export function resolveVm(registry: Registry, ref: string | null): ConsoleHub {
  if (!ref) throw new AdminApiError(400, 'VSPC_VM_REQUIRED', 'name the VM: its name, NAME:LABEL, UUID or port');
  const candidates = lookupConsoles(registry, ref);
  if (candidates.length === 0) {
    throw new AdminApiError(
      404,
      'VSPC_VM_NOT_FOUND',
      `no VM serial port matches "${ref}" (a name in any case, NAME:LABEL, NAME: for the one without a label, a UUID, or a port; vspc-admin list shows them)`,
    );
  }
  if (candidates.length > 1) throw new AdminApiError(409, 'VSPC_VM_AMBIGUOUS', ambiguity(registry, ref, candidates));
  return candidates[0];
}

/** Every console `ref` names under the rule above (several: ambiguous). */
export function lookupConsoles(registry: Pick<Registry, 'all' | 'getByPort'>, ref: string): ConsoleHub[] {
  if (/^\d{1,5}$/.test(ref)) {
    const byPort = registry.getByPort(Number(ref));
    if (byPort) return [byPort];
  }
  const lower = ref.toLowerCase();
  const colon = ref.indexOf(':');
  // UUIDs have no colon: `UUID` or `UUID:LABEL`.
  const uuid = normalizeUuid(colon < 0 ? ref : ref.slice(0, colon));
  const uuidLabel = colon < 0 ? null : lower.slice(colon + 1);
  return registry.all().filter((h) => {
    const label = h.identity.label.toLowerCase();
    for (const alias of aliases(h)) {
      if (lower === alias || lower === `${alias}:${label}`) return true;
    }
    return uuid !== undefined && h.identity.key === uuid && (uuidLabel === null || uuidLabel === label);
  });
}

/** The names a console answers to, lower case: its name, and the key of a console that is not an ESXi VM. */
function aliases(h: ConsoleHub): string[] {
  const out: string[] = [];
  if (h.identity.name) out.push(h.identity.name.toLowerCase());
  if (h.identity.kind !== 'esxi') {
    const key = h.identity.key.toLowerCase();
    if (!out.includes(key)) out.push(key);
  }
  return out;
}

/**
 * For each console, the shortest spelling that names it alone under the rule: `NAME`,
 * else `NAME:LABEL` / `NAME:`, else the UUID (or key) with its label, else the port.
 * Built once for all consoles (`list` of thousands stays linear).
 */
export function consoleAddresses(registry: Pick<Registry, 'all' | 'getByPort'>): (hub: ConsoleHub) => string {
  const all = registry.all();
  const count = new Map<string, number>();
  const bump = (k: string) => count.set(k, (count.get(k) ?? 0) + 1);
  for (const h of all) {
    const label = h.identity.label.toLowerCase();
    const seen = new Set<string>();
    for (const a of aliases(h)) {
      seen.add(a);
      seen.add(`${a}:${label}`);
    }
    for (const k of seen) bump(`n\0${k}`);
    if (h.identity.kind === 'esxi') {
      bump(`u\0${h.identity.key}`);
      bump(`u\0${h.identity.key}:${label}`);
    }
  }
  // A spelling of digits that is a console's port names that console, whatever else it is.
  const usable = (s: string) => !(/^\d{1,5}$/.test(s) && registry.getByPort(Number(s)) !== undefined);
  return (h) => {
    const { name, label, key, kind, tcpPort } = h.identity;
    const l = label.toLowerCase();
    const spellings: Array<[string, string]> = [];
    const base = name ?? (kind !== 'esxi' ? key : null);
    if (base !== null) {
      spellings.push([`n\0${base.toLowerCase()}`, base], [`n\0${base.toLowerCase()}:${l}`, `${base}:${label}`]);
    }
    if (kind === 'esxi') spellings.push([`u\0${key}`, displayKey(h.identity)], [`u\0${key}:${l}`, `${displayKey(h.identity)}:${label}`]);
    for (const [k, spelling] of spellings) if (count.get(k) === 1 && usable(spelling)) return spelling;
    return String(tcpPort);
  };
}

/** The ambiguity error: every match with a spelling that names it alone, and how to spell one. */
function ambiguity(registry: Registry, ref: string, candidates: ConsoleHub[]): string {
  const address = consoleAddresses(registry);
  const list = candidates
    .map((h) => {
      const a = address(h);
      if (a === String(h.identity.tcpPort)) return `port ${a} (${h.displayName})`;
      const byName = h.identity.name !== null && a.startsWith(h.identity.name);
      return byName ? `${a} (port ${h.identity.tcpPort})` : `${a} (${h.displayName}, port ${h.identity.tcpPort})`;
    })
    .join(', ');
  let how = 'use the port or NAME:LABEL';
  const names = new Set(candidates.map((h) => h.identity.name));
  if (candidates.some((h) => h.identity.label === '') && candidates.some((h) => h.identity.label !== '')) {
    how += ', and NAME: (with the colon) for the one without a label';
  }
  if (names.size > 1 && new Set([...names].map((n) => n?.toLowerCase())).size < names.size) {
    how += '; names are matched in any case, so names that differ only in case need the UUID or the port';
  }
  return `"${ref}" matches ${candidates.length} serial ports: ${list}; ${how}`;
}
