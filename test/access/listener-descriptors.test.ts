/**
 * F5: a console's client-port listener is a descriptor vspc opens for a console, so it
 * goes through the descriptor budget (src/domain/descriptors.ts): one that does not fit
 * is not bound, the console shows "file descriptors exhausted", and it is bound when
 * descriptors are free again; a listener closed gives its descriptor back. Nothing is
 * bound before start(): vspc binds its own listeners first; settled() resolves once every
 * bind under way has listened or failed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { TelnetListeners } from '../../src/access/telnet/listeners.js';
import { DESCRIPTORS_EXHAUSTED } from '../../src/domain/descriptors.js';
import { FakeDescriptorBudget } from '../support/fake-descriptors.js';
import { LogCapture } from '../support/log-capture.js';
import { reservePortRange } from '../support/ports.js';

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

test('listeners: bound only after start(), through the budget; deferred ones show why and are bound when descriptors come back', async (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const range = await reservePortRange(4);
  const registry = new Registry(new ConsoleStore(db, { start: range.start, end: range.start + 3 }));
  const budget = new FakeDescriptorBudget(1);
  const listeners = new TelnetListeners(registry, new LogCapture({ level: 'debug' }).logger, {
    host: '127.0.0.1',
    tlsPortOffset: 0,
    bindRetryMs: 60_000,
    maxQueuedBytes: 1 << 20,
    maxSubnegotiation: 4096,
    closeGraceMs: 100,
    lockWaitMs: 100,
    idleTimeoutMs: 0,
    descriptors: budget,
  });
  t.after(() => listeners.close());
  const a = registry.register('config', 'a', '', 'a').hub;
  const b = registry.register('config', 'b', '', 'b').hub;
  assert.deepEqual(budget.asked, [], 'nothing bound before start()');
  assert.equal(await listening(a.identity.tcpPort), false);

  listeners.start();
  assert.deepEqual(budget.asked, ['listener:a', 'listener:b']);
  await listeners.settled();
  assert.equal(await listening(a.identity.tcpPort), true, 'bound once settled() resolves (vspc logs "started" only then)');
  assert.equal(a.listenError, null);
  assert.equal(b.listenError, DESCRIPTORS_EXHAUSTED, 'shown on the console (vspc-admin list)');
  assert.equal(await listening(b.identity.tcpPort), false);
  assert.equal(budget.waiting, 1, 'waiting for descriptors');

  // A descriptor comes back: b is bound.
  budget.give(1);
  await listeners.settled();
  assert.equal(await listening(b.identity.tcpPort), true);
  assert.equal(b.listenError, null);
  assert.equal(budget.held, 2);

  // Forgetting a console gives its listener's descriptor back.
  registry.forget(a);
  assert.equal(budget.held, 1);
  // A console forgotten while it waits stops waiting.
  const c = registry.register('config', 'c', '', 'c').hub;
  assert.equal(c.listenError, null);
  const d = registry.register('config', 'd', '', 'd').hub;
  assert.equal(d.listenError, DESCRIPTORS_EXHAUSTED);
  assert.equal(budget.waiting, 1);
  registry.forget(d);
  assert.equal(budget.waiting, 0);
  listeners.close();
  assert.equal(budget.held, 0, 'every descriptor given back at close');
});
