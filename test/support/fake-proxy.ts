import net from 'node:net';
import { VspcServerProtocol, type VspcServerProtocolHandlers } from '../../src/protocol/vmware/server-protocol.js';
import type { ProxyRequest } from '../../src/protocol/vmware/identity.js';

/** One accepted connection of the fake proxy: raw chunks and decoded events. */
export interface FakeConn {
  socket: net.Socket;
  protocol: VspcServerProtocol;
  /** Every chunk as read from the socket, in order. */
  chunks: Buffer[];
  events: Array<{ type: string; value?: unknown }>;
  data: Buffer[];
  /** Bytes this side wrote before it read anything (proxy-first tests). */
  closed: boolean;
}

export interface FakeProxyOptions {
  /** Start our negotiation when the connection opens (default true). */
  start?: boolean;
  /** Overrides of the protocol handlers (e.g. vmotion answers), given the connection. */
  handlers?: (conn: FakeConn) => Partial<VspcServerProtocolHandlers>;
  comPort?: boolean;
}

/**
 * A minimal concentrator built from our own sans-I/O VspcServerProtocol, to exercise
 * the simulator without the real server (and to script vMotion answers).
 */
export class FakeProxy {
  readonly conns: FakeConn[] = [];
  private waiters = new Set<() => void>();
  private constructor(private readonly server: net.Server) {}

  static async start(o: FakeProxyOptions = {}): Promise<FakeProxy> {
    const server = net.createServer();
    const fp = new FakeProxy(server);
    server.on('connection', (socket) => fp.accept(socket, o));
    await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    return fp;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  private accept(socket: net.Socket, o: FakeProxyOptions): void {
    socket.setNoDelay(true);
    const conn = { socket, chunks: [], events: [], data: [], closed: false } as unknown as FakeConn;
    const ev = (type: string, value?: unknown) => {
      conn.events.push({ type, value });
      this.notify();
    };
    const base: VspcServerProtocolHandlers = {
      write: (b) => (socket.destroyed ? false : socket.write(b)),
      data: (d) => {
        conn.data.push(Buffer.from(d));
        ev('data', Buffer.from(d));
      },
      error: (err) => ev('error', err.code),
      extensionEnabled: () => ev('extensionEnabled'),
      extensionRefused: () => ev('extensionRefused'),
      proxy: (req: ProxyRequest, accepted) => ev('proxy', { ...req, accepted }),
      uuid: (u) => ev('uuid', u),
      name: (n) => ev('name', n),
      knownSuboptions: (codes) => ev('knownSuboptions', codes),
      comPort: (s) => ev('comPort', s),
      vmotionBegin: (seq) => ev('vmotionBegin', Buffer.from(seq)),
      vmotionPeer: (ss) => ev('vmotionPeer', Buffer.from(ss)),
      vmotionComplete: (seq) => ev('vmotionComplete', Buffer.from(seq)),
      vmotionAbort: () => ev('vmotionAbort'),
      unknownSuboption: (code) => ev('unknownSuboption', code),
    };
    const overrides = o.handlers?.(conn) ?? {};
    const handlers: VspcServerProtocolHandlers = { ...base };
    for (const [k, fn] of Object.entries(overrides)) {
      const key = k as keyof VspcServerProtocolHandlers;
      const orig = base[key] as ((...a: unknown[]) => unknown) | undefined;
      (handlers as unknown as Record<string, unknown>)[key] = (...args: unknown[]) => {
        orig?.(...args);
        return (fn as (...a: unknown[]) => unknown)(...args);
      };
    }
    conn.protocol = new VspcServerProtocol({ serviceName: 'vSPC.py', comPort: o.comPort ?? true, maxSubnegotiation: 65536 }, handlers);
    socket.on('data', (chunk: Buffer) => {
      conn.chunks.push(Buffer.from(chunk));
      conn.protocol.receive(chunk);
      this.notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      conn.closed = true;
      this.notify();
    });
    this.conns.push(conn);
    if (o.start ?? true) conn.protocol.start();
    this.notify();
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Waits until `cond` holds, re-checked on every event. */
  waitFor(cond: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = () => {
        if (cond()) {
          clearTimeout(timer);
          this.waiters.delete(w);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(new Error(`fake proxy: timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(w);
    });
  }

  event(conn: FakeConn, type: string): { type: string; value?: unknown } | undefined {
    return conn.events.find((e) => e.type === type);
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
