/**
 * Terminal queries taken out of replayed console output. Pure, sans-I/O; importable
 * from every layer.
 *
 * A console's scrollback is history. Some of what a VM prints asks the terminal a
 * question, and the terminal answers by *typing* the answer: busybox's shell prints
 * `ESC [ 6 n` (cursor position report) at every prompt and the terminal sends
 * `ESC [ row ; col R`. Replayed to a client that attaches, every old question is
 * answered again, and the answers reach the VM as input (`^[[5;8R` at the prompt, then
 * in the next replay). Answering a question from history is always wrong, so the
 * replay drops them; live output is never filtered (a program running now needs its
 * answer).
 *
 * The rule: the replay is parsed the way a terminal parses it (the DEC/xterm VT500
 * state machine, starting in the ground state, as the client's terminal does after the
 * greeting), and a sequence is removed whole when it is one a terminal answers:
 *
 * - ENQ (0x05: the answerback), wherever a terminal executes it (not inside strings,
 *   except one begun by a raw 1-byte C1 introducer: see str());
 * - DECID `ESC Z` (and C1 SCI 0x9A), an old form of DA;
 * - CSI (no intermediate byte): DSR `CSI Ps n` and `CSI ? Ps n` (every device status
 *   report: 5 n, 6 n, ? 6 n, ? 996 n, ...); DA `CSI c`, `CSI > c`, `CSI = c` (with
 *   parameters too); DECREQTPARM `CSI Ps x`; XTWINOPS reports `CSI Ps t` with Ps 11,
 *   13, 14, 15, 16, 18, 19, 20 or 21 (the other `CSI t` only act and stay); XTVERSION
 *   `CSI > Ps q`; kitty keyboard flags `CSI ? u`; XTQMODKEYS `CSI ? Pp m`;
 *   XTSMGRAPHICS `CSI ? Pi ; Pa ; Pv S`;
 * - CSI with one intermediate: DECRQM `CSI Ps $ p` and `CSI ? Ps $ p`, DECRQPSR `$ w`,
 *   DECRQTSR `$ u`, DECRQLP `' |`, DECRQCRA `* y`, DECRQDE `" v`, DECRQPKFM `+ x`,
 *   DECRQUPSS `& u`, DECRQKT `, u`;
 * - DCS: DECRQSS `DCS $ q ... ST` and XTGETTCAP `DCS + q ... ST` (sixel, `DCS ... q`
 *   with no intermediate, stays);
 * - OSC: any but 0, 1 and 2 (titles: free text) with a parameter after the command
 *   number that is exactly `?` — colour queries `OSC 4 ; n ; ?`, `OSC 10/11/12 ; ?`
 *   (5, 10–19), clipboard read `OSC 52 ; c ; ?` — and kitty's `OSC 21` with a
 *   `key=?` parameter.
 *
 * Everything else passes byte for byte: text (UTF-8 or not), colours and cursor
 * movement, modes, titles, other strings. Both 7-bit (`ESC [`, `ESC ]`, `ESC P`, ...)
 * and C1 introducers are understood: C1 as UTF-8 (`C2 9B` is CSI) and as a single
 * byte 0x80–0x9F that cannot be part of a UTF-8 character (a terminal in 8-bit mode
 * takes 0x9B as CSI). As in a terminal, ESC, CAN, SUB or a C1 control aborts a CSI
 * sequence; ESC or any C1 ends a string (ST is `ESC \`, `C2 9C` or 0x9C; BEL ends an
 * OSC); CAN and SUB cancel a string (never answered, kept); C0 controls inside an ESC
 * or CSI sequence are executed by a terminal, so they are kept when the sequence is
 * removed (and an ENQ among them removed).
 *
 * Edges:
 * - The replay may start mid-sequence (the ring dropped its beginning): the terminal
 *   reads those bytes as text, and so does this parse; a fragment can never become a
 *   query with what the replay puts after it, since both parses agree from the first
 *   byte.
 * - A sequence still open at the end (the VM was printing it as the client attached)
 *   is kept as it is: its end comes in the live output, which makes it live (removing
 *   `ESC [ 3` would turn the live `1m` into text).
 * - Bounded removal: a CSI or ESC sequence longer than MAX_QUERY_CSI_BYTES, or a string
 *   (OSC, DCS) longer than MAX_QUERY_STRING_BYTES, is never taken for a query and
 *   passes through. No real query is that long; terminals disagree about the ends of
 *   strings (some end a DCS at BEL), so an unbounded removal could hide a screenful of
 *   output from a terminal that ended the string sooner. A garbage stream's
 *   over-long "query" is answered as it would be live.
 *
 * - A query that aborted or ended the sequence before it (`ESC [ 1` cut short by
 *   `ESC [ 6 n`; `ESC ] 0 ; title` ended by it) is replaced by ST (`ESC \`), not by
 *   nothing: the bytes after it must not continue that sequence (`ESC ESC [ 6 n [ 6 n`
 *   would otherwise leave the new query `ESC [ 6 n`). The output, parsed again, has no
 *   query (the function is idempotent).
 * - C0 controls inside an ESC or CSI sequence do not count towards its bound (removing
 *   an ENQ from an over-long one must not make a query of it).
 *
 * Linear time (each byte is looked at a bounded number of times; no regular
 * expressions); memory: one output buffer of at most 1.5 × the input's size (ST
 * replacing a 1-byte C1 query), made only when something is removed — otherwise the
 * input itself is returned.
 */

/** The longest ESC or CSI sequence (bytes, introducer and final byte included) taken for a query. */
export const MAX_QUERY_CSI_BYTES = 256;
/** The longest OSC or DCS string (bytes, introducer and terminator included) taken for a query. */
export const MAX_QUERY_STRING_BYTES = 4096;

const ENQ = 0x05;
const BEL = 0x07;
const CAN = 0x18;
const SUB = 0x1a;
const ESC = 0x1b;
const DEL = 0x7f;

const OSC = 1;
const DCS = 2;
/** SOS, PM, APC: strings no terminal answers. */
const OTHER_STRING = 3;

/**
 * CSI queries by `prefix + intermediate + final` (at most one intermediate; the
 * prefix is the private marker `<`, `=`, `>` or `?` before the parameters). `t` is
 * decided by its first parameter (XTWINOPS_REPORTS).
 */
const CSI_QUERIES = new Set([
  'n', '?n', // DSR, DECXCPR and the other device status reports
  'c', '>c', '=c', // DA1, DA2, DA3
  'x', // DECREQTPARM
  '>q', // XTVERSION
  '?u', // kitty keyboard protocol: report flags
  '?m', // XTQMODKEYS
  '?S', // XTSMGRAPHICS
  '$p', '?$p', // DECRQM (ANSI, DEC private)
  '$w', // DECRQPSR
  '$u', // DECRQTSR
  "'|", // DECRQLP
  '*y', // DECRQCRA
  '"v', // DECRQDE
  '+x', // DECRQPKFM
  '&u', // DECRQUPSS
  ',u', // DECRQKT
]);

/** XTWINOPS `CSI Ps t` whose Ps asks for a report (the others resize, move, iconify, push/pop titles). */
const XTWINOPS_REPORTS = new Set([11, 13, 14, 15, 16, 18, 19, 20, 21]);

/**
 * `input` without the terminal queries it holds (the rule above): for a replay of old
 * console output. Returns `input` itself when there is none, else a new buffer.
 */
export function stripTerminalQueries(input: Buffer): Buffer {
  const len = input.length;
  let out: Buffer | null = null;
  let n = 0;
  /** input[from, i) is still to be copied to `out`. */
  let from = 0;
  /**
   * Where the last sequence that did not end by itself ended: one aborted by the
   * introducer at this index (`ESC [ 1` then `ESC [ 6 n`), or a string the introducer
   * terminated (`ESC ] 0 ; title` then `ESC [ 6 n`). Removing a query that starts
   * here would let the bytes after it continue that sequence (`ESC` + `[6n` left after
   * `ESC ESC [ 6 n [ 6 n` is a new query), so the query is replaced by ST (`ESC \`),
   * which ends or aborts it as the query's introducer did and does nothing else.
   */
  let openEnd = -1;

  const flushTo = (s: number): void => {
    // ST replacing a 1-byte query after a 1-byte open sequence (raw C1 9D 9A) is the worst case: 3 bytes for 2.
    out ??= Buffer.allocUnsafe(len + (len >> 1) + 2);
    if (s > from) {
      input.copy(out, n, from, s);
      n += s - from;
    }
    from = s;
  };
  /** Removes input[s, e); C0 controls in [s, exec) a terminal would execute stay (not ENQ). */
  const drop = (s: number, e: number, exec: number): void => {
    flushTo(s);
    if (s === openEnd) {
      out![n++] = ESC;
      out![n++] = 0x5c;
    }
    for (let k = s; k < exec; k++) {
      const b = input[k];
      if (b < 0x20 && b !== ENQ && b !== ESC && b !== CAN && b !== SUB) out![n++] = b;
    }
    from = e;
  };
  /** Keeps input[s, e), less any ENQ in [s, exec) (executed there: an answerback). */
  const keep = (s: number, e: number, exec: number): void => {
    let k = s;
    while (k < exec && input[k] !== ENQ) k++;
    if (k === exec) return; // stays pending: copied with what follows
    flushTo(s);
    for (k = s; k < e; k++) {
      if (k < exec && input[k] === ENQ) continue;
      out![n++] = input[k];
    }
    from = e;
  };

  /** True when input[i] (0x80–0xBF) continues a UTF-8 character begun just before it. */
  const continues = (i: number): boolean => {
    let k = i;
    while (k > 0 && i - k < 3 && input[k - 1] >= 0x80 && input[k - 1] <= 0xbf) k--;
    if (k === 0) return false;
    const lead = input[k - 1];
    const need = lead >= 0xc2 && lead <= 0xdf ? 1 : lead >= 0xe0 && lead <= 0xef ? 2 : lead >= 0xf0 && lead <= 0xf4 ? 3 : 0;
    return i - (k - 1) <= need;
  };
  /** The C1 control at i: its code (0x80–0x9F) plus 0x100 × its length in bytes (2 in UTF-8, 1 raw), or -1. */
  const c1At = (i: number): number => {
    const b = input[i];
    if (b === 0xc2) {
      const c = i + 1 < len ? input[i + 1] : 0;
      return c >= 0x80 && c <= 0x9f ? c | 0x200 : -1;
    }
    return b >= 0x80 && b <= 0x9f && !continues(i) ? b | 0x100 : -1;
  };

  /** A CSI sequence from s whose parameters start at j. Returns where to go on. */
  const csi = (s: number, j: number, ctl: number): number => {
    let prefix = 0;
    let first = true;
    let ignore = false;
    let inter = 0;
    let inters = 0;
    let param = 0;
    let inParam = true;
    for (; j < len; j++) {
      const b = input[j];
      if (b === ESC || (b >= 0x80 && c1At(j) >= 0)) {
        keep(s, j, j); // aborted: the new sequence starts at j
        openEnd = j;
        return j;
      }
      if (b === CAN || b === SUB) {
        keep(s, j + 1, j + 1);
        return j + 1;
      }
      if (b < 0x20 || b === DEL) {
        ctl++; // executed (C0) or ignored (DEL) by the terminal; not counted in the bound
        continue;
      }
      if (b >= 0x80) {
        keep(s, j, j); // not part of a control sequence: the sequence ends here
        return j;
      }
      if (b >= 0x40) {
        const e = j + 1;
        const key = (prefix ? String.fromCharCode(prefix) : '') + (inters === 1 ? String.fromCharCode(inter) : '') + String.fromCharCode(b);
        const query =
          !ignore && inters <= 1 && e - s - ctl <= MAX_QUERY_CSI_BYTES && (CSI_QUERIES.has(key) || (key === 't' && XTWINOPS_REPORTS.has(param)));
        if (query) drop(s, e, e);
        else keep(s, e, e);
        return e;
      }
      if (b >= 0x30) {
        if (inters > 0) ignore = true;
        else if (b >= 0x3c) {
          if (first) prefix = b;
          else ignore = true; // a private marker after parameters: not dispatched (VT500 csi_ignore)
        } else if (inParam) {
          if (b <= 0x39) param = Math.min(param * 10 + (b - 0x30), 1_000_000);
          else inParam = false;
        }
        first = false;
      } else {
        if (inters === 0) inter = b;
        inters++;
      }
    }
    keep(s, len, len); // open at the end: finished by live output
    return len;
  };

  /** An OSC, DCS, SOS, PM or APC string from s whose body starts at j. */
  const str = (s: number, j: number, kind: number, ctl: number): number => {
    // An ENQ in the body is not executed, so it stays; but a raw 1-byte C1 introducer
    // is one only because of the bytes before it: removing a query or an ENQ there can
    // splice it onto a UTF-8 lead (E2 [ENQ] 80 9D -> E2 80 9D, the character U+201D),
    // and the body is then text, its ENQ answered. So an ENQ in such a body goes too.
    const raw = input[s] >= 0x80 && input[s] <= 0x9f;
    const exec = j;
    const enqTo = (e: number): number => (raw ? e : exec);
    // DCS header (parameters, intermediates, final byte) before the data.
    let header = kind === DCS;
    let prefix = 0;
    let inter = 0;
    let inters = 0;
    let ignore = false;
    let dcsQuery = false;
    // OSC parameters: the command number, then fields separated by `;`.
    let cmd = 0;
    let field = 0;
    let fieldLen = 0;
    let last = 0;
    let beforeLast = 0;
    let oscQuery = false;
    const endField = (): void => {
      if (field === 0) return;
      if (fieldLen === 1 && last === 0x3f && cmd > 2) oscQuery = true;
      if (cmd === 21 && fieldLen >= 2 && last === 0x3f && beforeLast === 0x3d) oscQuery = true;
    };
    const finish = (e: number): number => {
      if (kind === OSC) endField();
      const query = (kind === OSC ? oscQuery : dcsQuery) && e - s - ctl <= MAX_QUERY_STRING_BYTES;
      if (query) drop(s, e, exec);
      else keep(s, e, enqTo(e));
      return e;
    };
    for (; j < len; j++) {
      const b = input[j];
      if (b === ESC) {
        // ESC ends a string: with `\` it is ST, else it begins the next sequence.
        if (j + 1 < len && input[j + 1] === 0x5c) return finish(j + 2);
        finish(j);
        openEnd = j;
        return j;
      }
      if (b >= 0x80) {
        const c1 = c1At(j);
        if (c1 >= 0 && (c1 & 0xff) === 0x9c) return finish(j + (c1 >> 8));
        if (c1 >= 0) {
          finish(j);
          openEnd = j;
          return j;
        }
      }
      if (b === CAN || b === SUB) {
        keep(s, j + 1, enqTo(j + 1)); // cancelled: never answered
        return j + 1;
      }
      if (kind === OSC) {
        if (b === BEL) return finish(j + 1);
        if (b === 0x3b) {
          endField();
          if (field === 0 && fieldLen === 0) cmd = -1;
          field++;
          fieldLen = 0;
          last = beforeLast = 0;
          continue;
        }
        if (field === 0) {
          if (b >= 0x30 && b <= 0x39 && cmd >= 0) cmd = Math.min(cmd * 10 + (b - 0x30), 1_000_000);
          else cmd = -1;
        }
        fieldLen++;
        beforeLast = last;
        last = b;
      } else if (header) {
        if (b < 0x20 || b === DEL) continue;
        if (b >= 0x40 && b <= 0x7e) {
          header = false;
          dcsQuery = !ignore && prefix === 0 && inters === 1 && (inter === 0x24 || inter === 0x2b) && b === 0x71; // $q, +q
        } else if (b >= 0x30 && b <= 0x3f) {
          if (inters > 0) ignore = true;
          else if (b >= 0x3c) prefix = b;
        } else if (b >= 0x20 && b <= 0x2f) {
          if (inters === 0) inter = b;
          inters++;
        } else {
          header = false; // not a DCS header: data the terminal ignores
        }
      }
    }
    keep(s, len, enqTo(len)); // open at the end: finished by live output
    return len;
  };

  /** Whatever begins with the C1 control `c1` (c1At's value) at s. */
  const fromC1 = (s: number, c1: number): number => {
    const j = s + (c1 >> 8);
    switch (c1 & 0xff) {
      case 0x9b:
        return csi(s, j, 0);
      case 0x9d:
        return str(s, j, OSC, 0);
      case 0x90:
        return str(s, j, DCS, 0);
      case 0x98:
      case 0x9e:
      case 0x9f:
        return str(s, j, OTHER_STRING, 0);
      case 0x9a: // SCI, DECID's C1 form: answered like DA
        drop(s, j, j);
        return j;
      default:
        return j;
    }
  };

  /** An ESC sequence from s (input[s] is ESC). */
  const esc = (s: number): number => {
    let inters = 0;
    let ctl = 0;
    for (let j = s + 1; j < len; j++) {
      const b = input[j];
      if (b === ESC || (b >= 0x80 && c1At(j) >= 0)) {
        keep(s, j, j);
        openEnd = j;
        return j;
      }
      if (b === CAN || b === SUB) {
        keep(s, j + 1, j + 1);
        return j + 1;
      }
      if (b < 0x20 || b === DEL) {
        ctl++;
        continue;
      }
      if (b >= 0x80) {
        keep(s, j, j);
        return j;
      }
      if (b <= 0x2f) {
        inters++;
        continue;
      }
      // (The bounds count from the ESC: see csi() and str().)
      if (inters === 0) {
        if (b === 0x5b) return csi(s, j + 1, ctl);
        if (b === 0x5d) return str(s, j + 1, OSC, ctl);
        if (b === 0x50) return str(s, j + 1, DCS, ctl);
        if (b === 0x58 || b === 0x5e || b === 0x5f) return str(s, j + 1, OTHER_STRING, ctl);
        if (b === 0x5a && j + 1 - s - ctl <= MAX_QUERY_CSI_BYTES) {
          drop(s, j + 1, j + 1); // DECID
          return j + 1;
        }
      }
      keep(s, j + 1, j + 1);
      return j + 1;
    }
    keep(s, len, len);
    return len;
  };
  let i = 0;
  while (i < len) {
    const b = input[i];
    if (b === ESC) i = esc(i);
    else if (b === ENQ) {
      drop(i, i + 1, i + 1);
      i++;
    } else if (b >= 0x80) {
      const c1 = c1At(i);
      i = c1 >= 0 ? fromC1(i, c1) : i + 1;
    } else i++;
  }
  if (out === null) return input;
  flushTo(len);
  return (out as Buffer).subarray(0, n);
}
