/**
 * Cross-node vMotion (src/access/cluster/vmotion-handover.ts) end to end: a real
 * PostgreSQL server, two vspc nodes on 127.0.0.2 and 127.0.0.3 joined by the cluster
 * link (test/support/cluster-link.ts), simulated ESXi connections. The destination of
 * every vMotion lands on the other node than the source; a telnet user attached on
 * the first node stays attached throughout (its hub becomes a relay of the new owner,
 * then the owner again). 100 vMotions under traffic both ways: every byte once and in
 * order. A forged secret gets nothing on the other node; ABORT deletes the row. With
 * a third node (127.0.0.4), its broker client stays attached while the console moves.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid, waitUntil } from '../support/server.js';
import { offeredOn, startLinkedCluster, type LinkedCluster, type LinkedNode } from '../support/cluster-link.js';
import { SimulatedVm, TelnetUser } from '../support/sim/index.js';
import { Option } from '../../src/protocol/telnet/index.js';
import { BrokerPeer } from '../support/broker-client.js';

let pgServer: TestPostgres;
let cluster: LinkedCluster;
const c = new Cleanup();

before(async () => {
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  cluster = await startLinkedCluster(url, c, [
    { id: 'node-a', host: '127.0.0.2' },
    { id: 'node-b', host: '127.0.0.3' },
  ]);
});
after(async () => {
  await c.run();
  await pgServer?.stop();
});

function dbName(): string {
  return cluster.url.slice(cluster.url.lastIndexOf('/') + 1, cluster.url.indexOf('?'));
}

async function userOn(node: LinkedNode, port: number): Promise<TelnetUser> {
  const user = await TelnetUser.connect({ host: node.host, port });
  c.add(() => user.destroy());
  await user.waitForOptions([
    ['us', Option.BINARY],
    ['him', Option.BINARY],
    ['him', Option.ECHO],
    ['him', Option.SGA],
  ]);
  await user.waitFor('[vspc: ', 5000);
  await user.barrier();
  return user;
}

async function vmOn(node: LinkedNode, uuid: string, name: string, skipDoProxy = false): Promise<SimulatedVm> {
  const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: node.ts.proxyPort, uuid, name, skipDoProxy });
  c.add(() => vm.destroy());
  return vm;
}

const sourcePeer = (node: LinkedNode, hex: string) => node.ts.server.registry.get('esxi', hex, '')?.source?.peer ?? null;

/** The nodes' warnings and errors since `marks` (one line count per node): what a failed round says why with. */
function nodeTrouble(marks: number[]): string {
  const lines = cluster.nodes.flatMap((n, i) => n.ts.logs.lines.slice(marks[i] ?? 0).filter((l) => l.level === 'warn' || l.level === 'error').map((l) => `${n.id}: ${JSON.stringify(l)}`));
  return lines.length > 0 ? `; the nodes said:\n  ${lines.slice(-10).join('\n  ')}` : '; no warning from the nodes';
}

test('100 cross-node vMotions under traffic both ways: every byte once and in order, the user on node A attached throughout', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  let vm = await vmOn(a, id.text, 'mover');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  const user = await userOn(a, hub.identity.tcpPort);
  const vms: SimulatedVm[] = [vm];
  let out = '';
  let inp = '';
  let owner = a;
  const rounds = 100;
  for (let i = 0; i < rounds; i++) {
    const target = owner === a ? b : a;
    const o1 = `o${i}a;`;
    const i1 = `i${i}a;`;
    vm.send(o1);
    out += o1;
    user.send(i1);
    inp += i1;
    const seq = Buffer.from([i & 0xff, 0xff, (i >> 8) & 0xff]);
    const r = await vm.vmotionBegin(seq);
    assert.equal(r.kind, 'goahead', `round ${i}`);
    const secret = (r as { secret: Buffer }).secret;
    const i2 = `i${i}b;`;
    user.send(i2); // held: the VM is paused
    inp += i2;
    const marks = cluster.nodes.map((n) => n.ts.logs.lines.length);
    const dest = await vmOn(target, id.text, 'mover', true);
    vms.push(dest);
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, secret]), 5000), true, `PEER-OK on the other node, round ${i}${nodeTrouble(marks)}`);
    const i3 = `i${i}c;`;
    user.send(i3);
    inp += i3;
    dest.vmotionComplete(seq);
    await dest.barrier();
    await waitUntil(() => sourcePeer(target, id.hex) === `127.0.0.1:${dest.localPort}`, 10_000, `round ${i}: the destination is the source on ${target.id}`);
    const o2 = `o${i}b;`;
    dest.send(o2);
    out += o2;
    vm = dest;
    owner = target;
  }
  const last = `i-end;`;
  user.send(last);
  inp += last;
  await vm.waitForInput(last, 10_000);
  const strip = (s: string) => s.replace(/\r\n\[vspc: [^\]]*\]\r\n/g, '');
  await waitUntil(() => strip(user.text).includes(`o${rounds - 1}b;`), 10_000, 'the last output reached the user on node A');
  // Every byte once and in order: the input split across the VM connections in order,
  // the output as the user saw it.
  assert.equal(vms.map((v) => v.input.toString('latin1')).join(''), inp, 'input: every byte once and in order');
  assert.equal(strip(user.text), out, 'output: every byte once and in order');
  assert.equal(user.closed, false);
  assert.equal(owner, a, 'an even number of moves ends on node A');
  assert.equal(a.ts.server.clusterVmotion!.completedHere + b.ts.server.clusterVmotion!.completedHere, rounds);
  // The console kept its port; rows deleted.
  const rows = await a.ts.ports();
  assert.equal(rows.find((p) => p.name === 'mover')?.port, hub.identity.tcpPort);
  assert.equal(rows.find((p) => p.name === 'mover')?.node, 'node-a');
  assert.deepEqual(await pgServer.query('SELECT 1 FROM vmotions', [], dbName()), []);
  assert.equal(a.ts.server.clusterVmotion!.relayCount + b.ts.server.clusterVmotion!.relayCount, 0, 'no relay left: the console is back where its user is');
});

test('a relay whose last client leaves is closed: no phantom lock holder stays on the new owner', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'leaver');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  const user = await userOn(a, hub.identity.tcpPort);
  const seq = Buffer.from([0x5a]);
  const r = await vm.vmotionBegin(seq);
  const dest = await vmOn(b, id.text, 'leaver', true);
  assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]), 5000), true);
  dest.vmotionComplete(seq);
  await dest.barrier();
  await waitUntil(() => sourcePeer(b, id.hex) === `127.0.0.1:${dest.localPort}`, 10_000, 'moved to node B');
  const onB = b.ts.server.registry.get('esxi', id.hex, '')!;
  await waitUntil(() => onB.locks.list().some((h) => h.peer === 'node-a/relay'), 10_000, 'node A relays its user');
  user.destroy();
  await waitUntil(() => onB.clients.size === 0 && onB.locks.list().length === 0, 10_000, 'the relay left the owner');
  assert.equal(a.ts.server.clusterVmotion!.relayCount, 0);
});

test('a forged secret on the other node gets no PEER-OK and a security line; ABORT deletes the row and nothing moves', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'guarded');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  const seq = Buffer.from([0x42, 0xff]);
  const r = await vm.vmotionBegin(seq);
  const secret = (r as { secret: Buffer }).secret;
  assert.equal((await pgServer.query('SELECT 1 FROM vmotions', [], dbName())).length, 1, 'published at GOAHEAD');
  const forged = Buffer.from(secret);
  forged[forged.length - 1] ^= 0x01;
  const attacker = await vmOn(b, id.text, 'guarded', true);
  assert.equal(await attacker.vmotionPeer(Buffer.concat([seq, forged]), 1000), false);
  await attacker.whenClosed(5000);
  assert.ok(b.ts.logs.find((l) => l.security === true && /VMOTION-PEER/.test(String(l.message))), 'security line on node B');
  vm.vmotionAbort();
  await vm.barrier();
  await waitUntil(async () => (await pgServer.query('SELECT 1 FROM vmotions', [], dbName())).length === 0, 5000, 'row deleted at ABORT');
  // The real secret is useless now too.
  const late = await vmOn(b, id.text, 'guarded', true);
  assert.equal(await late.vmotionPeer(Buffer.concat([seq, secret]), 1000), false);
  assert.equal(hub.source?.peer, `127.0.0.1:${vm.localPort}`, 'nothing moved');
});

test('three nodes: a broker client of node C on a console that moves A → B → A keeps working through the old owner\'s relay', async () => {
  const [a, b] = cluster.nodes;
  const cNode = await cluster.start('node-c', '127.0.0.4', { brokerListen: { host: '127.0.0.1', port: 0 } });
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'triad');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  await offeredOn(cNode, 'triad');
  const p = await BrokerPeer.connect({ host: '127.0.0.1', port: cNode.ts.server.broker!.addresses.tcp!.port });
  c.add(() => p.destroy());
  p.send({ kind: 'select', address: 'triad' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'carla' });
  await p.next('lock-granted');
  await waitUntil(() => hub.clients.size === 1, 10_000, 'node C\'s client attached on node A');
  const strip = (t: string) => t.replace(/\r\n\[vspc: [^\]]*\]\r\n/g, '');
  vm.send('x1;');
  await p.waitText('x1;', 10_000);
  let source = vm;
  const vms = [vm];
  let expectOut = 'x1;';
  let expectIn = '';
  for (const [step, target] of [b, a].entries()) {
    const seq = Buffer.from([0x70 + step]);
    const r = await source.vmotionBegin(seq);
    const dest = await vmOn(target, id.text, 'triad', true);
    vms.push(dest);
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]), 5000), true);
    dest.vmotionComplete(seq);
    await dest.barrier();
    await waitUntil(() => sourcePeer(target, id.hex) === `127.0.0.1:${dest.localPort}`, 10_000, `on ${target.id}`);
    const o = `x${step + 2};`;
    dest.send(o);
    expectOut += o;
    await waitUntil(() => strip(p.text).endsWith(o), 10_000, `${o} reached node C`);
    const i = `y${step + 1};`;
    p.session.sendData(Buffer.from(i));
    expectIn += i;
    await dest.waitForInput(i, 10_000);
    // The console's telnet port moved with it: bound on the new owner (on its address).
    let fresh: TelnetUser | null = null;
    await waitUntil(async () => {
      fresh = await TelnetUser.connect({ host: target.host, port: hub.identity.tcpPort }).catch(() => null);
      return fresh !== null;
    }, 10_000, `port ${hub.identity.tcpPort} bound on ${target.id}`);
    c.add(() => fresh?.destroy());
    await fresh!.waitFor('[vspc: triad (uuid', 5000);
    fresh!.destroy();
    source = dest;
  }
  assert.equal(strip(p.text), expectOut);
  assert.equal(vms.map((v) => v.input.toString('latin1')).join(''), expectIn);
  assert.equal(p.closed, false);
});

test('output the destination prints right after COMPLETE, before its node has claimed the console, reaches the user on the old node', async () => {
  // As ESXi does: the VM resumes at COMPLETE and prints at once, while the destination's
  // node still waits for the source's node to release the console. Those bytes are kept
  // and must be part of what the old node's relay is replayed.
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'eager');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  const user = await userOn(a, hub.identity.tcpPort);
  const strip = (s: string) => s.replace(/\r\n\[vspc: [^\]]*\]\r\n/g, '');
  let source = vm;
  let expected = '';
  for (const [step, target] of [b, a, b].entries()) {
    const seq = Buffer.from([0x60 + step]);
    const r = await source.vmotionBegin(seq);
    assert.equal(r.kind, 'goahead');
    const dest = await vmOn(target, id.text, 'eager', true);
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]), 5000), true);
    const o = `e${step};`;
    dest.vmotionComplete(seq);
    dest.send(o); // no wait for the takeover
    expected += o;
    await waitUntil(() => strip(user.text) === expected, 10_000, `step ${step}: "${o}" reached the user on node A (got ${JSON.stringify(strip(user.text))})`);
    source = dest;
  }
  assert.equal(user.closed, false);
});

test('the scrollback moves with the console: a user who first attaches on the new owner is replayed what the VM printed on the old one', async () => {
  const [a, b] = cluster.nodes;
  const id = esxiUuid();
  const vm = await vmOn(a, id.text, 'history');
  const hub = await a.ts.waitRegistered(id.text, '', 10_000);
  vm.send('boot: line one\r\n');
  vm.send('login: ');
  await waitUntil(() => hub.scrollback.length === 'boot: line one\r\nlogin: '.length, 5000, 'printed on node A');
  const seq = Buffer.from([0x7e]);
  const r = await vm.vmotionBegin(seq);
  const dest = await vmOn(b, id.text, 'history', true);
  assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]), 5000), true);
  dest.vmotionComplete(seq);
  dest.send('after;');
  await dest.barrier();
  await waitUntil(() => sourcePeer(b, id.hex) === `127.0.0.1:${dest.localPort}`, 10_000, 'moved to node B');
  const onB = b.ts.server.registry.get('esxi', id.hex, '')!;
  // Nobody was attached on node A: node B's hub is new, with no relay's history of its own.
  const user = await TelnetUser.connect({ host: b.host, port: onB.identity.tcpPort });
  c.add(() => user.destroy());
  await user.waitFor('boot: line one\r\nlogin: after;', 10_000);
  assert.equal(user.text.split('boot: line one').length, 2, 'replayed once');
});
