/**
 * What a first-time operator tripped over (issue 12, items 4, 5, 6, 7, 10 and part of
 * 12), against a running server with simulated ESXi VMs, telnet users, an in-process
 * `vspc-admin connect` console, and the real vspc-admin CLI:
 *
 * - one addressing rule: `NAME:` / `NAME:LABEL`, any case, the error says how;
 * - set-port binds first: a port another program holds is refused, nothing changes;
 *   a privileged port needs --force;
 * - typing into a disconnected console gets "input discarded" once;
 * - the user name a client gave is in who, show and the audit log;
 * - attach/detach are logged once; client ids are unique across restarts;
 * - list --state and totals; kick --reason reaches the client and the audit log.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import type { ClientView, PortView, VmDetailView } from '../../src/admin/views.js';
import { portTarget, runConsole, ConnectExit } from '../../src/cli/connect.js';
import { vspcAdmin } from '../support/cli.js';
import { canBind, reservePort } from '../support/ports.js';
import { Cleanup, TestServer, esxiUuid, makeCert, settle, startServer, tempDir, waitUntil, withTimeout } from '../support/server.js';
import type { SimulatedVm } from '../support/sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

/** `vspc-admin connect` in this process (its terminal is a pair of streams): a VSPC-CONTROL client with a user name. */
function consoleClient(port: number, user: string) {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (d: Buffer) => (err += d.toString('utf8')));
  stdout.resume();
  const done = runConsole(
    { mode: 'readwrite', force: false, user, escape: 0x1d, timeoutMs: 10_000 },
    portTarget({ tls: false, host: '127.0.0.1', port }),
    { stdin, stdout, stderr },
  );
  return { done, stderr: () => err, end: () => stdin.end() };
}

/** Listens on `port` (another program holding it). */
async function holdPort(port: number): Promise<net.Server> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
  });
  return server;
}

describe('operator items of issue 12', () => {
  let s: TestServer;
  const c = new Cleanup();
  const web = esxiUuid();
  const db = esxiUuid();
  const away = esxiUuid();
  let webPlain: { vm: SimulatedVm; hub: ConsoleHub };
  let webCom2: { vm: SimulatedVm; hub: ConsoleHub };
  let dbVm: { vm: SimulatedVm; hub: ConsoleHub };
  let awayHub: ConsoleHub;
  const admin = (...args: string[]) => vspcAdmin(s.adminAddress, args);

  before(async () => {
    s = await TestServer.start({ ports: 12 });
    webPlain = await s.connectVm({ uuid: web.text, name: 'op-web01' }, c);
    webCom2 = await s.connectVm({ uuid: web.text, name: 'op-web01', serviceUri: 'vSPC.py?port=com2' }, c);
    dbVm = await s.connectVm({ uuid: db.text, name: 'op-db01' }, c);
    const gone = await s.connectVm({ uuid: away.text, name: 'op-away' }, c);
    await gone.vm.close();
    await waitUntil(() => gone.hub.source === null, 3000, 'op-away disconnected');
    awayHub = gone.hub;
  });
  after(async () => {
    await c.run();
    await s?.dispose();
  });

  test('item 4: `connect NAME` on a VM with two serial ports says how to name each; NAME: and NAME:LABEL in any case work everywhere', async () => {
    const amb = await admin('connect', 'op-web01');
    assert.equal(amb.code, 1);
    assert.equal(
      amb.stderr,
      `vspc-admin: "op-web01" matches 2 serial ports: op-web01: (port ${webPlain.hub.identity.tcpPort}), op-web01:com2 (port ${webCom2.hub.identity.tcpPort}); ` +
        'use the port or NAME:LABEL, and NAME: (with the colon) for the one without a label\n',
    );
    for (const [ref, hub] of [
      ['op-web01:', webPlain.hub],
      ['OP-WEB01:', webPlain.hub],
      ['Op-Web01:COM2', webCom2.hub],
      ['OP-DB01', dbVm.hub],
    ] as const) {
      const r = await admin('show', ref, '--json');
      assert.equal(r.code, 0, `${ref}: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as VmDetailView).port, hub.identity.tcpPort, ref);
    }
    const listed = JSON.parse((await admin('list', 'op-', '--json')).stdout) as PortView[];
    assert.deepEqual(listed.map((p) => p.address).sort(), ['op-away', 'op-db01', 'op-web01:', 'op-web01:com2']);
  });

  test('item 5: set-port to a port another program holds is refused with the reason, and nothing changes', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const hub = dbVm.hub;
    const before = hub.identity.tcpPort;
    const taken = await reservePort();
    const blocker = await holdPort(taken);
    tc.add(() => new Promise<void>((r) => blocker.close(() => r())));

    const r = await admin('set-port', 'op-db01', String(taken));
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `vspc-admin: port ${taken} cannot be used: EADDRINUSE: cannot listen on 127.0.0.1:${taken}; op-db01 stays on port ${before}\n`);
    assert.equal(hub.identity.tcpPort, before, 'not moved');
    const listed = JSON.parse((await admin('list', 'op-db01', '--json')).stdout) as PortView[];
    assert.equal(listed[0].port, before, 'not stored');
    assert.equal(listed[0].listenError, null);
    // The old listener still serves.
    const user = await s.connectUser(before, tc);
    const m = user.mark();
    dbVm.vm.send('still here');
    await user.waitFor('still here', 3000, m);
  });

  test('item 5: a privileged port is refused unless --force', async (t) => {
    const hub = webCom2.hub;
    const before = hub.identity.tcpPort;
    const r = await admin('set-port', 'op-web01:com2', '999');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^vspc-admin: port 999 is a privileged port \(below 1024\); give --force to use it anyway\n$/);
    // The admin API names its own parameter.
    const api = await fetch(`http://${s.adminAddress}/api/v1/set-port?vm=op-web01:com2&port=999`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(api.status, 400);
    assert.deepEqual(((await api.json()) as { error: { code: string; message: string } }).error, {
      code: 'VSPC_PORT_PRIVILEGED',
      message: 'port 999 is a privileged port (below 1024); give force=1 to use it anyway',
    });
    // Not a port at all: a usage error (exit 2) naming the argument, before the API is asked.
    const abc = await admin('set-port', 'op-web01:com2', 'abc');
    assert.equal(abc.code, 2, abc.stderr);
    assert.match(abc.stderr, /^vspc-admin: error: command-argument value 'abc' is invalid for argument 'port'\. "abc" is not a port number; give a TCP port, 1-65535\.\n$/);
    assert.equal(hub.identity.tcpPort, before);

    // With --force it is bound like any port: as root it moves, otherwise the kernel's refusal is the reason.
    let low = 0;
    for (let p = 1023; p > 900 && low === 0; p--) if (await canBind(p)) low = p;
    assert.ok(low !== 0, 'a free port below 1024 to try');
    const forced = await admin('set-port', 'op-web01:com2', String(low), '--force');
    if (process.getuid?.() === 0) {
      assert.equal(forced.code, 0, forced.stderr);
      assert.equal(hub.identity.tcpPort, low);
      const back = await admin('set-port', 'op-web01:com2', String(before));
      assert.equal(back.code, 0, back.stderr);
    } else {
      assert.equal(forced.code, 1);
      assert.match(forced.stderr, /EACCES/);
      assert.equal(hub.identity.tcpPort, before);
    }
  });

  test('item 6: typing into a disconnected console: the attach notice, then "input discarded" once', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const user = await s.connectUser(awayHub.identity.tcpPort, tc, 'VM is not connected; you will see its output when it comes back');
    const m = user.mark();
    user.send('ls\r');
    await user.waitFor('[vspc: VM is not connected; input discarded]', 3000, m);
    user.send('pwd\r');
    user.send('whoami\r');
    await settle(null, user);
    const text = user.received.subarray(m).toString('utf8');
    assert.equal(text.split('input discarded').length - 1, 1, `told once: ${JSON.stringify(text)}`);
  });

  test('item 7 and 12: the user name a client gave is in who, show and the audit log; kick --reason reaches it and the audit log', async () => {
    const port = dbVm.hub.identity.tcpPort;
    const alice = consoleClient(port, 'alice');
    await waitUntil(() => /connected with READWRITE/.test(alice.stderr()), 5000, 'alice granted');
    const id = [...dbVm.hub.clients].find((x) => dbVm.hub.userOf(x) === 'alice')?.id;
    assert.ok(id !== undefined);

    const who = JSON.parse((await admin('who', '--json')).stdout) as ClientView[];
    const mine = who.find((x) => x.id === id)!;
    assert.equal(mine.user, 'alice');
    assert.match(mine.peer, /^127\.0\.0\.1:\d+$/);
    const table = await admin('who');
    assert.match(table.stdout, new RegExp(`^${id}\\s+op-db01\\s+${port}\\s+readwrite\\s+telnet\\s+alice@127\\.0\\.0\\.1:\\d+\\s+`, 'm'));
    const show = await admin('show', 'op-db01');
    assert.match(show.stdout, new RegExp(`^    #${id}  telnet  alice@127\\.0\\.0\\.1:\\d+  readwrite  since `, 'm'));
    const attached = s.logs.lines.filter((l) => l.message === 'client attached' && l.clientId === id);
    assert.equal(attached.length, 1, 'attach logged once (item 10)');
    assert.equal(attached[0].audit, true);
    assert.equal(attached[0].user, 'alice');
    assert.equal(attached[0].tls, false);

    const kick = await admin('kick', 'op-db01', '--client', String(id), '--reason', 'kernel upgrade at 14:00');
    assert.equal(kick.code, 0, kick.stderr);
    assert.match(kick.stdout, new RegExp(`#${id} alice@127\\.0\\.0\\.1:\\d+`));
    assert.equal(await withTimeout(alice.done, 5000, 'alice disconnected'), ConnectExit.REVOKED);
    assert.match(alice.stderr(), /disconnected by the administrator: kernel upgrade at 14:00/);
    const detached = await s.logs.waitFor((l) => l.message === 'client detached' && l.clientId === id, 3000);
    assert.equal(detached.reason, 'disconnected by the administrator: kernel upgrade at 14:00');
    assert.equal(detached.user, 'alice');
    assert.equal(s.logs.lines.filter((l) => l.message === 'client detached' && l.clientId === id).length, 1, 'detach logged once');

    const bad = await admin('kick', 'op-db01', '--reason', '');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /option '--reason <text>' argument '' is invalid/);
  });

  test('item 10: one attach and one detach line per telnet client; client ids are at least the clock since 2025 (unique across restarts)', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const floor = Date.now() - Date.UTC(2025, 0, 1);
    const user = await s.connectUser(webPlain.hub.identity.tcpPort, tc);
    const client = [...webPlain.hub.clients].at(-1)!;
    assert.ok(client.id >= floor, `${client.id} >= ${floor}`);
    await user.close();
    await s.logs.waitFor((l) => l.message === 'client detached' && l.clientId === client.id, 3000);
    const about = s.logs.lines.filter((l) => l.clientId === client.id || l.client === client.id);
    assert.deepEqual(
      about.filter((l) => l.level === 'info' || l.level === 'warn').map((l) => l.message),
      ['client attached', 'client detached'],
      JSON.stringify(about),
    );
  });

  test('item 12: list --state filters on STATE; totals under the table; a bad state names the option', async () => {
    const all = await admin('list', 'op-');
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 1 + 4 + 1, 'header, four rows, totals');
    const clients = (JSON.parse((await admin('list', 'op-', '--json')).stdout) as PortView[]).reduce((n, p) => n + p.clients, 0);
    assert.equal(lines.at(-1), `4 consoles: 3 connected, 1 disconnected; ${clients} ${clients === 1 ? 'client' : 'clients'}`);

    const down = await admin('list', '--state', 'disconnected');
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stdout, /^\d+\s+-\s+esxi\s+op-away\s+-\s+disconnected\s/m);
    assert.doesNotMatch(down.stdout, /op-web01|op-db01/);
    assert.match(down.stdout, /^1 console: 1 disconnected; 0 clients$/m);
    const json = JSON.parse((await admin('list', '--state', 'connected,migrating', '--json')).stdout) as PortView[];
    assert.ok(json.length >= 3);
    assert.ok(json.every((p) => p.state === 'connected' || p.state === 'migrating'));
    const none = await admin('list', 'op-db', '--state', 'migrating');
    assert.equal(none.stdout, 'No VM serial port matches "op-db" in state migrating.\n');

    const bad = await admin('list', '--state', 'asleep');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /option '--state <states>' argument 'asleep' is invalid\. "asleep" is not a state; use one or more of connected, disconnected, migrating/);
    const api = await fetch(`http://${s.adminAddress}/api/v1/ports?state=asleep`);
    assert.equal(api.status, 400);
    assert.equal(((await api.json()) as { error: { code: string } }).error.code, 'VSPC_STATE_INVALID');
  });
});

describe('set-port with telnets ports (issue 12 item 5)', () => {
  test('the telnets twin is bound first too: a taken twin refuses the move and leaves no listener behind', async (t) => {
    const dir = tempDir();
    t.after(dir.remove);
    const pair = makeCert(dir.dir);
    const { ts, cleanup } = await startServer(t, { ports: 4, tls: { cert: pair.cert, key: pair.key } });
    const u = esxiUuid();
    const { hub } = await ts.connectVm({ uuid: u.text, name: 'op-tls' }, cleanup);
    const before = hub.identity.tcpPort;
    const target = ts.config.portRange.end;
    const twin = target + ts.config.tlsPortOffset;
    const blocker = await holdPort(twin);
    cleanup.add(() => new Promise<void>((r) => blocker.close(() => r())));

    const r = await vspcAdmin(ts.adminAddress, ['set-port', 'op-tls', String(target)]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`port ${twin} cannot be used: EADDRINUSE: .*; op-tls stays on port ${before}\\n$`));
    assert.equal(hub.identity.tcpPort, before);
    assert.equal(await canBind(target), true, 'the plain port bound for the attempt was let go');

    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    const ok = await vspcAdmin(ts.adminAddress, ['set-port', 'op-tls', String(target)]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(hub.identity.tcpPort, target);
    assert.equal(await canBind(twin), false, 'the telnets twin listens');
    assert.equal(await canBind(before + ts.config.tlsPortOffset), true, 'the old telnets port is closed');
  });
});
