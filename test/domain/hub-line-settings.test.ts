/**
 * ConsoleHub.setLineSettings: a client's request reaches the source only when the
 * client holds a lock that writes and the source can act on it; the result always
 * carries the settings in effect (recorded in hub.lineSettings when applied).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleHub } from '../../src/domain/console-hub.js';
import type { SerialLineSettings } from '../../src/domain/serial-line.js';
import { FakeClient, FakeSource } from './fakes.js';

function hub(): ConsoleHub {
  return new ConsoleHub({ id: 1, kind: 'device', key: '/dev/ttyS0', label: '', name: 'uart', tcpPort: 10000 });
}

class LineSource extends FakeSource {
  calls: SerialLineSettings[] = [];
  fail: Error | null = null;
  line: SerialLineSettings = { baudRate: 9600, dataSize: 8 };
  async setLineSettings(change: SerialLineSettings): Promise<SerialLineSettings> {
    this.calls.push(change);
    if (this.fail) throw this.fail;
    this.line = { ...this.line, ...change };
    return this.line;
  }
}

test('applied for a writer: the source is asked, hub.lineSettings records what is in effect', async () => {
  const h = hub();
  const src = new LineSource();
  h.attachSource(src);
  const c = new FakeClient();
  h.addClient(c);
  const r = await h.setLineSettings(c, { baudRate: 38400 });
  assert.deepEqual(r, { settings: { baudRate: 38400, dataSize: 8 }, applied: true });
  assert.deepEqual(h.lineSettings, { baudRate: 38400, dataSize: 8 });
  assert.deepEqual(src.calls, [{ baudRate: 38400 }]);
});

test('refused with the settings unchanged: read-only, not attached, no source, a source that cannot, a source that rejects', async () => {
  const h = hub();
  h.lineSettings = { baudRate: 115200 };
  const writer = new FakeClient();
  h.addClient(writer);
  assert.deepEqual(await h.setLineSettings(writer, { baudRate: 300 }), { settings: { baudRate: 115200 }, applied: false, refused: 'no source is connected' });

  h.attachSource(new FakeSource());
  const r1 = await h.setLineSettings(writer, { baudRate: 300 });
  assert.equal(r1.applied, false);
  assert.match(r1.refused!, /cannot change its line settings/);

  const src = new LineSource();
  h.attachSource(src);
  const reader = new FakeClient();
  h.addClient(reader, { request: 'readonly' });
  assert.deepEqual(await h.setLineSettings(reader, { baudRate: 300 }), { settings: { baudRate: 115200 }, applied: false, refused: 'read-only' });
  const stranger = new FakeClient();
  assert.equal((await h.setLineSettings(stranger, { baudRate: 300 })).refused, 'not attached');
  assert.deepEqual(src.calls, []);

  src.fail = new Error('baud rate 300 refused');
  const r2 = await h.setLineSettings(writer, { baudRate: 300 });
  assert.deepEqual(r2, { settings: { baudRate: 115200 }, applied: false, refused: 'baud rate 300 refused' });
  assert.deepEqual(h.lineSettings, { baudRate: 115200 });
});
