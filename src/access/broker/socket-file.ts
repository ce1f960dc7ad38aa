/**
 * The broker's unix socket file: created so that it is never, even for an instant,
 * more open than asked; a stale file left by a crash replaced, never a symlink followed
 * nor something else's file removed; removed at close only if it is still ours.
 */
import net from 'node:net';
import { chmodSync, chownSync, lstatSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { VspcError } from '../../errors.js';

export interface SocketFileOptions {
  path: string;
  /** Permission bits, e.g. 0o660: connecting needs write permission on the file. */
  mode: number;
  /** Group to give the file (vspc must be root or a member of it); null: vspc's own. */
  gid: number | null;
}

/** Which file we created: removed at close only if the path still holds it. */
export interface SocketFileIdentity {
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
}

function pathError(path: string, why: string): VspcError {
  return new VspcError('VSPC_BROKER_SOCKET_PATH', `broker socket ${path}: ${why}`, { path });
}

/** Resolves true when something accepts connections at `path`, false when nothing listens (ECONNREFUSED). */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path });
    const done = (fn: () => void) => {
      clearTimeout(timer);
      s.destroy();
      fn();
    };
    const timer = setTimeout(() => done(() => resolve(true)), timeoutMs);
    s.once('connect', () => done(() => resolve(true)));
    s.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') done(() => resolve(false));
      else done(() => reject(pathError(path, `cannot check whether it is in use (${err.code ?? err.message})`)));
    });
  });
}

/**
 * Makes `path` free for a new socket: its directory must exist; a socket nobody listens
 * on (a crash left it) is removed; a live one, a symlink, or anything that is not a
 * socket is refused, never touched.
 */
export async function clearSocketPath(path: string): Promise<void> {
  const dir = dirname(path);
  let dirStat;
  try {
    dirStat = statSync(dir);
  } catch (err) {
    throw pathError(path, `its directory ${dir} does not exist or cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!dirStat.isDirectory()) throw pathError(path, `${dir} is not a directory`);
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw pathError(path, `cannot be checked (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (st.isSymbolicLink()) throw pathError(path, 'is a symbolic link; vspc does not follow it (remove it, or choose another path)');
  if (!st.isSocket()) throw pathError(path, 'exists and is not a socket; vspc does not replace it');
  if (await answers(path)) {
    throw new VspcError('VSPC_BROKER_SOCKET_IN_USE', `broker socket ${path}: another process accepts connections on it (a second vspc?)`, { path });
  }
  // Stale: left by a vspc that did not close. Removed by path; a symlink put there since
  // the lstat is removed itself, never followed (unlink does not follow symlinks).
  unlinkSync(path);
}

/** The longest unix socket path Linux takes (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * Binds `server` to `path`: under a temporary name next to it, with the file at mode
 * 0600 from the first instant (umask around the synchronous bind), then the group and
 * `mode` set, then renamed into place. Resolves once listening.
 *
 * The temporary name also keeps libuv from removing the wrong file: it unlinks the path
 * it bound when the server closes, whatever is there by then; here that is the
 * temporary name, long gone, and the real path is removed by removeSocketFile only if
 * it still holds our socket.
 */
export async function listenOnSocketFile(server: net.Server, o: SocketFileOptions): Promise<SocketFileIdentity> {
  const temporary = `${o.path}.${process.pid}~`;
  if (Buffer.byteLength(temporary) > MAX_SOCKET_PATH) {
    throw pathError(o.path, `too long for a unix socket (at most ${MAX_SOCKET_PATH - (temporary.length - o.path.length)} bytes here)`);
  }
  await clearSocketPath(o.path);
  try {
    unlinkSync(temporary); // Left by a crash of a process with our pid.
  } catch {
    // None: the usual case.
  }
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(pathError(o.path, `cannot listen (${err.code ?? err.message})`));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // net.Server binds a unix socket synchronously inside listen(): only this call runs
    // under the restrictive umask (process-wide, so it is put back at once).
    const old = process.umask(0o177);
    try {
      server.listen({ path: temporary, exclusive: true });
    } finally {
      process.umask(old);
    }
  });
  try {
    if (o.gid !== null) chownSync(temporary, -1, o.gid);
    chmodSync(temporary, o.mode);
    renameSync(temporary, o.path);
  } catch (err) {
    server.close();
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw pathError(o.path, o.gid !== null && code === 'EPERM' ? `cannot give it group ${o.gid} (vspc must be root or a member of that group)` : `cannot set its mode or group, or move it into place (${code})`);
  }
  return { path: o.path, ...idOf(o.path) };
}

function idOf(path: string): { dev: number; ino: number } {
  try {
    const st = lstatSync(path);
    return { dev: st.dev, ino: st.ino };
  } catch {
    return { dev: -1, ino: -1 };
  }
}

/** Removes the socket file if the path still holds the one we created (another vspc may have replaced it). */
export function removeSocketFile(id: SocketFileIdentity): void {
  try {
    const st = lstatSync(id.path);
    if (st.dev === id.dev && st.ino === id.ino && st.isSocket()) unlinkSync(id.path);
  } catch {
    // Gone already.
  }
}
