/**
 * The one addressing rule (src/domain/address.ts): names in any case, NAME:LABEL,
 * NAME: for the unlabelled port, UUIDs in any form, keys of other kinds, ports only
 * when asked; the shortest unique spelling of each console, without UUIDs or ports for
 * the broker.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lookupConsoles, uniqueAddresses, type Addressable } from '../../src/domain/address.js';
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
