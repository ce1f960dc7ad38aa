/**
 * onLoan (bench/tunnel.ts), what the tunnel phase's raw UART measurement borrows the line
 * with: given back on every path, half-done takes included, and the first error is the
 * one reported (a failure to give back after it is only logged).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { onLoan } from '../../bench/tunnel.js';

/** A loan whose steps record themselves; `fail` names the step that throws. */
function recorder(fail: Set<string> = new Set()) {
  const steps: string[] = [];
  const logged: string[] = [];
  const step = (name: string) => {
    steps.push(name);
    if (fail.has(name)) throw new Error(`${name} failed`);
  };
  return {
    steps,
    logged,
    run: () =>
      onLoan(
        async () => {
          step('stop agent');
          step('reload without uart');
          step('connect');
          return 'port';
        },
        async (port) => {
          step(`use ${port}`);
          return 42;
        },
        async (port, failed) => {
          step(`give back ${port ?? 'nothing'}${failed ? ' after a failure' : ''}`);
        },
        (err) => logged.push(err.message),
      ),
  };
}

describe('onLoan: the raw UART measurement borrows the line from vspc', () => {
  test('success: taken, used, given back once; the use\'s result', async () => {
    const r = recorder();
    assert.equal(await r.run(), 42);
    assert.deepEqual(r.steps, ['stop agent', 'reload without uart', 'connect', 'use port', 'give back port']);
    assert.deepEqual(r.logged, []);
  });

  test('the use throws: given back (marked failed), its error is the one thrown', async () => {
    const r = recorder(new Set(['use port']));
    await assert.rejects(r.run(), /^Error: use port failed$/);
    assert.deepEqual(r.steps, ['stop agent', 'reload without uart', 'connect', 'use port', 'give back port after a failure']);
  });

  test('the take fails half-way (a reload refused): whatever was done is given back, nothing to close', async () => {
    const r = recorder(new Set(['reload without uart']));
    await assert.rejects(r.run(), /^Error: reload without uart failed$/);
    assert.deepEqual(r.steps, ['stop agent', 'reload without uart', 'give back nothing after a failure']);
  });

  test('giving back fails after a failure: the first error is thrown, the second logged', async () => {
    const r = recorder(new Set(['connect', 'give back nothing after a failure']));
    await assert.rejects(r.run(), /^Error: connect failed$/);
    assert.deepEqual(r.logged, ['give back nothing after a failure failed']);
  });

  test('giving back fails after a success: that is the error', async () => {
    const r = recorder(new Set(['give back port']));
    await assert.rejects(r.run(), /^Error: give back port failed$/);
    assert.deepEqual(r.logged, []);
  });
});
