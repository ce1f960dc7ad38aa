/**
 * Helpers for the tunnel tests through a running vspc (test/e2e/tunnel*.test.ts).
 *
 * Without QEMU: `SerialRelay` stands in for a VM's serial chardev (`-serial
 * unix:PATH,server=on`): a unix socket server that vspc's console connects to, joined
 * to a pty whose slave the guest agent opens (socat makes the pty; harness.ts). Like
 * QEMU it serves one client at a time and drops what the guest writes while nobody is
 * connected; it can inject faults both ways.
 */
import net from 'node:net';
import { rmSync } from 'node:fs';
import { Faults, PtyLine, bounded, type FaultRates } from '../agent/harness.js';

export class SerialRelay {
  private conn: net.Socket | null = null;
  readonly conns = new Set<net.Socket>();
  accepted = 0;
  h2g: Faults | undefined;
  g2h: Faults | undefined;
  /** Extra bytes the "guest" writes onto the line (junk), besides the agent's. */
  private constructor(
    readonly server: net.Server,
    readonly path: string,
    readonly line: PtyLine,
  ) {}

  /** A relay at `path` (unix socket) ↔ a new pty linked at `ttyPath`. */
  static async start(path: string, ttyPath: string, faults?: { h2g?: FaultRates; g2h?: FaultRates; seed?: number }): Promise<SerialRelay> {
    const line = await PtyLine.start(ttyPath);
    rmSync(path, { force: true });
    const server = net.createServer();
    const relay = new SerialRelay(server, path, line);
    if (faults?.h2g) relay.h2g = new Faults(faults.h2g, (faults.seed ?? 1) * 2 + 1);
    if (faults?.g2h) relay.g2h = new Faults(faults.g2h, (faults.seed ?? 1) * 2 + 2);
    line.setHandlers(
      (b) => {
        const c = relay.conn;
        if (!c) return; // nobody attached: QEMU drops the guest's output too
        const x = relay.g2h ? relay.g2h.apply(b) : b;
        if (!c.write(x)) line.child.stdout!.pause();
      },
      () => relay.conn?.resume(),
    );
    server.on('connection', (s) => relay.onConnection(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return relay;
  }

  private onConnection(s: net.Socket): void {
    this.accepted++;
    this.conns.add(s);
    s.on('error', () => {});
    s.on('close', () => {
      this.conns.delete(s);
      if (this.conn === s) {
        this.conn = null;
        this.line.child.stdout!.resume();
      }
    });
    if (this.conn) return; // a second client waits unserved, as with QEMU
    this.conn = s;
    s.on('data', (b: Buffer) => {
      const x = this.h2g ? this.h2g.apply(b) : b;
      if (!this.line.write(x)) s.pause();
    });
    s.on('drain', () => this.line.child.stdout!.resume());
  }

  /** Bytes straight onto the line towards vspc, as a getty or the kernel would write them. */
  junkFromGuest(b: Uint8Array): void {
    this.conn?.write(b);
  }

  /** Cuts the current connection (vspc reconnects). */
  dropConnection(): void {
    this.conn?.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    await bounded(new Promise<void>((resolve) => this.server.close(() => resolve())), 5000, 'relay close');
    await this.line.stop();
    rmSync(this.path, { force: true });
  }
}

/**
 * A relay between vspc and a guest's serial socket (QEMU `-serial unix:...,server=on`):
 * vspc's console connects to `path`, the relay dials `target` and copies both ways,
 * damaging bytes at the current `rates` (drops, bit flips, duplicates per byte; each
 * direction its own seeded stream). Rates can change while it runs. One client at a
 * time; a new one replaces the old (as when vspc reconnects).
 */
export class FaultRelay {
  private pair: { a: net.Socket; b: net.Socket } | null = null;
  /** While set, the guest's bytes go here instead of to vspc, and vspc's bytes are dropped. */
  private tap: ((b: Buffer) => void) | null = null;
  h2g: Faults;
  g2h: Faults;
  private constructor(
    readonly server: net.Server,
    readonly path: string,
    readonly target: string,
    seed: number,
  ) {
    this.h2g = new Faults({}, seed * 2 + 1);
    this.g2h = new Faults({}, seed * 2 + 2);
  }

  static async start(path: string, target: string, seed = 1): Promise<FaultRelay> {
    rmSync(path, { force: true });
    const server = net.createServer();
    const relay = new FaultRelay(server, path, target, seed);
    server.on('connection', (a) => relay.onConnection(a));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return relay;
  }

  /** Faults from now on, both ways (the counters start again). */
  setRates(rates: FaultRates, seed = 7): void {
    this.h2g = new Faults(rates, seed * 2 + 1);
    this.g2h = new Faults(rates, seed * 2 + 2);
  }

  private onConnection(a: net.Socket): void {
    this.pair?.a.destroy();
    this.pair?.b.destroy();
    const b = net.connect(this.target);
    const pair = { a, b };
    this.pair = pair;
    const end = () => {
      a.destroy();
      b.destroy();
      if (this.pair === pair) this.pair = null;
    };
    for (const s of [a, b]) {
      s.on('error', end);
      s.on('close', end);
    }
    a.on('data', (d: Buffer) => {
      if (this.tap) return;
      if (!b.write(this.h2g.apply(d))) a.pause();
    });
    b.on('data', (d: Buffer) => {
      if (this.tap) return this.tap(d);
      if (!a.write(this.g2h.apply(d))) b.pause();
    });
    a.on('drain', () => b.resume());
    b.on('drain', () => a.resume());
  }

  /**
   * Takes the line from vspc for a while (to measure the raw line on the very port the
   * tunnel uses): the guest's bytes go to `tap`, `write` sends to the guest, vspc's
   * bytes are dropped. `divert(null)` gives it back.
   */
  divert(tap: ((b: Buffer) => void) | null): void {
    this.tap = tap;
  }

  /** Bytes to the guest while diverted. */
  write(b: Uint8Array): boolean {
    return this.pair?.b.write(b) ?? false;
  }

  async close(): Promise<void> {
    this.pair?.a.destroy();
    this.pair?.b.destroy();
    await bounded(new Promise<void>((resolve) => this.server.close(() => resolve())), 5000, 'fault relay close');
    rmSync(this.path, { force: true });
  }
}
