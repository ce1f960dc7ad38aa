/**
 * `udp:LOCALHOST:LPORT@REMOTEHOST:RPORT`: QEMU's UDP net console,
 * `-serial udp:REMOTEHOST:RPORT@LOCALHOST:LPORT` seen from QEMU's side (QEMU binds its
 * local port, which is vspc's REMOTE, and sends to its remote, which is vspc's LOCAL).
 *
 * vspc binds LOCAL, sends input as datagrams to REMOTE and accepts output datagrams only
 * from REMOTE's address and port: a datagram from anyone else is dropped and counted
 * (`droppedDatagrams`; the first per link logged at warn, the rest at debug).
 *
 * UDP has no connection, so this link is `connected` as soon as the socket is bound
 * (the link's `note` says so): vspc cannot tell whether QEMU is there. It ends only
 * when the socket fails.
 *
 * Input longer than `maxDatagram` (default 1024 bytes: unfragmented on an Ethernet MTU;
 * QEMU reads datagrams into a 4096-byte buffer) is split into several datagrams.
 * write() returns false once `udpHighWaterMark` bytes wait in the socket's send queue,
 * and the drain listener runs when the queue is empty again.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { lookup } from 'node:dns/promises';
import type { Logger } from '../../domain/logger.js';
import type { SourceSpec } from '../../domain/source-spec.js';
import { SourceError, linkError, listenError, sysCodeOf } from '../common/errors.js';
import type { ConnectorContext, DialConnector, Link, LinkOptions, LinkSink } from '../common/link.js';
import { hostPort } from './socket-link.js';

export class UdpLink implements Link {
  readonly peer: string;
  readonly note = 'udp: connected means the local port is bound; whether the far end listens is not known';
  /** Datagrams from an address other than REMOTE, dropped. */
  droppedDatagrams = 0;
  /** Datagrams whose send failed. */
  sendErrors = 0;
  private sink: LinkSink | null = null;
  private why: SourceError | undefined;
  private byUs = false;
  private closed = false;
  private reported = false;
  private drainListener: (() => void) | null = null;
  private needDrain = false;
  private closeTimer: NodeJS.Timeout | null = null;
  private closeRequested = false;

  constructor(
    private readonly socket: dgram.Socket,
    private readonly remote: { address: string; port: number },
    local: string,
    private readonly options: LinkOptions,
    private readonly log: Logger,
  ) {
    this.peer = `${hostPort(remote.address, remote.port)} (udp from ${local})`;
    socket.on('error', (err) => {
      this.why ??= linkError(err, this.peer);
      this.closeSocket();
    });
    socket.on('close', () => {
      this.closed = true;
      if (this.closeTimer) clearTimeout(this.closeTimer);
      if (this.sink) this.report();
    });
  }

  start(sink: LinkSink): void {
    if (this.sink) return;
    this.sink = sink;
    if (this.closed) {
      this.report();
      return;
    }
    this.socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => {
      if (rinfo.port !== this.remote.port || rinfo.address !== this.remote.address) {
        if (this.droppedDatagrams++ === 0) {
          this.log.warn('datagram from an unexpected sender dropped (only the remote end is accepted)', {
            from: hostPort(rinfo.address, rinfo.port),
            expected: hostPort(this.remote.address, this.remote.port),
            bytes: msg.length,
          });
        } else {
          this.log.debug('datagram from an unexpected sender dropped', { from: hostPort(rinfo.address, rinfo.port), dropped: this.droppedDatagrams });
        }
        return;
      }
      try {
        sink.data(msg);
      } catch (err) {
        this.log.error('internal error while handling endpoint data; closing this link', { error: String((err as Error)?.message ?? err), stack: (err as Error)?.stack });
        this.why ??= new SourceError('VSPC_SOURCE_INTERNAL', `internal error while handling data from ${this.peer}`, {}, { cause: err });
        this.closeSocket();
      }
    });
  }

  write(data: Buffer): boolean {
    if (this.closed || this.closeRequested) return true;
    const max = this.options.maxDatagram;
    for (let off = 0; off < data.length; off += max) {
      const piece = off === 0 && data.length <= max ? data : data.subarray(off, Math.min(off + max, data.length));
      this.socket.send(piece, this.remote.port, this.remote.address, (err) => this.sent(err));
    }
    if (this.socket.getSendQueueSize() >= this.options.udpHighWaterMark) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  private sent(err: Error | null): void {
    if (err) {
      if (this.sendErrors++ === 0) this.log.warn('cannot send a datagram', { error: err.message, sysCode: sysCodeOf(err), to: this.peer });
      else this.log.debug('cannot send a datagram', { error: err.message, sendErrors: this.sendErrors });
    }
    if (this.closed) return;
    const queued = this.socket.getSendQueueCount();
    if (queued === 0) {
      if (this.needDrain) {
        this.needDrain = false;
        this.drainListener?.();
      }
      if (this.closeRequested) this.closeSocket();
    }
  }

  onDrain(listener: () => void): void {
    this.drainListener = listener;
  }

  close(_reason: string): void {
    if (this.closeRequested || this.closed) return;
    this.byUs = true;
    this.closeRequested = true;
    if (this.socket.getSendQueueCount() === 0) {
      this.closeSocket();
      return;
    }
    this.closeTimer = setTimeout(() => this.closeSocket(), this.options.closeGraceMs);
    this.closeTimer.unref?.();
  }

  destroy(_reason: string): void {
    this.byUs = true;
    this.closeSocket();
  }

  private closeSocket(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  private report(): void {
    if (this.reported) return;
    this.reported = true;
    this.sink!.closed(this.why ?? (this.byUs ? null : new SourceError('VSPC_SOURCE_CLOSED', `udp socket for ${this.peer} closed`)));
  }
}

async function resolveHost(host: string, family?: 4 | 6): Promise<{ address: string; family: 4 | 6 }> {
  const ip = net.isIP(host);
  if (ip === 4 || ip === 6) return { address: host, family: ip };
  try {
    const r = await lookup(host, family ? { family } : {});
    return { address: r.address, family: r.family === 6 ? 6 : 4 };
  } catch (err) {
    throw new SourceError('VSPC_SOURCE_CONNECT_FAILED', `${sysCodeOf(err) ?? 'error'}: cannot resolve ${host}`, { sysCode: sysCodeOf(err) });
  }
}

export function udpConnector(spec: Extract<SourceSpec, { type: 'udp' }>, ctx: ConnectorContext): DialConnector {
  const localText = hostPort(spec.local.host, spec.local.port);
  return {
    mode: 'dial',
    async dial(signal: AbortSignal): Promise<Link> {
      const local = await resolveHost(spec.local.host);
      const remote = await resolveHost(spec.remote.host, local.family);
      if (signal.aborted) throw signal.reason;
      const socket = dgram.createSocket({ type: local.family === 6 ? 'udp6' : 'udp4' });
      await new Promise<void>((resolve, reject) => {
        const cleanup = (): void => {
          signal.removeEventListener('abort', onAbort);
          socket.off('error', onError);
          socket.off('listening', onListening);
        };
        const onAbort = (): void => {
          cleanup();
          socket.on('error', () => {});
          socket.close();
          reject(signal.reason);
        };
        const onError = (err: Error): void => {
          cleanup();
          socket.close();
          reject(listenError(err, `udp:${localText}`));
        };
        const onListening = (): void => {
          cleanup();
          resolve();
        };
        signal.addEventListener('abort', onAbort, { once: true });
        socket.once('error', onError);
        socket.once('listening', onListening);
        socket.bind({ address: local.address, port: spec.local.port, exclusive: true });
      });
      return new UdpLink(socket, { address: remote.address, port: spec.remote.port }, localText, ctx.options, ctx.logger);
    },
  };
}
