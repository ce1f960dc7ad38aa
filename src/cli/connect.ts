import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import type { Command } from 'commander';
import { BRK, Option, policyFromLists, TelnetSession } from '../protocol/telnet/index.js';
import { decodeControl, encodeControl, VSPC_CONTROL_OPTION } from '../protocol/control/vspc-control.js';
import { parseLockMode, type LockRequest } from '../domain/locks.js';
import { ConfigError, VspcError } from '../errors.js';
import type { PortView } from '../admin/views.js';
import type { AdminClient } from './admin-client.js';

/** Exit codes of `vspc-admin connect`, documented in README. */
export const ConnectExit = {
  OK: 0,
  ERROR: 1,
  USAGE: 2,
  REFUSED: 3,
  REVOKED: 4,
} as const;

/** What the console session asks for, wherever it connects. */
export interface ConsoleOptions {
  mode: LockRequest;
  force: boolean;
  /** A clean stream: no greeting, no notices, no scrollback replay (VSPC-CONTROL flags). */
  raw?: boolean;
  user: string;
  /** Byte that opens the menu (default Ctrl-], 0x1d). */
  escape: number;
  timeoutMs: number;
}

/** Where the session connects: a console's own telnet(s) port, or the console broker. */
export interface ConsoleTarget {
  /** Opens the connection. */
  dial(): net.Socket;
  /** The event after which telnet may start ('secureConnect' for TLS). */
  readyEvent: 'connect' | 'secureConnect';
  /** The far end in messages: host:port, or the broker's socket path. */
  where: string;
  /** Through the broker: the console to SELECT before the lock request. */
  select?: string;
  /** TLS with a pinned certificate: checked before anything is sent; a message when the peer must not be used. */
  verifyPeer?(socket: net.Socket): string | null;
  /** TLS: what to tell someone whose connection failed on the certificate; null for other errors. */
  explainError?(err: Error): Promise<string> | null;
}

/**
 * A console's own telnet port (or telnets, with `tls`). `fingerprint` pins the
 * certificate (SHA-256): it replaces the CA check unless a CA is given too, and is
 * compared before anything is sent.
 */
export function portTarget(o: { host: string; port: number; tls: boolean; ca?: Buffer; cert?: Buffer; key?: Buffer; fingerprint?: string }): ConsoleTarget {
  const servername = net.isIP(o.host) ? undefined : o.host;
  const pinOnly = o.fingerprint !== undefined && o.ca === undefined;
  return {
    dial: () =>
      o.tls
        ? tls.connect({ host: o.host, port: o.port, ca: o.ca, cert: o.cert, key: o.key, servername, rejectUnauthorized: !pinOnly })
        : net.connect({ host: o.host, port: o.port }),
    readyEvent: o.tls ? 'secureConnect' : 'connect',
    where: `${o.host}:${o.port}`,
    verifyPeer: (socket) => {
      if (!o.tls || o.fingerprint === undefined) return null;
      const got = (socket as tls.TLSSocket).getPeerCertificate().fingerprint256 ?? '';
      if (normalizeFingerprint(got) === normalizeFingerprint(o.fingerprint)) return null;
      return `${o.host}:${o.port}: the certificate's SHA-256 fingerprint is ${got}, not the one given with --fingerprint; not connecting`;
    },
    explainError: (err) => {
      const code = (err as NodeJS.ErrnoException).code ?? err.message;
      if (!o.tls || !isCertificateError(code)) return null;
      // Say what to do rather than only the verifier's code: fetch what the server presents.
      return peerCertificate(o.host, o.port, servername).then((cert) => untrustedAdvice(o, code, err.message, cert));
    },
  };
}

export interface ConsoleIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/**
 * The console client of `vspc-admin connect` and `vspc-admin console`: a telnet client
 * that asks for its lock in-band (VSPC-CONTROL, docs/console-protocol.md) — through
 * the broker after choosing the console by name (SELECT) — then passes bytes between
 * the terminal and the VM. Ctrl-] opens a one-key menu: d detach, b send break, w who
 * is connected, c continue; Ctrl-] twice sends a literal Ctrl-].
 */
export function runConsole(o: ConsoleOptions, target: ConsoleTarget, io: ConsoleIo): Promise<number> {
  return new Promise((resolve) => {
    let done = false;
    let granted = false;
    let menu = false;
    /** A certificate error is being explained (see the error handler): the close that follows says nothing. */
    let explaining = false;
    const say = (text: string) => io.stderr.write(`\r\n[vspc-admin: ${text}]\r\n`);
    const socket = target.dial();
    const lockRequest = () =>
      session.sendSubnegotiation(
        VSPC_CONTROL_OPTION,
        encodeControl({ kind: 'lock-request', mode: o.mode, force: o.force, user: o.user, ...(o.raw ? { noReplay: true, noNotices: true, noGreeting: true } : {}) }),
      );
    const raw = io.stdin.isTTY && typeof io.stdin.setRawMode === 'function';
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (message) say(message);
      if (raw) io.stdin.setRawMode!(false);
      io.stdin.off('data', onStdin);
      io.stdin.pause();
      socket.destroy();
      resolve(code);
    };
    const timer = setTimeout(() => finish(ConnectExit.ERROR, `no answer from ${target.where} within ${o.timeoutMs} ms`), o.timeoutMs);
    timer.unref();

    const session = new TelnetSession(
      policyFromLists({ us: [Option.BINARY, Option.SGA, VSPC_CONTROL_OPTION], him: [Option.ECHO, Option.SGA, Option.BINARY] }),
      {
        write: (b) => socket.write(b),
        data: (d) => {
          if (granted) io.stdout.write(d);
          else io.stderr.write(d); // Greeting and notices before the lock is settled.
        },
        subnegotiation: (option, payload) => {
          if (option !== VSPC_CONTROL_OPTION) return;
          let msg;
          try {
            msg = decodeControl(payload);
          } catch (err) {
            finish(ConnectExit.ERROR, `bad control message from vspc: ${(err as Error).message}`);
            return;
          }
          if (msg.kind === 'lock-granted') {
            granted = true;
            clearTimeout(timer);
            say(`connected with ${msg.mode.toUpperCase()}; Ctrl-] for the menu`);
            if (raw) io.stdin.setRawMode!(true);
            io.stdin.resume();
          } else if (msg.kind === 'selected') {
            lockRequest();
          } else if (msg.kind === 'select-refused') {
            finish(ConnectExit.ERROR, msg.message);
          } else if (msg.kind === 'lock-refused') {
            finish(ConnectExit.REFUSED, `lock refused: ${msg.reason}`);
          } else if (msg.kind === 'lock-revoked') {
            finish(ConnectExit.REVOKED, msg.reason);
          } else if (msg.kind === 'who-reply') {
            const lines = msg.holders.map((h) => {
              const x = h as { clientId: number; peer: string; user?: string; mode: string; since: number; self?: boolean };
              return `  #${x.clientId} ${x.user ? `${x.user}@` : ''}${x.peer} ${x.mode.toUpperCase()} since ${new Date(x.since).toISOString()}${x.self ? ' (you)' : ''}`;
            });
            io.stderr.write(`\r\n[vspc-admin: connected to this serial port]\r\n${lines.join('\r\n')}\r\n`);
          }
        },
        refused: (side, option) => {
          if (side === 'him' && option === VSPC_CONTROL_OPTION) return;
          if (side === 'us' && option === VSPC_CONTROL_OPTION) finish(ConnectExit.ERROR, 'this server does not speak VSPC-CONTROL (not vspc?)');
        },
        error: (err) => finish(ConnectExit.ERROR, `protocol error from vspc: ${err.message}`),
      },
    );

    const send = (bytes: Buffer) => {
      if (bytes.length > 0) session.sendData(bytes);
    };
    const onStdin = (chunk: Buffer) => {
      if (!granted) return;
      let start = 0;
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i];
        if (menu) {
          menu = false;
          start = i + 1;
          if (b === o.escape) send(Buffer.of(o.escape));
          else if (b === 0x64 /* d */ || b === 0x71 /* q */ || b === 0x2e /* . */) return finish(ConnectExit.OK, 'detached');
          else if (b === 0x62 /* b */) {
            session.sendCommand(BRK);
            // Whether it went out is vspc's to say (a notice when the console's source cannot send one).
            say('break requested');
          } else if (b === 0x77 /* w */) session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl({ kind: 'who' }));
          else say('continuing');
        } else if (b === o.escape) {
          send(chunk.subarray(start, i));
          menu = true;
          start = i + 1;
          io.stderr.write('\r\n[vspc-admin] d detach, b break, w who, c continue, ^] send ^]: ');
        }
      }
      send(chunk.subarray(start));
    };

    socket.setNoDelay(true);
    socket.on(target.readyEvent, () => {
      const refused = target.verifyPeer?.(socket);
      if (refused) {
        finish(ConnectExit.ERROR, refused);
        return;
      }
      session.requestUs(Option.BINARY);
      session.requestUs(Option.SGA);
      session.requestUs(VSPC_CONTROL_OPTION);
      // Through the broker the console is chosen first; SELECTED brings the lock request.
      if (target.select !== undefined) session.sendSubnegotiation(VSPC_CONTROL_OPTION, encodeControl({ kind: 'select', address: target.select }));
      else lockRequest();
    });
    socket.on('data', (d: Buffer) => session.receive(d));
    socket.on('error', (err) => {
      if (done || explaining) return;
      const explained = target.explainError?.(err) ?? null;
      if (!explained) {
        finish(ConnectExit.ERROR, `${target.where}: ${describeSocketError(err)}`);
        return;
      }
      explaining = true;
      clearTimeout(timer);
      void explained.then((message) => finish(ConnectExit.ERROR, message));
    });
    socket.on('close', () => {
      if (!explaining) finish(granted ? ConnectExit.OK : ConnectExit.ERROR, granted ? 'connection closed by vspc' : 'closed before a lock was granted');
    });
    io.stdin.on('data', onStdin);
    io.stdin.on('end', () => {
      // Input ended (a pipe): let the output drain briefly, then leave.
      setTimeout(() => {
        if (!explaining) finish(ConnectExit.OK);
      }, 200).unref();
    });
    io.stdin.pause();
  });
}

/** A connect error as a person reads it: the errno code, with what it means for a unix socket. */
export function describeSocketError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'ENOENT: no socket there (is vspc running with --broker-socket at this path?)';
  if (code === 'EACCES') return 'EACCES: permission denied (the broker socket admits its owner and group only)';
  if (code === 'ECONNREFUSED') return 'ECONNREFUSED: nothing accepts connections there (vspc not running?)';
  return code ?? err.message;
}

/** Node's codes for a certificate that does not verify (chain, validity, host name). */
function isCertificateError(code: string): boolean {
  return /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ERR_TLS_CERT_ALTNAME_INVALID/.test(code);
}

/** Fingerprint as hex digits only, upper case (`ab:cd...` and `ABCD...` compare equal). */
export function normalizeFingerprint(text: string): string {
  return text.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
}

export interface PresentedCertificate {
  subject: string;
  altNames: string;
  fingerprint256: string;
  validTo: string;
}

/**
 * The certificate a TLS server presents, without trusting it (a second handshake that
 * sends nothing); null if that fails too. Only used to describe a certificate that
 * did not verify.
 */
function peerCertificate(host: string, port: number, servername: string | undefined): Promise<PresentedCertificate | null> {
  return new Promise((resolve) => {
    const s = tls.connect({ host, port, servername, rejectUnauthorized: false });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, 5000);
    timer.unref();
    s.once('secureConnect', () => {
      clearTimeout(timer);
      const c = s.getPeerCertificate();
      s.destroy();
      if (!c || !c.fingerprint256) return resolve(null);
      const name = (x: Record<string, unknown> | undefined) => (x?.CN !== undefined ? `CN=${String(x.CN)}` : JSON.stringify(x ?? {}));
      resolve({
        subject: name(c.subject as unknown as Record<string, unknown>),
        altNames: c.subjectaltname ?? '',
        fingerprint256: c.fingerprint256,
        validTo: c.valid_to,
      });
    });
    s.once('error', () => {
      clearTimeout(timer);
      resolve(null);
    });
  });
}

/** What to tell someone whose `connect --tls` failed on the certificate: what it is, and the options that fix it. */
export function untrustedAdvice(o: { host: string; port: number; ca?: Buffer; fingerprint?: string }, code: string, message: string, cert: PresentedCertificate | null): string {
  const where = `${o.host}:${o.port}`;
  const lines: string[] = [];
  const presents = cert ? `it presents ${cert.subject}${cert.altNames ? ` (${cert.altNames})` : ''}, valid until ${cert.validTo}, SHA-256 fingerprint ${cert.fingerprint256}` : null;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    lines.push(`${where}: the certificate is not valid for the name "${o.host}" (${code})`);
    if (presents) lines.push(`  ${presents}`);
    lines.push("  connect with --host NAME, a name the certificate lists (the VM's console port is on the same host as the admin API)");
    return lines.join('\r\n');
  }
  lines.push(`${where}: the server's certificate is not trusted (${code}: ${message})`);
  if (presents) lines.push(`  ${presents}`);
  if (o.ca !== undefined) lines.push('  the file given with --ca did not sign it: give the CA certificate that did (for a self-signed one: the certificate itself)');
  else lines.push("  give the CA certificate that signed it: --ca FILE (for vspc's self-signed certificate: the file vspc has as --cert, e.g. certs/vspc.crt)");
  if (cert) {
    lines.push(`  or trust exactly this certificate: --fingerprint ${cert.fingerprint256}`);
    lines.push("  after checking, on the vspc host, that it is vspc's: openssl x509 -in CERT -noout -fingerprint -sha256");
  }
  return lines.join('\r\n');
}

function readFile(field: string, path: string | undefined): Buffer | undefined {
  if (!path) return undefined;
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${path}: ${(err as Error).message}`, { field });
  }
}

/** Adds `connect` to the vspc-admin program. */
export function addConnectCommand(program: Command, client: () => AdminClient, adminHost: () => string): void {
  program
    .command('connect')
    .description('interactive console on a VM serial port (Ctrl-] for the menu)')
    .argument('<vm>', 'VM name, UUID, port, or NAME:LABEL')
    .option('--mode <mode>', 'lock: readwrite, readonly, exclusive, excl_write, readonly_ok', 'readwrite')
    .option('--force', 'take the lock over from whoever holds it (they are told and disconnected)')
    .option('--raw', "only the VM's bytes: no greeting, no [vspc: ...] notices, no scrollback replay")
    .option('--tls', "use the VM's telnets port")
    .option('--ca <file>', 'CA certificate (PEM) to trust for --tls (e.g. a self-signed vspc certificate)')
    .option('--fingerprint <sha256>', "for --tls: trust exactly the certificate with this SHA-256 fingerprint (as openssl x509 -fingerprint -sha256 prints it)")
    .option('--cert <file>', 'client certificate (PEM) for --tls, when vspc requires one')
    .option('--key <file>', 'client key (PEM)')
    .option('--host <host>', "host of the VM's console port (default: the admin API's host)")
    .option('--user <name>', 'name shown to other users of this console', userInfo().username)
    .action(async (vm: string, opts: Record<string, string | boolean | undefined>) => {
      const mode = parseLockMode(String(opts.mode));
      if (!mode) throw new ConfigError(`--mode: "${String(opts.mode)}" is not one of readwrite, readonly, exclusive, excl_write, readonly_ok`, { field: '--mode' });
      if (!!opts.cert !== !!opts.key) throw new ConfigError('--cert: --cert and --key go together', { field: '--cert' });
      const fingerprint = opts.fingerprint as string | undefined;
      if (fingerprint !== undefined && normalizeFingerprint(fingerprint).length !== 64) {
        throw new ConfigError(`--fingerprint: "${fingerprint.slice(0, 120)}" is not a SHA-256 fingerprint (64 hex digits, colons allowed)`, { field: '--fingerprint' });
      }
      if (fingerprint !== undefined && !opts.tls) throw new ConfigError('--fingerprint: only with --tls', { field: '--fingerprint' });
      const view = await client().get<PortView>(`/api/v1/resolve?vm=${encodeURIComponent(vm)}`);
      const port = opts.tls ? view.tlsPort : view.port;
      if (!port) throw new VspcError('VSPC_NO_TLS_PORT', `${view.name ?? view.uuid} has no telnets port (vspc runs without --cert/--key)`);
      const code = await runConsole(
        { mode, force: !!opts.force, raw: !!opts.raw, user: String(opts.user ?? ''), escape: 0x1d, timeoutMs: 10_000 },
        portTarget({
          tls: !!opts.tls,
          ca: readFile('--ca', opts.ca as string | undefined),
          fingerprint,
          cert: readFile('--cert', opts.cert as string | undefined),
          key: readFile('--key', opts.key as string | undefined),
          host: (opts.host as string | undefined) ?? adminHost(),
          port,
        }),
        { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
      );
      process.exitCode = code;
    });
}
