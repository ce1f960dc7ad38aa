// vspc-test-runner: heavy (load generators in child processes: test/run.mjs runs it alone, after the other files)
/**
 * The benchmark harness at a tiny size, so that it cannot rot: every phase runs
 * against a vspc child process with real load-generator processes, and the report
 * has all six sections with sane numbers and zero lost bytes. No timing assertions.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_OPTIONS, runBench, type BenchReport } from '../../bench/harness.js';
import { markdownTable, rows, textTable } from '../../bench/report.js';
import { reservePortRange } from '../support/ports.js';

function nonNegative(value: unknown, path: string): void {
  if (typeof value === 'number') {
    assert.ok(Number.isFinite(value), `${path} is finite (${value})`);
    // Differences of two percentiles ("added by vspc") may be negative; everything else may not.
    if (!/\.(added|addedOverRelay)\./.test(path)) assert.ok(value >= 0, `${path} is not negative (${value})`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => nonNegative(v, `${path}[${i}]`));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) nonNegative(v, `${path}.${k}`);
  }
}

describe('benchmark harness (smoke size)', () => {
  test('all six phases run and report sane figures; vMotions lose nothing', { timeout: 120_000 }, async () => {
    const portRange = await reservePortRange(64);
    const lines: string[] = [];
    const report: BenchReport = await runBench({
      ...DEFAULT_OPTIONS,
      vms: 20,
      portRange,
      bulkWorkers: 1,
      connectConcurrency: 8,
      storm: { timeoutMs: 30_000, retryMs: 200 },
      latency: { probes: 2, streamers: 10, streamBytesPerSec: 11_520, tickMs: 100, durationMs: 600, intervalMs: 10 },
      throughput: { vms: 4, clients: [1, 2], warmupMs: 200, durationMs: 600, chunkBytes: 16 * 1024, windowBytes: 256 * 1024, workers: 1 },
      vmotion: { vms: 6, ratePerS: 20, durationMs: 800, gapMs: 20, tickMs: 20, outBytesPerTick: 64, inBytesPerTick: 4, workers: 1 },
      ssh: {
        ...DEFAULT_OPTIONS.ssh,
        sessions: 6,
        consoles: 3,
        workers: 1,
        concurrency: 3,
        floodConcurrency: 2,
        latencyProbes: 2,
        latencyDurationMs: 500,
        streamDurationMs: 500,
      },
      log: (l) => lines.push(l),
      command: 'smoke test',
      phaseTimeoutMs: 45_000,
    });
    assert.deepEqual(report.failures, {}, `no phase failed; log:\n${lines.join('\n')}`);

    const scale = report.scale!;
    assert.ok(scale, 'scale section');
    assert.equal(scale.vmPorts, 20);
    assert.equal(scale.registered, 20);
    assert.equal(scale.listed, 20);
    assert.equal(scale.connectFailures, 0);
    assert.ok(scale.perVmPort.fds !== null && scale.loaded?.rssMiB !== null, 'resources measured');

    const storm = report.storm!;
    assert.ok(storm, 'storm section');
    assert.equal(storm.restarted, true);
    assert.equal(storm.samePort, 20, 'every VM got its port back');
    assert.equal(storm.missing + storm.portChanged + storm.reconnectFailures, 0);

    const latency = report.latency!;
    assert.ok(latency, 'latency section');
    assert.ok(latency.idle.vspc.n > 0 && latency.idle.direct.n > 0 && (latency.idle.relay?.n ?? 0) > 0, 'idle samples on all three paths');
    assert.ok(latency.loaded && latency.loaded.vspc.n > 0, 'loaded samples');
    assert.equal(latency.loaded.streamers, 10);
    assert.equal(latency.idle.errors + latency.loaded.errors, 0);

    const throughput = report.throughput!;
    assert.ok(throughput, 'throughput section');
    assert.deepEqual(
      throughput.cases.map((c) => c.clientsPerVm),
      [1, 2],
    );
    for (const c of throughput.cases) {
      assert.ok(c.deliveredMBps > 0, 'bytes were delivered');
      assert.equal(c.clientsDropped, 0);
    }

    const vmotion = report.vmotion!;
    assert.ok(vmotion, 'vmotion section');
    for (const run of [vmotion.paced!, vmotion.max!]) {
      assert.ok(run, 'paced and back-to-back runs');
      assert.ok(run.completed > 0, 'migrations completed');
      assert.equal(run.failed, 0);
      assert.equal(run.lostBytes, 0, 'zero bytes lost');
      assert.equal(run.vmsWithErrors, 0, 'every stream arrived intact');
      assert.ok(run.bytesVmToClient > 0 && run.bytesClientToVm > 0, 'traffic flowed both ways');
      assert.equal(run.serverCounters?.completed, run.completed, 'vspc counted the same migrations');
    }

    const ssh = report.ssh!;
    assert.ok(ssh, 'ssh section');
    assert.equal(ssh.alone.sessions + (ssh.duringFlood?.sessions ?? 0), 6, `every SSH session was set up: ${ssh.errors.join('; ')}`);
    assert.equal(ssh.alone.failed + (ssh.duringFlood?.failed ?? 0), 0);
    assert.ok(ssh.duringFlood && ssh.duringFlood.floodAttempts > 0, 'the flood ran');
    assert.ok(ssh.perSession.rssKiB !== null, 'RSS per session measured');
    assert.ok(ssh.latency.ssh.n > 0 && ssh.latency.telnet.n > 0, 'latency samples through SSH and telnet');
    assert.equal(ssh.latency.errors, 0);
    assert.equal(ssh.throughput.sessionsOpenAfter, 6, 'no SSH session dropped');
    assert.ok(ssh.throughput.deliveredMBps > 0);

    // Per-session RSS is a difference of two samples: on a tiny run it may come out negative.
    nonNegative({ scale, storm, latency, throughput, vmotion, ssh: { ...ssh, perSession: {} } }, 'report');

    // The printed forms name every section's workload.
    const text = textTable(report);
    for (const ref of ['[1]', '[2]', '[3]', '[4]', '[5]', '[6]']) assert.ok(text.includes(ref), `table has ${ref}`);
    assert.ok(markdownTable(report).startsWith('| | figure | result | target | |'));
    assert.ok(rows(report).length >= 10);
  });
});
