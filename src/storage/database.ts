/**
 * Opening and closing the SQLite registry. `openDatabase` returns a connection that is
 * configured and migrated to `SCHEMA_VERSION`, or throws a `StorageError`; it never
 * leaves a half-opened handle behind.
 */
import Database from 'better-sqlite3';
import { StorageError } from '../errors.js';
import { MIGRATIONS } from './migrations.js';

/** The schema version this build writes and understands: the newest migration's. */
export const SCHEMA_VERSION: number = MIGRATIONS.length === 0 ? 0 : MIGRATIONS[MIGRATIONS.length - 1].version;

function isMemoryPath(path: string): boolean {
  // '' is SQLite's private temporary database; like ':memory:' it has no file to put
  // a WAL next to that anyone else could read.
  return path === ':memory:' || path === '';
}

function userVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Opens (creating on first run) the database at `path` — `:memory:` is allowed —
 * configures the connection and applies pending migrations, one transaction each.
 *
 * Throws `StorageError`:
 * - `VSPC_DB_OPEN_FAILED` ({path}, cause attached): cannot be opened, or is not a SQLite
 *   database. The parent directory is not created.
 * - `VSPC_DB_TOO_NEW` ({path, found, supported}): written by a newer vspc; we refuse
 *   rather than guess at a schema we do not know.
 * - `VSPC_DB_MIGRATION_FAILED` ({path, version}, cause attached): a migration failed and
 *   was rolled back; the database is left at the previous version.
 */
export function openDatabase(path: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(path);
  } catch (cause) {
    throw openFailed(path, cause);
  }

  let found: number;
  try {
    // busy_timeout first, so that the WAL switch and migrations wait for another
    // process (vspc-admin) holding a lock instead of failing at once with SQLITE_BUSY.
    db.pragma('busy_timeout = 5000');
    // WAL: readers (admin tools) do not block the daemon's writes and vice versa.
    // This is also the first statement that reads the file, so junk fails here.
    if (!isMemoryPath(path)) db.pragma('journal_mode = WAL');
    // NORMAL is durable across application crashes in WAL mode; only an OS crash or
    // power loss can lose the last transactions, which a re-registration repairs.
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    found = userVersion(db);
  } catch (cause) {
    safeClose(db);
    throw openFailed(path, cause);
  }

  if (found > SCHEMA_VERSION) {
    safeClose(db);
    throw new StorageError(
      'VSPC_DB_TOO_NEW',
      `database ${path} has schema version ${found}, this vspc supports up to ${SCHEMA_VERSION}; upgrade vspc or use another database file`,
      { path, found, supported: SCHEMA_VERSION },
    );
  }

  for (const m of MIGRATIONS) {
    if (m.version <= found) continue;
    try {
      // IMMEDIATE takes the write lock before re-reading the version, so two processes
      // starting on a fresh file cannot both run the same migration.
      db.transaction(() => {
        if (userVersion(db) >= m.version) return;
        db.exec(m.up);
        db.pragma(`user_version = ${m.version}`);
      }).immediate();
    } catch (cause) {
      safeClose(db);
      throw new StorageError(
        'VSPC_DB_MIGRATION_FAILED',
        `database ${path}: migration ${m.version} (${m.description}) failed: ${messageOf(cause)}`,
        { path, version: m.version },
        { cause },
      );
    }
  }
  return db;
}

/**
 * Checkpoints the WAL back into the main file (so a copied .db file is complete and the
 * -wal file does not linger) and closes. Safe to call more than once.
 */
export function closeDatabase(db: Database.Database): void {
  if (!db.open) return;
  if (db.inTransaction) {
    // A group commit (ConsoleStore `groupCommit`) still open: keep its writes.
    try {
      db.exec('COMMIT');
    } catch {
      // Closing rolls it back; nothing else to do.
    }
  }
  try {
    db.pragma('wal_checkpoint(TRUNCATE)');
  } catch {
    // Best effort: another connection may be reading; SQLite checkpoints on the next
    // open anyway. Closing matters more.
  }
  db.close();
}

function openFailed(path: string, cause: unknown): StorageError {
  return new StorageError('VSPC_DB_OPEN_FAILED', `cannot open database ${path}: ${messageOf(cause)}`, { path }, { cause });
}

function safeClose(db: Database.Database): void {
  try {
    if (db.open) db.close();
  } catch {
    // Already failing; the original error is the one to report.
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
