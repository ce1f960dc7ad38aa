// vspc-test-runner: heavy (a PostgreSQL server and four vspc child processes: test/run.mjs runs it alone)
/**
 * The benchmark's cluster phase at a tiny size, so that it cannot rot (the smoke test
 * leaves it out). No timing assertions: every figure is there and sane, every VM
 * registered on its node, and the killed node's VMs came back on the others.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_OPTIONS, runBench } from '../../bench/harness.js';
import { rows, textTable } from '../../bench/report.js';
import { reservePortRange } from '../support/ports.js';

test('cluster phase: three nodes on PostgreSQL beside one on SQLite, a node SIGKILLed and its VMs back on the others', { timeout: 300_000 }, async () => {
  const lines: string[] = [];
  const report = await runBench({
    ...DEFAULT_OPTIONS,
    phases: ['cluster'],
    vms: 1,
    bulkWorkers: 1,
    connectConcurrency: 16,
    // Console ports reserved against other tests and benchmarks (the phase's default, from 2000, is for a machine of its own).
    cluster: { vms: 60, workersPerNode: 2, portRange: await reservePortRange(80) },
    command: 'cluster phase test',
    phaseTimeoutMs: 120_000,
    log: (l) => lines.push(l),
  });
  assert.deepEqual(report.failures, {}, `no phase failed; log:\n${lines.join('\n')}`);
  const c = report.cluster!;
  assert.ok(c, 'cluster section');
  assert.deepEqual(c.nodes.map((n) => n.node), ['node-1', 'node-2', 'node-3']);
  for (const n of [...c.nodes, c.sqlite!]) {
    assert.equal(n.registered, 20, `${n.node}: 20 registered`);
    assert.ok(n.timeToRegisterS > 0 && n.registerRatePerS > 0, `${n.node}: a time and a rate`);
    assert.ok(n.rssMiB !== null && n.rssMiB > 0, `${n.node}: RSS measured`);
  }
  assert.equal(c.failover?.killed, 'node-1');
  assert.equal(c.failover?.vmPorts, 20);
  // Every one is back (the phase waits for that); how many needed a second round of retries is a figure.
  assert.ok(Number.isInteger(c.failover?.reconnectFailures));
  assert.ok((c.failover?.toAllBackS ?? 0) > 0);
  const text = textTable(report);
  assert.ok(text.includes('[10]') && text.includes('SIGKILLed'), text);
  assert.equal(rows(report).filter((r) => r.ref === 10).length, 6);
});
