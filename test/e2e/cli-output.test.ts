/**
 * vspc-admin's output through a pipe (issue 12 item 13): a piped stdout is
 * asynchronous, and an exit right after a large write cut it at the pipe's buffer
 * size (64 KiB). Thousands of consoles, registered straight into a registry behind a
 * real admin API (no client listeners: fast), then the real CLI into a pipe.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { AdminServer } from '../../src/admin/admin-server.js';
import { adminRoutes } from '../../src/admin/routes.js';
import type { PortView } from '../../src/admin/views.js';
import { VERSION } from '../../src/version.js';
import { LogCapture } from '../support/log-capture.js';
import { runNode, VSPC_ADMIN_JS } from '../support/cli.js';

const CONSOLES = 3000;

/** Runs `sh -c` with the CLI in a pipeline; resolves with its stdout. */
function shell(script: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('vspc-admin output through a pipe is complete', { timeout: 120_000 }, () => {
  const db = openDatabase(':memory:');
  const registry = new Registry(new ConsoleStore(db, { start: 40000, end: 49999 }));
  const logs = new LogCapture({ level: 'warn' });
  const api = new AdminServer(
    adminRoutes({
      registry,
      vmotion: new VmotionCoordinator({ timeoutMs: 60_000 }, logs.logger),
      logger: logs.logger,
      tlsPortOf: () => null,
      status: () => ({ version: VERSION, uptimeSeconds: 0, vmPorts: registry.size, vmPortsConnected: 0, clients: 0, vmConnections: 0, vmConnectionsRefused: 0, vmotions: {} }),
    }),
    logs.logger,
  );
  let admin = '';

  before(async () => {
    for (let i = 0; i < CONSOLES; i++) {
      registry.register('esxi', i.toString(16).padStart(32, '0'), i % 3 === 0 ? 'com2' : '', `pipe-vm-${String(i).padStart(5, '0')}`);
    }
    const addr = await api.listen({ host: '127.0.0.1', port: 0 });
    admin = `127.0.0.1:${addr.port}`;
  });
  after(async () => {
    await api.close();
    closeDatabase(db);
  });

  test(`list --json with ${CONSOLES} consoles: the whole array reaches the reader of a pipe`, async () => {
    // runNode's child writes to a pipe (the test process reads it).
    const r = await runNode(VSPC_ADMIN_JS, ['--admin', admin, 'list', '--json'], 60_000);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.length > 1024 * 1024, `more than a pipe buffer: ${r.stdout.length} bytes`);
    const rows = JSON.parse(r.stdout) as PortView[];
    assert.equal(rows.length, CONSOLES);
  });

  test('| wc -c counts every byte that a file gets, for list --json and the list table', async () => {
    for (const args of ['list --json', 'list']) {
      const cli = `"${process.execPath}" "${VSPC_ADMIN_JS}" --admin ${admin} ${args}`;
      const piped = await shell(`${cli} | wc -c`);
      assert.equal(piped.code, 0, piped.stderr);
      const whole = await runNode(VSPC_ADMIN_JS, ['--admin', admin, ...args.split(' ')], 60_000);
      assert.equal(Number(piped.stdout.trim()), Buffer.byteLength(whole.stdout), args);
      assert.ok(Buffer.byteLength(whole.stdout) > 200_000, `${args}: large output`);
    }
  });

  test('a reader that leaves early (| head -1) ends the CLI quietly, without an EPIPE trace', async () => {
    const r = await shell(`"${process.execPath}" "${VSPC_ADMIN_JS}" --admin ${admin} list --json | head -1`);
    assert.equal(r.stdout.split('\n')[0], '[');
    assert.doesNotMatch(r.stderr, /EPIPE|Error/);
  });
});
