/**
 * `device:PATH?baud=&data=&parity=&stop=&flow=`: a host tty, a USB serial adapter,
 * `/dev/nmdm*B`, a pty slave, opened through `serialport` (docs/decisions/0008) and run
 * by the shared EndpointRunner: a device that vanishes (unplugged, the pty's other
 * side closed) ends the link; the runner waits with backoff and reopens once the path
 * is back.
 *
 *   const registry = registerQemuSources(new ConnectorRegistry());
 *   registerDeviceSource(registry);
 *   createEndpointWith(registry, parseSourceSpec('device:/dev/ttyUSB0?baud=9600'), hub, { logger });
 *
 * Line settings changed through the link (RFC 2217 from a telnet client) are kept for
 * the endpoint's later links: a device unplugged and plugged back comes back with the
 * settings it had, not the spec's, until the endpoint is recreated (reload, restart).
 */
import type { SourceSpec, DeviceLine } from '../../domain/source-spec.js';
import type { ConnectorContext, ConnectorFactory, ConnectorRegistry, DialConnector, Link } from '../common/link.js';
import { DeviceLink } from './device-link.js';
import { openDevice, openSerialPort, type OpenPort } from './port.js';

export type DeviceSpec = Extract<SourceSpec, { type: 'device' }>;

export interface DeviceSourceOptions {
  /** How ports are opened (default: serialport's binding; tests pass a double). */
  openPort?: OpenPort;
  /** BREAK length in ms (default 250, Linux tcsendbreak(fd, 0)). */
  breakMs?: number;
  /** Queued input bytes past which the link applies backpressure (default 16 KiB). */
  highWaterMark?: number;
  /** How long a BREAK or line change waits for a write the device holds back (default 2 s). */
  writeStallMs?: number;
}

export const DEFAULT_BREAK_MS = 250;
export const DEFAULT_DEVICE_HIGH_WATER_MARK = 16 * 1024;
export const DEFAULT_WRITE_STALL_MS = 2000;

/** The connector factory for `device:` specs. */
export function deviceConnectorWith(options: DeviceSourceOptions = {}): ConnectorFactory<DeviceSpec> {
  const openPort = options.openPort ?? openSerialPort;
  return (spec: DeviceSpec, ctx: ConnectorContext): DialConnector => {
    let line: DeviceLine = { ...spec.line };
    return {
      mode: 'dial',
      dial(signal: AbortSignal): Promise<Link> {
        return new Promise<Link>((resolve, reject) => {
          if (signal.aborted) {
            reject(signal.reason);
            return;
          }
          const onAbort = (): void => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
          // An open that completes after the abort closes its port (openDevice checks the signal).
          openDevice(spec.path, line, openPort, signal).then(
            ({ port, isPty, baudRate }) => {
              signal.removeEventListener('abort', onAbort);
              if (signal.aborted) {
                void port.close().catch(() => {});
                return;
              }
              resolve(
                new DeviceLink(port, {
                  path: spec.path,
                  line,
                  isPty,
                  baudRate,
                  openPort,
                  closeGraceMs: ctx.options.closeGraceMs,
                  breakMs: options.breakMs ?? DEFAULT_BREAK_MS,
                  highWaterMark: options.highWaterMark ?? DEFAULT_DEVICE_HIGH_WATER_MARK,
                  writeStallMs: options.writeStallMs ?? DEFAULT_WRITE_STALL_MS,
                  log: ctx.logger,
                  lineChanged: (l) => {
                    line = { ...l };
                  },
                }),
              );
            },
            (err: unknown) => {
              signal.removeEventListener('abort', onAbort);
              reject(err);
            },
          );
        });
      },
    };
  };
}

/** The connector for `device:` with the defaults (serialport). */
export const deviceConnector = deviceConnectorWith();

/** Registers `device` in a ConnectorRegistry (next to the QEMU socket types). */
export function registerDeviceSource(registry: ConnectorRegistry, options: DeviceSourceOptions = {}): ConnectorRegistry {
  return registry.register('device', Object.keys(options).length > 0 ? deviceConnectorWith(options) : deviceConnector);
}

export { DeviceLink } from './device-link.js';
export type { DevicePort, DeviceOpenOptions, OpenPort } from './port.js';
