/**
 * Reading console logs with `vspc-admin log`, end to end (real CLI processes against a
 * running vspc): `--follow` streams what is logged until the VM serial port is forgotten
 * or vspc stops (each said on the last line, exit 0) or the reader leaves; `--file N`
 * and `--all` read rotated files; and after a restart the scrollback a client gets
 * comes from the console log, without vspc's own lines.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Child, vspcAdmin, VSPC_ADMIN_JS } from '../support/cli.js';
import { Cleanup, esxiUuid, startServer, tempDir, waitUntil } from '../support/server.js';
import { reservePortRange } from '../support/ports.js';

async function withLogs(t: { after(fn: () => unknown): void }, extra: { dbPath?: string; portRange?: { start: number; end: number }; dir?: string } = {}) {
  const dir = extra.dir ?? tempDir('vspc-e2e-follow-').dir;
  return startServer(t, { dbPath: extra.dbPath, portRange: extra.portRange, config: { logDir: dir, logMarkIntervalMs: 0 } });
}

describe('vspc-admin log: --follow, rotated files, scrollback after a restart', () => {
  test('--follow: the last lines, then new output as it comes; ends (exit 0) with a line when the VM serial port is forgotten', async (t) => {
    const { ts, cleanup } = await withLogs(t);
    const u = esxiUuid();
    const { vm } = await ts.connectVm({ uuid: u.text, name: 'follow-me' }, cleanup);
    vm.send('old line 1\r\nold line 2\r\n');
    await waitUntil(async () => (await vspcAdmin(ts.adminAddress, ['log', 'follow-me', '--tail', '1'])).stdout.includes('old line 2'), 5000, 'logged');

    const f = new Child(VSPC_ADMIN_JS, ['--admin', ts.adminAddress, 'log', 'follow-me', '--follow', '--tail', '1']);
    cleanup.add(() => f.kill());
    await f.waitForStdout(/old line 2\r\n/);
    assert.ok(!f.stdout.includes('old line 1'), '--tail 1: only the last line');
    vm.send('live output\r\n');
    await f.waitForStdout(/live output\r\n/);
    assert.equal(ts.server.consoleLogs?.activeFollowers, 1);

    const forgot = await vspcAdmin(ts.adminAddress, ['forget', 'follow-me']);
    assert.equal(forgot.code, 0, forgot.stderr);
    const exit = await f.waitExit(10_000);
    assert.equal(exit.code, 0, f.stderr);
    assert.match(f.stdout, /\[vspc \S+ log follow ended: the VM serial port was forgotten\]\r\n$/);
    assert.equal(ts.server.consoleLogs?.activeFollowers, 0);
  });

  test('--follow ends cleanly when vspc stops; a reader that leaves (Ctrl-C) is let go', async (t) => {
    const { ts, cleanup } = await withLogs(t);
    const u = esxiUuid();
    const { vm } = await ts.connectVm({ uuid: u.text, name: 'stopping' }, cleanup);
    vm.send('before the stop\r\n');

    const leaver = new Child(VSPC_ADMIN_JS, ['--admin', ts.adminAddress, 'log', 'stopping', '-f']);
    cleanup.add(() => leaver.kill());
    await leaver.waitForStdout(/before the stop/);
    leaver.proc.kill('SIGINT');
    await leaver.waitExit(10_000);
    await waitUntil(() => ts.server.consoleLogs?.activeFollowers === 0, 5000, 'the follower let go');

    const f = new Child(VSPC_ADMIN_JS, ['--admin', ts.adminAddress, 'log', 'stopping', '--follow', '--tail', '0']);
    cleanup.add(() => f.kill());
    await waitUntil(() => ts.server.consoleLogs?.activeFollowers === 1, 5000, 'following');
    vm.send('just before\r\n');
    await f.waitForStdout(/just before\r\n/);
    assert.ok(!f.stdout.includes('before the stop'), '--tail 0: only what comes next');
    await ts.close();
    const exit = await f.waitExit(10_000);
    assert.equal(exit.code, 0, f.stderr);
    // The VM's disconnect line is written before the logs close; then the end line.
    assert.match(f.stdout, /VM disconnected \(was [^)]*\)\]\r\n\r\n\[vspc \S+ log follow ended: vspc is shutting down\]\r\n$/);
  });

  test('--file N reads a rotated file, --all every file oldest first; bad combinations are usage errors', async (t) => {
    const { ts, cleanup } = await withLogs(t);
    const u = esxiUuid();
    const { vm } = await ts.connectVm({ uuid: u.text, name: 'rotated' }, cleanup);
    const admin = (args: string[]) => vspcAdmin(ts.adminAddress, args);
    for (const gen of ['GEN-1', 'GEN-2', 'GEN-3']) {
      vm.send(`${gen}\r\n`);
      await waitUntil(async () => (await admin(['log', 'rotated'])).stdout.includes(gen), 5000, `${gen} logged`);
      if (gen !== 'GEN-3') assert.equal((await admin(['rotate-logs', 'rotated'])).code, 0);
    }
    const file1 = await admin(['log', 'rotated', '--file', '1']);
    assert.equal(file1.code, 0, file1.stderr);
    assert.match(file1.stdout, /GEN-2/);
    assert.doesNotMatch(file1.stdout, /GEN-1|GEN-3/);
    assert.match((await admin(['log', 'rotated', '--file', '2'])).stdout, /GEN-1/);
    assert.match((await admin(['log', 'rotated', '--file', '0'])).stdout, /GEN-3/);
    const missing = await admin(['log', 'rotated', '--file', '3']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /rotated has no rotated console log file 3 \(it has 1, 2\)/);

    const all = await admin(['log', 'rotated', '--all']);
    assert.equal(all.code, 0, all.stderr);
    const order = ['GEN-1', 'GEN-2', 'GEN-3'].map((g) => all.stdout.indexOf(g));
    assert.ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])), `oldest first: ${all.stdout}`);
    assert.equal(all.stdout.match(/console log of VM "rotated"/g)?.length, 3, 'three whole files, each with its header');

    for (const args of [
      ['--follow', '--all'],
      ['--follow', '--file', '1'],
      ['--all', '--file', '1'],
      ['--all', '--tail', '5'],
    ]) {
      const r = await admin(['log', 'rotated', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /cannot be used with/);
    }
    const bad = await admin(['log', 'rotated', '--file', 'x']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--file: "x" is not a file number/);
  });

  test('after a restart, a client first gets the console log\'s last output (without vspc\'s lines), then what came since', async (t) => {
    const dir = tempDir('vspc-e2e-prime-');
    t.after(() => dir.remove());
    const dbPath = join(dir.dir, 'vspc.db');
    const logDir = join(dir.dir, 'consoles');
    const portRange = await reservePortRange(8);
    const u = esxiUuid();
    let port: number;
    {
      const cleanup = new Cleanup();
      const first = await withLogs(t, { dbPath, portRange, dir: logDir });
      const { vm, hub } = await first.ts.connectVm({ uuid: u.text, name: 'kept-screen' }, cleanup);
      port = hub.identity.tcpPort;
      vm.send('BIOS banner\r\nkernel: booted\r\nkept-screen login: ');
      // A client came and went: its lines are in the log, not in the replay later.
      const user = await first.ts.connectUser(port, cleanup);
      await user.waitFor('kept-screen login: ', 5000);
      await cleanup.run();
      await first.ts.close();
    }
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const second = await withLogs(t, { dbPath, portRange, dir: logDir });
    const hub = second.ts.hub(u.text)!;
    assert.equal(hub.identity.tcpPort, port, 'the same port after the restart');
    assert.equal(hub.scrollback.snapshot().length, 0, 'nothing in the ring before anyone attaches');
    const user = await second.ts.connectUser(port, cleanup);
    await user.waitFor('kept-screen login: ', 5000);
    const text = user.text;
    assert.ok(text.indexOf('BIOS banner\r\nkernel: booted\r\nkept-screen login: ') >= 0, JSON.stringify(text));
    assert.doesNotMatch(text, /\[vspc \d{4}-/, "none of vspc's own log lines");

    // The VM comes back and prints; a second client gets old then new, each once.
    const { vm } = await second.ts.connectVm({ uuid: u.text, name: 'kept-screen' }, cleanup);
    vm.send('\r\nafter the restart\r\n');
    await user.waitFor('after the restart', 5000);
    const next = await second.ts.connectUser(port, cleanup);
    await next.waitFor('after the restart', 5000);
    assert.equal(next.text.split('BIOS banner').length, 2, 'the old output once');
    assert.ok(next.text.indexOf('kept-screen login: ') < next.text.indexOf('after the restart'), 'old before new');
  });
});
