/**
 * Talking to a real guest through a ConsoleHub, the way a vspc client would: a hub
 * whose output can be awaited (what the hub itself received, with no client attached),
 * and a SerialConsole (test/support/qemu.ts: run(), waitForShell()) attached to the hub
 * as a console client, typing through hub.fromClient.
 */
import type net from 'node:net';
import { Duplex } from 'node:stream';
import { ConsoleHub, type ConsoleEvent } from '../../src/domain/console-hub.js';
import type { ConsoleClient } from '../../src/domain/seams.js';
import { SerialConsole } from '../support/qemu.js';

let nextId = 1;

/** A hub plus an awaitable record of everything it received from its source. */
export class WatchedHub {
  readonly hub: ConsoleHub;
  readonly events: ConsoleEvent[] = [];
  private text = '';
  private waiters: Array<{ pattern: string | RegExp; from: number; resolve: () => void }> = [];

  constructor(name: string) {
    const id = nextId++;
    this.hub = new ConsoleHub({ id, kind: 'qemu', key: `guest-${id}`, label: 'serial0', name, tcpPort: 11000 + id }, 1024 * 1024, 256 * 1024, {
      output: (_p, d) => this.onOutput(d),
      event: (_p, e) => this.events.push(e),
    });
  }

  /** Everything received so far (latin1). */
  get output(): string {
    return this.text;
  }

  private onOutput(d: Buffer): void {
    this.text += d.toString('latin1');
    this.waiters = this.waiters.filter((w) => (this.matches(w.pattern, w.from) ? (w.resolve(), false) : true));
  }

  private matches(pattern: string | RegExp, from: number): boolean {
    const hay = this.text.slice(from);
    return typeof pattern === 'string' ? hay.includes(pattern) : pattern.test(hay);
  }

  /** Resolves once the output from offset `from` (default: all of it) contains `pattern`. */
  waitFor(pattern: string | RegExp, timeoutMs: number, from = 0): Promise<void> {
    if (this.matches(pattern, from)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${String(pattern)} in the hub's output; last output: ${JSON.stringify(this.text.slice(-500))}`));
      }, timeoutMs);
      const waiter = { pattern, from, resolve: () => (clearTimeout(timer), resolve()) };
      this.waiters.push(waiter);
    });
  }
}

/** Attaches a console client to `hub` and wraps it as a SerialConsole. */
export function hubConsole(hub: ConsoleHub, description: string): SerialConsole {
  let client: ConsoleClient;
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      hub.fromClient(client, chunk);
      cb();
    },
    destroy(err, cb) {
      hub.removeClient(client, 'test console closed');
      cb(err);
    },
  });
  client = {
    id: 100_000 + nextId++,
    peer: description,
    deliver: (d: Buffer) => void stream.push(Buffer.from(d)),
    notice: () => {},
    pauseInput: () => {},
    resumeInput: () => {},
    close: () => void stream.destroy(),
  };
  hub.addClient(client, { replay: false });
  // SerialConsole reads 'data' and writes through write(): a Duplex is all it needs of a socket.
  return SerialConsole.fromSocket(stream as unknown as net.Socket, description);
}
