/**
 * The QEMU socket sources against local servers and peers the tests start: unix and
 * TCP servers, a QEMU-like telnet server, UDP peers, listen endpoints with clients,
 * and the bad input of issue 13 (not a socket, permission denied, accept-then-close,
 * a missing directory, a flood, a silent peer). Synchronised on events (state
 * changes, bytes seen, connections accepted); timers only bound the waits.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import dgram from 'node:dgram';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, chownSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { createEndpoint, type CreateEndpointContext } from '../../src/sources/qemu/index.js';
import type { EndpointRunner } from '../../src/sources/common/runner.js';
import type { UdpLink } from '../../src/sources/qemu/udp.js';
import { DO, WILL, IAC, BRK, Option } from '../../src/protocol/telnet/constants.js';
import { FakeClient } from '../domain/fakes.js';
import { makeHub, recordingLogger, waitForState, waitForStatus, type LogLine } from './helpers.js';

const WAIT = 10_000;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'vspc-src-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Started {
  runner: EndpointRunner;
  hub: ConsoleHub;
  client: FakeClient;
  lines: LogLine[];
}

function start(t: TestContext, spec: string, ctx: Partial<CreateEndpointContext> = {}): Started {
  const { hub } = makeHub();
  const client = new FakeClient();
  hub.addClient(client);
  const logger = recordingLogger();
  const runner = createEndpoint(parseSourceSpec(spec), hub, { logger, ...ctx });
  t.after(() => runner.destroy('test over'));
  return { runner, hub, client, lines: logger.lines };
}

/** Resolves when the client has received `text` (FakeClient.waitForOutput, bounded by WAIT). */
function waitForOutput(client: FakeClient, text: string | Buffer, timeoutMs = WAIT): Promise<void> {
  return client.waitForOutput(text, timeoutMs);
}

/** Collects what a socket receives; `until(text)` resolves once it has arrived. */
class Collector {
  chunks: Buffer[] = [];
  private waiters: Array<{ want: Buffer; resolve: () => void }> = [];
  constructor(sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      const all = this.all;
      this.waiters = this.waiters.filter((w) => (all.includes(w.want) ? (w.resolve(), false) : true));
    });
  }
  get all(): Buffer {
    return Buffer.concat(this.chunks);
  }
  until(text: string | Buffer, timeoutMs = WAIT): Promise<void> {
    const want = typeof text === 'string' ? Buffer.from(text) : text;
    if (this.all.includes(want)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${JSON.stringify(want.toString('latin1'))}; got ${JSON.stringify(this.all.toString('latin1'))}`)), timeoutMs);
      this.waiters.push({ want, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }
}

/** A server whose accepted connections arrive through `next()`. */
class TestServer {
  readonly server: net.Server;
  readonly accepted: net.Socket[] = [];
  private waiters: Array<(s: net.Socket) => void> = [];
  acceptTimes: number[] = [];
  constructor(onConnection?: (s: net.Socket) => void) {
    this.server = net.createServer((s) => {
      s.on('error', () => {});
      this.acceptTimes.push(Date.now());
      onConnection?.(s);
      this.accepted.push(s);
      const w = this.waiters.shift();
      w?.(s);
    });
  }
  listen(options: net.ListenOptions): Promise<this> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(options, () => resolve(this));
    });
  }
  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }
  /** The n-th accepted connection (0-based), when it arrives. */
  nth(n: number, timeoutMs = WAIT): Promise<net.Socket> {
    if (this.accepted[n]) return Promise.resolve(this.accepted[n]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection #${n} never arrived (${this.accepted.length} so far)`)), timeoutMs);
      const check = (): void => {
        if (this.accepted[n]) {
          clearTimeout(timer);
          resolve(this.accepted[n]);
        } else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }
  close(): Promise<void> {
    for (const s of this.accepted) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function connectClient(opts: net.NetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(opts);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function closedPromise(sock: net.Socket): Promise<void> {
  return new Promise((resolve) => (sock.destroyed && sock.closed ? resolve() : sock.once('close', () => resolve())));
}

/** Leaves a socket file nobody listens on (a crashed QEMU or vspc): a child binds and is SIGKILLed. */
function staleSocket(path: string): void {
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`], { timeout: WAIT });
  assert.equal(r.signal, 'SIGKILL', `the child did not bind: ${r.stderr}`);
  assert.ok(lstatSync(path).isSocket());
}

/** A garbage collection on demand, to measure what is retained rather than what is not yet collected. */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const PROBE = new URL('./fixtures/probe-endpoint.js', import.meta.url).pathname;

/** Runs an endpoint as an unprivileged user (root would not see EACCES) and returns its settled status. */
async function probeAsNobody(spec: string): Promise<{ status: { state: string; lastError: string | null }; errorCode: string | null; sysCode: string | null }> {
  const uid = process.getuid?.() === 0 ? 65534 : undefined;
  const { stdout } = await promisify(execFile)(process.execPath, [PROBE, spec], { timeout: WAIT, uid, gid: uid });
  return JSON.parse(stdout);
}

describe('unix: (vspc connects to a socket QEMU serves)', () => {
  test('bytes both ways; the peer goes away → waiting with lastError; comes back → reconnects by itself', { timeout: 30_000 }, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'vm.sock');
    let srv = await new TestServer().listen({ path });
    const { runner, hub, client } = start(t, `unix:${path}`);
    const peer = await srv.nth(0);
    await waitForState(runner, 'connected');
    assert.equal(hub.state, 'connected');
    const seen = new Collector(peer);
    peer.write('boot messages\r\n');
    await waitForOutput(client, 'boot messages\r\n');
    hub.fromClient(client, Buffer.from([0x61, 0xff, 0x00, 0x0d]));
    await seen.until(Buffer.from([0x61, 0xff, 0x00, 0x0d]));

    // The far end goes: socket closed and the file removed (QEMU exits).
    const waiting = waitForState(runner, 'waiting');
    await srv.close();
    const st = await waiting;
    assert.equal(hub.state, 'disconnected');
    assert.match(st.lastError!, /closed the connection/);
    assert.equal(st.reconnects, 1);
    // While it is gone: NOT_FOUND, a waiting state with the next attempt scheduled.
    await waitForStatus(runner, (s) => s.state === 'waiting' && /does not exist/.test(s.lastError ?? ''), WAIT, 'ENOENT');
    assert.ok(runner.status.nextAttemptAt! > Date.now() - 1);

    srv = await new TestServer().listen({ path });
    t.after(() => srv.close());
    const again = await srv.nth(0);
    await waitForState(runner, 'connected');
    again.write('back\r\n');
    await waitForOutput(client, 'back\r\n');
  });

  test('a regular file at the path: VSPC_SOURCE_NOT_A_SOCKET; a stale socket: nothing listens', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'x');
    const a = start(t, `unix:${file}`);
    const sa = await waitForState(a.runner, 'waiting');
    assert.match(sa.lastError!, /is a regular file, not a socket/);
    assert.equal(a.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_NOT_A_SOCKET');
    assert.equal(readFileSync(file, 'utf8'), 'x', 'untouched');

    const stale = join(dir, 'stale.sock');
    staleSocket(stale);
    const b = start(t, `unix:${stale}`);
    const sb = await waitForState(b.runner, 'waiting');
    assert.match(sb.lastError!, /nothing listens/);
    assert.equal(b.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_CONNECT_FAILED');
    assert.equal(b.lines.find((l) => l.level === 'warn')?.fields.sysCode, 'ECONNREFUSED');
  });

  test('permission denied (EACCES): a clear error and waiting', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    chmodSync(dir, 0o755);
    const path = join(dir, 'root-only.sock');
    const srv = await new TestServer().listen({ path });
    t.after(() => srv.close());
    chmodSync(path, 0o600);
    const r = await probeAsNobody(`unix:${path}`);
    assert.equal(r.status.state, 'waiting');
    assert.equal(r.errorCode, 'VSPC_SOURCE_PERMISSION_DENIED');
    assert.equal(r.sysCode, 'EACCES');
    assert.match(r.status.lastError!, /EACCES: no permission to connect/);
  });

  test('a peer that accepts and closes at once is retried with growing delays, not in a loop', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'slam.sock');
    const srv = await new TestServer((s) => s.destroy()).listen({ path });
    t.after(() => srv.close());
    const { runner, lines } = start(t, `unix:${path}`);
    // Six connections: the delays between them are at least 50+100+200+400+800 ms
    // (jitter takes at most half of 100, 200, 400, 800, 1600).
    await srv.nth(5, 15_000);
    const elapsed = srv.acceptTimes[5] - srv.acceptTimes[0];
    assert.ok(elapsed >= 1500, `six attempts within ${elapsed} ms`);
    assert.ok(runner.status.reconnects >= 5);
    // One warning for the flapping, not one per attempt.
    assert.equal(lines.filter((l) => l.level === 'warn').length, 1);
  });

  test('a peer that sends nothing stays connected; other endpoints are not disturbed', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const quiet = await new TestServer().listen({ path: join(dir, 'quiet.sock') });
    const echo = await new TestServer((s) => s.pipe(s)).listen({ path: join(dir, 'echo.sock') });
    t.after(() => Promise.all([quiet.close(), echo.close()]).then(() => {}));
    const q = start(t, `unix:${join(dir, 'quiet.sock')}`);
    const e = start(t, `unix:${join(dir, 'echo.sock')}`);
    await Promise.all([waitForState(q.runner, 'connected'), waitForState(e.runner, 'connected')]);
    for (let i = 0; i < 20; i++) {
      e.hub.fromClient(e.client, Buffer.from(`ping ${i}\n`));
      await waitForOutput(e.client, `ping ${i}\n`);
    }
    assert.equal(q.runner.state, 'connected');
    assert.equal(q.runner.status.reconnects, 0);
    assert.equal(q.lines.filter((l) => l.level === 'warn' || l.level === 'error').length, 0);
  });

  test('a flood of output passes through without piling up; another endpoint still answers meanwhile', { timeout: 60_000 }, async (t) => {
    const dir = tempDir(t);
    const TOTAL = 64 * 1024 * 1024;
    const block = Buffer.alloc(64 * 1024, 0x41);
    const flood = await new TestServer((s) => {
      let sent = 0;
      const pump = (): void => {
        while (sent < TOTAL) {
          sent += block.length;
          if (!s.write(block)) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    }).listen({ path: join(dir, 'flood.sock') });
    const echo = await new TestServer((s) => s.pipe(s)).listen({ path: join(dir, 'echo.sock') });
    t.after(() => Promise.all([flood.close(), echo.close()]).then(() => {}));
    const e = start(t, `unix:${join(dir, 'echo.sock')}`);
    await waitForState(e.runner, 'connected');

    const { hub } = makeHub(64 * 1024, false);
    let received = 0;
    let pings = 0;
    const floodClient = new FakeClient();
    // Counts instead of keeping: the point is what vspc holds, not the test.
    floodClient.deliver = (d: Buffer) => {
      received += d.length;
    };
    hub.addClient(floodClient);
    const logger = recordingLogger();
    gc();
    const heapBefore = process.memoryUsage().arrayBuffers;
    let peakExtra = 0;
    const runner = createEndpoint(parseSourceSpec(`unix:${join(dir, 'flood.sock')}`), hub, { logger });
    t.after(() => runner.destroy('test over'));
    // While the flood runs, ping the other endpoint round and round.
    const lost = waitForStatus(runner, (s) => s.reconnects > 0, 50_000, 'the flood to end');
    let flooding = true;
    void lost.then(() => (flooding = false));
    while (flooding) {
      e.hub.fromClient(e.client, Buffer.from(`p${pings}\n`));
      await waitForOutput(e.client, `p${pings}\n`);
      pings++;
      if (pings % 20 === 0) {
        gc();
        peakExtra = Math.max(peakExtra, process.memoryUsage().arrayBuffers - heapBefore);
      }
    }
    await lost;
    t.diagnostic(`flood: ${TOTAL} bytes, ${pings} pings answered meanwhile, peak retained extra ${peakExtra} bytes`);
    assert.equal(received, TOTAL);
    assert.equal(hub.bytesFromVm, TOTAL);
    assert.ok(pings >= 2, `the other endpoint answered ${pings} times during the flood`);
    // Nothing accumulates: what stays reachable (after a collection) is far below the flood.
    assert.ok(peakExtra < 16 * 1024 * 1024, `peak extra buffers ${peakExtra} bytes`);
  });
});

describe('unix-listen: (QEMU connects to vspc)', () => {
  test('mode 0600; one peer at a time (a second is refused and logged); back to listening; close removes the file', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'vspc.sock');
    const { runner, hub, client, lines } = start(t, `unix-listen:${path}`);
    await waitForState(runner, 'listening');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const first = await connectClient({ path });
    await waitForState(runner, 'connected');
    first.write('from qemu');
    await waitForOutput(client, 'from qemu');
    const seen = new Collector(first);
    hub.fromClient(client, Buffer.from('to qemu'));
    await seen.until('to qemu');

    const second = await connectClient({ path });
    second.on('error', () => {});
    await closedPromise(second);
    await waitForStatus(runner, (s) => s.refusedPeers === 1);
    const busy = lines.find((l) => l.fields.errorCode === 'VSPC_SOURCE_BUSY');
    assert.equal(busy?.level, 'warn');
    assert.equal(runner.state, 'connected', 'the first peer stays');

    first.destroy();
    await waitForState(runner, 'listening');
    assert.equal(hub.state, 'disconnected');
    const third = await connectClient({ path });
    await waitForState(runner, 'connected');
    third.destroy();
    await runner.close();
    assert.equal(existsSync(path), false);
  });

  test('a stale socket file is replaced; a live listener is not (ADDRESS_IN_USE)', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'vspc.sock');
    staleSocket(path);
    const a = start(t, `unix-listen:${path}`);
    await waitForState(a.runner, 'listening');
    assert.ok(a.lines.some((l) => l.message === 'removed a stale socket file'));
    await a.runner.close();

    const other = await new TestServer().listen({ path });
    const b = start(t, `unix-listen:${path}`);
    const st = await waitForState(b.runner, 'waiting');
    assert.match(st.lastError!, /another process listens/);
    assert.equal(b.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_ADDRESS_IN_USE');
    await other.close();
    // The other listener is gone (its file with it): the next attempt binds.
    await waitForState(b.runner, 'listening');
  });

  test('a symlink, a regular file or a directory at the path is never touched: NOT_A_SOCKET', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const target = join(dir, 'precious');
    writeFileSync(target, 'keep me');
    const link = join(dir, 'link.sock');
    symlinkSync(target, link);
    const file = join(dir, 'file.sock');
    writeFileSync(file, 'keep me too');
    const sub = join(dir, 'dir.sock');
    mkdirSync(sub);
    // A symlink to a stale socket is not followed either.
    const staleTarget = join(dir, 'stale-target.sock');
    staleSocket(staleTarget);
    const link2 = join(dir, 'link2.sock');
    symlinkSync(staleTarget, link2);
    for (const [path, what] of [
      [link, 'a symbolic link'],
      [file, 'a regular file'],
      [sub, 'a directory'],
      [link2, 'a symbolic link'],
    ] as const) {
      const { runner, lines } = start(t, `unix-listen:${path}`);
      const st = await waitForState(runner, 'waiting');
      assert.match(st.lastError!, new RegExp(`is ${what}, not a socket`));
      assert.equal(lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_NOT_A_SOCKET');
    }
    assert.equal(readlinkSync(link), target);
    assert.equal(readFileSync(target, 'utf8'), 'keep me');
    assert.equal(readFileSync(file, 'utf8'), 'keep me too');
    assert.ok(statSync(sub).isDirectory());
    assert.ok(lstatSync(staleTarget).isSocket(), 'the stale socket behind the link is left alone');
  });

  test('a missing directory: NO_DIRECTORY, waiting; the directory appears → kick → listening', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    const sub = join(dir, 'later');
    const path = join(sub, 'vspc.sock');
    const { runner, lines } = start(t, `unix-listen:${path}`);
    const st = await waitForState(runner, 'waiting');
    assert.match(st.lastError!, /directory .*later does not exist/);
    assert.equal(lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_NO_DIRECTORY');
    mkdirSync(sub);
    await waitForState(runner, 'waiting');
    runner.kick();
    await waitForState(runner, 'listening');
    assert.ok(lstatSync(path).isSocket());
  });

  test('permission denied where vspc may not create the socket', { timeout: 20_000 }, async (t) => {
    const dir = tempDir(t);
    chmodSync(dir, 0o755);
    const r = await probeAsNobody(`unix-listen:${join(dir, 'vspc.sock')}`);
    assert.equal(r.status.state, 'waiting');
    assert.equal(r.errorCode, 'VSPC_SOURCE_PERMISSION_DENIED');
    assert.equal(r.sysCode, 'EACCES');
  });
});

describe('tcp: and tcp-listen:', () => {
  test('tcp: bytes both ways; refused while the server is down; reconnects when it is back', { timeout: 20_000 }, async (t) => {
    let srv = await new TestServer().listen({ host: '127.0.0.1', port: 0 });
    const port = srv.port;
    const { runner, hub, client } = start(t, `tcp:127.0.0.1:${port}`);
    const peer = await srv.nth(0);
    await waitForState(runner, 'connected');
    assert.equal(hub.source?.kind, 'tcp');
    peer.write('hello\r\n');
    await waitForOutput(client, 'hello\r\n');
    const seen = new Collector(peer);
    hub.fromClient(client, Buffer.from('typed'));
    await seen.until('typed');
    await srv.close();
    await waitForStatus(runner, (s) => s.state === 'waiting' && /ECONNREFUSED/.test(s.lastError ?? ''), WAIT, 'ECONNREFUSED');
    srv = await new TestServer().listen({ host: '127.0.0.1', port });
    t.after(() => srv.close());
    await srv.nth(0);
    await waitForState(runner, 'connected');
  });

  test('tcp-listen: one peer at a time; EADDRINUSE is ADDRESS_IN_USE', { timeout: 20_000 }, async (t) => {
    const holder = await new TestServer().listen({ host: '127.0.0.1', port: 0 });
    const busyPort = holder.port;
    const a = start(t, `tcp-listen:127.0.0.1:${busyPort}`);
    const st = await waitForState(a.runner, 'waiting');
    assert.match(st.lastError!, /EADDRINUSE/);
    assert.equal(a.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_ADDRESS_IN_USE');
    await holder.close();
    const { runner, hub, client } = a;
    await waitForState(runner, 'listening');
    const first = await connectClient({ host: '127.0.0.1', port: busyPort });
    await waitForState(runner, 'connected');
    assert.equal(runner.status.peer, `127.0.0.1:${first.localPort}`);
    const second = await connectClient({ host: '127.0.0.1', port: busyPort });
    second.on('error', () => {});
    await closedPromise(second);
    assert.equal(runner.status.refusedPeers, 1);
    first.write('x');
    await waitForOutput(client, 'x');
    assert.equal(hub.source?.kind, 'tcp-listen');
    first.destroy();
    await waitForState(runner, 'listening');
  });
});

describe('telnet:', () => {
  /** What QEMU's telnet server sends first (chardev/char-socket.c). */
  const QEMU_OPENING = Buffer.from([IAC, WILL, Option.ECHO, IAC, WILL, Option.SGA, IAC, WILL, Option.BINARY, IAC, DO, Option.BINARY]);

  test('negotiates BINARY both ways and SGA; IAC is escaped both ways; BREAK is IAC BRK', { timeout: 20_000 }, async (t) => {
    const srv = await new TestServer((s) => s.write(QEMU_OPENING)).listen({ host: '127.0.0.1', port: 0 });
    t.after(() => srv.close());
    const { runner, hub, client } = start(t, `telnet:127.0.0.1:${srv.port}`);
    const peer = await srv.nth(0);
    const seen = new Collector(peer);
    await waitForState(runner, 'connected');
    // Our requests: WILL BINARY, DO BINARY, WILL SGA, DO SGA (and DO ECHO for its offer).
    await seen.until(Buffer.from([IAC, WILL, Option.BINARY, IAC, DO, Option.BINARY, IAC, WILL, Option.SGA, IAC, DO, Option.SGA]));
    await seen.until(Buffer.from([IAC, DO, Option.ECHO]));
    // Output: IAC IAC is one 0xff; CR NUL stays as it is in BINARY.
    peer.write(Buffer.from([0x41, IAC, IAC, 0x0d, 0x00, 0x42]));
    await waitForOutput(client, Buffer.from([0x41, 0xff, 0x0d, 0x00, 0x42]));
    // Input: 0xff doubled.
    seen.chunks = [];
    hub.fromClient(client, Buffer.from([0x31, 0xff, 0x32]));
    await seen.until(Buffer.from([0x31, IAC, IAC, 0x32]));
    hub.sendBreak();
    await seen.until(Buffer.from([IAC, BRK]));
  });

  test('garbage from the peer closes the link (PROTOCOL_ERROR) and the runner redials with backoff', { timeout: 20_000 }, async (t) => {
    const srv = await new TestServer((s) => s.write(Buffer.from([0x41, IAC, 0x07, 0x42]))).listen({ host: '127.0.0.1', port: 0 });
    t.after(() => srv.close());
    const { runner, client, lines } = start(t, `telnet:127.0.0.1:${srv.port}`);
    await srv.nth(2);
    await waitForOutput(client, 'AAA');
    const warn = lines.find((l) => l.level === 'warn');
    assert.equal(warn?.fields.errorCode, 'VSPC_SOURCE_PROTOCOL_ERROR');
    assert.match(runner.status.lastError!, /telnet protocol error/);
    assert.equal(client.output.toString('latin1'), 'AAA', 'data before the error passed; nothing after it');
    assert.ok(srv.acceptTimes[2] - srv.acceptTimes[0] >= 150, 'backed off');
  });
});

describe('udp:', () => {
  async function udpPeer(t: TestContext): Promise<{ sock: dgram.Socket; port: number; received: Buffer[]; next(): Promise<Buffer> }> {
    const sock = dgram.createSocket('udp4');
    const received: Buffer[] = [];
    let waiter: ((b: Buffer) => void) | null = null;
    sock.on('message', (m) => {
      received.push(m);
      const w = waiter;
      waiter = null;
      w?.(m);
    });
    await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
    t.after(() => sock.close());
    return {
      sock,
      port: sock.address().port,
      received,
      next: () => new Promise((resolve) => (waiter = resolve)),
    };
  }

  async function freeUdpPort(): Promise<number> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    const port = s.address().port;
    await new Promise<void>((resolve) => s.close(() => resolve()));
    return port;
  }

  test('connected once bound; both directions; strangers dropped and counted; long input split', { timeout: 20_000 }, async (t) => {
    const remote = await udpPeer(t);
    const stranger = await udpPeer(t);
    const local = await freeUdpPort();
    const { runner, hub, client, lines } = start(t, `udp:127.0.0.1:${local}@127.0.0.1:${remote.port}`);
    const st = await waitForState(runner, 'connected');
    assert.match(st.note!, /bound/);
    assert.equal(hub.source?.kind, 'udp');
    remote.sock.send('from qemu', local, '127.0.0.1');
    await waitForOutput(client, 'from qemu');
    stranger.sock.send('intruder', local, '127.0.0.1');
    remote.sock.send('after', local, '127.0.0.1');
    await waitForOutput(client, 'after');
    assert.ok(!client.output.includes('intruder'));
    const link = runner.currentLink as UdpLink;
    assert.equal(link.droppedDatagrams, 1);
    assert.equal(lines.filter((l) => /unexpected sender/.test(l.message))[0].level, 'warn');

    const got = remote.next();
    hub.fromClient(client, Buffer.from('typed'));
    assert.equal((await got).toString(), 'typed');
    // 3000 bytes: three datagrams of at most 1024.
    const big = Buffer.alloc(3000, 0x61);
    const before = remote.received.length;
    const all = new Promise<void>((resolve) => {
      const check = (): void => {
        if (remote.received.slice(before).reduce((n, b) => n + b.length, 0) >= 3000) resolve();
        else void remote.next().then(check);
      };
      check();
    });
    hub.fromClient(client, big);
    await all;
    const sizes = remote.received.slice(before).map((b) => b.length);
    assert.deepEqual(sizes, [1024, 1024, 952]);
  });

  test('the local port taken: ADDRESS_IN_USE, waiting', { timeout: 20_000 }, async (t) => {
    const holder = await udpPeer(t);
    const { runner, lines } = start(t, `udp:127.0.0.1:${holder.port}@127.0.0.1:9`);
    const st = await waitForState(runner, 'waiting');
    assert.match(st.lastError!, /EADDRINUSE/);
    assert.equal(lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_ADDRESS_IN_USE');
  });
});
