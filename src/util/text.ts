/**
 * Untrusted text on operators' screens. Pure; importable from every layer.
 *
 * A VM names itself, a console client names its user, a hypervisor config names a VM:
 * all of it ends up in tables, log lines, console-log headers and notices that people
 * read in a terminal. Two kinds of characters must never get there:
 *
 * - controls: C0 (U+0000-U+001F), DEL, and C1 (U+0080-U+009F) — xterm-family terminals
 *   take U+009B as CSI and U+009D as OSC, so a name can move the cursor, set the window
 *   title or write the clipboard (OSC 52);
 * - invisible formatting: bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069),
 *   marks (U+200E/F), zero-width characters, line/paragraph separators — "Trojan
 *   Source"-style text that reads differently from what it is (CVE-2021-42574).
 *
 * `sanitizeText` is applied once, where such text enters vspc (protocol decoders,
 * discovery, stored records); everything downstream can print it.
 */

/**
 * The longest name vspc keeps, in code points: a VM's VM-NAME, a discovered console's
 * name. VMware allows 80 characters; a longer name is a hostile one (each costs every
 * list, table and pattern that shows or matches it).
 */
export const MAX_NAME_LENGTH = 256;

/** The marker a cut name ends with. */
export const TRUNCATION_MARKER = '…';

/**
 * `text` with at most `max` code points: when longer, the first `max - 1` and `…`
 * (never splitting a surrogate pair). Linear time.
 */
export function truncateText(text: string, max = MAX_NAME_LENGTH): string {
  if (text.length <= max) return text; // UTF-16 units are at least the code points
  const kept: string[] = [];
  for (const ch of text) {
    if (kept.length === max) return `${kept.slice(0, max - 1).join('')}${TRUNCATION_MARKER}`;
    kept.push(ch);
  }
  return text;
}

/** Unicode controls (Cc), format characters (Cf: bidi, zero-width, ...), line and paragraph separators. */
const UNSAFE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;

/** True when `text` has a character `sanitizeText` would replace. */
export function hasUnsafeText(text: string): boolean {
  UNSAFE.lastIndex = 0;
  const found = UNSAFE.test(text);
  UNSAFE.lastIndex = 0;
  return found;
}

/** Replaces every control and invisible formatting character with `?`. Linear time. */
export function sanitizeText(text: string): string {
  return text.replace(UNSAFE, '?');
}

const ESC = 0x1b;
const BEL = 0x07;
/** The byte after ESC that opens a string: ] OSC, P DCS, _ APC, ^ PM, X SOS. */
const STRING_INTRODUCERS = new Set([0x5d, 0x50, 0x5f, 0x5e, 0x58]);

/**
 * Console bytes for a terminal, minus what a terminal would act on beyond drawing:
 * OSC, DCS, APC, PM and SOS strings (`ESC ]`, `ESC P`, `ESC _`, `ESC ^`, `ESC X`, up to
 * BEL or ST) — window titles, clipboard writes (OSC 52), hyperlinks, device control —
 * are dropped whole, and C1 controls in UTF-8 (C2 80-C2 9F: U+009B CSI, U+009D OSC, ...)
 * become `?`. CSI sequences (colours, cursor movement: what a console draws with) and
 * everything else pass unchanged. A string left open at the end of the input is dropped
 * to the end (a later call starts fresh). Linear time; `vspc-admin log` uses it when
 * its output is a terminal (`--raw` gives the exact bytes).
 */
export function neutralizeTerminalStrings(input: Buffer): Buffer {
  const out = Buffer.allocUnsafe(input.length);
  let n = 0;
  let inString = false;
  for (let i = 0; i < input.length; i++) {
    const b = input[i];
    if (inString) {
      // A string ends with BEL (xterm) or ST (ESC \); C1 ST (U+009C) ends it too.
      if (b === BEL) inString = false;
      else if (b === ESC && input[i + 1] === 0x5c) {
        inString = false;
        i++;
      } else if (b === 0xc2 && input[i + 1] === 0x9c) {
        inString = false;
        i++;
      }
      continue;
    }
    if (b === ESC) {
      if (STRING_INTRODUCERS.has(input[i + 1])) {
        inString = true;
        i++;
        continue;
      }
    } else if (b === 0xc2 && input[i + 1] !== undefined && input[i + 1] >= 0x80 && input[i + 1] <= 0x9f) {
      // A C1 control encoded in UTF-8: never pass it; its string forms start strings.
      const c1 = input[i + 1];
      i++;
      if (c1 === 0x9d || c1 === 0x90 || c1 === 0x9f || c1 === 0x9e || c1 === 0x98) {
        inString = true;
        continue;
      }
      out[n++] = 0x3f;
      continue;
    }
    // A dropped string must not splice what surrounds it into a new introducer
    // (ESC <dropped string> ] → ESC ]; C2 <dropped string> 9D → C1 OSC).
    const prev = n > 0 ? out[n - 1] : -1;
    if ((prev === ESC && STRING_INTRODUCERS.has(b)) || (prev === 0xc2 && b >= 0x80 && b <= 0x9f)) {
      out[n++] = 0x3f;
      continue;
    }
    out[n++] = b;
  }
  return out.subarray(0, n);
}
