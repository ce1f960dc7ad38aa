/**
 * deferredLogger (domain/log-budget.ts) over the real logger (logging/logger.ts), as
 * an endpoint or a VM connection uses it: disabled levels make nothing and call no
 * field function; lazy fields are read when the line is written; counts, budget and
 * close() summaries hold whether or not the real logger was ever made.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deferredLogger, rateLimitedLogger } from '../../src/domain/log-budget.js';
import { LogCapture } from '../support/log-capture.js';

test('deferred over the real logger: a disabled line builds nothing; lazy fields are read at emit time; close() before and after the first line', async () => {
  const cap = new LogCapture({ level: 'warn' });
  let made = 0;
  let calls = 0;
  let state = 'before';
  const log = deferredLogger(cap.logger, () => {
    made++;
    return rateLimitedLogger(
      cap.logger.child(() => {
        calls++;
        return { state };
      }),
      { perSecond: 0, burst: 2 },
      { now: () => 0, scope: 'endpoint' },
    );
  });
  const child = log.child(() => {
    calls++;
    return { childState: state };
  });
  const grand = child.child({ g: 1 });
  for (const l of [log, child, grand]) {
    l.info('info line', () => {
      calls += 100;
      return {};
    });
    l.debug('debug line');
  }
  assert.equal(made, 0, 'no line at an enabled level: nothing made');
  assert.equal(calls, 0, 'no field function called for disabled lines');
  assert.equal(grand.suppressed, 0);
  assert.equal(grand.suppressedTotal, 0);
  state = 'at-first-line';
  grand.warn('w');
  state = 'at-second-line';
  grand.warn('w');
  assert.equal(made, 1);
  // Budget of 2, perSecond 0: the third and fourth 'w' are suppressed, and their fields are never computed.
  const before = calls;
  grand.warn('w', () => {
    calls += 1000;
    return {};
  });
  child.warn('w');
  assert.equal(calls, before, 'a suppressed line computes nothing');
  assert.equal(log.suppressed, 2);
  assert.equal(grand.suppressed, 2);
  grand.close();
  grand.close();
  assert.equal(log.suppressed, 0);
  assert.equal(log.suppressedTotal, 2);
  const first = await cap.waitFor((l) => l.message === 'w');
  assert.deepEqual([first.state, first.childState, first.g], ['at-first-line', 'at-first-line', 1]);
  const second = await cap.waitFor((l) => l.message === 'w' && l !== first);
  assert.equal(second.state, 'at-second-line');
  const summary = await cap.waitFor((l) => l.message === 'log lines suppressed for this endpoint');
  assert.equal(summary.suppressed, 2);
  assert.equal(cap.filter((l) => l.message === 'log lines suppressed for this endpoint').length, 1, 'close() is idempotent');
});

test('deferred never made: close() writes nothing, and a later line is written unbudgeted through a child', async () => {
  const cap = new LogCapture({ level: 'info' });
  let made = 0;
  const log = deferredLogger(cap.logger, () => {
    made++;
    return rateLimitedLogger(cap.logger.child({ ep: 'x' }), { perSecond: 0, burst: 1 }, { now: () => 0 });
  });
  const child = log.child({ c: 1 });
  child.close();
  log.close();
  assert.equal(made, 0, 'close() alone makes nothing');
  assert.equal(log.suppressed, 0);
  for (let i = 0; i < 5; i++) child.info('after close');
  assert.equal(made, 1);
  assert.equal(log.suppressed, 0);
  await cap.waitFor(() => cap.filter((l) => l.message === 'after close').length === 5);
  assert.equal(cap.filter((l) => l.message.startsWith('log lines suppressed')).length, 0);
  const line = cap.find((l) => l.message === 'after close')!;
  assert.deepEqual([line.ep, line.c], ['x', 1]);
});

test('level raised at run time: the deferred logger follows it (no line, nothing made, at the new level)', () => {
  const cap = new LogCapture({ level: 'info' });
  let made = 0;
  const log = deferredLogger(cap.logger, () => {
    made++;
    return rateLimitedLogger(cap.logger, { perSecond: 1, burst: 1 });
  });
  cap.logger.level = 'error';
  log.warn('w');
  log.child({}).info('i');
  assert.equal(made, 0);
  assert.equal(log.isLevelEnabled('warn'), false);
});
