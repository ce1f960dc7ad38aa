/**
 * Opening a tty for a `device:` console: a check with the operating system's own
 * error codes first (exists, may be opened, is a terminal, is it a pty), then the
 * `serialport` binding with the line settings (docs/decisions/0008).
 *
 * vspc uses serialport's binding layer only (open, then read/write/update/set/close on
 * the port it returns) and never lists ports: `list()` shells out to udevadm and
 * crashes the process where there is no udev.
 *
 * The check keeps its own descriptor open until the binding's port is open, and a
 * reopen (a format change) keeps one open across the swap: the old port's close is
 * then not the tty's last close, so HUPCL does not drop DTR (a modem hanging up, an
 * Arduino resetting) and the kernel keeps the line's state.
 */
import { constants as fsConstants } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { isatty } from 'node:tty';
import { SerialPort } from 'serialport';
import type { DeviceLine } from '../../domain/source-spec.js';
import { SourceError, sysCodeOf } from '../common/errors.js';

/** The part of a serialport binding port vspc uses (the real one, or a test double). */
export interface DevicePort {
  readonly isOpen: boolean;
  /** Resolves with at least one byte; rejects with `canceled: true` once the port is closed. */
  read(buffer: Buffer, offset: number, length: number): Promise<{ bytesRead: number }>;
  /** Resolves once the bytes are handed to the operating system. */
  write(buffer: Buffer): Promise<void>;
  /** Changes the baud rate on the open port (tcflush + tcsetattr). */
  update(options: { baudRate: number }): Promise<void>;
  /** TIOCSBRK/TIOCCBRK, then TIOCMSET with the modem lines given. */
  set(options: { brk: boolean; cts: boolean; dsr: boolean; dtr: boolean; rts: boolean; lowLatency: boolean }): Promise<void>;
  /** The rate the driver reports (Linux: termios2 c_ospeed, which also shows custom rates). */
  getBaudRate?(): Promise<{ baudRate: number }>;
  close(): Promise<void>;
}

/** The rate in effect as the driver reports it; null when it cannot say. */
export async function readBaudRate(port: DevicePort): Promise<number | null> {
  if (!port.getBaudRate) return null;
  try {
    const { baudRate } = await port.getBaudRate();
    return Number.isInteger(baudRate) && baudRate > 0 ? baudRate : null;
  } catch {
    return null;
  }
}

/** What the binding's open() takes (serialport's OpenOptions, the Linux subset vspc uses). */
export interface DeviceOpenOptions {
  path: string;
  baudRate: number;
  dataBits: 5 | 6 | 7 | 8;
  parity: 'none' | 'odd' | 'even';
  stopBits: 1 | 2;
  rtscts: boolean;
  xon: boolean;
  xoff: boolean;
  xany: boolean;
  /** Drop DTR on the last close (serialport's default). */
  hupcl: boolean;
  /** flock(LOCK_EX|LOCK_NB): a second vspc (or another serialport program) cannot share the line. */
  lock: boolean;
}

/** Opens a port (the binding's open(); tests pass a double). */
export type OpenPort = (options: DeviceOpenOptions) => Promise<DevicePort>;

/** serialport's binding for this platform. Never its list(). */
export const openSerialPort: OpenPort = async (options) => (await SerialPort.binding.open(options)) as unknown as DevicePort;

/** Unix98 pty slaves (/dev/pts/N) have majors 136-143; BSD-style pty slaves (/dev/ttyp0) major 3. */
function isPtyRdev(rdev: number): boolean {
  const major = Math.floor(rdev / 256) & 0xfff;
  return (major >= 136 && major <= 143) || major === 3;
}

/** The line settings serialport can apply on Linux, or why not. */
export function unsupportedLine(line: DeviceLine): string | null {
  if (line.parity === 'mark' || line.parity === 'space') return `parity ${line.parity} is not supported (serialport on this platform: none, odd or even)`;
  if (line.stopBits === '1.5') return '1.5 stop bits are not supported (serialport on this platform: 1 or 2)';
  if (!(line.dataSize >= 5 && line.dataSize <= 8)) return `${line.dataSize} data bits are not supported (5-8)`;
  if (!Number.isInteger(line.baudRate) || line.baudRate <= 0) return `baud rate ${line.baudRate} is not supported`;
  return null;
}

/** serialport open options for a line (call unsupportedLine first). */
export function openOptions(path: string, line: DeviceLine): DeviceOpenOptions {
  return {
    path,
    baudRate: line.baudRate,
    dataBits: line.dataSize as 5 | 6 | 7 | 8,
    parity: line.parity as 'none' | 'odd' | 'even',
    stopBits: line.stopBits === '2' ? 2 : 1,
    rtscts: line.flow === 'rtscts',
    xon: line.flow === 'xonxoff',
    xoff: line.flow === 'xonxoff',
    xany: false,
    hupcl: true,
    lock: true,
  };
}

/** A tty checked and held open by vspc itself (see the module comment). */
export interface TtyHold {
  readonly isPty: boolean;
  release(): Promise<void>;
}

/** What an open() of `path` failing with `err` means. */
async function openError(path: string, err: unknown): Promise<SourceError> {
  const sysCode = sysCodeOf(err);
  switch (sysCode) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new SourceError('VSPC_SOURCE_NOT_FOUND', `${sysCode}: ${path} does not exist (device unplugged, or the pty's other side gone?)`, { sysCode, path });
    case 'EACCES':
    case 'EPERM': {
      let detail = '';
      try {
        const st = await stat(path);
        detail = ` (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, uid ${st.uid}, gid ${st.gid}: run vspc as a member of that group, e.g. dialout)`;
      } catch {
        /* the message stays without the detail */
      }
      return new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `${sysCode}: no permission to open ${path}${detail}`, { sysCode, path });
    }
    case 'EISDIR':
      return new SourceError('VSPC_SOURCE_NOT_A_TTY', `${path} is a directory, not a terminal device`, { sysCode, path });
    case 'ENXIO': {
      // A unix socket, or a device node with no device behind it (a USB adapter unplugged).
      try {
        if ((await stat(path)).isSocket()) return new SourceError('VSPC_SOURCE_NOT_A_TTY', `${path} is a socket, not a terminal device (use unix:${path})`, { sysCode, path });
      } catch {
        /* fall through */
      }
      return new SourceError('VSPC_SOURCE_NOT_FOUND', `ENXIO: no device behind ${path} (unplugged?)`, { sysCode, path });
    }
    case 'EBUSY':
      return new SourceError('VSPC_SOURCE_BUSY', `EBUSY: ${path} is in exclusive use by another program`, { sysCode, path });
    default:
      return new SourceError('VSPC_SOURCE_CONNECT_FAILED', `${sysCode ?? 'error'}: cannot open ${path}: ${(err as Error)?.message ?? String(err)}`, { sysCode, path });
  }
}

/**
 * Opens `path` as vspc's own check: O_RDWR | O_NOCTTY | O_NONBLOCK (never blocks on
 * carrier detect, never becomes vspc's controlling terminal). Rejects with a
 * SourceError naming what is wrong; resolves with a hold to release once the real
 * port is open.
 */
export async function holdTty(path: string): Promise<TtyHold> {
  let fh: FileHandle;
  try {
    fh = await open(path, fsConstants.O_RDWR | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw await openError(path, err);
  }
  try {
    const st = await fh.stat();
    if (!isatty(fh.fd)) {
      const what = st.isFile() ? 'a regular file' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device that is not a terminal' : 'not a terminal';
      throw new SourceError('VSPC_SOURCE_NOT_A_TTY', `${path} is ${what}, not a terminal device`, { path });
    }
    const isPty = isPtyRdev(st.rdev);
    let released = false;
    return {
      isPty,
      release: async () => {
        if (released) return;
        released = true;
        await fh.close().catch(() => {});
      },
    };
  } catch (err) {
    await fh.close().catch(() => {});
    throw err;
  }
}

/** What serialport's open failing means (its errors carry strerror text, not a code). */
export function portOpenError(path: string, err: unknown): SourceError {
  const message = String((err as Error)?.message ?? err);
  const ctx = { path };
  if (/Cannot lock port|Resource temporarily unavailable/i.test(message)) {
    return new SourceError('VSPC_SOURCE_BUSY', `${path} is locked by another program (flock): ${message}`, ctx);
  }
  if (/Permission denied/i.test(message)) return new SourceError('VSPC_SOURCE_PERMISSION_DENIED', `no permission to open ${path}: ${message}`, ctx);
  if (/No such file or directory|No such device/i.test(message)) return new SourceError('VSPC_SOURCE_NOT_FOUND', `${path} went away while opening: ${message}`, ctx);
  if (/Inappropriate ioctl/i.test(message)) return new SourceError('VSPC_SOURCE_NOT_A_TTY', `${path} is not a terminal device: ${message}`, ctx);
  if (/baud rate|Invalid (?:parity|stop bits|data bits)/i.test(message)) return new SourceError('VSPC_SOURCE_LINE_UNSUPPORTED', `${path}: ${message}`, ctx);
  return new SourceError('VSPC_SOURCE_CONNECT_FAILED', `cannot open ${path}: ${message}`, ctx);
}

export interface OpenedDevice {
  port: DevicePort;
  isPty: boolean;
  /** The rate the driver reports, when it does. */
  baudRate: number | null;
}

/** Checks and opens `path` with `line` (a dial). Rejects with a SourceError, or with `signal.reason` when aborted. */
export async function openDevice(path: string, line: DeviceLine, openPort: OpenPort, signal?: AbortSignal): Promise<OpenedDevice> {
  const why = unsupportedLine(line);
  if (why) throw new SourceError('VSPC_SOURCE_LINE_UNSUPPORTED', `${path}: ${why}`, { path });
  const hold = await holdTty(path);
  try {
    if (signal?.aborted) throw signal.reason;
    let port: DevicePort;
    try {
      port = await openPort(openOptions(path, line));
    } catch (err) {
      throw portOpenError(path, err);
    }
    if (signal?.aborted) {
      await port.close().catch(() => {});
      throw signal.reason;
    }
    return { port, isPty: hold.isPty, baudRate: await readBaudRate(port) };
  } finally {
    await hold.release();
  }
}
