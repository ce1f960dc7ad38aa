/** Shared helpers of the discovery tests: temp trees, real unix sockets, a recording logger, event waits. */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LazyFields, LogFields, Logger } from '../../src/domain/logger.js';
import type { DiscoveredConsole } from '../../src/sources/discovery/types.js';

export const FIXTURES = new URL('../../../test/fixtures/discovery/', import.meta.url).pathname;

export interface LogRecord {
  level: 'error' | 'warn' | 'info' | 'debug';
  message: string;
  fields: LogFields;
}

/** A Logger that records its lines (child fields merged in). */
export function recordingLogger(): { logger: Logger; lines: LogRecord[] } {
  const lines: LogRecord[] = [];
  const make = (base: LogFields): Logger => {
    const at =
      (level: LogRecord['level']) =>
      (message: string, fields: LazyFields = {}) => {
        lines.push({ level, message, fields: { ...base, ...(typeof fields === 'function' ? fields() : fields) } });
      };
    return {
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      isLevelEnabled: () => true,
      child: (f) => make({ ...base, ...(typeof f === 'function' ? f() : f) }),
    };
  };
  return { logger: make({}), lines };
}

/** A temp directory (short path: unix socket paths are limited to 107 bytes), removed by `cleanup`. */
export function tempTree(prefix = 'vspc-disc-'): { root: string; cleanup: () => void } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  return { root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** Real listening unix sockets, so that "is it a socket" is tested against the kernel's answer. */
export class Sockets {
  private readonly servers = new Map<string, Server>();

  async listen(path: string): Promise<void> {
    const server = createServer((s) => s.destroy());
    server.listen(path);
    await once(server, 'listening');
    this.servers.set(path, server);
  }

  /** Closes the server; Node (libuv) unlinks the socket file, as QEMU does when a VM stops. */
  async close(path: string): Promise<void> {
    const s = this.servers.get(path);
    if (!s) throw new Error(`no socket at ${path}`);
    this.servers.delete(path);
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.servers.keys()].map((p) => this.close(p)));
  }
}

/** `kind:key:label name spec` per console, sorted: one readable string to compare. */
export function summary(consoles: readonly DiscoveredConsole[]): string[] {
  return consoles
    .map((c) => {
      const spec = c.spec.type === 'device' ? `device:${c.spec.path}` : 'path' in c.spec ? `${c.spec.type}:${c.spec.path}` : c.spec.type;
      return `${c.kind}:${c.key}:${c.label} ${c.name ?? '(null)'} ${spec}`;
    })
    .sort();
}
