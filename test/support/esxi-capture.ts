/**
 * Parses a decoded ESXi ⇄ concentrator packet capture (test/fixtures/esxi-capture-*.txt)
 * into events, and encodes the hosts' tokens back into wire bytes for a replay.
 *
 * The format (see the fixture's header): one line per TCP segment,
 * `<ms since the first packet> <src> > <dst> <tokens>`, tokens separated by `|`:
 * `[S]` (connection opened), `[F]` (FIN), `WILL|WONT|DO|DONT <option>`,
 * `SB <option-232 subcommand>` with an optional payload (`[1,2,3]` a list of codes,
 * `("text")`, `(hex)`), and `DATA(b'...')` (a Python bytes literal). Lines starting
 * with `#` are the header.
 */
import { encodeData, encodeNegotiation, encodeSubnegotiation, Option, DO, DONT, WILL, WONT, type NegotiationVerb } from '../../src/protocol/telnet/index.js';
import { Ext } from '../../src/protocol/vmware/codes.js';

export type CaptureToken =
  | { kind: 'open' }
  | { kind: 'fin' }
  | { kind: 'negotiation'; verb: NegotiationVerb; option: number; text: string }
  | { kind: 'ext'; code: number; name: string; payload: Buffer; text: string }
  | { kind: 'data'; data: Buffer };

export interface CaptureEvent {
  /** Position in the capture, from 0. */
  index: number;
  /** Line number in the file, from 1 (for messages). */
  line: number;
  /** ms since the first packet (informative: a replay does not wait on it). */
  timeMs: number;
  from: string;
  to: string;
  /** The ESXi end of the TCP connection (`esxA:46351`): names the connection. */
  connection: string;
  /** `host`: the ESXi host sent this segment; `proxy`: the concentrator did. */
  direction: 'host' | 'proxy';
  /** The tokens of one TCP segment, in wire order. */
  tokens: CaptureToken[];
}

/** Option names as the capture writes them. */
export const CAPTURE_OPTIONS: Readonly<Record<string, number>> = {
  AUTH: Option.AUTHENTICATION,
  BINARY: Option.BINARY,
  SGA: Option.SGA,
  ECHO: Option.ECHO,
  'VMW-EXT': Option.VMWARE_EXT,
  'COM-PORT': Option.COM_PORT,
};

const VERBS: Readonly<Record<string, NegotiationVerb>> = { WILL, WONT, DO, DONT };

/** The option-232 code of a capture name (`VMOTION-PEER-OK` → 45). */
export function extCode(name: string): number {
  const code = (Ext as Record<string, number>)[name.replace(/-/g, '_')];
  if (code === undefined) throw new Error(`unknown option-232 subcommand ${name}`);
  return code;
}

/** A Python bytes literal body (between the quotes) → bytes. */
export function pythonBytes(body: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c !== '\\') {
      out.push(c.charCodeAt(0));
      continue;
    }
    const n = body[++i];
    const simple: Record<string, number> = { '\\': 0x5c, "'": 0x27, '"': 0x22, n: 0x0a, r: 0x0d, t: 0x09, '0': 0x00 };
    if (n === 'x') {
      out.push(parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (n in simple) out.push(simple[n]);
    else throw new Error(`unsupported escape \\${n} in b'${body}'`);
  }
  return Buffer.from(out);
}

const TOKEN =
  /\[S\]|\[F\]|(WILL|WONT|DO|DONT) ([A-Z-]+)|SB ([A-Z0-9-]+)(?: \[([\d,]*)\]|\("([^"]*)"\)|\(([0-9a-f]*)\))?|DATA\(b(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\)/y;
const SEPARATOR = /\s*\|\s*/y;

/** One segment's token text → tokens. Throws on anything it does not understand. */
export function parseTokens(text: string): CaptureToken[] {
  const tokens: CaptureToken[] = [];
  let pos = 0;
  for (;;) {
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (!m) throw new Error(`cannot parse token at ${JSON.stringify(text.slice(pos))}`);
    pos = TOKEN.lastIndex;
    if (m[0] === '[S]') tokens.push({ kind: 'open' });
    else if (m[0] === '[F]') tokens.push({ kind: 'fin' });
    else if (m[1]) {
      const option = CAPTURE_OPTIONS[m[2]];
      if (option === undefined) throw new Error(`unknown option ${m[2]}`);
      tokens.push({ kind: 'negotiation', verb: VERBS[m[1]], option, text: m[0] });
    } else if (m[3]) {
      let payload = Buffer.alloc(0);
      if (m[4] !== undefined) payload = Buffer.from(m[4] === '' ? [] : m[4].split(',').map(Number));
      else if (m[5] !== undefined) payload = Buffer.from(m[5], 'utf8');
      else if (m[6] !== undefined) payload = Buffer.from(m[6], 'hex');
      tokens.push({ kind: 'ext', code: extCode(m[3]), name: m[3], payload, text: m[0] });
    } else {
      tokens.push({ kind: 'data', data: pythonBytes(m[7] ?? m[8]) });
    }
    if (pos === text.length) return tokens;
    SEPARATOR.lastIndex = pos;
    if (!SEPARATOR.exec(text)) throw new Error(`expected "|" at ${JSON.stringify(text.slice(pos))}`);
    pos = SEPARATOR.lastIndex;
  }
}

const LINE = /^\s*(\d+\.\d+)\s+(\S+)\s+>\s+(\S+)\s+(.*?)\s*$/;

/**
 * The whole capture → events in file order. `proxyName` is the concentrator's
 * address prefix (`proxy`); the other end of each segment names the connection.
 */
export function parseCapture(text: string, proxyName = 'proxy'): CaptureEvent[] {
  const events: CaptureEvent[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '' || raw.startsWith('#')) return;
    const m = LINE.exec(raw);
    if (!m) throw new Error(`line ${i + 1}: cannot parse ${JSON.stringify(raw)}`);
    const [, time, from, to, rest] = m;
    const fromProxy = from.startsWith(`${proxyName}:`);
    if (!fromProxy && !to.startsWith(`${proxyName}:`)) throw new Error(`line ${i + 1}: neither end is ${proxyName}`);
    let tokens: CaptureToken[];
    try {
      tokens = parseTokens(rest);
    } catch (err) {
      throw new Error(`line ${i + 1}: ${(err as Error).message}`);
    }
    events.push({
      index: events.length,
      line: i + 1,
      timeMs: Number(time),
      from,
      to,
      connection: fromProxy ? to : from,
      direction: fromProxy ? 'proxy' : 'host',
      tokens,
    });
  });
  return events;
}

/**
 * A token as wire bytes, as a host sends it: data escaped for BINARY (ESXi agrees to
 * BINARY both ways before any serial data flows), option-232 payloads escaped.
 * `open` and `fin` are not bytes and return null.
 */
export function encodeHostToken(token: CaptureToken): Buffer | null {
  switch (token.kind) {
    case 'open':
    case 'fin':
      return null;
    case 'negotiation':
      return encodeNegotiation(token.verb, token.option);
    case 'ext':
      return encodeSubnegotiation(Option.VMWARE_EXT, Buffer.concat([Buffer.of(token.code), token.payload]));
    case 'data':
      return encodeData(token.data, true);
  }
}

/** A token as the capture writes it (for messages). */
export function describeToken(token: CaptureToken): string {
  switch (token.kind) {
    case 'open':
      return '[S]';
    case 'fin':
      return '[F]';
    case 'negotiation':
    case 'ext':
      return token.text;
    case 'data':
      return `DATA(${JSON.stringify(token.data.toString('latin1'))})`;
  }
}
