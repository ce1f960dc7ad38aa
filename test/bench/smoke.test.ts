// vspc-test-runner: heavy (load generators in child processes: test/run.mjs runs it alone, after the other files)
/**
 * The benchmark harness at a tiny size, so that it cannot rot: every phase runs
 * against a vspc child process with real load-generator processes, and the report
 * has all six sections with sane numbers and zero lost bytes. No timing assertions.
 * Run as `npm run bench` runs (no port options), it must leave a vspc that already
 * runs here with the default ports alone.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { DEFAULT_OPTIONS, DEFAULT_PHASES, PRIVATE_PORTS, runBench, type BenchReport } from '../../bench/harness.js';
import { markdownTable, ratioRows, rows, textTable } from '../../bench/report.js';

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

/**
 * Stand-ins for a vspc already running on this host with the defaults: listeners on
 * 13370-13372 and the bottom of 10000-19999 (where vspc gives out client ports first),
 * each counting the connections it gets. Ports something else holds already are
 * skipped (that something would be the live vspc itself).
 */
async function liveVspcStandIns(): Promise<{ ports: number[]; connections: Map<number, number>; close(): Promise<void> }> {
  const wanted = [13370, 13371, 13372, ...Array.from({ length: 64 }, (_, i) => 10000 + i)];
  const connections = new Map<number, number>();
  const servers: net.Server[] = [];
  for (const port of wanted) {
    const server = net.createServer((sock) => {
      connections.set(port, (connections.get(port) ?? 0) + 1);
      sock.destroy();
    });
    const ok = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen({ host: '0.0.0.0', port, exclusive: true }, () => resolve(true));
    });
    if (ok) servers.push(server);
  }
  return {
    ports: servers.map((s) => (s.address() as net.AddressInfo).port),
    connections,
    close: () => Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r())))).then(() => undefined),
  };
}

describe('benchmark harness (smoke size)', () => {
  test('every phase runs and reports sane figures beside its baselines; vMotions lose nothing; a vspc on the default ports is never touched', { timeout: 240_000 }, async (t) => {
    // No --port-range and no --target: the benchmark must choose private ports itself.
    const live = await liveVspcStandIns();
    t.after(() => live.close());
    assert.ok(live.ports.length > 0, 'at least some of the default ports could be held for the check');
    const lines: string[] = [];
    const report: BenchReport = await runBench({
      ...DEFAULT_OPTIONS,
      // Not the tunnel phase: it boots a QEMU guest and moves real bytes over an emulated
      // UART (tens of seconds); test/bench/tunnel-phase.test.ts runs it at a tiny size. Nor the
      // cluster phase (its own PostgreSQL and four vspc processes): test/bench/cluster-phase.test.ts.
      phases: DEFAULT_PHASES.filter((p) => p !== 'tunnel'),
      vms: 20,
      bulkWorkers: 1,
      connectConcurrency: 8,
      storm: { timeoutMs: 30_000, retryMs: 200 },
      latency: { probes: 2, streamers: 10, streamBytesPerSec: 11_520, tickMs: 100, durationMs: 600, intervalMs: 10 },
      throughput: { vms: 4, clients: [1, 2], warmupMs: 200, durationMs: 600, chunkBytes: 16 * 1024, windowBytes: 256 * 1024, workers: 1 },
      vmotion: { vms: 6, ratePerS: 20, durationMs: 800, gapMs: 20, tickMs: 20, outBytesPerTick: 64, inBytesPerTick: 4, workers: 1 },
      unix: { consoles: 10, downMs: 300, streams: 2, workers: 1, timeoutMs: 20_000 },
      glob: { sizes: [64, 128], pattern: '*a*a*a*c' },
      // Memory samples without waiting for V8's young generation to settle (10–30 s each,
      // six of them): this test checks that every phase runs, not the figures; the
      // settling itself is test/bench/memory-settle.test.ts's.
      memorySettle: false,
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

    // Its own vspc was on private ports: none of vspc's defaults, no connection to the stand-ins.
    assert.deepEqual(Object.fromEntries(live.connections), {}, 'nothing connected to the stand-ins of a running vspc');
    const [start, end] = report.target.clientPorts!.split('-').map(Number);
    const proxy = Number(report.target.proxy.split(':')[1]);
    const admin = Number(new URL(report.target.admin).port);
    for (const p of [start, end, proxy, admin]) assert.ok(p >= PRIVATE_PORTS.from && p <= PRIVATE_PORTS.to, `port ${p} is in the private range`);
    assert.ok(end - start + 1 >= 20, 'a client range large enough for the run');
    assert.ok(proxy > end && admin > end, 'its proxy and admin ports are outside its client range');

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
      throughput.cases.filter((c) => c.target === 'vspc').map((c) => c.clientsPerVm),
      [1, 2],
    );
    // The baselines ran in the same run: the Node.js relay always, the C one when gcc is here.
    assert.ok(throughput.cases.some((c) => c.target === 'relay-node'), 'the Node.js relay was measured');
    assert.ok(throughput.cases.some((c) => c.target === 'relay-c') || throughput.notes.length > 0, 'the C relay was measured, or the report says why not');
    for (const c of throughput.cases) {
      assert.ok(c.deliveredMBps > 0, 'bytes were delivered');
      assert.equal(c.clientsDropped, 0);
      assert.ok(c.echo && c.echo.n > 0, 'keystroke echoes were measured while the streams ran');
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

    // The option-232 stub beside vspc: the same ramp and the same vMotions, nothing lost.
    assert.equal(scale.stub?.registered, 20, 'the stub registered every VM');
    for (const run of [vmotion.stub?.paced, vmotion.stub?.max]) {
      assert.ok(run && run.completed > 0, 'migrations completed on the stub');
      assert.equal(run.lostBytes, 0);
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

    const unix = report.unix!;
    assert.ok(unix, 'unix section');
    assert.equal(unix.attached, 10, 'every unix console connected');
    assert.equal(unix.restart.back, 10, 'every console streamed again after the restart');
    assert.ok(unix.throughput.unix && unix.throughput.esxi && unix.throughput.unix.deliveredMBps > 0, 'unix and ESXi streams measured');

    const glob = report.glob!;
    assert.deepEqual(glob.sizes.map((x) => x.bytes), [64, 128]);
    assert.ok(glob.stepGrowth[0] < 2.2, 'the matcher takes linear steps');

    // Per-session RSS is a difference of two samples: on a tiny run it may come out negative.
    nonNegative({ scale, storm, latency, throughput, vmotion, unix, glob, ssh: { ...ssh, perSession: {} } }, 'report');

    // The printed forms name every section's workload, and the ratios to the baselines.
    const text = textTable(report);
    for (const ref of ['[1]', '[2]', '[3]', '[4]', '[5]', '[6]', '[7]', '[8]']) assert.ok(text.includes(ref), `table has ${ref}`);
    assert.ok(text.includes('vspc / baseline, same run'), 'the ratio table is printed');
    assert.ok(ratioRows(report).some((r) => r.figure.includes('vs stub')) && ratioRows(report).some((r) => r.figure.includes('relay')));
    assert.ok(markdownTable(report).startsWith('| | figure | result | target | |'));
    assert.ok(rows(report).length >= 10);
  });
});
