/**
 * The audit log: who attached to which VM serial port, from where, in which mode, when
 * they left and why, and forced takeovers. Structured winston lines (child logger
 * `{ audit: true }`), from the hubs' events. Console bytes are not here (console-log.ts).
 */
import type { Logger } from '../logger.js';
import { formatUuid } from '../protocol/vmware/identity.js';
import type { SerialPortEvent, SerialPortObserver, VmSerialPort } from '../domain/vm-serial-port.js';

function vmFields(port: VmSerialPort): Record<string, unknown> {
  const id = port.identity;
  return {
    vm: port.displayName,
    uuid: /^[0-9a-f]{32}$/.test(id.uuid) ? formatUuid(id.uuid) : id.uuid,
    label: id.label,
    port: id.port,
  };
}

export interface AuditObserver extends SerialPortObserver {
  event(port: VmSerialPort, event: SerialPortEvent): void;
  /** Clients attached now (for their session length at detach). */
  readonly attachedClients: number;
}

/** An observer writing one audit line per client attach, detach and takeover. */
export function createAuditObserver(logger: Logger, now: () => number = Date.now): AuditObserver {
  const log = logger.child({ audit: true });
  /** Attach times by client id, for the session length; removed at detach. */
  const since = new Map<number, number>();
  return {
    get attachedClients() {
      return since.size;
    },
    event(port: VmSerialPort, e: SerialPortEvent): void {
      switch (e.kind) {
        case 'client-attached':
          since.set(e.clientId, now());
          log.info('client attached', { ...vmFields(port), clientId: e.clientId, peer: e.peer, mode: e.mode });
          return;
        case 'client-detached': {
          const t = since.get(e.clientId);
          since.delete(e.clientId);
          log.info('client detached', {
            ...vmFields(port),
            clientId: e.clientId,
            peer: e.peer,
            reason: e.reason,
            ...(t !== undefined ? { durationMs: now() - t } : {}),
          });
          return;
        }
        case 'client-takeover': {
          // The displaced client leaves here: the hub reports no separate detach for it.
          const t = since.get(e.displacedClientId);
          since.delete(e.displacedClientId);
          log.warn('client took over the VM serial port (forced)', {
            ...vmFields(port),
            clientId: e.clientId,
            peer: e.peer,
            displacedClientId: e.displacedClientId,
            displacedPeer: e.displacedPeer,
            ...(t !== undefined ? { displacedDurationMs: now() - t } : {}),
          });
          return;
        }
        default:
          // VM connects, disconnects and vMotions are logged by the connections themselves.
          return;
      }
    },
  };
}
