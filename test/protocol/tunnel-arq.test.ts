import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  Flag,
  FrameType,
  ReliableLink,
  decodeSack,
  encodeHello,
  seqDiff,
  sessionTag,
  type Frame,
  type LinkMessage,
  type ReliableLinkConfig,
} from '../../src/protocol/tunnel/index.js';
import type { ProtocolError } from '../../src/errors.js';

interface Side {
  link: ReliableLink;
  delivered: LinkMessage[];
  outbox: LinkMessage[];
  ups: { newSession: boolean; bootId: number; peerBootId: number; now: number }[];
  downs: number[];
  resets: { oldPeerBootId: number; newPeerBootId: number }[];
  errors: ProtocolError[];
  gate: { open: boolean };
}

let bootCounter = 0x7000;

function mk(role: 'host' | 'agent', bootId: number, cfg: Partial<ReliableLinkConfig> = {}): Side {
  const s: Side = {
    link: undefined as unknown as ReliableLink,
    delivered: [],
    outbox: [],
    ups: [],
    downs: [],
    resets: [],
    errors: [],
    gate: { open: true },
  };
  s.link = new ReliableLink(
    {
      role,
      bootId,
      newBootId: () => ++bootCounter,
      window: 8,
      maxPayload: 1024,
      adaptivePayload: false,
      delayBasedWindow: false,
      queueTargetMs: 15,
      rto: { initialMs: 1000, minMs: 100, maxMs: 10_000, granularityMs: 1 },
      keepalive: { idleMs: 2000, intervalMs: 1000, maxMissed: 4 },
      ackDelayMs: 10,
      ackEvery: 2,
      helloInitialMs: 200,
      helloMaxMs: 2000,
      ...cfg,
    },
    {
      canAccept: () => s.gate.open,
      deliver: (m) => s.delivered.push(m),
      pull: () => s.outbox.shift(),
      up: (i) => s.ups.push(i),
      down: (t) => s.downs.push(t),
      sessionReset: (i) => s.resets.push(i),
      protocolError: (e) => s.errors.push(e),
    },
  );
  return s;
}

function drain(s: Side, now: number): Frame[] {
  const out: Frame[] = [];
  for (let f = s.link.nextFrame(now); f !== undefined; f = s.link.nextFrame(now)) out.push(f);
  return out;
}

/** Exchanges frames at a fixed time until both sides are quiet. */
function settle(h: Side, a: Side, now: number): void {
  for (let i = 0; i < 100; i++) {
    const fh = drain(h, now);
    const fa = drain(a, now);
    if (fh.length + fa.length === 0) return;
    for (const f of fh) a.link.receiveFrame(f, now);
    for (const f of fa) h.link.receiveFrame(f, now);
  }
  throw new Error('settle: still talking');
}

type Drop = (f: Frame, dir: 'h2a' | 'a2h') => boolean;

/** Instantaneous link; polls at deadlines when idle. Returns the time `until` held, or undefined. */
function run(h: Side, a: Side, until: () => boolean, opts: { now?: number; limit?: number; drop?: Drop; check?: () => void } = {}): number | undefined {
  let now = opts.now ?? 0;
  const limit = opts.limit ?? 600_000;
  for (let i = 0; i < 2_000_000; i++) {
    if (until()) return now;
    const fh = drain(h, now);
    const fa = drain(a, now);
    opts.check?.();
    for (const f of fh) if (!opts.drop?.(f, 'h2a')) a.link.receiveFrame(f, now);
    for (const f of fa) if (!opts.drop?.(f, 'a2h')) h.link.receiveFrame(f, now);
    if (fh.length + fa.length === 0) {
      const d = Math.min(h.link.nextDeadline() ?? Infinity, a.link.nextDeadline() ?? Infinity);
      if (d > limit) return undefined;
      now = Math.max(now, d);
      h.link.poll(now);
      a.link.poll(now);
    }
  }
  throw new Error('run: too many iterations');
}

function established(cfg: Partial<ReliableLinkConfig> = {}): { h: Side; a: Side } {
  const h = mk('host', 0x1111, cfg);
  const a = mk('agent', 0x2222, cfg);
  h.link.start(0);
  a.link.start(0);
  assert.equal(
    run(h, a, () => h.link.established && a.link.established),
    0,
  );
  settle(h, a, 0);
  return { h, a };
}

const msg = (i: number): LinkMessage => ({ type: FrameType.DATA, stream: 1, payload: Uint8Array.of(i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff) });
const idx = (m: LinkMessage): number => m.payload[0] | (m.payload[1] << 8) | (m.payload[2] << 16);

describe('tunnel ARQ: sequence arithmetic', { timeout: 120_000 }, () => {
  test('seqDiff wraps at 2^16', () => {
    assert.equal(seqDiff(0, 0), 0);
    assert.equal(seqDiff(1, 0xffff), 2);
    assert.equal(seqDiff(0xffff, 1), -2);
    assert.equal(seqDiff(0x7fff, 0), 0x7fff);
    assert.equal(seqDiff(0x8000, 0), -0x8000);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: -0x8000, max: 0x7fff }), (a, d) => {
        assert.equal(seqDiff((a + d) & 0xffff, a), d);
      }),
      { numRuns: 500, seed: 11 },
    );
  });
});

describe('tunnel ARQ: handshake and boot ids', { timeout: 120_000 }, () => {
  test('three HELLOs establish both sides with the same session tag', () => {
    const h = mk('host', 0x12345678);
    const a = mk('agent', 0x9abcdef0);
    h.link.start(0);
    a.link.start(0);
    const hello1 = drain(h, 0);
    assert.equal(hello1.length, 1);
    assert.equal(hello1[0].type, FrameType.HELLO);
    a.link.receiveFrame(hello1[0], 0); // agent learns the host; its own HELLO was already due
    const hello2 = drain(a, 0);
    assert.equal(hello2.length, 1);
    h.link.receiveFrame(hello2[0], 0); // host sees its boot id echoed: up
    assert.ok(h.link.established && !a.link.established);
    const hello3 = drain(h, 0);
    assert.equal(hello3.length, 1);
    a.link.receiveFrame(hello3[0], 0);
    assert.ok(a.link.established);
    assert.equal(drain(a, 0).length, 0, 'nothing more: the handshake is quiet');
    assert.deepEqual(
      [h.ups[0].newSession, h.ups[0].peerBootId, a.ups[0].peerBootId],
      [true, 0x9abcdef0, 0x12345678],
    );
    // Both use the same tag on sequenced frames.
    h.outbox.push(msg(1));
    const [f] = drain(h, 0);
    assert.equal(f.tag, sessionTag(0x12345678, 0x9abcdef0));
    a.link.receiveFrame(f, 0);
    assert.equal(a.delivered.length, 1);
  });

  test('the handshake survives lost HELLOs (retries with backoff)', () => {
    const h = mk('host', 1);
    const a = mk('agent', 2);
    h.link.start(0);
    a.link.start(0);
    let dropped = 0;
    const t = run(h, a, () => h.link.established && a.link.established, { drop: (f) => f.type === FrameType.HELLO && dropped++ < 5 });
    assert.ok(t !== undefined && t > 0 && t < 10_000, `established at ${t}`);
    assert.ok(h.link.stats.hellosSent + a.link.stats.hellosSent >= 6);
  });

  test('HELLOs stop once established; periodic HELLO interval doubles up to the max', () => {
    const h = mk('host', 1);
    h.link.start(0);
    const times: number[] = [];
    let now = 0;
    for (let i = 0; i < 8; i++) {
      if (drain(h, now).length) times.push(now);
      now = h.link.nextDeadline()!;
      h.link.poll(now);
    }
    assert.deepEqual(times, [0, 200, 600, 1400, 3000, 5000, 7000, 9000]);
  });

  test('a new peer boot id resets the session, draws a new own boot id, and re-handshakes', () => {
    const { h, a } = established();
    h.outbox.push(msg(1), msg(2));
    run(h, a, () => a.delivered.length === 2);
    const stale = (() => {
      a.outbox.push(msg(99));
      return drain(a, 0).filter((f) => f.type === FrameType.DATA);
    })();
    const a2 = mk('agent', 0x3333);
    a2.link.start(100);
    const oldHostBoot = h.link.bootId;
    assert.ok(run(h, a2, () => h.link.established && a2.link.established && h.resets.length === 1, { now: 100 }) !== undefined);
    assert.deepEqual(h.resets[0], { oldPeerBootId: 0x2222, newPeerBootId: 0x3333, now: 100 });
    assert.notEqual(h.link.bootId, oldHostBoot, 'rule R: the host draws a new boot id');
    assert.equal(h.ups.filter((u) => u.newSession).length, 2);
    // A frame of the old session is dropped by its tag.
    for (const f of stale) h.link.receiveFrame(f, 200);
    assert.equal(h.delivered.length, 0);
    assert.ok(h.link.stats.badTag >= 1);
    // The new session works from sequence number 0.
    h.outbox.push(msg(7));
    run(h, a2, () => a2.delivered.length === 1, { now: 200 });
    assert.equal(idx(a2.delivered[0]), 7);
  });

  test('a stale HELLO of an old incarnation costs one extra reset, never a deadlock', () => {
    const { h, a } = established();
    const oldHello: Frame = { type: FrameType.HELLO, flags: Flag.AGENT, tag: 0, seq: 0, ack: 0, stream: 0, payload: encodeHello({ version: 1, role: 1, flags: 0, window: 8, bootId: 0x5555, peerBootId: 0, maxPayload: 1024 }) };
    h.link.receiveFrame(oldHello, 10); // host now believes the agent restarted as 0x5555
    assert.equal(h.resets.length, 1);
    // The real agent (0x2222) is still there; both must converge to a fresh common session.
    assert.ok(run(h, a, () => h.link.established && a.link.established && h.link.peerBootId === a.link.bootId && a.link.peerBootId === h.link.bootId, { now: 10 }) !== undefined);
    assert.equal(a.resets.length, 1, 'the agent saw the host change boot id and reset too');
    h.outbox.push(msg(1));
    a.outbox.push(msg(2));
    run(h, a, () => a.delivered.length === 1 && h.delivered.length === 1, { now: 20 });
  });

  test('own HELLO echoed back, same role, other version: ignored and reported once', () => {
    const h = mk('host', 0x10);
    h.link.start(0);
    const [hello] = drain(h, 0);
    h.link.receiveFrame(hello, 0);
    h.link.receiveFrame(hello, 1);
    const otherHost: Frame = { ...hello, payload: encodeHello({ version: 1, role: 0, flags: 0, window: 8, bootId: 0x20, peerBootId: 0, maxPayload: 1024 }) };
    h.link.receiveFrame(otherHost, 2);
    const v2: Frame = { ...hello, payload: Uint8Array.of(2, 9, 9) };
    h.link.receiveFrame(v2, 3);
    h.link.receiveFrame(v2, 4);
    assert.deepEqual(
      h.errors.map((e) => e.code),
      ['VSPC_TUNNEL_ECHO', 'VSPC_TUNNEL_ROLE_MISMATCH', 'VSPC_TUNNEL_VERSION_MISMATCH'],
    );
    assert.equal(h.link.established, false);
    assert.equal(h.link.peerBootId, 0);
  });

  test('a line that echoes mid-session: our own frames are dropped, neither delivered nor acknowledging (spec 5.4)', () => {
    const { h, a } = established();
    // Echoed sequenced frames would be delivered as the peer's: the host's rcv_next is 0
    // and its own first frames carry seq 0 and 1.
    h.outbox.push(msg(1), msg(2));
    const first = drain(h, 0);
    assert.ok(first.every((f) => (f.flags & Flag.AGENT) === 0), 'the host never sets AGENT');
    for (const f of first) h.link.receiveFrame(f, 1);
    assert.equal(h.delivered.length, 0, 'not delivered');
    assert.equal(h.link.windowUsed, 2);
    for (const f of first) a.link.receiveFrame(f, 1);
    run(h, a, () => a.delivered.length === 2 && h.link.windowUsed === 0, { now: 1 });
    // Echoed acks would acknowledge frames the agent never got: the agent sends 4 frames,
    // so the host's next frames (seq 2..5) carry ack 4, which would cover its own 2 and 3.
    for (let i = 10; i < 14; i++) a.outbox.push(msg(i));
    run(h, a, () => h.delivered.length === 4 && a.link.windowUsed === 0, { now: 2 });
    for (let i = 20; i < 24; i++) h.outbox.push(msg(i));
    const lost = drain(h, 3).filter((f) => f.type === FrameType.DATA);
    assert.deepEqual(lost.map((f) => [f.seq, f.ack]), [[2, 4], [3, 4], [4, 4], [5, 4]]);
    const echoesBefore = h.link.stats.echoes;
    for (const f of lost) h.link.receiveFrame(f, 4); // the agent got none of them; the line echoed them
    assert.equal(h.link.windowUsed, 4, 'our own ack acknowledged nothing');
    assert.equal(h.delivered.length, 4, 'our own seq delivered nothing');
    assert.equal(h.link.stats.echoes - echoesBefore, 4);
    // An echoed probe is not answered either (it would be a probe to ourselves).
    const probe: Frame = { type: FrameType.ACK, flags: Flag.POLL, tag: sessionTag(0x1111, 0x2222), seq: 0, ack: 6, stream: 0, payload: new Uint8Array(0) };
    h.link.receiveFrame(probe, 5);
    assert.equal(drain(h, 5).length, 0);
    // The agent side: its own frames come back to it too.
    a.outbox.push(msg(30));
    const mine = drain(a, 5);
    assert.ok(mine.every((f) => (f.flags & Flag.AGENT) !== 0), 'the agent sets AGENT in every frame');
    for (const f of mine) a.link.receiveFrame(f, 5);
    assert.equal(a.delivered.length, 2);
    assert.equal(a.link.windowUsed, 1);
    assert.ok(a.link.stats.echoes >= 1);
    // Echoes cost nothing else: the retransmissions get everything through, exactly once.
    for (const f of mine) h.link.receiveFrame(f, 6);
    run(h, a, () => a.delivered.length === 6 && h.delivered.length === 5 && h.link.windowUsed === 0 && a.link.windowUsed === 0, { now: 6 });
    assert.deepEqual(a.delivered.map(idx), [1, 2, 20, 21, 22, 23]);
    assert.deepEqual(h.delivered.map(idx), [10, 11, 12, 13, 30]);
    assert.deepEqual(h.errors.map((e) => e.code), ['VSPC_TUNNEL_ECHO'], 'reported once per session');
    assert.deepEqual(a.errors.map((e) => e.code), ['VSPC_TUNNEL_ECHO']);
  });

  test('frames other than HELLO are ignored before the handshake', () => {
    const h = mk('host', 1);
    h.link.start(0);
    h.link.receiveFrame({ type: FrameType.DATA, flags: Flag.AGENT, tag: 0, seq: 0, ack: 0, stream: 1, payload: Uint8Array.of(1) }, 0);
    assert.equal(h.delivered.length, 0);
    assert.equal(h.link.stats.noSession, 1);
  });
});

describe('tunnel ARQ: selective repeat', { timeout: 120_000 }, () => {
  test('in-order exactly-once delivery across sequence wrap-around; window never exceeded', { timeout: 60_000 }, () => {
    const { h, a } = established();
    const N = 70_000;
    for (let i = 0; i < N; i++) h.outbox.push(msg(i));
    let maxUsed = 0;
    run(h, a, () => a.delivered.length === N, {
      check: () => {
        maxUsed = Math.max(maxUsed, h.link.windowUsed);
      },
    });
    assert.ok(a.delivered.every((m, i) => idx(m) === i));
    assert.equal(maxUsed, 8);
    assert.equal(h.link.stats.retransmits, 0);
  });

  test('a lost frame is repaired by fast retransmit after SACKs; receiver delivers in order', () => {
    const { h, a } = established();
    for (let i = 0; i < 5; i++) h.outbox.push(msg(i));
    const frames = drain(h, 0);
    assert.deepEqual(frames.map((f) => f.seq), [0, 1, 2, 3, 4]);
    for (const f of frames.slice(1)) a.link.receiveFrame(f, 1);
    assert.equal(a.delivered.length, 0);
    assert.equal(a.link.reorderBuffered, 4);
    const acks = drain(a, 1);
    const last = acks[acks.length - 1];
    assert.equal(last.type, FrameType.ACK);
    assert.equal(last.ack, 0);
    assert.deepEqual(decodeSack(last.payload), [0, 1, 2, 3]);
    for (const f of acks) h.link.receiveFrame(f, 2);
    assert.equal(h.link.stats.fastRetransmits, 1);
    assert.equal(h.link.inFlight, 1, 'SACKed frames no longer count as in flight');
    const [re] = drain(h, 2);
    assert.equal(re.seq, 0);
    a.link.receiveFrame(re, 3);
    assert.deepEqual(a.delivered.map(idx), [0, 1, 2, 3, 4]);
    for (const f of drain(a, 3)) h.link.receiveFrame(f, 4);
    assert.equal(h.link.windowUsed, 0);
  });

  test('duplicates are delivered once and reported with the DUP flag', () => {
    const { h, a } = established();
    h.outbox.push(msg(0), msg(1));
    const frames = drain(h, 0);
    for (const f of [...frames, ...frames, frames[0]]) a.link.receiveFrame(f, 0);
    assert.deepEqual(a.delivered.map(idx), [0, 1]);
    assert.equal(a.link.stats.duplicates, 3);
    const [ack] = drain(a, 0);
    assert.equal(ack.flags & Flag.DUP, Flag.DUP);
    h.link.receiveFrame(ack, 1);
    assert.equal(h.link.stats.dupReports, 1);
    assert.equal(h.link.windowUsed, 0);
  });

  test('frames beyond the receive window are dropped; reorder buffer stays bounded', () => {
    const { h, a } = established();
    const tag = sessionTag(0x1111, 0x2222);
    for (let seq = 1; seq < 40; seq++) a.link.receiveFrame({ type: FrameType.DATA, flags: 0, tag, seq, ack: 0, stream: 1, payload: Uint8Array.of(seq) }, 0);
    assert.equal(a.link.reorderBuffered, 7, 'seq 1..7 are inside a window of 8 starting at 0');
    assert.equal(a.link.stats.outOfWindow, 32);
    // Far-away sequence numbers (stale or forged) are handled the same way.
    a.link.receiveFrame({ type: FrameType.DATA, flags: 0, tag, seq: 0x9000, ack: 0, stream: 1, payload: Uint8Array.of(0) }, 0);
    assert.equal(a.link.reorderBuffered, 7);
    assert.equal(a.delivered.length, 0);
    void h;
  });

  test('acks outside [snd_una, snd_nxt] are ignored', () => {
    const { h, a } = established();
    h.outbox.push(msg(0));
    drain(h, 0);
    const tag = sessionTag(0x1111, 0x2222);
    h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: 5, stream: 0, payload: new Uint8Array(0) }, 1);
    h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: 0xffff, stream: 0, payload: new Uint8Array(0) }, 1);
    assert.equal(h.link.windowUsed, 1);
    assert.equal(h.link.stats.staleAcks, 2);
    void a;
  });

  test('random loss, duplication and reordering: exactly once, in order (property)', { timeout: 60_000 }, () => {
    fc.assert(
      fc.property(fc.integer(), fc.double({ min: 0, max: 0.5, noNaN: true }), fc.integer({ min: 1, max: 300 }), (seed, loss, n) => {
        let x = seed >>> 0 || 1;
        const rnd = (): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8) / (1 << 24);
        const { h, a } = established();
        for (let i = 0; i < n; i++) h.outbox.push(msg(i));
        const held: { f: Frame; to: Side }[] = [];
        const t = run(h, a, () => a.delivered.length === n && h.link.windowUsed === 0, {
          drop: (f, dir) => {
            if (rnd() < loss) return true;
            if (rnd() < 0.1) {
              held.push({ f, to: dir === 'h2a' ? a : h }); // delivered later, out of order
              return true;
            }
            if (rnd() < 0.05) (dir === 'h2a' ? a : h).link.receiveFrame(f, 0);
            return false;
          },
          check: () => {
            while (held.length > 3) {
              const k = Math.floor(rnd() * held.length);
              const [{ f, to }] = held.splice(k, 1);
              to.link.receiveFrame(f, 0);
            }
          },
        });
        assert.ok(t !== undefined, 'finished');
        assert.deepEqual(a.delivered.map(idx), Array.from({ length: n }, (_, i) => i));
      }),
      { numRuns: 60, seed: 12 },
    );
  });

  test('delivery waits while the upper layer is full, without acking', () => {
    const { h, a } = established();
    a.gate.open = false;
    h.outbox.push(msg(0), msg(1), msg(2));
    for (const f of drain(h, 0)) a.link.receiveFrame(f, 0);
    assert.equal(a.delivered.length, 0);
    for (const f of drain(a, 0)) h.link.receiveFrame(f, 0);
    assert.equal(h.link.windowUsed, 3, 'nothing acknowledged');
    a.gate.open = true;
    a.link.retryDelivery(1);
    assert.deepEqual(a.delivered.map(idx), [0, 1, 2]);
  });
});

describe('tunnel ARQ: RTO (RFC 6298) and Karn', { timeout: 120_000 }, () => {
  function sendAndAck(h: Side, tag: number, sentAt: number, ackAt: number): void {
    h.outbox.push(msg(0));
    const [f] = drain(h, sentAt);
    h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: (f.seq + 1) & 0xffff, stream: 0, payload: new Uint8Array(0) }, ackAt);
  }

  test('SRTT/RTTVAR/RTO follow the RFC formulas with min and max bounds', () => {
    const { h } = established();
    const tag = sessionTag(0x1111, 0x2222);
    assert.equal(h.link.rto, 1000, 'initial RTO');
    sendAndAck(h, tag, 0, 200);
    assert.deepEqual([h.link.srtt, h.link.rttvar, h.link.rto], [200, 100, 600]);
    sendAndAck(h, tag, 1000, 1100);
    assert.deepEqual([h.link.srtt, h.link.rttvar, h.link.rto], [187.5, 100, 587.5]);
    for (let i = 0; i < 60; i++) sendAndAck(h, tag, 2000 + i * 10, 2000 + i * 10 + 1);
    assert.equal(h.link.rto, 100, 'clamped to minMs');
    sendAndAck(h, tag, 5000, 65_000);
    assert.equal(h.link.rto, 10_000, 'clamped to maxMs');
  });

  test('timeouts back off exponentially up to max; retransmitted frames give no sample (Karn)', () => {
    // Keepalive off: a link declared down and back would drop the backoff on purpose.
    const { h } = established({ keepalive: { idleMs: 1e9, intervalMs: 1e9, maxMissed: 4 } });
    const tag = sessionTag(0x1111, 0x2222);
    h.outbox.push(msg(0));
    drain(h, 0);
    const rtos: number[] = [];
    const resentAt: number[] = [];
    let now = 0;
    while (h.link.stats.timeouts < 6) {
      now = h.link.nextDeadline()!;
      const before = h.link.stats.timeouts;
      h.link.poll(now); // keepalive probes interleave; only RTO expiries count here
      if (h.link.stats.timeouts > before) rtos.push(h.link.rto);
      if (drain(h, now).some((f) => f.type === FrameType.DATA)) resentAt.push(now);
    }
    assert.deepEqual(resentAt, [1000, 3000, 7000, 15_000, 25_000, 35_000], 'resent at each expiry');
    assert.deepEqual(rtos, [2000, 4000, 8000, 10_000, 10_000, 10_000]);
    assert.equal(h.link.stats.timeouts, 6);
    h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: 1, stream: 0, payload: new Uint8Array(0) }, now + 5);
    assert.equal(h.link.stats.rttSamples, 0, 'Karn: no sample from a retransmitted frame');
    assert.equal(h.link.rto, 10_000, 'backoff kept until a valid sample');
    sendAndAck(h, tag, now + 10, now + 60);
    assert.equal(h.link.stats.rttSamples, 1);
    assert.equal(h.link.rto, 150);
  });

  test('on RTO, only frames outstanding for a whole RTO (at least the oldest) are resent', () => {
    const { h } = established();
    h.outbox.push(msg(0));
    drain(h, 0);
    h.outbox.push(msg(1));
    drain(h, 900);
    h.link.poll(1000);
    const re = drain(h, 1000);
    assert.deepEqual(re.map((f) => f.seq), [0]);
  });
});

describe('tunnel ARQ: backoff cap and delay-based window', { timeout: 120_000 }, () => {
  test('while the peer is heard from, the RTO backs off to at most twice the computed value', () => {
    const { h, a } = established({ keepalive: { idleMs: 1e9, intervalMs: 1e9, maxMissed: 4 } });
    const tag = sessionTag(0x1111, 0x2222);
    h.outbox.push(msg(0));
    drain(h, 0); // never arrives
    let now = 0;
    for (let i = 0; i < 5; i++) {
      // The agent keeps talking (e.g. its own data): each frame proves it alive.
      h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: 0, stream: 0, payload: new Uint8Array(0) }, now + 1);
      now = h.link.nextDeadline()!;
      h.link.poll(now);
      drain(h, now);
    }
    assert.equal(h.link.stats.timeouts, 5);
    assert.equal(h.link.rto, 2000, 'capped at 2 × the (initial) RTO, not 32 s');
    void a;
  });

  test('cwnd grows while the window limits and RTT stays flat, shrinks when a queue builds', () => {
    const h = mk('host', 0x1111, { window: 32, delayBasedWindow: true });
    const a = mk('agent', 0x2222, { window: 32, delayBasedWindow: true });
    h.link.start(0);
    a.link.start(0);
    run(h, a, () => h.link.established && a.link.established);
    settle(h, a, 0);
    const tag = sessionTag(0x1111, 0x2222);
    const big = (): LinkMessage => ({ type: FrameType.DATA, stream: 1, payload: new Uint8Array(1024) });
    assert.equal(h.link.cwnd, 8);
    /**
     * A bulk sender with unlimited data; each frame is acknowledged after rtt(flying),
     * flying being the frames in flight when it was sent (a queue makes that grow).
     */
    const flow = (from: number, until: number, rtt: (flying: number) => number): void => {
      const acks: { at: number; ack: number }[] = [];
      let t = from;
      while (t < until) {
        for (let i = 0; i < 4; i++) h.outbox.push(big());
        for (const f of drain(h, t)) if (f.type === FrameType.DATA) acks.push({ at: t + rtt(h.link.inFlight), ack: (f.seq + 1) & 0xffff });
        h.outbox.length = 0;
        acks.sort((x, y) => x.at - y.at);
        const next = acks.shift();
        if (next === undefined) break;
        t = next.at;
        h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: next.ack, stream: 0, payload: new Uint8Array(0) }, t);
      }
      // Let what is in flight drain.
      for (const x of acks) h.link.receiveFrame({ type: FrameType.ACK, flags: Flag.AGENT, tag, seq: 0, ack: x.ack, stream: 0, payload: new Uint8Array(0) }, Math.max(t, x.at));
    };
    flow(0, 500, () => 100);
    assert.equal(h.link.cwnd, 32, 'slow start reaches the window within a few round trips when RTT stays flat');
    // Now every frame waits behind the ones in flight (a deep buffer draining 1 frame / 20 ms).
    flow(10_000, 40_000, (n) => 100 + 20 * n);
    assert.ok(h.link.cwnd >= 4, 'never below the floor that keeps fast retransmit working');
  });
});

describe('tunnel ARQ: keepalive', { timeout: 120_000 }, () => {
  test('probes after idle, declares the link down after maxMissed, recovers and resends at once', () => {
    const { h, a } = established();
    h.outbox.push(msg(0));
    const lost = drain(h, 0); // never delivered
    assert.equal(lost.length, 1);
    const probes: number[] = [];
    let now = 0;
    while (now < 6500) {
      now = h.link.nextDeadline()!;
      h.link.poll(now);
      for (const f of drain(h, now)) if (f.type === FrameType.ACK && f.flags & Flag.POLL) probes.push(now);
    }
    assert.deepEqual(probes.slice(0, 5), [2000, 3000, 4000, 5000, 6000]);
    assert.deepEqual(h.downs, [6000]);
    assert.equal(h.link.alive, false);
    assert.ok(h.link.established, 'the session survives a dead link');
    // The agent answers a probe: the link is up again (same session).
    a.link.receiveFrame(drain(h, now).concat({ type: FrameType.ACK, flags: Flag.POLL, tag: sessionTag(0x1111, 0x2222), seq: 0, ack: 0, stream: 0, payload: new Uint8Array(0) })[0], now);
    for (const f of drain(a, now)) h.link.receiveFrame(f, now + 1);
    assert.equal(h.link.alive, true);
    assert.deepEqual(h.ups.map((u) => u.newSession), [true, false]);
    const re = drain(h, now + 1).filter((f) => f.type === FrameType.DATA);
    assert.equal(re.length, 1, 'outstanding data is resent on recovery, not after the backed-off RTO');
  });

  test('a probe is answered at once with an ACK', () => {
    const { h, a } = established();
    a.link.receiveFrame({ type: FrameType.ACK, flags: Flag.POLL, tag: sessionTag(0x1111, 0x2222), seq: 0, ack: 0, stream: 0, payload: new Uint8Array(0) }, 5);
    const out = drain(a, 5);
    assert.equal(out.length, 1);
    assert.equal(out[0].type, FrameType.ACK);
    assert.equal(out[0].flags & Flag.POLL, 0);
    void h;
  });
});

describe('tunnel ARQ: delayed ACK and adaptive payload', { timeout: 120_000 }, () => {
  test('one in-order frame is acked after ackDelayMs, two at once', () => {
    const { h, a } = established();
    h.outbox.push(msg(0));
    for (const f of drain(h, 100)) a.link.receiveFrame(f, 100);
    assert.equal(drain(a, 100).length, 0);
    assert.equal(a.link.nextDeadline(), 110);
    a.link.poll(110);
    assert.equal(drain(a, 110).length, 1);
    h.outbox.push(msg(1), msg(2));
    for (const f of drain(h, 200)) a.link.receiveFrame(f, 200);
    assert.equal(drain(a, 200).length, 1);
  });

  test('payload limit starts below the maximum, reaches it on a clean link, shrinks on loss', () => {
    const h = mk('host', 0x1111, { adaptivePayload: true, window: 32 });
    const a = mk('agent', 0x2222, { adaptivePayload: true, window: 32 });
    h.link.start(0);
    a.link.start(0);
    run(h, a, () => h.link.established && a.link.established);
    const start = h.link.payloadLimit();
    assert.ok(start > 200 && start < 400, `start ${start}`);
    for (let i = 0; i < 300; i++) h.outbox.push(msg(i));
    run(h, a, () => a.delivered.length === 300 && h.link.windowUsed === 0);
    assert.equal(h.link.payloadLimit(), 1024);
    let k = 0;
    for (let i = 0; i < 300; i++) h.outbox.push(msg(i));
    run(h, a, () => a.delivered.length === 600 && h.link.windowUsed === 0, { now: 1000, drop: (f, dir) => dir === 'h2a' && f.type === FrameType.DATA && k++ % 3 === 0 });
    assert.ok(h.link.payloadLimit() < 400, `after loss ${h.link.payloadLimit()}`);
  });
});
