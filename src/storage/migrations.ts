/**
 * Schema migrations, applied in order by `openDatabase`. The database records the
 * version it has reached in `PRAGMA user_version` (a header field, so it needs no
 * table of its own and is updated atomically with the migration's transaction).
 *
 * Rules: never edit a migration that has shipped — databases in the field already
 * ran it. Append a new one with the next version instead. Versions start at 1 and
 * have no gaps; `openDatabase` relies on that ordering.
 */
export interface Migration {
  /** The `user_version` the database has after this migration ran. */
  readonly version: number;
  /** One line for logs and error messages. */
  readonly description: string;
  /** SQL run with `Database.exec` inside one transaction. */
  readonly up: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'create serial_ports (sticky VM serial port -> telnet port registry)',
    up: `
      CREATE TABLE serial_ports (
        -- A stable handle for admin commands and logs; INTEGER PRIMARY KEY is the rowid,
        -- so lookups by id cost nothing extra.
        id         INTEGER PRIMARY KEY,
        -- The VM's vCenter UUID (VM-VC-UUID), normalised to 32 lowercase hex digits before it gets here.
        -- It, not the display name, identifies a VM: names change and are not unique,
        -- the UUID survives vMotion. The CHECK keeps un-normalised spellings of one UUID
        -- (dashes, spaces, upper case) from creating a second record and a second port.
        uuid       TEXT    NOT NULL
                   CHECK (length(uuid) = 32 AND uuid NOT GLOB '*[^0-9a-f]*'),
        -- The serial port's vSPC URI label; a VM may have several serial ports, each
        -- gets its own telnet port. '' when the VM sent none, so that UNIQUE below
        -- still holds (NULLs would never compare equal and would allow duplicates).
        label      TEXT    NOT NULL DEFAULT '',
        -- The VM's display name as last reported; NULL until the VM has told us.
        -- Informational only, updated on every registration that carries it.
        name       TEXT,
        -- The telnet port operators connect to. UNIQUE because two VMs can never share
        -- a listener; the CHECK rejects values no TCP socket could bind. It is not
        -- checked against the configured range: the range may change, and a VM keeps
        -- its port regardless (stickiness wins).
        tcp_port   INTEGER NOT NULL UNIQUE CHECK (tcp_port BETWEEN 1 AND 65535),
        -- Milliseconds since the epoch. first_seen is for operators; last_seen drives
        -- expiry of VMs that have not connected for a long time.
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        -- One record per (VM, serial port): the sticky key. Its index also serves the
        -- hot lookup in register().
        UNIQUE (uuid, label)
      );
      -- expire() scans by age.
      CREATE INDEX serial_ports_last_seen ON serial_ports (last_seen);
    `,
  },
  {
    version: 2,
    description: 'serial_ports -> consoles: every console kind (kind, key, label), not only ESXi VM serial ports',
    // SQLite cannot change a CHECK constraint in place: build the new table, copy, drop.
    // Ids and ports are kept, so admin handles and sticky ports survive the upgrade.
    up: `
      CREATE TABLE consoles (
        id         INTEGER PRIMARY KEY,
        -- Where the identity comes from: 'esxi' (a VM serial port over option 232),
        -- 'proxmox', 'libvirt', 'config' (declared in the config file), ...
        kind       TEXT    NOT NULL CHECK (length(kind) BETWEEN 1 AND 32),
        -- Stable key within the kind: ESXi VC UUID (32 lowercase hex digits, checked
        -- below so that one UUID spelled twice can never make two records), Proxmox
        -- vmid, libvirt domain UUID, a declared console's name.
        key        TEXT    NOT NULL CHECK (length(key) BETWEEN 1 AND 1024),
        -- Which serial port of the machine ('' when there is only one); see migration 1.
        label      TEXT    NOT NULL DEFAULT '',
        name       TEXT,
        tcp_port   INTEGER NOT NULL UNIQUE CHECK (tcp_port BETWEEN 1 AND 65535),
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        UNIQUE (kind, key, label),
        CHECK (kind <> 'esxi' OR (length(key) = 32 AND key NOT GLOB '*[^0-9a-f]*'))
      );
      INSERT INTO consoles (id, kind, key, label, name, tcp_port, first_seen, last_seen)
        SELECT id, 'esxi', uuid, label, name, tcp_port, first_seen, last_seen FROM serial_ports;
      DROP TABLE serial_ports;
      CREATE INDEX consoles_last_seen ON consoles (last_seen);
    `,
  },
  {
    version: 3,
    description: 'access_ports: a sticky TCP port per console and access method (raw TCP, ...)',
    // One port namespace for every listener vspc opens for consoles: a port is in
    // consoles.tcp_port (the telnet port) or here, never both; the triggers keep the two
    // tables apart (a UNIQUE constraint cannot span tables).
    up: `
      CREATE TABLE access_ports (
        console_id INTEGER NOT NULL REFERENCES consoles (id) ON DELETE CASCADE,
        -- The access method: 'raw', 'rfc2217', ... ('telnet' is consoles.tcp_port).
        method     TEXT    NOT NULL CHECK (length(method) BETWEEN 1 AND 32),
        tcp_port   INTEGER NOT NULL UNIQUE CHECK (tcp_port BETWEEN 1 AND 65535),
        PRIMARY KEY (console_id, method)
      );
      CREATE TRIGGER access_ports_port_free_insert BEFORE INSERT ON access_ports
        WHEN EXISTS (SELECT 1 FROM consoles WHERE tcp_port = NEW.tcp_port)
        BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: tcp_port is a console port'); END;
      CREATE TRIGGER access_ports_port_free_update BEFORE UPDATE OF tcp_port ON access_ports
        WHEN EXISTS (SELECT 1 FROM consoles WHERE tcp_port = NEW.tcp_port)
        BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: tcp_port is a console port'); END;
      CREATE TRIGGER consoles_port_free_insert BEFORE INSERT ON consoles
        WHEN EXISTS (SELECT 1 FROM access_ports WHERE tcp_port = NEW.tcp_port)
        BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: tcp_port is an access port'); END;
      CREATE TRIGGER consoles_port_free_update BEFORE UPDATE OF tcp_port ON consoles
        WHEN EXISTS (SELECT 1 FROM access_ports WHERE tcp_port = NEW.tcp_port)
        BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: tcp_port is an access port'); END;
    `,
  },
  {
    version: 4,
    description: 'unused_consoles: consoles that never carried a byte nor had a client (their records expire sooner)',
    // A table of its own rather than a column: a console is in it from its creation
    // until first used, so records from before this migration (which may well have been
    // used) count as used and keep the long expiry. Deleting a console deletes its row.
    up: `
      CREATE TABLE unused_consoles (
        console_id INTEGER PRIMARY KEY REFERENCES consoles (id) ON DELETE CASCADE
      );
    `,
  },
];
