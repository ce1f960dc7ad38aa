/**
 * Hostile and broken peers on the VM side. Each offending connection is logged with
 * its reason and closed (except an unknown option-232 subcommand, which is answered
 * and tolerated), while a well-behaved VM with a telnet user attached keeps
 * streaming correctly in both directions, checked after every case.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { IAC, SB, SE, Option } from '../../src/protocol/telnet/constants.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { SimulatedVm, TelnetUser, type SimulatedVmOptions } from '../support/sim/index.js';
import { TestServer, Cleanup, esxiUuid, settle, tempDir, makeCert, waitUntil, withTimeout } from '../support/server.js';
import type { LogLine } from '../support/log-capture.js';

const MAX_SB = 4096;

/**
 * The good VM and its user: the VM sends a numbered stream and the user types one,
 * continuously; `check()` proves every byte so far arrived once, in order, unchanged.
 */
class GoodTraffic {
  private toUser: Buffer[] = [];
  private toVm: Buffer[] = [];
  private timer: NodeJS.Timeout | null = null;
  private seq = 0;
  private readonly userBase: number;

  constructor(
    private readonly vm: SimulatedVm,
    private readonly user: TelnetUser,
  ) {
    this.userBase = user.mark();
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), 15);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private tick(): void {
    const n = this.seq++;
    // Binary content with the escape-sensitive bytes in every chunk.
    const out = Buffer.concat([Buffer.from(`<${n}>`), Buffer.of(255, 13, 0, 13, 10, n & 255, 255, 255)]);
    const inp = Buffer.concat([Buffer.from(`[${n}]`), Buffer.of(13, 0, 255, (n * 7) & 255)]);
    this.toUser.push(out);
    this.toVm.push(inp);
    this.vm.send(out);
    this.user.send(inp);
  }

  async check(label: string): Promise<void> {
    this.tick();
    const wantOut = Buffer.concat(this.toUser);
    const wantIn = Buffer.concat(this.toVm);
    const gotOut = await this.user.waitFor(wantOut.length, 3000, this.userBase);
    const gotIn = await this.vm.waitForInput(wantIn.length, 3000);
    assert.ok(gotOut.subarray(0, wantOut.length).equals(wantOut), `${label}: VM output to the good user is intact`);
    assert.ok(gotIn.subarray(0, wantIn.length).equals(wantIn), `${label}: the good user's input to the VM is intact`);
    assert.equal(this.vm.closed || this.user.closed, false, `${label}: good connections still open`);
  }

  async finish(): Promise<void> {
    this.stop();
    await this.check('final');
    await settle(this.vm, this.user);
    assert.equal(this.user.received.length - this.userBase, Buffer.concat(this.toUser).length, 'no extra bytes to the user');
    assert.equal(this.vm.input.length, Buffer.concat(this.toVm).length, 'no extra bytes to the VM');
  }
}

describe('bad input on the VM side', () => {
  let s: TestServer;
  let good: GoodTraffic;
  let cert: Buffer;
  const c = new Cleanup();

  before(async () => {
    const dir = tempDir();
    c.add(dir.remove);
    const pair = makeCert(dir.dir);
    cert = pair.cert;
    s = await TestServer.start({ ports: 8, tls: { cert: pair.cert, key: pair.key }, config: { maxSubnegotiation: MAX_SB, identifyTimeoutMs: 1000 } });
    c.add(() => s.dispose());
    const u = esxiUuid();
    const { vm, hub } = await s.connectVm({ uuid: u.text, name: 'good-vm' }, c);
    const user = await s.connectUser(hub.identity.tcpPort, c);
    good = new GoodTraffic(vm, user);
    good.start();
    c.add(() => good.stop());
  });

  after(async () => {
    await good?.finish();
    await c.run();
  });

  /** Connects a misbehaving simulated VM (not waiting for registration). */
  async function badVm(t: { after: (fn: () => unknown) => void }, opts: Partial<SimulatedVmOptions>): Promise<SimulatedVm> {
    const u = esxiUuid();
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: s.proxyPort, uuid: u.text, name: 'bad', ...opts });
    t.after(() => vm.destroy());
    return vm;
  }

  /** The protocol-error line the server logged for this peer. */
  function errorLine(peer: string, from: number): Promise<LogLine> {
    return s.logs.waitFor((l) => l.peer === peer && l.message === 'protocol error; closing VM connection', 3000, from, `protocol error logged for ${peer}`);
  }

  async function registeredBadVm(t: { after: (fn: () => unknown) => void }): Promise<SimulatedVm> {
    const u = esxiUuid();
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: s.proxyPort, uuid: u.text, name: 'bad-registered' });
    t.after(() => vm.destroy());
    await vm.whenProxied();
    await s.waitRegistered(u.text);
    return vm;
  }

  test('malformed telnet (IAC followed by a non-command byte)', async (t) => {
    const from = s.logs.lines.length;
    const vm = await registeredBadVm(t);
    vm.sendRaw(Buffer.of(IAC, 1, 65));
    await vm.whenClosed(3000);
    const line = await errorLine(vm.peerName, from);
    assert.equal(line.errorCode, 'TELNET_BAD_COMMAND');
    assert.match(String(line.error), /non-command byte 1/);
    await good.check('bad command');
  });

  test('IAC SB 232 01 IAC 01 IAC SE (bad escape inside a subnegotiation)', async (t) => {
    const from = s.logs.lines.length;
    const vm = await registeredBadVm(t);
    vm.sendRaw(Buffer.of(IAC, SB, 232, 1, IAC, 1, IAC, SE));
    await vm.whenClosed(3000);
    assert.equal((await errorLine(vm.peerName, from)).errorCode, 'TELNET_BAD_SB_ESCAPE');
    await good.check('bad SB escape');
  });

  test('an oversized subnegotiation (> maxSubnegotiation)', async (t) => {
    const from = s.logs.lines.length;
    const vm = await badVm(t, {});
    await vm.whenProxied();
    vm.sendRaw(Buffer.concat([Buffer.of(IAC, SB, Option.VMWARE_EXT, Ext.VM_NAME), Buffer.alloc(MAX_SB + 100, 0x41), Buffer.of(IAC, SE)]));
    await vm.whenClosed(3000);
    const line = await errorLine(vm.peerName, from);
    assert.equal(line.errorCode, 'TELNET_SB_TOO_LONG');
    await good.check('oversized SB');
  });

  test('an unknown option-232 subcommand is answered with UNKNOWN-SUBOPTION-RCVD-2 and tolerated', async (t) => {
    const from = s.logs.lines.length;
    const vm = await registeredBadVm(t);
    const answer = vm.waitForExt((code) => code === Ext.UNKNOWN_SUBOPTION_RCVD_2, 3000);
    vm.sendExt(99, Buffer.from('whatever'));
    const { payload } = await answer;
    assert.deepEqual([...payload], [99]);
    const line = await s.logs.waitFor((l) => l.peer === vm.peerName && l.message === 'unknown option-232 subcommand', 3000, from);
    assert.equal(line.code, 99);
    // Handled after the unknown subcommand: had vspc decided to close, it would have by now.
    await vm.barrier();
    assert.equal(vm.closed, false, 'connection stays up');
    // And it still works as a VM.
    const hub = s.server.registry.all().find((h) => h.source && (h.source as { peer?: string }).peer === vm.peerName);
    assert.ok(hub, 'still attached');
    await good.check('unknown subcommand');
  });

  test('an oversized VM-NAME (> 1024 bytes)', async (t) => {
    const from = s.logs.lines.length;
    const vm = await badVm(t, { name: 'n'.repeat(2000) });
    await vm.whenClosed(3000);
    const line = await errorLine(vm.peerName, from);
    assert.equal(line.errorCode, 'VSPC_BAD_NAME');
    assert.equal(line.length, 2000);
    await good.check('oversized name');
  });

  test('a UUID that is not hex', async (t) => {
    const from = s.logs.lines.length;
    const vm = await badVm(t, { uuid: 'zz 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01' });
    await vm.whenClosed(3000);
    const line = await errorLine(vm.peerName, from);
    assert.equal(line.errorCode, 'VSPC_BAD_UUID');
    await good.check('bad uuid');
  });

  test("direction 'C' is refused with WONT-PROXY and closed", async (t) => {
    const from = s.logs.lines.length;
    const vm = await badVm(t, { direction: 'C' });
    await assert.rejects(vm.whenProxied(3000), /WONT-PROXY/);
    await vm.whenClosed(3000);
    const line = await s.logs.waitFor((l) => l.peer === vm.peerName && l.message === 'DO-PROXY refused (WONT-PROXY)', 3000, from);
    assert.equal(line.direction, 'C');
    const closing = await s.logs.waitFor((l) => l.peer === vm.peerName && l.message === 'closing VM connection', 3000, from);
    assert.match(String(closing.reason), /direction "C" is not supported/);
    await good.check('direction C');
  });

  test('a wrong service name is refused with WONT-PROXY and closed', async (t) => {
    const from = s.logs.lines.length;
    const vm = await badVm(t, { serviceUri: 'notvSPC.py?port=com1' });
    await assert.rejects(vm.whenProxied(3000), /WONT-PROXY/);
    await vm.whenClosed(3000);
    const line = await s.logs.waitFor((l) => l.peer === vm.peerName && l.message === 'DO-PROXY refused (WONT-PROXY)', 3000, from);
    assert.equal(line.uri, 'notvSPC.py?port=com1');
    assert.equal(line.expectedService, 'vSPC.py');
    await good.check('wrong service');
  });

  test('a VM that agrees to option 232 but never identifies is closed after identifyTimeoutMs', async (t) => {
    const from = s.logs.lines.length;
    const started = Date.now();
    const vm = await badVm(t, { identify: false });
    await vm.whenClosed(s.config.identifyTimeoutMs + 2000);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= s.config.identifyTimeoutMs - 50, `closed after ${elapsed} ms`);
    assert.equal(vm.isEnabled('us', Option.VMWARE_EXT), true, 'option 232 was agreed');
    const line = await errorLine(vm.peerName, from);
    assert.equal(line.errorCode, 'VSPC_IDENTIFY_TIMEOUT');
    await good.check('never identifies');
  });

  test('random garbage (seeded fast-check runs): closed with a logged reason, server unaffected', async () => {
    const reasons = new Set<string>();
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 600 }), async (bytes) => {
        const from = s.logs.lines.length;
        const sock = net.connect({ host: '127.0.0.1', port: s.proxyPort });
        sock.on('error', () => undefined);
        try {
          await new Promise<void>((resolve, reject) => {
            sock.once('connect', resolve);
            sock.once('error', reject);
          });
          const peer = `${sock.localAddress}:${sock.localPort}`;
          const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
          sock.on('data', () => undefined);
          sock.write(bytes);
          const limit = s.config.humanTimeoutMs + s.config.identifyTimeoutMs + s.config.subnegotiationTimeoutMs + 1500;
          await withTimeout(closed, limit, 'garbage connection closed');
          const closedLine = await s.logs.waitFor((l) => l.peer === peer && l.message === 'VM connection closed', 2000, from);
          assert.ok(closedLine);
          const why = s.logs.lines
            .slice(from)
            .find((l) => l.peer === peer && (l.level === 'warn' || l.message === 'closing VM connection' || l.message === 'destroying VM connection'));
          assert.ok(why, `a reason was logged for ${peer}`);
          reasons.add(String(why.errorCode ?? why.message));
        } finally {
          sock.destroy();
        }
      }),
      { seed: 20240611, numRuns: 12 },
    );
    assert.ok(reasons.size >= 1);
    await good.check('garbage');
  });

  test('a TLS ClientHello on the plain VM port is closed with VSPC_TLS_ON_PLAIN_PORT', async (t) => {
    const from = s.logs.lines.length;
    const sock = tls.connect({ host: '127.0.0.1', port: s.proxyPort, rejectUnauthorized: false });
    t.after(() => sock.destroy());
    const result = await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), 3000);
      sock.once('secureConnect', () => {
        clearTimeout(timer);
        resolve('connected');
      });
      sock.once('error', () => {
        clearTimeout(timer);
        resolve('error');
      });
      sock.once('close', () => {
        clearTimeout(timer);
        resolve('closed');
      });
    });
    assert.ok(result === 'error' || result === 'closed', `TLS client should fail, got ${result}`);
    const line = await s.logs.waitFor((l) => l.message === 'protocol error; closing VM connection' && l.errorCode === 'VSPC_TLS_ON_PLAIN_PORT', 3000, from);
    assert.match(String(line.peer), /^127\.0\.0\.1:\d+$/);
    assert.equal(sock.destroyed || sock.closed, true);
    await good.check('TLS on plain port');
  });

  test('plain telnet on the TLS VM port is closed and logged', async () => {
    const from = s.logs.lines.length;
    const sock = net.connect({ host: '127.0.0.1', port: s.proxyTlsPort });
    sock.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      const peer = `${sock.localAddress}:${sock.localPort}`;
      const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
      // What a telnet client (or an ESXi host configured with telnet://) sends first.
      sock.write(Buffer.of(IAC, 251, Option.AUTHENTICATION, IAC, 251, 232));
      await withTimeout(closed, 3000, 'plain telnet on the TLS port closed');
      const line = await s.logs.waitFor((l) => l.message === 'TLS handshake failed on the VM port; closed' && l.peer === peer, 3000, from);
      assert.ok(line.error);
    } finally {
      sock.destroy();
    }
    // TLS still works on that port for a real host.
    const u = esxiUuid();
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: s.proxyTlsPort, tls: { ca: cert, servername: 'localhost' }, uuid: u.text, name: 'tls-ok' });
    try {
      await vm.whenProxied();
      await s.waitRegistered(u.text);
    } finally {
      vm.destroy();
    }
    await good.check('plain on TLS port');
  });

  test('a peer that resets the TLS VM port before the handshake is logged with peer "?", not "undefined:undefined"', async () => {
    const from = s.logs.lines.length;
    const sock = net.connect({ host: '127.0.0.1', port: s.proxyTlsPort });
    sock.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    sock.resetAndDestroy();
    const line = await s.logs.waitFor((l) => l.message === 'TLS handshake failed on the VM port; closed' && l.peer === '?', 3000, from);
    assert.equal(line.peer, '?');
    assert.ok(!s.logs.lines.slice(from).some((l) => String(l.peer).includes('undefined')), 'no "undefined" peer in any line');
    await good.check('reset before TLS handshake');
  });

  test('a flood of 50 connections sending junk at once: all closed, server up, good VM unaffected', async () => {
    const from = s.logs.lines.length;
    const socks: net.Socket[] = [];
    try {
      const closedAll = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          new Promise<void>((resolve, reject) => {
            const sock = net.connect({ host: '127.0.0.1', port: s.proxyPort });
            socks.push(sock);
            sock.on('error', () => undefined);
            sock.on('data', () => undefined);
            sock.once('connect', () => {
              const junk = Buffer.alloc(64 + i * 13);
              for (let k = 0; k < junk.length; k++) junk[k] = (k * 131 + i * 17) & 255;
              if (i % 5 === 0) junk[0] = IAC; // some start like telnet
              if (i % 7 === 0) junk[0] = 0x16; // some look like TLS
              sock.write(junk);
            });
            const timer = setTimeout(() => reject(new Error(`flood connection ${i} not closed`)), 6000);
            sock.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
        ),
      );
      assert.equal(closedAll.length, 50);
    } finally {
      for (const sock of socks) sock.destroy();
    }
    await waitUntil(() => s.logs.lines.slice(from).filter((l) => l.message === 'VM connection closed').length >= 50, 3000, '50 closes logged');
    const status = await s.api<{ vmConnections: number }>('/api/v1/status');
    assert.ok(status.vmConnections >= 1, 'server answers and still has the good VM');
    await good.check('flood');
  });
});
