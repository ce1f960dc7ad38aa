/**
 * Hostile peers on the VM side, at the session level (no sockets, time as numbers):
 * a second connection claiming a live VM serial port (the liveness probe decides),
 * the pending newcomer's output and name kept back, client input staying with the
 * live connection, the half-open reconnect, bursts of claimants sharing one probe,
 * condemned connections (wrong vMotion secret) that stop being read, and the
 * registration quota. The domain behind the sessions is real (Registry on SQLite,
 * VmotionCoordinator, ConsoleHub).
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { EsxiSession, type EsxiSessionIo, type EsxiSessionOptions, type TakeoverResult } from '../../src/sources/esxi/session.js';
import { IAC, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { DEFAULTS } from '../../src/config/config.js';
import { FakeClient, memoryLogger } from '../domain/fakes.js';

const UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01';
const UUID = '421a5b7709c38e219f00aa105c2e7d01';

const OPTIONS: EsxiSessionOptions = {
  serviceName: 'vSPC.py',
  comPort: false,
  maxSubnegotiation: 4096,
  humanTimeoutMs: 5000,
  identifyTimeoutMs: 5000,
  subnegotiationTimeoutMs: 20_000,
  maxPreIdentifyBuffer: 64 * 1024,
  proxyPortHint: 'telnet://<this host>:13370',
  takeoverProbeTimeoutMs: 2000,
};

const willExt = Buffer.of(IAC, WILL, Option.VMWARE_EXT);
const ext = (code: number, payload: Buffer | string = Buffer.alloc(0)): Buffer =>
  encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
const vcUuid = (text = UUID_TEXT): Buffer => ext(Ext.VM_VC_UUID, text);
const vmName = (name: string): Buffer => ext(Ext.VM_NAME, name);
const identify = (name = 'web01'): Buffer => Buffer.concat([willExt, ext(Ext.DO_PROXY, 'SvSPC.py'), vcUuid(), vmName(name)]);

class FakeIo implements EsxiSessionIo {
  chunks: Buffer[] = [];
  ended = false;
  destroyed = false;
  readingStopped = false;
  deadlineChanges = 0;
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
  stopReading(): void {
    this.readingStopped = true;
  }
  deadlineChanged(): void {
    this.deadlineChanges++;
  }
  take(): Buffer {
    const b = Buffer.concat(this.chunks);
    this.chunks = [];
    return b;
  }
}

/** Option-232 subcommand codes and the serial data in bytes the concentrator wrote. */
function decode(bytes: Buffer): { exts: number[]; data: string } {
  const tokens = new TelnetDecoder({ binary: true }).decode(bytes);
  return {
    exts: tokens.flatMap((t) => (t.type === 'subnegotiation' && t.option === Option.VMWARE_EXT ? [t.payload[0]] : [])),
    data: tokens.flatMap((t) => (t.type === 'data' ? [t.data.toString('latin1')] : [])).join(''),
  };
}

const dbs: Array<ReturnType<typeof openDatabase>> = [];
afterEach(() => {
  for (const db of dbs.splice(0)) closeDatabase(db);
});

function domain() {
  const { logger, lines } = memoryLogger();
  const db = openDatabase(':memory:');
  dbs.push(db);
  const store = new ConsoleStore(db, { start: 20000, end: 20010 });
  const registry = new Registry(store);
  const vmotion = new VmotionCoordinator({ timeoutMs: 60_000 }, logger);
  const takeovers: TakeoverResult[] = [];
  const renames: string[] = [];
  registry.on('renamed', (hub) => renames.push(hub.identity.name ?? ''));
  return { logger, lines, registry, store, vmotion, takeovers, renames };
}
type Domain = ReturnType<typeof domain>;
let nextId = 1;

function open(d: Domain, address: string, options: Partial<EsxiSessionOptions> = {}, now = 1_000, admit?: () => boolean) {
  const io = new FakeIo();
  const id = nextId++;
  const session = new EsxiSession(
    { id, peer: `${address}:${40000 + id}`, log: d.logger.child({ conn: id }) },
    {
      registry: d.registry,
      vmotion: d.vmotion,
      options: { ...OPTIONS, ...options },
      onTakeover: (r) => d.takeovers.push(r),
      admitNewIdentity: admit,
    },
    io,
  );
  session.start(now);
  const linesOf = (message: string) => d.lines.filter((l) => l.conn === id && l.message === message);
  return { session, io, id, linesOf };
}

/** A live VM at 10.0.0.1 with a client attached; its io emptied. */
function liveVm(d: Domain, options: Partial<EsxiSessionOptions> = {}) {
  const real = open(d, '10.0.0.1', options);
  real.session.receive(identify('web01'), 1_100);
  assert.equal(real.session.state, 'attached');
  const hub = real.session.hub!;
  const client = new FakeClient();
  hub.addClient(client);
  real.io.take();
  d.renames.length = 0;
  return { real, hub, client };
}

describe('takeover of a live VM serial port', () => {
  test('an impostor from another address waits on the probe, is refused when the VM answers; nothing of it reaches anyone', () => {
    const d = domain();
    const { real, hub, client } = liveVm(d);
    const evil = open(d, '10.6.6.6');
    evil.session.receive(identify('evil'), 2_000);
    assert.equal(evil.session.state, 'contending');
    assert.deepEqual(evil.session.deadline(), { at: 4_000, kind: 'takeover-probe' });
    assert.deepEqual(decode(real.io.take()).exts, [Ext.GET_VM_VC_UUID], 'the live connection is asked for its UUID');
    assert.equal(hub.source, real.session);

    // While the probe is out: the impostor's fake prompt is held back, a password typed goes to the real VM.
    evil.session.receive(Buffer.from('Password: '), 2_001);
    hub.fromClient(client, Buffer.from('secret'));
    assert.equal(decode(real.io.take()).data, 'secret');
    assert.equal(decode(evil.io.take()).data, '');
    assert.equal(client.output.toString(), '');
    assert.equal(hub.identity.name, 'web01', 'the claimant has not renamed the port');

    real.session.receive(vcUuid(), 2_010);
    assert.equal(evil.session.state, 'closed');
    assert.equal(evil.io.ended, true);
    assert.equal(evil.io.readingStopped, true, 'condemned: no longer read');
    assert.equal(hub.source, real.session);
    assert.deepEqual(d.takeovers, ['refused']);
    const [line] = evil.linesOf(
      'security: a second connection claimed a VM serial port whose connection is alive (it answered the liveness probe); refused',
    );
    assert.equal(line.security, true);
    assert.equal(line.errorCode, 'VSPC_VM_ALIVE');
    assert.equal(line.livePeer, real.session.peer);
    assert.equal(line.claimedName, 'evil');
    // Nothing it sends later counts, and the record keeps its name in memory and in the store.
    evil.session.receive(Buffer.concat([vmName('evil-2'), Buffer.from('more')]), 2_020);
    assert.equal(hub.identity.name, 'web01');
    assert.equal(d.store.getById(hub.identity.id)?.name, 'web01');
    assert.deepEqual(d.renames, []);
    assert.equal(client.output.toString(), '');
    hub.fromClient(client, Buffer.from('ls'));
    assert.equal(decode(real.io.take()).data, 'ls');
  });

  test('the live connection does not answer (half-open): after the probe deadline it is dropped and the newcomer takes over, output and name with it', () => {
    const d = domain();
    const { real, hub, client } = liveVm(d);
    const next = open(d, '10.0.0.2');
    next.session.receive(identify('web01-new'), 2_000);
    next.session.receive(Buffer.from('boot log'), 2_100);
    next.session.onTimer(3_999);
    assert.equal(next.session.state, 'contending', 'not before the deadline');
    next.session.onTimer(4_000);
    assert.equal(real.io.destroyed, true);
    assert.equal(real.session.state, 'closed');
    assert.equal(next.session.state, 'attached');
    assert.equal(hub.source, next.session);
    assert.match(client.output.toString(), /boot log/, 'the output kept while contending follows');
    assert.equal(hub.identity.name, 'web01-new', 'renamed once it has won');
    assert.deepEqual(d.renames, ['web01-new']);
    assert.deepEqual(d.takeovers, ['unanswered']);
    assert.equal(real.linesOf('VM connection did not answer the liveness probe; replaced by the new connection')[0].errorCode, 'VSPC_PROBE_UNANSWERED');
    hub.fromClient(client, Buffer.from('x'));
    assert.equal(decode(next.io.take()).data, 'x');
  });

  test('the live connection goes away while probed: the newcomer takes over at once (its timer retries)', () => {
    const d = domain();
    const { real, hub } = liveVm(d);
    const next = open(d, '10.0.0.2');
    next.session.receive(identify(), 2_000);
    assert.equal(next.session.state, 'contending');
    real.session.transportClosed();
    assert.equal(next.io.deadlineChanges, 1, 'the owner is told to re-arm');
    assert.deepEqual(next.session.deadline(), { at: 0, kind: 'retry' });
    next.session.onTimer(2_050);
    assert.equal(next.session.state, 'attached');
    assert.equal(hub.source, next.session);
    assert.deepEqual(d.takeovers, ['closed']);
  });

  test('a newcomer from the live connection\'s own address takes over without a probe', () => {
    const d = domain();
    const { real, hub } = liveVm(d);
    const again = open(d, '10.0.0.1');
    again.session.receive(identify('renamed'), 2_000);
    assert.equal(again.session.state, 'attached');
    assert.equal(hub.source, again.session);
    assert.equal(real.io.ended, true);
    assert.deepEqual(decode(real.io.take()).exts, [], 'no probe');
    assert.deepEqual(d.takeovers, ['same-address']);
    assert.equal(hub.identity.name, 'renamed');
  });

  test('IPv4 and its IPv4-mapped IPv6 spelling are the same address', () => {
    const d = domain();
    const { hub } = liveVm(d);
    const again = open(d, '::ffff:10.0.0.1');
    again.session.receive(identify(), 2_000);
    assert.equal(hub.source, again.session);
    assert.deepEqual(d.takeovers, ['same-address']);
  });

  test('takeoverProbeTimeoutMs 0: the newest connection wins at once', () => {
    const d = domain();
    const { real, hub } = liveVm(d, { takeoverProbeTimeoutMs: 0 });
    const next = open(d, '10.0.0.2', { takeoverProbeTimeoutMs: 0 });
    next.session.receive(identify(), 2_000);
    assert.equal(hub.source, next.session);
    assert.equal(real.io.ended, true);
    assert.deepEqual(d.takeovers, ['no-probe']);
  });

  test('40 claimants in a burst share one probe and are all refused when the VM answers', () => {
    const d = domain();
    const { real, hub, client } = liveVm(d);
    const claimants = Array.from({ length: 40 }, (_, i) => {
      const c = open(d, `10.6.6.${i + 1}`);
      c.session.receive(identify(`evil-${i}`), 2_000 + i);
      return c;
    });
    assert.ok(claimants.every((c) => c.session.state === 'contending'));
    assert.deepEqual(decode(real.io.take()).exts, [Ext.GET_VM_VC_UUID], 'one probe for all of them');
    real.session.receive(vcUuid(), 2_100);
    assert.ok(claimants.every((c) => c.session.state === 'closed' && c.io.readingStopped));
    assert.equal(d.takeovers.length, 40);
    assert.ok(d.takeovers.every((r) => r === 'refused'));
    assert.equal(hub.source, real.session);
    assert.equal(hub.identity.name, 'web01');
    hub.fromClient(client, Buffer.from('still mine'));
    assert.equal(decode(real.io.take()).data, 'still mine');
    // The next claimant gets a probe of its own.
    const late = open(d, '10.6.6.99');
    late.session.receive(identify(), 3_000);
    assert.deepEqual(decode(real.io.take()).exts, [Ext.GET_VM_VC_UUID]);
  });

  test('several claimants and a dead VM: the first takes over, the next must then get past the winner\'s probe', () => {
    const d = domain();
    const { real, hub } = liveVm(d);
    const a = open(d, '10.0.0.2');
    a.session.receive(identify('a'), 2_000);
    const b = open(d, '10.0.0.3');
    b.session.receive(identify('b'), 2_500);
    assert.deepEqual(b.session.deadline(), { at: 4_000, kind: 'takeover-probe' }, 'the deadline counts from the probe');
    a.session.onTimer(4_000);
    assert.equal(real.io.destroyed, true);
    assert.equal(hub.source, a.session);
    assert.equal(b.session.state, 'identifying');
    b.session.onTimer(4_000); // its retry (due at once)
    assert.equal(b.session.state, 'contending', 'contending with the winner now');
    assert.deepEqual(decode(a.io.take()).exts.filter((c) => c === Ext.GET_VM_VC_UUID), [Ext.GET_VM_VC_UUID, Ext.GET_VM_VC_UUID]);
    a.session.receive(vcUuid(), 4_010);
    assert.equal(b.session.state, 'closed');
    assert.deepEqual(d.takeovers, ['unanswered', 'refused']);
    assert.equal(hub.identity.name, 'a');
  });

  test('a claimant that disconnects while contending leaves the probe to the others', () => {
    const d = domain();
    const { real, hub } = liveVm(d);
    const gone = open(d, '10.0.0.2');
    gone.session.receive(identify(), 2_000);
    gone.session.transportClosed();
    real.session.receive(vcUuid(), 2_010);
    assert.equal(hub.source, real.session);
    assert.deepEqual(d.takeovers, []);
  });
});

describe('condemned connections are no longer read', () => {
  test('1,000 pipelined VMOTION-PEER guesses in one chunk: the first is evaluated and logged, the rest ignored', () => {
    const d = domain();
    const guesser = open(d, '10.6.6.6');
    const guesses = Array.from({ length: 1000 }, (_, i) => ext(Ext.VMOTION_PEER, Buffer.from(`seq${i}secret${i}`)));
    guesser.session.receive(Buffer.concat([willExt, ...guesses]), 2_000);
    assert.equal(d.vmotion.counters['bad-peer'], 1);
    assert.equal(d.lines.filter((l) => typeof l.message === 'string' && l.message.startsWith('security: VMOTION-PEER')).length, 1);
    assert.equal(guesser.io.readingStopped, true);
    assert.equal(guesser.session.state, 'closed');
    // Later chunks are not evaluated either (the transport stopped reading; if some still arrive, they are ignored).
    guesser.session.receive(Buffer.concat(guesses.slice(0, 10)), 2_001);
    assert.equal(d.vmotion.counters['bad-peer'], 1);
  });

  test('the same guesses one per chunk: after the first, nothing more is evaluated', () => {
    const d = domain();
    const guesser = open(d, '10.6.6.6');
    guesser.session.receive(willExt, 2_000);
    for (let i = 0; i < 50; i++) guesser.session.receive(ext(Ext.VMOTION_PEER, Buffer.from(`guess${i}`)), 2_001 + i);
    assert.equal(d.vmotion.counters['bad-peer'], 1);
  });
});

describe('the registration quota', () => {
  test('a new identity beyond the quota is refused and condemned; an existing record is not subject to it', () => {
    const d = domain();
    let allow = true;
    const first = open(d, '10.0.0.1', {}, 1_000, () => allow);
    first.session.receive(identify(), 1_100);
    assert.equal(first.session.state, 'attached');
    first.session.transportClosed();
    allow = false;
    const fresh = open(d, '10.0.0.1', {}, 1_000, () => allow);
    fresh.session.receive(Buffer.concat([willExt, ext(Ext.DO_PROXY, 'SvSPC.py'), vcUuid('42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 09')]), 1_200);
    assert.equal(fresh.session.state, 'closed');
    assert.equal(fresh.io.readingStopped, true);
    assert.equal(d.registry.size, 1, 'no record created');
    // The known VM reconnecting creates nothing: the quota does not apply.
    const back = open(d, '10.0.0.1', {}, 1_000, () => allow);
    back.session.receive(identify(), 1_300);
    assert.equal(back.session.state, 'attached');
  });
});

describe('the identify deadline', () => {
  test('by default a host that agreed to option 232 has 5 s to identify (real ones take milliseconds)', () => {
    assert.equal(DEFAULTS.identifyTimeoutMs, 5000);
    const d = domain();
    const s = open(d, '10.0.0.9', { identifyTimeoutMs: DEFAULTS.identifyTimeoutMs });
    s.session.receive(willExt, 2_000);
    assert.deepEqual(s.session.deadline(), { at: 7_000, kind: 'identify' });
    s.session.onTimer(7_000);
    assert.equal(s.session.state, 'closed');
  });
});
