/*
 * vspc serial tunnel protocol: CRC-32C, COBS, frames, streaming decoder.
 * See tunnel.h and docs/tunnel-protocol.md, section 3.
 */
#include "tunnel.h"

#include <string.h>

/* Slicing-by-8 (8 tables of 256): a byte costs about one table lookup less than the
   byte-at-a-time loop's eight shifts, which matters in a guest under TCG emulation.
   Where the CPU has SSE4.2 (any KVM guest on a host CPU of the last 15 years; not
   QEMU's default qemu64 model under TCG), its crc32 instruction computes the same
   CRC-32C without tables: chosen once, at the first call, by CPUID. */
static uint32_t crc_table[8][256];
static uint32_t (*crc_update)(uint32_t c, const uint8_t *p, size_t n);

/* c: the running register (no inversion here). */
static uint32_t crc_update_sw(uint32_t c, const uint8_t *p, size_t n) {
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8); /* one load, not eight (each guest load is a softmmu lookup under TCG) */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    v ^= c;
    c = crc_table[7][v & 0xFF] ^ crc_table[6][(v >> 8) & 0xFF] ^ crc_table[5][(v >> 16) & 0xFF] ^ crc_table[4][(v >> 24) & 0xFF] ^
        crc_table[3][(v >> 32) & 0xFF] ^ crc_table[2][(v >> 40) & 0xFF] ^ crc_table[1][(v >> 48) & 0xFF] ^ crc_table[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
__attribute__((target("sse4.2"))) static uint32_t crc_update_hw(uint32_t c, const uint8_t *p, size_t n) {
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c64 = __builtin_ia32_crc32di(c64, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = (uint32_t)c64;
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return c32;
}
#endif

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
  crc_update = crc_update_sw;
#if defined(__x86_64__) && defined(__GNUC__)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_2)) crc_update = crc_update_hw;
#endif
}

int vt_crc32c_hw(void) {
  if (!crc_update) crc_init();
  return crc_update != crc_update_sw;
}

uint32_t vt_crc32c_update_sw(uint32_t c, const uint8_t *p, size_t n) {
  if (!crc_update) crc_init();
  return crc_update_sw(c, p, n);
}

uint32_t vt_crc32c_update(uint32_t c, const uint8_t *p, size_t n) {
  if (!crc_update) crc_init();
  return crc_update(c, p, n);
}

uint32_t vt_crc32c(const uint8_t *p, size_t n) {
  return vt_crc32c_update(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

uint16_t vt_session_tag(uint32_t host_boot, uint32_t agent_boot) {
  uint8_t b[8];
  vt_put32(b, host_boot);
  vt_put32(b + 4, agent_boot);
  return (uint16_t)(vt_crc32c(b, 8) & 0xFFFF);
}

/* The variant of the reference C code: no empty 0x01 block after a final 0xFF block.
   Runs of non-zero bytes are found with memchr and moved with memcpy (a per-byte loop
   is slow in a guest under TCG emulation). */
size_t vt_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst) {
  size_t i = 0, o = 0;
  for (;;) {
    size_t room = n - i < 254 ? n - i : 254;
    const uint8_t *z = memchr(src + i, 0, room);
    size_t run = z ? (size_t)(z - (src + i)) : room;
    dst[o] = (uint8_t)(run + 1);
    memcpy(dst + o + 1, src + i, run);
    o += run + 1;
    i += run;
    if (z) {
      i++; /* the zero is implied by the block's end */
      continue;
    }
    if (run == 254 && i < n) continue; /* a full block: the next one starts without a zero */
    return o;
  }
}

long vt_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst) {
  if (memchr(src, 0, n)) return -1;
  size_t i = 0, o = 0;
  while (i < n) {
    uint8_t code = src[i++];
    size_t len = (size_t)code - 1;
    if (i + len > n) return -1;
    memcpy(dst + o, src + i, len);
    o += len;
    i += len;
    if (code != 0xFF && i < n) dst[o++] = 0;
  }
  return (long)o;
}

/* The 10-byte header (spec 3.1). */
static void frame_header(const struct vt_frame *f, uint8_t *h) {
  h[0] = f->type;
  h[1] = f->flags;
  vt_put16(h + 2, f->tag);
  vt_put16(h + 4, f->seq);
  vt_put16(h + 6, f->ack);
  vt_put16(h + 8, f->stream);
}

size_t vt_frame_body(const struct vt_frame *f, uint8_t *body) {
  frame_header(f, body);
  if (f->len) memcpy(body + VT_HEADER, f->payload, f->len);
  size_t n = VT_HEADER + (size_t)f->len;
  vt_put32(body + n, vt_crc32c(body, n));
  return n + VT_CRC;
}

/*
 * COBS over several pieces as if they were one (the same bytes as vt_cobs_encode of
 * their concatenation): a frame is encoded from its header, its payload where it lies
 * and its CRC, without first copying them into one body — under TCG every pass over a
 * 16 KiB payload costs the guest. A block full at 254 bytes is closed at once and the
 * next one opened only if more bytes come (the variant's "no empty block after a final
 * 0xFF block"); a zero closes its block and always opens the next, possibly empty.
 */
struct cobs_out {
  uint8_t *out;
  size_t o, code_at, run;
  int open;
};

static void cobs_put(struct cobs_out *e, const uint8_t *src, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (!e->open) {
      e->code_at = e->o++;
      e->run = 0;
      e->open = 1;
    }
    size_t room = 254 - e->run, m = n - i < room ? n - i : room;
    const uint8_t *z = memchr(src + i, 0, m);
    size_t r = z ? (size_t)(z - (src + i)) : m;
    memcpy(e->out + e->o, src + i, r);
    e->o += r;
    e->run += r;
    i += r;
    if (z) {
      e->out[e->code_at] = (uint8_t)(e->run + 1);
      e->code_at = e->o++;
      e->run = 0;
      i++;
    } else if (e->run == 254) {
      e->out[e->code_at] = 0xFF;
      e->open = 0;
    }
  }
}

size_t vt_frame_wire(const struct vt_frame *f, int leading_delimiter, uint8_t *out) {
  uint8_t head[VT_HEADER], crc[VT_CRC];
  frame_header(f, head);
  uint32_t c = vt_crc32c_update(0xFFFFFFFFu, head, VT_HEADER);
  if (f->len) c = vt_crc32c_update(c, f->payload, f->len);
  vt_put32(crc, c ^ 0xFFFFFFFFu);
  size_t o = 0;
  if (leading_delimiter) out[o++] = 0;
  struct cobs_out e = {out + o, 1, 0, 0, 1}; /* the first block open, its code byte at 0 */
  cobs_put(&e, head, VT_HEADER);
  if (f->len) cobs_put(&e, f->payload, f->len);
  cobs_put(&e, crc, VT_CRC);
  if (e.open) e.out[e.code_at] = (uint8_t)(e.run + 1);
  o += e.o;
  out[o++] = 0;
  return o;
}

int vt_frame_parse(const uint8_t *body, size_t n, size_t max_payload, struct vt_frame *f) {
  if (n < VT_HEADER + VT_CRC) return -1;
  size_t m = n - VT_CRC;
  if (m - VT_HEADER > max_payload || m - VT_HEADER > VT_MAX_LARGE_PAYLOAD) return -2;
  if (vt_crc32c(body, m) != vt_get32(body + m)) return -3;
  f->type = body[0];
  f->flags = body[1];
  f->tag = vt_get16(body + 2);
  f->seq = vt_get16(body + 4);
  f->ack = vt_get16(body + 6);
  f->stream = vt_get16(body + 8);
  f->len = (uint16_t)(m - VT_HEADER);
  f->payload = body + VT_HEADER;
  return 0;
}

void vt_hello_encode(const struct vt_hello *h, uint8_t *p) {
  p[0] = h->version;
  p[1] = h->role;
  p[2] = h->flags;
  p[3] = h->window;
  vt_put32(p + 4, h->boot);
  vt_put32(p + 8, h->peer_boot);
  vt_put16(p + 12, h->max_payload);
}

int vt_hello_decode(const uint8_t *p, size_t n, struct vt_hello *h) {
  memset(h, 0, sizeof *h);
  if (n < 1) return -1;
  h->version = p[0];
  if (n < VT_HELLO_SIZE) return p[0] == VT_VERSION ? -1 : 0;
  h->role = p[1];
  h->flags = p[2];
  h->window = p[3];
  h->boot = vt_get32(p + 4);
  h->peer_boot = vt_get32(p + 8);
  h->max_payload = vt_get16(p + 12);
  return 0;
}

void vt_decoder_init(struct vt_decoder *d, size_t max_payload) {
  memset(d, 0, sizeof *d);
  if (max_payload < VT_MIN_PAYLOAD) max_payload = VT_MIN_PAYLOAD;
  if (max_payload > VT_MAX_LARGE_PAYLOAD) max_payload = VT_MAX_LARGE_PAYLOAD;
  d->max_payload = max_payload;
  d->max_encoded = VT_ENCODED_LEN(max_payload);
}

static void end_of_run(struct vt_decoder *d, vt_frame_fn fn, void *ctx) {
  if (d->skipping) {
    d->skipping = 0;
    return;
  }
  size_t len = d->len;
  d->len = 0;
  if (len == 0) return; /* back-to-back delimiters */
  long n = vt_cobs_decode(d->buf, len, d->body);
  if (n < 0) {
    d->stats.bad_cobs++;
    d->stats.discarded += len;
    return;
  }
  struct vt_frame f;
  int r = vt_frame_parse(d->body, (size_t)n, d->max_payload, &f);
  if (r != 0) {
    if (r == -3) d->stats.bad_crc++;
    else if (r == -1) d->stats.too_short++;
    else d->stats.too_long++;
    d->stats.discarded += len;
    return;
  }
  d->stats.frames++;
  fn(ctx, &f);
}

void vt_decoder_feed(struct vt_decoder *d, const uint8_t *p, size_t n, vt_frame_fn fn, void *ctx) {
  size_t i = 0;
  d->stats.bytes_in += n;
  while (i < n) {
    const uint8_t *z = memchr(p + i, 0, n - i);
    size_t end = z ? (size_t)(z - p) : n;
    size_t k = end - i;
    if (d->skipping) {
      d->stats.discarded += k;
    } else if (d->len + k <= d->max_encoded) {
      memcpy(d->buf + d->len, p + i, k);
      d->len += k;
    } else {
      d->stats.discarded += d->len + k;
      d->stats.too_long++;
      d->len = 0;
      d->skipping = 1;
    }
    if (!z) break;
    end_of_run(d, fn, ctx);
    i = end + 1;
  }
}

const char *vt_reason_name(unsigned code) {
  switch (code) {
    case VT_R_REFUSED: return "REFUSED";
    case VT_R_NOT_ALLOWED: return "NOT_ALLOWED";
    case VT_R_UNREACHABLE: return "UNREACHABLE";
    case VT_R_NO_RESOURCES: return "NO_RESOURCES";
    case VT_R_CANCELLED: return "CANCELLED";
    case VT_R_PROTOCOL: return "PROTOCOL";
    case VT_R_FLOW_CONTROL: return "FLOW_CONTROL";
    case VT_R_ABORTED: return "ABORTED";
    case VT_R_SHUTDOWN: return "SHUTDOWN";
    case VT_R_PEER_RESTARTED: return "PEER_RESTARTED";
    case VT_R_LINK_DOWN: return "LINK_DOWN";
    default: return "UNKNOWN";
  }
}
