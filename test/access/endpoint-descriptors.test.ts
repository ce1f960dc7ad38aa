/**
 * F5: the endpoints of the other access methods (a raw TCP port, a unix socket, a pty:
 * src/access/common/endpoints.ts) and the connections a tunnel forward accepts go
 * through the descriptor budget too: an endpoint that does not fit is not made, the
 * console shows "file descriptors exhausted", and it is made when descriptors are
 * freed; a forward's connection the budget refuses is closed before a stream opens.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { ConsoleEndpoints, type EndpointDriver } from '../../src/access/common/endpoints.js';
import { ForwardListener } from '../../src/access/tunnel/forwards.js';
import { DESCRIPTORS_EXHAUSTED } from '../../src/domain/descriptors.js';
import { FakeDescriptorBudget } from '../support/fake-descriptors.js';
import { LogCapture } from '../support/log-capture.js';
import { reservePortRange } from '../support/ports.js';

test('console endpoints: each through the budget; one that does not fit shows why and is made when descriptors are freed; all given back', async (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const range = await reservePortRange(4);
  const registry = new Registry(new ConsoleStore(db, { start: range.start, end: range.start + 3 }));
  const budget = new FakeDescriptorBudget(1);
  const open = new Set<string>();
  let opened: () => void = () => undefined;
  const nextOpen = () => new Promise<void>((resolve) => (opened = resolve));
  const driver: EndpointDriver<string, string> = {
    method: 'raw',
    groupOf: () => null,
    specs: (hubs: readonly ConsoleHub[]) => new Map(hubs.map((h) => [h, h.displayName])),
    keyOf: (spec) => spec,
    open: async (_hub, spec) => {
      open.add(spec);
      opened();
      return spec;
    },
    close: async (handle) => void open.delete(handle),
  };
  const endpoints = new ConsoleEndpoints(registry, new LogCapture({ level: 'debug' }).logger, driver, { bindRetryMs: 60_000, descriptors: budget });
  t.after(() => endpoints.close());

  let wait = nextOpen();
  const a = registry.register('config', 'a', '', 'a').hub;
  const b = registry.register('config', 'b', '', 'b').hub;
  await wait;
  assert.deepEqual([...open], ['a']);
  assert.equal(a.accessErrors.get('raw'), undefined);
  assert.equal(b.accessErrors.get('raw'), DESCRIPTORS_EXHAUSTED, 'shown on the console (vspc-admin list, show)');
  assert.equal(endpoints.state(b)?.error, DESCRIPTORS_EXHAUSTED);
  assert.equal(budget.waiting, 1);

  wait = nextOpen();
  budget.give(1);
  await wait;
  await Promise.resolve();
  assert.deepEqual([...open].sort(), ['a', 'b']);
  assert.equal(b.accessErrors.get('raw'), undefined);
  assert.equal(budget.held, 2);

  await endpoints.close();
  assert.deepEqual([...open], []);
  assert.equal(budget.held, 0, 'every descriptor given back');
});

test('tunnel forward: a connection the budget refuses is closed before anything is opened for it', async (t) => {
  let allow = false;
  const handed: net.Socket[] = [];
  const f = new ForwardListener(
    { tcp: { host: '127.0.0.1', port: 0 } },
    (s) => {
      handed.push(s);
      s.end('hello');
    },
    new LogCapture({ level: 'debug' }).logger,
    60_000,
    () => allow,
  );
  await f.start();
  t.after(() => f.close());
  const port = Number(f.address!.split(':').at(-1));
  const talk = () =>
    new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('error', () => undefined);
      s.on('close', () => resolve(got));
    });
  assert.equal(await talk(), '', 'refused: closed with nothing said');
  assert.equal(handed.length, 0);
  assert.equal(f.accepted, 0);
  allow = true;
  assert.equal(await talk(), 'hello');
  assert.equal(f.accepted, 1);
});
