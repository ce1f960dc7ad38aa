import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConsoleHub, DEFAULT_STREAM, Scrollback, streamOptions } from '../../src/domain/console-hub.js';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { FakeClient, FakeSource } from './fakes.js';

function hub(): ConsoleHub {
  return new ConsoleHub({ id: 1, kind: 'esxi', key: 'c'.repeat(32), label: '', name: 'vm', tcpPort: 10001 });
}

describe('ConsoleHub hub', () => {
  test('sendBreak: true and passed to a source that can send one; false, nothing done, for one that cannot or none', () => {
    const h = hub();
    assert.equal(h.sendBreak(), false, 'no source');
    const plain = new FakeSource();
    h.attachSource(plain);
    assert.equal(h.sendBreak(), false, 'a source without sendBreak (a unix: socket)');
    h.detachSource(plain);
    let breaks = 0;
    const able = Object.assign(new FakeSource(), { sendBreak: () => void breaks++ });
    h.attachSource(able);
    assert.equal(h.sendBreak(), true);
    assert.equal(breaks, 1);
  });

  test('a console configured for a serial tunnel refuses people while the link is away (a kick), and takes the link back', () => {
    const h = hub();
    h.carriesTunnel = 'vm-tunnel';
    const person = new FakeClient();
    const d = h.addClient(person, { request: 'readwrite', force: true });
    assert.equal(d.granted, false);
    assert.equal(!d.granted && d.reason, 'vm carries the serial tunnel "vm-tunnel" (TCP forwards into the guest), not a console for people; use the tunnel\'s forwards or vspc-admin tunnel vm-tunnel PORT');
    assert.equal(h.clients.size, 0);
    // The link dedicates the hub to itself first (src/access/tunnel/link.ts), then attaches.
    const link = new FakeClient();
    h.dedicatedTo = { clientId: link.id, reason: 'dedicated' };
    assert.equal(h.addClient(link, { request: 'exclusive', force: true, replay: false }).granted, true);
    h.carriesTunnel = null;
    h.dedicatedTo = null;
    h.removeClient(link, 'tunnel removed');
    assert.equal(h.addClient(new FakeClient(), { request: 'readwrite' }).granted, true, 'given back to people');
  });

  test('a source leaving during a vMotion switch-over is part of the migration: no notice, state migrating', () => {
    const h = hub();
    const events: string[] = [];
    const observed = new ConsoleHub(h.identity, undefined, undefined, { event: (_p, e) => events.push(e.kind) });
    const a = new FakeClient();
    const source = new FakeSource();
    observed.attachSource(source);
    observed.addClient(a);
    const before = a.notices.length;
    observed.startHolding();
    observed.detachSource(source);
    assert.equal(observed.state, 'migrating');
    const peer = new FakeSource();
    observed.attachSource(peer);
    observed.stopHolding(peer);
    assert.equal(observed.state, 'connected');
    assert.deepEqual(a.notices.slice(before), [], 'the client saw no disconnect or connect notice');
    assert.deepEqual(events.filter((e) => e === 'vm-disconnected'), []);
  });

  test('a migration that ends without a destination after the source left reports the disconnect then, once', () => {
    const events: string[] = [];
    const h = new ConsoleHub({ id: 2, kind: 'esxi', key: 'e'.repeat(32), label: '', name: 'vm', tcpPort: 10002 }, undefined, undefined, {
      event: (_p, e) => events.push(e.kind),
    });
    const a = new FakeClient();
    const source = new FakeSource();
    h.attachSource(source);
    h.addClient(a);
    const before = a.notices.length;
    h.startHolding();
    h.detachSource(source);
    assert.deepEqual(a.notices.slice(before), []);
    h.stopHolding(null);
    assert.equal(h.state, 'disconnected');
    assert.deepEqual(a.notices.slice(before), ['VM disconnected; waiting for it to come back']);
    assert.deepEqual(events.filter((e) => e === 'vm-disconnected'), ['vm-disconnected']);
    // The next connection is a plain reconnect, announced as usual.
    h.attachSource(new FakeSource());
    assert.deepEqual(a.notices.slice(before + 1), ['VM connected']);
  });

  test('VM output fans out to every client, in order', () => {
    const h = hub();
    const src = new FakeSource();
    h.attachSource(src);
    const a = new FakeClient();
    const b = new FakeClient();
    h.addClient(a);
    h.addClient(b);
    h.fromVm(Buffer.from('one '));
    h.fromVm(Buffer.from([0, 255, 13]));
    assert.deepEqual(a.output, Buffer.from([...Buffer.from('one '), 0, 255, 13]));
    assert.deepEqual(b.output, a.output);
    assert.equal(h.bytesFromVm, 7);
  });

  test('client input goes to the source; a full source pauses clients until drain', () => {
    const h = hub();
    const src = new FakeSource();
    h.attachSource(src);
    const a = new FakeClient();
    const b = new FakeClient();
    h.addClient(a);
    h.addClient(b);
    src.full = true;
    h.fromClient(a, Buffer.from('x'));
    assert.equal(src.input.toString(), 'x');
    assert.equal(a.paused, true);
    assert.equal(b.paused, true);
    const c = new FakeClient();
    h.addClient(c);
    assert.equal(c.paused, true, 'a client attaching while paused starts paused');
    src.full = false;
    src.drain!();
    assert.deepEqual([a.paused, b.paused, c.paused], [false, false, false]);
  });

  test('while the VM is away: clients are told once, input is discarded, they stay attached', () => {
    const h = hub();
    const a = new FakeClient();
    h.addClient(a);
    assert.equal(a.notices.length, 1);
    assert.match(a.notices[0], /not connected/);
    h.fromClient(a, Buffer.from('lost'));
    h.fromClient(a, Buffer.from('lost again'));
    // Issue 12 item 6: the attach notice does not stand in for the one about discarded input.
    assert.deepEqual(a.notices, ['VM is not connected; you will see its output when it comes back', 'VM is not connected; input discarded']);
    assert.equal(a.notices.length, 2, 'told once, not per keystroke');
    const src = new FakeSource();
    h.attachSource(src);
    assert.match(a.notices.at(-1)!, /VM connected/);
    h.fromVm(Buffer.from('back'));
    assert.equal(a.output.toString(), 'back');
    assert.equal(src.input.length, 0);
    assert.equal(h.detachSource(src), true);
    assert.match(a.notices.at(-1)!, /disconnected/);
    h.fromClient(a, Buffer.from('y'));
    assert.match(a.notices.at(-1)!, /input discarded/);
    assert.equal(a.closedWith, null);
  });

  test('a stale source cannot detach the current one', () => {
    const h = hub();
    const old = new FakeSource();
    const cur = new FakeSource();
    h.attachSource(old);
    assert.equal(h.attachSource(cur), old);
    assert.equal(h.detachSource(old), false);
    assert.equal(h.source, cur);
  });
});

describe('Registry', () => {
  test('sticky ports across a reload, events for listeners, forget frees the port', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vspc-reg-'));
    try {
      const path = join(dir, 'r.db');
      let db = openDatabase(path);
      let reg = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }));
      const added: number[] = [];
      reg.on('added', (p) => added.push(p.identity.tcpPort));
      const { hub: p1, created } = reg.register('esxi', '1'.repeat(32), '', 'vm-one');
      const { hub: p2 } = reg.register('esxi', '1'.repeat(32), 'com2', 'vm-one');
      assert.equal(created, true);
      assert.notEqual(p1.identity.tcpPort, p2.identity.tcpPort);
      assert.deepEqual(added, [20000, 20001]);
      assert.equal(reg.register('esxi', '1'.repeat(32), '', 'vm-renamed').hub, p1);
      assert.equal(p1.identity.name, 'vm-renamed');
      closeDatabase(db);

      db = openDatabase(path);
      reg = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }));
      const loaded: string[] = [];
      reg.on('added', (p) => loaded.push(`${p.identity.name}:${p.identity.label}:${p.identity.tcpPort}`));
      reg.load();
      assert.deepEqual(loaded, ['vm-renamed::20000', 'vm-one:com2:20001']);
      const again = reg.register('esxi', '1'.repeat(32), 'com2', null);
      assert.equal(again.created, false);
      assert.equal(again.hub.identity.tcpPort, 20001);

      const client = new FakeClient();
      again.hub.addClient(client);
      const removed: number[] = [];
      reg.on('removed', (p) => removed.push(p.identity.tcpPort));
      reg.forget(again.hub);
      assert.deepEqual(removed, [20001]);
      assert.match(client.closedWith ?? '', /forgotten/);
      assert.equal(reg.getByPort(20001), undefined);
      assert.equal(reg.register('esxi', '2'.repeat(32), '', 'vm-two').hub.identity.tcpPort, 20001);
      closeDatabase(db);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('expire keeps connected or attended ports, drops the rest', () => {
    const db = openDatabase(':memory:');
    const reg = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }));
    const t0 = 1_000_000;
    const idle = reg.register('esxi', '3'.repeat(32), '', 'idle', t0).hub;
    const connected = reg.register('esxi', '4'.repeat(32), '', 'connected', t0).hub;
    connected.attachSource(new FakeSource());
    const attended = reg.register('esxi', '5'.repeat(32), '', 'attended', t0).hub;
    attended.addClient(new FakeClient());
    const dropped = reg.expire(1000, t0 + 5000);
    assert.deepEqual(dropped.map((p) => p.identity.name), ['idle']);
    assert.equal(reg.get('esxi', '3'.repeat(32), ''), undefined);
    assert.equal(reg.size, 2);
    assert.equal(idle.identity.tcpPort, 20000);
    closeDatabase(db);
  });
});

describe('Scrollback', () => {
  test('a new client first sees the last N bytes of output, oldest first', () => {
    const h = new ConsoleHub({ id: 9, kind: 'esxi', key: 'd'.repeat(32), label: '', name: 'vm', tcpPort: 10009 }, 1024, 10);
    h.attachSource(new FakeSource());
    h.fromVm(Buffer.from('0123456'));
    h.fromVm(Buffer.from('789abc'));
    const late = new FakeClient();
    h.addClient(late);
    assert.equal(late.output.toString(), '3456789abc');
    h.fromVm(Buffer.from('XYZ'));
    assert.equal(late.output.toString(), '3456789abcXYZ');
    h.fromVm(Buffer.alloc(25, 'q'));
    const later = new FakeClient();
    h.addClient(later);
    assert.equal(later.output.toString(), 'qqqqqqqqqq');
    const noReplay = new FakeClient();
    h.addClient(noReplay, { replay: false });
    assert.equal(noReplay.output.length, 0);
  });

  test('the replay loses its terminal queries (ESC [ 6 n); live output and the console log keep them', () => {
    const logged: Buffer[] = [];
    const h = new ConsoleHub({ id: 9, kind: 'esxi', key: 'd'.repeat(32), label: '', name: 'vm', tcpPort: 10009 }, 1024, 1024, {
      output: (_h, d) => logged.push(Buffer.from(d)),
    });
    h.attachSource(new FakeSource());
    const prompt = '\r\n\x1b[1;32m~ #\x1b[0m \x1b[6n';
    h.fromVm(Buffer.from(`${prompt}ls\r\n`));
    // A query split across two chunks is one query in the scrollback.
    h.fromVm(Buffer.from('bin\r\n\x1b['));
    h.fromVm(Buffer.from('6n~ # '));
    const c = new FakeClient();
    h.addClient(c);
    assert.equal(c.output.toString('latin1'), '\r\n\x1b[1;32m~ #\x1b[0m ls\r\nbin\r\n~ # ');
    h.fromVm(Buffer.from('\x1b[6n'));
    assert.ok(c.output.toString('latin1').endsWith('~ # \x1b[6n'), 'live: passed on as it came');
    assert.equal(Buffer.concat(logged).toString('latin1'), `${prompt}ls\r\nbin\r\n\x1b[6n~ # \x1b[6n`);
  });

  test('scrollback of 0 keeps nothing; events reach the observer', () => {
    const events: string[] = [];
    const out: string[] = [];
    const h = new ConsoleHub({ id: 9, kind: 'esxi', key: 'd'.repeat(32), label: '', name: 'vm', tcpPort: 10009 }, 1024, 0, {
      output: (_p, d) => out.push(d.toString()),
      event: (_p, e) => events.push(e.kind),
    });
    const src = new FakeSource();
    h.attachSource(src);
    h.fromVm(Buffer.from('abc'));
    const c = new FakeClient();
    h.addClient(c);
    assert.equal(c.output.length, 0);
    h.removeClient(c, 'bye');
    h.detachSource(src);
    assert.deepEqual(out, ['abc']);
    assert.deepEqual(events, ['vm-connected', 'client-attached', 'client-detached', 'vm-disconnected']);
  });
});

describe('what an idle console shares', () => {
  test('StreamOptions are eight shared frozen objects: the same switches give the same object, and none can be changed in place', () => {
    assert.equal(streamOptions(true, false, true), streamOptions(true, false, true));
    assert.deepEqual(streamOptions(true, false, true), { greeting: true, notices: false, replay: true });
    assert.deepEqual(streamOptions(false, true, false), { greeting: false, notices: true, replay: false });
    assert.equal(DEFAULT_STREAM, streamOptions(true, true, true));
    assert.ok(Object.isFrozen(DEFAULT_STREAM));
    assert.throws(() => {
      (DEFAULT_STREAM as { greeting: boolean }).greeting = false;
    }, TypeError);
  });
});

describe('Scrollback ring', () => {
  /** The last `cap` bytes of everything pushed: what the ring must hold. */
  function lastBytes(pushed: Buffer[], cap: number): string {
    const all = Buffer.concat(pushed);
    return all.subarray(Math.max(0, all.length - cap)).toString('latin1');
  }

  test('holds exactly the last N bytes across growth and wrap-around, whatever the chunk sizes', () => {
    const cap = 10_000;
    const sb = new Scrollback(cap);
    const pushed: Buffer[] = [];
    // Deterministic sizes: small lines, chunks around the ring size, one larger than the capacity.
    const sizes = [1, 7, 80, 4095, 4096, 4097, 3, 9_999, 10_000, 10_001, 12_345, 5, 6_000, 6_000, 1, 65_536, 2, 9_998];
    let n = 0;
    for (const size of sizes) {
      const chunk = Buffer.alloc(size);
      for (let i = 0; i < size; i++) chunk[i] = 33 + ((n + i) % 90);
      n += size;
      sb.push(chunk);
      pushed.push(chunk);
      assert.equal(sb.length, Math.min(cap, Buffer.concat(pushed).length));
      assert.equal(sb.snapshot().toString('latin1'), lastBytes(pushed, cap), `after a ${size}-byte chunk`);
    }
  });

  test('the same with every chunk a view of a larger buffer (copied, not held)', () => {
    const cap = 5_000;
    const sb = new Scrollback(cap);
    const big = Buffer.alloc(40_000);
    for (let i = 0; i < big.length; i++) big[i] = 48 + (i % 75);
    const pushed: Buffer[] = [];
    let at = 0;
    for (const size of [3, 1500, 4999, 5000, 5001, 2, 1024, 7000, 1]) {
      const view = big.subarray(at, at + size);
      at += size;
      sb.push(view);
      pushed.push(Buffer.from(view));
      assert.equal(sb.snapshot().toString('latin1'), lastBytes(pushed, cap), `after a ${size}-byte view`);
    }
    const line = Buffer.from('hello, world');
    sb.push(line);
    line.fill(0x58);
    assert.ok(sb.snapshot().toString().endsWith('hello, world'));
  });

  test('copies what it keeps: changing a chunk after the push does not change the scrollback', () => {
    const sb = new Scrollback(8192);
    const chunk = Buffer.alloc(4096, 'a');
    sb.push(chunk);
    chunk.fill(0x58);
    assert.equal(sb.snapshot().toString(), 'a'.repeat(4096));
  });

  test('nothing is allocated before the first output; a little output holds a small ring', () => {
    const sb = new Scrollback(64 * 1024);
    assert.equal(sb.length, 0);
    assert.equal(sb.snapshot().length, 0);
    sb.push(Buffer.alloc(0));
    assert.equal(sb.length, 0);
    sb.push(Buffer.from('boot\r\n'));
    assert.equal(sb.snapshot().toString(), 'boot\r\n');
    // 4 KiB ring, not the 64 KiB capacity: what a VM that printed a line costs.
    const ring = (sb as unknown as { ring: Buffer | null }).ring;
    assert.equal(ring?.length, 4096);
  });

  test('replace and resize keep the last bytes; a capacity of 0 keeps nothing', () => {
    const sb = new Scrollback(8);
    sb.push(Buffer.from('abcdefghij'));
    assert.equal(sb.snapshot().toString(), 'cdefghij');
    sb.replace(Buffer.from('0123456789'));
    assert.equal(sb.snapshot().toString(), '23456789');
    sb.resize(4);
    assert.equal(sb.snapshot().toString(), '6789');
    sb.push(Buffer.from('xy'));
    assert.equal(sb.snapshot().toString(), '89xy');
    sb.resize(16);
    sb.push(Buffer.from('ZZ'));
    assert.equal(sb.snapshot().toString(), '89xyZZ');
    sb.resize(0);
    sb.push(Buffer.from('lost'));
    assert.equal(sb.length, 0);
    assert.equal(sb.snapshot().length, 0);
  });
});
