import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/logging/logger.js';
import type { ConsoleClient, ConsoleSource } from '../../src/domain/seams.js';
import type { ConsoleHub } from '../../src/domain/console-hub.js';
import type { VmotionEndpoint } from '../../src/domain/vmotion.js';
import { withTimeout } from '../support/server.js';

/** A logger whose JSON lines are kept for assertions. */
export function memoryLogger(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: createLogger({ level: 'debug', stream }), lines };
}

export class FakeClient implements ConsoleClient {
  static next = 1;
  readonly id = FakeClient.next++;
  readonly peer = 'fake-client';
  received: Buffer[] = [];
  notices: string[] = [];
  paused = false;
  closedWith: string | null = null;
  private waiters = new Set<() => void>();
  deliver(data: Buffer): void {
    this.received.push(Buffer.from(data));
    for (const w of [...this.waiters]) w();
  }
  /** Resolves once everything delivered so far contains `text` (checked on every delivery; the timer only bounds the wait). */
  async waitForOutput(text: string | Buffer, timeoutMs = 10_000): Promise<void> {
    const want = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
    let check = (): void => undefined;
    const arrived = new Promise<void>((resolve) => {
      check = () => {
        if (this.output.includes(want)) resolve();
      };
    });
    this.waiters.add(check);
    check();
    try {
      await withTimeout(arrived, timeoutMs, `waiting for ${JSON.stringify(want.toString('latin1').slice(0, 80))}`);
    } catch (err) {
      throw new Error(`${(err as Error).message}; got ${JSON.stringify(this.output.toString('latin1').slice(-200))}`);
    } finally {
      this.waiters.delete(check);
    }
  }
  notice(text: string): void {
    this.notices.push(text);
  }
  pauseInput(): void {
    this.paused = true;
  }
  resumeInput(): void {
    this.paused = false;
  }
  close(reason: string): void {
    this.closedWith = reason;
  }
  get output(): Buffer {
    return Buffer.concat(this.received);
  }
}

export class FakeSource implements ConsoleSource {
  readonly kind = 'fake';
  readonly peer = 'fake-source';
  written: Buffer[] = [];
  full = false;
  drain: (() => void) | null = null;
  closedWith: string | null = null;
  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    return !this.full;
  }
  onDrain(listener: () => void): void {
    this.drain = listener;
  }
  close(reason: string): void {
    this.closedWith = reason;
  }
  get input(): Buffer {
    return Buffer.concat(this.written);
  }
}

let nextEndpoint = 1;

/** A VM connection as the vMotion coordinator sees it, recording what was sent. */
export class FakeEndpoint extends FakeSource implements VmotionEndpoint {
  readonly id = nextEndpoint++;
  readonly address = '192.0.2.1';
  readonly log: Logger;
  hub: ConsoleHub | null = null;
  sent: Array<{ kind: 'goahead' | 'notnow' | 'peer-ok'; seq: Buffer; secret?: Buffer }> = [];
  isPeer = false;
  retired = false;
  constructor(logger: Logger) {
    super();
    this.log = logger.child({ conn: this.id });
  }
  sendGoahead(seq: Buffer, secret: Buffer): void {
    this.sent.push({ kind: 'goahead', seq: Buffer.from(seq), secret: Buffer.from(secret) });
  }
  sendNotNow(seq: Buffer): void {
    this.sent.push({ kind: 'notnow', seq: Buffer.from(seq) });
  }
  sendPeerOk(seq: Buffer): void {
    this.sent.push({ kind: 'peer-ok', seq: Buffer.from(seq) });
  }
  markVmotionPeer(): void {
    this.isPeer = true;
  }
  adoptHub(hub: ConsoleHub): ConsoleSource | null {
    this.hub = hub;
    return hub.attachSource(this);
  }
  retireFromHub(): void {
    this.retired = true;
    this.hub = null;
  }
  /** Attach as the hub's current source (a normal identified connection). */
  attach(hub: ConsoleHub): this {
    this.hub = hub;
    hub.attachSource(this);
    return this;
  }
}
