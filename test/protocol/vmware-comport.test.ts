/**
 * RFC 2217 (COM-PORT-OPTION) as vspc answers it, once it agreed to the option: the
 * ESXi host is the client (WILL COM-PORT), vspc the access server. Every command the
 * RFC has the access server answer gets code + 100 and the value in effect; the rest
 * is recorded or ignored as the RFC says. Example tests per command, then seeded
 * property tests over random command streams.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { recordProtocol } from './vmware-harness.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { IAC, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { ComPort, ComPortControl as C } from '../../src/protocol/vmware/codes.js';
import { MAX_SIGNATURE, type ComPortState } from '../../src/protocol/vmware/server-protocol.js';
import { VERSION } from '../../src/version.js';

const sb = (...payload: number[]) => encodeSubnegotiation(Option.COM_PORT, Buffer.from(payload));

/** A protocol that agreed to COM-PORT, recording the new handlers too. */
function agreed(options: { signature?: string } = {}) {
  const states: ComPortState[] = [];
  const breaks: number[] = [];
  const flow: boolean[] = [];
  const purges: string[] = [];
  const ignored: Array<[number, number | null]> = [];
  const r = recordProtocol(
    { comPort: true, ...options },
    {
      comPortState: (s) => states.push({ ...s }),
      comPortBreak: () => breaks.push(1),
      flowControl: (suspended) => flow.push(suspended),
      purge: (b) => purges.push(b),
      comPortIgnored: (code, value) => ignored.push([code, value]),
    },
  );
  r.protocol.receive(Buffer.of(IAC, WILL, Option.COM_PORT));
  r.take();
  return { ...r, states, breaks, flow, purges, ignored };
}

/** The COM-PORT replies in `bytes`, as [code, ...value]. */
function replies(bytes: Buffer): number[][] {
  return new TelnetDecoder({ binary: true })
    .decode(bytes)
    .flatMap((t) => (t.type === 'subnegotiation' && t.option === Option.COM_PORT ? [[...t.payload]] : []));
}

describe('RFC 2217: SET-CONTROL (section 3)', () => {
  test('flow control, outbound and inbound: settings echoed, requests answered with the setting (none until set)', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(5, C.REQUEST_FLOW), sb(5, C.REQUEST_INBOUND_FLOW)]));
    assert.deepEqual(replies(r.take()), [[105, C.FLOW_NONE], [105, C.INBOUND_FLOW_NONE]]);
    for (const [set, name] of [
      [C.FLOW_XON_XOFF, 'xon-xoff'],
      [C.FLOW_HARDWARE, 'hardware'],
      [C.FLOW_DCD, 'dcd'],
      [C.FLOW_DSR, 'dsr'],
      [C.FLOW_NONE, 'none'],
    ] as const) {
      r.protocol.receive(Buffer.concat([sb(5, set), sb(5, C.REQUEST_FLOW)]));
      assert.deepEqual(replies(r.take()), [[105, set], [105, set]]);
      assert.equal(r.protocol.comPortState.flowControl, name);
    }
    for (const [set, name] of [
      [C.INBOUND_FLOW_XON_XOFF, 'xon-xoff'],
      [C.INBOUND_FLOW_HARDWARE, 'hardware'],
      [C.INBOUND_FLOW_DTR, 'dtr'],
      [C.INBOUND_FLOW_NONE, 'none'],
    ] as const) {
      r.protocol.receive(Buffer.concat([sb(5, set), sb(5, C.REQUEST_INBOUND_FLOW)]));
      assert.deepEqual(replies(r.take()), [[105, set], [105, set]]);
      assert.equal(r.protocol.comPortState.inboundFlowControl, name);
    }
  });

  test('BREAK: ON/OFF echoed and recorded, the request answered; only the rising edge is a BREAK from the guest', () => {
    const r = agreed();
    r.protocol.receive(sb(5, C.REQUEST_BREAK));
    assert.deepEqual(replies(r.take()), [[105, C.BREAK_OFF]]);
    r.protocol.receive(Buffer.concat([sb(5, C.BREAK_ON), sb(5, C.REQUEST_BREAK), sb(5, C.BREAK_ON)]));
    assert.deepEqual(replies(r.take()), [[105, C.BREAK_ON], [105, C.BREAK_ON], [105, C.BREAK_ON]]);
    assert.equal(r.protocol.comPortState.break, true);
    assert.equal(r.breaks.length, 1, 'held on: one BREAK');
    r.protocol.receive(Buffer.concat([sb(5, C.BREAK_OFF), sb(5, C.REQUEST_BREAK), sb(5, C.BREAK_ON)]));
    assert.deepEqual(replies(r.take()), [[105, C.BREAK_OFF], [105, C.BREAK_OFF], [105, C.BREAK_ON]]);
    assert.equal(r.breaks.length, 2, 'off then on again: a second BREAK');
  });

  test('DTR and RTS: ON/OFF echoed and recorded; requests answered (on until set)', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(5, C.REQUEST_DTR), sb(5, C.REQUEST_RTS)]));
    assert.deepEqual(replies(r.take()), [[105, C.DTR_ON], [105, C.RTS_ON]]);
    r.protocol.receive(Buffer.concat([sb(5, C.DTR_OFF), sb(5, C.RTS_OFF), sb(5, C.REQUEST_DTR), sb(5, C.REQUEST_RTS)]));
    assert.deepEqual(replies(r.take()), [[105, C.DTR_OFF], [105, C.RTS_OFF], [105, C.DTR_OFF], [105, C.RTS_OFF]]);
    assert.deepEqual([r.protocol.comPortState.dtr, r.protocol.comPortState.rts], [false, false]);
    r.protocol.receive(Buffer.concat([sb(5, C.DTR_ON), sb(5, C.RTS_ON)]));
    assert.deepEqual(replies(r.take()), [[105, C.DTR_ON], [105, C.RTS_ON]]);
    assert.deepEqual(r.states.at(-1), { suspended: false, lineStateMask: 0, modemStateMask: 255, dtr: true, rts: true });
  });

  test('reserved values (20-127) and a missing or extra value byte: no answer, nothing changes', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(5, 20), sb(5, 127), sb(5), sb(5, 1, 1)]));
    assert.deepEqual(replies(r.take()), []);
    assert.deepEqual(r.ignored, [[5, 20], [5, 127], [5, null], [5, null]]);
    assert.deepEqual(r.states, []);
  });
});

describe('RFC 2217: flow control, masks, purge, signature (sections 2, 4, 5)', () => {
  test('FLOWCONTROL-SUSPEND/RESUME: recorded and reported once per change, never answered', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(8), sb(8), sb(9), sb(9), sb(8)]));
    assert.deepEqual(replies(r.take()), []);
    assert.deepEqual(r.flow, [true, false, true]);
    assert.equal(r.protocol.comPortState.suspended, true);
  });

  test('SET-LINESTATE-MASK / SET-MODEMSTATE-MASK: recorded and answered with the mask (RFC defaults 0 and 255)', () => {
    const r = agreed();
    assert.deepEqual([r.protocol.comPortState.lineStateMask, r.protocol.comPortState.modemStateMask], [0, 255]);
    r.protocol.receive(Buffer.concat([sb(10, 0x1e), sb(11, 0xff), sb(11, 0x30)]));
    assert.deepEqual(replies(r.take()), [[110, 0x1e], [111, 0xff], [111, 0x30]]);
    assert.deepEqual([r.protocol.comPortState.lineStateMask, r.protocol.comPortState.modemStateMask], [0x1e, 0x30]);
  });

  test('PURGE-DATA 1/2/3: the buffers named, answered with the value; other values ignored', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(12, 1), sb(12, 2), sb(12, 3), sb(12, 0), sb(12, 4)]));
    assert.deepEqual(replies(r.take()), [[112, 1], [112, 2], [112, 3]]);
    assert.deepEqual(r.purges, ['receive', 'transmit', 'both']);
    assert.deepEqual(r.ignored, [[12, 0], [12, 4]]);
  });

  test("SIGNATURE without text asks for vspc's (answered with code 100); with text it is the host's (recorded, not answered)", () => {
    const r = agreed();
    r.protocol.receive(sb(0));
    assert.deepEqual(replies(r.take()), [[100, ...Buffer.from(`vspc ${VERSION}`)]]);
    const own = agreed({ signature: 'x\u00ffy' });
    own.protocol.receive(sb(0));
    assert.deepEqual(replies(own.take()), [[100, ...Buffer.from('x\u00ffy', 'utf8')]], 'a 0xFF in the text travels as IAC IAC');
    r.protocol.receive(sb(0, ...Buffer.from('VMware ESX 8.0\r\n\u0007')));
    assert.deepEqual(replies(r.take()), []);
    assert.equal(r.protocol.comPortState.signature, 'VMware ESX 8.0???');
    r.protocol.receive(sb(0, ...Buffer.alloc(1000, 0x41)));
    assert.equal(r.protocol.comPortState.signature!.length, MAX_SIGNATURE);
  });

  test('NOTIFY-LINESTATE/MODEMSTATE (access server → client only), undefined codes and server codes from the host: ignored', () => {
    const r = agreed();
    r.protocol.receive(Buffer.concat([sb(6, 0x60), sb(7, 0xb0), sb(7), sb(13, 1), sb(99), sb(101, 0, 0, 0x25, 0x80), sb(105, 5)]));
    assert.deepEqual(replies(r.take()), []);
    assert.deepEqual(r.ignored.map(([c]) => c), [6, 7, 7, 13, 99, 101, 105]);
    assert.deepEqual(r.breaks, []);
  });

  test('nothing is answered while COM-PORT is not agreed', () => {
    const r = recordProtocol({ comPort: false });
    r.protocol.receive(Buffer.concat([Buffer.of(IAC, WILL, Option.COM_PORT), sb(5, 5), sb(0), sb(10, 1)]));
    assert.deepEqual(replies(r.take()), []);
  });
});

/** What RFC 2217 has the access server answer to one client command; null: no answer. */
function expectedAnswer(cmd: number[], before: ComPortState): number[] | null {
  const [code, ...value] = cmd;
  const v = value.length === 1 ? value[0] : null;
  switch (code) {
    case ComPort.SIGNATURE:
      return value.length === 0 ? [100, ...Buffer.from(`vspc ${VERSION}`)] : null;
    case ComPort.SET_BAUDRATE:
      return value.length === 4 ? [101] : null; // value checked by the UART tests
    case ComPort.SET_DATASIZE:
    case ComPort.SET_PARITY:
    case ComPort.SET_STOPSIZE:
      return v === null ? null : [code + 100];
    case ComPort.SET_CONTROL: {
      if (v === null || v > 19) return null;
      const requests: Record<number, number> = {
        [C.REQUEST_FLOW]: { none: 1, 'xon-xoff': 2, hardware: 3, dcd: 17, dsr: 19 }[before.flowControl ?? 'none'],
        [C.REQUEST_INBOUND_FLOW]: { none: 14, 'xon-xoff': 15, hardware: 16, dtr: 18 }[before.inboundFlowControl ?? 'none'],
        [C.REQUEST_BREAK]: before.break ? 5 : 6,
        [C.REQUEST_DTR]: (before.dtr ?? true) ? 8 : 9,
        [C.REQUEST_RTS]: (before.rts ?? true) ? 11 : 12,
      };
      return [105, requests[v] ?? v];
    }
    case ComPort.SET_LINESTATE_MASK:
    case ComPort.SET_MODEMSTATE_MASK:
      return v === null ? null : [code + 100, v];
    case ComPort.PURGE_DATA:
      return v !== null && v >= 1 && v <= 3 ? [112, v] : null;
    default:
      return null;
  }
}

describe('RFC 2217: property tests (seeded)', () => {
  const command = fc.oneof(
    fc.tuple(fc.integer({ min: 0, max: 13 }), fc.integer({ min: 0, max: 30 })).map(([c, v]) => [c, v]),
    fc.integer({ min: 0, max: 12 }).map((c) => [c]),
    fc.tuple(fc.constantFrom(0, 1), fc.uint8Array({ minLength: 0, maxLength: 6 })).map(([c, b]) => [c, ...b]),
    fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 3 })).map(([c, b]) => [c, ...b]),
  );

  test('every command gets exactly the answer RFC 2217 gives it, in order, in any chunking', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 40 }), fc.array(fc.nat(), { maxLength: 10 }), (cmds, cuts) => {
        const r = agreed();
        const wire = Buffer.concat(cmds.map((c) => sb(...c)));
        const points = [...new Set(cuts.map((c) => c % (wire.length + 1)))].sort((a, b) => a - b);
        let state: ComPortState = { ...r.protocol.comPortState };
        const expected: number[][] = [];
        for (const c of cmds) {
          const a = expectedAnswer(c, state);
          if (a) expected.push(a);
          // Apply the command to the model through a fresh protocol (the settings' own tests pin their effect).
          const m = agreed();
          m.protocol.receive(Buffer.concat([...stateCommands(state), sb(...c)]));
          state = { ...m.protocol.comPortState, signature: undefined };
        }
        let at = 0;
        for (const p of [...points, wire.length]) {
          r.protocol.receive(wire.subarray(at, p));
          at = p;
        }
        const got = replies(r.take());
        assert.equal(got.length, expected.length);
        got.forEach((g, i) => assert.deepEqual(g.slice(0, expected[i].length), expected[i]));
        assert.deepEqual(r.errors, [], 'COM-PORT payloads never break the connection');
      }),
      { seed: 2217, numRuns: 300 },
    );
  });
});

/** Commands that put a fresh protocol into `s` (for the model above). */
function stateCommands(s: ComPortState): Buffer[] {
  const out: Buffer[] = [];
  const flow = { none: 1, 'xon-xoff': 2, hardware: 3, dcd: 17, dsr: 19 } as const;
  const inbound = { none: 14, 'xon-xoff': 15, hardware: 16, dtr: 18 } as const;
  if (s.flowControl) out.push(sb(5, flow[s.flowControl]));
  if (s.inboundFlowControl) out.push(sb(5, inbound[s.inboundFlowControl]));
  if (s.break !== undefined) out.push(sb(5, s.break ? 5 : 6));
  if (s.dtr !== undefined) out.push(sb(5, s.dtr ? 8 : 9));
  if (s.rts !== undefined) out.push(sb(5, s.rts ? 11 : 12));
  return out;
}
