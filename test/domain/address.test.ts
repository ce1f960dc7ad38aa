/**
 * The one addressing rule (src/domain/address.ts): names in any case, NAME:LABEL,
 * NAME: for the unlabelled port, UUIDs in any form, keys of other kinds, ports only
 * when asked; the shortest unique spelling of each console, without UUIDs or ports for
 * the broker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { lookupConsoles, mayBeNamed, NameIndex, nameRanks, uniqueAddresses, type Addressable } from '../../src/domain/address.js';
import type { ConsoleIdentity } from '../../src/domain/identity.js';

let nextId = 1;
function c(kind: string, key: string, label: string, name: string | null, tcpPort = 10000 + nextId): Addressable & { tag: string } {
  const identity: ConsoleIdentity = { id: nextId++, kind, key, label, name, tcpPort };
  return { identity, tag: `${name ?? key}:${label}` };
}

const U1 = '421a5b7709c38e219f00aa105c2e7d01';
const U2 = 'f'.repeat(32);
const U3 = 'e'.repeat(32);
const web = c('esxi', U1, '', 'web01', 10001);
const webCom2 = c('esxi', U1, 'com2', 'web01', 10002);
const db = c('esxi', U2, '', 'DB01', 10003);
const twinA = c('esxi', U3, '', 'twin', 10004);
const twinB = c('esxi', 'd'.repeat(32), '', 'TWIN', 10005);
const router = c('config', 'router', '', 'router', 10006);
const digits = c('esxi', 'c'.repeat(32), '', '10001', 10007);
const unnamed = c('esxi', 'b'.repeat(32), '', null, 10008);
const all = [web, webCom2, db, twinA, twinB, router, digits, unnamed];
const names = (xs: Array<{ tag: string }>) => xs.map((x) => x.tag);

test('lookup: names in any case, NAME:LABEL, NAME:, UUIDs with and without labels, keys of other kinds', () => {
  assert.deepEqual(names(lookupConsoles(all, 'db01')), ['DB01:']);
  assert.deepEqual(names(lookupConsoles(all, 'WEB01')), ['web01:', 'web01:com2'], 'a name with several ports is ambiguous');
  assert.deepEqual(names(lookupConsoles(all, 'web01:COM2')), ['web01:com2']);
  assert.deepEqual(names(lookupConsoles(all, 'web01:')), ['web01:'], 'NAME: is the port without a label');
  assert.deepEqual(names(lookupConsoles(all, '421A5B77-09C3-8E21-9F00-AA105C2E7D01:com2')), ['web01:com2']);
  assert.deepEqual(names(lookupConsoles(all, '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01')), ['web01:', 'web01:com2']);
  assert.deepEqual(names(lookupConsoles(all, 'router')), ['router:']);
  assert.deepEqual(names(lookupConsoles(all, 'twin')), ['twin:', 'TWIN:'], 'names differing in case only are the same name');
  assert.deepEqual(lookupConsoles(all, 'nope'), []);
  assert.deepEqual(lookupConsoles(all, 'web01:com3'), []);
  assert.deepEqual(lookupConsoles(all, ''), []);
});

test('ports: a number names the console on that port only with byPort; otherwise it is a name', () => {
  const byPort = (p: number) => all.find((x) => x.identity.tcpPort === p);
  assert.deepEqual(names(lookupConsoles(all, '10001', { byPort })), ['web01:']);
  assert.deepEqual(names(lookupConsoles(all, '10001')), ['10001:'], 'without byPort the VM named 10001');
  assert.deepEqual(names(lookupConsoles(all, '10003')), [], 'a port number finds nothing through the broker');
});

test('unique addresses: the shortest spelling that names a console alone; the broker never gets a UUID or a port', () => {
  const broker = uniqueAddresses(all, { uuids: false });
  assert.equal(broker(db), 'DB01');
  assert.equal(broker(web), 'web01:');
  assert.equal(broker(webCom2), 'web01:com2');
  assert.equal(broker(router), 'router');
  assert.equal(broker(twinA), null, 'twin and TWIN: only a UUID or a port tells them apart');
  assert.equal(broker(unnamed), null);
  assert.equal(broker(digits), '10001');
  for (const x of all) {
    const a = broker(x);
    if (a !== null) assert.deepEqual(lookupConsoles(all, a), [x], `${a} names ${x.tag} alone`);
  }
  const admin = uniqueAddresses(all, { uuids: true, port: (id) => String(id.tcpPort), isPort: (n) => all.some((x) => x.identity.tcpPort === n) });
  assert.equal(admin(twinA), `${'e'.repeat(8)}-eeee-eeee-eeee-${'e'.repeat(12)}`);
  assert.equal(admin(digits), '10001:', 'digits that are a port cannot be a name spelling; with the colon they are not a port');
  assert.equal(admin(unnamed), 'bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb');
});

test('shared names: ranked by how long each machine has had the name; NAME~N names the N-th, for every front door', () => {
  // The real web01 (two ports), then two newcomers calling themselves web01 (one in capitals), then a literal "web01~2".
  const realA = c('esxi', '1'.repeat(32), '', 'web01');
  const realB = c('esxi', '1'.repeat(32), 'com2', 'web01');
  const second = c('esxi', '2'.repeat(32), '', 'WEB01');
  const third = c('proxmox', 'proxmox:7:serial0', '', 'web01');
  const literal = c('esxi', '3'.repeat(32), '', 'web01~2');
  const xs = [third, literal, second, realB, realA]; // any order
  const rank = nameRanks(xs);
  assert.deepEqual([realA, realB, second, third].map((x) => rank.of('web01', x)), [1, 1, 2, 3]);
  assert.equal(rank.of('web01~2', literal), 1);
  assert.equal(rank.machines('WEB01'), 3);
  // nameOrder (a name given while running) beats the record id.
  const renamed = { ...c('esxi', '4'.repeat(32), '', 'web01'), nameOrder: 2 ** 40 + 1 };
  const older = { ...c('esxi', '5'.repeat(32), '', 'web01'), nameOrder: 2 ** 40 + 2 };
  assert.deepEqual([renamed, older].map((x) => nameRanks([older, renamed, ...xs]).of('web01', x)), [4, 5]);

  // Without `ranked` (the admin API), a plain name is ambiguous as before; NAME~N is one spelling more.
  assert.equal(lookupConsoles(xs, 'web01').length, 4);
  assert.deepEqual(lookupConsoles(xs, 'web01~3'), [third]);
  assert.deepEqual(lookupConsoles(xs, 'WEB01~1:com2'), [realB]);
  assert.deepEqual(lookupConsoles(xs, 'web01~1:'), [realA]);
  assert.deepEqual(lookupConsoles(xs, 'web01~9'), []);
  assert.deepEqual(lookupConsoles(xs, 'web01~2'), [second], 'the second web01, not the VM literally named so: a name cannot shadow a rank');
  assert.deepEqual(lookupConsoles(xs, 'web01~2~1'), [literal]);
  assert.deepEqual(lookupConsoles([literal, realA], 'web01~2'), [literal], 'with no second web01, the literal name');
  // Ranked (the broker): the plain name is the first machine's only.
  assert.deepEqual(new Set(lookupConsoles(xs, 'web01', { ranked: true })), new Set([realA, realB]));
  assert.deepEqual(lookupConsoles(xs, 'web01:', { ranked: true }), [realA]);
  assert.deepEqual(lookupConsoles(xs, 'web01:com2', { ranked: true }), [realB]);

  // The broker's spellings: none is a UUID or a port, each names its console alone.
  const broker = uniqueAddresses(xs, { uuids: false, ranked: true });
  assert.deepEqual([realA, realB, second, third, literal].map(broker), ['web01:', 'web01:com2', 'WEB01~2', 'web01~3', 'web01~2~1']);
  for (const x of xs) assert.deepEqual(lookupConsoles(xs, broker(x)!, { ranked: true }), [x], `${broker(x)} names ${x.tag} alone`);
  // The admin API's: UUIDs first, as before.
  const admin = uniqueAddresses(xs, { uuids: true });
  assert.equal(admin(second), '22222222-2222-2222-2222-222222222222');
});

test('property: every spelling uniqueAddresses gives names its console alone, ranked or not', () => {
  const consoleArb = fc.record({
    kind: fc.constantFrom('esxi', 'esxi', 'config'),
    machine: fc.integer({ min: 0, max: 4 }),
    label: fc.constantFrom('', 'com2'),
    name: fc.constantFrom('web01', 'WEB01', 'web01~2', 'web01~1', 'db', null, 'a:b', 'web01~2~1'),
    order: fc.integer({ min: 1, max: 5 }),
  });
  fc.assert(
    fc.property(fc.array(consoleArb, { maxLength: 10 }), (specs) => {
      const seen = new Set<string>();
      const xs = specs.flatMap((sp, i) => {
        const key = sp.kind === 'esxi' ? String(sp.machine).repeat(32) : `key${sp.machine}`;
        const id = `${sp.kind}/${key}/${sp.label}`;
        if (seen.has(id)) return [];
        seen.add(id);
        const item = c(sp.kind, key, sp.label, sp.kind === 'esxi' ? sp.name : (sp.name ?? key));
        return [{ ...item, nameOrder: sp.order * 100 + i }];
      });
      for (const ranked of [true, false]) {
        const spell = uniqueAddresses(xs, { uuids: !ranked, ranked });
        for (const x of xs) {
          const a = spell(x);
          if (a !== null) assert.deepEqual(lookupConsoles(xs, a, { ranked }), [x], `${ranked ? 'ranked' : 'plain'}: ${a} names ${x.tag} alone`);
        }
      }
    }),
    { numRuns: 3000, seed: 8 },
  );
});

test('unique addresses: two consoles of one name without a label; the admin side offers a key that is not the name, the broker does not', () => {
  const declared = c('config', 'web01', '', 'web01', 10101);
  const tunnel = c('tunnel', 'WEB01', '', 'WEB01', 10102);
  const pve = c('proxmox', 'pve1/101', '', 'web01', 10103);
  const set = [declared, tunnel, pve];
  const admin = uniqueAddresses(set, { uuids: true, port: (id) => String(id.tcpPort) });
  assert.equal(admin(declared), '10101', 'its key is its name: only the port is left');
  assert.equal(admin(tunnel), '10102');
  assert.equal(admin(pve), 'pve1/101');
  assert.deepEqual(lookupConsoles(set, 'pve1/101'), [pve]);
  const broker = uniqueAddresses(set, { uuids: false });
  assert.deepEqual(set.map(broker), [null, null, null], 'no keys through the broker');
});

/** The ranking as first written (every console ranked at once), to check the incremental index against. */
function referenceRanks(items: readonly Addressable[]): { of(alias: string, item: Addressable): number; machines(alias: string): number } {
  const machineOf = (i: ConsoleIdentity) => `${i.kind}\0${i.key}`;
  const aliasesOf = (i: ConsoleIdentity) => [...new Set([...(i.name ? [i.name.toLowerCase()] : []), ...(i.kind !== 'esxi' ? [i.key.toLowerCase()] : [])])];
  const orders = new Map<string, Map<string, number>>();
  for (const item of items) {
    const order = item.nameOrder ?? item.identity.id;
    for (const alias of aliasesOf(item.identity)) {
      const machines = orders.get(alias) ?? new Map<string, number>();
      orders.set(alias, machines);
      const before = machines.get(machineOf(item.identity));
      if (before === undefined || order < before) machines.set(machineOf(item.identity), order);
    }
  }
  const ranks = new Map<string, Map<string, number>>();
  for (const [alias, machines] of orders) {
    const sorted = [...machines].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    ranks.set(alias, new Map(sorted.map(([m], i) => [m, i + 1])));
  }
  return {
    of: (alias, item) => ranks.get(alias.toLowerCase())?.get(machineOf(item.identity)) ?? 1,
    machines: (alias) => orders.get(alias.toLowerCase())?.size ?? 0,
  };
}

test('property: the name index kept through adds, renames and removes ranks as ranking every console afresh does', () => {
  const op = fc.record({
    what: fc.constantFrom('add', 'add', 'rename', 'remove'),
    slot: fc.nat(11),
    machine: fc.nat(4),
    kind: fc.constantFrom('esxi', 'config'),
    label: fc.constantFrom('', 'com2'),
    name: fc.constantFrom(null, 'web', 'WEB', 'db', 'm1'),
  });
  fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const index = new NameIndex<Addressable & { nameOrder: number }>();
      const live = new Map<number, Addressable & { nameOrder: number }>();
      let clock = 0;
      for (const o of ops) {
        const cur = live.get(o.slot);
        if (o.what === 'add' && !cur) {
          const identity: ConsoleIdentity = { id: 1000 + o.slot, kind: o.kind, key: `m${o.machine}`, label: o.label, name: o.name, tcpPort: 20000 + o.slot };
          const item = { identity, nameOrder: ++clock };
          live.set(o.slot, item);
          index.add(item);
        } else if (o.what === 'rename' && cur) {
          cur.identity.name = o.name;
          cur.nameOrder = ++clock;
          index.add(cur);
        } else if (o.what === 'remove' && cur) {
          live.delete(o.slot);
          index.remove(cur);
        }
        const ref = referenceRanks([...live.values()]);
        for (const alias of ['web', 'Web', 'db', 'm1', 'm0', 'm2', 'nobody']) {
          assert.equal(index.machines(alias), ref.machines(alias), `machines(${alias})`);
          for (const item of live.values()) assert.equal(index.of(alias, item), ref.of(alias, item), `of(${alias}, ${item.identity.key})`);
          const first = index.holders(alias);
          if (ref.machines(alias) === 0) assert.deepEqual(first, []);
          else for (const h of first) assert.equal(ref.of(alias, h), 1, `holders(${alias}) are the first machine's`);
        }
      }
    }),
    { numRuns: 300 },
  );
});

test('the name index: registering consoles with names of their own sorts nothing; a shared name is sorted once per change, when read', () => {
  const index = new NameIndex<Addressable>();
  const items: Addressable[] = [];
  for (let i = 0; i < 1000; i++) {
    const item = c('esxi', i.toString(16).padStart(32, '0'), '', `vm-${i}`);
    items.push(item);
    index.add(item);
    assert.equal(index.of(`vm-${i}`, item), 1);
  }
  assert.equal(index.sorts, 0);
  const twin = c('esxi', 'a'.repeat(32), '', 'vm-7');
  index.add(twin);
  assert.equal(index.of('vm-7', twin), 2);
  assert.equal(index.of('vm-7', items[7]), 1);
  assert.deepEqual(index.holders('VM-7'), [items[7]]);
  assert.equal(index.sorts, 1, 'read three times, sorted once');
  index.remove(items[7]);
  assert.equal(index.of('vm-7', twin), 1);
  assert.equal(index.sorts, 1, 'a name held by one machine needs no sort');
});

test('property: a console that mayBeNamed says a reference does not concern changes nothing that reference names', () => {
  const names = ['web', 'WEB', 'db', 'web~2', 'm1', '10001', null];
  const consoleArb = fc.record({
    machine: fc.nat(4),
    kind: fc.constantFrom('esxi', 'config'),
    label: fc.constantFrom('', 'com2'),
    name: fc.constantFrom(...names),
    port: fc.integer({ min: 10000, max: 10003 }),
  });
  const refArb = fc.constantFrom('web', 'Web', 'web~1', 'web~2', 'web~2~1', 'web:com2', 'web~2:', 'db', 'm1', 'm2', '10001', '10002', 'f'.repeat(32), `${'f'.repeat(32)}:com2`, 'nobody');
  fc.assert(
    fc.property(fc.array(consoleArb, { maxLength: 8 }), consoleArb, refArb, (others, newcomer, ref) => {
      let id = 1;
      const make = (x: typeof newcomer): Addressable => {
        const key = x.kind === 'esxi' ? x.machine.toString(16).repeat(32).slice(0, 32).replace(/^0+$/, 'f'.repeat(32)) : `m${x.machine}`;
        return { identity: { id: id++, kind: x.kind, key, label: x.label, name: x.name, tcpPort: x.port } };
      };
      const before = others.map(make);
      const x = make(newcomer);
      if (mayBeNamed(ref, x.identity)) return;
      const after = [...before, x];
      for (const ranked of [false, true]) {
        const byPort = (list: Addressable[]) => (p: number) => list.find((c) => c.identity.tcpPort === p);
        assert.deepEqual(lookupConsoles(after, ref, { ranked, byPort: byPort(after) }), lookupConsoles(before, ref, { ranked, byPort: byPort(before) }), `${ref} ranked=${ranked}`);
      }
    }),
    { numRuns: 2000 },
  );
});
