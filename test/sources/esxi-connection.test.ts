/**
 * The socket glue around EsxiSession: one timer on the session's deadlines (driven
 * here by mock.timers), corked batches, the TLS first-byte check, close with a grace
 * period, cleanup on the socket's close event. The socket is a fake that records
 * what was written per uncorked batch.
 */
import { describe, test, beforeEach, afterEach, mock } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import type { Socket } from 'node:net';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { EsxiConnection, type EsxiConnectionOptions } from '../../src/sources/esxi/connection.js';
import { IAC, SB, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { memoryLogger } from '../domain/fakes.js';

const OPTIONS: EsxiConnectionOptions = {
  serviceName: 'vSPC.py',
  comPort: false,
  maxSubnegotiation: 4096,
  humanTimeoutMs: 5_000,
  identifyTimeoutMs: 30_000,
  subnegotiationTimeoutMs: 20_000,
  maxPreIdentifyBuffer: 1024,
  closeGraceMs: 2_000,
  proxyPortHint: 'telnet://<this host>:13370',
};

const willExt = Buffer.of(IAC, WILL, Option.VMWARE_EXT);
const ext = (code: number, payload: string = ''): Buffer =>
  encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
const identify = Buffer.concat([willExt, ext(Ext.DO_PROXY, 'SvSPC.py'), ext(Ext.VM_VC_UUID, '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01')]);

/** Just enough of net.Socket for the glue: batches of writes between cork and uncork. */
class FakeSocket extends EventEmitter {
  readonly remoteAddress = '10.0.0.9';
  readonly remotePort = 40001;
  destroyed = false;
  writableEnded = false;
  keepAlive: [boolean, number] | null = null;
  noDelay = false;
  /** One entry per write outside cork, or per cork…uncork batch. */
  batches: Buffer[] = [];
  private corks = 0;
  private pending: Buffer[] = [];
  setNoDelay(v: boolean): this {
    this.noDelay = v;
    return this;
  }
  setKeepAlive(on: boolean, ms: number): this {
    this.keepAlive = [on, ms];
    return this;
  }
  cork(): void {
    this.corks++;
  }
  uncork(): void {
    if (--this.corks === 0 && this.pending.length > 0) this.batches.push(Buffer.concat(this.pending.splice(0)));
  }
  /** Set: every write reports a full buffer (returns false), as a backed-up socket does. */
  full = false;
  write(b: Buffer): boolean {
    if (this.corks > 0) this.pending.push(Buffer.from(b));
    else this.batches.push(Buffer.from(b));
    return !this.full;
  }
  end(): this {
    this.writableEnded = true;
    return this;
  }
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      process.nextTick(() => this.emit('close', false));
    }
    return this;
  }
  take(): Buffer[] {
    return this.batches.splice(0);
  }
}

describe('EsxiConnection (socket glue)', () => {
  const dbs: Array<ReturnType<typeof openDatabase>> = [];
  // Date is mocked too: it is the clock the connection is given (its default is monotonic).
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 }));
  afterEach(() => {
    mock.timers.reset();
    for (const db of dbs.splice(0)) closeDatabase(db);
  });

  function connect(options: Partial<EsxiConnectionOptions> = {}, secure = false) {
    const { logger, lines } = memoryLogger();
    const db = openDatabase(':memory:');
    dbs.push(db);
    const registry = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }));
    const vmotion = new VmotionCoordinator({ timeoutMs: 60_000 }, logger);
    const socket = new FakeSocket();
    const errors: string[] = [];
    const closed: EsxiConnection[] = [];
    const settled: EsxiConnection[] = [];
    const conn = new EsxiConnection(
      socket as unknown as Socket,
      {
        registry,
        logger,
        vmotion,
        options: { ...OPTIONS, ...options },
        onProtocolError: (code) => errors.push(code),
        onClosed: (c) => closed.push(c),
        onSettled: (c) => settled.push(c),
        clock: () => Date.now(),
      },
      secure,
    );
    return { conn, socket, registry, errors, closed, settled, lines };
  }

  test('opening offers leave in one batch; keepalive and no-delay are set', () => {
    const { socket, conn } = connect();
    const batches = socket.take();
    assert.equal(batches.length, 1);
    assert.equal(batches[0].length, 18, 'six 3-byte negotiations');
    assert.deepEqual(socket.keepAlive, [true, 30_000]);
    assert.equal(socket.noDelay, true);
    assert.equal(conn.state, 'negotiating');
  });

  test('the answers to one chunk leave in one batch', () => {
    const { socket, conn } = connect();
    socket.take();
    socket.emit('data', Buffer.concat([willExt, ext(Ext.DO_PROXY, 'SvSPC.py')]));
    const batches = socket.take();
    assert.equal(batches.length, 1);
    const codes = new TelnetDecoder({ binary: true })
      .decode(batches[0])
      .flatMap((t) => (t.type === 'subnegotiation' ? [t.payload[0]] : []));
    assert.deepEqual(codes, [Ext.KNOWN_SUBOPTIONS_2, Ext.WILL_PROXY, Ext.GET_VM_VC_UUID, Ext.GET_VM_NAME]);
    assert.equal(conn.state, 'identifying');
  });

  test('silence: the explanation at humanTimeoutMs, FIN, then destroy after closeGraceMs', async () => {
    const { socket, conn, errors, closed } = connect({ humanTimeoutMs: 5_000, closeGraceMs: 2_000 });
    socket.take();
    mock.timers.tick(4_999);
    assert.deepEqual(socket.take(), []);
    mock.timers.tick(1);
    assert.match(Buffer.concat(socket.take()).toString('latin1'), /This is vspc/);
    assert.equal(socket.writableEnded, true);
    assert.equal(socket.destroyed, false);
    assert.equal(conn.state, 'closed');
    assert.deepEqual(errors, ['VSPC_NOT_ESXI']);
    const gone = once(socket, 'close');
    mock.timers.tick(2_000);
    assert.equal(socket.destroyed, true, 'the peer lingered: destroyed after the grace period');
    await gone;
    assert.deepEqual(closed, [conn]);
  });

  test('WILL 232 moves the one timer from the human to the identify deadline', () => {
    const { socket, conn, errors } = connect({ humanTimeoutMs: 5_000, identifyTimeoutMs: 30_000 });
    mock.timers.tick(1_000);
    socket.emit('data', willExt);
    mock.timers.tick(10_000);
    assert.equal(conn.state, 'identifying', 'no explanation: the human deadline is gone');
    mock.timers.tick(19_999); // 30 s after the WILL, less 1 ms
    assert.equal(conn.state, 'identifying');
    mock.timers.tick(1);
    assert.equal(conn.state, 'closed');
    assert.equal(socket.destroyed, true);
    assert.deepEqual(errors, ['VSPC_IDENTIFY_TIMEOUT']);
  });

  test('an IAC SB left open across chunks times out; one closed in time does not', () => {
    const { socket, conn, errors } = connect({ subnegotiationTimeoutMs: 20_000 });
    socket.emit('data', identify);
    assert.equal(conn.state, 'attached');
    socket.emit('data', Buffer.of(IAC, SB, Option.VMWARE_EXT, Ext.VM_NAME));
    mock.timers.tick(19_000);
    socket.emit('data', Buffer.from('web01'));
    socket.emit('data', Buffer.of(IAC, 240));
    mock.timers.tick(60_000);
    assert.equal(conn.state, 'attached');
    assert.equal(conn.vmName, 'web01');
    socket.emit('data', Buffer.of(IAC, SB, Option.VMWARE_EXT));
    mock.timers.tick(19_999);
    assert.equal(conn.state, 'attached');
    mock.timers.tick(1);
    assert.equal(conn.state, 'closed');
    assert.deepEqual(errors, ['TELNET_SB_TIMEOUT']);
  });

  test('a TLS ClientHello on the plain port: VSPC_TLS_ON_PLAIN_PORT, destroyed, nothing parsed', () => {
    const { socket, conn, errors, settled } = connect({}, false);
    socket.emit('data', Buffer.concat([Buffer.of(0x16, 3, 1), identify]));
    assert.equal(socket.destroyed, true);
    assert.deepEqual(errors, ['VSPC_TLS_ON_PLAIN_PORT']);
    assert.equal(conn.hub, null);
    assert.deepEqual(settled, [conn]);
  });

  test('on the TLS port the first byte is not checked (TLS is already unwrapped)', () => {
    const { socket, conn } = connect({}, true);
    socket.emit('data', Buffer.concat([Buffer.of(0x16), identify]));
    assert.equal(socket.destroyed, false);
    assert.equal(conn.state, 'attached');
  });

  test("socket close: the hub is left, the hub's drain listener let go, onClosed called, no timer fires later", async () => {
    const { socket, conn, closed, registry, lines } = connect();
    socket.emit('data', identify);
    const hub = conn.hub!;
    assert.equal(hub.source, conn.session);
    assert.equal(socket.listenerCount('drain'), 0, 'no drain listener while nothing backs up (an idle VM port costs none)');
    let drained = 0;
    conn.session.onDrain(() => drained++);
    socket.full = true;
    assert.equal(conn.session.write(Buffer.from('typed')), false);
    assert.equal(socket.listenerCount('drain'), 1, 'listening once a write backed up');
    socket.emit('drain');
    assert.equal(drained, 1, "the hub's drain listener is told");
    socket.destroyed = true;
    socket.emit('close', false);
    assert.equal(hub.source, null);
    socket.emit('drain');
    assert.equal(drained, 1, 'not after the close');
    assert.deepEqual(closed, [conn]);
    assert.ok(registry.lastSeen(hub)! > 0);
    const count = lines.length;
    mock.timers.tick(120_000);
    assert.equal(lines.length, count, 'nothing happens after close');
  });

  test('close() and destroy() are idempotent and go through the session', async () => {
    const { socket, conn, lines } = connect();
    socket.emit('data', identify);
    conn.close('test');
    conn.close('test again');
    assert.equal(socket.writableEnded, true);
    assert.equal(lines.filter((l) => l.message === 'closing VM connection').length, 1);
    conn.destroy('now');
    conn.destroy('now again');
    assert.equal(lines.filter((l) => l.message === 'destroying VM connection').length, 1);
    await once(socket, 'close');
  });
});
