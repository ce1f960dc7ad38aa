/**
 * An endpoint's logger (sources/common/endpoint.ts): made on its first line, and its
 * `console` field follows the console's name (a rename) like a VM connection's fields
 * do, instead of the name at the first line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { Logger } from '../../src/domain/logger.js';
import { createEndpointWith } from '../../src/sources/common/endpoint.js';
import { ConnectorRegistry } from '../../src/sources/common/link.js';
import { LogCapture } from '../support/log-capture.js';

test("an endpoint's lines carry the console's name when written (renamed after the first line)", async () => {
  const cap = new LogCapture({ level: 'info' });
  let endpointLogger: Logger | null = null;
  const registry = new ConnectorRegistry().register('unix', (_spec, ctx) => {
    endpointLogger = ctx.logger;
    return { mode: 'dial', dial: () => new Promise(() => {}) };
  });
  const hub = new ConsoleHub({ id: 1, kind: 'qemu', key: 'c'.repeat(32), label: '', name: 'old-name', tcpPort: 10001 });
  createEndpointWith(registry, parseSourceSpec('unix:/nonexistent/x.sock'), hub, { logger: cap.logger, start: false });
  const log = endpointLogger! as Logger;
  log.warn('first');
  hub.identity.name = 'new-name';
  log.warn('second');
  const first = await cap.waitFor((l) => l.message === 'first');
  const second = await cap.waitFor((l) => l.message === 'second');
  assert.equal(first.console, 'old-name');
  assert.equal(first.endpoint, 'unix:/nonexistent/x.sock');
  assert.equal(second.console, 'new-name');
});
