/**
 * RFC 2217 on a console's telnet port: vspc is the access server, the telnet client
 * (pyserial's `rfc2217://`, ser2net-style tools) the client. A client that sends
 * WILL COM-PORT-OPTION gets DO; its commands go through the ComPortServer
 * (src/protocol/rfc2217/server.ts: what is answered, and with what) to this
 * backend, which reaches the console through its hub:
 *
 * - SET-BAUDRATE/DATASIZE/PARITY/STOPSIZE and SET-CONTROL flow control →
 *   `hub.setLineSettings(client, change)`: applied when the client's lock lets it
 *   write and the source can act on it (a device), answered with the settings in
 *   effect; otherwise answered with the current, unchanged settings (0 when unknown);
 * - SET-CONTROL BREAK-ON → `hub.sendBreak()` (one BREAK of the source's length: a
 *   device holds the line ~250 ms; BREAK-OFF ends nothing more), as IAC BRK does;
 *   refused for a read-only client or a source that cannot send one (answered OFF);
 * - FLOWCONTROL-SUSPEND/RESUME → the client's output is held (bounded like a slow
 *   client's queue) and released;
 * - PURGE-DATA → acknowledged: vspc keeps no buffer of its own to clear (output is
 *   written to the client's socket at once; input goes to the source at once).
 */
import type { ConsoleHub } from '../../domain/console-hub.js';
import type { Logger } from '../../domain/logger.js';
import type { ConsoleClient } from '../../domain/seams.js';
import type { SerialLineSettings } from '../../domain/serial-line.js';
import { errorFields } from '../../errors.js';
import { ComPortServer, type ComPortLine } from '../../protocol/rfc2217/index.js';
import { VERSION } from '../../version.js';

export interface ComPortHooks {
  /** A COM-PORT payload for the client (the caller frames it: IAC SB 44 ... IAC SE). */
  send(payload: Buffer): void;
  /** A notice for this client only. */
  notice(text: string): void;
  /** FLOWCONTROL-SUSPEND (true) / RESUME (false). */
  suspend(suspended: boolean): void;
  /** Whether the client's lock lets it write (BREAK). */
  canWrite(): boolean;
}

function asLine(s: SerialLineSettings | null): ComPortLine {
  return s ? { ...s } : {};
}

const FLOW_FROM_STATE: Record<string, ComPortLine['flow']> = { none: 'none', 'xon-xoff': 'xonxoff', hardware: 'rtscts' };

/** What the console's line is now: its settings, and for a source that reports flow control separately (ESXi), that. */
function currentLine(hub: ConsoleHub): ComPortLine {
  const line = asLine(hub.lineSettings);
  const reported = hub.lineState?.flowControl;
  if (line.flow === undefined && reported !== undefined) {
    const flow = FLOW_FROM_STATE[reported];
    if (flow) line.flow = flow;
  }
  return line;
}

/** The COM-PORT access server of one telnet client. */
export function createComPortServer(hub: ConsoleHub, client: ConsoleClient, log: Logger, hooks: ComPortHooks): ComPortServer {
  let toldReadOnly = false;
  const readOnlyNotice = (what: string): void => {
    if (toldReadOnly) return;
    toldReadOnly = true;
    hooks.notice(`read-only: ${what}`);
  };
  return new ComPortServer(
    {
      send: (payload) => hooks.send(payload),
      current: () => currentLine(hub),
      apply: async (change) => {
        const r = await hub.setLineSettings(client, change);
        if (r.applied) {
          log.info('serial line changed by client (RFC 2217)', { change, now: r.settings });
        } else {
          log.info('serial line not changed (RFC 2217)', { change, reason: r.refused });
          if (r.refused === 'read-only') readOnlyNotice('line settings not changed');
        }
        return r.applied ? asLine(r.settings) : currentLine(hub);
      },
      setBreak: (on) => {
        if (!on) return false;
        if (!hooks.canWrite()) {
          readOnlyNotice('break not sent');
          return false;
        }
        if (!hub.source?.sendBreak) {
          log.debug('BREAK (RFC 2217) not sent: the source cannot send one', { source: hub.source?.kind ?? null });
          return false;
        }
        log.info('BREAK from client (RFC 2217)');
        hub.sendBreak();
        return true;
      },
      purge: (which) => log.debug('PURGE-DATA (RFC 2217): nothing buffered to purge', { which }),
      suspend: (suspended) => {
        log.debug(suspended ? 'output suspended by client (RFC 2217)' : 'output resumed by client (RFC 2217)');
        hooks.suspend(suspended);
      },
      signature: (text) => log.info('client signature (RFC 2217)', { signature: text }),
      ignored: (reason, error) => log.debug('COM-PORT command ignored', { reason, ...(error ? errorFields(error) : {}) }),
    },
    { signature: `vspc ${VERSION} ${hub.displayName}` },
  );
}
