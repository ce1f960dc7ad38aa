/**
 * EsxiSession without sockets or timers: the ESXi host is a list of byte arrays, the
 * transport an array of written chunks, time a number passed in. The domain behind
 * the session is real (Registry on an in-memory SQLite store, VmotionCoordinator,
 * ConsoleHub), so each test shows what a host's bytes do to the consoles.
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError } from '../../src/errors.js';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { EsxiSession, type EsxiSessionIo, type EsxiSessionOptions } from '../../src/sources/esxi/session.js';
import { BRK, DO, IAC, SB, SE, WILL, WONT, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { Ext, PROXY_KNOWN_SUBOPTIONS } from '../../src/protocol/vmware/codes.js';
import { FakeClient, memoryLogger } from '../domain/fakes.js';

const UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01';
const UUID = '421a5b7709c38e219f00aa105c2e7d01';
const OTHER_UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 02';

const OPTIONS: EsxiSessionOptions = {
  serviceName: 'vSPC.py',
  comPort: true,
  maxSubnegotiation: 4096,
  humanTimeoutMs: 5000,
  identifyTimeoutMs: 30_000,
  subnegotiationTimeoutMs: 20_000,
  maxPreIdentifyBuffer: 64 * 1024,
  proxyPortHint: 'telnet://<this host>:13370',
};

/** What a host sends: raw telnet bytes. */
const willExt = Buffer.of(IAC, WILL, Option.VMWARE_EXT);
const wontExt = Buffer.of(IAC, WONT, Option.VMWARE_EXT);
const ext = (code: number, payload: Buffer | string = Buffer.alloc(0)): Buffer =>
  encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
const doProxy = (uri = 'vSPC.py', direction = 'S'): Buffer => ext(Ext.DO_PROXY, direction + uri);
const vcUuid = (text = UUID_TEXT): Buffer => ext(Ext.VM_VC_UUID, text);
const vmName = (name: string): Buffer => ext(Ext.VM_NAME, name);
/** The whole identification of a host, as ESXi sends it after our DO 232. */
const identify = (o: { uri?: string; uuid?: string; name?: string } = {}): Buffer =>
  Buffer.concat([willExt, doProxy(o.uri), vcUuid(o.uuid), vmName(o.name ?? 'web01')]);

/** The transport: every chunk written, and whether it was ended or destroyed. */
class FakeIo implements EsxiSessionIo {
  chunks: Buffer[] = [];
  ended = false;
  destroyed = false;
  drain: (() => void) | null = null;
  write(bytes: Buffer): boolean {
    if (!this.destroyed && !this.ended) this.chunks.push(Buffer.from(bytes));
    return true;
  }
  end(): void {
    this.ended = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
  onDrain(listener: () => void): void {
    this.drain = listener;
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
  /** Written bytes since the last call (and forgets them). */
  take(): Buffer {
    const b = this.bytes;
    this.chunks = [];
    return b;
  }
}

/** The option-232 subcommands in `bytes` (what the concentrator said), in order. */
function extsIn(bytes: Buffer): Array<{ code: number; payload: Buffer }> {
  return new TelnetDecoder({ binary: true })
    .decode(bytes)
    .flatMap((t) => (t.type === 'subnegotiation' && t.option === Option.VMWARE_EXT ? [{ code: t.payload[0], payload: Buffer.from(t.payload.subarray(1)) }] : []));
}

const dbs: Array<ReturnType<typeof openDatabase>> = [];
afterEach(() => {
  for (const db of dbs.splice(0)) closeDatabase(db);
});

/** One concentrator's domain: registry, coordinator, log. */
function domain(range = { start: 20000, end: 20010 }, vmotionTimeoutMs = 60_000) {
  const { logger, lines } = memoryLogger();
  const db = openDatabase(':memory:');
  dbs.push(db);
  const registry = new Registry(new ConsoleStore(db, range));
  const vmotion = new VmotionCoordinator({ timeoutMs: vmotionTimeoutMs }, logger);
  return { logger, lines, registry, vmotion };
}

type Domain = ReturnType<typeof domain>;
let nextId = 1;

/** A started session on `d`, at time `now`. */
function open(d: Domain, options: Partial<EsxiSessionOptions> = {}, now = 1_000) {
  const io = new FakeIo();
  const settled: number[] = [];
  const errors: string[] = [];
  const id = nextId++;
  const session = new EsxiSession(
    { id, peer: `10.0.0.${id}:40000`, log: d.logger.child({ conn: id }) },
    {
      registry: d.registry,
      vmotion: d.vmotion,
      options: { ...OPTIONS, ...options },
      onSettled: () => settled.push(id),
      onProtocolError: (code) => errors.push(code),
    },
    io,
  );
  session.start(now);
  const linesOf = (message: string) => d.lines.filter((l) => l.conn === id && l.message === message);
  return { session, io, settled, errors, id, linesOf };
}

describe('EsxiSession: states', () => {
  test('start: opening offers in one batch, state negotiating, human deadline', () => {
    const d = domain();
    const { session, io, settled } = open(d, {}, 1_000);
    assert.deepEqual(
      [...io.take()],
      [IAC, WILL, Option.BINARY, IAC, WILL, Option.SGA, IAC, WILL, Option.ECHO, IAC, DO, Option.BINARY, IAC, DO, Option.SGA, IAC, DO, Option.VMWARE_EXT],
    );
    assert.equal(session.state, 'negotiating');
    assert.deepEqual(session.deadline(), { at: 6_000, kind: 'human' });
    assert.deepEqual(settled, []);
  });

  test('negotiating → identifying on WILL 232: KNOWN-SUBOPTIONS-2 sent, identify deadline replaces the human one', () => {
    const d = domain();
    const { session, io, settled } = open(d, {}, 1_000);
    io.take();
    session.receive(willExt, 2_000);
    assert.equal(session.state, 'identifying');
    assert.deepEqual(extsIn(io.take()), [{ code: Ext.KNOWN_SUBOPTIONS_2, payload: Buffer.from(PROXY_KNOWN_SUBOPTIONS) }]);
    assert.deepEqual(session.deadline(), { at: 32_000, kind: 'identify' });
    assert.deepEqual(settled, [], 'still pending');
  });

  test('identifying → attached on DO-PROXY + VM-VC-UUID: WILL-PROXY, GET-UUID/NAME, registered, deadline gone', () => {
    const d = domain();
    const { session, io, settled, id, linesOf } = open(d);
    session.receive(willExt, 2_000);
    io.take();
    session.receive(doProxy('vSPC.py?port=com2'), 2_001);
    assert.deepEqual(
      extsIn(io.take()).map((e) => e.code),
      [Ext.WILL_PROXY, Ext.GET_VM_VC_UUID, Ext.GET_VM_NAME],
    );
    assert.equal(session.state, 'identifying', 'DO-PROXY alone does not identify');
    assert.deepEqual(session.proxyRequest, { direction: 'S', uri: 'vSPC.py?port=com2', service: 'vSPC.py', label: 'com2' });

    session.receive(Buffer.concat([vmName('web01'), vcUuid()]), 2_002);
    assert.equal(session.state, 'attached');
    assert.equal(session.uuid, UUID);
    assert.equal(session.vmName, 'web01');
    const hub = d.registry.get('esxi', UUID, 'com2');
    assert.ok(hub);
    assert.equal(session.hub, hub);
    assert.equal(hub.source, session);
    assert.equal(hub.identity.name, 'web01');
    assert.equal(hub.identity.tcpPort, 20000);
    assert.equal(session.deadline(), null);
    assert.deepEqual(settled, [id]);
    assert.equal(linesOf('VM serial port registered').length, 1);
  });

  test('attached: VM output reaches clients, client input and BREAK reach the VM, VM-NAME renames', () => {
    const d = domain();
    const { session, io } = open(d);
    session.receive(identify(), 2_000);
    const hub = session.hub!;
    const client = new FakeClient();
    hub.addClient(client);
    io.take();
    session.receive(Buffer.from('login: '), 2_001);
    assert.equal(client.output.toString(), 'login: ');
    hub.fromClient(client, Buffer.of(0x72, 0x6f, 0x6f, 0x74, 0xff));
    assert.deepEqual([...io.take()], [0x72, 0x6f, 0x6f, 0x74, 0xff, 0xff], 'IAC doubled');
    hub.sendBreak();
    assert.deepEqual([...io.take()], [IAC, BRK]);
    session.receive(vmName('web01-renamed'), 2_002);
    assert.equal(hub.identity.name, 'web01-renamed');
    assert.equal(session.vmName, 'web01-renamed');
  });

  test('DO-PROXY + UUID without WILL 232 first still attach (from negotiating)', () => {
    const d = domain();
    const { session } = open(d);
    session.receive(Buffer.concat([doProxy(), vcUuid()]), 2_000);
    assert.equal(session.state, 'attached');
    assert.equal(session.deadline(), null);
  });

  test('a host that reconnects supersedes its old connection; a second registration is "reconnected"', () => {
    const d = domain();
    const first = open(d);
    first.session.receive(identify(), 2_000);
    const second = open(d);
    second.session.receive(identify(), 3_000);
    assert.equal(second.session.state, 'attached');
    const hub = d.registry.get('esxi', UUID, '');
    assert.equal(second.session.hub, hub);
    assert.equal(hub!.source, second.session);
    assert.equal(first.session.hub, null);
    assert.equal(first.session.state, 'closed');
    assert.equal(first.io.ended, true);
    assert.deepEqual(first.linesOf('closing VM connection').map((l) => l.reason), ['superseded by a new connection from the VM']);
    assert.equal(second.linesOf('VM serial port reconnected').length, 1);
  });

  test('the guest UART reported before identification is carried over to the hub', () => {
    const d = domain();
    const { session, io } = open(d);
    const baud = Buffer.alloc(5);
    baud[0] = 1; // SET-BAUDRATE
    baud.writeUInt32BE(115_200, 1);
    session.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.COM_PORT), encodeSubnegotiation(Option.COM_PORT, baud)]), 2_000);
    assert.ok(io.bytes.includes(Buffer.of(IAC, DO, Option.COM_PORT)), 'DO COM-PORT');
    session.receive(identify(), 2_001);
    assert.deepEqual(session.hub!.lineSettings, { baudRate: 115_200 });
  });

  test('close: graceful (io.end), leaves the hub, idempotent; destroy afterwards still aborts; nothing after destroy', () => {
    const d = domain();
    const { session, io, linesOf } = open(d);
    session.receive(identify(), 2_000);
    const hub = session.hub!;
    session.close('bye');
    session.close('again');
    assert.equal(session.state, 'closed');
    assert.equal(io.ended, true);
    assert.equal(hub.source, null);
    assert.equal(session.deadline(), null);
    assert.deepEqual(linesOf('closing VM connection').map((l) => l.reason), ['bye']);
    session.destroy('grace over');
    session.destroy('again');
    assert.equal(io.destroyed, true);
    assert.deepEqual(linesOf('destroying VM connection').map((l) => l.reason), ['grace over']);
    assert.equal(session.write(Buffer.from('x')), true, 'writes to a closed session are dropped');
  });

  test('transportClosed: leaves the hub and tells the vMotion coordinator', () => {
    const d = domain();
    const { session, linesOf } = open(d);
    session.receive(identify(), 2_000);
    const hub = session.hub!;
    session.transportClosed();
    assert.equal(session.state, 'closed');
    assert.equal(hub.source, null);
    assert.equal(linesOf('VM serial port disconnected').length, 1);
    assert.ok(d.registry.lastSeen(hub)! > 0);
  });

  test('any chunking of the same host bytes ends in the same state with the same bytes written', () => {
    const wire = Buffer.concat([identify({ uri: 'vSPC.py?port=com1' }), Buffer.from('boot\r\n')]);
    const run = (cuts: number[]) => {
      const d = domain();
      const s = open(d);
      let prev = 0;
      for (const c of [...cuts, wire.length]) {
        s.session.receive(wire.subarray(prev, c), 2_000);
        prev = c;
      }
      return { state: s.session.state, written: s.io.bytes, out: s.session.hub?.scrollback.snapshot().toString() };
    };
    const whole = run([]);
    assert.equal(whole.state, 'attached');
    assert.equal(whole.out, 'boot\r\n');
    assert.deepEqual(run(Array.from({ length: wire.length }, (_, i) => i)), whole, 'one byte at a time');
    for (let cut = 1; cut < wire.length; cut += 7) assert.deepEqual(run([cut]), whole, `split at ${cut}`);
  });
});

describe('EsxiSession: people and silence', () => {
  test('WONT 232 (a person with telnet): explanation text, then a graceful close, VSPC_NOT_ESXI', () => {
    const d = domain();
    const { session, io, errors, settled, id, linesOf } = open(d);
    io.take();
    session.receive(wontExt, 1_500);
    const text = io.take().toString('latin1');
    assert.match(text, /This is vspc, a virtual serial port concentrator/);
    assert.match(text, /vSPC URI telnet:\/\/<this host>:13370/);
    assert.match(text, /vspc-admin list/);
    assert.equal(io.ended, true);
    assert.equal(io.destroyed, false, 'closed gracefully so the text arrives');
    assert.equal(session.state, 'closed');
    assert.deepEqual(errors, ['VSPC_NOT_ESXI']);
    assert.deepEqual(settled, [id]);
    assert.equal(linesOf('peer is not an ESXi host; explained and closed')[0].reason, 'peer refused option 232');
  });

  test('silence: nothing before the human deadline, the explanation at it', () => {
    const d = domain();
    const { session, io, errors, linesOf } = open(d, { humanTimeoutMs: 300 }, 1_000);
    io.take();
    session.onTimer(1_299);
    assert.equal(session.state, 'negotiating');
    assert.deepEqual(io.chunks, []);
    session.onTimer(1_300);
    assert.match(io.take().toString('latin1'), /This is vspc/);
    assert.equal(io.ended, true);
    assert.equal(session.state, 'closed');
    assert.deepEqual(errors, ['VSPC_NOT_ESXI']);
    assert.equal(linesOf('peer is not an ESXi host; explained and closed')[0].reason, 'no option 232 within 300 ms');
    assert.equal(session.deadline(), null);
  });

  test('bytes that are not telnet negotiation do not end the human deadline', () => {
    const d = domain();
    const { session } = open(d, {}, 1_000);
    session.receive(Buffer.from('hello?\r\n'), 1_100);
    assert.equal(session.state, 'negotiating');
    assert.deepEqual(session.deadline(), { at: 6_000, kind: 'human' });
  });
});

describe('EsxiSession: deadlines and bounds', () => {
  test('identify deadline: 232 agreed, no DO-PROXY + UUID in time → VSPC_IDENTIFY_TIMEOUT, aborted', () => {
    const d = domain();
    const { session, io, errors, linesOf } = open(d, { identifyTimeoutMs: 500 }, 1_000);
    session.receive(willExt, 1_200);
    session.receive(doProxy(), 1_300);
    session.onTimer(1_699);
    assert.equal(session.state, 'identifying');
    session.onTimer(1_700);
    assert.equal(session.state, 'closed');
    assert.equal(io.destroyed, true);
    assert.deepEqual(errors, ['VSPC_IDENTIFY_TIMEOUT']);
    const line = linesOf('protocol error; closing VM connection')[0];
    assert.equal(line.errorCode, 'VSPC_IDENTIFY_TIMEOUT');
    assert.match(String(line.error), /within 500 ms/);
  });

  test('subnegotiation deadline: an IAC SB open across chunks is timed from the chunk that left it open', () => {
    const d = domain();
    const { session, io, errors } = open(d, { subnegotiationTimeoutMs: 100 }, 1_000);
    session.receive(identify(), 1_000);
    assert.equal(session.deadline(), null);
    session.receive(Buffer.of(IAC, SB, Option.VMWARE_EXT, Ext.VM_NAME, 0x61), 2_000);
    assert.deepEqual(session.deadline(), { at: 2_100, kind: 'subnegotiation' });
    session.receive(Buffer.of(0x62), 2_050);
    assert.deepEqual(session.deadline(), { at: 2_100, kind: 'subnegotiation' }, 'not re-armed per chunk');
    session.receive(Buffer.of(IAC, SE), 2_060);
    assert.equal(session.deadline(), null, 'finished: cleared');
    session.receive(Buffer.of(IAC, SB, Option.VMWARE_EXT), 3_000);
    session.onTimer(3_100);
    assert.equal(session.state, 'closed');
    assert.equal(io.destroyed, true);
    assert.deepEqual(errors, ['TELNET_SB_TIMEOUT']);
  });

  test('the earliest deadline is reported first; each is acted on once', () => {
    const d = domain();
    const { session, errors } = open(d, { humanTimeoutMs: 5_000, subnegotiationTimeoutMs: 1_000 }, 0);
    session.receive(Buffer.of(IAC, SB, 99), 100);
    assert.deepEqual(session.deadline(), { at: 1_100, kind: 'subnegotiation' });
    session.onTimer(10_000);
    assert.deepEqual(errors, ['TELNET_SB_TIMEOUT'], 'the subnegotiation deadline closed it; the human one found it closed');
  });

  test('pre-identification output is kept up to the bound, flushed in order on attach, the excess counted', () => {
    const d = domain();
    const { session, linesOf } = open(d, { maxPreIdentifyBuffer: 10 });
    session.receive(Buffer.concat([willExt, Buffer.from('abcdef')]), 2_000);
    session.receive(Buffer.from('ghijklmn'), 2_001);
    session.receive(Buffer.from('op'), 2_002);
    session.receive(Buffer.concat([doProxy(), vcUuid()]), 2_003);
    const hub = session.hub!;
    assert.equal(hub.scrollback.snapshot().toString(), 'abcdefghij');
    assert.equal(hub.bytesFromVm, 10);
    const warn = linesOf('serial output before identification exceeded the buffer; excess dropped')[0];
    assert.equal(warn.dropped, 6);
    assert.equal(warn.kept, 10);
    session.receive(Buffer.from('live'), 2_004);
    assert.equal(hub.scrollback.snapshot().toString(), 'abcdefghijlive');
  });
});

describe('EsxiSession: option-232 errors', () => {
  test('a second DO-PROXY with the same label is tolerated; with another label → VSPC_PROXY_CHANGED', () => {
    const d = domain();
    const { session, io, errors } = open(d);
    session.receive(identify({ uri: 'vSPC.py?port=com1' }), 2_000);
    session.receive(doProxy('vSPC.py?port=com1'), 2_001);
    assert.equal(session.state, 'attached');
    const hub = session.hub!;
    session.receive(doProxy('vSPC.py?port=com2'), 2_002);
    assert.equal(session.state, 'closed');
    assert.equal(io.destroyed, true);
    assert.deepEqual(errors, ['VSPC_PROXY_CHANGED']);
    assert.equal(hub.source, null);
  });

  test('VM-VC-UUID repeated unchanged is tolerated; changed → VSPC_UUID_CHANGED', () => {
    const d = domain();
    const { session, io, errors, linesOf } = open(d);
    session.receive(identify(), 2_000);
    session.receive(vcUuid(), 2_001);
    assert.equal(session.state, 'attached');
    session.receive(vcUuid(OTHER_UUID_TEXT), 2_002);
    assert.equal(session.state, 'closed');
    assert.equal(io.destroyed, true);
    assert.deepEqual(errors, ['VSPC_UUID_CHANGED']);
    const line = linesOf('protocol error; closing VM connection')[0];
    assert.equal(line.was, UUID);
  });

  test('an unknown subcommand is answered with UNKNOWN-SUBOPTION-RCVD-2 carrying its code, and tolerated', () => {
    const d = domain();
    const { session, io, errors } = open(d);
    session.receive(identify(), 2_000);
    io.take();
    session.receive(ext(99, 'whatever'), 2_001);
    assert.deepEqual(extsIn(io.take()), [{ code: Ext.UNKNOWN_SUBOPTION_RCVD_2, payload: Buffer.of(99) }]);
    assert.equal(session.state, 'attached');
    assert.deepEqual(errors, []);
  });

  test('DO-PROXY for another service or direction C: WONT-PROXY, graceful close, VSPC_PROXY_REFUSED', () => {
    for (const [uri, direction, reason] of [
      ['other.py', 'S', 'unknown service name'],
      ['vSPC.py', 'C', 'direction "C" is not supported'],
    ]) {
      const d = domain();
      const { session, io, errors, linesOf } = open(d);
      session.receive(willExt, 2_000);
      io.take();
      session.receive(doProxy(uri, direction), 2_001);
      assert.deepEqual(extsIn(io.take()).map((e) => e.code), [Ext.WONT_PROXY]);
      assert.equal(session.state, 'closed');
      assert.equal(io.ended, true);
      assert.deepEqual(errors, ['VSPC_PROXY_REFUSED']);
      assert.deepEqual(linesOf('closing VM connection').map((l) => l.reason), [reason]);
    }
  });

  test('a malformed UUID, a telnet error and TLS seen by the owner all close with their code', () => {
    const d = domain();
    const a = open(d);
    a.session.receive(Buffer.concat([willExt, vcUuid('zz')]), 2_000);
    assert.deepEqual(a.errors, ['VSPC_BAD_UUID']);
    const b = open(d);
    b.session.receive(Buffer.of(IAC, 1), 2_000);
    assert.deepEqual(b.errors, ['TELNET_BAD_COMMAND']);
    const c = open(d);
    c.session.fail(new ProtocolError('VSPC_TLS_ON_PLAIN_PORT', 'TLS on the plain port'));
    c.session.fail(new ProtocolError('VSPC_TLS_ON_PLAIN_PORT', 'twice'));
    assert.deepEqual(c.errors, ['VSPC_TLS_ON_PLAIN_PORT'], 'reported once');
    for (const s of [a, b, c]) assert.equal(s.io.destroyed, true);
  });

  test('registration failure (port range exhausted) closes this connection only', () => {
    const d = domain({ start: 20000, end: 20000 });
    const first = open(d);
    first.session.receive(identify(), 2_000);
    const second = open(d);
    second.session.receive(identify({ uuid: OTHER_UUID_TEXT }), 2_001);
    assert.equal(second.session.state, 'closed');
    assert.equal(second.io.ended, true);
    assert.equal(second.linesOf('cannot register VM serial port').length, 1);
    assert.equal(first.session.state, 'attached');
  });

  test('an internal error while handling the bytes (storage failure on rename) aborts this session; receive does not throw', () => {
    const d = domain();
    const { session, io, linesOf } = open(d);
    session.receive(identify(), 2_000);
    d.registry.rename = () => {
      throw new Error('SQLITE_READONLY: attempt to write a readonly database');
    };
    session.receive(vmName('renamed'), 2_001);
    assert.equal(session.state, 'closed');
    assert.equal(io.destroyed, true);
    assert.match(String(linesOf('internal error while handling VM data; closing this connection')[0].error), /SQLITE_READONLY/);
  });
});

describe('EsxiSession: vMotion', () => {
  /** A migrating VM: the source attached with a client, BEGIN sent, GOAHEAD's seq+secret returned. */
  function migrating(d: Domain) {
    const source = open(d);
    source.session.receive(identify(), 2_000);
    const hub = source.session.hub!;
    const client = new FakeClient();
    hub.addClient(client);
    source.io.take();
    const seq = Buffer.of(0x01, 0xff, 0x02);
    source.session.receive(ext(Ext.VMOTION_BEGIN, seq), 3_000);
    const [goahead] = extsIn(source.io.take());
    assert.equal(goahead.code, Ext.VMOTION_GOAHEAD);
    assert.deepEqual(goahead.payload.subarray(0, seq.length), seq);
    assert.equal(hub.state, 'migrating');
    return { source, hub, client, seq, seqAndSecret: goahead.payload };
  }

  test('peer path: identifying → vmotion-peer on a valid VMOTION-PEER → attached on COMPLETE; held input goes to it first', () => {
    const d = domain();
    const { source, hub, client, seq, seqAndSecret } = migrating(d);
    hub.fromClient(client, Buffer.from('held'));
    assert.deepEqual(source.io.chunks, [], 'nothing reaches the paused VM');

    const peer = open(d);
    peer.session.receive(willExt, 3_100);
    peer.io.take();
    peer.session.receive(ext(Ext.VMOTION_PEER, seqAndSecret), 3_200);
    assert.equal(peer.session.state, 'vmotion-peer');
    assert.deepEqual(extsIn(peer.io.take()), [{ code: Ext.VMOTION_PEER_OK, payload: seq }]);
    assert.equal(peer.session.deadline(), null, 'a vMotion peer has no identify deadline (the coordinator times it)');
    assert.deepEqual(peer.settled, [peer.id]);

    // Bytes the source sent before the pause, still in flight, reach the clients.
    source.session.receive(Buffer.from('late '), 3_250);
    peer.session.receive(ext(Ext.VMOTION_COMPLETE, seq), 3_300);
    assert.equal(peer.session.state, 'attached');
    assert.equal(hub.source, peer.session);
    assert.equal(peer.session.hub, hub);
    assert.equal(peer.io.take().toString(), 'held');
    assert.equal(source.session.state, 'closed');
    assert.equal(source.io.ended, true);
    assert.equal(source.session.hub, null, 'retired');
    source.session.receive(Buffer.from('later '), 3_350);
    peer.session.receive(Buffer.from('moved'), 3_400);
    assert.equal(client.output.toString(), 'late later moved');
    assert.equal(d.vmotion.counters.completed, 1);
    assert.equal(d.vmotion.pending, 0);
  });

  test('a host that identifies by UUID while its serial port migrates waits for VMOTION-PEER instead of taking it over', () => {
    const d = domain();
    const { source, hub } = migrating(d);
    const peer = open(d);
    peer.session.receive(identify(), 3_100);
    assert.equal(peer.session.state, 'identifying');
    assert.equal(hub.source, source.session);
    assert.equal(peer.linesOf('identified during a vMotion of this serial port; waiting for VMOTION-PEER').length, 1);
  });

  test('a wrong secret gets no PEER-OK and is closed; ABORT gives the held input back to the source', () => {
    const d = domain();
    const { source, hub, client, seqAndSecret } = migrating(d);
    const attacker = open(d);
    attacker.session.receive(willExt, 3_100);
    attacker.io.take();
    const wrong = Buffer.from(seqAndSecret);
    wrong[wrong.length - 1] ^= 1;
    attacker.session.receive(ext(Ext.VMOTION_PEER, wrong), 3_200);
    assert.deepEqual(extsIn(attacker.io.take()), []);
    assert.equal(attacker.session.state, 'closed');
    assert.equal(attacker.io.ended, true);
    assert.equal(attacker.session.hub, null);

    hub.fromClient(client, Buffer.from('typed'));
    source.session.receive(ext(Ext.VMOTION_ABORT), 3_300);
    assert.equal(hub.state, 'connected');
    assert.equal(source.io.take().toString(), 'typed');
    assert.equal(d.vmotion.counters.aborted, 1);
  });

  test('BEGIN on an unidentified connection is refused with NOTNOW', () => {
    const d = domain();
    const s = open(d);
    s.session.receive(willExt, 2_000);
    s.io.take();
    s.session.receive(ext(Ext.VMOTION_BEGIN, Buffer.of(7)), 2_001);
    assert.deepEqual(extsIn(s.io.take()), [{ code: Ext.VMOTION_NOTNOW, payload: Buffer.of(7) }]);
    assert.equal(s.session.state, 'identifying');
  });

  test('the peer closing before COMPLETE is reported to the coordinator, which waits for another peer', () => {
    const d = domain();
    const { seqAndSecret, seq, hub } = migrating(d);
    const peer = open(d);
    peer.session.receive(Buffer.concat([willExt, ext(Ext.VMOTION_PEER, seqAndSecret)]), 3_100);
    assert.equal(peer.session.state, 'vmotion-peer');
    peer.session.transportClosed();
    const second = open(d);
    second.session.receive(Buffer.concat([willExt, ext(Ext.VMOTION_PEER, seqAndSecret), ext(Ext.VMOTION_COMPLETE, seq)]), 3_200);
    assert.equal(second.session.state, 'attached');
    assert.equal(hub.source, second.session);
  });
});
