/**
 * The listen types: vspc serves, the peer connects.
 *
 * - `unix-listen:PATH`: QEMU `-chardev socket,id=s0,path=PATH,reconnect=N -serial chardev:s0`
 *   (QEMU dials vspc and redials every N s while vspc is away).
 * - `tcp-listen:HOST:PORT`: a raw TCP peer (QEMU `-serial tcp:HOST:PORT,reconnect=N`).
 *
 * One peer at a time: while one is connected, another is refused (closed at once,
 * logged, counted as `refusedPeers`) by the runner.
 *
 * The unix socket file is created with mode 0600 (`socketMode`): only vspc's user may
 * connect (connecting needs write permission on the file; the directory's permissions
 * apply on top). The mode is set right after bind, before any connection is accepted;
 * a peer of the directory's users could only slip in during those microseconds, so
 * the directory should be private too.
 *
 * A file already at PATH is handled with care, because vspc would have to remove it:
 * - nothing there: bind;
 * - a socket nobody listens on (left by a crash): removed, then bind;
 * - a socket someone listens on: VSPC_SOURCE_ADDRESS_IN_USE (retried with backoff);
 * - a symlink (never followed, never removed), a regular file, a directory:
 *   VSPC_SOURCE_NOT_A_SOCKET; the directory missing: VSPC_SOURCE_NO_DIRECTORY.
 * vspc only ever unlinks a socket file, and only the very file it looked at (same
 * device and inode) or the one it bound itself.
 */
import net from 'node:net';
import { lstat, stat, unlink, chmod } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import type { SourceSpec } from '../../domain/source-spec.js';
import { SourceError, listenError, sysCodeOf } from '../common/errors.js';
import type { BoundListener, ConnectorContext, Link, ListenConnector, ListenHandlers } from '../common/link.js';
import { SocketLink, hostPort, tuneTcp } from './socket-link.js';

function describeFile(st: Stats): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isDirectory()) return 'a directory';
  if (st.isFile()) return 'a regular file';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a socket';
}

/** Whether something accepts connections on the unix socket at `path`. */
function probeUnix(path: string): Promise<boolean> {
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
      else reject(err);
    });
  });
}

/** Makes PATH bindable, or says why it is not (see the module comment). */
export async function prepareUnixListenPath(path: string, log: Logger): Promise<void> {
  const dir = dirname(path);
  let dst: Stats;
  try {
    dst = await stat(dir);
  } catch (err) {
    const code = sysCodeOf(err);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${code}: no permission to reach ${dir}`, { sysCode: code, path });
    }
    throw new SourceError('VSPC_SOURCE_NO_DIRECTORY', `${code ?? 'error'}: the directory ${dir} does not exist`, { sysCode: code, path });
  }
  if (!dst.isDirectory()) throw new SourceError('VSPC_SOURCE_NO_DIRECTORY', `${dir} is not a directory`, { path });

  let st: Stats;
  try {
    st = await lstat(path);
  } catch (err) {
    const code = sysCodeOf(err);
    if (code === 'ENOENT') return;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${code}: no permission to look at ${path}`, { sysCode: code, path });
    }
    throw listenError(err, path);
  }
  if (!st.isSocket()) {
    throw new SourceError(
      'VSPC_SOURCE_NOT_A_SOCKET',
      `${path} is ${describeFile(st)}, not a socket; vspc only replaces a stale socket file there`,
      { path },
    );
  }
  let live: boolean;
  try {
    live = await probeUnix(path);
  } catch (err) {
    const code = sysCodeOf(err);
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${code}: no permission to check the socket ${path}`, { sysCode: code, path });
    }
    throw listenError(err, path);
  }
  if (live) throw new SourceError('VSPC_SOURCE_ADDRESS_IN_USE', `another process listens on ${path}`, { path });
  // Stale. Remove it only if it is still the file we looked at.
  const again = await lstat(path).catch(() => null);
  if (!again) return;
  if (!again.isSocket() || again.ino !== st.ino || again.dev !== st.dev) {
    throw new SourceError('VSPC_SOURCE_ADDRESS_IN_USE', `${path} changed while vspc checked it; will look again`, { path });
  }
  try {
    await unlink(path);
  } catch (err) {
    const code = sysCodeOf(err);
    if (code === 'ENOENT') return;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${code}: no permission to remove the stale socket ${path}`, { sysCode: code, path });
    }
    throw listenError(err, path);
  }
  log.info('removed a stale socket file', { path });
}

/** `server.listen(...)`, as a promise of a SourceError. */
function bindServer(server: net.Server, options: net.ListenOptions, where: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(listenError(err, where));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(options);
  });
}

/** Hands accepted connections to the runner; reports a failing server once. */
function serve(server: net.Server, address: string, handlers: ListenHandlers, wrap: (sock: net.Socket) => Link, release: () => Promise<void>): BoundListener {
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      // server.close() stops accepting at once; its callback waits for open connections,
      // which the runner ends on its own.
      server.close();
      server.unref();
      release().then(resolve, resolve);
    });
    return closing;
  };
  server.on('connection', (sock: net.Socket) => {
    if (closing) {
      sock.destroy();
      return;
    }
    handlers.incoming(wrap(sock));
  });
  server.on('error', (err) => {
    if (closing) return;
    void close();
    handlers.failed(listenError(err, address));
  });
  return { address, close };
}

export function unixListenConnector(spec: Extract<SourceSpec, { type: 'unix-listen' }>, ctx: ConnectorContext): ListenConnector {
  const address = `unix-listen:${spec.path}`;
  return {
    mode: 'listen',
    async listen(handlers: ListenHandlers): Promise<BoundListener> {
      await prepareUnixListenPath(spec.path, ctx.logger);
      const server = net.createServer();
      await bindServer(server, { path: spec.path }, spec.path);
      let bound: Stats | null = null;
      try {
        // 'listening' came on the tick after bind; nothing has been accepted yet.
        await chmod(spec.path, ctx.options.socketMode);
        bound = await lstat(spec.path);
      } catch (err) {
        server.close();
        throw listenError(err, spec.path);
      }
      const release = async (): Promise<void> => {
        // libuv removes the file when the server closes; make sure, but only our own file.
        const now = await lstat(spec.path).catch(() => null);
        if (now && bound && now.isSocket() && now.ino === bound.ino && now.dev === bound.dev) await unlink(spec.path).catch(() => {});
      };
      return serve(server, address, handlers, (sock) => new SocketLink(sock, address, ctx.options, ctx.logger), release);
    },
  };
}

export function tcpListenConnector(spec: Extract<SourceSpec, { type: 'tcp-listen' }>, ctx: ConnectorContext): ListenConnector {
  const where = hostPort(spec.host, spec.port);
  const address = `tcp-listen:${where}`;
  return {
    mode: 'listen',
    async listen(handlers: ListenHandlers): Promise<BoundListener> {
      const server = net.createServer();
      await bindServer(server, { host: spec.host, port: spec.port, exclusive: true }, where);
      return serve(
        server,
        address,
        handlers,
        (sock) => {
          tuneTcp(sock, ctx.options);
          return new SocketLink(sock, hostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0), ctx.options, ctx.logger);
        },
        async () => {},
      );
    },
  };
}
