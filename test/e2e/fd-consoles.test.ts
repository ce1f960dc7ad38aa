/**
 * F5: every descriptor vspc opens for a console goes through the budget, not only the
 * connections it accepts. A vspc under RLIMIT_NOFILE 256 (prlimit) is given more
 * declared consoles than fit: it starts (no EMFILE anywhere), binds what fits, shows
 * the others as "file descriptors exhausted" (list, a log line, /metrics), keeps the
 * admin API answering, and binds the deferred ones as soon as descriptors are freed
 * (here: consoles removed from the configuration and a reload).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child, VSPC_JS, vspcAdmin } from '../support/cli.js';
import { reservePort, reservePortRange } from '../support/ports.js';
import { tempDir } from '../support/server.js';

const CONSOLES = 220;

interface Port {
  name: string;
  port: number;
  listenError: string | null;
  state: string;
}

/** 'accepted' when the server sends telnet negotiation, 'refused' when the connect fails or it closes. */
function fate(port: number): Promise<'accepted' | 'refused'> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('data', () => {
      s.destroy();
      resolve('accepted');
    });
    s.once('error', () => resolve('refused'));
    s.once('close', () => resolve('refused'));
  });
}

test('fd budget: consoles beyond the descriptors are deferred (shown, logged, counted), vspc and its admin API carry on, and they are bound once descriptors are freed', { timeout: 120_000 }, async (t) => {
  const dir = tempDir('vspc-fdc-');
  t.after(() => dir.remove());
  const admin = await reservePort();
  const proxy = await reservePort();
  const range = await reservePortRange(CONSOLES);
  const config = join(dir.dir, 'vspc.yaml');
  const declare = (names: string[]) =>
    // unix-listen: vspc listens for each QEMU, so each console holds two descriptors
    // steadily (its client port, its source's socket), nothing opened and closed in a loop.
    writeFileSync(config, `consoles:\n${names.map((n) => `  - name: ${n}\n    source: unix-listen:${join(dir.dir, `${n}.sock`)}\n`).join('')}`);
  const all = Array.from({ length: CONSOLES }, (_, i) => `fd${String(i).padStart(3, '0')}`);
  declare(all);
  const child = new Child(
    VSPC_JS,
    ['--config', config, '--db', join(dir.dir, 'vspc.db'), '--admin-listen', `127.0.0.1:${admin}`, '--proxy-listen', `127.0.0.1:${proxy}`, '--port-range', `${range.start}-${range.end}`],
    ['prlimit', '--nofile=256:256'],
  );
  t.after(() => child.kill());
  await child.waitForStderr(/vspc started/, 60_000);
  const ports = async (): Promise<Port[]> => (await fetch(`http://127.0.0.1:${admin}/api/v1/ports`, { signal: AbortSignal.timeout(5000) })).json() as Promise<Port[]>;

  const listed = await ports();
  assert.equal(listed.length, CONSOLES);
  const deferred = listed.filter((p) => p.listenError === 'file descriptors exhausted');
  const bound = listed.filter((p) => p.listenError === null);
  assert.ok(deferred.length > 0, 'more consoles than descriptors: some deferred');
  assert.ok(bound.length > 50, `${bound.length} bound`);
  assert.equal(deferred.length + bound.length, CONSOLES, 'no other listen error (no EMFILE)');
  assert.doesNotMatch(child.stderr, /EMFILE/);
  assert.match(child.stderr, /file descriptors nearly exhausted; a console client port, socket or pty waits to be opened/);
  assert.match(child.stderr, /"errorCode":"VSPC_FD_BUDGET_SPENT"/);

  // The budget is spent: a client of a bound console is refused at accept (and counted);
  // a deferred console has no listener at all.
  assert.equal(await fate(bound[0]!.port), 'refused');
  assert.equal(await fate(deferred[0]!.port), 'refused');
  const waiting = listed.filter((p) => p.state === 'waiting').length;
  assert.ok(waiting > 0, 'sources deferred too (state waiting)');

  // The admin API answers, and counts the deferrals.
  const status = await vspcAdmin(`127.0.0.1:${admin}`, ['status']);
  assert.equal(status.code, 0, status.stderr);
  const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const fdLines = metrics.split('\n').filter((l) => l.includes('fd_')).join('\n');
  assert.ok(Number(/^vspc_fd_budget_deferred_total\{use="listener"\} (\d+)$/m.exec(metrics)?.[1]) >= deferred.length, fdLines);
  assert.ok(Number(/^vspc_fd_budget_deferred_total\{use="source"\} (\d+)$/m.exec(metrics)?.[1]) >= waiting, fdLines);
  assert.ok(Number(/^vspc_fd_budget_refused_total (\d+)$/m.exec(metrics)?.[1]) >= 1, fdLines);

  // Descriptors freed (the bound consoles leave the configuration): deferred ones are bound.
  const keep = deferred.slice(0, 40).map((p) => p.name);
  declare(keep);
  const reload = await vspcAdmin(`127.0.0.1:${admin}`, ['reload']);
  assert.equal(reload.code, 0, reload.stderr);
  // Each check is one answer from vspc (the binds happen on its own turns of the loop).
  let now: Port[] = [];
  for (let attempt = 0; attempt < 500; attempt++) {
    now = await ports();
    if (now.length === keep.length && now.every((p) => p.listenError === null && p.state === 'listening')) break;
  }
  assert.deepEqual(now.filter((p) => p.listenError !== null || p.state !== 'listening'), [], 'every deferred console bound, its source listening');
  assert.equal(await fate(deferred[0]!.port), 'accepted');
});
