/**
 * The ESXi simulator itself, against a fake concentrator built from our sans-I/O
 * VspcServerProtocol: opening orders, segmentation, identity, COM-PORT, unknown
 * codes, and the protocol-level vMotion helpers.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedVm, HOST_KNOWN_SUBOPTIONS, BARRIER_SUBCOMMAND, type SimulatedVmOptions } from '../support/sim/index.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { IAC, SB, SE, WILL, WONT, DO, Option } from '../../src/protocol/telnet/constants.js';
import { FakeProxy, type FakeConn } from '../support/fake-proxy.js';
import { Cleanup, waitUntil } from '../support/server.js';

const UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01';
const UUID_HEX = '421a5b7709c38e219f00aa105c2e7d01';

function wire(conn: FakeConn): Buffer {
  return Buffer.concat(conn.chunks);
}

function ext(code: number, payload: number[] | Buffer = []): Buffer {
  return Buffer.of(IAC, SB, Option.VMWARE_EXT, code, ...payload, IAC, SE);
}

describe('SimulatedVm', () => {
  const c = new Cleanup();
  after(() => c.run());

  async function setup(proxyOpts: Parameters<typeof FakeProxy.start>[0] = {}) {
    const proxy = await FakeProxy.start(proxyOpts);
    c.add(() => proxy.close());
    const connect = async (o: Partial<SimulatedVmOptions> = {}) => {
      const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: proxy.port, uuid: UUID_TEXT, name: 'sim-vm', ...o });
      c.add(() => vm.destroy());
      return vm;
    };
    return { proxy, connect };
  }

  test('host-first: the whole opening is sent before anything is read; WILL AUTHENTICATION comes first', async () => {
    const { proxy, connect } = await setup({ start: false });
    const vm = await connect({ order: 'host-first', unsolicitedIdentity: true });
    await proxy.waitFor(() => proxy.conns.length === 1 && !!proxy.event(proxy.conns[0], 'proxy'), 3000, 'DO-PROXY');
    const conn = proxy.conns[0];
    const bytes = wire(conn);
    assert.deepEqual([...bytes.subarray(0, 3)], [IAC, WILL, Option.AUTHENTICATION]);
    const willExt = bytes.indexOf(Buffer.of(IAC, WILL, Option.VMWARE_EXT));
    const known = bytes.indexOf(ext(Ext.KNOWN_SUBOPTIONS_1, [...HOST_KNOWN_SUBOPTIONS]));
    const uuid = bytes.indexOf(ext(Ext.VM_VC_UUID, Buffer.from(UUID_TEXT)));
    const doProxy = bytes.indexOf(ext(Ext.DO_PROXY, Buffer.from('SvSPC.py')));
    assert.ok(willExt > 0 && known > willExt && uuid > known && doProxy > uuid, `order: ${willExt} ${known} ${uuid} ${doProxy}`);
    assert.equal(proxy.event(conn, 'uuid')?.value, UUID_HEX);
    assert.equal(proxy.event(conn, 'name')?.value, 'sim-vm');
    assert.deepEqual(proxy.event(conn, 'proxy')?.value, { direction: 'S', uri: 'vSPC.py', service: 'vSPC.py', label: '', accepted: true });
    await vm.whenProxied(2000);
    assert.deepEqual(vm.refusedByProxy, [{ side: 'us', option: Option.AUTHENTICATION }]);
  });

  test('proxy-first: nothing is sent until the proxy spoke; its offers are answered first', async () => {
    const { proxy, connect } = await setup({ start: false });
    const pending = connect({ order: 'proxy-first', proxyFirstWaitMs: 5000 });
    await proxy.waitFor(() => proxy.conns.length === 1, 3000, 'accept');
    const conn = proxy.conns[0];
    assert.equal(wire(conn).length, 0, 'the host waited for the proxy');
    // The proxy's first bytes are the barrier: anything the host sent before reading
    // them would come before its answers on the wire, and the wire must start with them.
    conn.protocol.start();
    const vm = await pending;
    await vm.whenProxied(3000);
    const bytes = wire(conn);
    // The proxy offered WILL BINARY, WILL SGA, WILL ECHO, DO BINARY, DO SGA, DO 232: answered in that order.
    assert.deepEqual(
      [...bytes.subarray(0, 18)],
      [IAC, DO, 0, IAC, DO, 3, IAC, DO, 1, IAC, WILL, 0, IAC, WILL, 3, IAC, WILL, 232],
    );
    const auth = bytes.indexOf(Buffer.of(IAC, WILL, Option.AUTHENTICATION));
    const known = bytes.indexOf(ext(Ext.KNOWN_SUBOPTIONS_1, [...HOST_KNOWN_SUBOPTIONS]));
    assert.ok(auth >= 18 && known > auth, `own offers after the answers, subcommands last (${auth}, ${known})`);
    await proxy.waitFor(() => !!proxy.event(conn, 'uuid'), 3000, 'UUID');
    assert.equal(proxy.event(conn, 'uuid')?.value, UUID_HEX, 'identified on request');
  });

  test('shuffled: seeded and deterministic, WILL 232 still precedes the first option-232 subcommand', async () => {
    const { proxy, connect } = await setup({ start: false });
    const openings: Buffer[] = [];
    for (const seed of [1, 2, 3, 1]) {
      const vm = await connect({ order: 'shuffled', seed, unsolicitedIdentity: true, comPort: true });
      const conn = await (async () => {
        await proxy.waitFor(() => proxy.conns.length === openings.length + 1 && proxy.conns.at(-1)!.chunks.length > 0, 3000, 'opening');
        return proxy.conns.at(-1)!;
      })();
      await vm.whenProxied(3000);
      const first = conn.chunks[0];
      const willExt = first.indexOf(Buffer.of(IAC, WILL, Option.VMWARE_EXT));
      const firstSb = first.indexOf(Buffer.of(IAC, SB, Option.VMWARE_EXT));
      assert.ok(willExt >= 0 && firstSb > willExt, `seed ${seed}: WILL 232 at ${willExt}, first SB at ${firstSb}`);
      openings.push(first);
      await vm.close();
    }
    assert.ok(openings[0].equals(openings[3]), 'same seed, same opening');
    assert.ok(!openings[0].equals(openings[1]) || !openings[0].equals(openings[2]), 'different seeds shuffle differently');
    for (const o of openings) assert.equal(o.length, openings[0].length);
  });

  test('bytewise segmentation sends the same opening one byte per write; random in small pieces', async () => {
    const { proxy, connect } = await setup({ start: false });
    await connect({ segmentation: 'whole' });
    await proxy.waitFor(() => proxy.conns.length === 1 && !!proxy.event(proxy.conns[0], 'proxy'), 3000, 'whole');
    const whole = proxy.conns[0].chunks[0];
    assert.ok(whole.length > 40);
    const wholeOpening = whole;

    for (const segmentation of ['bytewise', 'random'] as const) {
      const i = proxy.conns.length;
      const vm = await connect({ segmentation, seed: 9 });
      await proxy.waitFor(() => proxy.conns.length > i, 3000, 'accept');
      const conn = proxy.conns[i];
      await proxy.waitFor(() => !!proxy.event(conn, 'proxy'), 3000, `${segmentation} DO-PROXY`);
      await vm.whenProxied(3000);
      const bytes = wire(conn);
      assert.ok(bytes.subarray(0, wholeOpening.length).equals(wholeOpening), `${segmentation}: same bytes as whole`);
      const piecesOfOpening = conn.chunks.reduce(
        (acc, ch) => (acc.len < wholeOpening.length ? { len: acc.len + ch.length, n: acc.n + 1, max: Math.max(acc.max, ch.length) } : acc),
        { len: 0, n: 0, max: 0 },
      );
      // Reads may occasionally merge two pieces; most arrive alone.
      const minReads = segmentation === 'bytewise' ? Math.floor(wholeOpening.length * 0.7) : Math.floor(wholeOpening.length / 16);
      assert.ok(piecesOfOpening.n >= minReads, `${segmentation}: arrived in ${piecesOfOpening.n} reads (want >= ${minReads})`);
      // After the handshake, serial data is written whole.
      const before = conn.chunks.length;
      const payload = Buffer.alloc(300, 0x41);
      vm.send(payload);
      await proxy.waitFor(() => Buffer.concat(conn.data).length >= 300, 3000, 'data');
      assert.ok(conn.chunks.length - before <= 3, 'data not split byte by byte');
    }
  });

  test('COM-PORT: reports the UART once agreed and records the acknowledgements', async () => {
    const { proxy, connect } = await setup();
    const vm = await connect({ comPort: true, uart: { baudRate: 38400, dataSize: 8, parity: 2, stopSize: 1 } });
    await vm.whenProxied();
    await waitUntil(() => vm.uartAcks.length === 4, 3000, 'acks');
    assert.deepEqual(
      vm.uartAcks.map((a) => [a.code, [...a.value]]),
      [
        [101, [0, 0, 0x96, 0]],
        [102, [8]],
        [103, [2]],
        [104, [1]],
      ],
    );
    const last = proxy.conns[0].events.filter((e) => e.type === 'comPort').at(-1);
    assert.deepEqual(last?.value, { baudRate: 38400, dataSize: 8, parity: 'odd', stopBits: '1' });
  });

  test('answers unknown option-232 codes with UNKNOWN-SUBOPTION-RCVD-1 and records UNKNOWN-SUBOPTION-RCVD-2', async () => {
    const { proxy, connect } = await setup();
    const vm = await connect();
    await vm.whenProxied();
    const conn = proxy.conns[0];
    conn.protocol.telnet.sendSubnegotiation(Option.VMWARE_EXT, Buffer.of(99, 1, 2));
    await proxy.waitFor(() => !!proxy.event(conn, 'unknownSuboption'), 3000, 'RCVD-1');
    assert.equal(proxy.event(conn, 'unknownSuboption')?.value, 99);
    assert.deepEqual(vm.unknownFromProxy, [99]);
    const reply = vm.waitForExt((code) => code === Ext.UNKNOWN_SUBOPTION_RCVD_2);
    vm.sendExt(77);
    assert.deepEqual([...(await reply).payload], [77]);
    assert.deepEqual(vm.unknownReportedByProxy, [77]);
  });

  test('serial data is escaped both ways; waits are bounded and fail fast on close', async () => {
    const { proxy, connect } = await setup();
    const vm = await connect();
    await vm.whenProxied();
    const conn = proxy.conns[0];
    const out = Buffer.from([0, 13, 0, 255, 13, 10, 255, 255, 7]);
    assert.equal(vm.send(out), true);
    await proxy.waitFor(() => Buffer.concat(conn.data).length >= out.length, 3000, 'data');
    assert.ok(Buffer.concat(conn.data).equals(out));
    conn.protocol.sendData(Buffer.from([255, 1, 13, 0]));
    assert.deepEqual([...(await vm.waitForInput(4, 2000))], [255, 1, 13, 0]);
    await assert.rejects(vm.waitForInput('never', 100), /timed out after 100 ms/);
    const waiting = vm.waitForInput('never either', 5000);
    conn.socket.destroy();
    await assert.rejects(waiting, /connection closed/);
    // The message says the close rejected it, not the wait's own timeout: no clock needed.
    await vm.whenClosed(1000);
  });

  test('barrier(): answered by UNKNOWN-SUBOPTION-RCVD-2, after everything sent before it and everything the proxy wrote first', async () => {
    const { proxy, connect } = await setup();
    const vm = await connect();
    await vm.whenProxied();
    const conn = proxy.conns[0];
    const exts: number[] = [];
    vm.on('ext', (code) => exts.push(code));
    const out = Buffer.alloc(64 * 1024, 0x61);
    vm.send(out);
    conn.protocol.sendData(Buffer.from('typed'));
    // Two at once: answered in order.
    await Promise.all([vm.barrier(2000), vm.barrier(2000)]);
    assert.equal(Buffer.concat(conn.data).length, out.length, 'the proxy had all the data sent before the barrier');
    assert.equal(vm.input.toString(), 'typed', 'the VM had what the proxy wrote before answering');
    assert.deepEqual(conn.events.filter((e) => e.type === 'unknownSuboption').map((e) => e.value), [BARRIER_SUBCOMMAND, BARRIER_SUBCOMMAND]);
    assert.deepEqual(vm.unknownReportedByProxy, [], 'barrier answers are not recorded');
    assert.deepEqual(exts, [], 'nor emitted');
    // A genuine UNKNOWN-SUBOPTION-RCVD-2 for another code is still recorded.
    const reply = vm.waitForExt((code) => code === Ext.UNKNOWN_SUBOPTION_RCVD_2);
    vm.sendExt(77);
    await reply;
    assert.deepEqual(vm.unknownReportedByProxy, [77]);
  });

  test('barrier(): rejects on close, on a closed connection, and after its timeout when unanswered', async () => {
    const { proxy, connect } = await setup();
    const vm = await connect();
    await vm.whenProxied();
    const pending = vm.barrier(5000);
    proxy.conns[0].socket.destroy();
    await assert.rejects(pending, /closed before the barrier was answered/);
    // The message says the close rejected it, not the wait's own timeout: no clock needed.
    await assert.rejects(vm.barrier(), /closed connection/);

    // A peer that never answers: the barrier fails with its timeout named.
    const mute = await FakeProxy.start({ start: false });
    c.add(() => mute.close());
    const lonely = await SimulatedVm.connect({ host: '127.0.0.1', port: mute.port, uuid: UUID_TEXT, name: 'x', identify: false, order: 'host-first' });
    c.add(() => lonely.destroy());
    await mute.waitFor(() => mute.conns.length === 1, 3000, 'accept');
    mute.conns[0].protocol.receive = () => undefined; // deaf
    await assert.rejects(lonely.barrier(100), /barrier not answered after 100 ms/);
  });

  test('close() and destroy() are idempotent; whenProxied rejects when the proxy closes first', async () => {
    const { proxy, connect } = await setup({ start: false });
    const vm = await connect({ order: 'host-first', identify: false });
    await proxy.waitFor(() => proxy.conns.length === 1, 3000, 'accept');
    const proxied = vm.whenProxied(3000);
    proxy.conns[0].socket.destroy();
    await assert.rejects(proxied, /closed before the proxy answered/);
    await Promise.all([vm.close(), vm.close()]);
    vm.destroy();
    vm.destroy();
    assert.equal(vm.closed, true);
    assert.equal(vm.send(Buffer.from('x')), false);
  });
});

describe('SimulatedVm vMotion helpers (protocol level)', () => {
  const c = new Cleanup();
  after(() => c.run());
  const secret = Buffer.from([0xde, 0xad, 255, 0xef, 1, 2, 3, 4]);

  test('BEGIN → GOAHEAD (secret = payload minus seq), NOTNOW; PEER → PEER-OK or nothing; COMPLETE; ABORT', async () => {
    const pending = new Map<string, Buffer>();
    let refuse = false;
    const proxy = await FakeProxy.start({
      handlers: (conn) => ({
        vmotionBegin: (seq) => {
          if (refuse) {
            conn.protocol.sendNotNow(seq);
            return;
          }
          pending.set(Buffer.concat([seq, secret]).toString('hex'), Buffer.from(seq));
          conn.protocol.sendGoahead(seq, secret);
        },
        vmotionPeer: (ss) => {
          const seq = pending.get(ss.toString('hex'));
          if (seq) conn.protocol.sendPeerOk(seq);
        },
      }),
    });
    c.add(() => proxy.close());
    const source = await SimulatedVm.connect({ host: '127.0.0.1', port: proxy.port, uuid: UUID_TEXT, name: 'src' });
    c.add(() => source.destroy());
    await source.whenProxied();
    const seq = Buffer.from([1, 255, 2, 0]);
    const r = await source.vmotionBegin(seq, 2000);
    assert.equal(r.kind, 'goahead');
    assert.ok(r.kind === 'goahead' && r.secret.equals(secret));

    const dest = await SimulatedVm.connect({ host: '127.0.0.1', port: proxy.port, uuid: UUID_TEXT, name: 'src', skipDoProxy: true });
    c.add(() => dest.destroy());
    const destConn = proxy.conns[1];
    await proxy.waitFor(() => !!proxy.event(destConn, 'extensionEnabled'), 3000, 'dest 232');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, Buffer.from('wrong!!!')]), 300), false, 'wrong secret: no PEER-OK');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, secret]), 2000), true);
    assert.equal(proxy.event(destConn, 'proxy'), undefined, 'the destination sent no DO-PROXY');
    dest.vmotionComplete(seq);
    await proxy.waitFor(() => !!proxy.event(destConn, 'vmotionComplete'), 3000, 'COMPLETE');
    assert.ok((proxy.event(destConn, 'vmotionComplete')!.value as Buffer).equals(seq));
    const peers = destConn.events.filter((e) => e.type === 'vmotionPeer').map((e) => (e.value as Buffer).toString('hex'));
    assert.deepEqual(peers, [Buffer.concat([seq, Buffer.from('wrong!!!')]).toString('hex'), Buffer.concat([seq, secret]).toString('hex')]);

    refuse = true;
    const r2 = await source.vmotionBegin(Buffer.from('seq-2'), 2000);
    assert.deepEqual(r2, { kind: 'notnow' });
    source.vmotionAbort();
    await proxy.waitFor(() => !!proxy.event(proxy.conns[0], 'vmotionAbort'), 3000, 'ABORT');

    // No answer at all: vmotionBegin rejects after its timeout.
    const silent = await FakeProxy.start({ handlers: () => ({ vmotionBegin: () => undefined }) });
    c.add(() => silent.close());
    const lonely = await SimulatedVm.connect({ host: '127.0.0.1', port: silent.port, uuid: UUID_TEXT, name: 'x' });
    c.add(() => lonely.destroy());
    await lonely.whenProxied();
    await assert.rejects(lonely.vmotionBegin(Buffer.from('s'), 150), /timed out/);
  });
});

describe('SimulatedVm opening bytes', () => {
  test('WONT for options it refuses, and the misbehaviour knobs', async () => {
    const c = new Cleanup();
    try {
      const proxy = await FakeProxy.start({ start: false });
      c.add(() => proxy.close());
      const vm = await SimulatedVm.connect({
        host: '127.0.0.1',
        port: proxy.port,
        uuid: 'not a uuid',
        name: 'n',
        nameBytes: Buffer.from([0xff, 0xfe]),
        direction: 'C',
        serviceUri: 'other',
        unsolicitedIdentity: true,
        offerAuthentication: false,
        injectAfterOpening: Buffer.from('RAW'),
      });
      c.add(() => vm.destroy());
      await proxy.waitFor(() => proxy.conns.length === 1 && wire(proxy.conns[0]).includes('RAW'), 3000, 'opening');
      const bytes = wire(proxy.conns[0]);
      assert.equal(bytes.indexOf(Buffer.of(IAC, WILL, Option.AUTHENTICATION)), -1);
      assert.ok(bytes.includes(ext(Ext.DO_PROXY, Buffer.from('Cother'))));
      assert.ok(bytes.includes(Buffer.of(IAC, SB, 232, Ext.VM_NAME, 255, 255, 0xfe, IAC, SE)), 'name bytes escaped');
      // The proxy asks for something the host refuses.
      proxy.conns[0].socket.write(Buffer.of(IAC, DO, Option.ECHO));
      await proxy.waitFor(() => wire(proxy.conns[0]).includes(Buffer.of(IAC, WONT, Option.ECHO)), 3000, 'WONT ECHO');
    } finally {
      await c.run();
    }
  });
});
