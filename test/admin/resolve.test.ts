import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { resolveVm } from '../../src/admin/resolve.js';
import { AdminApiError } from '../../src/admin/admin-server.js';

test('resolveVm: by port, UUID in any form, name, NAME:LABEL; ambiguity and absence are errors', (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const reg = new Registry(new ConsoleStore(db, { start: 30000, end: 30010 }));
  const uuid = '421a5b7709c38e219f00aa105c2e7d01';
  const com1 = reg.register('esxi', uuid, 'com1', 'web01').hub;
  const com2 = reg.register('esxi', uuid, 'com2', 'web01').hub;
  const db01 = reg.register('esxi', 'f'.repeat(32), '', 'db01').hub;

  assert.equal(resolveVm(reg, '30002'), db01);
  assert.equal(resolveVm(reg, 'db01'), db01);
  assert.equal(resolveVm(reg, 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'), db01);
  assert.equal(resolveVm(reg, 'web01:com2'), com2);
  assert.equal(resolveVm(reg, '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01:com1'), com1);

  const code = (ref: string | null) => {
    try {
      resolveVm(reg, ref);
      return 'resolved';
    } catch (err) {
      assert.ok(err instanceof AdminApiError);
      return `${err.status} ${err.code}`;
    }
  };
  assert.equal(code('web01'), '409 VSPC_VM_AMBIGUOUS');
  assert.equal(code(uuid), '409 VSPC_VM_AMBIGUOUS');
  assert.equal(code('nope'), '404 VSPC_VM_NOT_FOUND');
  assert.equal(code('web01:com3'), '404 VSPC_VM_NOT_FOUND');
  assert.equal(code(null), '400 VSPC_VM_REQUIRED');
});
