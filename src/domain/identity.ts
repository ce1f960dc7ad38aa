/**
 * What a console *is* across restarts, independent of where its bytes come from.
 *
 * A console is named by its kind (the source that feeds it: `esxi` today; `qemu`,
 * `device`, ... later), a stable key within that kind, and a label telling apart the
 * serial ports of one machine:
 *
 * | kind   | key                                   | label                       |
 * |--------|---------------------------------------|-----------------------------|
 * | `esxi` | the VM's vCenter UUID (32 hex digits) | vSPC URI `?port=` ('' none) |
 *
 * The display name is informational: it may change (a VM renamed) and is not unique.
 */
import { formatUuid } from '../util/uuid.js';

/** Source kinds. A string so that a new kind is a new source, not a change here. */
export type ConsoleKind = 'esxi' | (string & {});

export interface ConsoleIdentity {
  /** Registry row id: a stable handle for logs and admin commands. */
  readonly id: number;
  readonly kind: ConsoleKind;
  /** Stable key within the kind (ESXi: VC UUID, 32 lowercase hex digits). */
  readonly key: string;
  /** Which serial port of the machine; '' when there is only one. */
  readonly label: string;
  /** Display name as last reported; null until known. */
  name: string | null;
  /** The sticky TCP port clients connect to. */
  tcpPort: number;
}

/**
 * What the key is called, with it, for greetings and log headers: `uuid 421a5b77-…` for
 * an ESXi VM, `proxmox 101`, `config web01`, ... for the other kinds.
 */
export function describeKey(identity: Pick<ConsoleIdentity, 'kind' | 'key'>): string {
  return `${identity.kind === 'esxi' ? 'uuid' : identity.kind} ${displayKey(identity)}`;
}

/** The key as people read it: a UUID in 8-4-4-4-12 form, anything else as it is. */
export function displayKey(identity: Pick<ConsoleIdentity, 'key'>): string {
  return /^[0-9a-f]{32}$/.test(identity.key) ? formatUuid(identity.key) : identity.key;
}
