/**
 * A console broker client for tests: a telnet client that agrees to VSPC-CONTROL (like
 * `vspc-admin console`) and records every control message and all data. Every wait is
 * bounded.
 */
import net from 'node:net';
import { Option, policyFromLists, TelnetSession } from '../../src/protocol/telnet/index.js';
import { decodeControl, encodeControl, VSPC_CONTROL_OPTION, type ConsoleListEntry, type ControlMessage } from '../../src/protocol/control/vspc-control.js';

export type BrokerAddress = { path: string } | { host: string; port: number };

export class BrokerPeer {
  readonly session: TelnetSession;
  readonly messages: ControlMessage[] = [];
  /** Data received (notices, console output), as latin1 so that every byte is one character. */
  text = '';
  closed = false;
  private readonly waiters = new Set<() => void>();
  readonly whenClosed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    this.session = new TelnetSession(policyFromLists({ us: [Option.BINARY, Option.SGA, VSPC_CONTROL_OPTION], him: [Option.ECHO, Option.SGA, Option.BINARY] }), {
      write: (b) => (socket.destroyed ? false : socket.write(b)),
      data: (d) => {
        this.text += d.toString('latin1');
        this.notify();
      },
      subnegotiation: (option, payload) => {
        if (option !== VSPC_CONTROL_OPTION) return;
        this.messages.push(decodeControl(payload));
        this.notify();
      },
    });
    socket.on('data', (d: Buffer) => this.session.receive(d));
    socket.on('error', () => undefined);
    this.whenClosed = new Promise((resolve) =>
      socket.on('close', () => {
        this.closed = true;
        this.notify();
        resolve();
      }),
    );
  }

  /** Connects and agrees to VSPC-CONTROL (unless `control` is false: then it answers nothing at all). */
  static connect(address: BrokerAddress, control = true, timeoutMs = 5000): Promise<BrokerPeer> {
    return new Promise((resolve, reject) => {
      const socket = 'path' in address ? net.connect({ path: address.path }) : net.connect({ host: address.host, port: address.port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`broker connect: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const peer = new BrokerPeer(socket);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        if (control) {
          peer.session.requestUs(Option.BINARY);
          peer.session.requestUs(Option.SGA);
          peer.session.requestUs(VSPC_CONTROL_OPTION);
        }
        resolve(peer);
      });
    });
  }

  send(msg: ControlMessage): void {
    this.session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl(msg));
  }

  /** Several messages in one write (pipelining). */
  sendTogether(msgs: ControlMessage[]): void {
    this.socket.cork();
    for (const m of msgs) this.send(m);
    this.socket.uncork();
  }

  /** The next message of `kind` after the first `from` messages; rejects on close or timeout. */
  async next<K extends ControlMessage['kind']>(kind: K, from = 0, timeoutMs = 5000): Promise<Extract<ControlMessage, { kind: K }>> {
    const find = () => this.messages.slice(from).find((m) => m.kind === kind) as Extract<ControlMessage, { kind: K }> | undefined;
    await this.until(() => find() !== undefined, timeoutMs, `a ${kind} message`);
    return find()!;
  }

  /** LIST-REQUEST, and every page of the reply. */
  async list(pattern = '', timeoutMs = 5000): Promise<{ entries: ConsoleListEntry[]; pages: number }> {
    const from = this.messages.length;
    this.send({ kind: 'list-request', pattern });
    const done = () => this.messages.slice(from).some((m) => m.kind === 'list-reply' && !m.more);
    await this.until(done, timeoutMs, 'the last LIST-REPLY');
    const pages = this.messages.slice(from).filter((m): m is Extract<ControlMessage, { kind: 'list-reply' }> => m.kind === 'list-reply');
    return { entries: pages.flatMap((p) => p.entries), pages: pages.length };
  }

  waitText(needle: string, timeoutMs = 5000): Promise<void> {
    return this.until(() => this.text.includes(needle), timeoutMs, JSON.stringify(needle), true);
  }

  waitClosed(timeoutMs = 5000): Promise<void> {
    return this.until(() => this.closed, timeoutMs, 'the broker to close the connection', true);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private until(cond: () => boolean, timeoutMs: number, what: string, closedOk = false): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const finish = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        if (cond()) finish();
        else if (this.closed && !closedOk) finish(new Error(`connection closed before ${what}; ${this.got()}`));
      };
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.got()}`)), timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** What arrived, for a failed wait: the text and the last control messages (a SELECT-REFUSED says why). */
  private got(): string {
    return `text: ${JSON.stringify(this.text.slice(-500))}; messages: ${JSON.stringify(this.messages.slice(-5))}`;
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}
