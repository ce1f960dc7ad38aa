/**
 * The VSPC-CONTROL codec (option 201, docs/console-protocol.md) by example and under
 * random input (fast-check, fixed seed; VSPC_FC_SEED=<n> explores further): every
 * valid message survives encode → decode; any payload decodes or throws a
 * ProtocolError with a VSPC_CONTROL_* code, nothing else; telnet framing and
 * chunking change nothing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import {
  CONTROL_LOCK_MODES,
  Control,
  decodeControl,
  encodeControl,
  MAX_ADDRESS_BYTES,
  MAX_PATTERN_BYTES,
  SELECT_REFUSALS,
  VSPC_CONTROL_OPTION,
  type ConsoleListEntry,
  type ControlMessage,
  type LockMode,
} from '../../src/protocol/control/vspc-control.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';

const SEED = Number(process.env.VSPC_FC_SEED ?? 201);
const params = (numRuns: number) => ({ seed: SEED, numRuns });

const CONTROL_ERROR_CODES = ['VSPC_CONTROL_BAD_MODE', 'VSPC_CONTROL_BAD_REQUEST', 'VSPC_CONTROL_BAD_REPLY', 'VSPC_CONTROL_UNKNOWN'];
const MAX_USER_BYTES = 64;
const GRANTED_MODES = CONTROL_LOCK_MODES.filter((m): m is LockMode => m !== 'readonly_ok');
/** What the decoder rewrites (src/util/text.ts): controls C0/C1, invisible formatting, line separators. */
const CONTROL_CHARS = /[\p{Cc}\p{Cf}\u2028\u2029]/u;

/** The longest prefix of whole characters of `text` whose UTF-8 fits in `max` bytes. */
function utf8PrefixOf(text: string, max: number): string {
  let out = '';
  let bytes = 0;
  for (const ch of text) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > max) break;
    out += ch;
    bytes += n;
  }
  return out;
}

/** Well-formed Unicode text (no lone surrogates: those have no UTF-8 form). */
const textArb = fc.string({ unit: 'binary', maxLength: 40 });
const userArb = textArb.filter((u) => !CONTROL_CHARS.test(u));

/** Records as decodeControl builds them (ordinary objects), so deepEqual compares the fields only. */
const PLAIN = { noNullPrototype: true } as const;

/** Text without control characters (the decoder replaces them) within `max` bytes of UTF-8. */
const boundedTextArb = (max: number, min = 0) =>
  fc.string({ unit: 'binary', minLength: min, maxLength: 60 }).filter((t) => !CONTROL_CHARS.test(t) && Buffer.byteLength(t) <= max && Buffer.byteLength(t) >= min);
const cleanArb = boundedTextArb(1000);

const entryArb: fc.Arbitrary<ConsoleListEntry> = fc.record(
  {
    name: cleanArb,
    label: cleanArb,
    kind: cleanArb,
    state: cleanArb,
    clients: fc.nat({ max: 10_000 }),
    address: fc.option(cleanArb, { nil: null }),
  },
  PLAIN,
);

/** Every valid message. A user name is valid with control characters removed (decode replaces them). */
const messageArb: fc.Arbitrary<ControlMessage> = fc.oneof(
  fc.record({ kind: fc.constant('lock-request' as const), mode: fc.constantFrom(...CONTROL_LOCK_MODES), force: fc.boolean(), user: userArb }, PLAIN),
  fc.record({ kind: fc.constant('lock-granted' as const), mode: fc.constantFrom(...GRANTED_MODES) }, PLAIN),
  fc.record({ kind: fc.constant('lock-refused' as const), reason: textArb }, PLAIN),
  fc.constant({ kind: 'who' as const }),
  fc.record({ kind: fc.constant('who-reply' as const), holders: fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }) }, PLAIN),
  fc.record({ kind: fc.constant('lock-revoked' as const), reason: textArb }, PLAIN),
  fc.record({ kind: fc.constant('list-request' as const), pattern: boundedTextArb(MAX_PATTERN_BYTES) }, PLAIN),
  fc.record({ kind: fc.constant('list-reply' as const), more: fc.boolean(), entries: fc.array(entryArb, { maxLength: 5 }) }, PLAIN),
  fc.record({ kind: fc.constant('select' as const), address: boundedTextArb(MAX_ADDRESS_BYTES, 1) }, PLAIN),
  fc.record({ kind: fc.constant('selected' as const), name: cleanArb }, PLAIN),
  fc.record(
    { kind: fc.constant('select-refused' as const), reason: fc.constantFrom(...SELECT_REFUSALS), message: cleanArb, candidates: fc.array(cleanArb, { maxLength: 5 }) },
    PLAIN,
  ),
);

/** What decode(encode(m)) must give: m itself, with JSON's normal form and the user's byte bound applied. */
function expected(m: ControlMessage): ControlMessage {
  if (m.kind === 'who-reply') return { kind: 'who-reply', holders: JSON.parse(JSON.stringify(m.holders)) as unknown[] };
  if (m.kind === 'lock-request') return { ...m, user: utf8PrefixOf(m.user, MAX_USER_BYTES) };
  return m;
}

/** Payloads: random, and random bodies behind every code byte (and a few unknown ones). */
const payloadArb = fc.oneof(
  fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a)),
  fc
    .tuple(fc.integer({ min: 0, max: 13 }), fc.uint8Array({ maxLength: 80 }))
    .map(([code, body]) => Buffer.concat([Buffer.of(code), body])),
  fc
    .tuple(fc.constantFrom(Control.LOCK_REQUEST, Control.LOCK_GRANTED), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 70 }))
    .map(([code, mode, flags, rest]) => Buffer.concat([Buffer.of(code, mode, flags), rest])),
  fc.jsonValue().map((v) => Buffer.concat([Buffer.of(Control.WHO_REPLY), Buffer.from(JSON.stringify(v) ?? '')])),
  // The broker's JSON replies: near-valid shapes, so that the checks, not JSON.parse, decide.
  fc
    .tuple(fc.integer({ min: 0, max: 3 }), fc.array(fc.oneof(entryArb as fc.Arbitrary<unknown>, fc.jsonValue({ maxDepth: 2 })), { maxLength: 3 }))
    .map(([flags, entries]) => Buffer.concat([Buffer.of(Control.LIST_REPLY, flags), Buffer.from(JSON.stringify(entries))])),
  fc
    .tuple(fc.integer({ min: 0, max: 4 }), fc.oneof(fc.record({ message: fc.string(), candidates: fc.array(fc.string(), { maxLength: 3 }) }) as fc.Arbitrary<unknown>, fc.jsonValue({ maxDepth: 2 })))
    .map(([reason, body]) => Buffer.concat([Buffer.of(Control.SELECT_REFUSED, reason), Buffer.from(JSON.stringify(body) ?? '')])),
  fc
    .tuple(fc.constantFrom(Control.LIST_REQUEST, Control.SELECT), fc.uint8Array({ maxLength: 300 }))
    .map(([code, body]) => Buffer.concat([Buffer.of(code), body])),
);

function decodeOrError(payload: Buffer): ControlMessage | ProtocolError {
  try {
    return decodeControl(payload);
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw err;
  }
}

describe('VSPC-CONTROL codec by example', () => {
  test('wire forms: LOCK-REQUEST mode/flags/user, LOCK-GRANTED mode, WHO', () => {
    assert.deepEqual([...encodeControl({ kind: 'lock-request', mode: 'excl_write', force: true, user: 'ann' })], [1, 3, 1, 0x61, 0x6e, 0x6e]);
    assert.deepEqual([...encodeControl({ kind: 'lock-granted', mode: 'exclusive' })], [2, 2]);
    assert.deepEqual([...encodeControl({ kind: 'who' })], [4]);
    // Reserved flag bits (4-7) are ignored; bits 1-3 ask for a clean stream (issue 12).
    assert.deepEqual(decodeControl(Buffer.of(1, 4, 0xf0)), { kind: 'lock-request', mode: 'readonly_ok', force: false, user: '' });
    assert.deepEqual(decodeControl(Buffer.of(1, 4, 0xfe)), { kind: 'lock-request', mode: 'readonly_ok', force: false, user: '', noReplay: true, noNotices: true, noGreeting: true });
    assert.deepEqual([...encodeControl({ kind: 'lock-request', mode: 'readwrite', force: false, user: '', noReplay: true, noGreeting: true })], [1, 0, 10]);
  });

  test('errors carry their VSPC_CONTROL_* code', () => {
    const cases: Array<[number[], string]> = [
      [[], 'VSPC_CONTROL_UNKNOWN'],
      [[12], 'VSPC_CONTROL_UNKNOWN'],
      [[200], 'VSPC_CONTROL_UNKNOWN'],
      [[9], 'VSPC_CONTROL_BAD_REQUEST'],
      [[9, ...Buffer.alloc(MAX_ADDRESS_BYTES + 1, 0x61)], 'VSPC_CONTROL_BAD_REQUEST'],
      [[7, ...Buffer.alloc(MAX_PATTERN_BYTES + 1, 0x61)], 'VSPC_CONTROL_BAD_REQUEST'],
      [[8], 'VSPC_CONTROL_BAD_REPLY'],
      [[8, 0, 0x7b], 'VSPC_CONTROL_BAD_REPLY'],
      [[8, 0, ...Buffer.from('{}')], 'VSPC_CONTROL_BAD_REPLY'],
      [[8, 0, ...Buffer.from('[{"name":"a"}]')], 'VSPC_CONTROL_BAD_REPLY'],
      [[8, 0, ...Buffer.from('[{"name":"a","label":"","kind":"esxi","state":"connected","clients":-1,"address":null}]')], 'VSPC_CONTROL_BAD_REPLY'],
      [[11], 'VSPC_CONTROL_BAD_REPLY'],
      [[11, 3, ...Buffer.from('{"message":"x","candidates":[]}')], 'VSPC_CONTROL_BAD_REPLY'],
      [[11, 1, ...Buffer.from('{"message":"x"}')], 'VSPC_CONTROL_BAD_REPLY'],
      [[11, 2, ...Buffer.from('{"message":"x","candidates":[1]}')], 'VSPC_CONTROL_BAD_REPLY'],
      [[1, 0], 'VSPC_CONTROL_BAD_REQUEST'],
      [[1, 0, 0, ...Buffer.alloc(MAX_USER_BYTES + 1, 0x61)], 'VSPC_CONTROL_BAD_REQUEST'],
      [[1, 5, 0], 'VSPC_CONTROL_BAD_MODE'],
      [[2], 'VSPC_CONTROL_BAD_MODE'],
      [[2, 4], 'VSPC_CONTROL_BAD_MODE'],
      [[5, 0x7b], 'VSPC_CONTROL_BAD_REPLY'],
    ];
    for (const [bytes, code] of cases) {
      assert.throws(() => decodeControl(Buffer.from(bytes)), (err) => err instanceof ProtocolError && err.code === code, `${bytes} → ${code}`);
    }
  });

  test('broker messages: wire forms, only the entry fields go out, text made safe, long requests refused not cut', () => {
    assert.deepEqual([...encodeControl({ kind: 'list-request', pattern: 'w*' })], [7, 0x77, 0x2a]);
    assert.deepEqual([...encodeControl({ kind: 'select', address: 'a:' })], [9, 0x61, 0x3a]);
    assert.deepEqual([...encodeControl({ kind: 'selected', name: 'a' })], [10, 0x61]);
    const entry = { name: 'web01', label: 'com2', kind: 'esxi', state: 'connected', clients: 2, address: 'web01:com2' };
    // A caller's object may carry more (a hub's key, its port): none of it is sent.
    const wire = encodeControl({ kind: 'list-reply', more: true, entries: [{ ...entry, key: 'secret', port: 10001 } as ConsoleListEntry] });
    assert.deepEqual([...wire.subarray(0, 2)], [8, 1]);
    assert.equal(wire.subarray(2).toString(), JSON.stringify([entry]));
    assert.deepEqual(decodeControl(wire), { kind: 'list-reply', more: true, entries: [entry] });
    const refused = encodeControl({ kind: 'select-refused', reason: 'ambiguous', message: 'm', candidates: ['web01:', 'web01:com2'] });
    assert.deepEqual([...refused.subarray(0, 2)], [11, 2]);
    assert.deepEqual(decodeControl(refused), { kind: 'select-refused', reason: 'ambiguous', message: 'm', candidates: ['web01:', 'web01:com2'] });
    const hostile = Buffer.concat([Buffer.of(8, 0), Buffer.from(JSON.stringify([{ ...entry, name: 'x\u001b]0;pwned\u0007' }]))]);
    const got = decodeControl(hostile);
    assert.equal(got.kind === 'list-reply' && got.entries[0].name, 'x?]0;pwned?');
    assert.throws(() => encodeControl({ kind: 'select', address: 'a'.repeat(MAX_ADDRESS_BYTES + 1) }), (e) => e instanceof ProtocolError && e.code === 'VSPC_CONTROL_BAD_REQUEST');
    assert.throws(() => encodeControl({ kind: 'select', address: '' }), (e) => e instanceof ProtocolError && e.code === 'VSPC_CONTROL_BAD_REQUEST');
    assert.throws(() => encodeControl({ kind: 'list-request', pattern: 'a'.repeat(MAX_PATTERN_BYTES + 1) }), (e) => e instanceof ProtocolError);
  });

  test('a user name is cut at 64 bytes on a character boundary, never inside a character', () => {
    const user = '\u20ac'.repeat(22); // 66 bytes of UTF-8: 21 whole euro signs fit
    const decoded = decodeControl(encodeControl({ kind: 'lock-request', mode: 'readwrite', force: false, user }));
    assert.deepEqual(decoded, { kind: 'lock-request', mode: 'readwrite', force: false, user: '\u20ac'.repeat(21) });
  });

  test('control characters in a user name are replaced; a WHO-REPLY that is not an array gives no holders', () => {
    assert.deepEqual(decodeControl(Buffer.from([1, 0, 0, 0x61, 0x1b, 0x62])), { kind: 'lock-request', mode: 'readwrite', force: false, user: 'a?b' });
    assert.deepEqual(decodeControl(Buffer.concat([Buffer.of(5), Buffer.from('{"a":1}')])), { kind: 'who-reply', holders: [] });
  });
});

describe('VSPC-CONTROL codec properties', () => {
  test('decode(encode(m)) is m for every valid message (user names bounded to 64 bytes of whole characters)', () => {
    fc.assert(
      fc.property(messageArb, (m) => {
        assert.deepEqual(decodeControl(encodeControl(m)), expected(m));
      }),
      params(1000),
    );
  });

  test('long user names: the longest whole-character prefix within 64 bytes', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', minLength: 10, maxLength: 80 }).filter((u) => !CONTROL_CHARS.test(u)), (user) => {
        const got = decodeControl(encodeControl({ kind: 'lock-request', mode: 'readonly', force: true, user }));
        assert.equal(got.kind === 'lock-request' && got.user, utf8PrefixOf(user, MAX_USER_BYTES));
      }),
      params(500),
    );
  });

  test('any payload decodes, or throws a ProtocolError with a VSPC_CONTROL_* code; nothing else is thrown', () => {
    fc.assert(
      fc.property(payloadArb, (payload) => {
        const got = decodeOrError(payload);
        if (got instanceof ProtocolError) {
          assert.ok(CONTROL_ERROR_CODES.includes(got.code), `code ${got.code}`);
          return;
        }
        const kinds = [undefined, 'lock-request', 'lock-granted', 'lock-refused', 'who', 'who-reply', 'lock-revoked', 'list-request', 'list-reply', 'select', 'selected', 'select-refused'];
        assert.equal(got.kind, kinds[payload[0]], 'the kind is the code byte');
        if (got.kind === 'list-request' || got.kind === 'select') {
          // Invalid UTF-8 became U+FFFD (3 bytes each): what decoded may be too long to send
          // again, and the encoder then refuses it rather than cut it.
          const text = got.kind === 'list-request' ? got.pattern : got.address;
          if (Buffer.byteLength(text) > 256) {
            assert.throws(() => encodeControl(got), (e) => e instanceof ProtocolError && e.code === 'VSPC_CONTROL_BAD_REQUEST');
            return;
          }
        }
        // What was decoded can be sent again and means the same.
        const again = decodeControl(encodeControl(got));
        if (got.kind === 'lock-request' && again.kind === 'lock-request') {
          // Invalid UTF-8 became U+FFFD (3 bytes each): the re-encoded name may be cut.
          assert.deepEqual({ ...again, user: '' }, { ...got, user: '' });
          assert.ok(got.user.startsWith(again.user));
        } else if (got.kind === 'who-reply' || got.kind === 'list-reply' || got.kind === 'select-refused') {
          assert.equal(JSON.stringify(again), JSON.stringify(got));
        } else {
          assert.deepEqual(again, got);
        }
      }),
      params(2000),
    );
  });

  test('framed as IAC SB 201 … IAC SE in one stream, any chunking decodes to the same messages', () => {
    fc.assert(
      fc.property(fc.array(messageArb, { maxLength: 8 }), fc.array(fc.nat({ max: 2000 }), { maxLength: 10 }), (messages, cuts) => {
        const wire = Buffer.concat(messages.map((m) => encodeSubnegotiation(VSPC_CONTROL_OPTION, encodeControl(m))));
        const decode = (pieces: number[]) => {
          const dec = new TelnetDecoder({ binary: true });
          const out: ControlMessage[] = [];
          let prev = 0;
          for (const c of [...pieces, wire.length]) {
            for (const t of dec.decode(wire.subarray(prev, c))) {
              assert.notEqual(t.type, 'error');
              if (t.type === 'subnegotiation' && t.option === VSPC_CONTROL_OPTION) out.push(decodeControl(t.payload));
            }
            prev = c;
          }
          return out;
        };
        const sorted = [...new Set(cuts)].filter((c) => c > 0 && c < wire.length).sort((a, b) => a - b);
        const whole = decode([]);
        assert.deepEqual(whole, messages.map(expected));
        assert.deepEqual(decode(sorted), whole);
      }),
      params(500),
    );
  });
});
