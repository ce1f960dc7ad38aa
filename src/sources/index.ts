/**
 * Every kind of console source vspc maintains itself, by spec type: the QEMU socket
 * backends (sources/qemu) and host ttys (sources/device). ESXi connections come in on
 * their own (sources/esxi).
 */
import { ConnectorRegistry } from './common/link.js';
import { registerDeviceSource } from './device/index.js';
import { registerQemuSources } from './qemu/index.js';

/** A registry of link factories for every maintained source type. */
export function sourceConnectors(): ConnectorRegistry {
  return registerDeviceSource(registerQemuSources(new ConnectorRegistry()));
}

export { ManagedConsoles, type WantedConsole, type LeaveMode } from './managed.js';
export { DiscoveredConsoles, type DiscoverySettings } from './discovered.js';
