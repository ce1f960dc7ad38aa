/**
 * The cluster link's sans-I/O core (src/protocol/cluster/link.ts): byte arrays in,
 * events and byte arrays out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LinkSession, LINK_VERSION, MAX_PEER_WINDOW, type LinkEvent } from '../../src/protocol/cluster/link.js';
import { ProtocolError } from '../../src/errors.js';

function pair(window = 100): { a: LinkSession; b: LinkSession } {
  const a = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b', window });
  const b = new LinkSession({ role: 'acceptor', nodeId: 'node-b', window });
  const ea = a.receive(b.hello());
  const eb = b.receive(a.hello());
  assert.deepEqual(ea, [{ type: 'hello', nodeId: 'node-b', version: LINK_VERSION }]);
  assert.deepEqual(eb, [{ type: 'hello', nodeId: 'node-a', version: LINK_VERSION }]);
  return { a, b };
}

function feedBytewise(s: LinkSession, bytes: Buffer): LinkEvent[] {
  const out: LinkEvent[] = [];
  for (const byte of bytes) out.push(...s.receive(Buffer.from([byte])));
  return out;
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ProtocolError, String(err));
    return err.code;
  }
  assert.fail('no error');
}

test('HELLO frame bytes: length, type, version, node id', () => {
  const s = new LinkSession({ role: 'dialer', nodeId: 'n1' });
  assert.deepEqual([...s.hello()], [0, 0, 0, 5, 1, 0, LINK_VERSION, 0x6e, 0x31]);
});

test('open, accept, data both ways within credit, credit returned, close', () => {
  const { a, b } = pair(10);
  const { stream, bytes } = a.open({ console: 7, request: 'readwrite' });
  const [open] = feedBytewise(b, bytes);
  assert.deepEqual(open, { type: 'open', stream, header: { console: 7, request: 'readwrite' }, window: 10 });
  // The acceptor may send the dialer's window (10) at once.
  const acc = b.accept(stream, { mode: 'readwrite' })!;
  assert.deepEqual(a.receive(acc), [{ type: 'accept', stream, header: { mode: 'readwrite' } }]);
  assert.equal(a.credit(stream), 10);
  const out = b.data(stream, Buffer.from('0123456789abc'));
  assert.equal(out.sent, 10, 'only the granted window');
  const got = a.receive(Buffer.concat(out.bytes));
  assert.deepEqual(got, [{ type: 'data', stream, data: Buffer.from('0123456789') }]);
  assert.equal(b.credit(stream), 0);
  // The dialer consumed 4: the acceptor may send 4 more.
  assert.deepEqual(b.receive(a.grant(stream, 4)!), [{ type: 'credit', stream, available: 4 }]);
  const more = b.data(stream, Buffer.from('abc'));
  assert.equal(more.sent, 3);
  assert.deepEqual(a.receive(Buffer.concat(more.bytes)), [{ type: 'data', stream, data: Buffer.from('abc') }]);
  // Input the other way.
  const inp = a.data(stream, Buffer.from('ls\r'));
  assert.deepEqual(b.receive(Buffer.concat(inp.bytes)), [{ type: 'data', stream, data: Buffer.from('ls\r') }]);
  assert.deepEqual(a.receive(b.notice(stream, 'VM disconnected')!), [{ type: 'notice', stream, text: 'VM disconnected' }]);
  assert.deepEqual(b.receive(a.sendBreak(stream)!), [{ type: 'break', stream }]);
  assert.deepEqual(a.receive(b.close(stream, 'bye')!), [{ type: 'close', stream, reason: 'bye' }]);
  assert.equal(a.streamCount, 0);
  assert.equal(b.close(stream, 'again'), null, 'close is idempotent');
});

test('a refusal is a CLOSE before ACCEPT; a frame for a closed stream is dropped', () => {
  const { a, b } = pair();
  const { stream, bytes } = a.open({ console: 1 });
  b.receive(bytes);
  assert.deepEqual(a.receive(b.close(stream, 'locked: EXCLUSIVE held')!), [{ type: 'close', stream, reason: 'locked: EXCLUSIVE held' }]);
  // A late ACCEPT crossing the close changes nothing.
  assert.deepEqual(a.receive(Buffer.from([0, 0, 0, 13, 3, 0, 0, 0, stream, 0, 0, 0, 1, 0x7b, 0x7d, 0x20, 0x20])), []);
});

test('data beyond the granted window cuts the link (a peer cannot make us buffer)', () => {
  const { a, b } = pair(4);
  const { stream, bytes } = a.open({});
  b.receive(bytes);
  a.receive(b.accept(stream, {})!);
  // Forge a DATA frame of 5 bytes for a window of 4.
  const forged = Buffer.from([0, 0, 0, 10, 5, 0, 0, 0, stream, 1, 2, 3, 4, 5]);
  assert.equal(code(() => b.receive(forged)), 'VSPC_LINK_PROTOCOL');
  assert.equal(b.state, 'closed');
  assert.deepEqual(b.receive(forged), [], 'nothing after the cut');
});

test('anything before HELLO, a wrong version, a wrong node, a second HELLO: protocol errors', () => {
  const fresh = () => new LinkSession({ role: 'acceptor', nodeId: 'node-b' });
  assert.equal(code(() => fresh().receive(Buffer.from([0, 0, 0, 5, 5, 0, 0, 0, 1]))), 'VSPC_LINK_PROTOCOL');
  assert.equal(code(() => fresh().receive(Buffer.from([0, 0, 0, 5, 1, 0, 9, 0x61, 0x62]))), 'VSPC_LINK_PROTOCOL');
  assert.equal(code(() => fresh().receive(Buffer.from('GET / HTTP/1.1\r\n\r\n'))), 'VSPC_LINK_PROTOCOL');
  const dialer = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
  const impostor = new LinkSession({ role: 'acceptor', nodeId: 'node-c' });
  assert.equal(code(() => dialer.receive(impostor.hello())), 'VSPC_LINK_PROTOCOL');
  const { b } = pair();
  assert.equal(code(() => b.receive(new LinkSession({ role: 'dialer', nodeId: 'node-a' }).hello())), 'VSPC_LINK_PROTOCOL');
});

test('frame length bound: a huge length is refused before any of it is buffered', () => {
  const s = new LinkSession({ role: 'acceptor', nodeId: 'node-b', maxFrame: 1024 });
  assert.equal(code(() => s.receive(Buffer.from([0x7f, 0xff, 0xff, 0xff]))), 'VSPC_LINK_PROTOCOL');
  const t = new LinkSession({ role: 'acceptor', nodeId: 'node-b', maxFrame: 1024 });
  assert.equal(code(() => t.receive(Buffer.from([0, 0, 0, 0]))), 'VSPC_LINK_PROTOCOL', 'zero length');
});

test('OPEN: only to the acceptor, fresh ids, a JSON object header, bounded stream count', () => {
  const { a, b } = pair();
  const { bytes } = a.open({ x: 1 });
  b.receive(bytes);
  assert.equal(code(() => b.receive(bytes)), 'VSPC_LINK_PROTOCOL', 'reused id');
  const { a: a2, b: b2 } = pair();
  // The acceptor never gets an OPEN of the dialer's kind back; the dialer refuses one.
  assert.equal(code(() => a2.receive(Buffer.from([0, 0, 0, 11, 2, 0, 0, 0, 9, 0, 0, 0, 1, 0x7b, 0x7d]))), 'VSPC_LINK_PROTOCOL');
  assert.equal(code(() => b2.receive(Buffer.from([0, 0, 0, 11, 2, 0, 0, 0, 9, 0, 0, 0, 1, 0x5b, 0x5d]))), 'VSPC_LINK_PROTOCOL', 'array header');
  const small = new LinkSession({ role: 'acceptor', nodeId: 'node-b', maxStreams: 1 });
  const d = new LinkSession({ role: 'dialer', nodeId: 'node-a' });
  small.receive(d.hello());
  d.receive(small.hello());
  small.receive(d.open({}).bytes);
  assert.equal(code(() => small.receive(d.open({}).bytes)), 'VSPC_LINK_PROTOCOL', 'past maxStreams');
});

test('large data is split at the frame bound and reassembled from arbitrary chunks', () => {
  const a = new LinkSession({ role: 'dialer', nodeId: 'node-a', maxFrame: 64, window: 10_000 });
  const b = new LinkSession({ role: 'acceptor', nodeId: 'node-b', maxFrame: 64, window: 10_000 });
  a.receive(b.hello());
  b.receive(a.hello());
  const { stream, bytes } = a.open({});
  b.receive(bytes);
  a.receive(b.accept(stream, {})!);
  const payload = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
  const out = b.data(stream, payload);
  assert.equal(out.sent, 1000);
  assert.ok(out.bytes.length >= 17);
  const wire = Buffer.concat(out.bytes);
  const got: Buffer[] = [];
  for (let i = 0; i < wire.length; i += 7) {
    for (const e of a.receive(wire.subarray(i, i + 7))) if (e.type === 'data') got.push(e.data);
  }
  assert.deepEqual(Buffer.concat(got), payload);
});

test('a whole 64 KiB frame fed one byte at a time, mixed with complete frames in one chunk, gives the same events as in one piece', () => {
  const { a, b } = pair(1 << 20);
  const { stream, bytes } = a.open({ consoleId: 1 });
  b.receive(bytes);
  a.receive(b.accept(stream, { mode: 'readwrite' })!);
  const payload = Buffer.alloc(64 * 1024 - 5 - 4, 0x5a);
  const { bytes: frames } = a.data(stream, payload);
  assert.equal(frames.length, 1);
  const evs = feedBytewise(b, frames[0]);
  assert.equal(evs.length, 1);
  assert.ok(evs[0].type === 'data' && evs[0].data.equals(payload));
  // A frame's tail, two whole frames and the head of a third (3 bytes of its length) in one chunk.
  const f = [a.data(stream, Buffer.from('one')).bytes[0], a.data(stream, Buffer.from('two')).bytes[0], a.data(stream, Buffer.from('three')).bytes[0], a.data(stream, Buffer.from('four')).bytes[0]];
  const all = Buffer.concat(f);
  const cut1 = 5;
  const cut2 = f[0].length + f[1].length + f[2].length + 3;
  const got = [...b.receive(all.subarray(0, cut1)), ...b.receive(all.subarray(cut1, cut2)), ...b.receive(all.subarray(cut2))];
  assert.deepEqual(got.map((e) => (e.type === 'data' ? e.data.toString() : e.type)), ['one', 'two', 'three', 'four']);
});

test('a peer\'s window (OPEN, ACCEPT, CREDIT) counts for at most MAX_PEER_WINDOW', () => {
  const b = new LinkSession({ role: 'acceptor', nodeId: 'node-b' });
  b.receive(new LinkSession({ role: 'dialer', nodeId: 'node-a' }).hello());
  const hdr = Buffer.from('{}');
  const open = Buffer.alloc(13 + hdr.length);
  open.writeUInt32BE(9 + hdr.length, 0); open[4] = 2; open.writeUInt32BE(1, 5); open.writeUInt32BE(0xffffffff, 9); hdr.copy(open, 13);
  const [ev] = b.receive(open);
  assert.ok(ev.type === 'open' && ev.window === MAX_PEER_WINDOW);
  assert.equal(b.credit(1), MAX_PEER_WINDOW);
  const credit = Buffer.alloc(13);
  credit.writeUInt32BE(9, 0); credit[4] = 6; credit.writeUInt32BE(1, 5); credit.writeUInt32BE(0x7fffffff, 9);
  b.receive(credit);
  assert.equal(b.credit(1), MAX_PEER_WINDOW);
});

test('PING is answered by PONG with its token; PING before HELLO or with a payload is a protocol error', () => {
  const { a, b } = pair();
  const [ev] = b.receive(a.ping(0xdeadbeef)!);
  assert.deepEqual(ev, { type: 'ping', token: 0xdeadbeef });
  assert.deepEqual(a.receive(b.pong(0xdeadbeef)!), [{ type: 'pong', token: 0xdeadbeef }]);
  const fresh = new LinkSession({ role: 'acceptor', nodeId: 'node-b' });
  assert.equal(code(() => fresh.receive(a.ping(1)!)), 'VSPC_LINK_PROTOCOL');
  const bad = Buffer.from([0, 0, 0, 6, 9, 0, 0, 0, 1, 0]);
  assert.equal(code(() => b.receive(bad)), 'VSPC_LINK_PROTOCOL');
});

test('CLOSE reasons and NOTICE text from the peer come out with controls (C0, DEL, C1) and invisible formatting replaced', () => {
  const { a: d, b: o } = pair();
  const x = d.open({});
  o.receive(x.bytes);
  d.receive(o.accept(x.stream, {})!);
  const [n] = d.receive(o.notice(x.stream, '\x1b]52;c;aGk=\x07ok\x7f\u009b2J\u202e')!);
  assert.deepEqual(n, { type: 'notice', stream: x.stream, text: '?]52;c;aGk=?ok??2J?' });
  const [c] = d.receive(o.close(x.stream, 'bye\r\n\x1b[2J')!);
  assert.deepEqual(c, { type: 'close', stream: x.stream, reason: 'bye???[2J' });
});
