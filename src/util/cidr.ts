/**
 * IP addresses and networks (CIDR blocks) as the VM-side defences use them: the
 * allow-list of networks that may connect as VMs (`--proxy-allow`), and the "source
 * address" that per-address limits count by. Pure; importable from every layer.
 *
 * An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a dual-stack listener reports
 * for an IPv4 peer) is the IPv4 address everywhere here, so one rule covers both.
 */

/** A parsed network: `text` as the operator wrote it (normalised), the address bytes and the prefix length. */
export interface CidrBlock {
  /** Canonical text, e.g. `10.0.0.0/8`, `2001:db8::/32`. */
  readonly text: string;
  readonly family: 4 | 6;
  /** 4 or 16 bytes, host bits cleared. */
  readonly bytes: Uint8Array;
  /** 0-32 (IPv4) or 0-128 (IPv6). */
  readonly prefix: number;
}

/** An address as bytes: 4 for IPv4 (also for IPv4-mapped IPv6), 16 for IPv6. Null when `text` is not an IP literal. */
export function parseIp(text: string): Uint8Array | null {
  const t = text.trim();
  const v4 = parseIpv4(t);
  if (v4) return v4;
  const v6 = parseIpv6(t);
  if (!v6) return null;
  // ::ffff:a.b.c.d is an IPv4 peer seen through a dual-stack socket.
  if (v6.subarray(0, 10).every((b) => b === 0) && v6[10] === 0xff && v6[11] === 0xff) return v6.slice(12);
  return v6;
}

function parseIpv4(t: string): Uint8Array | null {
  const parts = t.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    // No leading zeros: "010" is octal to some parsers and decimal to others.
    if (!/^(0|[1-9]\d{0,2})$/.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

function parseIpv6(t: string): Uint8Array | null {
  // A zone (fe80::1%eth0) names an interface, not a network: not accepted.
  if (!/^[0-9a-fA-F:.]+$/.test(t) || t.length > 45) return null;
  const halves = t.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    const items = s.split(':');
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (i === items.length - 1 && item.includes('.')) {
        const v4 = parseIpv4(item);
        if (!v4) return null;
        out.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return null;
      out.push(parseInt(item, 16));
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** Canonical text of 4 or 16 address bytes (IPv6 with the longest zero run compressed, RFC 5952). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return [...bytes].join('.');
  const g = Array.from({ length: 8 }, (_, i) => (bytes[2 * i] << 8) | bytes[2 * i + 1]);
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function maskTo(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

/**
 * `ADDRESS/PREFIX`, or a bare address (a single host: /32 or /128). Host bits are
 * cleared (`10.1.2.3/8` is `10.0.0.0/8`). Throws an Error saying what is wrong.
 */
export function parseCidr(text: string): CidrBlock {
  const t = text.trim();
  const slash = t.indexOf('/');
  const addrText = slash < 0 ? t : t.slice(0, slash);
  const bytes = parseIp(addrText);
  if (!bytes) throw new Error(`"${text}" is not an IP address or network (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)`);
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8: its prefix counts the 96 bits of the mapping.
  const mapped = bytes.length === 4 && addrText.includes(':');
  const max = mapped ? 128 : bytes.length * 8;
  let prefix = bytes.length * 8;
  if (slash >= 0) {
    const p = t.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) throw new Error(`"${text}": the prefix length must be 0-${max}`);
    prefix = Number(p);
    if (mapped) {
      if (prefix < 96) throw new Error(`"${text}": an IPv4-mapped network needs a prefix of at least 96`);
      prefix -= 96;
    }
  }
  const masked = maskTo(bytes, prefix);
  return { text: `${formatIp(masked)}/${prefix}`, family: masked.length === 4 ? 4 : 6, bytes: masked, prefix };
}

/** Whether `address` (an IP literal; IPv4-mapped counts as IPv4) lies in `block`. False for anything not an IP. */
export function cidrContains(block: CidrBlock, address: string): boolean {
  const a = parseIp(address);
  if (!a || a.length !== block.bytes.length) return false;
  const m = maskTo(a, block.prefix);
  for (let i = 0; i < m.length; i++) if (m[i] !== block.bytes[i]) return false;
  return true;
}

/** Whether any block contains `address`. */
export function anyContains(blocks: readonly CidrBlock[], address: string): boolean {
  return blocks.some((b) => cidrContains(b, address));
}

/**
 * The "source address" per-address limits count by: an IPv4 address itself; for
 * IPv6 its /64, because one host is routinely given a whole /64 and could otherwise
 * present 2^64 different addresses. Anything unparsable is its own group.
 */
export function addressGroup(address: string): string {
  const a = parseIp(address);
  if (!a) return address;
  if (a.length === 4) return formatIp(a);
  return `${formatIp(maskTo(a, 64))}/64`;
}

/** The address normalised (IPv4-mapped → IPv4, IPv6 compressed), for comparing two peers; unparsable text as given. */
export function normalizeIp(address: string): string {
  const a = parseIp(address);
  return a ? formatIp(a) : address;
}
