/** The stock-telnet model against a scripted server: exact answers, escaping, bounded waits. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TelnetUser, BARRIER_OPTION } from '../support/sim/index.js';
import { IAC, WILL, WONT, DO, DONT, NOP, Option, AYT } from '../../src/protocol/telnet/constants.js';
import { Cleanup, waitUntil } from '../support/server.js';

interface ScriptedServer {
  port: number;
  sockets: net.Socket[];
  received: () => Buffer;
  /**
   * A barrier: the user sends IAC NOP; once it arrived, everything the user sent
   * before it has arrived too. The NOP is then taken out of `received`.
   */
  sync: (user: TelnetUser) => Promise<void>;
}

async function scriptedServer(c: Cleanup): Promise<ScriptedServer> {
  const sockets: net.Socket[] = [];
  const chunks: Buffer[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  c.add(() => new Promise<void>((r) => {
    for (const s of sockets) s.destroy();
    server.close(() => r());
  }));
  const received = () => Buffer.concat(chunks);
  const sync = async (user: TelnetUser) => {
    const marker = Buffer.of(IAC, NOP);
    user.sendRaw(marker);
    await waitUntil(() => received().subarray(-marker.length).equals(marker), 2000, 'the IAC NOP marker');
    const all = received();
    chunks.length = 0;
    chunks.push(all.subarray(0, all.length - marker.length));
  };
  return { port: (server.address() as net.AddressInfo).port, sockets, received, sync };
}

test('TelnetUser answers like netkit telnet: agrees ECHO/SGA/BINARY, refuses everything else', async (t) => {
  const c = new Cleanup();
  t.after(() => c.run());
  const srv = await scriptedServer(c);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: srv.port });
  c.add(() => user.destroy());
  await waitUntil(() => srv.sockets.length === 1, 2000, 'accept');
  await srv.sync(user);
  assert.equal(srv.received().length, 0, 'initiates nothing');
  srv.sockets[0].write(
    Buffer.of(
      ...[IAC, WILL, Option.ECHO, IAC, WILL, Option.SGA, IAC, WILL, Option.BINARY],
      ...[IAC, DO, Option.BINARY, IAC, DO, Option.SGA, IAC, DO, Option.VMWARE_EXT, IAC, DO, Option.TTYPE, IAC, WILL, 99],
    ),
  );
  const expected = Buffer.of(
    ...[IAC, DO, Option.ECHO, IAC, DO, Option.SGA, IAC, DO, Option.BINARY],
    ...[IAC, WILL, Option.BINARY, IAC, WILL, Option.SGA, IAC, WONT, Option.VMWARE_EXT, IAC, WONT, Option.TTYPE, IAC, DONT, 99],
  );
  await waitUntil(() => srv.received().length >= expected.length, 2000, 'answers');
  assert.deepEqual([...srv.received()], [...expected]);
  assert.equal(user.isEnabled('him', Option.ECHO), true);
  assert.equal(user.isEnabled('us', Option.BINARY), true);
  assert.equal(user.isEnabled('us', Option.VMWARE_EXT), false);
  assert.equal(user.negotiationsReceived.length, 8);

  // Data: unescaped on receipt, escaped on send.
  srv.sockets[0].write(Buffer.of(0x61, IAC, IAC, 0x62, 13, 0, IAC, AYT, 0x63));
  const got = await user.waitFor('c', 2000);
  assert.deepEqual([...got], [0x61, 255, 0x62, 13, 0, 0x63]);
  assert.deepEqual(user.commands, [AYT]);
  const before = srv.received().length;
  user.send(Buffer.of(1, 255, 2));
  await waitUntil(() => srv.received().length >= before + 4, 2000, 'escaped input');
  assert.deepEqual([...srv.received().subarray(before)], [1, 255, 255, 2]);

  // Bounded waits with offsets.
  const m = user.mark();
  await assert.rejects(user.waitFor('zzz', 100, m), /timed out after 100 ms/);
  srv.sockets[0].write('later zzz');
  await user.waitFor((b) => b.toString().endsWith('zzz'), 2000, m);
  const pending = user.waitFor('never', 5000);
  srv.sockets[0].end();
  await assert.rejects(pending, /connection closed/);
  await user.whenClosed(2000);
  await Promise.all([user.close(), user.close()]);
  user.destroy();
  assert.equal(user.send('x'), false);
});

test('TelnetUser in NVT mode (no BINARY) sends CR as CR NUL', async (t) => {
  const c = new Cleanup();
  t.after(() => c.run());
  const srv = await scriptedServer(c);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: srv.port });
  c.add(() => user.destroy());
  await waitUntil(() => srv.sockets.length === 1, 2000, 'accept');
  user.send('a\rb\r\n');
  await waitUntil(() => srv.received().length >= 6, 2000, 'input');
  assert.deepEqual([...srv.received()], [0x61, 13, 0, 0x62, 13, 10]);
});

test('TelnetUser.barrier(): DO <unassigned option> answered by WONT, after what the server wrote first; not recorded', async (t) => {
  const c = new Cleanup();
  t.after(() => c.run());
  const srv = await scriptedServer(c);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: srv.port });
  c.add(() => user.destroy());
  await waitUntil(() => srv.sockets.length === 1, 2000, 'accept');
  // A server like vspc: data it wrote before reading the DO, then the refusal.
  srv.sockets[0].on('data', (d: Buffer) => {
    const ask = Buffer.of(IAC, DO, BARRIER_OPTION);
    for (let i = d.indexOf(ask); i >= 0; i = d.indexOf(ask, i + 1)) srv.sockets[0].write(Buffer.concat([Buffer.from('output;'), Buffer.of(IAC, WONT, BARRIER_OPTION)]));
  });
  // Bounds for a loaded 2-core machine (a CI run under load took over 2 s): a bound, not a measurement.
  await Promise.all([user.barrier(10_000), user.barrier(10_000)]);
  assert.equal(user.text, 'output;output;', 'what the server wrote before each answer had arrived');
  assert.deepEqual(user.negotiationsReceived, [], 'barrier answers are not recorded');
  // A WONT for that option that answers no barrier is the server's own: recorded.
  srv.sockets[0].write(Buffer.of(IAC, WONT, BARRIER_OPTION, 0x21));
  await user.waitFor('!', 2000);
  assert.deepEqual(user.negotiationsReceived, [{ verb: WONT, option: BARRIER_OPTION }]);
});

test('TelnetUser.barrier(): rejects on close, on a closed connection, and after its timeout when unanswered', async (t) => {
  const c = new Cleanup();
  t.after(() => c.run());
  const srv = await scriptedServer(c);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: srv.port });
  c.add(() => user.destroy());
  await waitUntil(() => srv.sockets.length === 1, 2000, 'accept');
  await assert.rejects(user.barrier(100), /barrier not answered after 100 ms/);
  const pending = user.barrier(5000);
  srv.sockets[0].destroy();
  await assert.rejects(pending, /closed before the barrier was answered/);
  // The message says the close rejected it, not the wait's own timeout: no clock needed.
  await assert.rejects(user.barrier(), /closed connection/);
});

test('TelnetUser.waitForOptions: resolves on the negotiation, fails fast on close', async (t) => {
  const c = new Cleanup();
  t.after(() => c.run());
  const srv = await scriptedServer(c);
  const user = await TelnetUser.connect({ host: '127.0.0.1', port: srv.port });
  c.add(() => user.destroy());
  await waitUntil(() => srv.sockets.length === 1, 2000, 'accept');
  const agreed = user.waitForOptions([['him', Option.ECHO], ['us', Option.BINARY]], 2000);
  srv.sockets[0].write(Buffer.of(IAC, WILL, Option.ECHO));
  srv.sockets[0].write(Buffer.of(IAC, DO, Option.BINARY));
  await agreed;
  await assert.rejects(user.waitForOptions([['him', Option.SGA]], 100), /not enabled after 100 ms/);
  const never = user.waitForOptions([['him', Option.SGA]], 5000);
  srv.sockets[0].destroy();
  await assert.rejects(never, /closed during option negotiation/);
});
