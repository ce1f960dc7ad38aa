/**
 * Hostile peers on the VM port, end to end (issue 11, items 3, 4, 5 and the condemned
 * connection), with real sockets from several loopback addresses (127.0.0.x are other
 * "hosts"): an impostor claiming a live VM's UUID, a VM gone silent, bursts of
 * claimants, floods of connections that never identify (from one address and from
 * many), a vMotion destination arriving during a flood, random UUIDs registered fast,
 * the quick expiry of records nobody used, the allow-list, and pipelined vMotion
 * secret guesses. Each asserts what is observable: bytes on sockets, log lines,
 * /metrics, records.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { SimulatedVm } from '../support/sim/index.js';
import { startServer, esxiUuid, waitUntil, makeCert, tempDir, type Cleanup, type TestServer } from '../support/server.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { IAC, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import type { PortView } from '../../src/admin/views.js';
import { TAKEOVER_LABELS, VM_REFUSAL_LABELS } from '../../src/admin/metrics.js';
import { VM_REFUSAL_REASONS } from '../../src/sources/esxi/listener.js';
import { TAKEOVER_RESULTS } from '../../src/sources/esxi/session.js';
import { parseCidr } from '../../src/util/cidr.js';
import { writeUntilClosed } from '../support/flood.js';

/** The /metrics samples, by name with labels (`vspc_x{a="b"}`). */
async function metrics(ts: TestServer): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${ts.adminPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^(\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

async function vmFrom(ts: TestServer, cleanup: Cleanup, localAddress: string, o: { uuid: string; name: string } & Partial<Parameters<typeof SimulatedVm.connect>[0]>): Promise<SimulatedVm> {
  const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: ts.proxyPort, localAddress, ...o });
  cleanup.add(() => vm.destroy());
  return vm;
}

/** Opens `count` raw connections from `localAddress` that send IAC WILL 232 and then nothing; `closed` counts the ones vspc closed. */
async function silentFlood(ts: TestServer, cleanup: Cleanup, localAddress: string, count: number): Promise<{ sockets: net.Socket[]; closed: () => number }> {
  const sockets: net.Socket[] = [];
  let closed = 0;
  // In batches, so that the listen backlog never overflows (a dropped SYN costs a 1 s retransmission).
  for (let i = 0; i < count; i += 100) {
    await Promise.all(
      Array.from({ length: Math.min(100, count - i) }, () =>
        new Promise<void>((resolve) => {
          const s = net.connect({ host: '127.0.0.1', port: ts.proxyPort, localAddress });
          s.on('error', () => undefined);
          s.on('close', () => closed++);
          s.resume();
          s.once('connect', () => {
            s.write(Buffer.of(IAC, WILL, Option.VMWARE_EXT));
            resolve();
          });
          s.once('close', () => resolve());
          sockets.push(s);
          cleanup.add(() => s.destroy());
        }),
      ),
    );
  }
  return { sockets, closed: () => closed };
}

describe('impersonation: a second connection with a live VM\'s UUID', () => {
  test('is refused when the VM answers the probe: the client keeps typing to the real VM, no rename, a security line, counted', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const u = esxiUuid();
    const real = await vmFrom(ts, cleanup, '127.0.0.1', { uuid: u.text, name: 'web01' });
    await real.whenProxied();
    const hub = await ts.waitRegistered(u.text);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);

    const evil = await vmFrom(ts, cleanup, '127.0.0.2', { uuid: u.text, name: 'evil' });
    await evil.whenProxied();
    evil.send('fake login: ');
    await evil.whenClosed(5000);
    const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_VM_ALIVE' && l.peer === evil.peerName, 3000);
    assert.equal(line.security, true);
    assert.equal(line.livePeer, real.peerName);
    assert.equal(line.claimedName, 'evil');

    user.send('secret');
    await real.waitForInput('secret', 3000);
    real.send('marker');
    await user.waitFor('marker', 3000);
    assert.ok(!user.text.includes('fake login'), 'the impostor never reached the client');
    assert.equal(hub.source?.peer, real.peerName);
    assert.equal(hub.identity.name, 'web01');
    assert.equal((await ts.ports()).find((p) => p.port === hub.identity.tcpPort)?.name, 'web01');
    const m = await metrics(ts);
    assert.equal(m.get('vspc_vm_supersedes_total{result="refused"}'), 1);
    assert.equal(m.get('vspc_vm_connections_refused_total{reason="live-vm"}'), 1);
  });

  test('a VM that stopped answering (half-open) is replaced after the probe deadline; the newcomer\'s early output and name follow', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { takeoverProbeTimeoutMs: 300 } });
    const u = esxiUuid();
    // Identified by its unsolicited UUID; it never answers GET-VM-VC-UUID: a host that froze.
    const frozen = await vmFrom(ts, cleanup, '127.0.0.1', { uuid: u.text, name: 'web01', unsolicitedIdentity: true, answerIdentityRequests: false });
    await frozen.whenProxied();
    const hub = await ts.waitRegistered(u.text);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);

    const next = await vmFrom(ts, cleanup, '127.0.0.2', { uuid: u.text, name: 'web01-moved' });
    await next.whenProxied();
    next.send('booted ');
    await ts.logs.waitFor((l) => l.message === 'VM serial port reconnected' && l.peer === next.peerName && l.takeover === 'unanswered', 5000);
    await frozen.whenClosed(3000);
    assert.ok(ts.logs.find((l) => l.peer === frozen.peerName && l.errorCode === 'VSPC_PROBE_UNANSWERED'));
    await user.waitFor('booted ', 3000);
    user.send('hello');
    await next.waitForInput('hello', 3000);
    await waitUntil(() => hub.identity.name === 'web01-moved', 3000, 'renamed by the winner');
    assert.equal((await metrics(ts)).get('vspc_vm_supersedes_total{result="unanswered"}'), 1);
  });

  test('a reconnect from the same address takes over at once, without a probe', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const u = esxiUuid();
    const { vm: old, hub } = await ts.connectVm({ uuid: u.text, name: 'web01' }, cleanup);
    const again = await vmFrom(ts, cleanup, '127.0.0.1', { uuid: u.text, name: 'web01' });
    await again.whenProxied();
    await old.whenClosed(3000);
    await waitUntil(() => hub.source?.peer === again.peerName, 3000, 'reconnected');
    assert.equal((await metrics(ts)).get('vspc_vm_supersedes_total{result="same-address"}'), 1);
  });

  test('40 takeover attempts in a burst from 40 addresses: all refused while the VM answers', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const u = esxiUuid();
    const real = await vmFrom(ts, cleanup, '127.0.0.1', { uuid: u.text, name: 'web01' });
    await real.whenProxied();
    const hub = await ts.waitRegistered(u.text);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const claimants = await Promise.all(Array.from({ length: 40 }, (_, i) => vmFrom(ts, cleanup, `127.0.1.${i + 1}`, { uuid: u.text, name: `evil-${i}` })));
    await Promise.all(claimants.map((c) => c.whenClosed(10_000)));
    await waitUntil(() => ts.logs.filter((l) => l.errorCode === 'VSPC_VM_ALIVE').length === 40, 3000, '40 refusals logged');
    user.send('still here');
    await real.waitForInput('still here', 3000);
    await real.barrier();
    assert.equal(hub.source?.peer, real.peerName);
    assert.equal(hub.identity.name, 'web01');
    const m = await metrics(ts);
    assert.equal(m.get('vspc_vm_supersedes_total{result="refused"}'), 40);
    assert.equal(m.get('vspc_vm_connections_refused_total{reason="live-vm"}'), 40);
  });
});

describe('shared pools: connections that never identify', () => {
  test('1,100 silent connections from one address: it gets its share, a VM from another address and a vMotion destination still get in', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { identifyTimeoutMs: 60_000, humanTimeoutMs: 60_000 } });
    const u = esxiUuid();
    const { vm: source, hub } = await ts.connectVm({ uuid: u.text, name: 'mover' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);

    const flood = await silentFlood(ts, cleanup, '127.0.0.2', 1100);
    const perAddress = ts.config.maxUnidentifiedPerAddress;
    await waitUntil(() => flood.closed() === 1100 - perAddress, 10_000, 'all but the per-address share refused');
    const line = ts.logs.find((l) => l.errorCode === 'VSPC_ADDRESS_UNIDENTIFIED_LIMIT');
    assert.equal(line?.security, true);
    assert.equal(line?.address, '127.0.0.2');
    assert.equal(ts.logs.filter((l) => l.errorCode === 'VSPC_ADDRESS_UNIDENTIFIED_LIMIT').length, 1, 'one line per 10 s, not one per connection');
    assert.equal((await metrics(ts)).get('vspc_vm_connections_refused_total{reason="address-limit"}'), 1100 - perAddress);

    // A new VM from another host.
    const other = esxiUuid();
    const newcomer = await vmFrom(ts, cleanup, '127.0.0.3', { uuid: other.text, name: 'newcomer' });
    await newcomer.whenProxied();
    await ts.waitRegistered(other.text);

    // A vMotion whose destination host arrives during the flood.
    const seq = Buffer.from([1, 2, 3, 4]);
    const r = await source.vmotionBegin(seq);
    assert.equal(r.kind, 'goahead');
    const dest = await vmFrom(ts, cleanup, '127.0.0.4', { uuid: u.text, name: 'mover', skipDoProxy: true });
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true, 'PEER-OK');
    dest.vmotionComplete(seq);
    await waitUntil(() => hub.source?.peer === dest.peerName, 5000, 'destination is the source');
    dest.send('arrived');
    await user.waitFor('arrived', 3000);
    assert.equal(flood.closed(), 1100 - perAddress, 'the flood kept its share');
  });

  test('a flood from many addresses fills the global pool: the busiest address gives way to a new host and to a vMotion destination', async (t) => {
    const { ts, cleanup } = await startServer(t, {
      config: { identifyTimeoutMs: 60_000, humanTimeoutMs: 60_000, maxUnidentifiedConnections: 200, maxUnidentifiedPerAddress: 64 },
    });
    const u = esxiUuid();
    const { vm: source, hub } = await ts.connectVm({ uuid: u.text, name: 'mover' }, cleanup);
    const floods: Array<Awaited<ReturnType<typeof silentFlood>>> = [];
    for (let a = 2; a <= 18; a++) floods.push(await silentFlood(ts, cleanup, `127.0.2.${a}`, 65)); // 17 × 65 = 1,105
    const open = () => floods.reduce((n, f) => n + f.sockets.length - f.closed(), 0);
    await waitUntil(() => ts.server.status().vmConnections === 201 && open() === 200, 10_000, 'the pool is full (200) and nothing more is open');
    const m = await metrics(ts);
    assert.ok(m.get('vspc_vm_connections_refused_total{reason="evicted"}')! > 0, 'the busiest gave way to less busy addresses');
    assert.ok(m.get('vspc_vm_connections_refused_total{reason="unidentified-limit"}')! > 0, 'the busiest are refused');
    assert.ok(m.get('vspc_vm_connections_refused_total{reason="address-limit"}')! > 0, 'the first addresses past their share');
    assert.ok(ts.logs.find((l) => l.errorCode === 'VSPC_UNIDENTIFIED_LIMIT' && l.limit === 200));

    const other = esxiUuid();
    const newcomer = await vmFrom(ts, cleanup, '127.0.3.1', { uuid: other.text, name: 'newcomer' });
    await newcomer.whenProxied();
    await ts.waitRegistered(other.text);

    const seq = Buffer.from([9, 9]);
    const r = await source.vmotionBegin(seq);
    assert.equal(r.kind, 'goahead');
    const dest = await vmFrom(ts, cleanup, '127.0.3.2', { uuid: u.text, name: 'mover', skipDoProxy: true });
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true, 'PEER-OK');
    dest.vmotionComplete(seq);
    await waitUntil(() => hub.source?.peer === dest.peerName, 5000, 'destination is the source');
  });
});

describe('quotas: new identities and records nobody used', () => {
  test('random UUIDs registered fast from one address: the quota bites (one log line, counted); another address still registers', async (t) => {
    const { ts, cleanup } = await startServer(t, { ports: 32, config: { registrationRate: 0.001, registrationBurst: 5 } });
    const flood: SimulatedVm[] = [];
    for (let i = 0; i < 20; i++) {
      const vm = await vmFrom(ts, cleanup, '127.0.0.2', { uuid: esxiUuid().text, name: `rnd-${i}` });
      flood.push(vm);
      await vm.whenProxied().catch(() => undefined);
    }
    await waitUntil(() => flood.filter((v) => v.closed).length === 15, 5000, '15 refused');
    assert.equal(ts.server.registry.size, 5);
    assert.equal(ts.logs.filter((l) => l.errorCode === 'VSPC_REGISTRATION_RATE').length, 1, 'rate-limited log line');
    assert.equal(ts.logs.find((l) => l.errorCode === 'VSPC_REGISTRATION_RATE')?.security, true);
    assert.equal((await metrics(ts)).get('vspc_vm_connections_refused_total{reason="registration-rate"}'), 15);

    const legit = esxiUuid();
    const vm = await vmFrom(ts, cleanup, '127.0.0.3', { uuid: legit.text, name: 'legit' });
    await vm.whenProxied();
    await ts.waitRegistered(legit.text);
    // A VM that is already known reconnects from the exhausted address: no new record, no quota.
    const known = flood.find((v) => !v.closed)!;
    const uuidOfKnown = ts.server.registry.all().find((h) => h.source?.peer === known.peerName)!.identity.key;
    known.destroy();
    await waitUntil(() => ts.server.registry.all().every((h) => h.source?.peer !== known.peerName), 3000, 'gone');
    const back = await vmFrom(ts, cleanup, '127.0.0.2', { uuid: uuidOfKnown, name: 'back' });
    await back.whenProxied();
    await ts.waitRegistered(uuidOfKnown);
  });

  test('records nobody attached to expire after the short age, printing or not; a client keeps the long one', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { expireAfterMs: 0, expireUnusedAfterMs: 300 } });
    const unused = await ts.connectVm({ uuid: esxiUuid().text, name: 'unused' }, cleanup);
    const printed = await ts.connectVm({ uuid: esxiUuid().text, name: 'printed' }, cleanup);
    const attended = await ts.connectVm({ uuid: esxiUuid().text, name: 'attended' }, cleanup);
    printed.vm.send('x');
    await printed.vm.barrier();
    const user = await ts.connectUser(attended.hub.identity.tcpPort, cleanup);
    await user.close();
    await waitUntil(() => attended.hub.clients.size === 0, 3000, 'client gone');
    for (const v of [unused, printed, attended]) v.vm.destroy();
    await waitUntil(() => [unused, printed, attended].every((v) => v.hub.source === null), 3000, 'all disconnected');
    await ts.logs.waitFor((l) => l.message === 'VM serial port expired (never used: no client ever attached)' && l.vm === 'unused', 5000);
    // A later unused one expiring proves the check ran again after the other two were past the short age.
    const later = await ts.connectVm({ uuid: esxiUuid().text, name: 'later' }, cleanup);
    later.vm.destroy();
    await ts.logs.waitFor((l) => l.message === 'VM serial port expired (never used: no client ever attached)' && l.vm === 'later', 5000);
    // A squatter's single byte does not buy the long expiry (an attack showed it did).
    await ts.logs.waitFor((l) => l.message === 'VM serial port expired (never used: no client ever attached)' && l.vm === 'printed', 5000);
    const names = (await ts.ports()).map((p: PortView) => p.name).sort();
    assert.deepEqual(names, ['attended']);
    const m = await metrics(ts);
    assert.equal(m.get('vspc_vm_ports_expired_total{reason="unused"}'), 3);
    assert.equal(m.get('vspc_vm_ports_expired_total{reason="unseen"}'), 0);
  });
});

describe('the allow-list (--proxy-allow)', () => {
  test('an address outside it is closed before any byte, plain and TLS (no handshake); one inside works', async (t) => {
    const dir = tempDir();
    t.after(() => dir.remove());
    const { ts, cleanup } = await startServer(t, { tls: makeCert(dir.dir), config: { proxyAllow: [parseCidr('127.0.0.1')] } });
    for (const port of [ts.proxyPort, ts.proxyTlsPort]) {
      const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
      cleanup.add(() => s.destroy());
      let got = 0;
      s.on('data', (d: Buffer) => (got += d.length));
      s.on('error', () => undefined);
      await new Promise((r) => s.once('close', r));
      assert.equal(got, 0, 'not even the opening offers');
    }
    assert.equal(ts.logs.filter((l) => l.errorCode === 'VSPC_PEER_NOT_ALLOWED').length, 1, 'rate-limited: one line');
    assert.equal(ts.logs.find((l) => l.errorCode === 'VSPC_PEER_NOT_ALLOWED')?.security, true);
    assert.ok(!ts.logs.find((l) => l.message === 'TLS handshake failed on the VM port; closed'), 'no TLS handshake was attempted');
    assert.equal((await metrics(ts)).get('vspc_vm_connections_refused_total{reason="not-allowed"}'), 2);
    await ts.connectVm({ uuid: esxiUuid().text, name: 'inside' }, cleanup);
  });

  test('a VM listener on a non-loopback address warns at start unless --proxy-allow is set', async (t) => {
    const exposed = await startServer(t, { config: { proxyListen: { host: '0.0.0.0', port: 0 } } });
    assert.ok(exposed.ts.logs.find((l) => l.level === 'warn' && /without --proxy-allow/.test(String(l.message))));
    const allowed = await startServer(t, {
      config: { proxyListen: { host: '0.0.0.0', port: 0 }, proxyAllow: [parseCidr('10.0.0.0/8')] },
    });
    assert.ok(!allowed.ts.logs.find((l) => /without --proxy-allow/.test(String(l.message))));
    const loopback = await startServer(t);
    assert.ok(!loopback.ts.logs.find((l) => /without --proxy-allow/.test(String(l.message))));
  });
});

describe('condemned connections', () => {
  test('1,000 pipelined VMOTION-PEER guesses on one socket: only the first is evaluated and logged', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const s = net.connect({ host: '127.0.0.1', port: ts.proxyPort, localAddress: '127.0.0.2' });
    cleanup.add(() => s.destroy());
    s.on('error', () => undefined);
    s.resume();
    await new Promise((r) => s.once('connect', r));
    const guesses = Array.from({ length: 1000 }, (_, i) => encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(Ext.VMOTION_PEER), Buffer.from(`seq-${i}-secret-${i}`)])));
    s.write(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), ...guesses]));
    // And more after the first batch: a second write, read only if vspc still reads.
    s.write(Buffer.concat(guesses.slice(0, 100)));
    await new Promise((r) => s.once('close', r));
    const lines = ts.logs.filter((l) => typeof l.message === 'string' && l.message.startsWith('security: VMOTION-PEER'));
    assert.equal(lines.length, 1);
    assert.equal(ts.server.vmotion.counters['bad-peer'], 1);
    assert.equal((await metrics(ts)).get('vspc_vmotions_total{outcome="bad-peer"}'), 1);
  });
});

describe('input after the end', () => {
  test('a peer refused for its service name and flooding on is read for 64 KiB more, then not at all until the close grace ends it', async (t) => {
    // Reading all it sends for 1.5 s would be hundreds of megabytes on loopback; unread, it
    // stops once the kernel's buffers are full (a few megabytes).
    const { ts, cleanup } = await startServer(t, { config: { closeGraceMs: 1500 } });
    const s = net.connect({ host: '127.0.0.1', port: ts.proxyPort, allowHalfOpen: true });
    cleanup.add(() => s.destroy());
    s.on('error', () => undefined);
    s.resume();
    await new Promise((r) => s.once('connect', r));
    s.write(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(Ext.DO_PROXY), Buffer.from('Snot-the-service')]))]));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await new Promise((r) => s.once('end', r));
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const bound = 64 * 1024 * 1024;
    const sent = await writeUntilClosed(s, chunk, bound);
    assert.ok(sent < bound, `vspc read all it was sent after the end: ${sent} bytes`);
    await closed;
    const stopped = ts.logs.filter((l) => l.message === 'VM connection keeps sending after vspc ended it; no longer read');
    assert.equal(stopped.length, 1);
    assert.ok((stopped[0].bytesAfterClose as number) <= 128 * 1024, `read ${String(stopped[0].bytesAfterClose)} bytes after the end`);
  });
});

describe('metric labels', () => {
  test('every refusal reason and takeover result of the ESXi source is a label /metrics always shows', () => {
    assert.deepEqual([...VM_REFUSAL_REASONS].sort(), [...VM_REFUSAL_LABELS].sort());
    assert.deepEqual([...TAKEOVER_RESULTS].sort(), [...TAKEOVER_LABELS].sort());
  });
});

describe('a VM renaming itself in a loop', () => {
  test('names past the per-connection bound are ignored, once logged; logging cost stays flat', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'loop-0' }, cleanup);
    for (let i = 1; i <= 2000; i++) vm.sendName(`loop-${i}`);
    await vm.barrier(10_000);
    // The first name came with the registration; 15 renames more are applied, then none.
    assert.equal(hub.identity.name, 'loop-15');
    const warned = ts.logs.filter((l) => l.message === 'VM-NAME changes too often on this connection; further names ignored');
    assert.equal(warned.length, 1);
    assert.equal(warned[0].security, true);
    assert.equal(ts.logs.filter((l) => l.message === 'VM renamed').length, 15);
  });
});
