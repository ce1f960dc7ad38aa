/**
 * Peers that ask for replies and never read them (docs/security.md, "Running out of
 * resources"): every write vspc makes to a peer — replies as well as console output —
 * is checked against that peer's queue bound, and a peer past it is cut off with one
 * log line carrying VSPC_PEER_NOT_READING (VSPC_SOURCE_NOT_READING for a source vspc
 * dials) and counted in /metrics (vspc_peers_cut_off_total). One test per surface the
 * security test found or named: the VM port before and after identification, a console
 * client's WHO, telnet negotiation and COM-PORT replies, the broker before SELECT, a
 * `telnet:` source, the SSH front door's menu, and the admin API (Node's HTTP server
 * stops reading a connection whose answers are not read). No timing or memory is
 * asserted: the socket is closed, the line and the count are there.
 *
 * Then log floods (F4): a peer repeating a bad input that is logged each time (an
 * unknown option-232 subcommand, a COM-PORT client SIGNATURE) writes its connection's
 * budget of lines (CONNECTION_LOG_BUDGET), and the rest is counted in a summary line
 * (`log lines suppressed for this connection`): written + suppressed = inputs.
 *
 * Every wait is on an event (bytes, drain, a log line, a socket's close), never a timer.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type http from 'node:http';
import { startServer, esxiUuid, waitUntil, settle, type Cleanup, type TestServer } from '../support/server.js';
import { TelnetUser } from '../support/sim/index.js';
import { BrokerPeer } from '../support/broker-client.js';
import { encodeControl, VSPC_CONTROL_OPTION } from '../../src/protocol/control/vspc-control.js';
import { Option } from '../../src/protocol/telnet/constants.js';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import { WHO_BUDGET } from '../../src/access/telnet/client.js';
import { PENDING_VM_QUEUE_LIMIT } from '../../src/sources/esxi/connection.js';
import type { LogLine } from '../support/log-capture.js';
import { readFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import { tempDir } from '../support/server.js';
import { haveOpenSsh, keyLine, makeKey, startSshServer } from '../support/ssh.js';
import { CONNECTION_LOG_BUDGET } from '../../src/domain/log-budget.js';

const IAC = 255;
const SB = 250;
const SE = 240;
const WILL = 251;
const WONT = 252;
const DO = 253;
const DONT = 254;

/** An option-232 subcommand nobody defines: answered with UNKNOWN-SUBOPTION-RCVD-2, every time (the security test's `FF FA E8 C7 FF F0`). */
const UNKNOWN_EXT = Buffer.of(IAC, SB, Option.VMWARE_EXT, 0xc7, IAC, SE);

/** The /metrics samples, by name with labels (`vspc_x{a="b"}`). */
async function metrics(ts: TestServer): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${ts.adminPort}/metrics`, { signal: AbortSignal.timeout(5000) });
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^(\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

const cutOff = (side: string, reason = 'not-reading') => `vspc_peers_cut_off_total{side="${side}",reason="${reason}"}`;

/** Something to flood: writes with backpressure, a drain to wait for, a close to stop at. */
interface Sink {
  write(bytes: Buffer): boolean;
  drained(): Promise<void>;
  readonly closed: boolean;
}

function socketSink(socket: net.Socket): Sink {
  let closed = false;
  socket.on('error', () => undefined);
  socket.once('close', () => (closed = true));
  return {
    write: (b) => (socket.destroyed ? false : socket.write(b)),
    drained: () =>
      new Promise<void>((resolve) => {
        if (closed || socket.destroyed || socket.writableLength === 0) return resolve();
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.once('drain', done);
        socket.once('close', done);
      }),
    get closed() {
      return closed || socket.destroyed;
    },
  };
}

function userSink(user: TelnetUser): Sink {
  return {
    write: (b) => user.sendRaw(b),
    drained: () => user.whenDrained(),
    get closed() {
      return user.closed;
    },
  };
}

/**
 * Sends `unit` over and over, in writes of about 64 KiB and with backpressure, until
 * vspc closes the connection; fails past `maxBytes` (vspc never cut it off). Event
 * driven: it waits on drain and close, never on time.
 */
async function floodUntilClosed(sink: Sink, unit: Buffer, maxBytes = 256 * 1024 * 1024): Promise<number> {
  const chunk = Buffer.concat(Array.from({ length: Math.max(1, Math.floor(65536 / unit.length)) }, () => unit));
  let sent = 0;
  while (!sink.closed) {
    if (sent >= maxBytes) throw new Error(`still connected after ${sent} bytes: the peer was never cut off`);
    sent += chunk.length;
    if (!sink.write(chunk)) {
      await sink.drained();
      // A socket destroyed here (vspc's RST made a write fail) resolves drained() at once but
      // emits 'close' only from libuv's close phase: without a turn of the event loop this loop
      // would spin in microtasks, counting writes that never happen, and never see the close.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  return sent;
}

async function rawConnect(port: number, cleanup: Cleanup): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port });
  cleanup.add(() => socket.destroy());
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // Never read: no 'data' listener, no resume; the kernel buffers fill.
  socket.pause();
  return socket;
}

function notReadingLine(ts: TestServer, peer: string): Promise<LogLine> {
  return ts.logs.waitFor((l) => l.errorCode === 'VSPC_PEER_NOT_READING' && l.peer === peer, 60_000, 0, `VSPC_PEER_NOT_READING for ${peer}`);
}

test('VM port, unidentified: a peer asking for UNKNOWN-SUBOPTION-RCVD-2 and never reading is cut off at the pending bound', async (t) => {
  // A flood long enough to fill the kernel's buffers first; the identify deadline must not end it.
  const { ts, cleanup } = await startServer(t, { config: { identifyTimeoutMs: 120_000, humanTimeoutMs: 120_000 } });
  // Another session on the same server: a VM with a console client.
  const other = await ts.connectVm({ uuid: esxiUuid().text, name: 'bystander01' }, cleanup);
  const watcher = await ts.connectUser(other.hub.identity.tcpPort, cleanup);
  const socket = await rawConnect(ts.proxyPort, cleanup);
  const peer = `${socket.localAddress}:${socket.localPort}`;
  socket.write(Buffer.of(IAC, WILL, Option.VMWARE_EXT));
  await floodUntilClosed(socketSink(socket), UNKNOWN_EXT);

  const line = await notReadingLine(ts, peer);
  assert.equal(line.level, 'warn');
  assert.equal(line.message, 'VM connection does not read what vspc sends; disconnected');
  assert.equal(line.side, 'vm');
  assert.equal(line.limit, PENDING_VM_QUEUE_LIMIT, 'a connection that has not identified is held to the small bound');
  assert.ok(Number(line.cost) > PENDING_VM_QUEUE_LIMIT && Number(line.writes) > 0);
  assert.equal(ts.logs.filter((l) => l.errorCode === 'VSPC_PEER_NOT_READING').length, 1, 'one line');
  await ts.logs.waitFor((l) => l.peer === peer && l.message === 'VM connection closed', 5000);
  const m = await metrics(ts);
  assert.equal(m.get(cutOff('vm')), 1);
  assert.equal(m.get(cutOff('client')), 0);
  // The other session kept working throughout.
  const mark = watcher.mark();
  other.vm.send('bystander output');
  await watcher.waitFor('bystander output', 5000, mark);
  assert.equal(other.vm.closed, false);
});

test('VM port, identified: a VM that stops reading while asking for replies is cut off at its bound; the console stays usable', async (t) => {
  const { ts, cleanup } = await startServer(t, { config: { clientQueueLimit: 256 * 1024, vmotionHoldLimit: 32 * 1024 } });
  const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'deaf01' }, cleanup);
  const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
  vm.stopReading();
  await floodUntilClosed({ write: (b) => vm.sendRaw(b), drained: () => vm.whenDrained(), get closed() { return vm.closed; } }, UNKNOWN_EXT);

  const line = await notReadingLine(ts, vm.peerName);
  assert.equal(line.limit, 256 * 1024 + 2 * 32 * 1024, 'an identified VM: --client-queue-limit plus twice --vmotion-hold-limit');
  assert.equal(line.state, 'attached');
  await user.waitFor('VM disconnected', 5000);
  assert.equal(user.closed, false, 'the console client stays');
  assert.equal((await metrics(ts)).get(cutOff('vm')), 1);
});

test('console port: WHO requests past the budget (20 holders with 64-byte names, never reading) disconnect the client', async (t) => {
  // After its FIN the client is read for 64 KiB more, then not at all (the flood stops on TCP
  // flow control) until the close grace (200 ms here) ends the connection.
  const { ts, cleanup } = await startServer(t);
  const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'who01' }, cleanup);
  const port = hub.identity.tcpPort;
  for (let i = 0; i < 20; i++) {
    const holder = await BrokerPeer.connect({ host: '127.0.0.1', port });
    cleanup.add(() => holder.destroy());
    holder.send({ kind: 'lock-request', mode: 'readonly', force: false, user: `${String(i).padStart(2, '0')}${'h'.repeat(62)}` });
    await holder.next('lock-granted');
  }
  const asker = await BrokerPeer.connect({ host: '127.0.0.1', port });
  cleanup.add(() => asker.destroy());
  asker.send({ kind: 'lock-request', mode: 'readonly', force: false, user: 'asker' });
  await asker.next('lock-granted');
  const peer = `${asker.socket.localAddress}:${asker.socket.localPort}`;
  asker.socket.pause();
  const who = Buffer.concat([Buffer.of(IAC, SB, VSPC_CONTROL_OPTION), encodeControl({ kind: 'who' }), Buffer.of(IAC, SE)]);
  await floodUntilClosed(socketSink(asker.socket), who);

  const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_PEER_TOO_MANY_REQUESTS' && l.peer === peer, 10_000);
  assert.equal(line.message, 'client asks WHO faster than its budget; disconnecting');
  assert.equal(line.burst, WHO_BUDGET.burst);
  const m = await metrics(ts);
  assert.equal(m.get(cutOff('client', 'too-many-requests')), 1);
  assert.equal(hub.clients.size, 20, 'the holders stay');
});

test('console port: a client toggling DONT ECHO / DO ECHO and never reading the answers is cut off at --client-queue-limit', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'echo01' }, cleanup);
  const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
  const good = await ts.connectUser(hub.identity.tcpPort, cleanup);
  user.stopReading();
  // RFC 1143 answers each change (WONT ECHO, WILL ECHO): legal forever, each answer queued.
  await floodUntilClosed(userSink(user), Buffer.of(IAC, DONT, Option.ECHO, IAC, DO, Option.ECHO));

  const line = await notReadingLine(ts, user.peerName);
  assert.equal(line.message, 'client too slow; disconnecting');
  assert.equal(line.limit, ts.config.clientQueueLimit);
  const m = await metrics(ts);
  assert.equal(m.get(cutOff('client')), 1);
  assert.equal(m.get('vspc_clients_dropped_slow_total'), 1);
  // The console and its other client are untouched.
  const from = good.mark();
  vm.send('still here');
  await good.waitFor('still here', 5000, from);
  await settle(vm, good);
});

test('console port: COM-PORT (RFC 2217) SIGNATURE requests never read are cut off at --client-queue-limit', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'sig01' }, cleanup);
  // A user that offers COM-PORT (WILL COM-PORT; vspc accepts it).
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort, will: [Option.COM_PORT] });
  cleanup.add(() => user.destroy());
  user.session.requestUs(Option.COM_PORT);
  await user.waitForOptions([
    ['us', Option.BINARY],
    ['us', Option.COM_PORT],
  ]);
  await user.waitFor('[vspc: ', 3000);
  await user.barrier();
  // One SIGNATURE request answered (vspc's signature text) before the flood.
  user.sendRaw(Buffer.of(IAC, SB, Option.COM_PORT, 0, IAC, SE));
  await user.barrier();
  const answer = user.subnegotiationsReceived.find((s) => s.option === Option.COM_PORT && s.payload[0] === 100);
  assert.match(answer?.payload.subarray(1).toString('utf8') ?? '', /^vspc /, 'SIGNATURE answered');
  user.stopReading();
  // An empty SIGNATURE asks for ours: each is answered with vspc's signature text.
  await floodUntilClosed(userSink(user), Buffer.of(IAC, SB, Option.COM_PORT, 0, IAC, SE));
  await notReadingLine(ts, user.peerName);
  assert.equal((await metrics(ts)).get(cutOff('client')), 1);
});

test('console broker before SELECT: toggling DONT ECHO / DO ECHO and never reading is cut off; the broker goes on', async (t) => {
  const { ts, cleanup } = await startServer(t, { config: { brokerListen: { host: '127.0.0.1', port: 0 } } });
  await ts.connectVm({ uuid: esxiUuid().text, name: 'brk01' }, cleanup);
  const port = ts.server.broker!.addresses.tcp!.port;
  const socket = await rawConnect(port, cleanup);
  const peer = `${socket.localAddress}:${socket.localPort}`;
  await floodUntilClosed(socketSink(socket), Buffer.of(IAC, DONT, Option.ECHO, IAC, DO, Option.ECHO));

  const line = await notReadingLine(ts, peer);
  assert.equal(line.message, 'broker connection does not read what vspc sends; disconnected');
  assert.equal(line.side, 'broker');
  assert.equal((await metrics(ts)).get(cutOff('broker')), 1);
  const next = await BrokerPeer.connect({ host: '127.0.0.1', port });
  cleanup.add(() => next.destroy());
  const { entries } = await next.list();
  assert.equal(entries.length, 1);
});

test('telnet: source: a telnet server toggling WILL/WONT ECHO that never reads the answers is cut off, and redialled', async (t) => {
  // The "telnet server" vspc dials: negotiates at will and never reads.
  const accepted: net.Socket[] = [];
  const waiting = new Set<(s: net.Socket) => void>();
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pause();
    accepted.push(s);
    for (const w of [...waiting]) w(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of accepted) s.destroy();
    server.close();
  });
  const nextConnection = (n: number) =>
    new Promise<net.Socket>((resolve) => {
      if (accepted.length >= n) return resolve(accepted[n - 1]);
      const w = () => {
        if (accepted.length < n) return;
        waiting.delete(w);
        resolve(accepted[n - 1]);
      };
      waiting.add(w);
    });
  const spec = `telnet:127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const { ts } = await startServer(t, { config: { consoles: [{ name: 'tn01', source: parseSourceSpec(spec), sourceText: spec }] } });
  const first = await nextConnection(1);
  await floodUntilClosed(socketSink(first), Buffer.of(IAC, WILL, Option.ECHO, IAC, WONT, Option.ECHO));

  const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_SOURCE_NOT_READING' && l.message === 'endpoint does not read what vspc sends; link closed', 60_000);
  assert.equal(line.limit, ts.config.clientQueueLimit);
  assert.equal((await metrics(ts)).get(cutOff('source')), 1);
  // The endpoint dials again (backoff), as after any lost link.
  await nextConnection(2);
});

test('admin API: pipelined requests whose answers are never read: Node stops reading the connection, the queue stays bounded', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const httpServer = (ts.server as unknown as { admin: { server: http.Server } }).admin.server;
  const accepted: { socket: net.Socket | null } = { socket: null };
  httpServer.once('connection', (s: net.Socket) => (accepted.socket = s));
  const socket = await rawConnect(ts.adminPort, cleanup);
  const request = Buffer.from(`GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const sink = socketSink(socket);
  // Write until the server stops reading (its side paused) — bounded, in case it never does.
  let sent = 0;
  const chunk = Buffer.concat(Array.from({ length: 1000 }, () => request));
  await waitUntil(() => accepted.socket !== null, 5000, 'the admin connection accepted');
  const serverSide = accepted.socket!;
  while (!serverSide.isPaused()) {
    if (sent > 64 * 1024 * 1024) throw new Error('the admin API kept reading requests whose answers were not read');
    sent += chunk.length;
    if (!sink.write(chunk)) {
      // Our side is full: either the server is reading (drain comes) or it has stopped (it is paused).
      await Promise.race([sink.drained(), waitUntil(() => serverSide.isPaused(), 60_000, 'the admin connection paused')]);
    }
  }
  assert.ok(serverSide.writableLength < 1024 * 1024, `answers queued: ${serverSide.writableLength} bytes`);
  socket.destroy();
  // The API still answers others.
  await ts.api('/api/v1/status');
});

test(
  'SSH front door: a client refreshing the menu (Enter) and never reading is cut off at --client-queue-limit; telnet clients go on',
  async (t) => {
    assert.ok(haveOpenSsh(), 'ssh-keygen is not installed (test/support/guest/ensure-deps.sh installs it)');
    const keys = tempDir('vspc-ssh-queues-');
    t.after(() => keys.remove());
    const key = makeKey(keys.dir, 'mallory');
    const s = await startSshServer(t, [keyLine(key)], { config: { clientQueueLimit: 256 * 1024 } });
    const { ts, cleanup } = s;
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'menu01' }, cleanup);
    // Two consoles: the session starts at the menu (with one it would attach at once).
    await ts.connectVm({ uuid: esxiUuid().text, name: 'menu02' }, cleanup);
    const good = await ts.connectUser(hub.identity.tcpPort, cleanup);

    const client = new ssh2.Client();
    let closed = false;
    const gone = new Promise<void>((resolve) =>
      client.on('close', () => {
        closed = true;
        resolve();
      }),
    );
    client.on('error', () => undefined);
    cleanup.add(() => client.end());
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', reject);
      client.connect({ host: '127.0.0.1', port: s.port, username: 'console', privateKey: readFileSync(key.path), readyTimeout: 10_000 });
    });
    const channel = await new Promise<ssh2.ClientChannel>((resolve, reject) =>
      client.shell({ term: 'xterm', rows: 24, cols: 80 }, (err, ch) => (err ? reject(err) : resolve(ch))),
    );
    channel.on('error', () => undefined);
    // The menu, once read; then never again (no window adjust: what vspc sends waits at vspc).
    await new Promise<void>((resolve) => {
      let text = '';
      const onData = (d: Buffer) => {
        text += d.toString('utf8');
        if (/to quit: $/m.test(text)) {
          channel.off('data', onData);
          resolve();
        }
      };
      channel.on('data', onData);
    });
    channel.pause();
    // Each Enter redraws the menu. Pressed until vspc cuts the connection (bounded). How
    // many it takes depends on the SSH windows: our 2 MiB receive window fills with
    // redraws first, then vspc's queue passes half the bound and it holds our input, which
    // still arrives while our send window (up to 2 MiB) lasts and counts against the bound.
    // Past 4 MiB of Enters both windows are spent: a vspc that never cut us off would
    // have to be holding more than the bound.
    let presses = 0;
    while (!closed) {
      if (presses > 4 * 1024 * 1024) throw new Error(`still connected after ${presses} menu refreshes: never cut off`);
      presses += 64;
      // ssh2 takes writes synchronously while the window lasts: let the I/O happen (a turn of the event loop, no timer).
      if (!channel.write('\r'.repeat(64))) await Promise.race([new Promise((r) => channel.once('drain', r)), gone]);
      else await new Promise((r) => setImmediate(r));
    }

    t.diagnostic(`cut off after ${presses} Enters`);
    const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_PEER_NOT_READING' && l.side === 'ssh', 10_000);
    assert.equal(line.message, 'SSH client too slow; disconnecting');
    assert.equal(line.limit, 256 * 1024);
    assert.ok(Number(line.queued) > 256 * 1024);
    assert.equal((await metrics(ts)).get(cutOff('client')), 1);
    // The telnet client of the same server is untouched.
    const mark = good.mark();
    vm.send('after the ssh flood');
    await good.waitFor('after the ssh flood', 5000, mark);
  },
);

// --- Log floods (F4): a peer repeating a bad input gets the budget of lines, then summaries.

const SUMMARY = 'log lines suppressed for this connection';

/** The lines one connection wrote with `message`, and what its summaries counted of that message. */
function linesAndSuppressed(ts: TestServer, peer: string, message: string, from: number): { written: number; suppressed: number; summaries: LogLine[] } {
  const mine = ts.logs.lines.slice(from).filter((l) => l.peer === peer);
  const summaries = mine.filter((l) => l.message === SUMMARY);
  const suppressed = summaries.reduce((n, l) => n + Number((l.messages as Record<string, number> | undefined)?.[message] ?? 0), 0);
  return { written: mine.filter((l) => l.message === message).length, suppressed, summaries };
}

/** What the budget may let through in `ms`: the burst, what it earns back meanwhile, and one line rounding. */
const allowedLines = (ms: number) => CONNECTION_LOG_BUDGET.burst + Math.ceil((CONNECTION_LOG_BUDGET.perSecond * ms) / 1000) + 1;

test('log flood, VM port: 5,000 unknown option-232 subcommands write the budget of lines and a summary with the count, not 5,000 lines', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'noisy01' }, cleanup);
  const other = await ts.connectVm({ uuid: esxiUuid().text, name: 'quiet01' }, cleanup);
  const user = await ts.connectUser(other.hub.identity.tcpPort, cleanup);
  const from = ts.logs.lines.length;
  const started = performance.now();
  const N = 5000;
  // Code 200: unknown to vspc (and not the simulator's barrier subcommand); each is answered and logged.
  const unknown = Buffer.of(IAC, SB, Option.VMWARE_EXT, 200, IAC, SE);
  vm.sendRaw(Buffer.concat(Array.from({ length: N }, () => unknown)));
  await vm.barrier(30_000);
  assert.equal(vm.unknownReportedByProxy.filter((c) => c === 200).length, N, 'every subcommand was still answered');
  // Meanwhile another VM's console works.
  const mark = user.mark();
  other.vm.send('quiet and well');
  await user.waitFor('quiet and well', 5000, mark);
  await vm.close();
  await ts.logs.waitFor((l) => l.peer === vm.peerName && l.message === 'VM connection closed', 5000, from);
  const elapsed = performance.now() - started;

  // The barrier's own subcommand is logged with the same message: N + 1 in all.
  const { written, suppressed, summaries } = linesAndSuppressed(ts, vm.peerName, 'unknown option-232 subcommand', from);
  assert.ok(written >= 1 && written <= allowedLines(elapsed), `${written} lines written in ${Math.round(elapsed)} ms`);
  assert.equal(written + suppressed, N + 1, 'every line is either written or counted in a summary');
  assert.ok(summaries.length >= 1, 'a summary line');
  const last = summaries[summaries.length - 1];
  assert.equal(last.level, 'info', 'as visible as the lines it stands for');
  assert.equal(last.side, 'vm');
  assert.ok(Number(last.suppressed) > 0 && Number(last.suppressedTotal) >= suppressed);
  assert.deepEqual(last.budget, { perSecond: CONNECTION_LOG_BUDGET.perSecond, burst: CONNECTION_LOG_BUDGET.burst });
  // The summary comes before the connection's last line.
  const idx = (pred: (l: LogLine) => boolean) => ts.logs.lines.findIndex((l, i) => i >= from && l.peer === vm.peerName && pred(l));
  assert.ok(idx((l) => l.message === SUMMARY) < idx((l) => l.message === 'VM connection closed'));
  assert.equal(hub.identity.name, 'noisy01');
});

test('log flood, console port: 2,000 COM-PORT client SIGNATUREs write the budget of lines and a summary with the count', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'sigflood01' }, cleanup);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort, will: [Option.COM_PORT] });
  cleanup.add(() => user.destroy());
  user.session.requestUs(Option.COM_PORT);
  await user.waitForOptions([['us', Option.COM_PORT]]);
  await user.waitFor('[vspc: ', 3000);
  await user.barrier();
  const good = await ts.connectUser(hub.identity.tcpPort, cleanup);
  const from = ts.logs.lines.length;
  const started = performance.now();
  const N = 2000;
  // A SIGNATURE with text: the client's name, logged at info each time it is sent.
  const signature = Buffer.concat([Buffer.of(IAC, SB, Option.COM_PORT, 0), Buffer.from('flood'), Buffer.of(IAC, SE)]);
  user.sendRaw(Buffer.concat(Array.from({ length: N }, () => signature)));
  await user.barrier(30_000);
  // The other client of the same console still gets its output.
  const mark = good.mark();
  vm.send('others unaffected');
  await good.waitFor('others unaffected', 5000, mark);
  await user.close();
  await ts.logs.waitFor((l) => l.peer === user.peerName && l.message === 'client connection closed', 5000, from);
  const elapsed = performance.now() - started;

  const { written, suppressed, summaries } = linesAndSuppressed(ts, user.peerName, 'client signature (RFC 2217)', from);
  assert.ok(written >= 1 && written <= allowedLines(elapsed), `${written} lines written in ${Math.round(elapsed)} ms`);
  assert.equal(written + suppressed, N, 'every line is either written or counted in a summary');
  assert.ok(summaries.length >= 1 && summaries.every((s) => s.side === 'client'));
  assert.equal(user.closed, true);
  assert.equal(good.closed, false);
});
