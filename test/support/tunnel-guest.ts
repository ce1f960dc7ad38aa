/**
 * The QEMU test guest for serial tunnels end to end (test/e2e/tunnel-qemu.test.ts):
 * variant `tunnel-ssh` = the `agent` variant's content (the static C agent, its init
 * script, test/support/guest/vspc-agent-hook.sh) plus dropbear (Debian's dropbear-bin)
 * started on 127.0.0.1:22 by test/support/guest/dropbear-hook.sh, and OpenSSH's
 * sftp-server (today's scp speaks SFTP). Kernel command line: `vspc.agent=/dev/ttyS1
 * vspc.allow=22 vspc.sshkey=BLOB`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildCAgent, ROOT } from '../agent/harness.js';
import { guestArtifacts, guestCacheDir, type GuestArtifacts } from './qemu.js';

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
