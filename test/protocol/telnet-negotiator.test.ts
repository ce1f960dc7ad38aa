import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  OptionNegotiator,
  policyFromLists,
  Q,
  type OptionPolicy,
  type Side,
} from '../../src/protocol/telnet/negotiator.js';
import { encodeNegotiation } from '../../src/protocol/telnet/encoder.js';
import { DO, DONT, WILL, WONT, type NegotiationVerb } from '../../src/protocol/telnet/constants.js';

const X = 1; // ECHO
const Y = 3; // SGA

/** One negotiator whose output is recorded as wire bytes, plus every callback. */
function single(policy: OptionPolicy = policyFromLists({})) {
  const sent: number[][] = [];
  const changes: Array<[Side, number, boolean]> = [];
  const refused: Array<[Side, number]> = [];
  const anomalies: Array<[Side, number]> = [];
  const n = new OptionNegotiator(policy, {
    send: (verb, option) => sent.push([...encodeNegotiation(verb, option)]),
    change: (side, option, enabled) => changes.push([side, option, enabled]),
    refused: (side, option) => refused.push([side, option]),
    anomaly: (side, option) => anomalies.push([side, option]),
  });
  /** Returns and clears what was sent since the last call. */
  const take = () => sent.splice(0, sent.length);
  return { n, sent, take, changes, refused, anomalies };
}

describe('OptionNegotiator: answering the peer', () => {
  test('peer WILL accepted: DO once, change(him, opt, true)', () => {
    const s = single(policyFromLists({ him: [X] }));
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), [[255, 253, 1]]);
    assert.deepEqual(s.changes, [['him', X, true]]);
    assert.equal(s.n.state('him', X), Q.Yes);
    assert.equal(s.n.isEnabled('him', X), true);
    assert.equal(s.n.isEnabled('us', X), false);
  });

  test('peer WILL refused by policy: DONT, no change', () => {
    const s = single(policyFromLists({ us: [X] })); // accepts X only on our side
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), [[255, 254, 1]]);
    assert.deepEqual(s.changes, []);
    assert.equal(s.n.state('him', X), Q.No);
    assert.deepEqual(s.refused, [], 'refusing a peer request is not "our request refused"');
  });

  test('peer DO accepted: WILL, change(us, opt, true)', () => {
    const s = single(policyFromLists({ us: [Y] }));
    s.n.receive(DO, Y);
    assert.deepEqual(s.take(), [[255, 251, 3]]);
    assert.deepEqual(s.changes, [['us', Y, true]]);
    assert.equal(s.n.state('us', Y), Q.Yes);
  });

  test('peer DO refused: WONT', () => {
    const s = single(policyFromLists({ him: [Y] }));
    s.n.receive(DO, Y);
    assert.deepEqual(s.take(), [[255, 252, 3]]);
    assert.deepEqual(s.changes, []);
    assert.equal(s.n.state('us', Y), Q.No);
  });

  test('repeated WILL while YES gets no answer (no loop)', () => {
    const s = single(policyFromLists({ him: [X] }));
    s.n.receive(WILL, X);
    s.take();
    for (let i = 0; i < 5; i++) s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.deepEqual(s.changes, [['him', X, true]]);
  });

  test('repeated DO while YES gets no answer', () => {
    const s = single(policyFromLists({ us: [X] }));
    s.n.receive(DO, X);
    assert.deepEqual(s.take(), [[255, 251, 1]]);
    s.n.receive(DO, X);
    s.n.receive(DO, X);
    assert.deepEqual(s.take(), []);
  });

  test('WONT / DONT while NO get no answer', () => {
    const s = single(policyFromLists({ us: [X], him: [X] }));
    s.n.receive(WONT, X);
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), []);
    assert.deepEqual(s.changes, []);
  });

  test('repeated refused WILL is refused each time (each is a fresh request from NO)', () => {
    const s = single(policyFromLists({}));
    s.n.receive(WILL, X);
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), [[255, 254, 1], [255, 254, 1]]);
  });

  test('peer disables from YES: WONT is acknowledged with DONT, change(false)', () => {
    const s = single(policyFromLists({ him: [X] }));
    s.n.receive(WILL, X);
    s.take();
    s.n.receive(WONT, X);
    assert.deepEqual(s.take(), [[255, 254, 1]]);
    assert.equal(s.n.state('him', X), Q.No);
    assert.deepEqual(s.changes, [['him', X, true], ['him', X, false]]);
  });

  test('peer DONT while our side is YES: WONT, change(us, false)', () => {
    const s = single(policyFromLists({ us: [X] }));
    s.n.receive(DO, X);
    s.take();
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), [[255, 252, 1]]);
    assert.equal(s.n.state('us', X), Q.No);
    assert.deepEqual(s.changes, [['us', X, true], ['us', X, false]]);
  });

  test('options are independent per option and per side', () => {
    const s = single(policyFromLists({ us: [X, Y], him: [X, Y] }));
    s.n.receive(WILL, X);
    s.n.receive(DO, Y);
    assert.deepEqual(s.take(), [[255, 253, 1], [255, 251, 3]]);
    assert.equal(s.n.state('him', X), Q.Yes);
    assert.equal(s.n.state('us', X), Q.No);
    assert.equal(s.n.state('us', Y), Q.Yes);
    assert.equal(s.n.state('him', Y), Q.No);
    assert.equal(s.n.state('him', 232), Q.No);
  });
});

describe('OptionNegotiator: our requests', () => {
  test('requestHim: DO, WANTYES; peer WILL → YES with no further send', () => {
    const s = single();
    s.n.requestHim(X, true);
    assert.deepEqual(s.take(), [[255, 253, 1]]);
    assert.equal(s.n.state('him', X), Q.WantYes);
    assert.deepEqual(s.changes, []);
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.Yes);
    assert.deepEqual(s.changes, [['him', X, true]]);
  });

  test('requestUs: WILL, WANTYES; peer DO → YES with no further send', () => {
    const s = single();
    s.n.requestUs(Y, true);
    assert.deepEqual(s.take(), [[255, 251, 3]]);
    assert.equal(s.n.state('us', Y), Q.WantYes);
    s.n.receive(DO, Y);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('us', Y), Q.Yes);
    assert.deepEqual(s.changes, [['us', Y, true]]);
  });

  test('requestHim refused: WONT → NO and refused(him) called, nothing sent', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.take();
    s.n.receive(WONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.No);
    assert.deepEqual(s.refused, [['him', X]]);
    assert.deepEqual(s.changes, []);
  });

  test('requestUs refused: DONT → NO and refused(us) called', () => {
    const s = single();
    s.n.requestUs(X, true);
    s.take();
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('us', X), Q.No);
    assert.deepEqual(s.refused, [['us', X]]);
  });

  test('our request does not depend on our policy (policy only answers the peer)', () => {
    const s = single(policyFromLists({}));
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    assert.equal(s.n.state('him', X), Q.Yes);
  });

  test('disable from YES: DONT, WANTNO (change false at once); WONT → NO silently', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    s.take();
    s.n.requestHim(X, false);
    assert.deepEqual(s.take(), [[255, 254, 1]]);
    assert.equal(s.n.state('him', X), Q.WantNo);
    assert.equal(s.n.isEnabled('him', X), false);
    s.n.receive(WONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.No);
    assert.deepEqual(s.changes, [['him', X, true], ['him', X, false]]);
  });

  test('disable our side from YES: WONT; DONT → NO', () => {
    const s = single(policyFromLists({ us: [X] }));
    s.n.receive(DO, X);
    s.take();
    s.n.requestUs(X, false);
    assert.deepEqual(s.take(), [[255, 252, 1]]);
    assert.equal(s.n.state('us', X), Q.WantNo);
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('us', X), Q.No);
  });

  test('redundant requests send nothing', () => {
    const s = single();
    s.n.requestHim(X, false); // already NO
    s.n.requestUs(X, false);
    assert.deepEqual(s.take(), []);
    s.n.requestHim(X, true);
    assert.deepEqual(s.take(), [[255, 253, 1]]);
    s.n.requestHim(X, true); // already WANTYES
    assert.deepEqual(s.take(), []);
    s.n.receive(WILL, X);
    s.n.requestHim(X, true); // already YES
    assert.deepEqual(s.take(), []);
  });

  test('queue: enable requested while WANTNO → after the WONT arrives, DO is sent', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    s.n.requestHim(X, false);
    assert.deepEqual(s.take(), [[255, 253, 1], [255, 254, 1]]);
    s.n.requestHim(X, true); // queued, nothing sent yet
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.WantNo);
    s.n.requestHim(X, true); // already queued: still nothing
    assert.deepEqual(s.take(), []);
    s.n.receive(WONT, X);
    assert.deepEqual(s.take(), [[255, 253, 1]]);
    assert.equal(s.n.state('him', X), Q.WantYes);
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.Yes);
  });

  test('queue: enable queued while WANTNO, then cancelled by a disable → WONT ends at NO, nothing sent', () => {
    const s = single();
    s.n.requestUs(X, true);
    s.n.receive(DO, X);
    s.n.requestUs(X, false);
    assert.deepEqual(s.take(), [[255, 251, 1], [255, 252, 1]]);
    s.n.requestUs(X, true);
    s.n.requestUs(X, false);
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('us', X), Q.No);
  });

  test('queue: disable while WANTYES → peer agrees → DONT sent (WANTNO) → WONT → NO', () => {
    const s = single();
    s.n.requestHim(X, true);
    assert.deepEqual(s.take(), [[255, 253, 1]]);
    s.n.requestHim(X, false); // queued opposite
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.WantYes);
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), [[255, 254, 1]]);
    assert.equal(s.n.state('him', X), Q.WantNo);
    s.n.receive(WONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.No);
  });

  test('queue: disable while WANTYES, peer refuses → NO, nothing sent', () => {
    const s = single();
    s.n.requestUs(X, true);
    s.take();
    s.n.requestUs(X, false);
    s.n.receive(DONT, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('us', X), Q.No);
  });

  test('queue: disable then re-enable while WANTYES cancels the queue → WILL → YES', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.take();
    s.n.requestHim(X, false);
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.Yes);
  });

  test('anomaly: DONT answered with WILL → NO, anomaly reported, nothing sent', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    s.n.requestHim(X, false);
    s.take();
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.No);
    assert.deepEqual(s.anomalies, [['him', X]]);
  });

  test('anomaly with enable queued: DONT answered with WILL → YES', () => {
    const s = single();
    s.n.requestHim(X, true);
    s.n.receive(WILL, X);
    s.n.requestHim(X, false);
    s.n.requestHim(X, true);
    s.take();
    s.n.receive(WILL, X);
    assert.deepEqual(s.take(), []);
    assert.equal(s.n.state('him', X), Q.Yes);
    assert.equal(s.anomalies.length, 1);
  });
});

describe('policyFromLists', () => {
  test('accepts exactly the listed options per side', () => {
    const p = policyFromLists({ us: [0, 3], him: [24] });
    assert.equal(p.acceptUs(0), true);
    assert.equal(p.acceptUs(3), true);
    assert.equal(p.acceptUs(24), false);
    assert.equal(p.acceptHim(24), true);
    assert.equal(p.acceptHim(0), false);
    const none = policyFromLists({});
    assert.equal(none.acceptUs(0), false);
    assert.equal(none.acceptHim(0), false);
  });
});

// ---------------------------------------------------------------------------
// Two negotiators back to back.

interface Msg {
  verb: NegotiationVerb;
  option: number;
}

/** A and B joined by two FIFO queues (one per direction, like a TCP connection). */
function pair(policyA: OptionPolicy, policyB: OptionPolicy) {
  const toB: Msg[] = [];
  const toA: Msg[] = [];
  let total = 0;
  const A = new OptionNegotiator(policyA, {
    send: (verb, option) => {
      total++;
      toB.push({ verb, option });
    },
  });
  const B = new OptionNegotiator(policyB, {
    send: (verb, option) => {
      total++;
      toA.push({ verb, option });
    },
  });
  const deliverToB = () => {
    const m = toB.shift();
    if (m) B.receive(m.verb, m.option);
    return m !== undefined;
  };
  const deliverToA = () => {
    const m = toA.shift();
    if (m) A.receive(m.verb, m.option);
    return m !== undefined;
  };
  /** Delivers until both queues are empty; returns the number of deliveries, or throws past `limit`. */
  const pump = (limit = 100, pick: () => boolean = () => toA.length === 0 || (toB.length > 0 && Math.random() < 0.5)) => {
    let steps = 0;
    while (toA.length + toB.length > 0) {
      if (++steps > limit) throw new Error(`negotiation did not quiesce within ${limit} deliveries`);
      if (pick() && toB.length > 0) deliverToB();
      else if (toA.length > 0) deliverToA();
      else deliverToB();
    }
    return steps;
  };
  return { A, B, toA, toB, deliverToA, deliverToB, pump, total: () => total };
}

function assertAgree(A: OptionNegotiator, B: OptionNegotiator, options: readonly number[]) {
  for (const o of options) {
    assert.equal(A.state('us', o), B.state('him', o), `A.us == B.him for option ${o}`);
    assert.equal(A.state('him', o), B.state('us', o), `A.him == B.us for option ${o}`);
    for (const q of [A.state('us', o), A.state('him', o)]) {
      assert.ok(q === Q.Yes || q === Q.No, `settled state for option ${o}`);
    }
  }
}

describe('OptionNegotiator: back to back', () => {
  test('A requests WILL X, B agrees: both YES after two messages', () => {
    const p = pair(policyFromLists({}), policyFromLists({ him: [X] }));
    p.A.requestUs(X, true);
    assert.deepEqual(p.toB, [{ verb: WILL, option: X }]);
    p.deliverToB();
    assert.deepEqual(p.toA, [{ verb: DO, option: X }]);
    p.deliverToA();
    assert.equal(p.toA.length + p.toB.length, 0);
    assert.equal(p.A.state('us', X), Q.Yes);
    assert.equal(p.B.state('him', X), Q.Yes);
    assert.equal(p.total(), 2);
  });

  test('both ask to enable at once (A WILL X, B DO X crossing): both YES, two messages total', () => {
    const p = pair(policyFromLists({ us: [X] }), policyFromLists({ him: [X] }));
    p.A.requestUs(X, true);
    p.B.requestHim(X, true);
    // Both requests are in flight before either is received.
    assert.deepEqual(p.toB, [{ verb: WILL, option: X }]);
    assert.deepEqual(p.toA, [{ verb: DO, option: X }]);
    p.deliverToB();
    p.deliverToA();
    assert.equal(p.toA.length + p.toB.length, 0, 'no answers to answers');
    assert.equal(p.A.state('us', X), Q.Yes);
    assert.equal(p.B.state('him', X), Q.Yes);
    assert.equal(p.total(), 2);
  });

  test('both ask at once, delivered in the other order: same result', () => {
    const p = pair(policyFromLists({ us: [X] }), policyFromLists({ him: [X] }));
    p.A.requestUs(X, true);
    p.B.requestHim(X, true);
    p.deliverToA();
    p.deliverToB();
    assert.equal(p.toA.length + p.toB.length, 0);
    assertAgree(p.A, p.B, [X]);
    assert.equal(p.A.state('us', X), Q.Yes);
  });

  test('both ask to enable their own side at once (WILL X both ways) and both accept: 4 messages, all YES', () => {
    const p = pair(policyFromLists({ him: [X] }), policyFromLists({ him: [X] }));
    p.A.requestUs(X, true);
    p.B.requestUs(X, true);
    const steps = p.pump(10);
    assert.ok(steps <= 4);
    assert.equal(p.total(), 4);
    assertAgree(p.A, p.B, [X]);
    assert.equal(p.A.state('us', X), Q.Yes);
    assert.equal(p.A.state('him', X), Q.Yes);
  });

  test('both ask at once, one side refusing: refused side NO, other YES, bounded', () => {
    const refusedA: Array<[Side, number]> = [];
    const toB: Msg[] = [];
    const toA: Msg[] = [];
    // A accepts B's WILL X; B refuses A's WILL X.
    const A = new OptionNegotiator(policyFromLists({ him: [X] }), {
      send: (verb, option) => toB.push({ verb, option }),
      refused: (side, option) => refusedA.push([side, option]),
    });
    const B = new OptionNegotiator(policyFromLists({}), { send: (verb, option) => toA.push({ verb, option }) });
    A.requestUs(X, true);
    B.requestUs(X, true);
    let steps = 0;
    while (toA.length + toB.length > 0 && steps < 20) {
      steps++;
      const a = toA.shift();
      if (a) A.receive(a.verb, a.option);
      const b = toB.shift();
      if (b) B.receive(b.verb, b.option);
    }
    assert.equal(toA.length + toB.length, 0);
    assert.ok(steps <= 3, `steps ${steps}`);
    assertAgree(A, B, [X]);
    assert.equal(A.state('us', X), Q.No);
    assert.equal(A.state('him', X), Q.Yes);
    assert.deepEqual(refusedA, [['us', X]]);
  });

  test('A asks DO X while B refuses: A gets refused, both NO', () => {
    const p = pair(policyFromLists({}), policyFromLists({}));
    p.A.requestHim(X, true);
    const steps = p.pump(10);
    assert.equal(steps, 2);
    assertAgree(p.A, p.B, [X]);
    assert.equal(p.A.state('him', X), Q.No);
  });

  test('A disables while B re-enables crossing: ends agreed and quiet', () => {
    const p = pair(policyFromLists({ us: [X], him: [X] }), policyFromLists({ us: [X], him: [X] }));
    p.A.requestHim(X, true);
    p.pump(10);
    assert.equal(p.A.state('him', X), Q.Yes);
    p.A.requestHim(X, false); // DONT in flight
    p.B.requestUs(X, false); // WONT in flight
    p.B.requestUs(X, true); // queued on B
    const steps = p.pump(20);
    assert.ok(steps <= 6, `steps ${steps}`);
    assertAgree(p.A, p.B, [X]);
  });

  test('hostile peer answering everything with the opposite: still terminates, nothing enabled', () => {
    const opposite: Record<number, NegotiationVerb> = { [WILL]: DONT, [DONT]: WILL, [DO]: WONT, [WONT]: DO };
    const inbox: Msg[] = [];
    let sent = 0;
    const refused: Array<[Side, number]> = [];
    const A = new OptionNegotiator(policyFromLists({ us: [X, Y], him: [X, Y] }), {
      send: (verb, option) => {
        sent++;
        // The hostile peer replies to every message with the opposite verb.
        inbox.push({ verb: opposite[verb], option });
      },
      refused: (side, option) => refused.push([side, option]),
    });
    A.requestUs(X, true);
    A.requestHim(X, true);
    A.requestHim(Y, true);
    A.requestHim(Y, false);
    A.requestUs(Y, true);
    let steps = 0;
    while (inbox.length > 0) {
      assert.ok(++steps <= 50, 'no endless exchange');
      const m = inbox.shift()!;
      A.receive(m.verb, m.option);
    }
    assert.ok(sent <= 4, `sent ${sent}`);
    for (const o of [X, Y]) {
      assert.equal(A.state('us', o), Q.No);
      assert.equal(A.state('him', o), Q.No);
    }
    assert.ok(refused.length >= 3);
  });

  test('echoing peer (replies with the same verb) terminates', () => {
    const inbox: Msg[] = [];
    let sent = 0;
    const A = new OptionNegotiator(policyFromLists({ us: [X], him: [X] }), {
      send: (verb, option) => {
        sent++;
        inbox.push({ verb, option });
      },
    });
    A.requestHim(X, true);
    A.requestUs(Y, true);
    let steps = 0;
    while (inbox.length > 0) {
      assert.ok(++steps <= 50, 'no endless exchange');
      const m = inbox.shift()!;
      A.receive(m.verb, m.option);
    }
    assert.ok(sent <= 6, `sent ${sent}`);
  });

  test('peer that repeats WILL after every message we send: we stop answering once YES', () => {
    const inbox: Msg[] = [];
    let sent = 0;
    const A = new OptionNegotiator(policyFromLists({ him: [X] }), {
      send: () => {
        sent++;
        inbox.push({ verb: WILL, option: X }, { verb: WILL, option: X });
      },
    });
    A.receive(WILL, X);
    let steps = 0;
    while (inbox.length > 0) {
      assert.ok(++steps <= 10);
      const m = inbox.shift()!;
      A.receive(m.verb, m.option);
    }
    assert.equal(sent, 1);
    assert.equal(A.state('him', X), Q.Yes);
  });
});

describe('OptionNegotiator: property', () => {
  const OPTIONS = [0, 1, 3, 24];
  type Action =
    | { kind: 'request'; who: 'A' | 'B'; side: Side; option: number; enable: boolean }
    | { kind: 'deliver'; to: 'A' | 'B' };

  const actionArb: fc.Arbitrary<Action> = fc.oneof(
    fc.record({
      kind: fc.constant('request' as const),
      who: fc.constantFrom('A' as const, 'B' as const),
      side: fc.constantFrom<Side>('us', 'him'),
      option: fc.constantFrom(...OPTIONS),
      enable: fc.boolean(),
    }),
    fc.record({ kind: fc.constant('deliver' as const), to: fc.constantFrom('A' as const, 'B' as const) }),
  );
  const policyArb = fc
    .record({ us: fc.subarray(OPTIONS), him: fc.subarray(OPTIONS) })
    .map((l) => policyFromLists(l));

  test('random requests and interleavings always quiesce, and both ends agree', () => {
    fc.assert(
      fc.property(
        policyArb,
        policyArb,
        fc.array(actionArb, { maxLength: 60 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 64 }),
        (pa, pb, actions, picks) => {
          const p = pair(pa, pb);
          let requests = 0;
          for (const a of actions) {
            if (a.kind === 'deliver') {
              if (a.to === 'A') p.deliverToA();
              else p.deliverToB();
            } else {
              requests++;
              const n = a.who === 'A' ? p.A : p.B;
              if (a.side === 'us') n.requestUs(a.option, a.enable);
              else n.requestHim(a.option, a.enable);
            }
          }
          let k = 0;
          // Each request may cost a handful of messages; anything beyond is a loop.
          const limit = 8 * requests + 8;
          p.pump(limit, () => picks[k++ % picks.length]);
          assert.equal(p.toA.length + p.toB.length, 0);
          assert.ok(p.total() <= 4 * requests, `total ${p.total()} for ${requests} requests`);
          assertAgree(p.A, p.B, OPTIONS);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
