import type { Registry } from '../domain/registry.js';
import type { ConsoleHub } from '../domain/console-hub.js';
import { formatUuid } from '../util/uuid.js';
import { displayKey } from '../domain/identity.js';
import type { SerialLineSettings, SerialLineState } from '../domain/serial-line.js';
import type { EndpointStatus } from '../domain/seams.js';
import type { TunnelLinkStatus } from '../domain/tunnel-status.js';

/** What `list --state` filters on: the STATE column (a maintained source's endpoint state while it is not connected). */
export const CONSOLE_STATES = ['connected', 'disconnected', 'migrating', 'connecting', 'listening', 'waiting', 'stopped', 'elsewhere'] as const;

/** Longest `kick` reason (it goes to the clients' screens and the audit log). */
export const MAX_KICK_REASON = 200;

/** One row of `vspc-admin list --json`: the admin API's stable shape. */
export interface PortView {
  name: string | null;
  /**
   * The shortest spelling that names this console alone in `vm=` and on the command
   * line (`web01`, `web01:`, `web01:com2`, a UUID, or the port); see resolve.ts.
   */
  address: string;
  /** Where the identity comes from: `esxi`, `config` (declared), `proxmox`, `libvirt`, ... */
  kind: string;
  /** The stable key within the kind, as people read it (a UUID in 8-4-4-4-12 form). */
  key: string;
  /** The VM's UUID (8-4-4-4-12) for ESXi consoles; null for other kinds. */
  uuid: string | null;
  label: string;
  port: number;
  tlsPort: number | null;
  connected: boolean;
  state: string;
  clients: number;
  /** The connected source's type (`esxi`, `unix`, `device`, ...); null when none is attached. */
  source: string | null;
  peer: string | null;
  /** For consoles whose source vspc maintains: the source spec (`unix:/run/...`); null for ESXi. */
  endpoint: string | null;
  connectedSince: string | null;
  lastSeen: string | null;
  listenError: string | null;
  /**
   * The vspc node that owns the console in a PostgreSQL cluster (`--node-id`); null on a
   * single node with SQLite, and for a cluster's console no node owns right now.
   */
  node: string | null;
}

export function portView(hub: ConsoleHub, registry: Registry, tlsPortOf: (h: ConsoleHub) => number | null, address?: string): PortView {
  const lastSeen = registry.lastSeen(hub);
  return {
    name: hub.identity.name,
    address: address ?? hub.displayName,
    kind: hub.identity.kind,
    key: displayKey(hub.identity),
    uuid: hub.identity.kind === 'esxi' ? formatUuid(hub.identity.key) : null,
    label: hub.identity.label,
    port: hub.identity.tcpPort,
    tlsPort: tlsPortOf(hub),
    connected: hub.source !== null,
    // A maintained source that is not connected says why: waiting (backoff), listening, stopped.
    state: hub.displayState,
    clients: hub.clients.size,
    source: hub.source?.kind ?? null,
    peer: hub.source?.peer ?? null,
    endpoint: hub.endpoint?.spec ?? null,
    connectedSince: hub.connectedSince ? new Date(hub.connectedSince).toISOString() : null,
    lastSeen: lastSeen ? new Date(lastSeen).toISOString() : null,
    // The other access methods' endpoints too (raw port, unix socket, pty): "raw: ...".
    listenError: [hub.listenError, hub.tlsListenError, ...[...hub.accessErrors].map(([m, e]) => `${m}: ${e}`)].filter(Boolean).join('; ') || null,
    node: registry.ownership?.nodeId ?? null,
  };
}

/** A cluster console this node holds no hub for: owned by another node (`elsewhere`), or by none (`disconnected`). */
export interface ClusterRecordView {
  id: number;
  kind: string;
  key: string;
  label: string;
  name: string | null;
  tcpPort: number;
  lastSeen: number;
  owner: string | null;
}

export function remotePortView(r: ClusterRecordView): PortView {
  const display = `${r.name ?? (r.kind === 'esxi' ? formatUuid(r.key) : r.key)}${r.label ? `:${r.label}` : ''}`;
  return {
    name: r.name,
    address: display,
    kind: r.kind,
    key: displayKey(r),
    uuid: r.kind === 'esxi' ? formatUuid(r.key) : null,
    label: r.label,
    port: r.tcpPort,
    tlsPort: null,
    // Owned means some node holds its source connection.
    connected: r.owner !== null,
    state: r.owner !== null ? 'elsewhere' : 'disconnected',
    clients: 0,
    source: null,
    peer: null,
    endpoint: null,
    connectedSince: null,
    lastSeen: new Date(r.lastSeen).toISOString(),
    listenError: null,
    node: r.owner,
  };
}

/** One console client (`vspc-admin who`, and the `clients` list of `show`). */
export interface ClientView {
  id: number;
  peer: string;
  /**
   * The user: the name a telnet client gave (VSPC-CONTROL, e.g. `vspc-admin connect
   * --user`), or the one an SSH key gives (authenticated); null for stock telnet.
   */
  user: string | null;
  /** Lock mode held (readwrite, readonly, ...). */
  mode: string;
  /** Connected over telnets. */
  tls: boolean;
  /** The access method: `telnet`, `telnets`, `raw`, `unix`, `pty` or `ssh`. */
  method: string;
  /** SSH: the fingerprint (`SHA256:...`) of the key the user logged in with; null otherwise. */
  keyFingerprint: string | null;
  connectedSince: string | null;
  /** The VM serial port it is attached to. */
  vm: string;
  uuid: string;
  label: string;
  port: number;
}

/** What the admin API can tell about a client beyond the ConsoleClient seam (TelnetClient has all of it). */
interface ClientFacts {
  mode?: string;
  connectedAt?: number;
  secure?: boolean;
  /** Set by access methods other than telnet (`raw`, `unix`, `pty`, `ssh`). */
  method?: string;
  /** SSH: the key the user logged in with. */
  keyFingerprint?: string;
}

export function clientViews(hub: ConsoleHub): ClientView[] {
  return [...hub.clients]
    .map((c) => {
      const f = c as unknown as ClientFacts;
      return {
        id: c.id,
        peer: c.peer,
        user: hub.userOf(c) ?? null,
        mode: f.mode ?? 'readwrite',
        tls: f.secure === true,
        method: f.method ?? (f.secure === true ? 'telnets' : 'telnet'),
        keyFingerprint: f.keyFingerprint ?? null,
        connectedSince: typeof f.connectedAt === 'number' ? new Date(f.connectedAt).toISOString() : null,
        vm: hub.displayName,
        uuid: formatUuid(hub.identity.key),
        label: hub.identity.label,
        port: hub.identity.tcpPort,
      };
    })
    .sort((a, b) => a.id - b.id);
}

/** Guest UART settings as ESXi reported them over COM-PORT (RFC 2217 values). */
export interface UartView {
  baudRate: number | null;
  dataSize: number | null;
  parity: string | null;
  stopBits: string | null;
  /** e.g. "9600 8N1". */
  summary: string;
}

export function uartView(u: SerialLineSettings | null): UartView | null {
  if (!u || typeof u !== 'object') return null;
  const parity = u.parity ?? null;
  const stopBits = u.stopBits ?? null;
  const summary = `${u.baudRate ?? '?'} ${u.dataSize ?? '?'}${parity ? parity[0].toUpperCase() : '?'}${stopBits ?? '?'}`;
  return { baudRate: u.baudRate ?? null, dataSize: u.dataSize ?? null, parity, stopBits, summary };
}

/** The rest of the serial line as ESXi reported it over COM-PORT (RFC 2217 SET-CONTROL, suspend/resume, SIGNATURE). */
export interface SerialLineView {
  /** true: the guest holds its line in BREAK. null: not reported. */
  break: boolean | null;
  /** Outbound flow control: none, xon-xoff, hardware, dcd, dsr; null: not reported. */
  flowControl: string | null;
  /** Inbound flow control: none, xon-xoff, hardware, dtr; null: not reported. */
  inboundFlowControl: string | null;
  dtr: boolean | null;
  rts: boolean | null;
  /** The host asked vspc to stop sending (FLOWCONTROL-SUSPEND): client input waits. */
  suspended: boolean;
  /** The host's SIGNATURE text, or null. */
  signature: string | null;
  /** e.g. "BREAK off, DTR on, RTS on, flow none, sending". */
  summary: string;
}

export function serialLineView(l: SerialLineState | null): SerialLineView | null {
  if (!l || typeof l !== 'object') return null;
  const onOff = (b: boolean | undefined) => (b === undefined ? '?' : b ? 'on' : 'off');
  const summary = [
    `BREAK ${onOff(l.break)}`,
    `DTR ${onOff(l.dtr)}`,
    `RTS ${onOff(l.rts)}`,
    `flow ${l.flowControl ?? '?'}`,
    l.suspended ? 'input suspended by the VM' : 'sending',
  ].join(', ');
  return {
    break: l.break ?? null,
    flowControl: l.flowControl ?? null,
    inboundFlowControl: l.inboundFlowControl ?? null,
    dtr: l.dtr ?? null,
    rts: l.rts ?? null,
    suspended: l.suspended ?? false,
    signature: l.signature ?? null,
    summary,
  };
}

/** `vspc-admin show`: everything about one VM serial port. */
export interface VmDetailView extends PortView {
  /** Display name: NAME[:LABEL], or the UUID when the name is not known. */
  displayName: string;
  bytesFromVm: number;
  bytesToVm: number;
  scrollbackBytes: number;
  uart: UartView | null;
  serialLine: SerialLineView | null;
  clientList: ClientView[];
  vmotions: ReadonlyArray<{ startedAt: string; durationMs: number; outcome: string; heldBytes: number; discardedBytes: number }>;
  /** Settings from the config file (`vms:` entries that match, a declared console's own entry). */
  settings: { lockMode?: string; scrollbackBytes?: number; port?: number; log?: boolean };
  /** For a console whose source vspc maintains: where its endpoint stands. */
  endpointStatus: EndpointView | null;
  /** The serial tunnel this console carries (it has no console for people then); null: none. */
  tunnel?: TunnelView | null;
  /** How people reach it: each access method's endpoint, null where the method is off. */
  access: AccessView;
}

/** One TCP endpoint of a console (telnet, telnets, raw). */
export interface TcpEndpointView {
  host: string;
  port: number;
  listening: boolean;
  /** Why it does not listen (retried); null when it does. */
  error: string | null;
}

/** A console's unix socket. */
export interface UnixEndpointView {
  path: string;
  /** `raw` or `telnet`. */
  protocol: string;
  owner: string;
  group: string | null;
  /** Octal, e.g. "0600". */
  mode: string;
  listening: boolean;
  error: string | null;
}

/** A console's pty. */
export interface PtyEndpointView {
  /** The stable path programs open. */
  link: string;
  /** The pty it points at (`/dev/pts/N`); null while none could be made. */
  device: string | null;
  mode: string;
  group: string | null;
  /** A program has the pty open now. */
  readerAttached: boolean;
  error: string | null;
}

/** `show`'s `access`: a console's endpoints by method; null where the method is off for it. */
export interface AccessView {
  telnet: TcpEndpointView | null;
  telnets: TcpEndpointView | null;
  raw: TcpEndpointView | null;
  unix: UnixEndpointView | null;
  pty: PtyEndpointView | null;
}

/**
 * One serial tunnel (`vspc-admin list`'s tunnel table, `show`, `GET /api/v1/tunnels`):
 * its console, the link to the guest agent, its forwards. The server fills it from
 * src/access/tunnel/ (TunnelStatus has this shape).
 */
export interface TunnelView {
  name: string;
  /** How the config names its console: `console: web01:tunnel` or `source: unix:/run/...`. */
  carrier: string;
  /** The console it is attached to, and that console's telnet port; null while none. */
  console: string | null;
  consolePort: number | null;
  /** Why it has no console (none matches yet, ambiguous, taken); null when attached. */
  problem: string | null;
  /** The link to the guest agent (domain/tunnel-status.ts); null while the tunnel has no console. */
  link: TunnelLinkStatus | null;
  forwards: Array<{ listen: string; address: string | null; to: number; error: string | null; accepted: number; connections: number }>;
  connectionsTotal: number;
}

/** The endpoint of a declared or discovered console (`show`). Times are ISO 8601. */
export interface EndpointView {
  spec: string;
  state: string;
  lastError: string | null;
  reconnects: number;
  attempts: number;
  since: string;
  nextAttemptAt: string | null;
  peer: string | null;
  refusedPeers: number;
  note: string | null;
}

export function endpointView(e: EndpointStatus | null): EndpointView | null {
  if (!e) return null;
  const iso = (t: number) => new Date(t).toISOString();
  return {
    spec: e.spec,
    state: e.state,
    lastError: e.lastError,
    reconnects: e.reconnects,
    attempts: e.attempts,
    since: iso(e.since),
    nextAttemptAt: e.nextAttemptAt === null ? null : iso(e.nextAttemptAt),
    peer: e.peer,
    refusedPeers: e.refusedPeers,
    note: e.note,
  };
}

/** `GET /api/v1/status` (`vspc-admin status`), also the source of /metrics' gauges. */
export interface StatusView {
  version: string;
  uptimeSeconds: number;
  vmPorts: number;
  vmPortsConnected: number;
  clients: number;
  /** Open VM-side TCP connections, including ones not identified yet. */
  vmConnections: number;
  /** VM-side connections dropped at accept by the flood cap. */
  vmConnectionsRefused: number;
  vmotions: Record<string, number>;
  /** The SSH front door (--ssh-listen); null when off (absent from views built without it). */
  ssh?: SshStatusView | null;
  /** A cluster node (PostgreSQL): this node and the cluster's nodes; null on the embedded single-node store. */
  cluster?: ClusterStatusView | null;
}

/** `status` of a cluster node: who it is and the nodes the database knows. */
export interface ClusterStatusView {
  /** This node's `--node-id`. */
  node: string;
  /** Every live node and every node that advertised a link (ordered by id); null when the database cannot be asked now. */
  nodes: Array<{ node: string; live: boolean; link: string | null; startedAt: string | null; heartbeatAt: string | null }> | null;
  /** Why `nodes` is null. */
  error?: string;
}

/** `status`: where SSH listens, its host keys (compare with what `ssh` shows on first connect), its sessions. */
export interface SshStatusView {
  listen: string;
  hostKeys: Array<{ type: string; fingerprint: string }>;
  /** SSH connections authenticated now. */
  connections: number;
  /** Of their sessions, those attached to a console. */
  attached: number;
}
