/**
 * ClusterVmotionService.find (src/access/cluster/vmotion-handover.ts): a VMOTION-PEER
 * payload against the row the database returns for its whole token. The secret decides,
 * compared in full; this node's own rows never match remotely; look-ups that match
 * nothing spend a per-address budget.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterVmotionService, PEER_LOOKUP_BURST, type VmotionStore } from '../../src/access/cluster/vmotion-handover.js';
import type { Registry } from '../../src/domain/registry.js';
import type { VmotionCoordinator } from '../../src/domain/vmotion.js';
import type { ClusterLinks } from '../../src/domain/cluster-link.js';
import { LogCapture } from '../support/log-capture.js';

function service(rows: Array<{ token: string; seqLength: number; consoleId: number; sourceNode: string }>, asked: string[] = []): ClusterVmotionService {
  const store: VmotionStore = {
    publish: () => undefined,
    withdraw: () => undefined,
    find: (payload) => {
      asked.push(payload);
      return rows;
    },
    nodeLink: () => null,
  };
  return new ClusterVmotionService(new LogCapture().logger, {
    nodeId: 'node-b',
    registry: { on: () => undefined } as unknown as Registry,
    coordinator: {} as VmotionCoordinator,
    links: {} as ClusterLinks,
    store,
  });
}

const seq = Buffer.from([0x00, 0xff]);
const secret = Buffer.from([0xff, 0xf0, 1, 2, 3, 4, 5, 6]);
const token = Buffer.concat([seq, secret]);

test('the row with the same sequence and secret matches: sequence split by the row, console and source node from it', () => {
  const asked: string[] = [];
  const m = service([{ token: token.toString('hex'), seqLength: 2, consoleId: 7, sourceNode: 'node-a' }], asked).find(token, '192.0.2.1');
  assert.deepEqual(asked, [token.toString('hex')]);
  assert.ok(m);
  assert.deepEqual([m.seq, m.token, m.consoleId, m.sourceNode], [seq, token, 7, 'node-a']);
});

test('a secret differing in any byte matches nothing', () => {
  for (let i = seq.length; i < token.length; i++) {
    const forged = Buffer.from(token);
    forged[i] ^= 0x80;
    assert.equal(service([{ token: token.toString('hex'), seqLength: 2, consoleId: 7, sourceNode: 'node-a' }]).find(forged, '192.0.2.1'), null, `byte ${i}`);
  }
});

test("this node's own rows and payloads of absurd length are not looked at as remote migrations", () => {
  assert.equal(service([{ token: token.toString('hex'), seqLength: 2, consoleId: 7, sourceNode: 'node-b' }]).find(token, '192.0.2.1'), null);
  const asked: string[] = [];
  assert.equal(service([], asked).find(Buffer.alloc(1), '192.0.2.1'), null);
  assert.equal(service([], asked).find(Buffer.alloc(300), '192.0.2.1'), null);
  assert.deepEqual(asked, [], 'no query for them');
});

test('VMOTION-PEERs from one address past PEER_LOOKUP_BURST are refused without a query, logged once per hundred; another address still gets its look-ups', () => {
  const asked: string[] = [];
  const s = service([], asked);
  for (let i = 0; i < PEER_LOOKUP_BURST + 50; i++) assert.equal(s.find(token, '198.51.100.7'), null);
  assert.equal(asked.length, PEER_LOOKUP_BURST, 'one query per PEER only within the burst');
  assert.equal(s.peersThrottled, 50);
  assert.equal(s.find(token, '198.51.100.8'), null);
  assert.equal(asked.length, PEER_LOOKUP_BURST + 1, 'another address is not throttled');
});

test('PEERs that match a row do not spend the budget: a host moving many VMs at once is never throttled', () => {
  const asked: string[] = [];
  const s = service([{ token: token.toString('hex'), seqLength: 2, consoleId: 7, sourceNode: 'node-a' }], asked);
  for (let i = 0; i < PEER_LOOKUP_BURST * 3; i++) assert.ok(s.find(token, '198.51.100.9'), `PEER ${i} found`);
  assert.equal(s.peersThrottled, 0);
  assert.equal(asked.length, PEER_LOOKUP_BURST * 3);
});
