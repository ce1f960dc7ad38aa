import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FrameType,
  Multiplexer,
  Reason,
  decodeReason,
  decodeU32,
  encodeOpen,
  encodeU32,
  type LinkMessage,
  type MuxConfig,
  type TunnelStream,
  type TunnelStreamHandlers,
  type TunnelStreamError,
} from '../../src/protocol/tunnel/index.js';

interface Log {
  events: string[];
  /** Bytes received, by `${side}:${id}`. */
  data: Map<string, number[]>;
  errors: TunnelStreamError[];
}

function recorder(log: Log, name: string): TunnelStreamHandlers {
  return {
    open: (s) => log.events.push(`${name}:open:${s.id}`),
    data: (c, s) => {
      const key = `${name}:${s.id}`;
      const arr = log.data.get(key) ?? [];
      arr.push(...c);
      log.data.set(key, arr);
    },
    end: (s) => log.events.push(`${name}:end:${s.id}`),
    close: (s) => log.events.push(`${name}:close:${s.id}`),
    reset: (e, s) => {
      log.errors.push(e);
      log.events.push(`${name}:reset:${s.id}:${e.reasonName}:${e.remote ? 'remote' : 'local'}`);
    },
    drain: (s) => log.events.push(`${name}:drain:${s.id}`),
  };
}

const cfg = (role: 'host' | 'agent', o: Partial<MuxConfig> = {}): MuxConfig => ({
  role,
  streamWindow: 4096,
  // No autotuning unless a test asks for it (its own tests below).
  maxStreamWindow: 4096,
  windowBudget: 0,
  sendHighWaterMark: 8192,
  maxSendBuffer: 1 << 20,
  maxStreams: 16,
  allowPorts: undefined,
  autoConsume: true,
  smallPayload: 64,
  ...o,
});

interface Pair {
  h: Multiplexer;
  a: Multiplexer;
  log: Log;
  incoming: TunnelStream[];
  /** Moves messages both ways (one per direction per round) until both are quiet; returns the messages. */
  flush(maxPayload?: number): { h2a: LinkMessage[]; a2h: LinkMessage[] };
}

function pair(opts: { host?: Partial<MuxConfig>; agent?: Partial<MuxConfig>; onOpen?: (s: TunnelStream, port: number, p: Pair) => void } = {}): Pair {
  const log: Log = { events: [], data: new Map(), errors: [] };
  const p = {} as Pair;
  p.log = log;
  p.incoming = [];
  p.h = new Multiplexer(cfg('host', opts.host), { kick: () => {}, openRequest: undefined });
  p.a = new Multiplexer(cfg('agent', opts.agent), {
    kick: () => {},
    openRequest: (s, port) => {
      p.incoming.push(s);
      log.events.push(`agent:request:${s.id}:${port}`);
      if (opts.onOpen) opts.onOpen(s, port, p);
      else s.accept(0, recorder(log, 'agent'));
    },
  });
  p.flush = (maxPayload = 1024) => {
    const h2a: LinkMessage[] = [];
    const a2h: LinkMessage[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      const m1 = p.h.nextMessage(maxPayload);
      if (m1) {
        h2a.push(m1);
        p.a.handle(m1, 0);
      }
      const m2 = p.a.nextMessage(maxPayload);
      if (m2) {
        a2h.push(m2);
        p.h.handle(m2, 0);
      }
      if (!m1 && !m2) return { h2a, a2h };
    }
    throw new Error('flush: no end');
  };
  return p;
}

const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe('tunnel mux: stream lifecycle', { timeout: 120_000 }, () => {
  test('open, accept, data both ways, half-close each way, close; ids released', () => {
    const p = pair();
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    assert.equal(s.id, 1);
    assert.equal(s.state, 'OPEN_SENT');
    s.write(bytes(3000), 0); // before OPEN_OK: queued
    p.flush();
    assert.equal(s.state, 'OPEN');
    const as = p.incoming[0];
    assert.equal(as.state, 'OPEN');
    assert.deepEqual(p.log.data.get('agent:1'), [...bytes(3000)]);
    as.write(bytes(10, 7), 0);
    s.end(0);
    p.flush();
    assert.equal(s.state, 'HALF_CLOSED_LOCAL');
    assert.equal(as.state, 'HALF_CLOSED_REMOTE');
    as.write(bytes(5, 9), 0); // the agent can still send after the host's FIN
    as.end(0);
    p.flush();
    assert.equal(s.state, 'CLOSED');
    assert.equal(as.state, 'CLOSED');
    assert.deepEqual(p.log.events, ['agent:request:1:22', 'host:open:1', 'agent:end:1', 'agent:close:1', 'host:end:1', 'host:close:1']);
    assert.deepEqual(p.log.data.get('host:1'), [...bytes(10, 7), ...bytes(5, 9)]);
    assert.equal(p.h.streamCount, 0);
    assert.equal(p.a.streamCount, 0);
    assert.throws(() => s.write(bytes(1), 0), { code: 'VSPC_TUNNEL_STREAM_CLOSED' });
  });

  test('refused open: OPEN_FAIL with reason reaches the opener', () => {
    const p = pair({ onOpen: (s) => s.refuse(0, Reason.REFUSED, 'connect ECONNREFUSED 127.0.0.1:23') });
    const s = p.h.open(23, recorder(p.log, 'host'), {}, 0);
    s.write(bytes(10), 0);
    const { h2a, a2h } = p.flush();
    assert.deepEqual(h2a.map((m) => m.type), [FrameType.OPEN]);
    assert.deepEqual(a2h.map((m) => m.type), [FrameType.OPEN_FAIL]);
    assert.equal(s.state, 'CLOSED');
    const e = p.log.errors[0];
    assert.equal(e.code, 'VSPC_TUNNEL_OPEN_FAILED');
    assert.equal(e.reasonName, 'REFUSED');
    assert.equal(e.remote, true);
    assert.match(e.message, /ECONNREFUSED/);
    assert.equal(p.h.streamCount + p.a.streamCount, 0);
  });

  test('allow-list and missing handler refuse with NOT_ALLOWED; stream limit with NO_RESOURCES', () => {
    const p = pair({ agent: { allowPorts: new Set([22]), maxStreams: 2 } });
    p.h.open(80, recorder(p.log, 'host'), {}, 0);
    p.flush();
    assert.equal(p.log.errors[0].reasonName, 'NOT_ALLOWED');
    assert.equal(p.incoming.length, 0, 'the application never sees a refused port');
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    assert.equal(p.log.errors[1].reasonName, 'NO_RESOURCES');
    assert.equal(p.a.streamCount, 2);
    // The host has no openRequest handler: agent-opened streams are refused.
    const q = pair();
    q.a.open(5000, recorder(q.log, 'agent'), {}, 0);
    q.flush();
    assert.equal(q.log.errors[0].reasonName, 'NOT_ALLOWED');
    assert.equal(q.log.errors[0].context.stream, 0x8001, 'agent-opened ids have bit 15 set');
  });

  test('local stream limit and id allocation', () => {
    const p = pair({ host: { maxStreams: 3 } });
    const ids = [0, 1, 2].map(() => p.h.open(22, {}, {}, 0).id);
    assert.deepEqual(ids, [1, 2, 3]);
    assert.throws(() => p.h.open(22, {}, {}, 0), { code: 'VSPC_TUNNEL_TOO_MANY_STREAMS' });
    assert.throws(() => p.h.open(0, {}, {}, 0), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' });
  });

  test('reset by either side; the other side gets the reason', () => {
    const p = pair();
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    s.write(bytes(100), 0);
    s.reset(0, Reason.ABORTED, 'client went away');
    const { h2a } = p.flush();
    assert.deepEqual(h2a.map((m) => m.type), [FrameType.RESET], 'queued data is dropped');
    assert.ok(p.log.events.includes('agent:reset:1:ABORTED:remote'));
    assert.equal(p.h.streamCount + p.a.streamCount, 0);
    const s2 = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    p.incoming[1].reset(0, Reason.REFUSED);
    p.flush();
    assert.ok(p.log.events.includes(`host:reset:${s2.id}:REFUSED:remote`));
  });

  test('reset before the answer keeps the id (RESET_WAIT) until OPEN_OK or OPEN_FAIL arrives', () => {
    for (const answer of ['accept', 'refuse', 'pending'] as const) {
      const p = pair({
        onOpen: (s) => {
          if (answer === 'accept') s.accept(0, recorder(p.log, 'agent'));
          else if (answer === 'refuse') s.refuse(0, Reason.REFUSED);
        },
      });
      const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
      // The OPEN is sent; the answer has not come back yet.
      const open = p.h.nextMessage(1024)!;
      s.reset(0);
      assert.equal(s.state, 'RESET_WAIT');
      assert.equal(p.h.streamCount, 1, 'id held');
      p.a.handle(open, 0);
      p.flush();
      assert.equal(s.state, 'CLOSED', answer);
      assert.equal(p.h.streamCount, 0, `${answer}: id released after the answer`);
      assert.equal(p.a.streamCount, 0, `${answer}: agent side gone`);
      if (answer === 'pending') {
        // The agent was still dialling: the RESET made it answer OPEN_FAIL(CANCELLED) at once.
        const inc = p.incoming[0];
        assert.equal(inc.state, 'CLOSED');
        assert.throws(() => inc.accept(0), { code: 'VSPC_TUNNEL_STREAM_STATE' });
      }
      assert.deepEqual(p.log.errors.filter((e) => e.remote === false), [], 'no local errors');
    }
  });

  test('messages for an id we are (re)opening are stale and dropped', () => {
    const p = pair();
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    // Leftovers of an earlier use of id 1 arrive before the answer to the new OPEN.
    p.h.handle({ type: FrameType.DATA, stream: 1, payload: bytes(5) }, 0);
    p.h.handle({ type: FrameType.CREDIT, stream: 1, payload: encodeU32(100) }, 0);
    p.h.handle({ type: FrameType.FIN, stream: 1, payload: new Uint8Array(0) }, 0);
    p.h.handle({ type: FrameType.RESET, stream: 1, payload: Uint8Array.of(Reason.ABORTED) }, 0);
    assert.equal(s.state, 'OPEN_SENT');
    assert.equal(p.h.stats.staleMessages, 4);
    // And for ids nobody holds.
    p.h.handle({ type: FrameType.DATA, stream: 77, payload: bytes(5) }, 0);
    p.h.handle({ type: FrameType.OPEN_OK, stream: 77, payload: encodeU32(100) }, 0);
    assert.equal(p.h.stats.staleMessages, 6);
    p.flush();
    assert.equal(s.state, 'OPEN');
    assert.equal(p.log.data.get('host:1'), undefined);
  });

  test('ids are reused after close; a stale message crossing the close does not hit the new stream', () => {
    const p = pair({ host: { maxStreams: 1 } });
    // Cycle through the whole host partition so id 1 comes round again.
    let first: TunnelStream | undefined;
    for (let i = 0; i < 0x7fff; i++) {
      const s = p.h.open(22, {}, {}, 0);
      first ??= s;
      p.flush();
      s.reset(0);
      p.flush();
    }
    assert.equal(p.h.streamCount, 0);
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    assert.equal(s.id, 1, 'wrapped around');
    assert.equal(first!.id, 1);
    // The agent's CREDIT for the previous id-1 stream crosses our new OPEN: it arrives first.
    p.h.handle({ type: FrameType.CREDIT, stream: 1, payload: encodeU32(999_999) }, 0);
    p.flush();
    assert.equal(s.sendCredit, 4096, 'credit is the new OPEN_OK value only');
  });

  test('OPEN on an id in use: the old stream is dropped and the new OPEN refused (PROTOCOL)', () => {
    const p = pair();
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    const { a2h } = (() => {
      p.a.handle({ type: FrameType.OPEN, stream: 1, payload: Uint8Array.of(0, 22, 0, 0, 16, 0) }, 0);
      return p.flush();
    })();
    assert.ok(p.log.events.includes('agent:reset:1:PROTOCOL:local'));
    assert.equal(a2h[0].type, FrameType.OPEN_FAIL);
    assert.equal(decodeReason(a2h[0].payload)!.code, Reason.PROTOCOL);
  });

  test('OPEN in the wrong id partition or malformed: OPEN_FAIL(PROTOCOL)', () => {
    const p = pair();
    p.a.handle({ type: FrameType.OPEN, stream: 0x8005, payload: Uint8Array.of(0, 22, 0, 0, 16, 0) }, 0);
    p.a.handle({ type: FrameType.OPEN, stream: 0, payload: Uint8Array.of(0, 22, 0, 0, 16, 0) }, 0);
    p.a.handle({ type: FrameType.OPEN, stream: 9, payload: Uint8Array.of(0, 22) }, 0);
    const out = [p.a.nextMessage(1024), p.a.nextMessage(1024), p.a.nextMessage(1024)];
    assert.deepEqual(out.map((m) => [m!.type, decodeReason(m!.payload)!.code]), [
      [FrameType.OPEN_FAIL, Reason.PROTOCOL],
      [FrameType.OPEN_FAIL, Reason.PROTOCOL],
      [FrameType.OPEN_FAIL, Reason.PROTOCOL],
    ]);
    assert.equal(p.a.stats.protocolViolations, 3);
  });

  test('peer violations reset the stream: DATA after FIN, second FIN, bad CREDIT', () => {
    for (const bad of ['data-after-fin', 'fin-twice', 'credit-zero'] as const) {
      const p = pair();
      const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
      p.flush();
      if (bad !== 'credit-zero') p.h.handle({ type: FrameType.FIN, stream: 1, payload: new Uint8Array(0) }, 0);
      if (bad === 'data-after-fin') p.h.handle({ type: FrameType.DATA, stream: 1, payload: bytes(1) }, 0);
      if (bad === 'fin-twice') p.h.handle({ type: FrameType.FIN, stream: 1, payload: new Uint8Array(0) }, 0);
      if (bad === 'credit-zero') p.h.handle({ type: FrameType.CREDIT, stream: 1, payload: encodeU32(0) }, 0);
      assert.equal(s.state, 'CLOSED', bad);
      assert.ok(p.log.events.includes('host:reset:1:PROTOCOL:local'), bad);
      const m = p.h.nextMessage(1024)!;
      assert.equal(m.type, FrameType.RESET);
      assert.equal(decodeReason(m.payload)!.code, Reason.PROTOCOL);
    }
  });

  test('API misuse: write after end, buffer limit, consume too much, reason codes', () => {
    const p = pair({ host: { maxSendBuffer: 100, autoConsume: false } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    assert.throws(() => s.write(bytes(101), 0), { code: 'VSPC_TUNNEL_BUFFER_FULL' });
    s.end(0);
    s.end(0);
    assert.throws(() => s.write(bytes(1), 0), { code: 'VSPC_TUNNEL_STREAM_ENDED' });
    assert.throws(() => s.consume(1, 0), { code: 'VSPC_TUNNEL_STREAM_STATE' });
    assert.throws(() => s.reset(0, Reason.PEER_RESTARTED), { code: 'VSPC_TUNNEL_BAD_ARGUMENT' }, 'local-only codes never go on the wire');
    assert.throws(() => s.accept(0), { code: 'VSPC_TUNNEL_STREAM_STATE' });
  });
});

describe('tunnel mux: credit flow control', { timeout: 120_000 }, () => {
  test('the sender never exceeds credit; CREDIT follows consumption', () => {
    const p = pair({ agent: { streamWindow: 1000, autoConsume: false } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    s.write(bytes(5000), 0);
    p.flush();
    const as = p.incoming[0];
    assert.equal(as.receivedTotal, 1000, 'exactly the initial credit');
    assert.equal(s.sendCredit, 0);
    assert.equal(s.bufferedAmount, 4000);
    as.consume(200, 0);
    assert.equal(p.flush().a2h.length, 0, 'below a quarter of the window: no CREDIT yet');
    as.consume(100, 0);
    const { a2h } = p.flush();
    assert.deepEqual(a2h.map((m) => [m.type, decodeU32(m.payload)]), [[FrameType.CREDIT, 300]]);
    assert.equal(as.receivedTotal, 1300);
    for (let i = 0; i < 20; i++) {
      as.consume(as.unconsumed, 0);
      p.flush();
    }
    assert.equal(as.receivedTotal, 5000);
    assert.deepEqual(p.log.data.get('agent:1'), [...bytes(5000)]);
    assert.ok(as.receivedTotal <= as.grantedTotal);
  });

  test('DATA beyond credit is a FLOW_CONTROL violation', () => {
    const p = pair({ agent: { streamWindow: 10 } });
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    p.a.handle({ type: FrameType.DATA, stream: 1, payload: bytes(11) }, 0);
    assert.ok(p.log.events.includes('agent:reset:1:FLOW_CONTROL:local'));
    assert.equal(p.a.stats.flowControlViolations, 1);
    p.flush();
    assert.ok(p.log.events.includes('host:reset:1:FLOW_CONTROL:remote'));
  });

  test('property: random writes, windows, payload sizes and consumption: bytes exact, credit respected', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ size: fc.nat(3000), window: fc.integer({ min: 1, max: 5000 }), back: fc.nat(3000) }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 64, max: 1024 }),
        fc.array(fc.nat(2000), { maxLength: 30 }),
        fc.record({ factor: fc.integer({ min: 1, max: 8 }), budget: fc.nat(20_000) }),
        (specs, maxPayload, consumes, tune) => {
          const p = pair({
            agent: { autoConsume: false, maxStreamWindow: 5000 * tune.factor, windowBudget: tune.budget },
            onOpen: (st, port, pp) => {
              const spec = specs[port - 1000];
              st.accept(0, recorder(pp.log, 'agent'), { streamWindow: spec.window });
              st.write(bytes(spec.back, 3), 0);
              st.end(0);
            },
          });
          const streams = specs.map((spec, i) => {
            const s = p.h.open(1000 + i, recorder(p.log, 'host'), {}, 0);
            s.write(bytes(spec.size, i), 0);
            s.end(0);
            return s;
          });
          let k = 0;
          for (let round = 0; round < 20_000; round++) {
            p.flush(maxPayload);
            assert.ok(p.a.windowGrowth <= tune.budget, 'autotuning within its budget');
            for (const as of p.incoming) {
              assert.ok(as.receivedTotal <= as.grantedTotal, 'credit respected');
              assert.ok(as.grantedTotal - (as.receivedTotal - as.unconsumed) <= 5000 * tune.factor, 'held + granted ≤ maxStreamWindow');
              const n = Math.min(as.unconsumed, consumes.length ? consumes[k++ % consumes.length] : as.unconsumed);
              if (as.state !== 'CLOSED' || as.unconsumed > 0) as.consume(Math.max(n, Math.min(1, as.unconsumed)), 0);
            }
            if (streams.every((s) => s.state === 'CLOSED') && p.incoming.every((s) => s.state === 'CLOSED')) break;
          }
          specs.forEach((spec, i) => {
            assert.deepEqual(p.log.data.get(`agent:${p.incoming[i].id}`) ?? [], [...bytes(spec.size, i)]);
            assert.deepEqual(p.log.data.get(`host:${streams[i].id}`) ?? [], [...bytes(spec.back, 3)]);
          });
          assert.equal(p.h.streamCount + p.a.streamCount, 0);
          assert.equal(p.a.windowGrowth, 0, 'every share of the budget returned');
          assert.equal(p.a.stats.flowControlViolations + p.h.stats.flowControlViolations, 0);
        },
      ),
      { numRuns: 150, seed: 21 },
    );
  });
});

/**
 * One round trip with the line's latency: the host sends everything its credit allows,
 * the agent gets it all, then the host gets every answer. Returns the DATA bytes sent.
 */
function roundTrip(p: Pair, maxPayload = 1024): number {
  const out: LinkMessage[] = [];
  for (let m = p.h.nextMessage(maxPayload); m; m = p.h.nextMessage(maxPayload)) out.push(m);
  for (const m of out) p.a.handle(m, 0);
  const back: LinkMessage[] = [];
  for (let m = p.a.nextMessage(maxPayload); m; m = p.a.nextMessage(maxPayload)) back.push(m);
  for (const m of back) p.h.handle(m, 0);
  return out.reduce((n, m) => n + (m.type === FrameType.DATA ? m.payload.length : 0), 0);
}

describe('tunnel mux: receive-window autotuning', { timeout: 120_000 }, () => {
  test('a window-limited stream whose reader keeps up doubles its window per exhausted grant, up to maxStreamWindow', () => {
    const p = pair({ agent: { streamWindow: 4096, maxStreamWindow: 32768, windowBudget: 1 << 20 } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush(); // OPEN, OPEN_OK (a flush has no latency: data written before it would all pass)
    s.write(bytes(300_000), 0);
    const as = p.incoming[0];
    const perRound: number[] = [];
    while (s.bufferedAmount > 0 && perRound.length < 100) {
      perRound.push(roundTrip(p));
      assert.ok(as.receivedTotal <= as.grantedTotal, 'credit respected');
      assert.ok(as.grantedTotal - as.receivedTotal <= 32768, 'never more than maxStreamWindow outstanding');
    }
    // 4 KiB, then 8, 16, 32 KiB per round trip: the window, not the reader, was the limit.
    assert.deepEqual(perRound.slice(0, 5), [4096, 8192, 16384, 32768, 32768]);
    assert.equal(Math.max(...perRound), 32768);
    assert.equal(p.a.stats.windowGrowths, 3, '4 → 8 → 16 → 32 KiB');
    assert.equal(p.a.windowGrowth, 32768 - 4096);
    assert.deepEqual(p.log.data.get('agent:1'), [...bytes(300_000)]);
    s.end(0);
    as.end(0);
    p.flush();
    assert.equal(p.a.streamCount, 0);
    assert.equal(p.a.windowGrowth, 0, 'the growth goes back to the budget when the stream ends');
  });

  test('a reader that does not keep up never grows its window, however often the sender runs out of credit', () => {
    const p = pair({ agent: { streamWindow: 4096, maxStreamWindow: 1 << 20, windowBudget: 1 << 20, autoConsume: false } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    s.write(bytes(100_000), 0);
    const as = p.incoming[0];
    for (let i = 0; i < 40 && s.bufferedAmount > 0; i++) {
      roundTrip(p);
      assert.ok(as.unconsumed <= 4096);
      as.consume(as.unconsumed, 0); // everything, but only once per round trip: a reader behind the line
    }
    assert.equal(p.a.stats.windowGrowths, 0);
    assert.equal(p.a.windowGrowth, 0);
    assert.ok(as.grantedTotal - as.receivedTotal <= 4096);
  });

  test('growth over all streams stays within windowBudget; a closed stream returns its share to the others', () => {
    const p = pair({ agent: { streamWindow: 4096, maxStreamWindow: 16384, windowBudget: 12288 } });
    const a = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    const b = p.h.open(23, recorder(p.log, 'host'), {}, 0);
    p.flush();
    a.write(bytes(200_000), 0);
    for (let i = 0; i < 10; i++) roundTrip(p);
    assert.equal(p.a.windowGrowth, 12288, 'the first stream took the whole budget (4 → 16 KiB)');
    b.write(bytes(200_000, 5), 0);
    let most = 0;
    for (let i = 0; i < 10; i++) {
      most = Math.max(most, roundTrip(p));
      assert.ok(p.a.windowGrowth <= 12288);
    }
    const [ia, ib] = p.incoming;
    assert.ok(ib.grantedTotal - ib.receivedTotal <= 4096, 'the second stream stayed at its first window');
    a.reset(0);
    roundTrip(p);
    // The RESET and b's next window arrive in the same round trip: a's share is back and
    // b has taken its first doubling of it.
    assert.equal(p.a.windowGrowth, 4096, "the reset stream's growth is back in the budget");
    for (let i = 0; i < 10; i++) roundTrip(p);
    assert.equal(p.a.windowGrowth, 12288, 'now the second one grows');
    assert.ok(ia.state === 'CLOSED' && ib.receivedTotal > 0 && most > 0);
    assert.equal(p.a.stats.windowGrowths, 4);
  });

  test('a peer sending beyond a grown window is still cut off with FLOW_CONTROL', () => {
    const p = pair({ agent: { streamWindow: 4096, maxStreamWindow: 8192, windowBudget: 1 << 20 } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    s.write(bytes(4096), 0);
    roundTrip(p);
    const as = p.incoming[0];
    assert.equal(p.a.stats.windowGrowths, 1);
    const room = as.grantedTotal - as.receivedTotal;
    assert.equal(room, 8192);
    p.a.handle({ type: FrameType.DATA, stream: 1, payload: bytes(room + 1) }, 0);
    assert.ok(p.log.events.includes('agent:reset:1:FLOW_CONTROL:local'));
    assert.equal(p.a.windowGrowth, 0);
  });
});

/** The receive window autotuning has given a stream (internal: not part of the API). */
function windowOf(m: Multiplexer, s: TunnelStream): number {
  return m.info((s as unknown as { rec: Parameters<Multiplexer['info']>[0] }).rec).window;
}

describe('tunnel mux: autotuning against hostile sequences', { timeout: 120_000 }, () => {
  test('property: streams ending by every path (FIN both ways, RESET either side, RESET_WAIT, OPEN_FAIL, violations, id reuse, peer restart) return all growth; held + granted within streams × window + budget', () => {
    const W = 1024;
    const MAX = 8192;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20_000 }),
        fc.array(
          fc.record({
            op: fc.oneof(
              { arbitrary: fc.constantFrom('openH', 'openA', 'end', 'reset', 'overrun', 'reuse', 'fin2', 'restart'), weight: 2 },
              { arbitrary: fc.constantFrom('write', 'consume', 'deliverH', 'deliverA', 'flush'), weight: 5 },
            ),
            pick: fc.nat(1000),
            n: fc.integer({ min: 1, max: 20_000 }),
          }),
          { minLength: 20, maxLength: 150 },
        ),
        (budget, ops) => {
          const tune = { streamWindow: W, maxStreamWindow: MAX, windowBudget: budget, maxStreams: 8 };
          const noop = (): TunnelStreamHandlers => ({});
          let k = 0;
          // Each side accepts two requests in three (some with manual consumption), refuses the third.
          const answer = (st: TunnelStream): void => {
            if (k++ % 3 === 2) st.refuse(0);
            else st.accept(0, noop(), { autoConsume: k % 2 === 0 });
          };
          const h: Multiplexer = new Multiplexer(cfg('host', { ...tune, autoConsume: true }), { kick: () => {}, openRequest: answer });
          const a: Multiplexer = new Multiplexer(cfg('agent', { ...tune, autoConsume: true }), { kick: () => {}, openRequest: answer });
          let h2a: LinkMessage[] = [];
          let a2h: LinkMessage[] = [];
          const pump = (): void => {
            for (let m = h.nextMessage(2048); m; m = h.nextMessage(2048)) h2a.push(m);
            for (let m = a.nextMessage(2048); m; m = a.nextMessage(2048)) a2h.push(m);
          };
          const deliver = (to: Multiplexer, q: LinkMessage[], n: number): LinkMessage[] => {
            const now = q.slice(0, n);
            for (const m of now) to.handle(m, 0);
            return q.slice(n);
          };
          const check = (): void => {
            for (const m of [h, a]) {
              assert.ok(m.windowGrowth >= 0 && m.windowGrowth <= budget, `growth ${m.windowGrowth} within budget ${budget}`);
              let grown = 0;
              for (const st of m.listStreams()) {
                const w = windowOf(m, st);
                assert.ok(w >= W && w <= Math.max(W, MAX), `window ${w}`);
                grown += w - W;
                // What the peer may still send plus what we hold: at most the window.
                assert.ok(st.grantedTotal - st.receivedTotal + st.unconsumed <= w, 'held + outstanding credit ≤ window');
                assert.ok(st.grantedTotal - st.receivedTotal <= 0xffffffff);
              }
              assert.equal(grown, m.windowGrowth, 'the budget in use is exactly the growth of the streams held');
            }
          };
          for (const o of ops) {
            const both = [...h.listStreams().map((st) => [h, st] as const), ...a.listStreams().map((st) => [a, st] as const)];
            const pick = both.length ? both[o.pick % both.length] : undefined;
            try {
              switch (o.op) {
                case 'openH':
                  if (h.streamCount < 8) h.open(22, noop(), { autoConsume: o.n % 2 === 0 }, 0);
                  break;
                case 'openA':
                  if (a.streamCount < 8) a.open(22, noop(), {}, 0);
                  break;
                case 'write':
                  if (pick && pick[1].state !== 'CLOSED' && pick[1].bufferedAmount < 100_000) pick[1].write(bytes(o.n), 0);
                  break;
                case 'end':
                  pick?.[1].end(0);
                  break;
                case 'reset':
                  pick?.[1].reset(0);
                  break;
                case 'consume':
                  if (pick) pick[1].consume(Math.min(o.n, pick[1].unconsumed), 0);
                  break;
                case 'deliverH':
                  pump();
                  a2h = deliver(h, a2h, 1 + (o.n % 8));
                  break;
                case 'deliverA':
                  pump();
                  h2a = deliver(a, h2a, 1 + (o.n % 8));
                  break;
                case 'flush':
                  for (let i = 0; i < 200 && (h2a.length || a2h.length || i === 0); i++) {
                    pump();
                    h2a = deliver(a, h2a, h2a.length);
                    a2h = deliver(h, a2h, a2h.length);
                  }
                  break;
                case 'overrun':
                  // The peer sends beyond the credit it has: FLOW_CONTROL.
                  if (pick) pick[0].handle({ type: FrameType.DATA, stream: pick[1].id, payload: bytes(pick[1].grantedTotal - pick[1].receivedTotal + 1) }, 0);
                  break;
                case 'fin2':
                  if (pick) for (let i = 0; i < 2; i++) pick[0].handle({ type: FrameType.FIN, stream: pick[1].id, payload: new Uint8Array(0) }, 0);
                  break;
                case 'reuse':
                  // The peer opens an id we still hold (its own partition): PROTOCOL, both dropped.
                  if (pick && !pick[1].initiatedLocally) pick[0].handle({ type: FrameType.OPEN, stream: pick[1].id, payload: encodeOpen({ port: 22, credit: 100 }) }, 0);
                  break;
                case 'restart':
                  // A peer restart: both sides drop everything, in flight included.
                  h.resetAll(Reason.SHUTDOWN, 'restart');
                  a.resetAll(Reason.SHUTDOWN, 'restart');
                  h2a = [];
                  a2h = [];
                  break;
              }
            } catch (err) {
              // API refusals (write after end, stream closed) are fine; nothing else is.
              if (!(err instanceof Error) || !/STREAM_(ENDED|CLOSED|STATE)|BUFFER_FULL|TOO_MANY/.test(String((err as { code?: string }).code))) throw err;
            }
            check();
          }
          for (const st of [...h.listStreams(), ...a.listStreams()]) st.reset(0);
          for (let i = 0; i < 200; i++) {
            pump();
            h2a = deliver(a, h2a, h2a.length);
            a2h = deliver(h, a2h, a2h.length);
          }
          check();
          assert.equal(h.streamCount + a.streamCount, 0);
          assert.equal(h.windowGrowth + a.windowGrowth, 0, 'every share of the budget returned');
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('tunnel mux: scheduling and backpressure', { timeout: 120_000 }, () => {
  test('round-robin per frame between bulk streams; small writes go first', () => {
    const p = pair({ agent: { streamWindow: 1 << 20 } });
    const a = p.h.open(1, {}, {}, 0);
    const b = p.h.open(2, {}, {}, 0);
    p.flush();
    a.write(bytes(10_000), 0);
    b.write(bytes(10_000), 0);
    const order: number[] = [];
    for (let i = 0; i < 6; i++) order.push(p.h.nextMessage(1024)!.stream);
    assert.deepEqual(order, [a.id, b.id, a.id, b.id, a.id, b.id]);
    const c = p.h.open(3, {}, {}, 0);
    p.flush(); // drains a and b too; refill
    a.write(bytes(10_000), 0);
    b.write(bytes(10_000), 0);
    p.h.nextMessage(1024);
    c.write(Uint8Array.of(0x71), 0); // a keystroke
    assert.equal(p.h.nextMessage(1024)!.stream, c.id, 'interactive byte overtakes the bulk queues');
  });

  test('control messages and CREDIT go before DATA', () => {
    const p = pair({ agent: { streamWindow: 1 << 20 }, host: { streamWindow: 100, autoConsume: true } });
    const a = p.h.open(1, {}, {}, 0);
    p.flush();
    a.write(bytes(5000), 0);
    p.h.open(2, {}, {}, 0);
    const first = p.h.nextMessage(1024)!;
    assert.equal(first.type, FrameType.OPEN);
  });

  test('write() returns false above the high-water mark; drain fires when it empties below', () => {
    const p = pair({ host: { sendHighWaterMark: 2000 }, agent: { streamWindow: 1 << 20 } });
    const s = p.h.open(22, recorder(p.log, 'host'), {}, 0);
    assert.equal(s.write(bytes(1500), 0), true);
    assert.equal(s.write(bytes(1500), 0), false);
    p.flush();
    assert.ok(p.log.events.includes('host:drain:1'));
    assert.equal(s.bufferedAmount, 0);
  });

  test('control queue is bounded: canAccept() turns false under an OPEN flood', () => {
    const p = pair({ agent: { maxStreams: 4 } });
    let n = 0;
    while (p.a.canAccept() && n < 10_000) p.a.handle({ type: FrameType.OPEN, stream: ++n, payload: Uint8Array.of(0, 22, 0, 0, 16, 0) }, 0);
    assert.ok(n <= 2 * 4 + 16 + 4, `stopped after ${n}`);
  });

  test('resetAll reports every stream with the local reason and empties the queues', () => {
    const p = pair();
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    p.flush();
    p.h.open(22, recorder(p.log, 'host'), {}, 0);
    assert.equal(p.h.resetAll(Reason.PEER_RESTARTED, 'peer restarted'), 3);
    assert.deepEqual(
      p.log.events.filter((e) => e.startsWith('host:reset')),
      ['host:reset:1:PEER_RESTARTED:local', 'host:reset:2:PEER_RESTARTED:local', 'host:reset:3:PEER_RESTARTED:local'],
    );
    assert.equal(p.h.nextMessage(1024), undefined);
    assert.equal(p.h.streamCount, 0);
  });
});
