/**
 * The project's real QEMU test guest (test/support/guest/build-guest.sh +
 * test/support/qemu.ts): it boots under TCG to a root shell on ttyS0, reachable
 * over each console backend the integration tests use: a unix socket QEMU listens
 * on, a pty, and a unix socket QEMU connects to (reconnect=1) as a vspc source would
 * be reached. The shell has job control (^C interrupts a foreground command).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SerialConsole, guestArtifacts, liveGuestPids, makeGuestDir, startGuest } from '../support/qemu.js';

const BOOT_TIMEOUT_MS = 45_000;

/** Whether a process exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

const ROOT = new URL('../../../', import.meta.url).pathname;
const ORPHAN_SCRIPT = new URL('./fixtures/orphan-guest.js', import.meta.url).pathname;

/**
 * Starts a child Node process that starts a guest and never stops it, ends that
 * process the way `end` says, and checks that QEMU died with it. QEMU's death is
 * observed as an event: our connection to its ttyS0 socket closes.
 */
async function orphanCase(
  mode: 'return' | 'throw' | 'wait',
  end: (child: ReturnType<typeof spawn>) => void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const dir = makeGuestDir();
  const child = spawn(process.execPath, [ORPHAN_SCRIPT, dir, mode], { stdio: ['pipe', 'pipe', 'pipe'] });
  const childExit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const pidLine = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`no QEMU pid from the child; stderr: ${stderr}`)), 20_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /qemu-pid (\d+)\n/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('exit', () => reject(new Error(`child exited before starting QEMU; stderr: ${stderr}`)));
    });
    const qemuPid = Number(pidLine);
    assert.ok(alive(qemuPid));
    const sock = net.connect(join(dir, 'ttyS0.sock'));
    sock.on('data', () => {});
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const qemuGone = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    sock.on('error', () => {});
    end(child);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      qemuGone,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`QEMU pid ${qemuPid} outlived its parent (${mode})`)), 15_000);
      }),
    ]).finally(() => clearTimeout(timer));
    // The socket closed because QEMU's files were released: it is exiting (from
    // SIGKILL, so it cannot linger). The child itself has ended too.
    return await childExit;
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('real QEMU guest', () => {
  const artifacts = guestArtifacts();

  test('boots to a shell on a unix-socket ttyS0; uname -r is the fetched kernel; job control works', { timeout: 60_000 }, async (t) => {
    const guest = await startGuest({ artifacts, serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off'] });
    let con: SerialConsole | null = null;
    t.after(async () => {
      con?.close();
      await guest.stop();
    });
    con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
    const bootMs = await con.waitForShell(BOOT_TIMEOUT_MS, guest.spawnedAt);
    t.diagnostic(`boot to prompt (unix socket): ${bootMs} ms`);
    assert.ok(!con.output.includes('job control turned off'), 'the shell has a controlling tty');

    const uname = await con.run('uname -r');
    assert.equal(uname.status, 0);
    assert.equal(uname.output, artifacts.kernelRelease);
    assert.match(artifacts.kernelPackage, new RegExp(`^linux-image-${artifacts.kernelRelease.replace(/\./g, '\\.')}$`));
    const version = await con.run('cat /proc/version');
    assert.ok(version.output.includes(`Debian ${artifacts.kernelVersion}`), `kernel ${artifacts.kernelVersion} in: ${version.output}`);

    // Job control: the interactive shell runs with -m, and ^C reaches a foreground job.
    assert.match((await con.run('echo $-')).output, /m/);
    // "armed-1" is printed by the foreground job itself, which then becomes the sleep
    // (exec): by then the shell has left its line editor (whose raw mode would read ^C as
    // a plain byte) and the job is the terminal's foreground process group, so ^C is its
    // SIGINT — not a signal racing the shell between two commands.
    con.sendLine("sh -c 'echo armed-$((0+1)); exec sleep 1000'; echo after-sleep-$((40+2))");
    await con.waitFor('armed-1', 10_000, 'the shell running the sleep command line');
    con.send('\x03');
    await con.waitFor(con.prompt, 30_000, 'the prompt after ^C');
    assert.ok(!con.output.includes('after-sleep-42'), 'the whole command line was interrupted');
    assert.equal((await con.run('false')).status, 1);

    // A bounded wait for text that never comes rejects with what was seen.
    await assert.rejects(con.waitFor('never-printed', 200), /timed out after 200 ms waiting for "never-printed" on unix:.*; output seen:\n/s);

    // Modules for the virtio console are loaded (ttyS1 and virtio ports are for tests).
    const lsmod = await con.run('cat /proc/modules');
    assert.match(lsmod.output, /^virtio_console /m);
  });

  test('boots to a shell on a pty ttyS0 and talks through the pty path', { timeout: 60_000 }, async (t) => {
    const guest = await startGuest({ artifacts, serial: ['pty'] });
    let con: SerialConsole | null = null;
    t.after(async () => {
      con?.close();
      await guest.stop();
    });
    assert.equal(guest.ptyPaths.length, 1);
    assert.match(guest.ptyPaths[0], /^\/dev\/pts\/\d+$/);
    assert.equal(guest.ptys.serial0, guest.ptyPaths[0]);
    assert.match(guest.qemuOutput(), new RegExp(`char device redirected to ${guest.ptyPaths[0]} \\(label serial0\\)`));
    con = SerialConsole.openPty(guest.ptyPaths[0]);
    const bootMs = await con.waitForShell(BOOT_TIMEOUT_MS, guest.spawnedAt);
    t.diagnostic(`boot to prompt (pty): ${bootMs} ms`);
    const uname = await con.run('uname -r');
    assert.equal(uname.output, artifacts.kernelRelease);
    const tty = await con.run('tty');
    assert.equal(tty.output, '/dev/ttyS0');
  });

  test('QEMU as the client of a listener (reconnect=1) reaches the shell; ttyS1 is a second port', { timeout: 60_000 }, async (t) => {
    const dir = makeGuestDir();
    const listener = net.createServer();
    const consoles: SerialConsole[] = [];
    const ttyS1 = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
    await new Promise<void>((resolve) => listener.listen(join(dir, 'vspc.sock'), resolve));
    const guest = await startGuest({
      artifacts,
      dir,
      serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off', 'chardev:s1'],
      args: ['-chardev', 'socket,id=s1,path={dir}/vspc.sock,reconnect=1'],
    });
    t.after(async () => {
      for (const c of consoles) c.close();
      listener.close();
      await guest.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    const con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
    consoles.push(con);
    const s1 = SerialConsole.fromSocket(await ttyS1, 'ttyS1 (QEMU connected to us)');
    consoles.push(s1);
    await con.waitForShell(BOOT_TIMEOUT_MS, guest.spawnedAt);
    // Guest → host on ttyS1.
    await con.run('stty -F /dev/ttyS1 raw -echo 115200 && echo hello-from-ttyS1-$((6*7)) > /dev/ttyS1');
    await s1.waitFor('hello-from-ttyS1-42', 10_000);
    // Host → guest on ttyS1. A UART drops what arrives while the port is closed, so
    // the guest reports on ttyS1 itself once its reader holds the port open.
    const reading = con.run(`sh -c 'exec </dev/ttyS1; echo s1-open-$((1+1)) >/dev/ttyS1; head -n1'`);
    await s1.waitFor('s1-open-2', 10_000, 'the guest opening ttyS1');
    s1.send('hello-to-ttyS1\n');
    assert.equal((await reading).output, 'hello-to-ttyS1');
  });

  test('a variant with extra files, an init hook and a dynamic binary with its libraries', { timeout: 90_000 }, async (t) => {
    const src = makeGuestDir('vspc-guest-src-');
    t.after(() => rmSync(src, { recursive: true, force: true }));
    writeFileSync(join(src, 'hook.sh'), 'echo "hook ran on $(hostname)" > /run/hook-result\n');
    writeFileSync(join(src, 'note.txt'), 'extra file\n');
    const build = await promisify(execFile)(
      'bash',
      [
        join(ROOT, 'test/support/guest/build-guest.sh'),
        '--variant', 'selftest',
        '--add', `${join(src, 'hook.sh')}:/etc/vspc-init.d/50-selftest.sh`,
        '--add', `${src}:/opt/selftest`,
        '--add-bin', '/usr/bin/stat:/usr/local/bin/gnustat',
        '--print',
      ],
      { timeout: 60_000 },
    );
    assert.match(build.stdout, /variants\/selftest\/guest\.json\n$/);
    const variant = guestArtifacts('selftest');
    assert.notEqual(variant.initrd, artifacts.initrd);
    const guest = await startGuest({ artifacts: variant, serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off'] });
    let con: SerialConsole | null = null;
    t.after(async () => {
      con?.close();
      await guest.stop();
    });
    con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
    await con.waitForShell(BOOT_TIMEOUT_MS, guest.spawnedAt);
    assert.equal((await con.run('cat /run/hook-result')).output, 'hook ran on guest');
    assert.equal((await con.run('cat /opt/selftest/note.txt')).output, 'extra file');
    const gnu = await con.run('gnustat --version');
    assert.equal(gnu.status, 0, gnu.output);
    assert.match(gnu.output, /^stat \(GNU coreutils\)/);
  });

  test('stop() is idempotent and leaves no QEMU behind', { timeout: 60_000 }, async () => {
    const guest = await startGuest({ artifacts, serial: ['null'] });
    assert.ok(alive(guest.pid));
    assert.ok(liveGuestPids().includes(guest.pid));
    await Promise.all([guest.stop(), guest.stop()]);
    await guest.stop();
    assert.ok(guest.hasExited());
    assert.ok(!alive(guest.pid));
    assert.ok(!liveGuestPids().includes(guest.pid));
  });

  test('QEMU never outlives the test process: normal end, uncaught exception, SIGTERM, SIGINT, SIGKILL', { timeout: 90_000 }, async () => {
    assert.deepEqual(await orphanCase('return', (c) => c.stdin!.write('go\n')), { code: 0, signal: null });
    assert.equal((await orphanCase('throw', (c) => c.stdin!.write('go\n'))).code, 1);
    assert.deepEqual(await orphanCase('wait', (c) => c.kill('SIGTERM')), { code: null, signal: 'SIGTERM' });
    assert.deepEqual(await orphanCase('wait', (c) => c.kill('SIGINT')), { code: null, signal: 'SIGINT' });
    // SIGKILL runs no handler: QEMU gets its parent-death signal (setpriv --pdeathsig).
    assert.deepEqual(await orphanCase('wait', (c) => c.kill('SIGKILL')), { code: null, signal: 'SIGKILL' });
  });

  test('a guest that never reaches its prompt fails with the output seen', { timeout: 60_000 }, async (t) => {
    // /init replaced by /bin/false: the kernel panics, and with -no-reboot QEMU exits.
    const guest = await startGuest({ artifacts, serial: ['unix:{dir}/ttyS0.sock,server=on,wait=off'], append: 'rdinit=/bin/false' });
    t.after(() => guest.stop());
    const con = await SerialConsole.connectUnix(guest.path('ttyS0.sock'));
    t.after(() => con.close());
    await assert.rejects(con.waitForShell(BOOT_TIMEOUT_MS, guest.spawnedAt), (err: Error) => {
      assert.match(err.message, /ready marker/);
      assert.match(err.message, /output seen:\n[\s\S]*Kernel panic/);
      return true;
    });
    assert.deepEqual(await guest.waitForExit(10_000), { code: 0, signal: null });
  });
});
