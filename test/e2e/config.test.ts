/**
 * The config file with a real `vspc` process: a bad file stops it at start with the
 * key and position; flags override the file; SIGHUP and `vspc-admin reload` apply
 * what can change (log level, per-VM fixed port and scrollback, the admin token)
 * without dropping VM connections, report what needs a restart, and keep the running
 * configuration when the new file is invalid.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PortView, VmDetailView } from '../../src/admin/views.js';
import { SimulatedVm, TelnetUser } from '../support/sim/index.js';
import { Child, runNode, vspcAdmin, VSPC_JS } from '../support/cli.js';
import { reservePortRange } from '../support/ports.js';
import { Cleanup, esxiUuid, tempDir, waitUntil } from '../support/server.js';

type Line = Record<string, unknown>;

/** The complete JSON log lines on stderr so far (a line still being written is left out). */
function logLines(stderr: string): Line[] {
  return stderr
    .split('\n')
    .slice(0, -1)
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Line);
}

function waitForLog(child: Child, pred: (l: Line) => boolean, from = 0, timeoutMs = 10_000): Promise<Line> {
  return child.waitFor(() => logLines(child.stderr).slice(from).find(pred), timeoutMs, 'log line');
}

describe('config file with a real vspc process', () => {
  const c = new Cleanup();
  after(() => c.run());

  const starts: Array<[string, string, RegExp]> = [
    ['an unknown key', 'db: vspc.db\nportRang: 10000-10010\n', /^vspc: (\S+):2:1: portRang: unknown key \(did you mean "portRange"\?\)\n$/],
    ['a bad value', 'db: vspc.db\nexpireAfter: forever\n', /^vspc: (\S+):2:14: expireAfter: "forever" is not a duration \(e\.g\. 500ms, 30s, 5m, 90d\)\n$/],
    ['a bad port range', 'db: vspc.db\nportRange: 19999-10000\n', /^vspc: (\S+):2:12: portRange: start 19999 is greater than end 10000\n$/],
  ];
  for (const [what, text, message] of starts) {
    test(`${what} stops vspc at start with exit code 2, naming the key and position`, async () => {
      const dir = tempDir();
      c.add(dir.remove);
      const path = join(dir.dir, 'vspc.yaml');
      writeFileSync(path, text);
      const r = await runNode(VSPC_JS, ['--config', path, '--admin-listen', '127.0.0.1:0', '--proxy-listen', '127.0.0.1:0']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(message.exec(r.stderr)?.[1], path);
      assert.doesNotMatch(r.stderr, /vspc started/);
    });
  }

  test('a JSON config file; a flag overrides it', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const ports = await reservePortRange(8);
    const path = join(dir.dir, 'vspc.json');
    writeFileSync(
      path,
      JSON.stringify({
        proxyListen: `127.0.0.1:${ports.start}`,
        adminListen: `127.0.0.1:${ports.start + 1}`,
        db: join(dir.dir, 'vspc.db'),
        portRange: `${ports.start + 2}-${ports.start + 4}`,
        logFormat: 'json',
      }),
    );
    const child = new Child(VSPC_JS, ['--config', path, '--port-range', `${ports.start + 5}-${ports.end}`]);
    tc.add(() => child.kill());
    const started = await waitForLog(child, (l) => l.message === 'vspc started');
    assert.equal(started.portRange, `${ports.start + 5}-${ports.end}`);
    assert.equal(started.db, join(dir.dir, 'vspc.db'));
    const r = await vspcAdmin(`127.0.0.1:${ports.start + 1}`, ['status']);
    assert.equal(r.code, 0, r.stderr);
    child.proc.kill('SIGTERM');
    assert.deepEqual(await child.waitExit(), { code: 0, signal: null });
  });

  test('SIGHUP and vspc-admin reload apply changes without dropping VM connections, and report what needs a restart', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const ports = await reservePortRange(10);
    const admin = `127.0.0.1:${ports.start + 1}`;
    const range = { start: ports.start + 2, end: ports.start + 7 };
    const path = join(dir.dir, 'vspc.yaml');
    const base = [
      `proxyListen: 127.0.0.1:${ports.start}`,
      `adminListen: ${admin}`,
      `db: ${join(dir.dir, 'vspc.db')}`,
      `portRange: ${range.start}-${range.end}`,
      'logLevel: info',
    ];
    writeFileSync(path, base.join('\n') + '\n');
    const child = new Child(VSPC_JS, ['--config', path]);
    tc.add(() => child.kill());
    await waitForLog(child, (l) => l.message === 'vspc started');

    // A VM with a user attached, on the first port of the range.
    const u = esxiUuid();
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: ports.start, uuid: u.text, name: 'cfg-web' });
    tc.add(() => vm.destroy());
    await vm.whenProxied();
    let row: PortView | undefined;
    await waitUntil(async () => {
      row = (JSON.parse((await vspcAdmin(admin, ['list', '--json'])).stdout) as PortView[])[0];
      return !!row?.connected;
    }, 5000, 'VM listed');
    assert.equal(row!.port, range.start);
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: row!.port });
    tc.add(() => user.destroy());
    await user.waitFor('[vspc: ', 3000);
    assert.equal(logLines(child.stderr).some((l) => l.level === 'debug'), false, 'no debug lines at info');

    // The file changes: debug logging, a fixed port and scrollback for the VM, a wider range.
    const fixed = range.start + 3;
    writeFileSync(
      path,
      [
        ...base.filter((l) => !/^(logLevel|portRange)/.test(l)),
        `portRange: ${range.start}-${range.end + 1}`,
        'logLevel: debug',
        'vms:',
        '  - match: cfg-web',
        `    port: ${fixed}`,
        '    scrollback: 1k',
      ].join('\n') + '\n',
    );
    const mark = logLines(child.stderr).length;
    child.proc.kill('SIGHUP');
    const reloaded = await waitForLog(child, (l) => l.message === 'configuration reloaded', mark);
    assert.equal(reloaded.file, path);
    assert.deepEqual((reloaded.applied as string[]).sort(), ['logLevel', 'vms']);
    assert.deepEqual(reloaded.restartNeeded, ['portRange']);
    await waitForLog(child, (l) => l.message === 'VM serial port moved to its fixed port from the config file' && l.to === fixed, mark);

    // The VM connection was not dropped; the VM now answers on its fixed port.
    const d = JSON.parse((await vspcAdmin(admin, ['show', 'cfg-web', '--json'])).stdout) as VmDetailView;
    assert.equal(d.port, fixed);
    assert.equal(d.connected, true);
    assert.equal(d.connectedSince, row!.connectedSince, 'same VM connection');
    assert.equal(d.peer, row!.peer);
    assert.equal(d.scrollbackBytes, 1024);
    assert.deepEqual(d.settings, { port: fixed, scrollbackBytes: 1024 });
    assert.equal(vm.closed, false);
    vm.send('after the reload\r\n');
    await user.waitFor('after the reload', 3000); // the attached user stays attached
    const second = await TelnetUser.connect({ host: '127.0.0.1', port: fixed });
    tc.add(() => second.destroy());
    await second.waitFor('after the reload', 3000); // scrollback replayed on the new port
    // Debug logging is on now: a second VM's negotiation shows up at debug level.
    const vm2 = await SimulatedVm.connect({ host: '127.0.0.1', port: ports.start, uuid: esxiUuid().text, name: 'cfg-db' });
    tc.add(() => vm2.destroy());
    await vm2.whenProxied();
    await waitForLog(child, (l) => l.level === 'debug' && l.message === 'option 232 agreed', mark);

    // `vspc-admin reload` with nothing new: the range still needs a restart.
    const again = await vspcAdmin(admin, ['reload']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.stdout, `reloaded ${path}\nnothing to apply\nchanged, but in effect only after a restart: portRange\n`);
    const json = JSON.parse((await vspcAdmin(admin, ['reload', '--json'])).stdout) as Record<string, unknown>;
    assert.deepEqual(json, { file: path, applied: [], restartNeeded: ['portRange'] });

    // An invalid file: refused with its position, and nothing changes (SIGHUP alike).
    writeFileSync(path, `${base.filter((l) => !l.startsWith('logLevel')).join('\n')}\nlogLevel: loud\n`);
    const bad = await vspcAdmin(admin, ['reload']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, new RegExp(`^vspc-admin: ${path}:5:11: logLevel: expected one of error, warn, info, debug, got "loud" \\(the running configuration is unchanged\\)\\n$`));
    const mark2 = logLines(child.stderr).length;
    child.proc.kill('SIGHUP');
    const failed = await waitForLog(child, (l) => l.message === 'configuration reload failed; the running configuration is unchanged', mark2);
    assert.equal(failed.level, 'error');
    // No pause for a crash to happen: one would show as a failed status below or as a
    // non-zero exit at the SIGTERM that ends this test.
    const status = await vspcAdmin(admin, ['status']);
    assert.equal(status.code, 0, 'still running');
    assert.match(status.stdout, /^vmPortsConnected: 2$/m);
    const metrics = await (await fetch(`http://${admin}/metrics`)).text();
    assert.match(metrics, /^vspc_config_reloads_total\{result="ok"\} 3$/m);
    assert.match(metrics, /^vspc_config_reloads_total\{result="failed"\} 2$/m);

    child.proc.kill('SIGTERM');
    assert.deepEqual(await child.waitExit(), { code: 0, signal: null });
  });

  test('reload rotates the admin token', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const ports = await reservePortRange(4);
    const admin = `127.0.0.1:${ports.start + 1}`;
    const tokenFile = join(dir.dir, 'token');
    const [oldToken, newToken] = ['old-token-0123456789abcdef', 'new-token-0123456789abcdef'];
    writeFileSync(tokenFile, oldToken, { mode: 0o600 });
    const path = join(dir.dir, 'vspc.yaml');
    writeFileSync(path, `adminTokenFile: ${tokenFile}\ndb: ${join(dir.dir, 'vspc.db')}\nportRange: ${ports.start + 2}-${ports.end}\n`);
    const child = new Child(VSPC_JS, ['--config', path, '--proxy-listen', `127.0.0.1:${ports.start}`, '--admin-listen', admin]);
    tc.add(() => child.kill());
    await waitForLog(child, (l) => l.message === 'vspc started');
    assert.equal((await vspcAdmin(admin, ['--token', oldToken, 'status'])).code, 0);

    writeFileSync(tokenFile, newToken);
    const r = await vspcAdmin(admin, ['--token', oldToken, 'reload']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^applied: adminToken\/adminTokenFile$/m);
    const old = await vspcAdmin(admin, ['--token', oldToken, 'status']);
    assert.equal(old.code, 1);
    assert.match(old.stderr, /did not accept the token/);
    assert.equal((await vspcAdmin(admin, ['--token', newToken, 'status'])).code, 0);
    assert.ok(!child.stderr.includes(oldToken) && !child.stderr.includes(newToken), 'tokens never logged');
    child.proc.kill('SIGTERM');
    assert.deepEqual(await child.waitExit(), { code: 0, signal: null });
  });
});
