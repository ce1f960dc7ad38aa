/**
 * `unix:PATH`: vspc connects to a socket QEMU serves
 * (`-serial unix:PATH,server=on,wait=off`, `-chardev socket,id=...,path=PATH,server=on,wait=off`;
 * Proxmox: `/var/run/qemu-server/<vmid>.serial<N>`).
 *
 * A QEMU socket server takes one client at a time and does not accept a second one
 * while the first is attached: the kernel still completes our connect (the listen
 * backlog), so vspc then sits `connected` with no output until the other client
 * (`qm terminal`, `socat`) leaves and QEMU accepts us.
 */
import { stat } from 'node:fs/promises';
import type { SourceSpec } from '../../domain/source-spec.js';
import { SourceError, sysCodeOf } from '../common/errors.js';
import type { ConnectorContext, DialConnector, Link } from '../common/link.js';
import { SocketLink, dialSocket } from './socket-link.js';

/** Why connecting to a unix socket path failed, in words an operator can act on. */
export async function diagnoseUnixConnect(path: string, err: SourceError): Promise<SourceError> {
  if (err.sysCode !== 'ECONNREFUSED' && err.sysCode !== 'ENOTSOCK') return err;
  try {
    const st = await stat(path);
    if (!st.isSocket()) {
      const what = st.isDirectory() ? 'a directory' : st.isFile() ? 'a regular file' : 'not a socket';
      return new SourceError('VSPC_SOURCE_NOT_A_SOCKET', `${path} is ${what}, not a socket`, { sysCode: err.sysCode, path });
    }
  } catch (statErr) {
    return new SourceError('VSPC_SOURCE_NOT_FOUND', `${sysCodeOf(statErr) ?? 'ENOENT'}: ${path} does not exist`, { sysCode: sysCodeOf(statErr), path });
  }
  return new SourceError(
    'VSPC_SOURCE_CONNECT_FAILED',
    `ECONNREFUSED: nothing listens on ${path} (a socket left behind by a QEMU that is gone?)`,
    { sysCode: 'ECONNREFUSED', path },
  );
}

export function unixConnector(spec: Extract<SourceSpec, { type: 'unix' }>, ctx: ConnectorContext): DialConnector {
  return new UnixConnector(spec.path, ctx.options, ctx.logger);
}

/** One per `unix:` console, for as long as it is declared: a class, so no closure and context each. */
class UnixConnector implements DialConnector {
  readonly mode = 'dial';

  constructor(
    private readonly path: string,
    private readonly options: ConnectorContext['options'],
    private readonly logger: ConnectorContext['logger'],
  ) {}

  async dial(signal: AbortSignal): Promise<Link> {
    const peer = `unix:${this.path}`;
    let sock;
    try {
      sock = await dialSocket({ path: this.path }, peer, signal);
    } catch (err) {
      if (err instanceof SourceError && !signal.aborted) throw await diagnoseUnixConnect(this.path, err);
      throw err;
    }
    return new SocketLink(sock, peer, this.options, this.logger);
  }
}
