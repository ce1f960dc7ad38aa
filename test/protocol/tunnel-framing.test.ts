import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  Flag,
  FrameDecoder,
  FrameType,
  MAX_ENCODED,
  MAX_LARGE_PAYLOAD,
  maxEncodedLength,
  MAX_PAYLOAD,
  cobsDecode,
  cobsEncode,
  cobsMaxEncodedLength,
  crc32c,
  decodeFrameBody,
  encodeFrame,
  encodeFrameBody,
  encodeHello,
  encodeOpen,
  encodeReason,
  encodeSack,
  encodeU32,
  decodeHello,
  decodeSack,
  decodeOpen,
  decodeReason,
  sessionTag,
  type Frame,
} from '../../src/protocol/tunnel/index.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

const HOST_BOOT = 0x12345678;
const AGENT_BOOT = 0x9abcdef0;
const TAG = sessionTag(HOST_BOOT, AGENT_BOOT);

/** The test vectors of docs/tunnel-protocol.md, section 11. Keep both in step. */
const VECTORS: { name: string; frame: Frame; body: string; wire: string }[] = [
  {
    name: 'HELLO host→agent (boot 0x12345678, peer unknown)',
    frame: { type: 1, flags: 0, tag: 0, seq: 0, ack: 0, stream: 0, payload: encodeHello({ version: 1, role: 0, flags: 0, window: 32, bootId: HOST_BOOT, peerBootId: 0, maxPayload: 1024 }) },
    body: '01 00 00 00 00 00 00 00 00 00 01 00 00 20 12 34 56 78 00 00 00 00 04 00 78 b7 78 4a',
    wire: '02 01 01 01 01 01 01 01 01 01 02 01 01 06 20 12 34 56 78 01 01 01 02 04 05 78 b7 78 4a 00',
  },
  {
    name: 'HELLO agent→host (boot 0x9abcdef0, knows the host, not up)',
    frame: { type: 1, flags: Flag.AGENT, tag: 0, seq: 0, ack: 0, stream: 0, payload: encodeHello({ version: 1, role: 1, flags: 0, window: 32, bootId: AGENT_BOOT, peerBootId: HOST_BOOT, maxPayload: 1024 }) },
    body: '01 04 00 00 00 00 00 00 00 00 01 01 00 20 9a bc de f0 12 34 56 78 04 00 f2 7b de 92',
    wire: '03 01 04 01 01 01 01 01 01 01 03 01 01 0b 20 9a bc de f0 12 34 56 78 04 05 f2 7b de 92 00',
  },
  {
    name: 'HELLO host→agent (UP)',
    frame: { type: 1, flags: 0, tag: 0, seq: 0, ack: 0, stream: 0, payload: encodeHello({ version: 1, role: 0, flags: 1, window: 32, bootId: HOST_BOOT, peerBootId: AGENT_BOOT, maxPayload: 1024 }) },
    body: '01 00 00 00 00 00 00 00 00 00 01 00 01 20 12 34 56 78 9a bc de f0 04 00 0e 85 00 c2',
    wire: '02 01 01 01 01 01 01 01 01 01 02 01 0c 01 20 12 34 56 78 9a bc de f0 04 03 0e 85 02 c2 00',
  },
  {
    name: 'OPEN stream 1 to port 22, credit 65536',
    frame: { type: 0x10, flags: 0, tag: TAG, seq: 0, ack: 0, stream: 1, payload: encodeOpen({ port: 22, credit: 65536 }) },
    body: '10 00 d7 84 00 00 00 00 00 01 00 16 00 01 00 00 71 a1 96 cd',
    wire: '02 10 03 d7 84 01 01 01 01 02 01 02 16 02 01 01 05 71 a1 96 cd 00',
  },
  {
    name: 'OPEN_OK stream 1, credit 65536, acking OPEN (agent→host)',
    frame: { type: 0x11, flags: Flag.AGENT, tag: TAG, seq: 0, ack: 1, stream: 1, payload: encodeU32(65536) },
    body: '11 04 d7 84 00 00 00 01 00 01 00 01 00 00 d5 88 cb 77',
    wire: '05 11 04 d7 84 01 01 02 01 02 01 02 01 01 05 d5 88 cb 77 00',
  },
  {
    name: 'DATA stream 1 "SSH-2.0-\\0\\r\\n"',
    frame: { type: 0x13, flags: 0, tag: TAG, seq: 1, ack: 1, stream: 1, payload: Uint8Array.from(Buffer.from('SSH-2.0-\0\r\n', 'latin1')) },
    body: '13 00 d7 84 00 01 00 01 00 01 53 53 48 2d 32 2e 30 2d 00 0d 0a a9 c3 a5 42',
    wire: '02 13 03 d7 84 02 01 02 01 0a 01 53 53 48 2d 32 2e 30 2d 07 0d 0a a9 c3 a5 42 00',
  },
  {
    name: 'ACK ack=5, SACK 7, 8 and 15 (offsets 1, 2, 9), agent→host',
    frame: { type: 0x02, flags: Flag.AGENT, tag: TAG, seq: 0, ack: 5, stream: 0, payload: encodeSack([1, 2, 9]) },
    body: '02 04 d7 84 00 00 00 05 00 00 06 02 86 45 9f e9',
    wire: '05 02 04 d7 84 01 01 02 05 01 07 06 02 86 45 9f e9 00',
  },
  {
    name: 'ACK with POLL (keepalive probe), ack=2',
    frame: { type: 0x02, flags: 1, tag: TAG, seq: 0, ack: 2, stream: 0, payload: new Uint8Array(0) },
    body: '02 01 d7 84 00 00 00 02 00 00 cb 6c 6f 56',
    wire: '05 02 01 d7 84 01 01 02 02 01 05 cb 6c 6f 56 00',
  },
  {
    name: 'RESET stream 0x8001, REFUSED "refused", seq 0xffff ack 0x0102, agent→host',
    frame: { type: 0x15, flags: Flag.AGENT, tag: TAG, seq: 0xffff, ack: 0x0102, stream: 0x8001, payload: encodeReason({ code: 1, text: 'refused' }) },
    body: '15 04 d7 84 ff ff 01 02 80 01 01 72 65 66 75 73 65 64 87 31 33 a7',
    wire: '17 15 04 d7 84 ff ff 01 02 80 01 01 72 65 66 75 73 65 64 87 31 33 a7 00',
  },
];

const frameArb: fc.Arbitrary<Frame> = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  flags: fc.integer({ min: 0, max: 255 }),
  tag: fc.integer({ min: 0, max: 0xffff }),
  seq: fc.integer({ min: 0, max: 0xffff }),
  ack: fc.integer({ min: 0, max: 0xffff }),
  stream: fc.integer({ min: 0, max: 0xffff }),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.uint8Array({ minLength: 1000, maxLength: MAX_PAYLOAD }),
    fc.array(fc.constantFrom(0, 0, 1, 0xff), { maxLength: 600 }).map((a) => Uint8Array.from(a)),
  ),
});

const norm = (f: Frame) => ({ ...f, payload: hex(f.payload) });

function decodeChunks(wire: Uint8Array, cuts: readonly number[]): { frames: Frame[]; dec: FrameDecoder } {
  const dec = new FrameDecoder();
  const sorted = [...new Set(cuts)].filter((c) => c > 0 && c < wire.length).sort((a, b) => a - b);
  const frames: Frame[] = [];
  let prev = 0;
  for (const c of [...sorted, wire.length]) {
    frames.push(...dec.decode(wire.slice(prev, c)));
    prev = c;
  }
  return { frames, dec };
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

describe('tunnel CRC-32C', { timeout: 120_000 }, () => {
  test('check value and known values', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(0)), 0);
    // iSCSI test patterns (RFC 3720 B.4): 32 bytes of zeros, of 0xff, ascending.
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  });

  test('incremental computation equals one pass', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(300), (data, cut) => {
        const c = Math.min(cut, data.length);
        assert.equal(crc32c(data, c, data.length, crc32c(data, 0, c)), crc32c(data));
      }),
      { numRuns: 300, seed: 1 },
    );
  });
});

describe('tunnel COBS', { timeout: 120_000 }, () => {
  test('reference examples', () => {
    const cases: [string, string][] = [
      ['', '01'],
      ['00', '0101'],
      ['0000', '010101'],
      ['11220033', '03112202 33'],
      ['11223344', '0511223344'],
      ['11000000', '0211010101'],
    ];
    for (const [raw, enc] of cases) {
      assert.equal(hex(cobsEncode(unhex(raw))), hex(unhex(enc)), raw);
      assert.equal(hex(cobsDecode(unhex(enc))!), raw, enc);
    }
    // 254 non-zero bytes: one 0xFF block, no trailing code byte.
    const r254 = Uint8Array.from({ length: 254 }, (_, i) => i + 1);
    const e254 = cobsEncode(r254);
    assert.equal(e254.length, 255);
    assert.equal(e254[0], 0xff);
    // 255 non-zero bytes: 0xFF block, then a block of one byte.
    const r255 = Uint8Array.from({ length: 255 }, (_, i) => (i % 255) + 1);
    const e255 = cobsEncode(r255);
    assert.equal(e255.length, 257);
    assert.deepEqual([e255[0], e255[255]], [0xff, 0x02]);
    // The paper's variant (explicit trailing 0x01 after a final 0xFF block) decodes the same.
    assert.equal(hex(cobsDecode(concat([e254, Uint8Array.of(1)]))!), hex(r254));
  });

  test('round trip, no zero in the output, overhead bound', () => {
    const bytes = fc.oneof(fc.uint8Array({ maxLength: 1100 }), fc.array(fc.constantFrom(0, 1, 0xff), { maxLength: 1100 }).map((a) => Uint8Array.from(a)));
    fc.assert(
      fc.property(bytes, (data) => {
        const enc = cobsEncode(data);
        assert.ok(!enc.includes(0));
        assert.ok(enc.length >= data.length + 1 || data.length === 0);
        assert.ok(enc.length <= cobsMaxEncodedLength(data.length));
        assert.equal(hex(cobsDecode(enc)!), hex(data));
      }),
      { numRuns: 400, seed: 2 },
    );
  });

  test('malformed input is rejected, never throws', () => {
    assert.equal(cobsDecode(unhex('05 11 22')), null); // block runs past the end
    assert.equal(cobsDecode(unhex('03 11 00')), null); // zero inside
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (data) => {
        const out = cobsDecode(data);
        if (out !== null) assert.ok(out.length < Math.max(1, data.length));
      }),
      { numRuns: 500, seed: 3 },
    );
  });
});

describe('tunnel framing', { timeout: 120_000 }, () => {
  test('test vectors (docs/tunnel-protocol.md)', () => {
    for (const v of VECTORS) {
      if (v.body === '') continue;
      assert.equal(hex(encodeFrameBody(v.frame)), hex(unhex(v.body)), `${v.name}: body`);
      assert.equal(hex(encodeFrame(v.frame)), hex(unhex(v.wire)), `${v.name}: wire`);
      const [f] = new FrameDecoder().decode(unhex(v.wire));
      assert.deepEqual(norm(f), norm(v.frame), v.name);
    }
    assert.equal(TAG, 0xd784);
  });

  test('payload codecs round trip', () => {
    const h = { version: 1, role: 1, flags: 1, window: 128, bootId: 0xffffffff, peerBootId: 1, maxPayload: 64 };
    assert.deepEqual(decodeHello(encodeHello(h)), h);
    assert.equal(decodeHello(new Uint8Array(5).fill(1)), undefined, 'short v1 HELLO');
    assert.equal(decodeHello(Uint8Array.of(2))?.version, 2, 'another version is still recognisable');
    assert.deepEqual(decodeSack(encodeSack([0, 7, 8, 127, 128, -1])), [0, 7, 8, 127]);
    assert.equal(encodeSack([]).length, 0);
    assert.deepEqual(decodeOpen(encodeOpen({ port: 65535, credit: 0xffffffff })), { port: 65535, credit: 0xffffffff });
    assert.equal(decodeOpen(new Uint8Array(5)), undefined);
    const long = 'é'.repeat(40); // 80 bytes of UTF-8: cut at a character boundary
    const r = decodeReason(encodeReason({ code: 6, text: long }))!;
    assert.equal(r.code, 6);
    assert.ok(long.startsWith(r.text) && Buffer.byteLength(r.text) <= 63 && r.text.length === 31);
  });

  test("a reason's text is a peer's words: controls and invisible formatting arrive as ?", () => {
    // What a hostile agent sent to set the operator's window title and clear the screen.
    const hostile = '\x1b]0;PWNED\x07\x1b[2J\u009b31m\u202eok';
    const r = decodeReason(encodeReason({ code: 1, text: hostile }))!;
    assert.equal(r.text, '?]0;PWNED??[2J?31m?ok');
  });

  test('encode/decode round trip; every chunking gives the same frames', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(8000), { maxLength: 20 }), fc.boolean(), (frames, cuts, lead) => {
        const wire = concat(frames.map((f) => encodeFrame(f, lead)));
        const whole = decodeChunks(wire, []);
        assert.deepEqual(whole.frames.map(norm), frames.map(norm));
        assert.equal(whole.dec.stats.discardedBytes, 0);
        assert.deepEqual(decodeChunks(wire, cuts).frames.map(norm), frames.map(norm));
      }),
      { numRuns: 300, seed: 4 },
    );
  });

  test('one byte at a time gives the same frames', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 3 }), (frames) => {
        const wire = concat(frames.map((f) => encodeFrame(f)));
        const cuts = Array.from({ length: wire.length }, (_, i) => i);
        assert.deepEqual(decodeChunks(wire, cuts).frames.map(norm), frames.map(norm));
      }),
      { numRuns: 60, seed: 5 },
    );
  });

  test('resynchronises after garbage between frames (garbage with and without zeros)', () => {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.string({ maxLength: 80 }).map((s) => Uint8Array.from(Buffer.from(`\r\n[   12.345] ${s}\r\nlogin: `))),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(garbage, frameArb), { minLength: 1, maxLength: 5 }), fc.array(fc.nat(4000), { maxLength: 8 }), (items, cuts) => {
        // Garbage is followed by the frame's leading delimiter (as a sender emits after idle).
        const wire = concat(items.flatMap(([g, f]) => [g, encodeFrame(f, true)]));
        const got = decodeChunks(wire, cuts).frames;
        // Garbage may itself decode as a frame only with a valid CRC (2^-32); the real
        // frames must all be there, in order, as the last matches.
        const want = items.map(([, f]) => norm(f));
        const gotN = got.map(norm);
        let k = 0;
        for (const g of gotN) if (k < want.length && JSON.stringify(g) === JSON.stringify(want[k])) k++;
        assert.equal(k, want.length);
      }),
      { numRuns: 300, seed: 6 },
    );
  });

  test('a truncated frame loses only itself (next frame has a leading delimiter) or itself and the next', () => {
    fc.assert(
      fc.property(frameArb, frameArb, frameArb, fc.nat(2000), (a, b, c, cutAt) => {
        const wa = encodeFrame(a);
        const cut = 1 + (cutAt % (wa.length - 2)); // keep 1..len-2 bytes: part of the body, no delimiter
        const truncated = wa.subarray(0, cut);
        // With a leading delimiter on b: only a is lost.
        const w1 = concat([truncated, encodeFrame(b, true), encodeFrame(c)]);
        const d1 = decodeChunks(w1, []);
        assert.deepEqual(d1.frames.map(norm), [norm(b), norm(c)]);
        assert.ok(d1.dec.stats.discardedBytes >= truncated.length);
        // Without: the truncated bytes merge with b, which is lost too; c survives.
        const w2 = concat([truncated, encodeFrame(b), encodeFrame(c)]);
        const d2 = decodeChunks(w2, []).frames.map(norm);
        assert.deepEqual(d2[d2.length - 1], norm(c));
        assert.ok(d2.length <= 2);
      }),
      { numRuns: 300, seed: 7 },
    );
  });

  test('any single bit flip loses that frame only (CRC), never yields a wrong frame', () => {
    fc.assert(
      fc.property(frameArb, frameArb, fc.nat(1 << 20), (a, b, pos) => {
        const wa = encodeFrame(a);
        const bit = pos % (wa.length * 8);
        const bad = wa.slice();
        bad[bit >> 3] ^= 1 << (bit & 7);
        const { frames, dec } = decodeChunks(concat([bad, encodeFrame(b, true)]), []);
        const got = frames.map(norm);
        assert.deepEqual(got[got.length - 1], norm(b));
        assert.ok(got.length === 1, `a corrupt frame passed: ${JSON.stringify(got[0])}`);
        const s = dec.stats;
        assert.equal(s.badCrc + s.badCobs + s.tooShort + s.tooLong >= 1 || (bit >> 3) === wa.length - 1, true);
      }),
      { numRuns: 1000, seed: 8 },
    );
  });

  test('every bit flip of one frame is detected (exhaustive, 1 KiB payload)', () => {
    const f: Frame = { type: FrameType.DATA, flags: 0, tag: 0x1234, seq: 7, ack: 9, stream: 3, payload: Uint8Array.from({ length: MAX_PAYLOAD }, (_, i) => (i * 7) & 0xff) };
    const wire = encodeFrame(f);
    let accepted = 0;
    for (let bit = 0; bit < wire.length * 8; bit++) {
      const bad = wire.slice();
      bad[bit >> 3] ^= 1 << (bit & 7);
      const got = new FrameDecoder().decode(bad);
      for (const g of got) if (JSON.stringify(norm(g)) !== JSON.stringify(norm(f))) assert.fail(`bit ${bit}: wrong frame accepted`);
      accepted += got.length;
    }
    assert.equal(accepted, 0);
  });

  test('bounded memory and linear work on a flood of garbage', { timeout: 20_000 }, () => {
    const dec = new FrameDecoder();
    const noZeros = new Uint8Array(1 << 20).fill(0x41);
    for (let i = 0; i < 16; i++) {
      assert.deepEqual(dec.decode(noZeros), []);
      assert.ok(dec.bufferedBytes <= MAX_ENCODED);
    }
    // Then the line recovers at the next delimiter.
    const f: Frame = { type: FrameType.ACK, flags: 0, tag: 1, seq: 0, ack: 0, stream: 0, payload: new Uint8Array(0) };
    assert.equal(dec.decode(encodeFrame(f, true)).length, 1);
    assert.equal(dec.stats.tooLong, 1);
    assert.equal(dec.stats.discardedBytes, 16 << 20);
    // Random garbage with zeros: every run is rejected, counted, and never throws.
    const rnd = new FrameDecoder();
    let x = 1;
    const soup = new Uint8Array(1 << 20).map(() => ((x = (x * 1103515245 + 12345) >>> 0) >>> 24) & (x & 0x100 ? 0xff : 0x0f));
    rnd.decode(soup);
    const s = rnd.stats;
    assert.equal(s.frames, 0);
    assert.ok(s.badCobs + s.badCrc + s.tooShort > 1000);
  });

  test('over-long and runt frames are rejected; the encoder refuses oversized payloads', () => {
    const big: Frame = { type: FrameType.DATA, flags: 0, tag: 0, seq: 0, ack: 0, stream: 1, payload: new Uint8Array(MAX_LARGE_PAYLOAD + 1) };
    assert.throws(() => encodeFrame(big), { code: 'VSPC_TUNNEL_FRAME_TOO_LARGE' });
    // Hand-build an over-long body (payload MAX_PAYLOAD + 1) with a valid CRC.
    const body = new Uint8Array(10 + MAX_PAYLOAD + 1 + 4);
    const crc = crc32c(body, 0, body.length - 4);
    new DataView(body.buffer).setUint32(body.length - 4, crc);
    assert.equal(decodeFrameBody(body), 'long');
    const dec = new FrameDecoder();
    dec.decode(concat([cobsEncode(body), Uint8Array.of(0)]));
    dec.decode(concat([cobsEncode(new Uint8Array(13)), Uint8Array.of(0)]));
    dec.decode(Uint8Array.of(0, 0, 0));
    assert.equal(dec.stats.frames, 0);
    assert.equal(dec.stats.tooLong, 1);
    assert.equal(dec.stats.tooShort, 1);
  });

  test('large frames (spec 5.1): a decoder accepts payloads up to the maxPayload it was given, and no more', () => {
    const payload = Uint8Array.from({ length: MAX_LARGE_PAYLOAD }, (_, i) => (i * 7 + (i >> 8)) & 0xff);
    const f: Frame = { type: FrameType.DATA, flags: 0, tag: 0x1234, seq: 7, ack: 9, stream: 3, payload };
    const wire = encodeFrame(f, true);
    assert.ok(wire.length <= maxEncodedLength(MAX_LARGE_PAYLOAD) + 2, 'a full 16384-byte frame: at most COBS overhead ceil(n / 254) and two delimiters');
    assert.equal(maxEncodedLength(MAX_LARGE_PAYLOAD), 16463);
    const large = new FrameDecoder(MAX_LARGE_PAYLOAD);
    const got: Frame[] = [];
    for (let i = 0; i < wire.length; i += 1000) got.push(...large.decode(wire.subarray(i, i + 1000)));
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].payload, payload);
    assert.ok(large.bufferedBytes === 0);
    // The default decoder (1024) drops it as too long, holds at most 1043 bytes while
    // skipping it, and takes the next (1024-byte) frame.
    const small = new FrameDecoder();
    let held = 0;
    for (let i = 0; i < wire.length; i += 1000) {
      small.decode(wire.subarray(i, i + 1000));
      held = Math.max(held, small.bufferedBytes);
    }
    assert.ok(held <= MAX_ENCODED, `held ${held} bytes`);
    const ok = small.decode(encodeFrame({ ...f, payload: payload.subarray(0, MAX_PAYLOAD) }));
    assert.equal(ok.length, 1);
    assert.equal(small.stats.tooLong, 1);
    assert.equal(decodeFrameBody(encodeFrameBody(f)), 'long', 'decodeFrameBody: 1024 by default');
    assert.notEqual(typeof decodeFrameBody(encodeFrameBody(f), MAX_LARGE_PAYLOAD), 'string');
    assert.throws(() => new FrameDecoder(MAX_LARGE_PAYLOAD + 1), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
  });
});
