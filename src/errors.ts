/**
 * Error classes with stable `code`s (undici style). Callers branch on `code`, never on
 * message text; `context` carries the structured facts for the log line. Every code
 * vspc raises, logs as `errorCode` or answers over the admin API is in ERROR_CODES and
 * in docs/errors.md (test/architecture/errors.test.ts keeps the three in step).
 */

/** Every stable error code, with the class that carries it and what it means. */
export const ERROR_CODES = {
  // --- A peer broke the telnet protocol (ProtocolError; the connection is closed).
  TELNET_BAD_COMMAND: ['ProtocolError', 'IAC followed by a byte that is not a telnet command (RFC 854)'],
  TELNET_BAD_SB_ESCAPE: ['ProtocolError', 'inside a subnegotiation, IAC followed by neither IAC nor SE'],
  TELNET_SB_TOO_LONG: ['ProtocolError', 'a subnegotiation longer than the bound (64 KiB)'],
  TELNET_SB_TIMEOUT: ['ProtocolError', 'a subnegotiation left open longer than --subnegotiation-timeout'],
  TLS_HANDSHAKE_FAILED: ['ProtocolError', 'a TLS handshake failed on a telnets port (metrics label)'],
  VSPC_TLS_ON_PLAIN_PORT: ['ProtocolError', 'a TLS ClientHello arrived on a plain telnet port'],
  // --- An ESXi host broke VMware's proxy protocol (option 232).
  VSPC_BAD_EXT: ['ProtocolError', 'a malformed option-232 subnegotiation'],
  VSPC_BAD_DO_PROXY: ['ProtocolError', 'DO-PROXY without a direction, too long, or with a bad port label'],
  VSPC_BAD_UUID: ['ProtocolError', 'VM-VC-UUID that is not 32 hex digits'],
  VSPC_BAD_NAME: ['ProtocolError', 'VM-NAME longer than 1024 bytes'],
  VSPC_BAD_VMOTION: ['ProtocolError', 'a vMotion subcommand with a malformed sequence or secret'],
  VSPC_VMOTION_BEGIN_FLOOD: ['ProtocolError', 'more than 8 VMOTION-BEGINs in a row replacing one another on one connection: closed'],
  VSPC_VMOTION_PEER_FLOOD: ['ProtocolError', 'VMOTION-PEERs from one address past its budget of cluster look-ups: refused without a database query'],
  VSPC_PROXY_REFUSED: ['ProtocolError', 'DO-PROXY for another service name or direction: answered WONT-PROXY and closed'],
  VSPC_PROXY_CHANGED: ['ProtocolError', 'a second DO-PROXY with another port label on one connection'],
  VSPC_UUID_CHANGED: ['ProtocolError', 'VM-VC-UUID changed on an open connection'],
  VSPC_IDENTIFY_TIMEOUT: ['ProtocolError', 'option 232 agreed but no DO-PROXY and VM-VC-UUID within --identify-timeout'],
  VSPC_NOT_ESXI: ['ProtocolError', 'the peer refused option 232 or said nothing: a person, told what the port is for'],
  // --- A VM-side peer refused or cut off by a defence (PeerRefusedError; docs/security.md).
  VSPC_PEER_NOT_ALLOWED: ['PeerRefusedError', 'the peer address is not in --proxy-allow: closed at accept, before any protocol'],
  VSPC_UNIDENTIFIED_LIMIT: ['PeerRefusedError', 'too many VM connections still unidentified: a new one refused at accept'],
  VSPC_ADDRESS_UNIDENTIFIED_LIMIT: ['PeerRefusedError', 'too many unidentified VM connections from one source address (--unidentified-per-address)'],
  VSPC_UNIDENTIFIED_EVICTED: ['PeerRefusedError', 'an unidentified VM connection closed to make room for one from a less busy address'],
  VSPC_VM_ALIVE: ['PeerRefusedError', "a connection claimed a VM serial port whose connection answered the liveness probe: refused"],
  VSPC_PROBE_UNANSWERED: ['PeerRefusedError', 'a VM connection did not answer the liveness probe in --takeover-probe: replaced'],
  VSPC_REGISTRATION_RATE: ['PeerRefusedError', 'a source address created new VM serial ports faster than --registration-rate allows'],
  VSPC_NAME_TAKEN: ['VspcError', 'a console took a name another console already has: the older keeps the name (by-name log link, broker spelling), the newer is NAME~N'],
  // --- A console client broke VSPC-CONTROL (option 201, docs/console-protocol.md).
  VSPC_CONTROL_BAD_REQUEST: ['ProtocolError', 'LOCK-REQUEST without mode and flags or with an oversized user name; LIST-REQUEST or SELECT too long, SELECT empty'],
  VSPC_CONTROL_BAD_MODE: ['ProtocolError', 'an unknown lock mode byte'],
  VSPC_CONTROL_BAD_REPLY: ['ProtocolError', 'WHO-REPLY, LIST-REPLY or SELECT-REFUSED that is not the JSON it should be, or an unknown refusal reason'],
  VSPC_CONTROL_UNKNOWN: ['ProtocolError', 'an unknown VSPC-CONTROL message code'],
  // --- RFC 2217 COM-PORT-OPTION (option 44) payloads (src/protocol/rfc2217/codec.ts). A
  // console client's bad COM-PORT command is ignored and logged; the connection stays.
  VSPC_COMPORT_MALFORMED: ['ProtocolError', 'a COM-PORT subnegotiation that is empty, has a value of the wrong length for its command, or an oversized SIGNATURE'],
  VSPC_COMPORT_UNKNOWN: ['ProtocolError', 'a COM-PORT command code RFC 2217 does not define (13-99, 113-255)'],
  // --- The console broker (src/access/broker/, vspc-admin console).
  VSPC_BROKER_SOCKET_PATH: ['VspcError', 'the broker socket path cannot be used: no such directory, a symlink or a non-socket file there, too long, or its mode or group cannot be set'],
  VSPC_BROKER_SOCKET_IN_USE: ['VspcError', 'another process accepts connections on the broker socket path (a second vspc?); it is left alone'],
  VSPC_BROKER_FULL: ['VspcError', 'too many broker connections have not chosen a console yet: the oldest of them closed to make room for a new one'],
  VSPC_BROKER_TOO_MANY_REQUESTS: ['VspcError', 'a broker connection sent more LIST-REQUESTs and SELECTs than allowed: told and closed'],
  VSPC_BROKER_SELECT_TIMEOUT: ['VspcError', 'a broker connection chose no console in time: told and closed'],
  VSPC_BROKER_UNREACHABLE: ['VspcError', 'vspc-admin console cannot reach the broker; the message says what to check (no socket there, permission denied, refused)'],
  // --- The TCP-over-serial tunnel (src/protocol/tunnel/, docs/tunnel-protocol.md).
  VSPC_TUNNEL_BAD_ARGUMENT: ['TunnelError', 'a tunnel option or argument is out of range (window, payload, port, reason code 1..63, ...)'],
  VSPC_TUNNEL_STREAM_ENDED: ['TunnelError', 'write() on a tunnel stream after end()'],
  VSPC_TUNNEL_STREAM_CLOSED: ['TunnelError', 'an operation on a tunnel stream that is closed or reset'],
  VSPC_TUNNEL_STREAM_STATE: ['TunnelError', 'an operation not valid in the stream\'s state (accept twice, consume more than delivered)'],
  VSPC_TUNNEL_BUFFER_FULL: ['TunnelError', 'write() would exceed the stream\'s hard send-buffer limit'],
  VSPC_TUNNEL_TOO_MANY_STREAMS: ['TunnelError', 'openStream() with maxStreams streams open, or every id of our range in use'],
  VSPC_TUNNEL_FRAME_TOO_LARGE: ['TunnelError', 'a frame payload over 16384 bytes given to the encoder (what a peer accepts is its HELLO\'s max_payload)'],
  VSPC_TUNNEL_REENTRANT: ['TunnelError', 'receive(), poll() or drained() called from inside one of the endpoint\'s callbacks'],
  VSPC_TUNNEL_DESTROYED: ['TunnelError', 'an operation on a destroyed tunnel endpoint'],
  VSPC_TUNNEL_VERSION_MISMATCH: ['ProtocolError', 'the peer\'s HELLO has another protocol version; no session'],
  VSPC_TUNNEL_ROLE_MISMATCH: ['ProtocolError', 'the peer\'s HELLO has our role (two hosts or two agents on one line)'],
  VSPC_TUNNEL_ECHO: ['ProtocolError', 'our own HELLO or frames came back: the line echoes (guest tty not in raw mode, a getty on the port)'],
  VSPC_TUNNEL_STREAM_RESET: ['TunnelStreamError', 'a tunnel stream was reset by the peer or locally (reason code in `reason`)'],
  VSPC_TUNNEL_OPEN_FAILED: ['TunnelStreamError', 'the peer refused to open a tunnel stream (reason code in `reason`)'],
  // --- The SSH front door (src/access/ssh/, docs/ssh.md): logged codes; the peer is refused or cut off.
  VSPC_SSH_HOST_KEY_INSECURE: ['VspcError', 'an SSH host key file is accessible by group or others: vspc does not start (chmod 600 it)'],
  VSPC_SSH_HOST_KEY_INVALID: ['VspcError', 'an SSH host key cannot be created, read or parsed, or is of the wrong type: vspc does not start'],
  VSPC_SSH_AUTH_FAILED: ['ProtocolError', 'an SSH authentication attempt was refused (unknown key, from=, bad signature, not a public key)'],
  VSPC_SSH_RATE_LIMITED: ['ProtocolError', 'too many failed SSH authentications from one address: its connections are refused for a while'],
  VSPC_SSH_LOGIN_TIMEOUT: ['ProtocolError', 'an SSH connection did not log in within the login grace time (30 s)'],
  VSPC_SSH_KEEPALIVE_TIMEOUT: ['ProtocolError', 'an SSH peer stopped answering keepalives (half-open connection): cut off'],
  VSPC_SSH_PROTOCOL_ERROR: ['ProtocolError', 'an SSH peer sent malformed packets or failed the key exchange: that connection is closed'],
  VSPC_SSH_TOO_MANY_REQUESTS: ['ProtocolError', 'an SSH connection made more requests vspc refuses (forwarding, X11, subsystems) than allowed (10): closed'],
  VSPC_SSH_KEY_LIMIT: ['ProtocolError', "an SSH key's connections at once, or a connection's sessions, reached their cap: the client is told, the extra one refused"],
  VSPC_SSH_REQUEST_REFUSED: ['ProtocolError', 'a request vspc never grants: port or agent forwarding, X11, SFTP, another subsystem'],
  VSPC_SSH_KEYS_COMMAND_FAILED: ['VspcError', 'the SSH keys command failed (exit status, timeout, output too large, bad JSON): the key is not let in'],
  // --- Configuration and command line (ConfigError / VspcError; the process exits non-zero).
  VSPC_CONFIG_INVALID: ['ConfigError', 'a flag or config file key is invalid; the message names it (and file:line:col)'],
  VSPC_SOURCE_INVALID: ['VspcError', 'a console source spec (unix:..., device:...) is malformed; the message names the part'],
  VSPC_FD_BUDGET_SPENT: ['VspcError', 'file descriptors are nearly exhausted: a connection refused at accept, or a console listener, source connection or log file deferred and retried (the reserve is kept for the admin API)'],
  VSPC_PEER_NOT_READING: ['PeerRefusedError', 'a peer (VM connection, console client, broker connection) did not read what vspc sent it (output or replies): past its queue bound it was disconnected'],
  VSPC_PEER_TOO_MANY_REQUESTS: ['PeerRefusedError', 'a console client asked WHO faster than its budget (32 at once, 8 a second): disconnected'],
  VSPC_RELOAD_UNAVAILABLE: ['VspcError', 'reload asked of a vspc that has no configuration to re-read'],
  VSPC_PATTERN_TOO_EXPENSIVE: ['VspcError', 'a list pattern (broker LIST-REQUEST, admin list/?match=) needed more matching work than one request may spend: refused'],
  // --- Sources vspc maintains itself (SourceError, src/sources/common/errors.ts).
  VSPC_SOURCE_NOT_FOUND: ['SourceError', 'A unix socket path (or a listen path\'s directory entry) does not exist: the VM is not running.'],
  VSPC_SOURCE_CONNECT_FAILED: ['SourceError', 'The peer refused or could not be reached (ECONNREFUSED, EHOSTUNREACH, a name that does not resolve...).'],
  VSPC_SOURCE_CONNECT_TIMEOUT: ['SourceError', 'A dial did not complete within connectTimeoutMs (a black-holed TCP address).'],
  VSPC_SOURCE_NOT_A_SOCKET: ['SourceError', 'Something that is not a socket is at the path (a regular file, a directory, a symlink where vspc listens).'],
  VSPC_SOURCE_PERMISSION_DENIED: ['SourceError', 'EACCES / EPERM: vspc may not connect to, create or replace the path, or bind the port.'],
  VSPC_SOURCE_NO_DIRECTORY: ['SourceError', 'A listen path\'s directory does not exist or is not a directory.'],
  VSPC_SOURCE_ADDRESS_IN_USE: ['SourceError', 'The listen address is taken (EADDRINUSE; a live listener on a unix-listen path).'],
  VSPC_SOURCE_LISTEN_FAILED: ['SourceError', 'Any other bind/listen failure (EADDRNOTAVAIL, ...).'],
  VSPC_SOURCE_BUSY: ['SourceError', 'A second peer connected to a listen endpoint while one is attached: it was refused; or another program holds a device locked (flock).'],
  VSPC_SOURCE_CLOSED: ['SourceError', 'The peer closed the connection (end of stream).'],
  VSPC_SOURCE_RESET: ['SourceError', 'The connection failed under way (ECONNRESET, EPIPE, ...).'],
  VSPC_SOURCE_PROTOCOL_ERROR: ['SourceError', 'The peer broke the telnet protocol; the link is closed and the endpoint redialled.'],
  VSPC_SOURCE_INTERNAL: ['SourceError', 'A bug while handling the peer\'s bytes; contained to this link.'],
  VSPC_SOURCE_NOT_A_TTY: ['SourceError', 'A device path that is not a terminal (a regular file, a directory, a FIFO, a socket, /dev/null...).'],
  VSPC_SOURCE_LINE_UNSUPPORTED: ['SourceError', 'Line settings the device (or serialport on this platform) cannot apply: parity mark/space, 1.5 stop bits, a baud rate the driver refuses.'],
  VSPC_SOURCE_UNSUPPORTED: ['SourceError', 'No link factory is registered for the spec\'s type (a type no source module registered).'],
  VSPC_SOURCE_NO_DESCRIPTORS: ['SourceError', 'File descriptors are exhausted: the attempt waits for the process\'s descriptor budget (docs/security.md).'],
  VSPC_SOURCE_NOT_READING: ['SourceError', 'The peer did not read what vspc sent it (input, telnet negotiation replies) past --client-queue-limit; the link is closed and the endpoint redialled.'],
  // --- Access methods other than telnet: raw TCP, unix sockets, ptys (AccessError, src/access/common/errors.ts).
  VSPC_ACCESS_NO_DIRECTORY: ['AccessError', "the directory for a console's unix socket or pty link does not exist or is not a directory (retried)"],
  VSPC_ACCESS_UNSAFE_DIRECTORY: ['AccessError', 'that directory is owned by another user, or group- or world-writable without the sticky bit: vspc puts nothing there'],
  VSPC_ACCESS_PATH_OCCUPIED: ['AccessError', 'something vspc did not make is at the socket or link path (a regular file, a directory, a symlink not to a pty): never replaced'],
  VSPC_ACCESS_PATH_IN_USE: ['AccessError', "another process listens on the socket path, or another console's endpoint has that path"],
  VSPC_ACCESS_ADDRESS_IN_USE: ['AccessError', "a console's raw TCP port cannot be bound (EADDRINUSE: another program holds it; retried)"],
  VSPC_ACCESS_PERMISSION_DENIED: ['AccessError', 'EACCES / EPERM setting up an endpoint: creating the socket or link, or chown to the configured owner/group (needs root)'],
  VSPC_ACCESS_FAILED: ['AccessError', 'any other failure setting up a raw port, unix socket or pty (the message has the system error; retried)'],
  VSPC_PTY_UNAVAILABLE: ['AccessError', "no pty could be made: vspc's native addon is not built, or the kernel refused one"],
  // --- Storage (StorageError).
  VSPC_ARG_INVALID: ['StorageError', 'an argument the store cannot accept (key, label, timestamp)'],
  VSPC_NOT_FOUND: ['StorageError', 'no console record with that id'],
  VSPC_PORT_INVALID: ['StorageError', 'a TCP port outside 1-65535'],
  VSPC_PORT_IN_USE: ['StorageError', 'the TCP port belongs to another console'],
  VSPC_PORT_RANGE_INVALID: ['StorageError', '--port-range is not 1 <= start <= end <= 65535'],
  VSPC_PORT_RANGE_EXHAUSTED: ['StorageError', 'no free port left in --port-range for a new console'],
  VSPC_DB_OPEN_FAILED: ['StorageError', 'the database file cannot be opened'],
  VSPC_DB_TOO_NEW: ['StorageError', 'the database was written by a newer vspc (schema version too high)'],
  VSPC_DB_MIGRATION_FAILED: ['StorageError', 'a schema migration failed and was rolled back'],
  VSPC_DB_UNAVAILABLE: ['StorageError', 'the PostgreSQL database did not answer in time or refused a statement'],
  VSPC_NODE_ID_IN_USE: ['StorageError', 'another live vspc node holds this --node-id on the shared database'],
  VSPC_CONSOLE_OWNED_ELSEWHERE: ['StorageError', 'another vspc node of the cluster owns this console (it holds its source connection)'],
  // --- The internal link between cluster nodes (src/protocol/cluster/, src/access/cluster/, src/sources/cluster/).
  VSPC_LINK_PROTOCOL: ['ProtocolError', 'a peer vspc node broke the link protocol (frame too long, unknown type, data beyond its credit, no HELLO first, more than 256 streams or 4 links from one node); the link is cut'],
  VSPC_LINK_AUTH_FAILED: ['PeerRefusedError', 'a connection to the cluster link did not complete the TLS pre-shared-key handshake (plain TCP, wrong --cluster-secret-file, garbage, no byte within 2 s, too many at once from one address or in all) in time; it is cut'],
  VSPC_LINK_UNAVAILABLE: ['PeerRefusedError', 'the node owning a console cannot be reached over the cluster link (no advertised address, refused, timed out, the link broke or went silent for 15 s, or the database cannot say who owns it right now)'],
  // --- Console log files (LogFileError, src/logging/console-log/errors.ts).
  VSPC_LOG_OPEN_FAILED: ['LogFileError', 'opening or creating a console log file failed; data stays queued'],
  VSPC_LOG_WRITE_FAILED: ['LogFileError', "a write failed; that write's bytes are lost"],
  VSPC_LOG_ROTATE_FAILED: ['LogFileError', 'renaming or deleting files during a rotation failed'],
  VSPC_LOG_CLOSE_FAILED: ['LogFileError', 'closing a log file handle failed'],
  VSPC_LOG_BACKLOG_FULL: ['LogFileError', 'the log writer queue was full: data was dropped and counted'],
  VSPC_LOG_WRITER_CLOSED: ['LogFileError', 'a write queued on a log writer already closed'],
  VSPC_LOG_READ_FAILED: ['LogFileError', 'reading a console log (vspc-admin log) failed'],
  // --- Admin API (AdminApiError: an HTTP status and this code in {"error":{"code","message"}}).
  VSPC_AUTH_REQUIRED: ['AdminApiError', '401: a token is configured and the request carried none'],
  VSPC_AUTH_FAILED: ['AdminApiError', '401: the token was not accepted'],
  VSPC_ADMIN_BAD_HOST: ['AdminApiError', '421: a Host name the API does not answer to (DNS rebinding guard)'],
  VSPC_ADMIN_CROSS_ORIGIN: ['AdminApiError', '403: a cross-origin browser request'],
  VSPC_ADMIN_CONTENT_TYPE: ['AdminApiError', '415: a mutation without Content-Type: application/json'],
  VSPC_ADMIN_PREFLIGHT: ['AdminApiError', '403: a CORS preflight (never granted)'],
  VSPC_ROUTE_NOT_FOUND: ['AdminApiError', '404: no such admin API call'],
  VSPC_METHOD_NOT_ALLOWED: ['AdminApiError', '405: the call exists with another method (see the Allow header)'],
  VSPC_INTERNAL: ['AdminApiError', '500: an internal error; the details are in the vspc log, not in the answer'],
  VSPC_VM_REQUIRED: ['AdminApiError', '400: the call needs a console (name, UUID or port)'],
  VSPC_VM_NOT_FOUND: ['AdminApiError', '404: no console matches'],
  VSPC_VM_AMBIGUOUS: ['AdminApiError', '409: the name matches several consoles; the message lists them'],
  VSPC_CLIENT_REQUIRED: ['AdminApiError', '400: the call needs a client id'],
  VSPC_CLIENT_INVALID: ['AdminApiError', '400: the client id is not a positive integer'],
  VSPC_CLIENT_NOT_FOUND: ['AdminApiError', '404: no such client on that console'],
  VSPC_PORT_REQUIRED: ['AdminApiError', '400: set-port needs a port'],
  VSPC_PORT_RESERVED: ['AdminApiError', "409: the port is one of vspc's own listeners"],
  VSPC_PORT_BIND_FAILED: ['AdminApiError', '409: set-port could not bind the new port (EADDRINUSE: another program holds it; EACCES, ...); nothing changed'],
  VSPC_PORT_PRIVILEGED: ['AdminApiError', '400: set-port to a port below 1024 without force'],
  VSPC_STATE_INVALID: ['AdminApiError', '400: list filtered by a state that does not exist'],
  VSPC_PATTERN_TOO_LONG: ['AdminApiError', '400: a list pattern longer than 256 characters'],
  VSPC_REASON_INVALID: ['AdminApiError', '400: kick with an empty reason or one over 200 characters'],
  VSPC_LINES_REQUIRED: ['AdminApiError', '400: the call needs a number of lines'],
  VSPC_LINES_INVALID: ['AdminApiError', '400: lines is not an integer in range'],
  VSPC_NO_TLS_PORT: ['AdminApiError', '409: telnets asked for, but vspc has no certificate'],
  VSPC_TUNNEL_REQUIRED: ['AdminApiError', '400: the call needs a tunnel name'],
  VSPC_TUNNEL_NOT_FOUND: ['AdminApiError', '404: no tunnel of that name (config file tunnels:)'],
  VSPC_TUNNEL_NOT_ATTACHED: ['AdminApiError', '409: the tunnel has no console now (not registered yet, ambiguous, or taken by another tunnel)'],
  VSPC_TUNNEL_UPGRADE_REQUIRED: ['AdminApiError', '426: /api/v1/tunnel is a byte stream: it needs "Connection: Upgrade" and "Upgrade: vspc-tunnel"'],
  VSPC_CONSOLE_MANAGED: ['AdminApiError', '409: the console is declared in the config file or kept by discovery: remove it there'],
  VSPC_CONSOLE_LOG_OFF: ['AdminApiError', '409: console logging is off (no --log-dir), or off for this console'],
  VSPC_LOG_FILE_INVALID: ['AdminApiError', '400: log file is not an integer 0-100000'],
  VSPC_LOG_FILE_NOT_FOUND: ['AdminApiError', '404: no rotated console log file with that number'],
  VSPC_LOG_QUERY_CONFLICT: ['AdminApiError', '400: log with more than one of follow, all, file'],
  VSPC_LOG_FOLLOW_LIMIT: ['AdminApiError', '503: the most readers that may follow console logs at once already do'],
  VSPC_ADMIN_BUSY: ['VspcError', 'the admin API held as many connections as its share of the descriptor reserve allows: the oldest idle one was closed for a newcomer (or the newcomer, when all were busy)'],
  // --- vspc-admin, the API's client (VspcError; exit code 1).
  VSPC_ADMIN_UNREACHABLE: ['VspcError', 'the admin API cannot be reached; the message says what to check'],
  VSPC_ADMIN_BAD_RESPONSE: ['VspcError', 'the admin API answered something that is not its JSON'],
  VSPC_ADMIN_ERROR: ['VspcError', 'the admin API answered an error without a code'],
} as const satisfies Record<string, readonly [string, string]>;

export type VspcErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: unknown): code is VspcErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

export type ErrorContext = Record<string, unknown>;

export class VspcError extends Error {
  readonly code: VspcErrorCode;
  readonly context: ErrorContext;
  constructor(code: VspcErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.context = context;
  }
}

/** A peer broke the telnet, option-232 or VSPC-CONTROL protocol; the connection is closed. */
export class ProtocolError extends VspcError {}

/**
 * A peer refused or cut off by one of the defences of docs/security.md (on the VM side
 * the allow-list, the limits on unidentified connections, the liveness probe before a
 * takeover, the registration quota; on every side the queue bound of a peer that does
 * not read); the connection is closed, everything else goes on.
 */
export class PeerRefusedError extends VspcError {}

/** Bad configuration or command-line input; the process exits non-zero. */
export class ConfigError extends VspcError {
  constructor(message: string, context: ErrorContext & { field?: string } = {}) {
    super('VSPC_CONFIG_INVALID', message, context);
  }
}

/** Storage failures: schema, port range exhausted, constraint violations. */
export class StorageError extends VspcError {}

/** An admin API refusal: an HTTP status and a stable code, answered as `{"error":{"code","message"}}`. */
export class AdminApiError extends VspcError {
  constructor(
    readonly status: number,
    code: VspcErrorCode,
    message: string,
    context: ErrorContext = {},
  ) {
    super(code, message, context);
  }
}

/** Error fields for a log line: code and context, not the stack (unless it is a bug). */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown; context?: unknown };
    return { errorCode: e.code ?? 'UNKNOWN', error: String(e.message ?? err), ...((e.context as object) ?? {}) };
  }
  return { error: String(err) };
}
