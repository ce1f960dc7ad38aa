/**
 * EsxiSession fidelity to real ESXi hosts (issue 12), without sockets: the host is a
 * list of byte arrays, the transport an array of chunks, the domain behind it real.
 * vMotion secrets whose bytes are telnet commands, BREAK from the VM, RFC 2217 flow
 * control and purges.
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { EsxiSession, type EsxiSessionIo, type EsxiSessionOptions } from '../../src/sources/esxi/session.js';
import { BRK, IAC, SE, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { FakeClient, memoryLogger } from '../domain/fakes.js';

const UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 09';
const UUID = '421a5b7709c38e219f00aa105c2e7d09';

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

const ext = (code: number, payload: Buffer | string = Buffer.alloc(0)): Buffer =>
  encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
const comPort = (...payload: number[]): Buffer => encodeSubnegotiation(Option.COM_PORT, Buffer.from(payload));
const identify = (): Buffer =>
  Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT, IAC, WILL, Option.COM_PORT), ext(Ext.DO_PROXY, 'SvSPC.py'), ext(Ext.VM_VC_UUID, UUID_TEXT), ext(Ext.VM_NAME, 'fid')]);

class FakeIo implements EsxiSessionIo {
  chunks: Buffer[] = [];
  ended = false;
  destroyed = false;
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
  onDrain(): void {}
  take(): Buffer {
    const b = Buffer.concat(this.chunks);
    this.chunks = [];
    return b;
  }
}

function tokens(bytes: Buffer) {
  return new TelnetDecoder({ binary: true }).decode(bytes);
}
function extsIn(bytes: Buffer) {
  return tokens(bytes).flatMap((t) => (t.type === 'subnegotiation' && t.option === Option.VMWARE_EXT ? [{ code: t.payload[0], payload: Buffer.from(t.payload.subarray(1)) }] : []));
}
function dataIn(bytes: Buffer): string {
  return Buffer.concat(tokens(bytes).flatMap((t) => (t.type === 'data' ? [t.data] : []))).toString('latin1');
}

const dbs: Array<ReturnType<typeof openDatabase>> = [];
afterEach(() => {
  for (const db of dbs.splice(0)) closeDatabase(db);
});

function domain(random?: (n: number) => Buffer, secretBytes = 8) {
  const { logger, lines } = memoryLogger();
  const db = openDatabase(':memory:');
  dbs.push(db);
  const events: string[] = [];
  const registry = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }), { observer: { event: (_hub, e) => events.push(e.kind) } });
  const vmotion = new VmotionCoordinator({ timeoutMs: 60_000, secretBytes, random }, logger);
  return { logger, lines, registry, vmotion, events };
}
type Domain = ReturnType<typeof domain>;
let nextId = 1;

function open(d: Domain) {
  const io = new FakeIo();
  const id = nextId++;
  const session = new EsxiSession({ id, peer: `10.0.0.${id}:40000`, log: d.logger.child({ conn: id }) }, { registry: d.registry, vmotion: d.vmotion, options: OPTIONS }, io);
  session.start(1_000);
  io.take();
  return { session, io };
}

/** An identified source with one attached client. */
function attached(d: Domain) {
  const src = open(d);
  src.session.receive(identify(), 1_001);
  const hub = src.session.hub as ConsoleHub;
  assert.ok(hub);
  const client = new FakeClient();
  hub.addClient(client);
  src.io.take();
  return { ...src, hub, client };
}

describe('vMotion secrets whose bytes are telnet commands', () => {
  test('0xFF, IAC SE, SB, NUL and CR in seq and secret: GOAHEAD carries them escaped, PEER with the same bytes matches, COMPLETE moves the VM', () => {
    const nasty = Buffer.from([0xff, 0xf0, 0xff, 0xff, 0xfa, 0x00, 0x0d, 0xff]);
    const d = domain(() => Buffer.from(nasty));
    const { session, io, hub, client } = attached(d);
    const seq = Buffer.from([0xff, 0xf0, 0x0d]);
    session.receive(ext(Ext.VMOTION_BEGIN, seq), 1_002);
    const wire = io.take();
    assert.ok(wire.includes(Buffer.from([0xff, 0xff, 0xf0, 0xff, 0xff, 0xff, 0xff])), 'IAC doubled inside the subnegotiation');
    const [goahead] = extsIn(wire);
    assert.equal(goahead.code, Ext.VMOTION_GOAHEAD);
    assert.deepEqual(goahead.payload, Buffer.concat([seq, nasty]));

    const dest = open(d);
    dest.session.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), ext(Ext.VMOTION_PEER, goahead.payload)]), 1_003);
    assert.deepEqual(extsIn(dest.io.take()).filter((e) => e.code === Ext.VMOTION_PEER_OK), [{ code: Ext.VMOTION_PEER_OK, payload: seq }]);
    dest.session.receive(ext(Ext.VMOTION_COMPLETE, seq), 1_004);
    assert.equal(hub.source, dest.session);
    dest.session.receive(Buffer.from('after'), 1_005);
    assert.equal(client.output.toString(), 'after');
  });

  test('property: any secret bytes and length 4-64 round-trip through GOAHEAD and PEER (seeded)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 4, max: 64 }), fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.nat(), (len, seqBytes, salt) => {
        const secret = Buffer.alloc(len, 0xff);
        for (let i = 0; i < len; i += 1 + (salt % 3)) secret[i] = (salt + i * 7) & 0xff;
        const d = domain(() => Buffer.from(secret), len);
        const { session, io, hub } = attached(d);
        const seq = Buffer.from(seqBytes);
        session.receive(ext(Ext.VMOTION_BEGIN, seq), 1_002);
        const goahead = extsIn(io.take()).find((e) => e.code === Ext.VMOTION_GOAHEAD)!;
        assert.deepEqual(goahead.payload, Buffer.concat([seq, secret]));
        const dest = open(d);
        dest.session.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), ext(Ext.VMOTION_PEER, goahead.payload), ext(Ext.VMOTION_COMPLETE, seq)]), 1_003);
        assert.equal(hub.source, dest.session);
        // One byte short or one byte more never matches.
        const other = open(d);
        other.session.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), ext(Ext.VMOTION_PEER, goahead.payload.subarray(0, -1))]), 1_004);
        assert.equal(extsIn(other.io.take()).some((e) => e.code === Ext.VMOTION_PEER_OK), false);
      }),
      { seed: 8, numRuns: 60 },
    );
  });
});

describe('BREAK from the VM', () => {
  test('IAC BRK between serial bytes reaches every client in order, once, and is an event', () => {
    const d = domain();
    const { session, hub, client } = attached(d);
    const order: string[] = [];
    const second = new FakeClient();
    hub.addClient(second);
    client.deliver = (b: Buffer) => order.push(b.toString());
    Object.assign(client, { breakFromSource: () => order.push('<BRK>') });
    d.events.length = 0;
    session.receive(Buffer.concat([Buffer.from('a'), Buffer.of(IAC, BRK), Buffer.from('b')]), 1_002);
    assert.deepEqual(order, ['a', '<BRK>', 'b']);
    assert.deepEqual(d.events, ['break-from-source']);
    // A client without breakFromSource (another access method) is skipped, not broken.
    assert.equal(second.output.toString(), 'ab');
  });

  test('COM-PORT SET-CONTROL BREAK-ON is a BREAK too (once per ON), and the line state is on the hub', () => {
    const d = domain();
    const { session, hub, client } = attached(d);
    let breaks = 0;
    Object.assign(client, { breakFromSource: () => breaks++ });
    session.receive(Buffer.concat([comPort(5, 5), comPort(5, 5), comPort(5, 6), comPort(5, 9), comPort(0, ...Buffer.from('ESXi'))]), 1_002);
    assert.equal(breaks, 1);
    assert.deepEqual(hub.lineState, { suspended: false, break: false, dtr: false, signature: 'ESXi' });
  });

  test('a BREAK before identification is dropped (no console yet)', () => {
    const d = domain();
    const { session } = open(d);
    session.receive(Buffer.of(IAC, WILL, Option.VMWARE_EXT, IAC, BRK), 1_001);
    assert.ok(d.lines.find((l) => l.message === 'BREAK from the VM before it identified; dropped'));
  });
});

describe('RFC 2217 flow control and purge on the session', () => {
  test('FLOWCONTROL-SUSPEND holds client input in order (write returns false); RESUME sends it and lets clients go on', () => {
    const d = domain();
    const { session, io, hub, client } = attached(d);
    session.receive(comPort(8), 1_002);
    assert.equal(hub.lineState?.suspended, true);
    hub.fromClient(client, Buffer.from('one,'));
    hub.fromClient(client, Buffer.from('two'));
    assert.equal(dataIn(io.take()), '', 'nothing sent while suspended');
    assert.equal(client.paused, true, 'the hub stopped reading its clients');
    session.receive(comPort(9), 1_003);
    assert.equal(dataIn(io.take()), 'one,two');
    assert.equal(client.paused, false, 'clients read again');
    assert.equal(hub.lineState?.suspended, false);
    hub.fromClient(client, Buffer.from('three'));
    assert.equal(dataIn(io.take()), 'three');
  });

  test('PURGE-DATA transmit drops the input held while suspended; receive drops output kept before identification', () => {
    const d = domain();
    const { session, io, hub, client } = attached(d);
    session.receive(comPort(8), 1_002);
    hub.fromClient(client, Buffer.from('stale'));
    session.receive(Buffer.concat([comPort(12, 2), comPort(9)]), 1_003);
    const out = io.take();
    assert.equal(dataIn(out), '');
    assert.ok(out.includes(Buffer.from([IAC, 0xfa, Option.COM_PORT, 112, 2, IAC, SE])), 'PURGE-DATA answered');

    const early = open(d);
    early.session.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT, IAC, WILL, Option.COM_PORT), Buffer.from('boot noise'), comPort(12, 1)]), 1_004);
    early.session.receive(Buffer.concat([ext(Ext.DO_PROXY, 'SvSPC.py?port=com2'), ext(Ext.VM_VC_UUID, UUID_TEXT)]), 1_005);
    const watcher = new FakeClient();
    early.session.hub!.addClient(watcher);
    assert.equal(early.session.hub!.scrollback.snapshot().length, 0, 'the purged output never reached the console');
    assert.equal(UUID, early.session.hub!.identity.key);
  });
});
