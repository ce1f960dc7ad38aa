/**
 * A pty per console (`access: { pty: ... }`): a stable link that programs open as if it
 * were a serial port — socat with a raw tty, `stty -F`, and GNU screen driven through
 * tmux — data both ways, the reader going away and coming back, the link's life.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { esxiUuid, tempDir, waitUntil, settle, type Cleanup, type TestServer } from '../support/server.js';
import { Child, allBytes, show, startFromFile, waitShow } from '../support/access.js';
import { nativeAddon } from '../../src/access/common/native.js';

const hasScreen = spawnSync('sh', ['-c', 'command -v screen && command -v tmux'], { stdio: 'ignore' }).status === 0;

function ptyDir(t: { after(fn: () => unknown): void }): string {
  const d = tempDir('vspc-pty-');
  t.after(() => d.remove());
  chmodSync(d.dir, 0o755);
  return d.dir;
}

/** socat holding the link open as a raw serial line (no echo, no CR/NL translation). */
/** Until the pty endpoints have polled `n` more times (what vspc did, or did not do, with nobody or a silenced reader on the pty). */
async function polls(ts: TestServer, n: number): Promise<void> {
  const from = ts.server.ptys.pollRounds;
  await waitUntil(() => ts.server.ptys.pollRounds >= from + n, 10_000, `${n} pty polls`);
}

function serialReader(link: string, cleanup: Cleanup): Child {
  return new Child('socat', ['-', `FILE:${link},rawer`], cleanup);
}

describe('pty access', () => {
  before(() => assert.ok(nativeAddon().addon, `vspc's native addon is not built (npm ci builds it): ${nativeAddon().error}`));
  test('a program opens the link as a serial port: all 256 byte values both ways; stty -F works and its settings stay', async (t) => {
    const dir = ptyDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', `  pty: { dir: ${dir} }`]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-bytes' }, cleanup);
    const link = join(dir, 'pty-bytes');
    const d = await waitShow(ts, 'pty-bytes', (v) => v.access.pty?.device !== null && v.access.pty?.device !== undefined && v.access.pty.link === link, 'pty up');
    const device = d.access.pty!.device!;
    assert.match(device, /^\/dev\/pts\/\d+$/);
    assert.equal(readlinkSync(link), device);
    assert.equal(statSync(device).mode & 0o777, 0o600, 'default mode 0600');
    assert.equal(d.access.pty!.readerAttached, false);

    // stty on the link, as on a serial port; the speed stays for the next program.
    assert.equal(spawnSync('stty', ['-F', link, '9600'], { stdio: 'pipe' }).status, 0);
    assert.match(execFileSync('stty', ['-F', link], { encoding: 'utf8' }), /speed 9600 baud/);
    // Raw from the start: no echo (which would send the VM its own output back), no NL translation.
    const settings = execFileSync('stty', ['-F', link, '-a'], { encoding: 'utf8' });
    assert.match(settings, /-echo\b/);
    assert.match(settings, /-icanon\b/);
    assert.match(settings, /-opost\b/);

    vm.send('OLD\r\n');
    await vm.barrier();
    const reader = serialReader(link, cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'reader session attached');
    assert.equal((await show(ts, 'pty-bytes')).access.pty!.readerAttached, true);
    reader.write(allBytes());
    await vm.waitForInput(256, 5000);
    assert.deepEqual(vm.input, allBytes());
    vm.send(allBytes());
    assert.deepEqual(await reader.stdout.wait(256, 5000), allBytes(), 'exactly the bytes: no scrollback, no notices');
    await settle(vm);
    const who = (await show(ts, 'pty-bytes')).clientList;
    assert.deepEqual(who.map((c) => [c.method, c.peer]), [['pty', `pty:${link}`]]);
    const line = await ts.logs.waitFor((l) => l.audit === true && l.message === 'client attached' && l.method === 'pty');
    assert.equal(line.link, link);
    assert.equal(line.device, device);
    assert.equal(line.mode, 'readwrite', 'the lock mode');
    assert.equal(line.deviceMode, '0600');
  });

  test('the reader vanishes and comes back: output meanwhile is dropped, the next reader gets what follows; others see everything', async (t) => {
    const dir = ptyDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', `  pty: { dir: ${dir} }`]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-vanish' }, cleanup);
    const link = join(dir, 'pty-vanish');
    await waitShow(ts, 'pty-vanish', (v) => !!v.access.pty?.device, 'pty up');
    const watcher = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const first = serialReader(link, cleanup);
    await waitUntil(() => hub.clients.size === 2, 5000, 'first reader attached');
    vm.send('one\r\n');
    await first.stdout.wait('one', 5000);
    first.kill();
    await first.exit;
    await waitUntil(() => hub.clients.size === 1, 5000, 'first reader detached');
    await ts.logs.waitFor((l) => l.audit === true && l.message === 'client detached' && l.method === 'pty');
    vm.send('while nobody reads\r\n');
    await watcher.waitFor('while nobody reads', 3000);
    await settle(vm, watcher);
    await polls(ts, 3); // a few polls with nobody on the pty
    const second = serialReader(link, cleanup);
    await waitUntil(() => hub.clients.size === 2, 5000, 'second reader attached');
    vm.send('two\r\n');
    const got = await second.stdout.wait('two', 5000);
    assert.equal(got.toString('latin1'), 'two\r\n', 'nothing from while it was away');
    second.write('back');
    await vm.waitForInput('back', 5000);
    assert.equal((await show(ts, 'pty-vanish')).access.pty!.readerAttached, true);
  });

  test('a kicked reader is silent until it closes the pty; what it typed meanwhile is dropped; its next open is a new session', async (t) => {
    const dir = ptyDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', `  pty: { dir: ${dir} }`]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-kick' }, cleanup);
    const link = join(dir, 'pty-kick');
    await waitShow(ts, 'pty-kick', (v) => !!v.access.pty?.device, 'pty up');
    const reader = serialReader(link, cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'attached');
    const res = await fetch(`http://${ts.adminAddress}/api/v1/kick?vm=pty-kick`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    await waitUntil(() => hub.clients.size === 0, 5000, 'kicked');
    reader.write('typed while kicked');
    vm.send('not for the kicked one\r\n');
    await settle(vm);
    await polls(ts, 3);
    assert.equal(hub.clients.size, 0, 'not re-attached while it keeps the pty open');
    assert.equal(reader.stdout.length, 0);
    reader.kill();
    await reader.exit;
    await polls(ts, 3);
    const next = serialReader(link, cleanup);
    await waitUntil(() => hub.clients.size === 1, 5000, 'a new session');
    next.write('fresh');
    await vm.waitForInput('fresh', 5000);
    assert.doesNotMatch(vm.input.toString('latin1'), /typed while kicked/);
  });

  test('GNU screen on the link, driven through tmux: output on its screen, keystrokes to the VM', async (t) => {
    assert.ok(hasScreen, 'screen or tmux is missing (test/support/guest/ensure-deps.sh installs them)');
    const dir = ptyDir(t);
    const { ts, cleanup } = await startFromFile(t, ['access:', `  pty: { dir: ${dir} }`]);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-screen' }, cleanup);
    const link = join(dir, 'pty-screen');
    await waitShow(ts, 'pty-screen', (v) => !!v.access.pty?.device, 'pty up');
    const sock = `vspc-pty-${process.pid}-${randomBytes(3).toString('hex')}`;
    const tmux = (...args: string[]) => execFileSync('tmux', ['-L', sock, ...args], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, TERM: 'xterm' } });
    t.after(() => {
      spawnSync('tmux', ['-L', sock, 'kill-server'], { stdio: 'ignore' });
    });
    tmux('new-session', '-d', '-x', '100', '-y', '30', `screen ${link} 9600`);
    const pane = () => tmux('capture-pane', '-p');
    await waitUntil(() => hub.clients.size === 1, 10_000, 'screen opened the pty');
    vm.send('hello from the VM, said through screen\r\n');
    await waitUntil(() => pane().includes('hello from the VM, said through screen'), 10_000, 'the text on screen\'s window');
    tmux('send-keys', '-t', '0', '-l', 'typed in screen');
    await vm.waitForInput('typed in screen', 10_000);
    // Ctrl-A k y: screen closes the window, the reader is gone.
    tmux('send-keys', '-t', '0', 'C-a', 'k');
    await waitUntil(() => /kill this window/i.test(pane()), 10_000, "screen's question");
    tmux('send-keys', '-t', '0', 'y');
    await waitUntil(() => hub.clients.size === 0, 10_000, 'screen closed the pty');
  });

  test('an explicit link, group and mode; a stale link is replaced, a foreign one is not; forget and shutdown remove the links', async (t) => {
    const dir = ptyDir(t);
    const links = join(dir, 'links');
    mkdirSync(links, { mode: 0o755 });
    const custom = join(links, 'router');
    // A link left by a crash to some pty, and a link vspc must not touch.
    symlinkSync('/dev/pts/999', join(dir, 'pty-stale'));
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'keep\n');
    symlinkSync(victim, join(dir, 'pty-foreign'));
    const { ts, cleanup } = await startFromFile(t, [
      'access:',
      `  pty: { dir: ${dir} }`,
      'vms:',
      '  - match: pty-custom',
      `    access: { pty: { link: ${custom}, group: tty, mode: "0660" } }`,
    ]);
    const c = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-custom' }, cleanup);
    const d = await waitShow(ts, 'pty-custom', (v) => !!v.access.pty?.device && v.access.pty.link === custom, 'custom link up');
    const dev = statSync(d.access.pty!.device!);
    assert.equal(dev.mode & 0o777, 0o660);
    assert.equal(dev.gid, Number(execFileSync('getent', ['group', 'tty'], { encoding: 'utf8' }).split(':')[2]));
    assert.equal(d.access.pty!.group, 'tty');
    assert.equal(existsSync(join(dir, 'pty-custom')), false, 'no link in the default directory');

    await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-stale' }, cleanup);
    const s = await waitShow(ts, 'pty-stale', (v) => !!v.access.pty?.device && v.access.pty.link === join(dir, 'pty-stale'), 'stale link replaced');
    assert.equal(readlinkSync(join(dir, 'pty-stale')), s.access.pty!.device);

    const f = await ts.connectVm({ uuid: esxiUuid().text, name: 'pty-foreign' }, cleanup);
    await waitShow(ts, 'pty-foreign', (v) => (v.access.pty?.error ?? '').includes(`symbolic link to ${victim}`), 'foreign link refused');
    assert.equal(readlinkSync(join(dir, 'pty-foreign')), victim);
    const user = await ts.connectUser(f.hub.identity.tcpPort, cleanup);
    f.vm.send('served anyway\r\n');
    await user.waitFor('served anyway', 3000);

    const res = await fetch(`http://${ts.adminAddress}/api/v1/forget?vm=pty-custom`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    await waitUntil(() => !existsSync(custom) && lstatSync(links).isDirectory(), 5000, 'forgotten console link removed');
    void c;
    await ts.close();
    assert.equal(existsSync(join(dir, 'pty-stale')), false, 'shutdown removed the link');
    assert.equal(readlinkSync(join(dir, 'pty-foreign')), victim, 'still not touched');
  });
});
