/**
 * The owning node's link listener (src/access/cluster/link-server.ts) against hostile
 * peers: with no secret (slowloris), and holding the secret (a compromised or buggy
 * node). In process, loopback only (127.0.0.0/8 gives distinct source addresses).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { ClusterLinkServer } from '../../src/access/cluster/link-server.js';
import { ClusterLinkDialer } from '../../src/access/cluster/link-dialer.js';
import { LINK_CIPHERS, linkKey } from '../../src/access/cluster/link-connection.js';
import { LinkSession } from '../../src/protocol/cluster/link.js';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import type { ConsoleSource } from '../../src/domain/seams.js';
import { LogCapture } from '../support/log-capture.js';
import { withTimeout, waitUntil } from '../support/server.js';

const SECRET = Buffer.from('0123456789abcdef0123456789abcdef0123456789abcdef');

function hub(scrollback = 0): ConsoleHub {
  const h = new ConsoleHub({ id: 7, kind: 'esxi', key: '42 00 00 00 00 00 00 00-00 00 00 00 00 00 00 01', label: '', name: 'web01', tcpPort: 20007 }, undefined, scrollback, null);
  const src: ConsoleSource = { kind: 'esxi', peer: 'vm', write: () => true, onDrain: () => undefined, close: () => undefined } as unknown as ConsoleSource;
  h.attachSource(src);
  return h;
}

async function server(opts: Partial<ConstructorParameters<typeof ClusterLinkServer>[1]> = {}, h = hub()) {
  const logs = new LogCapture();
  const s = new ClusterLinkServer(logs.logger, {
    nodeId: 'node-b',
    secret: SECRET,
    listen: { host: '127.0.0.1', port: 0 },
    consoleById: (id, port) => (id === 7 && port === 20007 ? h : undefined),
    maxQueuedBytes: 64 * 1024,
    ...opts,
  });
  const addr = await s.listen();
  return { s, addr, logs, h };
}

/** A peer holding the secret, speaking the link protocol by hand. */
function rawPeer(port: number, identity = 'node-a'): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({
      host: '127.0.0.1', port, ciphers: LINK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: linkKey(SECRET, identity), identity }),
    });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

test('an authenticated link frees its handshake slot when the handshake is done (3 links live with maxHandshakes 2)', async () => {
  const { s, addr } = await server({ maxHandshakes: 2 });
  const peers: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const p = await withTimeout(rawPeer(addr.port, `node-${i}`), 5000, `authenticated link ${i} refused`);
      peers.push(p);
      p.on('error', () => undefined);
    }
    assert.equal(s.refused, 0);
    await waitUntil(() => s.pendingHandshakes === 0, 5000, 'no handshake pending');
  } finally {
    for (const p of peers) p.destroy();
    await s.close();
  }
});

/** A silent TCP connection from `localAddress`; resolves when connected, `closed` when the server cut it. */
function silent(port: number, localAddress: string): Promise<{ sock: net.Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port, localAddress });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.once('connect', () => resolve({ sock, closed }));
    sock.once('error', reject);
  });
}

test('slowloris: 64 silent sockets (no secret) from 16 addresses fill the strangers\' slots, a 5th from one address is refused, and a node of the nodes table still gets in', async () => {
  const { s, addr, logs } = await server({ handshakeTimeoutMs: 10_000, firstByteTimeoutMs: 60_000, isNodeAddress: (ip) => ip === '127.0.0.1' });
  const idle: net.Socket[] = [];
  try {
    for (let a = 2; a < 18; a++) for (let i = 0; i < 4; i++) idle.push((await silent(addr.port, `127.0.0.${a}`)).sock);
    for (const x of idle) x.on('error', () => undefined);
    await waitUntil(() => s.pendingHandshakes === 64, 5000, 'all counted');
    const fifth = await silent(addr.port, '127.0.0.2');
    fifth.sock.on('error', () => undefined);
    await withTimeout(fifth.closed, 5000, 'the 5th connection of one address was not cut');
    await logs.waitFor((l) => /too many unauthenticated connections from this address/.test(String(l.reason)), 5000);
    const ok = await withTimeout(rawPeer(addr.port).then((t) => (t.destroy(), true), () => false), 5000, 'no answer');
    assert.equal(ok, true, 'a node of the nodes table was refused while strangers held every slot');
    // A stranger's 65th is refused.
    const more = await silent(addr.port, '127.0.0.30');
    more.sock.on('error', () => undefined);
    await withTimeout(more.closed, 5000, 'a stranger got a 65th slot');
  } finally {
    for (const x of idle) x.destroy();
    await s.close();
  }
});

test('a connection that sends no byte is cut at the first-byte deadline, with a log line', async () => {
  const { s, addr, logs } = await server({ handshakeTimeoutMs: 10_000, firstByteTimeoutMs: 200 });
  try {
    const x = await silent(addr.port, '127.0.0.1');
    x.sock.on('error', () => undefined);
    await withTimeout(x.closed, 5000, 'a silent socket kept its slot');
    await waitUntil(() => s.pendingHandshakes === 0, 5000, 'slot freed');
    await logs.waitFor((l) => l.errorCode === 'VSPC_LINK_AUTH_FAILED' && /no byte within 200 ms/.test(String(l.reason)), 5000);
  } finally {
    await s.close();
  }
});

test('a peer granting a 4 GiB window that never reads: the owner buffers at most the slow-client bound, drops the client with a log line', async () => {
  const { s, addr, h, logs } = await server({ maxQueuedBytes: 64 * 1024 });
  const t = await rawPeer(addr.port);
  t.on('error', () => undefined);
  try {
    const me = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    t.write(me.hello());
    // OPEN by hand with window 0xffffffff (the protocol core accepts any u32).
    const hdr = Buffer.from(JSON.stringify({ consoleId: 7, tcpPort: 20007, request: 'readonly', peer: 'x', method: 'ssh' }));
    const open = Buffer.alloc(4 + 1 + 4 + 4 + hdr.length);
    open.writeUInt32BE(1 + 8 + hdr.length, 0); open[4] = 2; open.writeUInt32BE(1, 5); open.writeUInt32BE(0xffffffff, 9); hdr.copy(open, 13);
    t.write(open);
    await waitUntil(() => h.clients.size === 1, 5000, 'attached on the owner');
    t.pause(); // never read again
    const chunk = Buffer.alloc(16 * 1024, 0x41);
    for (let i = 0; i < 4096; i++) h.fromVm(chunk); // 64 MiB of console output
    const link = [...(s as unknown as { links: Set<{ socket: tls.TLSSocket }> }).links][0];
    const buffered = link.socket.writableLength;
    assert.ok(buffered <= 256 * 1024, `owner buffers ${buffered} bytes for one stream of a peer that never reads`);
    assert.equal(h.clients.size, 0, 'the slow remote client is still attached');
    await logs.waitFor((l) => l.message === 'remote client too slow; disconnecting', 5000);
  } finally {
    t.destroy();
    await s.close();
  }
});

function openFrame(stream: number, window: number, header: object): Buffer {
  const hdr = Buffer.from(JSON.stringify(header));
  const f = Buffer.alloc(13 + hdr.length);
  f.writeUInt32BE(9 + hdr.length, 0); f[4] = 2; f.writeUInt32BE(stream, 5); f.writeUInt32BE(window, 9); hdr.copy(f, 13);
  return f;
}

test('remote clients are capped per link (256: the 257th OPEN cuts the link) and an OPEN granting no window is refused before any replay is queued', async () => {
  const h = hub(64 * 1024);
  h.fromVm(Buffer.alloc(64 * 1024, 0x42)); // a full 64 KiB screen history
  const { s, addr, logs } = await server({}, h);
  const t = await rawPeer(addr.port);
  t.on('error', () => undefined);
  const gone = new Promise<void>((r) => t.once('close', () => r()));
  try {
    const me = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    const zero = [me.hello()];
    for (let i = 1; i <= 100; i++) zero.push(openFrame(i, 0, { consoleId: 7, tcpPort: 20007, request: 'readonly', peer: `p${i}`, method: 'ssh' }));
    t.write(Buffer.concat(zero));
    let closes = 0;
    const peerSide = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    t.on('data', (d: Buffer) => {
      // Counts CLOSE frames by hand (the streams were opened by raw frames, not by this session).
      for (let off = 0; off + 5 <= d.length; ) {
        const len = d.readUInt32BE(off);
        if (d[off + 4] === 4) closes++;
        off += 4 + len;
      }
    });
    void peerSide;
    await waitUntil(() => closes >= 100, 5000, '100 zero-window OPENs refused');
    assert.equal(h.clients.size, 0);
    const frames: Buffer[] = [];
    for (let i = 101; i <= 400; i++) frames.push(openFrame(i, 1024, { consoleId: 7, tcpPort: 20007, request: 'readonly', peer: `p${i}`, method: 'ssh' }));
    t.write(Buffer.concat(frames));
    await withTimeout(gone, 10_000, 'the link survived 300 streams');
    await logs.waitFor((l) => /more than 256 streams/.test(String(l.reason)), 5000);
    await waitUntil(() => h.clients.size === 0, 5000, 'its clients detached');
  } finally {
    t.destroy();
    await s.close();
  }
});

test('links from one node id are capped (default 4): the 5th is cut with a log line', async () => {
  const { s, addr, logs } = await server();
  const peers: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      const p = await rawPeer(addr.port);
      p.on('error', () => undefined);
      peers.push(p);
    }
    await waitUntil(() => s.connections === 4, 5000, '4 links');
    // Cut as soon as it is accepted: before or just after the client sees the handshake end.
    const fifth = rawPeer(addr.port).then((p) => new Promise<void>((r) => (p.on('error', () => undefined), p.once('close', () => r()))), () => undefined);
    await withTimeout(fifth, 5000, 'the 5th link of node-a was kept');
    assert.equal(s.connections, 4);
    await logs.waitFor((l) => /more than 4 links from node node-a/.test(String(l.reason)), 5000);
  } finally {
    for (const p of peers) p.destroy();
    await s.close();
  }
});

test('OPEN header user/peer with terminal escapes are sanitised before the owner\'s lock table and local clients\' refusal reasons', async () => {
  const { s, addr, h } = await server();
  const t = await rawPeer(addr.port);
  t.on('error', () => undefined);
  try {
    const me = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    t.write(me.hello());
    t.write(openFrame(1, 100, { consoleId: 7, tcpPort: 20007, request: 'readonly', user: '\x1b]0;pwn\x07', peer: '\x1b[2J', method: 'ssh' }));
    await waitUntil(() => h.clients.size === 1, 5000, 'attached');
    const local = { id: 999_999, peer: 'local', method: 'ssh', deliver() {}, notice() {}, pauseInput() {}, resumeInput() {}, close() {} };
    const d = h.addClient(local, { request: 'exclusive', user: 'bob' });
    assert.equal(d.granted, false);
    assert.ok(!/[\x00-\x1f\x7f]/.test(JSON.stringify(h.locks.list())) && !/\x1b/.test(d.reason), `raw control bytes: ${JSON.stringify(d.reason)}`);
  } finally {
    t.destroy();
    await s.close();
  }
});

test('liveness (owner side): a node that vanishes without FIN/RST is PINGed, then cut after the idle timeout, and its client\'s EXCLUSIVE lock released', async () => {
  const { s, addr, h, logs } = await server({ pingAfterMs: 200, idleTimeoutMs: 800 });
  const t = await rawPeer(addr.port);
  t.on('error', () => undefined);
  try {
    const me = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    let pings = 0;
    t.on('data', (d: Buffer) => {
      for (const ev of me.receive(d)) if (ev.type === 'ping') pings++;
    });
    t.write(me.hello());
    t.write(openFrame(1, 256 * 1024, { consoleId: 7, tcpPort: 20007, request: 'exclusive', user: 'ann', peer: 'p', method: 'ssh' }));
    await waitUntil(() => h.locks.list().some((x) => x.mode === 'exclusive'), 5000, 'EXCLUSIVE held on the owner');
    // Node A is gone from here on: it answers nothing (no PONG, no FIN, no RST).
    await waitUntil(() => h.locks.list().length === 0, 5000, 'the vanished node\'s lock released');
    assert.ok(pings >= 1, 'no PING before the cut');
    await logs.waitFor((l) => l.message === 'cluster link peer silent; cut' && l.errorCode === 'VSPC_LINK_UNAVAILABLE', 5000);
  } finally {
    t.destroy();
    await s.close();
  }
});

test('liveness: a peer that answers PINGs keeps the link through silence longer than the idle timeout', async () => {
  const { s, addr, h } = await server({ pingAfterMs: 100, idleTimeoutMs: 300 });
  const t = await rawPeer(addr.port);
  t.on('error', () => undefined);
  try {
    const me = new LinkSession({ role: 'dialer', nodeId: 'node-a', expectPeer: 'node-b' });
    let pings = 0;
    t.on('data', (d: Buffer) => {
      for (const ev of me.receive(d)) {
        if (ev.type === 'ping') {
          pings++;
          t.write(me.pong(ev.token)!);
        }
      }
    });
    t.write(me.hello());
    t.write(openFrame(1, 256 * 1024, { consoleId: 7, tcpPort: 20007, request: 'readonly', peer: 'p', method: 'ssh' }));
    await waitUntil(() => h.clients.size === 1, 5000, 'attached');
    await waitUntil(() => pings >= 8, 5000, '8 PINGs answered (over 3 idle timeouts)');
    assert.equal(h.clients.size, 1);
    assert.equal(s.connections, 1);
  } finally {
    t.destroy();
    await s.close();
  }
});

test('the dialer refuses an impostor at the advertised address (HELLO names another node), and a listener without the secret', async () => {
  const { s, addr } = await server();
  const logs = new LogCapture();
  const d = new ClusterLinkDialer(logs.logger, { nodeId: 'node-a', secret: SECRET, connectTimeoutMs: 3000 });
  let closed = '';
  d.attach({ node: 'node-c', host: '127.0.0.1', port: addr.port }, { consoleId: 7, tcpPort: 20007, request: 'readonly', force: false, replay: true, peer: 'p', method: 'ssh' },
    { accepted: () => undefined, data: () => undefined, notice: () => undefined, breakFromSource: () => undefined, drain: () => undefined, closed: (r) => (closed = r) });
  await waitUntil(() => closed !== '', 5000, 'impostor refused');
  assert.match(closed, /expected node-c/);
  d.close();
  await s.close();
});

test('the listener agrees only ECDHE-PSK-CHACHA20-POLY1305 (a client offering CBC or DHE-PSK only is refused) and sends no identity hint', async () => {
  const { s, addr } = await server();
  const tryWith = (ciphers: string) =>
    new Promise<{ ok: boolean; hint: string | null; cipher?: string }>((resolve) => {
      let hint: string | null = 'unset';
      const t = tls.connect({
        host: '127.0.0.1', port: addr.port, ciphers, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
        checkServerIdentity: () => undefined,
        pskCallback: (h) => ((hint = h), { psk: linkKey(SECRET, 'node-a'), identity: 'node-a' }),
      });
      t.once('secureConnect', () => {
        const cipher = t.getCipher().name;
        t.destroy();
        resolve({ ok: true, hint, cipher });
      });
      t.once('error', () => resolve({ ok: false, hint }));
    });
  try {
    const good = await tryWith(LINK_CIPHERS);
    assert.equal(good.ok, true);
    assert.equal(good.cipher, 'ECDHE-PSK-CHACHA20-POLY1305');
    assert.ok(good.hint === null || good.hint === '', `identity hint sent: ${JSON.stringify(good.hint)}`);
    assert.equal((await tryWith('ECDHE-PSK-AES256-CBC-SHA384')).ok, false);
    assert.equal((await tryWith('DHE-PSK-AES256-GCM-SHA384')).ok, false);
  } finally {
    await s.close();
  }
});

test('handover (attack-s21): the scrollback only when asked for, once, between the notices `scrollback` and `held`, before the held input; an asker of an earlier version (no `scrollback: true`) gets the held input and `released` only', async () => {
  const { s, addr } = await server();
  // 200 KiB: more than one stream window of the link, so it goes in several grants.
  const screen = Buffer.alloc(200 * 1024, 0x61);
  screen.write('first line\r\n', 0);
  let handed = 0;
  const outcomes: string[] = [];
  s.setVmotion({
    handover: (token) => {
      if (token.toString('hex') !== 'beef') return null;
      handed++;
      return { held: [Buffer.from('typed '), Buffer.from('meanwhile')], scrollback: screen, done: (why) => outcomes.push(why) };
    },
  });
  const logs = new LogCapture();
  const d = new ClusterLinkDialer(logs.logger, { nodeId: 'node-a', secret: SECRET, connectTimeoutMs: 3000 });
  const ask = (withScrollback: boolean) =>
    new Promise<Array<string | Buffer>>((resolve) => {
      const got: Array<string | Buffer> = [];
      const a = d.attach(
        { node: 'node-b', host: '127.0.0.1', port: addr.port },
        { consoleId: 0, tcpPort: 0, request: 'readwrite', force: false, replay: false, peer: 'vmotion', method: 'cluster', handover: 'beef', ...(withScrollback ? { handoverScrollback: true } : {}) },
        {
          accepted: () => undefined,
          data: (b) => got.push(Buffer.from(b)),
          notice: (text) => {
            got.push(`notice:${text}`);
            if (text === 'released') {
              a.close('claimed');
              resolve(got);
            }
          },
          breakFromSource: () => undefined,
          drain: () => undefined,
          closed: () => undefined,
        },
      );
    });
  /** Consecutive data joined: [notice, bytes, notice, ...]. */
  const shape = (got: Array<string | Buffer>): Array<string | Buffer> => {
    const out: Array<string | Buffer> = [];
    for (const g of got) {
      const last = out[out.length - 1];
      if (Buffer.isBuffer(g) && Buffer.isBuffer(last)) out[out.length - 1] = Buffer.concat([last, g]);
      else out.push(g);
    }
    return out;
  };
  try {
    const now = shape(await withTimeout(ask(true), 10_000, 'handover with the scrollback'));
    assert.equal(now.length, 5, `shape: ${now.map((g) => (Buffer.isBuffer(g) ? `${g.length} bytes` : g)).join(', ')}`);
    assert.equal(now[0], 'notice:scrollback');
    assert.ok(Buffer.isBuffer(now[1]) && now[1].equals(screen), 'the scrollback, whole, once');
    assert.equal(now[2], 'notice:held');
    assert.equal(String(now[3]), 'typed meanwhile');
    assert.equal(now[4], 'notice:released');
    const old = shape(await withTimeout(ask(false), 10_000, 'handover of an earlier version'));
    assert.deepEqual(old.map(String), ['typed meanwhile', 'notice:released']);
    assert.equal(handed, 2);
    await waitUntil(() => outcomes.length === 2, 5000, 'both handovers closed by the asker');
    assert.deepEqual(outcomes, ['claimed', 'claimed']);
  } finally {
    d.close();
    await s.close();
  }
});
