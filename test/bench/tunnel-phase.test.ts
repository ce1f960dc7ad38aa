// vspc-test-runner: heavy (a QEMU guest and a vspc child process: test/run.mjs runs it alone, after the other files)
/**
 * The benchmark's tunnel phase at a tiny size, so that it cannot rot (the six-phase
 * smoke test leaves it out: it boots a real QEMU guest). Like test/e2e/tunnel-qemu it
 * needs the test guest (`npm test`'s pretest builds it) and fails, rather than skips,
 * without it. No timing assertions: only that every figure is there and sane, and the
 * transfers' digests matched (the phase throws otherwise). Also: without a guest the
 * phase is reported as not run, with the command that builds it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_OPTIONS, runBench } from '../../bench/harness.js';
import { markdownTable, rows, textTable } from '../../bench/report.js';
import { tunnelGuestProblem } from '../../bench/tunnel.js';

const tiny = {
  ...DEFAULT_OPTIONS,
  phases: ['tunnel' as const],
  vms: 1,
  bulkWorkers: 1,
  tunnel: { uartBytes: 24 * 1024, virtioBytes: 256 * 1024, rttSamples: 5, idleStreams: 4, repeats: 2, lines: ['uart' as const, 'virtio' as const] },
  command: 'tunnel phase test',
  phaseTimeoutMs: 60_000,
};

describe('benchmark tunnel phase (tiny size, real QEMU guest)', () => {
  test('raw line, goodput both ways, keystroke round trips and memory per stream, over the UART and virtio-serial', { timeout: 600_000 }, async () => {
    assert.equal(tunnelGuestProblem(), null, 'the test guest is built (npm run pretest)');
    const lines: string[] = [];
    const report = await runBench({ ...tiny, log: (l) => lines.push(l) });
    assert.deepEqual(report.failures, {}, `no phase failed; log:\n${lines.join('\n')}`);
    assert.deepEqual(report.notRun, {});
    const tu = report.tunnel!;
    assert.ok(tu, 'tunnel section');
    assert.deepEqual(tu.lines.map((l) => l.line), ['uart', 'virtio']);
    for (const l of tu.lines) {
      for (const v of [l.raw.toGuestKiBps, l.raw.fromGuestKiBps, l.tunnel.toGuestKiBps, l.tunnel.fromGuestKiBps, l.goodputPct.toGuest, l.goodputPct.fromGuest]) {
        assert.ok(Number.isFinite(v) && v > 0, `${l.line}: ${v} > 0`);
      }
      // Two alternating rounds: every sample is there, the medians lie within their ranges.
      for (const sp of [l.rounds.raw.toGuest, l.rounds.raw.fromGuest, l.rounds.tunnel.toGuest, l.rounds.tunnel.fromGuest, l.rounds.pct.toGuest, l.rounds.pct.fromGuest]) {
        assert.equal(sp.samples.length, 2);
        assert.ok(sp.min > 0 && sp.min <= sp.median && sp.median <= sp.max, JSON.stringify(sp));
      }
      assert.equal(l.raw.toGuestKiBps, l.rounds.raw.toGuest.median);
      assert.equal(l.rtt.idle.n, 5);
      assert.ok(l.rtt.idle.p50 > 0);
    }
    // Both lines also have the raw line from the guest through an in-guest TCP hop (a row, no target).
    for (const l of tu.lines) {
      assert.equal(l.rawViaGuestTcp?.fromGuest.samples.length, 2, l.line);
      assert.ok(l.rawViaGuestTcp.fromGuest.min > 0 && l.rawViaGuestTcp.pctOfRaw > 0, JSON.stringify(l.rawViaGuestTcp));
    }
    // virtio-serial also has the guest's loopback TCP alone (dd's record count checked); the UART has not.
    const uart = tu.lines.find((l) => l.line === 'uart')!;
    const virtio = tu.lines.find((l) => l.line === 'virtio')!;
    assert.equal(uart.guestTcpAlone, undefined);
    assert.equal(virtio.guestTcpAlone?.fromGuest.samples.length, 2);
    assert.ok(virtio.guestTcpAlone.fromGuest.min > 0 && virtio.guestTcpAlone.pctOfRaw > 0, JSON.stringify(virtio.guestTcpAlone));
    assert.equal(tu.memory.streams, 4);
    assert.ok(tu.memory.rssKiBPerStream !== null, 'RSS measured');
    const text = textTable(report);
    assert.ok(text.includes('[9]') && text.includes('tunnel UART: tunnel goodput to the guest'), text);
    assert.ok(markdownTable(report).includes('keystroke round trip during an upload'));
    assert.match(text, /tunnel UART: tunnel goodput to the guest +median [\d.]+ KiB\/s .* per round \d+ \/ \d+ %/);
    assert.ok(rows(report).filter((r) => r.ref === 9).length >= 14);
    assert.match(text, /tunnel virtio-serial: raw line from the guest via an in-guest TCP hop +median [\d.]+ KiB\/s/);
    assert.match(text, /tunnel UART: raw line from the guest via an in-guest TCP hop +median [\d.]+ KiB\/s/);
    assert.match(text, /tunnel virtio-serial: the guest's loopback TCP alone +median [\d.]+ KiB\/s/);
    assert.doesNotMatch(text, /tunnel UART: the guest's loopback TCP alone/);
  });

  test('without the test guest the phase is reported as not run, with how to build it', { timeout: 120_000 }, async () => {
    const empty = mkdtempSync(join(tmpdir(), 'vspc-no-guest-'));
    const saved = process.env.VSPC_GUEST_CACHE;
    process.env.VSPC_GUEST_CACHE = empty;
    try {
      const report = await runBench({ ...tiny, log: () => undefined });
      assert.deepEqual(report.failures, {});
      assert.equal(report.tunnel, undefined);
      assert.match(report.notRun.tunnel ?? '', /not built.*npm run pretest.*build-guest\.sh/s);
      assert.match(textTable(report), /NOT RUN tunnel: .*npm run pretest/);
    } finally {
      if (saved === undefined) delete process.env.VSPC_GUEST_CACHE;
      else process.env.VSPC_GUEST_CACHE = saved;
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
