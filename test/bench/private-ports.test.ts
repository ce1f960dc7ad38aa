/**
 * The ports of the vspc the benchmark starts (bench/harness.ts privatePorts): chosen
 * free in the private range when none are given; an explicit --port-range with a port
 * someone else holds is refused, naming the port, rather than sending benchmark
 * clients to whatever holds it.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { PRIVATE_PORTS, privatePorts } from '../../bench/harness.js';
import { canBind, reservePortRange } from '../support/ports.js';

describe('benchmark: private ports', () => {
  test('without --port-range: a free block in 20000-32767 (never 10000-19999 or 13370-13372), proxy and admin right after it', async () => {
    const p = await privatePorts(100);
    assert.equal(p.range.end - p.range.start + 1, 100);
    assert.ok(p.range.start >= PRIVATE_PORTS.from && p.adminPort <= PRIVATE_PORTS.to);
    assert.equal(p.proxyPort, p.range.end + 1);
    assert.equal(p.adminPort, p.range.end + 2);
    assert.ok(PRIVATE_PORTS.from > 19999 && PRIVATE_PORTS.to < 32768, 'above vspc\'s defaults, below the ephemeral range');
    for (const port of [p.range.start, p.range.end, p.proxyPort, p.adminPort]) assert.ok(await canBind(port), `${port} is free`);
  });

  test('an explicit --port-range with a port in use is refused, naming it', async (t) => {
    const range = await reservePortRange(4);
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: range.start + 2 }, resolve));
    t.after(() => new Promise<void>((r) => holder.close(() => r())));
    await assert.rejects(privatePorts(4, range), (err: Error) => {
      assert.match(err.message, new RegExp(`^--port-range ${range.start}-${range.end}: port ${range.start + 2} is in use \\(a running vspc\\?\\)`));
      return true;
    });
    await assert.rejects(privatePorts(5, range), /has fewer than the 5 ports this run needs/);
  });
});
