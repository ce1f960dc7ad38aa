// vspc-test-runner: heavy (a PostgreSQL server and four vspc child processes: test/run.mjs runs it alone)
/**
 * The benchmark's cluster phase at a tiny size, so that it cannot rot (the smoke test
 * leaves it out). No timing assertions: every figure is there and sane, every VM
 * registered on its node, same-node and cross-node vMotions all completed with every
 * byte once (0 lost, 0 duplicated), and the killed node's VMs came back on the others.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_OPTIONS, runBench } from '../../bench/harness.js';
import { rows, textTable } from '../../bench/report.js';
import { reservePortRange } from '../support/ports.js';

test('cluster phase: three nodes on PostgreSQL beside one on SQLite, same-node and cross-node vMotions, a node SIGKILLed and its VMs back on the others', { timeout: 300_000 }, async () => {
  const lines: string[] = [];
  const report = await runBench({
    ...DEFAULT_OPTIONS,
    phases: ['cluster'],
    vms: 1,
    bulkWorkers: 1,
    connectConcurrency: 16,
    // Console ports reserved against other tests and benchmarks (the phase's default, from 2000, is for a machine of its own).
    // 20 vMotions of each kind by one mover of each kind per node.
    cluster: { vms: 60, workersPerNode: 2, portRange: await reservePortRange(80), vmotions: 20, vmotionVms: 1 },
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
  for (const [kind, v] of [['same-node', c.vmotion?.same], ['cross-node', c.vmotion?.cross]] as const) {
    assert.ok(v, `${kind} vMotion figures`);
    assert.equal(v.movers, 3, `${kind}: one mover per node`);
    assert.equal(v.completed, 20, `${kind}: every vMotion completed (errors: ${v.errors.join('; ')})`);
    assert.equal(v.failed, 0, kind);
    assert.ok(v.ratePerS > 0, `${kind}: a rate`);
    assert.equal(v.switchoverOutMs.n, 20, `${kind}: a switch-over time per vMotion`);
    assert.ok(v.switchoverOutMs.p99 > 0 && v.switchoverInMs.p99 > 0, `${kind}: switch-over measured both ways`);
    assert.ok(v.bytesVmToClient > 0 && v.bytesClientToVm > 0, `${kind}: traffic both ways`);
    assert.equal(v.lostBytes, 0, `${kind}: 0 bytes lost`);
    assert.equal(v.duplicatedBytes, 0, `${kind}: 0 bytes duplicated`);
    assert.equal(v.vmsWithErrors, 0, `${kind}: every stream byte for byte`);
  }
  assert.equal(c.failover?.killed, 'node-1');
  assert.equal(c.failover?.vmPorts, 20);
  // Every one is back (the phase waits for that); how many needed a second round of retries is a figure.
  assert.ok(Number.isInteger(c.failover?.reconnectFailures));
  assert.ok((c.failover?.toAllBackS ?? 0) > 0);
  const text = textTable(report);
  assert.ok(text.includes('[10]') && text.includes('SIGKILLed'), text);
  for (const kind of ['same-node', 'cross-node']) {
    assert.ok(text.includes(`cluster: ${kind} vMotions: rate, switch-over p50/p99`), `${kind} rate printed:\n${text}`);
    assert.ok(text.includes(`cluster: ${kind} vMotions: bytes lost / duplicated`), `${kind} loss printed:\n${text}`);
  }
  assert.equal(rows(report).filter((r) => r.figure.includes('bytes lost / duplicated') && r.result.startsWith('0 / 0 of ')).length, 2, 'both kinds print 0 lost / 0 duplicated');
  assert.equal(rows(report).filter((r) => r.ref === 10).length, 10);
});
