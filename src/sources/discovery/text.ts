/**
 * Sanitising names read from untrusted files (VM confs, domain XML) before they reach
 * logs, `vspc-admin list` or a terminal: control characters and the invisible
 * characters that reorder or hide text (bidi embeddings, overrides and isolates,
 * direction marks) are dropped, whitespace runs at the ends trimmed, and the length
 * bounded in code points (never splitting a surrogate pair). Linear in the input.
 */

/** True for code points a display name must not carry. */
export function isUnsafeCodePoint(cp: number): boolean {
  return (
    cp <= 0x1f || // C0 controls (NUL, ESC, CR, LF, TAB...)
    (cp >= 0x7f && cp <= 0x9f) || // DEL and C1 controls (CSI 0x9b...)
    cp === 0x061c || // ARABIC LETTER MARK (bidi)
    cp === 0x200e ||
    cp === 0x200f || // LRM, RLM
    (cp >= 0x2028 && cp <= 0x202e) || // LINE/PARAGRAPH SEPARATOR, LRE RLE PDF LRO RLO
    (cp >= 0x2066 && cp <= 0x2069) || // LRI RLI FSI PDI
    cp === 0xfeff || // BOM / ZERO WIDTH NO-BREAK SPACE
    (cp >= 0xd800 && cp <= 0xdfff) // lone surrogates (for...of yields them unpaired)
  );
}

/** Longest display name kept, in code points. */
export const MAX_NAME_LENGTH = 256;

/** The name without unsafe characters, trimmed and bounded; null when nothing is left. */
export function sanitizeName(text: string, maxLength = MAX_NAME_LENGTH): string | null {
  let out = '';
  let count = 0;
  for (const ch of text) {
    if (isUnsafeCodePoint(ch.codePointAt(0) as number)) continue;
    if (count === maxLength) break;
    out += ch;
    count++;
  }
  out = out.trim();
  return out === '' ? null : out;
}
