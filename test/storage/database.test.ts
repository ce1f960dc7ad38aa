import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openDatabase, closeDatabase, SCHEMA_VERSION } from '../../src/storage/database.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { StorageError } from '../../src/errors.js';

const dir = fs.mkdtempSync(os.tmpdir() + '/vspc-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const freshPath = (): string => path.join(dir, `db-${++n}.sqlite`);

/** A plain second connection, independent of the code under test. */
function raw(file: string): Database.Database {
  return new Database(file);
}

describe('migrations', () => {
  test('versions start at 1, are consecutive, and SCHEMA_VERSION is the newest', () => {
    assert.ok(MIGRATIONS.length > 0);
    MIGRATIONS.forEach((m, i) => assert.equal(m.version, i + 1));
    assert.equal(SCHEMA_VERSION, MIGRATIONS[MIGRATIONS.length - 1].version);
  });
});

describe('openDatabase', () => {
  test('creates the file on first run, in WAL mode, at SCHEMA_VERSION, with the consoles table', () => {
    const file = freshPath();
    assert.equal(fs.existsSync(file), false);
    const db = openDatabase(file);
    try {
      assert.equal(fs.existsSync(file), true);
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
      assert.equal(db.pragma('synchronous', { simple: true }), 1); // NORMAL
      assert.equal(db.pragma('busy_timeout', { simple: true }), 5000);
      assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    } finally {
      closeDatabase(db);
    }
    const check = raw(file);
    try {
      assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      // WAL is persistent in the file, so a second connection sees it too.
      assert.equal(check.pragma('journal_mode', { simple: true }), 'wal');
      const cols = check.prepare("SELECT name FROM pragma_table_info('consoles') ORDER BY cid").pluck().all();
      assert.deepEqual(cols, ['id', 'kind', 'key', 'label', 'name', 'tcp_port', 'first_seen', 'last_seen']);
    } finally {
      check.close();
    }
  });

  test('schema enforces the constraints: unique (uuid,label), unique port, port bounds, normalised uuid, label default', () => {
    const db = openDatabase(':memory:');
    try {
      const ins = db.prepare("INSERT INTO consoles (kind, key, label, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, ?, ?, 0, 0)");
      const u = 'a'.repeat(32);
      ins.run(u, 'com1', 7000);
      assert.throws(() => ins.run(u, 'com1', 7001), /UNIQUE/);
      assert.throws(() => ins.run('b'.repeat(32), 'com1', 7000), /UNIQUE/);
      assert.throws(() => ins.run('c'.repeat(32), '', 0), /CHECK/);
      assert.throws(() => ins.run('c'.repeat(32), '', 65536), /CHECK/);
      assert.throws(() => ins.run('C'.repeat(32), '', 7002), /CHECK/);
      assert.throws(() => ins.run('c'.repeat(31), '', 7002), /CHECK/);
      db.prepare("INSERT INTO consoles (kind, key, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, 7003, 0, 0)").run('d'.repeat(32));
      const row = db.prepare('SELECT label, name FROM consoles WHERE tcp_port = 7003').get();
      assert.deepEqual(row, { label: '', name: null });
    } finally {
      closeDatabase(db);
    }
  });

  test('reopening is idempotent and keeps the data', () => {
    const file = freshPath();
    closeDatabase(openDatabase(file));
    const w = raw(file);
    w.prepare("INSERT INTO consoles (kind, key, label, name, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, ?, ?, ?, ?, ?)").run(
      'e'.repeat(32), 'com1', 'vm-e', 7100, 1, 2,
    );
    w.close();
    for (let i = 0; i < 3; i++) closeDatabase(openDatabase(file));
    const db = openDatabase(file);
    try {
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      assert.deepEqual(db.prepare('SELECT key AS uuid, label, name, tcp_port FROM consoles').all(), [
        { uuid: 'e'.repeat(32), label: 'com1', name: 'vm-e', tcp_port: 7100 },
      ]);
    } finally {
      closeDatabase(db);
    }
  });

  test('closeDatabase checkpoints the WAL and is idempotent', () => {
    const file = freshPath();
    const db = openDatabase(file);
    db.prepare("INSERT INTO consoles (kind, key, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, 7200, 0, 0)").run('f'.repeat(32));
    closeDatabase(db);
    assert.equal(db.open, false);
    closeDatabase(db); // second call is a no-op
    const wal = file + '-wal';
    assert.ok(!fs.existsSync(wal) || fs.statSync(wal).size === 0, 'WAL should be empty or gone after close');
  });

  test('a version-1 database (serial_ports) is upgraded to consoles with ids, ports and names kept', () => {
    const file = freshPath();
    const w = raw(file);
    w.exec(MIGRATIONS[0].up);
    w.pragma('user_version = 1');
    const ins = w.prepare('INSERT INTO serial_ports (id, uuid, label, name, tcp_port, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?)');
    ins.run(7, 'a'.repeat(32), '', 'web01', 10000, 1, 2);
    ins.run(9, 'a'.repeat(32), 'com2', null, 10005, 3, 4);
    w.close();
    const db = openDatabase(file);
    try {
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      assert.deepEqual(db.prepare('SELECT id, kind, key, label, name, tcp_port, first_seen, last_seen FROM consoles ORDER BY id').all(), [
        { id: 7, kind: 'esxi', key: 'a'.repeat(32), label: '', name: 'web01', tcp_port: 10000, first_seen: 1, last_seen: 2 },
        { id: 9, kind: 'esxi', key: 'a'.repeat(32), label: 'com2', name: null, tcp_port: 10005, first_seen: 3, last_seen: 4 },
      ]);
      assert.equal(db.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'serial_ports'").pluck().get(), 0);
    } finally {
      closeDatabase(db);
    }
  });

  test('consoles of other kinds take any key; ESXi keys stay normalised UUIDs; (kind, key, label) is unique', () => {
    const db = openDatabase(':memory:');
    try {
      const ins = db.prepare('INSERT INTO consoles (kind, key, label, tcp_port, first_seen, last_seen) VALUES (?, ?, ?, ?, 0, 0)');
      ins.run('proxmox', '100', 'serial0', 7000);
      ins.run('esxi', '1'.repeat(32), 'serial0', 7001);
      assert.throws(() => ins.run('proxmox', '100', 'serial0', 7002), /UNIQUE/);
      ins.run('libvirt', '100', 'serial0', 7003);
      assert.throws(() => ins.run('esxi', '100', '', 7004), /CHECK/);
      assert.throws(() => ins.run('', '100', '', 7005), /CHECK/);
      assert.throws(() => ins.run('proxmox', '', '', 7006), /CHECK/);
    } finally {
      closeDatabase(db);
    }
  });

  test(':memory: works and is migrated', () => {
    const db = openDatabase(':memory:');
    try {
      assert.equal(db.memory, true);
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      assert.equal(db.prepare('SELECT count(*) FROM consoles').pluck().get(), 0);
    } finally {
      closeDatabase(db);
    }
  });

  test('a database from a newer vspc is refused with VSPC_DB_TOO_NEW and left untouched', () => {
    const file = freshPath();
    closeDatabase(openDatabase(file));
    const w = raw(file);
    w.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    w.close();
    assert.throws(
      () => openDatabase(file),
      (err: unknown) => {
        assert.ok(err instanceof StorageError);
        assert.equal(err.code, 'VSPC_DB_TOO_NEW');
        assert.deepEqual(err.context, { path: file, found: SCHEMA_VERSION + 1, supported: SCHEMA_VERSION });
        return true;
      },
    );
    const check = raw(file);
    assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION + 1);
    check.close();
  });

  test('a file of junk bytes fails with VSPC_DB_OPEN_FAILED naming the path, with the cause attached', () => {
    const file = freshPath();
    const junk = Buffer.alloc(8192);
    for (let i = 0; i < junk.length; i++) junk[i] = (i * 131 + 7) & 0xff;
    fs.writeFileSync(file, junk);
    assert.throws(
      () => openDatabase(file),
      (err: unknown) => {
        assert.ok(err instanceof StorageError);
        assert.equal(err.code, 'VSPC_DB_OPEN_FAILED');
        assert.ok(err.message.includes(file));
        assert.deepEqual(err.context, { path: file });
        assert.ok(err.cause instanceof Error);
        return true;
      },
    );
    // The junk is not overwritten.
    assert.deepEqual(fs.readFileSync(file), junk);
  });

  test('a path in a missing directory fails with VSPC_DB_OPEN_FAILED', () => {
    const file = path.join(dir, 'no-such-dir', 'x.sqlite');
    assert.throws(() => openDatabase(file), (err: unknown) => {
      assert.ok(err instanceof StorageError);
      assert.equal(err.code, 'VSPC_DB_OPEN_FAILED');
      assert.ok(err.message.includes(file));
      return true;
    });
  });

  test('a database at version 0 with an existing table fails with VSPC_DB_MIGRATION_FAILED and is rolled back', () => {
    const file = freshPath();
    const w = raw(file);
    // A stray table by that name makes migration 1's CREATE TABLE fail.
    w.exec('CREATE TABLE serial_ports (x)');
    w.close();
    assert.throws(() => openDatabase(file), (err: unknown) => {
      assert.ok(err instanceof StorageError);
      assert.equal(err.code, 'VSPC_DB_MIGRATION_FAILED');
      assert.equal(err.context.version, 1);
      return true;
    });
    const check = raw(file);
    assert.equal(check.pragma('user_version', { simple: true }), 0);
    assert.equal(check.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'serial_ports_last_seen'").pluck().get(), 0);
    check.close();
  });
});
