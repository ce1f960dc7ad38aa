/**
 * A hostile agent's HELLO (attack-s21), on the sans-I/O host endpoint with raw bytes: the
 * agent's side is crafted frame by frame, nothing of it is a real endpoint. max_payload
 * below 64 gets no session, one above 16384 is read as 16384, 64 is honoured, and a
 * HELLO inside the session announcing another max_payload changes nothing (spec 5.1).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  Flag,
  FrameDecoder,
  FrameType,
  HelloFlag,
  MAX_LARGE_PAYLOAD,
  PROTOCOL_VERSION,
  TunnelEndpoint,
  encodeFrame,
  encodeHello,
  encodeU32,
  type Frame,
} from '../../src/protocol/tunnel/index.js';

const AGENT_BOOT = 0x0a0b0c0d;

interface Rig {
  host: TunnelEndpoint;
  /** Frames the host sent, decoded as an agent announcing 16384 would. */
  frames: Frame[];
  hello(maxPayload: number, bootId?: number): void;
  send(f: Omit<Frame, 'flags'>): void;
}

function rig(): Rig {
  const dec = new FrameDecoder(MAX_LARGE_PAYLOAD);
  const frames: Frame[] = [];
  let now = 0;
  const host = new TunnelEndpoint({
    role: 'host',
    maxPayload: MAX_LARGE_PAYLOAD,
    write: (b) => {
      frames.push(...dec.decode(b));
      return true;
    },
  });
  host.start(now);
  const send = (f: Omit<Frame, 'flags'>): void => host.receive(encodeFrame({ ...f, flags: Flag.AGENT }, true), ++now);
  return {
    host,
    frames,
    send,
    hello: (maxPayload, bootId = AGENT_BOOT) =>
      send({
        type: FrameType.HELLO,
        tag: 0,
        seq: 0,
        ack: 0,
        stream: 0,
        payload: encodeHello({ version: PROTOCOL_VERSION, role: 1, flags: HelloFlag.UP, window: 128, bootId, peerBootId: host.bootId, maxPayload }),
      }),
  };
}

/** Opens a stream on the established host, grants it 1 MiB, writes 256 KiB: the largest DATA payload the host sent. */
function largestData(r: Rig): number {
  const s = r.host.openStream(22, 100);
  const open = r.frames.find((f) => f.type === FrameType.OPEN);
  assert.ok(open, 'the host sent its OPEN');
  r.send({ type: FrameType.OPEN_OK, tag: open.tag, seq: 0, ack: open.seq + 1, stream: s.id, payload: encodeU32(1 << 20) });
  s.write(new Uint8Array(256 * 1024).fill(0x41), 200);
  r.host.poll(300);
  const data = r.frames.filter((f) => f.type === FrameType.DATA);
  assert.ok(data.length > 0, 'the host sent data');
  return Math.max(...data.map((f) => f.payload.length));
}

describe('tunnel host against a hostile agent HELLO', { timeout: 30_000 }, () => {
  test('max_payload 0 or 63: no session', () => {
    for (const mp of [0, 63]) {
      const r = rig();
      r.hello(mp);
      assert.notEqual(r.host.state, 'up', `max_payload ${mp}`);
      assert.equal(r.host.stats().link.badHello, 1, `max_payload ${mp} counted as a bad HELLO`);
    }
  });

  test('max_payload 65535 is read as 16384; 64 is honoured, 1024 too', () => {
    for (const [mp, cap] of [
      [65535, MAX_LARGE_PAYLOAD],
      [64, 64],
      [1024, 1024],
    ] as const) {
      const r = rig();
      r.hello(mp);
      assert.equal(r.host.state, 'up', `max_payload ${mp}: established`);
      const biggest = largestData(r);
      assert.ok(biggest <= cap, `max_payload ${mp}: largest DATA ${biggest} > ${cap}`);
      if (mp === 65535) assert.ok(biggest > 1024, `max_payload ${mp}: large frames used (largest ${biggest})`);
    }
  });

  test('a HELLO inside the session announcing another max_payload changes nothing; a storm of new boot ids resets, never grows anything', () => {
    const r = rig();
    r.hello(64);
    assert.equal(r.host.state, 'up');
    r.hello(16384); // same boot id: the session's announcement stays
    assert.ok(largestData(r) <= 64, 'still 64-byte frames');
    // New boot ids, each announcing something else: each one a new session, streams reset.
    for (let i = 1; i <= 1000; i++) r.hello(i % 2 ? 65535 : 0, AGENT_BOOT + i);
    assert.equal(r.host.streams.length, 0, 'the old session\'s streams are gone');
    const st = r.host.stats();
    assert.ok(st.link.peerRestarts >= 1 && st.link.sessions >= 2, `new sessions: ${st.link.sessions}, restarts ${st.link.peerRestarts}`);
    assert.ok(st.link.badHello >= 500, 'the zero announcements refused');
    assert.ok(st.mux.controlQueued <= 2 * 256 + 16, 'the control queue bounded');
  });
});
