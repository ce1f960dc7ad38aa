/**
 * Issue 12, clean console streams: a client that asks for nothing but the VM's bytes
 * (VSPC-CONTROL LOCK-REQUEST flags: no greeting, no notices, no replay; what
 * `vspc-admin connect --raw` sends) gets exactly those bytes — across its attach, the
 * VM disconnecting and coming back, and a vMotion — while a stock telnet client on the
 * same console still gets the notices people like.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TelnetUser } from '../support/sim/index.js';
import { esxiUuid, settle, startServer, waitUntil } from '../support/server.js';
import { migrate } from '../support/vmotion.js';
import { encodeControl, VSPC_CONTROL_OPTION } from '../../src/protocol/control/vspc-control.js';

const IAC = 255;
const SB = 250;
const SE = 240;
const WILL = 251;

test('a clean-stream client gets exactly the VM bytes across attach, disconnect/reconnect and vMotion', async (t) => {
  const { ts, cleanup } = await startServer(t);
  const id = esxiUuid();
  const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'clean01' }, cleanup);
  vm.send('scrollback-before-attach\r\n');
  await waitUntil(() => hub.bytesFromVm > 0, 5000, 'output before attach');

  const people = await ts.connectUser(hub.identity.tcpPort, cleanup);
  const machine = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
  cleanup.add(() => machine.destroy());
  const request = encodeControl({ kind: 'lock-request', mode: 'readwrite', force: false, user: 'robot', noReplay: true, noNotices: true, noGreeting: true });
  machine.sendRaw(Buffer.concat([Buffer.of(IAC, WILL, VSPC_CONTROL_OPTION, IAC, SB, VSPC_CONTROL_OPTION), request, Buffer.of(IAC, SE)]));
  await waitUntil(() => hub.clients.size === 2, 5000, 'the clean client attached');
  await settle(vm, machine);
  assert.equal(machine.text, '', 'no greeting, no replay');

  const expected: string[] = [];
  const say = async (text: string, from = vm) => {
    from.send(text);
    expected.push(text);
    await machine.waitFor(text, 5000);
  };
  await say('one ');
  // The VM goes away and comes back: the stock client is told, the clean one is not.
  vm.destroy();
  await waitUntil(() => hub.source === null, 5000, 'VM gone');
  await people.waitFor('VM disconnected', 5000);
  const { vm: back } = await ts.connectVm({ uuid: id.text, name: 'clean01' }, cleanup);
  await people.waitFor('VM connected', 5000);
  await say('two ', back);
  // A vMotion: nothing injected for anyone.
  const { dest } = await migrate(ts, cleanup, hub, back, Buffer.from([1, 2, 3, 4]), { uuid: id.text, name: 'clean01' });
  await say('three', dest);
  await settle(dest, machine);
  assert.equal(machine.text, expected.join(''), 'exactly the VM bytes, nothing else');
});
