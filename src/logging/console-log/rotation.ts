/**
 * Size-based rotation with N files kept: `x.log` → `x.log.1` → … → `x.log.<keep>`,
 * `.1` the newest, the oldest replaced. Plain file operations on paths: what is in the
 * files, and who writes them, is not known here.
 */
import { promises as fsp } from 'node:fs';
import { ignoreEnoent } from './errors.js';

export interface RotationPolicy {
  /** Bytes: a file is rotated before a write would take it past this (`Infinity`: only on demand). */
  maxSize: number;
  /** Rotated files kept (`x.log.1` … `x.log.<keep>`); 0: rotating deletes the file. */
  keep: number;
}

/** The `n`th rotated file of `path` (`n` ≥ 1). */
export function rotatedPath(path: string, n: number): string {
  return `${path}.${n}`;
}

/**
 * Whether a file of `size` bytes, `body` of them beyond its header, must be rotated
 * before a write of `next` bytes. A file holding only its header is never rotated (a
 * fresh file takes what fits, however small the limit), so this cannot loop.
 */
export function mustRotate(policy: RotationPolicy, size: number, body: number, next: number): boolean {
  return body > 0 && size + next > policy.maxSize;
}

/**
 * Rotates `path` now: shifts `path.1` … `path.<keep-1>` up by one (the oldest is
 * replaced), then renames `path` to `path.1`; with `keep` 0, deletes `path`. A missing
 * or empty `path` is left alone (rotating twice does not shift an empty file in).
 * The caller must have closed its handle on `path`.
 *
 * @returns whether anything was rotated.
 * @throws the file system's error (EACCES, EISDIR, ...) when a rename or unlink fails;
 *   rotated files missing from the sequence are not an error.
 */
export async function rotateFiles(path: string, keep: number): Promise<boolean> {
  let size: number;
  try {
    size = (await fsp.stat(path)).size;
  } catch (err) {
    ignoreEnoent(err);
    return false;
  }
  if (size === 0) return false;
  if (keep <= 0) {
    await fsp.unlink(path).catch(ignoreEnoent);
    return true;
  }
  for (let i = keep - 1; i >= 1; i--) {
    await fsp.rename(rotatedPath(path, i), rotatedPath(path, i + 1)).catch(ignoreEnoent);
  }
  await fsp.rename(path, rotatedPath(path, 1));
  return true;
}
