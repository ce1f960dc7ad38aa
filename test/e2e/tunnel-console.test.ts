/**
 * The console that carries a serial tunnel is not a console for people (docs/tunnels.md,
 * "The console that carries a tunnel"), wherever people look: no console log file (not
 * even across a kick), not offered by the broker or the SSH front door, its internal
 * client not counted as a telnet client. No agent and no QEMU: a unix socket server
 * stands in for QEMU's serial sockets; the tunnel's link stays handshaking, which is
 * all these checks need.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { VspcConfig } from '../../src/config/config.js';
import type { TunnelView } from '../../src/admin/views.js';
import { DEFAULTS } from '../../src/config/config.js';
import { VSPC_ADMIN_JS, runNode, vspcAdmin } from '../support/cli.js';
import { Cleanup, startServer, tempDir, waitUntil, type TestServer } from '../support/server.js';
import { haveOpenSsh, keyLine, makeKey, runSsh, sshArgs } from '../support/ssh.js';
import { FakeSerial } from '../support/fake-serial.js';

const T = { timeout: 60_000 };

interface Setup {
  ts: TestServer;
  dir: string;
  logDir: string;
  /** The VM's ordinary console `vm2` and the tunnel's own console `vm2-tunnel`. */
  serial0: FakeSerial;
  tunnelLine: FakeSerial;
}

/** vspc with console logs, a declared console `vm2` and the tunnel `vm2-tunnel` on a source of its own. */
async function setup(t: { after(fn: () => unknown): void }, extra: Partial<VspcConfig> = {}): Promise<Setup> {
  const d = tempDir('vspc-tunnel-console-');
  const logDir = join(d.dir, 'logs');
  const serial0 = await FakeSerial.start(join(d.dir, 'vm2.sock'));
  const tunnelLine = await FakeSerial.start(join(d.dir, 'vm2.tunnel'));
  t.after(async () => {
    await Promise.allSettled([serial0.close(), tunnelLine.close()]);
    d.remove();
  });
  const src0 = `unix:${serial0.path}`;
  const src1 = `unix:${tunnelLine.path}`;
  const { ts } = await startServer(t, {
    config: {
      logDir,
      logMarkIntervalMs: 0,
      consoles: [{ name: 'vm2', source: parseSourceSpec(src0), sourceText: src0 }],
      tunnels: [{ name: 'vm2-tunnel', source: parseSourceSpec(src1), sourceText: src1, forwards: [] }],
      ...extra,
    },
  });
  await waitUntil(async () => (await tunnelView(ts)).console === 'vm2-tunnel', 10_000, 'the tunnel bound to its console');
  await waitUntil(() => serial0.conns.size === 1 && tunnelLine.conns.size === 1, 10_000, 'both sources connected');
  return { ts, dir: d.dir, logDir, serial0, tunnelLine };
}

async function tunnelView(ts: TestServer): Promise<TunnelView> {
  const v = (await ts.api<TunnelView[]>('/api/v1/tunnels')).find((x) => x.name === 'vm2-tunnel');
  if (!v) throw new Error('tunnel vm2-tunnel not listed');
  return v;
}

function hubOf(ts: TestServer, name: string) {
  const hub = ts.server.registry.all().find((h) => h.displayName === name);
  if (!hub) throw new Error(`no console ${name}`);
  return hub;
}

/** Everything the console logs have queued so far is on disk (tail flushes that console's writer). */
async function flushLogs(ts: TestServer, ...names: string[]): Promise<void> {
  for (const n of names) await ts.server.consoleLogs!.tail(hubOf(ts, n), 1);
}

describe('the console that carries a serial tunnel', { timeout: 120_000 }, () => {
  test('is not offered by the broker or the SSH front door, is refused there by name with the reason; vspc-admin list shows it', T, async (t) => {
    assert.ok(haveOpenSsh(), 'the OpenSSH client is not installed (test/support/guest/ensure-deps.sh)');
    const keys = tempDir('vspc-tunnel-console-keys-');
    t.after(() => keys.remove());
    const alice = makeKey(keys.dir, 'alice', 'alice@laptop');
    const keysFile = join(keys.dir, 'authorized_keys');
    writeFileSync(keysFile, keyLine(alice, 'vspc-user="alice"') + '\n', { mode: 0o600 });
    const brokerPath = join(keys.dir, 'broker.sock');
    const { ts } = await setup(t, {
      brokerSocket: { path: brokerPath, auto: false },
      brokerLimits: DEFAULTS.brokerLimits,
      sshListen: { host: '127.0.0.1', port: 0 },
      sshHostKeyDir: join(keys.dir, 'hostkeys'),
      sshAuthorizedKeys: keysFile,
      sshLimits: DEFAULTS.sshLimits,
    });

    // The broker: the list, --names and a pattern leave it out; named, it is refused with the reason.
    const names = await runNode(VSPC_ADMIN_JS, ['console', '--socket', brokerPath, '--names']);
    assert.equal(names.code, 0, names.stderr);
    assert.deepEqual(names.stdout.trim().split('\n'), ['vm2']);
    const list = await runNode(VSPC_ADMIN_JS, ['console', '--socket', brokerPath]);
    assert.equal(list.code, 0, list.stderr);
    assert.doesNotMatch(list.stdout, /vm2-tunnel/);
    const pattern = await runNode(VSPC_ADMIN_JS, ['console', '--socket', brokerPath, '--names', 'vm2*']);
    assert.deepEqual(pattern.stdout.trim().split('\n'), ['vm2']);
    const named = await runNode(VSPC_ADMIN_JS, ['console', '--socket', brokerPath, 'vm2-tunnel']);
    assert.equal(named.code, 1);
    assert.match(named.stderr, /vm2-tunnel carries the serial tunnel "vm2-tunnel" \(TCP forwards into the guest\), not a console for people; use the tunnel's forwards or vspc-admin tunnel vm2-tunnel PORT/);

    // The SSH front door: `list` (and so the menu) leaves it out; named, exit 3 with the reason.
    const c = new Cleanup();
    t.after(() => c.run());
    const s = { port: ts.server.addresses.ssh!.port, knownHosts: join(keys.dir, 'known_hosts') };
    const sshList = await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'list']), c);
    assert.equal(sshList.code, 0, sshList.stderr);
    assert.match(sshList.stdout, /^vm2 +config +connected/m);
    assert.doesNotMatch(sshList.stdout, /vm2-tunnel/);
    const sshNamed = await runSsh(sshArgs(s, alice, ['console@127.0.0.1', 'vm2-tunnel']), c);
    assert.equal(sshNamed.code, 3, sshNamed.stderr);
    assert.match(sshNamed.stderr, /vm2-tunnel carries the serial tunnel "vm2-tunnel"/);

    // The administrator still sees it, with its tunnel.
    const admin = await vspcAdmin(ts.adminAddress, ['list']);
    assert.equal(admin.code, 0, admin.stderr);
    assert.match(admin.stdout, /^vm2-tunnel\b.*\btunnel\b/m);
    assert.match(admin.stdout, /^vm2-tunnel +vm2-tunnel +handshaking\b/m);
  });

  test("its tunnel's link is a `tunnel` client: VIA tunnel in who, method=\"tunnel\" in metrics, not telnet", T, async (t) => {
    const { ts } = await setup(t);
    const who = await vspcAdmin(ts.adminAddress, ['who']);
    assert.equal(who.code, 0, who.stderr);
    assert.match(who.stdout, /^\d+ +vm2-tunnel +\d+ +exclusive +tunnel +/m);
    const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`)).text();
    assert.match(metrics, /^vspc_clients 1$/m);
    assert.match(metrics, /^vspc_clients_by_method\{method="telnet"\} 0$/m);
    assert.match(metrics, /^vspc_clients_by_method\{method="tunnel"\} 1$/m);
  });

  test('vspc_consoles counts it as kind tunnel, and its HELP names that kind', T, async (t) => {
    const { ts } = await setup(t);
    const metrics = await (await fetch(`http://${ts.adminAddress}/metrics`)).text();
    assert.match(metrics, /^vspc_consoles\{kind="tunnel",state="connected"\} 1$/m);
    const help = /^# HELP vspc_consoles (.*)$/m.exec(metrics)?.[1] ?? '';
    assert.match(help, /\(esxi, config, proxmox, libvirt, glob, tunnel\)/);
  });

  test('has no console log file: not at start, not after a kick and the link coming back', T, async (t) => {
    const { ts, logDir } = await setup(t);
    const attachedBefore = ts.logs.filter((l) => l.message === 'tunnel attached to its console').length;
    const kick = await vspcAdmin(ts.adminAddress, ['kick', 'vm2-tunnel']);
    assert.equal(kick.code, 0, kick.stderr);
    assert.match(kick.stdout, /disconnected from vm2-tunnel/);
    // The link comes back at once (docs/tunnels.md): the second attach is the one that was logged.
    await waitUntil(() => ts.logs.filter((l) => l.message === 'tunnel attached to its console').length > attachedBefore, 10_000, 'the tunnel attached again');
    // The ordinary console next to it does get a log (the check below can see files).
    const kick0 = await vspcAdmin(ts.adminAddress, ['kick', 'vm2', '--reason', 'log something']);
    assert.equal(kick0.code, 0, kick0.stderr);
    await flushLogs(ts, 'vm2', 'vm2-tunnel');
    const files = existsSync(logDir) ? readdirSync(logDir) : [];
    assert.ok(files.includes('vm2.log'), `the ordinary console's log is there: ${files.join(', ')}`);
    assert.deepEqual(
      files.filter((f) => f.startsWith('vm2-tunnel')),
      [],
      'no log file for the console that carries the tunnel',
    );
  });
});
