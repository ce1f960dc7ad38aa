/** The test suites' port reservations: exclusive between processes, bindable, stale claims taken over. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { canBind, reservePort, reservePortRange } from '../support/ports.js';

const LOCK_DIR = join(tmpdir(), 'vspc-test-ports');

test('a reserved range is bindable, claimed by this process, and never handed out twice', async () => {
  const a = await reservePortRange(8);
  assert.equal(a.end - a.start + 1, 8);
  assert.ok(a.start >= 20000 && a.end <= 30000);
  for (let p = a.start; p <= a.end; p++) {
    assert.equal(readFileSync(join(LOCK_DIR, String(p)), 'utf8'), String(process.pid));
    assert.equal(await canBind(p), true);
  }
  const others = await Promise.all(Array.from({ length: 6 }, () => reservePortRange(4, { from: a.start - 10, to: a.end + 10, attempts: 100 }).catch(() => null)));
  for (const o of others) {
    if (!o) continue;
    assert.ok(o.end < a.start || o.start > a.end, `${o.start}-${o.end} overlaps ${a.start}-${a.end}`);
  }
  const p = await reservePort();
  assert.ok(p < a.start || p > a.end);
});

test('a port held by a listener, or claimed by a live process, is skipped; a dead claimant is taken over', async () => {
  // A listener on the only candidate port.
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const bound = (busy.address() as net.AddressInfo).port;
  try {
    await assert.rejects(reservePortRange(1, { from: bound, to: bound, attempts: 3 }), /no 1 consecutive free ports/);
  } finally {
    await new Promise<void>((r) => busy.close(() => r()));
  }

  // A claim by a live process (our parent) is respected; one by a process that is gone is not.
  const free = await reservePort(); // a port nobody else claims; hand its claim to others below
  const lock = join(LOCK_DIR, String(free));
  writeFileSync(lock, String(process.ppid));
  await assert.rejects(reservePortRange(1, { from: free, to: free, attempts: 3 }), /no 1 consecutive free ports/);
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  writeFileSync(lock, dead);
  assert.deepEqual(await reservePortRange(1, { from: free, to: free, attempts: 3 }), { start: free, end: free });
  assert.equal(readFileSync(lock, 'utf8'), String(process.pid));
});

test('claims are released when the process exits', () => {
  const script = `import('${new URL('../support/ports.js', import.meta.url).href}').then(async (m) => { const r = await m.reservePortRange(3); process.stdout.write(JSON.stringify(r)); })`;
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(out.status, 0, out.stderr);
  const r = JSON.parse(out.stdout) as { start: number; end: number };
  for (let p = r.start; p <= r.end; p++) assert.equal(existsSync(join(LOCK_DIR, String(p))), false, `lock of ${p} removed`);
});
