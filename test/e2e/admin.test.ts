/**
 * Every `vspc-admin` command, run as a user runs it (a child process), against a
 * running server with simulated ESXi VMs and telnet users: list (table, JSON,
 * pattern), show, who, kick, forget, set-port, log, reload, status, and the errors an
 * operator meets (ambiguous name, unknown VM or client, taken port).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ClientView, PortView, VmDetailView } from '../../src/admin/views.js';
import { vspcAdmin } from '../support/cli.js';
import { canBind } from '../support/ports.js';
import { Cleanup, TestServer, esxiUuid, tempDir, waitUntil } from '../support/server.js';
import type { SimulatedVm } from '../support/sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

function formatted(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

describe('vspc-admin commands against a running server', () => {
  let s: TestServer;
  const c = new Cleanup();
  const logDir = tempDir('vspc-admin-logs-');
  const web = esxiUuid();
  const db = esxiUuid();
  let webCom1: { vm: SimulatedVm; hub: ConsoleHub };
  let webCom2: { vm: SimulatedVm; hub: ConsoleHub };
  let dbVm: { vm: SimulatedVm; hub: ConsoleHub };
  const admin = (...args: string[]) => vspcAdmin(s.adminAddress, args);

  before(async () => {
    s = await TestServer.start({ ports: 20, config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
    webCom1 = await s.connectVm({ uuid: web.text, name: 'adm-web01', serviceUri: 'vSPC.py?port=com1' }, c);
    webCom2 = await s.connectVm({ uuid: web.text, name: 'adm-web01', serviceUri: 'vSPC.py?port=com2' }, c);
    dbVm = await s.connectVm({ uuid: db.text, name: 'adm-db01', comPort: true, uart: { baudRate: 115200, dataSize: 8, parity: 1, stopSize: 1 } }, c);
    await waitUntil(() => dbVm.hub.lineSettings?.stopBits !== undefined, 3000, 'guest UART reported');
  });
  after(async () => {
    await c.run();
    await s?.dispose();
    logDir.remove();
  });

  test('list: a table of every VM serial port, --json, and a name pattern', async () => {
    const r = await admin('list');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0], /^PORT\s+TLS\s+KIND\s+NAME\s+LABEL\s+STATE\s+CLIENTS\s+SOURCE\s+KEY$/);
    // Header, three rows, and (issue 12 item 12) the totals line under the table.
    assert.equal(lines.length, 5);
    assert.equal(lines[4], '3 consoles: 3 connected; 0 clients');
    assert.match(r.stdout, new RegExp(`^${dbVm.hub.identity.tcpPort}\\s+-\\s+esxi\\s+adm-db01\\s+-\\s+connected\\s+0\\s+\\S+\\s+${formatted(db.hex)}$`, 'm'));
    assert.match(r.stdout, new RegExp(`^${webCom2.hub.identity.tcpPort}\\s+-\\s+esxi\\s+adm-web01\\s+com2\\s+connected`, 'm'));

    const json = await admin('list', '--json');
    const rows = JSON.parse(json.stdout) as PortView[];
    assert.equal(rows.length, 3);
    assert.deepEqual(rows.map((p) => p.port), [...rows.map((p) => p.port)].sort((a, b) => a - b), 'ordered by port');

    const pattern = await admin('list', 'adm-db*', '--json');
    assert.deepEqual((JSON.parse(pattern.stdout) as PortView[]).map((p) => p.name), ['adm-db01']);
    const sub = await admin('list', 'WEB01');
    assert.equal(sub.stdout.trimEnd().split('\n').length, 4, 'substring, any case: header + two web rows + totals');
    const none = await admin('list', 'nothing-like-this');
    assert.equal(none.code, 0);
    assert.equal(none.stdout, 'No VM serial port matches "nothing-like-this".\n');
  });

  test('show: identity, ports, peer, connected since, clients with modes, guest UART, vMotion history, bytes', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const user = await s.connectUser(dbVm.hub.identity.tcpPort, tc);
    await waitUntil(() => dbVm.hub.clients.size === 1, 2000, 'client attached');
    dbVm.vm.send('hello from the guest\r\n');
    await user.waitFor('hello from the guest', 3000);
    user.send('typed');
    await dbVm.vm.waitForInput('typed', 3000);
    // A vMotion that the source aborts, for the history.
    const begun = await dbVm.vm.vmotionBegin(Buffer.from([7]));
    assert.equal(begun.kind, 'goahead');
    dbVm.vm.vmotionAbort();
    await waitUntil(() => s.server.vmotion.historyOf(dbVm.hub).length === 1, 3000, 'vMotion recorded');

    const r = await admin('show', 'adm-db01');
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout;
    assert.match(out, /^adm-db01\n/);
    assert.match(out, new RegExp(`^  uuid: +${formatted(db.hex)}$`, 'm'));
    assert.match(out, new RegExp(`^  port: +${dbVm.hub.identity.tcpPort}$`, 'm'));
    assert.match(out, /^  state: +connected$/m);
    assert.match(out, /^  peer: +(::ffff:)?127\.0\.0\.1:\d+$/m);
    assert.match(out, /^  connected since: +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)$/m);
    assert.match(out, /^  guest UART: +115200 8N1$/m);
    assert.match(out, /^  bytes: +\d+ from the VM, 5 to the VM$/m);
    assert.match(out, /^  clients: +1$/m);
    assert.match(out, /^    #\d+  telnet  (::ffff:)?127\.0\.0\.1:\d+  readwrite  since /m);
    assert.match(out, /^  telnet: +127\.0\.0\.1:\d+$/m);
    assert.match(out, /^  vMotions: +1$/m);
    assert.match(out, /^    \S+Z  aborted in \d+ ms \(held \d+ bytes\)$/m);

    const j = await admin('show', String(dbVm.hub.identity.tcpPort), '--json');
    const d = JSON.parse(j.stdout) as VmDetailView;
    assert.equal(d.name, 'adm-db01');
    assert.equal(d.uuid, formatted(db.hex));
    assert.equal(d.connected, true);
    assert.ok(d.bytesFromVm >= 'hello from the guest\r\n'.length);
    assert.equal(d.bytesToVm, 5);
    assert.deepEqual(d.uart, { baudRate: 115200, dataSize: 8, parity: 'none', stopBits: '1', summary: '115200 8N1' });
    assert.equal(d.clientList.length, 1);
    assert.equal(d.clientList[0].mode, 'readwrite');
    assert.equal(d.vmotions[0].outcome, 'aborted');
    assert.equal(d.scrollbackBytes, s.config.scrollbackBytes);
  });

  test('a VM is addressed by name, UUID in any form, or port; an ambiguous name is a clear error', async () => {
    const amb = await admin('show', 'adm-web01');
    assert.equal(amb.code, 1);
    assert.match(amb.stderr, /^vspc-admin: "adm-web01" matches 2 serial ports: adm-web01:com1 \(port \d+\), adm-web01:com2 \(port \d+\); use the port or NAME:LABEL\n$/);
    const byUuid = await admin('show', web.hex.toUpperCase());
    assert.equal(byUuid.code, 1);
    assert.match(byUuid.stderr, /matches 2 serial ports/);
    for (const ref of ['adm-web01:com2', `${formatted(web.hex)}:com2`, String(webCom2.hub.identity.tcpPort)]) {
      const r = await admin('show', ref, '--json');
      assert.equal(r.code, 0, `${ref}: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as VmDetailView).label, 'com2', ref);
    }
    const missing = await admin('show', 'no-such-vm');
    assert.equal(missing.code, 1);
    // Issue 12 item 4: the error shows the addressing rule.
    assert.equal(
      missing.stderr,
      'vspc-admin: no VM serial port matches "no-such-vm" (a name in any case, NAME:LABEL, NAME: for the one without a label, a UUID, or a port; vspc-admin list shows them)\n',
    );
  });

  test('who lists every attached client; kick --client disconnects one (told why), kick all the rest', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const u1 = await s.connectUser(webCom1.hub.identity.tcpPort, tc);
    const u2 = await s.connectUser(webCom1.hub.identity.tcpPort, tc);
    const u3 = await s.connectUser(dbVm.hub.identity.tcpPort, tc);
    await waitUntil(() => webCom1.hub.clients.size === 2 && dbVm.hub.clients.size === 1, 3000, 'clients attached');

    const j = await admin('who', '--json');
    assert.equal(j.code, 0, j.stderr);
    const who = JSON.parse(j.stdout) as ClientView[];
    assert.equal(who.length, 3);
    const onWeb = who.filter((x) => x.vm === 'adm-web01:com1');
    assert.equal(onWeb.length, 2);
    for (const x of who) {
      assert.equal(x.mode, 'readwrite');
      assert.equal(x.tls, false);
      assert.equal(x.method, 'telnet');
      assert.match(x.peer, /127\.0\.0\.1:\d+$/);
      assert.ok(x.connectedSince);
    }
    const table = await admin('who');
    assert.match(table.stdout, /^ID\s+VM\s+PORT\s+MODE\s+VIA\s+PEER\s+SINCE$/m);
    assert.match(table.stdout, new RegExp(`^${onWeb[0].id}\\s+adm-web01:com1\\s+${webCom1.hub.identity.tcpPort}\\s+readwrite\\s+telnet\\s+`, 'm'));

    const first = [...webCom1.hub.clients].map((x) => x.id).sort((a, b) => a - b)[0];
    const k1 = await admin('kick', 'adm-web01:com1', '--client', String(first));
    assert.equal(k1.code, 0, k1.stderr);
    assert.match(k1.stdout, new RegExp(`^disconnected from adm-web01:com1 \\(port ${webCom1.hub.identity.tcpPort}\\): #${first} \\S+\\n$`));
    const kicked = [u1, u2].find((u) => u.text.includes('disconnected by the administrator'));
    assert.ok(kicked, 'the kicked client was told');
    await kicked.whenClosed(3000);
    assert.equal(webCom1.hub.clients.size, 1);

    const unknown = await admin('kick', 'adm-web01:com1', '--client', '999999');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no client 999999 on adm-web01:com1/);

    const all = await admin('kick', 'adm-web01:com1');
    assert.equal(all.code, 0, all.stderr);
    await waitUntil(() => webCom1.hub.clients.size === 0, 3000, 'all kicked');
    assert.equal(dbVm.hub.clients.size, 1, 'clients of other VMs stay');
    assert.equal(u3.closed, false);
    const empty = await admin('kick', 'adm-web01:com1');
    assert.match(empty.stdout, /^adm-web01:com1 \(port \d+\) has no clients\n$/);
    // The VM connection itself is untouched.
    assert.equal(webCom1.hub.source !== null, true);
  });

  test('set-port moves a VM serial port (clients follow the new port); taken and reserved ports are refused', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const hub = webCom2.hub;
    const before = hub.identity.tcpPort;
    const used = new Set(s.server.registry.all().map((h) => h.identity.tcpPort));
    let target = s.config.portRange.end;
    while (used.has(target)) target--;

    const r = await admin('set-port', 'adm-web01:com2', String(target));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `moved adm-web01:com2 from port ${before} to ${target}\n`);
    assert.equal(hub.identity.tcpPort, target);
    await waitUntil(() => canBind(before), 3000, 'old port released');
    const user = await s.connectUser(target, tc);
    webCom2.vm.send('on the new port\r\n');
    await user.waitFor('on the new port', 3000);
    const listed = JSON.parse((await admin('list', '--json')).stdout) as PortView[];
    assert.equal(listed.find((p) => p.label === 'com2')?.port, target);

    const same = await admin('set-port', String(target), String(target));
    assert.equal(same.stdout, `adm-web01:com2 is already on port ${target}\n`);

    const taken = await admin('set-port', 'adm-web01:com2', String(dbVm.hub.identity.tcpPort));
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, new RegExp(`^vspc-admin: port ${dbVm.hub.identity.tcpPort} is used by adm-db01 \\(port ${dbVm.hub.identity.tcpPort}\\)\\n$`));
    const own = await admin('set-port', 'adm-web01:com2', String(s.adminPort));
    assert.equal(own.code, 1);
    assert.match(own.stderr, /is one of vspc's own listener ports/);
    // A port out of range is a usage error (exit 2, as --help says), before the API is asked; the API refuses it too.
    const bad = await admin('set-port', 'adm-web01:com2', '70000');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^vspc-admin: error: command-argument value '70000' is invalid for argument 'port'\. "70000" is not a port number; give a TCP port, 1-65535\.\n$/);
    const api = await fetch(`http://${s.adminAddress}/api/v1/set-port?vm=adm-web01:com2&port=70000`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(api.status, 400);
    assert.match(((await api.json()) as { error: { message: string } }).error.message, /port must be an integer 1-65535, got "70000"/);
    assert.equal(hub.identity.tcpPort, target, 'refused moves change nothing');
  });

  test('log shows the end of the console log', async () => {
    dbVm.vm.send('log line one\r\nlog line two\r\nlog line three\r\n');
    await waitUntil(async () => (await admin('log', 'adm-db01', '--tail', '3')).stdout.includes('log line three'), 5000, 'console log has the lines');
    const r = await admin('log', 'adm-db01', '--tail', '2');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.split('\n').length <= 3, r.stdout);
    assert.match(r.stdout, /log line three/);
    assert.doesNotMatch(r.stdout, /log line one/);
    const bad = await admin('log', 'adm-db01', '--tail', '0');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /lines must be an integer 1-10000/);
  });

  test('rotate-logs rotates one console log, or all', async () => {
    const { existsSync } = await import('node:fs');
    const { join } = await import('node:path');
    const file = join(logDir.dir, `${formatted(db.hex)}.log`);
    await waitUntil(() => existsSync(file), 3000, 'console log file');
    const one = await admin('rotate-logs', 'adm-db01');
    assert.equal(one.code, 0, one.stderr);
    assert.equal(one.stdout, 'rotated the console log of adm-db01\n');
    assert.ok(existsSync(`${file}.1`), 'rotated file');
    const all = await admin('rotate-logs');
    assert.equal(all.code, 0, all.stderr);
    assert.equal(all.stdout, 'rotated the console logs of all VM serial ports\n');
  });

  test('status: version, uptime and counts', async () => {
    const r = await admin('status');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^version: \d+\.\d+\.\d+$/m);
    assert.match(r.stdout, /^uptimeSeconds: \d+$/m);
    assert.match(r.stdout, /^vmPorts: 3$/m);
    assert.match(r.stdout, /^vmPortsConnected: 3$/m);
    assert.match(r.stdout, /^vmotions: begun=1 completed=0 aborted=1 /m);
    const j = JSON.parse((await admin('status', '--json')).stdout) as Record<string, unknown>;
    assert.equal(j.vmPorts, 3);
  });

  test('reload without a configuration source says so', async () => {
    const r = await admin('reload');
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'vspc-admin: this vspc has no configuration to re-read\n');
  });

  test('forget drops a VM serial port and frees its port (last: it changes the set)', async () => {
    const port = webCom2.hub.identity.tcpPort;
    const r = await admin('forget', 'adm-web01:com2');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `forgot adm-web01:com2 (port ${port} is free again)\n`);
    await webCom2.vm.whenClosed(3000);
    const rows = JSON.parse((await admin('list', '--json')).stdout) as PortView[];
    assert.deepEqual(rows.map((p) => `${p.name}:${p.label}`).sort(), ['adm-db01:', 'adm-web01:com1']);
    await waitUntil(() => canBind(port), 3000, 'port released');
  });
});

describe('vspc-admin log and rotate-logs without console logs', () => {
  test('answers that console logging is off', async (t) => {
    const c = new Cleanup();
    const s = await TestServer.start({ ports: 2 });
    t.after(async () => {
      await c.run();
      await s.dispose();
    });
    const u = esxiUuid();
    await s.connectVm({ uuid: u.text, name: 'nolog' }, c);
    for (const args of [['log', 'nolog'], ['rotate-logs']]) {
      const r = await vspcAdmin(s.adminAddress, args);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'vspc-admin: console logging is off (start vspc with --log-dir)\n');
    }
  });
});

test('list with no consoles: the empty message names every kind of console, and configured tunnels still show with their problems', async (t) => {
  const s = await TestServer.start({ ports: 4, config: { tunnels: [{ name: 'lonely', console: 'not-there', forwards: [] }] } });
  t.after(() => s.dispose());
  const r = await vspcAdmin(s.adminAddress, ['list']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^No consoles yet: .*ESXi.*consoles:.*discover:/);
  assert.match(r.stdout, /^TUNNEL\s+CONSOLE\s+LINK\s+RTT/m);
  assert.match(r.stdout, /^lonely\s+-\s+no console\s/m);
  assert.match(r.stdout, /^! tunnel lonely: no console matches "not-there" \(yet\)$/m);
  // A pattern or a state filters consoles, and the tunnels with them.
  const filtered = await vspcAdmin(s.adminAddress, ['list', 'web*']);
  assert.equal(filtered.stdout, 'No VM serial port matches "web*".\n');
});
