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
