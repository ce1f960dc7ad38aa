/**
 * The benchmark's minimal option-232 concentrator: what serving ESXi VM serial ports
 * costs at the least, measured beside vspc in the same run (docs/performance.md). It
 * does only what the benchmark's workloads need, with no registry on disk, no
 * logging, no locks, scrollback, console logs or checks:
 *
 * - VM side (`--proxy-listen`): answers telnet negotiation (BINARY, SGA, ECHO, option
 *   232), DO-PROXY with WILL-PROXY, asks GET-VM-VC-UUID, and gives each UUID a client
 *   listener of its own (port 0: any free port; kept while the process runs);
 * - vMotion: BEGIN → GOAHEAD with an 8-byte secret (client input held from then on),
 *   PEER with the right sequence and secret → PEER-OK, COMPLETE → the peer becomes the
 *   VM's connection, held input goes to it, the old connection is closed; ABORT
 *   releases the held input to the source;
 * - client side: offers WILL ECHO/SGA/BINARY and DO BINARY/SGA, sends a one-line
 *   greeting, forwards typed bytes (IAC IAC unescaped) to the VM and VM output (IAC
 *   doubled) to every client;
 * - a two-route admin API (`--admin-listen`): `GET /api/v1/status` (vmPortsConnected,
 *   vmotions) and `GET /api/v1/ports` (key, uuid, port, connected), which is all the
 *   benchmark asks.
 *
 * It takes vspc's command line and ignores the options it has no use for, so the
 * benchmark starts it like a vspc (with the same preloaded child guard for memory,
 * event-loop and GC figures).
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { DO, DONT, IAC, Option, SB, SE, WILL, WONT } from '../src/protocol/telnet/constants.js';
import { Ext } from '../src/protocol/vmware/codes.js';

// The wire constants are vspc's own tables (RFC 854/855 and VMware's option 232): the
// stub shares no code with vspc on the data path, only these numbers.
const { BINARY, ECHO, SGA, VMWARE_EXT: EXT } = Option;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function hostPort(text: string | undefined, fallback: string): { host: string; port: number } {
  const t = text ?? fallback;
  const i = t.lastIndexOf(':');
  return { host: t.slice(0, i), port: Number(t.slice(i + 1)) };
}

/** IAC doubled (fast path: none). */
function escapeIac(data: Buffer): Buffer {
  let i = data.indexOf(IAC);
  if (i < 0) return data;
  const parts: Buffer[] = [];
  let from = 0;
  while (i >= 0) {
    parts.push(data.subarray(from, i + 1), Buffer.of(IAC));
    from = i + 1;
    i = data.indexOf(IAC, from);
  }
  parts.push(data.subarray(from));
  return Buffer.concat(parts);
}

function sb(code: number, payload?: Buffer): Buffer {
  return Buffer.concat([Buffer.of(IAC, SB, EXT, code), payload ? escapeIac(payload) : Buffer.alloc(0), Buffer.of(IAC, SE)]);
}

/**
 * A minimal telnet reader: data bytes to `data`, option requests answered from the
 * `us`/`him` sets (each acknowledged once: no negotiation loops), subnegotiations to `sub`.
 */
class Telnet {
  private state = 0; // 0 data, 1 IAC, 2 verb, 3 SB, 4 SB IAC
  private verb = 0;
  private sbBuf: number[] = [];
  private readonly usOn = new Set<number>();
  private readonly himOn = new Set<number>();
  constructor(
    private readonly socket: net.Socket,
    private readonly us: readonly number[],
    private readonly him: readonly number[],
    private readonly data: (d: Buffer) => void,
    private readonly sub: (payload: Buffer) => void,
  ) {}

  offer(verb: number, option: number): Buffer {
    (verb === WILL ? this.usOn : this.himOn).add(option);
    return Buffer.of(IAC, verb, option);
  }

  receive(chunk: Buffer): void {
    // Fast path: plain data in the data state.
    if (this.state === 0 && chunk.indexOf(IAC) < 0) {
      this.data(chunk);
      return;
    }
    let from = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      switch (this.state) {
        case 0:
          if (b === IAC) {
            if (i > from) this.data(chunk.subarray(from, i));
            this.state = 1;
          }
          break;
        case 1:
          if (b === IAC) {
            this.data(Buffer.of(IAC));
            this.state = 0;
            from = i + 1;
          } else if (b === SB) {
            this.sbBuf = [];
            this.state = 3;
          } else if (b >= WILL) {
            this.verb = b;
            this.state = 2;
          } else {
            this.state = 0;
            from = i + 1;
          }
          break;
        case 2:
          this.negotiate(this.verb, b);
          this.state = 0;
          from = i + 1;
          break;
        case 3:
          if (b === IAC) this.state = 4;
          else this.sbBuf.push(b);
          break;
        case 4:
          if (b === SE) {
            this.sub(Buffer.from(this.sbBuf));
            this.state = 0;
            from = i + 1;
          } else {
            this.sbBuf.push(b);
            this.state = 3;
          }
          break;
      }
    }
    if (this.state === 0 && from < chunk.length) this.data(chunk.subarray(from));
  }

  private negotiate(verb: number, option: number): void {
    const s = this.socket;
    if (verb === DO) {
      if (this.us.includes(option)) {
        if (!this.usOn.has(option)) {
          this.usOn.add(option);
          s.write(Buffer.of(IAC, WILL, option));
        }
      } else s.write(Buffer.of(IAC, WONT, option));
    } else if (verb === DONT) {
      if (this.usOn.delete(option)) s.write(Buffer.of(IAC, WONT, option));
    } else if (verb === WILL) {
      if (this.him.includes(option)) {
        if (!this.himOn.has(option)) {
          this.himOn.add(option);
          s.write(Buffer.of(IAC, DO, option));
        }
      } else s.write(Buffer.of(IAC, DONT, option));
    } else if (verb === WONT) {
      if (this.himOn.delete(option)) s.write(Buffer.of(IAC, DONT, option));
    }
  }
}

interface Vm {
  key: string;
  uuid: string;
  port: number;
  server: net.Server;
  source: VmConn | null;
  clients: Set<net.Socket>;
  /** Client input held from GOAHEAD to COMPLETE/ABORT; null when not migrating. */
  held: Buffer[] | null;
}

interface Migration {
  vm: Vm;
  seq: Buffer;
  source: VmConn;
}

const vms = new Map<string, Vm>();
const migrations = new Map<string, Migration>();
const counters = { begun: 0, completed: 0, aborted: 0, 'timed-out': 0, replaced: 0, refused: 0, 'bad-peer': 0 };
const clientHost = arg('--client-listen-host') ?? '127.0.0.1';
let connected = 0;

function formatUuid(text: string): string | null {
  const hex = text.replace(/[\s-]/g, '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) return null;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

class VmConn {
  vm: Vm | null = null;
  private readonly telnet: Telnet;
  constructor(readonly socket: net.Socket) {
    socket.setNoDelay(true);
    this.telnet = new Telnet(socket, [BINARY, SGA, ECHO], [BINARY, SGA, EXT], (d) => this.onData(d), (p) => this.onSub(p));
    socket.on('data', (c: Buffer) => {
      socket.cork();
      this.telnet.receive(c);
      socket.uncork();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.onClose());
  }

  private onData(d: Buffer): void {
    const vm = this.vm;
    if (!vm) return;
    const out = escapeIac(d);
    for (const c of vm.clients) c.write(out);
  }

  private onSub(p: Buffer): void {
    if (p.length < 2 || p[0] !== EXT) return;
    const code = p[1];
    const body = p.subarray(2);
    switch (code) {
      case Ext.DO_PROXY:
        this.socket.write(Buffer.concat([sb(Ext.WILL_PROXY), sb(Ext.GET_VM_VC_UUID)]));
        return;
      case Ext.VM_VC_UUID: {
        if (this.vm) return;
        const key = formatUuid(body.toString('latin1'));
        if (key) this.attach(key);
        return;
      }
      case Ext.VMOTION_BEGIN: {
        const vm = this.vm;
        if (!vm) return;
        const secret = randomBytes(8);
        migrations.set(Buffer.concat([body, secret]).toString('hex'), { vm, seq: Buffer.from(body), source: this });
        vm.held ??= [];
        counters.begun++;
        this.socket.write(sb(Ext.VMOTION_GOAHEAD, Buffer.concat([body, secret])));
        return;
      }
      case Ext.VMOTION_PEER: {
        const m = migrations.get(body.toString('hex'));
        if (!m) {
          counters['bad-peer']++;
          this.socket.destroy();
          return;
        }
        this.peerOf = m;
        this.socket.write(sb(Ext.VMOTION_PEER_OK, m.seq));
        return;
      }
      case Ext.VMOTION_COMPLETE: {
        const m = this.peerOf;
        if (!m || !m.seq.equals(body)) return;
        this.peerOf = null;
        for (const [k, v] of migrations) if (v === m) migrations.delete(k);
        const vm = m.vm;
        const old = vm.source;
        if (old) old.vm = null;
        vm.source = this;
        this.vm = vm;
        if (!old) connected++;
        const held = vm.held ?? [];
        vm.held = null;
        for (const h of held) this.socket.write(escapeIac(h));
        counters.completed++;
        old?.socket.end();
        return;
      }
      case Ext.VMOTION_ABORT: {
        const vm = this.vm;
        if (!vm) return;
        for (const [k, v] of migrations) if (v.source === this) migrations.delete(k);
        const held = vm.held ?? [];
        vm.held = null;
        for (const h of held) this.socket.write(escapeIac(h));
        counters.aborted++;
        return;
      }
      default:
        return;
    }
  }

  private peerOf: Migration | null = null;

  private attach(key: string): void {
    let vm = vms.get(key);
    if (!vm) {
      const server = net.createServer((c) => acceptClient(vm!, c));
      vm = { key, uuid: key, port: 0, server, source: null, clients: new Set(), held: null };
      vms.set(key, vm);
      const v = vm;
      server.listen({ host: clientHost, port: 0 }, () => {
        v.port = (server.address() as net.AddressInfo).port;
      });
    }
    if (vm.source) vm.source.vm = null;
    else connected++;
    vm.source = this;
    this.vm = vm;
  }

  /** Input typed by a client. */
  input(d: Buffer): void {
    this.socket.write(escapeIac(d));
  }

  private onClose(): void {
    const vm = this.vm;
    if (vm && vm.source === this) {
      vm.source = null;
      connected--;
    }
    this.vm = null;
  }
}

function acceptClient(vm: Vm, c: net.Socket): void {
  c.setNoDelay(true);
  const t = new Telnet(
    c,
    [ECHO, SGA, BINARY],
    [BINARY, SGA],
    (d) => {
      if (vm.held) vm.held.push(Buffer.from(d));
      else vm.source?.input(d);
    },
    () => undefined,
  );
  c.write(
    Buffer.concat([
      t.offer(WILL, ECHO),
      t.offer(WILL, SGA),
      t.offer(WILL, BINARY),
      t.offer(DO, BINARY),
      t.offer(DO, SGA),
      Buffer.from(`\r\n[stub: ${vm.key}]\r\n`, 'latin1'),
    ]),
  );
  vm.clients.add(c);
  c.on('data', (chunk: Buffer) => t.receive(chunk));
  c.on('error', () => undefined);
  c.on('close', () => vm.clients.delete(c));
}

function adminServer(): http.Server {
  return http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://stub');
    let body: unknown;
    if (url.pathname === '/api/v1/status') {
      body = { version: 'stub', uptimeSeconds: Math.round(process.uptime()), vmPorts: vms.size, vmPortsConnected: connected, clients: 0, vmConnections: 0, vmConnectionsRefused: 0, vmotions: { ...counters, pending: migrations.size } };
    } else if (url.pathname === '/api/v1/ports') {
      body = [...vms.values()].map((v) => ({ name: null, address: v.key, kind: 'esxi', key: v.key, uuid: v.uuid, label: '', port: v.port, tlsPort: null, connected: v.source !== null && v.port > 0, state: v.source ? 'connected' : 'disconnected', clients: v.clients.size, source: null, peer: null, endpoint: null, connectedSince: null, lastSeen: null, listenError: null }));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not found"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
}

const proxy = hostPort(arg('--proxy-listen'), '127.0.0.1:13370');
const admin = hostPort(arg('--admin-listen'), '127.0.0.1:13371');
const vmServer = net.createServer((s) => new VmConn(s));
vmServer.listen({ host: proxy.host, port: proxy.port, backlog: 4096 }, () => {
  adminServer().listen({ host: admin.host, port: admin.port });
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
