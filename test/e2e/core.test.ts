/**
 * The vSPC core, end to end over real loopback sockets: simulated ESXi VMs register,
 * show up in the admin API and CLI, and stream binary-safe data to and from telnet
 * users; sticky ports survive renames, reconnects and restarts; telnets works; a
 * stolen port does not stop the server; people who telnet to the VM port are told
 * what it is.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { WILL, DONT, Option } from '../../src/protocol/telnet/constants.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { SimulatedVm, TelnetUser, type NegotiationOrder, type Segmentation } from '../support/sim/index.js';
import type { PortView } from '../../src/admin/views.js';
import {
  TestServer,
  Cleanup,
  esxiUuid,
  binaryPayload,
  settle,
  waitUntil,
  withTimeout,
  tempDir,
  makeCert,
} from '../support/server.js';
import { vspcAdmin } from '../support/cli.js';

function formatted(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

async function portOf(s: TestServer, uuidHex: string, label = ''): Promise<PortView> {
  const all = await s.ports();
  const p = all.find((x) => x.uuid === formatted(uuidHex) && x.label === label);
  assert.ok(p, `VM ${uuidHex}/${label} not in the admin API list: ${JSON.stringify(all)}`);
  return p;
}

describe('vSPC core (one shared server)', () => {
  let s: TestServer;
  before(async () => {
    s = await TestServer.start({ ports: 40 });
  });
  after(async () => {
    await s?.dispose();
  });

  test('a VM negotiates like ESXi expects and appears in the admin API and in vspc-admin list', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const { vm, hub } = await s.connectVm({ uuid: u.text, name: 'web-01' }, c);

    // What the concentrator answered.
    assert.deepEqual(vm.refusedByProxy, [{ side: 'us', option: Option.AUTHENTICATION }], 'AUTHENTICATION refused');
    assert.ok(vm.negotiationsFromProxy.some((n) => n.verb === DONT && n.option === Option.AUTHENTICATION), 'DONT AUTHENTICATION sent');
    for (const opt of [Option.BINARY, Option.SGA, Option.ECHO]) {
      assert.ok(vm.negotiationsFromProxy.some((n) => n.verb === WILL && n.option === opt), `WILL ${opt} sent`);
      assert.equal(vm.isEnabled('him', opt), true, `proxy performs option ${opt}`);
    }
    assert.equal(vm.isEnabled('us', Option.VMWARE_EXT), true);
    assert.equal(vm.isEnabled('us', Option.BINARY), true);
    assert.ok(vm.knownSuboptionsFromProxy, 'KNOWN-SUBOPTIONS-2 received');
    assert.ok(vm.knownSuboptionsFromProxy.includes(Ext.KNOWN_SUBOPTIONS_2));
    assert.ok(vm.knownSuboptionsFromProxy.includes(Ext.UNKNOWN_SUBOPTION_RCVD_2));
    assert.equal(vm.proxyAnswer, 'will');
    assert.ok(vm.identityRequests.uuid >= 1 && vm.identityRequests.name >= 1, 'proxy asked GET-VM-VC-UUID and GET-VM-NAME');
    assert.equal(hub.identity.name, 'web-01');

    const port = hub.identity.tcpPort;
    assert.ok(port >= s.config.portRange.start && port <= s.config.portRange.end);
    const user = await s.connectUser(port, c);
    await waitUntil(() => hub.clients.size === 1, 2000, 'client counted');

    const api = await portOf(s, u.hex);
    assert.equal(api.name, 'web-01');
    assert.equal(api.uuid, formatted(u.hex));
    assert.equal(api.label, '');
    assert.equal(api.port, port);
    assert.equal(api.connected, true);
    assert.equal(api.state, 'connected');
    assert.equal(api.clients, 1);
    assert.equal(api.listenError, null);

    const json = await vspcAdmin(s.adminAddress, ['list', '--json']);
    assert.equal(json.code, 0, json.stderr);
    const rows = JSON.parse(json.stdout) as PortView[];
    const row = rows.find((r) => r.uuid === formatted(u.hex));
    assert.ok(row, json.stdout);
    assert.equal(row.name, 'web-01');
    assert.equal(row.label, '');
    assert.equal(row.port, port);
    assert.equal(row.connected, true);
    assert.equal(row.clients, 1);

    const table = await vspcAdmin(s.adminAddress, ['list']);
    assert.equal(table.code, 0, table.stderr);
    const lines = table.stdout.split('\n');
    assert.match(lines[0], /^PORT\s+TLS\s+KIND\s+NAME\s+LABEL\s+STATE\s+CLIENTS\s+SOURCE\s+KEY$/);
    const line = lines.find((l) => l.includes(formatted(u.hex)));
    assert.ok(line, table.stdout);
    assert.match(line, new RegExp(`^${port}\\s+-\\s+esxi\\s+web-01\\s+-\\s+connected\\s+1\\s+127\\.0\\.0\\.1:${vm.localPort}\\s+${formatted(u.hex)}$`));
    await user.close();
    await vm.close();
  });

  const orders: NegotiationOrder[] = ['host-first', 'proxy-first', 'shuffled'];
  const segmentations: Segmentation[] = ['whole', 'bytewise', 'random'];
  for (const order of orders) {
    for (const segmentation of segmentations) {
      test(`registers with order ${order} and segmentation ${segmentation}`, async (t) => {
        const c = new Cleanup();
        t.after(() => c.run());
        const u = esxiUuid();
        const name = `vm-${order}-${segmentation}`;
        const { vm, hub } = await s.connectVm(
          { uuid: u.text, name, order, segmentation, seed: order.length * 31 + segmentation.length, comPort: true },
          c,
        );
        assert.equal(vm.proxyAnswer, 'will');
        assert.ok(vm.knownSuboptionsFromProxy?.includes(1) && vm.knownSuboptionsFromProxy.includes(3));
        assert.deepEqual(vm.refusedByProxy, [{ side: 'us', option: Option.AUTHENTICATION }]);
        await waitUntil(() => hub.identity.name === name, 2000, 'name recorded');
        await waitUntil(() => vm.uartAcks.length === 4, 2000, 'UART acknowledged');
        // And serial data passes right after the handshake.
        const user = await s.connectUser(hub.identity.tcpPort, c);
        const m = user.mark();
        const payload = Buffer.from([13, 0, 255, 13, 10, 0, 255, 255, 65]);
        vm.send(payload);
        const got = await user.waitFor(payload.length, 3000, m);
        assert.deepEqual([...got], [...payload]);
        await vm.close();
      });
    }
  }

  test('binary-safe data both ways: all 256 byte values, several KiB, IAC, CR NUL, CR LF; two users', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const { vm, hub } = await s.connectVm({ uuid: u.text, name: 'bin' }, c);
    const a = await s.connectUser(hub.identity.tcpPort, c);
    const b = await s.connectUser(hub.identity.tcpPort, c);
    await waitUntil(() => hub.clients.size === 2, 2000, 'two clients');

    const out = binaryPayload(24 * 1024, 3);
    assert.equal(new Set(out).size, 256);
    const ma = a.mark();
    const mb = b.mark();
    for (let i = 0; i < out.length; i += 1000) vm.send(out.subarray(i, i + 1000));
    const gotA = await a.waitFor(out.length, 5000, ma);
    const gotB = await b.waitFor(out.length, 5000, mb);
    assert.ok(gotA.equals(out), 'user A got the VM output unchanged');
    assert.ok(gotB.equals(out), 'user B got the VM output unchanged');

    const inA = binaryPayload(8 * 1024, 5);
    const inB = binaryPayload(6 * 1024, 7);
    a.send(inA);
    await vm.waitForInput(inA.length, 5000);
    b.send(inB);
    const input = await vm.waitForInput(inA.length + inB.length, 5000);
    assert.ok(input.equals(Buffer.concat([inA, inB])), 'input from both users reached the VM unchanged and in order');
    await settle(vm, a, b);
    assert.equal(vm.input.length, inA.length + inB.length, 'nothing extra reached the VM');
    assert.equal(a.received.length - ma, out.length, 'nothing extra reached user A');
  });

  test('a handshake and serial data in one TCP segment: the data is decoded in the negotiated BINARY mode', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const first = await s.connectVm({ uuid: u.text, name: 'merge' }, c);
    const user = await s.connectUser(first.hub.identity.tcpPort, c);
    await first.vm.close();
    await user.waitFor('VM disconnected', 3000);
    const m = user.mark();
    const data = Buffer.from([65, 13, 0, 66, 13, 10, 67, 255, 255, 68, 13, 0]);
    // The whole opening (WILL BINARY ... DO-PROXY, UUID, NAME) plus raw binary data in one write.
    const vm = await SimulatedVm.connect({
      host: '127.0.0.1',
      port: s.proxyPort,
      uuid: u.text,
      name: 'merge',
      unsolicitedIdentity: true,
      segmentation: 'whole',
      injectAfterOpening: data,
    });
    c.add(() => vm.destroy());
    const expected = Buffer.from([65, 13, 0, 66, 13, 10, 67, 255, 68, 13, 0]);
    const got = await user.waitFor(expected, 3000, m);
    assert.ok(got.subarray(got.length - expected.length).equals(expected), `got ${JSON.stringify([...got])}`);
  });

  test('a client connecting while the VM is away is told so, stays, and sees output when the VM returns', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const first = await s.connectVm({ uuid: u.text, name: 'away' }, c);
    const port = first.hub.identity.tcpPort;
    await first.vm.close();
    await waitUntil(() => first.hub.source === null, 2000, 'VM disconnected');

    const user = await s.connectUser(port, c, 'VM is not connected; you will see its output when it comes back');
    user.send('typed while away\r');
    // The clock: a silent connection to the VM port is closed once humanTimeoutMs has
    // passed in the server; by then (and after the barrier) the client is still there.
    const silent = net.connect({ host: '127.0.0.1', port: s.proxyPort });
    c.add(() => silent.destroy());
    silent.on('error', () => undefined);
    silent.resume();
    await withTimeout(new Promise((r) => silent.once('close', r)), s.config.humanTimeoutMs + 3000, 'silent VM-port connection closed');
    await user.barrier();
    assert.equal(user.closed, false, 'client stays connected while the VM is away');
    assert.equal((await portOf(s, u.hex)).connected, false);

    const m = user.mark();
    const { vm } = await s.connectVm({ uuid: u.text, name: 'away' }, c);
    await user.waitFor('VM connected', 3000, m);
    const m2 = user.mark();
    vm.send('boot: hello\r\n');
    await user.waitFor('boot: hello\r\n', 3000, m2);
    user.send('root\r');
    await vm.waitForInput('root\r', 3000);
    assert.equal(vm.input.toString('latin1'), 'root\r', 'input typed while away was not delivered later');
  });

  test('two serial ports of one VM (com1, com2) get two different ports', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const one = await s.connectVm({ uuid: u.text, name: 'dual', serviceUri: 'vSPC.py?port=com1' }, c);
    const two = await s.connectVm({ uuid: u.text, name: 'dual', serviceUri: 'vSPC.py?port=com2' }, c);
    assert.notEqual(one.hub, two.hub);
    assert.notEqual(one.hub.identity.tcpPort, two.hub.identity.tcpPort);
    const p1 = await portOf(s, u.hex, 'com1');
    const p2 = await portOf(s, u.hex, 'com2');
    assert.equal(p1.port, one.hub.identity.tcpPort);
    assert.equal(p2.port, two.hub.identity.tcpPort);
    assert.equal(p1.connected && p2.connected, true);

    // Each port carries its own serial line.
    const u1 = await s.connectUser(p1.port, c);
    const u2 = await s.connectUser(p2.port, c);
    const m1 = u1.mark();
    const m2 = u2.mark();
    one.vm.send('from com1\n');
    two.vm.send('from com2\n');
    await u1.waitFor('from com1\n', 3000, m1);
    await u2.waitFor('from com2\n', 3000, m2);
    assert.ok(!u1.text.includes('from com2') && !u2.text.includes('from com1'));
    u2.send('to com2');
    await two.vm.waitForInput('to com2', 3000);
    assert.equal(one.vm.input.length, 0);
  });

  test('rename: the same UUID reconnecting with a new name keeps its port; list shows the new name', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const first = await s.connectVm({ uuid: u.text, name: 'old-name' }, c);
    const port = first.hub.identity.tcpPort;
    assert.equal((await portOf(s, u.hex)).name, 'old-name');
    await first.vm.close();
    await waitUntil(() => first.hub.source === null, 2000, 'VM disconnected');
    const second = await s.connectVm({ uuid: u.text, name: 'new-name ✓' }, c);
    assert.equal(second.hub.identity.tcpPort, port);
    await waitUntil(() => second.hub.identity.name === 'new-name ✓', 2000, 'renamed');
    const view = await portOf(s, u.hex);
    assert.equal(view.port, port);
    assert.equal(view.name, 'new-name ✓');
    const cli = await vspcAdmin(s.adminAddress, ['list', '--json']);
    const row = (JSON.parse(cli.stdout) as PortView[]).find((r) => r.uuid === formatted(u.hex));
    assert.equal(row?.name, 'new-name ✓');
    assert.equal(row?.port, port);
  });

  test('unsolicited VM-VC-UUID and VM-NAME before DO-PROXY identify the VM', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    // The simulator does not answer GET-VM-VC-UUID/GET-VM-NAME: only the unsolicited ones can identify it.
    const { vm, hub } = await s.connectVm({ uuid: u.text, name: 'eager', unsolicitedIdentity: true, answerIdentityRequests: false }, c);
    assert.equal(hub.identity.name, 'eager');
    assert.equal(vm.proxyAnswer, 'will');
    const user = await s.connectUser(hub.identity.tcpPort, c);
    const m = user.mark();
    vm.send('ok');
    await user.waitFor('ok', 3000, m);
  });

  test('COM-PORT: the guest UART settings are acknowledged with code + 100 and the value in effect', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const u = esxiUuid();
    const { vm, hub } = await s.connectVm(
      { uuid: u.text, name: 'uart', comPort: true, uart: { baudRate: 115200, dataSize: 7, parity: 3, stopSize: 2 } },
      c,
    );
    assert.equal(vm.isEnabled('us', Option.COM_PORT), true, 'proxy said DO COM-PORT');
    await waitUntil(() => vm.uartAcks.length === 4, 3000, 'four COM-PORT acknowledgements');
    const byCode = new Map(vm.uartAcks.map((a) => [a.code, [...a.value]]));
    assert.deepEqual(byCode.get(101), [0, 1, 0xc2, 0x00]);
    assert.deepEqual(byCode.get(102), [7]);
    assert.deepEqual(byCode.get(103), [3]);
    assert.deepEqual(byCode.get(104), [2]);
    assert.equal(hub.source !== null, true, 'the VM stays connected');
    // Reported before identification, yet recorded on the VM serial port.
    assert.deepEqual(hub.lineSettings, { baudRate: 115200, dataSize: 7, parity: 'even', stopBits: '2' });
  });

  test('a person typing `telnet host <vm port>` gets an explanation mentioning vspc-admin list and is closed', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const from = s.logs.lines.length;
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: s.proxyPort });
    c.add(() => user.destroy());
    await user.waitFor('vspc-admin list', 3000);
    await user.whenClosed(3000);
    assert.match(user.text, /virtual serial port concentrator/);
    assert.ok(user.negotiationsReceived.some((n) => n.option === Option.VMWARE_EXT), 'the proxy asked for option 232');
    const line = await s.logs.waitFor((l) => l.message === 'peer is not an ESXi host; explained and closed', 2000, from);
    assert.equal(line.reason, 'peer refused option 232');
  });

  test('a raw TCP client that sends nothing gets the explanation after humanTimeoutMs and is closed', async (t) => {
    const c = new Cleanup();
    t.after(() => c.run());
    const started = Date.now();
    const sock = net.connect({ host: '127.0.0.1', port: s.proxyPort });
    c.add(() => sock.destroy());
    let text = '';
    sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
    sock.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not closed; got ${JSON.stringify(text)}`)), 3000);
      sock.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= s.config.humanTimeoutMs - 20, `closed after ${elapsed} ms, before humanTimeoutMs`);
    assert.match(text, /vspc-admin list/);
    assert.ok(text.startsWith('\xff'), 'the negotiation offers came first');
  });
});

describe('vSPC core: restarts, TLS and stolen ports (own servers)', () => {
  test('restart with the same database: the VM reconnects to the same port and a client can attach', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const dbPath = join(dir.dir, 'vspc.db');
    const s1 = await TestServer.start({ dbPath, ports: 4 });
    tc.add(() => s1.dispose());
    // Take the first port with another VM so that the interesting one is not at the range start.
    const other = esxiUuid();
    const o = await s1.connectVm({ uuid: other.text, name: 'other' }, tc);
    const u = esxiUuid();
    const first = await s1.connectVm({ uuid: u.text, name: 'sticky' }, tc);
    const port = first.hub.identity.tcpPort;
    assert.notEqual(port, o.hub.identity.tcpPort);
    await o.vm.close();
    await s1.close();
    await first.vm.whenClosed(3000);

    const s2 = await TestServer.start({ dbPath, portRange: s1.config.portRange });
    tc.add(() => s2.dispose());
    // The port is listening before the VM is back.
    const early = await s2.connectUser(port, tc, 'VM is not connected');
    const { vm, hub } = await s2.connectVm({ uuid: u.text, name: 'sticky' }, tc);
    assert.equal(hub.identity.tcpPort, port);
    await early.waitFor('VM connected', 3000);
    const user = await s2.connectUser(port, tc);
    const m = user.mark();
    vm.send(Buffer.from([1, 2, 255, 3]));
    const got = await user.waitFor(4, 3000, m);
    assert.deepEqual([...got], [1, 2, 255, 3]);
    user.send('after restart');
    await vm.waitForInput('after restart', 3000);
    assert.equal((await portOf(s2, u.hex)).port, port);
  });

  test('telnets: a VM over TLS registers on proxyTls, a telnet user over TLS exchanges data on port + offset', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const { cert, key } = makeCert(dir.dir);
    const s = await TestServer.start({ tls: { cert, key }, ports: 4 });
    tc.add(() => s.dispose());
    const u = esxiUuid();
    const vm = await SimulatedVm.connect({
      host: '127.0.0.1',
      port: s.proxyTlsPort,
      tls: { ca: cert, servername: 'localhost' },
      uuid: u.text,
      name: 'secure',
      segmentation: 'random',
    });
    tc.add(() => vm.destroy());
    await vm.whenProxied(5000);
    const hub = await s.waitRegistered(u.text);
    const view = await portOf(s, u.hex);
    assert.equal(view.tlsPort, hub.identity.tcpPort + s.config.tlsPortOffset);
    assert.equal(view.listenError, null);

    const user = await TelnetUser.connect({ host: '127.0.0.1', port: view.tlsPort!, tls: { ca: cert, servername: 'localhost' } });
    tc.add(() => user.destroy());
    await user.waitForOptions([
      ['us', Option.BINARY],
      ['him', Option.BINARY],
    ]);
    await user.waitFor('[vspc: ', 3000);
    await user.barrier();
    const m = user.mark();
    const out = binaryPayload(4096, 11);
    vm.send(out);
    assert.ok((await user.waitFor(out.length, 5000, m)).equals(out));
    const input = binaryPayload(2048, 13);
    user.send(input);
    assert.ok((await vm.waitForInput(input.length, 5000)).equals(input));
  });

  test('a stored port held by another program: no crash, listenError shown and logged, retried once free', async (t) => {
    const tc = new Cleanup();
    t.after(() => tc.run());
    const dir = tempDir();
    tc.add(dir.remove);
    const dbPath = join(dir.dir, 'vspc.db');
    const s1 = await TestServer.start({ dbPath, ports: 4 });
    tc.add(() => s1.dispose());
    const ua = esxiUuid();
    const ub = esxiUuid();
    const a1 = await s1.connectVm({ uuid: ua.text, name: 'victim' }, tc);
    const b1 = await s1.connectVm({ uuid: ub.text, name: 'bystander' }, tc);
    const portA = a1.hub.identity.tcpPort;
    const portB = b1.hub.identity.tcpPort;
    await s1.close();

    const blocker = net.createServer((sock) => sock.destroy());
    await new Promise<void>((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen({ host: '127.0.0.1', port: portA, exclusive: true }, () => resolve());
    });
    tc.add(() => new Promise<void>((r) => blocker.close(() => r())));

    const s2 = await TestServer.start({ dbPath, portRange: s1.config.portRange, config: { bindRetryMs: 300 } });
    tc.add(() => s2.dispose());
    const warn = await s2.logs.waitFor((l) => l.message === 'cannot bind VM client port; will retry' && l.port === portA, 3000);
    assert.equal(warn.errorCode, 'EADDRINUSE');
    const viewA = await portOf(s2, ua.hex);
    assert.match(viewA.listenError ?? '', /EADDRINUSE/);
    assert.equal((await portOf(s2, ub.hex)).listenError, null);
    const table = await vspcAdmin(s2.adminAddress, ['list']);
    assert.equal(table.code, 0);
    assert.match(table.stdout, new RegExp(`^${portA}!`, 'm'));
    assert.match(table.stdout, new RegExp(`! port ${portA}: .*EADDRINUSE`));

    // The other VM works, and the victim itself still registers on its sticky port.
    const b2 = await s2.connectVm({ uuid: ub.text, name: 'bystander' }, tc);
    const a2 = await s2.connectVm({ uuid: ua.text, name: 'victim' }, tc);
    assert.equal(a2.hub.identity.tcpPort, portA);
    const userB = await s2.connectUser(portB, tc);
    const mb = userB.mark();
    b2.vm.send('still fine');
    await userB.waitFor('still fine', 3000, mb);

    // Free the port: the retry binds it and a client reaches the victim.
    await new Promise<void>((r) => blocker.close(() => r()));
    await waitUntil(async () => (await portOf(s2, ua.hex)).listenError === null, 3000, 'listener bound after retry');
    const userA = await s2.connectUser(portA, tc);
    const ma = userA.mark();
    a2.vm.send('victim back');
    await userA.waitFor('victim back', 3000, ma);
  });
});
