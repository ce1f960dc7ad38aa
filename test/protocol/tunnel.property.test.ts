import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FIRST_RELIABLE_TYPE,
  FrameDecoder,
  FrameType,
  MAX_ENCODED,
  MAX_LARGE_PAYLOAD,
  MAX_PAYLOAD,
  Reason,
  TunnelEndpoint,
  decodeOpen,
  decodeU32,
  seqDiff,
  type TunnelStream,
} from '../../src/protocol/tunnel/index.js';
import { KiB, Rng, Sim, Workload, concat, writer, type Faults, type Side, type StreamPlan } from './tunnel-sim.js';

// ------------------------------------------------------------------ helpers

/**
 * Independent credit check on what each side actually put on the wire (before any
 * fault): for every (session tag, stream, sender), first transmissions of DATA never
 * exceed the credit the other side had sent so far (OPEN / OPEN_OK + CREDITs).
 */
class CreditAuditor {
  private readonly dec: Record<Side, FrameDecoder> = { host: new FrameDecoder(MAX_LARGE_PAYLOAD), agent: new FrameDecoder(MAX_LARGE_PAYLOAD) };
  private readonly highest = new Map<string, number>();
  private readonly granted = new Map<string, number>();
  private readonly sent = new Map<string, number>();
  readonly violations: string[] = [];
  dataFrames = 0;

  constructor(sim: Sim) {
    sim.dirs.host.tap = (b) => this.tap('host', b);
    sim.dirs.agent.tap = (b) => this.tap('agent', b);
  }

  private tap(side: Side, bytes: Uint8Array): void {
    const peer: Side = side === 'host' ? 'agent' : 'host';
    for (const f of this.dec[side].decode(bytes)) {
      if (f.type < FIRST_RELIABLE_TYPE) continue;
      const hk = `${side}:${f.tag}`;
      const h = this.highest.get(hk);
      if (h !== undefined && seqDiff(f.seq, h) <= 0) continue; // a retransmission
      this.highest.set(hk, f.seq);
      const grantTo = (who: Side): string => `${f.tag}:${f.stream}:${who}`;
      switch (f.type) {
        case FrameType.OPEN:
          this.granted.set(grantTo(peer), decodeOpen(f.payload)!.credit);
          break;
        case FrameType.OPEN_OK:
          this.granted.set(grantTo(peer), decodeU32(f.payload)!);
          break;
        case FrameType.CREDIT:
          this.granted.set(grantTo(peer), (this.granted.get(grantTo(peer)) ?? 0) + decodeU32(f.payload)!);
          break;
        case FrameType.DATA: {
          this.dataFrames++;
          const k = grantTo(side);
          const total = (this.sent.get(k) ?? 0) + f.payload.length;
          this.sent.set(k, total);
          const g = this.granted.get(k) ?? 0;
          if (total > g) this.violations.push(`${side} stream ${f.stream}: sent ${total} > granted ${g}`);
          break;
        }
      }
    }
  }
}

interface Scenario {
  seed: number;
  faults: Faults;
  h2aRate: number;
  a2hRate: number;
  latencyMs: number;
  txBuffer: number;
  window: number;
  streamWindow: number;
  maxPayload: number;
  consumeDelayMs: number;
  agentDelayMs: number;
  plans: StreamPlan[];
}

function build(sc: Scenario, extraAgentHandlers?: (sim: Sim) => void): { sim: Sim; wl: Workload; audit: CreditAuditor } {
  let wl!: Workload;
  const sim = new Sim({
    seed: sc.seed,
    h2a: { bytesPerSecond: sc.h2aRate, latencyMs: sc.latencyMs, txBuffer: sc.txBuffer, faults: sc.faults },
    a2h: { bytesPerSecond: sc.a2hRate, latencyMs: sc.latencyMs, txBuffer: sc.txBuffer, faults: sc.faults },
    endpoint: (side) => ({
      window: sc.window,
      streamWindow: sc.streamWindow,
      maxPayload: sc.maxPayload,
      handlers: side === 'agent' ? { openRequest: (s, p) => wl.onOpenRequest(s, p) } : {},
    }),
  });
  wl = new Workload(sim, sc.plans, 10000, sc.consumeDelayMs);
  const audit = new CreditAuditor(sim);
  extraAgentHandlers?.(sim);
  return { sim, wl, audit };
}

/** Bounded-memory invariants, checked every `every` events. */
function boundsInvariant(sim: Sim, sc: Scenario, every = 50): () => void {
  let n = 0;
  return () => {
    if (++n % every !== 0) return;
    for (const ep of [sim.host, sim.agent]) {
      if (ep.state === 'destroyed') continue;
      const st = ep.stats();
      assert.ok(st.link.inFlight <= sc.window, 'send window');
      assert.ok(st.link.reorderBuffered <= sc.window, 'reorder buffer');
      for (const s of ep.streams) {
        assert.ok(s.sendCredit >= 0, 'credit never negative');
        assert.ok(s.receivedTotal <= s.grantedTotal, 'received within credit');
        assert.ok(s.unconsumed <= sc.streamWindow, 'receiver holds at most its window');
      }
    }
  };
}

function checkComplete(sim: Sim, wl: Workload, audit: CreditAuditor, label: string): void {
  for (const r of wl.results) {
    assert.equal(r.hostReset, undefined, `${label}: host reset ${r.hostReset}`);
    assert.equal(r.agentReset, undefined, `${label}: agent reset ${r.agentReset}`);
    assert.ok(Buffer.from(concat(r.agentRx)).equals(Buffer.from(r.plan.h2a)), `${label}: host→agent bytes of port ${r.port}`);
    assert.ok(Buffer.from(concat(r.hostChunks)).equals(Buffer.from(r.plan.a2h)), `${label}: agent→host bytes of port ${r.port}`);
    assert.ok(r.hostEnd && r.agentEnd && r.hostClose && r.agentClose, `${label}: FIN both ways and closed`);
  }
  assert.deepEqual(audit.violations, [], `${label}: credit`);
  for (const ep of [sim.host, sim.agent]) {
    const st = ep.stats();
    assert.equal(st.mux.flowControlViolations, 0, `${label}: flow control`);
    assert.equal(st.mux.protocolViolations, 0, `${label}: protocol`);
    assert.equal(ep.streams.length, 0, `${label}: every stream id released`);
  }
}

const PROFILES: Record<string, Faults> = {
  clean: {},
  /** The QEMU 16550 observation: 2 bytes lost in 1 MiB. */
  uart: { byteDrop: 2e-6 },
  /** 1 in 1,000 byte-level faults: flips, drops, duplicates, garbage. */
  bytes1e3: { byteFlip: 2.5e-4, byteDrop: 2.5e-4, byteDup: 2.5e-4, garbage: 2.5e-4 },
  /** Frame-level chaos: drops, duplicates, reordering. */
  frames: { frameDrop: 0.05, frameDup: 0.05, reorder: 0.05, reorderMaxMs: 30 },
};

const HARSH: Record<string, Faults> = {
  harsh: { frameDrop: 0.2, frameDup: 0.1, reorder: 0.2, reorderMaxMs: 100, byteFlip: 5e-4, byteDrop: 2.5e-4, garbage: 2.5e-4 },
  /** 5 in 1,000 bytes damaged and 30 % of frames lost. */
  brutal: { byteFlip: 2e-3, byteDrop: 2e-3, garbage: 1e-3, frameDrop: 0.3 },
  garbageStorm: { garbage: 5e-3, frameDup: 0.3, reorder: 0.1, reorderMaxMs: 20 },
};

function scenarioArb(profiles: Record<string, Faults>, maxBytes: number, maxStreams: number, payloads: number[] = [64, 300, 1024]): fc.Arbitrary<Scenario> {
  return fc
    .record({
      seed: fc.integer(),
      profile: fc.constantFrom(...Object.keys(profiles)),
      h2aKiB: fc.integer({ min: 20, max: 300 }),
      a2hKiB: fc.integer({ min: 20, max: 300 }),
      latencyMs: fc.integer({ min: 0, max: 40 }),
      txBuffer: fc.constantFrom(1024, 4096, 65536),
      window: fc.constantFrom(2, 8, 32, 128),
      streamWindow: fc.constantFrom(700, 4096, 65536),
      maxPayload: fc.constantFrom(...payloads),
      consumeDelayMs: fc.constantFrom(0, 0, 0, 30),
      agentDelayMs: fc.constantFrom(0, 0, 1500),
      streams: fc.array(
        fc.record({
          h2a: fc.nat(maxBytes),
          a2h: fc.nat(maxBytes),
          chunk: fc.oneof(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 65, max: 8192 })),
          openAt: fc.nat(2000),
          dialMs: fc.nat(300),
        }),
        { minLength: 1, maxLength: maxStreams },
      ),
    })
    .map((r) => {
      const rng = new Rng(r.seed ^ 0x5eed);
      return {
        seed: r.seed,
        faults: profiles[r.profile],
        h2aRate: r.h2aKiB * KiB,
        a2hRate: r.a2hKiB * KiB,
        latencyMs: r.latencyMs,
        txBuffer: r.txBuffer,
        window: r.window,
        streamWindow: r.streamWindow,
        maxPayload: r.maxPayload,
        consumeDelayMs: r.consumeDelayMs,
        agentDelayMs: r.agentDelayMs,
        plans: r.streams.map((s) => ({ h2a: rng.bytes(s.h2a), a2h: rng.bytes(s.a2h), chunk: s.chunk, openAt: s.openAt, dialMs: s.dialMs })),
      };
    });
}

interface Totals {
  runs: number;
  faults: number;
  retransmits: number;
  discardedBytes: number;
  payloadBytes: number;
  virtualMs: number;
}
const newTotals = (): Totals => ({ runs: 0, faults: 0, retransmits: 0, discardedBytes: 0, payloadBytes: 0, virtualMs: 0 });

function runScenario(sc: Scenario, limitMs: number, totals?: Totals): { sim: Sim; wl: Workload } {
  const { sim, wl, audit } = build(sc);
  sim.invariant = boundsInvariant(sim, sc);
  sim.start(sc.agentDelayMs);
  wl.schedule();
  const done = sim.run(() => wl.done() || wl.failed(), limitMs);
  assert.ok(done, `no deadlock: finished within ${limitMs} ms of virtual time (t=${Math.round(sim.now)})`);
  checkComplete(sim, wl, audit, JSON.stringify({ seed: sc.seed, faults: sc.faults }));
  if (totals) {
    totals.runs++;
    totals.faults += sim.dirs.host.stats.faults + sim.dirs.agent.stats.faults;
    for (const ep of [sim.host, sim.agent]) {
      const st = ep.stats();
      totals.retransmits += st.link.retransmits;
      totals.discardedBytes += st.framing.discardedBytes;
    }
    for (const p of sc.plans) totals.payloadBytes += p.h2a.length + p.a2h.length;
    totals.virtualMs += sim.now;
  }
  return { sim, wl };
}

// ------------------------------------------------------------------ properties

describe('tunnel end to end over a simulated serial line', { timeout: 120_000 }, () => {
  const report = (t: { diagnostic(s: string): void }, tot: Totals): void =>
    t.diagnostic(
      `${tot.runs} runs, ${(tot.payloadBytes / KiB).toFixed(0)} KiB of stream data, ${tot.faults} injected faults, ${tot.retransmits} retransmissions, ${(tot.discardedBytes / KiB).toFixed(0)} KiB discarded by the decoders, ${(tot.virtualMs / 1000).toFixed(0)} s virtual time`,
    );

  test('property: every stream delivers exactly once, in order, both ways, FIN included, credit respected (mild faults)', { timeout: 120_000 }, (t) => {
    const tot = newTotals();
    fc.assert(
      fc.property(scenarioArb(PROFILES, 24 * KiB, 5), (sc) => {
        runScenario(sc, 20 * 60_000, tot);
      }),
      { numRuns: 60, seed: 1001, endOnFailure: true },
    );
    report(t, tot);
    assert.ok(tot.faults > 0 && tot.retransmits > 0);
  });

  test('property: the same with large frames (spec 5.1) on the lines they are for: clean, UART-like byte loss, frame drops / duplicates / reordering', { timeout: 120_000 }, (t) => {
    const tot = newTotals();
    const { clean, uart, frames } = PROFILES;
    fc.assert(
      fc.property(scenarioArb({ clean, uart, frames }, 96 * KiB, 4, [4096, 16384]), (sc) => {
        runScenario(sc, 20 * 60_000, tot);
      }),
      { numRuns: 30, seed: 1501, endOnFailure: true },
    );
    report(t, tot);
    assert.ok(tot.faults > 0 && tot.retransmits > 0);
  });

  test('property: the same under harsh faults (frame loss 20–30 %, up to 5e-3 byte faults, garbage storms)', { timeout: 120_000 }, (t) => {
    const tot = newTotals();
    fc.assert(
      fc.property(scenarioArb(HARSH, 12 * KiB, 3), (sc) => {
        runScenario(sc, 60 * 60_000, tot);
      }),
      { numRuns: 30, seed: 2002, endOnFailure: true },
    );
    report(t, tot);
    assert.ok(tot.faults > 100 * tot.runs, 'the faults really happened');
    assert.ok(tot.retransmits > 10 * tot.runs);
  });

  test('a link outage: streams survive, linkDown then linkUp, transfer completes', { timeout: 60_000 }, () => {
    const rng = new Rng(7);
    const sc: Scenario = {
      seed: 7,
      faults: {},
      h2aRate: 50 * KiB,
      a2hRate: 200 * KiB,
      latencyMs: 5,
      txBuffer: 4096,
      window: 32,
      streamWindow: 65536,
      maxPayload: 1024,
      consumeDelayMs: 0,
      agentDelayMs: 0,
      plans: [0, 1].map(() => ({ h2a: rng.bytes(200 * KiB), a2h: rng.bytes(200 * KiB), chunk: 4096, openAt: 0, dialMs: 1 })),
    };
    const events: string[] = [];
    let wl!: Workload;
    const sim = new Sim({
      seed: 7,
      h2a: { bytesPerSecond: sc.h2aRate, latencyMs: 5, txBuffer: 4096, faults: {} },
      a2h: { bytesPerSecond: sc.a2hRate, latencyMs: 5, txBuffer: 4096, faults: {} },
      endpoint: (side) => ({
        handlers: {
          ...(side === 'agent' ? { openRequest: (s: TunnelStream, p: number) => wl.onOpenRequest(s, p) } : {}),
          linkDown: () => events.push(`${side}:down@${Math.round(sim.now)}`),
          linkUp: (i) => events.push(`${side}:up:${i.newSession ? 'new' : 'again'}`),
        },
      }),
    });
    wl = new Workload(sim, sc.plans);
    const audit = new CreditAuditor(sim);
    sim.start();
    wl.schedule();
    // At t=1 s the line goes dead both ways for 20 s.
    sim.schedule(1000, () => {
      sim.dirs.host.p = { ...sim.dirs.host.p, faults: { frameDrop: 1 } };
      sim.dirs.agent.p = { ...sim.dirs.agent.p, faults: { frameDrop: 1 } };
    });
    sim.schedule(21_000, () => {
      sim.dirs.host.p = { ...sim.dirs.host.p, faults: {} };
      sim.dirs.agent.p = { ...sim.dirs.agent.p, faults: {} };
    });
    assert.ok(sim.run(() => wl.done() || wl.failed(), 120_000), 'finished');
    checkComplete(sim, wl, audit, 'outage');
    assert.ok(events.includes('host:down@7000') || events.some((e) => e.startsWith('host:down')), events.join(' '));
    assert.ok(events.some((e) => e.startsWith('agent:down')));
    assert.deepEqual(events.filter((e) => e.includes(':up:')).sort(), ['agent:up:again', 'agent:up:new', 'host:up:again', 'host:up:new']);
    // Recovery is prompt: the backed-off RTO does not delay it (resend on link-up).
    assert.ok(sim.now < 21_000 + 12_000, `completed at ${Math.round(sim.now)}`);
  });
});

describe('tunnel peer restart', { timeout: 120_000 }, () => {
  for (const who of ['agent', 'host'] as const) {
    test(`property: ${who} restart mid-transfer resets the old streams (PEER_RESTARTED) and new streams work`, { timeout: 120_000 }, () => {
      fc.assert(
        fc.property(
          fc.integer(),
          fc.integer({ min: 100, max: 4000 }),
          fc.constantFrom<Faults>({}, PROFILES.uart, PROFILES.bytes1e3, { frameDrop: 0.05, frameDup: 0.05, reorder: 0.05, reorderMaxMs: 10 }),
          fc.integer({ min: 1, max: 4 }),
          (seed, restartAt, faults, nStreams) => {
            const rng = new Rng(seed);
            // The first workload opens everything at once (a restarted host would otherwise
            // open the rest of it); the restart comes while transfers are running.
            const plans = (n: number, spread: number): StreamPlan[] =>
              Array.from({ length: n }, () => ({ h2a: rng.bytes(rng.int(60 * KiB)), a2h: rng.bytes(rng.int(60 * KiB)), chunk: 1 + rng.int(4096), openAt: rng.int(spread), dialMs: rng.int(100) }));
            let first!: Workload;
            let second!: Workload;
            const restarts: { side: Side; streamsReset: number; t: number }[] = [];
            const ups: Side[] = [];
            const sim = new Sim({
              seed,
              h2a: { bytesPerSecond: 40 * KiB, latencyMs: 3, txBuffer: 4096, faults },
              a2h: { bytesPerSecond: 250 * KiB, latencyMs: 3, txBuffer: 4096, faults },
              endpoint: (side) => ({
                autoConsume: true,
                handlers: {
                  linkUp: (i) => {
                    if (i.newSession) ups.push(side);
                  },
                  peerRestarted: (i) => restarts.push({ side, streamsReset: i.streamsReset, t: sim.now }),
                  ...(side === 'agent'
                    ? {
                        openRequest: (s: TunnelStream, p: number) => {
                          if (first.owns(p)) first.onOpenRequest(s, p);
                          else second.onOpenRequest(s, p);
                        },
                      }
                    : {}),
                },
              }),
            });
            first = new Workload(sim, plans(nStreams, 1), 10000);
            second = new Workload(sim, plans(nStreams, 500), 20000);
            sim.start();
            first.schedule();
            // Run until the restart time, then restart.
            sim.run(() => false, restartAt);
            const survivorSide: Side = who === 'agent' ? 'host' : 'agent';
            sim.restart(who);
            // A restarted host has lost its streams: the new host must open the second workload itself.
            const upBefore = ups.length;
            assert.ok(sim.run(() => ups.length >= upBefore + 2 && sim.host.state === 'up' && sim.agent.state === 'up', restartAt + 60_000), 'new session');
            assert.equal(restarts.length, 1, 'exactly one peer restart seen');
            assert.equal(restarts[0].side, survivorSide);
            // Every stream of the old session the survivor held either finished cleanly before
            // the restart became known, or was reset with PEER_RESTARTED; the event counts them.
            let reset = 0;
            for (const r of first.results) {
              const held = who === 'agent' ? r.hostStream : r.agentStream;
              if (held === undefined) continue;
              const closed = who === 'agent' ? r.hostClose : r.agentClose;
              const res = who === 'agent' ? r.hostReset : r.agentReset;
              if (closed) assert.equal(res, undefined);
              else {
                assert.equal(res, 'VSPC_TUNNEL_STREAM_RESET:PEER_RESTARTED', `port ${r.port}`);
                reset++;
              }
            }
            assert.equal(restarts[0].streamsReset, reset);
            // The new session carries new streams to completion.
            second.schedule();
            assert.ok(sim.run(() => second.done() || second.failed(), sim.now + 30 * 60_000), 'second workload finished');
            for (const r of second.results) {
              assert.equal(r.hostReset ?? r.agentReset, undefined);
              assert.ok(Buffer.from(concat(r.agentRx)).equals(Buffer.from(r.plan.h2a)));
              assert.ok(Buffer.from(concat(r.hostChunks)).equals(Buffer.from(r.plan.a2h)));
            }
            assert.equal(sim.host.streams.length + sim.agent.streams.length, 0);
          },
        ),
        { numRuns: 25, seed: who === 'agent' ? 3003 : 3004, endOnFailure: true },
      );
    });
  }
});

// ------------------------------------------------------------------ fairness and goodput

interface FairnessResult {
  maxLatency: number;
  meanLatency: number;
  delivered: number;
  bulkGoodput: number;
}

/**
 * A bulk stream saturates host→agent while an interactive stream writes one byte
 * every 100 ms; returns the keystroke latencies (write → delivery at the agent,
 * virtual ms) and the bulk goodput as a fraction of the raw link rate.
 */
function fairness(rate: number, opts: { txBuffer: number; pacing?: boolean; delayBasedWindow?: boolean; faults?: Faults; latencyMs?: number }): FairnessResult {
  const bulkData = new Rng(1).bytes(8 << 20);
  let bulk: TunnelStream | undefined;
  let interactive: TunnelStream | undefined;
  let bulkRx = 0;
  let bulkRxAtStart = 0;
  const writes: number[] = [];
  const latencies: number[] = [];
  const sim: Sim = new Sim({
    seed: 5,
    h2a: { bytesPerSecond: rate, latencyMs: opts.latencyMs ?? 5, txBuffer: opts.txBuffer, faults: opts.faults ?? {} },
    a2h: { bytesPerSecond: rate * 4, latencyMs: opts.latencyMs ?? 5, txBuffer: opts.txBuffer, faults: opts.faults ?? {} },
    endpoint: (side) => ({
      autoConsume: true,
      delayBasedWindow: opts.delayBasedWindow,
      pacing: opts.pacing && side === 'host' ? { bytesPerSecond: rate * 0.98 } : undefined,
      handlers:
        side === 'agent'
          ? {
              openRequest: (s, port) =>
                s.accept(sim.now, {
                  data: (c) => {
                    if (port === 1) bulkRx += c.length;
                    else for (let i = 0; i < c.length; i++) latencies.push(sim.now - writes[latencies.length]);
                  },
                }),
            }
          : {},
    }),
  });
  sim.start();
  const pump = writer(() => bulk, bulkData, 16 * KiB, sim);
  bulk = sim.host.openStream(1, 0, { drain: () => pump() });
  pump();
  interactive = sim.host.openStream(2, 0);
  const startAt = 3000;
  const keys = 60;
  sim.schedule(startAt, () => (bulkRxAtStart = bulkRx));
  for (let k = 0; k < keys; k++) {
    sim.schedule(startAt + k * 100 + 37, () => {
      writes.push(sim.now);
      interactive!.write(Uint8Array.of(0x61 + (k % 26)), sim.now);
    });
  }
  const endAt = startAt + keys * 100 + 1000;
  sim.run(() => false, endAt);
  const bulkGoodput = (bulkRx - bulkRxAtStart) / (((endAt - startAt) / 1000) * rate);
  return {
    maxLatency: Math.max(...latencies),
    meanLatency: latencies.reduce((a, b) => a + b, 0) / latencies.length,
    delivered: latencies.length,
    bulkGoodput,
  };
}

describe('tunnel fairness: interactive typing during a bulk transfer', { timeout: 120_000 }, () => {
  const FRAME = 1045; // bytes on the wire of a full frame (with a leading delimiter)
  for (const kib of [20, 50, 300]) {
    test(`${kib} KiB/s, small transport buffer: keystrokes stay fast while bulk saturates the link`, { timeout: 60_000 }, (t) => {
      const rate = kib * KiB;
      const r = fairness(rate, { txBuffer: 2048 });
      const frameMs = (FRAME * 1000) / rate;
      t.diagnostic(`${kib} KiB/s: keystroke latency max ${r.maxLatency.toFixed(1)} ms, mean ${r.meanLatency.toFixed(1)} ms (frame time ${frameMs.toFixed(1)} ms); bulk goodput ${(r.bulkGoodput * 100).toFixed(1)} %`);
      assert.equal(r.delivered, 60);
      // Bound: one frame on the wire + the transport buffer (≈ 2 frames) + waiting for a
      // window slot (≤ 2 frames, ACK every 2nd frame) + latency, with slack.
      assert.ok(r.maxLatency <= 7 * frameMs + 60, `max latency ${r.maxLatency}`);
      assert.ok(r.bulkGoodput >= 0.85, `bulk goodput ${r.bulkGoodput}`);
    });
  }

  test('deep transport buffer (256 KiB, like a unix socket to QEMU): the delay-based window or pacing keeps keystrokes fast', { timeout: 60_000 }, (t) => {
    const rate = 50 * KiB;
    const neither = fairness(rate, { txBuffer: 256 * KiB, delayBasedWindow: false });
    const vegas = fairness(rate, { txBuffer: 256 * KiB });
    const paced = fairness(rate, { txBuffer: 256 * KiB, pacing: true, delayBasedWindow: false });
    const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
    t.diagnostic(`256 KiB transport buffer at 50 KiB/s, keystroke latency max / bulk goodput:`);
    t.diagnostic(`  fixed window of 32 frames: ${neither.maxLatency.toFixed(0)} ms / ${pct(neither.bulkGoodput)}`);
    t.diagnostic(`  delay-based window (default): ${vegas.maxLatency.toFixed(0)} ms / ${pct(vegas.bulkGoodput)}`);
    t.diagnostic(`  pacing at 98 % of the line rate: ${paced.maxLatency.toFixed(0)} ms / ${pct(paced.bulkGoodput)}`);
    assert.ok(neither.maxLatency > 400, 'a whole window queues in the transport buffer');
    assert.ok(vegas.maxLatency <= 250, `delay-based ${vegas.maxLatency}`);
    assert.ok(paced.maxLatency <= 200, `paced ${paced.maxLatency}`);
    for (const r of [neither, vegas, paced]) assert.ok(r.bulkGoodput >= 0.85);
  });
});

/**
 * Keystroke round trips (host → agent, echoed by the agent's application, → host)
 * while a bulk stream saturates host→agent through a deep transport buffer (a unix
 * socket in front of QEMU's UART), and the bulk goodput meanwhile.
 */
function echoUnderBulk(rate: number, opts: { txBuffer: number; queueTargetMs?: number }): { rtts: number[]; bulkGoodput: number } {
  const bulkData = new Rng(11).bytes(8 << 20);
  let bulk: TunnelStream | undefined;
  let bulkRx = 0;
  let bulkRxAtStart = 0;
  const writes: number[] = [];
  const rtts: number[] = [];
  const sim: Sim = new Sim({
    seed: 17,
    h2a: { bytesPerSecond: rate, latencyMs: 2, txBuffer: opts.txBuffer, faults: {} },
    a2h: { bytesPerSecond: rate * 2, latencyMs: 2, txBuffer: opts.txBuffer, faults: {} },
    endpoint: (side) => ({
      autoConsume: true,
      queueTargetMs: opts.queueTargetMs,
      handlers:
        side === 'agent'
          ? {
              openRequest: (s, port) =>
                s.accept(sim.now, {
                  data: (c, st) => {
                    if (port === 1) bulkRx += c.length;
                    else st.write(c, sim.now); // the echo
                  },
                }),
            }
          : {},
    }),
  });
  sim.start();
  const pump = writer(() => bulk, bulkData, 16 * KiB, sim);
  bulk = sim.host.openStream(1, 0, { drain: () => pump() });
  pump();
  const echo = sim.host.openStream(7, 0, { data: (c) => { for (let i = 0; i < c.length; i++) rtts.push(sim.now - writes[rtts.length]); } });
  const startAt = 3000;
  const keys = 50;
  sim.schedule(startAt, () => (bulkRxAtStart = bulkRx));
  for (let k = 0; k < keys; k++) {
    sim.schedule(startAt + k * 120 + 13, () => {
      writes.push(sim.now);
      echo.write(Uint8Array.of(0x61 + (k % 26)), sim.now);
    });
  }
  const endAt = startAt + keys * 120 + 1000;
  sim.run(() => false, endAt);
  return { rtts, bulkGoodput: (bulkRx - bulkRxAtStart) / (((endAt - startAt) / 1000) * rate) };
}

describe('tunnel: interactive round trip during a bulk transfer (deep transport buffer)', { timeout: 120_000 }, () => {
  // The bound is 35 ms, not the 50: with one frame of slack in the byte cap while
  // several streams are open (arq.ts capSlackFrames) the p90 is 23–32 ms here; with two,
  // as for a lone bulk stream, it was 31–41 ms at the same goodput.
  test('keystroke round trip < 35 ms (median and p90) at UART speeds while bulk keeps ≥ 88 % of the line', { timeout: 60_000 }, (t) => {
    for (const kib of [20, 28, 50, 100]) {
      const r = echoUnderBulk(kib * KiB, { txBuffer: 256 * KiB });
      const sorted = [...r.rtts].sort((a, b) => a - b);
      const p50 = sorted[Math.floor(sorted.length / 2)];
      const p90 = sorted[Math.floor(sorted.length * 0.9)];
      t.diagnostic(`${kib} KiB/s, 256 KiB transport buffer: keystroke round trip p50 ${p50.toFixed(1)} ms, p90 ${p90.toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms; bulk goodput ${(r.bulkGoodput * 100).toFixed(1)} %`);
      assert.equal(r.rtts.length, 50, 'every keystroke came back');
      assert.ok(p50 < 35 && p90 < 35, `${kib} KiB/s: p50 ${p50}, p90 ${p90}`);
      assert.ok(r.bulkGoodput >= 0.88, `${kib} KiB/s: bulk goodput ${r.bulkGoodput}`);
    }
  });
});

/** Goodput of one bulk stream host→agent: delivered bytes per second in steady state / raw link rate. */
function goodput(rate: number, opts: { faults?: Faults; latencyMs?: number; maxPayload?: number; adaptivePayload?: boolean; bytes?: number; window?: number }): number {
  const size = opts.bytes ?? Math.max(256 * KiB, Math.floor(rate * 8));
  const data = new Rng(3).bytes(size);
  let rx = 0;
  let t0 = -1;
  let r0 = 0;
  let t1 = -1;
  let r1 = 0;
  const sim: Sim = new Sim({
    seed: 9,
    h2a: { bytesPerSecond: rate, latencyMs: opts.latencyMs ?? 5, txBuffer: 4096, faults: opts.faults ?? {} },
    a2h: { bytesPerSecond: rate, latencyMs: opts.latencyMs ?? 5, txBuffer: 4096, faults: opts.faults ?? {} },
    endpoint: (side) => ({
      autoConsume: true,
      maxPayload: opts.maxPayload,
      adaptivePayload: opts.adaptivePayload,
      window: opts.window,
      handlers:
        side === 'agent'
          ? {
              openRequest: (s) =>
                s.accept(sim.now, {
                  data: (c) => {
                    rx += c.length;
                    // Steady state: from 10 % to 90 % of the transfer.
                    if (t0 < 0 && rx >= size * 0.1) [t0, r0] = [sim.now, rx];
                    if (t1 < 0 && rx >= size * 0.9) [t1, r1] = [sim.now, rx];
                  },
                }),
            }
          : {},
    }),
  });
  sim.start();
  let s: TunnelStream | undefined;
  const pump = writer(() => s, data, 64 * KiB, sim);
  s = sim.host.openStream(22, 0, { drain: () => pump() });
  pump();
  assert.ok(sim.run(() => rx === size, 3_600_000), 'transfer finished');
  return (r1 - r0) / (((t1 - t0) / 1000) * rate);
}

describe('tunnel goodput vs raw link capacity (virtual time)', { timeout: 120_000 }, () => {
  test('>= 80 % of the link at 0 loss with 1024-byte payloads, from 20 KiB/s to 4 MiB/s', { timeout: 60_000 }, (t) => {
    for (const [rate, latency] of [
      [20 * KiB, 5],
      [50 * KiB, 5],
      [300 * KiB, 2],
      [4096 * KiB, 1],
    ] as const) {
      const g = goodput(rate, { latencyMs: latency, adaptivePayload: false });
      t.diagnostic(`${rate / KiB} KiB/s, ${latency} ms latency, 0 loss, fixed 1024-byte payload: goodput ${(g * 100).toFixed(1)} %`);
      assert.ok(g >= 0.8, `${rate}: ${g}`);
      const ga = goodput(rate, { latencyMs: latency });
      t.diagnostic(`  same with adaptive payload: ${(ga * 100).toFixed(1)} %`);
      assert.ok(ga >= 0.8, `${rate} adaptive: ${ga}`);
    }
  });

  test('goodput on lossy lines stays above sane floors', { timeout: 60_000 }, (t) => {
    const cases: [string, Faults, number][] = [
      ['UART 2e-6 byte loss', PROFILES.uart, 0.8],
      ['1e-3 byte faults', PROFILES.bytes1e3, 0.45],
      ['5 % frame loss', { frameDrop: 0.05 }, 0.6],
    ];
    for (const [name, faults, floor] of cases) {
      const g = goodput(50 * KiB, { faults });
      const fixed = goodput(50 * KiB, { faults, adaptivePayload: false });
      t.diagnostic(`50 KiB/s, ${name}: goodput ${(g * 100).toFixed(1)} % adaptive, ${(fixed * 100).toFixed(1)} % fixed 1024`);
      assert.ok(g >= floor, `${name}: ${g}`);
    }
  });
});

// ------------------------------------------------------------------ large frames

/**
 * One stream each way between endpoints announcing `hostMax` / `agentMax` (spec 5.1):
 * the largest DATA payload seen on the wire per direction, and the bytes delivered.
 */
function largeFrames(hostMax: number, agentMax: number, faults: Faults = {}): { h2a: number; a2h: number; ok: boolean } {
  const size = 512 * KiB;
  const up = new Rng(5).bytes(size);
  const down = new Rng(6).bytes(size);
  const biggest = { host: 0, agent: 0 };
  const got = { host: [] as Uint8Array[], agent: [] as Uint8Array[] };
  let agentStream: TunnelStream | undefined;
  const sim: Sim = new Sim({
    seed: 11,
    h2a: { bytesPerSecond: 8192 * KiB, latencyMs: 1, txBuffer: 65536, faults },
    a2h: { bytesPerSecond: 8192 * KiB, latencyMs: 1, txBuffer: 65536, faults },
    endpoint: (side) => ({
      autoConsume: true,
      maxPayload: side === 'host' ? hostMax : agentMax,
      handlers:
        side === 'agent'
          ? {
              openRequest: (st) => {
                agentStream = st;
                st.accept(sim.now, { data: (c) => void got.agent.push(Uint8Array.from(c)), drain: () => pumpDown() });
                pumpDown();
              },
            }
          : {},
    }),
  });
  for (const side of ['host', 'agent'] as const) {
    const dec = new FrameDecoder(MAX_LARGE_PAYLOAD);
    sim.dirs[side].tap = (b) => {
      for (const f of dec.decode(b)) if (f.type === FrameType.DATA) biggest[side] = Math.max(biggest[side], f.payload.length);
    };
  }
  const pumpDown = writer(() => agentStream, down, 64 * KiB, sim);
  sim.start();
  let hostStream: TunnelStream | undefined;
  const pumpUp = writer(() => hostStream, up, 64 * KiB, sim);
  hostStream = sim.host.openStream(22, sim.now, { data: (c) => void got.host.push(Uint8Array.from(c)), drain: () => pumpUp() });
  pumpUp();
  const done = (): boolean => got.agent.reduce((a, c) => a + c.length, 0) === size && got.host.reduce((a, c) => a + c.length, 0) === size;
  assert.ok(sim.run(done, 600_000), 'both transfers finished');
  const ok = Buffer.from(concat(got.agent)).equals(Buffer.from(up)) && Buffer.from(concat(got.host)).equals(Buffer.from(down));
  return { h2a: biggest.host, a2h: biggest.agent, ok };
}

describe('large frames (spec 5.1: max_payload above 1024)', { timeout: 120_000 }, () => {
  test('each side sends at most what the other announced, and at most its own maximum', () => {
    // [host announces, agent announces] → the largest payload each way.
    for (const [hostMax, agentMax] of [
      [MAX_LARGE_PAYLOAD, MAX_LARGE_PAYLOAD], // both large (vspc and a C agent on virtio-serial)
      [MAX_LARGE_PAYLOAD, MAX_PAYLOAD], // vspc and an agent on a UART, or one from before large frames
      [MAX_PAYLOAD, MAX_LARGE_PAYLOAD], // a host from before large frames (it clamps to 1024 too)
      [4096, MAX_LARGE_PAYLOAD],
    ] as const) {
      const r = largeFrames(hostMax, agentMax);
      const cap = Math.min(hostMax, agentMax);
      assert.ok(r.ok, `${hostMax}/${agentMax}: the bytes arrive intact`);
      assert.ok(r.h2a <= cap && r.a2h <= cap, `${hostMax}/${agentMax}: largest payloads ${r.h2a} / ${r.a2h}, cap ${cap}`);
      // The adaptive size starts small and grows on a clean line; a 512 KiB transfer reaches the cap.
      assert.equal(r.h2a, cap, `${hostMax}/${agentMax}: host → agent reaches ${cap}`);
      assert.equal(r.a2h, cap, `${hostMax}/${agentMax}: agent → host reaches ${cap}`);
    }
  });

  test('large frames on a line that drops 1 % of frames: retransmitted at their size, the bytes arrive intact', () => {
    const r = largeFrames(MAX_LARGE_PAYLOAD, MAX_LARGE_PAYLOAD, { frameDrop: 0.01 });
    assert.ok(r.ok);
    assert.equal(r.h2a, MAX_LARGE_PAYLOAD, 'full size at first');
  });
});

// ------------------------------------------------------------------ endpoint API

describe('tunnel endpoint API', { timeout: 120_000 }, () => {
  test('options are validated', () => {
    const w = (): boolean => true;
    assert.throws(() => new TunnelEndpoint({ role: 'x' as 'host', write: w }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    assert.throws(() => new TunnelEndpoint({ role: 'host', write: w, window: 129 }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    assert.throws(() => new TunnelEndpoint({ role: 'host', write: w, maxPayload: 16385 }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    assert.throws(() => new TunnelEndpoint({ role: 'host', write: w, maxPayload: 63 }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    assert.throws(() => new TunnelEndpoint({ role: 'host', write: w, bootId: 0 }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    assert.throws(() => new TunnelEndpoint({ role: 'host', write: w, allowPorts: [70000] }), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
    const ep = new TunnelEndpoint({ role: 'host', write: w });
    assert.ok(ep.bootId > 0, 'random boot id');
    assert.equal(ep.state, 'new');
    assert.equal(ep.nextDeadline(), undefined);
  });

  test('start sends a HELLO after a delimiter; receive/poll from a callback throw VSPC_TUNNEL_REENTRANT', () => {
    const out: Uint8Array[] = [];
    let host!: TunnelEndpoint;
    let agent!: TunnelEndpoint;
    let caught: unknown;
    host = new TunnelEndpoint({
      role: 'host',
      bootId: 1,
      write: (b) => void out.push(b),
      handlers: {
        linkUp: () => {
          try {
            host.poll(0);
          } catch (e) {
            caught = e;
          }
        },
      },
    });
    const toHost: Uint8Array[] = [];
    agent = new TunnelEndpoint({ role: 'agent', bootId: 2, write: (b) => void toHost.push(b) });
    host.start(0);
    assert.equal(out[0][0], 0, 'a leading delimiter flushes line garbage');
    assert.equal(host.state, 'handshaking');
    for (let i = 0; i < 5; i++) {
      for (const b of out.splice(0)) agent.receive(b, 0);
      for (const b of toHost.splice(0)) host.receive(b, 0);
    }
    assert.equal(host.state, 'up');
    assert.equal(agent.state, 'up');
    assert.equal((caught as { code?: string }).code, 'VSPC_TUNNEL_REENTRANT');
  });

  test('destroy resets every stream with SHUTDOWN and stops output', () => {
    const out: Uint8Array[] = [];
    const ep = new TunnelEndpoint({ role: 'host', bootId: 1, write: (b) => void out.push(b) });
    ep.start(0);
    const reasons: string[] = [];
    ep.openStream(22, 0, { reset: (e) => reasons.push(e.reasonName) });
    ep.openStream(23, 0, { reset: (e) => reasons.push(e.reasonName) });
    ep.destroy();
    assert.deepEqual(reasons, ['SHUTDOWN', 'SHUTDOWN']);
    assert.equal(ep.state, 'destroyed');
    assert.equal(ep.nextDeadline(), undefined);
    assert.throws(() => ep.receive(Uint8Array.of(0), 1), { code: 'VSPC_TUNNEL_DESTROYED' });
    assert.throws(() => ep.openStream(22, 1), { code: 'VSPC_TUNNEL_DESTROYED' });
  });

  test('write() returning false pauses output until drained(); time never goes backwards', () => {
    const out: Uint8Array[] = [];
    let open = true;
    const ep = new TunnelEndpoint({ role: 'host', bootId: 1, write: (b) => (out.push(b), open) });
    open = false;
    ep.start(100);
    assert.equal(out.length, 1);
    ep.poll(50); // earlier than before: treated as 100
    ep.poll(10_000); // HELLO retry due, but the transport is blocked
    assert.equal(out.length, 1);
    open = true;
    ep.drained(10_000);
    assert.equal(out.length, 2);
  });

  test('a flood of garbage into an endpoint is discarded and counted', () => {
    const ep = new TunnelEndpoint({ role: 'host', bootId: 1, write: () => true });
    ep.start(0);
    const rng = new Rng(1);
    for (let i = 0; i < 64; i++) ep.receive(rng.bytes(16 * KiB), i);
    const st = ep.stats();
    assert.equal(st.framing.frames, 0);
    assert.ok(st.framing.discardedBytes > 1_000_000 - 70_000);
    assert.equal(st.link.framesReceived, 0);
    assert.ok(MAX_ENCODED < 1100);
  });

  test('resetAllStreams sends a RESET for each stream', () => {
    const rng = new Rng(2);
    const sc: Scenario = {
      seed: 2,
      faults: {},
      h2aRate: 100 * KiB,
      a2hRate: 100 * KiB,
      latencyMs: 1,
      txBuffer: 4096,
      window: 32,
      streamWindow: 65536,
      maxPayload: 1024,
      consumeDelayMs: 0,
      agentDelayMs: 0,
      plans: [0, 1, 2].map(() => ({ h2a: rng.bytes(100 * KiB), a2h: new Uint8Array(0), chunk: 1000, openAt: 0, dialMs: 0 })),
    };
    const { sim, wl } = build(sc);
    sim.start();
    wl.schedule();
    sim.run(() => wl.results.every((r) => r.agentRxBytes > 0), 10_000);
    sim.host.resetAllStreams(sim.now, Reason.ABORTED, 'giving up');
    assert.equal(sim.host.streams.length, 0);
    sim.run(() => wl.results.every((r) => r.agentReset !== undefined), sim.now + 10_000);
    assert.deepEqual(
      wl.results.map((r) => r.agentReset),
      ['VSPC_TUNNEL_STREAM_RESET:ABORTED', 'VSPC_TUNNEL_STREAM_RESET:ABORTED', 'VSPC_TUNNEL_STREAM_RESET:ABORTED'],
    );
  });
});
