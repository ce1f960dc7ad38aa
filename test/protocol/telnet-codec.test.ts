import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { TelnetDecoder, DEFAULT_MAX_SUBNEGOTIATION } from '../../src/protocol/telnet/decoder.js';
import {
  encodeCommand,
  encodeData,
  encodeNegotiation,
  encodeSubnegotiation,
  encodeToken,
} from '../../src/protocol/telnet/encoder.js';
import type { TelnetToken } from '../../src/protocol/telnet/tokens.js';

/** Plain, comparable view of a token (Buffers become number arrays; errors keep only the code). */
type Plain =
  | { type: 'data'; data: number[] }
  | { type: 'command'; command: number }
  | { type: 'negotiation'; verb: number; option: number }
  | { type: 'subnegotiation'; option: number; payload: number[] }
  | { type: 'error'; code: string };

function plain(tokens: TelnetToken[]): Plain[] {
  return tokens.map((t): Plain => {
    switch (t.type) {
      case 'data':
        return { type: 'data', data: [...t.data] };
      case 'command':
        return { type: 'command', command: t.command };
      case 'negotiation':
        return { type: 'negotiation', verb: t.verb, option: t.option };
      case 'subnegotiation':
        return { type: 'subnegotiation', option: t.option, payload: [...t.payload] };
      case 'error':
        return { type: 'error', code: t.code };
    }
  });
}

const b = (...xs: number[]): Buffer => Buffer.from(xs);
const data = (...xs: number[]): Plain => ({ type: 'data', data: xs });
const cmd = (command: number): Plain => ({ type: 'command', command });
const neg = (verb: number, option: number): Plain => ({ type: 'negotiation', verb, option });
const sb = (option: number, ...payload: number[]): Plain => ({ type: 'subnegotiation', option, payload });
const err = (code: string): Plain => ({ type: 'error', code });

function decodeOne(bytes: number[], binary = true): Plain[] {
  return plain(new TelnetDecoder({ binary }).decode(Buffer.from(bytes)));
}

/** Decodes chunk by chunk, returning the tokens of each call. */
function decodeChunks(dec: TelnetDecoder, chunks: number[][]): Plain[][] {
  return chunks.map((c) => plain(dec.decode(Buffer.from(c))));
}

describe('telnet decoder: token kinds', () => {
  test('plain data is one data token with the same bytes', () => {
    assert.deepEqual(decodeOne([104, 105, 0, 10, 13, 254]), [data(104, 105, 0, 10, 13, 254)]);
  });

  test('empty chunk yields no tokens', () => {
    assert.deepEqual(decodeOne([]), []);
  });

  test('IAC IAC is one literal 255 data byte', () => {
    assert.deepEqual(decodeOne([255, 255]), [data(255)]);
    assert.deepEqual(decodeOne([65, 255, 255, 66, 255, 255, 255, 255]), [data(65, 255, 66, 255, 255)]);
  });

  const commands: Array<[string, number]> = [
    ['xEOF', 236],
    ['SUSP', 237],
    ['ABORT', 238],
    ['EOR', 239],
    ['NOP', 241],
    ['DM', 242],
    ['BRK', 243],
    ['IP', 244],
    ['AO', 245],
    ['AYT', 246],
    ['EC', 247],
    ['EL', 248],
    ['GA', 249],
  ];
  for (const [name, code] of commands) {
    test(`IAC ${name} (${code}) is a command token`, () => {
      assert.deepEqual(decodeOne([255, code]), [cmd(code)]);
    });
  }

  test('IAC SE outside a subnegotiation is reported as command 240', () => {
    assert.deepEqual(decodeOne([255, 240]), [cmd(240)]);
  });

  const verbs: Array<[string, number]> = [
    ['WILL', 251],
    ['WONT', 252],
    ['DO', 253],
    ['DONT', 254],
  ];
  for (const [name, verb] of verbs) {
    test(`IAC ${name} option is a negotiation token`, () => {
      assert.deepEqual(decodeOne([255, verb, 1]), [neg(verb, 1)]);
      assert.deepEqual(decodeOne([255, verb, 0]), [neg(verb, 0)]);
      assert.deepEqual(decodeOne([255, verb, 232]), [neg(verb, 232)]);
      assert.deepEqual(decodeOne([255, verb, 255]), [neg(verb, 255)]);
    });
  }

  test('subnegotiation with plain payload', () => {
    assert.deepEqual(decodeOne([255, 250, 24, 1, 255, 240]), [sb(24, 1)]);
    assert.deepEqual(decodeOne([255, 250, 232, 0, 1, 2, 3, 255, 240]), [sb(232, 0, 1, 2, 3)]);
  });

  test('subnegotiation with empty payload', () => {
    assert.deepEqual(decodeOne([255, 250, 31, 255, 240]), [sb(31)]);
  });

  test('subnegotiation payload unescapes IAC IAC', () => {
    assert.deepEqual(decodeOne([255, 250, 232, 255, 255, 7, 255, 255, 255, 255, 255, 240]), [sb(232, 255, 7, 255, 255)]);
  });

  test('subnegotiation payload may contain 240 and 250 and CR without effect', () => {
    assert.deepEqual(decodeOne([255, 250, 44, 240, 250, 13, 0, 13, 255, 240], false), [sb(44, 240, 250, 13, 0, 13)]);
  });

  test('a mixed stream comes out in wire order', () => {
    const bytes = [
      65, // data
      255, 251, 0, // WILL BINARY
      66, 67, // data
      255, 241, // NOP
      255, 250, 24, 0, 255, 255, 255, 240, // SB TTYPE 0 255
      68, // data
      255, 254, 3, // DONT SGA
      255, 246, // AYT
    ];
    assert.deepEqual(decodeOne(bytes), [
      data(65),
      neg(251, 0),
      data(66, 67),
      cmd(241),
      sb(24, 0, 255),
      data(68),
      neg(254, 3),
      cmd(246),
    ]);
  });

  test('data before a command in the same chunk comes out before the command', () => {
    const dec = new TelnetDecoder({ binary: true });
    const tokens = dec.decode(b(104, 101, 108, 108, 111, 255, 244, 119, 111, 255, 253, 1, 33, 255, 250, 1, 2, 255, 240));
    assert.deepEqual(plain(tokens), [
      data(104, 101, 108, 108, 111),
      cmd(244),
      data(119, 111),
      neg(253, 1),
      data(33),
      sb(1, 2),
    ]);
  });

  test('data with an escaped 255 before a command stays before the command', () => {
    assert.deepEqual(decodeOne([1, 255, 255, 2, 255, 249, 3]), [data(1, 255, 2), cmd(249), data(3)]);
  });
});

describe('telnet decoder: CR handling (RFC 854)', () => {
  test('non-binary: CR NUL decodes to CR', () => {
    assert.deepEqual(decodeOne([65, 13, 0, 66], false), [data(65, 13, 66)]);
  });

  test('non-binary: CR LF stays CR LF', () => {
    assert.deepEqual(decodeOne([65, 13, 10, 66], false), [data(65, 13, 10, 66)]);
  });

  test('non-binary: CR CR NUL decodes to CR CR; NUL not after CR is kept', () => {
    assert.deepEqual(decodeOne([13, 13, 0, 0, 65], false), [data(13, 13, 0, 65)]);
  });

  test('non-binary: CR followed by a command keeps the CR and emits the command', () => {
    assert.deepEqual(decodeOne([13, 255, 241, 0], false), [data(13), cmd(241), data(0)]);
  });

  test('non-binary: CR at chunk end then NUL in the next chunk drops the NUL', () => {
    const dec = new TelnetDecoder({ binary: false });
    assert.deepEqual(decodeChunks(dec, [[65, 13], [0, 66]]), [[data(65, 13)], [data(66)]]);
  });

  test('non-binary: CR at chunk end then LF in the next chunk keeps the LF', () => {
    const dec = new TelnetDecoder({ binary: false });
    assert.deepEqual(decodeChunks(dec, [[13], [10]]), [[data(13)], [data(10)]]);
  });

  test('non-binary: CR at chunk end then a lone NUL chunk yields nothing for the NUL', () => {
    const dec = new TelnetDecoder({ binary: false });
    assert.deepEqual(decodeChunks(dec, [[13], [0], [0]]), [[data(13)], [], [data(0)]]);
  });

  test('binary: CR NUL and CR LF are left alone', () => {
    assert.deepEqual(decodeOne([13, 0, 13, 10, 13], true), [data(13, 0, 13, 10, 13)]);
  });

  test('binary flag defaults to false', () => {
    assert.deepEqual(plain(new TelnetDecoder().decode(b(13, 0))), [data(13)]);
  });

  test('the binary flag can be switched between chunks', () => {
    const dec = new TelnetDecoder({ binary: false });
    assert.deepEqual(plain(dec.decode(b(13, 0))), [data(13)]);
    dec.binary = true;
    assert.deepEqual(plain(dec.decode(b(13, 0))), [data(13, 0)]);
    dec.binary = false;
    assert.deepEqual(plain(dec.decode(b(13, 0))), [data(13)]);
  });
});

describe('telnet decoder: chunk boundaries', () => {
  test('IAC at chunk end followed by a command', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[65, 255], [241, 66]]), [[data(65)], [cmd(241), data(66)]]);
  });

  test('IAC at chunk end followed by IAC is a literal 255', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[65, 255], [255, 66]]), [[data(65)], [data(255, 66)]]);
  });

  test('IAC WILL at chunk end, option in the next chunk', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[65, 255, 251], [0, 66]]), [[data(65)], [neg(251, 0), data(66)]]);
  });

  test('IAC, WILL, option in three chunks', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[255], [251], [24]]), [[], [], [neg(251, 24)]]);
  });

  test('IAC SB at chunk end, option in the next chunk', () => {
    const dec = new TelnetDecoder({ binary: true });
    const out = [plain(dec.decode(b(255, 250)))];
    assert.equal(dec.inSubnegotiation, true);
    out.push(plain(dec.decode(b(24, 1, 255, 240))));
    assert.equal(dec.inSubnegotiation, false);
    assert.deepEqual(out, [[], [sb(24, 1)]]);
  });

  test('SB split mid-payload', () => {
    const dec = new TelnetDecoder({ binary: true });
    const out = decodeChunks(dec, [[9, 255, 250, 232, 1, 2], [3, 4], [5, 255, 240, 10]]);
    assert.deepEqual(out, [[data(9)], [], [sb(232, 1, 2, 3, 4, 5), data(10)]]);
  });

  test('IAC inside SB at chunk end, then IAC (escaped 255)', () => {
    const dec = new TelnetDecoder({ binary: true });
    const out = decodeChunks(dec, [[255, 250, 232, 1, 255], [255, 2, 255, 240]]);
    assert.deepEqual(out, [[], [sb(232, 1, 255, 2)]]);
  });

  test('IAC inside SB at chunk end, then SE', () => {
    const dec = new TelnetDecoder({ binary: true });
    const out = decodeChunks(dec, [[255, 250, 232, 1, 255], [240, 7]]);
    assert.deepEqual(out, [[], [sb(232, 1), data(7)]]);
  });

  test('inSubnegotiation is true exactly while an SB is open', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.equal(dec.inSubnegotiation, false);
    dec.decode(b(65, 255));
    assert.equal(dec.inSubnegotiation, false);
    dec.decode(b(250));
    assert.equal(dec.inSubnegotiation, true, 'after IAC SB');
    dec.decode(b(232));
    assert.equal(dec.inSubnegotiation, true, 'after option');
    dec.decode(b(1, 2));
    assert.equal(dec.inSubnegotiation, true, 'in payload');
    dec.decode(b(255));
    assert.equal(dec.inSubnegotiation, true, 'after IAC in payload');
    dec.decode(b(240));
    assert.equal(dec.inSubnegotiation, false, 'after IAC SE');
  });

  test('data tokens are not carried over: each chunk yields its own data', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[1, 2], [3], [4, 5]]), [[data(1, 2)], [data(3)], [data(4, 5)]]);
  });
});

describe('telnet decoder: errors', () => {
  test('IAC followed by a non-command byte: TELNET_BAD_COMMAND, preceding data delivered', () => {
    const dec = new TelnetDecoder({ binary: true });
    const tokens = dec.decode(b(65, 66, 255, 235, 67, 255, 241));
    assert.deepEqual(plain(tokens), [data(65, 66), err('TELNET_BAD_COMMAND')]);
    assert.equal(dec.failed, true);
    const e = tokens[1];
    assert.ok(e.type === 'error');
    assert.equal(e.offset, 3);
    assert.equal(typeof e.message, 'string');
    assert.deepEqual(dec.decode(b(68, 255, 241)), []);
    assert.deepEqual(dec.decode(b(255, 250, 1, 255, 240)), []);
  });

  for (const bad of [0, 1, 13, 200, 235]) {
    test(`IAC ${bad} is TELNET_BAD_COMMAND`, () => {
      const dec = new TelnetDecoder({ binary: true });
      assert.deepEqual(plain(dec.decode(b(255, bad))), [err('TELNET_BAD_COMMAND')]);
      assert.equal(dec.failed, true);
    });
  }

  test('bad command split across chunks: IAC at end, bad byte next', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[65, 255], [100, 66], [67]]), [[data(65)], [err('TELNET_BAD_COMMAND')], []]);
    assert.equal(dec.failed, true);
  });

  test('IAC x inside SB: TELNET_BAD_SB_ESCAPE', () => {
    const dec = new TelnetDecoder({ binary: true });
    const tokens = dec.decode(b(88, 255, 250, 232, 1, 255, 1, 255, 240, 89));
    assert.deepEqual(plain(tokens), [data(88), err('TELNET_BAD_SB_ESCAPE')]);
    assert.equal(dec.failed, true);
    assert.equal(dec.decode(b(255, 241)).length, 0);
    assert.equal(dec.decode(b(65)).length, 0);
  });

  test('the exact issue example IAC SB 232 01 IAC 01 IAC SE', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(plain(dec.decode(b(255, 250, 232, 1, 255, 1, 255, 240))), [err('TELNET_BAD_SB_ESCAPE')]);
    assert.equal(dec.failed, true);
  });

  test('IAC inside SB at chunk end, bad byte in next chunk', () => {
    const dec = new TelnetDecoder({ binary: true });
    assert.deepEqual(decodeChunks(dec, [[255, 250, 232, 1, 255], [241, 255, 240]]), [[], [err('TELNET_BAD_SB_ESCAPE')]]);
    assert.equal(dec.failed, true);
  });

  test('subnegotiation over the bound: TELNET_SB_TOO_LONG', () => {
    const dec = new TelnetDecoder({ binary: true, maxSubnegotiation: 4 });
    const tokens = dec.decode(b(7, 255, 250, 24, 1, 2, 3, 4, 5, 255, 240, 8));
    assert.deepEqual(plain(tokens), [data(7), err('TELNET_SB_TOO_LONG')]);
    assert.equal(dec.failed, true);
    assert.deepEqual(dec.decode(b(9, 255, 250, 24, 255, 240)), []);
  });

  test('subnegotiation exactly at the bound is accepted (bound counts unescaped bytes)', () => {
    const dec = new TelnetDecoder({ binary: true, maxSubnegotiation: 4 });
    assert.deepEqual(plain(dec.decode(b(255, 250, 24, 1, 255, 255, 3, 255, 255, 255, 240))), [sb(24, 1, 255, 3, 255)]);
    assert.equal(dec.failed, false);
  });

  test('over-long subnegotiation split over many chunks fails once the bound is crossed', () => {
    const dec = new TelnetDecoder({ binary: true, maxSubnegotiation: 4 });
    const out = decodeChunks(dec, [[255, 250, 24], [1, 2], [3, 4], [255, 255], [5, 255, 240]]);
    assert.deepEqual(out, [[], [], [], [err('TELNET_SB_TOO_LONG')], []]);
    assert.equal(dec.failed, true);
  });

  test('the default bound is 64 KiB', () => {
    assert.equal(DEFAULT_MAX_SUBNEGOTIATION, 65536);
    const ok = new TelnetDecoder({ binary: true });
    const payload = Buffer.alloc(65536, 7);
    const tokens = ok.decode(Buffer.concat([b(255, 250, 24), payload, b(255, 240)]));
    assert.equal(tokens.length, 1);
    assert.ok(tokens[0].type === 'subnegotiation');
    assert.equal(tokens[0].payload.length, 65536);
    const tooLong = new TelnetDecoder({ binary: true });
    const t2 = tooLong.decode(Buffer.concat([b(255, 250, 24), Buffer.alloc(65537, 7), b(255, 240)]));
    assert.deepEqual(plain(t2), [err('TELNET_SB_TOO_LONG')]);
  });

  test('failed is false until an error; a healthy decoder keeps decoding', () => {
    const dec = new TelnetDecoder({ binary: true });
    dec.decode(b(1, 255, 241, 255, 250, 1, 255, 240));
    assert.equal(dec.failed, false);
    assert.deepEqual(plain(dec.decode(b(2))), [data(2)]);
  });

  test('error offsets count bytes over all chunks', () => {
    const dec = new TelnetDecoder({ binary: true });
    dec.decode(b(1, 2, 3));
    const tokens = dec.decode(b(4, 255, 5));
    const e = tokens[tokens.length - 1];
    assert.ok(e.type === 'error');
    assert.equal(e.code, 'TELNET_BAD_COMMAND');
    assert.equal(e.offset, 5);
  });
});

describe('telnet decoder: buffer ownership', () => {
  test('a kept subnegotiation payload is unaffected by later input and mutation of chunks', () => {
    const dec = new TelnetDecoder({ binary: true });
    const chunk1 = b(255, 250, 232, 10, 20, 30, 255, 240);
    const t1 = dec.decode(chunk1);
    assert.ok(t1[0].type === 'subnegotiation');
    const kept = t1[0].payload;
    assert.deepEqual([...kept], [10, 20, 30]);

    const chunk2 = b(255, 250, 232, 40, 50, 60, 255, 240);
    const t2 = dec.decode(chunk2);
    assert.ok(t2[0].type === 'subnegotiation');
    assert.deepEqual([...t2[0].payload], [40, 50, 60]);

    chunk1.fill(0);
    chunk2.fill(0);
    assert.deepEqual([...kept], [10, 20, 30]);
    assert.deepEqual([...t2[0].payload], [40, 50, 60]);
  });

  test('a payload assembled across chunks is unaffected when those chunks are reused', () => {
    const dec = new TelnetDecoder({ binary: true });
    const c1 = b(255, 250, 232, 1, 2);
    const c2 = b(3, 255, 255, 4, 255, 240);
    dec.decode(c1);
    const t = dec.decode(c2);
    assert.ok(t[0].type === 'subnegotiation');
    const kept = t[0].payload;
    c1.fill(9);
    c2.fill(9);
    // Reuse the same buffer for the next SB, as a socket might.
    c1.set([255, 250, 232, 77, 255]);
    dec.decode(c1);
    assert.deepEqual([...kept], [1, 2, 3, 255, 4]);
  });

  test('a chunk reused by the caller before the SB ends does not corrupt the payload', () => {
    const dec = new TelnetDecoder({ binary: true });
    const chunk = b(255, 250, 232, 1, 2, 3);
    assert.deepEqual(dec.decode(chunk), []);
    // The socket layer hands the same memory back with new content.
    chunk.set([4, 5, 6, 7, 8, 9]);
    const t = dec.decode(chunk.subarray(0, 3));
    assert.deepEqual(t, []);
    const end = dec.decode(b(255, 240));
    assert.deepEqual(plain(end), [sb(232, 1, 2, 3, 4, 5, 6)]);
  });

  test('a lone unescaped 255 data token is not a shared buffer', () => {
    const dec = new TelnetDecoder({ binary: true });
    const t1 = dec.decode(b(255, 255));
    assert.ok(t1[0].type === 'data');
    t1[0].data[0] = 1;
    const t2 = dec.decode(b(255, 255));
    assert.ok(t2[0].type === 'data');
    assert.deepEqual([...t2[0].data], [255]);
  });

  test('accepts a plain Uint8Array view with an offset', () => {
    const backing = new Uint8Array([9, 9, 65, 255, 241, 66, 9]);
    const view = backing.subarray(2, 6);
    assert.deepEqual(plain(new TelnetDecoder({ binary: true }).decode(view)), [data(65), cmd(241), data(66)]);
  });
});

describe('telnet encoder', () => {
  test('encodeData doubles 255', () => {
    assert.deepEqual([...encodeData(b(1, 255, 2))], [1, 255, 255, 2]);
    assert.deepEqual([...encodeData(b(255, 255))], [255, 255, 255, 255]);
    assert.deepEqual([...encodeData(b(255))], [255, 255]);
  });

  test('encodeData returns the input when nothing needs escaping', () => {
    const input = b(1, 2, 3);
    assert.equal(encodeData(input), input);
    assert.deepEqual([...encodeData(b())], []);
  });

  test('encodeData accepts a Uint8Array view', () => {
    const backing = new Uint8Array([7, 255, 13, 7]);
    assert.deepEqual([...encodeData(backing.subarray(1, 3), false)], [255, 255, 13, 0]);
  });

  test('encodeData binary (default) leaves CR alone', () => {
    assert.deepEqual([...encodeData(b(13, 65, 13))], [13, 65, 13]);
    assert.deepEqual([...encodeData(b(13, 0, 13, 10), true)], [13, 0, 13, 10]);
  });

  test('encodeData non-binary: bare CR becomes CR NUL, CR LF stays', () => {
    assert.deepEqual([...encodeData(b(65, 13, 66), false)], [65, 13, 0, 66]);
    assert.deepEqual([...encodeData(b(65, 13, 10, 66), false)], [65, 13, 10, 66]);
    assert.deepEqual([...encodeData(b(13), false)], [13, 0]);
    assert.deepEqual([...encodeData(b(13, 13, 10), false)], [13, 0, 13, 10]);
    assert.deepEqual([...encodeData(b(13, 0), false)], [13, 0, 0]);
  });

  test('encodeData non-binary: CR and 255 together', () => {
    assert.deepEqual([...encodeData(b(13, 255, 13), false)], [13, 0, 255, 255, 13, 0]);
  });

  test('encodeCommand', () => {
    assert.deepEqual([...encodeCommand(241)], [255, 241]);
    assert.deepEqual([...encodeCommand(243)], [255, 243]);
    assert.deepEqual([...encodeCommand(236)], [255, 236]);
  });

  test('encodeNegotiation', () => {
    assert.deepEqual([...encodeNegotiation(251, 1)], [255, 251, 1]);
    assert.deepEqual([...encodeNegotiation(252, 3)], [255, 252, 3]);
    assert.deepEqual([...encodeNegotiation(253, 0)], [255, 253, 0]);
    assert.deepEqual([...encodeNegotiation(254, 232)], [255, 254, 232]);
  });

  test('encodeSubnegotiation doubles 255 in the payload only', () => {
    assert.deepEqual([...encodeSubnegotiation(232, b(1, 255, 2))], [255, 250, 232, 1, 255, 255, 2, 255, 240]);
    assert.deepEqual([...encodeSubnegotiation(24, b(13, 0))], [255, 250, 24, 13, 0, 255, 240]);
  });

  test('encodeSubnegotiation with empty or default payload', () => {
    assert.deepEqual([...encodeSubnegotiation(31)], [255, 250, 31, 255, 240]);
    assert.deepEqual([...encodeSubnegotiation(31, b())], [255, 250, 31, 255, 240]);
  });

  test('encodeSubnegotiation accepts a Uint8Array view', () => {
    const backing = new Uint8Array([1, 255, 2, 3]);
    assert.deepEqual([...encodeSubnegotiation(44, backing.subarray(1, 3))], [255, 250, 44, 255, 255, 2, 255, 240]);
  });

  test('encodeToken covers every token kind', () => {
    assert.deepEqual([...encodeToken({ type: 'data', data: b(13, 255) })], [13, 255, 255]);
    assert.deepEqual([...encodeToken({ type: 'data', data: b(13, 255) }, false)], [13, 0, 255, 255]);
    assert.deepEqual([...encodeToken({ type: 'command', command: 249 })], [255, 249]);
    assert.deepEqual([...encodeToken({ type: 'negotiation', verb: 253, option: 24 })], [255, 253, 24]);
    assert.deepEqual([...encodeToken({ type: 'subnegotiation', option: 24, payload: b(0, 255) })], [255, 250, 24, 0, 255, 255, 255, 240]);
  });

  test('encoder output decodes back to the original tokens', () => {
    const wire = Buffer.concat([
      encodeData(b(1, 13, 255), false),
      encodeNegotiation(251, 0),
      encodeSubnegotiation(232, b(255, 13)),
      encodeCommand(241),
      encodeData(b(13, 10), false),
    ]);
    assert.deepEqual(plain(new TelnetDecoder({ binary: false }).decode(wire)), [
      data(1, 13, 255),
      neg(251, 0),
      sb(232, 255, 13),
      cmd(241),
      data(13, 10),
    ]);
  });
});
