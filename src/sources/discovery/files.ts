/**
 * Reading untrusted host files cheaply and safely: a stat signature decides whether a
 * file must be read again, reads are bounded in size, and opening never blocks (a FIFO
 * named like a conf would otherwise hang a thread-pool thread) nor follows a symlink
 * into something that is not a regular file.
 */
import { constants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';

/** Default bound on a file discovery reads (confs and domain XML are a few KiB). */
export const DEFAULT_MAX_FILE_BYTES = 1024 * 1024;

/**
 * How long after its last modification a file's stat signature is not trusted (the
 * "racy clean" problem: Proxmox's /etc/pve is a FUSE filesystem with whole-second
 * times, so a rename within the same second as our read keeps mtime and perhaps size).
 * A file modified less than this before we read it is read again on the next scan.
 */
export const DEFAULT_MTIME_GRANULARITY_MS = 2000;

/** What identifies one version of a file without reading it. */
export function statSignature(st: Stats): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}

export type BoundedRead =
  | { ok: true; text: string; signature: string; mtimeMs: number }
  | { ok: false; reason: 'too-big' | 'not-a-file' | 'missing' | 'unreadable'; detail: string; signature: string | null };

/** `stat` that maps a vanished file to null and throws nothing else away. */
export async function statOrNull(path: string): Promise<Stats | null> {
  try {
    return await stat(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

export function isNotFound(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

export function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  return typeof e?.code === 'string' ? e.code : String(e?.message ?? err);
}

/** Reads a regular file of at most `maxBytes` bytes as UTF-8 (invalid bytes become U+FFFD, a BOM is dropped). */
export async function readBounded(path: string, maxBytes: number): Promise<BoundedRead> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (err) {
    if (isNotFound(err)) return { ok: false, reason: 'missing', detail: errorText(err), signature: null };
    return { ok: false, reason: 'unreadable', detail: errorText(err), signature: null };
  }
  try {
    const st = await handle.stat();
    const signature = statSignature(st);
    if (!st.isFile()) return { ok: false, reason: 'not-a-file', detail: 'not a regular file', signature };
    if (st.size > maxBytes) return { ok: false, reason: 'too-big', detail: `${st.size} bytes (limit ${maxBytes})`, signature };
    // One byte more than allowed, to notice a file that grew since the fstat.
    const buf = Buffer.allocUnsafe(Math.min(st.size, maxBytes) + 1);
    let length = 0;
    while (length < buf.length) {
      const { bytesRead } = await handle.read(buf, length, buf.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) return { ok: false, reason: 'too-big', detail: `more than ${maxBytes} bytes`, signature };
    let text = buf.toString('utf8', 0, length);
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    return { ok: true, text, signature, mtimeMs: st.mtimeMs };
  } catch (err) {
    return { ok: false, reason: 'unreadable', detail: errorText(err), signature: null };
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Per-file memo of a parse result keyed by stat signature. `get` returns the cached
 * value when the file is unchanged (and was not modified within the granularity window
 * before it was read); otherwise the caller reads and `set`s.
 */
export class FileMemo<T> {
  private readonly entries = new Map<string, { signature: string; trusted: boolean; value: T }>();

  constructor(private readonly granularityMs: number) {}

  get(path: string, st: Stats): T | undefined {
    const e = this.entries.get(path);
    if (!e || !e.trusted || e.signature !== statSignature(st)) return undefined;
    return e.value;
  }

  /** `readAt` is when the read began; `mtimeMs` the file's modification time as read. */
  set(path: string, signature: string | null, mtimeMs: number, readAt: number, value: T): void {
    if (signature === null) {
      this.entries.delete(path);
      return;
    }
    // A file modified within a granule before our read may change again without its
    // signature changing: such a read is not trusted, and the next scan reads again
    // (until a read happens a granule after the last modification).
    const trusted = readAt - mtimeMs >= this.granularityMs;
    this.entries.set(path, { signature, trusted, value });
  }

  /** Drops entries for files no longer present (keeps the memo as small as the host). */
  retain(paths: ReadonlySet<string>): void {
    for (const p of this.entries.keys()) if (!paths.has(p)) this.entries.delete(p);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** Maps `items` through `fn` with at most `limit` calls in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** A note about one file, logged once per version of the file. */
export interface FileNote {
  level: 'warn' | 'info' | 'debug';
  message: string;
  fields?: Record<string, unknown>;
}
