/** The end of a log file, for `vspc-admin log --tail N`, without reading the whole file. */
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { LogFileError, sysCodeOf } from './errors.js';

/** Read backwards in blocks of this many bytes. */
const BLOCK = 64 * 1024;
/** Longest read backwards by default (lines without newlines do not make it read a whole file). */
export const TAIL_MAX_BYTES = 1024 * 1024;

/**
 * The last `lines` lines of a file, like `tail -n`, reading backwards in 64 KiB blocks
 * and at most `maxBytes` (so a huge file, or one without newlines, is never read
 * whole; then fewer lines come back, the first one cut). Lines end at `\n` (a `\r`
 * before it stays in the text); a final newline does not count as an empty last line.
 * Bytes are decoded as UTF-8.
 *
 * @returns '' when the file does not exist or `lines` is not positive.
 * @throws LogFileError `VSPC_LOG_READ_FAILED` (with `sysCode`) when the file cannot be read.
 */
export async function readLastLines(path: string, lines: number, maxBytes = TAIL_MAX_BYTES): Promise<string> {
  return (await readLastLinesBytes(path, lines, maxBytes)).toString('utf8');
}

/** `readLastLines` as the file's bytes (console output is not always UTF-8). */
export async function readLastLinesBytes(path: string, lines: number, maxBytes = TAIL_MAX_BYTES): Promise<Buffer> {
  if (!(lines > 0)) return Buffer.alloc(0);
  let h: FileHandle;
  try {
    h = await fsp.open(path, 'r');
  } catch (err) {
    if (sysCodeOf(err) === 'ENOENT') return Buffer.alloc(0);
    throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot read ${path}`, path, err);
  }
  try {
    const data = await readEnd(h, lines, maxBytes);
    // `data` ends at the end of the file; its final newline ends the last line.
    const end = data.length > 0 && data[data.length - 1] === 0x0a ? data.length - 1 : data.length;
    let start = 0;
    let seen = 0;
    for (let i = end - 1; i >= 0; i--) {
      if (data[i] === 0x0a && ++seen === lines) {
        start = i + 1;
        break;
      }
    }
    return data.subarray(start);
  } catch (err) {
    throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot read ${path}`, path, err);
  } finally {
    await h.close().catch(() => undefined);
  }
}

/** The end of the file: enough blocks for `lines` lines, `maxBytes` at most. */
async function readEnd(h: FileHandle, lines: number, maxBytes: number): Promise<Buffer> {
  const size = (await h.stat()).size;
  const blocks: Buffer[] = [];
  let pos = size;
  let read = 0;
  let newlines = 0;
  let last = true;
  while (pos > 0 && read < maxBytes) {
    const len = Math.min(BLOCK, pos, maxBytes - read);
    pos -= len;
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await h.read(buf, got, len - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    blocks.unshift(buf.subarray(0, got));
    read += len;
    for (let i = 0; i < got; i++) if (buf[i] === 0x0a) newlines++;
    if (last && got > 0 && buf[got - 1] === 0x0a) newlines--; // the file's final newline ends the last line
    last = false;
    if (newlines >= lines) break;
  }
  return Buffer.concat(blocks);
}

/**
 * Bytes `start` to `end` (exclusive) of a file, fewer when it is shorter; empty when
 * it does not exist.
 *
 * @throws LogFileError `VSPC_LOG_READ_FAILED` when the file cannot be read.
 */
export async function readRange(path: string, start: number, end: number): Promise<Buffer> {
  let h: FileHandle;
  try {
    h = await fsp.open(path, 'r');
  } catch (err) {
    if (sysCodeOf(err) === 'ENOENT') return Buffer.alloc(0);
    throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot read ${path}`, path, err);
  }
  try {
    const len = Math.max(0, end - start);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await h.read(buf, got, len - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } catch (err) {
    throw new LogFileError('VSPC_LOG_READ_FAILED', `cannot read ${path}`, path, err);
  } finally {
    await h.close().catch(() => undefined);
  }
}
