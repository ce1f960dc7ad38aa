/**
 * The RFC 2217 codec and the access server's rules (src/protocol/rfc2217/) by example:
 * every command of sections 2-5 with the answer the RFC asks for, queries, refusals,
 * ordered answers behind an asynchronous apply, and the bound on waiting commands.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as vmware from '../../src/protocol/vmware/codes.js';
import {
  ComPort,
  ComPortPurge,
  ComPortControl as C,
  ComPortServer,
  decodeComPort,
  encodeComPort,
  MAX_PENDING_COMMANDS,
  MAX_SIGNATURE_BYTES,
  type ComPortLine,
  type ComPortServerBackend,
} from '../../src/protocol/rfc2217/index.js';

const hex = (b: Buffer) => b.toString('hex');

describe('RFC 2217 codec', () => {
  test('client commands decode with their values', () => {
    assert.deepEqual(decodeComPort(Buffer.of(1, 0, 0, 0x25, 0x80)), { ok: true, message: { sender: 'client', command: { name: 'set-baudrate', value: 9600 } } });
    assert.deepEqual(decodeComPort(Buffer.of(2, 7)), { ok: true, message: { sender: 'client', command: { name: 'set-datasize', value: 7 } } });
    assert.deepEqual(decodeComPort(Buffer.of(8)), { ok: true, message: { sender: 'client', command: { name: 'flowcontrol-suspend' } } });
    const sig = decodeComPort(Buffer.concat([Buffer.of(0), Buffer.from('pyserial')]));
    assert.ok(sig.ok && sig.message.command.name === 'signature' && sig.message.command.text.toString() === 'pyserial');
  });

  test('server answers decode as the server’s (code + 100)', () => {
    assert.deepEqual(decodeComPort(Buffer.of(101, 0, 1, 0xc2, 0)), { ok: true, message: { sender: 'server', command: { name: 'set-baudrate', value: 115200 } } });
    assert.deepEqual(decodeComPort(Buffer.of(112, 3)), { ok: true, message: { sender: 'server', command: { name: 'purge-data', value: 3 } } });
  });

  test('a baud rate with 0xFF bytes round-trips (the telnet framing doubles IAC, not the codec)', () => {
    const payload = encodeComPort({ sender: 'client', command: { name: 'set-baudrate', value: 0xffffffff } });
    assert.equal(hex(payload), '01ffffffff');
    assert.deepEqual(decodeComPort(payload), { ok: true, message: { sender: 'client', command: { name: 'set-baudrate', value: 0xffffffff } } });
  });

  test('malformed payloads are errors with stable codes, never exceptions', () => {
    const cases: Array<[Buffer, string]> = [
      [Buffer.alloc(0), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.of(1, 0, 0), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.of(2), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.of(2, 8, 8), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.of(9, 0), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.concat([Buffer.of(0), Buffer.alloc(MAX_SIGNATURE_BYTES + 1, 0x41)]), 'VSPC_COMPORT_MALFORMED'],
      [Buffer.of(13, 1), 'VSPC_COMPORT_UNKNOWN'],
      [Buffer.of(99), 'VSPC_COMPORT_UNKNOWN'],
      [Buffer.of(113, 1), 'VSPC_COMPORT_UNKNOWN'],
      [Buffer.of(255, 255), 'VSPC_COMPORT_UNKNOWN'],
    ];
    for (const [payload, code] of cases) {
      const r = decodeComPort(payload);
      assert.equal(r.ok, false, hex(payload));
      if (!r.ok) assert.equal(r.error.code, code, hex(payload));
    }
  });
});

/** A backend that records; `line` is the serial line, `apply` may be made asynchronous. */
function harness(opts: { line?: ComPortLine; canApply?: boolean; deferApply?: boolean; refuse?: (c: ComPortLine) => boolean } = {}) {
  const sent: Buffer[] = [];
  const events: string[] = [];
  let line: ComPortLine = { ...(opts.line ?? {}) };
  const deferred: Array<() => void> = [];
  const backend: ComPortServerBackend = {
    send: (p) => sent.push(p),
    current: () => ({ ...line }),
    setBreak: (on) => {
      events.push(`break ${on ? 'on' : 'off'}`);
      return on;
    },
    purge: (which) => events.push(`purge ${which}`),
    suspend: (s) => events.push(s ? 'suspend' : 'resume'),
    signature: (t) => events.push(`signature ${t}`),
    ignored: (reason) => events.push(`ignored ${reason}`),
  };
  if (opts.canApply ?? true) {
    backend.apply = (change) => {
      const run = (): ComPortLine => {
        if (!opts.refuse?.(change)) line = { ...line, ...change };
        return { ...line };
      };
      if (!opts.deferApply) return run();
      return new Promise<ComPortLine>((resolve) => deferred.push(() => resolve(run())));
    };
  }
  const server = new ComPortServer(backend, { signature: 'vspc test' });
  const answers = () => sent.map(hex);
  return { server, sent, events, answers, deferred, get line() { return line; } };
}

const cmd = (...bytes: number[]) => Buffer.from(bytes);

describe('RFC 2217 access server', () => {
  test('SET-BAUDRATE applies and answers 101 with the rate in effect; 0 queries', () => {
    const h = harness({ line: { baudRate: 115200 } });
    h.server.receive(cmd(1, 0, 0, 0, 0));
    h.server.receive(cmd(1, 0, 0, 0x25, 0x80));
    assert.deepEqual(h.answers(), ['650001c200', '6500002580']);
    assert.equal(h.line.baudRate, 9600);
  });

  test('SET-DATASIZE / PARITY / STOPSIZE: applied, answered with the value in effect; queries and reserved values answer the current value', () => {
    const h = harness({ line: { dataSize: 8, parity: 'none', stopBits: '1' } });
    h.server.receive(cmd(2, 0));
    h.server.receive(cmd(2, 7));
    h.server.receive(cmd(2, 9)); // reserved
    h.server.receive(cmd(3, 0));
    h.server.receive(cmd(3, 2)); // odd
    h.server.receive(cmd(3, 6)); // reserved
    h.server.receive(cmd(4, 2));
    h.server.receive(cmd(4, 3)); // 1.5
    h.server.receive(cmd(4, 0));
    assert.deepEqual(h.answers(), ['6608', '6607', '6607', '6701', '6702', '6702', '6802', '6803', '6803']);
    assert.deepEqual(h.line, { dataSize: 7, parity: 'odd', stopBits: '1.5' });
  });

  test('a refused change is answered with the unchanged value', () => {
    const h = harness({ line: { parity: 'none', baudRate: 9600 }, refuse: (c) => c.parity === 'mark' || c.baudRate === 12345 });
    h.server.receive(cmd(3, 4));
    h.server.receive(cmd(1, 0, 0, 0x30, 0x39));
    assert.deepEqual(h.answers(), ['6701', '6500002580']);
  });

  test('without apply (a source that cannot change its line) every SET-* answers the current value; unknown values are 0', () => {
    const h = harness({ canApply: false, line: { baudRate: 115200 } });
    h.server.receive(cmd(1, 0, 0, 0x25, 0x80));
    h.server.receive(cmd(2, 7));
    h.server.receive(cmd(5, C.FLOW_HARDWARE));
    assert.deepEqual(h.answers(), ['650001c200', '6600', '6901']);
  });

  test('SET-CONTROL: flow control set and queried (outbound and inbound), DCD/DSR flow not offered', () => {
    const h = harness({ line: { flow: 'none' } });
    for (const v of [C.REQUEST_FLOW, C.FLOW_HARDWARE, C.REQUEST_FLOW, C.REQUEST_INBOUND_FLOW, C.INBOUND_FLOW_NONE, C.FLOW_DCD, C.FLOW_XON_XOFF, C.REQUEST_INBOUND_FLOW, C.FLOW_NONE]) {
      h.server.receive(cmd(5, v));
    }
    assert.deepEqual(h.answers(), ['6901', '6903', '6903', '6910', '6910', '6903', '6902', '690f', '6901']);
    assert.equal(h.line.flow, 'none');
  });

  test('SET-CONTROL: BREAK on/off reaches the backend and is answered with the state; DTR/RTS stay asserted; reserved values are ignored', () => {
    const h = harness();
    for (const v of [C.REQUEST_BREAK, C.BREAK_ON, C.REQUEST_BREAK, C.BREAK_OFF, C.DTR_OFF, C.REQUEST_DTR, C.RTS_OFF, 20, 127]) h.server.receive(cmd(5, v));
    assert.deepEqual(h.answers(), ['6906', '6905', '6905', '6906', '6908', '6908', '690b']);
    assert.deepEqual(h.events, ['break on', 'break off', 'ignored SET-CONTROL 20 is reserved', 'ignored SET-CONTROL 127 is reserved']);
    assert.equal(h.server.state.breakOn, false);
  });

  test('a refused BREAK-ON is answered BREAK-OFF', () => {
    const h = harness();
    (h.server as unknown as { backend: ComPortServerBackend }).backend.setBreak = () => false;
    h.server.receive(cmd(5, C.BREAK_ON));
    assert.deepEqual(h.answers(), ['6906']);
  });

  test('masks are recorded and echoed; PURGE-DATA acknowledged; SUSPEND/RESUME not answered', () => {
    const h = harness();
    h.server.receive(cmd(10, 0x10));
    h.server.receive(cmd(11, 0x30));
    h.server.receive(cmd(12, 1));
    h.server.receive(cmd(12, 3));
    h.server.receive(cmd(12, 4));
    h.server.receive(cmd(8));
    h.server.receive(cmd(8));
    h.server.receive(cmd(9));
    assert.deepEqual(h.answers(), ['6e10', '6f30', '7001', '7003']);
    assert.deepEqual(h.events, ['purge receive', 'purge both', 'ignored PURGE-DATA 4 is not 1, 2 or 3', 'suspend', 'resume']);
    assert.equal(h.server.state.lineStateMask, 0x10);
    assert.equal(h.server.state.modemStateMask, 0x30);
  });

  test('SIGNATURE: a request gets ours; the client’s text is kept, sanitised, and not answered', () => {
    const h = harness();
    h.server.receive(cmd(0));
    h.server.receive(Buffer.concat([Buffer.of(0), Buffer.from('pyserial\x1b[2J')]));
    assert.deepEqual(h.sent.map((b) => [b[0], b.subarray(1).toString()]), [[100, 'vspc test']]);
    assert.deepEqual(h.events, ['signature pyserial?[2J']);
  });

  test('NOTIFY-* and server codes from a client, and bad payloads, are ignored without an answer', () => {
    const h = harness();
    h.server.receive(cmd(6, 0));
    h.server.receive(cmd(107, 0));
    h.server.receive(cmd(1, 0));
    h.server.receive(cmd(50));
    assert.deepEqual(h.answers(), []);
    assert.equal(h.events.length, 4);
  });

  test('answers keep the order of the commands while an apply is pending', async () => {
    const h = harness({ line: { baudRate: 115200, dataSize: 8 }, deferApply: true });
    h.server.receive(cmd(1, 0, 0, 0x25, 0x80));
    h.server.receive(cmd(10, 0xff));
    h.server.receive(cmd(2, 7));
    assert.deepEqual(h.answers(), [], 'nothing answered before the first apply completed');
    assert.equal(h.server.pending, 3);
    h.deferred.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(h.answers(), ['6500002580', '6eff']);
    h.deferred.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(h.answers(), ['6500002580', '6eff', '6607']);
    assert.equal(h.server.pending, 0);
  });

  test('at most MAX_PENDING_COMMANDS wait behind a pending apply; close() drops them', async () => {
    const h = harness({ deferApply: true });
    h.server.receive(cmd(1, 0, 0, 0x25, 0x80));
    for (let i = 0; i < MAX_PENDING_COMMANDS + 5; i++) h.server.receive(cmd(10, i));
    assert.equal(h.events.filter((e) => e.includes('already waiting')).length, 5);
    h.server.close();
    h.deferred.shift()!();
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(h.answers(), []);
  });

  test('an apply that rejects is answered with the current value', async () => {
    const sent: Buffer[] = [];
    const server = new ComPortServer(
      { send: (p) => sent.push(p), current: () => ({ baudRate: 57600 }), apply: () => Promise.reject(new Error('device gone')) },
      { signature: 'x' },
    );
    server.receive(cmd(1, 0, 0, 0x25, 0x80));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(sent.map(hex), ['650000e100']);
  });

  test('the codes are RFC 2217’s, and the same as the ESXi side’s (src/protocol/vmware/codes.ts)', () => {
    assert.equal(ComPort.SET_BAUDRATE, 1);
    assert.equal(ComPort.PURGE_DATA, 12);
    assert.equal(C.INBOUND_FLOW_DTR, 18);
    assert.deepEqual({ ...vmware.ComPort }, { ...ComPort });
    assert.deepEqual({ ...vmware.ComPortControl }, { ...C });
    assert.deepEqual({ ...vmware.ComPortPurge }, { ...ComPortPurge });
  });
});
