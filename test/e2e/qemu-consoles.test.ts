/**
 * Issue 13 end to end: real QEMU guests reached through a running vspc, as an operator
 * would — a declared `unix:` console (telnet port, two viewers, the shell answering,
 * boot messages logged with nobody attached, QEMU killed and restarted: same port,
 * reconnected by itself, the gap in the log) and Proxmox-style discovery over a fake
 * /var/run/qemu-server + /etc/pve tree holding a real guest's socket, and libvirt
 * discovery over a runtime XML naming a real guest's pty (`-serial pty`).
 */
// vspc-test-runner: heavy
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROMPT, READY_MARKER, guestArtifacts, makeGuestDir, startGuest, type Guest } from '../support/qemu.js';
import { startServer, tempDir, waitUntil } from '../support/server.js';
import { TelnetUser } from '../support/sim/telnet-user.js';
import { parseSourceSpec } from '../../src/domain/source-spec.js';
import type { PortView } from '../../src/admin/views.js';

const BOOT_MS = 60_000;

/** Every console log file in `dir` (no by-name links), concatenated. */
function logOf(dir: string, fileEnding: string): string {
  let files: string[] = [];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith(fileEnding));
  } catch {
    return '';
  }
  return files.map((f) => readFileSync(join(dir, f), 'latin1')).join('');
}

describe('QEMU guests through vspc', { timeout: 240_000 }, () => {
  test('a declared unix: console: shell through telnet, two viewers, boot log with nobody attached, restart on the same port', async (t) => {
    const logDir = tempDir('vspc-qemu-logs-');
    const sockDir = makeGuestDir('vspc-qemu-');
    t.after(() => logDir.remove());
    t.after(() => rmSync(sockDir, { recursive: true, force: true }));
    const sock = join(sockDir, 'ttyS0.sock');
    const { ts, cleanup } = await startServer(t, {
      config: { logDir: logDir.dir, logMarkIntervalMs: 0, consoles: [{ name: 'guest01', source: parseSourceSpec(`unix:${sock}`), sourceText: `unix:${sock}` }] },
    });
    const guests: Guest[] = [];
    t.after(async () => {
      for (const g of guests) await g.stop();
    });
    // wait=off as Proxmox runs it; the restart uses wait=on (QEMU holds the guest until
    // vspc connects), so that the second boot is vspc's to deliver: with wait=off, QEMU
    // itself drops what the guest prints before vspc's next retry.
    const boot = async (wait = 'off') => {
      const g = await startGuest({ dir: sockDir, serial: [`unix:${sock},server=on,wait=${wait}`] });
      guests.push(g);
      return g;
    };

    let guest = await boot();
    // Nobody attached: the boot messages land in the console log.
    await waitUntil(() => logOf(logDir.dir, '.log').includes(READY_MARKER), BOOT_MS, 'boot messages in the console log');
    const port = (await ts.ports()).find((p) => p.name === 'guest01')!.port;

    const a = await TelnetUser.connect({ host: '127.0.0.1', port });
    const b = await TelnetUser.connect({ host: '127.0.0.1', port });
    cleanup.add(() => a.destroy());
    cleanup.add(() => b.destroy());
    a.send('\r');
    await a.waitFor(PROMPT, 30_000);
    const kernel = guestArtifacts('base').kernelRelease;
    const markA = a.mark();
    const markB = b.mark();
    a.send('uname -r\r');
    await a.waitFor(kernel, 30_000, markA);
    await b.waitFor(kernel, 30_000, markB);

    // QEMU killed: the console stays listed on its port, waiting; QEMU back: reconnected by itself.
    await guest.stop();
    await waitUntil(async () => (await ts.ports()).find((p) => p.name === 'guest01')?.state === 'waiting', 10_000, 'waiting after QEMU died');
    await a.waitFor('VM disconnected', 10_000, markA);
    const markAgain = a.mark();
    guest = await boot('on');
    await waitUntil(async () => (await ts.ports()).find((p) => p.name === 'guest01')?.state === 'connected', 20_000, 'reconnected');
    const again = (await ts.ports()).find((p) => p.name === 'guest01') as PortView;
    assert.equal(again.port, port, 'same port');
    await a.waitFor(READY_MARKER, BOOT_MS, markAgain);
    a.send('\recho back-$((40+2))\r');
    await a.waitFor('back-42', 30_000, markAgain);
    const log = logOf(logDir.dir, '.log');
    assert.match(log, /\[vspc [^\]]* VM disconnected/);
    assert.match(log, /\[vspc [^\]]* VM connected/);
  });

  test('Proxmox discovery over a fake /var/run/qemu-server and /etc/pve with a real guest socket', async (t) => {
    const tree = tempDir('vspc-pve-');
    t.after(() => tree.remove());
    const run = join(tree.dir, 'run');
    const conf = join(tree.dir, 'conf');
    mkdirSync(run);
    mkdirSync(conf);
    writeFileSync(join(conf, '142.conf'), 'name: pve-web01\nmemory: 256\n\n[PENDING]\nname: not-this-one\n');
    const sock = join(run, '142.serial0');
    const guest = await startGuest({ dir: run, serial: [`unix:${sock},server=on,wait=off`] });
    t.after(() => guest.stop());
    const { ts, cleanup } = await startServer(t, { config: { proxmoxRunDir: run, proxmoxConfDir: conf } });
    let row: PortView | undefined;
    await waitUntil(async () => {
      row = (await ts.ports()).find((p) => p.kind === 'proxmox');
      return row?.state === 'connected';
    }, 20_000, 'the discovered console connected');
    assert.equal(row!.name, 'pve-web01');
    assert.equal(row!.label, 'serial0');
    assert.equal(row!.key, '142');
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: row!.port });
    cleanup.add(() => user.destroy());
    await user.waitFor(READY_MARKER, BOOT_MS).catch(() => undefined);
    const mark = user.mark();
    user.send('\recho pve-$((6*7))\r');
    await user.waitFor('pve-42', BOOT_MS, mark);
  });
  test('libvirt discovery over a runtime XML naming a real guest\'s pty (-serial pty)', async (t) => {
    const tree = tempDir('vspc-libvirt-');
    t.after(() => tree.remove());
    const guest = await startGuest({ serial: ['pty'] });
    t.after(() => guest.stop());
    const pty = guest.ptyPaths[0];
    assert.ok(pty?.startsWith('/dev/pts/'), `QEMU printed its pty (${String(pty)})`);
    // What libvirtd writes under /run/libvirt/qemu for a running domain with a pty serial
    // port (and the <console> that mirrors it, which must not make a second console).
    writeFileSync(
      join(tree.dir, 'lv-web01.xml'),
      `<domstatus state='running' reason='booted' pid='${guest.pid}'><domain type='kvm' id='7'><name>lv-web01</name>` +
        `<uuid>6b1f2a3c-0d4e-4f50-8a61-72b3c4d5e6f7</uuid><devices>` +
        `<serial type='pty'><source path='${pty}'/><target type='isa-serial' port='0'><model name='isa-serial'/></target><alias name='serial0'/></serial>` +
        `<console type='pty' tty='${pty}'><source path='${pty}'/><target type='serial' port='0'/><alias name='serial0'/></console>` +
        `</devices></domain></domstatus>\n`,
    );
    const { ts, cleanup } = await startServer(t, { config: { libvirtRunDir: tree.dir } });
    let row: PortView | undefined;
    await waitUntil(async () => {
      row = (await ts.ports()).find((p) => p.kind === 'libvirt');
      return row?.state === 'connected';
    }, 20_000, 'the discovered pty console connected');
    assert.equal(row!.name, 'lv-web01');
    assert.equal(row!.key, '6b1f2a3c-0d4e-4f50-8a61-72b3c4d5e6f7');
    assert.equal((await ts.ports()).filter((p) => p.kind === 'libvirt').length, 1, 'the <console> mirror is not a second console');
    const user = await TelnetUser.connect({ host: '127.0.0.1', port: row!.port });
    cleanup.add(() => user.destroy());
    // QEMU drops what the guest printed while nobody had the pty open: the shell is
    // reached by typing, not by its boot banner.
    const mark = user.mark();
    user.send('\r');
    await user.waitFor(PROMPT, BOOT_MS, mark);
    const mark2 = user.mark();
    user.send('echo lv-$((6*7)); uname -r\r');
    await user.waitFor('lv-42', 30_000, mark2);
    await user.waitFor(guestArtifacts('base').kernelRelease, 30_000, mark2);
  });
});
