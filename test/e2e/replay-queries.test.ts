/**
 * The scrollback replay without terminal queries (src/util/terminal-queries.ts): a
 * busybox prompt asks for the cursor position (`ESC [ 6 n`) each time; replayed, every
 * old question would be answered by the attaching terminal and typed into the VM. The
 * replay loses the questions and keeps the rest of the prompt; live output keeps them.
 * With a real terminal (telnet in tmux) the VM receives exactly one answer: the one to
 * the question asked after the attach.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { esxiUuid, startServer } from '../support/server.js';
import { haveTmux, TmuxPane } from '../support/ssh.js';
import { execFileSync } from 'node:child_process';

const DSR = '\x1b[6n';
/** A busybox ash prompt with colours, then its cursor position request. */
const PROMPT = `\r\n\x1b[1;32m~ #\x1b[0m ${DSR}`;

function haveTelnet(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v telnet'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

describe('scrollback replay without terminal queries', () => {
  test('the replay has the prompt without ESC [ 6 n; live output still carries it', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: `vm-${id.hex.slice(-6)}` }, cleanup);
    vm.send(`${PROMPT}ls\r\nbin  etc  proc${PROMPT}`);
    await vm.barrier(); // in the scrollback

    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    // Output is delivered in order: once the live marker is in, the replay is all in.
    vm.send('LIVE-1');
    await user.waitFor('LIVE-1', 5000);
    const replay = user.received.subarray(0, user.received.indexOf('LIVE-1')).toString('latin1');
    assert.ok(replay.includes(`\r\n\x1b[1;32m~ #\x1b[0m ls\r\nbin  etc  proc\r\n\x1b[1;32m~ #\x1b[0m `), `prompt replayed: ${JSON.stringify(replay)}`);
    assert.ok(!replay.includes(DSR), `no cursor position request in the replay: ${JSON.stringify(replay)}`);

    // Live: a program running now asks, and the client gets the question as it was sent.
    const mark = user.mark();
    vm.send(`${PROMPT}LIVE-2`);
    await user.waitFor('LIVE-2', 5000, mark);
    assert.ok(user.received.subarray(mark).toString('latin1').includes(`\x1b[0m ${DSR}LIVE-2`));
    assert.equal(vm.input.length, 0, 'the simulated client typed nothing');
  });

  test('a real terminal (telnet in tmux) answers only the live question: the VM gets one answer', async (t) => {
    assert.ok(haveTmux() && haveTelnet(), 'tmux and telnet are needed (test/support/guest/ensure-deps.sh)');
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: `vm-${id.hex.slice(-6)}` }, cleanup);
    // Three prompts in the scrollback, each with its question.
    vm.send(`${PROMPT}ls\r\nbin${PROMPT}uptime\r\nup 1 day${PROMPT}`);
    await vm.barrier();

    const pane = TmuxPane.start(['telnet', '127.0.0.1', String(hub.identity.tcpPort)], cleanup);
    await pane.waitFor(/up 1 day\n~ #/);
    // The terminal answers in order: once the answer to a live question is at the VM,
    // any answer to a replayed one would be there before it.
    vm.send('\r\nLIVE');
    await pane.waitFor(/LIVE$/);
    vm.send(DSR);
    await vm.waitForInput((b) => /\x1b\[\d+;\d+R/.test(b.toString('latin1')), 10_000);
    const input = vm.input.toString('latin1');
    const answers = input.match(/\x1b\[\d+;\d+R/g) ?? [];
    assert.equal(answers.length, 1, `one cursor position report (the live one), the VM got ${JSON.stringify(input)}`);
    assert.match(input, /^\x1b\[\d+;5R$/, `only the answer: nothing typed, ${JSON.stringify(input)}`);
  });
});
