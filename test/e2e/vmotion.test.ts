import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SimulatedVm } from '../support/sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { Cleanup, TestServer, startServer, esxiUuid, settle, waitUntil } from '../support/server.js';
import { destination, isSourceOf, migrate } from '../support/vmotion.js';

describe('vMotion end to end (simulator, real sockets)', () => {
  test('success: GOAHEAD quickly, input held and delivered first, old connection closed, clients see one stream', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'mover' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    vm.send('before-');
    await user.waitFor('before-');

    const seq = Buffer.from([0x00, 0xff, 0x10, 0xff]);
    const t0 = performance.now();
    const r = await vm.vmotionBegin(seq);
    const goaheadMs = performance.now() - t0;
    assert.equal(r.kind, 'goahead');
    const secret = (r as { secret: Buffer }).secret;
    assert.ok(secret.length >= 8, 'secret of 8 bytes or more');
    assert.ok(goaheadMs < 1000, `GOAHEAD within milliseconds (took ${goaheadMs.toFixed(1)} ms)`);
    assert.equal((await ts.ports())[0].state, 'migrating');

    user.send('typed-while-paused');
    await settle(vm, user);
    assert.equal(vm.input.includes(Buffer.from('typed-while-paused')), false, 'held input must not reach the paused VM');

    const dest = await destination(ts, cleanup, id.text, 'mover');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, secret])), true);
    user.send('|more');
    dest.vmotionComplete(seq);
    dest.send('after');
    await dest.waitForInput('typed-while-paused|more', 3000);
    await user.waitFor('before-after', 3000);
    await vm.whenClosed(3000);

    user.send('|direct');
    await dest.waitForInput('typed-while-paused|more|direct', 3000);
    const [row] = await ts.ports();
    assert.equal(row.port, hub.identity.tcpPort);
    assert.equal(row.name, 'mover');
    assert.equal(row.connected, true);
    assert.equal(row.state, 'connected');
    assert.equal(row.peer, `127.0.0.1:${dest.localPort}`);
    assert.equal(user.closed, false);
    assert.equal(ts.server.vmotion.counters.completed, 1);
    assert.ok(ts.logs.find((l) => l.message === 'vMotion completed' && typeof l.durationMs === 'number' && l.heldBytes === 23));
  });

  test('NOTNOW while the concentrator is shutting down; the VM carries on', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const { vm, hub } = await ts.connectVm({ uuid: esxiUuid().text, name: 'stay' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    ts.server.vmotion.refuseNew();
    const r = await vm.vmotionBegin(Buffer.from([1]));
    assert.equal(r.kind, 'notnow');
    user.send('still-here');
    await vm.waitForInput('still-here', 3000);
    assert.ok(ts.logs.find((l) => l.message === 'vMotion refused (NOTNOW)' && l.reason === 'concentrator is shutting down'));
  });

  test('ABORT: held input goes to the source, which carries on; a waiting peer is closed', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'abort' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const seq = Buffer.from([7, 7]);
    const r = await vm.vmotionBegin(seq);
    user.send('held');
    const dest = await destination(ts, cleanup, id.text, 'abort');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true);
    vm.vmotionAbort();
    await vm.waitForInput('held', 3000);
    await dest.whenClosed(3000);
    user.send('+next');
    await vm.waitForInput('held+next', 3000);
    vm.send('source-output');
    await user.waitFor('source-output', 3000);
    assert.ok(isSourceOf(hub, vm));
    assert.equal(ts.server.vmotion.pending, 0);
  });

  test('COMPLETE from the source and ABORT from the peer have no effect', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'sides' }, cleanup);
    const seq = Buffer.from([3]);
    const r = await vm.vmotionBegin(seq);
    const dest = await destination(ts, cleanup, id.text, 'sides');
    await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret]));
    vm.vmotionComplete(seq);
    dest.vmotionAbort();
    await Promise.all([vm.barrier(), dest.barrier()]);
    assert.ok(isSourceOf(hub, vm));
    assert.equal(hub.state, 'migrating');
    dest.vmotionComplete(seq);
    await waitUntil(() => isSourceOf(hub, dest), 3000, 'completed by the real peer');
  });

  test('a wrong secret gets no PEER-OK, never reaches the VM, and is logged as a security event', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'guarded' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const seq = Buffer.from([0xff, 0xff]);
    const r = await vm.vmotionBegin(seq);
    const secret = (r as { secret: Buffer }).secret;
    const forged = Buffer.from(secret);
    forged[0] ^= 0x01;
    const attacker = await destination(ts, cleanup, id.text, 'guarded');
    assert.equal(await attacker.vmotionPeer(Buffer.concat([seq, forged]), 500), false);
    await attacker.whenClosed(3000);
    attacker.vmotionComplete(seq);
    const line = ts.logs.find((l) => l.security === true);
    assert.ok(line, 'security log line');
    assert.match(String(line.message), /VMOTION-PEER/);
    assert.ok(isSourceOf(hub, vm));
    user.send('x');
    await user.barrier(); // vspc has handled the 'x' (and the attacker's connection is gone)
    assert.equal(attacker.input.length, 0, 'the attacker never receives client input');
    // The genuine destination still completes.
    const dest = await destination(ts, cleanup, id.text, 'guarded');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, secret])), true);
    dest.vmotionComplete(seq);
    await dest.waitForInput('x', 3000);
  });

  test('timeouts: GOAHEAD without a peer, and PEER-OK without COMPLETE, are cleaned up', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { vmotionTimeoutMs: 200 } });
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'slow' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    await vm.vmotionBegin(Buffer.from([1]));
    user.send('a');
    await vm.waitForInput('a', 2000); // released to the source on timeout
    assert.equal(ts.server.vmotion.pending, 0);

    const seq = Buffer.from([2]);
    // Connected first: only the PEER's round trip runs against the 200 ms deadline.
    const dest = await destination(ts, cleanup, id.text, 'slow');
    const r = await vm.vmotionBegin(seq);
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true);
    await dest.whenClosed(2000);
    assert.equal(ts.server.vmotion.pending, 0);
    assert.equal(ts.server.vmotion.counters['timed-out'], 2);
    assert.ok(isSourceOf(hub, vm));
    assert.equal(hub.state, 'connected');
  });

  test('source dies after GOAHEAD: the destination completes and gets the held input', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'crash' }, cleanup);
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const seq = Buffer.from([9]);
    const r = await vm.vmotionBegin(seq);
    user.send('kept');
    vm.destroy();
    await waitUntil(() => hub.source === null, 3000, 'source gone');
    const dest = await destination(ts, cleanup, id.text, 'crash');
    assert.equal(await dest.vmotionPeer(Buffer.concat([seq, (r as { secret: Buffer }).secret])), true);
    dest.vmotionComplete(seq);
    await dest.waitForInput('kept', 3000);
    dest.send('alive');
    await user.waitFor('alive', 3000);
    assert.equal(ts.server.vmotion.pending, 0);
  });

  test('peer dies after PEER-OK: a second peer completes; both dying leaves nothing pending', async (t) => {
    const { ts, cleanup } = await startServer(t, { config: { vmotionTimeoutMs: 300 } });
    const id = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: id.text, name: 'flaky' }, cleanup);
    const seq = Buffer.from([4]);
    // The peers connect first: only protocol round trips run against the 300 ms deadline.
    const p1 = await destination(ts, cleanup, id.text, 'flaky');
    const p2 = await destination(ts, cleanup, id.text, 'flaky');
    const r = await vm.vmotionBegin(seq);
    const full = Buffer.concat([seq, (r as { secret: Buffer }).secret]);
    assert.equal(await p1.vmotionPeer(full), true);
    p1.destroy();
    await ts.logs.waitFor((l) => l.peer === p1.peerName && l.message === 'VM connection closed', 3000, 0, 'the first peer gone');
    assert.equal(await p2.vmotionPeer(full), true);
    p2.vmotionComplete(seq);
    await waitUntil(() => isSourceOf(hub, p2), 3000, 'second peer is the source');

    // Both ends die mid-migration: the timeout clears everything.
    const seq2 = Buffer.from([5]);
    const p3 = await destination(ts, cleanup, id.text, 'flaky');
    const r2 = await p2.vmotionBegin(seq2);
    assert.equal(await p3.vmotionPeer(Buffer.concat([seq2, (r2 as { secret: Buffer }).secret])), true);
    p2.destroy();
    p3.destroy();
    await waitUntil(() => ts.server.vmotion.pending === 0, 3000, 'no pending vMotion');
    assert.equal(hub.state, 'disconnected');
    // And the VM can come back normally afterwards, on the same port.
    const { hub: again } = await ts.connectVm({ uuid: id.text, name: 'flaky' }, cleanup);
    assert.equal(again.identity.tcpPort, hub.identity.tcpPort);
  });

  test('several serial ports of one VM migrate together, each by its own seq+secret', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const id = esxiUuid();
    const uris = ['vSPC.py?port=com1', 'vSPC.py?port=com2'];
    const ports = await Promise.all(uris.map((u) => ts.connectVm({ uuid: id.text, name: 'twin', serviceUri: u }, cleanup)));
    const users = await Promise.all(ports.map((p) => ts.connectUser(p.hub.identity.tcpPort, cleanup)));
    const seq = Buffer.from([1, 2, 3]);
    const begun = await Promise.all(ports.map((p) => p.vm.vmotionBegin(seq)));
    const dests = await Promise.all(uris.map((u) => destination(ts, cleanup, id.text, 'twin', u)));
    // Peers present their secrets in the opposite order.
    assert.equal(await dests[1].vmotionPeer(Buffer.concat([seq, (begun[1] as { secret: Buffer }).secret])), true);
    assert.equal(await dests[0].vmotionPeer(Buffer.concat([seq, (begun[0] as { secret: Buffer }).secret])), true);
    dests.forEach((d) => d.vmotionComplete(seq));
    await waitUntil(() => ports.every((p, i) => isSourceOf(p.hub, dests[i])), 3000, 'both ports moved');
    dests[0].send('from-com1');
    dests[1].send('from-com2');
    await users[0].waitFor('from-com1', 3000);
    await users[1].waitFor('from-com2', 3000);
    assert.equal(users[0].text.includes('from-com2'), false);
    assert.equal(users[1].text.includes('from-com1'), false);
  });

  test('zero loss: data both ways while the VM migrates back and forth 300 times', async (t) => {
    const { ts, cleanup } = await startServer(t, { logLevel: 'warn' });
    const id = esxiUuid();
    const ident = { uuid: id.text, name: 'pingpong' };
    const first = await ts.connectVm(ident, cleanup);
    const hub = first.hub;
    const user = await ts.connectUser(hub.identity.tcpPort, cleanup);
    const startMark = user.mark();

    // The VM: numbered output lines on whichever connection is live, paused from BEGIN to COMPLETE.
    let vmLine = 0;
    let clientLine = 0;
    const line = (p: string, n: number) => `${p}${String(n).padStart(7, '0')}\n`;
    let current = first.vm;
    const inputs: SimulatedVm[] = [current];
    let paused = false;
    let running = true;
    const vmWriter = setInterval(() => {
      if (!paused && running) for (let k = 0; k < 5; k++) current.send(line('v', ++vmLine));
    }, 1);
    const clientWriter = setInterval(() => {
      if (running) for (let k = 0; k < 5; k++) user.send(line('c', ++clientLine));
    }, 1);
    cleanup.add(() => {
      clearInterval(vmWriter);
      clearInterval(clientWriter);
    });

    // Between migrations: a line each way through the live connection, and both arrived.
    const flow = async () => {
      current.send(line('v', ++vmLine));
      user.send(line('c', ++clientLine));
      await user.waitFor(vmLine * line('v', 0).length, 5000, startMark);
      await current.waitForInput(line('c', clientLine), 5000);
    };
    // While the VM is paused: a line typed, and vspc has it (held).
    const typeWhileHeld = async () => {
      user.send(line('c', ++clientLine));
      await user.barrier();
    };

    const ROUNDS = 300;
    let secretsWithFF = 0;
    for (let i = 0; i < ROUNDS; i++) {
      await flow();
      paused = true; // The VM stops before the switch-over (what BEGIN announces).
      const seq = Buffer.from([i & 0xff, 0xff, (i >> 8) & 0xff]);
      const { dest, secret } = await migrate(ts, cleanup, hub, current, seq, ident, typeWhileHeld);
      if (secret.includes(0xff)) secretsWithFF++;
      const old = current;
      current = dest;
      inputs.push(dest);
      paused = false;
      // Retired connections are closed by the server; do not keep them around.
      void old.whenClosed(3000).then(() => old.destroy(), () => old.destroy());
    }
    running = false;
    clearInterval(vmWriter);
    clearInterval(clientWriter);

    // Every VM line reaches the client exactly once, in order; every client line reaches the VM likewise.
    const expectedOut = Array.from({ length: vmLine }, (_, k) => line('v', k + 1)).join('');
    const expectedIn = Array.from({ length: clientLine }, (_, k) => line('c', k + 1)).join('');
    await waitUntil(() => user.received.length - startMark >= expectedOut.length, 15_000, 'all VM output at the client');
    await waitUntil(() => inputs.reduce((n, v) => n + v.input.length, 0) >= expectedIn.length, 15_000, 'all client input at the VM');
    const gotOut = user.received.subarray(startMark).toString('latin1');
    const gotIn = Buffer.concat(inputs.map((v) => v.input)).toString('latin1');
    assert.equal(gotOut.length, expectedOut.length, 'no VM byte lost or duplicated');
    assert.ok(gotOut === expectedOut, 'VM output in order, exactly once');
    assert.equal(gotIn.length, expectedIn.length, 'no client byte lost or duplicated');
    assert.ok(gotIn === expectedIn, 'client input in order, exactly once');
    assert.ok(vmLine > ROUNDS && clientLine > ROUNDS, 'data flowed during the run');
    assert.equal(ts.server.vmotion.counters.completed, ROUNDS);
    assert.equal(ts.server.vmotion.pending, 0);
    assert.ok(secretsWithFF > 0, 'some secrets contained 0xFF (IAC doubling inside the subnegotiation)');
    assert.equal((await ts.ports())[0].port, hub.identity.tcpPort);
  });

  test('fuzz: random migrations, disconnects and client attaches across many VMs keep the invariants', async (t) => {
    const { ts, cleanup } = await startServer(t, { ports: 16, logLevel: 'error', config: { vmotionTimeoutMs: 250 } });
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    type Vm = { ident: { uuid: string; name: string }; conn: SimulatedVm | null; hub: ConsoleHub; seqNo: number };
    const vms: Vm[] = [];
    for (let i = 0; i < 8; i++) {
      const ident = { uuid: esxiUuid().text, name: `fuzz-${i}` };
      const { vm, hub } = await ts.connectVm(ident, cleanup);
      vms.push({ ident, conn: vm, hub, seqNo: 0 });
    }
    // Each VM gets a client that records everything; every completed handoff must keep the stream exact.
    const users = await Promise.all(vms.map((v) => ts.connectUser(v.hub.identity.tcpPort, cleanup)));
    const sent = vms.map(() => [] as string[]);
    const emit = (i: number, text: string) => {
      const v = vms[i];
      if (v.conn && !v.conn.closed && isSourceOf(v.hub, v.conn)) {
        v.conn.send(text);
        sent[i].push(text);
      }
    };

    for (let step = 0; step < 120; step++) {
      const i = rand(vms.length);
      const v = vms[i];
      const action = rand(10);
      emit(i, `<${step}>`);
      if (!v.conn || v.conn.closed) {
        // Reconnect normally.
        const { vm } = await ts.connectVm(v.ident, cleanup);
        v.conn = vm;
      } else if (action < 5) {
        const seq = Buffer.from([i, ++v.seqNo & 0xff, 0xff]);
        const { dest } = await migrate(ts, cleanup, v.hub, v.conn, seq, v.ident);
        const old = v.conn;
        v.conn = dest;
        void old.whenClosed(3000).catch(() => undefined);
      } else if (action < 7) {
        // A migration that goes wrong: source begins, then the source or the peer dies, or nobody comes.
        const seq = Buffer.from([i, ++v.seqNo & 0xff]);
        const r = await v.conn.vmotionBegin(seq);
        if (r.kind === 'goahead' && rand(2) === 0) {
          const dest = await destination(ts, cleanup, v.ident.uuid, v.ident.name);
          await dest.vmotionPeer(Buffer.concat([seq, r.secret]));
          dest.destroy();
        }
        if (rand(2) === 0) v.conn.vmotionAbort();
      } else if (action < 8) {
        v.conn.destroy();
        v.conn = null;
      } else {
        const u = await ts.connectUser(v.hub.identity.tcpPort, cleanup);
        cleanup.add(() => u.destroy());
      }
      // Invariant: at most one active connection per VM serial port, and it is the one we believe.
      for (const w of vms) {
        if (w.hub.source && w.conn && !w.conn.closed && w.hub.state !== 'migrating') {
          assert.ok(isSourceOf(w.hub, w.conn), `${w.ident.name}: the hub's source is the live connection`);
        }
      }
    }
    // After the timeouts nothing is left pending, and each VM port has at most one source.
    await waitUntil(() => ts.server.vmotion.pending === 0, 3000, 'no stuck vMotion');
    const live = ts.server.registry.all().filter((h) => h.source);
    assert.equal(new Set(live.map((h) => h.source)).size, live.length);
    // No byte lost or duplicated: each client saw exactly the VM output sent while it was attached, in order.
    for (let i = 0; i < vms.length; i++) {
      const expected = sent[i].join('');
      await waitUntil(() => (users[i].text.match(/<\d+>/g) ?? []).join('').length >= expected.length, 5000, `client ${i} output`);
      assert.equal((users[i].text.match(/<\d+>/g) ?? []).join(''), expected, `client ${i}: exact VM output`);
    }
  });
});
