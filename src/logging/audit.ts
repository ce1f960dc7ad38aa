/**
 * The audit log: who attached to which VM serial port, from where, in which mode, when
 * they left and why, and forced takeovers. Structured winston lines (child logger
 * `{ audit: true }`), from the hubs' events. Console bytes are not here (console-log.ts).
 */
import type { Logger } from '../domain/logger.js';
import { displayKey } from '../domain/identity.js';
import type { ConsoleEvent, ConsoleObserver, ConsoleHub } from '../domain/console-hub.js';

function vmFields(hub: ConsoleHub): Record<string, unknown> {
  const id = hub.identity;
  return {
    vm: hub.displayName,
    uuid: displayKey(id),
    label: id.label,
    port: id.tcpPort,
  };
}

/** The user name a client gave (VSPC-CONTROL), as a field when there is one. */
function user(name: string | undefined): Record<string, unknown> {
  return name ? { user: name } : {};
}

export interface AuditObserver extends ConsoleObserver {
  event(hub: ConsoleHub, event: ConsoleEvent): void;
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
    event(hub: ConsoleHub, e: ConsoleEvent): void {
      switch (e.kind) {
        case 'client-attached':
          since.set(e.clientId, now());
          log.info('client attached', {
            ...vmFields(hub),
            clientId: e.clientId,
            peer: e.peer,
            ...user(e.user),
            mode: e.mode,
            ...(e.tls !== undefined ? { tls: e.tls } : {}),
            ...(e.force ? { force: true } : {}),
            ...(e.clients !== undefined ? { clients: e.clients } : {}),
          });
          return;
        case 'client-detached': {
          const t = since.get(e.clientId);
          since.delete(e.clientId);
          log.info('client detached', {
            ...vmFields(hub),
            clientId: e.clientId,
            peer: e.peer,
            ...user(e.user),
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
            ...vmFields(hub),
            clientId: e.clientId,
            peer: e.peer,
            ...user(e.user),
            displacedClientId: e.displacedClientId,
            displacedPeer: e.displacedPeer,
            ...(e.displacedUser ? { displacedUser: e.displacedUser } : {}),
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
