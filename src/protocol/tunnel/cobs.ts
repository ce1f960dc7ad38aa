/**
 * Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999), the variant of the
 * reference C code: an encoded run of 254 non-zero bytes (code 0xFF) that ends the
 * input gets no trailing 0x01. Encoded data never contains 0x00, so 0x00 delimits
 * frames on the wire. Overhead: at least 1, at most ceil(n / 254) bytes.
 */

/** Largest encoded length of `n` input bytes. */
export function cobsMaxEncodedLength(n: number): number {
  return n === 0 ? 1 : n + Math.ceil(n / 254);
}

/** COBS-encodes `src`. The result contains no 0x00 byte. */
export function cobsEncode(src: Uint8Array): Uint8Array {
  const n = src.length;
  // One spare byte: the final code slot may be written just past the output.
  const dst = new Uint8Array(cobsMaxEncodedLength(n) + 1);
  let codeAt = 0;
  let o = 1;
  let code = 1;
  for (let i = 0; i < n; i++) {
    const b = src[i];
    if (b !== 0) {
      dst[o++] = b;
      code++;
    }
    if (b === 0 || code === 0xff) {
      dst[codeAt] = code;
      code = 1;
      codeAt = o;
      if (b === 0 || i + 1 < n) o++;
    }
  }
  dst[codeAt] = code;
  return dst.subarray(0, o);
}

/**
 * Decodes `src[start, end)` (one frame, delimiter excluded). Returns null when the
 * input is not valid COBS: a 0x00 byte, or a code byte pointing past the end.
 * The output is a fresh array (never a view of `src`). Linear time.
 */
export function cobsDecode(src: Uint8Array, start = 0, end = src.length): Uint8Array | null {
  // One scan for a 0x00 (none in valid input), then block copies.
  const z = src.indexOf(0, start);
  if (z !== -1 && z < end) return null;
  const out = new Uint8Array(Math.max(0, end - start));
  let o = 0;
  let i = start;
  while (i < end) {
    const code = src[i++];
    const blockEnd = i + code - 1;
    if (blockEnd > end) return null;
    out.set(src.subarray(i, blockEnd), o);
    o += blockEnd - i;
    i = blockEnd;
    if (code !== 0xff && i < end) out[o++] = 0;
  }
  return out.subarray(0, o);
}
