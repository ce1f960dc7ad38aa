/** UUID spellings: what ESXi sends, what operators type, what we show. Pure; importable from every layer. */

/**
 * Normalises a UUID as ESXi sends it ("42 1a 5b 77 09 c3 8e 21-9f 00 aa 10 5c 2e 7d 01")
 * or as an operator types it (any case, with or without spaces, dashes, braces) to
 * 32 lowercase hex digits. Returns undefined when it is not exactly 32 hex digits.
 */
export function normalizeUuid(text: string): string | undefined {
  const stripped = text.replace(/[\s\-{}]/g, '').toLowerCase();
  return /^[0-9a-f]{32}$/.test(stripped) ? stripped : undefined;
}

/** Canonical display form of 32 hex digits: 8-4-4-4-12. */
export function formatUuid(hex32: string): string {
  return `${hex32.slice(0, 8)}-${hex32.slice(8, 12)}-${hex32.slice(12, 16)}-${hex32.slice(16, 20)}-${hex32.slice(20)}`;
}
