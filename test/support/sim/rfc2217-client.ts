/**
 * A small RFC 2217 client, like pyserial's `rfc2217://` or a ser2net-aware terminal:
 * it connects to a console's telnet port, answers the server's options the way a
 * stock telnet does (DO ECHO/SGA/BINARY, WILL BINARY/SGA, refuses the rest), offers
 * WILL COM-PORT-OPTION, and sends COM-PORT commands, collecting the server's
 * answers (decoded with the project's codec). `ask()` sends one command and resolves
 * with the answer to it (same command, code + 100).
 *
 * No test-framework imports; every wait is bounded.
 */
import type net from 'node:net';
import { BRK, Option } from '../../../src/protocol/telnet/constants.js';
import { policyFromLists, type Side } from '../../../src/protocol/telnet/negotiator.js';
import { TelnetSession } from '../../../src/protocol/telnet/session.js';
import {
  COM_PORT_OPTION,
  decodeComPort,
  encodeComPort,
  type ComPortCommand,
  type ComPortCommandName,
} from '../../../src/protocol/rfc2217/index.js';
import { ByteCollector, connectSocket, endSocket, type ByteMatcher } from './esxi-simulator.js';

export class Rfc2217Client {
  readonly session: TelnetSession;
  /** Every COM-PORT answer from the server, in order. */
  readonly answers: ComPortCommand[] = [];
  /** COM-PORT payloads from the server that did not decode (there should be none). */
  readonly badAnswers: Buffer[] = [];
  readonly commands: number[] = [];
  private readonly collector = new ByteCollector(true);
  private listeners = new Set<() => void>();
  private closedFlag = false;
  private closing: Promise<void> | null = null;

  private constructor(private readonly socket: net.Socket) {
    this.session = new TelnetSession(policyFromLists({ us: [Option.BINARY, Option.SGA, COM_PORT_OPTION], him: [Option.ECHO, Option.SGA, Option.BINARY] }), {
      write: (b) => (this.socket.destroyed ? false : this.socket.write(b)),
      data: (d) => this.collector.push(d),
      command: (c) => this.commands.push(c),
      subnegotiation: (option, payload) => {
        if (option !== COM_PORT_OPTION) return;
        const r = decodeComPort(payload);
        if (r.ok && r.message.sender === 'server') this.answers.push(r.message.command);
        else this.badAnswers.push(Buffer.from(payload));
        this.notify();
      },
      optionChange: () => this.notify(),
    });
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      socket.cork();
      try {
        this.session.receive(chunk);
      } finally {
        socket.uncork();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closedFlag = true;
      this.collector.end('connection closed');
      this.notify();
    });
  }

  static async connect(host: string, port: number, timeoutMs = 5000): Promise<Rfc2217Client> {
    return new Rfc2217Client(await connectSocket(host, port, undefined, timeoutMs));
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  get text(): string {
    return this.collector.bytes.toString('latin1');
  }

  isEnabled(side: Side, option: number): boolean {
    return this.session.isEnabled(side, option);
  }

  /** WILL COM-PORT-OPTION; resolves once the server said DO (rejects on DONT, close or timeout). */
  async offerComPort(timeoutMs = 5000): Promise<void> {
    this.session.requestUs(COM_PORT_OPTION);
    await this.until(() => this.isEnabled('us', COM_PORT_OPTION), timeoutMs, 'DO COM-PORT-OPTION');
  }

  /** Sends one COM-PORT command (client code). */
  send(command: ComPortCommand): void {
    this.session.sendSubnegotiation(COM_PORT_OPTION, encodeComPort({ sender: 'client', command }));
  }

  /** Sends a raw COM-PORT payload (malformed input). */
  sendRaw(payload: Buffer): void {
    this.session.sendSubnegotiation(COM_PORT_OPTION, payload);
  }

  /** Sends `command` and resolves with the server's next answer of the same name. */
  async ask(command: ComPortCommand, timeoutMs = 5000): Promise<ComPortCommand> {
    const from = this.answers.length;
    this.send(command);
    return this.nextAnswer(command.name, from, timeoutMs);
  }

  /** The first answer named `name` at index `from` or later. */
  async nextAnswer(name: ComPortCommandName, from: number, timeoutMs = 5000): Promise<ComPortCommand> {
    const find = () => this.answers.slice(from).find((a) => a.name === name);
    await this.until(() => find() !== undefined, timeoutMs, `a ${name} answer`);
    return find()!;
  }

  /** Telnet BREAK (IAC BRK). */
  sendBreak(): void {
    this.session.sendCommand(BRK);
  }

  /** Typed input. */
  type(data: string | Buffer): void {
    this.session.sendData(typeof data === 'string' ? Buffer.from(data) : data);
  }

  waitFor(pattern: ByteMatcher, timeoutMs = 5000, from = 0): Promise<Buffer> {
    return this.collector.wait(pattern, timeoutMs, from, 'rfc2217 client');
  }

  /** The current length of what was received: pass it as `from`. */
  mark(): number {
    return this.collector.length;
  }

  /** Resolves once `check()` holds (re-checked on every answer, option change and close). */
  until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        if (err) reject(err);
        else resolve();
      };
      const listener = (): void => {
        if (check()) done();
        else if (this.closedFlag) done(new Error(`rfc2217 client: connection closed while waiting for ${what}`));
      };
      const timer = setTimeout(() => done(new Error(`rfc2217 client: timed out after ${timeoutMs} ms waiting for ${what}; answers ${JSON.stringify(this.answers)}`)), timeoutMs);
      this.listeners.add(listener);
    });
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  close(): Promise<void> {
    this.closing ??= endSocket(this.socket, this.closedFlag);
    return this.closing;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
