/**
 * Reload (SIGHUP, `vspc-admin reload`): read the configuration again, apply what the
 * table (table.ts) marks reloadable through the running server's appliers, and report
 * the rest as needing a restart. A field is reported as applied only when the server
 * has an applier for it; ReloadAppliers demands one per reloadable field.
 */
import type { Command } from 'commander';
import type { VspcConfig } from './config.js';
import { loadConfiguration, type LoadedConfiguration } from './load.js';
import { keyName, RELOADABLE, type Field, type ReloadableField, type ReloadAppliers } from './table.js';

export type { ReloadAppliers, ReloadableField } from './table.js';

/** What SIGHUP / `vspc-admin reload` did. Keys are config file keys (`cert/key` for a pair). */
export interface ReloadReport {
  file: string | null;
  /** Changed and now in effect. */
  applied: string[];
  /** Changed in the file but in effect only after a restart. */
  restartNeeded: string[];
}

/** Fields whose values differ (Buffers by content; `vms` ignoring positions). */
export function changedKeys(a: VspcConfig, b: VspcConfig): Array<keyof VspcConfig> {
  const canon = (k: string, v: unknown) =>
    // Positions (`where`) of vms/consoles entries are not settings: moving an entry in the file changes nothing.
    JSON.stringify(k === 'vms' || k === 'consoles' ? (v as Array<{ where?: string }>).map(({ where: _w, ...rest }) => rest) : v, (_key, x: unknown) =>
      x && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' ? Buffer.from((x as { data: number[] }).data).toString('hex') : x,
    );
  const all = new Set([...Object.keys(a), ...Object.keys(b)]) as Set<keyof VspcConfig>;
  return [...all].filter((k) => canon(k, a[k]) !== canon(k, b[k]));
}

/** Reloadable fields (by the table) that `appliers` has no applier for: empty for a correct server. */
export function missingAppliers(appliers: Partial<Record<string, unknown>>): Field[] {
  return [...RELOADABLE].filter((f) => typeof appliers[f] !== 'function');
}

/**
 * Applies `next` to the running configuration `running` (changed in place): every
 * changed field that is reloadable and has an applier is stored, then each applier is
 * called with its new value; every other changed field is left as it is and reported
 * as needing a restart.
 */
export function applyReload(running: VspcConfig, next: VspcConfig, appliers: Partial<ReloadAppliers>): ReloadReport {
  const applied: ReloadableField[] = [];
  const restart: Field[] = [];
  for (const k of changedKeys(running, next)) {
    if (RELOADABLE.has(k) && typeof appliers[k as ReloadableField] === 'function') applied.push(k as ReloadableField);
    else restart.push(k);
  }
  for (const k of applied) (running as unknown as Record<string, unknown>)[k] = next[k];
  // After storing them all: an applier may read other new values (vms with scrollback).
  for (const k of applied) (appliers[k] as (value: unknown) => void)(running[k]);
  return { file: null, applied: applied.map(keyName), restartNeeded: restart.map(keyName) };
}

/** The server side of a reload (VspcServer). */
export interface ReloadTarget {
  applyConfig(next: VspcConfig): ReloadReport;
}

/** What the reloader logs through. */
export interface ReloadLogger {
  info(message: string, fields?: object): unknown;
  warn(message: string, fields?: object): unknown;
  error(message: string, fields?: object): unknown;
}

/**
 * The function behind SIGHUP and `vspc-admin reload`: reads the configuration again
 * (same flags, the file anew), applies it and logs what changed. On an invalid file it
 * logs and throws the ConfigError, changing nothing. Deprecation warnings already
 * logged (`initial.deprecations`, logged at start) are not repeated.
 */
export function createReloader(program: Command, server: ReloadTarget, logger: ReloadLogger, initial: LoadedConfiguration): () => ReloadReport {
  const deprecationsLogged = new Set(initial.deprecations);
  return () => {
    let next: LoadedConfiguration;
    try {
      next = loadConfiguration(program);
    } catch (err) {
      logger.error('configuration reload failed; the running configuration is unchanged', {
        errorCode: (err as { code?: string }).code ?? 'UNKNOWN',
        error: (err as Error).message,
      });
      throw err;
    }
    const report = server.applyConfig(next.config);
    report.file = next.file;
    for (const w of next.warnings) logger.warn(w);
    for (const d of next.deprecations) {
      if (deprecationsLogged.has(d)) continue;
      deprecationsLogged.add(d);
      logger.warn(d);
    }
    logger.info('configuration reloaded', { ...report });
    if (report.restartNeeded.length > 0) {
      logger.warn('some configuration changes take effect only after a restart', { keys: report.restartNeeded });
    }
    return report;
  };
}
