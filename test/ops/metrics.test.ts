/**
 * `GET /metrics` on the admin listener: Prometheus text format with VMs known and
 * connected, clients, bytes in/out, vMotions by outcome, protocol errors by kind and
 * dropped slow clients, checked against what simulated VMs and users did.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { SimulatedVm } from '../support/sim/index.js';
import { escapeLabel, Metrics, renderMetrics } from '../../src/admin/metrics.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { createLogger } from '../../src/logging/logger.js';
import { Cleanup, TestServer, esxiUuid, waitUntil } from '../support/server.js';

type Samples = Map<string, number>;

/** Parses the exposition; checks every family has HELP and TYPE before its samples. */
function parse(text: string): { samples: Samples; types: Map<string, string> } {
  const samples: Samples = new Map();
  const types = new Map<string, string>();
  const helped = new Set<string>();
  assert.ok(text.endsWith('\n'), 'ends with a newline');
  for (const line of text.trimEnd().split('\n')) {
    let m = /^# HELP (\w+) .+$/.exec(line);
    if (m) {
      helped.add(m[1]);
      continue;
    }
    m = /^# TYPE (\w+) (gauge|counter)$/.exec(line);
    if (m) {
      assert.ok(helped.has(m[1]), `HELP before TYPE for ${m[1]}`);
      types.set(m[1], m[2]);
      continue;
    }
    m = /^(\w+)(\{[^}]*\})? (-?\d+(?:\.\d+)?)$/.exec(line);
    assert.ok(m, `sample line: ${JSON.stringify(line)}`);
    assert.ok(types.has(m[1]), `TYPE before samples of ${m[1]}`);
    if (types.get(m[1]) === 'counter') assert.match(m[1], /_total$/, 'counters end in _total');
    samples.set(m[1] + (m[2] ?? ''), Number(m[3]));
  }
  return { samples, types };
}

describe('GET /metrics', () => {
  let s: TestServer;
  const c = new Cleanup();
  before(async () => {
    s = await TestServer.start({ ports: 8, config: { clientQueueLimit: 64 * 1024, clientLockWaitMs: 50 } });
  });
  after(async () => {
    await c.run();
    await s?.dispose();
  });

  async function scrape(): Promise<{ samples: Samples; contentType: string | null }> {
    const res = await fetch(`http://127.0.0.1:${s.adminPort}/metrics`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    return { samples: parse(await res.text()).samples, contentType: res.headers.get('content-type') };
  }

  test('a fresh server: zero everywhere, in the Prometheus text format', async () => {
    const { samples, contentType } = await scrape();
    assert.equal(contentType, 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(samples.get('vspc_vm_ports'), 0);
    assert.equal(samples.get('vspc_vm_ports_connected'), 0);
    assert.equal(samples.get('vspc_clients'), 0);
    assert.equal(samples.get('vspc_bytes_from_vm_total'), 0);
    assert.equal(samples.get('vspc_clients_dropped_slow_total'), 0);
    for (const outcome of ['completed', 'aborted', 'timed-out', 'replaced', 'refused', 'bad-peer']) {
      assert.equal(samples.get(`vspc_vmotions_total{outcome="${outcome}"}`), 0, outcome);
    }
    assert.match([...samples.keys()].find((k) => k.startsWith('vspc_build_info')) ?? '', /^vspc_build_info\{version="\d+\.\d+\.\d+"\}$/);
  });

  test('VMs, clients, bytes, vMotions, protocol errors and slow clients are counted', async () => {
    const a = esxiUuid();
    const b = esxiUuid();
    const { vm, hub } = await s.connectVm({ uuid: a.text, name: 'm-a' }, c);
    const other = await s.connectVm({ uuid: b.text, name: 'm-b' }, c);
    other.vm.destroy();
    await waitUntil(() => other.hub.source === null, 3000, 'second VM gone');

    // A user types 4 bytes; the VM sends 10.
    const user = await s.connectUser(hub.identity.tcpPort, c);
    user.send('abcd');
    await vm.waitForInput('abcd', 3000);
    vm.send('0123456789');
    await user.waitFor('0123456789', 3000);

    // vMotion begun and aborted by the source.
    assert.equal((await vm.vmotionBegin(Buffer.from([1]))).kind, 'goahead');
    vm.vmotionAbort();
    await waitUntil(() => s.server.vmotion.counters.aborted === 1, 3000, 'vMotion aborted');

    // A person telnets to the VM port (no option 232), a host asks for the wrong service.
    const human = net.connect({ host: '127.0.0.1', port: s.proxyPort });
    c.add(() => human.destroy());
    human.resume(); // read, so that the server's FIN is seen
    await new Promise((r) => human.once('close', r));
    const wrong = await SimulatedVm.connect({ host: '127.0.0.1', port: s.proxyPort, uuid: esxiUuid().text, name: 'm-wrong', serviceUri: 'other.py' });
    c.add(() => wrong.destroy());
    await wrong.whenClosed(3000);

    // A client that never reads is dropped once its queue passes the limit.
    const stalled = net.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    c.add(() => stalled.destroy());
    stalled.pause();
    await waitUntil(() => hub.clients.size === 2, 3000, 'stalled client attached');
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    // The VM writes as fast as the reading client reads (the next chunk once it has the last).
    const m = user.mark();
    for (let i = 0; i < 64 && hub.clients.size === 2; i++) {
      vm.send(chunk);
      await user.waitFor((i + 1) * chunk.length, 5000, m);
    }
    await waitUntil(() => hub.clients.size === 1, 10_000, 'stalled client dropped');

    const { samples } = await scrape();
    assert.equal(samples.get('vspc_vm_ports'), 2);
    assert.equal(samples.get('vspc_vm_ports_connected'), 1);
    assert.equal(samples.get('vspc_clients'), 1);
    assert.equal(samples.get('vspc_vm_connections'), 1);
    assert.equal(samples.get('vspc_bytes_to_vm_total'), 4);
    assert.equal(samples.get('vspc_bytes_from_vm_total'), hub.bytesFromVm);
    assert.ok(hub.bytesFromVm > 10);
    assert.equal(samples.get('vspc_vmotions_begun_total'), 1);
    assert.equal(samples.get('vspc_vmotions_total{outcome="aborted"}'), 1);
    assert.equal(samples.get('vspc_vmotions_pending'), 0);
    assert.equal(samples.get('vspc_protocol_errors_total{side="vm",kind="VSPC_NOT_ESXI"}'), 1);
    assert.equal(samples.get('vspc_protocol_errors_total{side="vm",kind="VSPC_PROXY_REFUSED"}'), 1);
    assert.equal(samples.get('vspc_clients_dropped_slow_total'), 1);

    // Forgetting a VM does not make the byte counters go down.
    const before = samples.get('vspc_bytes_from_vm_total')!;
    s.server.registry.forget(hub);
    const after = (await scrape()).samples;
    assert.equal(after.get('vspc_vm_ports'), 1);
    assert.equal(after.get('vspc_bytes_from_vm_total'), before);
    assert.equal(after.get('vspc_bytes_to_vm_total'), 4);
  });

  test('label values are escaped', () => {
    assert.equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
    const m = new Metrics();
    m.protocolError('vm', 'WEIRD"KIND');
    const text = renderMetrics({
      metrics: m,
      hubs: [],
      vmotion: new VmotionCoordinator({ timeoutMs: 1000 }, createLogger({ silent: true })),
      version: '1.2.3',
      uptimeSeconds: 5,
      vmConnections: 0,
      vmConnectionsRefused: 0,
    });
    assert.match(text, /^vspc_protocol_errors_total\{side="vm",kind="WEIRD\\"KIND"\} 1$/m);
    parse(text);
  });
});
