import type { Registry } from '../domain/registry.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import { normalizeUuid } from '../util/uuid.js';
import { AdminApiError } from './admin-server.js';

/**
 * Finds the VM serial port an operator means: a client port number, a UUID (any case,
 * with or without separators), or a VM name; `REF:LABEL` picks one serial port of a
 * VM with several. A name or UUID that matches several ports is an error listing them.
 */
export function resolveVm(registry: Registry, ref: string | null): ConsoleHub {
  if (!ref) throw new AdminApiError(400, 'VSPC_VM_REQUIRED', 'name the VM: its name, UUID or port');
  const candidates = matches(registry, ref);
  if (candidates.length === 0) throw new AdminApiError(404, 'VSPC_VM_NOT_FOUND', `no VM serial port matches "${ref}"`);
  if (candidates.length > 1) {
    const list = candidates.map((h) => `${h.displayName} (port ${h.identity.tcpPort})`).join(', ');
    throw new AdminApiError(409, 'VSPC_VM_AMBIGUOUS', `"${ref}" matches ${candidates.length} serial ports: ${list}; use the port or NAME:LABEL`);
  }
  return candidates[0];
}

function matches(registry: Registry, ref: string): ConsoleHub[] {
  if (/^\d{1,5}$/.test(ref)) {
    const byPort = registry.getByPort(Number(ref));
    if (byPort) return [byPort];
  }
  const all = registry.all();
  const exact = (r: string, label: string | null) => {
    const uuid = normalizeUuid(r);
    return all.filter(
      (h) => (label === null || h.identity.label === label) && (h.identity.name === r || (uuid !== undefined && h.identity.key === uuid)),
    );
  };
  const whole = exact(ref, null);
  if (whole.length > 0) return whole;
  const colon = ref.lastIndexOf(':');
  return colon > 0 ? exact(ref.slice(0, colon), ref.slice(colon + 1)) : [];
}
