/**
 * VspcServerProtocol under random input (fast-check, fixed seed; VSPC_FC_SEED=<n>
 * explores another part of the space): random option-232 payloads inside random telnet
 * streams give events or one protocol error, never a throw; chunking changes neither
 * the events nor the bytes written; what we write is always well-formed telnet.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import { DO, DONT, IAC, WILL, WONT, Option, type NegotiationVerb } from '../../src/protocol/telnet/constants.js';
import { encodeToken } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';
import { Ext, PROXY_KNOWN_SUBOPTIONS } from '../../src/protocol/vmware/codes.js';
import { MAX_NAME_BYTES } from '../../src/protocol/vmware/identity.js';
import { ext, normaliseEvents, PROTOCOL_ERROR_CODES, recordProtocol, type ProtocolEvent } from './vmware-harness.js';

const SEED = Number(process.env.VSPC_FC_SEED ?? 232);
const params = (numRuns: number) => ({ seed: SEED, numRuns });

const EXT_CODES = Object.values(Ext) as number[];
const OPTIONS = [Option.BINARY, Option.ECHO, Option.SGA, Option.AUTHENTICATION, Option.COM_PORT, Option.VMWARE_EXT];
const VERBS: NegotiationVerb[] = [WILL, WONT, DO, DONT];
const COMMANDS = [236, 237, 238, 239, 241, 242, 243, 244, 245, 246, 247, 248, 249];

const byteArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0, max: 255 }) },
  { weight: 1, arbitrary: fc.constantFrom(255, 250, 240, 13, 10, 0) },
);
const bytesArb = (maxLength: number) => fc.array(byteArb, { maxLength }).map((a) => Buffer.from(a));

/** UUID text as ESXi or a broken host might send it: hex pairs, separators, any case, sometimes wrong. */
const uuidTextArb = fc
  .record({
    hex: fc.array(fc.constantFrom(...'0123456789abcdefABCDEFxz'), { minLength: 30, maxLength: 34 }),
    sep: fc.constantFrom('', ' ', '-', '{'),
  })
  .map(({ hex, sep }) => hex.join('').replace(/(..)/g, `$1${sep}`));

/** DO-PROXY bodies: direction + URI, mostly plausible. */
const doProxyArb = fc
  .record({
    direction: fc.constantFrom('S', 'C', 's', '\u0000', '\u00ff'),
    service: fc.constantFrom('vSPC.py', 'other', ''),
    query: fc.option(
      fc.oneof(
        fc.string({ maxLength: 12 }).map((l) => `port=${encodeURIComponent(l)}`),
        // Control characters and over-long labels are VSPC_BAD_DO_PROXY.
        fc.string({ unit: 'binary-ascii', maxLength: 70 }).map((l) => `port=${encodeURIComponent(l)}`),
        fc.string({ maxLength: 70 }),
      ),
      { nil: undefined },
    ),
  })
  .map(({ direction, service, query }) => Buffer.from(direction + service + (query === undefined ? '' : `?${query}`), 'latin1'));

/** Option-232 payloads: code byte + body; valid, nearly valid and random. */
const payload232Arb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...EXT_CODES), bytesArb(24)).map(([c, b]) => Buffer.concat([Buffer.of(c), b])) },
  { weight: 2, arbitrary: doProxyArb.map((b) => Buffer.concat([Buffer.of(Ext.DO_PROXY), b])) },
  { weight: 2, arbitrary: uuidTextArb.map((t) => Buffer.concat([Buffer.of(Ext.VM_VC_UUID), Buffer.from(t, 'latin1')])) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 20 }).map((n) => Buffer.concat([Buffer.of(Ext.VM_NAME), Buffer.from(n)])) },
  { weight: 1, arbitrary: fc.integer({ min: MAX_NAME_BYTES - 2, max: MAX_NAME_BYTES + 2 }).map((n) => Buffer.concat([Buffer.of(Ext.VM_NAME), Buffer.alloc(n, 0x6e)])) },
  { weight: 2, arbitrary: bytesArb(16) },
);

/** One element of a host's stream, already encoded: telnet tokens, option-232 SBs, raw junk. */
const pieceArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 4, arbitrary: payload232Arb.map((p) => encodeToken({ type: 'subnegotiation', option: Option.VMWARE_EXT, payload: p })) },
  { weight: 2, arbitrary: bytesArb(16).map((data) => encodeToken({ type: 'data', data })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(...VERBS), fc.oneof(fc.constantFrom(...OPTIONS), fc.integer({ min: 0, max: 255 })))
      .map(([verb, option]) => encodeToken({ type: 'negotiation', verb, option })),
  },
  { weight: 1, arbitrary: fc.constantFrom(...COMMANDS).map((command) => encodeToken({ type: 'command', command })) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(Option.COM_PORT, Option.BINARY, 99), bytesArb(8))
      .map(([option, payload]) => encodeToken({ type: 'subnegotiation', option, payload })),
  },
  // Raw bytes, unescaped: usually a framing error somewhere.
  { weight: 1, arbitrary: bytesArb(12) },
);

/** A host's whole stream: most begin by agreeing option 232, as ESXi does. */
const streamArb = fc
  .record({ agree: fc.boolean(), pieces: fc.array(pieceArb, { maxLength: 16 }) })
  .map(({ agree, pieces }) => Buffer.concat([agree ? Buffer.of(IAC, WILL, Option.VMWARE_EXT) : Buffer.alloc(0), ...pieces]));

const optionsArb = fc.record({
  comPort: fc.boolean(),
  // Sometimes a small bound, so that TELNET_SB_TOO_LONG is exercised too.
  maxSubnegotiation: fc.option(fc.integer({ min: 4, max: 64 }), { nil: undefined, freq: 2 }),
});

interface Run {
  events: ProtocolEvent[];
  written: Buffer;
  writtenAtError: number | null;
  errors: unknown[];
}

/** Feeds `bytes` cut at `cuts` to a started protocol. Throws only if the protocol throws. */
function run(bytes: Buffer, cuts: readonly number[], options: { comPort: boolean; maxSubnegotiation?: number }): Run {
  const r = recordProtocol(options);
  let writtenAtError: number | null = null;
  r.protocol.start();
  const sorted = [...new Set(cuts)].filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
  let prev = 0;
  for (const c of [...sorted, bytes.length]) {
    // A copy per piece, like separate socket reads.
    r.protocol.receive(Buffer.from(bytes.subarray(prev, c)));
    if (writtenAtError === null && r.errors.length > 0) writtenAtError = Buffer.concat(r.written).length;
    prev = c;
  }
  return { events: normaliseEvents(r.events), written: Buffer.concat(r.written), writtenAtError, errors: r.errors };
}

describe('VspcServerProtocol properties', () => {
  test('random option-232 payloads in random telnet streams: events or one ProtocolError (last), never a throw', () => {
    fc.assert(
      fc.property(streamArb, fc.array(fc.nat({ max: 600 }), { maxLength: 10 }), optionsArb, (bytes, cuts, options) => {
        const got = run(bytes, cuts, options);
        const errorEvents = got.events.filter((e) => e.type === 'error');
        assert.ok(errorEvents.length <= 1, 'at most one error');
        if (errorEvents.length === 1) {
          assert.equal(got.events[got.events.length - 1].type, 'error', 'the error is the last event');
          assert.equal(got.errors.length, 1);
          assert.ok(got.errors[0] instanceof ProtocolError, 'a ProtocolError');
          const code = (got.errors[0] as ProtocolError).code;
          assert.ok((PROTOCOL_ERROR_CODES as readonly string[]).includes(code), `stable code, got ${code}`);
          assert.equal(got.written.length, got.writtenAtError, 'nothing written after the error');
        }
      }),
      params(800),
    );
  });

  test('any chunking gives the same events and the same bytes written', () => {
    fc.assert(
      fc.property(streamArb, fc.array(fc.nat({ max: 600 }), { maxLength: 12 }), optionsArb, (bytes, cuts, options) => {
        const whole = run(bytes, [], options);
        const split = run(bytes, cuts, options);
        assert.deepEqual(split.events, whole.events);
        assert.deepEqual(split.written, whole.written);
      }),
      params(600),
    );
  });

  test('one byte at a time gives the same events and the same bytes written', () => {
    fc.assert(
      fc.property(streamArb, optionsArb, (bytes, options) => {
        const whole = run(bytes, [], options);
        const bytewise = run(
          bytes,
          Array.from({ length: bytes.length }, (_, i) => i),
          options,
        );
        assert.deepEqual(bytewise.events, whole.events);
        assert.deepEqual(bytewise.written, whole.written);
      }),
      params(300),
    );
  });

  test('what we write is well-formed telnet, and every option-232 code we send is one we announce', () => {
    fc.assert(
      fc.property(streamArb, optionsArb, (bytes, options) => {
        const { written } = run(bytes, [], options);
        const tokens = new TelnetDecoder({ binary: true }).decode(written);
        assert.equal(
          tokens.find((t) => t.type === 'error'),
          undefined,
        );
        for (const t of tokens) {
          if (t.type === 'subnegotiation' && t.option === Option.VMWARE_EXT) {
            assert.ok(PROXY_KNOWN_SUBOPTIONS.includes(t.payload[0]), `code ${t.payload[0]} is announced`);
          }
        }
      }),
      params(400),
    );
  });

  test('an unknown code is always answered with UNKNOWN-SUBOPTION-RCVD-2 carrying it, and reported', () => {
    // The codes a host may send that we act on; every other byte value is unknown to us.
    const handled = new Set<number>([
      Ext.KNOWN_SUBOPTIONS_1, Ext.UNKNOWN_SUBOPTION_RCVD_1, Ext.VMOTION_BEGIN, Ext.VMOTION_PEER, Ext.VMOTION_COMPLETE,
      Ext.VMOTION_ABORT, Ext.DO_PROXY, Ext.VM_VC_UUID, Ext.VM_NAME, Ext.VM_BIOS_UUID, Ext.VM_LOCATION_UUID,
    ]);
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }).filter((c) => !handled.has(c)),
        bytesArb(10),
        (code, body) => {
          const wire = Buffer.concat([Buffer.of(IAC, WILL, Option.VMWARE_EXT), ext(code, body)]);
          const got = run(wire, [], { comPort: false });
          assert.deepEqual(got.events.at(-1), { type: 'unknownSuboption', code });
          const replies = new TelnetDecoder({ binary: true })
            .decode(got.written)
            .filter((t) => t.type === 'subnegotiation' && t.payload[0] === Ext.UNKNOWN_SUBOPTION_RCVD_2);
          assert.equal(replies.length, 1);
          assert.deepEqual(replies[0].type === 'subnegotiation' && [...replies[0].payload], [Ext.UNKNOWN_SUBOPTION_RCVD_2, code]);
        },
      ),
      params(300),
    );
  });

  test('valid identification in any spelling yields proxy, uuid and name events with the normalised values', () => {
    const hexArb = fc.array(fc.constantFrom(...'0123456789abcdefABCDEF'), { minLength: 32, maxLength: 32 }).map((a) => a.join(''));
    fc.assert(
      fc.property(
        hexArb,
        fc.constantFrom(' ', '-', ''),
        fc.string({ unit: 'grapheme', maxLength: 30 }),
        fc.string({ unit: 'grapheme-ascii', maxLength: 10 }),
        (hex, sep, name, label) => {
          const uuidText = hex.replace(/(..)/g, `$1${sep}`).trim();
          const wire = Buffer.concat([
            Buffer.of(IAC, WILL, Option.VMWARE_EXT),
            ext(Ext.DO_PROXY, `SvSPC.py?port=${encodeURIComponent(label)}`),
            ext(Ext.VM_VC_UUID, uuidText),
            ext(Ext.VM_NAME, Buffer.from(name, 'utf8')),
          ]);
          const got = run(wire, [], { comPort: false });
          if (/[\u0000-\u001f\u007f]/.test(label)) {
            assert.deepEqual(got.events.at(-1), { type: 'error', code: 'VSPC_BAD_DO_PROXY' });
            return;
          }
          assert.deepEqual(
            got.events.filter((e) => e.type !== 'extensionEnabled'),
            [
              { type: 'proxy', request: { direction: 'S', uri: `vSPC.py?port=${encodeURIComponent(label)}`, service: 'vSPC.py', label }, accepted: true },
              { type: 'uuid', uuid: hex.toLowerCase() },
              { type: 'name', name: name.replace(/[\u0000-\u001f\u007f]/g, '?') },
            ],
          );
        },
      ),
      params(300),
    );
  });
});
