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
  /** The access method of each attached client that named one, repeated on its detach line. */
  const methods = new Map<number, string>();
  /** The key each SSH client logged in with, repeated on its detach line. */
  const keys = new Map<number, string>();
  return {
    get attachedClients() {
      return since.size;
    },
    event(hub: ConsoleHub, e: ConsoleEvent): void {
      switch (e.kind) {
        case 'client-attached': {
          since.set(e.clientId, now());
          const method = e.method ?? e.auth?.method;
          if (method) methods.set(e.clientId, method);
          if (e.auth?.keyFingerprint) keys.set(e.clientId, e.auth.keyFingerprint);
          // method: how it came in (raw, unix, pty, ssh, ...); origin: a unix socket's path, owner,
          // group and mode and the peer's uid/gid/pid, a pty's link and device; an SSH key's fingerprint.
          log.info('client attached', {
            // First: an access method's facts never hide the line's own fields.
            ...(e.origin ?? {}),
            ...vmFields(hub),
            clientId: e.clientId,
            peer: e.peer,
            ...user(e.user),
            mode: e.mode,
            ...(method ? { method } : {}),
            ...(e.auth?.keyFingerprint ? { keyFingerprint: e.auth.keyFingerprint } : {}),
            ...(e.tls !== undefined ? { tls: e.tls } : {}),
            ...(e.force ? { force: true } : {}),
            ...(e.clients !== undefined ? { clients: e.clients } : {}),
          });
          return;
        }
        case 'client-detached': {
          const t = since.get(e.clientId);
          since.delete(e.clientId);
          const method = methods.get(e.clientId);
          methods.delete(e.clientId);
          const keyFingerprint = keys.get(e.clientId);
          keys.delete(e.clientId);
          log.info('client detached', {
            ...vmFields(hub),
            clientId: e.clientId,
            peer: e.peer,
            ...user(e.user),
            ...(method ? { method } : {}),
            ...(keyFingerprint ? { keyFingerprint } : {}),
            reason: e.reason,
            ...(t !== undefined ? { durationMs: now() - t } : {}),
          });
          return;
        }
        case 'client-takeover': {
          // The displaced client leaves here: the hub reports no separate detach for it.
          const t = since.get(e.displacedClientId);
          since.delete(e.displacedClientId);
          methods.delete(e.displacedClientId);
          keys.delete(e.displacedClientId);
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
