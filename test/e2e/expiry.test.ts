/**
 * Expiry is never silent: every VM serial port forgotten for not being seen is logged
 * with its name, UUID, label and port — at start-up (where expiry runs before the
 * records are loaded, so no hub exists yet) as much as on the periodic check.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { formatUuid } from '../../src/util/uuid.js';
import { esxiUuid, startServer, tempDir, waitUntil } from '../support/server.js';
import { reservePortRange } from '../support/ports.js';

const EXPIRED = 'VM serial port expired (not seen for too long)';
const DAY = 86_400_000;

describe('expiry is logged', () => {
  test('at start-up: one line per expired record, with name, UUID, label and port; kept records are not', async (t) => {
    const dir = tempDir('vspc-expiry-');
    t.after(() => dir.remove());
    const dbPath = join(dir.dir, 'vspc.db');
    const range = await reservePortRange(8);
    const old = Date.now() - 100 * DAY;
    const a = esxiUuid();
    const b = esxiUuid();
    const c = esxiUuid();
    const d = esxiUuid();
    // Records as an earlier run left them: three not seen for 100 days, one seen today.
    const db = openDatabase(dbPath);
    const store = new ConsoleStore(db, range);
    const ra = store.register('esxi', a.hex, '', 'old-web', old).record;
    const rb = store.register('esxi', b.hex, 'com2', 'old-db', old).record;
    const rc = store.register('esxi', c.hex, '', null, old).record;
    store.register('esxi', d.hex, '', 'recent', Date.now());
    // Seen 2 hours ago and never used (no byte, no client): the quick expiry's.
    const e = esxiUuid();
    const re = store.register('esxi', e.hex, '', 'never-used', Date.now() - 2 * 3_600_000).record;
    for (const r of [ra, rb, rc]) store.markUsed(r.id);
    store.flush();
    closeDatabase(db);

    const { ts } = await startServer(t, { dbPath, portRange: range, config: { expireAfterMs: 90 * DAY, expireUnusedAfterMs: 3_600_000 } });
    const started = await ts.logs.waitFor((l) => l.message === 'vspc started', 5000);
    const lines = ts.logs.filter((l) => l.message === EXPIRED);
    // Logged before vspc says it started, one line each, in port order.
    assert.ok(lines.every((l) => ts.logs.lines.indexOf(l) < ts.logs.lines.indexOf(started)), 'expiry at start is logged at start');
    assert.deepEqual(
      lines.map((l) => ({ vm: l.vm, uuid: l.uuid, label: l.label, port: l.port, level: l.level })),
      [
        { vm: 'old-web', uuid: formatUuid(a.hex), label: '', port: ra.tcpPort, level: 'info' },
        { vm: 'old-db:com2', uuid: formatUuid(b.hex), label: 'com2', port: rb.tcpPort, level: 'info' },
        { vm: c.hex, uuid: formatUuid(c.hex), label: '', port: rc.tcpPort, level: 'info' },
      ],
    );
    for (const l of lines) assert.equal(l.lastSeen, new Date(old).toISOString());
    const unused = ts.logs.filter((l) => l.message === 'VM serial port expired (never used: no client ever attached)');
    assert.deepEqual(
      unused.map((l) => ({ vm: l.vm, uuid: l.uuid, port: l.port })),
      [{ vm: 'never-used', uuid: formatUuid(e.hex), port: re.tcpPort }],
    );
    assert.ok(ts.logs.lines.indexOf(unused[0]) < ts.logs.lines.indexOf(started));
    assert.equal(started.vmPorts, 1, 'the recent record is kept');
    assert.deepEqual(
      (await ts.ports()).map((p) => p.name),
      ['recent'],
    );
  });

  test('on the periodic check: the same fields for a loaded VM serial port', async (t) => {
    // (It prints a byte below: a used console, expired for not being seen.)
    const { ts, cleanup } = await startServer(t, { config: { expireAfterMs: 100 } });
    const u = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: u.text, name: 'gone-soon', serviceUri: 'vSPC.py?port=com1' }, cleanup);
    const port = hub.identity.tcpPort;
    vm.send('x');
    await waitUntil(() => hub.bytesFromVm > 0, 3000, 'a byte from the VM');
    vm.destroy();
    await waitUntil(() => hub.source === null, 3000, 'VM disconnected');
    const line = await ts.logs.waitFor((l) => l.message === EXPIRED, 5000);
    assert.equal(line.vm, 'gone-soon:com1');
    assert.equal(line.uuid, formatUuid(u.hex));
    assert.equal(line.label, 'com1');
    assert.equal(line.port, port);
    assert.equal(ts.logs.filter((l) => l.message === EXPIRED).length, 1, 'logged once');
  });
});
