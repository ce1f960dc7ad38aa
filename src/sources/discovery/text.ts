/**
 * Display names read from untrusted files (VM confs, domain XML, matched paths): the
 * project's one sanitiser (util/text.ts: controls, bidi and other format characters,
 * line separators become `?`), plus what a name needs on top: surrounding whitespace
 * trimmed, the length bounded in code points (never splitting a surrogate pair), and
 * null for nothing. Linear in the input.
 */
import { sanitizeText } from '../../util/text.js';

/** Longest display name kept, in code points. */
export const MAX_NAME_LENGTH = 256;

/** The name made safe to print, trimmed and bounded; null when nothing is left. */
export function sanitizeName(text: string, maxLength = MAX_NAME_LENGTH): string | null {
  // Trim first, so that a line's own CR/LF or tabs do not become '?'.
  const safe = sanitizeText(text.trim());
  let out = '';
  let count = 0;
  for (const ch of safe) {
    if (count === maxLength) break;
    out += ch;
    count++;
  }
  out = out.trim();
  return out === '' ? null : out;
}
