/** Console discovery: providers (Proxmox, libvirt, glob) and the watcher that diffs their scans. */
export { discoveredId, type DiscoveredConsole, type Discovery, type DiscoveryKind } from './types.js';
export { ProxmoxDiscovery, parseProxmoxConfName, parseSerialSocketName, DEFAULT_PROXMOX_CONF_DIR, DEFAULT_PROXMOX_RUN_DIR, type ProxmoxDiscoveryOptions } from './proxmox.js';
export { LibvirtDiscovery, parseLibvirtDomain, libvirtConsoles, DEFAULT_LIBVIRT_RUN_DIR, type LibvirtDiscoveryOptions } from './libvirt.js';
export { GlobDiscovery, matchSegment, type GlobDiscoveryOptions } from './glob.js';
export {
  DiscoveryWatcher,
  watchDiscoveries,
  sameConsole,
  DEFAULT_DEBOUNCE_MS,
  DEFAULT_RESCAN_INTERVAL_MS,
  type DiscoveryEvents,
  type DiscoveryWatcherOptions,
  type ScanReason,
  type ScanSummary,
} from './watcher.js';
export { sanitizeName } from './text.js';
export { DEFAULT_MAX_FILE_BYTES } from './files.js';
