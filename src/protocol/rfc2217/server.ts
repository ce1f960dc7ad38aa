/**
 * The access server's side of RFC 2217 (sections 1-3 and 4-5 as far as an access
 * server answers them), without I/O: decoded client commands in through `receive()`,
 * answers out through `backend.send` (a COM-PORT payload; the caller frames it as
 * `IAC SB 44 ... IAC SE`), the serial line behind it reached through the backend.
 *
 * What is answered, and with what (the answer is always the client's code + 100
 * carrying the value *now in effect*, so a client can tell what took):
 *
 * | command                 | value                | action                              | answer                          |
 * |-------------------------|----------------------|-------------------------------------|---------------------------------|
 * | SIGNATURE               | empty                | —                                   | our signature text              |
 * | SIGNATURE               | text                 | backend.signature(text)             | none (it is the client's name)  |
 * | SET-BAUDRATE            | 0                    | —                                   | current rate                    |
 * | SET-BAUDRATE            | rate                 | backend.apply({baudRate})           | rate in effect                  |
 * | SET-DATASIZE/PARITY/STOPSIZE | 0 / reserved    | —                                   | current value                   |
 * | SET-DATASIZE/PARITY/STOPSIZE | a defined value | backend.apply({...})                | value in effect                 |
 * | SET-CONTROL             | 0, 13 (requests)     | —                                   | current outbound / inbound flow |
 * | SET-CONTROL             | 1, 2, 3              | backend.apply({flow})               | flow in effect                  |
 * | SET-CONTROL             | 17, 19 (DCD, DSR)    | — (not offered)                     | current outbound flow           |
 * | SET-CONTROL             | 14, 15, 16, 18       | — (inbound follows outbound)        | current inbound flow            |
 * | SET-CONTROL             | 4 / 5 / 6            | backend.setBreak(on) for 5, 6       | BREAK state in effect           |
 * | SET-CONTROL             | 7-9 / 10-12          | — (DTR and RTS stay asserted)       | DTR-ON / RTS-ON                 |
 * | SET-CONTROL             | 20-127               | ignored (reserved)                  | none                            |
 * | SET-LINESTATE-MASK      | mask                 | recorded                            | the mask                        |
 * | SET-MODEMSTATE-MASK     | mask                 | recorded                            | the mask                        |
 * | PURGE-DATA              | 1, 2, 3              | backend.purge(which)                | the value                       |
 * | PURGE-DATA              | other                | ignored                             | none                            |
 * | FLOWCONTROL-SUSPEND/RESUME | —                 | backend.suspend(true/false)         | none (section 5)                |
 * | NOTIFY-*, server codes (100+) from a client | | ignored                             | none                            |
 *
 * Unknown current values (a source that reports no line settings, or none attached)
 * are answered as 0. Answers leave in the order the commands came: while an apply is
 * pending (a device reopening), later commands wait behind it (at most
 * MAX_PENDING_COMMANDS; more are ignored and reported).
 */
import {
  ComPortControl as C,
  ComPortPurge,
  DEFAULT_LINESTATE_MASK,
  DEFAULT_MODEMSTATE_MASK,
} from './codes.js';
import {
  dataSizeOf,
  decodeComPort,
  encodeComPort,
  parityCode,
  parityOf,
  stopBitsCode,
  stopBitsOf,
  type ComPortCommand,
  type ComPortParity,
  type ComPortStopBits,
} from './codec.js';
import type { ProtocolError } from '../../errors.js';
import { sanitizeText } from '../../util/text.js';

/** Flow control as a device names it (the domain's SerialLineSettings.flow). */
export type ComPortFlow = 'none' | 'rtscts' | 'xonxoff';

/** The serial line's settings (same shape as the domain's SerialLineSettings). */
export interface ComPortLine {
  baudRate?: number;
  dataSize?: number;
  parity?: ComPortParity;
  stopBits?: ComPortStopBits;
  flow?: ComPortFlow;
}

export type PurgeWhich = 'receive' | 'transmit' | 'both';

export interface ComPortServerBackend {
  /** One COM-PORT payload for the client (frame it as IAC SB 44 ... IAC SE). */
  send(payload: Buffer): void;
  /** The settings in effect now (absent fields: not known). */
  current(): ComPortLine;
  /**
   * Apply a change; returns (or resolves with) the settings in effect afterwards. May
   * refuse by returning the unchanged settings. Without it nothing changes and every
   * SET-* is answered with current(). A rejection is answered with current().
   */
  apply?(change: ComPortLine): ComPortLine | Promise<ComPortLine>;
  /** BREAK-ON (true) / BREAK-OFF (false); returns whether the line is now in BREAK. */
  setBreak?(on: boolean): boolean;
  /** PURGE-DATA. */
  purge?(which: PurgeWhich): void;
  /** FLOWCONTROL-SUSPEND (true) / RESUME (false): stop or restart sending data to the client. */
  suspend?(suspended: boolean): void;
  /** The client's SIGNATURE text (controls replaced, at most MAX_CLIENT_SIGNATURE characters). */
  signature?(text: string): void;
  /** A payload that did not decode, or a command the access server does not act on. */
  ignored?(reason: string, error?: ProtocolError): void;
}

export interface ComPortServerOptions {
  /** What SIGNATURE requests are answered with (e.g. `vspc 0.1.0 console web01`). */
  signature: string;
}

/** Commands waiting behind a pending apply, at most. */
export const MAX_PENDING_COMMANDS = 64;
/** Longest client signature kept, in characters. */
export const MAX_CLIENT_SIGNATURE = 256;

const FLOW_CODE: Record<ComPortFlow, number> = { none: C.FLOW_NONE, xonxoff: C.FLOW_XON_XOFF, rtscts: C.FLOW_HARDWARE };
const INBOUND_FLOW_CODE: Record<ComPortFlow, number> = { none: C.INBOUND_FLOW_NONE, xonxoff: C.INBOUND_FLOW_XON_XOFF, rtscts: C.INBOUND_FLOW_HARDWARE };
const FLOW_BY_CODE: ReadonlyMap<number, ComPortFlow> = new Map([
  [C.FLOW_NONE, 'none'],
  [C.FLOW_XON_XOFF, 'xonxoff'],
  [C.FLOW_HARDWARE, 'rtscts'],
]);

/** What the server keeps for `show` and tests. */
export interface ComPortServerState {
  lineStateMask: number;
  modemStateMask: number;
  /** The client asked us to stop sending (FLOWCONTROL-SUSPEND) and has not resumed. */
  suspended: boolean;
  /** BREAK-ON accepted and no BREAK-OFF since. */
  breakOn: boolean;
  clientSignature: string | null;
}

type Job = () => void | Promise<void>;

export class ComPortServer {
  private readonly stateValue: ComPortServerState = {
    lineStateMask: DEFAULT_LINESTATE_MASK,
    modemStateMask: DEFAULT_MODEMSTATE_MASK,
    suspended: false,
    breakOn: false,
    clientSignature: null,
  };
  private readonly jobs: Job[] = [];
  private running = false;
  private closed = false;

  constructor(
    private readonly backend: ComPortServerBackend,
    private readonly options: ComPortServerOptions,
  ) {}

  get state(): Readonly<ComPortServerState> {
    return this.stateValue;
  }

  /** Commands received and not answered yet (waiting behind an apply). */
  get pending(): number {
    return this.jobs.length + (this.running ? 1 : 0);
  }

  /** One COM-PORT payload from the client. Never throws for any payload. */
  receive(payload: Uint8Array): void {
    if (this.closed) return;
    const decoded = decodeComPort(payload);
    if (!decoded.ok) {
      this.backend.ignored?.(decoded.error.message, decoded.error);
      return;
    }
    const { sender, command } = decoded.message;
    if (sender === 'server') {
      this.backend.ignored?.(`an access server's ${command.name} answer from a client`);
      return;
    }
    if (this.jobs.length >= MAX_PENDING_COMMANDS) {
      this.backend.ignored?.(`${command.name}: ${MAX_PENDING_COMMANDS} commands are already waiting`);
      return;
    }
    this.jobs.push(() => this.handle(command));
    this.run();
  }

  /** Stop answering (the connection is closing); pending commands are dropped. */
  close(): void {
    this.closed = true;
    this.jobs.length = 0;
  }

  /** Runs queued jobs in order; synchronous ones answer at once, an async one holds the rest. */
  private run(): void {
    if (this.running) return;
    while (this.jobs.length > 0 && !this.closed) {
      const job = this.jobs.shift()!;
      let result: void | Promise<void>;
      try {
        result = job();
      } catch (err) {
        this.backend.ignored?.(`internal error: ${(err as Error)?.message ?? String(err)}`);
        continue;
      }
      if (result && typeof (result as Promise<void>).then === 'function') {
        this.running = true;
        (result as Promise<void>).then(
          () => this.resume(),
          (err: unknown) => {
            this.backend.ignored?.(`internal error: ${(err as Error)?.message ?? String(err)}`);
            this.resume();
          },
        );
        return;
      }
    }
  }

  private resume(): void {
    this.running = false;
    this.run();
  }

  private handle(c: ComPortCommand): void | Promise<void> {
    switch (c.name) {
      case 'signature':
        if (c.text.length === 0) {
          this.reply({ name: 'signature', text: Buffer.from(this.options.signature, 'utf8') });
        } else {
          const text = [...sanitizeText(c.text.toString('utf8'))].slice(0, MAX_CLIENT_SIGNATURE).join('');
          this.stateValue.clientSignature = text;
          this.backend.signature?.(text);
        }
        return;
      case 'set-baudrate':
        if (c.value === 0) return this.replyLine('set-baudrate', this.backend.current());
        return this.applyAndReply('set-baudrate', { baudRate: c.value });
      case 'set-datasize': {
        const dataSize = dataSizeOf(c.value);
        if (dataSize === undefined) return this.replyLine('set-datasize', this.backend.current());
        return this.applyAndReply('set-datasize', { dataSize });
      }
      case 'set-parity': {
        const parity = parityOf(c.value);
        if (parity === undefined) return this.replyLine('set-parity', this.backend.current());
        return this.applyAndReply('set-parity', { parity });
      }
      case 'set-stopsize': {
        const stopBits = stopBitsOf(c.value);
        if (stopBits === undefined) return this.replyLine('set-stopsize', this.backend.current());
        return this.applyAndReply('set-stopsize', { stopBits });
      }
      case 'set-control':
        return this.setControl(c.value);
      case 'set-linestate-mask':
        this.stateValue.lineStateMask = c.value;
        this.reply({ name: 'set-linestate-mask', value: c.value });
        return;
      case 'set-modemstate-mask':
        this.stateValue.modemStateMask = c.value;
        this.reply({ name: 'set-modemstate-mask', value: c.value });
        return;
      case 'purge-data': {
        const which: PurgeWhich | null =
          c.value === ComPortPurge.RECEIVE ? 'receive' : c.value === ComPortPurge.TRANSMIT ? 'transmit' : c.value === ComPortPurge.BOTH ? 'both' : null;
        if (!which) {
          this.backend.ignored?.(`PURGE-DATA ${c.value} is not 1, 2 or 3`);
          return;
        }
        this.backend.purge?.(which);
        this.reply({ name: 'purge-data', value: c.value });
        return;
      }
      case 'flowcontrol-suspend':
      case 'flowcontrol-resume': {
        const suspended = c.name === 'flowcontrol-suspend';
        if (this.stateValue.suspended === suspended) return;
        this.stateValue.suspended = suspended;
        this.backend.suspend?.(suspended);
        return;
      }
      case 'notify-linestate':
      case 'notify-modemstate':
        this.backend.ignored?.(`${c.name} is sent by an access server, not to one`);
        return;
    }
  }

  private setControl(v: number): void | Promise<void> {
    const flowOf = (line: ComPortLine): ComPortFlow => line.flow ?? 'none';
    if (v === C.REQUEST_FLOW || v === C.FLOW_DCD || v === C.FLOW_DSR) {
      this.reply({ name: 'set-control', value: FLOW_CODE[flowOf(this.backend.current())] });
      return;
    }
    const flow = FLOW_BY_CODE.get(v);
    if (flow) {
      return this.applyThen({ flow }, (line) => this.reply({ name: 'set-control', value: FLOW_CODE[flowOf(line)] }));
    }
    if (v === C.REQUEST_INBOUND_FLOW || v === C.INBOUND_FLOW_NONE || v === C.INBOUND_FLOW_XON_XOFF || v === C.INBOUND_FLOW_HARDWARE || v === C.INBOUND_FLOW_DTR) {
      this.reply({ name: 'set-control', value: INBOUND_FLOW_CODE[flowOf(this.backend.current())] });
      return;
    }
    if (v === C.REQUEST_BREAK || v === C.BREAK_ON || v === C.BREAK_OFF) {
      if (v !== C.REQUEST_BREAK) this.stateValue.breakOn = this.backend.setBreak?.(v === C.BREAK_ON) ?? false;
      this.reply({ name: 'set-control', value: this.stateValue.breakOn ? C.BREAK_ON : C.BREAK_OFF });
      return;
    }
    if (v >= C.REQUEST_DTR && v <= C.DTR_OFF) {
      this.reply({ name: 'set-control', value: C.DTR_ON });
      return;
    }
    if (v >= C.REQUEST_RTS && v <= C.RTS_OFF) {
      this.reply({ name: 'set-control', value: C.RTS_ON });
      return;
    }
    this.backend.ignored?.(`SET-CONTROL ${v} is reserved`);
  }

  private applyAndReply(name: 'set-baudrate' | 'set-datasize' | 'set-parity' | 'set-stopsize', change: ComPortLine): void | Promise<void> {
    return this.applyThen(change, (line) => this.replyLine(name, line));
  }

  /** Applies a change (sync or async) and answers with what is in effect; a failure is answered with current(). */
  private applyThen(change: ComPortLine, answer: (line: ComPortLine) => void): void | Promise<void> {
    const apply = this.backend.apply;
    if (!apply) return answer(this.backend.current());
    let result: ComPortLine | Promise<ComPortLine>;
    try {
      result = apply.call(this.backend, change);
    } catch {
      return answer(this.backend.current());
    }
    if (result && typeof (result as Promise<ComPortLine>).then === 'function') {
      return (result as Promise<ComPortLine>).then(
        (line) => {
          if (!this.closed) answer(line);
        },
        () => {
          if (!this.closed) answer(this.backend.current());
        },
      );
    }
    return answer(result as ComPortLine);
  }

  private replyLine(name: 'set-baudrate' | 'set-datasize' | 'set-parity' | 'set-stopsize', line: ComPortLine): void {
    switch (name) {
      case 'set-baudrate':
        return this.reply({ name, value: line.baudRate ?? 0 });
      case 'set-datasize':
        return this.reply({ name, value: line.dataSize ?? 0 });
      case 'set-parity':
        return this.reply({ name, value: parityCode(line.parity) });
      case 'set-stopsize':
        return this.reply({ name, value: stopBitsCode(line.stopBits) });
    }
  }

  private reply(command: ComPortCommand): void {
    if (this.closed) return;
    this.backend.send(encodeComPort({ sender: 'server', command }));
  }
}

