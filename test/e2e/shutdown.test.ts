/**
 * Running as a service: SIGTERM / SIGINT with VMs and clients attached shut vspc down
 * cleanly — clients told, VM connections closed (ESXi reconnects), logs complete and
 * error-free, console logs flushed, the database checkpointed and intact (a restart
 * gives every VM its port back) — with exit code 0 in bounded time, also when a peer
 * lingers; a second signal aborts at once.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { PortView } from '../../src/admin/views.js';
import { SimulatedVm, TelnetUser } from '../support/sim/index.js';
import { Child, vspcAdmin, VSPC_JS } from '../support/cli.js';
import { canBind, reservePortRange } from '../support/ports.js';
import { Cleanup, esxiUuid, tempDir, waitUntil } from '../support/server.js';

type Line = Record<string, unknown> & { level: string; message: string };

function logLines(stderr: string): Line[] {
  return stderr
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      try {
        return JSON.parse(l) as Line;
      } catch {
        assert.fail(`a log line that is not JSON: ${JSON.stringify(l)}`);
      }
    });
}

interface Running {
  child: Child;
  admin: string;
  proxyPort: number;
  dbPath: string;
  logDir: string;
}

async function startVspc(c: Cleanup, reuse?: { dir: string; ports: { start: number; end: number } }): Promise<Running & { dir: string; ports: { start: number; end: number } }> {
  let dir = reuse?.dir;
  if (!dir) {
    const t = tempDir();
    c.add(t.remove);
    dir = t.dir;
  }
  const ports = reuse?.ports ?? (await reservePortRange(8));
  const dbPath = join(dir, 'vspc.db');
  const logDir = join(dir, 'consoles');
  const admin = `127.0.0.1:${ports.start + 1}`;
  const child = new Child(VSPC_JS, [
    '--proxy-listen', `127.0.0.1:${ports.start}`,
    '--admin-listen', admin,
    '--db', dbPath,
    '--port-range', `${ports.start + 2}-${ports.end}`,
    '--log-dir', logDir,
  ]);
  c.add(() => child.kill());
  await child.waitForStderr(/"message":"vspc started"/);
  return { child, admin, proxyPort: ports.start, dbPath, logDir, dir, ports };
}

async function listed(admin: string, n: number): Promise<PortView[]> {
  let rows: PortView[] = [];
  await waitUntil(async () => {
    rows = JSON.parse((await vspcAdmin(admin, ['list', '--json'])).stdout) as PortView[];
    return rows.filter((r) => r.connected).length === n;
  }, 10_000, `${n} VMs connected`);
  return rows;
}

describe('graceful shutdown of a real vspc process', () => {
  const c = new Cleanup();
  after(() => c.run());

  test('SIGTERM with VMs and clients attached: told, closed, logged, checkpointed, exit 0; a restart gives the ports back', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const run = await startVspc(tc);
    const ids = [esxiUuid(), esxiUuid()];
    const vms: SimulatedVm[] = [];
    for (const [i, u] of ids.entries()) {
      const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: run.proxyPort, uuid: u.text, name: `stop-${i}` });
      tc.add(() => vm.destroy());
      await vm.whenProxied();
      vms.push(vm);
    }
    const rows = await listed(run.admin, 2);
    const users: TelnetUser[] = [];
    for (const port of [rows[0].port, rows[0].port, rows[1].port]) {
      const user = await TelnetUser.connect({ host: '127.0.0.1', port });
      tc.add(() => user.destroy());
      await user.waitFor('[vspc: ', 3000);
      users.push(user);
    }
    await waitUntil(async () => (JSON.parse((await vspcAdmin(run.admin, ['status', '--json'])).stdout) as { clients: number }).clients === 3, 5000, 'clients attached');
    vms[0].send('last words before the shutdown\r\n');
    await users[0].waitFor('last words', 3000);

    const t0 = Date.now();
    run.child.proc.kill('SIGTERM');
    const exit = await run.child.waitExit(15_000);
    const elapsed = Date.now() - t0;
    assert.deepEqual(exit, { code: 0, signal: null }, run.child.stderr);
    assert.ok(elapsed < 5000, `well-behaved peers: shutdown took ${elapsed} ms`);

    // Clients were told; VM connections were closed (ESXi reconnects when vspc is back).
    for (const user of users) {
      await user.whenClosed(3000);
      assert.match(user.text, /\[vspc: vspc is shutting down\]/);
    }
    for (const vm of vms) await vm.whenClosed(3000);

    // Logs: JSON lines, no errors, every VM connection closed for the shutdown, stopped last.
    const lines = logLines(run.child.stderr);
    assert.deepEqual(lines.filter((l) => l.level === 'error'), []);
    const closing = lines.filter((l) => l.message === 'closing VM connection');
    assert.equal(closing.length, 2);
    assert.ok(closing.every((l) => l.reason === 'vspc is shutting down'));
    const order = ['signal received; shutting down', 'vspc shutting down', 'vspc stopped'].map((m) => lines.findIndex((l) => l.message === m));
    assert.ok(order.every((i) => i >= 0) && order[0] < order[1] && order[1] < order[2], `shutdown lines in order: ${order.join(',')}`);
    assert.equal(lines.at(-1)!.message, 'vspc stopped');
    assert.equal(lines.find((l) => l.message === 'signal received; shutting down')!.signal, 'SIGTERM');

    // Console logs flushed: the last output is in the file.
    const consoleFiles = readdirSync(run.logDir).filter((f) => f.endsWith('.log'));
    assert.ok(consoleFiles.some((f) => readFileSync(join(run.logDir, f), 'latin1').includes('last words before the shutdown')), 'console log flushed');

    // The database: checkpointed (no WAL left over) and intact.
    const wal = `${run.dbPath}-wal`;
    assert.ok(!existsSync(wal) || statSync(wal).size === 0, 'WAL checkpointed');
    const db = new Database(run.dbPath, { readonly: true });
    try {
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      const ports = (db.prepare('SELECT tcp_port AS port FROM consoles ORDER BY tcp_port').all() as Array<{ port: number }>).map((r) => r.port);
      assert.deepEqual(ports, rows.map((r) => r.port).sort((a, b) => a - b));
    } finally {
      db.close();
    }
    for (const p of [run.proxyPort, ...rows.map((r) => r.port)]) assert.equal(await canBind(p), true, `port ${p} released`);

    // Restart on the same database: the VMs come back to their ports.
    const again = await startVspc(tc, { dir: run.dir, ports: run.ports });
    for (const [i, u] of ids.entries()) {
      const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: again.proxyPort, uuid: u.text, name: `stop-${i}` });
      tc.add(() => vm.destroy());
      await vm.whenProxied();
    }
    const back = await listed(again.admin, 2);
    assert.deepEqual(back.map((r) => [r.name, r.port]), rows.map((r) => [r.name, r.port]));
    again.child.proc.kill('SIGINT');
    assert.deepEqual(await again.child.waitExit(10_000), { code: 0, signal: null });
    assert.equal(logLines(again.child.stderr).find((l) => l.message === 'signal received; shutting down')?.signal, 'SIGINT');
  });

  test('a peer that never closes its side: shutdown still ends, within the grace period, with exit 0', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const run = await startVspc(tc);
    const lingering = net.connect({ host: '127.0.0.1', port: run.proxyPort, allowHalfOpen: true });
    tc.add(() => lingering.destroy());
    lingering.pause(); // never reads, so never sees the FIN, never ends its side
    await new Promise((r) => lingering.once('connect', r));
    await waitUntil(async () => (JSON.parse((await vspcAdmin(run.admin, ['status', '--json'])).stdout) as { vmConnections: number }).vmConnections === 1, 5000, 'connection counted');
    const t0 = Date.now();
    run.child.proc.kill('SIGTERM');
    const exit = await run.child.waitExit(20_000);
    const elapsed = Date.now() - t0;
    assert.deepEqual(exit, { code: 0, signal: null }, run.child.stderr);
    assert.ok(elapsed < 9000, `bounded: ${elapsed} ms`);
    const lines = logLines(run.child.stderr);
    assert.deepEqual(lines.filter((l) => l.level === 'error'), []);
    assert.equal(lines.at(-1)!.message, 'vspc stopped');
  });

  test('a second signal aborts at once with exit code 1', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const run = await startVspc(tc);
    const lingering = net.connect({ host: '127.0.0.1', port: run.proxyPort, allowHalfOpen: true });
    tc.add(() => lingering.destroy());
    lingering.pause();
    await new Promise((r) => lingering.once('connect', r));
    await waitUntil(async () => (JSON.parse((await vspcAdmin(run.admin, ['status', '--json'])).stdout) as { vmConnections: number }).vmConnections === 1, 5000, 'connection counted');
    run.child.proc.kill('SIGTERM');
    await run.child.waitForStderr(/"message":"vspc shutting down"/);
    const t0 = Date.now();
    run.child.proc.kill('SIGTERM');
    assert.deepEqual(await run.child.waitExit(5000), { code: 1, signal: null });
    assert.ok(Date.now() - t0 < 2000);
    assert.match(run.child.stderr, /"message":"second signal: aborting"/);
  });
});
