import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_DEVICE_LINE, formatSourceSpec, parseSourceSpec, type SourceSpec } from '../../src/domain/source-spec.js';
import { VspcError } from '../../src/errors.js';

function invalid(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseSourceSpec(text),
    (err: unknown) => err instanceof VspcError && err.code === 'VSPC_SOURCE_INVALID' && pattern.test(err.message),
    text,
  );
}

describe('source specs (config `source:`)', () => {
  test('every type parses to its fields, with local defaults', () => {
    assert.deepEqual(parseSourceSpec('unix:/var/run/qemu-server/100.serial0'), { type: 'unix', path: '/var/run/qemu-server/100.serial0' });
    assert.deepEqual(parseSourceSpec('unix-listen:/run/vspc/vm1.sock'), { type: 'unix-listen', path: '/run/vspc/vm1.sock' });
    assert.deepEqual(parseSourceSpec('tcp:10.0.0.5:4555'), { type: 'tcp', host: '10.0.0.5', port: 4555 });
    assert.deepEqual(parseSourceSpec('tcp-listen::4556'), { type: 'tcp-listen', host: '127.0.0.1', port: 4556 });
    assert.deepEqual(parseSourceSpec('telnet:[::1]:4444'), { type: 'telnet', host: '::1', port: 4444 });
    assert.deepEqual(parseSourceSpec('udp::4555@:4556'), { type: 'udp', local: { host: '127.0.0.1', port: 4555 }, remote: { host: '127.0.0.1', port: 4556 } });
    assert.deepEqual(parseSourceSpec('device:/dev/ttyUSB0'), { type: 'device', path: '/dev/ttyUSB0', line: DEFAULT_DEVICE_LINE });
    assert.deepEqual(parseSourceSpec('device:/dev/nmdm0B?baud=9600&data=7&parity=even&stop=2&flow=rtscts'), {
      type: 'device',
      path: '/dev/nmdm0B',
      line: { baudRate: 9600, dataSize: 7, parity: 'even', stopBits: '2', flow: 'rtscts' },
    });
  });

  test('bad specs are refused with VSPC_SOURCE_INVALID naming the part', () => {
    invalid('', /no source type/);
    invalid('/var/run/x', /no source type/);
    invalid('serial:/dev/ttyS0', /unknown source type "serial"/);
    invalid('unix:relative/path', /not an absolute path/);
    invalid('unix:', /path is empty/);
    invalid(`unix:/${'a'.repeat(120)}`, /at most 107 bytes/);
    invalid('tcp:host', /not HOST:PORT/);
    invalid('tcp:host:99999', /outside 1-65535/);
    invalid('tcp:host:0', /outside 1-65535/);
    invalid('tcp:fe80::1:22', /IPv6/);
    invalid('udp::4555', /LOCALHOST:PORT@REMOTEHOST:PORT/);
    invalid('device:/dev/ttyS0?baud=fast', /baud "fast"/);
    invalid('device:/dev/ttyS0?parity=maybe', /parity "maybe"/);
    invalid('device:/dev/ttyS0?speed=9600', /unknown device setting "speed"/);
    invalid('unix:/tmp/a\0b', /NUL/);
  });

  test('formatting is canonical and parses back to the same spec', () => {
    const host = fc.constantFrom('127.0.0.1', '::1', 'vm-host.example', '10.1.2.3');
    const port = fc.integer({ min: 1, max: 65535 });
    const path = fc.stringMatching(/^\/[a-z0-9._-]{1,40}(\/[a-z0-9._-]{1,20}){0,3}$/);
    const spec: fc.Arbitrary<SourceSpec> = fc.oneof(
      fc.record({ type: fc.constantFrom('unix' as const, 'unix-listen' as const), path }),
      fc.record({ type: fc.constantFrom('tcp' as const, 'tcp-listen' as const, 'telnet' as const), host, port }),
      fc.record({ type: fc.constant('udp' as const), local: fc.record({ host, port }), remote: fc.record({ host, port }) }),
      fc.record({
        type: fc.constant('device' as const),
        path,
        line: fc.record({
          baudRate: fc.constantFrom(1200, 9600, 115200, 921600),
          dataSize: fc.integer({ min: 5, max: 8 }),
          parity: fc.constantFrom('none' as const, 'odd' as const, 'even' as const, 'mark' as const, 'space' as const),
          stopBits: fc.constantFrom('1' as const, '1.5' as const, '2' as const),
          flow: fc.constantFrom('none' as const, 'rtscts' as const, 'xonxoff' as const),
        }),
      }),
    );
    fc.assert(
      fc.property(spec, (s) => {
        assert.deepEqual(parseSourceSpec(formatSourceSpec(s)), structuredClone(s));
      }),
      { seed: 1130, numRuns: 500 },
    );
  });

  test('arbitrary text parses or fails with VSPC_SOURCE_INVALID, never anything else', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), (text) => {
        try {
          parseSourceSpec(text);
        } catch (err) {
          assert.ok(err instanceof VspcError && err.code === 'VSPC_SOURCE_INVALID', String(err));
        }
      }),
      { seed: 7, numRuns: 2000 },
    );
  });
});
