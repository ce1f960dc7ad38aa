/**
 * Issue 11 #7: text that came from a peer never reaches an operator's terminal with
 * controls in it. A VM names itself with C1 controls and bidi overrides; a console
 * client names its user with an OSC string; the console log carries title and clipboard
 * escapes. Every place such text is shown is checked: list, show, who, the JSON and
 * text logs, the console-log header, the greeting notice, lock refusals, and
 * `vspc-admin log` on a terminal (run under `script`, a real pty).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TelnetUser } from '../support/sim/telnet-user.js';
import { startServer, esxiUuid, tempDir, waitUntil } from '../support/server.js';
import { vspcAdmin, VSPC_ADMIN_JS } from '../support/cli.js';
import { encodeControl, VSPC_CONTROL_OPTION } from '../../src/protocol/control/vspc-control.js';
import { formatUuid } from '../../src/util/uuid.js';

/** C1 CSI, C1 OSC, bidi override (RLO), an isolate, a zero-width joiner, a line separator. */
const HOSTILE_NAME = 'web\u009b31m\u009d0;owned\u0007\u202eexe.txt\u2066x\u200dy\u2028z';
const SAFE_NAME = 'web?31m?0;owned??exe.txt?x?y?z';

/** Every character that must never reach a screen from a peer. */
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u206f\ufeff]/u;

const IAC = 255;
const SB = 250;
const SE = 240;
const WILL = 251;

describe('untrusted text on operators screens', () => {
  test('a VM name with C1 controls and bidi overrides is shown sanitised everywhere', async (t) => {
    const logDir = tempDir('vspc-untrusted-');
    t.after(() => logDir.remove());
    const { ts, cleanup } = await startServer(t, { config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
    const u = esxiUuid();
    const { vm, hub } = await ts.connectVm({ uuid: u.text, name: HOSTILE_NAME }, cleanup);
    assert.equal(hub.identity.name, SAFE_NAME, 'sanitised where it entered');

    const list = await vspcAdmin(ts.adminAddress, ['list']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(list.stdout.includes(SAFE_NAME), list.stdout);
    assert.doesNotMatch(list.stdout, UNSAFE);
    for (const args of [['list', '--json'], ['show', u.text], ['show', u.text, '--json'], ['status']]) {
      const r = await vspcAdmin(ts.adminAddress, args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.doesNotMatch(r.stdout, UNSAFE, args.join(' '));
    }

    // The greeting a telnet client gets names the VM.
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    cleanup.add(() => user.destroy());
    await user.waitFor(SAFE_NAME, 5000);
    assert.doesNotMatch(user.received.toString('utf8').replace(/\r|\n/g, ''), /[\u0080-\u009f\u202a-\u202e]/u);

    // Console log header and the structured log.
    vm.send('boot\r\n');
    const file = join(logDir.dir, `${formatUuid(u.hex)}.log`);
    await waitUntil(() => existsSync(file) && readFileSync(file, 'utf8').includes('boot'), 5000, 'console log written');
    const header = readFileSync(file, 'utf8').split(/\r?\n/)[0];
    assert.ok(header.includes(SAFE_NAME), header);
    assert.doesNotMatch(header, UNSAFE);
    for (const line of ts.logs.lines) assert.doesNotMatch(JSON.stringify(line), /\\u009b|\\u009d|\u009b|\u009d|\u202e/u);
  });

  test('a port label with a bidi override is refused (identity is never rewritten)', async (t) => {
    const { ts } = await startServer(t);
    const u = esxiUuid();
    const { SimulatedVm } = await import('../support/sim/esxi-simulator.js');
    const vm = await SimulatedVm.connect({ host: '127.0.0.1', port: ts.proxyPort, uuid: u.text, name: 'ok', serviceUri: 'vSPC.py?port=com\u202e1' });
    t.after(() => vm.destroy());
    await vm.whenClosed(5000);
    const line = await ts.logs.waitFor((l) => l.errorCode === 'VSPC_BAD_DO_PROXY', 3000);
    assert.ok(line);
    assert.equal(ts.hub(u.text, 'com\u202e1'), undefined);
  });

  test('a console user name with an OSC string is sanitised in who and in lock refusals', async (t) => {
    const { ts, cleanup } = await startServer(t);
    const u = esxiUuid();
    const { hub } = await ts.connectVm({ uuid: u.text, name: 'db01' }, cleanup);
    const holder = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    cleanup.add(() => holder.destroy());
    // VSPC-CONTROL by hand: WILL 201, then LOCK-REQUEST EXCLUSIVE with a hostile user name.
    const request = encodeControl({ kind: 'lock-request', mode: 'exclusive', force: false, user: '\u009d52;c;ZXZpbA==\u0007x' });
    holder.sendRaw(Buffer.concat([Buffer.of(IAC, WILL, VSPC_CONTROL_OPTION, IAC, SB, VSPC_CONTROL_OPTION), request, Buffer.of(IAC, SE)]));
    await waitUntil(() => hub.locks.size === 1, 5000, 'the lock is held');

    const who = await vspcAdmin(ts.adminAddress, ['who']);
    assert.equal(who.code, 0, who.stderr);
    assert.doesNotMatch(who.stdout, UNSAFE);
    const late = await TelnetUser.connect({ host: '127.0.0.1', port: hub.identity.tcpPort });
    cleanup.add(() => late.destroy());
    await late.waitFor('held by ', 5000);
    await late.whenClosed(5000);
    const refusal = late.received.toString('utf8');
    assert.ok(refusal.includes('?52;c;ZXZpbA==?x@127.0.0.1'), refusal);
    assert.doesNotMatch(refusal.replace(/\r|\n/g, ''), /[\u0080-\u009f]/u);
  });

  test('vspc-admin log: on a terminal OSC/DCS strings and C1 controls are removed, colours kept; --raw and pipes get exact bytes', async (t) => {
    const logDir = tempDir('vspc-untrusted-log-');
    t.after(() => logDir.remove());
    const { ts, cleanup } = await startServer(t, { config: { logDir: logDir.dir, logMarkIntervalMs: 0 } });
    const u = esxiUuid();
    const { vm } = await ts.connectVm({ uuid: u.text, name: 'esc01' }, cleanup);
    const title = '\x1b]0;pwned\x07';
    const clipboard = '\x1b]52;c;cm0gLXJmIH4=\x1b\\';
    const dcs = '\x1bP+q544e\x1b\\';
    const colour = '\x1b[31mRED\x1b[0m';
    const c1 = Buffer.from('\u009b2J', 'utf8');
    vm.send(Buffer.concat([Buffer.from(`before ${title}${clipboard}${dcs}${colour} `), c1, Buffer.from(' after\r\n')]));
    const file = join(logDir.dir, `${formatUuid(u.hex)}.log`);
    await waitUntil(() => existsSync(file) && readFileSync(file).includes('after'), 5000, 'logged');

    // A pipe: the exact bytes.
    const piped = await vspcAdmin(ts.adminAddress, ['log', 'esc01', '--tail', '1']);
    assert.equal(piped.code, 0, piped.stderr);
    assert.ok(piped.stdout.includes(title + clipboard + dcs + colour), JSON.stringify(piped.stdout));

    // A terminal (script(1) gives the command a pty).
    const onTty = (extra: string[]) =>
      new Promise<string>((resolve, reject) => {
        const cmd = [process.execPath, VSPC_ADMIN_JS, '--admin', ts.adminAddress, 'log', 'esc01', '--tail', '1', ...extra]
          .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
          .join(' ');
        execFile('script', ['-qefc', cmd, '/dev/null'], { timeout: 15_000, encoding: 'buffer' }, (err, stdout) => {
          if (err) reject(err);
          else resolve((stdout as Buffer).toString('latin1'));
        });
      });
    const shown = await onTty([]);
    assert.ok(shown.includes('before '), JSON.stringify(shown));
    assert.ok(shown.includes('\x1b[31mRED\x1b[0m'), 'colours are kept');
    assert.ok(!shown.includes('\x1b]'), 'no OSC');
    assert.ok(!shown.includes('\x1bP'), 'no DCS');
    assert.ok(!shown.includes('pwned') && !shown.includes('cm0gLXJmIH4='), 'string contents are dropped');
    assert.ok(!shown.includes('\xc2\x9b'), 'no C1 CSI');
    assert.ok(shown.includes('?2J after'));
    const raw = await onTty(['--raw']);
    assert.ok(raw.includes('\x1b]0;pwned\x07'), '--raw keeps everything');
  });
});
