/**
 * logging/logger.ts: child fields given as a function are computed only for lines
 * that are written (not for lines below the level), and again for each line, so they
 * follow the state they describe (issue 17: no log-field work for disabled levels).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LogCapture } from '../support/log-capture.js';

describe('VspcLogger lazy fields', () => {
  test('a child function is not called for lines below the level, and is called for each written line', async () => {
    const cap = new LogCapture({ level: 'warn' });
    let calls = 0;
    let name = 'vm-a';
    const child = cap.logger.child(() => {
      calls++;
      return { vm: name };
    });
    child.info('below the level');
    child.debug('below the level', () => {
      calls += 100;
      return { x: 1 };
    });
    assert.equal(calls, 0);
    child.warn('first');
    name = 'vm-b';
    child.warn('second');
    assert.equal(calls, 2);
    const first = await cap.waitFor((l) => l.message === 'first');
    const second = await cap.waitFor((l) => l.message === 'second');
    assert.equal(first.vm, 'vm-a');
    assert.equal(second.vm, 'vm-b');
  });

  test('ancestors first, then the child, then the line: later ones win', async () => {
    const cap = new LogCapture({ level: 'info' });
    const child = cap.logger.child({ a: 1, b: 1 }).child(() => ({ b: 2, c: 2 }));
    child.info('line', { c: 3 });
    const l = await cap.waitFor((x) => x.message === 'line');
    assert.deepEqual([l.a, l.b, l.c], [1, 2, 3]);
  });
});
