/**
 * Console endpoints (src/access/common/endpoints.ts) follow the registry incrementally:
 * a console added, renamed, moved or forgotten has only its own group's endpoints
 * computed again (the consoles whose file names depend on each other), never every
 * console's; what results is what computing every console afresh gives. A reload
 * (`schedule()`) still computes them all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { Registry } from '../../src/domain/registry.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { ConsoleEndpoints, type EndpointDriver } from '../../src/access/common/endpoints.js';
import { LogCapture } from '../support/log-capture.js';

/** Like assignFileNames: consoles sharing a name share a group; the oldest record gets the name, the others NAME~KEY. */
function specsOf(hubs: readonly ConsoleHub[]): Map<ConsoleHub, string | null> {
  const out = new Map<ConsoleHub, string | null>();
  const byName = new Map<string, ConsoleHub[]>();
  for (const h of hubs) {
    out.set(h, null);
    const n = h.identity.name?.toLowerCase();
    if (n) byName.set(n, [...(byName.get(n) ?? []), h]);
  }
  for (const [n, list] of byName) {
    list.sort((a, b) => a.identity.id - b.identity.id);
    list.forEach((h, i) => out.set(h, i === 0 ? n : `${n}~${h.identity.key}`));
  }
  return out;
}

test('console endpoints: a change computes its group only, and gives what computing every console gives', async (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const registry = new Registry(new ConsoleStore(db, { start: 30000, end: 30999 }));
  let passes: number[] = [];
  const driver: EndpointDriver<string, string> = {
    method: 'unix',
    groupOf: (h) => h.identity.name?.toLowerCase() ?? null,
    specs: (hubs) => {
      passes.push(hubs.length);
      return specsOf(hubs);
    },
    keyOf: (s) => s,
    open: async (_hub, spec) => spec,
    close: async () => undefined,
  };
  const endpoints = new ConsoleEndpoints(registry, new LogCapture({ level: 'debug' }).logger, driver, { bindRetryMs: 60_000 });
  t.after(() => endpoints.close());
  const check = (what: string) => {
    for (const [hub, spec] of specsOf(registry.all())) assert.equal(endpoints.state(hub)?.spec ?? null, spec, `${what}: ${hub.displayName}`);
  };

  const hubs: ConsoleHub[] = [];
  for (let i = 0; i < 60; i++) {
    passes = [];
    hubs.push(registry.register('config', `c${i}`, '', i % 10 === 0 ? 'web' : `vm${i}`).hub);
    await tick();
    // The new console's group only: itself, or the webs so far.
    assert.deepEqual(passes, [i % 10 === 0 ? i / 10 + 1 : 1], `registration ${i}`);
  }
  check('after the registrations');
  assert.equal(endpoints.specsComputed, 60 + (1 + 2 + 3 + 4 + 5 + 6) - 6);

  // Several changes in one tick share one pass.
  passes = [];
  registry.rename(hubs[1], 'web');
  registry.rename(hubs[2], 'vm1');
  await tick();
  assert.deepEqual(passes, [8], 'vm1 renamed web (now 7 webs; vm1 left empty) and vm2 renamed vm1 (vm2 left empty; vm1 is itself)');
  check('after renames');
  assert.equal(endpoints.state(hubs[1])?.spec, 'web~c1');
  assert.equal(endpoints.state(hubs[2])?.spec, 'vm1');

  // Forgetting the oldest web: the others of its group are computed again; c1 is now the oldest.
  passes = [];
  registry.forget(hubs[0]);
  assert.equal(endpoints.state(hubs[0]), null, 'removed at once');
  await tick();
  assert.deepEqual(passes, [6]);
  check('after a forget');
  assert.equal(endpoints.state(hubs[1])?.spec, 'web');

  // A reload computes every console.
  passes = [];
  endpoints.schedule();
  await tick();
  assert.deepEqual(passes, [59]);
  check('after a reload');
});
