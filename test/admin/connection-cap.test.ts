/**
 * F5 #2: admin API connections come out of the descriptor reserve, and opening one
 * needs no token. So the API holds at most its share (maxConnections): a newcomer
 * closes the oldest connection that has sent no request (or is closed itself when all
 * are busy), and a connection that sends no headers is closed after the headers
 * timeout. An authorized request gets through however many idle connections there are.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { AdminServer } from '../../src/admin/admin-server.js';
import { LogCapture } from '../support/log-capture.js';
import { withTimeout } from '../support/server.js';
import { writeUntilClosed } from '../support/flood.js';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

function idle(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => undefined);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

test('admin API: at most maxConnections; idle ones make room for a request; all busy refuses the newcomer', async (t) => {
  const logs = new LogCapture({ level: 'debug' });
  const shed: string[] = [];
  let release: () => void = () => undefined;
  const hold = new Promise<void>((r) => (release = r));
  const api = new AdminServer(
    [
      { method: 'GET', path: '/status', handle: () => ({ ok: true }) },
      { method: 'GET', path: '/slow', handle: () => hold.then(() => ({ slow: true })) },
    ],
    logs.logger,
    { maxConnections: 4, onConnectionShed: (o) => shed.push(o) },
  );
  const { port } = await api.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => api.close());

  // 20 idle connections (no token needed to open one): only 4 are held at a time.
  const sockets: net.Socket[] = [];
  const closed = new Set<net.Socket>();
  for (let i = 0; i < 20; i++) {
    const s = await idle(port);
    s.on('close', () => closed.add(s));
    sockets.push(s);
  }
  t.after(() => sockets.forEach((s) => s.destroy()));
  await waitClosed(() => closed.size >= 16);
  assert.ok(api.openConnections <= 4, `${api.openConnections} held`);
  assert.deepEqual(sockets.slice(0, 16).map((s) => closed.has(s)), Array(16).fill(true), 'the oldest went first');

  // A request gets through: it evicts an idle one and is answered.
  const r = await get(port, '/status');
  assert.deepEqual([r.status, JSON.parse(r.body)], [200, { ok: true }]);
  assert.ok(shed.filter((o) => o === 'evicted').length >= 17);
  assert.equal(logs.lines.filter((l) => l.errorCode === 'VSPC_ADMIN_BUSY').length, 1, 'logged once for the episode');

  // Four requests in flight: nothing idle to evict, so the newcomer is refused, and the busy ones finish.
  const slow = [0, 1, 2, 3].map(() => get(port, '/slow'));
  await waitClosed(() => api.openConnections >= 4 && sockets.every((s) => closed.has(s)));
  const late = await idle(port);
  await new Promise<void>((resolve) => late.once('close', () => resolve()));
  assert.ok(shed.includes('refused'));
  release();
  for (const p of await Promise.all(slow)) assert.equal(p.status, 200);
});

test('admin API: a connection that sends no headers is closed after the headers timeout (it holds no descriptor for long)', { timeout: 30_000 }, async (t) => {
  const api = new AdminServer([], new LogCapture({ level: 'debug' }).logger);
  const { port } = await api.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => api.close());
  const s = await idle(port);
  t.after(() => s.destroy());
  let answer = '';
  s.on('data', (d: Buffer) => (answer += d.toString()));
  await new Promise<void>((resolve) => s.once('close', () => resolve()));
  assert.match(answer, /^HTTP\/1\.1 408/);
});

/** Resolves when `cond` holds, checked after each turn of the event loop (the sockets' events). */
async function waitClosed(cond: () => boolean, turns = 100_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  assert.fail('never true');
}

test('admin API: a connection that becomes a stream (Upgrade) asks the descriptor budget and leaves the connection cap; refused: 503, nothing switched', async (t) => {
  let allow = false;
  const admitted: net.Socket[] = [];
  const api = new AdminServer([], new LogCapture({ level: 'debug' }).logger, {
    maxConnections: 4,
    admitStream: (s) => {
      if (allow) admitted.push(s);
      return allow;
    },
    upgrades: [
      {
        path: '/stream',
        protocol: 'x-test',
        open: async () => (socket: net.Socket) => {
          socket.write('stream!');
          // The server's sockets are half-open: the stream ends its side when the peer does.
          socket.on('end', () => socket.end());
        },
      },
    ],
  });
  const { port } = await api.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => api.close());
  const upgrade = () =>
    new Promise<{ socket: net.Socket; text: string }>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.write(`GET /stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n`);
      });
      let text = '';
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.includes('stream!')) resolve({ socket: s, text });
      });
      s.on('close', () => resolve({ socket: s, text }));
    });
  const refused = await upgrade();
  assert.match(refused.text, /^HTTP\/1\.1 503 /);
  assert.match(refused.text, /VSPC_FD_BUDGET_SPENT/);
  assert.doesNotMatch(refused.text, /stream!/);

  allow = true;
  const streams: Array<{ socket: net.Socket; text: string }> = [];
  for (let i = 0; i < 6; i++) streams.push(await upgrade());
  for (const s of streams) assert.match(s.text, /^HTTP\/1\.1 101 [\s\S]*stream!$/);
  assert.equal(admitted.length, 6, 'each stream admitted by the budget');
  assert.equal(api.openConnections, 0, 'streams are not admin connections: more than maxConnections of them, none evicted');
  const r = await get(port, '/nothing');
  assert.equal(r.status, 404, 'and the API still answers');
  const gone = streams.map((s) => new Promise((resolve) => s.socket.once('close', resolve)));
  for (const s of streams) s.socket.destroy();
  await Promise.all(gone);
});

test('admin API: close() ends upgraded streams (the client sees EOF) and returns, even when the stream never ends its side', async () => {
  const api = new AdminServer([], new LogCapture({ level: 'debug' }).logger, {
    upgrades: [{ path: '/stream', protocol: 'x-test', open: async () => (socket: net.Socket) => void socket.write('stream!') }],
  });
  const { port } = await api.listen({ host: '127.0.0.1', port: 0 });
  const s = net.connect({ host: '127.0.0.1', port }, () => {
    s.write(`GET /stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n`);
  });
  s.on('error', () => undefined);
  let text = '';
  await new Promise<void>((resolve) => s.on('data', (d: Buffer) => ((text += d.toString()), text.includes('stream!') && resolve())));
  // The client keeps its side open and never reads an end it did not ask for: close() must not wait for it.
  const ended = new Promise<void>((resolve) => s.once('end', () => resolve()));
  await withTimeout(api.close(), 10_000, 'AdminServer.close() with an open upgraded stream');
  await withTimeout(ended, 10_000, 'EOF on the stream');
  s.destroy();
});

test('admin API: a request that comes with a body is answered and its connection closed, its body not read until the request timeout', async (t) => {
  const logs = new LogCapture({ level: 'debug' });
  const api = new AdminServer([{ method: 'GET', path: '/status', handle: () => ({ ok: true }) }], logs.logger, {});
  const { port } = await api.listen({ host: '127.0.0.1', port: 0 });
  t.after(() => api.close());
  // A body that never ends (the API takes none): read to the request timeout (10 s), that
  // is a gigabyte on loopback; unread, it stops once the kernel's buffers are full.
  const s = await idle(port);
  t.after(() => s.destroy());
  s.resume();
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  s.write('GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000000\r\n\r\n');
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  const bound = 64 * 1024 * 1024;
  const sent = await writeUntilClosed(s, chunk, bound);
  assert.ok(sent < bound, `the body was read: ${sent} bytes`);
  await withTimeout(closed, 5000, 'connection closed');
  assert.equal((await get(port, '/status')).status, 200, 'the API goes on');
});
