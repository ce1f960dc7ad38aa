/**
 * vspc's own native addon (src/native/vspc_native.c, built by `npm ci` through node-gyp into src/native/build/):
 * the system calls Node.js does not offer — a pseudo-terminal in raw mode, duplicating
 * a descriptor, whether a pty's slave is open, flushing a pty, and a unix socket peer's
 * credentials (SO_PEERCRED). See docs/decisions/0010-own-native-addon-for-ptys.md.
 *
 * Loaded on first use. When it is missing (a build without the toolchain, a copy of
 * dist/ without build/), `nativeAddon()` says why instead of throwing: the pty method
 * reports its endpoints as unavailable, unix sockets fall back to auditing the socket's
 * owner, group and mode only.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

export interface NativeAddon {
  /** A pty master (non-blocking, close-on-exec) whose slave is in raw mode and not open. */
  openPty(): { fd: number; path: string };
  /** A close-on-exec duplicate of `fd`. */
  dupFd(fd: number): number;
  /** Whether some process has the pty's slave open (the master shows no hang-up). */
  ptySlaveOpen(masterFd: number): boolean;
  /** Discards what was written to the master and not read from the slave yet; with `both`, also what the slave wrote and the master did not read. */
  flushPtyOutput(masterFd: number, both?: boolean): void;
  /** The process at the other end of a connected unix socket. */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
}

/** Where `npm ci` (node-gyp) puts the addon, from dist/src/access/common/. */
const ADDON_URL = new URL('../../../../src/native/build/Release/vspc_native.node', import.meta.url);

let loaded: { addon: NativeAddon | null; error: string | null } | null = null;

/** The addon, or null with the reason it could not be loaded (cached). */
export function nativeAddon(): { addon: NativeAddon | null; error: string | null } {
  if (loaded) return loaded;
  if (process.platform !== 'linux') {
    loaded = { addon: null, error: `not supported on ${process.platform} (Linux only)` };
    return loaded;
  }
  try {
    const require = createRequire(import.meta.url);
    loaded = { addon: require(ADDON_URL.pathname) as NativeAddon, error: null };
  } catch (err) {
    loaded = { addon: null, error: `vspc's native addon is not built (npm ci builds it with python3, make, g++): ${(err as Error).message.split('\n')[0]}` };
  }
  return loaded;
}

/** The file descriptor under a connected net.Socket (libuv's), or null. */
export function socketFd(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/** SO_PEERCRED of a unix socket connection, or null when the addon or the socket cannot tell. */
export function peerCredentials(socket: Socket): { pid: number; uid: number; gid: number } | null {
  const { addon } = nativeAddon();
  const fd = socketFd(socket);
  if (!addon || fd === null) return null;
  try {
    return addon.peerCredentials(fd);
  } catch {
    return null;
  }
}
