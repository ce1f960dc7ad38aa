import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LazyChildLogger, type LazyFields, type LogFields, type Logger } from '../../src/domain/logger.js';
import { deferredLogger, rateLimitedLogger } from '../../src/domain/log-budget.js';
import { LogCapture } from '../support/log-capture.js';

interface Line {
  level: string;
  message: string;
  fields: LogFields;
}

/** A Logger that records what it is asked to write; `enabled` decides isLevelEnabled. */
function recorder(lines: Line[], base: LogFields = {}, enabled: (level: string) => boolean = () => true): Logger {
  const at = (level: string) => (message: string, fields?: LogFields) => lines.push({ level, message, fields: { ...base, ...fields } });
  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    isLevelEnabled: enabled,
    child: (fields) => recorder(lines, { ...base, ...fields }, enabled),
  };
}

test('a flood of one message: the burst is written, the rest counted; the summary comes at close with the count', () => {
  const lines: Line[] = [];
  let now = 0;
  const log = rateLimitedLogger(recorder(lines), { perSecond: 2, burst: 5 }, { now: () => now });
  for (let i = 0; i < 1000; i++) log.info('unknown subcommand', { code: i });
  assert.equal(lines.length, 5);
  assert.equal(log.suppressed, 995);
  log.close();
  assert.equal(lines.length, 6);
  const summary = lines[5];
  assert.equal(summary.message, 'log lines suppressed for this connection');
  assert.equal(summary.level, 'info');
  assert.equal(summary.fields.suppressed, 995);
  assert.deepEqual(summary.fields.messages, { 'unknown subcommand': 995 });
  // After close, lines are written as they come (a connection's last lines).
  log.info('unknown subcommand');
  assert.equal(lines.length, 7);
  log.close();
  assert.equal(lines.length, 7, 'close is idempotent');
  void now;
});

test('the budget refills at perSecond; a line first of its kind is written even when the budget is spent', () => {
  const lines: Line[] = [];
  let now = 0;
  const log = rateLimitedLogger(recorder(lines), { perSecond: 2, burst: 3 }, { now: () => now });
  for (let i = 0; i < 10; i++) log.warn('VMOTION-ABORT ignored');
  assert.equal(lines.length, 3);
  log.info('closing VM connection', { reason: 'x' });
  assert.equal(lines.length, 4, 'a new message is written once');
  log.info('closing VM connection', { reason: 'y' });
  assert.equal(lines.length, 4, 'its repetition is not');
  now += 1000; // two lines earned
  for (let i = 0; i < 10; i++) log.warn('VMOTION-ABORT ignored');
  assert.equal(lines.length, 6);
  log.close();
  const summary = lines.at(-1)!;
  assert.equal(summary.level, 'warn', 'a summary of warn lines is a warn line');
  assert.equal(summary.fields.suppressed, 7 + 1 + 8);
});

test('children share the budget; lines below the logger level spend nothing', () => {
  const lines: Line[] = [];
  const log = rateLimitedLogger(recorder(lines, {}, (l) => l !== 'debug'), { perSecond: 0, burst: 2 }, { now: () => 0 });
  for (let i = 0; i < 100; i++) log.debug('noise');
  const child = log.child({ vm: 'web01' });
  child.info('a');
  log.info('a');
  child.info('a');
  assert.equal(lines.length, 2);
  assert.equal(lines[0].fields.vm, 'web01');
  assert.equal(log.suppressed, 1);
});

test('a summary is written when the budget has refilled while lines were suppressed (timer), not only at close', async () => {
  const capture = new LogCapture({ level: 'debug' });
  const log = rateLimitedLogger(capture.logger.child({ conn: 1 }), { perSecond: 0, burst: 1 }, { summaryIntervalMs: 1 });
  log.info('x');
  log.info('x');
  log.info('x');
  const summary = await capture.waitFor((l) => l.message === 'log lines suppressed for this connection', 2000);
  assert.equal(summary.suppressed, 2);
  assert.equal(summary.conn, 1);
  log.close();
  assert.equal(capture.filter((l) => l.message === 'log lines suppressed for this connection').length, 1, 'nothing left to summarise at close');
});

test('distinct messages past the first 8 are summarised as (other); the scope names the budget', () => {
  const lines: Line[] = [];
  const log = rateLimitedLogger(recorder(lines), { perSecond: 0, burst: 1 }, { now: () => 0, scope: 'listener' });
  for (let round = 0; round < 2; round++) for (let i = 0; i < 12; i++) log.info(`m${i}`);
  log.close();
  const summary = lines.at(-1)!;
  assert.equal(summary.message, 'log lines suppressed for this listener');
  const messages = summary.fields.messages as Record<string, number>;
  assert.equal(Object.keys(messages).length, 9);
  assert.equal(messages['(other)'], 4);
});

test('lazy fields pass through: computed when the line is written, never for a suppressed line or one below the level', () => {
  const lines: Line[] = [];
  let now = 0;
  let computed = 0;
  const resolve = (f: LazyFields | undefined): LogFields => (typeof f === 'function' ? f() : (f ?? {}));
  const lazyRecorder = (base: LazyFields): Logger => {
    const at = (level: string) => (message: string, fields?: LazyFields) => lines.push({ level, message, fields: { ...resolve(base), ...resolve(fields) } });
    return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), isLevelEnabled: (l) => l !== 'debug', child: (f) => lazyRecorder(() => ({ ...resolve(base), ...resolve(f) })) };
  };
  let vm = 'before';
  const log = rateLimitedLogger(lazyRecorder({}), { perSecond: 1, burst: 2 }, { now: () => now }).child(() => ({ vm }));
  const fields = (): LogFields => {
    computed++;
    return { n: computed };
  };
  log.info('same', fields);
  vm = 'after';
  log.info('same', fields);
  log.info('same', fields); // over the budget: suppressed, not computed
  log.debug('below the level', fields);
  assert.equal(computed, 2);
  assert.deepEqual(
    lines.map((l) => l.fields),
    [
      { vm: 'before', n: 1 },
      { vm: 'after', n: 2 },
    ],
  );
  assert.equal(log.suppressed, 1);
  void now;
});

test('deferredLogger: nothing is made until a line at an enabled level; then the same lines, fields and shared budget as the logger it makes', () => {
  const lines: Line[] = [];
  let made = 0;
  const levels = recorder([], {}, (level) => level !== 'debug' && level !== 'info');
  const log = deferredLogger(levels, () => {
    made++;
    return rateLimitedLogger(recorder(lines, { conn: 7 }, (level) => level !== 'debug' && level !== 'info'), { perSecond: 1, burst: 2 }, { now: () => 0 });
  });
  const child = log.child({ vm: 'web' });
  log.info('VM connection opened');
  child.debug('option 232 agreed');
  assert.equal(made, 0, 'disabled levels make nothing');
  assert.equal(log.isLevelEnabled('warn'), true);
  child.warn('one', { n: 1 });
  log.warn('two');
  child.warn('one', { n: 2 });
  assert.equal(made, 1);
  assert.deepEqual(lines, [
    { level: 'warn', message: 'one', fields: { conn: 7, vm: 'web', n: 1 } },
    { level: 'warn', message: 'two', fields: { conn: 7 } },
  ]);
  assert.equal(child.suppressed, 1, 'the child spends the same budget');
  log.close();
  assert.equal(lines.at(-1)?.message, 'log lines suppressed for this connection');
});

test('deferredLogger closed before its first line: that line is written as it comes', () => {
  const lines: Line[] = [];
  const log = deferredLogger(recorder([]), () => rateLimitedLogger(recorder(lines), { perSecond: 1, burst: 1 }, { now: () => 0 }));
  log.close();
  log.info('a');
  log.info('b');
  assert.deepEqual(
    lines.map((l) => l.message),
    ['a', 'b'],
  );
});

test('LazyChildLogger: no child until a line at an enabled level; then the owner\'s fields, read per line', () => {
  const lines: Line[] = [];
  let children = 0;
  const enabled = (level: string) => level !== 'debug';
  const parent: Logger = {
    ...recorder(lines, {}, enabled),
    child(fields: LazyFields) {
      children++;
      const resolve = () => (typeof fields === 'function' ? fields() : fields);
      const at = (level: string) => (message: string, f?: LazyFields) =>
        lines.push({ level, message, fields: { ...resolve(), ...(typeof f === 'function' ? f() : f) } });
      return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug'), isLevelEnabled: enabled, child: () => parent };
    },
  };
  const owner = { vm: 'web', logFields(): LogFields {
    return { vm: this.vm };
  } };
  const log = new LazyChildLogger(parent, owner);
  log.debug('option 232 agreed');
  assert.equal(children, 0, 'a line below the level makes no child');
  assert.equal(log.isLevelEnabled('debug'), false);
  log.info('VM serial port registered', { created: true });
  owner.vm = 'web-2';
  log.warn('renamed');
  assert.equal(children, 1, 'one child for the logger\'s whole life');
  assert.deepEqual(lines, [
    { level: 'info', message: 'VM serial port registered', fields: { vm: 'web', created: true } },
    { level: 'warn', message: 'renamed', fields: { vm: 'web-2' } },
  ]);
});
