/**
 * What an ESXi connection writes to vspc's log when it registers (issue 12 item 10):
 * one registration line carrying the VM's name, UUID, label and port — also when the
 * name comes after the UUID, as real hosts send it — and no "renamed from null".
 */
import { describe, test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from '../../src/domain/registry.js';
import { VmotionCoordinator } from '../../src/domain/vmotion.js';
import { openDatabase, closeDatabase } from '../../src/storage/database.js';
import { ConsoleStore } from '../../src/storage/console-store.js';
import { EsxiSession, type EsxiSessionIo } from '../../src/sources/esxi/session.js';
import { IAC, WILL, Option } from '../../src/protocol/telnet/constants.js';
import { encodeSubnegotiation } from '../../src/protocol/telnet/encoder.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { memoryLogger } from '../domain/fakes.js';

const UUID_TEXT = '42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01';
const UUID = '421a5b7709c38e219f00aa105c2e7d01';

const ext = (code: number, payload: string): Buffer => encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(code), Buffer.from(payload)]));
const willExt = Buffer.of(IAC, WILL, Option.VMWARE_EXT);
const doProxy = (uri: string) => ext(Ext.DO_PROXY, `S${uri}`);
const vcUuid = ext(Ext.VM_VC_UUID, UUID_TEXT);
const vmName = (name: string) => ext(Ext.VM_NAME, name);

class NullIo implements EsxiSessionIo {
  destroyed = false;
  write(): boolean {
    return true;
  }
  end(): void {}
  destroy(): void {
    this.destroyed = true;
  }
  onDrain(): void {}
}

const dbs: Array<ReturnType<typeof openDatabase>> = [];
afterEach(() => {
  for (const db of dbs.splice(0)) closeDatabase(db);
});

function domain() {
  const { logger, lines } = memoryLogger();
  const db = openDatabase(':memory:');
  dbs.push(db);
  const registry = new Registry(new ConsoleStore(db, { start: 20000, end: 20010 }));
  const vmotion = new VmotionCoordinator({ timeoutMs: 60_000 }, logger);
  let n = 0;
  const open = () => {
    const id = ++n;
    const session = new EsxiSession(
      { id, peer: `10.0.0.${id}:40000`, log: logger.child({ conn: id }) },
      {
        registry,
        vmotion,
        options: {
          serviceName: 'vSPC.py',
          comPort: true,
          maxSubnegotiation: 4096,
          humanTimeoutMs: 5000,
          identifyTimeoutMs: 30_000,
          subnegotiationTimeoutMs: 20_000,
          maxPreIdentifyBuffer: 65536,
          proxyPortHint: 'telnet://x:13370',
        },
      },
      new NullIo(),
    );
    session.start(1_000);
    return session;
  };
  const messages = (re: RegExp) => lines.filter((l) => re.test(String(l.message)));
  return { registry, open, lines, messages };
}

describe('EsxiSession registration log lines', () => {
  test('UUID first, name in a later segment (as ESXi sends them): one registration line, with the name; no rename', () => {
    const d = domain();
    const s = d.open();
    s.receive(Buffer.concat([willExt, doProxy('vSPC.py?port=com2'), vcUuid]), 2_000);
    assert.equal(s.state, 'attached');
    assert.deepEqual(d.messages(/registered|renamed|reconnected/), [], 'not logged before the name is known');
    s.receive(vmName('web01'), 2_400);
    const reg = d.messages(/registered|renamed|reconnected/);
    assert.equal(reg.length, 1);
    assert.equal(reg[0].message, 'VM serial port registered');
    assert.equal(reg[0].name, 'web01');
    assert.equal(reg[0].vm, 'web01:com2');
    assert.equal(reg[0].uuid, UUID);
    assert.equal(reg[0].label, 'com2');
    assert.equal(reg[0].port, 20000);
  });

  test('a reconnect is logged at once with the stored name; a real rename is still a rename', () => {
    const d = domain();
    const first = d.open();
    first.receive(Buffer.concat([willExt, doProxy('vSPC.py'), vcUuid, vmName('web01')]), 2_000);
    first.transportClosed();
    const second = d.open();
    second.receive(Buffer.concat([willExt, doProxy('vSPC.py'), vcUuid]), 3_000);
    const again = d.messages(/reconnected/);
    assert.equal(again.length, 1);
    assert.equal(again[0].name, 'web01');
    second.receive(vmName('web01-new'), 3_100);
    const renamed = d.messages(/renamed/);
    assert.equal(renamed.length, 1);
    assert.equal(renamed[0].from, 'web01');
    assert.equal(renamed[0].to, 'web01-new');
    assert.equal(d.messages(/registered|reconnected/).length, 2, 'one line per registration');
  });

  test('a connection that leaves before its name arrives still has its registration line, without a name', () => {
    const d = domain();
    const s = d.open();
    s.receive(Buffer.concat([willExt, doProxy('vSPC.py'), vcUuid]), 2_000);
    s.transportClosed();
    const reg = d.messages(/registered/);
    assert.equal(reg.length, 1);
    assert.equal(reg[0].name, null);
    assert.equal(reg[0].uuid, UUID);
  });
});
