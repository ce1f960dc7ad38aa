/**
 * Issue 11 #6: running out of file descriptors is seen and survived. vspc runs under
 * RLIMIT_NOFILE 256 (prlimit); hundreds of console connections spend the budget. vspc
 * refuses the excess itself — a log line, a counter — instead of libuv dropping them
 * silently, the admin API keeps answering (the reserve), and accepting recovers once
 * connections close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Child, VSPC_JS, vspcAdmin } from '../support/cli.js';
import { reservePort, reservePortRange } from '../support/ports.js';
import { tempDir } from '../support/server.js';

function connectRaw(port: number): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(null));
  });
}

/** Resolves true when the server closes `s` (refused), false when it sends telnet negotiation (accepted). */
function fate(s: net.Socket): Promise<'accepted' | 'refused'> {
  return new Promise((resolve) => {
    s.once('data', () => resolve('accepted'));
    s.once('close', () => resolve('refused'));
  });
}

test('fd exhaustion: refused and counted by vspc, admin API answers, recovery afterwards', { timeout: 90_000 }, async (t) => {
  const dir = tempDir('vspc-fd-');
  t.after(() => dir.remove());
  const admin = await reservePort();
  const proxy = await reservePort();
  const range = await reservePortRange(4);
  const config = join(dir.dir, 'vspc.yaml');
  // A declared console whose VM is off: it has a client port without any VM.
  writeFileSync(config, `consoles:\n  - name: fd01\n    source: unix:${join(dir.dir, 'absent.sock')}\n    port: ${range.start}\n`);
  const child = new Child(
    VSPC_JS,
    ['--config', config, '--db', join(dir.dir, 'vspc.db'), '--admin-listen', `127.0.0.1:${admin}`, '--proxy-listen', `127.0.0.1:${proxy}`, '--port-range', `${range.start}-${range.end}`],
    ['prlimit', '--nofile=256:256'],
  );
  const sockets: net.Socket[] = [];
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await child.kill();
  });
  await child.waitForStderr(/vspc started/, 20_000);

  // 300 telnet connections: about 190 fit under 256 minus the reserve of 64.
  const fates: Array<Promise<'accepted' | 'refused'>> = [];
  for (let i = 0; i < 300; i++) {
    const s = await connectRaw(range.start);
    assert.ok(s, 'the kernel completes the handshake either way');
    sockets.push(s);
    fates.push(fate(s));
  }
  const outcomes = await Promise.all(fates);
  const refused = outcomes.filter((o) => o === 'refused').length;
  assert.ok(refused > 0 && refused < 300, `refused ${refused} of 300`);
  await child.waitForStderr(/file descriptors nearly exhausted; refusing new connections/, 10_000);
  assert.match(child.stderr, /"errorCode":"VSPC_FD_BUDGET_SPENT"/);

  // The VM side is guarded by the same budget: a VM connecting now is refused too.
  const vm = await connectRaw(proxy);
  assert.ok(vm);
  sockets.push(vm);
  assert.equal(await fate(vm), 'refused');

  // The admin API answers while the budget is spent.
  const status = await vspcAdmin(`127.0.0.1:${admin}`, ['status']);
  assert.equal(status.code, 0, status.stderr);
  const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const counted = Number(/^vspc_fd_budget_refused_total (\d+)$/m.exec(metrics)?.[1]);
  assert.equal(counted, refused + 1, 'every refusal counted (the console ones and the VM)');
  assert.match(metrics, /^vspc_fd_limit 256$/m);

  // Recovery: the accepted clients leave; a new one gets in.
  // vspc sees the closes in its own time, so a newcomer may still be refused for a
  // moment: try until one is accepted (each try is decided by vspc, not by a clock).
  for (const s of sockets.splice(0)) s.destroy();
  let accepted = false;
  for (let attempt = 0; attempt < 200 && !accepted; attempt++) {
    const fresh = await connectRaw(range.start);
    assert.ok(fresh);
    sockets.push(fresh);
    accepted = (await fate(fresh)) === 'accepted';
  }
  assert.ok(accepted, 'accepting recovered');
});
