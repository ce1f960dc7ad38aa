/**
 * A pty per console (remserial's `-l /dev/remserial1`): a stable symbolic link
 * (`<dir>/<name>`, or the console's `link:`) to a pseudo-terminal that a legacy program —
 * minicom, screen, cu, a data-acquisition tool — opens as if it were a serial port.
 *
 * vspc holds the pty's master (made by its native addon: src/access/common/native.ts,
 * docs/decisions/0010-own-native-addon-for-ptys.md) for as long as the endpoint exists;
 * the slave starts in raw mode (no echo, no line editing, no CR/NL translation), and
 * whatever a program sets on it (`stty -F LINK 9600`, a program's termios) stays until
 * the endpoint goes, as on a real serial port.
 *
 * A reader's session: from the moment some process opens the slave until the last one
 * closes it. vspc polls the master for that (a hang-up while nobody has the slave
 * open, none while someone has) every `pollMs`; when it sees a reader, it reads and
 * writes the master through a duplicate descriptor, attached to the console as a
 * client (method `pty`, the console's default lock mode, no scrollback replay, no
 * notices). When the reader closes the slave, the master reads EIO: the session ends,
 * its duplicate is closed (the master stays), and what vspc wrote after the reader left
 * is flushed. Output while nobody has the slave open is dropped, not buffered: the next
 * reader starts with the console's output from the moment it opened the link (within a
 * poll interval), not with a backlog of stale bytes. A reader that does not keep up
 * loses output past --client-queue-limit (like a serial line without flow control); it
 * is not cut off — a pty cannot be — and a session vspc ends (kick, a refused lock)
 * stays silent until the reader closes the slave.
 *
 * The link is created atomically (a temporary link renamed into place), replaces only a
 * stale link to a pty, and is removed on forget, on disabling and at shutdown — only
 * while it still points at vspc's pty.
 */
import tty from 'node:tty';
import { closeSync } from 'node:fs';
import { chmod, chown, readlink, rename, symlink, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import type { Logger } from '../../domain/logger.js';
import type { Registry } from '../../domain/registry.js';
import type { ConsoleHub } from '../../domain/console-hub.js';
import { errorFields } from '../../errors.js';
import { ConsoleEndpoints, type EndpointDriver } from '../common/endpoints.js';
import { AccessError, accessError } from '../common/errors.js';
import { assignFileNames, consoleBaseName, fileNameStem, NAME_MAX } from '../common/file-names.js';
import { nativeAddon, type NativeAddon } from '../common/native.js';
import { checkDirectory, describeFile, lstatOrNull, PTY_DEVICE_PREFIX } from '../common/paths.js';
import { StreamClient, type StreamClientOptions } from '../common/stream-client.js';
import type { DescriptorBudget } from '../../domain/descriptors.js';

/** A group as configured: its name and its numeric id. */
export interface PtyGroup {
  readonly name: string;
  readonly id: number;
}

/** One console's pty, as the configuration says. */
export interface PtySettings {
  /** Where `<name>` links go (unless `link` is given). */
  readonly dir: string;
  /** The slave device's mode. */
  readonly mode: number;
  /** The slave device's group; null: vspc's. */
  readonly group: PtyGroup | null;
  /** An explicit path for this console's link. */
  readonly link: string | null;
}

export interface PtyOptions extends StreamClientOptions {
  bindRetryMs: number;
  /** The process's descriptor budget: an endpoint that does not fit waits (src/access/common/endpoints.ts). */
  descriptors?: DescriptorBudget;
  /** How often idle ptys are checked for a reader (ms). */
  pollMs: number;
  settingsOf(hub: ConsoleHub): PtySettings | null;
}

interface PtySpec {
  readonly link: string;
  readonly mode: number;
  readonly group: PtyGroup | null;
  /** Another console's link has this path: not made (the first one keeps it). */
  readonly conflict: string | null;
}

/** One console's pty and its reader session, if any. */
class PtyEndpoint {
  /** `idle`: no reader; `session`: a reader, attached; `silenced`: vspc ended the session, the reader has not closed yet. */
  state: 'idle' | 'session' | 'silenced' = 'idle';
  client: StreamClient | null = null;
  sessions = 0;
  closed = false;
  constructor(
    readonly hub: ConsoleHub,
    readonly spec: PtySpec,
    readonly fd: number,
    readonly device: string,
  ) {}
}

/** Every console's pty, for the consoles that have the method enabled. */
export class PtyEndpoints {
  private readonly endpoints: ConsoleEndpoints<PtySpec, PtyEndpoint>;
  private readonly live = new Set<PtyEndpoint>();
  private poller: NodeJS.Timeout | null = null;
  /** Poll rounds done since start (monotonic): what happens between polls is nothing (tests wait on it, not on a clock). */
  pollRounds = 0;

  constructor(
    registry: Registry,
    private readonly logger: Logger,
    private readonly options: PtyOptions,
  ) {
    const driver: EndpointDriver<PtySpec, PtyEndpoint> = {
      method: 'pty',
      groupOf: (hub) => this.groupOf(hub),
      specs: (hubs) => this.specs(hubs),
      keyOf: (s) => JSON.stringify([s.link, s.mode, s.group?.id ?? null, s.conflict]),
      open: (hub, spec) => this.open(hub, spec),
      close: (ep, reason) => this.closeEndpoint(ep, reason),
    };
    this.endpoints = new ConsoleEndpoints(registry, logger, driver, options);
  }

  refresh(): void {
    this.endpoints.schedule();
  }

  describe(hub: ConsoleHub): { link: string; device: string | null; mode: string; group: string | null; readerAttached: boolean; error: string | null } | null {
    const s = this.endpoints.state(hub);
    if (!s) return null;
    return {
      link: s.spec.link,
      device: s.handle?.device ?? null,
      mode: s.spec.mode.toString(8).padStart(4, '0'),
      group: s.spec.group?.name ?? null,
      readerAttached: s.handle?.state === 'session',
      error: s.error,
    };
  }

  async close(): Promise<void> {
    await this.endpoints.close();
    this.stopPolling();
  }

  // --- what each console's pty should be

  /**
   * A link depends only on the consoles whose links can be the same path: those of one
   * directory with the same file name stem (`fileNameStem`: a console's name, `NAME~KEY`
   * or a shortened one, or an explicit link there).
   */
  private groupOf(hub: ConsoleHub): string | null {
    const settings = this.options.settingsOf(hub);
    if (!settings) return null;
    if (settings.link !== null) {
      const link = resolve(settings.link);
      return `${dirname(link)}\0${fileNameStem(basename(link))}`;
    }
    return `${resolve(settings.dir)}\0${fileNameStem(consoleBaseName(hub.identity))}`;
  }

  private specs(hubs: readonly ConsoleHub[]): Map<ConsoleHub, PtySpec | null> {
    const out = new Map<ConsoleHub, PtySpec | null>();
    const byDir = new Map<string, Array<{ hub: ConsoleHub; identity: ConsoleHub['identity']; settings: PtySettings }>>();
    const wanted: Array<{ hub: ConsoleHub; link: string; settings: PtySettings; explicit: boolean }> = [];
    for (const hub of hubs) {
      out.set(hub, null);
      const settings = this.options.settingsOf(hub);
      if (!settings) continue;
      if (settings.link !== null) {
        wanted.push({ hub, link: resolve(settings.link), settings, explicit: true });
        continue;
      }
      const dir = resolve(settings.dir);
      const list = byDir.get(dir) ?? [];
      list.push({ hub, identity: hub.identity, settings });
      byDir.set(dir, list);
    }
    for (const [dir, list] of byDir) {
      const names = assignFileNames(list, NAME_MAX);
      for (const e of list) wanted.push({ hub: e.hub, link: join(dir, names.get(e)!), settings: e.settings, explicit: false });
    }
    // An explicit link first, then in registry order: the first console keeps a path.
    wanted.sort((a, b) => Number(b.explicit) - Number(a.explicit));
    const holder = new Map<string, ConsoleHub>();
    for (const w of wanted) {
      const other = holder.get(w.link);
      if (!other) holder.set(w.link, w.hub);
      out.set(w.hub, { link: w.link, mode: w.settings.mode, group: w.settings.group, conflict: other ? other.displayName : null });
    }
    return out;
  }

  // --- making and removing a pty

  private async open(hub: ConsoleHub, spec: PtySpec): Promise<PtyEndpoint> {
    if (spec.conflict !== null) {
      throw new AccessError('VSPC_ACCESS_PATH_IN_USE', `the pty link ${spec.link} is already ${spec.conflict}'s`, { path: spec.link });
    }
    const { addon, error } = nativeAddon();
    if (!addon) throw new AccessError('VSPC_PTY_UNAVAILABLE', `no pty: ${error}`);
    const dir = dirname(spec.link);
    await checkDirectory(dir);
    await this.checkLinkPath(spec.link);
    let pty: { fd: number; path: string };
    try {
      pty = addon.openPty();
    } catch (err) {
      throw new AccessError('VSPC_PTY_UNAVAILABLE', `${(err as { code?: string }).code ?? 'error'}: the kernel gave no pty: ${(err as Error).message}`);
    }
    const tmp = join(dir, `.vspc-link-${randomBytes(6).toString('hex')}`);
    try {
      if (spec.group) {
        await chown(pty.path, -1, spec.group.id).catch((err) => {
          throw accessError(err, `cannot give the pty ${pty.path} group ${spec.group!.name} (vspc must be a member of it, or root)`, { path: pty.path });
        });
      }
      await chmod(pty.path, spec.mode);
      await symlink(pty.path, tmp).catch((err) => {
        throw accessError(err, `cannot create a link in ${dir}`, { path: spec.link });
      });
      await this.checkLinkPath(spec.link);
      await rename(tmp, spec.link).catch((err) => {
        throw accessError(err, `cannot put the link at ${spec.link}`, { path: spec.link });
      });
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      closeSync(pty.fd);
      throw err;
    }
    const ep = new PtyEndpoint(hub, spec, pty.fd, pty.path);
    this.live.add(ep);
    this.startPolling();
    this.logger.info('console pty ready', { vm: hub.displayName, link: spec.link, device: pty.path, mode: spec.mode.toString(8), group: spec.group?.name });
    return ep;
  }

  /** Nothing at the link path, or a stale link to a pty (replaced); anything else is not ours. */
  private async checkLinkPath(link: string): Promise<void> {
    const st = await lstatOrNull(link);
    if (!st) return;
    if (st.isSymbolicLink()) {
      const target = await readlink(link).catch(() => '');
      if (target.startsWith(PTY_DEVICE_PREFIX) && ![...this.live].some((ep) => ep.spec.link === link)) return;
      throw new AccessError('VSPC_ACCESS_PATH_OCCUPIED', `${link} is a symbolic link to ${target || '?'}; vspc replaces only a stale link to a pty there`, { path: link });
    }
    throw new AccessError('VSPC_ACCESS_PATH_OCCUPIED', `${link} is ${describeFile(st)}; vspc replaces only a stale link to a pty there`, { path: link });
  }

  private async closeEndpoint(ep: PtyEndpoint, reason: string): Promise<void> {
    ep.closed = true;
    this.live.delete(ep);
    if (this.live.size === 0) this.stopPolling();
    ep.client?.close(reason);
    ep.client = null;
    // Only the link vspc made, still pointing at this pty.
    const target = await readlink(ep.spec.link).catch(() => null);
    if (target === ep.device) await unlink(ep.spec.link).catch(() => undefined);
    try {
      closeSync(ep.fd);
    } catch (err) {
      this.logger.warn('closing a pty failed', { vm: ep.hub.displayName, device: ep.device, ...errorFields(err) });
    }
    this.logger.info('console pty removed', { vm: ep.hub.displayName, link: ep.spec.link, reason });
  }

  // --- readers

  private startPolling(): void {
    if (this.poller) return;
    this.poller = setInterval(() => this.poll(), this.options.pollMs);
    this.poller.unref();
  }

  private stopPolling(): void {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
  }

  private poll(): void {
    const { addon } = nativeAddon();
    if (!addon) return;
    for (const ep of this.live) {
      if (ep.state === 'session') continue;
      let open: boolean;
      try {
        open = addon.ptySlaveOpen(ep.fd);
      } catch (err) {
        this.logger.warn('cannot check a pty for a reader', { vm: ep.hub.displayName, device: ep.device, ...errorFields(err) });
        continue;
      }
      if (ep.state === 'silenced') {
        // What the silenced reader typed is not the next reader's either.
        if (!open) this.idle(addon, ep, true);
      } else if (open) {
        this.startSession(addon, ep);
      }
    }
    this.pollRounds++;
  }

  private startSession(addon: NativeAddon, ep: PtyEndpoint): void {
    let stream: tty.ReadStream;
    try {
      stream = new tty.ReadStream(addon.dupFd(ep.fd), { writable: true } as ConstructorParameters<typeof tty.ReadStream>[1]);
    } catch (err) {
      this.logger.warn('cannot read a pty', { vm: ep.hub.displayName, device: ep.device, ...errorFields(err) });
      return;
    }
    ep.state = 'session';
    ep.sessions++;
    const client = new StreamClient(stream, ep.hub, this.logger, this.options, {
      method: 'pty',
      peer: `pty:${ep.spec.link}`,
      origin: { link: ep.spec.link, device: ep.device, deviceMode: ep.spec.mode.toString(8).padStart(4, '0'), deviceGroup: ep.spec.group?.name ?? null },
      whenTooSlow: 'drop',
      halfClose: false,
      onEnd: (how) => {
        if (ep.client === client) ep.client = null;
        if (ep.closed) return;
        // The reader closed the slave: ready for the next one. vspc ended it: silent until the reader closes.
        if (how === 'peer') this.idle(addon, ep);
        else ep.state = 'silenced';
      },
    });
    ep.client = client;
    client.attach();
  }

  private idle(addon: NativeAddon, ep: PtyEndpoint, input = false): void {
    ep.state = 'idle';
    try {
      // What vspc wrote after the reader had gone is not for the next one.
      addon.flushPtyOutput(ep.fd, input);
    } catch (err) {
      this.logger.debug('cannot flush a pty', { vm: ep.hub.displayName, device: ep.device, ...errorFields(err) });
    }
  }
}
