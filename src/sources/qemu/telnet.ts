/**
 * `telnet:HOST:PORT`: vspc connects to a telnet server (QEMU
 * `-serial telnet:HOST:PORT,server=on,wait=off`, `-chardev socket,...,telnet=on`; also
 * ser2net-style telnet ports). The protocol is the project's sans-I/O TelnetSession:
 * vspc asks for BINARY both ways and SGA, escapes IAC in input, and sends BREAK as
 * `IAC BRK` (QEMU turns it into a break on the guest UART).
 *
 * QEMU's telnet server opens with WILL ECHO, WILL SGA, WILL BINARY, DO BINARY and never
 * answers negotiation; its offers answer our requests, so both sides are BINARY from
 * the first data byte. A peer that breaks the protocol (any garbage may arrive here)
 * closes this link with VSPC_SOURCE_PROTOCOL_ERROR and the runner redials with backoff.
 */
import type net from 'node:net';
import type { Logger } from '../../domain/logger.js';
import type { SourceSpec } from '../../domain/source-spec.js';
import { BRK, COMMAND_NAMES, Option, TelnetSession, policyFromLists } from '../../protocol/telnet/index.js';
import { SourceError } from '../common/errors.js';
import type { ConnectorContext, DialConnector, Link, LinkOptions } from '../common/link.js';
import { SocketLink, dialSocket, hostPort, tuneTcp } from './socket-link.js';

/** Largest subnegotiation accepted from the peer (a serial console has no use for big ones). */
const MAX_SUBNEGOTIATION = 4096;

const POLICY = policyFromLists({ us: [Option.BINARY, Option.SGA], him: [Option.BINARY, Option.SGA, Option.ECHO] });

export class TelnetLink extends SocketLink {
  readonly session: TelnetSession;
  private sbTimer: NodeJS.Timeout | null = null;

  constructor(socket: net.Socket, peer: string, options: LinkOptions, log: Logger) {
    super(socket, peer, options, log);
    this.session = new TelnetSession(
      POLICY,
      {
        write: (bytes) => this.rawWrite(bytes),
        data: (data) => this.sink!.data(data),
        command: (c) => this.log.debug('telnet command from the endpoint', { command: COMMAND_NAMES[c] ?? c }),
        subnegotiation: (option, payload) => this.log.debug('telnet subnegotiation ignored', { option, bytes: payload.length }),
        error: (err) =>
          this.fail(
            new SourceError('VSPC_SOURCE_PROTOCOL_ERROR', `telnet protocol error from ${peer}: ${err.message}`, {
              protocolCode: err.code,
              ...err.context,
            }),
          ),
      },
      { maxSubnegotiation: MAX_SUBNEGOTIATION },
    );
  }

  protected override started(): void {
    // The four requests leave in one segment.
    this.socket.cork();
    this.session.requestUs(Option.BINARY);
    this.session.requestHim(Option.BINARY);
    this.session.requestUs(Option.SGA);
    this.session.requestHim(Option.SGA);
    this.socket.uncork();
  }

  protected override receive(chunk: Buffer): void {
    // Replies to one chunk's negotiation leave in one write.
    this.socket.cork();
    try {
      this.session.receive(chunk);
    } finally {
      this.socket.uncork();
    }
    this.watchSubnegotiation();
  }

  override write(data: Buffer): boolean {
    return this.session.sendData(data);
  }

  sendBreak(): void {
    this.session.sendCommand(BRK);
  }

  /** Bound how long an `IAC SB` may stay open (it would swallow the console's output). */
  private watchSubnegotiation(): void {
    if (this.session.inSubnegotiation) {
      if (this.sbTimer) return;
      const ms = this.options.telnetSubnegotiationTimeoutMs;
      this.sbTimer = setTimeout(() => {
        this.fail(new SourceError('VSPC_SOURCE_PROTOCOL_ERROR', `telnet subnegotiation from ${this.peer} left open for ${ms} ms`, { protocolCode: 'TELNET_SB_TIMEOUT' }));
      }, ms);
      this.sbTimer.unref?.();
    } else if (this.sbTimer) {
      clearTimeout(this.sbTimer);
      this.sbTimer = null;
    }
  }

  protected override stopReading(): void {
    this.session.stop();
  }

  protected override closedHook(): void {
    if (this.sbTimer) clearTimeout(this.sbTimer);
    this.sbTimer = null;
  }
}

export function telnetConnector(spec: Extract<SourceSpec, { type: 'telnet' }>, ctx: ConnectorContext): DialConnector {
  const peer = hostPort(spec.host, spec.port);
  return {
    mode: 'dial',
    async dial(signal: AbortSignal): Promise<Link> {
      const sock = await dialSocket({ host: spec.host, port: spec.port }, peer, signal);
      tuneTcp(sock, ctx.options);
      return new TelnetLink(sock, peer, ctx.options, ctx.logger);
    },
  };
}
