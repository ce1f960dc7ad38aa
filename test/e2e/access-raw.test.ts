/**
 * Raw TCP access (`access: { raw: true }`): a sticky TCP port per console with exactly
 * the console's bytes, driven with real socat (`socat - TCP:127.0.0.1:PORT`) against a
 * simulated ESXi VM.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { startServer, esxiUuid, tempDir, waitUntil, binaryPayload, TestServer, Cleanup } from '../support/server.js';
import { Child, allBytes, show, waitShow } from '../support/access.js';
import { writeUntilClosed } from '../support/flood.js';
import type { ClientView, PortView } from '../../src/admin/views.js';

const RAW = { access: { raw: true } };

describe('raw TCP access', () => {
  test('socat gets exactly the VM bytes both ways: all 256 values, no negotiation, no greeting, no replay', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: RAW });
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'raw-bytes' }, cleanup);
    // Output before the client connects is in the scrollback, which a telnet client would get: a raw one does not.
    vm.send('OLD-OUTPUT\r\n');
    await vm.barrier();
    const d = await waitShow(ts, 'raw-bytes', (v) => v.access.raw?.listening === true, 'raw port listening');
    assert.notEqual(d.access.raw!.port, d.port, 'a port of its own');
    assert.equal(d.access.raw!.host, '127.0.0.1');

    const socat = new Child('socat', ['-', `TCP:127.0.0.1:${d.access.raw!.port}`], cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'socat attached');
    // Client → VM: every byte value, IAC (255) and CR NUL included, unchanged.
    const up = Buffer.concat([allBytes(), Buffer.from([13, 0, 13, 10, 255, 255, 13])]);
    socat.write(up);
    await vm.waitForInput(up.length, 5000);
    assert.deepEqual(vm.input, up);
    // VM → client: the same, and nothing else before it (no telnet options, no [vspc: ...] greeting, no scrollback).
    const down = binaryPayload(64 * 1024, 7);
    vm.send(down);
    const got = await socat.stdout.wait(down.length, 10_000);
    assert.equal(got.length, down.length);
    assert.ok(got.equals(down), 'the VM output byte for byte');
    // Nothing after it either: the next bytes socat gets are the VM's next output.
    vm.send('MARK');
    const after = await socat.stdout.wait(down.length + 4, 10_000);
    assert.equal(after.subarray(down.length).toString('latin1'), 'MARK', 'nothing between the output and the next');

    // who / show: the method is named; the audit line says raw.
    const who = await ts.api<ClientView[]>('/api/v1/clients');
    assert.deepEqual(who.map((c) => [c.vm, c.method, c.mode]), [['raw-bytes', 'raw', 'readwrite']]);
    await ts.logs.waitFor((l) => l.audit === true && l.message === 'client attached' && l.method === 'raw' && l.vm === 'raw-bytes');
    const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`)).text();
    assert.match(metrics, /^vspc_clients_by_method\{method="raw"\} 1$/m);
    assert.match(metrics, /^vspc_clients_by_method\{method="telnet"\} 0$/m);
    socat.proc.stdin!.end();
    await socat.code();
    await waitUntil(() => hub.clients.size === 0, 5000, 'socat detached');
    await ts.logs.waitFor((l) => l.audit === true && l.message === 'client detached' && l.method === 'raw');
  });

  test('the raw port is sticky across restarts; a port held by another program is recorded, shown and retried', async (t) => {
    const dir = tempDir('vspc-raw-sticky-');
    t.after(() => dir.remove());
    const dbPath = join(dir.dir, 'vspc.db');
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const uuid = esxiUuid().text;
    const first = await TestServer.start({ dbPath, config: RAW });
    let rawPort: number;
    try {
      await first.connectVm({ uuid, name: 'raw-sticky' }, cleanup);
      rawPort = (await waitShow(first, 'raw-sticky', (v) => v.access.raw?.listening === true, 'raw up')).access.raw!.port;
    } finally {
      await first.close();
    }
    // Another program takes the raw port while vspc is down.
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen({ host: '127.0.0.1', port: rawPort, exclusive: true }, r));
    const second = await TestServer.start({ dbPath, portRange: first.config.portRange, config: RAW });
    t.after(() => second.dispose());
    const d = await waitShow(second, 'raw-sticky', (v) => v.access.raw?.error !== null && v.access.raw?.error !== undefined, 'bind failure recorded');
    assert.equal(d.access.raw!.port, rawPort, 'the same port, from the store');
    assert.equal(d.access.raw!.listening, false);
    assert.match(d.access.raw!.error!, /EADDRINUSE/);
    const listed = (await second.ports()).find((p) => p.name === 'raw-sticky') as PortView;
    assert.match(listed.listenError ?? '', /^raw: EADDRINUSE/, 'list marks it');
    // Telnet is not disturbed by the raw port's trouble.
    assert.equal(d.access.telnet?.listening, true);
    await second.logs.waitFor((l) => l.message === 'console endpoint cannot be set up; will retry' && l.method === 'raw' && l.errorCode === 'VSPC_ACCESS_ADDRESS_IN_USE');
    await new Promise<void>((r) => squatter.close(() => r()));
    // bindRetryMs is 200 ms in tests.
    await waitShow(second, 'raw-sticky', (v) => v.access.raw?.listening === true && v.access.raw.port === rawPort, 'bound after the retry');
    assert.equal((await second.ports()).find((p) => p.name === 'raw-sticky')!.listenError, null);
  });

  test('a slow reader is cut off at --client-queue-limit; a telnet user and the VM are unaffected', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { ...RAW, clientQueueLimit: 128 * 1024, clientLockWaitMs: 50 } });
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'raw-slow' }, cleanup);
    const rawPort = (await waitShow(ts, 'raw-slow', (v) => v.access.raw?.listening === true, 'raw up')).access.raw!.port;
    const fast = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const stalled = net.connect({ host: '127.0.0.1', port: rawPort });
    cleanup.add(() => stalled.destroy());
    stalled.on('error', () => undefined);
    stalled.pause(); // never reads
    await waitUntil(() => hub.clients.size === 2, 5000, 'both attached');
    const mark = fast.mark();
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    const total = 8 * 1024 * 1024;
    for (let sent = 0; sent < total; sent += chunk.length) {
      vm.send(chunk);
      await fast.waitFor(sent + chunk.length, 5000, mark);
    }
    await waitUntil(() => hub.clients.size === 1, 5000, 'the raw reader dropped');
    const line = await ts.logs.waitFor((l) => l.message === 'client too slow; disconnecting' && l.method === 'raw');
    assert.equal(line.limit, 128 * 1024);
    vm.send('still fine');
    await fast.waitFor('still fine', 3000);
  });

  test('a raw client that floods input is held back by the source, in order; other consoles and readers are not disturbed', async (t) => {
    // A declared console whose far end (a unix socket standing in for QEMU) stops reading.
    const dir = tempDir('vspc-raw-flood-');
    t.after(() => dir.remove());
    const path = join(dir.dir, 'qemu.sock');
    let far: net.Socket | null = null;
    const received: Buffer[] = [];
    const qemu = net.createServer((s) => {
      far = s;
      s.pause();
      s.on('data', (b: Buffer) => received.push(b));
    });
    await new Promise<void>((r) => qemu.listen(path, r));
    t.after(() => {
      (far as net.Socket | null)?.destroy();
      return new Promise<void>((r) => qemu.close(() => r()));
    });
    const { ts, cleanup } = await startServer(t, {
      config: { ...RAW, clientLockWaitMs: 50, consoles: [{ name: 'flooded', source: { type: 'unix', path }, sourceText: `unix:${path}` }] },
    });
    const other = await ts.connectVm({ uuid: esxiUuid().text, name: 'raw-bystander' }, cleanup);
    const hub = await waitUntilHub(ts, 'flooded');
    await waitUntil(() => far !== null && hub.source !== null, 5000, 'console source connected');
    const rawPort = (await waitShow(ts, 'flooded', (v) => v.access.raw?.listening === true, 'raw up')).access.raw!.port;
    const watcher = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const bystander = await ts.connectUser(other.hub.identity.tcpPort, cleanup);

    const flood = net.connect({ host: '127.0.0.1', port: rawPort });
    cleanup.add(() => flood.destroy());
    await waitUntil(() => hub.clients.size === 2, 5000, 'flooder attached');
    const block = binaryPayload(64 * 1024, 3);
    const blocks = 256; // 16 MiB offered
    let written = 0;
    for (let i = 0; i < blocks; i++) {
      flood.write(block);
      written += block.length;
    }
    // vspc takes what the stalled source lets through plus its socket buffers, then stops reading the flooder.
    await waitUntil(() => hub.clientInputPaused, 10_000, 'the clients paused by the full source');
    const held = hub.bytesToVm;
    // Round trips through vspc's event loop (a client of another console: this console's
    // clients are paused) while the flooder's bytes wait in the kernel: not read.
    await bystander.barrier();
    await bystander.barrier();
    assert.equal(hub.bytesToVm, held, 'no more input is taken while the source is full');
    assert.ok(held < 8 * 1024 * 1024, `bounded: ${held} bytes taken of ${written}`);
    assert.ok(flood.writableLength > 0, 'the flooder is held back in its own socket');
    // Meanwhile output still flows: to the watcher of the same console, and on another console.
    const farSock = far! as net.Socket;
    farSock.write('output while flooded\r\n');
    await watcher.waitFor('output while flooded', 3000);
    other.vm.send('bystander fine\r\n');
    await bystander.waitFor('bystander fine', 3000);
    // The source reads again: every byte arrives, in order.
    farSock.resume();
    await waitUntil(() => received.reduce((n, b) => n + b.length, 0) >= written, 30_000, 'the whole flood delivered');
    const all = Buffer.concat(received);
    assert.equal(all.length, written);
    for (let i = 0; i < blocks; i++) assert.ok(all.subarray(i * block.length, (i + 1) * block.length).equals(block), `block ${i} intact`);
  });

  test('a raw client gets the console default lock mode: refused (closed, no text) while someone holds EXCLUSIVE', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { ...RAW, defaultLockMode: 'exclusive', clientLockWaitMs: 50 } });
    const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'raw-locked' }, cleanup);
    const rawPort = (await waitShow(ts, 'raw-locked', (v) => v.access.raw?.listening === true, 'raw up')).access.raw!.port;
    await ts.connectUser(hub.identity.tcpPort, cleanup);
    await waitUntil(() => hub.clients.size === 1, 3000, 'telnet user holds the exclusive lock');
    const socat = new Child('socat', ['-', `TCP:127.0.0.1:${rawPort}`], cleanup);
    assert.equal(await socat.code(), 0, 'closed by vspc');
    assert.equal(socat.stdout.length, 0, 'not a byte of explanation on a raw stream');
    await ts.logs.waitFor((l) => l.message === 'lock refused; closing (a raw client cannot be told why)' && l.method === 'raw');
    assert.equal((await show(ts, 'raw-locked')).clientList.length, 1);
  });

  test('a client that keeps sending after vspc ended its stream is read for 64 KiB more, then not at all until the close grace ends it', async (t) => {
    // The grace is what ends the connection; until then vspc must not read what the peer pours in.
    const { ts, cleanup } = await startServer(t, { config: { ...RAW, defaultLockMode: 'exclusive', clientLockWaitMs: 50, closeGraceMs: 1500 } });
    const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'raw-after-end' }, cleanup);
    const rawPort = (await waitShow(ts, 'raw-after-end', (v) => v.access.raw?.listening === true, 'raw up')).access.raw!.port;
    await ts.connectUser(hub.identity.tcpPort, cleanup);
    await waitUntil(() => hub.clients.size === 1, 3000, 'telnet user holds the exclusive lock');
    // Half-open allowed: vspc's FIN does not end this side; it goes on writing.
    const socket = net.connect({ host: '127.0.0.1', port: rawPort, allowHalfOpen: true });
    cleanup.add(() => socket.destroy());
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    let gotEnd = false;
    socket.on('end', () => (gotEnd = true));
    socket.resume();
    await new Promise<void>((resolve) => socket.once('end', resolve));
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    // Reading all it sends for 1.5 s would take hundreds of megabytes on loopback; unread,
    // it stops once the kernel's buffers are full (a few megabytes).
    const bound = 64 * 1024 * 1024;
    const sent = await writeUntilClosed(socket, chunk, bound);
    assert.ok(sent < bound, `vspc read all it was sent: ${sent} bytes`);
    await closed;
    assert.ok(gotEnd, 'vspc ended the stream first (FIN), then the grace cut it');
    const stopped = ts.logs.filter((l) => l.message === 'client keeps sending after vspc ended it; no longer read' && l.method === 'raw');
    assert.equal(stopped.length, 1, 'one line when vspc stops reading it');
    assert.ok((stopped[0].bytesAfterClose as number) <= 128 * 1024, `read ${String(stopped[0].bytesAfterClose)} bytes after the end (64 KiB and one read)`);
    assert.equal(hub.clients.size, 1, 'the lock holder stays');
  });
});

async function waitUntilHub(ts: TestServer, name: string) {
  let hub = ts.server.registry.all().find((h) => h.identity.name === name);
  await waitUntil(() => (hub = ts.server.registry.all().find((h) => h.identity.name === name)) !== undefined, 5000, `console ${name}`);
  return hub!;
}
