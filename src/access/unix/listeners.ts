/**
 * Unix-domain sockets per console (rtty/ttysrv style): `<dir>/<name>`, with the owner,
 * group and mode the configuration gives (default: vspc's user, 0600), so that file
 * permissions decide who may attach — and `ssh -t user@host 'socat - UNIX:/run/vspc/console/web01'`
 * or a forced command hands a user one console. The protocol is raw by default (the
 * console's bytes, as on a raw TCP port); `protocol: telnet` speaks telnet as the
 * telnet ports do (lock requests, notices, scrollback).
 *
 * File names: src/access/common/file-names.ts. Safety (the directory must be vspc's; a
 * stale socket is replaced, nothing else is; the socket appears complete, with its
 * owner and mode, by a rename): src/access/common/paths.ts.
 *
 * Audit: a connection's peer is known from SO_PEERCRED (uid, gid, pid) through vspc's
 * native addon; the audit line also records the socket's path, owner, group and mode —
 * the permissions that let the peer in. Without the addon, only the socket's.
 */
import net from 'node:net';
import { userInfo } from 'node:os';
import { chmod, chown, lstat, mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { ConsoleClient } from '../../domain/seams.js';
import { errorFields } from '../../errors.js';
import { ConsoleEndpoints, type EndpointDriver } from '../common/endpoints.js';
import { AccessError, accessError } from '../common/errors.js';
import { assignFileNames, consoleBaseName, NAME_MAX, UNIX_PATH_MAX } from '../common/file-names.js';
import { peerCredentials } from '../common/native.js';
import { checkDirectory, checkSocketPath } from '../common/paths.js';
import { StreamClient, type StreamClientOptions } from '../common/stream-client.js';
import type { DescriptorBudget } from '../../domain/descriptors.js';

/** A user or group as configured: its name and its numeric id. */
export interface Principal {
  readonly name: string;
  readonly id: number;
}

/** One console's unix socket, as the configuration says. */
export interface UnixSocketSettings {
  readonly dir: string;
  readonly mode: number;
  /** null: vspc's own user. */
  readonly owner: Principal | null;
  /** null: vspc's own group. */
  readonly group: Principal | null;
  readonly protocol: 'raw' | 'telnet';
}

/** Who came in through a unix socket, for the client's `peer` and `origin`. */
export interface UnixPeer {
  readonly method: 'unix';
  readonly peer: string;
  readonly origin: NonNullable<ConsoleClient['origin']>;
}

export interface UnixSocketOptions extends StreamClientOptions {
  bindRetryMs: number;
  /** The process's descriptor budget: an endpoint that does not fit waits (src/access/common/endpoints.ts). */
  descriptors?: DescriptorBudget;
  /** The console's unix socket settings; null when the method is off for it. */
  settingsOf(hub: ConsoleHub): UnixSocketSettings | null;
  /** The process's descriptor budget: false closes the socket at once. */
  admit?(socket: net.Socket): boolean;
  /** `protocol: telnet`: hands the connection to a telnet client (the server wires access/telnet in). */
  telnetClient?(socket: net.Socket, hub: ConsoleHub, peer: UnixPeer): void;
}

interface UnixSpec extends UnixSocketSettings {
  readonly path: string;
}

interface UnixHandle {
  readonly server: net.Server;
  readonly spec: UnixSpec;
  readonly dev: number;
  readonly ino: number;
}

const octal = (mode: number) => mode.toString(8).padStart(4, '0');

/** Every console's unix socket, for the consoles that have the method enabled. */
export class UnixSocketListeners {
  private readonly endpoints: ConsoleEndpoints<UnixSpec, UnixHandle>;
  private readonly ownUser = (() => {
    try {
      return userInfo().username;
    } catch {
      return String(process.getuid?.() ?? '?');
    }
  })();

  constructor(
    registry: Registry,
    private readonly logger: Logger,
    private readonly options: UnixSocketOptions,
  ) {
    const driver: EndpointDriver<UnixSpec, UnixHandle> = {
      method: 'unix',
      groupOf: (hub) => this.groupOf(hub),
      specs: (hubs) => this.specs(hubs),
      keyOf: (s) => JSON.stringify([s.path, s.mode, s.owner?.id ?? null, s.group?.id ?? null, s.protocol]),
      open: (hub, spec) => this.open(hub, spec),
      close: (h) => this.closeHandle(h),
    };
    this.endpoints = new ConsoleEndpoints(registry, logger, driver, options);
  }

  /** Applies a new configuration (reload). */
  refresh(): void {
    this.endpoints.schedule();
  }

  describe(hub: ConsoleHub): { path: string; protocol: string; owner: string; group: string | null; mode: string; listening: boolean; error: string | null } | null {
    const s = this.endpoints.state(hub);
    if (!s) return null;
    return {
      path: s.spec.path,
      protocol: s.spec.protocol,
      owner: s.spec.owner?.name ?? this.ownUser,
      group: s.spec.group?.name ?? null,
      mode: octal(s.spec.mode),
      listening: s.handle !== null,
      error: s.error,
    };
  }

  close(): Promise<void> {
    return this.endpoints.close();
  }

  /** A socket's name depends only on the consoles of its directory with the same base name (`assignFileNames`). */
  private groupOf(hub: ConsoleHub): string | null {
    const settings = this.options.settingsOf(hub);
    return settings ? `${resolve(settings.dir)}\0${consoleBaseName(hub.identity)}` : null;
  }

  private specs(hubs: readonly ConsoleHub[]): Map<ConsoleHub, UnixSpec | null> {
    const out = new Map<ConsoleHub, UnixSpec | null>();
    const byDir = new Map<string, Array<{ hub: ConsoleHub; identity: ConsoleHub['identity']; settings: UnixSocketSettings }>>();
    for (const hub of hubs) {
      const settings = this.options.settingsOf(hub);
      out.set(hub, null);
      if (!settings) continue;
      const dir = resolve(settings.dir);
      const list = byDir.get(dir) ?? [];
      list.push({ hub, identity: hub.identity, settings });
      byDir.set(dir, list);
    }
    for (const [dir, list] of byDir) {
      // The whole path must fit in a socket address; names are shortened to fit.
      const room = Math.min(NAME_MAX, UNIX_PATH_MAX - Buffer.byteLength(dir) - 1);
      const names = assignFileNames(list, Math.max(room, 16));
      for (const e of list) out.set(e.hub, { ...e.settings, dir, path: join(dir, names.get(e)!) });
    }
    return out;
  }

  private async open(hub: ConsoleHub, spec: UnixSpec): Promise<UnixHandle> {
    if (Buffer.byteLength(spec.path) > UNIX_PATH_MAX) {
      throw new AccessError('VSPC_ACCESS_FAILED', `the socket path ${spec.path} is longer than ${UNIX_PATH_MAX} bytes, the most a unix socket address holds (choose a shorter dir)`, { path: spec.path });
    }
    await checkDirectory(spec.dir);
    const before = await checkSocketPath(spec.path);
    // Bound, owned and moded in a private directory, then renamed into place: the socket
    // never exists at its path with the wrong owner or mode, and a stale one is replaced
    // without a moment when the path is missing.
    const priv = await mkdtemp(join(spec.dir, '.vspc-')).catch((err) => {
      throw accessError(err, `cannot create a temporary directory in ${spec.dir}`, { dir: spec.dir });
    });
    const tmp = join(priv, 's');
    // Connections before the handle is recorded are closed by accept().
    const server = net.createServer((socket) => this.accept(hub, server, socket));
    try {
      await new Promise<void>((resolveListen, reject) => {
        server.once('error', reject);
        server.listen({ path: tmp }, () => {
          server.off('error', reject);
          resolveListen();
        });
      }).catch((err) => {
        throw accessError(err, `cannot listen on a unix socket in ${spec.dir}`, { path: spec.path });
      });
      if (spec.owner || spec.group) {
        await chown(tmp, spec.owner?.id ?? -1, spec.group?.id ?? -1).catch((err) => {
          const who = [spec.owner ? `owner ${spec.owner.name}` : '', spec.group ? `group ${spec.group.name}` : ''].filter(Boolean).join(' and ');
          throw accessError(err, `cannot give the socket ${spec.path} ${who} (changing a file's owner needs root; a group needs vspc to be a member)`, { path: spec.path });
        });
      }
      await chmod(tmp, spec.mode);
      // Looked at again just before: only a stale socket is ever replaced.
      if ((await checkSocketPath(spec.path)) === 'stale' && before === 'free') {
        this.logger.info('a stale socket appeared at the path; replacing it', { path: spec.path });
      }
      await rename(tmp, spec.path).catch((err) => {
        throw accessError(err, `cannot put the socket at ${spec.path}`, { path: spec.path });
      });
      const st = await lstat(spec.path);
      if (before === 'stale') this.logger.info('replaced a stale socket file', { vm: hub.displayName, path: spec.path });
      server.on('error', (err) => this.logger.warn('unix socket listener error', { vm: hub.displayName, path: spec.path, ...errorFields(err) }));
      this.logger.info('console unix socket ready', { vm: hub.displayName, path: spec.path, mode: octal(spec.mode), owner: spec.owner?.name, group: spec.group?.name, protocol: spec.protocol });
      return { server, spec, dev: st.dev, ino: st.ino };
    } catch (err) {
      server.close();
      throw err;
    } finally {
      await rm(priv, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  private async closeHandle(h: UnixHandle): Promise<void> {
    h.server.close();
    // Only the very socket vspc put there (libuv unlinks the temporary path, not this one).
    const now = await lstat(h.spec.path).catch(() => null);
    if (now && now.isSocket() && now.dev === h.dev && now.ino === h.ino) await unlink(h.spec.path).catch(() => undefined);
  }

  private accept(hub: ConsoleHub, server: net.Server, socket: net.Socket): void {
    const current = this.endpoints.state(hub)?.handle;
    if (this.options.admit && !this.options.admit(socket)) {
      socket.destroy();
      return;
    }
    if (!current || current.server !== server) {
      socket.destroy();
      return;
    }
    const spec = current.spec;
    const cred = peerCredentials(socket);
    const origin = {
      path: spec.path,
      socketOwner: spec.owner?.name ?? this.ownUser,
      socketGroup: spec.group?.name ?? null,
      socketMode: octal(spec.mode),
      ...(cred ? { peerUid: cred.uid, peerGid: cred.gid, peerPid: cred.pid } : {}),
    };
    const peer = cred ? `unix:uid=${cred.uid},pid=${cred.pid}` : `unix:${spec.path}`;
    if (spec.protocol === 'telnet' && this.options.telnetClient) {
      this.options.telnetClient(socket, hub, { method: 'unix', peer, origin });
      return;
    }
    const client = new StreamClient(socket, hub, this.logger, this.options, { method: 'unix', peer, origin, whenTooSlow: 'disconnect' });
    client.attach();
  }
}
