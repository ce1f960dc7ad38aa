/**
 * The audit observer (winston lines about client access), combineObservers, and the
 * console-log command-line flags.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleHub, type ConsoleEvent, type ConsoleObserver } from '../../src/domain/console-hub.js';
import { createAuditObserver } from '../../src/logging/audit.js';
import { combineObservers, combineObserversWith } from '../../src/logging/observers.js';
import { buildProgram, configFromOptions } from '../../src/config/options.js';
import { DEFAULTS } from '../../src/config/config.js';
import { ConfigError } from '../../src/errors.js';
import type { ConsoleClient } from '../../src/domain/seams.js';
import { FakeClient, FakeSource, memoryLogger } from '../domain/fakes.js';

const UUID = '421a5b7709c38e219f00aa105c2e7d01';

let nextId = 1000;
/** A console client with a peer address of our choosing. */
class PeerClient implements ConsoleClient {
  readonly id = nextId++;
  closedWith: string | null = null;
  constructor(readonly peer: string) {}
  deliver(): void {}
  notice(): void {}
  pauseInput(): void {}
  resumeInput(): void {}
  close(reason: string): void {
    this.closedWith = reason;
  }
}

describe('audit observer', () => {
  test('attach (with mode), forced takeover and detach (with reason and duration) are audit lines; VM events are not', () => {
    const { logger, lines } = memoryLogger();
    let clock = 1000;
    const audit = createAuditObserver(logger, () => clock);
    const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: 'com1', name: 'web-01', tcpPort: 10007 }, undefined, undefined, audit);
    const src = new FakeSource();
    hub.attachSource(src);
    const a = new PeerClient('10.0.0.5:40001');
    assert.equal(hub.addClient(a, { request: 'exclusive' }).granted, true);
    assert.equal(audit.attachedClients, 1);
    clock += 2500;
    const b = new PeerClient('10.0.0.6:40002');
    assert.equal(hub.addClient(b, { request: 'exclusive', force: true }).granted, true);
    assert.ok(a.closedWith, 'displaced client closed');
    clock += 500;
    hub.removeClient(b, 'connection closed');
    hub.detachSource(src);
    assert.equal(audit.attachedClients, 0, 'nothing left behind');

    const vm = { vm: 'web-01:com1', uuid: '421a5b77-09c3-8e21-9f00-aa105c2e7d01', label: 'com1', port: 10007, audit: true };
    const got = lines.map((l) => ({ ...l, timestamp: undefined }));
    assert.deepEqual(got, [
      // Issue 12 item 10: the audit line is the one attach line, so it carries the client count (and force).
      { ...vm, timestamp: undefined, level: 'info', message: 'client attached', clientId: a.id, peer: '10.0.0.5:40001', mode: 'exclusive', clients: 1 },
      {
        ...vm,
        timestamp: undefined,
        level: 'warn',
        message: 'client took over the VM serial port (forced)',
        clientId: b.id,
        peer: '10.0.0.6:40002',
        displacedClientId: a.id,
        displacedPeer: '10.0.0.5:40001',
        displacedDurationMs: 2500,
      },
      { ...vm, timestamp: undefined, level: 'info', message: 'client attached', clientId: b.id, peer: '10.0.0.6:40002', mode: 'exclusive', force: true, clients: 1 },
      {
        ...vm,
        timestamp: undefined,
        level: 'info',
        message: 'client detached',
        clientId: b.id,
        peer: '10.0.0.6:40002',
        reason: 'connection closed',
        durationMs: 500,
      },
    ]);
    for (const l of lines) assert.equal(typeof l.timestamp, 'string');
  });

  test('the user name a client gave is in its attach, detach and takeover lines (issue 12 item 7)', () => {
    const { logger, lines } = memoryLogger();
    const audit = createAuditObserver(logger);
    const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: 'web-01', tcpPort: 10007 }, undefined, undefined, audit);
    const a = new PeerClient('127.0.0.1:40001');
    hub.addClient(a, { request: 'exclusive', user: 'alice', tls: true });
    const b = new PeerClient('127.0.0.1:40002');
    hub.addClient(b, { request: 'exclusive', force: true, user: 'bob' });
    hub.removeClient(b, 'connection closed');
    const pick = (m: string) => lines.filter((l) => l.message === m);
    assert.deepEqual(
      pick('client attached').map((l) => [l.peer, l.user, l.tls]),
      [
        ['127.0.0.1:40001', 'alice', true],
        ['127.0.0.1:40002', 'bob', undefined],
      ],
    );
    const takeover = pick('client took over the VM serial port (forced)')[0];
    assert.equal(takeover.user, 'bob');
    assert.equal(takeover.displacedUser, 'alice');
    assert.equal(pick('client detached')[0].user, 'bob');
  });

  test('a client without a mode is audited as readwrite', () => {
    const { logger, lines } = memoryLogger();
    const audit = createAuditObserver(logger);
    const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: null, tcpPort: 1 }, undefined, undefined, audit);
    hub.addClient(new FakeClient());
    assert.equal(lines[0].mode, 'readwrite');
    assert.equal(lines[0].vm, UUID);
  });
});

describe('combineObservers', () => {
  test('calls every observer in order; skips null; none → undefined', () => {
    const calls: string[] = [];
    const mk = (name: string): ConsoleObserver => ({
      output: (_p, d) => calls.push(`${name}:out:${d.toString()}`),
      event: (_p, e) => calls.push(`${name}:${e.kind}`),
    });
    const eventsOnly: ConsoleObserver = { event: (_p, e) => calls.push(`e:${e.kind}`) };
    const both = combineObservers(mk('a'), null, undefined, eventsOnly, mk('b'));
    assert.ok(both);
    const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: null, tcpPort: 1 }, undefined, undefined, both);
    hub.fromVm(Buffer.from('x'));
    hub.attachSource(new FakeSource());
    assert.deepEqual(calls, ['a:out:x', 'b:out:x', 'a:vm-connected', 'e:vm-connected', 'b:vm-connected']);
    assert.equal(combineObservers(null, undefined), undefined);
  });

  test('an observer that throws does not stop the others or the hub', () => {
    const errors: Array<[string, number]> = [];
    const seen: ConsoleEvent[] = [];
    const bad: ConsoleObserver = {
      output: () => {
        throw new Error('boom');
      },
      event: () => {
        throw new Error('bang');
      },
    };
    const good: ConsoleObserver = { event: (_p, e) => seen.push(e), output: () => seen.push({ kind: 'vm-connected', peer: 'out' }) };
    const obs = combineObserversWith({ onError: (err, i) => errors.push([(err as Error).message, i]) }, bad, good);
    const hub = new ConsoleHub({ id: 1, kind: 'esxi', key: UUID, label: '', name: null, tcpPort: 1 }, undefined, undefined, obs);
    const client = new FakeClient();
    hub.addClient(client, { replay: false });
    hub.fromVm(Buffer.from('still delivered'));
    assert.equal(client.output.toString(), 'still delivered');
    assert.deepEqual(errors, [
      ['bang', 0],
      ['boom', 0],
    ]);
    assert.equal(seen.length, 2);
  });
});

describe('console log flags', () => {
  const parse = (args: string[]) => {
    const program = buildProgram().exitOverride();
    program.parse(args, { from: 'user' });
    return configFromOptions(program.opts());
  };

  test('defaults: off, 10 MiB, 5 files, 1 h marks', () => {
    const c = parse([]);
    assert.equal(c.logDir, null);
    assert.equal(c.logMaxSize, 10 * 1024 * 1024);
    assert.equal(c.logKeep, 5);
    assert.equal(c.logMarkIntervalMs, 3_600_000);
    assert.equal(DEFAULTS.logDir, null);
    assert.equal(DEFAULTS.logMaxSize, c.logMaxSize);
    assert.equal(DEFAULTS.logKeep, c.logKeep);
    assert.equal(DEFAULTS.logMarkIntervalMs, c.logMarkIntervalMs);
  });

  test('values are parsed', () => {
    const c = parse(['--log-dir', '/var/log/vspc', '--log-max-size', '64k', '--log-keep', '0', '--log-mark-interval', '0']);
    assert.equal(c.logDir, '/var/log/vspc');
    assert.equal(c.logMaxSize, 65536);
    assert.equal(c.logKeep, 0);
    assert.equal(c.logMarkIntervalMs, 0);
    assert.equal(parse(['--log-mark-interval', '15m']).logMarkIntervalMs, 900_000);
  });

  test('errors name the flag', () => {
    const bad: Array<[string[], RegExp]> = [
      [['--log-keep', 'x'], /^--log-keep: "x" is not a number of files/],
      [['--log-keep', '1001'], /^--log-keep:/],
      [['--log-max-size', 'lots'], /^--log-max-size: "lots" is not a size/],
      [['--log-max-size', '100'], /^--log-max-size: 100 bytes is too small/],
      [['--log-mark-interval', 'often'], /^--log-mark-interval: "often" is not a duration/],
      [['--log-dir', ''], /^--log-dir: must not be empty/],
    ];
    for (const [args, re] of bad) {
      assert.throws(
        () => parse(args),
        (err: unknown) => err instanceof ConfigError && re.test(err.message),
        args.join(' '),
      );
    }
  });
});
