import type { Socket } from 'node:net';
import type { Logger } from '../logger.js';
import { errorFields } from '../logger.js';
import { AYT, BRK, encodeData, Option, policyFromLists, TelnetSession } from '../protocol/telnet/index.js';
import type { ConsoleClient } from '../domain/ports.js';
import type { VmSerialPort } from '../domain/vm-serial-port.js';
import { formatUuid } from '../protocol/vmware/identity.js';

export interface TelnetClientOptions {
  /** Bytes queued to a client that does not read; past this it is disconnected. */
  maxQueuedBytes: number;
  maxSubnegotiation: number;
  closeGraceMs: number;
}

let nextClientId = 1;

/**
 * Fan-out hands every client of a VM the same Buffer; escaping it once instead of
 * once per client keeps the per-chunk cost flat in the number of clients.
 */
const fanout = { input: null as Buffer | null, binary: true, output: null as Buffer | null };
function encodeForFanout(data: Buffer, binary: boolean): Buffer {
  if (fanout.input !== data || fanout.binary !== binary) {
    fanout.input = data;
    fanout.binary = binary;
    fanout.output = encodeData(data, binary);
  }
  return fanout.output!;
}

/**
 * An admin's stock `telnet` attached to one VM serial port. We WILL ECHO and SGA
 * (so the client goes to character mode and does not echo locally) and negotiate
 * BINARY both ways, so all 256 byte values pass unchanged.
 */
export class TelnetClient implements ConsoleClient {
  readonly id = nextClientId++;
  readonly peer: string;
  readonly connectedAt = Date.now();
  private readonly session: TelnetSession;
  private readonly log: Logger;
  private closed = false;
  private closeTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly socket: Socket,
    private readonly hub: VmSerialPort,
    logger: Logger,
    private readonly options: TelnetClientOptions,
    readonly secure: boolean,
  ) {
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
    this.log = logger.child({ client: this.id, peer: this.peer, side: 'client', vm: hub.displayName, tls: secure });
    this.session = new TelnetSession(
      policyFromLists({ us: [Option.ECHO, Option.SGA, Option.BINARY], him: [Option.BINARY, Option.SGA] }),
      {
        write: (b) => this.socket.write(b),
        data: (d) => this.hub.fromClient(this, d),
        command: (c) => this.onCommand(c),
        error: (err) => {
          this.log.warn('protocol error from client; closing', errorFields(err));
          this.destroy(err.code);
        },
      },
      { maxSubnegotiation: options.maxSubnegotiation },
    );
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 30_000);
    socket.once('data', (chunk: Buffer) => {
      // A TLS ClientHello on a plain port would otherwise be decoded as keystrokes for the VM.
      if (!secure && chunk[0] === 0x16) {
        this.log.warn('TLS handshake on a plain telnet client port; closing (use the telnets port)', { errorCode: 'VSPC_TLS_ON_PLAIN_PORT' });
        this.destroy('TLS on a plain port');
        return;
      }
      this.session.receive(chunk);
      socket.on('data', (c: Buffer) => this.session.receive(c));
    });
    socket.on('error', (err) => this.log.info('client socket error', errorFields(err)));
    socket.on('close', () => this.onClose());

    this.session.requestUs(Option.ECHO);
    this.session.requestUs(Option.SGA);
    this.session.requestUs(Option.BINARY);
    this.session.requestHim(Option.BINARY);
    this.session.requestHim(Option.SGA);
    const id = hub.identity;
    this.notice(`${hub.displayName} (uuid ${formatUuid(id.uuid)}${id.label ? `, port ${id.label}` : ''})`);
    hub.addClient(this);
    this.log.info('client attached', { clients: hub.clients.size });
  }

  deliver(data: Buffer): void {
    if (this.closed) return;
    this.socket.write(encodeForFanout(data, this.session.isEnabled('us', Option.BINARY)));
    if (this.socket.writableLength > this.options.maxQueuedBytes) {
      this.log.warn('client too slow; disconnecting', { queued: this.socket.writableLength, limit: this.options.maxQueuedBytes });
      // The queue is already full: telling the client would only queue more, so just go.
      this.destroy('too slow: output queue over the limit');
    }
  }

  notice(text: string): void {
    if (this.closed) return;
    this.session.sendData(Buffer.from(`\r\n[vspc: ${text}]\r\n`, 'utf8'));
  }

  pauseInput(): void {
    this.socket.pause();
  }

  resumeInput(): void {
    if (!this.closed) this.socket.resume();
  }

  close(reason: string): void {
    if (this.closed) return;
    this.notice(reason);
    this.closed = true;
    this.log.info('closing client', { reason });
    this.hub.removeClient(this, reason);
    this.socket.end();
    this.closeTimer = setTimeout(() => this.socket.destroy(), this.options.closeGraceMs);
    this.closeTimer.unref();
  }

  destroy(reason = 'aborted'): void {
    this.closed = true;
    this.hub.removeClient(this, reason);
    this.socket.destroy();
  }

  private onCommand(command: number): void {
    if (command === BRK) this.hub.sendBreak();
    else if (command === AYT) this.notice('yes, vspc is here');
  }

  private onClose(): void {
    this.closed = true;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.hub.removeClient(this, 'connection closed');
    this.log.info('client detached', { durationMs: Date.now() - this.connectedAt });
  }
}
