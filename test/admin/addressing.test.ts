/**
 * The one addressing rule (issue 12 item 4, src/admin/resolve.ts): NAME in any case,
 * `NAME:` for the unlabelled serial port, `NAME:LABEL`, UUID (any form), port; an
 * ambiguous reference lists each console with a spelling that names it alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { consoleAddresses, lookupConsoles, resolveVm } from '../../src/admin/resolve.js';
import { AdminApiError } from '../../src/admin/admin-server.js';

function registry(t: { after(fn: () => void): void }): Registry {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  return new Registry(new ConsoleStore(db, { start: 30000, end: 30020 }));
}

function error(reg: Registry, ref: string): { status: number; code: string; message: string } {
  try {
    resolveVm(reg, ref);
  } catch (err) {
    assert.ok(err instanceof AdminApiError);
    return { status: err.status, code: err.code, message: err.message };
  }
  assert.fail(`"${ref}" resolved`);
}

const UUID = '421a5b7709c38e219f00aa105c2e7d01';

test('a VM with an unlabelled and a labelled serial port: NAME is ambiguous, NAME: and NAME:LABEL are not', (t) => {
  const reg = registry(t);
  const plain = reg.register('esxi', UUID, '', 'web01').hub;
  const com2 = reg.register('esxi', UUID, 'com2', 'web01').hub;
  assert.equal(resolveVm(reg, 'web01:'), plain);
  assert.equal(resolveVm(reg, 'web01:com2'), com2);
  assert.equal(resolveVm(reg, 'WEB01:COM2'), com2, 'name and label in any case');
  assert.equal(resolveVm(reg, 'Web01:'), plain);
  assert.equal(resolveVm(reg, `${UUID.toUpperCase()}:`), plain, 'UUID: too');
  assert.equal(resolveVm(reg, '421A5B77-09C3-8E21-9F00-AA105C2E7D01:Com2'), com2);
  assert.equal(resolveVm(reg, String(plain.identity.tcpPort)), plain);

  const e = error(reg, 'web01');
  assert.equal(e.status, 409);
  assert.equal(e.code, 'VSPC_VM_AMBIGUOUS');
  assert.equal(
    e.message,
    `"web01" matches 2 serial ports: web01: (port ${plain.identity.tcpPort}), web01:com2 (port ${com2.identity.tcpPort}); ` +
      'use the port or NAME:LABEL, and NAME: (with the colon) for the one without a label',
  );
  // Each spelling the error offers names exactly its console.
  for (const [spelling, hub] of [['web01:', plain], ['web01:com2', com2]] as const) assert.deepEqual(lookupConsoles(reg, spelling), [hub]);
});

test('names are matched in any case: two names that differ only in case are ambiguous, and the error says how to pick one', (t) => {
  const reg = registry(t);
  const upper = reg.register('esxi', UUID, '', 'WEB01').hub;
  const lower = reg.register('esxi', 'f'.repeat(32), '', 'web01').hub;
  assert.equal(resolveVm(reg, 'ffffffffffffffffffffffffffffffff'), lower);
  const e = error(reg, 'Web01');
  assert.equal(e.code, 'VSPC_VM_AMBIGUOUS');
  assert.match(e.message, /^"Web01" matches 2 serial ports: /);
  assert.ok(e.message.includes(`421a5b77-09c3-8e21-9f00-aa105c2e7d01 (WEB01, port ${upper.identity.tcpPort})`), e.message);
  assert.ok(e.message.includes(`ffffffff-ffff-ffff-ffff-ffffffffffff (web01, port ${lower.identity.tcpPort})`), e.message);
  assert.match(e.message, /names that differ only in case need the UUID or the port$/);
});

test('consoles that share a name and have no label: the error offers the port (or the key), never NAME:LABEL', (t) => {
  const reg = registry(t);
  const declared = reg.register('config', 'web01', '', 'web01').hub;
  const tunnel = reg.register('tunnel', 'WEB01', '', 'WEB01').hub;
  const e = error(reg, 'web01');
  assert.equal(e.code, 'VSPC_VM_AMBIGUOUS');
  assert.equal(
    e.message,
    `"web01" matches 2 serial ports: port ${declared.identity.tcpPort} (web01), port ${tunnel.identity.tcpPort} (WEB01); ` +
      'none has a label to tell it apart, so use the port as listed; names are matched in any case, so names that differ only in case need the port',
  );
  assert.doesNotMatch(e.message, /NAME:LABEL|NAME:/);
  for (const h of [declared, tunnel]) assert.deepEqual(lookupConsoles(reg, String(h.identity.tcpPort)), [h]);

  // A console of another kind whose key is not its name: the key names it alone.
  const pve = reg.register('proxmox', 'pve1/101', '', 'web01').hub;
  const e2 = error(reg, 'web01');
  assert.ok(e2.message.includes(`pve1/101 (web01, port ${pve.identity.tcpPort})`), e2.message);
  assert.match(e2.message, /so use the key or the port as listed/);
  assert.deepEqual(lookupConsoles(reg, 'pve1/101'), [pve]);
});

test('a unique name in any case; not found explains the rule; a port wins over a name of digits', (t) => {
  const reg = registry(t);
  const db = reg.register('esxi', UUID, '', 'db01').hub;
  const digits = reg.register('esxi', 'e'.repeat(32), '', String(db.identity.tcpPort)).hub;
  assert.equal(resolveVm(reg, 'DB01'), db);
  assert.equal(resolveVm(reg, 'db01:'), db);
  assert.equal(resolveVm(reg, String(db.identity.tcpPort)), db, 'the port, not the VM named like it');
  assert.equal(consoleAddresses(reg)(digits), `${db.identity.tcpPort}:`, 'its name alone is taken by a port: NAME: names it');
  assert.equal(resolveVm(reg, `${db.identity.tcpPort}:`), digits);
  const e = error(reg, 'db01:com9');
  assert.equal(e.status, 404);
  assert.equal(e.code, 'VSPC_VM_NOT_FOUND');
  assert.match(e.message, /NAME:LABEL, NAME: for the one without a label, a UUID, or a port/);
});

test('addresses: the shortest spelling that names each console alone', (t) => {
  const reg = registry(t);
  const solo = reg.register('esxi', '1'.repeat(32), 'com1', 'solo').hub;
  const plain = reg.register('esxi', UUID, '', 'web01').hub;
  const com2 = reg.register('esxi', UUID, 'com2', 'web01').hub;
  const nameless = reg.register('esxi', '2'.repeat(32), '', null).hub;
  const declared = reg.register('config', 'router-1', '', 'router-1').hub;
  const address = consoleAddresses(reg);
  assert.equal(address(solo), 'solo');
  assert.equal(address(plain), 'web01:');
  assert.equal(address(com2), 'web01:com2');
  assert.equal(address(nameless), '22222222-2222-2222-2222-222222222222');
  assert.equal(address(declared), 'router-1');
  for (const h of [solo, plain, com2, nameless, declared]) assert.deepEqual(lookupConsoles(reg, address(h)), [h], address(h));
});
