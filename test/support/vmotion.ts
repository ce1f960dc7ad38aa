/** vMotion steps for end-to-end tests: a destination presenting the peer secret, and one whole migration. */
import assert from 'node:assert/strict';
import { SimulatedVm } from './sim/index.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import { type Cleanup, type TestServer, waitUntil } from './server.js';

/** Starts a destination connection that presents the vMotion peer secret (no DO-PROXY). */
export async function destination(ts: TestServer, cleanup: Cleanup, uuid: string, name: string, serviceUri?: string): Promise<SimulatedVm> {
  const dest = await SimulatedVm.connect({ host: '127.0.0.1', port: ts.proxyPort, uuid, name, serviceUri, skipDoProxy: true });
  cleanup.add(() => dest.destroy());
  return dest;
}

export function isSourceOf(hub: ConsoleHub, vm: SimulatedVm): boolean {
  return hub.source?.peer === `127.0.0.1:${vm.localPort}`;
}

/**
 * One whole migration, protocol-exact; returns the destination and the secret. The
 * destination connects before the BEGIN, as a destination host is up before the source
 * asks: between GOAHEAD and PEER only the PEER's own round trip, not a TCP connect and a
 * telnet negotiation, runs against the vMotion's deadline (a test's short
 * --vmotion-timeout was missed that way on a loaded machine).
 */
export async function migrate(
  ts: TestServer,
  cleanup: Cleanup,
  hub: ConsoleHub,
  from: SimulatedVm,
  seq: Buffer,
  ident: { uuid: string; name: string; serviceUri?: string },
  duringHold?: () => void | Promise<void>,
): Promise<{ dest: SimulatedVm; secret: Buffer }> {
  const dest = await destination(ts, cleanup, ident.uuid, ident.name, ident.serviceUri);
  const r = await from.vmotionBegin(seq);
  assert.equal(r.kind, 'goahead');
  const secret = (r as { secret: Buffer }).secret;
  await duringHold?.();
  assert.equal(await dest.vmotionPeer(Buffer.concat([seq, secret])), true, 'PEER-OK');
  await duringHold?.();
  dest.vmotionComplete(seq);
  await dest.barrier(); // vspc has handled COMPLETE
  await waitUntil(() => isSourceOf(hub, dest), 5000, 'destination became the source');
  return { dest, secret };
}

