/**
 * The command-line programs as a user runs them: usage, bad flags, an unreachable
 * admin API, and a real `vspc` process serving a simulated VM until SIGTERM.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { PortView } from '../../src/admin/views.js';
import { SimulatedVm, TelnetUser } from '../support/sim/index.js';
import { Option } from '../../src/protocol/telnet/constants.js';
import { Child, runNode, vspcAdmin, VSPC_ADMIN_JS, VSPC_JS } from '../support/cli.js';
import { reservePort, reservePortRange, canBind } from '../support/ports.js';
import { Cleanup, esxiUuid, tempDir, waitUntil } from '../support/server.js';

describe('vspc and vspc-admin command lines', () => {
  const c = new Cleanup();
  after(() => c.run());

  test('vspc --help prints usage and exits 0', async () => {
    const r = await runNode(VSPC_JS, ['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: vspc \[options\]/m);
    for (const flag of ['--proxy-listen', '--admin-listen', '--db', '--port-range', '--cert', '--key']) assert.ok(r.stdout.includes(flag), flag);
  });

  test('vspc-admin --help prints usage and exits 0', async () => {
    const r = await runNode(VSPC_ADMIN_JS, ['--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: vspc-admin \[options\] \[command\]/m);
    assert.match(r.stdout, /--admin <host:port>/);
    assert.match(r.stdout, /^\s+list\b/m);
  });

  const bad: Array<[string[], RegExp]> = [
    [['--port-range', '5-2'], /--port-range.*start 5 is greater than end 2/],
    [['--port-range', 'abc'], /--port-range.*"abc" is not START-END/],
    [['--proxy-listen', '127.0.0.1:99999'], /--proxy-listen.*99999/],
    [['--proxy-listen', '127.0.0.1'], /vspc: --proxy-listen: "127\.0\.0\.1" has no port: expected HOST:PORT, \[IPv6\]:PORT or PORT/],
    [['--proxy-listen', 'localhost:ssh'], /--proxy-listen: "ssh" is not a port number: expected HOST:PORT/],
    [['--cert', '/nonexistent/vspc.crt'], /--key.*--cert and --key go together/],
    [['--key', '/nonexistent/vspc.key'], /--cert.*--cert and --key go together/],
  ];
  for (const [args, message] of bad) {
    test(`vspc ${args.join(' ')} fails with a message naming the field`, async () => {
      const dir = tempDir();
      c.add(dir.remove);
      // If validation were skipped, these ports would be used: keep them harmless.
      const r = await runNode(VSPC_JS, [...args, '--db', join(dir.dir, 'x.db'), '--admin-listen', '127.0.0.1:0'], 10_000);
      assert.notEqual(r.code, 0, `exit code; stderr: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.doesNotMatch(r.stderr, /vspc started/);
    });
  }

  test("commander's own usage errors carry the program's name and exit 2", async () => {
    const vspc = await runNode(VSPC_JS, ['--bogus']);
    assert.equal(vspc.code, 2, vspc.stderr);
    assert.equal(vspc.stderr, "vspc: error: unknown option '--bogus'\n");
    const admin = await runNode(VSPC_ADMIN_JS, ['--bogus', 'list']);
    assert.equal(admin.code, 2, admin.stderr);
    assert.equal(admin.stderr, "vspc-admin: error: unknown option '--bogus'\n");
    const sub = await runNode(VSPC_ADMIN_JS, ['list', '--bogus']);
    assert.equal(sub.code, 2, sub.stderr);
    assert.equal(sub.stderr, "vspc-admin: error: unknown option '--bogus'\n");
  });

  test('vspc-admin --admin without a port says what form it takes, naming the option', async () => {
    const r = await runNode(VSPC_ADMIN_JS, ['--admin', 'nohost', 'list']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^vspc-admin: --admin: "nohost" has no port: expected HOST:PORT, \[IPv6\]:PORT or PORT \(e\.g\. 127\.0\.0\.1:7000 or 7000\)$/m);
    assert.equal(r.stdout, '');
  });

  test('vspc-admin against a closed admin port exits 1 with a clear message', async () => {
    const port = await reservePort();
    const r = await vspcAdmin(`127.0.0.1:${port}`, ['list']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`vspc-admin: cannot reach the vspc admin API at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\); is vspc running\\?`));
    assert.equal(r.stdout, '');
  });

  test('a real vspc process: starts, serves a simulated VM and a user, lists it, stops on SIGTERM with exit 0', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const ports = await reservePortRange(6);
    const proxyPort = ports.start;
    const adminPort = ports.start + 1;
    const range = { start: ports.start + 2, end: ports.end };
    const dbPath = join(dir.dir, 'vspc.db');
    const child = new Child(VSPC_JS, [
      '--proxy-listen', `127.0.0.1:${proxyPort}`,
      '--admin-listen', `127.0.0.1:${adminPort}`,
      '--db', dbPath,
      '--port-range', `${range.start}-${range.end}`,
      '--vm-listen-host', '127.0.0.1',
      '--log-level', 'debug',
    ]);
    tc.add(() => child.kill());
    await child.waitForStderr(/"message":"vspc started"/);
    const started = child.stderr.split('\n').map((l) => (l.trim() ? (JSON.parse(l) as Record<string, unknown>) : null)).find((l) => l?.message === 'vspc started');
    assert.equal(started?.db, dbPath);
    assert.equal(started?.portRange, `${range.start}-${range.end}`);

    const u = esxiUuid();
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: proxyPort, uuid: u.text, name: 'cli-vm', serviceUri: 'vSPC.py?port=com1' });
    tc.add(() => vm.destroy());
    await vm.whenProxied();
    let row: PortView | undefined;
    await waitUntil(async () => {
      const r = await vspcAdmin(`127.0.0.1:${adminPort}`, ['list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      row = (JSON.parse(r.stdout) as PortView[]).find((p) => p.name === 'cli-vm');
      return !!row?.connected;
    }, 10_000, 'VM listed by vspc-admin');
    assert.equal(row!.label, 'com1');
    assert.equal(row!.uuid!.replace(/-/g, ''), u.hex);
    assert.ok(row!.port >= range.start && row!.port <= range.end);

    const user = await TelnetUser.connect({ host: '127.0.0.1', port: row!.port });
    tc.add(() => user.destroy());
    await user.waitForOptions([['us', Option.BINARY], ['him', Option.BINARY]]);
    await user.waitFor('[vspc: ', 3000);
    await user.barrier();
    const m = user.mark();
    vm.send(Buffer.from('login: \xff', 'latin1'));
    await user.waitFor(Buffer.from('login: \xff', 'latin1'), 3000, m);
    user.send('admin\r');
    await vm.waitForInput('admin\r', 3000);

    child.proc.kill('SIGTERM');
    const exit = await child.waitExit(10_000);
    assert.deepEqual(exit, { code: 0, signal: null }, child.stderr);
    assert.match(child.stderr, /"message":"signal received; shutting down"/);
    assert.match(child.stderr, /"message":"vspc stopped"/);
    await vm.whenClosed(3000);
    await user.whenClosed(3000);
    assert.match(user.text, /vspc is shutting down/);
    // Everything was released.
    assert.equal(await canBind(proxyPort), true);
    assert.equal(await canBind(row!.port), true);
  });

  test('a log reader that went away (`vspc | tee` ended by Ctrl-C) does not turn SIGTERM into a crash: exit 0, database closed', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const ports = await reservePortRange(4);
    const dbPath = join(dir.dir, 'vspc.db');
    const child = new Child(VSPC_JS, [
      '--proxy-listen', `127.0.0.1:${ports.start}`,
      '--admin-listen', `127.0.0.1:${ports.start + 1}`,
      '--db', dbPath,
      '--port-range', `${ports.start + 2}-${ports.end}`,
      '--broker-socket', 'off',
    ]);
    tc.add(() => child.kill());
    await child.waitForStderr(/"message":"vspc started"/);
    // The reading end of vspc's stderr closes: its next log line meets EPIPE.
    const closed = once(child.proc.stderr!, 'close');
    child.proc.stderr!.destroy();
    await closed;
    child.proc.kill('SIGTERM');
    const exit = await child.waitExit(10_000);
    assert.deepEqual(exit, { code: 0, signal: null }, 'exit 70 is the uncaught-exception exit: EPIPE on stderr crashed the shutdown');
    // SQLite removes the write-ahead log when the database is closed cleanly.
    assert.equal(existsSync(`${dbPath}-wal`), false, 'the database was not closed');
  });
});
