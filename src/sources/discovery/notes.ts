/**
 * Log lines about single files, written once per distinct content: a file that stays
 * broken is reported when it breaks (or changes), not on every 30 s rescan.
 */
import type { Dirent } from 'node:fs';
import { readdir } from 'node:fs/promises';
import type { Logger } from '../../domain/logger.js';
import { errorText, isNotFound, type FileNote } from './files.js';

export class NoteLog {
  private readonly last = new Map<string, string>();

  constructor(private readonly logger: Logger) {}

  /** Logs `notes` about `path` unless exactly these were logged for it last time. */
  report(path: string, notes: readonly FileNote[]): void {
    const key = notes.map((n) => `${n.level}\u0000${n.message}\u0000${JSON.stringify(n.fields ?? {})}`).join('\u0001');
    if (this.last.get(path) === key) return;
    if (key === '') this.last.delete(path);
    else this.last.set(path, key);
    for (const n of notes) this.logger[n.level](n.message, { file: path, ...n.fields });
  }

  /** Forgets files no longer present (so a file that comes back broken is reported again). */
  retain(paths: ReadonlySet<string>): void {
    for (const p of this.last.keys()) if (!paths.has(p)) this.last.delete(p);
  }
}

/** Logs a provider-wide state (root missing, unreadable) only when it changes. */
export class StateLog {
  private last: string | null = null;

  constructor(private readonly logger: Logger) {}

  set(state: string | null, note?: FileNote): void {
    if (state === this.last) return;
    this.last = state;
    if (note) this.logger[note.level](note.message, note.fields);
  }
}

/**
 * Reads a provider's root directory (Proxmox's socket directory, libvirt's runtime
 * directory), saying once through `state` when it is missing (null: no consoles, not
 * an error), unreadable (the error is thrown, the scan fails) or read again.
 * `what` names it in those lines ("Proxmox socket directory").
 */
export async function readRootDir(dir: string, state: StateLog, what: string, none: string): Promise<Dirent[] | null> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    state.set('ok', { level: 'debug', message: `reading ${what}`, fields: { dir } });
    return entries;
  } catch (err) {
    if (isNotFound(err)) {
      state.set('missing', { level: 'info', message: `${what} not present; ${none}`, fields: { dir } });
      return null;
    }
    state.set(`error:${errorText(err)}`, { level: 'warn', message: `cannot read the ${what}`, fields: { dir, error: errorText(err) } });
    throw err;
  }
}
