import type { Registry } from '../domain/registry.js';
import type { VmSerialPort } from '../domain/vm-serial-port.js';
import { formatUuid } from '../protocol/vmware/identity.js';

/** One row of `vspc-admin list --json`: the admin API's stable shape. */
export interface PortView {
  name: string | null;
  uuid: string;
  label: string;
  port: number;
  tlsPort: number | null;
  connected: boolean;
  state: string;
  clients: number;
  source: string | null;
  peer: string | null;
  connectedSince: string | null;
  lastSeen: string | null;
  listenError: string | null;
}

export function portView(hub: VmSerialPort, registry: Registry, tlsPortOf: (h: VmSerialPort) => number | null): PortView {
  const lastSeen = registry.lastSeen(hub);
  return {
    name: hub.identity.name,
    uuid: formatUuid(hub.identity.uuid),
    label: hub.identity.label,
    port: hub.identity.port,
    tlsPort: tlsPortOf(hub),
    connected: hub.source !== null,
    state: hub.state,
    clients: hub.clients.size,
    source: hub.source?.kind ?? null,
    peer: hub.source?.peer ?? null,
    connectedSince: hub.connectedSince ? new Date(hub.connectedSince).toISOString() : null,
    lastSeen: lastSeen ? new Date(lastSeen).toISOString() : null,
    listenError: [hub.listenError, hub.tlsListenError].filter(Boolean).join('; ') || null,
  };
}
