/**
 * Replays the ESXi hosts' side of a real packet capture (test/fixtures/
 * esxi-capture-vmotion.txt: two hosts, one VM, three vMotions, one NOTNOW, one ABORT)
 * against a running vspc, and checks vspc's answers for their meaning rather than for
 * byte equality with the older concentrator of the capture.
 *
 * How the hosts are replayed:
 * - every captured host segment is one socket write, in the captured order;
 * - a host waits for the concentrator's answers that precede its segment in the
 *   capture (as vspc gives them: WILL-PROXY, GOAHEAD, PEER-OK, NOTNOW, FIN, the
 *   negotiation answers), never for captured timings; an answer vspc has no reason to
 *   give (GET-VM-VC-UUID on a vMotion destination) is not waited for: the host sends
 *   its identity unsolicited, as ESXi also does;
 * - VMOTION-PEER carries the secret vspc sent in its GOAHEAD, not the captured one;
 * - where the capture switches from one connection to another, the replay makes sure
 *   vspc has handled the first connection's segment before the second's goes out
 *   (a FIN: vspc's `VM connection closed` log line; anything else: the VM-side
 *   barrier, an unknown option-232 subcommand answered with UNKNOWN-SUBOPTION-RCVD-2),
 *   so that "the source's FIN before the destination's COMPLETE" really reaches vspc
 *   in that order.
 * - Where the captured concentrator refused a vMotion (NOTNOW), vspc is told to refuse
 *   vMotions for that one BEGIN (`VmotionCoordinator.refuseNew`), then to accept again.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, startServer, type TestServer } from '../support/server.js';
import { vspcAdmin } from '../support/cli.js';
import { TelnetUser } from '../support/sim/index.js';
import { describeToken, encodeHostToken, parseCapture, type CaptureEvent, type CaptureToken } from '../support/esxi-capture.js';
import { TelnetDecoder, Option, DO, DONT, WONT, type TelnetToken } from '../../src/protocol/telnet/index.js';
import { Ext } from '../../src/protocol/vmware/codes.js';
import { normalizeUuid } from '../../src/util/uuid.js';

const CAPTURE_PATH = join(ROOT, 'test/fixtures/esxi-capture-vmotion.txt');
const EVENTS = parseCapture(readFileSync(CAPTURE_PATH, 'utf8'));
/** An option-232 code vspc does not know: the VM-side barrier. */
const BARRIER_CODE = 99;
const NOTICE_DISCONNECTED = '\r\n[vspc: VM disconnected; waiting for it to come back]\r\n';

/** One replayed ESXi connection: a socket, and what vspc sent on it, decoded. */
class ReplayHost {
  readonly received: TelnetToken[] = [];
  /** vspc sent FIN. */
  ended = false;
  closed = false;
  readonly peerName: string;
  private readonly decoder = new TelnetDecoder({ binary: true });
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly name: string,
    private readonly socket: net.Socket,
  ) {
    this.peerName = `${socket.localAddress}:${socket.localPort}`;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.received.push(...this.decoder.decode(chunk));
      this.notify();
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
  }

  static connect(name: string, port: number): Promise<ReplayHost> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new ReplayHost(name, socket));
      });
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  fin(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Option-232 subcommands vspc sent: [code, payload]. */
  get ext(): Array<{ code: number; payload: Buffer }> {
    return this.received
      .filter((t): t is Extract<TelnetToken, { type: 'subnegotiation' }> => t.type === 'subnegotiation' && t.option === Option.VMWARE_EXT)
      .map((t) => ({ code: t.payload[0], payload: t.payload.subarray(1) }));
  }

  /** Resolves once `check` holds (re-checked on every chunk, FIN and close). */
  until(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (err) reject(err);
        else resolve();
      };
      const waiter = () => {
        if (check()) done();
      };
      const timer = setTimeout(() => done(new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }
}

/** What a captured concentrator segment means, as something vspc must (or may) also do. */
interface Expectation {
  what: string;
  /** false: vspc has no reason to do it (the host does not wait for it). */
  required: boolean;
  host: () => ReplayHost;
  met: () => boolean;
  /** Runs once when met (records GOAHEAD's secret). */
  onMet?: () => void;
}

interface ReplayOptions {
  /** vspc's comPort setting: it answers WILL COM-PORT with DO (the default), else DONT as the captured concentrator did. */
  comPort: boolean;
  secretBytes: number;
}

interface ReplayResult {
  hosts: Map<string, ReplayHost>;
  user: TelnetUser;
  userMark: number;
  /** Every DATA byte the hosts sent, in order. */
  data: Buffer;
  /** State seen through the admin API before each host segment (once the port exists). */
  states: Array<{ event: CaptureEvent; state: string }>;
  /** vspc's secrets by captured sequence (hex). */
  secrets: Map<string, Buffer>;
  /** `vspc-admin list` while the source had left and COMPLETE was not yet sent. */
  listWhileSourceGone: string | null;
}

const UUID_TEXT = '01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00';

async function replay(ts: TestServer, events: readonly CaptureEvent[], o: ReplayOptions, cleanup: { add(fn: () => unknown): void }): Promise<ReplayResult> {
  const hosts = new Map<string, ReplayHost>();
  const hostOf = (connection: string) => {
    const h = hosts.get(connection);
    if (!h) throw new Error(`no connection ${connection} yet`);
    return h;
  };
  const sentDoProxy = new Set<string>();
  const lastBegin = new Map<string, Buffer>();
  const begins: Buffer[] = [];
  const secrets = new Map<string, Buffer>();
  let pending: Expectation[] = [];
  let previousHost: { event: CaptureEvent; fin: boolean } | null = null;
  let user: TelnetUser | null = null;
  let userMark = 0;
  const data: Buffer[] = [];
  const states: ReplayResult['states'] = [];
  let migrating = false;
  let listWhileSourceGone: string | null = null;
  const uuid = normalizeUuid(UUID_TEXT)!;

  const expectationFor = (ev: CaptureEvent, tok: CaptureToken): Expectation | null => {
    const host = () => hostOf(ev.connection);
    const ext = (code: number, pred: (payload: Buffer) => boolean = () => true) => () => host().ext.some((e) => e.code === code && pred(e.payload));
    switch (tok.kind) {
      case 'open':
        return null; // the TCP handshake's SYN-ACK
      case 'fin':
        return { what: 'vspc closes the connection (FIN)', required: true, host, met: () => host().ended || host().closed };
      case 'negotiation': {
        if (tok.option === Option.COM_PORT) {
          const verb = o.comPort ? DO : DONT;
          return {
            what: `${o.comPort ? 'DO' : 'DONT'} COM-PORT (the captured concentrator said ${tok.text})`,
            required: true,
            host,
            met: () => host().received.some((t) => t.type === 'negotiation' && t.option === Option.COM_PORT && t.verb === verb),
          };
        }
        return {
          what: tok.text,
          required: true,
          host,
          met: () => host().received.some((t) => t.type === 'negotiation' && t.option === tok.option && t.verb === tok.verb),
        };
      }
      case 'data':
        throw new Error(`line ${ev.line}: the concentrator sent serial data`);
      case 'ext':
        break;
    }
    switch (tok.code) {
      case Ext.KNOWN_SUBOPTIONS_2:
        return {
          what: 'KNOWN-SUBOPTIONS-2 listing every code the captured concentrator listed',
          required: true,
          host,
          met: ext(Ext.KNOWN_SUBOPTIONS_2, (p) => [...tok.payload].every((c) => p.includes(c))),
        };
      case Ext.GET_VM_VC_UUID:
      case Ext.GET_VM_NAME:
        // Asked after DO-PROXY; a vMotion destination sends no DO-PROXY and its identity unasked.
        return { what: tok.name, required: sentDoProxy.has(ev.connection), host, met: ext(tok.code) };
      case Ext.WILL_PROXY:
        return { what: 'WILL-PROXY', required: true, host, met: ext(Ext.WILL_PROXY) };
      case Ext.VMOTION_GOAHEAD: {
        const seq = lastBegin.get(ev.connection)!;
        const goahead = () => host().ext.find((e) => e.code === Ext.VMOTION_GOAHEAD && e.payload.subarray(0, seq.length).equals(seq));
        return {
          what: `VMOTION-GOAHEAD(${seq.toString('hex')} + secret)`,
          required: true,
          host,
          met: () => goahead() !== undefined,
          onMet: () => {
            const secret = Buffer.from(goahead()!.payload.subarray(seq.length));
            assert.equal(secret.length, o.secretBytes, `GOAHEAD(${seq.toString('hex')}) carries a ${o.secretBytes}-byte secret`);
            secrets.set(seq.toString('hex'), secret);
            migrating = true;
          },
        };
      }
      case Ext.VMOTION_NOTNOW:
        return {
          what: `VMOTION-NOTNOW(${tok.payload.toString('hex')})`,
          required: true,
          host,
          met: ext(Ext.VMOTION_NOTNOW, (p) => p.equals(tok.payload)),
          onMet: () => ts.server.vmotion.acceptNew(),
        };
      case Ext.VMOTION_PEER_OK:
        return { what: `VMOTION-PEER-OK(${tok.payload.toString('hex')})`, required: true, host, met: ext(Ext.VMOTION_PEER_OK, (p) => p.equals(tok.payload)) };
      default:
        throw new Error(`line ${ev.line}: no meaning known for the concentrator's ${tok.name}`);
    }
  };

  /** The segment's bytes as the host sends them now (VMOTION-PEER with vspc's secret). */
  const bytesOf = (ev: CaptureEvent): Buffer => {
    const parts: Buffer[] = [];
    for (const tok of ev.tokens) {
      if (tok.kind === 'ext' && tok.code === Ext.VMOTION_PEER) {
        const seq = begins.find((s) => tok.payload.subarray(0, s.length).equals(s));
        assert.ok(seq, `line ${ev.line}: VMOTION-PEER for a sequence no host began`);
        const secret = secrets.get(seq.toString('hex'));
        assert.ok(secret, `line ${ev.line}: vspc sent no secret for ${seq.toString('hex')}`);
        parts.push(encodeHostToken({ ...tok, payload: Buffer.concat([seq, secret]) })!);
        continue;
      }
      if (tok.kind === 'ext' && tok.code === Ext.DO_PROXY) sentDoProxy.add(ev.connection);
      if (tok.kind === 'ext' && tok.code === Ext.VMOTION_BEGIN) {
        lastBegin.set(ev.connection, tok.payload);
        begins.push(tok.payload);
      }
      if (tok.kind === 'data') data.push(tok.data);
      const b = encodeHostToken(tok);
      if (b) parts.push(b);
    }
    return Buffer.concat(parts);
  };

  /** vspc has handled everything `h` sent so far: its answer to an unknown subcommand. */
  const barrier = async (h: ReplayHost) => {
    const before = h.ext.filter((e) => e.code === Ext.UNKNOWN_SUBOPTION_RCVD_2).length;
    h.write(encodeHostToken({ kind: 'ext', code: BARRIER_CODE, name: 'BARRIER', payload: Buffer.alloc(0), text: '' })!);
    await h.until(() => h.ext.filter((e) => e.code === Ext.UNKNOWN_SUBOPTION_RCVD_2 && e.payload[0] === BARRIER_CODE).length > before, 'barrier answer');
  };

  for (const ev of events) {
    if (ev.direction === 'proxy') {
      for (const tok of ev.tokens) {
        const e = expectationFor(ev, tok);
        if (e) pending.push(e);
      }
      continue;
    }
    // 1. The concentrator's answers that come before this segment in the capture.
    for (const e of pending) {
      if (!e.required) continue;
      await e.host().until(e.met, `${e.what} (before line ${ev.line})`);
      e.onMet?.();
    }
    pending = [];
    // 2. The captured order across connections; and no-answer subcommands handled.
    if (previousHost) {
      const p = previousHost;
      const ph = hostOf(p.event.connection);
      const noAnswer = p.event.tokens.some((t) => t.kind === 'ext' && (t.code === Ext.VMOTION_COMPLETE || t.code === Ext.VMOTION_ABORT));
      if (p.fin && p.event.connection !== ev.connection) {
        await ts.logs.waitFor((l) => l.message === 'VM connection closed' && l.peer === ph.peerName, 5000, 0, `vspc saw ${p.event.connection} close`);
      } else if (!p.fin && (noAnswer || p.event.connection !== ev.connection)) {
        await barrier(ph);
      }
      if (noAnswer) migrating = false;
      if (p.fin && migrating && listWhileSourceGone === null) {
        listWhileSourceGone = (await vspcAdmin(ts.adminAddress, ['list'])).stdout;
      }
    }
    // 3. What the admin API says now, and a console client from the first serial byte on.
    const hub = ts.server.registry.get('esxi', uuid, '');
    if (hub) {
      const [row] = await ts.ports();
      states.push({ event: ev, state: row.state });
      assert.equal(row.state, migrating ? 'migrating' : 'connected', `state before line ${ev.line} (${ev.tokens.map(describeToken).join(' | ')})`);
    }
    if (!user && ev.tokens.some((t) => t.kind === 'data')) {
      assert.ok(hub, 'the VM serial port is registered before its first serial byte');
      user = await ts.connectUser(hub.identity.tcpPort);
      cleanup.add(() => user?.destroy());
      userMark = user.mark();
    }
    // The captured concentrator refused this BEGIN: make vspc refuse it too.
    const next = events.slice(ev.index + 1).find((x) => x.direction === 'proxy' && x.connection === ev.connection);
    if (next?.tokens.some((t) => t.kind === 'ext' && t.code === Ext.VMOTION_NOTNOW)) {
      ts.server.vmotion.refuseNew('replay: the captured concentrator refused this vMotion');
    }
    // 4. The segment itself: one write.
    const first = ev.tokens[0];
    if (first.kind === 'open') {
      assert.equal(ev.tokens.length, 1);
      const h = await ReplayHost.connect(ev.connection, ts.proxyPort);
      cleanup.add(() => h.destroy());
      hosts.set(ev.connection, h);
      previousHost = { event: ev, fin: false };
      continue;
    }
    if (first.kind === 'fin') {
      assert.equal(ev.tokens.length, 1);
      hostOf(ev.connection).fin();
      previousHost = { event: ev, fin: true };
      continue;
    }
    hostOf(ev.connection).write(bytesOf(ev));
    previousHost = { event: ev, fin: false };
  }
  // The concentrator's last answers (FIN to both hosts).
  for (const e of pending) {
    if (!e.required) continue;
    await e.host().until(e.met, `${e.what} (at the end)`);
    e.onMet?.();
  }
  assert.ok(user, 'a console client was attached');
  return { hosts, user, userMark, data: Buffer.concat(data), states, secrets, listWhileSourceGone };
}

describe('ESXi capture (test/fixtures/esxi-capture-vmotion.txt)', () => {
  test('parses into segments of two hosts on four connections: three vMotions, one NOTNOW, one ABORT', () => {
    const connections = new Set(EVENTS.map((e) => e.connection));
    assert.deepEqual([...connections], ['esxA:46351', 'esxB:54225', 'esxA:36073', 'esxB:60839']);
    const exts = (code: number) => EVENTS.flatMap((e) => e.tokens.filter((t) => t.kind === 'ext' && t.code === code));
    assert.equal(exts(Ext.VMOTION_BEGIN).length, 5);
    assert.equal(exts(Ext.VMOTION_GOAHEAD).length, 4);
    assert.equal(exts(Ext.VMOTION_COMPLETE).length, 3);
    assert.equal(exts(Ext.VMOTION_NOTNOW).length, 1);
    assert.equal(exts(Ext.VMOTION_ABORT).length, 1);
    // The captured secrets are 4 bytes after a 4-byte sequence.
    for (const t of exts(Ext.VMOTION_GOAHEAD)) assert.equal((t as { payload: Buffer }).payload.length, 8);
    const data = Buffer.concat(EVENTS.flatMap((e) => e.tokens.flatMap((t) => (t.kind === 'data' ? [t.data] : []))));
    assert.equal(data.length, 114, 'one byte per DATA segment');
    assert.equal(data.subarray(0, 3).toString('latin1'), ' !"');
    assert.ok(data.includes(Buffer.from('[\\]^_`')), 'backslash and quotes decoded');
    // One segment per line; several tokens where the capture had them in one segment.
    const peer = EVENTS.find((e) => e.tokens.some((t) => t.kind === 'ext' && t.code === Ext.VMOTION_PEER))!;
    assert.deepEqual(peer.tokens.map(describeToken), [
      'SB KNOWN-SUBOPTIONS-1 [0,1,2,3,40,41,43,44,45,46,48,70,71,73,80,81,84,85,86,87,82,83]',
      'SB VMOTION-PEER(44da87f13ce64dab)',
      'WILL COM-PORT',
    ]);
  });

  for (const comPort of [true, false]) {
    test(`replayed against vspc (${comPort ? 'default: COM-PORT agreed' : '--no-com-port, as the captured concentrator'}): every answer means what the captured one meant, and a console client sees exactly the serial bytes`, async (t) => {
      const { ts, cleanup } = await startServer(t, { config: { comPort } });
      const r = await replay(ts, EVENTS, { comPort, secretBytes: 8 }, cleanup);

      // The console client got every DATA byte once, in order, with nothing injected at
      // any vMotion; the only line vspc adds is for the final disconnect (the last
      // destination's FIN), after all the data.
      const expected = Buffer.concat([r.data, Buffer.from(NOTICE_DISCONNECTED, 'utf8')]);
      await r.user.waitFor(expected.length, 5000, r.userMark);
      assert.equal(r.user.received.subarray(r.userMark).toString('latin1'), expected.toString('latin1'));

      // The admin API said `migrating` from each GOAHEAD until its COMPLETE or ABORT,
      // also while the source had closed and the destination had not completed yet.
      assert.ok(r.states.filter((s) => s.state === 'migrating').length >= 4 * 2);
      assert.ok(r.listWhileSourceGone, 'vspc-admin list ran while the source had left mid-migration');
      assert.match(r.listWhileSourceGone!, /\bmigrating\b/);

      // vMotion bookkeeping: three completed, one aborted, one refused.
      const c = ts.server.vmotion.counters;
      assert.deepEqual({ begun: c.begun, completed: c.completed, aborted: c.aborted, refused: c.refused, badPeer: c['bad-peer'] }, {
        begun: 4,
        completed: 3,
        aborted: 1,
        refused: 1,
        badPeer: 0,
      });
      assert.equal(ts.server.vmotion.pending, 0);
      assert.equal(r.secrets.size, 4);
      assert.equal(new Set([...r.secrets.values()].map((s) => s.toString('hex'))).size, 4, 'a fresh secret per vMotion');

      // Nothing vspc sent contradicts the capture: no WONT-PROXY, no unknown-subcommand
      // report (except to the barriers), no GOAHEAD for the refused sequence, no data.
      for (const h of r.hosts.values()) {
        assert.equal(h.ext.filter((e) => e.code === Ext.WONT_PROXY).length, 0, `${h.name}: no WONT-PROXY`);
        assert.deepEqual(h.ext.filter((e) => e.code === Ext.UNKNOWN_SUBOPTION_RCVD_2 && e.payload[0] !== BARRIER_CODE), [], `${h.name}: every captured subcommand understood`);
        assert.equal(h.ext.filter((e) => e.code === Ext.VMOTION_GOAHEAD && e.payload.subarray(0, 4).equals(Buffer.from('cd526755', 'hex'))).length, 0);
        assert.equal(h.received.filter((tk) => tk.type === 'data').length, 0, `${h.name}: no serial data (nobody typed)`);
        assert.equal(h.received.filter((tk) => tk.type === 'negotiation' && tk.verb === WONT && tk.option !== Option.COM_PORT).length, 0);
        assert.ok(h.ended || h.closed, `${h.name}: closed at the end`);
      }
      // Destinations got PEER-OK without DO-PROXY, then served the console.
      assert.deepEqual(
        ['esxB:54225', 'esxA:36073', 'esxB:60839'].map((n) => r.hosts.get(n)!.ext.filter((e) => e.code === Ext.VMOTION_PEER_OK).length),
        [1, 1, 1],
      );
      assert.equal(ts.logs.filter((l) => l.security === true).length, 0, 'no security events');
    });
  }
});
