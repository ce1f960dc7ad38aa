/**
 * The QEMU test guest for serial tunnels end to end (test/e2e/tunnel-qemu.test.ts):
 * variant `tunnel-ssh` = the `agent` variant's content (the static C agent, its init
 * script, test/support/guest/vspc-agent-hook.sh) plus dropbear (Debian's dropbear-bin)
 * started on 127.0.0.1:22 by test/support/guest/dropbear-hook.sh, and OpenSSH's
 * sftp-server (today's scp speaks SFTP). Kernel command line: `vspc.agent=/dev/ttyS1
 * vspc.allow=22 vspc.sshkey=BLOB`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { bounded, buildCAgent, ROOT } from '../agent/harness.js';
import { guestArtifacts, guestCacheDir, type GuestArtifacts, type SerialConsole } from './qemu.js';

export const TUNNEL_VARIANT = 'tunnel-ssh';
export const DROPBEAR = '/usr/sbin/dropbear';
export const SFTP_SERVER = '/usr/lib/openssh/sftp-server';

/** Builds the variant (stamp-based: instant when nothing changed) and returns its artifacts. */
export function buildTunnelGuest(): GuestArtifacts {
  for (const f of [DROPBEAR, SFTP_SERVER]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: run test/support/guest/ensure-deps.sh as root (dropbear-bin, openssh-sftp-server)`);
  }
  const { agent } = buildCAgent();
  execFileSync(
    'bash',
    [
      join(ROOT, 'test/support/guest/build-guest.sh'),
      '--variant', TUNNEL_VARIANT,
      '--add-bin', `${agent}:/usr/local/sbin/vspc-agent`,
      '--add', `${join(ROOT, 'packaging/vspc-agent.init')}:/etc/init.d/vspc-agent`,
      '--add', `${join(ROOT, 'test/support/guest/vspc-agent-hook.sh')}:/etc/vspc-init.d/50-vspc-agent.sh`,
      '--add-bin', DROPBEAR,
      '--add-bin', `${SFTP_SERVER}:/usr/lib/sftp-server`,
      '--add', `${join(ROOT, 'test/support/guest/dropbear-hook.sh')}:/etc/vspc-init.d/60-dropbear.sh`,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000, env: { ...process.env, VSPC_GUEST_CACHE: guestCacheDir() } },
  );
  return guestArtifacts(TUNNEL_VARIANT);
}

/**
 * One end of a spare serial port on the host side, for raw line measurements (no
 * framing, no tunnel): a QEMU chardev socket, or the fault relay's diverted line.
 */
export interface RawPort {
  write(b: Uint8Array): void;
  onData(f: (b: Buffer) => void): void;
  close(): void;
}

/** A spare port's QEMU socket as a RawPort. */
export async function socketPort(path: string): Promise<RawPort> {
  const s = net.connect(path);
  s.on('error', () => {});
  // A connect that fails or does not finish in time must not leave its socket behind.
  await bounded(new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); }), 10_000, 'raw port').catch((err: unknown) => {
    s.destroy();
    throw err;
  });
  return { write: (b) => void s.write(b), onData: (f) => void s.on('data', f), close: () => s.destroy() };
}

/**
 * Raw line speed (no framing, no ssh): `size` bytes each way between `port` on the host
 * and `guestDev` in the guest, driven by `head`/`cat` in the guest through its console
 * `con`, timed on the host. A UART may lose a byte or two per MiB: the guest's reader
 * stops 1 KiB short rather than hang. Under emulation `head`/`cat` move less than the
 * agent does, so this is a floor of what the line carries, not its capacity.
 */
export async function rawLine(con: SerialConsole, port: RawPort, guestDev: string, size: number, timeoutMs = 120_000): Promise<{ toGuestMs: number; fromGuestMs: number }> {
  const s = port;
  // A byte count and the last few bytes (for the guest's READY / DONE), not the bytes
  // themselves: concatenating every chunk onto what came before copied O(size²) bytes
  // in the very process that timed the line (at 8 MiB, about 0.5 GB copied).
  let count = 0;
  let tail = Buffer.alloc(0);
  const reset = () => {
    count = 0;
    tail = Buffer.alloc(0);
  };
  const waiters = new Set<() => void>();
  s.onData((b: Buffer) => {
    count += b.length;
    tail = Buffer.concat([tail.subarray(-TAIL), b.subarray(-TAIL)]);
    for (const f of [...waiters]) f();
  });
  const until = (pred: () => boolean, what: string, ms = timeoutMs) =>
    bounded(new Promise<void>((resolve) => {
      const f = () => { if (pred()) { waiters.delete(f); resolve(); } };
      waiters.add(f);
      f();
    }), ms, what);
  try {
    // host → guest: the guest holds the port open (READY), reads `size` bytes, says DONE.
    con.sendLine(`(exec 3<>${guestDev}; stty raw -echo <&3; echo READY >&3; head -c ${size - 1024} <&3 >/dev/null; echo DONE >&3) &`);
    await until(() => tail.includes('READY'), 'the guest reader is ready');
    reset();
    const t0 = performance.now();
    s.write(randomBytes(size).map((b) => (b === 0x0a || b === 0x0d ? 0x41 : b)));
    await until(() => tail.includes('DONE'), `the guest read ${size} bytes`);
    const toGuestMs = performance.now() - t0;
    // guest → host, from a file made first (/dev/urandom is slow under emulation). `wait`:
    // the reader above has let go of the port (a virtio-serial port takes one opener at
    // a time; a second open fails with EBUSY).
    await con.run(`wait; head -c ${size} /dev/urandom >/tmp/raw.out`, timeoutMs);
    reset();
    con.sendLine(`(exec 3<>${guestDev}; stty raw -echo <&3; cat /tmp/raw.out >&3; rm -f /tmp/raw.out) &`);
    await until(() => count > 0, 'the first byte from the guest');
    const t1 = performance.now();
    await until(() => count >= size - 1024, `${size} bytes from the guest (got ${count})`);
    const fromGuestMs = performance.now() - t1;
    // `cat` holds the port until its last byte is out: wait for it while still reading,
    // or the next measurement's open of the same port may fail (EBUSY) and see nothing.
    await con.run('wait', timeoutMs);
    return { toGuestMs, fromGuestMs };
  } finally {
    s.close();
  }
}

/** Bytes of the latest output kept for the guest's markers (READY, DONE: shorter than this). */
const TAIL = 32;
