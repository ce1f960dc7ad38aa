/**
 * Backoff and EndpointRunner with fake links and mock timers: no sockets, no sleeps.
 * Virtual time (node:test mock.timers: setTimeout and Date) is advanced with tick();
 * promise callbacks run on flush() (a real setImmediate).
 */
import { describe, test, mock, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, DEFAULT_BACKOFF, backoffOptions } from '../../src/sources/common/backoff.js';
import { SourceError } from '../../src/sources/common/errors.js';
import { EndpointRunner, type EndpointDetail } from '../../src/sources/common/runner.js';
import { ConnectorRegistry } from '../../src/sources/common/link.js';
import { createEndpoint } from '../../src/sources/qemu/index.js';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { ConsoleEvent } from '../../src/domain/console-hub.js';
import { FakeClient } from '../domain/fakes.js';
import { FakeDialer, FakeLink, FakeListenConnector, flush, makeHub, recordingLogger, type LogLine } from './helpers.js';
import type { Logger } from '../../src/domain/logger.js';
import { FakeDescriptorBudget } from '../support/fake-descriptors.js';

const T0 = 1_700_000_000_000;
const SPEC = parseSourceSpec('unix:/run/qemu/vm1.serial0');
const LISTEN_SPEC = parseSourceSpec('unix-listen:/run/vspc/vm1.sock');

function vmEvents(events: ConsoleEvent[]): string[] {
  return events.map((e) => e.kind).filter((k) => k.startsWith('vm-'));
}

function virtualTime(t: TestContext): void {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  t.after(() => mock.timers.reset());
}

function refused(): SourceError {
  return new SourceError('VSPC_SOURCE_CONNECT_FAILED', 'ECONNREFUSED: nothing listens', { sysCode: 'ECONNREFUSED' });
}

function setup(options: { random?: () => number; connector?: FakeDialer | FakeListenConnector; spec?: typeof SPEC; descriptors?: FakeDescriptorBudget } = {}) {
  const logger = recordingLogger();
  const { hub, events } = makeHub();
  const connector = options.connector ?? new FakeDialer();
  const runner = new EndpointRunner(options.spec ?? SPEC, connector, hub, {
    logger,
    random: options.random ?? (() => 0),
    ...(options.descriptors ? { descriptors: options.descriptors } : {}),
  });
  return { logger, hub, events, connector, runner };
}

/** Settles the pending dial with a new link and lets the runner take it. */
async function connect(dialer: FakeDialer): Promise<FakeLink> {
  const link = new FakeLink();
  dialer.last.resolve(link);
  await flush();
  return link;
}

async function fail(dialer: FakeDialer, err: SourceError = refused()): Promise<void> {
  dialer.last.reject(err);
  await flush();
}

describe('Backoff', () => {
  test('doubles from 100 ms up to the 5 s cap; jitter only shortens', () => {
    const b = new Backoff({}, () => 0);
    const seq = Array.from({ length: 9 }, () => b.next());
    assert.deepEqual(seq, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    const half = new Backoff({}, () => 0.999999);
    assert.deepEqual(
      Array.from({ length: 8 }, () => half.next()),
      [50, 100, 200, 400, 800, 1600, 2500, 2500],
    );
    const r = new Backoff();
    for (let i = 0; i < 10_000; i++) {
      const d = r.next();
      assert.ok(d <= DEFAULT_BACKOFF.maxMs, `delay ${d} above the cap`);
      if (i > 10) assert.ok(d >= DEFAULT_BACKOFF.maxMs / 2, `delay ${d} below half the cap`);
    }
  });

  test('reset starts over; a long outage does not overflow', () => {
    const b = new Backoff({}, () => 0);
    for (let i = 0; i < 5000; i++) b.next();
    assert.equal(b.next(), 5000);
    b.reset();
    assert.equal(b.next(), 100);
  });

  test('configurable; nonsense refused', () => {
    const b = new Backoff({ initialMs: 10, factor: 3, maxMs: 100, jitter: 0 });
    assert.deepEqual(Array.from({ length: 5 }, () => b.next()), [10, 30, 90, 100, 100]);
    assert.throws(() => backoffOptions({ initialMs: 0 }), RangeError);
    assert.throws(() => backoffOptions({ maxMs: 50 }), RangeError);
    assert.throws(() => backoffOptions({ jitter: 2 }), RangeError);
    assert.throws(() => backoffOptions({ factor: 0.5 }), RangeError);
  });
});

describe('EndpointRunner (dial)', () => {
  test('connecting → connected: the link is the hub source; output and input flow; loss → waiting → redial', async (t) => {
    virtualTime(t);
    const { hub, events, connector, runner } = setup();
    const dialer = connector as FakeDialer;
    assert.equal(hub.endpoint === null, true, 'no status before start');
    runner.start();
    assert.equal(runner.state, 'connecting');
    assert.equal(hub.endpoint?.state, 'connecting');
    assert.equal(hub.endpoint?.spec, 'unix:/run/qemu/vm1.serial0');
    assert.equal(hub.state, 'disconnected');

    const link = await connect(dialer);
    assert.equal(runner.state, 'connected');
    assert.equal(hub.state, 'connected');
    assert.equal(hub.source?.kind, 'unix');
    assert.equal(hub.source?.peer, 'unix:/run/qemu/vm1.serial0');
    assert.deepEqual(events.map((e) => e.kind), ['vm-connected']);

    const client = new FakeClient();
    hub.addClient(client);
    link.emit('boot: ok\r\n');
    assert.equal(client.output.toString(), 'boot: ok\r\n');
    hub.fromClient(client, Buffer.from('uname -r\r'));
    assert.equal(Buffer.concat(link.written).toString(), 'uname -r\r');
    hub.sendBreak();
    assert.equal(link.breaks, 1);

    // Backpressure passes through to the hub (clients paused until drain).
    link.full = true;
    hub.fromClient(client, Buffer.from('x'));
    assert.equal(client.paused, true);
    link.full = false;
    link.drain!();
    assert.equal(client.paused, false);

    mock.timers.tick(60_000);
    link.drop(new SourceError('VSPC_SOURCE_CLOSED', 'unix:/run/qemu/vm1.serial0 closed the connection'));
    assert.equal(runner.state, 'waiting');
    assert.equal(hub.state, 'disconnected');
    assert.deepEqual(vmEvents(events), ['vm-connected', 'vm-disconnected']);
    const st = hub.endpoint!;
    assert.equal(st.state, 'waiting');
    assert.equal(st.reconnects, 1);
    assert.match(st.lastError!, /closed the connection/);
    // The link lived 60 s: the backoff starts over at 100 ms.
    assert.equal(st.nextAttemptAt, T0 + 60_000 + 100);
    assert.equal(dialer.dials, 1);
    mock.timers.tick(99);
    assert.equal(dialer.dials, 1);
    mock.timers.tick(1);
    assert.equal(dialer.dials, 2);
    assert.equal(runner.state, 'connecting');
    assert.equal(hub.endpoint?.nextAttemptAt, null);
    await connect(dialer);
    assert.equal(runner.state, 'connected');
    assert.equal(hub.endpoint?.lastError, st.lastError, 'lastError says why the previous link ended');
    await runner.close();
  });

  test('failed attempts back off exponentially up to the cap; attempts per virtual minute are bounded', async (t) => {
    virtualTime(t);
    const { connector, runner, hub } = setup();
    const dialer = connector as FakeDialer;
    dialer.auto = () => Promise.reject(refused());
    runner.start();
    await flush();
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      assert.equal(runner.state, 'waiting');
      const wait = hub.endpoint!.nextAttemptAt! - Date.now();
      delays.push(wait);
      mock.timers.tick(wait);
      await flush();
    }
    assert.deepEqual(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]);
    // Over the next virtual hour at the cap: 720 attempts (one per 5 s), not a spin.
    const before = dialer.dials;
    for (let ms = 0; ms < 3_600_000; ms += 1000) {
      mock.timers.tick(1000);
      await flush();
    }
    assert.equal(dialer.dials - before, 720);
    assert.equal(hub.endpoint!.reconnects, dialer.dials);
    assert.equal(runner.status.attempts, dialer.dials);
    await runner.close();
  });

  test('a peer that accepts and closes at once is retried ever more slowly (no spin)', async (t) => {
    virtualTime(t);
    const { connector, runner, events } = setup();
    const dialer = connector as FakeDialer;
    dialer.auto = async () => {
      const link = new FakeLink();
      // Accepts, then closes as soon as it flows.
      const start = link.start.bind(link);
      link.start = (sink) => {
        start(sink);
        link.drop(new SourceError('VSPC_SOURCE_CLOSED', 'closed at once'));
      };
      return link;
    };
    runner.start();
    await flush();
    assert.equal(runner.state, 'waiting');
    // 60 virtual seconds: 100+200+400+800+1600+3200 = 6.3 s for the first six, then one per 5 s.
    for (let ms = 0; ms < 60_000; ms += 50) {
      mock.timers.tick(50);
      await flush();
    }
    assert.ok(dialer.dials <= 7 + 11, `${dialer.dials} attempts in 60 s`);
    assert.ok(dialer.dials >= 15, `${dialer.dials} attempts in 60 s: still retrying`);
    // Each one is marked in the console log as a connect and a disconnect.
    assert.equal(events.filter((e) => e.kind === 'vm-connected').length, dialer.dials);
    await runner.close();
  });

  test('a connection that lived ≥ 10 s resets the backoff; a shorter one does not', async (t) => {
    virtualTime(t);
    const { connector, runner, hub } = setup();
    const dialer = connector as FakeDialer;
    runner.start();
    for (let i = 0; i < 6; i++) {
      await fail(dialer);
      mock.timers.tick(hub.endpoint!.nextAttemptAt! - Date.now());
    }
    let link = await connect(dialer);
    mock.timers.tick(9_999);
    link.drop(null);
    assert.equal(hub.endpoint!.nextAttemptAt! - Date.now(), 5000, 'short-lived: keeps growing');
    mock.timers.tick(5000);
    link = await connect(dialer);
    mock.timers.tick(10_000);
    link.drop(null);
    assert.equal(hub.endpoint!.nextAttemptAt! - Date.now(), 100, 'lived 10 s: starts over');
    await runner.close();
  });

  test('a dial that hangs fails after connectTimeoutMs with VSPC_SOURCE_CONNECT_TIMEOUT', async (t) => {
    virtualTime(t);
    const logger = recordingLogger();
    const { hub } = makeHub();
    const dialer = new FakeDialer();
    const runner = new EndpointRunner(SPEC, dialer, hub, { logger, random: () => 0, connectTimeoutMs: 3000 }).start();
    mock.timers.tick(2999);
    assert.equal(runner.state, 'connecting');
    mock.timers.tick(1);
    assert.equal(dialer.last.signal.aborted, true);
    await flush();
    assert.equal(runner.state, 'waiting');
    assert.match(hub.endpoint!.lastError!, /no connection within 3000 ms/);
    assert.equal(logger.lines.find((l) => l.level === 'warn')?.fields.errorCode, 'VSPC_SOURCE_CONNECT_TIMEOUT');
    await runner.close();
  });

  test('kick() tries at once while waiting, and only then', async (t) => {
    virtualTime(t);
    const { connector, runner } = setup();
    const dialer = connector as FakeDialer;
    assert.equal(runner.kick(), false, 'not started');
    runner.start();
    assert.equal(runner.kick(), false, 'connecting');
    for (let i = 0; i < 8; i++) {
      await fail(dialer);
      mock.timers.tick(5000);
    }
    await fail(dialer);
    assert.equal(runner.state, 'waiting');
    const dials = dialer.dials;
    assert.equal(runner.kick(), true);
    assert.equal(dialer.dials, dials + 1);
    assert.equal(runner.state, 'connecting');
    await connect(dialer);
    assert.equal(runner.kick(), false, 'connected');
    // The kicked attempt replaced the timer: nothing fires later.
    mock.timers.tick(10_000);
    assert.equal(dialer.dials, dials + 1);
    await runner.close();
    assert.equal(runner.kick(), false, 'stopped');
  });

  test('close() is graceful and idempotent: detaches, lets the link drain, stops retrying', async (t) => {
    virtualTime(t);
    const { connector, runner, hub, events } = setup();
    const dialer = connector as FakeDialer;
    runner.start();
    const link = await connect(dialer);
    link.closeAtOnce = false;
    let done = false;
    const closing = runner.close('shutdown');
    void closing.then(() => (done = true));
    assert.equal(runner.close('again'), closing, 'same promise');
    assert.equal(link.closedWith, 'shutdown');
    assert.equal(link.destroyedWith, null);
    assert.equal(hub.state, 'disconnected');
    assert.equal(hub.endpoint!.state, 'stopped');
    assert.deepEqual(events.map((e) => e.kind), ['vm-connected', 'vm-disconnected']);
    await flush();
    assert.equal(done, false, 'waits for the link to finish');
    link.finishClose();
    await flush();
    assert.equal(done, true);
    mock.timers.tick(60_000);
    assert.equal(dialer.dials, 1);
    assert.equal(hub.endpoint!.reconnects, 0, 'a close by vspc is not a lost connection');
    runner.destroy('after close');
    assert.equal(runner.state, 'stopped');
  });

  test('close() while connecting aborts the dial; a link that arrives late is destroyed', async (t) => {
    virtualTime(t);
    const { connector, runner, hub } = setup();
    const dialer = connector as FakeDialer;
    runner.start();
    const attempt = dialer.last;
    await runner.close();
    assert.equal(attempt.signal.aborted, true);
    const late = new FakeLink();
    attempt.resolve(late); // already rejected by the abort: ignored by the promise
    // A dialer that ignores the signal and resolves anyway:
    const { connector: c2, runner: r2 } = setup();
    const d2 = c2 as FakeDialer;
    let resolveLate!: (l: FakeLink) => void;
    d2.auto = () => new Promise((resolve) => (resolveLate = resolve));
    r2.start();
    await flush();
    await r2.close();
    const late2 = new FakeLink();
    resolveLate(late2);
    await flush();
    assert.notEqual(late2.destroyedWith, null);
    assert.equal(hub.state, 'disconnected');
    assert.equal(r2.state, 'stopped');
  });

  test('destroy() aborts at once and is idempotent', async (t) => {
    virtualTime(t);
    const { connector, runner, hub } = setup();
    runner.start();
    const link = await connect(connector as FakeDialer);
    link.closeAtOnce = false;
    runner.destroy('abort');
    runner.destroy('abort again');
    assert.equal(link.destroyedWith, 'abort');
    assert.equal(hub.state, 'disconnected');
    assert.equal(runner.state, 'stopped');
    await runner.close();
  });

  test('closing the hub source (the registry forgetting the console) stops the endpoint', async (t) => {
    virtualTime(t);
    const { connector, runner, hub } = setup();
    runner.start();
    const link = await connect(connector as FakeDialer);
    hub.source!.close('VM serial port forgotten');
    assert.equal(link.closedWith, 'VM serial port forgotten');
    assert.equal(runner.state, 'stopped');
    mock.timers.tick(60_000);
    assert.equal((connector as FakeDialer).dials, 1);
  });

  test('log lines are rate-limited: first failure warn, repeats debug, hourly-ish summary, recovery info with downtime', async (t) => {
    virtualTime(t);
    const { logger, connector, runner } = setup();
    const dialer = connector as FakeDialer;
    dialer.auto = () => Promise.reject(refused());
    runner.start();
    await flush();
    // 20 virtual minutes of a dead endpoint.
    for (let ms = 0; ms < 20 * 60_000; ms += 1000) {
      mock.timers.tick(1000);
      await flush();
    }
    const failLines = logger.lines.filter((l) => l.message.startsWith('cannot connect'));
    const warns = logger.lines.filter((l) => l.level === 'warn');
    assert.equal(warns.length, 1, 'one warning for the whole outage');
    assert.equal(warns[0].fields.errorCode, 'VSPC_SOURCE_CONNECT_FAILED');
    assert.equal(warns[0].fields.sysCode, 'ECONNREFUSED');
    assert.equal(warns[0].fields.endpoint, undefined, 'the factory adds the endpoint fields; this runner was built by hand');
    assert.ok(failLines.length > 200 && failLines.every((l, i) => (i === 0 ? l.level === 'warn' : l.level === 'debug')));
    const summaries = logger.lines.filter((l) => l.message === 'endpoint still unavailable');
    assert.equal(summaries.length, 1, 'one summary per 15 minutes');
    assert.equal(summaries[0].level, 'info');
    // A different error is news again.
    dialer.auto = () => Promise.reject(new SourceError('VSPC_SOURCE_NOT_FOUND', 'ENOENT: gone', { sysCode: 'ENOENT' }));
    mock.timers.tick(5000);
    await flush();
    assert.equal(logger.lines.filter((l) => l.level === 'warn').length, 2);
    // Recovery.
    dialer.auto = null;
    mock.timers.tick(5000);
    await flush();
    const link = new FakeLink();
    dialer.last.resolve(link);
    await flush();
    const up = logger.lines[logger.lines.length - 1];
    assert.equal(up.level, 'info');
    assert.equal(up.message, 'endpoint connected again');
    assert.ok((up.fields.downMs as number) >= 20 * 60_000, `downMs ${up.fields.downMs}`);
    assert.ok((up.fields.failures as number) > 200);
    await runner.close();
  });

  test('a flapping peer: first connect and loss at info/warn, then debug', async (t) => {
    virtualTime(t);
    const { logger, connector, runner } = setup();
    const dialer = connector as FakeDialer;
    runner.start();
    for (let i = 0; i < 10; i++) {
      const link = await connect(dialer);
      link.drop(new SourceError('VSPC_SOURCE_CLOSED', 'closed at once'));
      mock.timers.tick(5000);
    }
    const loud = logger.lines.filter((l) => l.level !== 'debug').map((l) => `${l.level} ${l.message}`);
    assert.deepEqual(loud, [
      'info endpoint connected',
      'warn endpoint connection lost soon after it was made',
      'info endpoint connected again',
    ]);
    await runner.close();
  });
});

describe('EndpointRunner (listen)', () => {
  test('listening → connected → listening; a second peer is refused and counted; one warning', async (t) => {
    virtualTime(t);
    const connector = new FakeListenConnector();
    const { runner, hub, logger, events } = setup({ connector, spec: LISTEN_SPEC });
    runner.start();
    assert.equal(runner.state, 'connecting');
    await flush();
    assert.equal(runner.state, 'listening');
    assert.equal(hub.state, 'disconnected');
    const first = new FakeLink('peer-1');
    connector.handlers!.incoming(first);
    assert.equal(runner.state, 'connected');
    assert.equal(hub.source?.kind, 'unix-listen');
    for (let i = 0; i < 3; i++) {
      const extra = new FakeLink(`peer-x${i}`);
      connector.handlers!.incoming(extra);
      assert.match(extra.destroyedWith ?? '', /busy/);
    }
    assert.equal(runner.status.refusedPeers, 3);
    assert.equal((hub.endpoint as EndpointDetail).refusedPeers, 3, 'the hub sees the detail too');
    const busy = logger.lines.filter((l) => l.fields.errorCode === 'VSPC_SOURCE_BUSY');
    assert.equal(busy.length, 1);
    assert.equal(busy[0].level, 'warn');
    first.emit('hello');
    assert.equal(hub.scrollback.snapshot().toString(), 'hello');
    first.drop(new SourceError('VSPC_SOURCE_CLOSED', 'peer left'));
    assert.equal(runner.state, 'listening', 'back to listening, no backoff');
    assert.equal(hub.endpoint!.nextAttemptAt, null);
    assert.equal(connector.binds, 1);
    const second = new FakeLink('peer-2');
    connector.handlers!.incoming(second);
    assert.equal(runner.state, 'connected');
    assert.deepEqual(vmEvents(events), ['vm-connected', 'vm-disconnected', 'vm-connected']);
    await runner.close();
    assert.equal(connector.listener!.closed, true);
    assert.equal(second.closedWith, 'endpoint closed');
  });

  test('bind failures wait with backoff; the listener failing later rebinds', async (t) => {
    virtualTime(t);
    const connector = new FakeListenConnector();
    connector.failNext = [
      new SourceError('VSPC_SOURCE_NO_DIRECTORY', 'the directory /run/vspc does not exist'),
      new SourceError('VSPC_SOURCE_NO_DIRECTORY', 'the directory /run/vspc does not exist'),
    ];
    const { runner, hub } = setup({ connector, spec: LISTEN_SPEC });
    runner.start();
    await flush();
    assert.equal(runner.state, 'waiting');
    assert.match(hub.endpoint!.lastError!, /does not exist/);
    mock.timers.tick(100);
    await flush();
    assert.equal(runner.state, 'waiting');
    assert.equal(runner.kick(), true, 'the directory appeared: try now');
    await flush();
    assert.equal(runner.state, 'listening');
    assert.equal(connector.binds, 3);
    const old = connector.listener!;
    connector.handlers!.failed(new SourceError('VSPC_SOURCE_LISTEN_FAILED', 'EMFILE'));
    assert.equal(old.closed, true);
    assert.equal(runner.state, 'waiting');
    mock.timers.tick(5000);
    await flush();
    assert.equal(runner.state, 'listening');
    assert.equal(connector.binds, 4);
    await runner.close();
  });
});

describe('EndpointRunner and the descriptor budget (F5)', () => {
  test('dial: no descriptor, no dial — waiting with "file descriptors exhausted", at debug; a freed descriptor kicks it; the link holds one until it closes', async (t) => {
    virtualTime(t);
    const descriptors = new FakeDescriptorBudget(0);
    const { runner, hub, logger, connector } = setup({ descriptors });
    const dialer = connector as FakeDialer;
    runner.start();
    assert.equal(runner.state, 'waiting');
    assert.equal(hub.endpoint?.lastError, 'file descriptors exhausted');
    assert.equal(dialer.dials, 0, 'nothing opened');
    assert.equal(descriptors.waiting, 1);
    assert.ok(!logger.lines.some((l) => l.level === 'warn'), 'one line per endpoint would flood: the budget logs it');
    descriptors.give(1);
    assert.equal(runner.state, 'connecting');
    const link = await connect(dialer);
    assert.equal(runner.state, 'connected');
    assert.equal(descriptors.held, 1);
    link.drop(refused());
    assert.equal(descriptors.held, 0, 'given back with the link');
    // A failed dial gives its descriptor back too (the redial after the backoff).
    mock.timers.tick(runner.status.nextAttemptAt! - Date.now());
    assert.equal(runner.state, 'connecting');
    assert.equal(descriptors.held, 1);
    await fail(dialer);
    assert.equal(descriptors.held, 0);
    runner.destroy();
    assert.equal(descriptors.waiting, 0);
  });

  test('listen: the listener holds one descriptor, each peer one more; a peer that does not fit is refused; all given back at close', async (t) => {
    virtualTime(t);
    const descriptors = new FakeDescriptorBudget(1);
    const connector = new FakeListenConnector();
    const { runner } = setup({ connector, spec: LISTEN_SPEC, descriptors });
    runner.start();
    await flush();
    assert.equal(runner.state, 'listening');
    assert.equal(descriptors.held, 1);
    const early = new FakeLink('peer-early');
    connector.handlers!.incoming(early);
    assert.equal(early.destroyedWith, 'file descriptors exhausted');
    assert.equal(runner.state, 'listening');
    assert.equal(runner.status.lastError, 'peer refused: file descriptors exhausted');
    descriptors.give(1);
    const peer = new FakeLink('peer-1');
    connector.handlers!.incoming(peer);
    assert.equal(runner.state, 'connected');
    assert.equal(descriptors.held, 2);
    peer.drop(new SourceError('VSPC_SOURCE_CLOSED', 'peer left'));
    assert.equal(descriptors.held, 1);
    await runner.close();
    assert.equal(descriptors.held, 0);
  });
});

describe('createEndpoint', () => {
  test('a type without a registered factory is VSPC_SOURCE_UNSUPPORTED; a registry can add one', async () => {
    const { hub } = makeHub();
    const logger = recordingLogger();
    const spec = parseSourceSpec('device:/dev/ttyUSB0?baud=9600');
    assert.throws(() => createEndpoint(spec, hub, { logger }), (err: SourceError) => err.code === 'VSPC_SOURCE_UNSUPPORTED');
    const dialer = new FakeDialer();
    const registry = new ConnectorRegistry().register('device', () => dialer);
    const runner = createEndpoint(spec, hub, { logger, registry });
    assert.equal(runner.state, 'connecting');
    assert.equal(dialer.dials, 1);
    const link = new FakeLink();
    dialer.last.resolve(link);
    await flush();
    assert.equal(hub.source?.kind, 'device');
    assert.equal(logger.lines[0].fields.endpoint, 'device:/dev/ttyUSB0?baud=9600&data=8&parity=none&stop=1&flow=none');
    assert.equal(logger.lines[0].fields.console, hub.displayName);
    await runner.close();
  });
  test('the endpoint\'s budgeted logger is made on its first line at an enabled level, with its fields, and closed (summary) when the runner stops', async () => {
    const { hub } = makeHub();
    const lines: LogLine[] = [];
    let children = 0;
    const base = recordingLogger({}, lines);
    // Only warn and above are enabled: the runner's debug and info lines make nothing.
    const logger: Logger = { ...base, isLevelEnabled: (l) => l === 'warn' || l === 'error', child: (f) => (children++, base.child(f)) };
    const dialer = new FakeDialer();
    const registry = new ConnectorRegistry().register('device', () => dialer);
    const runner = createEndpoint(parseSourceSpec('device:/dev/ttyUSB0?baud=9600'), hub, { logger, registry });
    dialer.last.resolve(new FakeLink());
    await flush();
    assert.equal(runner.state, 'connected');
    assert.equal(children, 0, 'nothing written at warn yet: no child logger, no budget');
    // The same line many times over: the budget writes some, counts the rest.
    for (let i = 0; i < 100; i++) runner.log.warn('endpoint says something odd');
    assert.equal(children, 1);
    const written = lines.filter((l) => l.message === 'endpoint says something odd');
    assert.ok(written.length > 0 && written.length < 100, `budgeted: ${written.length} of 100 written`);
    assert.equal(written[0].fields.console, hub.displayName);
    await runner.close();
    assert.ok(
      lines.some((l) => l.message === 'log lines suppressed for this connection' || l.message.startsWith('log lines suppressed')),
      `the summary at stop: ${JSON.stringify(lines.map((l) => l.message))}`,
    );
  });
});
