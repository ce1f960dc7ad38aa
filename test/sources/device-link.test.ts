/**
 * The device link against a port double (what a pty cannot show): BREAK as
 * serialport's set({brk: true}) then set({brk: false}) ~250 ms later with input held
 * in between, a device that refuses BREAK, a reopen whose new settings fail (the old
 * ones come back) or whose device is gone, a read error ending the link, a graceful
 * close that writes what is queued first, a destroy in the middle of a reopen, and the
 * driver's own baud rate reported. The open check runs on /dev/ptmx (always a tty:
 * each open makes a fresh pty master); the port itself is the double.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { createEndpointWith } from '../../src/sources/common/endpoint.js';
import { ConnectorRegistry } from '../../src/sources/common/link.js';
import type { EndpointRunner } from '../../src/sources/common/runner.js';
import { registerDeviceSource, type DeviceOpenOptions, type DevicePort } from '../../src/sources/device/index.js';
import { FakeClient } from '../domain/fakes.js';
import { flush, makeHub, recordingLogger, waitForState, waitForStatus, type LogLine } from './helpers.js';

const WAIT = 10_000;
const PATH = '/dev/ptmx';

type SetFlags = Parameters<DevicePort['set']>[0];

class Canceled extends Error {
  readonly canceled = true;
}

class FakePort extends EventEmitter implements DevicePort {
  isOpen = true;
  readonly written: Buffer[] = [];
  readonly sets: Array<SetFlags & { at: number }> = [];
  readonly updates: number[] = [];
  /** Writes complete at once unless held. */
  holdWrites = false;
  setError: Error | null = null;
  reportedBaud: number | null = null;
  private reader: { buffer: Buffer; offset: number; length: number; resolve(r: { bytesRead: number }): void; reject(e: unknown): void } | null = null;
  private heldWrites: Array<{ run(): void; cancel(): void }> = [];

  constructor(readonly options: DeviceOpenOptions) {
    super();
  }

  read(buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number }> {
    if (!this.isOpen) return Promise.reject(new Canceled('Port is not open'));
    return new Promise((resolve, reject) => (this.reader = { buffer, offset, length, resolve, reject }));
  }

  /** The device sends bytes. */
  push(data: Buffer): void {
    const r = this.reader!;
    this.reader = null;
    const n = data.copy(r.buffer, r.offset, 0, Math.min(data.length, r.length));
    r.resolve({ bytesRead: n });
  }

  /** The device goes away under a read. */
  fail(err: Error): void {
    const r = this.reader!;
    this.reader = null;
    r.reject(err);
  }

  write(buffer: Buffer): Promise<void> {
    if (!this.isOpen) return Promise.reject(new Canceled('Port is not open'));
    const done = (): void => {
      this.written.push(Buffer.from(buffer));
      this.emit('written');
    };
    if (!this.holdWrites) {
      done();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) =>
      this.heldWrites.push({
        run: () => {
          done();
          resolve();
        },
        cancel: () => reject(new Canceled('Canceled')),
      }),
    );
  }

  releaseWrites(): void {
    this.holdWrites = false;
    const held = this.heldWrites;
    this.heldWrites = [];
    for (const w of held) w.run();
  }

  async update(options: { baudRate: number }): Promise<void> {
    this.updates.push(options.baudRate);
  }

  async set(options: SetFlags): Promise<void> {
    this.sets.push({ ...options, at: Date.now() });
    this.emit('set');
    if (this.setError) throw this.setError;
  }

  async getBaudRate(): Promise<{ baudRate: number }> {
    if (this.reportedBaud === null) throw new Error('not supported');
    return { baudRate: this.reportedBaud };
  }

  async close(): Promise<void> {
    if (!this.isOpen) throw new Error('Port is not open');
    this.isOpen = false;
    const r = this.reader;
    this.reader = null;
    r?.reject(new Canceled('Canceled'));
    const held = this.heldWrites;
    this.heldWrites = [];
    for (const w of held) w.cancel();
    this.emit('closed');
  }

  get text(): string {
    return Buffer.concat(this.written).toString('latin1');
  }
}

/** Opens fake ports; `next` may make the next opens fail or wait. */
class FakeDevice {
  readonly ports: FakePort[] = [];
  readonly opens: DeviceOpenOptions[] = [];
  /** Errors for the next opens, in order (then success). */
  failNext: Array<Error | null> = [];
  /** When set, the next open waits until this is resolved by the test. */
  gate: Promise<void> | null = null;
  reportedBaud: number | null = null;
  readonly events = new EventEmitter();

  open = async (o: DeviceOpenOptions): Promise<DevicePort> => {
    this.opens.push(o);
    this.events.emit('open', o);
    const gate = this.gate;
    this.gate = null;
    if (gate) await gate;
    const err = this.failNext.shift();
    if (err) throw err;
    const p = new FakePort(o);
    p.reportedBaud = this.reportedBaud;
    this.ports.push(p);
    return p;
  };

  get port(): FakePort {
    return this.ports[this.ports.length - 1];
  }
}

interface Started {
  runner: EndpointRunner;
  hub: ConsoleHub;
  client: FakeClient;
  lines: LogLine[];
  device: FakeDevice;
}

function start(t: TestContext, query = '', breakMs?: number, highWaterMark?: number, writeStallMs?: number): Started {
  const device = new FakeDevice();
  const { hub } = makeHub();
  const client = new FakeClient();
  hub.addClient(client);
  const logger = recordingLogger();
  const registry = registerDeviceSource(new ConnectorRegistry(), { openPort: device.open, breakMs, highWaterMark, writeStallMs });
  const runner = createEndpointWith(registry, parseSourceSpec(`device:${PATH}${query}`), hub, { logger, backoff: { initialMs: 20, maxMs: 100 } });
  t.after(() => runner.destroy('test over'));
  return { runner, hub, client, lines: logger.lines, device };
}

function once(emitter: EventEmitter, event: string, what: string, timeoutMs = WAIT): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
    emitter.once(event, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Resolves once `port.sets` has `n` entries. */
async function sets(port: FakePort, n: number): Promise<void> {
  while (port.sets.length < n) await once(port, 'set', `set() call ${port.sets.length + 1}`);
}

describe('device link: BREAK', () => {
  test('set({brk: true}), ~250 ms, set({brk: false}); DTR and RTS stay asserted; input typed meanwhile waits; breaks asked for meanwhile are one', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device } = start(t);
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    hub.fromClient(client, Buffer.from('before '));
    hub.sendBreak();
    hub.sendBreak();
    await sets(port, 1);
    hub.sendBreak(); // while the line is in BREAK: no second one
    hub.fromClient(client, Buffer.from('during'));
    assert.equal(port.text, 'before ', 'queued input goes out before the BREAK, input typed during it waits');
    await sets(port, 2);
    const [on, off] = port.sets;
    assert.deepEqual({ ...on, at: 0 }, { brk: true, cts: false, dsr: false, dtr: true, rts: true, lowLatency: false, at: 0 });
    assert.deepEqual({ ...off, at: 0 }, { brk: false, cts: false, dsr: false, dtr: true, rts: true, lowLatency: false, at: 0 });
    assert.ok(off.at - on.at >= 240, `BREAK held ${off.at - on.at} ms`);
    while (!port.text.endsWith('during')) await once(port, 'written', 'input after the BREAK');
    assert.equal(port.text, 'before during');
    // Once the BREAK is over, the next one is a BREAK of its own.
    hub.sendBreak();
    await sets(port, 4);
    assert.equal(port.sets.length, 4);
  });

  test('a device that refuses BREAK (a pty: ENOTTY on the modem lines): logged once, BREAK cleared anyway, the link stays', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device, lines } = start(t, '', 20);
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    port.setError = new Error('Error: Inappropriate ioctl for device, cannot set');
    hub.sendBreak();
    await sets(port, 2);
    await flush(); // the refused BREAK's bookkeeping settles
    hub.sendBreak();
    await sets(port, 4);
    await flush();
    assert.deepEqual(port.sets.map((s) => s.brk), [true, false, true, false]);
    const warns = lines.filter((l) => l.message === 'BREAK not sent: the device refused it' && l.level === 'warn');
    assert.equal(warns.length, 1);
    assert.match(String(warns[0].fields.error), /Inappropriate ioctl/);
    hub.fromClient(client, Buffer.from('still writing'));
    while (!port.text.includes('still writing')) await once(port, 'written', 'input after a refused BREAK');
    assert.equal(runner.state, 'connected');
  });
});

describe('device link: line changes, loss, close', () => {
  test('baud only: update() on the open port; the driver’s reported rate is what is in effect', { timeout: 20_000 }, async (t) => {
    const { runner, hub, device } = start(t, '?baud=9600');
    device.reportedBaud = 9600;
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    const user = new FakeClient();
    hub.addClient(user);
    port.reportedBaud = 115384; // a UART whose divisor cannot make 115200 exactly
    const r = await hub.setLineSettings(user, { baudRate: 115200 });
    assert.deepEqual(port.updates, [115200]);
    assert.equal(r.settings.baudRate, 115384);
    assert.equal(device.ports.length, 1, 'no reopen for a baud change');
  });

  test('format: a reopen with the new settings; if they fail, the old ones are reopened and the change refused', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device } = start(t, '?baud=9600&data=8&parity=none');
    await waitForState(runner, 'connected', WAIT);
    const user = new FakeClient();
    hub.addClient(user);
    let r = await hub.setLineSettings(user, { parity: 'even', dataSize: 7, flow: 'rtscts' });
    assert.equal(r.applied, true);
    assert.equal(device.ports.length, 2);
    assert.equal(device.ports[0].isOpen, false, 'the old port is closed');
    assert.deepEqual(
      (({ parity, dataBits, rtscts, xon, baudRate }) => ({ parity, dataBits, rtscts, xon, baudRate }))(device.port.options),
      { parity: 'even', dataBits: 7, rtscts: true, xon: false, baudRate: 9600 },
    );
    assert.deepEqual(r.settings, { baudRate: 9600, dataSize: 7, parity: 'even', stopBits: '1', flow: 'rtscts' });

    device.failNext = [new Error('Error: Invalid stop bits setting 3')];
    r = await hub.setLineSettings(user, { stopBits: '2' });
    assert.equal(r.applied, false);
    assert.match(r.refused!, /previous settings are back in effect/);
    assert.equal(device.ports.length, 3);
    assert.equal(device.port.options.stopBits, 1);
    assert.equal(device.port.options.parity, 'even');
    assert.deepEqual(hub.lineSettings, { baudRate: 9600, dataSize: 7, parity: 'even', stopBits: '1', flow: 'rtscts' });

    // Data flows on the reopened port; the runner never saw a loss.
    device.port.push(Buffer.from('hello'));
    hub.fromClient(client, Buffer.from('typed'));
    while (!device.port.text.includes('typed')) await once(device.port, 'written', 'input on the reopened port');
    await flush(); // the read resolves, its bytes reach the hub
    assert.ok(client.output.toString().includes('hello'));
    assert.equal(runner.status.reconnects, 0);
  });

  test('a reopen that cannot open either settings (the device went away meanwhile): the link is lost, the runner waits and redials', { timeout: 20_000 }, async (t) => {
    const { runner, hub, device } = start(t);
    await waitForState(runner, 'connected', WAIT);
    const user = new FakeClient();
    hub.addClient(user);
    device.failNext = [new Error('Error: No such file or directory, cannot open /dev/ptmx'), new Error('Error: No such file or directory, cannot open /dev/ptmx')];
    const waiting = waitForState(runner, 'waiting', WAIT);
    const r = await hub.setLineSettings(user, { parity: 'odd' });
    assert.equal(r.applied, false);
    const st = await waiting;
    assert.match(st.lastError!, /went away while opening/);
    await waitForState(runner, 'connected', WAIT);
  });

  test('a read error ends the link (VSPC_SOURCE_CLOSED, "went away"); the runner redials', { timeout: 20_000 }, async (t) => {
    const { runner, device, lines } = start(t);
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    const waiting = waitForState(runner, 'waiting', WAIT);
    port.fail(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }));
    const st = await waiting;
    assert.match(st.lastError!, /went away \(EIO/);
    const lost = lines.find((l) => l.message.startsWith('endpoint connection lost'));
    assert.equal(lost?.fields.errorCode, 'VSPC_SOURCE_CLOSED');
    assert.equal(lost?.fields.sysCode, 'EIO');
    assert.equal(port.isOpen, false, 'the port is released');
    await waitForStatus(runner, (s) => s.state === 'connected' && s.reconnects === 1, WAIT, 'redialled');
  });

  test('backpressure: write() is false past the high-water mark; the hub pauses clients until the queue is written', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device } = start(t, '', undefined, 1024);
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    port.holdWrites = true;
    const drained = new Promise<void>((resolve) => {
      const original = client.resumeInput.bind(client);
      client.resumeInput = () => {
        original();
        resolve();
      };
    });
    hub.fromClient(client, Buffer.alloc(100, 0x61)); // in flight, held by the device
    hub.fromClient(client, Buffer.alloc(2000, 0x62)); // queued past the mark
    assert.equal(client.paused, true);
    port.releaseWrites();
    await drained;
    assert.equal(client.paused, false);
    assert.equal(port.text, 'a'.repeat(100) + 'b'.repeat(2000));
  });

  test('a device holding its input back (flow control) does not keep a client from changing the flow control', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device, lines } = start(t, '?flow=rtscts', undefined, undefined, 50);
    await waitForState(runner, 'connected', WAIT);
    const user = new FakeClient();
    hub.addClient(user);
    device.port.holdWrites = true;
    hub.fromClient(client, Buffer.from('stuck behind CTS'));
    const r = await hub.setLineSettings(user, { flow: 'none' });
    assert.equal(r.applied, true);
    assert.equal(r.settings.flow, 'none');
    assert.equal(device.ports.length, 2);
    assert.equal(device.port.options.rtscts, false);
    await flush();
    assert.ok(lines.some((l) => l.message === 'input dropped: the device held it back while its settings changed' && l.fields.bytes === 16));
    hub.fromClient(client, Buffer.from('flows again'));
    while (!device.port.text.includes('flows again')) await once(device.port, 'written', 'input on the reopened port');
    assert.equal(runner.status.reconnects, 0);
    assert.equal(client.paused, false);
  });

  test('graceful close writes what is queued, then closes the port and reports no error', { timeout: 20_000 }, async (t) => {
    const { runner, hub, client, device } = start(t);
    await waitForState(runner, 'connected', WAIT);
    const port = device.port;
    port.holdWrites = true;
    hub.fromClient(client, Buffer.from('last words'));
    hub.fromClient(client, Buffer.from(' and more'));
    const closed = runner.close('forgotten');
    await Promise.resolve();
    assert.equal(port.isOpen, true, 'not closed while input is being written');
    port.releaseWrites();
    await closed;
    assert.equal(port.isOpen, false);
    assert.equal(port.text, 'last words and more');
    assert.equal(runner.state, 'stopped');
  });

  test('destroy in the middle of a reopen: the late port is closed, the link ends once', { timeout: 20_000 }, async (t) => {
    const { runner, hub, device } = start(t);
    await waitForState(runner, 'connected', WAIT);
    const user = new FakeClient();
    hub.addClient(user);
    let open!: () => void;
    device.gate = new Promise((r) => (open = r));
    const opening = once(device.events, 'open', 'the reopen');
    const change = hub.setLineSettings(user, { parity: 'odd' });
    await opening;
    runner.destroy('forgotten');
    open();
    const r = await change;
    assert.equal(r.applied, false);
    assert.equal(device.ports.length, 2);
    assert.equal(device.port.isOpen, false, 'the port opened after the destroy is closed');
    assert.equal(runner.state, 'stopped');
    assert.equal(hub.source, null);
  });
});
