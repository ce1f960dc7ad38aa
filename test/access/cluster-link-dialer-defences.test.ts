/**
 * The dialing side of the cluster link (src/access/cluster/link-dialer.ts,
 * src/sources/cluster/mirror.ts) against a hostile or vanished owner node. In
 * process, loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { ClusterLinkDialer } from '../../src/access/cluster/link-dialer.js';
import { LINK_CIPHERS, linkKey } from '../../src/access/cluster/link-connection.js';
import { LinkSession } from '../../src/protocol/cluster/link.js';
import { ClusterMirrors } from '../../src/sources/cluster/mirror.js';
import type { ClusterLinks, RemoteAttachHandlers, RemoteAttachment } from '../../src/domain/cluster-link.js';
import type { ConsoleClient } from '../../src/domain/seams.js';
import { allocateClientId } from '../../src/domain/client-ids.js';
import { LogCapture } from '../support/log-capture.js';
import { waitUntil } from '../support/server.js';

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef');
const ESC = /[\x00-\x08\x0b-\x1f\x7f\x9b]/;

/** An owner node that knows the secret (compromised, or a buggy newer version): `script` answers each OPEN. */
async function hostileOwner(script: (s: LinkSession, sock: tls.TLSSocket, stream: number) => void) {
  const srv = tls.createServer({
    ciphers: LINK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
    pskCallback: (_s, id) => linkKey(SECRET, id),
  });
  const socks = new Set<tls.TLSSocket>();
  srv.on('secureConnection', (sock) => {
    socks.add(sock);
    const s = new LinkSession({ role: 'acceptor', nodeId: 'node-b' });
    sock.write(s.hello());
    sock.on('data', (d: Buffer) => {
      for (const ev of s.receive(d)) if (ev.type === 'open') script(s, sock, ev.stream);
    });
    sock.on('error', () => undefined);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  return { port, close: () => new Promise<void>((r) => { for (const x of socks) x.destroy(); srv.close(() => r()); }) };
}

function handlers(into: { notices: string[]; closed: string[] }): RemoteAttachHandlers {
  return {
    accepted: () => undefined, data: () => undefined, breakFromSource: () => undefined, drain: () => undefined,
    notice: (t) => into.notices.push(t), closed: (r) => into.closed.push(r),
  };
}

const REQ = { consoleId: 7, tcpPort: 20007, request: 'readwrite' as const, force: false, replay: true, peer: 'p', method: 'ssh' };

test('NOTICE text and CLOSE reasons from the owner reach the client with every control character replaced', async () => {
  const evil = '\x1b]0;owned\x07\x1b[2J\x1b[31mfake prompt$ ';
  const owner = await hostileOwner((s, sock, stream) => {
    sock.write(s.accept(stream, { mode: 'readwrite' })!);
    sock.write(s.notice(stream, evil)!);
    sock.write(s.close(stream, evil)!);
  });
  const d = new ClusterLinkDialer(new LogCapture().logger, { nodeId: 'node-a', secret: SECRET, connectTimeoutMs: 3000 });
  const got = { notices: [] as string[], closed: [] as string[] };
  d.attach({ node: 'node-b', host: '127.0.0.1', port: owner.port }, REQ, handlers(got));
  try {
    await waitUntil(() => got.closed.length === 1, 5000, 'stream closed by the owner');
    assert.ok(!ESC.test(got.notices.join('')), `NOTICE control bytes reach the client: ${JSON.stringify(got.notices)}`);
    assert.ok(!ESC.test(got.closed.join('')), `CLOSE reason control bytes reach the client: ${JSON.stringify(got.closed)}`);
    assert.deepEqual(got.notices, ['?]0;owned??[2J?[31mfake prompt$ ']);
  } finally {
    d.close();
    await owner.close();
  }
});

test('liveness (dialer side): an owner that stops answering (SIGSTOP, power loss, blackhole) is cut after the idle timeout and the attachment ends with the reason', async () => {
  const owner = await hostileOwner((s, sock, stream) => {
    sock.write(s.accept(stream, { mode: 'readwrite' })!);
    sock.pause(); // from now on: silent, like a stopped process (the kernel still ACKs)
  });
  const d = new ClusterLinkDialer(new LogCapture().logger, { nodeId: 'node-a', secret: SECRET, connectTimeoutMs: 3000, pingAfterMs: 200, idleTimeoutMs: 800 });
  const got = { notices: [] as string[], closed: [] as string[] };
  d.attach({ node: 'node-b', host: '127.0.0.1', port: owner.port }, REQ, handlers(got));
  try {
    await waitUntil(() => got.closed.length === 1, 5000, 'attachment ended by a link liveness check');
    assert.match(got.closed[0], /no traffic from the peer node/);
    assert.equal(d.links, 0);
  } finally {
    d.close();
    await owner.close();
  }
});

class FakeClient implements ConsoleClient {
  readonly id = allocateClientId();
  readonly method = 'ssh';
  constructor(readonly peer: string) {}
  deliver(): void {}
  notice(): void {}
  pauseInput(): void {}
  resumeInput(): void {}
  readonly closedWith: string[] = [];
  close(reason?: string): void {
    if (reason !== undefined) this.closedWith.push(reason);
  }
}

test('a mirror sends a client\'s BREAK on that client\'s own stream (not the first attached client\'s)', () => {
  const sent: string[] = [];
  const accepted: Array<(mode: string) => void> = [];
  const links: ClusterLinks = {
    attach: (_o, req, h): RemoteAttachment => {
      accepted.push((mode) => h.accepted(mode as never));
      return { write: () => true, sendBreak: () => sent.push(`${req.peer}`), close: () => undefined, whenFlushed: (cb) => cb() };
    },
  };
  const mirrors = new ClusterMirrors(new LogCapture().logger, {
    nodeId: 'node-a',
    clusterList: () => [{ id: 7, kind: 'esxi', key: 'k', label: '', name: 'web01', tcpPort: 20007, owner: 'node-b' } as never],
    ownerOf: () => ({ node: 'node-b', host: '127.0.0.1', port: 1 }),
    links,
  });
  const m = mirrors.remoteConsoles()[0];
  assert.equal(m.addClient(new FakeClient('viewer'), { request: 'readonly' }).granted, true);
  assert.equal(m.addClient(new FakeClient('writer'), { request: 'readwrite' }).granted, true);
  accepted[0]('readonly');
  m.sendBreak();
  assert.deepEqual(sent, [], 'no stream granted write yet');
  accepted[1]('readwrite');
  m.sendBreak();
  assert.deepEqual(sent, ['writer']);
});

test('a failed cluster lookup marks the database unavailable: no lookup is tried for retryAfterMs, the last list is shown, attaches are refused with VSPC_LINK_UNAVAILABLE', async () => {
  let lists = 0;
  let owners = 0;
  let down = false;
  const record = { id: 7, kind: 'esxi', key: 'k', label: '', name: 'web01', tcpPort: 20007, owner: 'node-b' } as never;
  const logs = new LogCapture();
  const mirrors = new ClusterMirrors(logs.logger, {
    nodeId: 'node-a',
    clusterList: () => {
      lists++;
      if (down) throw new Error('PostgreSQL did not answer clusterList within 500 ms');
      return [record];
    },
    ownerOf: () => {
      owners++;
      if (down) throw new Error('PostgreSQL did not answer ownerLink within 500 ms');
      return { node: 'node-b', host: '127.0.0.1', port: 1 };
    },
    links: { attach: (): RemoteAttachment => ({ write: () => true, sendBreak: () => undefined, close: () => undefined, whenFlushed: (cb) => cb() }) },
    retryAfterMs: 60_000,
  });
  assert.equal(mirrors.remoteConsoles().length, 1);
  down = true;
  const m = mirrors.remoteConsoles()[0]; // cached for this turn
  const client = new FakeClient('c');
  const closed = client.closedWith;
  m.addClient(client, { request: 'readonly' });
  await waitUntil(() => closed.length === 1, 5000, 'refused');
  assert.match(closed[0], /VSPC_LINK_UNAVAILABLE/);
  assert.equal(owners, 1);
  assert.equal(mirrors.databaseAvailable, false);
  await logs.waitFor((l) => l.message === 'cluster lookups unavailable; remote consoles refused until the database answers', 5000, 0, 'the log line');
  // Later turns: the last list, no lookup; an attach is refused without asking the database.
  await new Promise<void>((r) => setImmediate(r));
  const listsBefore = lists;
  assert.equal(mirrors.remoteConsoles().length, 1);
  assert.equal(lists, listsBefore);
  const c2 = new FakeClient('c2');
  const again = c2.closedWith;
  mirrors.remoteConsoles()[0].addClient(c2, { request: 'readonly' });
  await waitUntil(() => again.length === 1, 5000, 'refused again');
  assert.equal(owners, 1, 'the database was asked while marked unavailable');
});
