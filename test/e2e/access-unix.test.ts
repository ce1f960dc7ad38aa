/**
 * Unix sockets per console (`access: { unix: ... }`): real socat, file permissions that
 * decide who may attach (two unix users made for the test, one in the socket's group),
 * the audit line, and the safety rules for the directory and what is at the path.
 * Runs as root (chown to another owner needs it; CI runs as root).
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { esxiUuid, tempDir, waitUntil, settle } from '../support/server.js';
import { Child, allBytes, show, startFromFile, waitShow } from '../support/access.js';

const isRoot = process.getuid?.() === 0;

/** A group and two users (one in it, one not), removed when the test ends, whatever happens. */
function unixUsers(t: { after(fn: () => unknown): void }): { group: string; member: string; outsider: string; memberUid: number } {
  const tag = `${process.pid % 100000}${randomBytes(2).toString('hex')}`;
  const group = `vspcg${tag}`;
  const member = `vspcm${tag}`;
  const outsider = `vspco${tag}`;
  const made: Array<() => void> = [];
  t.after(() => {
    for (const undo of made.reverse()) {
      try {
        undo();
      } catch {
        /* best effort */
      }
    }
  });
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: 'pipe', timeout: 20_000 });
  run('groupadd', [group]);
  made.push(() => run('groupdel', [group]));
  run('useradd', ['-M', '-N', '-g', 'nogroup', '-G', group, '-s', '/usr/sbin/nologin', member]);
  made.push(() => run('userdel', ['-f', member]));
  run('useradd', ['-M', '-N', '-g', 'nogroup', '-s', '/usr/sbin/nologin', outsider]);
  made.push(() => run('userdel', ['-f', outsider]));
  const memberUid = Number(execFileSync('id', ['-u', member], { encoding: 'utf8' }).trim());
  return { group, member, outsider, memberUid };
}

/** A directory for sockets that other users may traverse (root's, 0755). */
function socketDir(t: { after(fn: () => unknown): void }): string {
  const d = tempDir('vspc-unix-');
  t.after(() => d.remove());
  chmodSync(d.dir, 0o755);
  return d.dir;
}

describe('unix socket access', () => {
  before(() => assert.ok(isRoot, 'these tests chown sockets and add unix users: run them as root (as .ci/run does)'));
  test('socat on the console socket: all 256 byte values both ways; default mode 0600; peer uid in the audit line', async (t) => {
    const dir = socketDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', '  unix:', `    dir: ${dir}`]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-bytes' }, cleanup);
    const path = join(dir, 'unix-bytes');
    const d = await waitShow(ts, 'unix-bytes', (v) => v.access.unix?.listening === true && v.access.unix.path === path, 'socket up');
    assert.deepEqual({ ...d.access.unix, error: null }, { path, protocol: 'raw', owner: 'root', group: null, mode: '0600', listening: true, error: null });
    const st = lstatSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o7777, 0o600);
    assert.equal(st.uid, 0);
    assert.deepEqual(execFileSync('ls', ['-A', dir], { encoding: 'utf8' }).trim().split('\n'), ['unix-bytes'], 'no temporary files left');

    vm.send('OLD\r\n');
    await vm.barrier();
    const socat = new Child('socat', ['-', `UNIX-CONNECT:${path}`], cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'attached');
    socat.write(allBytes());
    await vm.waitForInput(256, 5000);
    assert.deepEqual(vm.input, allBytes());
    vm.send(allBytes());
    assert.deepEqual(await socat.stdout.wait(256, 5000), allBytes(), 'exactly the bytes: no greeting, no replay of OLD');
    await settle(vm);

    const line = await ts.logs.waitFor((l) => l.audit === true && l.message === 'client attached' && l.method === 'unix');
    assert.equal(line.path, path);
    assert.equal(line.socketOwner, 'root');
    assert.equal(line.socketMode, '0600');
    assert.equal(line.mode, 'readwrite', 'the lock mode');
    assert.equal(line.peerUid, 0);
    assert.equal(line.peerPid, socat.proc.pid, 'SO_PEERCRED names the very process');
    assert.match(String(line.peer), /^unix:uid=0,pid=\d+$/);
    const who = (await show(ts, 'unix-bytes')).clientList;
    assert.deepEqual(who.map((c) => c.method), ['unix']);
  });

  test('file permissions decide: a member of the socket group connects, another user gets EACCES', async (t) => {
    const users = unixUsers(t);
    const dir = socketDir(t);
    const { ts, cleanup } = await startFromFile(t, [
      'access:',
      `  unix: { dir: ${dir} }`,
      'vms:',
      '  - match: unix-perm',
      `    access: { unix: { group: ${users.group}, mode: "0660" } }`,
    ]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-perm' }, cleanup);
    const path = join(dir, 'unix-perm');
    const d = await waitShow(ts, 'unix-perm', (v) => v.access.unix?.listening === true && v.access.unix.path === path, 'socket up');
    assert.equal(d.access.unix!.group, users.group);
    assert.equal(d.access.unix!.mode, '0660');
    assert.equal(lstatSync(path).mode & 0o777, 0o660);

    const member = new Child('runuser', ['-u', users.member, '--', 'socat', '-', `UNIX-CONNECT:${path}`], cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'the member attached');
    vm.send('for the group\r\n');
    await member.stdout.wait('for the group', 5000);
    member.write('typed by member');
    await vm.waitForInput('typed by member', 5000);
    const line = await ts.logs.waitFor((l) => l.audit === true && l.message === 'client attached' && l.method === 'unix' && l.peerUid === users.memberUid);
    assert.equal(line.socketGroup, users.group);
    assert.equal(line.socketMode, '0660');

    const outsider = new Child('runuser', ['-u', users.outsider, '--', 'socat', '-', `UNIX-CONNECT:${path}`], cleanup);
    assert.notEqual(await outsider.code(), 0);
    assert.match(outsider.stderr, /Permission denied/);
    assert.equal(hub.clients.size, 1, 'only the member');
  });

  test('a stale socket left by a crash is replaced; a symlink or a regular file at the path is not, and the console is still served', async (t) => {
    const dir = socketDir(t);
    // A socket file nobody listens on (a crashed process).
    execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', join(dir, 'unix-stale')]);
    assert.ok(lstatSync(join(dir, 'unix-stale')).isSocket());
    const victim = join(dir, 'victim.txt');
    writeFileSync(victim, 'keep me\n');
    symlinkSync(victim, join(dir, 'unix-link'));
    writeFileSync(join(dir, 'unix-file'), 'a regular file\n');
    const { ts, cleanup } = await startFromFile(t, ['access:', '  unix:', `    dir: ${dir}`]);

    const stale = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-stale' }, cleanup);
    await waitShow(ts, 'unix-stale', (v) => v.access.unix?.listening === true && v.access.unix.path === join(dir, 'unix-stale'), 'stale socket replaced');
    await ts.logs.waitFor((l) => l.message === 'replaced a stale socket file' && l.path === join(dir, 'unix-stale'));
    const s = new Child('socat', ['-', `UNIX-CONNECT:${join(dir, 'unix-stale')}`], cleanup);
    await waitUntil(() => stale.hub.clients.size === 1, 5000, 'attached through the new socket');
    s.kill();

    const linked = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-link' }, cleanup);
    const dl = await waitShow(ts, 'unix-link', (v) => (v.access.unix?.error ?? '').includes('symbolic link'), 'symlink refused');
    assert.equal(dl.access.unix!.listening, false);
    assert.match(dl.listenError ?? '', /^unix: .*not a socket/);
    assert.equal(readlinkSync(join(dir, 'unix-link')), victim, 'the link is left alone');
    assert.equal(readFileSync(victim, 'utf8'), 'keep me\n');
    await ts.logs.waitFor((l) => l.errorCode === 'VSPC_ACCESS_PATH_OCCUPIED' && l.vm === 'unix-link');
    // Still served on its telnet port.
    const user = await ts.connectUser(linked.hub.identity.tcpPort, cleanup);
    linked.vm.send('telnet still works\r\n');
    await user.waitFor('telnet still works', 3000);

    await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-file' }, cleanup);
    await waitShow(ts, 'unix-file', (v) => (v.access.unix?.error ?? '').includes('regular file'), 'regular file refused');
    assert.equal(readFileSync(join(dir, 'unix-file'), 'utf8'), 'a regular file\n');
  });

  test('a missing directory is an error until it appears; an unsafe one is refused', async (t) => {
    const base = socketDir(t);
    const missing = join(base, 'not-yet');
    const open = join(base, 'world-writable');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const { ts, cleanup } = await startFromFile(t, [
      'access:',
      `  unix: { dir: ${missing} }`,
      'vms:',
      '  - match: unix-unsafe',
      `    access: { unix: { dir: ${open} } }`,
    ]);
    const { hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-missing' }, cleanup);
    const d = await waitShow(ts, 'unix-missing', (v) => (v.access.unix?.error ?? '').includes('does not exist'), 'missing directory reported');
    assert.equal(d.access.telnet?.listening, true, 'the console is still served');
    await ts.logs.waitFor((l) => l.errorCode === 'VSPC_ACCESS_NO_DIRECTORY' && l.vm === 'unix-missing');
    await ts.connectUser(hub.identity.tcpPort, cleanup);

    await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-unsafe' }, cleanup);
    const u = await waitShow(ts, 'unix-unsafe', (v) => (v.access.unix?.error ?? '').includes('writable by everyone'), 'unsafe directory refused');
    assert.equal(u.access.unix!.listening, false);
    assert.equal(execFileSync('ls', ['-A', open], { encoding: 'utf8' }), '', 'nothing created there');

    // A directory owned by someone else is not vspc's either.
    chmodSync(open, 0o755);
    chownSync(open, 65534, 65534);
    await waitShow(ts, 'unix-unsafe', (v) => (v.access.unix?.error ?? '').includes('belongs to uid 65534'), 'foreign directory refused');

    // The missing directory appears: the retry (200 ms in tests) binds the socket.
    mkdirSync(missing, { mode: 0o755 });
    await waitShow(ts, 'unix-missing', (v) => v.access.unix?.listening === true, 'bound once the directory exists');
    assert.ok(lstatSync(join(missing, 'unix-missing')).isSocket());
  });

  test('protocol: telnet speaks telnet on the socket; forget and shutdown remove the sockets', async (t) => {
    const dir = socketDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', `  unix: { dir: ${dir}, protocol: telnet }`]);
    const a = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-telnet' }, cleanup);
    const b = await ts.connectVm({ uuid: esxiUuid().text, name: 'unix-gone' }, cleanup);
    const pa = join(dir, 'unix-telnet');
    const pb = join(dir, 'unix-gone');
    await waitShow(ts, 'unix-telnet', (v) => v.access.unix?.listening === true && v.access.unix.protocol === 'telnet', 'telnet socket up');
    await waitShow(ts, 'unix-gone', (v) => v.access.unix?.listening === true, 'second socket up');
    const sock = net.connect({ path: pa });
    cleanup.add(() => sock.destroy());
    let got = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => (got = Buffer.concat([got, d])));
    await waitUntil(() => got.includes('[vspc: unix-telnet'), 5000, 'telnet greeting');
    assert.equal(got[0], 0xff, 'telnet negotiation first (IAC)');
    await waitUntil(() => a.hub.clients.size === 1, 5000, 'attached');
    assert.deepEqual((await show(ts, 'unix-telnet')).clientList.map((c) => c.method), ['unix']);

    const res = await fetch(`http://${ts.adminAddress}/api/v1/forget?vm=unix-gone`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    await waitUntil(() => !existsSync(pb), 5000, 'forgotten console socket removed');
    void b;
    await ts.close();
    assert.equal(existsSync(pa), false, 'shutdown removed the socket');
    assert.equal(execFileSync('ls', ['-A', dir], { encoding: 'utf8' }), '');
  });
});
