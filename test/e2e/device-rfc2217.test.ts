/**
 * RFC 2217 on a real vspc's telnet port, to a device console on a socat pty pair:
 * the console is registered in the server's registry (its telnet port bound by the
 * listeners) and fed by a `device:` endpoint, as declared consoles will be. A client
 * speaking COM-PORT (test/support/sim/rfc2217-client.ts) sets the baud rate, format
 * and flow control (stty on the device shows them; the answers carry what is in
 * effect), asks for BREAK (and sends IAC BRK), suspends and resumes output; a
 * read-only client changes nothing; with the device gone the answers carry the
 * last settings known.
 *
 * BREAK cannot be observed on a pty (the pty driver has no break_ctl; serialport's
 * modem-line ioctl after TIOCSBRK fails with ENOTTY): the device endpoint's port is
 * wrapped to record every set() call on the real pty, and the refusal is in the log.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import { COM_PORT_OPTION, ComPortControl as C, ComPortPurge } from '../../src/protocol/rfc2217/index.js';
import { WILL } from '../../src/protocol/telnet/constants.js';
import { createEndpointWith } from '../../src/sources/common/endpoint.js';
import { ConnectorRegistry } from '../../src/sources/common/link.js';
import { openSerialPort } from '../../src/sources/device/port.js';
import { registerDeviceSource, type DevicePort } from '../../src/sources/device/index.js';
import { Rfc2217Client } from '../support/sim/rfc2217-client.js';
import { PtyEnd, startPtyPair } from '../support/pty-pair.js';
import { FakeClient } from '../domain/fakes.js';
import { startServer, tempDir, waitUntil } from '../support/server.js';
import { waitForState } from '../sources/helpers.js';

const WAIT = 10_000;
const run = promisify(execFile);

async function stty(path: string): Promise<{ speed: number; flags: Set<string> }> {
  const { stdout } = await run('stty', ['-F', path, '-a'], { timeout: WAIT });
  return { speed: Number(/speed (\d+) baud/.exec(stdout)?.[1]), flags: new Set(stdout.split(/[\s;]+/)) };
}

type SetCall = Parameters<DevicePort['set']>[0] & { error: string | null };

/** Resolves once the hub has delivered `text` to `client` (FakeClient.waitForOutput, bounded by WAIT). */
function delivered(client: FakeClient, text: string, timeoutMs = WAIT): Promise<void> {
  return client.waitForOutput(text, timeoutMs);
}

describe('RFC 2217 from a telnet client to a device console', () => {
  test('baud, format, flow control, BREAK, suspend/resume, read-only and a vanished device, through a real vspc', { timeout: 60_000 }, async (t) => {
    const { ts, cleanup } = await startServer(t);
    const tmp = tempDir('vspc-rfc2217-');
    cleanup.add(() => tmp.remove());
    let pair = await startPtyPair(tmp.dir);
    cleanup.add(() => pair.stop());

    // The device endpoint, its port wrapped to record set() calls on the real pty.
    const sets: SetCall[] = [];
    const recording = async (o: Parameters<typeof openSerialPort>[0]): Promise<DevicePort> => {
      const port = await openSerialPort(o);
      const set = port.set.bind(port);
      port.set = async (flags) => {
        const call: SetCall = { ...flags, error: null };
        sets.push(call);
        try {
          await set(flags);
        } catch (err) {
          call.error = String((err as Error).message);
          throw err;
        }
      };
      return port;
    };
    const { hub } = ts.server.registry.register('device', pair.a, '', 'bench-uart');
    const registry = registerDeviceSource(new ConnectorRegistry(), { openPort: recording });
    const runner = createEndpointWith(registry, parseSourceSpec(`device:${pair.a}?baud=115200`), hub, {
      logger: ts.logs.logger,
      backoff: { initialMs: 20, maxMs: 200 },
    });
    cleanup.add(() => runner.close());
    await waitForState(runner, 'connected', WAIT);
    const far = new PtyEnd(pair.b);
    cleanup.add(() => far.close());

    const client = await Rfc2217Client.connect('127.0.0.1', hub.identity.tcpPort);
    cleanup.add(() => client.destroy());
    await client.waitFor('[vspc: bench-uart');
    await client.offerComPort();

    // --- the line
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 0 }), { name: 'set-baudrate', value: 115200 });
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 9600 }), { name: 'set-baudrate', value: 9600 });
    assert.equal((await stty(pair.a)).speed, 9600);
    assert.equal(hub.lineSettings?.baudRate, 9600);
    // A pty keeps 8 data bits and no parity (Linux forces CS8, clears PARENB): the answers say so.
    assert.deepEqual(await client.ask({ name: 'set-datasize', value: 7 }), { name: 'set-datasize', value: 8 });
    assert.deepEqual(await client.ask({ name: 'set-parity', value: 2 }), { name: 'set-parity', value: 1 });
    assert.deepEqual(await client.ask({ name: 'set-stopsize', value: 2 }), { name: 'set-stopsize', value: 2 });
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.FLOW_HARDWARE }), { name: 'set-control', value: C.FLOW_HARDWARE });
    let tty = await stty(pair.a);
    for (const f of ['cstopb', 'parodd', 'crtscts', 'cs8', '-parenb']) assert.ok(tty.flags.has(f), `stty shows ${f}`);
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.REQUEST_FLOW }), { name: 'set-control', value: C.FLOW_HARDWARE });
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.FLOW_NONE }), { name: 'set-control', value: C.FLOW_NONE });
    // mark parity: serialport cannot; the answer is the parity in effect.
    assert.deepEqual(await client.ask({ name: 'set-parity', value: 4 }), { name: 'set-parity', value: 1 });

    const sig = await client.ask({ name: 'signature', text: Buffer.alloc(0) });
    assert.ok(sig.name === 'signature' && /^vspc \S+ bench-uart$/.test(sig.text.toString()), JSON.stringify(sig));
    assert.deepEqual(await client.ask({ name: 'set-linestate-mask', value: 0x10 }), { name: 'set-linestate-mask', value: 0x10 });
    assert.deepEqual(await client.ask({ name: 'purge-data', value: ComPortPurge.BOTH }), { name: 'purge-data', value: ComPortPurge.BOTH });
    assert.deepEqual(client.badAnswers, []);

    // Data both ways still flows over the reopened device.
    await far.write('login: ');
    await client.waitFor('login: ');
    client.type('root\r');
    await far.waitFor('root\r');

    // --- BREAK: SET-CONTROL BREAK-ON, and telnet IAC BRK, reach the device's set({brk}).
    let from = sets.length;
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.BREAK_ON }), { name: 'set-control', value: C.BREAK_ON });
    await ts.logs.waitFor((l) => l.message === 'BREAK not sent: the device refused it', WAIT);
    assert.deepEqual(sets.slice(from).map((s) => s.brk), [true, false]);
    assert.equal(sets[from].dtr, true);
    assert.match(sets[from].error!, /Inappropriate ioctl/, 'a pty refuses the modem-line ioctl that serialport sends with BREAK');
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.REQUEST_BREAK }), { name: 'set-control', value: C.BREAK_ON });
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.BREAK_OFF }), { name: 'set-control', value: C.BREAK_OFF });
    from = sets.length;
    const logMark = ts.logs.lines.length;
    client.sendBreak();
    await ts.logs.waitFor((l) => l.message === 'BREAK not sent: the device refused it', WAIT, logMark);
    assert.deepEqual(sets.slice(from).map((s) => s.brk), [true, false]);

    // --- FLOWCONTROL-SUSPEND holds the client's output; RESUME releases it.
    client.send({ name: 'flowcontrol-suspend' });
    // The suspend is handled once its answer-less command is followed by an answered one.
    await client.ask({ name: 'set-baudrate', value: 0 });
    // A watcher on the hub itself (an id of its own: the hub's locks are by client id).
    const watcher = new FakeClient();
    Object.defineProperty(watcher, 'id', { value: 900_000 });
    hub.addClient(watcher, { request: 'readonly', replay: false });
    const mark = client.mark();
    await far.write('while suspended\r\n');
    await delivered(watcher, 'while suspended\r\n');
    // Anything not held would have been written before this answer (one TCP stream, in order).
    await client.ask({ name: 'set-baudrate', value: 0 });
    assert.ok(!client.text.slice(mark).includes('while suspended'), 'held while suspended');
    client.send({ name: 'flowcontrol-resume' });
    await client.waitFor('while suspended\r\n', WAIT, mark);
    hub.removeClient(watcher);

    // --- a read-only client: answered with the values in effect, nothing applied.
    hub.defaultLockMode = 'readonly';
    const reader = await Rfc2217Client.connect('127.0.0.1', hub.identity.tcpPort);
    cleanup.add(() => reader.destroy());
    await reader.waitFor('[vspc: bench-uart');
    await reader.offerComPort();
    from = sets.length;
    assert.deepEqual(await reader.ask({ name: 'set-baudrate', value: 300 }), { name: 'set-baudrate', value: 9600 });
    assert.deepEqual(await reader.ask({ name: 'set-control', value: C.BREAK_ON }), { name: 'set-control', value: C.BREAK_OFF });
    await reader.waitFor('read-only: line settings not changed');
    tty = await stty(pair.a);
    assert.equal(tty.speed, 9600);
    assert.equal(sets.length, from, 'no BREAK from a read-only client');
    hub.defaultLockMode = 'readwrite';

    // --- the device goes away: answers carry the last settings known; it comes back by itself.
    const waiting = waitForState(runner, 'waiting', WAIT);
    far.close();
    await pair.stop();
    await waiting;
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 1200 }), { name: 'set-baudrate', value: 9600 });
    pair = await startPtyPair(tmp.dir);
    await waitForState(runner, 'connected', WAIT);
    assert.equal((await stty(pair.a)).speed, 9600, 'the settings set over RFC 2217 are kept for the device');
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 19200 }), { name: 'set-baudrate', value: 19200 });
    assert.equal((await stty(pair.a)).speed, 19200);
    assert.equal(client.closed, false);
  });

  test('a declared console (config consoles:) with a device: source: opened by the server itself, set over RFC 2217', { timeout: 30_000 }, async (t) => {
    const tmp = tempDir('vspc-rfc2217-');
    t.after(() => tmp.remove());
    const pair = await startPtyPair(tmp.dir);
    t.after(() => pair.stop());
    const spec = `device:${pair.a}?baud=9600`;
    const { ts, cleanup } = await startServer(t, { config: { consoles: [{ name: 'uart0', source: parseSourceSpec(spec), sourceText: spec }] } });
    await waitUntil(() => ts.server.registry.get('config', 'uart0', '')?.source != null, WAIT, 'the declared device console connected');
    const hub = ts.server.registry.get('config', 'uart0', '')!;
    assert.equal(hub.source?.kind, 'device');
    assert.deepEqual(hub.lineSettings, { baudRate: 9600, dataSize: 8, parity: 'none', stopBits: '1', flow: 'none' });
    const client = await Rfc2217Client.connect('127.0.0.1', hub.identity.tcpPort);
    cleanup.add(() => client.destroy());
    await client.waitFor('[vspc: uart0');
    await client.offerComPort();
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 4800 }), { name: 'set-baudrate', value: 4800 });
    assert.equal((await stty(pair.a)).speed, 4800);
    const mark = ts.logs.lines.length;
    client.sendBreak();
    await ts.logs.waitFor((l) => l.message === 'BREAK not sent: the device refused it', WAIT, mark);
  });

  test('a console whose source cannot change its line (none attached): SET-* answered with the current values (0: unknown)', { timeout: 30_000 }, async (t) => {
    const { ts, cleanup } = await startServer(t);
    const { hub } = ts.server.registry.register('device', '/dev/vspc-test-absent', '', 'nothing-here');
    const client = await Rfc2217Client.connect('127.0.0.1', hub.identity.tcpPort);
    cleanup.add(() => client.destroy());
    await client.waitFor('[vspc: nothing-here');
    await client.offerComPort();
    assert.deepEqual(await client.ask({ name: 'set-baudrate', value: 9600 }), { name: 'set-baudrate', value: 0 });
    assert.deepEqual(await client.ask({ name: 'set-datasize', value: 7 }), { name: 'set-datasize', value: 0 });
    assert.deepEqual(await client.ask({ name: 'set-control', value: C.BREAK_ON }), { name: 'set-control', value: C.BREAK_OFF });
    // Malformed COM-PORT input is ignored (logged); the connection stays.
    client.sendRaw(Buffer.of(1, 0, 0));
    client.sendRaw(Buffer.of(42));
    assert.deepEqual(await client.ask({ name: 'set-stopsize', value: 0 }), { name: 'set-stopsize', value: 0 });
    assert.ok(ts.logs.find((l) => l.message === 'COM-PORT command ignored' && l.errorCode === 'VSPC_COMPORT_MALFORMED'));
    assert.ok(ts.logs.find((l) => l.message === 'COM-PORT command ignored' && l.errorCode === 'VSPC_COMPORT_UNKNOWN'));
    assert.equal(client.closed, false);

    // WILL COM-PORT and a command at once, before the lock is settled: kept, answered once attached.
    const eager = await Rfc2217Client.connect('127.0.0.1', hub.identity.tcpPort);
    cleanup.add(() => eager.destroy());
    eager.session.sendRawNegotiation(WILL, COM_PORT_OPTION);
    eager.send({ name: 'set-baudrate', value: 2400 });
    assert.deepEqual(await eager.nextAnswer('set-baudrate', 0), { name: 'set-baudrate', value: 0 });
  });
});
