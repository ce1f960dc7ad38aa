/**
 * The quick expiry of records nobody used (issue 11 item 5): a new record is unused
 * until its console carries a byte or gets a client; unused records expire after the
 * short age, used ones after the long one; the mark survives restarts, records from
 * before migration 3 count as used, and forgetting a record forgets its mark.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { Registry } from '../../src/domain/registry.js';
import { FakeClient, FakeSource } from '../domain/fakes.js';
import { tempDir } from '../support/server.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const uuid = (n: number) => n.toString(16).padStart(32, '0');
const keep = () => false;

describe('unused records expire sooner', () => {
  test('store: unused records go after the short age (reason unused), used ones after the long one (reason unseen)', () => {
    const db = openDatabase(':memory:');
    try {
      const s = new ConsoleStore(db, { start: 7000, end: 7010 });
      const t0 = 10 * DAY;
      const unused = s.register('esxi', uuid(1), '', 'unused', t0).record;
      const used = s.register('esxi', uuid(2), '', 'used', t0).record;
      s.markUsed(used.id);
      s.markUsed(used.id); // idempotent
      assert.deepEqual(s.expire(90 * DAY, keep, t0 + HOUR, HOUR), [], 'exactly at the age: not older');
      const gone = s.expire(90 * DAY, keep, t0 + HOUR + 1, HOUR);
      assert.deepEqual(gone.map((r) => [r.name, r.reason]), [['unused', 'unused']]);
      assert.equal(s.getById(unused.id), undefined);
      assert.ok(s.getById(used.id));
      // Past the long age a used record goes too; so would an unused one (reason unseen, the stronger rule).
      const late = s.register('esxi', uuid(3), '', 'late-unused', t0).record;
      const both = s.expire(30 * DAY, keep, t0 + 31 * DAY, HOUR);
      assert.deepEqual(both.map((r) => [r.name, r.reason]).sort(), [['late-unused', 'unseen'], ['used', 'unseen']]);
      assert.equal(s.getById(late.id), undefined);
      // Without the short age (Infinity), unused records live as long as the others.
      s.register('esxi', uuid(4), '', 'no-quick', t0);
      assert.deepEqual(s.expire(90 * DAY, keep, t0 + 2 * DAY), []);
      // Forgetting a record forgets its mark (no orphan rows).
      const f = s.register('esxi', uuid(5), '', 'forgotten', t0).record;
      s.forget(f.id);
      assert.equal(db.prepare('SELECT count(*) FROM unused_consoles WHERE console_id = ?').pluck().get(f.id), 0);
      assert.throws(() => s.expire(1, keep, t0, -1), /unusedMaxAgeMs must be a non-negative number/);
    } finally {
      closeDatabase(db);
    }
  });

  test('the mark survives a restart; records from a version-2 database count as used', () => {
    const dir = tempDir();
    try {
      const file = join(dir.dir, 'vspc.db');
      const w = new Database(file);
      w.exec(MIGRATIONS[0].up);
      w.exec(MIGRATIONS[1].up);
      w.pragma('user_version = 2');
      w.prepare("INSERT INTO consoles (kind, key, label, name, tcp_port, first_seen, last_seen) VALUES ('esxi', ?, '', 'from-v2', 7000, 0, 0)").run(uuid(1));
      w.close();
      let db = openDatabase(file);
      let s = new ConsoleStore(db, { start: 7000, end: 7010 });
      const fresh = s.register('esxi', uuid(2), '', 'fresh', 0).record;
      const marked = s.register('esxi', uuid(3), '', 'marked', 0).record;
      s.markUsed(marked.id);
      closeDatabase(db);
      db = openDatabase(file);
      s = new ConsoleStore(db, { start: 7000, end: 7010 });
      const gone = s.expire(90 * DAY, keep, 2 * HOUR, HOUR);
      assert.deepEqual(gone.map((r) => r.id), [fresh.id]);
      closeDatabase(db);
    } finally {
      dir.remove();
    }
  });

  test('registry: the first client marks a console used (output alone does not); expiry says which rule applied', () => {
    const db = openDatabase(':memory:');
    try {
      const reg = new Registry(new ConsoleStore(db, { start: 7000, end: 7010 }));
      const t0 = 1_000_000;
      const silent = reg.register('esxi', uuid(1), '', 'silent', t0).hub;
      const talker = reg.register('esxi', uuid(2), '', 'talker', t0).hub;
      const watched = reg.register('esxi', uuid(3), '', 'watched', t0).hub;
      const src = new FakeSource();
      talker.attachSource(src);
      talker.fromVm(Buffer.from('x'));
      talker.detachSource(src);
      const client = new FakeClient();
      watched.addClient(client);
      watched.removeClient(client);
      const gone = reg.expireRecords({ unseenMs: 90 * DAY, unusedMs: HOUR }, t0 + 2 * HOUR);
      assert.deepEqual(gone.map((g) => [g.hub.identity.name, g.reason]), [['silent', 'unused'], ['talker', 'unused']]);
      assert.equal(reg.get('esxi', uuid(1), ''), undefined);
      assert.equal(reg.size, 1);
      void silent;
    } finally {
      closeDatabase(db);
    }
  });
});
