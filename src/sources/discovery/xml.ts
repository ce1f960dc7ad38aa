/**
 * A small, tolerant, linear-time XML scanner for the few elements discovery reads from
 * libvirt's domain XML. Not a validating parser: it reports start tags (with
 * attributes), end tags and text to a handler, together with the path of open
 * elements, and gives up with a reason on input it cannot make sense of.
 *
 * Untrusted input rules: every character is looked at a bounded number of times (the
 * delimiters are found with indexOf from a position that only moves forward), no
 * regular expression runs over the input, and the number of elements, attributes per
 * element and nesting depth are bounded. Comments, processing instructions, CDATA
 * and DOCTYPE declarations are skipped (CDATA is reported as text). The five named
 * entities and numeric character references are decoded; any other entity is kept as
 * written (no entity expansion, hence no "billion laughs").
 *
 * Tolerance: an end tag that does not match the innermost element closes up to the
 * nearest open element of that name (or is ignored if none is open). An element still
 * open at the end of the input is an error: a truncated file must not look like a
 * domain with fewer devices.
 */

export interface XmlLimits {
  /** Start tags in the whole document. */
  maxElements: number;
  maxDepth: number;
  maxAttributes: number;
}

export const DEFAULT_XML_LIMITS: XmlLimits = { maxElements: 200_000, maxDepth: 128, maxAttributes: 64 };

export interface XmlHandler {
  /** `path` holds the names of the open ancestors (outermost first), not this element. */
  open?(name: string, attributes: ReadonlyMap<string, string>, path: readonly string[]): void;
  /** Called for every element, self-closing ones included; `path` as in `open`. */
  close?(name: string, path: readonly string[]): void;
  /** Character data (entities decoded) inside the element whose path is given. */
  text?(text: string, path: readonly string[]): void;
}

export type XmlScanResult = { ok: true; elements: number } | { ok: false; error: string; offset: number };

class XmlSyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

const NAMED_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/** Name characters: letters, digits and `-_.:` (ASCII), anything beyond ASCII. */
function isNameChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x30 && c <= 0x39) ||
    c === 0x2d ||
    c === 0x5f ||
    c === 0x2e ||
    c === 0x3a ||
    c > 0x7f
  );
}

/** Decodes `&lt;`-style and numeric references; unknown ones stay as written. Linear. */
export function decodeEntities(s: string): string {
  let amp = s.indexOf('&');
  if (amp < 0) return s;
  let out = '';
  let from = 0;
  while (amp >= 0) {
    // Entities are short: look for ';' within a small window only (keeps this linear).
    let semi = -1;
    for (let k = amp + 1; k < s.length && k <= amp + 12; k++) {
      if (s.charCodeAt(k) === 0x3b) {
        semi = k;
        break;
      }
    }
    const decoded = semi < 0 ? null : decodeReference(s.slice(amp + 1, semi));
    if (decoded === null) {
      amp = s.indexOf('&', amp + 1);
      continue;
    }
    out += s.slice(from, amp) + decoded;
    from = semi + 1;
    amp = s.indexOf('&', from);
  }
  return out + s.slice(from);
}

/** `lt` → '<', `#65` → 'A', `#x42` → 'B'; null when not a reference we decode. */
function decodeReference(body: string): string | null {
  if (Object.hasOwn(NAMED_ENTITIES, body)) return NAMED_ENTITIES[body];
  if (body.charCodeAt(0) !== 0x23 /* # */) return null;
  const hex = body.charCodeAt(1) === 0x78 || body.charCodeAt(1) === 0x58;
  const digits = body.slice(hex ? 2 : 1);
  if (digits === '') return null;
  let cp = 0;
  for (let i = 0; i < digits.length; i++) {
    const d = hex ? parseInt(digits[i], 16) : digits.charCodeAt(i) - 0x30;
    if (Number.isNaN(d) || d < 0 || d > (hex ? 15 : 9)) return null;
    cp = cp * (hex ? 16 : 10) + d;
  }
  return cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? '\ufffd' : String.fromCodePoint(cp);
}

/** Scans `text`, calling `handler`; never throws on bad input (a throwing handler propagates). */
export function scanXml(text: string, handler: XmlHandler, limits: XmlLimits = DEFAULT_XML_LIMITS): XmlScanResult {
  const path: string[] = [];
  let elements = 0;
  const n = text.length;
  let i = 0;

  const emitText = (from: number, to: number, raw = false): void => {
    if (to <= from || !handler.text) return;
    const t = text.slice(from, to);
    handler.text(raw ? t : decodeEntities(t), path);
  };

  const closeElement = (name: string): void => {
    path.pop();
    handler.close?.(name, path);
  };

  try {
    while (i < n) {
      const lt = text.indexOf('<', i);
      if (lt < 0) {
        emitText(i, n);
        break;
      }
      emitText(i, lt);
      if (text.startsWith('<!--', lt)) {
        const end = text.indexOf('-->', lt + 4);
        if (end < 0) throw new XmlSyntaxError('unterminated comment', lt);
        i = end + 3;
      } else if (text.startsWith('<![CDATA[', lt)) {
        const end = text.indexOf(']]>', lt + 9);
        if (end < 0) throw new XmlSyntaxError('unterminated CDATA section', lt);
        emitText(lt + 9, end, true);
        i = end + 3;
      } else if (text.startsWith('<?', lt)) {
        const end = text.indexOf('?>', lt + 2);
        if (end < 0) throw new XmlSyntaxError('unterminated processing instruction', lt);
        i = end + 2;
      } else if (text.startsWith('<!', lt)) {
        // DOCTYPE (with an internal subset in [...]) or another declaration: skipped.
        const bracket = text.indexOf('[', lt + 2);
        let gt = text.indexOf('>', lt + 2);
        if (bracket >= 0 && gt > bracket) {
          const close = text.indexOf(']', bracket + 1);
          gt = close < 0 ? -1 : text.indexOf('>', close + 1);
        }
        if (gt < 0) throw new XmlSyntaxError('unterminated declaration', lt);
        i = gt + 1;
      } else if (text.charCodeAt(lt + 1) === 0x2f /* / */) {
        const gt = text.indexOf('>', lt + 2);
        if (gt < 0) throw new XmlSyntaxError('unterminated end tag', lt);
        const name = text.slice(lt + 2, gt).trim();
        const at = path.lastIndexOf(name);
        // Tolerated: a stray end tag is ignored, a missing one implied.
        if (at >= 0) while (path.length > at) closeElement(path[path.length - 1]);
        i = gt + 1;
      } else {
        i = startTag(lt);
      }
    }
    if (path.length > 0) throw new XmlSyntaxError(`unterminated element <${path[path.length - 1]}>`, n);
    return { ok: true, elements };
  } catch (err) {
    if (err instanceof XmlSyntaxError) return { ok: false, error: err.message, offset: err.offset };
    throw err;
  }

  /** Parses the start tag at `lt`; returns the index after it. */
  function startTag(lt: number): number {
    let j = lt + 1;
    while (j < n && isNameChar(text.charCodeAt(j))) j++;
    if (j === lt + 1) throw new XmlSyntaxError('a "<" that starts no tag', lt);
    const name = text.slice(lt + 1, j);
    if (++elements > limits.maxElements) throw new XmlSyntaxError(`more than ${limits.maxElements} elements`, lt);
    if (path.length >= limits.maxDepth) throw new XmlSyntaxError(`nesting deeper than ${limits.maxDepth}`, lt);
    const attributes = new Map<string, string>();
    for (;;) {
      while (j < n && isSpace(text.charCodeAt(j))) j++;
      if (j >= n) throw new XmlSyntaxError(`unterminated tag <${name}`, lt);
      const c = text.charCodeAt(j);
      if (c === 0x3e /* > */) {
        handler.open?.(name, attributes, path);
        path.push(name);
        return j + 1;
      }
      if (c === 0x2f /* / */) {
        if (text.charCodeAt(j + 1) !== 0x3e) throw new XmlSyntaxError(`stray "/" in <${name}>`, j);
        handler.open?.(name, attributes, path);
        handler.close?.(name, path);
        return j + 2;
      }
      const a = j;
      while (j < n && isNameChar(text.charCodeAt(j))) j++;
      if (j === a) throw new XmlSyntaxError(`unexpected character in <${name}>`, j);
      const attr = text.slice(a, j);
      while (j < n && isSpace(text.charCodeAt(j))) j++;
      if (text.charCodeAt(j) !== 0x3d /* = */) throw new XmlSyntaxError(`attribute ${attr} of <${name}> has no value`, j);
      j++;
      while (j < n && isSpace(text.charCodeAt(j))) j++;
      const q = text.charCodeAt(j);
      if (q !== 0x22 && q !== 0x27) throw new XmlSyntaxError(`attribute ${attr} of <${name}> is not quoted`, j);
      const end = text.indexOf(q === 0x22 ? '"' : "'", j + 1);
      if (end < 0) throw new XmlSyntaxError(`unterminated value of ${attr} in <${name}>`, j);
      if (attributes.size >= limits.maxAttributes) throw new XmlSyntaxError(`more than ${limits.maxAttributes} attributes in <${name}>`, a);
      if (!attributes.has(attr)) attributes.set(attr, decodeEntities(text.slice(j + 1, end)));
      j = end + 1;
    }
  }
}
