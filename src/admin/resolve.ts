import type { Registry } from '../domain/registry.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import { lookupConsoles as lookupIn, uniqueAddresses } from '../domain/address.js';
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

/** Every console `ref` names under the rule above (several: ambiguous); the rule itself is src/domain/address.ts. */
export function lookupConsoles(registry: Pick<Registry, 'all' | 'getByPort'>, ref: string): ConsoleHub[] {
  return lookupIn(registry.all(), ref, { byPort: (p) => registry.getByPort(p) });
}

/**
 * For each console, the shortest spelling that names it alone under the rule: `NAME`,
 * else `NAME:LABEL` / `NAME:`, else the UUID (or key) with its label, else the port.
 * Built once for all consoles (`list` of thousands stays linear).
 */
export function consoleAddresses(registry: Pick<Registry, 'all' | 'getByPort'>): (hub: ConsoleHub) => string {
  const address = uniqueAddresses(registry.all(), {
    uuids: true,
    port: (identity) => String(identity.tcpPort),
    // A spelling of digits that is a console's port names that console, whatever else it is.
    isPort: (n) => registry.getByPort(n) !== undefined,
  });
  return (h) => address(h) ?? String(h.identity.tcpPort);
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
  const names = new Set(candidates.map((h) => h.identity.name));
  // What tells consoles of one name apart besides a label: an ESXi VM's UUID, another
  // kind's key when it is not the name, and always the port.
  const others: string[] = [];
  if (candidates.some((h) => h.identity.kind === 'esxi')) others.push('the UUID');
  if (candidates.some((h) => h.identity.kind !== 'esxi' && h.identity.key.toLowerCase() !== (h.identity.name ?? h.identity.key).toLowerCase())) others.push('the key');
  others.push('the port');
  let how: string;
  if (candidates.some((h) => h.identity.label !== '')) {
    how = 'use the port or NAME:LABEL';
    if (candidates.some((h) => h.identity.label === '')) how += ', and NAME: (with the colon) for the one without a label';
  } else {
    // No labels: NAME:LABEL (or NAME:) names them all again; only what the list gives works.
    how = `none has a label to tell it apart, so use ${others.join(' or ')} as listed`;
  }
  if (names.size > 1 && new Set([...names].map((n) => n?.toLowerCase())).size < names.size) {
    how += `; names are matched in any case, so names that differ only in case need ${others.join(' or ')}`;
  }
  return `"${ref}" matches ${candidates.length} serial ports: ${list}; ${how}`;
}
