import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import { MAX_REPLACED_BEGINS, VmotionCoordinator } from '../../src/domain/vmotion.js';
import { FakeClient, FakeEndpoint, memoryLogger } from './fakes.js';

function setup(timeoutMs = 60_000) {
  const { logger, lines } = memoryLogger();
  const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: 'a'.repeat(32), label: '', name: 'vm1', tcpPort: 10000 }, 1024);
  // The length is configured (--vmotion-secret-bytes, default 8); 16 here proves it is used.
  const coordinator = new VmotionCoordinator({ timeoutMs, secretBytes: 16 }, logger);
  const source = new FakeEndpoint(logger).attach(hub);
  const client = new FakeClient();
  hub.addClient(client);
  return { logger, lines, hub, coordinator, source, client };
}

const seq = Buffer.from([0x01, 0xff, 0x02]);

function goahead(source: FakeEndpoint): Buffer {
  const g = source.sent.find((s) => s.kind === 'goahead');
  assert.ok(g, 'GOAHEAD sent');
  return Buffer.concat([g.seq, g.secret!]);
}

describe('vMotion coordinator', () => {
  test('BEGIN → GOAHEAD with the sequence and a random secret of 16 bytes', () => {
    const { coordinator, source, hub } = setup();
    coordinator.begin(source, seq);
    assert.equal(source.sent.length, 1);
    assert.equal(source.sent[0].kind, 'goahead');
    assert.deepEqual(source.sent[0].seq, seq);
    assert.equal(source.sent[0].secret!.length, 16);
    assert.equal(hub.state, 'migrating');
    assert.equal(coordinator.pending, 1);
    // Two migrations never share a secret.
    const other = setup();
    other.coordinator.begin(other.source, seq);
    assert.notDeepEqual(other.source.sent[0].secret, source.sent[0].secret);
  });

  test(`a source replacing its BEGIN more than MAX_REPLACED_BEGINS times in a row is closed: no secret, timer or row per BEGIN past it`, () => {
    const { coordinator, source, lines } = setup();
    for (let i = 0; i <= MAX_REPLACED_BEGINS; i++) coordinator.begin(source, Buffer.from([i]));
    assert.equal(source.sent.filter((x) => x.kind === 'goahead').length, MAX_REPLACED_BEGINS + 1, 'a retry or eight is an ESXi host retrying');
    assert.equal(source.closedWith, null);
    coordinator.begin(source, Buffer.from([0xee]));
    assert.equal(source.sent.filter((x) => x.kind === 'goahead').length, MAX_REPLACED_BEGINS + 1, 'no GOAHEAD for the flood');
    assert.equal(source.closedWith, 'too many VMOTION-BEGINs');
    assert.equal(coordinator.pending, 0, 'the pending one ended too');
    assert.ok(lines.some((l) => l.errorCode === 'VSPC_VMOTION_BEGIN_FLOOD' && l.security === true), 'logged with its code');
  });

  test('success: input held in order, delivered to the peer first, old source retired', () => {
    const { coordinator, source, hub, client, logger } = setup();
    hub.fromClient(client, Buffer.from('before'));
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.from('held-1,'));
    hub.fromClient(client, Buffer.from('held-2'));
    assert.equal(source.input.toString(), 'before', 'held input must not reach the paused VM');

    const peer = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(peer, goahead(source)), true);
    assert.deepEqual(peer.sent, [{ kind: 'peer-ok', seq }]);
    assert.equal(peer.isPeer, true);

    coordinator.complete(peer, seq);
    assert.equal(hub.source, peer);
    assert.equal(peer.input.toString(), 'held-1,held-2');
    hub.fromClient(client, Buffer.from('after'));
    assert.equal(peer.input.toString(), 'held-1,held-2after');
    assert.equal(source.retired, true);
    assert.match(source.closedWith ?? '', /vMotion complete/);
    assert.equal(hub.state, 'connected');
    assert.equal(coordinator.pending, 0);
    assert.equal(coordinator.counters.completed, 1);
    assert.equal(coordinator.historyOf(hub)[0].outcome, 'completed');
    assert.equal(coordinator.historyOf(hub)[0].heldBytes, 13);
    assert.equal(client.closedWith, null, 'clients stay connected');
  });

  test('NOTNOW when shutting down or when the connection is not an identified VM', () => {
    const { coordinator, source, logger, hub } = setup();
    const stranger = new FakeEndpoint(logger);
    coordinator.begin(stranger, seq);
    assert.deepEqual(stranger.sent, [{ kind: 'notnow', seq }]);
    coordinator.refuseNew();
    coordinator.begin(source, seq);
    assert.deepEqual(source.sent, [{ kind: 'notnow', seq }]);
    assert.equal(hub.state, 'connected');
    assert.equal(coordinator.counters.refused, 2);
  });

  test('ABORT: held input goes to the source, which carries on; the peer is closed', () => {
    const { coordinator, source, hub, client, logger } = setup();
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.from('typed'));
    const peer = new FakeEndpoint(logger);
    coordinator.peer(peer, goahead(source));
    coordinator.abort(source);
    assert.equal(source.input.toString(), 'typed');
    assert.equal(hub.source, source);
    assert.equal(hub.state, 'connected');
    assert.match(peer.closedWith ?? '', /aborted/);
    assert.equal(coordinator.pending, 0);
    assert.equal(coordinator.counters.aborted, 1);
  });

  test('COMPLETE or ABORT from the wrong side has no effect', () => {
    const { coordinator, source, hub, logger } = setup();
    coordinator.begin(source, seq);
    const peer = new FakeEndpoint(logger);
    coordinator.peer(peer, goahead(source));
    coordinator.complete(source, seq); // source cannot complete
    coordinator.abort(peer); // peer cannot abort
    coordinator.complete(peer, Buffer.from([9])); // wrong sequence
    assert.equal(hub.source, source);
    assert.equal(hub.state, 'migrating');
    assert.equal(coordinator.pending, 1);
    coordinator.complete(peer, seq);
    assert.equal(hub.source, peer);
  });

  test('a wrong or unknown seq+secret gets no PEER-OK, is closed and logged as a security event', () => {
    const { coordinator, source, lines, logger, hub } = setup();
    coordinator.begin(source, seq);
    const secret = goahead(source);
    const wrong = Buffer.from(secret);
    wrong[wrong.length - 1] ^= 1;
    const attacker = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(attacker, wrong), false);
    assert.deepEqual(attacker.sent, []);
    assert.match(attacker.closedWith ?? '', /invalid vMotion peer/);
    // A truncated secret (a prefix) does not match either.
    const prefix = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(prefix, secret.subarray(0, secret.length - 1)), false);
    assert.ok(lines.some((l) => l.security === true && String(l.message).startsWith('security:')));
    assert.equal(coordinator.counters['bad-peer'], 2);
    assert.equal(attacker.hub, null);
    assert.equal(hub.source, source);
    // The real peer can still use it, but only once.
    const peer = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(peer, secret), true);
    const late = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(late, secret), false);
  });

  test('a second BEGIN replaces the stale one, keeps held input, and says so in the log', () => {
    const { coordinator, source, hub, client, lines, logger } = setup();
    coordinator.begin(source, seq);
    const first = goahead(source);
    hub.fromClient(client, Buffer.from('a'));
    const seq2 = Buffer.from([7]);
    coordinator.begin(source, seq2);
    hub.fromClient(client, Buffer.from('b'));
    assert.equal(coordinator.pending, 1);
    assert.ok(lines.some((l) => String(l.message).includes('replaces the pending vMotion')));
    const peerOld = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(peerOld, first), false, 'the replaced secret is dead');
    const peer = new FakeEndpoint(logger);
    const g2 = source.sent.filter((s) => s.kind === 'goahead')[1];
    assert.equal(coordinator.peer(peer, Buffer.concat([g2.seq, g2.secret!])), true);
    coordinator.complete(peer, seq2);
    assert.equal(peer.input.toString(), 'ab');
  });

  test('timeout without a peer: held input goes back to the source', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { coordinator, source, hub, client } = setup(30);
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.from('x'));
    t.mock.timers.tick(30);
    assert.equal(coordinator.pending, 0);
    assert.equal(coordinator.counters['timed-out'], 1);
    assert.equal(source.input.toString(), 'x');
    assert.equal(hub.state, 'connected');
  });

  test('timeout after PEER-OK with no COMPLETE: the peer is closed', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { coordinator, source, logger, hub } = setup(30);
    coordinator.begin(source, seq);
    const peer = new FakeEndpoint(logger);
    coordinator.peer(peer, goahead(source));
    t.mock.timers.tick(30);
    assert.match(peer.closedWith ?? '', /timed out/);
    assert.equal(hub.source, source);
    assert.equal(coordinator.pending, 0);
  });

  test('source dies mid-migration: the destination can still complete; held input reaches it', () => {
    const { coordinator, source, hub, client, logger } = setup();
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.from('kept'));
    hub.detachSource(source);
    coordinator.closed(source);
    const peer = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(peer, goahead(source)), true);
    coordinator.complete(peer, seq);
    assert.equal(hub.source, peer);
    assert.equal(peer.input.toString(), 'kept');
    assert.equal(source.closedWith, null, 'a dead source is not closed again');
  });

  test('source dies and nobody comes: timeout discards held input and counts it', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { coordinator, source, hub, client } = setup(30);
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.from('lost'));
    hub.detachSource(source);
    coordinator.closed(source);
    t.mock.timers.tick(30);
    assert.equal(coordinator.pending, 0);
    assert.equal(hub.state, 'disconnected');
    assert.equal(coordinator.historyOf(hub)[0].discardedBytes, 4);
  });

  test('peer dies after PEER-OK: another peer with the same secret may complete', () => {
    const { coordinator, source, hub, logger } = setup();
    coordinator.begin(source, seq);
    const secret = goahead(source);
    const peer1 = new FakeEndpoint(logger);
    coordinator.peer(peer1, secret);
    coordinator.closed(peer1);
    coordinator.complete(peer1, seq);
    assert.equal(hub.source, source, 'a closed peer cannot complete');
    const peer2 = new FakeEndpoint(logger);
    assert.equal(coordinator.peer(peer2, secret), true);
    coordinator.complete(peer2, seq);
    assert.equal(hub.source, peer2);
  });

  test('hold bound: past it input is refused with a notice, and counted', () => {
    const { coordinator, source, hub, client, logger } = setup();
    coordinator.begin(source, seq);
    hub.fromClient(client, Buffer.alloc(1000, 1));
    hub.fromClient(client, Buffer.alloc(100, 2)); // 1100 > 1024
    assert.ok(client.notices.some((n) => n.includes('input buffer is full')));
    const peer = new FakeEndpoint(logger);
    coordinator.peer(peer, goahead(source));
    coordinator.complete(peer, seq);
    assert.equal(peer.input.length, 1000);
    assert.equal(coordinator.historyOf(hub)[0].discardedBytes, 100);
  });

  test('several serial ports of one VM migrate together by their own seq+secret', () => {
    const { logger } = memoryLogger();
    const coordinator = new VmotionCoordinator({ timeoutMs: 60_000 }, logger);
    const hubs = [1, 2].map((id) => new ConsoleHub({ id, kind: 'esxi', key: 'b'.repeat(32), label: `com${id}`, name: 'vm', tcpPort: 10000 + id }));
    const sources = hubs.map((h) => new FakeEndpoint(logger).attach(h));
    sources.forEach((s) => coordinator.begin(s, seq)); // same seq on purpose
    const peers = hubs.map(() => new FakeEndpoint(logger));
    // Peers arrive in the opposite order.
    coordinator.peer(peers[1], goahead(sources[1]));
    coordinator.peer(peers[0], goahead(sources[0]));
    coordinator.complete(peers[0], seq);
    coordinator.complete(peers[1], seq);
    assert.equal(hubs[0].source, peers[0]);
    assert.equal(hubs[1].source, peers[1]);
    assert.equal(coordinator.pending, 0);
  });
});
