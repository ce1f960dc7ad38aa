import type { Logger } from '../logger.js';
import type { Registry } from '../domain/registry.js';
import type { VmSerialPort } from '../domain/vm-serial-port.js';
import type { VmotionCoordinator } from '../domain/vmotion.js';
import type { AdminRoute } from './admin-server.js';
import { resolveVm } from './resolve.js';
import { portView } from './views.js';

/** What the admin API reads and acts on; the server passes itself in through this. */
export interface AdminContext {
  registry: Registry;
  vmotion: VmotionCoordinator;
  logger: Logger;
  tlsPortOf(hub: VmSerialPort): number | null;
  status(): Record<string, unknown>;
  /** Console log files, when `--log-dir` is set (src/logging/console-log.ts). */
  consoleLogs?: {
    /** The last `lines` lines of the VM serial port's current console log. */
    tail(hub: VmSerialPort, lines: number): Promise<string>;
    /** Rotate one VM's log now, or all of them. */
    rotate(hub?: VmSerialPort): Promise<void>;
  };
}

/** The admin API's calls (documented in docs/admin-api.md). */
export function adminRoutes(ctx: AdminContext): AdminRoute[] {
  const view = (h: VmSerialPort) => portView(h, ctx.registry, (x) => ctx.tlsPortOf(x));
  return [
    { method: 'GET', path: '/api/v1/ports', handle: () => ctx.registry.all().map(view) },
    { method: 'GET', path: '/api/v1/status', handle: () => ctx.status() },
    // Which port to dial for a VM (used by `vspc-admin connect`).
    { method: 'GET', path: '/api/v1/resolve', handle: (url) => view(resolveVm(ctx.registry, url.searchParams.get('vm'))) },
    {
      method: 'POST',
      path: '/api/v1/forget',
      handle: (url) => {
        const hub = resolveVm(ctx.registry, url.searchParams.get('vm'));
        const v = view(hub);
        ctx.registry.forget(hub);
        ctx.logger.info('VM serial port forgotten by the administrator', { vm: hub.displayName, port: hub.identity.port });
        return v;
      },
    },
  ];
}
