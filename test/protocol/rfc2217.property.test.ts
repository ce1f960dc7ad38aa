/**
 * The RFC 2217 codec and access server under random input (fast-check, fixed seed;
 * VSPC_FC_SEED=<n> explores further): any payload decodes or is a ProtocolError with a
 * VSPC_COMPORT_* code, never an exception; every valid message survives encode →
 * decode; telnet framing in random chunks changes nothing; the access server, fed
 * random payloads, never throws and only ever sends well-formed server answers.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import {
  COM_PORT_OPTION,
  COMMAND_NAMES,
  ComPortServer,
  decodeComPort,
  encodeComPort,
  MAX_SIGNATURE_BYTES,
  type ComPortCommand,
  type ComPortLine,
  type ComPortMessage,
} from '../../src/protocol/rfc2217/index.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { TelnetDecoder } from '../../src/protocol/telnet/decoder.js';

const SEED = Number(process.env.VSPC_FC_SEED ?? 2217);
const params = (numRuns: number) => ({ seed: SEED, numRuns });
const CODES = ['VSPC_COMPORT_MALFORMED', 'VSPC_COMPORT_UNKNOWN'];

const byte = fc.integer({ min: 0, max: 255 });
const commandArb: fc.Arbitrary<ComPortCommand> = fc.oneof(
  fc.uint8Array({ maxLength: 60 }).map((t) => ({ name: 'signature' as const, text: Buffer.from(t) })),
  fc.integer({ min: 0, max: 0xffffffff }).map((value) => ({ name: 'set-baudrate' as const, value })),
  fc.constantFrom('flowcontrol-suspend' as const, 'flowcontrol-resume' as const).map((name) => ({ name })),
  fc
    .tuple(
      fc.constantFrom(
        ...(COMMAND_NAMES.filter((n) => !['signature', 'set-baudrate', 'flowcontrol-suspend', 'flowcontrol-resume'].includes(n)) as Array<
          Exclude<ComPortCommand['name'], 'signature' | 'set-baudrate' | 'flowcontrol-suspend' | 'flowcontrol-resume'>
        >),
      ),
      byte,
    )
    .map(([name, value]) => ({ name, value }) as ComPortCommand),
);
const messageArb: fc.Arbitrary<ComPortMessage> = fc.record({ sender: fc.constantFrom('client' as const, 'server' as const), command: commandArb }, { noNullPrototype: true });

/** Random payloads, and random bodies behind every defined code (both senders) and some undefined ones. */
const payloadArb = fc.oneof(
  fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  fc.tuple(fc.integer({ min: 0, max: 12 }), fc.boolean(), fc.uint8Array({ maxLength: 6 })).map(([c, server, body]) => Buffer.concat([Buffer.of(c + (server ? 100 : 0)), body])),
  fc.tuple(fc.integer({ min: 0, max: 12 }), byte).map(([c, v]) => Buffer.of(c, v)),
  fc.uint8Array({ minLength: MAX_SIGNATURE_BYTES - 2, maxLength: MAX_SIGNATURE_BYTES + 2 }).map((t) => Buffer.concat([Buffer.of(0), t])),
);

describe('RFC 2217 codec properties', () => {
  test('any payload decodes or gives a VSPC_COMPORT_* ProtocolError; decoding never throws', () => {
    fc.assert(
      fc.property(payloadArb, (payload) => {
        const r = decodeComPort(payload);
        if (r.ok) {
          // What decodes re-encodes to the same bytes.
          assert.deepEqual(encodeComPort(r.message), payload);
        } else {
          assert.ok(r.error instanceof ProtocolError);
          assert.ok(CODES.includes(r.error.code), r.error.code);
        }
      }),
      params(5000),
    );
  });

  test('decode(encode(m)) is m for every valid message', () => {
    fc.assert(
      fc.property(messageArb, (m) => {
        const r = decodeComPort(encodeComPort(m));
        assert.ok(r.ok);
        assert.deepEqual(r.message, m);
      }),
      params(3000),
    );
  });

  test('framed as IAC SB 44 ... IAC SE and split at random, the telnet decoder gives back the same payload', () => {
    fc.assert(
      fc.property(messageArb, fc.array(fc.integer({ min: 1, max: 8 }), { maxLength: 10 }), (m, cuts) => {
        const payload = encodeComPort(m);
        const wire = encodeSubnegotiation(COM_PORT_OPTION, payload);
        const decoder = new TelnetDecoder();
        const got: Buffer[] = [];
        let at = 0;
        const feed = (chunk: Buffer) => {
          for (const t of decoder.decode(chunk)) if (t.type === 'subnegotiation' && t.option === COM_PORT_OPTION) got.push(Buffer.from(t.payload));
        };
        for (const c of cuts) {
          if (at >= wire.length) break;
          feed(wire.subarray(at, at + c));
          at += c;
        }
        if (at < wire.length) feed(wire.subarray(at));
        assert.deepEqual(got, [payload]);
      }),
      params(2000),
    );
  });
});

describe('RFC 2217 access server properties', () => {
  test('random payloads: never throws, answers only with well-formed server messages, at most one answer per command', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(payloadArb, { maxLength: 30 }), fc.boolean(), async (payloads, async) => {
        const sent: Buffer[] = [];
        let line: ComPortLine = { baudRate: 9600, dataSize: 8, parity: 'none', stopBits: '1', flow: 'none' };
        const server = new ComPortServer(
          {
            send: (p) => sent.push(p),
            current: () => ({ ...line }),
            apply: (c) => {
              line = { ...line, ...c };
              return async ? Promise.resolve({ ...line }) : { ...line };
            },
            setBreak: (on) => on,
          },
          { signature: 'vspc' },
        );
        for (const p of payloads) server.receive(p);
        for (let i = 0; i < payloads.length + 2 && server.pending > 0; i++) await new Promise((r) => setImmediate(r));
        assert.equal(server.pending, 0);
        assert.ok(sent.length <= payloads.length);
        for (const s of sent) {
          const r = decodeComPort(s);
          assert.ok(r.ok, s.toString('hex'));
          assert.equal(r.message.sender, 'server');
        }
      }),
      params(500),
    );
  });
});
