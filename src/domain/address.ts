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
 *   a number is then just a name;
 * - `NAME~N` (and `NAME~N:LABEL`, `NAME~N:`) names the N-th machine that answers to
 *   NAME, counted from the one that has had the name longest (`nameRanks`): `web01~2`
 *   is the second VM calling itself web01. Only when there is no N-th machine named
 *   NAME does it name a console literally called `NAME~N` (so a name cannot shadow a
 *   rank spelling; that console is `NAME~N~1`);
 * - with `ranked` (the broker, which shows no UUIDs), a plain `NAME` names the first of
 *   those machines only, so that a newcomer taking a name cannot take the place of the
 *   console people reach by it; without it (the admin API) `NAME` names them all and
 *   is ambiguous, the error listing each.
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

/**
 * Anything with an identity (a ConsoleHub). `nameOrder` says how long the console has
 * had its name (lower: longer); without it, the record id (older records are lower).
 */
export interface Addressable {
  readonly identity: ConsoleIdentity;
  readonly nameOrder?: number;
}

export interface LookupOptions<T> {
  /** The console on a client port, when numbers may name ports; absent: numbers are names. */
  byPort?: (port: number) => T | undefined;
  /**
   * A plain `NAME` (and `NAME:LABEL`) names only the machine that has had the name
   * longest, when machines share it (the broker: it shows no UUIDs, so the newer ones
   * are `NAME~2`, … — see `nameRanks`). Without it, `NAME` names them all (ambiguous).
   */
  ranked?: boolean;
}

const PORT_LIKE = /^\d{1,5}$/;
/** `BASE~N`: the N-th machine with the name BASE (N from 1, no leading zero). */
const RANKED = /^(.*)~([1-9]\d{0,5})$/s;

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

/** One machine: the consoles of one (kind, key) — the serial ports of one VM. */
function machineOf(identity: ConsoleIdentity): string {
  return `${identity.kind}\0${identity.key}`;
}

/** Where machines stand among those sharing a name: see `nameRanks`. */
export interface NameRanks<T> {
  /** The rank of `item`'s machine among the machines answering to `alias` (1 when it is alone, or not among them). */
  of(alias: string, item: T): number;
  /** How many machines answer to `alias`. */
  machines(alias: string): number;
}

/**
 * Where each machine stands among the machines that answer to one name (any case):
 * 1 for the one that has had it longest (lowest `nameOrder`, else record id), 2 for
 * the next, … A name held by one machine only is rank 1. Built once for all consoles
 * (linear, plus a sort of each shared name's few machines); a caller that keeps ranks
 * while consoles come and go (the registry) keeps a `NameIndex` instead.
 *
 * Why age decides: a name is a claim anyone on the VM port can make (docs/security.md).
 * A console that takes a name another console already has must not take its place —
 * not its by-name log link, not its broker spelling — so the console people have been
 * reaching by that name keeps it, and the newcomer is `NAME~2`.
 */
export function nameRanks<T extends Addressable>(all: readonly T[]): NameRanks<T> {
  const index = new NameIndex<T>();
  for (const item of all) index.add(item);
  return index;
}

/**
 * `nameRanks` kept up to date as consoles come, go and change names: `add` (also after
 * a rename: the identity and `nameOrder` are read again), `remove`. Each is O(number of
 * the console's aliases); reading a rank sorts that one name's machines, once per
 * change of that name (a name held by one machine needs no sort). So registering a
 * console never looks at the others — it once re-ranked every console's name, which
 * made registering N consoles quadratic (docs/performance.md, "registration").
 */
export class NameIndex<T extends Addressable> implements NameRanks<T> {
  /** alias → machine → each of the machine's consoles answering to the alias, with its order. */
  private readonly byAlias = new Map<string, Map<string, Map<T, number>>>();
  /** What each console is indexed under (its identity and nameOrder change in place). */
  private readonly entries = new Map<T, { machine: string; aliases: string[] }>();
  /** alias → machine → rank, for names shared by several machines: built when read, dropped when the name's holders change. */
  private readonly ranked = new Map<string, Map<string, number>>();
  /** Sorts of a shared name's machines so far (for tests: a registration must not re-rank every name). */
  sorts = 0;

  /** Indexes `item` as its identity and `nameOrder` are now (again, after a rename). */
  add(item: T): void {
    if (this.entries.has(item)) this.remove(item);
    const order = item.nameOrder ?? item.identity.id;
    const machine = machineOf(item.identity);
    const names = aliases(item.identity);
    this.entries.set(item, { machine, aliases: names });
    for (const alias of names) {
      let machines = this.byAlias.get(alias);
      if (!machines) this.byAlias.set(alias, (machines = new Map()));
      let consoles = machines.get(machine);
      if (!consoles) machines.set(machine, (consoles = new Map()));
      consoles.set(item, order);
      this.ranked.delete(alias);
    }
  }

  remove(item: T): void {
    const entry = this.entries.get(item);
    if (!entry) return;
    this.entries.delete(item);
    for (const alias of entry.aliases) {
      const machines = this.byAlias.get(alias);
      const consoles = machines?.get(entry.machine);
      if (!machines || !consoles) continue;
      consoles.delete(item);
      if (consoles.size === 0) machines.delete(entry.machine);
      if (machines.size === 0) this.byAlias.delete(alias);
      this.ranked.delete(alias);
    }
  }

  of(alias: string, item: T): number {
    const a = alias.toLowerCase();
    const machines = this.byAlias.get(a);
    if (!machines || machines.size < 2) return 1;
    return this.ranksOf(a, machines).get(machineOf(item.identity)) ?? 1;
  }

  machines(alias: string): number {
    return this.byAlias.get(alias.toLowerCase())?.size ?? 0;
  }

  /** The consoles of the machine that has had `alias` (any case) longest; none when no machine answers to it. */
  holders(alias: string): T[] {
    const a = alias.toLowerCase();
    const machines = this.byAlias.get(a);
    if (!machines) return [];
    if (machines.size === 1) return [...machines.values().next().value!.keys()];
    for (const [machine, rank] of this.ranksOf(a, machines)) if (rank === 1) return [...machines.get(machine)!.keys()];
    return [];
  }

  private ranksOf(alias: string, machines: Map<string, Map<T, number>>): Map<string, number> {
    let ranks = this.ranked.get(alias);
    if (ranks) return ranks;
    this.sorts++;
    // A machine's order is its oldest console's (the serial ports of one VM may differ).
    const orders = [...machines].map(([machine, consoles]) => {
      let min = Infinity;
      for (const o of consoles.values()) if (o < min) min = o;
      return [machine, min] as const;
    });
    orders.sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    ranks = new Map(orders.map(([m], i) => [m, i + 1]));
    this.ranked.set(alias, ranks);
    return ranks;
  }
}

/**
 * `NAME~N` read as a rank: the name and N, when N machines at least answer to NAME
 * (then a console literally named `NAME~N` is not what it means); else null. NAME has
 * no ':' (what follows the first ':' is a label).
 */
function rankReading<T>(base: string, ranks: NameRanks<T>): { alias: string; rank: number } | null {
  const m = RANKED.exec(base);
  if (!m || m[1].includes(':')) return null;
  const rank = Number(m[2]);
  return ranks.machines(m[1]) >= rank ? { alias: m[1], rank } : null;
}

/**
 * False when `ref` certainly names neither this console nor, by sharing a name or a
 * rank with it, changes what `ref` names among the others (whatever they are): its
 * names (now and `formerName`), its key and its port are all unlike `ref`'s. True is
 * "maybe". Lets a holder of references (the tunnels) look again only at those a
 * console added, renamed or removed can affect, rather than all of them each time.
 */
export function mayBeNamed(ref: string, identity: ConsoleIdentity, formerName: string | null = null): boolean {
  const lower = ref.toLowerCase();
  if (PORT_LIKE.test(ref) && Number(ref) === identity.tcpPort) return true;
  const colon = lower.indexOf(':');
  const base = colon < 0 ? lower : lower.slice(0, colon);
  if (normalizeUuid(base) === identity.key) return true;
  // `NAME~N` is also about NAME; a literal name may hold a `~` too.
  const ranked = RANKED.exec(base);
  const names = aliases(identity);
  if (formerName) names.push(formerName.toLowerCase());
  return names.some((a) => a === base || (ranked !== null && a === ranked[1]));
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
  const refLabel = colon < 0 ? null : lower.slice(colon + 1);
  const base = colon < 0 ? lower : lower.slice(0, colon);
  const ranks = options.ranked || RANKED.test(base) ? nameRanks(all) : null;
  // `NAME~N[:LABEL]`, when there is an N-th machine named NAME: that machine's consoles only.
  const reading = ranks ? rankReading(base, ranks) : null;
  if (reading) {
    return all.filter((item) => {
      const label = item.identity.label.toLowerCase();
      return aliases(item.identity).includes(reading.alias) && ranks!.of(reading.alias, item) === reading.rank && (refLabel === null || refLabel === label);
    });
  }
  return all.filter((item) => {
    const { identity } = item;
    const label = identity.label.toLowerCase();
    for (const alias of aliases(identity)) {
      if ((lower === alias || lower === `${alias}:${label}`) && (!options.ranked || ranks!.of(alias, item) === 1)) return true;
    }
    return uuid !== undefined && identity.key === uuid && (refLabel === null || refLabel === label);
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
  /**
   * Spell as `lookupConsoles` with `ranked` reads: a plain NAME for the machine that has
   * had the name longest, `NAME~N` (with `:LABEL` where needed) for the others.
   */
  ranked?: boolean;
}

/**
 * For each console of `all`, the shortest spelling that names it alone under the rule:
 * `NAME`, else `NAME:LABEL` / `NAME:`, else (with `uuids`) the UUID or the key with its
 * label, else (with `ranked`) `NAME~N` / `NAME~N:LABEL`, else `port`, else null. Built
 * once for all consoles (linear in their number).
 */
export function uniqueAddresses<T extends Addressable>(all: readonly T[], options: AddressOptions): (item: T) => string | null {
  const ranks = nameRanks(all);
  const count = new Map<string, number>();
  const bump = (k: string) => count.set(k, (count.get(k) ?? 0) + 1);
  // What lookupConsoles matches, as keys: the plain name and NAME:LABEL (ranked: the
  // first machine's only; never a literal `NAME~N` that reads as a rank), NAME~N.
  for (const item of all) {
    const { identity } = item;
    const label = identity.label.toLowerCase();
    const seen = new Set<string>();
    for (const a of aliases(identity)) {
      const r = ranks.of(a, item);
      if ((!options.ranked || r === 1) && rankReading(a, ranks) === null) {
        seen.add(a);
        seen.add(`${a}:${label}`);
      }
      if (!a.includes(':')) {
        seen.add(`${a}~${r}`);
        seen.add(`${a}~${r}:${label}`);
      }
    }
    for (const k of seen) bump(`n\0${k}`);
    if (identity.kind === 'esxi') {
      bump(`u\0${identity.key}`);
      bump(`u\0${identity.key}:${label}`);
    }
  }
  const usable = (s: string) => !(options.isPort && PORT_LIKE.test(s) && options.isPort(Number(s)));
  return (item) => {
    const { name, label, key, kind } = item.identity;
    const l = label.toLowerCase();
    const spellings: Array<[string, string]> = [];
    const base = name ?? (kind !== 'esxi' ? key : null);
    const lb = base === null ? null : base.toLowerCase();
    const r = lb === null ? 1 : ranks.of(lb, item);
    // Ranked, the plain name belongs to the first machine only; a literal NAME~N that reads as a rank is not this console's.
    if (base !== null && lb !== null && (!options.ranked || r === 1) && rankReading(lb, ranks) === null) spellings.push([`n\0${lb}`, base], [`n\0${lb}:${l}`, `${base}:${label}`]);
    if (options.uuids && kind === 'esxi') spellings.push([`u\0${key}`, displayKey(item.identity)], [`u\0${key}:${l}`, `${displayKey(item.identity)}:${label}`]);
    const kl = key.toLowerCase();
    // A key that is not the name (a Proxmox VMID, a discovered socket), under the same rule as a name.
    if (options.uuids && kind !== 'esxi' && lb !== null && kl !== lb && (!options.ranked || ranks.of(kl, item) === 1) && rankReading(kl, ranks) === null) {
      spellings.push([`n\0${kl}`, key], [`n\0${kl}:${l}`, `${key}:${label}`]);
    }
    if (options.ranked && base !== null && lb !== null && !lb.includes(':')) {
      spellings.push([`n\0${lb}~${r}`, `${base}~${r}`], [`n\0${lb}~${r}:${l}`, `${base}~${r}:${label}`]);
    }
    for (const [k, spelling] of spellings) if (count.get(k) === 1 && usable(spelling)) return spelling;
    return options.port ? options.port(item.identity) : null;
  };
}
