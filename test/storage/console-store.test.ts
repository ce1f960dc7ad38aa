import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore, type ConsoleRecord } from '../../src/storage/console-store.js';
import { StorageError } from '../../src/errors.js';

const dir = fs.mkdtempSync(os.tmpdir() + '/vspc-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => path.join(dir, `store-${++n}.sqlite`);

/** A normalised UUID (32 lowercase hex) derived from a number. */
const uuid = (i: number): string => i.toString(16).padStart(32, '0');

interface Row {
  id: number;
  kind: string;
  key: string;
  label: string;
  name: string | null;
  tcp_port: number;
  first_seen: number;
  last_seen: number;
}

/** Reads the table through a second, independent connection. */
function rowsOf(file: string): Row[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare('SELECT * FROM consoles ORDER BY tcp_port').all() as Row[];
  } finally {
    db.close();
  }
}

function withStore<T>(file: string, range: { start: number; end: number }, fn: (s: ConsoleStore) => T): T {
  const db = openDatabase(file);
  try {
    return fn(new ConsoleStore(db, range));
  } finally {
    closeDatabase(db);
  }
}

function expectCode(code: string, fn: () => unknown): StorageError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => {
    caught = err;
    return err instanceof StorageError && err.code === code;
  });
  return caught as StorageError;
}

describe('ConsoleStore construction', () => {
  test('rejects invalid ranges with VSPC_PORT_RANGE_INVALID', () => {
    const db = openDatabase(':memory:');
    try {
      for (const range of [
        { start: 0, end: 10 },
        { start: 10, end: 9 },
        { start: 1, end: 65536 },
        { start: 1.5, end: 10 },
        { start: 1, end: Number.NaN },
      ]) {
        expectCode('VSPC_PORT_RANGE_INVALID', () => new ConsoleStore(db, range));
      }
      // Boundaries are fine.
      new ConsoleStore(db, { start: 1, end: 65535 });
      new ConsoleStore(db, { start: 7000, end: 7000 });
    } finally {
      closeDatabase(db);
    }
  });
});

describe('ConsoleStore.register', () => {
  test('consoles of any kind share one port range; the same key in two kinds is two consoles', () => {
    const file = freshPath();
    const results = withStore(file, { start: 7000, end: 7010 }, (s) => [
      s.register('proxmox', '100', 'serial0', 'web01', 1000),
      s.register('libvirt', '100', 'serial0', 'web01', 1000),
      s.register('esxi', uuid(1), '', 'vm1', 1000),
      s.register('proxmox', '100', 'serial0', null, 2000),
    ]);
    assert.deepEqual(
      results.map((r) => [r.created, r.record.kind, r.record.key, r.record.tcpPort, r.record.name]),
      [
        [true, 'proxmox', '100', 7000, 'web01'],
        [true, 'libvirt', '100', 7001, 'web01'],
        [true, 'esxi', uuid(1), 7002, 'vm1'],
        [false, 'proxmox', '100', 7000, 'web01'],
      ],
    );
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      expectCode('VSPC_ARG_INVALID', () => s.register('', 'k', '', null, 1));
      expectCode('VSPC_ARG_INVALID', () => s.register('proxmox', '', '', null, 1));
      expectCode('VSPC_ARG_INVALID', () => s.register('esxi', '100', '', null, 1));
    });
  });

  test('allocates the lowest free port and writes the row', () => {
    const file = freshPath();
    const results = withStore(file, { start: 7000, end: 7010 }, (s) => [
      s.register('esxi', uuid(1), '', 'vm1', 1000),
      s.register('esxi', uuid(2), '', null, 1001),
      s.register('esxi', uuid(3), 'com2', 'vm3', 1002),
    ]);
    assert.deepEqual(
      results.map((r) => [r.created, r.record.tcpPort]),
      [
        [true, 7000],
        [true, 7001],
        [true, 7002],
      ],
    );
    assert.deepEqual(results[0].record, {
      id: results[0].record.id,
      kind: 'esxi',
      key: uuid(1),
      label: '',
      name: 'vm1',
      tcpPort: 7000,
      firstSeen: 1000,
      lastSeen: 1000,
    });
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.label, r.name, r.tcp_port, r.first_seen, r.last_seen]),
      [
        [uuid(1), '', 'vm1', 7000, 1000, 1000],
        [uuid(2), '', null, 7001, 1001, 1001],
        [uuid(3), 'com2', 'vm3', 7002, 1002, 1002],
      ],
    );
  });

  test('is idempotent: the second call returns the same record with created=false', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      const a = s.register('esxi', uuid(1), 'com1', 'vm1', 1000);
      const b = s.register('esxi', uuid(1), 'com1', 'vm1', 2000);
      assert.equal(a.created, true);
      assert.equal(b.created, false);
      assert.equal(b.record.id, a.record.id);
      assert.equal(b.record.tcpPort, a.record.tcpPort);
      assert.equal(b.record.firstSeen, 1000);
      assert.equal(b.record.lastSeen, 2000);
      assert.equal(db.prepare('SELECT count(*) FROM consoles').pluck().get(), 1);
      assert.deepEqual(s.get('esxi', uuid(1), 'com1'), b.record);
    } finally {
      closeDatabase(db);
    }
  });

  test('is sticky across close and reopen: same uuid+label gets the same port', () => {
    const file = freshPath();
    const range = { start: 7000, end: 7100 };
    const first = withStore(file, range, (s) => [uuid(5), uuid(6), uuid(7)].map((u) => s.register('esxi', u, '', null, 1).record.tcpPort));
    // Reopen and register in another order, with a newcomer first.
    const second = withStore(file, range, (s) => {
      const newcomer = s.register('esxi', uuid(99), '', null, 2);
      assert.equal(newcomer.created, true);
      assert.ok(!first.includes(newcomer.record.tcpPort), 'a newcomer never gets a held port');
      return [uuid(7), uuid(6), uuid(5)].map((u) => {
        const r = s.register('esxi', u, '', null, 3);
        assert.equal(r.created, false);
        return r.record.tcpPort;
      });
    });
    assert.deepEqual(second.reverse(), first);
    assert.equal(rowsOf(file).length, 4);
  });

  test('two labels of one UUID get two ports', () => {
    const file = freshPath();
    const [a, b] = withStore(file, { start: 7000, end: 7010 }, (s) => [
      s.register('esxi', uuid(1), 'com1', 'vm', 1).record,
      s.register('esxi', uuid(1), 'com2', 'vm', 1).record,
    ]);
    assert.notEqual(a.tcpPort, b.tcpPort);
    assert.notEqual(a.id, b.id);
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.label, r.tcp_port]),
      [
        [uuid(1), 'com1', 7000],
        [uuid(1), 'com2', 7001],
      ],
    );
  });

  test('name follows the record: updated when given, kept when null; last_seen advances', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      s.register('esxi', uuid(1), '', null, 100);
      const named = s.register('esxi', uuid(1), '', 'web-01', 200);
      assert.equal(named.record.name, 'web-01');
      const renamedByVm = s.register('esxi', uuid(1), '', 'web-01-renamed', 300);
      assert.equal(renamedByVm.record.name, 'web-01-renamed');
      const anonymous = s.register('esxi', uuid(1), '', null, 400);
      assert.equal(anonymous.record.name, 'web-01-renamed');
      assert.equal(anonymous.record.tcpPort, 7000);
    });
    assert.deepEqual(
      rowsOf(file).map((r) => [r.name, r.tcp_port, r.first_seen, r.last_seen]),
      [['web-01-renamed', 7000, 100, 400]],
    );
  });

  test('rejects un-normalised UUIDs with VSPC_ARG_INVALID and writes nothing', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      for (const bad of ['ABCDEF'.padEnd(32, '0'), '564d1234-5678-9abc-def0-123456789abc', 'abc', '']) {
        expectCode('VSPC_ARG_INVALID', () => s.register('esxi', bad, '', null, 1));
      }
      expectCode('VSPC_ARG_INVALID', () => s.register('esxi', uuid(1), '', null, 1.5));
      assert.equal(db.prepare('SELECT count(*) FROM consoles').pluck().get(), 0);
    } finally {
      closeDatabase(db);
    }
  });

  test('range exhausted: VSPC_PORT_RANGE_EXHAUSTED with context, existing records still register', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7002 });
      for (let i = 1; i <= 3; i++) s.register('esxi', uuid(i), '', null, 1);
      const err = expectCode('VSPC_PORT_RANGE_EXHAUSTED', () => s.register('esxi', uuid(4), 'com1', null, 1));
      assert.deepEqual(err.context, { range: { start: 7000, end: 7002 }, uuid: uuid(4), label: 'com1' });
      // Again (the cursor is past the end now) — still the same error, no row written.
      expectCode('VSPC_PORT_RANGE_EXHAUSTED', () => s.register('esxi', uuid(4), 'com1', null, 1));
      assert.equal(s.register('esxi', uuid(2), '', null, 2).created, false);
      assert.equal(db.prepare('SELECT count(*) FROM consoles').pluck().get(), 3);
    } finally {
      closeDatabase(db);
    }
  });
});

describe('ConsoleStore lookups and updates', () => {
  test('get, getById, getByPort, list (ordered by port), touch, rename', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      const a = s.register('esxi', uuid(1), '', 'a', 10).record;
      const b = s.register('esxi', uuid(2), '', 'b', 10).record;
      s.setPort(a.id, 7005); // so id order and port order differ
      assert.deepEqual(s.get('esxi', uuid(2), ''), b);
      assert.equal(s.get('esxi', uuid(2), 'other'), undefined);
      assert.equal(s.getById(b.id)?.key, uuid(2));
      assert.equal(s.getById(9999), undefined);
      assert.equal(s.getByPort(7005)?.id, a.id);
      assert.equal(s.getByPort(7000), undefined);
      assert.deepEqual(
        s.list().map((r) => r.tcpPort),
        [7001, 7005],
      );
      s.touch(a.id, 500);
      s.touch(9999, 500); // a forgotten record is ignored
      s.rename(b.id, 'bee');
      expectCode('VSPC_NOT_FOUND', () => s.rename(9999, 'x'));
    });
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.name, r.tcp_port, r.last_seen]),
      [
        [uuid(2), 'bee', 7001, 10],
        [uuid(1), 'a', 7005, 500],
      ],
    );
  });

  test('forget deletes the row and frees its port for the next new VM', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      const ids = [1, 2, 3].map((i) => s.register('esxi', uuid(i), '', null, 1).record.id);
      assert.equal(s.forget(ids[1]), true);
      assert.equal(s.forget(ids[1]), false);
      assert.equal(s.getByPort(7001), undefined);
      const next = s.register('esxi', uuid(4), '', null, 2);
      assert.equal(next.created, true);
      assert.equal(next.record.tcpPort, 7001);
      assert.equal(s.register('esxi', uuid(5), '', null, 2).record.tcpPort, 7003);
    });
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.tcp_port]),
      [
        [uuid(1), 7000],
        [uuid(4), 7001],
        [uuid(3), 7002],
        [uuid(5), 7003],
      ],
    );
  });

  test('a forgotten VM that comes back gets a new record on the lowest free port', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      const a = s.register('esxi', uuid(1), '', null, 1).record;
      s.register('esxi', uuid(2), '', null, 1);
      s.forget(a.id);
      s.register('esxi', uuid(3), '', null, 2); // takes 7000
      const back = s.register('esxi', uuid(1), '', null, 3);
      assert.equal(back.created, true);
      assert.equal(back.record.tcpPort, 7002);
      assert.notEqual(back.record.id, a.id);
    } finally {
      closeDatabase(db);
    }
  });

  test('setPort moves a record, also outside the range; conflicts, invalid ports and unknown ids are refused', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      const a = s.register('esxi', uuid(1), '', null, 1).record;
      const b = s.register('esxi', uuid(2), '', null, 1).record;

      const conflict = expectCode('VSPC_PORT_IN_USE', () => s.setPort(a.id, b.tcpPort));
      assert.deepEqual(conflict.context, { id: a.id, port: b.tcpPort, heldBy: b.id });
      for (const bad of [0, -1, 65536, 7000.5, Number.NaN]) expectCode('VSPC_PORT_INVALID', () => s.setPort(a.id, bad));
      expectCode('VSPC_NOT_FOUND', () => s.setPort(9999, 7009));

      assert.deepEqual(s.setPort(a.id, a.tcpPort), a); // no-op move
      const moved = s.setPort(a.id, 9000);
      assert.deepEqual(moved, { ...a, tcpPort: 9000 });
      // The old port is free again, the new one is held.
      assert.equal(s.register('esxi', uuid(3), '', null, 2).record.tcpPort, 7000);
      expectCode('VSPC_PORT_IN_USE', () => s.setPort(b.id, 9000));
    });
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.tcp_port]),
      [
        [uuid(3), 7000],
        [uuid(2), 7001],
        [uuid(1), 9000],
      ],
    );
  });

  test('a port moved into the range is not handed out again', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7003 });
      const a = s.register('esxi', uuid(1), '', null, 1).record; // 7000
      s.setPort(a.id, 7001);
      assert.equal(s.register('esxi', uuid(2), '', null, 1).record.tcpPort, 7000);
      assert.equal(s.register('esxi', uuid(3), '', null, 1).record.tcpPort, 7002);
    } finally {
      closeDatabase(db);
    }
  });

  test('expire deletes only records both old and not kept, and frees their ports', () => {
    const file = freshPath();
    const day = 86_400_000;
    const now = 100 * day;
    let deleted: ConsoleRecord[] = [];
    withStore(file, { start: 7000, end: 7010 }, (s) => {
      s.register('esxi', uuid(1), '', 'old', now - 40 * day); // 7000: old, not kept -> deleted
      s.register('esxi', uuid(2), '', 'old-kept', now - 40 * day); // 7001: old but kept
      s.register('esxi', uuid(3), '', 'recent', now - 1 * day); // 7002: recent
      s.register('esxi', uuid(4), '', 'boundary', now - 30 * day); // 7003: exactly at the cutoff: not older, kept
      s.register('esxi', uuid(5), '', 'old2', now - 31 * day); // 7004: deleted
      const asked: string[] = [];
      deleted = s.expire(30 * day, (r) => {
        asked.push(r.name ?? '');
        return r.key === uuid(2);
      }, now);
      assert.deepEqual(asked.sort(), ['old', 'old-kept', 'old2'], 'keep is only asked about old records');
      // The freed ports are reused lowest first.
      assert.equal(s.register('esxi', uuid(6), '', null, now).record.tcpPort, 7000);
      assert.equal(s.register('esxi', uuid(7), '', null, now).record.tcpPort, 7004);
      // Nothing left to expire while the kept record is still kept.
      assert.deepEqual(s.expire(30 * day, (r) => r.key === uuid(2), now), []);
    });
    assert.deepEqual(
      deleted.map((r) => [r.key, r.tcpPort, r.name]),
      [
        [uuid(1), 7000, 'old'],
        [uuid(5), 7004, 'old2'],
      ],
    );
    assert.deepEqual(
      rowsOf(file).map((r) => [r.key, r.tcp_port]),
      [
        [uuid(6), 7000],
        [uuid(2), 7001],
        [uuid(3), 7002],
        [uuid(4), 7003],
        [uuid(7), 7004],
      ],
    );
  });

  test('expire deletes nothing when keep throws', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      s.register('esxi', uuid(1), '', null, 0);
      s.register('esxi', uuid(2), '', null, 0);
      let calls = 0;
      assert.throws(
        () =>
          s.expire(10, () => {
            if (++calls === 2) throw new Error('boom');
            return false;
          }, 1000),
        /boom/,
      );
      assert.equal(db.prepare('SELECT count(*) FROM consoles').pluck().get(), 2);
      // Ports still held: a new VM gets the next one.
      assert.equal(s.register('esxi', uuid(3), '', null, 1000).record.tcpPort, 7002);
    } finally {
      closeDatabase(db);
    }
  });
});

describe('ConsoleStore range changes and scale', () => {
  test('records outside a changed range keep their ports, and new VMs never reuse them', () => {
    const file = freshPath();
    const old = withStore(file, { start: 7000, end: 7004 }, (s) =>
      [1, 2, 3].map((i) => s.register('esxi', uuid(i), '', null, 1).record.tcpPort),
    );
    assert.deepEqual(old, [7000, 7001, 7002]);
    // The operator moves the range so that it overlaps the old one only at 7002.
    withStore(file, { start: 7002, end: 7005 }, (s) => {
      assert.deepEqual(
        [1, 2, 3].map((i) => s.register('esxi', uuid(i), '', null, 2)).map((r) => [r.created, r.record.tcpPort]),
        [
          [false, 7000],
          [false, 7001],
          [false, 7002],
        ],
      );
      assert.deepEqual(
        [4, 5, 6].map((i) => s.register('esxi', uuid(i), '', null, 2).record.tcpPort),
        [7003, 7004, 7005],
      );
      expectCode('VSPC_PORT_RANGE_EXHAUSTED', () => s.register('esxi', uuid(7), '', null, 2));
      // Forgetting an out-of-range record does not make its port allocatable.
      s.forget(s.get('esxi', uuid(1), '')!.id);
      expectCode('VSPC_PORT_RANGE_EXHAUSTED', () => s.register('esxi', uuid(7), '', null, 2));
    });
    assert.deepEqual(
      rowsOf(file).map((r) => r.tcp_port),
      [7001, 7002, 7003, 7004, 7005],
    );
  });

  test('a new store sees ports written by another connection', () => {
    const file = freshPath();
    closeDatabase(openDatabase(file));
    const other = new Database(file);
    other
      .prepare("INSERT INTO consoles (kind, key, label, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, ?, ?, 0, 0)")
      .run(uuid(1), '', 7000);
    const db = openDatabase(file);
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      assert.equal(s.register('esxi', uuid(2), '', null, 1).record.tcpPort, 7001);
      // Another process takes the next port behind the store's back: the insert
      // conflicts, the store re-reads the held ports and picks the next free one.
      other
        .prepare("INSERT INTO consoles (kind, key, label, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, ?, ?, 0, 0)")
        .run(uuid(3), '', 7002);
      assert.equal(s.register('esxi', uuid(4), '', null, 1).record.tcpPort, 7003);
      // And another process registering the same key first yields created=false.
      other
        .prepare("INSERT INTO consoles (kind, key, label, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, ?, ?, 0, 0)")
        .run(uuid(5), 'com1', 7004);
      const r = s.register('esxi', uuid(5), 'com1', 'five', 9);
      assert.deepEqual([r.created, r.record.tcpPort, r.record.name, r.record.lastSeen], [false, 7004, 'five', 9]);
    } finally {
      closeDatabase(db);
      other.close();
    }
  });

  test('5,000 VMs register with 5,000 distinct in-range ports, sticky on the second pass', () => {
    const file = freshPath();
    const range = { start: 20000, end: 29999 };
    const count = 5000;
    withStore(file, range, (s) => {
      const ports = new Set<number>();
      for (let i = 0; i < count; i++) {
        const r = s.register('esxi', uuid(0x1000 + i), '', `vm-${i}`, 1);
        assert.equal(r.created, true);
        ports.add(r.record.tcpPort);
      }
      assert.equal(ports.size, count);
      for (const p of ports) assert.ok(p >= range.start && p <= range.end);
      // Lowest-free allocation on an empty range fills it from the bottom.
      assert.equal(Math.max(...ports), range.start + count - 1);
    });
    withStore(file, range, (s) => {
      for (let i = 0; i < count; i += 97) {
        const r = s.register('esxi', uuid(0x1000 + i), '', null, 2);
        assert.equal(r.created, false);
        assert.equal(r.record.tcpPort, range.start + i);
        assert.equal(r.record.name, `vm-${i}`);
      }
    });
    const rows = rowsOf(file);
    assert.equal(rows.length, count);
    assert.equal(new Set(rows.map((r) => r.tcp_port)).size, count);
  });
});

describe('ConsoleStore access ports (one port namespace with the consoles)', () => {
  test('sticky per console and method, from the same range; freed with the console', () => {
    const file = freshPath();
    const range = { start: 7000, end: 7005 };
    const first = withStore(file, range, (s) => {
      const a = s.register('esxi', uuid(1), '', 'a', 1).record;
      const b = s.register('proxmox', '100', 'serial0', 'b', 1).record;
      const raw = s.accessPort(a.id, 'raw');
      assert.equal(s.accessPort(a.id, 'raw'), raw, 'sticky');
      const rawB = s.accessPort(b.id, 'raw');
      const c = s.register('esxi', uuid(2), '', 'c', 1).record;
      assert.deepEqual([a.tcpPort, b.tcpPort, raw, rawB, c.tcpPort], [7000, 7001, 7002, 7003, 7004]);
      assert.deepEqual(s.accessPorts(a.id), { raw: 7002 });
      expectCode('VSPC_ARG_INVALID', () => s.accessPort(a.id, 'telnet'));
      expectCode('VSPC_NOT_FOUND', () => s.accessPort(9999, 'raw'));
      return { a, raw };
    });
    withStore(file, range, (s) => {
      assert.equal(s.accessPort(first.a.id, 'raw'), first.raw, 'sticky across a restart');
      // A console cannot move onto another console's access port.
      const conflict = expectCode('VSPC_PORT_IN_USE', () => s.setPort(s.get('esxi', uuid(2), '')!.id, first.raw));
      assert.equal(conflict.context.heldBy, first.a.id);
      assert.equal(s.forget(first.a.id), true);
      // Both of its ports are free again: the lowest go to the newcomers.
      assert.equal(s.register('esxi', uuid(3), '', 'd', 2).record.tcpPort, 7000);
      assert.equal(s.register('esxi', uuid(4), '', 'e', 2).record.tcpPort, 7002);
    });
  });

  test('the database refuses a port in both tables (another process cannot break the namespace)', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7005 }, (s) => {
      const a = s.register('esxi', uuid(1), '', 'a', 1).record;
      const db = new Database(file);
      try {
        assert.throws(() => db.prepare("INSERT INTO access_ports (console_id, method, tcp_port) VALUES (?, 'raw', ?)").run(a.id, a.tcpPort), /tcp_port is a console port/);
        db.prepare("INSERT INTO access_ports (console_id, method, tcp_port) VALUES (?, 'raw', 7003)").run(a.id);
        assert.throws(() => db.prepare("INSERT INTO consoles (kind, key, tcp_port, first_seen, last_seen) VALUES ('x', 'y', 7003, 0, 0)").run(), /tcp_port is an access port/);
      } finally {
        db.close();
      }
    });
  });

  test('expiry frees the access ports of the expired consoles', () => {
    const file = freshPath();
    withStore(file, { start: 7000, end: 7003 }, (s) => {
      const old = s.register('esxi', uuid(1), '', 'old', 1).record;
      s.accessPort(old.id, 'raw');
      assert.equal(s.expire(10, () => false, 100).length, 1);
      assert.equal(s.register('esxi', uuid(2), '', 'n1', 200).record.tcpPort, 7000);
      assert.equal(s.register('esxi', uuid(3), '', 'n2', 200).record.tcpPort, 7001);
    });
  });
});
