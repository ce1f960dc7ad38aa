/**
 * Putting a file (a unix socket, a pty's symbolic link) at a path other people use,
 * safely. What vspc checks and does, for every endpoint:
 *
 * - The directory must exist (vspc does not create it: systemd's RuntimeDirectory= or
 *   the operator does) and be vspc's: owned by vspc's user or by root, and not writable
 *   by group or others unless it has the sticky bit (as /tmp): in a directory others
 *   may write, they could swap the file for a symbolic link between vspc's steps.
 *   Otherwise VSPC_ACCESS_NO_DIRECTORY / VSPC_ACCESS_UNSAFE_DIRECTORY, and nothing is
 *   created there.
 * - What is at the path already is looked at with lstat, never followed:
 *   nothing → fine; a socket nobody listens on (left by a crash) → replaced; a live
 *   socket → VSPC_ACCESS_PATH_IN_USE; for a pty link, a symbolic link to a pty
 *   (`/dev/pts/N`, left by a crash) → replaced; anything else — a regular file, a
 *   directory, another symbolic link — → VSPC_ACCESS_PATH_OCCUPIED, never replaced.
 * - The new file is made complete elsewhere and renamed into place (rename is atomic
 *   and replaces a stale file without a moment when the path is missing or the file
 *   has the wrong owner or mode): a unix socket is bound in a private directory
 *   (mode 0700) inside the target directory, given its owner, group and mode there,
 *   then renamed; a link is created under a temporary name and renamed.
 * - vspc removes only what it made: the path is unlinked on close only while it is
 *   still the same file (device and inode, and for a link the same target).
 */
import net from 'node:net';
import type { Stats } from 'node:fs';
import { lstat, stat } from 'node:fs/promises';
import { AccessError, accessError, sysCodeOf } from './errors.js';

export function describeFile(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  if (st.isSocket()) return 'a socket';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'something else';
}

/** Throws unless `dir` exists, is a directory and is vspc's (see the module comment). */
export async function checkDirectory(dir: string, uid = process.getuid?.() ?? 0): Promise<void> {
  let st: Stats;
  try {
    st = await stat(dir);
  } catch (err) {
    const code = sysCodeOf(err);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new AccessError('VSPC_ACCESS_PERMISSION_DENIED', `${code}: vspc may not reach the directory ${dir}`, { dir, sysCode: code });
    }
    throw new AccessError('VSPC_ACCESS_NO_DIRECTORY', `the directory ${dir} does not exist (create it, e.g. with systemd's RuntimeDirectory=)`, { dir, sysCode: code });
  }
  if (!st.isDirectory()) throw new AccessError('VSPC_ACCESS_NO_DIRECTORY', `${dir} is ${describeFile(st)}, not a directory`, { dir });
  if (st.uid !== uid && st.uid !== 0) {
    throw new AccessError('VSPC_ACCESS_UNSAFE_DIRECTORY', `the directory ${dir} belongs to uid ${st.uid}, neither vspc's user (uid ${uid}) nor root`, { dir, owner: st.uid });
  }
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new AccessError(
      'VSPC_ACCESS_UNSAFE_DIRECTORY',
      `the directory ${dir} is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}) without the sticky bit`,
      { dir, mode: (st.mode & 0o7777).toString(8) },
    );
  }
}

/** lstat, or null when nothing is there. */
export async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await lstat(path);
  } catch (err) {
    if (sysCodeOf(err) === 'ENOENT') return null;
    throw accessError(err, `cannot look at ${path}`, { path });
  }
}

/** Whether something accepts connections on the unix socket at `path`. */
export function probeUnixSocket(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', (err) => {
      sock.destroy();
      const code = sysCodeOf(err);
      if (code === 'ECONNREFUSED' || code === 'ENOENT') resolve(false);
      else reject(accessError(err, `cannot check the socket ${path}`, { path }));
    });
  });
}

/**
 * Whether the socket path may be taken: nothing there, or a stale socket (replaced by
 * the rename). Throws otherwise.
 */
export async function checkSocketPath(path: string): Promise<'free' | 'stale'> {
  const st = await lstatOrNull(path);
  if (!st) return 'free';
  if (!st.isSocket()) {
    throw new AccessError('VSPC_ACCESS_PATH_OCCUPIED', `${path} is ${describeFile(st)}, not a socket; vspc replaces only a stale socket there`, { path });
  }
  if (await probeUnixSocket(path)) throw new AccessError('VSPC_ACCESS_PATH_IN_USE', `another process listens on ${path}`, { path });
  return 'stale';
}

/** Pty devices, the only targets of a symbolic link vspc replaces. */
export const PTY_DEVICE_PREFIX = '/dev/pts/';

