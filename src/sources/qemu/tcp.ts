/**
 * `tcp:HOST:PORT`: vspc connects to a raw TCP socket QEMU serves
 * (`-serial tcp:HOST:PORT,server=on,wait=off`). Bytes pass as they are (no telnet).
 */
import type { SourceSpec } from '../../domain/source-spec.js';
import type { ConnectorContext, DialConnector, Link } from '../common/link.js';
import { SocketLink, dialSocket, hostPort, tuneTcp } from './socket-link.js';

export function tcpConnector(spec: Extract<SourceSpec, { type: 'tcp' }>, ctx: ConnectorContext): DialConnector {
  const peer = hostPort(spec.host, spec.port);
  return {
    mode: 'dial',
    async dial(signal: AbortSignal): Promise<Link> {
      const sock = await dialSocket({ host: spec.host, port: spec.port }, peer, signal);
      tuneTcp(sock, ctx.options);
      return new SocketLink(sock, peer, ctx.options, ctx.logger);
    },
  };
}
