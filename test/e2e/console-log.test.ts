/**
 * Console logs and the audit log, end to end: a simulated ESXi VM's output lands in its
 * console log file (binary-exact, with connect/disconnect lines) whether or not anyone
 * is attached; a telnet client's attach and detach are audit lines with peer and mode
 * and timestamp lines in the file; forget closes the file; shutdown flushes.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TestServer, Cleanup, esxiUuid, binaryPayload, tempDir, waitUntil } from '../support/server.js';
import { formatUuid } from '../../src/util/uuid.js';

const STAMP = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`;

function fileOf(dir: string, hex: string): string {
  return join(dir, `${formatUuid(hex)}.log`);
}

function read(path: string): Buffer {
  return existsSync(path) ? readFileSync(path) : Buffer.alloc(0);
}

async function start(t: { after: (fn: () => Promise<void>) => void }) {
  const logDir = tempDir('vspc-e2e-logs-');
  const c = new Cleanup();
  const s = await TestServer.start({ config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
  t.after(async () => {
    await c.run();
    await s.dispose();
    logDir.remove();
  });
  return { s, c, dir: logDir.dir };
}

describe('console logs and audit log (end to end)', () => {
  test('VM output is logged with no client attached; a client attach/detach is audited with peer and mode', async (t) => {
    const { s, c, dir } = await start(t);
    const logs = s.server.consoleLogs;
    assert.ok(logs, 'console logs on with logDir');
    const u = esxiUuid();
    const { vm, hub } = await s.connectVm({ uuid: u.text, name: 'db-01' }, c);
    const path = fileOf(dir, u.hex);

    // Nobody attached: output still lands, byte for byte.
    const payload = binaryPayload(50_000, 7);
    vm.send(payload);
    await waitUntil(() => read(path).includes(payload), 5000, 'payload in the console log');
    const marker = 'CONSOLE-ONLY-TEXT-4711';
    vm.send(`\r\n${marker}\r\n`);
    await waitUntil(() => read(path).includes(marker), 5000, 'marker in the console log');

    // A client attaches and leaves.
    const user = await s.connectUser(hub.identity.tcpPort, c);
    const attached = await s.logs.waitFor((l) => l.audit === true && l.message === 'client attached', 3000);
    assert.equal(attached.vm, 'db-01');
    assert.equal(attached.uuid, formatUuid(u.hex));
    assert.equal(attached.port, hub.identity.tcpPort);
    assert.equal(attached.mode, 'readwrite');
    assert.match(String(attached.peer), /^(::ffff:)?127\.0\.0\.1:\d+$/);
    vm.send('seen by the client\r\n');
    await user.waitFor('seen by the client', 3000);
    await user.close();
    const detached = await s.logs.waitFor((l) => l.audit === true && l.message === 'client detached', 3000);
    assert.equal(detached.clientId, attached.clientId);
    assert.equal(detached.peer, attached.peer);
    assert.equal(detached.reason, 'connection closed');
    assert.equal(typeof detached.durationMs, 'number');

    // The VM goes away: a timestamp line.
    await vm.close();
    await waitUntil(() => /VM disconnected/.test(read(path).toString('latin1')), 5000, 'disconnect line');

    const text = read(path).toString('latin1');
    const re = new RegExp(
      String.raw`^\[vspc ${STAMP} console log of VM "db-01", uuid ${formatUuid(u.hex)}\]\r\n` +
        String.raw`\r\n\[vspc ${STAMP} VM connected from [^\]]+\]\r\n`,
    );
    assert.match(text, re);
    const peer = String(attached.peer).replace(/[.]/g, '\\.');
    const id = String(attached.clientId);
    assert.match(
      text,
      new RegExp(
        String.raw`${marker}\r\n\[vspc ${STAMP} client ${id} attached from ${peer} \(readwrite\)\]\r\n` +
          String.raw`seen by the client\r\n\[vspc ${STAMP} client ${id} \(${peer}\) detached: connection closed\]\r\n` +
          String.raw`\[vspc ${STAMP} VM disconnected \(was [^\]]+\)\]\r\n$`,
      ),
    );
    // Console bytes never go through winston.
    assert.ok(!s.logs.lines.some((l) => JSON.stringify(l).includes(marker)), 'console text not in the structured log');

    // A link by name, and tail for `vspc-admin log`.
    assert.equal(readlinkSync(join(dir, 'by-name', 'db-01.log')), join('..', `${formatUuid(u.hex)}.log`));
    const tail = await logs.tail(hub, 2);
    assert.match(tail, new RegExp(String.raw`^\[vspc ${STAMP} client ${id} \(${peer}\) detached: connection closed\]\r\n\[vspc ${STAMP} VM disconnected`));
  });

  test('forget closes the file; shutdown writes the last output and the disconnect line', async (t) => {
    const { s, c, dir } = await start(t);
    const logs = s.server.consoleLogs!;
    const a = esxiUuid();
    const b = esxiUuid();
    const { vm: vmA } = await s.connectVm({ uuid: a.text, name: 'gone-01' }, c);
    const { vm: vmB, hub: hubB } = await s.connectVm({ uuid: b.text, name: 'stays-01' }, c);
    vmA.send('a says hi\r\n');
    vmB.send('b says hi\r\n');
    await waitUntil(() => read(fileOf(dir, a.hex)).includes('a says hi') && read(fileOf(dir, b.hex)).includes('b says hi'), 5000, 'both logged');
    assert.equal(logs.openHandles, 2);

    const res = await fetch(`http://127.0.0.1:${s.adminPort}/api/v1/forget?vm=gone-01`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    await vmA.whenClosed(5000);
    await waitUntil(() => logs.openHandles === 1, 3000, 'the forgotten VM keeps no file open');
    assert.equal(s.hub(a.text, ''), undefined);
    assert.match(read(fileOf(dir, a.hex)).toString('latin1'), /a says hi\r\n/);

    const before = hubB.bytesFromVm;
    vmB.send('last words\r\n');
    await waitUntil(() => hubB.bytesFromVm >= before + 12, 3000, 'last words reached the hub');
    await s.close();
    assert.equal(logs.openHandles, 0);
    assert.match(read(fileOf(dir, b.hex)).toString('latin1'), new RegExp(String.raw`last words\r\n\[vspc ${STAMP} VM disconnected \(was [^\]]+\)\]\r\n$`));
  });
});
