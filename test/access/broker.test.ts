/**
 * The console broker through real sockets (src/access/broker/): the list and what it
 * reveals, SELECT by the one addressing rule and the hand-over to the console (lock,
 * data both ways), refusals, and the bounds — request sizes, requests per connection,
 * the select deadline, the pending-connection limit under a flood that never selects,
 * the descriptor budget — and the socket file's safety rules.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { lstatSync, readdirSync, symlinkSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { BrokerPeer } from '../support/broker-client.js';
import { TelnetUser } from '../support/sim/index.js';
import { esxiUuid, startServer, tempDir, waitUntil, type TestServer, type Cleanup } from '../support/server.js';
import { DEFAULTS, type VspcConfig } from '../../src/config/config.js';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { ConsoleBroker } from '../../src/access/broker/broker.js';
import { clearSocketPath, listenOnSocketFile, removeSocketFile } from '../../src/access/broker/socket-file.js';
import { LogCapture } from '../support/log-capture.js';
import { VspcError } from '../../src/errors.js';
import { runNode, VSPC_ADMIN_JS } from '../support/cli.js';
import { MAX_ADDRESS_BYTES } from '../../src/protocol/control/vspc-control.js';
import { writeUntilClosed } from '../support/flood.js';

type Limits = VspcConfig['brokerLimits'];

async function brokerServer(t: { after(fn: () => unknown): void }, limits: Partial<Limits> = {}, extra: Partial<VspcConfig> = {}, ports = 8) {
  const dir = tempDir('vspc-broker-');
  t.after(() => dir.remove());
  const path = join(dir.dir, 'broker.sock');
  const { ts, cleanup } = await startServer(t, {
    ports,
    config: {
      brokerSocket: { path, auto: false },
      brokerListen: { host: '127.0.0.1', port: 0 },
      brokerLimits: { ...DEFAULTS.brokerLimits, ...limits },
      ...extra,
    },
  });
  const tcp = ts.server.broker!.addresses.tcp!;
  return { ts, cleanup, path, dir: dir.dir, tcp: { host: '127.0.0.1', port: tcp.port } };
}

async function peer(cleanup: Cleanup, address: { path: string } | { host: string; port: number }, control = true): Promise<BrokerPeer> {
  const p = await BrokerPeer.connect(address, control);
  cleanup.add(() => p.destroy());
  return p;
}

async function vm(ts: TestServer, cleanup: Cleanup, name: string, label = '', uuid = esxiUuid()) {
  const r = await ts.connectVm({ uuid: uuid.text, name, serviceUri: label ? `vSPC.py?port=${label}` : undefined }, cleanup);
  return { ...r, uuid };
}

describe('console broker: list and select', () => {
  test('LIST-REPLY: name, label, kind, state, clients and a unique address; no UUID, no port, no peer address', async (t) => {
    const { ts, cleanup, path, tcp } = await brokerServer(t);
    const shared = esxiUuid();
    const a = await vm(ts, cleanup, 'web01', '', shared);
    await vm(ts, cleanup, 'web01', 'com2', shared);
    const d = await vm(ts, cleanup, 'DB01');
    await ts.connectUser(d.hub.identity.tcpPort, cleanup);
    for (const address of [{ path }, tcp]) {
      const p = await peer(cleanup, address);
      const { entries } = await p.list();
      assert.deepEqual(entries, [
        { name: 'DB01', label: '', kind: 'esxi', state: 'connected', clients: 1, address: 'DB01' },
        { name: 'web01', label: '', kind: 'esxi', state: 'connected', clients: 0, address: 'web01:' },
        { name: 'web01', label: 'com2', kind: 'esxi', state: 'connected', clients: 0, address: 'web01:com2' },
      ]);
      // Nothing else on the wire: not the UUID in any spelling, no client port, no host address.
      const wire = JSON.stringify(p.messages);
      for (const secret of [shared.hex, a.hub.identity.key, String(a.hub.identity.tcpPort), String(d.hub.identity.tcpPort), '127.0.0.1']) {
        assert.ok(!wire.toLowerCase().includes(secret), `the list does not reveal ${secret}`);
      }
      // Patterns: wildcards or a substring, any case, against NAME and NAME:LABEL.
      assert.deepEqual((await p.list('WEB*')).entries.map((e) => e.address), ['web01:', 'web01:com2']);
      assert.deepEqual((await p.list('*:com?')).entries.map((e) => e.address), ['web01:com2']);
      assert.deepEqual((await p.list('b0')).entries.map((e) => e.address), ['DB01', 'web01:', 'web01:com2']);
      assert.deepEqual((await p.list('nothing')).entries, []);
    }
  });

  test('a long list comes in pages of at most pageBytes, the last one without "more"', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t, { pageBytes: 300 }, {}, 16);
    for (let i = 0; i < 12; i++) ts.server.registry.register('config', `console-${String(i).padStart(2, '0')}`, '', `console-${String(i).padStart(2, '0')}`);
    const p = await peer(cleanup, { path });
    const { entries, pages } = await p.list();
    assert.equal(entries.length, 12);
    assert.ok(pages >= 4, `${pages} pages`);
    const replies = p.messages.filter((m) => m.kind === 'list-reply');
    assert.deepEqual(replies.map((m) => m.kind === 'list-reply' && m.more), [...Array(pages - 1).fill(true), false]);
    assert.deepEqual(entries.map((e) => e.name), [...Array(12).keys()].map((i) => `console-${String(i).padStart(2, '0')}`));
  });

  test('SELECT by name in any case, then the usual lock flow: granted, data both ways, WHO; the greeting has no UUID', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const { vm: sim, hub, uuid } = await vm(ts, cleanup, 'web01');
    sim.send('earlier output\r\n');
    await sim.barrier();
    const p = await peer(cleanup, { path });
    p.send({ kind: 'select', address: 'WEB01' });
    assert.deepEqual(await p.next('selected'), { kind: 'selected', name: 'web01' });
    p.send({ kind: 'lock-request', mode: 'excl_write', force: false, user: 'alice' });
    assert.deepEqual(await p.next('lock-granted'), { kind: 'lock-granted', mode: 'excl_write' });
    await p.waitText('earlier output'); // the scrollback, as on the console's own port
    assert.match(p.text, /\[vspc: web01\]/);
    assert.ok(!p.text.includes(uuid.hex.slice(0, 8)), 'no UUID in the greeting');
    assert.equal(hub.clients.size, 1);
    const holder = hub.locks.list()[0];
    assert.deepEqual([holder.peer, holder.user, holder.mode], [`unix:${path}`, 'alice', 'excl_write']);
    p.session.sendData(Buffer.from('typed\r'));
    await sim.waitForInput('typed\r');
    sim.send(Buffer.from([0x41, 0xff, 0x00, 0x42]));
    await p.waitText(Buffer.from([0x41, 0xff, 0x00, 0x42]).toString('latin1'));
    const from = p.messages.length;
    p.send({ kind: 'who' });
    const who = await p.next('who-reply', from);
    assert.equal((who.holders[0] as { self: boolean }).self, true);
    // A second console client sees the broker client like any other.
    p.destroy();
    await waitUntil(() => hub.clients.size === 0, 5000, 'the client left the console');
  });

  test('SELECT and LOCK-REQUEST in one write; NAME:LABEL and NAME: pick one port of a VM with several', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const shared = esxiUuid();
    const plain = await vm(ts, cleanup, 'web01', '', shared);
    const com2 = await vm(ts, cleanup, 'web01', 'com2', shared);
    for (const [address, hub] of [['web01:COM2', com2.hub], ['web01:', plain.hub]] as const) {
      const p = await peer(cleanup, { path });
      p.sendTogether([
        { kind: 'select', address },
        { kind: 'lock-request', mode: 'readonly', force: false, user: 'bob' },
      ]);
      await p.next('lock-granted');
      assert.equal(hub.locks.list()[0]?.user, 'bob', `${address} attached to ${hub.displayName}`);
      p.destroy();
    }
  });

  test('refusals: no such console, a number is not a port, ambiguous with the candidates; the connection may select again', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const shared = esxiUuid();
    const plain = await vm(ts, cleanup, 'web01', '', shared);
    await vm(ts, cleanup, 'web01', 'com2', shared);
    const p = await peer(cleanup, { path });
    p.send({ kind: 'select', address: 'nope' });
    const none = await p.next('select-refused');
    assert.equal(none.reason, 'not-found');
    assert.match(none.message, /no console named "nope"/);
    let from = p.messages.length;
    p.send({ kind: 'select', address: String(plain.hub.identity.tcpPort) });
    assert.equal((await p.next('select-refused', from)).reason, 'not-found', 'ports do not name consoles here');
    from = p.messages.length;
    p.send({ kind: 'select', address: 'web01' });
    const amb = await p.next('select-refused', from);
    assert.equal(amb.reason, 'ambiguous');
    assert.deepEqual(amb.candidates, ['web01:', 'web01:com2']);
    assert.match(amb.message, /"web01" names 2 consoles: web01:, web01:com2/);
    assert.ok(!amb.message.includes(String(plain.hub.identity.tcpPort)), 'no port in the refusal');
    from = p.messages.length;
    p.send({ kind: 'select', address: 'web01:' });
    await p.next('selected', from);
  });

  test('a lock refusal through the broker names the holder; LOCK-REQUEST before SELECT is ignored', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const { hub } = await vm(ts, cleanup, 'db01');
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const p = await peer(cleanup, { path });
    p.send({ kind: 'lock-request', mode: 'exclusive', force: false, user: 'early' });
    const first = await p.list();
    assert.equal(first.entries[0].clients, 1, 'still choosing: the early LOCK-REQUEST did nothing');
    p.send({ kind: 'select', address: 'db01' });
    await p.next('selected');
    p.send({ kind: 'lock-request', mode: 'exclusive', force: false, user: 'carol' });
    const refused = await p.next('lock-refused');
    assert.match(refused.reason, new RegExp(`EXCLUSIVE refused: held by ${user.peerName.replace(/\./g, '\\.')} \\(READWRITE since`));
    await p.waitClosed();
    assert.equal(user.closed, false);
  });
});

describe('console broker: bounds', () => {
  test('a stock telnet client is told what the broker is and closed; a TLS hello is closed at once', async (t) => {
    const { cleanup, tcp } = await brokerServer(t);
    const user = await TelnetUser.connect({ host: tcp.host, port: tcp.port });
    cleanup.add(() => user.destroy());
    await user.waitFor("this is vspc's console broker; use: vspc-admin console [NAME]", 5000);
    await waitUntil(() => user.closed, 5000, 'closed');
    const s = net.connect(tcp);
    cleanup.add(() => s.destroy());
    s.resume(); // Read, or the close is never seen.
    await new Promise((r) => s.once('connect', r));
    s.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x10]));
    await new Promise((r) => s.once('close', r));
  });

  test('a connection told to go that floods on is read for 64 KiB more, then not at all until the grace ends it', async (t) => {
    const { ts, cleanup, path } = await brokerServer(t);
    const s = net.connect({ path, allowHalfOpen: true });
    cleanup.add(() => s.destroy());
    s.on('error', () => undefined);
    s.resume();
    await new Promise((r) => s.once('connect', r));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    s.write(Buffer.of(255, 252, 201)); // WONT VSPC-CONTROL: a stock telnet, told what this is and closed
    await new Promise((r) => s.once('end', r));
    // Read for the whole grace (1 s), that is over 100 MB on a unix socket; unread, the kernel's buffers.
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const bound = 32 * 1024 * 1024;
    const sent = await writeUntilClosed(s, chunk, bound);
    assert.ok(sent < bound, `the broker read all it was sent after the end: ${sent} bytes`);
    await closed;
    const stopped = ts.logs.filter((l) => l.message === 'broker connection keeps sending after vspc ended it; no longer read');
    assert.equal(stopped.length, 1);
    assert.ok((stopped[0].bytesAfterClose as number) <= 128 * 1024, `read ${String(stopped[0].bytesAfterClose)} bytes after the end`);
  });

  test('the select deadline, the request count and the request size close a connection', async (t) => {
    const { cleanup, path, ts } = await brokerServer(t, { selectTimeoutMs: 300, maxRequests: 3 });
    const idle = await peer(cleanup, { path });
    await idle.waitText('[vspc: no console selected within 300 ms]');
    await idle.waitClosed();
    const greedy = await peer(cleanup, { path });
    for (let i = 0; i < 3; i++) await greedy.list();
    greedy.send({ kind: 'list-request', pattern: '' });
    await greedy.waitText('more than 3 requests on one connection');
    await greedy.waitClosed();
    // An address past the bound (built by hand: the encoder refuses it) is a protocol error.
    const big = await peer(cleanup, { path });
    big.session.sendSubnegotiation(201, Buffer.concat([Buffer.of(9), Buffer.alloc(MAX_ADDRESS_BYTES + 1, 0x61)]));
    await big.waitClosed();
    // A subnegotiation past the broker's decoder bound (4 KiB) too.
    const huge = await peer(cleanup, { path });
    huge.session.sendSubnegotiation(201, Buffer.concat([Buffer.of(7), Buffer.alloc(5000, 0x61)]));
    await huge.waitClosed();
    assert.equal(ts.server.broker!.pending, 0);
    assert.ok(ts.logs.lines.some((e) => e.errorCode === 'VSPC_BROKER_TOO_MANY_REQUESTS'));
  });

  test('a flood of connections that never select: at most maxPending are held, each newcomer closes the oldest; all gone after the deadline', async (t) => {
    const { cleanup, path, ts } = await brokerServer(t, { selectTimeoutMs: 1500, maxPending: 20 });
    const broker = ts.server.broker!;
    const sockets: net.Socket[] = [];
    const closed = new Set<net.Socket>();
    const told = new Set<net.Socket>();
    for (let i = 0; i < 60; i++) {
      const s = net.connect({ path });
      s.on('data', (d: Buffer) => {
        if (d.toString('latin1').includes('the oldest was closed to make room')) told.add(s);
      });
      s.on('error', () => undefined);
      s.on('close', () => closed.add(s));
      cleanup.add(() => s.destroy());
      sockets.push(s);
      // One at a time, so that "oldest" is well defined.
      await waitUntil(() => broker.counters.accepted === i + 1, 5000, `connection ${i} accepted`);
    }
    assert.equal(broker.pending, 20);
    assert.equal(broker.counters.evicted, 40);
    await waitUntil(() => closed.size >= 40, 5000, 'the evicted connections closed');
    // The oldest 40 went, told why; the newest 20 are the ones held.
    assert.deepEqual(sockets.map((s) => closed.has(s)), [...Array(40).fill(true), ...Array(20).fill(false)]);
    assert.equal(told.size, 40);
    // The held ones meet the deadline; afterwards the broker serves again.
    await waitUntil(() => broker.pending === 0 && closed.size === 60, 8000, 'the pending connections timed out');
    const p = await peer(cleanup, { path });
    assert.deepEqual((await p.list()).entries, []);
    assert.equal(ts.logs.lines.filter((e) => e.errorCode === 'VSPC_BROKER_FULL').length, 1, 'logged once for the episode');
  });

  test('F10: one user holding every pending slot and reconnecting at once does not lock others out: vspc-admin console --names works every time', async (t) => {
    const { cleanup, path, ts } = await brokerServer(t);
    const broker = ts.server.broker!;
    ts.server.registry.register('config', 'web01', '', 'web01');
    const max = ts.config.brokerLimits.maxPending;
    // The attacker: maxPending connections that never select; each one closed is replaced at once.
    let stopped = false;
    let opened = 0;
    const hold = () => {
      if (stopped) return;
      opened++;
      const s = net.connect({ path });
      s.resume();
      s.on('error', () => undefined);
      s.on('close', () => setImmediate(hold));
      cleanup.add(() => s.destroy());
    };
    cleanup.add(() => {
      stopped = true;
    });
    for (let i = 0; i < max; i++) hold();
    await waitUntil(() => broker.pending === max, 10_000, 'every pending slot taken');
    for (let attempt = 0; attempt < 5; attempt++) {
      const r = await runNode(VSPC_ADMIN_JS, ['console', '--names', '--socket', path], 30_000);
      assert.equal(r.code, 0, `attempt ${attempt}: ${r.stderr}`);
      assert.equal(r.stdout, 'web01\n');
    }
    assert.ok(broker.counters.evicted > 0, 'the attacker was the one evicted');
    assert.ok(opened > max, 'and it kept reconnecting');
  });

  test('F9: a LIST pattern that needs more than its budget is refused and the connection closed; the broker goes on', async (t) => {
    const { cleanup, path, ts } = await brokerServer(t, { patternSteps: 20_000 }, {}, 32);
    for (let i = 0; i < 20; i++) ts.server.registry.register('config', `c${i}`, '', `${'a'.repeat(200)}${i}`);
    const p = await peer(cleanup, { path });
    p.send({ kind: 'list-request', pattern: `*${'a'.repeat(100)}b*` });
    await p.waitText('pattern too expensive');
    await p.waitClosed();
    assert.ok(ts.logs.lines.some((e) => e.errorCode === 'VSPC_PATTERN_TOO_EXPENSIVE'));
    const q = await peer(cleanup, { path });
    assert.equal((await q.list('*a0')).entries.length, 1, 'a cheap pattern is answered');
  });

  test('the descriptor budget is asked for every accepted socket', async (t) => {
    const db = openDatabase(':memory:');
    t.after(() => closeDatabase(db));
    const registry = new Registry(new ConsoleStore(db, { start: 30000, end: 30010 }));
    let allow = false;
    const asked: net.Socket[] = [];
    const broker = new ConsoleBroker(registry, new LogCapture({ level: 'debug' }).logger, {
      socket: null,
      listen: { host: '127.0.0.1', port: 0 },
      limits: DEFAULTS.brokerLimits,
      maxQueuedBytes: 1 << 20,
      admit: (s) => {
        asked.push(s);
        return allow;
      },
      attach: () => assert.fail('nothing selects here'),
    });
    await broker.start();
    t.after(() => broker.destroy());
    const { port } = broker.addresses.tcp!;
    const refused = net.connect({ host: '127.0.0.1', port });
    refused.resume();
    refused.on('error', () => undefined);
    await new Promise((r) => refused.once('close', r));
    assert.equal(asked.length, 1);
    assert.equal(broker.counters.accepted, 0, 'refused before the broker saw it');
    allow = true;
    const p = await BrokerPeer.connect({ host: '127.0.0.1', port });
    t.after(() => p.destroy());
    assert.deepEqual((await p.list()).entries, []);
    assert.equal(asked.length, 2);
  });
});

describe('console broker: the socket file', () => {
  test('mode and group as configured, 0600 from the first instant, removed at shutdown', async (t) => {
    const dir = tempDir('vspc-broker-');
    t.after(() => dir.remove());
    const path = join(dir.dir, 'b.sock');
    const server = net.createServer();
    t.after(() => server.close());
    // The bind is synchronous inside listen(): the file's mode right after it is its first mode.
    let modeAtBind = -1;
    const listen = server.listen.bind(server) as (o: { path: string }) => net.Server;
    (server as unknown as { listen: (o: { path: string }) => net.Server }).listen = (o) => {
      const r = listen(o);
      modeAtBind = lstatSync(o.path).mode & 0o777;
      return r;
    };
    // A group we are not in would need root; gid of our own process always works.
    const id = await listenOnSocketFile(server, { path, mode: 0o640, gid: process.getgid!() });
    assert.equal(modeAtBind, 0o600, 'never more open than 0600 before the mode is set');
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o640);
    assert.equal(st.gid, process.getgid!());
    // Nothing is left under the temporary name, and closing removes only our file.
    assert.deepEqual(readdirSync(dir.dir), ['b.sock']);
    removeSocketFile(id);
    assert.equal(existsSync(path), false);
  });

  test('a stale socket is replaced; a live one, a symlink, a regular file or a missing directory are refused and left alone', async (t) => {
    const dir = tempDir('vspc-broker-');
    t.after(() => dir.remove());
    const code = async (path: string) => {
      try {
        await clearSocketPath(path);
        return 'ok';
      } catch (err) {
        assert.ok(err instanceof VspcError);
        return err.code;
      }
    };
    // Stale: a socket file whose server is gone (a crash).
    const stale = join(dir.dir, 'stale.sock');
    // A process killed while listening leaves its socket file behind.
    spawnSync(process.execPath, ['-e', "require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))", stale], { timeout: 10_000 });
    assert.ok(lstatSync(stale).isSocket());
    assert.equal(await code(stale), 'ok');
    assert.equal(existsSync(stale), false);
    // Live: another process (here: a server of ours) accepts on it.
    const live = join(dir.dir, 'live.sock');
    const other = net.createServer();
    await new Promise<void>((r) => other.listen(live, () => r()));
    t.after(() => other.close());
    assert.equal(await code(live), 'VSPC_BROKER_SOCKET_IN_USE');
    assert.ok(lstatSync(live).isSocket());
    const target = join(dir.dir, 'target');
    writeFileSync(target, 'precious');
    const link = join(dir.dir, 'link.sock');
    symlinkSync(target, link);
    assert.equal(await code(link), 'VSPC_BROKER_SOCKET_PATH');
    assert.ok(lstatSync(link).isSymbolicLink());
    assert.equal(await code(target), 'VSPC_BROKER_SOCKET_PATH');
    assert.equal(await code(join(dir.dir, 'no-such-dir', 'b.sock')), 'VSPC_BROKER_SOCKET_PATH');
    assert.equal(readFileSync(target, 'utf8'), 'precious');
  });

  test('an explicit path that cannot be used stops the start; the default (auto) only turns the socket off', async (t) => {
    await assert.rejects(
      startServer(t, { config: { brokerSocket: { path: '/nonexistent-vspc-dir/broker.sock', auto: false } } }),
      (err) => err instanceof VspcError && err.code === 'VSPC_BROKER_SOCKET_PATH',
    );
    const { ts } = await startServer(t, { config: { brokerSocket: { path: '/nonexistent-vspc-dir/broker.sock', auto: true }, brokerListen: { host: '127.0.0.1', port: 0 } } });
    assert.equal(ts.server.broker!.addresses.socket, null);
    assert.ok(ts.server.broker!.addresses.tcp, 'the TCP broker still listens');
    assert.ok(ts.logs.lines.some((e) => /console broker socket off/.test(String(e.message))));
  });

  test('shutdown tells connections still choosing and removes the socket file', async (t) => {
    const { cleanup, path, ts } = await brokerServer(t);
    const p = await peer(cleanup, { path });
    await p.list();
    await ts.close();
    await p.waitText('vspc is shutting down');
    await p.waitClosed();
    assert.equal(existsSync(path), false);
  });
});
