/**
 * One SSH session channel: the menu, the commands (`list`, `NAME --tail N`), and the
 * attachment to a console under a lock, as a ConsoleClient of its hub.
 *
 *   opening ──shell, pty, several consoles──▶ menu ──NUMBER/NAME──▶ attached ──Ctrl-] d──▶ menu
 *     │  └──shell, pty, one console / exec NAME──────────────────▶ attached ──Ctrl-] d──▶ closed (0)
 *     ├──exec list / --tail / help / shell without a pty──▶ (answer) ──▶ closed (0)
 *     └──exec anything else──▶ closed (2)
 *   attaching ──refused (lock, rights)──▶ menu (from the menu) / closed (3)
 *   any ──channel closed, ~., idle, time limit, rights withdrawn, kicked, displaced, too slow──▶ closed
 *
 * The channel's exit status follows `vspc-admin connect`: 0 done or detached, 1 error,
 * 2 bad command, 3 refused, 4 ended by vspc (displaced, kicked, rights withdrawn, time
 * limit, shutdown).
 */
import type { ServerChannel, Session } from 'ssh2';
import type { Logger } from '../../domain/logger.js';
import { BREAK_NOT_SENT, type ConsoleHub, type StreamOptions } from '../../domain/console-hub.js';
import type { ConsoleClient } from '../../domain/seams.js';
import { displayKey } from '../../domain/identity.js';
import { allocateClientId } from '../../domain/client-ids.js';
import { describeHolder, type LockRequest } from '../../domain/locks.js';
import { errorFields } from '../../errors.js';
import { sanitizeText } from '../../util/text.js';
import { parseCommand, USAGE, type SshCommand } from './command-line.js';
import { findConsole, permittedConsoles, permittedTunnelConsoles, renderJson, renderTable } from './console-list.js';
import { LineEditor } from './line-editor.js';
import { chooseRequest, holdAllowed, type KeyRights } from './rights.js';
import { onBreakRequest } from './ssh2-internals.js';

export const Exit = { OK: 0, ERROR: 1, USAGE: 2, REFUSED: 3, ENDED: 4 } as const;

/** Output queued past this (half the bound), the client's input waits until it halves (a quarter of the bound). */
export function backedUp(limit: number): number {
  return Math.floor(limit / 2);
}
const DRAIN_POLL_MS = 50;

/** The byte that opens the menu on a console (Ctrl-], as `vspc-admin connect`). */
const MENU_KEY = 0x1d;
/** env requests a channel may make before each further one counts as refused (LANG plus every LC_* is 14). */
export const ENV_REQUESTS_FREE = 32;

/** Who the session belongs to (the connection's authenticated key). Rights change on reload. */
export interface Principal {
  readonly user: string;
  readonly loginName: string;
  readonly keyType: string;
  readonly fingerprint: string;
  /** The public key blob, base64. */
  readonly blob: string;
  rights: KeyRights;
}

/** What a session needs of its connection. */
export interface SessionHost {
  readonly principal: Principal;
  readonly peer: string;
  readonly logger: Logger;
  consoles(): ConsoleHub[];
  /** Why a console may be missing from consoles() now (a cluster node whose database does not answer), or null. */
  listCaveat(): string | null;
  /** The idle limit for this connection's sessions (0: none). */
  readonly idleMs: number;
  readonly closeGraceMs: number;
  maxQueuedBytes(): number;
  /** Bytes waiting in the TCP socket. */
  socketQueued(): number;
  tail: ((hub: ConsoleHub, lines: number) => Promise<string>) | null;
  /** Something refused outright (x11, agent forwarding, sftp, a subsystem): logged and counted. */
  refused(what: string): void;
  /** The client does not read its output: cut off the connection. */
  tooSlow(queued: number, limit: number): void;
  /** The session's channel is closed (both ways), or the connection is gone. */
  sessionEnded(session: SshSession): void;
}

type State = 'opening' | 'menu' | 'attached' | 'busy' | 'closed';

/** A session's attachment to one console: what the hub sees (and the admin API's `who`). */
class SshConsoleClient implements ConsoleClient {
  readonly id = allocateClientId();
  readonly connectedAt = Date.now();
  readonly secure = false;
  readonly method = 'ssh';

  constructor(
    private readonly session: SshSession,
    readonly hub: ConsoleHub,
    readonly peer: string,
    readonly user: string,
    readonly keyFingerprint: string,
  ) {}

  /** For the admin API's `who`. */
  get mode(): string | undefined {
    return this.hub.modeOf(this);
  }

  deliver(data: Buffer): void {
    this.session.output(this, data);
  }

  notice(text: string): void {
    this.session.noticeFrom(this, text);
  }

  pauseInput(): void {
    this.session.pause(this);
  }

  resumeInput(): void {
    this.session.resume(this);
  }

  close(reason: string): void {
    this.session.revoked(this, reason);
  }
}

export class SshSession {
  private state: State = 'opening';
  private pty: { term: string; cols: number; rows: number } | null = null;
  private channel: ServerChannel | null = null;
  private client: SshConsoleClient | null = null;
  /** What vspc adds to the attached console's stream: the console's settings, less `--raw`. */
  private stream: StreamOptions = { greeting: true, notices: true, replay: true };
  private fromMenu = false;
  private menuKey = false;
  private readonly editor = new LineEditor();
  private shown: ConsoleHub[] = [];
  private idleTimer: NodeJS.Timeout | null = null;
  private eofTimer: NodeJS.Timeout | null = null;
  private closeTimer: NodeJS.Timeout | null = null;
  private refusalTimer: NodeJS.Timeout | null = null;
  /** env requests seen on this channel (see ENV_REQUESTS_FREE). */
  private envRequests = 0;
  private lastInputAt = Date.now();
  /** Input held by the console's flow control, or because the client's output is backed up. */
  private hubPaused = false;
  private outputPaused = false;
  private drainTimer: NodeJS.Timeout | null = null;
  private log: Logger;

  constructor(
    session: Session,
    private readonly host: SessionHost,
    /** Accepted only to be refused with this message (a cap reached): exit status 3 at the first shell or exec. */
    readonly refusal: string | null = null,
  ) {
    this.log = host.logger;
    if (refusal) {
      // A client that never asks for a shell or command is not kept either.
      this.refusalTimer = setTimeout(() => this.finish(Exit.REFUSED), host.closeGraceMs);
      this.refusalTimer.unref();
    }
    type Accept = (() => void) | undefined;
    type Reject = (() => void) | undefined;
    session.on('pty', (accept: Accept, reject: Reject, info: { term?: string; cols?: number; rows?: number }) => {
      if (this.state !== 'opening') return reject?.();
      this.pty = { term: String(info.term ?? ''), cols: info.cols ?? 80, rows: info.rows ?? 24 };
      accept?.();
    });
    session.on('window-change', (accept: Accept, _reject: Reject, info: { cols?: number; rows?: number }) => {
      if (this.pty) this.pty = { ...this.pty, cols: info.cols ?? this.pty.cols, rows: info.rows ?? this.pty.rows };
      accept?.();
    });
    // Environment variables mean nothing here: declined, as sshd declines those not in AcceptEnv.
    // Debian's ssh_config sends LANG and every LC_* (SendEnv), so the first ENV_REQUESTS_FREE are
    // declined quietly; past them each one counts toward the connection's refusal limit.
    session.on('env', (_accept: Accept, reject: Reject) => {
      if (++this.envRequests <= ENV_REQUESTS_FREE) return reject?.();
      this.refuse('env (more than ' + ENV_REQUESTS_FREE + ' variables)', reject);
    });
    // No OpenSSH client sends a signal request on its own (~B is a break): refused, logged and counted.
    session.on('signal', (_accept: Accept, reject: Reject, info: { name?: string }) => this.refuse(`signal ${JSON.stringify(String(info?.name ?? '').slice(0, 20))}`, reject));
    session.on('x11', (_accept: Accept, reject: Reject) => this.refuse('X11 forwarding', reject));
    session.on('auth-agent', (_accept: Accept, reject: Reject) => this.refuse('agent forwarding', reject));
    session.on('sftp', (_accept: unknown, reject: Reject) => this.refuse('SFTP', reject));
    session.on('subsystem', (_accept: unknown, reject: Reject, info: { name?: string }) => this.refuse(`subsystem ${JSON.stringify(String(info.name ?? '').slice(0, 40))}`, reject));
    session.on('shell', (accept: () => ServerChannel) => this.guard(() => this.onShell(accept())));
    session.on('exec', (accept: () => ServerChannel, _reject: Reject, info: { command: string }) => this.guard(() => this.onExec(accept(), String(info.command ?? ''))));
    onBreakRequest(session, (accept, reject) => {
      // The request's reply says whether the BREAK went out.
      if (this.state === 'attached' && this.sendBreak()) accept();
      else reject();
    });
    session.on('close', () => this.onChannelClosed());
  }

  get attachedTo(): ConsoleHub | null {
    return this.client?.hub ?? null;
  }

  // --- called by the connection

  /** The key's rights changed (reload): a console or mode no longer allowed ends the attachment. */
  rightsChanged(rights: KeyRights): void {
    const c = this.client;
    if (!c || this.state !== 'attached') return;
    const mode = c.hub.modeOf(c);
    if (!rights.consoles.allows(c.hub.identity)) this.end(Exit.ENDED, `your rights to ${c.hub.displayName} were withdrawn`);
    else if (mode && !holdAllowed(rights, mode)) this.end(Exit.ENDED, `your key may no longer hold ${mode.toUpperCase()} on ${c.hub.displayName}`);
  }

  /** Ends the session with a message (time limit, rights withdrawn, shutdown). */
  end(code: number, message?: string): void {
    this.finish(code, message);
  }

  destroy(): void {
    this.detach('connection closed');
    this.state = 'closed';
    this.clearTimers();
  }

  // --- called by SshConsoleClient (the hub)

  output(from: SshConsoleClient, data: Buffer): void {
    const ch = this.channel;
    if (from !== this.client || !ch || this.state !== 'attached') return;
    ch.write(data);
    this.checkQueue(ch);
  }

  /**
   * Every write of vspc's own on the channel (menus, lists, notices, echo): checked
   * against the same bound as console output, so that a client asking for a menu in a
   * loop (Enter refreshes it) and never reading cannot make vspc queue without limit.
   */
  private put(text: string | Buffer, stderr = false): void {
    const ch = this.channel;
    if (!ch) return;
    if (stderr) ch.stderr.write(text);
    else ch.write(text);
    this.checkQueue(ch);
  }

  /**
   * What vspc holds for this client: its output not taken yet (channel stdout and
   * stderr, the socket's backlog) and, while its input is held because of that
   * output, the input it typed meanwhile (not while the console's flow control holds it).
   */
  private held(ch: ServerChannel): number {
    return ch.writableLength + ch.stderr.writableLength + this.host.socketQueued() + (this.outputPaused ? ch.readableLength : 0);
  }

  /** After each chunk from the client (the connection calls it): input held meanwhile counts against the bound. */
  checkHeld(): void {
    if (this.outputPaused && this.channel && this.state !== 'closed') this.checkQueue(this.channel);
  }

  /** Past the connection's queue bound the connection goes: telling it would only queue more. */
  private checkQueue(ch: ServerChannel): void {
    const queued = this.held(ch);
    const limit = this.host.maxQueuedBytes();
    if (queued > limit) this.host.tooSlow(queued, limit);
    else if (queued > backedUp(limit)) this.holdInput();
  }

  /**
   * The client's output is backed up: its input is not read until the output has
   * drained to half the mark (ssh2, paused, stops granting window once its buffer is
   * full, so the client stops sending). ssh2 says nothing when its queues shrink below
   * its own 2 MiB mark, so the queues are looked at now and then, only while held; what
   * the client types meanwhile counts against the bound, so one that neither reads nor
   * stops typing is cut off as too slow.
   */
  private holdInput(): void {
    if (this.outputPaused || this.state === 'closed') return;
    this.outputPaused = true;
    this.applyPause();
    this.drainTimer = setInterval(() => {
      const ch = this.channel;
      const limit = this.host.maxQueuedBytes();
      if (ch && this.state !== 'closed') {
        const queued = this.held(ch);
        if (queued > limit) return this.host.tooSlow(queued, limit);
        if (ch.writableLength + ch.stderr.writableLength + this.host.socketQueued() > backedUp(limit) / 2) return;
      }
      if (this.drainTimer) clearInterval(this.drainTimer);
      this.drainTimer = null;
      this.outputPaused = false;
      this.applyPause();
    }, DRAIN_POLL_MS);
    this.drainTimer.unref();
  }

  /** The channel's input is read while neither the console (flow control) nor the client's backed-up output holds it. */
  private applyPause(): void {
    const ch = this.channel;
    if (!ch || this.state === 'closed') return;
    if (this.hubPaused || this.outputPaused) ch.pause();
    else ch.resume();
  }

  noticeFrom(from: SshConsoleClient, text: string): void {
    if (from !== this.client || !this.stream.notices) return;
    this.notice(text);
  }

  pause(from: SshConsoleClient): void {
    if (from !== this.client) return;
    this.hubPaused = true;
    this.applyPause();
  }

  resume(from: SshConsoleClient): void {
    if (from !== this.client) return;
    this.hubPaused = false;
    this.applyPause();
  }

  /** The hub closed this client: displaced, kicked, console forgotten, shutdown. */
  revoked(from: SshConsoleClient, reason: string): void {
    if (from !== this.client) return;
    this.notice(reason);
    this.detach(reason);
    this.finish(Exit.ENDED);
  }

  // --- requests

  private onShell(channel: ServerChannel): void {
    this.open(channel);
    if (this.refusal) return this.refuse3(this.refusal);
    const consoles = permittedConsoles(this.host.consoles(), this.rights);
    if (!this.pty) {
      // ssh -T: no terminal for a menu; say what there is and how to attach.
      this.write(renderTable(consoles, '\n', false) + `attach with: ssh -t ... NAME   (ssh ... help for more)\n`);
      return this.finish(Exit.OK);
    }
    if (consoles.length === 1) return this.attach(consoles[0], undefined, false, false);
    this.showMenu();
  }

  private onExec(channel: ServerChannel, command: string): void {
    this.open(channel);
    if (this.refusal) return this.refuse3(this.refusal);
    const cmd = parseCommand(command);
    this.log.info('SSH command', { command: sanitizeForLog(command), kind: cmd.kind });
    void this.run(cmd);
  }

  private async run(cmd: SshCommand): Promise<void> {
    const consoles = permittedConsoles(this.host.consoles(), this.rights);
    switch (cmd.kind) {
      case 'error':
        this.error(`vspc: ${cmd.message}\n${USAGE}\n`);
        return this.finish(Exit.USAGE);
      case 'help':
        this.write(`${USAGE}\n`);
        return this.finish(Exit.OK);
      case 'list':
        this.write(cmd.json ? renderJson(consoles) : renderTable(consoles, '\n', false));
        return this.finish(Exit.OK);
      case 'tail': {
        const found = this.find(consoles, cmd.target, false);
        if ('error' in found) {
          this.error(`vspc: ${found.error}\n`);
          return this.finish(Exit.REFUSED);
        }
        if (!this.host.tail) {
          this.error('vspc: console logs are off on this vspc (--log-dir)\n');
          return this.finish(Exit.ERROR);
        }
        this.state = 'busy';
        try {
          const text = await this.host.tail(found.hub, cmd.lines);
          this.write(text);
          return this.finish(Exit.OK);
        } catch (err) {
          this.log.warn('SSH --tail failed', { console: found.hub.displayName, ...errorFields(err) });
          this.error(`vspc: cannot read the console log of ${found.hub.displayName}\n`);
          return this.finish(Exit.ERROR);
        }
      }
      case 'attach': {
        const found = this.find(consoles, cmd.target, false);
        if ('error' in found) {
          this.error(`vspc: ${found.error}\n`);
          return this.finish(Exit.REFUSED);
        }
        return this.attach(found.hub, cmd.mode, cmd.force, cmd.raw);
      }
    }
  }

  /** findConsole, with the cluster's caveat added to "no console" while other nodes' consoles may be missing. */
  private find(hubs: readonly ConsoleHub[], target: string, numbered: boolean): { hub: ConsoleHub } | { error: string } {
    const found = findConsole(hubs, target, numbered, permittedTunnelConsoles(this.host.consoles(), this.rights));
    if (!('error' in found) || !found.notFound) return found;
    const caveat = this.host.listCaveat();
    return caveat ? { error: `${found.error}; ${caveat}` } : found;
  }

  private attach(hub: ConsoleHub, mode: LockRequest | undefined, force: boolean, raw: boolean): void {
    const p = this.host.principal;
    // The menu may be older than a reload or a forgotten console: ask again.
    if (!p.rights.consoles.allows(hub.identity) || !this.host.consoles().includes(hub)) {
      return this.refusedAttach(hub, 'this key may no longer use this console (try: list)');
    }
    const choice = chooseRequest(p.rights, mode, hub.defaultLockMode, force);
    if ('error' in choice) return this.refusedAttach(hub, choice.error);
    const client = new SshConsoleClient(this, hub, this.host.peer, p.user, p.fingerprint);
    this.client = client;
    this.state = 'attached';
    // The console's stream settings (--no-greeting, --no-notices, --no-replay, per console), less --raw.
    this.stream = { greeting: hub.stream.greeting && !raw, notices: hub.stream.notices && !raw, replay: hub.stream.replay && !raw };
    const id = hub.identity;
    if (this.stream.greeting) this.notice(`${hub.displayName} (${id.kind === 'esxi' ? `uuid ${displayKey(id)}` : `${id.kind} ${displayKey(id)}`}${id.label ? `, port ${id.label}` : ''})`);
    const decision = hub.addClient(client, {
      request: choice.request,
      force,
      user: p.user,
      auth: { method: 'ssh', keyFingerprint: p.fingerprint },
      replay: this.stream.replay,
    });
    if (!decision.granted) {
      this.client = null;
      this.log.info('SSH lock refused', { console: hub.displayName, request: choice.request, reason: decision.reason });
      return this.refusedAttach(hub, decision.reason);
    }
    this.log = this.host.logger.child({ console: hub.displayName, client: client.id, mode: decision.mode });
    this.log.info('SSH client attached', { user: p.user, force, displaced: decision.displaced.length });
    const menuHint = this.pty ? 'Ctrl-] for the menu, ' : '';
    if (this.stream.greeting) this.notice(`${decision.mode.toUpperCase()} as ${p.user}; ${menuHint}~. to disconnect`);
  }

  /** Says why (stderr, or the terminal) and ends with exit status 3. */
  private refuse3(reason: string): void {
    this.error(`vspc: ${reason}\n`);
    this.finish(Exit.REFUSED);
  }

  private refusedAttach(hub: ConsoleHub, reason: string): void {
    this.state = 'busy';
    if (this.fromMenu) {
      this.notice(reason);
      this.showMenu();
      return;
    }
    this.error(`vspc: ${hub.displayName}: ${reason}\n`);
    this.finish(Exit.REFUSED);
  }

  private showMenu(): void {
    this.fromMenu = true;
    this.state = 'menu';
    this.menuKey = false;
    const p = this.host.principal;
    this.shown = permittedConsoles(this.host.consoles(), this.rights);
    let text = `\r\nvspc: consoles for ${p.user} (key ${p.fingerprint})\r\n\r\n`;
    text += this.shown.length > 0 ? renderTable(this.shown, '\r\n', true) : 'no console that this key may reach is known\r\n';
    text += '\r\nNumber or name [--mode MODE] [--force], Enter to refresh, q to quit: ';
    this.put(text);
  }

  private onMenuLine(text: string): void {
    const t = text.trim();
    if (t === '' || t === 'r') return this.showMenu();
    if (t === 'q' || t === 'quit' || t === 'exit') return this.finish(Exit.OK);
    if (t === 'help' || t === '?') {
      this.put(`${USAGE.replace(/\n/g, '\r\n')}\r\n`);
      return this.showMenu();
    }
    const cmd = parseCommand(t);
    if (cmd.kind !== 'attach') {
      this.put(`vspc: ${cmd.kind === 'error' ? cmd.message : 'at the menu: a number or a name'}\r\n`);
      return this.showMenu();
    }
    const found = this.find(this.shown, cmd.target, true);
    if ('error' in found) {
      this.put(`vspc: ${found.error}\r\n`);
      return this.showMenu();
    }
    this.attach(found.hub, cmd.mode, cmd.force, cmd.raw);
  }

  // --- input

  private onData(data: Buffer): void {
    this.lastInputAt = Date.now();
    if (this.state === 'menu') {
      const { echo, events } = this.editor.feed(data);
      if (echo) this.put(echo);
      for (const e of events) {
        if (this.state !== 'menu') break;
        if (e.kind === 'quit') this.finish(Exit.OK);
        else this.onMenuLine(e.text);
      }
      return;
    }
    if (this.state !== 'attached' || !this.client) return;
    if (!this.pty) {
      this.client.hub.fromClient(this.client, data);
      return;
    }
    // On a terminal, Ctrl-] opens the one-key menu of `vspc-admin connect`.
    let start = 0;
    for (let i = 0; i < data.length; i++) {
      const b = data[i];
      if (this.menuKey) {
        this.menuKey = false;
        start = i + 1;
        if (b === MENU_KEY) this.toConsole(Buffer.of(MENU_KEY));
        else if (b === 0x64 /* d */ || b === 0x71 /* q */ || b === 0x2e /* . */) return this.userDetach();
        else if (b === 0x62 /* b */) this.sendBreak();
        else if (b === 0x77 /* w */) this.who();
        else this.notice('continuing');
        if (this.state !== 'attached') return;
      } else if (b === MENU_KEY) {
        this.toConsole(data.subarray(start, i));
        this.menuKey = true;
        start = i + 1;
        this.put('\r\n[vspc] d detach, b break, w who, c continue, ^] send ^]: ');
      }
    }
    this.toConsole(data.subarray(start));
  }

  private toConsole(data: Buffer): void {
    if (data.length > 0 && this.client && this.state === 'attached') this.client.hub.fromClient(this.client, data);
  }

  /** true: the console's source sent it; the user is told either way. */
  private sendBreak(): boolean {
    const c = this.client;
    if (!c) return false;
    if (c.hub.modeOf(c) === 'readonly') {
      this.notice('read-only: break not sent');
      return false;
    }
    if (!c.hub.sendBreak(c)) {
      this.log.debug('SSH break not sent: the source cannot send one', { user: this.host.principal.user, source: c.hub.source?.kind ?? null });
      this.notice(BREAK_NOT_SENT);
      return false;
    }
    this.log.info('SSH break sent', { user: this.host.principal.user });
    this.notice('break sent');
    return true;
  }

  private who(): void {
    const c = this.client;
    if (!c) return;
    const lines = c.hub.locks.list().map((h) => `  #${h.clientId} ${describeHolder(h)}${h.clientId === c.id ? ' (you)' : ''}`);
    this.put(`\r\n[vspc: attached to ${c.hub.displayName}]\r\n${lines.join('\r\n')}\r\n`);
  }

  private userDetach(): void {
    this.detach('detached');
    if (this.fromMenu) {
      this.put('\r\n[vspc: detached]\r\n');
      this.showMenu();
    } else {
      this.finish(Exit.OK, 'detached');
    }
  }

  // --- plumbing

  private get rights(): KeyRights {
    return this.host.principal.rights;
  }

  private open(channel: ServerChannel): void {
    this.channel = channel;
    channel.on('data', (d: Buffer) => this.guard(() => this.onData(d)));
    channel.on('end', () => this.guard(() => this.onEof()));
    channel.on('error', (err: Error) => this.log.info('SSH channel error', errorFields(err)));
    channel.on('close', () => this.onChannelClosed());
    if (this.host.idleMs > 0) this.armIdle();
  }

  /** The client sent EOF (its stdin ended). A pipe (no pty) gets a moment for the console's answer. */
  private onEof(): void {
    if (this.state === 'closed') return;
    if (this.state === 'attached' && !this.pty) {
      this.eofTimer ??= setTimeout(() => this.finish(Exit.OK), 500);
      this.eofTimer.unref();
      return;
    }
    if (this.state === 'menu' || this.state === 'attached') this.finish(Exit.OK);
  }

  private notice(text: string): void {
    if (this.state === 'closed' || !this.channel) return;
    // Notices carry text from elsewhere (a lock holder's name, another node's reason): never a control byte.
    const line = `\r\n[vspc: ${sanitizeText(text)}]\r\n`;
    // Without a terminal stdout is the console's byte stream: vspc's own words go to stderr.
    if (this.pty) this.put(line);
    else this.put(line.replace(/\r\n/g, '\n').replace(/^\n/, ''), true);
  }

  /** Text for stdout (a terminal gets CR LF). */
  private write(text: string): void {
    if (!this.channel) return;
    this.put(this.pty ? text.replace(/\r?\n/g, '\r\n') : text);
  }

  /** Text for stderr (or the terminal). */
  private error(text: string): void {
    if (!this.channel) return;
    if (this.pty) this.put(text.replace(/\r?\n/g, '\r\n'));
    else this.put(text, true);
  }

  private refuse(what: string, reject: (() => void) | undefined): void {
    this.host.refused(what);
    reject?.();
  }

  private detach(reason: string): void {
    const c = this.client;
    this.client = null;
    if (!c) return;
    c.hub.removeClient(c, reason);
    this.log.info('SSH client detached', { reason, durationMs: Date.now() - c.connectedAt });
    this.log = this.host.logger;
    if (this.state === 'attached') this.state = 'busy';
  }

  /** Says why (if given), sends the exit status, ends the channel; closes it after the grace period if the peer lingers. Idempotent. */
  private finish(code: number, message?: string): void {
    if (this.state === 'closed') return;
    if (message) this.notice(message);
    this.detach(message ?? 'session ended');
    this.state = 'closed';
    this.clearTimers();
    const ch = this.channel;
    if (ch) {
      try {
        ch.exit(code);
        ch.end();
      } catch {
        /* the channel is already gone */
      }
      this.closeTimer = setTimeout(() => ch.close(), this.host.closeGraceMs);
      this.closeTimer.unref();
    } else {
      this.host.sessionEnded(this);
    }
  }

  /** The peer closed the channel (its answer to ours, or its own), or the connection is gone. */
  private onChannelClosed(): void {
    if (this.closeTimer) clearTimeout(this.closeTimer);
    if (this.state !== 'closed') {
      this.detach('connection closed');
      this.state = 'closed';
      this.clearTimers();
    }
    this.host.sessionEnded(this);
  }

  /** One timer per session, re-armed lazily: no timer work per keystroke. */
  private armIdle(): void {
    const ms = this.host.idleMs;
    const wait = Math.max(0, this.lastInputAt + ms - Date.now());
    this.idleTimer = setTimeout(() => {
      if (this.state === 'closed') return;
      if (Date.now() - this.lastInputAt >= ms) this.finish(Exit.ENDED, `idle for ${formatDuration(ms)}; session ended`);
      else this.armIdle();
    }, wait);
    this.idleTimer.unref();
  }

  private clearTimers(): void {
    for (const t of [this.idleTimer, this.eofTimer, this.refusalTimer]) if (t) clearTimeout(t);
    if (this.drainTimer) clearInterval(this.drainTimer);
    this.drainTimer = null;
    this.idleTimer = null;
    this.eofTimer = null;
  }

  /** Whatever goes wrong with one session's input ends that session only. */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error('internal error in an SSH session; ending it', { ...errorFields(err), stack: (err as Error).stack });
      try {
        this.finish(Exit.ERROR, 'internal error');
      } catch {
        this.destroy();
      }
    }
  }
}

/** `8 h`, `30 min`, `45 s`, `500 ms`: a limit as users read it. */
export function formatDuration(ms: number): string {
  if (ms >= 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1000) return `${Math.round(ms / 1000)} s`;
  return `${ms} ms`;
}

/** A command as a log field: bounded, no controls. */
function sanitizeForLog(text: string): string {
  return text.replace(/[\p{Cc}\p{Cf}]/gu, '?').slice(0, 200);
}

