/**
 * Convenience links by name: `<dir>/by-name/<link>.log -> ../<file>`. The file is
 * authoritative; a link only follows it (docs/console-logs.md, "Files").
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ignoreEnoent } from './errors.js';

export const LINK_DIR = 'by-name';

let tmpCounter = 0;

/**
 * A fresh name for a link being made, in the link directory. Short whatever the
 * link's own name (which may use all of NAME_MAX), unique in this process (links of
 * several files are made concurrently) and across processes (the pid).
 */
export function tempLinkName(): string {
  tmpCounter = (tmpCounter + 1) % Number.MAX_SAFE_INTEGER;
  return `.${process.pid}-${tmpCounter}.tmp`;
}

/**
 * Moves the link of `file` (a name in `dir`) from `from` to `to` (link names without
 * `.log`; null: none). The old link is removed only if it still points at `file`
 * (another file may have taken the name since). The new one replaces whatever link
 * had that name, atomically: made aside and renamed over.
 *
 * @param dirMode mode of `dir` and `dir/by-name` when they have to be made.
 * @throws the file system's error (EACCES, ENOSPC, ...).
 */
export async function moveNameLink(dir: string, file: string, from: string | null, to: string | null, dirMode: number): Promise<void> {
  const linkDir = join(dir, LINK_DIR);
  const target = join('..', file);
  if (from !== null && from !== to) {
    const old = join(linkDir, `${from}.log`);
    if ((await fsp.readlink(old).catch(() => null)) === target) await fsp.unlink(old).catch(ignoreEnoent);
  }
  if (to === null) return;
  const linkPath = join(linkDir, `${to}.log`);
  if ((await fsp.readlink(linkPath).catch(() => null)) === target) return;
  await fsp.mkdir(linkDir, { recursive: true, mode: dirMode });
  const tmp = join(linkDir, tempLinkName());
  await fsp.unlink(tmp).catch(ignoreEnoent); // left by a crash of an earlier process with this pid
  await fsp.symlink(target, tmp);
  try {
    await fsp.rename(tmp, linkPath);
  } catch (err) {
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
}
