import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { encodeToken } from '../../src/protocol/telnet/encoder.js';
import type { TelnetToken } from '../../src/protocol/telnet/tokens.js';
import type { NegotiationVerb } from '../../src/protocol/telnet/constants.js';

type GoodToken = Exclude<TelnetToken, { type: 'error' }>;

/** Comparable view: Buffers become arrays, adjacent data merged, empty data dropped. */
type Norm =
  | { type: 'data'; data: number[] }
  | { type: 'command'; command: number }
  | { type: 'negotiation'; verb: number; option: number }
  | { type: 'subnegotiation'; option: number; payload: number[] }
  | { type: 'error'; code: string; offset?: number };

function normalise(tokens: readonly TelnetToken[]): Norm[] {
  const out: Norm[] = [];
  for (const t of tokens) {
    switch (t.type) {
      case 'data': {
        if (t.data.length === 0) break;
        const last = out[out.length - 1];
        if (last && last.type === 'data') last.data.push(...t.data);
        else out.push({ type: 'data', data: [...t.data] });
        break;
      }
      case 'command':
        out.push({ type: 'command', command: t.command });
        break;
      case 'negotiation':
        out.push({ type: 'negotiation', verb: t.verb, option: t.option });
        break;
      case 'subnegotiation':
        out.push({ type: 'subnegotiation', option: t.option, payload: [...t.payload] });
        break;
      case 'error':
        // The offset of TELNET_SB_TOO_LONG marks where the decoder noticed, which
        // depends on chunking; the other two point at the offending byte.
        out.push(t.code === 'TELNET_SB_TOO_LONG' ? { type: 'error', code: t.code } : { type: 'error', code: t.code, offset: t.offset });
        break;
    }
  }
  return out;
}

function decodeSplit(bytes: Buffer, cuts: readonly number[], binary: boolean, maxSubnegotiation?: number): TelnetToken[] {
  const dec = new TelnetDecoder({ binary, maxSubnegotiation });
  const sorted = [...new Set(cuts)].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
  const tokens: TelnetToken[] = [];
  let prev = 0;
  for (const c of [...sorted, bytes.length]) {
    // Copy each piece so no chunk shares memory with another (like separate socket reads).
    tokens.push(...dec.decode(Buffer.from(bytes.subarray(prev, c))));
    prev = c;
  }
  return tokens;
}

const COMMANDS = [236, 237, 238, 239, 241, 242, 243, 244, 245, 246, 247, 248, 249];
const VERBS: NegotiationVerb[] = [251, 252, 253, 254];

/** Bytes biased towards the interesting ones: IAC, SB, SE, CR, LF, NUL. */
const byteArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 255 }) },
  { weight: 2, arbitrary: fc.constantFrom(255, 250, 240, 13, 10, 0) },
);
const bytesArb = (maxLength: number) => fc.array(byteArb, { maxLength }).map((a) => Buffer.from(a));

const tokenArb: fc.Arbitrary<GoodToken> = fc.oneof(
  { weight: 4, arbitrary: bytesArb(24).map((data): GoodToken => ({ type: 'data', data })) },
  { weight: 2, arbitrary: fc.constantFrom(...COMMANDS).map((command): GoodToken => ({ type: 'command', command })) },
  {
    weight: 2,
    arbitrary: fc
      .record({ verb: fc.constantFrom(...VERBS), option: fc.integer({ min: 0, max: 255 }) })
      .map(({ verb, option }): GoodToken => ({ type: 'negotiation', verb, option })),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ option: fc.integer({ min: 0, max: 255 }), payload: bytesArb(24) })
      .map(({ option, payload }): GoodToken => ({ type: 'subnegotiation', option, payload })),
  },
);
const tokensArb = fc.array(tokenArb, { maxLength: 20 });

const encodeAll = (tokens: readonly GoodToken[], binary: boolean): Buffer =>
  Buffer.concat(tokens.map((t) => encodeToken(t, binary)));

/** Encoded token streams, plus raw byte soup (which usually contains protocol errors). */
const wireArb = fc.oneof(
  fc.record({ tokens: tokensArb, binary: fc.boolean() }).map(({ tokens, binary }) => ({ bytes: encodeAll(tokens, binary), binary })),
  fc.record({ bytes: bytesArb(80), binary: fc.boolean() }),
);

describe('telnet codec properties', () => {
  test('decode(encode(tokens)) equals the tokens, binary mode', () => {
    fc.assert(
      fc.property(tokensArb, (tokens) => {
        const dec = new TelnetDecoder({ binary: true });
        const got = dec.decode(encodeAll(tokens, true));
        assert.deepEqual(normalise(got), normalise(tokens));
        assert.equal(dec.failed, false);
        assert.equal(dec.inSubnegotiation, false);
      }),
      { numRuns: 500 },
    );
  });

  test('decode(encode(tokens)) equals the tokens, non-binary mode (CR NUL / CR LF)', () => {
    fc.assert(
      fc.property(tokensArb, (tokens) => {
        const dec = new TelnetDecoder({ binary: false });
        const got = dec.decode(encodeAll(tokens, false));
        assert.deepEqual(normalise(got), normalise(tokens));
        assert.equal(dec.failed, false);
      }),
      { numRuns: 500 },
    );
  });

  test('round trip with CR-heavy data in non-binary mode', () => {
    const crData = fc
      .array(fc.constantFrom(13, 10, 0, 255, 65), { maxLength: 16 })
      .map((a): GoodToken => ({ type: 'data', data: Buffer.from(a) }));
    const seq = fc.array(fc.oneof(crData, fc.constant<GoodToken>({ type: 'command', command: 241 })), { maxLength: 12 });
    fc.assert(
      fc.property(seq, (tokens) => {
        const got = new TelnetDecoder({ binary: false }).decode(encodeAll(tokens, false));
        assert.deepEqual(normalise(got), normalise(tokens));
      }),
      { numRuns: 500 },
    );
  });

  test('every two-part split decodes like the whole', () => {
    fc.assert(
      fc.property(wireArb, ({ bytes, binary }) => {
        const whole = normalise(decodeSplit(bytes, [], binary));
        for (let cut = 0; cut <= bytes.length; cut++) {
          assert.deepEqual(normalise(decodeSplit(bytes, [cut], binary)), whole, `split at ${cut}`);
        }
      }),
      { numRuns: 150 },
    );
  });

  test('one byte at a time decodes like the whole', () => {
    fc.assert(
      fc.property(wireArb, ({ bytes, binary }) => {
        const whole = normalise(decodeSplit(bytes, [], binary));
        const cuts = Array.from({ length: bytes.length }, (_, i) => i);
        assert.deepEqual(normalise(decodeSplit(bytes, cuts, binary)), whole);
      }),
      { numRuns: 300 },
    );
  });

  test('random multi-splits decode like the whole (also with a small SB bound)', () => {
    fc.assert(
      fc.property(
        wireArb,
        fc.array(fc.nat({ max: 400 }), { maxLength: 12 }),
        fc.option(fc.integer({ min: 0, max: 16 }), { nil: undefined }),
        ({ bytes, binary }, cuts, max) => {
          const whole = normalise(decodeSplit(bytes, [], binary, max));
          assert.deepEqual(normalise(decodeSplit(bytes, cuts, binary, max)), whole);
        },
      ),
      { numRuns: 500 },
    );
  });

  test('random bytes never throw; at most one error token and it is last; failed matches', () => {
    const soup = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.array(fc.constantFrom(255, 250, 240, 251, 1, 13, 0), { maxLength: 200 }).map((a) => Uint8Array.from(a)),
      fc.array(byteArb, { maxLength: 200 }).map((a) => Uint8Array.from(a)),
    );
    fc.assert(
      fc.property(fc.array(soup, { minLength: 1, maxLength: 6 }), fc.boolean(), (chunks, binary) => {
        const dec = new TelnetDecoder({ binary, maxSubnegotiation: 32 });
        const all: TelnetToken[] = [];
        for (const c of chunks) {
          const before = dec.failed;
          const got = dec.decode(c);
          if (before) assert.deepEqual(got, [], 'input after an error is ignored');
          all.push(...got);
        }
        const errors = all.filter((t) => t.type === 'error');
        assert.ok(errors.length <= 1, 'at most one error');
        if (errors.length === 1) assert.equal(all[all.length - 1].type, 'error', 'error is last');
        assert.equal(dec.failed, errors.length === 1);
        for (const t of all) {
          if (t.type === 'subnegotiation') assert.ok(t.payload.length <= 32);
          if (t.type === 'error') assert.ok(['TELNET_BAD_COMMAND', 'TELNET_BAD_SB_ESCAPE', 'TELNET_SB_TOO_LONG'].includes(t.code));
        }
      }),
      { numRuns: 1000 },
    );
  });
});

/** Small deterministic PRNG so the 1 MiB streams are cheap to build; fast-check picks the seed. */
function xorshift(seed: number): () => number {
  let x = seed | 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

describe('telnet decoder memory bound (maxSubnegotiation = 1024, 1 MiB of input)', () => {
  const MAX = 1024;
  const MIB = 1024 * 1024;

  test('1 MiB of biased random chunks: no SB payload above the bound, no throw', () => {
    fc.assert(
      fc.property(fc.integer(), fc.boolean(), (seed, binary) => {
        const rnd = xorshift(seed);
        const special = [255, 250, 240, 255, 255];
        let dec = new TelnetDecoder({ binary, maxSubnegotiation: MAX });
        let fed = 0;
        let decoders = 1;
        while (fed < MIB) {
          const len = 1 + Math.floor(rnd() * 4096);
          const chunk = Buffer.allocUnsafe(len);
          for (let i = 0; i < len; i++) chunk[i] = rnd() < 0.1 ? special[Math.floor(rnd() * special.length)] : Math.floor(rnd() * 256);
          const tokens = dec.decode(chunk);
          for (const [k, t] of tokens.entries()) {
            if (t.type === 'subnegotiation') assert.ok(t.payload.length <= MAX, `payload ${t.payload.length}`);
            if (t.type === 'error') assert.equal(k, tokens.length - 1);
          }
          if (dec.failed) {
            dec = new TelnetDecoder({ binary, maxSubnegotiation: MAX });
            decoders++;
          }
          fed += len;
        }
        assert.ok(decoders >= 1);
      }),
      { numRuns: 4 },
    );
  });

  test('1 MiB stream of encoded tokens with SBs around the bound: exact tokens, TOO_LONG exactly when over', () => {
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const rnd = xorshift(seed);
        const int = (n: number) => Math.floor(rnd() * n);
        const randomBytes = (n: number) => {
          const b = Buffer.allocUnsafe(n);
          for (let i = 0; i < n; i++) b[i] = rnd() < 0.05 ? 255 : int(256);
          return b;
        };
        let fed = 0;
        let sawTooLong = 0;
        let sawSb = 0;
        while (fed < MIB) {
          // Build a stream that ends at (and includes) the first over-long SB, if any.
          const expected: GoodToken[] = [];
          let overLong = false;
          while (!overLong && expected.length < 200) {
            const r = rnd();
            if (r < 0.3) {
              expected.push({ type: 'data', data: randomBytes(int(300)) });
            } else if (r < 0.4) {
              expected.push({ type: 'command', command: COMMANDS[int(COMMANDS.length)] });
            } else if (r < 0.5) {
              expected.push({ type: 'negotiation', verb: VERBS[int(4)], option: int(256) });
            } else {
              const size = rnd() < 0.5 ? MAX - 3 + int(7) : int(2 * MAX);
              expected.push({ type: 'subnegotiation', option: int(256), payload: randomBytes(size) });
              overLong = size > MAX;
            }
          }
          const wire = encodeAll(expected, true);
          const dec = new TelnetDecoder({ binary: true, maxSubnegotiation: MAX });
          const got: TelnetToken[] = [];
          for (let p = 0; p < wire.length; ) {
            const len = 1 + int(3000);
            got.push(...dec.decode(wire.subarray(p, p + len)));
            p += len;
          }
          fed += wire.length;
          for (const t of got) {
            if (t.type === 'subnegotiation') {
              sawSb++;
              assert.ok(t.payload.length <= MAX);
            }
          }
          if (overLong) {
            sawTooLong++;
            const last = got[got.length - 1];
            assert.ok(last.type === 'error' && last.code === 'TELNET_SB_TOO_LONG', 'over-long SB reported');
            assert.equal(dec.failed, true);
            assert.deepEqual(normalise(got.slice(0, -1)), normalise(expected.slice(0, -1)));
          } else {
            assert.equal(dec.failed, false);
            assert.deepEqual(normalise(got), normalise(expected));
          }
        }
        assert.ok(sawTooLong > 0 && sawSb > 0, 'the stream exercised both cases');
      }),
      { numRuns: 3 },
    );
  });

  test('1 MiB inside one SB (255 escaped): fails with TOO_LONG as soon as the payload passes 1024 bytes', () => {
    fc.assert(
      fc.property(fc.integer(), (seed) => {
        const rnd = xorshift(seed);
        const dec = new TelnetDecoder({ binary: true, maxSubnegotiation: MAX });
        assert.deepEqual(dec.decode(Buffer.from([255, 250, 232])), []);
        let payload = 0;
        let fed = 0;
        let errorAt = -1;
        let chunks = 0;
        let pendingIac = false;
        while (fed < MIB) {
          const len = 1 + Math.floor(rnd() * 700);
          const chunk = Buffer.allocUnsafe(len);
          // Count unescaped payload bytes completed by this chunk (IAC IAC may straddle chunks).
          let complete = 0;
          for (let i = 0; i < len; i++) {
            if (pendingIac) {
              chunk[i] = 255;
              pendingIac = false;
              complete++;
            } else if (rnd() < 0.1) {
              chunk[i] = 255;
              pendingIac = true;
            } else {
              chunk[i] = Math.floor(rnd() * 255);
              complete++;
            }
          }
          const tokens = dec.decode(chunk);
          chunks++;
          if (errorAt < 0) {
            if (payload + complete > MAX) {
              assert.equal(tokens.length, 1, `error expected in chunk ${chunks}`);
              assert.ok(tokens[0].type === 'error' && tokens[0].code === 'TELNET_SB_TOO_LONG');
              errorAt = chunks;
            } else {
              assert.deepEqual(tokens, []);
              assert.equal(dec.inSubnegotiation, true);
            }
          } else {
            assert.deepEqual(tokens, []);
          }
          payload += complete;
          fed += len;
        }
        assert.ok(errorAt > 0);
        assert.equal(dec.failed, true);
      }),
      { numRuns: 3 },
    );
  });
});
