/**
 * `GET /api/v1/ports?match=PATTERN` uses the one glob meaning (src/util/glob.ts): with
 * `*`/`?` the whole name, UUID or `NAME:LABEL` in any case, else a substring in any
 * case; a pattern that made the old backtracking RegExp run for 85 s answers at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { adminRoutes } from '../../src/admin/routes.js';
import type { PortView, StatusView } from '../../src/admin/views.js';
import { createLogger } from '../../src/logging/logger.js';
import type { AdminApiError } from '../../src/admin/admin-server.js';

test('list pattern: glob or substring in any case; the longest names kept (256) against *a*a*a*c', (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const registry = new Registry(new ConsoleStore(db, { start: 30000, end: 30010 }));
  const logger = createLogger({ silent: true });
  registry.register('esxi', '421a5b7709c38e219f00aa105c2e7d01', 'com2', 'WEB01');
  registry.register('esxi', '0'.repeat(31) + '1', '', 'db01');
  registry.register('esxi', '0'.repeat(31) + '2', '', 'a'.repeat(250));
  registry.register('esxi', '0'.repeat(31) + '3', '', 'a'.repeat(255) + 'c');
  // Longer names are cut where they enter (src/util/text.ts truncateText): 1,024 characters are kept as 256.
  registry.register('esxi', '0'.repeat(31) + '4', '', 'b'.repeat(1023) + 'c');
  const routes = adminRoutes({
    registry,
    vmotion: new VmotionCoordinator({ timeoutMs: 1000 }, logger),
    logger,
    tlsPortOf: () => null,
    status: () => ({}) as StatusView,
  });
  const ports = routes.find((r) => r.method === 'GET' && r.path === '/api/v1/ports')!;
  const names = (match: string) =>
    (ports.handle(new URL(`http://127.0.0.1/api/v1/ports?match=${encodeURIComponent(match)}`)) as PortView[]).map((p) =>
      p.name!.length > 20 ? `${p.name!.slice(0, 3)}…(${p.name!.length})` : p.name,
    );

  assert.deepEqual(names('web*'), ['WEB01'], 'a glob in any case');
  assert.deepEqual(names('w?b01:COM2'), ['WEB01'], 'NAME:LABEL, any case');
  assert.deepEqual(names('web'), ['WEB01'], 'no wildcard: a substring');
  assert.deepEqual(names('421A5B77-*'), ['WEB01'], 'the UUID as shown');
  assert.deepEqual(names('DB'), ['db01']);
  assert.deepEqual(names('*a*a*a*c'), ['aaa…(256)'], 'finishes, and only the name ending in c matches');
  assert.deepEqual(names('b*'), ['bbb…(256)'], 'kept as 256 characters');
  assert.deepEqual(names('*…'), ['bbb…(256)'], 'ending in the marker');
  assert.deepEqual(names('.*'), [], 'regex syntax is literal');
});

test('list pattern: at most 256 characters; one that needs more than its budget is refused (400), not run to the end', (t) => {
  const db = openDatabase(':memory:');
  t.after(() => closeDatabase(db));
  const registry = new Registry(new ConsoleStore(db, { start: 30000, end: 30100 }));
  const logger = createLogger({ silent: true });
  for (let i = 0; i < 50; i++) registry.register('esxi', i.toString(16).padStart(32, '0'), '', 'a'.repeat(250) + i);
  const routes = adminRoutes({
    registry,
    vmotion: new VmotionCoordinator({ timeoutMs: 1000 }, logger),
    logger,
    tlsPortOf: () => null,
    status: () => ({}) as StatusView,
    patternSteps: 20_000,
  });
  const ports = routes.find((r) => r.method === 'GET' && r.path === '/api/v1/ports')!;
  const list = (match: string) => ports.handle(new URL(`http://127.0.0.1/api/v1/ports?match=${encodeURIComponent(match)}`)) as PortView[];
  const refusal = (match: string) => {
    try {
      list(match);
    } catch (err) {
      return err as AdminApiError;
    }
    return assert.fail(`${match.slice(0, 20)}… was answered`);
  };
  const long = refusal('a'.repeat(257));
  assert.deepEqual([long.status, long.code], [400, 'VSPC_PATTERN_TOO_LONG']);
  const costly = refusal(`*${'a'.repeat(200)}b*`);
  assert.deepEqual([costly.status, costly.code], [400, 'VSPC_PATTERN_TOO_EXPENSIVE']);
  assert.match(costly.message, /pattern too expensive/);
  assert.equal(list('*a7').length, 1, 'a cheap pattern is answered');
  assert.equal(list('a'.repeat(256)).length, 0, '256 characters are taken');
});
