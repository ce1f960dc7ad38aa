/**
 * The SSH front door on a terminal: the real OpenSSH client in tmux, driven by keys
 * and checked on the pane's text (polled, bounded). The numbered menu (a web* key sees
 * only web consoles), selection by number, typing through to the VM, the Ctrl-] menu
 * (who, break, detach back to the menu), `~B` arriving at the VM as a serial BREAK,
 * `~.`, straight in when the key reaches a single console, and a menu session ended
 * when a reload withdraws its key.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BRK } from '../../src/protocol/telnet/constants.js';
import { esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { haveOpenSsh, haveTmux, keyLine, makeKey, sshArgs, startSshServer, TmuxPane } from '../support/ssh.js';

// A missing prerequisite fails the suite with this message (npm test installs them as root).
const missing = haveOpenSsh() && haveTmux() ? null : 'the OpenSSH client or tmux is not installed (test/support/guest/ensure-deps.sh)';

describe('SSH front door on a terminal (tmux)', () => {
  before(() => assert.ok(missing === null, missing ?? ''));
  test('menu: only permitted consoles, pick by number, type, Ctrl-] who / break / detach back, ~B is a BREAK, q quits', async (t) => {
    const keys = tempDir('vspc-ssh-term-');
    t.after(() => keys.remove());
    const wendy = makeKey(keys.dir, 'wendy');
    const s = await startSshServer(t, [keyLine(wendy, 'vspc-user="wendy",vspc-consoles="web*"')]);
    const web01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web02' }, s.cleanup);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'db01' }, s.cleanup);
    web01.vm.send('web01 login: ');
    // A telnet user watching web01, shown in the menu and by `w`.
    const watcher = await s.ts.connectUser(web01.hub.identity.tcpPort, s.cleanup);

    const pane = TmuxPane.start(['ssh', ...sshArgs(s, wendy, ['-t', 'console@127.0.0.1'])], s.cleanup);
    const menu = await pane.waitFor(/to quit: $/m);
    assert.match(menu, /consoles for wendy \(key SHA256:/);
    assert.match(menu, /^1\s+web01\s+esxi\s+connected\s+someone \(readwrite, telnet\)$/m);
    assert.match(menu, /^2\s+web02\s+esxi\s+connected\s+-$/m);
    assert.ok(!menu.includes('db01'), 'db01 is not offered to a web* key');

    pane.type('1');
    pane.keys('Enter');
    await pane.waitFor(/web01 login: /);
    await pane.waitFor(/READWRITE as wendy; Ctrl-\] for the menu, ~\. to disconnect/);
    const from = web01.vm.input.length;
    pane.type('root');
    pane.keys('Enter');
    await web01.vm.waitForInput('root\r', 5000, from);

    pane.keys('C-]');
    await pane.waitFor(/d detach, b break, w who, c continue/);
    pane.type('w');
    const who = await pane.waitFor(/\(you\)/);
    assert.match(who, /#\d+ wendy@127\.0\.0\.1:\d+ \(ssh, key SHA256:\S+, READWRITE since \S+\) \(you\)/);
    assert.match(who, /#\d+ 127\.0\.0\.1:\d+ \(READWRITE since /);

    // ~B: the SSH client's own break request (RFC 4335) becomes a serial BREAK.
    pane.keys('Enter');
    pane.type('~B');
    await waitUntil(() => web01.vm.commands.filter((c) => c === BRK).length === 1, 5000, 'BREAK at the VM');
    // Ctrl-] b: the menu's break, as vspc-admin connect.
    pane.keys('C-]');
    pane.type('b');
    await waitUntil(() => web01.vm.commands.filter((c) => c === BRK).length === 2, 5000, 'second BREAK at the VM');

    const menuAfterDetach = (n: number) => (text: string) => text.split('[vspc: detached]').length === n + 1 && /to quit: $/.test(text);
    pane.keys('C-]');
    pane.type('d');
    await pane.waitFor(menuAfterDetach(1));
    await waitUntil(() => web01.hub.clients.size === 1, 5000, 'wendy detached, the watcher stays');
    assert.ok(!watcher.closed);

    pane.type('web02');
    pane.keys('Enter');
    await pane.waitFor(/\[vspc: web02 \(uuid /);
    pane.keys('C-]');
    pane.type('d');
    await pane.waitFor(menuAfterDetach(2));
    pane.type('q');
    pane.keys('Enter');
    assert.equal(await pane.waitExit(), 0);
  });

  test('straight in when the key reaches one console; ~. ends the session', async (t) => {
    const keys = tempDir('vspc-ssh-term-');
    t.after(() => keys.remove());
    const only = makeKey(keys.dir, 'only');
    const s = await startSshServer(t, [keyLine(only, 'vspc-user="oscar",vspc-consoles="db01"')]);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    const db01 = await s.ts.connectVm({ uuid: esxiUuid().text, name: 'db01' }, s.cleanup);
    db01.vm.send('db01 console\r\n');
    const pane = TmuxPane.start(['ssh', ...sshArgs(s, only, ['-t', 'console@127.0.0.1'])], s.cleanup);
    const screen = await pane.waitFor(/READWRITE as oscar/);
    assert.match(screen, /db01 console/);
    assert.ok(!screen.includes('to quit'), 'no menu');
    await waitUntil(() => db01.hub.clients.size === 1, 5000, 'attached');
    pane.keys('Enter');
    pane.type('~.');
    await pane.waitExit();
    await waitUntil(() => db01.hub.clients.size === 0, 5000, 'gone from the console');
  });

  test('a reload that removes the key ends a session waiting at the menu, with a message', async (t) => {
    const keys = tempDir('vspc-ssh-term-');
    t.after(() => keys.remove());
    const victor = makeKey(keys.dir, 'victor');
    const other = makeKey(keys.dir, 'other');
    const s = await startSshServer(t, [keyLine(victor, 'vspc-user="victor"'), keyLine(other)]);
    s.ts.server.reloadConfig = () => ({ file: null, applied: [], restartNeeded: [] });
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web01' }, s.cleanup);
    await s.ts.connectVm({ uuid: esxiUuid().text, name: 'web02' }, s.cleanup);
    const pane = TmuxPane.start(['ssh', ...sshArgs(s, victor, ['-t', 'console@127.0.0.1'])], s.cleanup);
    await pane.waitFor(/to quit: $/m);
    s.writeKeys([keyLine(other)]);
    const report = s.ts.server.reload();
    assert.deepEqual(report.applied, ['sshAuthorizedKeys']);
    await pane.waitFor(/your key no longer has access to vspc/);
    let status: number;
    try {
      status = await pane.waitExit();
    } catch (err) {
      const ssh = s.ts.logs.filter((l) => l.side === 'ssh').map((l) => JSON.stringify(l));
      throw new Error(`${(err as Error).message}\nvspc's SSH log:\n${ssh.join('\n')}\npane: ${pane.debug()}`);
    }
    assert.equal(status, 4);
  });
});
