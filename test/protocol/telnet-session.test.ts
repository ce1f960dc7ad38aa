import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { TelnetSession } from '../../src/protocol/telnet/session.js';
import { policyFromLists, type OptionPolicy, type Side } from '../../src/protocol/telnet/negotiator.js';
import { ProtocolError } from '../../src/errors.js';

const b = (...xs: number[]): Buffer => Buffer.from(xs);
const BINARY = 0;

function session(policy: OptionPolicy = policyFromLists({}), decoderOptions = {}) {
  const written: number[][] = [];
  const data: number[][] = [];
  const commands: number[] = [];
  const subs: Array<[number, number[]]> = [];
  const changes: Array<[Side, number, boolean]> = [];
  const refused: Array<[Side, number]> = [];
  const errors: ProtocolError[] = [];
  const s = new TelnetSession(
    policy,
    {
      write: (bytes) => {
        written.push([...bytes]);
        return true;
      },
      data: (d) => data.push([...d]),
      command: (c) => commands.push(c),
      subnegotiation: (o, p) => subs.push([o, [...p]]),
      optionChange: (side, o, e) => changes.push([side, o, e]),
      refused: (side, o) => refused.push([side, o]),
      error: (e) => errors.push(e),
    },
    decoderOptions,
  );
  const takeWritten = () => written.splice(0, written.length);
  const takeData = () => data.splice(0, data.length);
  return { s, written, takeWritten, data, takeData, commands, subs, changes, refused, errors };
}

describe('TelnetSession: peer BINARY drives the decoder', () => {
  test('peer WILL BINARY accepted: DO BINARY written, CR NUL stays CR NUL afterwards', () => {
    const t = session(policyFromLists({ him: [BINARY] }));
    t.s.receive(b(65, 13, 0, 66));
    assert.deepEqual(t.takeData(), [[65, 13, 66]], 'non-binary before negotiation: NUL dropped');
    t.s.receive(b(255, 251, 0));
    assert.deepEqual(t.takeWritten(), [[255, 253, 0]]);
    assert.deepEqual(t.changes, [['him', BINARY, true]]);
    assert.equal(t.s.isEnabled('him', BINARY), true);
    t.s.receive(b(65, 13, 0, 66));
    assert.deepEqual(t.takeData(), [[65, 13, 0, 66]], 'binary: CR NUL kept');
  });

  test('peer WILL BINARY refused: DONT written, decoder stays non-binary', () => {
    const t = session(policyFromLists({}));
    t.s.receive(b(255, 251, 0));
    assert.deepEqual(t.takeWritten(), [[255, 254, 0]]);
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13]]);
  });

  test('our DO BINARY request answered with WILL switches the decoder; WONT switches back', () => {
    const t = session(policyFromLists({}));
    t.s.requestHim(BINARY);
    assert.deepEqual(t.takeWritten(), [[255, 253, 0]]);
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13]], 'still non-binary while WANTYES');
    t.s.receive(b(255, 251, 0));
    assert.deepEqual(t.takeWritten(), []);
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13, 0]]);
    t.s.receive(b(255, 252, 0));
    assert.deepEqual(t.takeWritten(), [[255, 254, 0]]);
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13]]);
    assert.deepEqual(t.changes, [
      ['him', BINARY, true],
      ['him', BINARY, false],
    ]);
  });

  test('our BINARY (DO from the peer) does not change how we decode', () => {
    const t = session(policyFromLists({ us: [BINARY] }));
    t.s.receive(b(255, 253, 0));
    assert.deepEqual(t.takeWritten(), [[255, 251, 0]]);
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13]]);
  });

  test('decoderOptions.binary starts the decoder in binary mode', () => {
    const t = session(policyFromLists({}), { binary: true });
    t.s.receive(b(13, 0));
    assert.deepEqual(t.takeData(), [[13, 0]]);
  });

  test('refused request is reported', () => {
    const t = session();
    t.s.requestUs(BINARY);
    t.s.receive(b(255, 254, 0));
    assert.deepEqual(t.refused, [['us', BINARY]]);
  });
});

describe('TelnetSession: sending', () => {
  test('sendData escapes 255 and uses CR NUL only while our BINARY is off', () => {
    const t = session(policyFromLists({ us: [BINARY] }));
    t.s.sendData(b(13, 255, 65, 13, 10));
    assert.deepEqual(t.takeWritten(), [[13, 0, 255, 255, 65, 13, 10]]);
    t.s.receive(b(255, 253, 0)); // peer DO BINARY
    assert.deepEqual(t.takeWritten(), [[255, 251, 0]]);
    assert.equal(t.s.isEnabled('us', BINARY), true);
    t.s.sendData(b(13, 255, 65, 13, 10));
    assert.deepEqual(t.takeWritten(), [[13, 255, 255, 65, 13, 10]]);
    t.s.receive(b(255, 254, 0)); // peer DONT BINARY
    assert.deepEqual(t.takeWritten(), [[255, 252, 0]]);
    t.s.sendData(b(13));
    assert.deepEqual(t.takeWritten(), [[13, 0]]);
  });

  test('sendData keeps CR NUL while our BINARY request is still pending', () => {
    const t = session();
    t.s.requestUs(BINARY);
    assert.deepEqual(t.takeWritten(), [[255, 251, 0]]);
    t.s.sendData(b(13));
    assert.deepEqual(t.takeWritten(), [[13, 0]]);
    t.s.receive(b(255, 253, 0));
    assert.deepEqual(t.takeWritten(), []);
    t.s.sendData(b(13));
    assert.deepEqual(t.takeWritten(), [[13]]);
  });

  test('the peer binary state does not affect what we send', () => {
    const t = session(policyFromLists({ him: [BINARY] }));
    t.s.receive(b(255, 251, 0));
    t.takeWritten();
    t.s.sendData(b(13));
    assert.deepEqual(t.takeWritten(), [[13, 0]]);
  });

  test('sendCommand, sendSubnegotiation, sendRawNegotiation write exact bytes and return write()s result', () => {
    const t = session();
    assert.equal(t.s.sendCommand(241), true);
    assert.equal(t.s.sendSubnegotiation(232, b(1, 255)), true);
    t.s.sendSubnegotiation(24);
    t.s.sendRawNegotiation(251, 232);
    assert.deepEqual(t.takeWritten(), [
      [255, 241],
      [255, 250, 232, 1, 255, 255, 255, 240],
      [255, 250, 24, 255, 240],
      [255, 251, 232],
    ]);
    // Raw negotiation bypasses the Q method: no state change.
    assert.equal(t.s.isEnabled('us', 232), false);
  });

  test('sendData returns what write() returned (backpressure)', () => {
    let ret = false;
    const s = new TelnetSession(policyFromLists({}), { write: () => ret });
    assert.equal(s.sendData(b(1)), false);
    ret = true;
    assert.equal(s.sendData(b(1)), true);
  });
});

describe('TelnetSession: receiving', () => {
  test('tokens are dispatched to the handlers in order', () => {
    const order: string[] = [];
    const s = new TelnetSession(policyFromLists({}), {
      write: () => true,
      data: (d) => order.push(`data:${[...d].join(',')}`),
      command: (c) => order.push(`cmd:${c}`),
      subnegotiation: (o, p) => order.push(`sb:${o}:${[...p].join(',')}`),
    });
    s.receive(b(65, 255, 241, 66, 255, 250, 24, 0, 255, 255, 255, 240, 67));
    assert.deepEqual(order, ['data:65', 'cmd:241', 'data:66', 'sb:24:0,255', 'data:67']);
  });

  test('inSubnegotiation follows the decoder', () => {
    const t = session();
    t.s.receive(b(255, 250, 232, 1));
    assert.equal(t.s.inSubnegotiation, true);
    t.s.receive(b(255, 240));
    assert.equal(t.s.inSubnegotiation, false);
    assert.deepEqual(t.subs, [[232, [1]]]);
  });
});

describe('TelnetSession: errors', () => {
  const cases: Array<[string, number[]]> = [
    ['TELNET_BAD_COMMAND', [65, 255, 100, 66]],
    ['TELNET_BAD_SB_ESCAPE', [65, 255, 250, 232, 1, 255, 1, 255, 240]],
    ['TELNET_SB_TOO_LONG', [65, 255, 250, 232, 1, 2, 3, 4, 5, 255, 240]],
  ];
  for (const [code, bytes] of cases) {
    test(`${code}: error handler called once with a ProtocolError, later input ignored`, () => {
      const t = session(policyFromLists({ us: [BINARY], him: [BINARY] }), { maxSubnegotiation: 4 });
      t.s.receive(Buffer.from(bytes));
      assert.deepEqual(t.takeData(), [[65]], 'data before the error is delivered');
      assert.equal(t.errors.length, 1);
      const e = t.errors[0];
      assert.ok(e instanceof ProtocolError);
      assert.equal(e.code, code);
      assert.equal(typeof e.context.offset, 'number');
      assert.equal(t.s.hasFailed, true);

      t.s.receive(b(66, 255, 251, 0, 255, 241, 255, 250, 1, 2, 255, 240));
      t.s.receive(b(255, 100));
      assert.deepEqual(t.data, []);
      assert.deepEqual(t.commands, []);
      assert.deepEqual(t.subs, []);
      assert.deepEqual(t.written, [], 'no negotiation answered after the error');
      assert.equal(t.errors.length, 1);
    });
  }

  test('a healthy session has not failed', () => {
    const t = session();
    t.s.receive(b(1, 255, 241));
    assert.equal(t.s.hasFailed, false);
    assert.deepEqual(t.errors, []);
  });

  test('fail() from an upper layer reports once and stops further input, even mid-chunk', () => {
    const errors: ProtocolError[] = [];
    const seen: number[][] = [];
    let s!: TelnetSession;
    s = new TelnetSession(policyFromLists({ him: [BINARY] }), {
      write: () => {
        throw new Error('nothing should be written');
      },
      data: (d) => {
        seen.push([...d]);
        s.fail(new ProtocolError('VSPC_BAD_EXT', 'upper layer rejected data'));
      },
      error: (e) => errors.push(e),
    });
    // The WILL BINARY after the data must not be answered: the session failed first.
    s.receive(b(65, 255, 251, 0, 66));
    assert.deepEqual(seen, [[65]]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 'VSPC_BAD_EXT');
    s.fail(new ProtocolError('VSPC_BAD_NAME', 'again'));
    assert.equal(errors.length, 1);
    s.receive(b(67));
    assert.deepEqual(seen, [[65]]);
    assert.equal(s.hasFailed, true);
  });
});

describe('TelnetSession: two sessions back to back', () => {
  function link(policyA: OptionPolicy, policyB: OptionPolicy) {
    const received: { A: number[]; B: number[] } = { A: [], B: [] };
    let a!: TelnetSession;
    let b2!: TelnetSession;
    a = new TelnetSession(policyA, {
      write: (bytes) => {
        b2.receive(Buffer.from(bytes));
        return true;
      },
      data: (d) => received.A.push(...d),
    });
    b2 = new TelnetSession(policyB, {
      write: (bytes) => {
        a.receive(Buffer.from(bytes));
        return true;
      },
      data: (d) => received.B.push(...d),
    });
    return { a, b: b2, received };
  }

  test('data with CR, NUL and 255 arrives intact before and after BINARY is negotiated', () => {
    const payload = b(13, 0, 13, 10, 255, 13, 255, 0, 13);
    const l = link(policyFromLists({}), policyFromLists({ him: [BINARY] }));
    l.a.sendData(payload);
    assert.deepEqual(l.received.B, [...payload]);
    l.received.B = [];
    l.a.requestUs(BINARY);
    assert.equal(l.a.isEnabled('us', BINARY), true);
    assert.equal(l.b.isEnabled('him', BINARY), true);
    l.a.sendData(payload);
    assert.deepEqual(l.received.B, [...payload]);
  });
});
