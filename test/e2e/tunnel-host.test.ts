/**
 * Serial tunnels through a running vspc, without QEMU (issue 16, the host side): the
 * static C agent on a pty, a SerialRelay standing in for QEMU's serial socket, vspc
 * with a `tunnels:` entry. Forwards (auto TCP, unix), the console refused to people,
 * `vspc-admin tunnel` as a stdio bridge, list/show/metrics, the guest refusing a port,
 * agent and vspc restarts, a reader that stops reading, an ESXi console as the carrier.
 * The real guest (ssh, scp, tmux) is in tunnel-qemu.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { TunnelSettings } from '../../src/config/config.js';
import type { TunnelView, VmDetailView } from '../../src/admin/views.js';
import { AgentProcess, PtyLine, Service, bounded, buildCAgent, liveChildren, randomBytesSeeded, sha256 } from '../agent/harness.js';
import { SerialRelay } from '../support/tunnel.js';
import { VSPC_ADMIN_JS, vspcAdmin } from '../support/cli.js';
import { Cleanup, esxiUuid, startServer, tempDir, waitUntil, type TestServer } from '../support/server.js';
import { reservePort, reservePortRange } from '../support/ports.js';

const T = { timeout: 120_000 };

/** The line, the agent on it, an echo service it may reach, and a sink/source service. */
interface Guest {
  relay: SerialRelay;
  agent: AgentProcess;
  echo: Service;
  dir: string;
  tty: string;
  restartAgent(): Promise<void>;
}

async function startGuest(t: { after(fn: () => unknown): void }, cleanup: Cleanup, extraAllow: number[] = [], agentArgs: string[] = []): Promise<Guest> {
  buildCAgent();
  const d = tempDir('vspc-tunnel-');
  const tty = join(d.dir, 'ttyS1');
  const relay = await SerialRelay.start(join(d.dir, 'serial1.sock'), tty);
  const echo = await Service.echo();
  const args = () => ['--device', tty, '--allow', String(echo.port), ...extraAllow.flatMap((p) => ['--allow', String(p)]), ...agentArgs, '-v'];
  const g: Guest = {
    relay,
    echo,
    dir: d.dir,
    tty,
    agent: AgentProcess.start('c', args()),
    restartAgent: async () => {
      await g.agent.kill();
      g.agent = AgentProcess.start('c', args());
      await g.agent.waitForLog(/line \S+ open \(/);
    },
  };
  await g.agent.waitForLog(/line \S+ open \(/);
  t.after(async () => {
    await cleanup.run();
    await Promise.allSettled([g.agent.stop(), relay.close(), echo.close()]);
    d.remove();
  });
  return g;
}

function tunnelConfig(name: string, g: Guest, extra: Partial<TunnelSettings> = {}): TunnelSettings {
  const src = `unix:${g.relay.path}`;
  return {
    name,
    source: parseSourceSpec(src),
    sourceText: src,
    forwards: [
      { listen: { type: 'auto' }, to: g.echo.port },
      { listen: { type: 'unix', path: join(g.dir, 'echo.sock'), mode: 0o600 }, to: g.echo.port },
    ],
    ...extra,
  };
}

async function tunnelView(ts: TestServer, name: string): Promise<TunnelView> {
  const all = await ts.api<TunnelView[]>('/api/v1/tunnels');
  const v = all.find((x) => x.name === name);
  if (!v) throw new Error(`tunnel ${name} not listed: ${JSON.stringify(all)}`);
  return v;
}

async function waitLinkUp(ts: TestServer, name: string, timeoutMs = 20_000): Promise<TunnelView> {
  let v: TunnelView | undefined;
  await waitUntil(async () => {
    v = await tunnelView(ts, name);
    return v.link?.state === 'up' && v.forwards.every((f) => f.address !== null);
  }, timeoutMs, `tunnel ${name} up`);
  return v!;
}

function portOf(v: TunnelView, i = 0): number {
  return Number(v.forwards[i].address!.split(':').pop());
}

/** Connects, sends `data`, half-closes, collects everything until the far end ends. */
async function roundTrip(connect: () => net.Socket, data: Buffer, timeoutMs = 60_000): Promise<{ digest: string; length: number }> {
  const s = connect();
  const hash = createHash('sha256');
  let length = 0;
  s.on('data', (b: Buffer) => {
    hash.update(b);
    length += b.length;
  });
  const done = new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.once('end', () => resolve());
  });
  s.end(data);
  await bounded(done, timeoutMs, `round trip of ${data.length} bytes (got ${length})`);
  s.destroy();
  return { digest: hash.digest('hex'), length };
}

/** Resolves with the error a socket ends with (or null when it ends cleanly). */
function outcome(s: net.Socket, timeoutMs = 40_000): Promise<NodeJS.ErrnoException | null> {
  return bounded(
    new Promise((resolve) => {
      let err: NodeJS.ErrnoException | null = null;
      s.on('error', (e) => (err = e));
      s.on('data', () => {});
      s.on('close', () => resolve(err));
    }),
    timeoutMs,
    'the connection ends',
  );
}

describe('serial tunnels through vspc (C agent on a pty)', { timeout: 300_000 }, () => {
  test('forwards (auto, unix), people refused, vspc-admin tunnel, list/show/metrics, a refused port', T, async (t) => {
    const g = await startGuest(t, new Cleanup());
    const closedPort = await reservePort();
    const { ts, cleanup } = await startServer(t, {
      config: {
        tunnels: [
          {
            ...tunnelConfig('web01', g),
            forwards: [...tunnelConfig('web01', g).forwards, { listen: { type: 'auto' }, to: closedPort }],
          },
        ],
      },
    });
    const v = await waitLinkUp(ts, 'web01');
    assert.equal(v.console, 'web01');
    assert.equal(v.carrier, `source: unix:${g.relay.path}`);

    // 1 MiB through the auto forward, and through the unix forward.
    const data = randomBytesSeeded(1 << 20, 1);
    const viaTcp = await roundTrip(() => net.connect({ host: '127.0.0.1', port: portOf(v) }), data);
    assert.deepEqual(viaTcp, { digest: sha256(data), length: data.length });
    const small = randomBytesSeeded(100_000, 2);
    const viaUnix = await roundTrip(() => net.connect(join(g.dir, 'echo.sock')), small);
    assert.equal(viaUnix.digest, sha256(small));
    assert.equal(g.echo.accepted, 2, 'the guest port is dialled once per client connection');

    // The console takes no people: telnet is refused and told why.
    const consolePort = v.consolePort!;
    const telnet = net.connect({ host: '127.0.0.1', port: consolePort });
    let said = '';
    telnet.on('data', (b: Buffer) => (said += b.toString('latin1')));
    await outcome(telnet);
    assert.match(said, /carries the serial tunnel "web01"/);
    assert.match(said, /vspc-admin tunnel web01 PORT/);

    // vspc-admin tunnel: stdin → guest → stdout.
    const bridged = await new Promise<{ code: number | null; out: Buffer; err: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [VSPC_ADMIN_JS, '--admin', ts.adminAddress, 'tunnel', 'web01', String(g.echo.port)], { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let err = '';
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out: Buffer.concat(out), err });
      });
      child.stdin.end(small);
    });
    assert.equal(bridged.code, 0, bridged.err);
    assert.equal(sha256(bridged.out), sha256(small), 'vspc-admin tunnel is byte-exact both ways');

    // A port the agent does not allow: the forward's connection is reset; vspc-admin says why.
    const refusedConn = net.connect({ host: '127.0.0.1', port: portOf(v, 2) });
    const refusedErr = await outcome(refusedConn);
    assert.equal(refusedErr?.code, 'ECONNRESET');
    const denied = await vspcAdmin(ts.adminAddress, ['tunnel', 'web01', String(closedPort)], 60_000);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /NOT_ALLOWED/);
    const unknown = await vspcAdmin(ts.adminAddress, ['tunnel', 'nope', '22']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no tunnel named "nope"/);

    // list, show, metrics.
    const list = await vspcAdmin(ts.adminAddress, ['list']);
    assert.match(list.stdout, /TUNNEL\s+CONSOLE\s+LINK\s+RTT\s+RETRANS\s+STREAMS\s+FORWARDS/);
    assert.match(list.stdout, new RegExp(`web01\\s+web01\\s+up\\s+\\d+ ms\\s+\\d+\\s+0\\s+127\\.0\\.0\\.1:${portOf(v)}→${g.echo.port}`));
    const show = await vspcAdmin(ts.adminAddress, ['show', 'web01']);
    assert.match(show.stdout, /tunnel:\s+web01 \(source: unix:/);
    assert.match(show.stdout, /link:\s+up since/);
    assert.match(show.stdout, /streams:\s+0 open, 5 opened, 2 refused/);
    const detail = await ts.api<VmDetailView>('/api/v1/show?vm=web01');
    assert.equal(detail.tunnel?.name, 'web01');
    assert.equal(detail.clientList.length, 1, 'the tunnel is the one client');
    assert.equal(detail.clientList[0].mode, 'exclusive');
    const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`)).text();
    assert.match(metrics, /^vspc_tunnel_link_up\{tunnel="web01"\} 1$/m);
    assert.match(metrics, /^vspc_tunnel_streams_opened_total\{tunnel="web01"\} 5$/m);
    assert.match(metrics, new RegExp(`^vspc_tunnel_bytes_total\\{tunnel="web01",direction="to_guest"\\} ${(1 << 20) + 2 * 100_000}$`, 'm'));
    assert.match(metrics, /^vspc_tunnel_rtt_seconds\{tunnel="web01"\} [0-9.]+$/m);
    // Nothing of the tunnel's bytes in the scrollback.
    assert.equal(detail.scrollbackBytes, 0);
    void cleanup;
  });

  test('the admin API stream: token required, Upgrade required, the bridge with the token', T, async (t) => {
    const g = await startGuest(t, new Cleanup());
    const token = 'tunnel-token-0123456789abcdef';
    const { ts } = await startServer(t, { config: { adminToken: token, tunnels: [tunnelConfig('tk', g)] } });
    await waitUntil(async () => {
      const res = await fetch(`http://${ts.adminAddress}/api/v1/tunnels`, { headers: { authorization: `Bearer ${token}` } });
      const v = (await res.json()) as TunnelView[];
      return v[0]?.link?.state === 'up';
    }, 20_000, 'tunnel tk up');
    const noToken = await vspcAdmin(ts.adminAddress, ['tunnel', 'tk', String(g.echo.port)]);
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /requires a token/);
    // A plain GET (no Upgrade) is told what it needs.
    const plain = await fetch(`http://${ts.adminAddress}/api/v1/tunnel?tunnel=tk&port=${g.echo.port}`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(plain.status, 426);
    assert.equal(((await plain.json()) as { error: { code: string } }).error.code, 'VSPC_TUNNEL_UPGRADE_REQUIRED');
    // Another Upgrade protocol (a WebSocket) is refused.
    const ws = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: ts.adminPort });
      let text = '';
      s.on('data', (b: Buffer) => (text += b.toString()));
      s.on('error', reject);
      s.on('close', () => resolve(text));
      s.write(`GET /api/v1/tunnel?tunnel=tk&port=${g.echo.port} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer ${token}\r\n\r\n`);
    });
    assert.match(ws, /^HTTP\/1\.1 426 /);
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [VSPC_ADMIN_JS, '--admin', ts.adminAddress, 'tunnel', 'tk', String(g.echo.port)], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, VSPC_ADMIN_TOKEN: token },
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out, err });
      });
      child.stdin.end('with a token\n');
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'with a token\n');
  });

  test('agent killed mid-transfer: the stream ends with an error, a new one works; vspc restarted: the agent resynchronises, same port', T, async (t) => {
    const g = await startGuest(t, new Cleanup());
    const db = tempDir('vspc-tunnel-db-');
    t.after(() => db.remove());
    const portRange = await reservePortRange(8);
    const config = { tunnels: [tunnelConfig('t2', g)] };
    const first = await startServer(t, { dbPath: join(db.dir, 'vspc.db'), portRange, config });
    const v = await waitLinkUp(first.ts, 't2');

    // A transfer in progress when the agent dies.
    const s = net.connect({ host: '127.0.0.1', port: portOf(v) });
    const ended = outcome(s, 60_000);
    const big = randomBytesSeeded(8 << 20, 3);
    s.write(big);
    let got = 0;
    s.on('data', (b: Buffer) => (got += b.length));
    await waitUntil(() => got > 64 * 1024, 30_000, 'the transfer runs');
    await g.restartAgent();
    const err = await ended;
    assert.ok(err !== null, 'the stream ended with an error (RST), not a clean end');
    const again = randomBytesSeeded(50_000, 4);
    await waitLinkUp(first.ts, 't2');
    assert.equal((await roundTrip(() => net.connect({ host: '127.0.0.1', port: portOf(v) }), again)).digest, sha256(again), 'a new stream works');
    assert.ok((await tunnelView(first.ts, 't2')).link!.peerRestarts >= 1);

    // vspc restarts on the same database: the agent sees a new host boot id and follows.
    const agentLogBefore = g.agent.output.length;
    await first.ts.dispose();
    const second = await startServer(t, { dbPath: join(db.dir, 'vspc.db'), portRange, config });
    const v2 = await waitLinkUp(second.ts, 't2', 30_000);
    assert.equal(portOf(v2), portOf(v), 'the auto forward keeps its port across restarts');
    await g.agent.waitForLog(/link up: new session/, 10_000, agentLogBefore);
    assert.equal((await roundTrip(() => net.connect({ host: '127.0.0.1', port: portOf(v2) }), again)).digest, sha256(again));
  });

  // With 16 KiB frames too (attack-s21): the agent told to send them on its pty, as it
  // does by itself on virtio-serial; vspc accepts them on every line.
  for (const large of [false, true]) {
  test(`a reader that stops reading stops the guest (bounded memory), then gets everything${large ? ' (16 KiB frames)' : ''}`, T, async (t) => {
    const total = 16 << 20;
    const payload = randomBytesSeeded(total, 5);
    // A guest service that sends 16 MiB at once.
    const source = await Service.start((sock) => sock.end(payload));
    t.after(() => source.close());
    const g = await startGuest(t, new Cleanup(), [source.port], large ? ['--max-payload', '16384'] : []);
    if (large) await g.agent.waitForLog(/frames up to 16384 bytes/);
    const { ts } = await startServer(t, {
      config: { tunnels: [{ ...tunnelConfig(large ? 't3l' : 't3', g), forwards: [{ listen: { type: 'auto' }, to: source.port }] }] },
    });
    const name = large ? 't3l' : 't3';
    const v = await waitLinkUp(ts, name);
    const s = net.connect({ host: '127.0.0.1', port: portOf(v) });
    s.pause();
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    // Give the guest time to fill whatever lets it: the stream's credit, our buffers.
    await waitUntil(async () => ((await tunnelView(ts, name)).link?.bytesFromGuest ?? 0) > 0, 20_000, 'data flows');
    let last = -1;
    let now = 0;
    await waitUntil(async () => {
      const prev = last;
      last = (await tunnelView(ts, name)).link!.bytesFromGuest;
      now++;
      return now > 20 && last === prev;
    }, 30_000, 'the guest stopped sending');
    // Socket buffers (loopback TCP grows them to a few MiB while the kernel takes the
    // bytes, which vspc counts as consumed) + one stream window, which autotuning may
    // have grown to its 1 MiB maximum while the kernel was still taking them.
    assert.ok(last < 5 << 20, `the guest was stopped after ${last} bytes (socket buffers + one stream window), not ${total}`);
    const hash = createHash('sha256');
    let n = 0;
    s.on('data', (b: Buffer) => {
      hash.update(b);
      n += b.length;
    });
    s.resume();
    await bounded(new Promise<void>((resolve) => s.once('end', () => resolve())), 90_000, `all ${total} bytes (got ${n})`);
    assert.equal(n, total);
    assert.equal(hash.digest('hex'), sha256(payload));
    if (large) {
      // Large frames were what carried it: fewer than one frame per 2 KiB received.
      const l = (await tunnelView(ts, name)).link!;
      assert.ok(l.framesReceived < total / 2048, `${l.framesReceived} frames for ${total} bytes`);
    }
    s.destroy();
  });
  }

  test('an ESXi VM\'s second serial port (?port=tunnel) as the carrier', T, async (t) => {
    buildCAgent();
    const d = tempDir('vspc-tunnel-esxi-');
    t.after(() => d.remove());
    const tty = join(d.dir, 'ttyS1');
    const line = await PtyLine.start(tty);
    t.after(() => line.stop());
    const echo = await Service.echo();
    t.after(() => echo.close());
    const agent = AgentProcess.start('c', ['--device', tty, '--allow', String(echo.port)]);
    t.after(() => agent.stop());
    await agent.waitForLog(/line \S+ open \(/);
    const { ts, cleanup } = await startServer(t, {
      config: { tunnels: [{ name: 'vm7', console: 'vm7:tunnel', forwards: [{ listen: { type: 'auto' }, to: echo.port }] }] },
    });
    const uuid = esxiUuid();
    // The simulated ESXi host's serial port is the agent's pty.
    const { vm } = await ts.connectVm({ uuid: uuid.text, name: 'vm7', serviceUri: 'vSPC.py?port=tunnel' }, cleanup);
    vm.on('data', (b) => line.write(b));
    line.setHandlers(
      (b) => void vm.send(b),
      () => {},
    );
    const v = await waitLinkUp(ts, 'vm7');
    assert.equal(v.console, 'vm7:tunnel');
    const data = randomBytesSeeded(200_000, 6);
    assert.equal((await roundTrip(() => net.connect({ host: '127.0.0.1', port: portOf(v) }), data)).digest, sha256(data));
  });
});

test('every agent and socat stopped', () => {
  assert.deepEqual(liveChildren(), []);
});
