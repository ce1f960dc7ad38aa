import net from 'node:net';
import { rmSync } from 'node:fs';

/** A unix socket that accepts like QEMU's `-serial unix:PATH,server=on`, keeping what it reads. */
export class FakeSerial {
  readonly conns = new Set<net.Socket>();
  received = Buffer.alloc(0);
  private constructor(
    readonly server: net.Server,
    readonly path: string,
  ) {}

  static async start(path: string): Promise<FakeSerial> {
    rmSync(path, { force: true });
    const server = net.createServer();
    const f = new FakeSerial(server, path);
    server.on('connection', (s) => {
      f.conns.add(s);
      s.on('data', (b: Buffer) => (f.received = Buffer.concat([f.received, b])));
      s.on('error', () => {});
      s.on('close', () => f.conns.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return f;
  }

  async close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
