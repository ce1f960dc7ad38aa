/**
 * The internal link between cluster nodes, end to end: a real PostgreSQL server
 * (test/support/postgres.ts), vspc nodes on 127.0.0.2 and 127.0.0.3
 * (test/support/cluster-link.ts), a simulated ESXi VM. A client of node A — through
 * the console broker and through real `ssh` into A's SSH front door — attached to a
 * console node B owns: bytes both ways, locks decided on the owner; the link refusing
 * plain TCP, garbage, a wrong secret and a flood, each with a log line; the
 * configuration refusing a world-readable or short secret and a link without one.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startPostgres, type TestPostgres } from '../support/postgres.js';
import { Cleanup, esxiUuid, tempDir, waitUntil, withTimeout } from '../support/server.js';
import { vspcAdmin } from '../support/cli.js';
import { offeredOn, startLinkedCluster, writeSecretFile, type LinkedCluster } from '../support/cluster-link.js';
import { BrokerPeer } from '../support/broker-client.js';
import { haveOpenSsh, keyLine, makeKey, sshArgs, SshProcess, type KeyPair } from '../support/ssh.js';
import { VSPC_JS, runNode } from '../support/cli.js';
import { LINK_CIPHERS, linkKey } from '../../src/access/cluster/link-connection.js';
import { TelnetUser, type SimulatedVm } from '../support/sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';

let pgServer: TestPostgres;
const c = new Cleanup();
let cluster: LinkedCluster;
let web01: { vm: SimulatedVm; hub: ConsoleHub };
let alice: KeyPair;
let sshPort = 0;
let knownHosts = '';

before(async () => {
  assert.ok(haveOpenSsh(), 'OpenSSH client (ssh, ssh-keygen) installed: see test/support/guest/ensure-deps.sh');
  pgServer = await startPostgres();
  const url = await pgServer.createDatabase();
  const dir = tempDir('vspc-cluster-link-ssh-');
  c.add(() => dir.remove());
  alice = makeKey(dir.dir, 'alice', 'alice@laptop');
  const keysFile = join(dir.dir, 'authorized_keys');
  writeFileSync(keysFile, keyLine(alice, 'vspc-user="alice"') + '\n', { mode: 0o600 });
  knownHosts = join(dir.dir, 'known_hosts');
  cluster = await startLinkedCluster(
    url,
    c,
    [
      { id: 'node-a', host: '127.0.0.2', config: { sshListen: { host: '127.0.0.2', port: 0 }, sshHostKeyDir: join(dir.dir, 'hostkeys'), sshAuthorizedKeys: keysFile } },
      { id: 'node-b', host: '127.0.0.3' },
    ],
    { brokerListen: { host: '127.0.0.1', port: 0 } },
  );
  sshPort = cluster.nodes[0].ts.server.addresses.ssh!.port;
  // web01's VM connects to node B, which owns it from then on.
  web01 = await cluster.nodes[1].ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, c);
  web01.vm.send('login: ');
  await web01.vm.barrier();
  await offeredOn(cluster.nodes[0], 'web01');
});
after(async () => {
  await c.run();
  await pgServer?.stop();
});

const nodeA = () => cluster.nodes[0];
const nodeB = () => cluster.nodes[1];

async function brokerOn(node: { ts: { server: { broker: { addresses: { tcp: net.AddressInfo | null } } | null } } }): Promise<BrokerPeer> {
  const tcp = node.ts.server.broker!.addresses.tcp!;
  const p = await BrokerPeer.connect({ host: '127.0.0.1', port: tcp.port });
  c.add(() => p.destroy());
  return p;
}

test('each node advertises its link in the nodes table', async () => {
  const db = cluster.url.slice(cluster.url.lastIndexOf('/') + 1, cluster.url.indexOf('?'));
  const rows = await pgServer.query<{ node_id: string; link_host: string; link_port: number }>('SELECT node_id, link_host, link_port FROM nodes ORDER BY node_id', [], db);
  assert.deepEqual(
    rows.map((r) => [r.node_id, r.link_host, r.link_port]),
    cluster.nodes.map((n) => [n.id, n.host, n.link.port]),
  );
  assert.ok(cluster.nodes.every((n) => n.link.port > 0), 'port 0 advertises the bound port');
});

test('vspc-admin status on any node: this node, and every node of the cluster live with its link address', async () => {
  const a = nodeA();
  const r = await vspcAdmin(a.ts.adminAddress, ['status']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^cluster: node ${a.id}$`, 'm'));
  for (const n of cluster.nodes) {
    const row = r.stdout.split('\n').find((l) => l.trimStart().startsWith(n.id + (n.id === a.id ? ' (this)' : ' ')));
    assert.ok(row, `a row for ${n.id} in:\n${r.stdout}`);
    assert.match(row, new RegExp(`\\blive\\b.*${n.host.replace(/\./g, '\\.')}:${n.link.port}\\b`));
  }
  const json = JSON.parse((await vspcAdmin(a.ts.adminAddress, ['status', '--json'])).stdout) as { cluster: { node: string; nodes: Array<{ node: string; live: boolean; link: string | null }> } };
  assert.equal(json.cluster.node, a.id);
  assert.deepEqual(
    json.cluster.nodes.map((n) => [n.node, n.live, n.link]),
    [...cluster.nodes].sort((x, y) => (x.id < y.id ? -1 : 1)).map((n) => [n.id, true, `${n.host}:${n.link.port}`]),
  );
});

test('a broker client on node A reaches web01, owned by node B: listed, scrollback, bytes both ways, WHO on the owner', async () => {
  const p = await brokerOn(nodeA());
  const { entries } = await p.list();
  assert.deepEqual(entries.map((e) => e.name), ['web01'], 'node A offers node B\'s console');
  p.send({ kind: 'select', address: 'web01' });
  assert.deepEqual(await p.next('selected'), { kind: 'selected', name: 'web01' });
  p.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'bob' });
  assert.deepEqual(await p.next('lock-granted'), { kind: 'lock-granted', mode: 'readwrite' });
  await p.waitText('login: ', 10_000); // the owner's scrollback
  await waitUntil(() => web01.hub.clients.size === 1, 10_000, 'the client attached on the owner');
  const holder = web01.hub.locks.list()[0];
  assert.equal(holder.user, 'bob');
  assert.match(holder.peer, /^node-a\//, 'the owner names the node the client came through');
  // Output, every byte value.
  const bytes = Buffer.from([...Array(256).keys()].filter((b) => b !== 0xff));
  web01.vm.send(bytes);
  await p.waitText(bytes.toString('latin1'), 10_000);
  // Input.
  const from = web01.vm.input.length;
  p.session.sendData(Buffer.from('root\r'));
  await web01.vm.waitForInput('root\r', 10_000, from);
  p.destroy();
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'detached on the owner when the client left node A');
});

test('locks meet on the owner: an EXCLUSIVE holder through node A refuses a client on node B, and the other way round', async () => {
  const holder = await brokerOn(nodeA());
  holder.send({ kind: 'select', address: 'web01' });
  await holder.next('selected');
  holder.send({ kind: 'lock-request', mode: 'exclusive', force: false, user: 'carol' });
  await holder.next('lock-granted');
  await waitUntil(() => web01.hub.locks.list().some((h) => h.mode === 'exclusive'), 10_000, 'EXCLUSIVE held on the owner');
  const local = await brokerOn(nodeB());
  local.send({ kind: 'select', address: 'web01' });
  await local.next('selected');
  local.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'dave' });
  const refused = await local.next('lock-refused');
  assert.match(JSON.stringify(refused), /carol/, 'the holder named');
  local.destroy();
  holder.destroy();
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'carol gone');

  // Now a holder on the owner itself, and a client through node A refused by the owner.
  const owner = await brokerOn(nodeB());
  owner.send({ kind: 'select', address: 'web01' });
  await owner.next('selected');
  owner.send({ kind: 'lock-request', mode: 'exclusive', force: false, user: 'erin' });
  await owner.next('lock-granted');
  const remote = await brokerOn(nodeA());
  remote.send({ kind: 'select', address: 'web01' });
  await remote.next('selected');
  remote.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'frank' });
  await remote.waitClosed(10_000);
  assert.match(JSON.stringify(remote.messages), /erin/, 'told who holds it, by the owner');
  owner.destroy();
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'erin gone');
});

test('real ssh into node A\'s front door attaches to web01 on node B: bytes both ways', async () => {
  const s = { port: sshPort, knownHosts };
  const list = new SshProcess(sshArgs(s, alice, ['-o', 'HostKeyAlias=node-a', 'console@127.0.0.2', 'list']), c);
  const listed = await list.exit(15_000);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, /^web01\s+esxi\s+connected/m);
  const session = new SshProcess(sshArgs(s, alice, ['-o', 'HostKeyAlias=node-a', 'console@127.0.0.2', 'web01', '--raw']), c);
  await waitUntil(() => web01.hub.clients.size === 1, 15_000, 'attached on the owner');
  web01.vm.send('from the VM on node B\r\n');
  await session.waitFor(/from the VM on node B/);
  const from = web01.vm.input.length;
  session.write('typed on node A');
  await web01.vm.waitForInput('typed on node A', 10_000, from);
  session.endInput();
  const r = await session.exit(15_000);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'from the VM on node B\r\n');
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'detached on the owner');
});

test('the link refuses plain TCP, garbage, a wrong secret and a flood, with a log line each (rate-limited), and keeps serving', async () => {
  const b = nodeB();
  const before = b.ts.server.clusterLink!.refused;
  const closedSoon = (s: net.Socket) => withTimeout(new Promise<void>((r) => s.once('close', () => r())), 15_000, 'the link cut the peer');
  // Plain TCP, silent: the handshake timeout is the bound; garbage: refused at once.
  const garbage = net.connect({ host: b.host, port: b.link.port });
  garbage.on('error', () => undefined);
  garbage.on('connect', () => garbage.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await closedSoon(garbage);
  // TLS with the right identity and a wrong key.
  const wrong = tls.connect({
    host: b.host,
    port: b.link.port,
    ciphers: LINK_CIPHERS,
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    checkServerIdentity: () => undefined,
    pskCallback: () => ({ psk: linkKey(Buffer.from('x'.repeat(64)), 'node-a'), identity: 'node-a' }),
  });
  let secured = false;
  wrong.on('secureConnect', () => (secured = true));
  wrong.on('error', () => undefined);
  await closedSoon(wrong);
  assert.equal(secured, false, 'no TLS session with a wrong secret');
  // A flood of 50 garbage connections.
  const flood = Array.from({ length: 50 }, () => {
    const s = net.connect({ host: b.host, port: b.link.port });
    s.on('error', () => undefined);
    s.on('connect', () => s.write(Buffer.alloc(64, 0x16)));
    return closedSoon(s);
  });
  await Promise.all(flood);
  await waitUntil(() => b.ts.server.clusterLink!.refused >= before + 52, 10_000, 'every peer counted as refused');
  const lines = b.ts.logs.lines.filter((l) => l.message === 'security: unauthenticated cluster link connection refused');
  assert.ok(lines.length >= 1 && lines.length <= 10, `logged, but at most 10 a minute (${lines.length})`);
  assert.equal(lines[0].errorCode, 'VSPC_LINK_AUTH_FAILED');
  assert.equal(b.ts.server.clusterLink!.connections, 0, 'no link set up by any of them');
  // Still serving the real nodes.
  const p = await brokerOn(nodeA());
  p.send({ kind: 'select', address: 'web01' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode: 'readonly', force: false, user: 'gina' });
  await p.next('lock-granted');
  web01.vm.send('still here\r\n');
  await p.waitText('still here', 10_000);
  // The authenticated link does not count against the handshake bound, the refused ones no longer do.
  assert.equal(b.ts.server.clusterLink!.pendingHandshakes, 0);
  p.destroy();
  await waitUntil(() => web01.hub.clients.size === 0, 10_000, 'gina gone');
});

test('a client of node A that stops reading is dropped there; the console on node B and its local client never wait', async () => {
  const b = nodeB();
  const flood = await b.ts.connectVm({ uuid: esxiUuid().text, name: 'flood01' }, c);
  await offeredOn(nodeA(), 'flood01');
  // A telnet user on the console's own port, on node B's address.
  const local = await TelnetUser.connect({ host: b.host, port: flood.hub.identity.tcpPort });
  c.add(() => local.destroy());
  await local.waitFor('[vspc: ', 5000);
  const slow = await brokerOn(nodeA());
  slow.send({ kind: 'select', address: 'flood01' });
  await slow.next('selected');
  slow.send({ kind: 'lock-request', mode: 'readonly', force: false, user: 'sloth' });
  await slow.next('lock-granted');
  await waitUntil(() => flood.hub.clients.size === 2, 10_000, 'both clients attached on the owner');
  slow.socket.pause(); // never reads again
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const total = 8 * 1024 * 1024; // far beyond --client-queue-limit (1 MiB) and the kernel's buffers
  for (let sent = 0; sent < total; sent += chunk.length) flood.vm.send(chunk);
  flood.vm.send('end-of-flood');
  await local.waitFor('end-of-flood', 60_000);
  assert.ok(local.received.length >= total, 'the local client got everything');
  // Node A dropped its slow client (its own queue bound); the owner kept no client for it.
  await nodeA().ts.logs.waitFor((l) => l.message === 'client too slow; disconnecting', 30_000, 0, 'node A drops the client that does not read');
  await waitUntil(() => flood.hub.clients.size === 1, 10_000, 'the remote client detached on the owner');
  assert.equal(b.ts.logs.filter((l) => l.message === 'client too slow; disconnecting').length, 0, 'nothing is slow on the owner');
});

test('configuration: a world-readable or short secret, a link without a secret or without PostgreSQL, are refused naming the field', async () => {
  const dir = tempDir('vspc-cluster-cfg-');
  c.add(() => dir.remove());
  const good = writeSecretFile(dir.dir);
  const open = join(dir.dir, 'open.secret');
  writeFileSync(open, 'y'.repeat(64));
  chmodSync(open, 0o644);
  const short = join(dir.dir, 'short.secret');
  writeFileSync(short, 'tooshort\n', { mode: 0o600 });
  const base = ['--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--db', cluster.url, '--node-id', 'cfg'];
  const cases: Array<[string[], RegExp]> = [
    [['--cluster-listen', '127.0.0.4:0', '--cluster-secret-file', open], /--cluster-secret-file: .*readable by every user/],
    [['--cluster-listen', '127.0.0.4:0', '--cluster-secret-file', short], /--cluster-secret-file: .*8 characters; it needs at least 32/],
    [['--cluster-listen', '127.0.0.4:0'], /--cluster-secret-file: a cluster link needs the shared secret/],
    [['--cluster-listen', '0.0.0.0:7700', '--cluster-secret-file', good], /--cluster-listen: give the address the other nodes reach/],
  ];
  for (const [args, want] of cases) {
    const r = await runNode(VSPC_JS, [...base, ...args]);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, want);
  }
  const sqlite = await runNode(VSPC_JS, ['--proxy-listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--db', join(dir.dir, 'x.db'), '--cluster-listen', '127.0.0.4:0', '--cluster-secret-file', good]);
  assert.notEqual(sqlite.code, 0);
  assert.match(sqlite.stderr, /--cluster-listen: the cluster link is for nodes sharing a PostgreSQL database/);
});

test('a console served by a node without the internal link: a client on node A is told that node has no link and how to give it one', async () => {
  const lone = await cluster.start('node-nolink', '127.0.0.4', { clusterListen: null, clusterSecret: null });
  const vm = await lone.ts.connectVm({ uuid: esxiUuid().text, name: 'nolink01' }, c);
  await offeredOn(nodeA(), 'nolink01');
  const p = await brokerOn(nodeA());
  const { entries } = await p.list();
  assert.ok(entries.some((e) => e.name === 'nolink01'), 'listed on node A');
  p.send({ kind: 'select', address: 'nolink01' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'erin' });
  await p.waitClosed(10_000);
  assert.match(p.text + JSON.stringify(p.messages), /served by node node-nolink, which has no internal link \(start it with --cluster-listen and --cluster-secret-file\)/);
  vm.vm.destroy();
});

test('a node whose secret differs: a client on node A is told the secrets may differ, and node A says so in its log', async () => {
  const other = writeSecretFile(tempDir('vspc-cluster-othersecret-').dir, 'other.secret');
  const { readClusterSecret } = await import('../../src/config/table.js');
  const odd = await cluster.start('node-odd', '127.0.0.5', { clusterSecret: readClusterSecret('--cluster-secret-file', other) });
  const vm = await odd.ts.connectVm({ uuid: esxiUuid().text, name: 'odd01' }, c);
  await offeredOn(nodeA(), 'odd01');
  const from = nodeA().ts.logs.lines.length;
  const p = await brokerOn(nodeA());
  p.send({ kind: 'select', address: 'odd01' });
  await p.next('selected');
  p.send({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'erin' });
  await p.waitClosed(15_000);
  assert.match(p.text + JSON.stringify(p.messages), /does that node have the same --cluster-secret-file as this one\?/);
  const line = await nodeA().ts.logs.waitFor((l) => l.message === "cluster link handshake refused: the nodes' secrets may differ", 10_000, from);
  assert.equal(line.errorCode, 'VSPC_LINK_AUTH_FAILED');
  vm.vm.destroy();
});

// Last in this file: node A takes its database as unavailable for a while (5 s) after it.
test('while node A\'s database does not answer, "no such console" says that consoles of other nodes may be missing (broker and SSH)', async () => {
  const p = await brokerOn(nodeA());
  p.send({ kind: 'select', address: 'nosuch01' });
  const before = await p.next('select-refused');
  assert.doesNotMatch(before.message, /cluster database/, 'not said while the database answers');
  nodeA().ts.server.clusterMirrors!.markUnavailable('test: lookups refused');
  p.send({ kind: 'select', address: 'nosuch02' });
  const refused = await p.next('select-refused', p.messages.indexOf(before) + 1);
  assert.equal(refused.reason, 'not-found');
  assert.match(refused.message, /^no console named "nosuch02" .*; the cluster database is not answering, so consoles of other nodes may be missing: try again in a few seconds$/);
  // Node A's own list (web01, from the last good list) still works.
  p.send({ kind: 'select', address: 'web01' });
  await p.next('selected');
  const s = { port: sshPort, knownHosts };
  const r = await new SshProcess(sshArgs(s, alice, ['-o', 'HostKeyAlias=node-a', 'console@127.0.0.2', 'nosuch03']), c).exit(15_000);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /no console "nosuch03" that this key may use \(try: list\); the cluster database is not answering/);
});
