/**
 * A hostile guest restarting its tunnel agent in a loop (a HELLO with a fresh boot id
 * every few ms) must not turn each restart into log lines: the host end of the link
 * (access/tunnel/link.ts) writes "guest agent restarted" and "link up: new session"
 * once per interval each, then one line with the count of the others.
 *
 * No console, no process: the link is attached to a stand-in hub whose line is an
 * agent TunnelEndpoint in this process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { TunnelLink } from '../../src/access/tunnel/link.js';
import { encodeFrame, encodeHello, FrameType, TunnelEndpoint } from '../../src/protocol/tunnel/index.js';
import { LogCapture } from '../support/log-capture.js';
import { waitUntil } from '../support/server.js';


test('a guest agent restarting in a loop: one line per interval for each kind, then the count of the others', async (t) => {
  const logs = new LogCapture();
  const now = () => performance.now();
  let link: TunnelLink | null = null;
  let over = false;
  // The agent's end of the line; bytes cross in a later turn (no re-entry).
  const agent = new TunnelEndpoint({
    role: 'agent',
    write: (bytes) => {
      const copy = Buffer.from(bytes);
      setImmediate(() => !over && link?.deliver(copy));
      return true;
    },
    handlers: {},
  });
  const hub = {
    displayName: 'guest1',
    dedicatedTo: null,
    addClient: () => ({ granted: true, mode: 'exclusive', displaced: [] }),
    removeClient: () => undefined,
    modeOf: () => 'exclusive',
    fromClient: (_c: unknown, data: Buffer) => {
      const copy = Buffer.from(data);
      setImmediate(() => !over && agent.receive(copy, now()));
    },
  } as unknown as ConsoleHub;
  link = new TunnelLink({ name: 't1', clientId: 1, logger: logs.logger, restartLogIntervalMs: 600_000 });
  t.after(() => {
    over = true;
    link?.close('test over');
    agent.destroy();
  });
  agent.start(now());
  link.attach(hub);
  await waitUntil(() => link!.state === 'up', 5000, 'the link up');
  // The storm: HELLOs with fresh boot ids, as a guest restarting its agent in a loop would send.
  const storms = 200;
  // Each names the host's current boot id, so that every other one establishes a session the next one restarts.
  for (let i = 0; i < storms; i++) {
    const hostBootId = parseInt(link.status().hostBootId, 16) >>> 0;
    const hello = encodeHello({ version: 1, role: 1, flags: 0, window: 128, bootId: (0x1000 + i) >>> 0, peerBootId: hostBootId, maxPayload: 1024 });
    link.deliver(Buffer.from(encodeFrame({ type: FrameType.HELLO, flags: 4, tag: 0, seq: 0, ack: 0, stream: 0, payload: hello })));
  }
  const restarts = link.status().peerRestarts;
  assert.ok(restarts >= storms / 2 - 1, `the restarts seen: ${restarts}`);
  const count = (m: string) => logs.filter((l) => l.message === m).length;
  assert.equal(count('tunnel guest agent restarted: its streams were reset'), 1, `one line for ${restarts} restarts`);
  assert.equal(count('tunnel link up: new session'), 1, 'the first session only');
  over = true;
  link.close('test over');
  // The others in one line (domain/log-budget.ts), at close at the latest.
  const summary = logs.find((l) => l.message === 'log lines suppressed for this endpoint' && (l.messages as Record<string, number>)?.['tunnel link up: new session'] !== undefined);
  const counted = (summary?.messages ?? {}) as Record<string, number>;
  assert.equal(counted['tunnel guest agent restarted: its streams were reset'], restarts - 1, JSON.stringify(summary));
  assert.ok(counted['tunnel link up: new session'] >= restarts - 1, 'the sessions counted too');
  assert.ok(logs.lines.length < 20, `${logs.lines.length} lines in all`);
});
