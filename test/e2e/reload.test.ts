/**
 * Every key the options table marks reloadable really takes effect on a running
 * server: one case per key (the type demands one for each; a check at run time too),
 * each starting a server from a config file, changing that key alone through
 * `POST /api/v1/reload`, and observing the effect from outside — a connection closed
 * sooner, a client dropped, an admin API answer, a log line the new level lets
 * through — not by reading the configuration object.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildProgram } from '../../src/config/options.js';
import { loadConfiguration } from '../../src/config/load.js';
import { createReloader, type ReloadReport } from '../../src/config/reload.js';
import { keyName, RELOADABLE, type ReloadableField } from '../../src/config/table.js';
import type { ClientView, PortView, StatusView, VmDetailView } from '../../src/admin/views.js';
import { Option } from '../../src/protocol/telnet/constants.js';
import { SimulatedVm, TelnetUser } from '../support/sim/index.js';
import { reservePortRange } from '../support/ports.js';
import { esxiUuid, startServer, tempDir, waitUntil, type Cleanup, type TestServer } from '../support/server.js';
import { keyLine, makeKey, SshProcess, sshArgs } from '../support/ssh.js';

const TOKEN = 'reload-token-0123456789abcdef';

/** A server started from a config file, and a way to rewrite the file and reload it. */
interface Reloadable {
  ts: TestServer;
  cleanup: Cleanup;
  /** Rewrites the file as the base lines plus `lines`, reloads through the admin API, returns the report. */
  reload(lines: string[]): Promise<ReloadReport>;
  /** An admin API call (with the token once one is configured). */
  api<T>(path: string, token?: string): Promise<T>;
}

async function reloadable(t: { after(fn: () => unknown): void }, lines: string[] = [], logLevel?: string): Promise<Reloadable> {
  const dir = tempDir('vspc-reload-');
  t.after(() => dir.remove());
  const ports = await reservePortRange(8);
  const path = join(dir.dir, 'vspc.yaml');
  const base = ['proxyListen: 127.0.0.1:0', 'adminListen: 127.0.0.1:0', `db: ${join(dir.dir, 'vspc.db')}`, `portRange: ${ports.start}-${ports.end}`];
  writeFileSync(path, [...base, ...lines].join('\n') + '\n');
  const program = buildProgram().exitOverride();
  program.parse(['--config', path], { from: 'user' });
  const loaded = loadConfiguration(program);
  const { ts, cleanup } = await startServer(t, { config: loaded.config, logLevel });
  ts.server.reloadConfig = createReloader(program, ts.server, ts.logs.logger, loaded);
  const call = async (method: string, p: string, token?: string) => {
    const res = await fetch(`http://${ts.adminAddress}${p}`, {
      method,
      // A change through the admin API is JSON (browsers cannot send that cross-site without a preflight).
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(method === 'POST' ? { 'content-type': 'application/json' } : {}) },
      signal: AbortSignal.timeout(5000),
    });
    const body = (await res.json()) as unknown;
    if (!res.ok) throw Object.assign(new Error(`${method} ${p}: HTTP ${res.status} ${JSON.stringify(body)}`), { status: res.status });
    return body;
  };
  return {
    ts,
    cleanup,
    reload: async (more) => {
      writeFileSync(path, [...base, ...more].join('\n') + '\n');
      return (await call('POST', '/api/v1/reload')) as ReloadReport;
    },
    api: async <T>(p: string, token?: string) => (await call('GET', p, token)) as T,
  };
}

/** Asserts that a reload applied exactly `field` and nothing needs a restart. */
function appliedOnly(report: ReloadReport, field: ReloadableField): void {
  assert.deepEqual(report, { file: report.file, applied: [keyName(field)], restartNeeded: [] });
}

/** Opens a raw TCP connection that never speaks; resolves with what it received once the server closes it. */
function silentConnection(port: number, cleanup: Cleanup): Promise<string> {
  const sock = net.connect({ host: '127.0.0.1', port });
  cleanup.add(() => sock.destroy());
  let text = '';
  sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
  sock.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not closed; got ${JSON.stringify(text)}`)), 5000);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
  });
}

type Case = (t: { after(fn: () => unknown): void }) => Promise<void>;

/**
 * A server with the SSH front door, one key, one console; after reloading `lines`, an
 * SSH session attached to that console (no terminal, typing nothing) is ended by vspc
 * with a message matching `told`.
 */
async function sshSessionEnded(t: { after(fn: () => unknown): void }, before: string[], after: string[], field: ReloadableField, told: RegExp): Promise<void> {
  const dir = tempDir('vspc-reload-ssh-');
  t.after(() => dir.remove());
  const key = makeKey(dir.dir, 'rl-key', 'rl-user');
  const keysFile = join(dir.dir, 'authorized_keys');
  writeFileSync(keysFile, keyLine(key) + '\n');
  const ssh = ['sshListen: 127.0.0.1:0', `sshHostKeyDir: ${join(dir.dir, 'hostkeys')}`, `sshAuthorizedKeys: ${keysFile}`];
  const r = await reloadable(t, [...ssh, ...before]);
  await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-ssh' }, r.cleanup);
  appliedOnly(await r.reload([...ssh, ...after]), field);
  const s = { port: r.ts.server.addresses.ssh!.port, knownHosts: join(dir.dir, 'known_hosts') };
  const session = new SshProcess(sshArgs(s, key, ['console@127.0.0.1', 'rl-ssh']), r.cleanup);
  const result = await session.exit(10_000);
  assert.equal(result.code, 4, result.stderr);
  assert.match(result.stderr, told);
}

/** A unix socket standing in for a QEMU serial port (it greets whoever connects), closed after the test. */
function fakeSerialSocket(t: { after(fn: () => unknown): void }, path: string, greeting: string): Promise<string> {
  const server = net.createServer((s) => s.end(`${greeting}\r\n`));
  t.after(() => new Promise<void>((done) => server.close(() => done())));
  return new Promise<string>((resolve) => server.listen(path, () => resolve(path)));
}

/** A fake Proxmox tree: run/<vmid>.serial0 (a real socket) and conf/<vmid>.conf naming the VM. */
async function fakeProxmox(t: { after(fn: () => unknown): void }, vmid: number, name: string): Promise<{ run: string; conf: string }> {
  const dir = tempDir('vspc-reload-pve-');
  t.after(() => dir.remove());
  const run = join(dir.dir, 'run');
  const conf = join(dir.dir, 'conf');
  mkdirSync(run);
  mkdirSync(conf);
  writeFileSync(join(conf, `${vmid}.conf`), `boot: order=scsi0\nname: ${name}\nmemory: 512\n`);
  await fakeSerialSocket(t, join(run, `${vmid}.serial0`), `hello from ${name}`);
  return { run, conf };
}

/** Waits until the admin API lists a console of `kind` named `name`; returns it. */
async function listed(r: Reloadable, kind: string, name: string): Promise<PortView> {
  let found: PortView | undefined;
  await waitUntil(async () => {
    found = (await r.api<PortView[]>('/api/v1/ports')).find((p) => p.kind === kind && p.name === name);
    return found !== undefined;
  }, 5000, `${kind} console ${name} listed`);
  return found!;
}

/** One case per reloadable field: a key marked reloadable without a case here does not compile. */
const cases: { [K in ReloadableField]: Case } = {
  logLevel: async (t) => {
    const r = await reloadable(t, ['logLevel: warn'], 'warn');
    appliedOnly(await r.reload(['logLevel: debug']), 'logLevel');
    // The logger was created at warn: a debug line now shows the new level took effect.
    await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-log' }, r.cleanup);
    await r.ts.logs.waitFor((l) => l.level === 'debug' && l.message === 'option 232 agreed', 3000);
  },

  expireAfterMs: async (t) => {
    const r = await reloadable(t, ['expireAfter: 0']);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-expire' }, r.cleanup);
    vm.destroy();
    await waitUntil(() => hub.source === null, 3000, 'VM disconnected');
    appliedOnly(await r.reload(['expireAfter: 50ms']), 'expireAfterMs');
    // The check is re-armed at the new period: the disconnected VM serial port is forgotten.
    await r.ts.logs.waitFor((l) => l.message === 'VM serial port expired (not seen for too long)' && l.vm === 'rl-expire', 5000);
    assert.deepEqual(await r.api<PortView[]>('/api/v1/ports'), []);
  },

  expireUnusedAfterMs: async (t) => {
    const r = await reloadable(t, ['expireUnusedAfter: 0']);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-unused' }, r.cleanup);
    vm.destroy();
    await waitUntil(() => hub.source === null, 3000, 'VM disconnected');
    appliedOnly(await r.reload(['expireUnusedAfter: 50ms']), 'expireUnusedAfterMs');
    // It never printed nor had a client: forgotten after the new, short age (the 90-day one still holds for others).
    await r.ts.logs.waitFor((l) => l.message === 'VM serial port expired (never used: no client ever attached)' && l.vm === 'rl-unused', 5000);
    assert.deepEqual(await r.api<PortView[]>('/api/v1/ports'), []);
  },

  proxyAllow: async (t) => {
    const r = await reloadable(t, ['proxyAllow: [192.0.2.0/24]']);
    const outside = await SimulatedVm.connect({ host: '127.0.0.1', port: r.ts.proxyPort, uuid: esxiUuid().text, name: 'rl-outside' });
    r.cleanup.add(() => outside.destroy());
    await outside.whenClosed(5000);
    await r.ts.logs.waitFor((l) => l.errorCode === 'VSPC_PEER_NOT_ALLOWED' && l.peer === outside.peerName, 3000);
    appliedOnly(await r.reload(['proxyAllow: [192.0.2.0/24, 127.0.0.0/8]']), 'proxyAllow');
    const { hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-inside' }, r.cleanup);
    assert.equal(hub.identity.name, 'rl-inside');
  },

  takeoverProbeTimeoutMs: async (t) => {
    const r = await reloadable(t, ['takeoverProbe: 1h']);
    // A VM that stopped answering option-232 requests (identified by its unsolicited UUID).
    const u = esxiUuid();
    const { hub } = await r.ts.connectVm({ uuid: u.text, name: 'rl-probe', unsolicitedIdentity: true, answerIdentityRequests: false }, r.cleanup);
    appliedOnly(await r.reload(['takeoverProbe: 200ms']), 'takeoverProbeTimeoutMs');
    // Under the old hour the newcomer would wait; now it takes over once the probe goes unanswered for 200 ms.
    const next = await SimulatedVm.connect({ host: '127.0.0.1', port: r.ts.proxyPort, localAddress: '127.0.0.2', uuid: u.text, name: 'rl-probe' });
    r.cleanup.add(() => next.destroy());
    await r.ts.logs.waitFor((l) => l.message === 'VM serial port reconnected' && l.peer === next.peerName && l.takeover === 'unanswered', 5000);
    assert.equal(hub.source?.peer, next.peerName);
  },

  humanTimeoutMs: async (t) => {
    const r = await reloadable(t, ['humanTimeout: 1h']);
    appliedOnly(await r.reload(['humanTimeout: 200ms']), 'humanTimeoutMs');
    // Under the old hour this connection would stay open; now it is explained and closed.
    assert.match(await silentConnection(r.ts.proxyPort, r.cleanup), /vspc-admin list/);
  },

  identifyTimeoutMs: async (t) => {
    const r = await reloadable(t, ['identifyTimeout: 1h']);
    appliedOnly(await r.reload(['identifyTimeout: 200ms']), 'identifyTimeoutMs');
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: r.ts.proxyPort, uuid: esxiUuid().text, name: 'rl-id', identify: false });
    r.cleanup.add(() => vm.destroy());
    await vm.whenClosed(5000);
    assert.equal(vm.isEnabled('us', Option.VMWARE_EXT), true, 'option 232 was agreed: closed for not identifying');
    await r.ts.logs.waitFor((l) => l.peer === vm.peerName && l.errorCode === 'VSPC_IDENTIFY_TIMEOUT', 3000);
  },

  serviceName: async (t) => {
    const r = await reloadable(t);
    // A connection made before the reload: nothing may keep the old name for later ones.
    await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-before' }, r.cleanup);
    appliedOnly(await r.reload(['serviceName: other.py']), 'serviceName');
    const old = await SimulatedVm.connect({ host: '127.0.0.1', port: r.ts.proxyPort, uuid: esxiUuid().text, name: 'rl-old' });
    r.cleanup.add(() => old.destroy());
    await assert.rejects(old.whenProxied(5000), /WONT-PROXY/);
    const { hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-new', serviceUri: 'other.py' }, r.cleanup);
    assert.equal(hub.identity.name, 'rl-new');
  },

  vmotionSecretBytes: async (t) => {
    const r = await reloadable(t, ['vmotionSecretBytes: 8']);
    const { vm } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-secret' }, r.cleanup);
    const before = await vm.vmotionBegin(Buffer.from([1]));
    assert.equal(before.kind === 'goahead' && before.secret.length, 8);
    vm.vmotionAbort();
    appliedOnly(await r.reload(['vmotionSecretBytes: 32']), 'vmotionSecretBytes');
    const after = await vm.vmotionBegin(Buffer.from([2]));
    assert.equal(after.kind === 'goahead' && after.secret.length, 32, 'the next BEGIN gets a secret of the new length');
  },

  comPort: async (t) => {
    const r = await reloadable(t, ['comPort: true']);
    appliedOnly(await r.reload(['comPort: false']), 'comPort');
    const { vm } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-uart', comPort: true, uart: { baudRate: 115200 } }, r.cleanup);
    await waitUntil(() => vm.refusedByProxy.some((x) => x.side === 'us' && x.option === Option.COM_PORT), 3000, 'COM-PORT refused');
    assert.equal((await r.api<VmDetailView>('/api/v1/show?vm=rl-uart')).uart, null);
  },

  clientQueueLimit: async (t) => {
    const r = await reloadable(t, ['clientQueueLimit: 1024m']);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-queue' }, r.cleanup);
    const stalled = net.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    r.cleanup.add(() => stalled.destroy());
    stalled.on('error', () => undefined);
    stalled.pause(); // never reads: the kernel buffers fill, then the server's queue
    await waitUntil(() => hub.clients.size === 1, 5000, 'client attached');
    appliedOnly(await r.reload(['clientQueueLimit: 64k']), 'clientQueueLimit');
    // The client attached before the reload is held to the new limit (the old was 1 GiB).
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let sent = 0; hub.clients.size > 0 && sent < 256 * 1024 * 1024; sent += chunk.length) {
      if (!vm.send(chunk)) await vm.whenDrained();
    }
    const line = await r.ts.logs.waitFor((l) => l.message === 'client too slow; disconnecting', 5000);
    assert.equal(line.limit, 64 * 1024);
  },

  vmotionTimeoutMs: async (t) => {
    const r = await reloadable(t, ['vmotionTimeout: 1h']);
    const { vm } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-vmotion' }, r.cleanup);
    appliedOnly(await r.reload(['vmotionTimeout: 200ms']), 'vmotionTimeoutMs');
    assert.equal((await vm.vmotionBegin(Buffer.from([7]))).kind, 'goahead');
    // No peer ever comes: the vMotion is abandoned after the new timeout.
    await waitUntil(async () => (await r.api<StatusView>('/api/v1/status')).vmotions['timed-out'] === 1, 5000, 'vMotion timed out');
  },

  scrollbackBytes: async (t) => {
    const r = await reloadable(t, ['scrollback: 64k']);
    await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-scroll' }, r.cleanup);
    assert.equal((await r.api<VmDetailView>('/api/v1/show?vm=rl-scroll')).scrollbackBytes, 64 * 1024);
    appliedOnly(await r.reload(['scrollback: 1k']), 'scrollbackBytes');
    assert.equal((await r.api<VmDetailView>('/api/v1/show?vm=rl-scroll')).scrollbackBytes, 1024, 'the known console was resized');
  },

  adminToken: async (t) => {
    const r = await reloadable(t);
    assert.equal((await r.api<StatusView>('/api/v1/status')).vmPorts, 0, 'no token needed yet');
    appliedOnly(await r.reload([`adminToken: ${TOKEN}`]), 'adminToken');
    await assert.rejects(r.api('/api/v1/status'), (err: { status?: number }) => err.status === 401);
    assert.equal((await r.api<StatusView>('/api/v1/status', TOKEN)).vmPorts, 0);
  },

  defaultLockMode: async (t) => {
    const r = await reloadable(t, ['defaultLockMode: readwrite']);
    const { hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-lock' }, r.cleanup);
    appliedOnly(await r.reload(['defaultLockMode: readonly']), 'defaultLockMode');
    // A console known before the reload gives its next client the new default.
    await r.ts.connectUser(hub.identity.tcpPort, r.cleanup);
    const clients = await r.api<ClientView[]>('/api/v1/clients');
    assert.deepEqual(clients.map((c) => [c.vm, c.mode]), [['rl-lock', 'readonly']]);
  },

  vms: async (t) => {
    const r = await reloadable(t);
    const { hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'RL-VMS' }, r.cleanup);
    const fixed = hub.identity.tcpPort + 5;
    appliedOnly(await r.reload(['vms:', '  - match: "rl-v*"', '    scrollback: 2k', '    lockMode: exclusive']), 'vms');
    // A name pattern in any case (util/glob.ts) reaches the known console: scrollback and lock mode.
    const d = await r.api<VmDetailView>('/api/v1/show?vm=RL-VMS');
    assert.deepEqual(d.settings, { scrollbackBytes: 2048, lockMode: 'exclusive' });
    assert.equal(d.scrollbackBytes, 2048);
    // A fixed port for that one console moves it.
    appliedOnly(await r.reload(['vms:', '  - match: RL-VMS', `    port: ${fixed}`]), 'vms');
    assert.equal((await r.api<VmDetailView>('/api/v1/show?vm=RL-VMS')).port, fixed);
    await r.ts.connectUser(fixed, r.cleanup);
  },

  sshIdleTimeoutMs: (t) => sshSessionEnded(t, ['sshIdleTimeout: 1h'], ['sshIdleTimeout: 300ms'], 'sshIdleTimeoutMs', /idle for 300 ms; session ended/),

  sshMaxSessionMs: (t) => sshSessionEnded(t, ['sshMaxSession: 1h'], ['sshMaxSession: 500ms'], 'sshMaxSessionMs', /session time limit \(500 ms\) reached/),

  proxmoxRunDir: async (t) => {
    const pve = await fakeProxmox(t, 101, 'rl-pve');
    const r = await reloadable(t, [`proxmoxConfDir: ${pve.conf}`]);
    appliedOnly(await r.reload([`proxmoxConfDir: ${pve.conf}`, `proxmox: ${pve.run}`]), 'proxmoxRunDir');
    const p = await listed(r, 'proxmox', 'rl-pve');
    assert.equal(p.label, 'serial0');
    assert.equal(p.endpoint, `unix:${join(pve.run, '101.serial0')}`);
    const user = await r.ts.connectUser(p.port, r.cleanup, '');
    await user.waitFor('hello from rl-pve', 5000);
    // The fake socket greets and closes: the console is counted by kind, now waiting to reconnect.
    await waitUntil(async () => {
      const text = await (await fetch(`http://${r.ts.adminAddress}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
      return /^vspc_consoles\{kind="proxmox",state="(waiting|connected)"\} 1$/m.test(text) && /^vspc_endpoint_reconnects_total\{kind="proxmox"\} \d+$/m.test(text);
    }, 5000, 'proxmox consoles counted in /metrics');
  },

  proxmoxConfDir: async (t) => {
    const pve = await fakeProxmox(t, 102, 'rl-old-name');
    const other = tempDir('vspc-reload-pve-conf-');
    t.after(() => other.remove());
    writeFileSync(join(other.dir, '102.conf'), 'name: rl-new-name\n');
    const r = await reloadable(t, [`proxmox: ${pve.run}`, `proxmoxConfDir: ${pve.conf}`]);
    const before = await listed(r, 'proxmox', 'rl-old-name');
    appliedOnly(await r.reload([`proxmox: ${pve.run}`, `proxmoxConfDir: ${other.dir}`]), 'proxmoxConfDir');
    const after = await listed(r, 'proxmox', 'rl-new-name');
    assert.equal(after.port, before.port, 'renamed, not re-created: same port');
  },

  libvirtRunDir: async (t) => {
    const dir = tempDir('vspc-reload-libvirt-');
    t.after(() => dir.remove());
    const sock = await fakeSerialSocket(t, join(dir.dir, 'web.serial'), 'hello from libvirt');
    const xml = join(dir.dir, 'xml');
    mkdirSync(xml);
    writeFileSync(
      join(xml, 'rl-lv.xml'),
      `<domstatus><domain type='kvm' id='3'><name>rl-lv</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><devices>` +
        `<serial type='unix'><source mode='bind' path='${sock}'/><target type='isa-serial' port='0'/><alias name='serial0'/></serial>` +
        `</devices></domain></domstatus>\n`,
    );
    const r = await reloadable(t);
    appliedOnly(await r.reload([`libvirt: ${xml}`]), 'libvirtRunDir');
    const p = await listed(r, 'libvirt', 'rl-lv');
    assert.equal(p.key, '4dea22b3-1d52-d8f3-2516-782e98ab3fa0');
    const user = await r.ts.connectUser(p.port, r.cleanup, '');
    await user.waitFor('hello from libvirt', 5000);
  },

  discoverGlobs: async (t) => {
    const dir = tempDir('vspc-reload-glob-');
    t.after(() => dir.remove());
    await fakeSerialSocket(t, join(dir.dir, 'rl-glob.sock'), 'hello from a glob');
    const r = await reloadable(t);
    appliedOnly(await r.reload(['discover:', `  - glob: ${dir.dir}/*.sock`, '    source: "unix:{path}"', '    name: "{stem}"']), 'discoverGlobs');
    const p = await listed(r, 'glob', 'rl-glob');
    const user = await r.ts.connectUser(p.port, r.cleanup, '');
    await user.waitFor('hello from a glob', 5000);
  },

  discoveryRescanMs: async (t) => {
    const pve = await fakeProxmox(t, 103, 'rl-rescan');
    const r = await reloadable(t, [`proxmox: ${pve.run}`, `proxmoxConfDir: ${pve.conf}`, 'discoveryRescan: 1h'], 'debug');
    await listed(r, 'proxmox', 'rl-rescan');
    const from = r.ts.logs.lines.length;
    appliedOnly(await r.reload([`proxmox: ${pve.run}`, `proxmoxConfDir: ${pve.conf}`, 'discoveryRescan: 100ms']), 'discoveryRescanMs');
    // Under the old hour no periodic scan would come; now two do.
    await r.ts.logs.waitFor((l) => l.message === 'discovery scan' && l.reason === 'periodic', 5000, from);
  },

  adminHostNames: async (t) => {
    const r = await reloadable(t);
    const ask = (host: string) =>
      new Promise<number>((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: r.ts.server.addresses.admin.port, path: '/api/v1/status', headers: { host }, agent: false }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          })
          .on('error', reject);
      });
    assert.equal(await ask('vspc.example.org'), 421, 'an unknown name is refused');
    appliedOnly(await r.reload(['adminHostNames: vspc.example.org']), 'adminHostNames');
    assert.equal(await ask('vspc.example.org'), 200, 'the configured name is answered');
    assert.equal(await ask('other.example.org'), 421);
  },

  greeting: async (t) => {
    const r = await reloadable(t);
    const { hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-greet' }, r.cleanup);
    appliedOnly(await r.reload(['greeting: false']), 'greeting');
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    r.cleanup.add(() => user.destroy());
    await waitUntil(() => hub.clients.size === 1, 5000, 'attached');
    await user.barrier();
    assert.ok(!user.text.includes('rl-greet'), `no greeting: ${JSON.stringify(user.text)}`);
  },

  notices: async (t) => {
    const r = await reloadable(t);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-notice' }, r.cleanup);
    appliedOnly(await r.reload(['notices: false']), 'notices');
    const user = await r.ts.connectUser(hub.identity.tcpPort, r.cleanup);
    const mark = user.mark();
    vm.destroy();
    await waitUntil(() => hub.source === null, 5000, 'VM gone');
    await user.barrier();
    assert.ok(!user.received.subarray(mark).toString().includes('VM disconnected'), 'no notice of the disconnect');
  },

  replay: async (t) => {
    const r = await reloadable(t);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-replay' }, r.cleanup);
    vm.send('scrolled-away\r\n');
    await waitUntil(() => hub.bytesFromVm > 0, 5000, 'output seen');
    appliedOnly(await r.reload(['replay: false']), 'replay');
    const user = await r.ts.connectUser(hub.identity.tcpPort, r.cleanup);
    vm.send('live\r\n');
    await user.waitFor('live', 5000);
    assert.ok(!user.text.includes('scrolled-away'), 'no replay of what came before');
  },

  consoles: async (t) => {
    // Two unix sockets standing in for QEMU serial ports; each greets whoever connects.
    const dir = tempDir('vspc-reload-consoles-');
    t.after(() => dir.remove());
    const serve = (name: string) => {
      const path = join(dir.dir, `${name}.sock`);
      const server = net.createServer((s) => s.end(`hello from ${name}\r\n`));
      t.after(() => new Promise<void>((done) => server.close(() => done())));
      return new Promise<string>((resolve) => server.listen(path, () => resolve(path)));
    };
    const a = await serve('a');
    const b = await serve('b');
    const r = await reloadable(t, ['consoles:', '  - name: rl-one', `    source: unix:${a}`, '  - name: rl-gone', `    source: unix:${a}`]);
    const names = async () => (await r.api<PortView[]>('/api/v1/ports')).map((p) => p.name).sort();
    assert.deepEqual(await names(), ['rl-gone', 'rl-one']);
    const one = (await r.api<PortView[]>('/api/v1/ports')).find((p) => p.name === 'rl-one')!;
    // Re-point rl-one, drop rl-gone, add rl-new: rl-one keeps its port and its client.
    const user = await r.ts.connectUser(one.port, r.cleanup, '');
    appliedOnly(await r.reload(['consoles:', '  - name: rl-one', `    source: unix:${b}`, '  - name: rl-new', `    source: unix:${a}`]), 'consoles');
    assert.deepEqual(await names(), ['rl-new', 'rl-one']);
    await user.waitFor('hello from b', 5000);
    assert.equal((await r.api<VmDetailView>('/api/v1/show?vm=rl-one')).port, one.port, 'a re-pointed console keeps its port');
  },

  tunnels: async (t) => {
    // A console whose source keeps its connection open (a QEMU serial socket); a tunnel
    // added by a reload takes it over, removed by the next gives it back.
    const dir = tempDir('vspc-reload-tunnels-');
    t.after(() => dir.remove());
    const path = join(dir.dir, 'carrier.sock');
    const held = new Set<net.Socket>();
    const server = net.createServer((s) => {
      held.add(s);
      s.on('error', () => undefined);
      s.on('close', () => held.delete(s));
    });
    t.after(() => new Promise<void>((done) => {
      for (const s of held) s.destroy();
      server.close(() => done());
    }));
    await new Promise<void>((resolve) => server.listen(path, () => resolve()));
    const consoles = ['consoles:', '  - name: rl-carrier', `    source: unix:${path}`];
    const r = await reloadable(t, consoles);
    const carrier = await listed(r, 'config', 'rl-carrier');
    type Tunnels = Array<{ name: string; console: string | null; forwards: Array<{ address: string | null }> }>;
    assert.deepEqual(await r.api<Tunnels>('/api/v1/tunnels'), []);
    appliedOnly(await r.reload([...consoles, 'tunnels:', '  - name: rl-tun', '    console: rl-carrier', '    forwards:', '      - to: 22']), 'tunnels');
    let tunnels: Tunnels = [];
    await waitUntil(async () => {
      tunnels = await r.api<Tunnels>('/api/v1/tunnels');
      return tunnels.length === 1 && tunnels[0].forwards[0].address !== null;
    }, 5000, 'the tunnel attached, its auto forward listening');
    assert.equal(tunnels[0].console, 'rl-carrier');
    // A telnet client to the carrier is refused, told why.
    assert.match(await silentConnection(carrier.port, r.cleanup), /carries the serial tunnel "rl-tun"/);
    // The auto forward accepts (the stream then waits for an agent that is not there).
    const port = Number(tunnels[0].forwards[0].address!.split(':').pop());
    const fwd = net.connect({ host: '127.0.0.1', port });
    r.cleanup.add(() => fwd.destroy());
    await new Promise<void>((resolve, reject) => {
      fwd.once('connect', resolve);
      fwd.once('error', reject);
    });
    // A tunnel with its own source: named like the declared console (in any case) would
    // be a second console of that name: the reload is refused, the running tunnel stays.
    await assert.rejects(
      r.reload([...consoles, 'tunnels:', '  - name: RL-Carrier', `    source: unix:${join(dir.dir, 'other.sock')}`]),
      /HTTP 400 .*tunnels\.0\.name: \\"RL-Carrier\\" is already the name of consoles\[0\]/,
    );
    assert.deepEqual((await r.api<Tunnels>('/api/v1/tunnels')).map((x) => [x.name, x.console]), [['rl-tun', 'rl-carrier']]);
    appliedOnly(await r.reload(consoles), 'tunnels');
    assert.deepEqual(await r.api<Tunnels>('/api/v1/tunnels'), []);
    // The forward's connection is closed, and the console takes people again.
    await new Promise<void>((resolve) => (fwd.destroyed ? resolve() : fwd.once('close', () => resolve())));
    await r.ts.connectUser(carrier.port, r.cleanup, '');
  },

  access: async (t) => {
    const r = await reloadable(t, ['access: { raw: false }']);
    const { vm, hub } = await r.ts.connectVm({ uuid: esxiUuid().text, name: 'rl-access' }, r.cleanup);
    const show = () => r.api<VmDetailView>('/api/v1/show?vm=rl-access');
    assert.equal((await show()).access.raw, null);
    appliedOnly(await r.reload(['access: { raw: true, telnet: false }']), 'access');
    // At once: the raw port opens, the telnet port closes.
    let d = await show();
    await waitUntil(async () => {
      d = await show();
      return d.access.raw?.listening === true && d.access.telnet === null;
    }, 5000, 'raw port up, telnet port down');
    const rawPort = d.access.raw!.port;
    assert.equal(await refused(hub.identity.tcpPort), 'ECONNREFUSED', 'the telnet port is closed');
    const raw = net.connect({ host: '127.0.0.1', port: rawPort });
    r.cleanup.add(() => raw.destroy());
    let got = '';
    raw.on('data', (b: Buffer) => (got += b.toString('latin1')));
    await waitUntil(() => hub.clients.size === 1, 5000, 'raw client attached');
    vm.send('over raw\r\n');
    await waitUntil(() => got === 'over raw\r\n', 5000, 'VM output on the raw port');
    // Disabled again: the listener goes (the client already attached stays), the port is kept in the store.
    appliedOnly(await r.reload(['access: { raw: false }']), 'access');
    await waitUntil(async () => (await show()).access.raw === null && (await show()).access.telnet !== null, 5000, 'raw off, telnet back');
    assert.equal(await refused(rawPort), 'ECONNREFUSED', 'the raw port is closed');
    await r.ts.connectUser(hub.identity.tcpPort, r.cleanup);
    appliedOnly(await r.reload(['access: { raw: true }']), 'access');
    await waitUntil(async () => (await show()).access.raw?.listening === true, 5000, 'raw on again');
    assert.equal((await show()).access.raw!.port, rawPort, 'the same sticky port');
    // Per console: a vms: entry turns it off for this console alone (a vms change, applied as such).
    appliedOnly(await r.reload(['access: { raw: true }', 'vms:', '  - match: rl-access', '    access: { raw: false }']), 'vms');
    await waitUntil(async () => (await show()).access.raw === null, 5000, 'raw off for this console');
    assert.equal(await refused(rawPort), 'ECONNREFUSED');
  },
};

/** The error of a TCP connect to a port nothing listens on (ECONNREFUSED), or null if it connects. */
function refused(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(null);
    });
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

describe('reload: every reloadable key takes effect on a running server', () => {
  test('there is a case for every reloadable key', () => {
    assert.deepEqual(Object.keys(cases).sort(), [...RELOADABLE].sort());
  });
  for (const [field, run] of Object.entries(cases)) {
    test(`${keyName(field)} (${field})`, (t) => run(t));
  }
});
