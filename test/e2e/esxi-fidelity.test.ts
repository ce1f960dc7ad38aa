/**
 * Real-ESXi fidelity end to end (issue 12): BREAK from the VM reaches telnet clients
 * and the console log; RFC 2217 line state reaches `show`; a client attaching while
 * a migrating VM's source has left is told nothing; the vMotion secret length option.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { vspcAdmin } from '../support/cli.js';
import { SimulatedVm } from '../support/sim/index.js';
import { BRK, Option } from '../../src/protocol/telnet/constants.js';
import { formatUuid } from '../../src/util/uuid.js';
import { configFromOptions } from '../../src/config/options.js';
import { ConfigError } from '../../src/errors.js';
import type { VmDetailView } from '../../src/admin/views.js';

describe('BREAK from the VM', () => {
  test('IAC BRK from the host reaches every telnet client as IAC BRK, between the same bytes, and the console log as a line', async (t) => {
    const logDir = tempDir('vspc-brk-logs-');
    t.after(() => logDir.remove());
    const { ts, cleanup } = await startServer(t, { config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'brk' }, cleanup);
    const users = [await ts.connectUser(hub.identity.tcpPort, cleanup), await ts.connectUser(hub.identity.tcpPort, cleanup)];
    const seen = users.map((u) => {
      const order: string[] = [];
      u.on('data', (d) => order.push(`${u.commands.filter((c) => c === BRK).length}:${d.toString('latin1')}`));
      return { u, order, mark: u.mark() };
    });
    vm.send('a');
    vm.session.sendCommand(BRK);
    vm.send('b');
    for (const { u, order, mark } of seen) {
      await u.waitFor('b', 3000, mark);
      assert.deepEqual(u.commands.filter((c) => c === BRK), [BRK], 'one IAC BRK');
      // Every data event carries the number of BRKs seen before it: 'a' before, 'b' after.
      const joined = order.join('|');
      assert.match(joined, /^0:[^|]*a/);
      assert.match(joined, /1:b$/);
      assert.equal(u.received.subarray(mark).toString('latin1'), 'ab', 'no byte added for the BREAK');
    }
    const path = join(logDir.dir, `${formatUuid(id.hex)}.log`);
    const text = () => (existsSync(path) ? readFileSync(path, 'latin1') : '');
    await waitUntil(() => text().includes('BREAK from the VM'), 5000, 'BREAK line in the console log');
    assert.match(text(), new RegExp(`a\\r\\n\\[vspc \\S+ BREAK from the VM \\(${vm.peerName.replace(/\./g, '\\.')}\\)\\]\\r\\nb`));
  });
});

describe('RFC 2217 state in show', () => {
  test('SET-CONTROL, suspend and SIGNATURE are answered and shown by the admin API and vspc-admin show', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'line', comPort: true, uart: { baudRate: 9600 } }, cleanup);
    await waitUntil(() => vm.uartAcks.length === 4, 3000, 'UART acknowledged');
    const sb = (...p: number[]) => vm.session.sendSubnegotiation(Option.COM_PORT, Buffer.from(p));
    sb(5, 3); // hardware flow control
    sb(5, 9); // DTR off
    sb(5, 5); // BREAK on
    sb(0, ...Buffer.from('VMware ESXi 8.0.2'));
    sb(0); // what is vspc?
    sb(8); // suspend
    await waitUntil(() => vm.uartAcks.some((a) => a.code === 100), 3000, 'SIGNATURE answered');
    assert.deepEqual(
      vm.uartAcks.slice(4).map((a) => [a.code, ...(a.code === 100 ? [] : [...a.value])]),
      [[105, 3], [105, 9], [105, 5], [100]],
    );
    assert.match(vm.uartAcks.find((a) => a.code === 100)!.value.toString(), /^vspc \d/);
    await waitUntil(() => hub.lineState?.suspended === true, 3000, 'suspended recorded');
    const d = await ts.api<VmDetailView>('/api/v1/show?vm=line');
    assert.deepEqual(d.serialLine, {
      break: true,
      flowControl: 'hardware',
      inboundFlowControl: null,
      dtr: false,
      rts: null,
      suspended: true,
      signature: 'VMware ESXi 8.0.2',
      summary: 'BREAK on, DTR off, RTS ?, flow hardware, input suspended by the VM',
    });
    const shown = await vspcAdmin(ts.adminAddress, ['show', 'line']);
    assert.equal(shown.code, 0);
    assert.match(shown.stdout, /serial line: +BREAK on, DTR off, RTS \?, flow hardware, input suspended by the VM/);
    assert.match(shown.stdout, /VM signature: +VMware ESXi 8\.0\.2/);
    // Input typed while suspended waits for RESUME, in order.
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    user.send('held');
    await waitUntil(() => hub.bytesToVm === 4, 3000, 'input taken by the hub');
    assert.equal(vm.input.length, 0);
    sb(9);
    await vm.waitForInput('held', 3000);
  });
});

describe('vMotion: nothing injected around a switch-over', () => {
  test('a client that attaches after the source left and before COMPLETE is told nothing, sees the destination\'s output', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'mid' }, cleanup);
    const seq = Buffer.from([9, 9]);
    const r = await vm.vmotionBegin(seq);
    assert.equal(r.kind, 'goahead');
    await vm.close();
    await ts.logs.waitFor((l) => l.message === 'VM connection closed' && l.peer === vm.peerName, 3000);
    assert.equal(hub.state, 'migrating');
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup, '[vspc: mid');
    const mark = user.mark();
    const dest = await SimulatedVm.connect({ host: '127.0.0.1', port: ts.proxyPort, uuid: id.text, name: 'mid', skipDoProxy: true });
    cleanup.add(() => dest.destroy());
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true);
    dest.vmotionComplete(seq);
    dest.send('hello');
    await user.waitFor('hello', 3000, mark);
    assert.equal(user.received.subarray(mark).toString('latin1'), 'hello');
    assert.doesNotMatch(user.text, /not connected|disconnected|VM connected/);
  });
});

describe('--vmotion-secret-bytes', () => {
  test('default 8; 4-7 accepted with a warning; outside 4-64 refused', () => {
    assert.equal(configFromOptions({}).vmotionSecretBytes, 8);
    const warnings: string[] = [];
    assert.equal(configFromOptions({ vmotionSecretBytes: '4' }, {}, warnings).vmotionSecretBytes, 4);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /^--vmotion-secret-bytes: 4 bytes is below the 8/);
    const quiet: string[] = [];
    assert.equal(configFromOptions({ vmotionSecretBytes: '64' }, {}, quiet).vmotionSecretBytes, 64);
    assert.deepEqual(quiet, []);
    for (const bad of ['3', '65', '0', 'eight']) {
      assert.throws(() => configFromOptions({ vmotionSecretBytes: bad }), (e) => e instanceof ConfigError && /--vmotion-secret-bytes/.test(e.message), bad);
    }
  });

  test('the configured length is what GOAHEAD carries', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { vmotionSecretBytes: 4 } });
    const { vm } = await ts.connectVm({ uuid: esxiUuid().text, name: 'short' }, cleanup);
    const r = await vm.vmotionBegin(Buffer.from([1, 2, 3, 4]));
    assert.equal(r.kind === 'goahead' && r.secret.length, 4);
  });
});
