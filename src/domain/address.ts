/**
 * How a person names a console: one rule, shared by every front door that takes a
 * console's name (the console broker, src/access/broker/; the admin API's resolver,
 * src/admin/resolve.ts, can use it too — see "sharing" below). Pure: it reads
 * identities and nothing else.
 *
 * - `NAME` names the consoles whose name is NAME, in any case;
 * - `NAME:LABEL` names the serial port LABEL of the machine NAME (label in any case too),
 *   and `NAME:` the one without a label (for a VM with several serial ports);
 * - a UUID in any case, with or without separators, and `UUID:` / `UUID:LABEL`, likewise;
 *   a console of another kind than `esxi` also answers to its key as a name;
 * - with `byPort`, a number names the console on that client port first (the admin
 *   API's habit). Front doors that must not reveal ports (the broker) leave it out:
 *   a number is then just a name.
 *
 * A reference that matches several consoles is ambiguous; `uniqueAddresses` gives each
 * console the shortest spelling that names it alone, for the candidates of an error and
 * for menus.
 *
 * Sharing: this is the rule of branch operator-cli's src/admin/resolve.ts
 * (`lookupConsoles`, `consoleAddresses`), written over plain identities so that the
 * admin layer can call `lookupConsoles(registry.all(), ref, { byPort: (p) =>
 * registry.getByPort(p) })` instead of keeping its own copy.
 */
import type { ConsoleIdentity } from './identity.js';
import { displayKey } from './identity.js';
import { normalizeUuid } from '../util/uuid.js';

/** Anything with an identity (a ConsoleHub). */
export interface Addressable {
  readonly identity: ConsoleIdentity;
}

export interface LookupOptions<T> {
  /** The console on a client port, when numbers may name ports; absent: numbers are names. */
  byPort?: (port: number) => T | undefined;
}

const PORT_LIKE = /^\d{1,5}$/;

/** The names a console answers to, lower case: its name, and the key of a console that is not an ESXi VM. */
function aliases(identity: ConsoleIdentity): string[] {
  const out: string[] = [];
  if (identity.name) out.push(identity.name.toLowerCase());
  if (identity.kind !== 'esxi') {
    const key = identity.key.toLowerCase();
    if (!out.includes(key)) out.push(key);
  }
  return out;
}

/** Every console of `all` that `ref` names under the rule above (several: ambiguous; none: not found). */
export function lookupConsoles<T extends Addressable>(all: readonly T[], ref: string, options: LookupOptions<T> = {}): T[] {
  if (ref.length === 0) return [];
  if (options.byPort && PORT_LIKE.test(ref)) {
    const byPort = options.byPort(Number(ref));
    if (byPort) return [byPort];
  }
  const lower = ref.toLowerCase();
  const colon = ref.indexOf(':');
  // UUIDs have no colon: `UUID` or `UUID:LABEL`.
  const uuid = normalizeUuid(colon < 0 ? ref : ref.slice(0, colon));
  const uuidLabel = colon < 0 ? null : lower.slice(colon + 1);
  return all.filter(({ identity }) => {
    const label = identity.label.toLowerCase();
    for (const alias of aliases(identity)) {
      if (lower === alias || lower === `${alias}:${label}`) return true;
    }
    return uuid !== undefined && identity.key === uuid && (uuidLabel === null || uuidLabel === label);
  });
}

export interface AddressOptions {
  /**
   * Offer a UUID spelling (an ESXi VM) or the key (a console of another kind whose key
   * is not its name) when no name spelling is unique (the broker does not: it never
   * shows UUIDs, nor keys, which may be paths).
   */
  uuids: boolean;
  /** The last resort when nothing else is unique: the client port (the broker does not: it never shows ports). */
  port?: (identity: ConsoleIdentity) => string;
  /** True when a spelling of digits would be read as a port (so it cannot be a console's address). */
  isPort?: (digits: number) => boolean;
}

/**
 * For each console of `all`, the shortest spelling that names it alone under the rule:
 * `NAME`, else `NAME:LABEL` / `NAME:`, else (with `uuids`) the UUID or the key with its
 * label, else `port`, else null. Built once for all consoles (linear in their number).
 */
export function uniqueAddresses<T extends Addressable>(all: readonly T[], options: AddressOptions): (item: T) => string | null {
  const count = new Map<string, number>();
  const bump = (k: string) => count.set(k, (count.get(k) ?? 0) + 1);
  for (const { identity } of all) {
    const label = identity.label.toLowerCase();
    const seen = new Set<string>();
    for (const a of aliases(identity)) {
      seen.add(a);
      seen.add(`${a}:${label}`);
    }
    for (const k of seen) bump(`n\0${k}`);
    if (identity.kind === 'esxi') {
      bump(`u\0${identity.key}`);
      bump(`u\0${identity.key}:${label}`);
    }
  }
  const usable = (s: string) => !(options.isPort && PORT_LIKE.test(s) && options.isPort(Number(s)));
  return ({ identity }) => {
    const { name, label, key, kind } = identity;
    const l = label.toLowerCase();
    const spellings: Array<[string, string]> = [];
    const base = name ?? (kind !== 'esxi' ? key : null);
    if (base !== null) spellings.push([`n\0${base.toLowerCase()}`, base], [`n\0${base.toLowerCase()}:${l}`, `${base}:${label}`]);
    if (options.uuids && kind === 'esxi') spellings.push([`u\0${key}`, displayKey(identity)], [`u\0${key}:${l}`, `${displayKey(identity)}:${label}`]);
    if (options.uuids && kind !== 'esxi' && base !== null && key.toLowerCase() !== base.toLowerCase()) {
      spellings.push([`n\0${key.toLowerCase()}`, key], [`n\0${key.toLowerCase()}:${l}`, `${key}:${label}`]);
    }
    for (const [k, spelling] of spellings) if (count.get(k) === 1 && usable(spelling)) return spelling;
    return options.port ? options.port(identity) : null;
  };
}
