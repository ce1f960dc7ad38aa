/*
 * vspc-agent-selftest: checks the C framing code (tunnel.c) against the test vectors
 * of docs/tunnel-protocol.md, section 11, and offers filter modes so that the
 * TypeScript tests can compare it with the reference implementation on random input:
 *
 *   vspc-agent-selftest              built-in vectors; TAP output; exit 1 on failure
 *   vspc-agent-selftest --cobs       stdin: hex lines; stdout: COBS encoding (hex)
 *   vspc-agent-selftest --crc        stdin: hex lines; stdout: CRC-32C (8 hex digits), or
 *                                    "mismatch" if the tables and the dispatched code (the
 *                                    crc32 instruction where there is one) differ at any
 *                                    alignment 0-15
 *   vspc-agent-selftest --encode     stdin: "type flags tag seq ack stream payloadhex|- [lead]"
 *                                    (decimal fields, payload up to 16384 bytes, lead 1: a
 *                                    leading delimiter); stdout: wire bytes (hex)
 *   vspc-agent-selftest --decode     stdin: hex chunks of one byte stream, a line each;
 *                                    stdout: one line per frame (as --encode input),
 *                                    then "stats frames discarded badcobs badcrc short long"
 *   vspc-agent-selftest --tag H A    the session tag of boot ids H and A (hex)
 */
#include "tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, count;

static void check(int ok, const char *name) {
  count++;
  if (!ok) failures++;
  printf("%s %d - %s\n", ok ? "ok" : "not ok", count, name);
}

static size_t unhex(const char *s, uint8_t *out, size_t cap) {
  size_t n = 0;
  int hi = -1;
  for (; *s && n < cap; s++) {
    int v;
    if (*s >= '0' && *s <= '9') v = *s - '0';
    else if (*s >= 'a' && *s <= 'f') v = *s - 'a' + 10;
    else if (*s >= 'A' && *s <= 'F') v = *s - 'A' + 10;
    else continue;
    if (hi < 0) hi = v;
    else {
      out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return n;
}

static void puthex(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

static int eqhex(const uint8_t *p, size_t n, const char *hex) {
  static uint8_t want[4096];
  size_t m = unhex(hex, want, sizeof want);
  return m == n && memcmp(p, want, n) == 0;
}

struct collector {
  struct vt_frame *f;
  uint8_t *p;
  int *n;
};

static void selftest_collect(void *ctx, const struct vt_frame *f) {
  struct collector *c = ctx;
  *c->f = *f;
  memcpy(c->p, f->payload, f->len);
  c->f->payload = c->p;
  (*c->n)++;
}

struct fvec {
  const char *name;
  struct vt_frame f;
  const char *payload, *body, *wire;
};

static void builtin(void) {
  static uint8_t buf[4096], enc[4096], dec[4096];
  /* CRC-32C */
  check(vt_crc32c((const uint8_t *)"123456789", 9) == 0xE3069283u, "CRC-32C(\"123456789\") = E3069283");
  check(vt_crc32c(buf, 0) == 0, "CRC-32C(empty) = 00000000");
  memset(buf, 0, 32);
  check(vt_crc32c(buf, 32) == 0x8A9136AAu, "CRC-32C(32 x 00) = 8A9136AA");
  memset(buf, 0xFF, 32);
  check(vt_crc32c(buf, 32) == 0x62A8AB43u, "CRC-32C(32 x FF) = 62A8AB43");
  for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
  check(vt_crc32c(buf, 32) == 0x46DD794Eu, "CRC-32C(00..1F) = 46DD794E");
  {
    /* The slicing-by-8 loop against the bit-at-a-time definition: every length and
       alignment around the 8-byte blocks. */
    uint8_t r[80];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof r; i++) r[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    int same = 1;
    for (size_t off = 0; off < 8; off++)
      for (size_t len = 0; off + len <= sizeof r; len++) {
        uint32_t c = 0xFFFFFFFFu;
        for (size_t i = 0; i < len; i++) {
          c ^= r[off + i];
          for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        if (vt_crc32c(r + off, len) != (c ^ 0xFFFFFFFFu)) same = 0;
        if (vt_crc32c_update_sw(0xFFFFFFFFu, r + off, len) != c) same = 0;
      }
    check(same, "CRC-32C by 8-byte slices = bit by bit, every length and alignment up to 80");
    printf("# CRC-32C here: %s\n", vt_crc32c_hw() ? "the SSE4.2 crc32 instruction" : "tables (slicing-by-8)");
    /* The instruction (where the CPU has it) against the tables, pieces chained. */
    static uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    uint32_t a = 0xFFFFFFFFu, b = 0xFFFFFFFFu;
    for (size_t off = 0, len = 1; off < sizeof big; off += len, len = len * 3 % 4099 + 1) {
      size_t n = off + len > sizeof big ? sizeof big - off : len;
      a = vt_crc32c_update(a, big + off, n);
      b = vt_crc32c_update_sw(b, big + off, n);
    }
    check(a == b && vt_crc32c(big, sizeof big) == (b ^ 0xFFFFFFFFu), "CRC-32C: the dispatched code = the tables, over 20000 bytes in chained pieces");
  }

  /* COBS */
  static const struct { const char *in, *out; } cv[] = {
      {"", "01"},
      {"00", "01 01"},
      {"00 00", "01 01 01"},
      {"11 22 00 33", "03 11 22 02 33"},
      {"11 22 33 44", "05 11 22 33 44"},
      {"11 00 00 00", "02 11 01 01 01"},
  };
  for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
    size_t n = unhex(cv[i].in, buf, sizeof buf);
    size_t m = vt_cobs_encode(buf, n, enc);
    char name[96];
    snprintf(name, sizeof name, "COBS(%s) = %s", *cv[i].in ? cv[i].in : "empty", cv[i].out);
    check(eqhex(enc, m, cv[i].out), name);
    long d = vt_cobs_decode(enc, m, dec);
    snprintf(name, sizeof name, "COBS decode(%s) round trip", cv[i].out);
    check(d == (long)n && memcmp(dec, buf, n) == 0, name);
  }
  for (int i = 0; i < 254; i++) buf[i] = (uint8_t)(i + 1);
  size_t m = vt_cobs_encode(buf, 254, enc);
  check(m == 255 && enc[0] == 0xFF && memcmp(enc + 1, buf, 254) == 0, "COBS(01..FE) = FF 01..FE (no trailing 01)");
  for (int i = 0; i < 255; i++) buf[i] = (uint8_t)(i + 1);
  m = vt_cobs_encode(buf, 255, enc);
  check(m == 257 && enc[0] == 0xFF && enc[255] == 0x02 && enc[256] == 0xFF, "COBS(01..FF) = FF 01..FE 02 FF");
  check(vt_cobs_decode(enc, m, dec) == 255 && memcmp(dec, buf, 255) == 0, "COBS decode(FF 01..FE 02 FF)");
  /* decoders accept the empty block after a final FF block */
  for (int i = 0; i < 254; i++) buf[i] = (uint8_t)(i + 1);
  enc[0] = 0xFF;
  memcpy(enc + 1, buf, 254);
  enc[255] = 0x01;
  check(vt_cobs_decode(enc, 256, dec) == 254 && memcmp(dec, buf, 254) == 0, "COBS decode accepts FF block + 01");
  enc[0] = 0x05;
  check(vt_cobs_decode(enc, 3, dec) < 0, "COBS decode rejects a code past the end");

  /* Session tag */
  check(vt_session_tag(0x12345678u, 0x9ABCDEF0u) == 0xD784, "session tag(12345678, 9ABCDEF0) = D784");

  /* Frames */
  static uint8_t p1[14], p2[14], p3[6], p4[4], p8[8];
  struct vt_hello h1 = {1, 0, 0, 32, 0x12345678u, 0, 1024};
  struct vt_hello h2 = {1, 1, 0, 32, 0x9ABCDEF0u, 0x12345678u, 1024};
  vt_hello_encode(&h1, p1);
  vt_hello_encode(&h2, p2);
  vt_put16(p3, 22);
  vt_put32(p3 + 2, 65536);
  vt_put32(p4, 65536);
  static const uint8_t data[] = {'S', 'S', 'H', '-', '2', '.', '0', '-', 0, '\r', '\n'};
  static const uint8_t sack[] = {0x06, 0x02};
  memcpy(p8, "\x01refused", 8);
  struct fvec fv[] = {
      {"HELLO host->agent", {0x01, 0, 0, 0, 0, 0, 14, p1}, NULL,
       "01 00 00 00 00 00 00 00 00 00 01 00 00 20 12 34 56 78 00 00 00 00 04 00 78 b7 78 4a",
       "02 01 01 01 01 01 01 01 01 01 02 01 01 06 20 12 34 56 78 01 01 01 02 04 05 78 b7 78 4a 00"},
      {"HELLO agent->host", {0x01, VT_FLAG_AGENT, 0, 0, 0, 0, 14, p2}, NULL,
       "01 04 00 00 00 00 00 00 00 00 01 01 00 20 9a bc de f0 12 34 56 78 04 00 f2 7b de 92",
       "03 01 04 01 01 01 01 01 01 01 03 01 01 0b 20 9a bc de f0 12 34 56 78 04 05 f2 7b de 92 00"},
      {"OPEN stream 1 port 22", {0x10, 0, 0xD784, 0, 0, 1, 6, p3}, NULL,
       "10 00 d7 84 00 00 00 00 00 01 00 16 00 01 00 00 71 a1 96 cd",
       "02 10 03 d7 84 01 01 01 01 02 01 02 16 02 01 01 05 71 a1 96 cd 00"},
      {"OPEN_OK stream 1", {0x11, VT_FLAG_AGENT, 0xD784, 0, 1, 1, 4, p4}, NULL,
       "11 04 d7 84 00 00 00 01 00 01 00 01 00 00 d5 88 cb 77",
       "05 11 04 d7 84 01 01 02 01 02 01 02 01 01 05 d5 88 cb 77 00"},
      {"DATA stream 1", {0x13, 0, 0xD784, 1, 1, 1, sizeof data, data}, NULL,
       "13 00 d7 84 00 01 00 01 00 01 53 53 48 2d 32 2e 30 2d 00 0d 0a a9 c3 a5 42",
       "02 13 03 d7 84 02 01 02 01 0a 01 53 53 48 2d 32 2e 30 2d 07 0d 0a a9 c3 a5 42 00"},
      {"ACK with SACK", {0x02, VT_FLAG_AGENT, 0xD784, 0, 5, 0, 2, sack}, NULL,
       "02 04 d7 84 00 00 00 05 00 00 06 02 86 45 9f e9",
       "05 02 04 d7 84 01 01 02 05 01 07 06 02 86 45 9f e9 00"},
      {"ACK with POLL", {0x02, 1, 0xD784, 0, 2, 0, 0, NULL}, NULL,
       "02 01 d7 84 00 00 00 02 00 00 cb 6c 6f 56",
       "05 02 01 d7 84 01 01 02 02 01 05 cb 6c 6f 56 00"},
      {"RESET stream 8001", {0x15, VT_FLAG_AGENT, 0xD784, 0xFFFF, 0x0102, 0x8001, 8, p8}, NULL,
       "15 04 d7 84 ff ff 01 02 80 01 01 72 65 66 75 73 65 64 87 31 33 a7",
       "17 15 04 d7 84 ff ff 01 02 80 01 01 72 65 66 75 73 65 64 87 31 33 a7 00"},
  };
  for (size_t i = 0; i < sizeof fv / sizeof fv[0]; i++) {
    char name[96];
    size_t n = vt_frame_body(&fv[i].f, buf);
    snprintf(name, sizeof name, "frame body: %s", fv[i].name);
    check(eqhex(buf, n, fv[i].body), name);
    n = vt_frame_wire(&fv[i].f, 0, enc);
    snprintf(name, sizeof name, "frame wire: %s", fv[i].name);
    check(eqhex(enc, n, fv[i].wire), name);
    /* decode back, in one-byte chunks after some garbage */
    struct vt_decoder d;
    vt_decoder_init(&d, VT_MAX_PAYLOAD);
    static struct vt_frame got;
    static uint8_t gotp[VT_MAX_PAYLOAD];
    static int ngot;
    ngot = 0;
    struct collector col = {&got, gotp, &ngot};
    static const uint8_t junk[] = {'[', ' ', '1', '.', '0', ']', 0x00, 0x07, 0x41, 0x00};
    vt_decoder_feed(&d, junk, sizeof junk, selftest_collect, &col);
    for (size_t k = 0; k < n; k++) vt_decoder_feed(&d, enc + k, 1, selftest_collect, &col);
    snprintf(name, sizeof name, "frame decode (after junk, 1-byte chunks): %s", fv[i].name);
    check(ngot == 1 && got.type == fv[i].f.type && got.flags == fv[i].f.flags && got.tag == fv[i].f.tag &&
              got.seq == fv[i].f.seq && got.ack == fv[i].f.ack && got.stream == fv[i].f.stream &&
              got.len == fv[i].f.len && (got.len == 0 || memcmp(gotp, fv[i].f.payload, got.len) == 0),
          name);
  }
  /* a bit flip is rejected by the CRC */
  {
    struct vt_decoder d;
    vt_decoder_init(&d, VT_MAX_PAYLOAD);
    static int ngot;
    static struct vt_frame got;
    static uint8_t gotp[VT_MAX_PAYLOAD];
    struct collector col = {&got, gotp, &ngot};
    size_t n = vt_frame_wire(&fv[4].f, 1, enc);
    enc[13] ^= 0x10; /* a payload byte: COBS stays valid, the CRC does not */
    vt_decoder_feed(&d, enc, n, selftest_collect, &col);
    check(ngot == 0 && d.stats.bad_crc == 1, "a bit flip is caught by the CRC");
    /* an over-long run is skipped and the decoder resynchronises */
    memset(buf, 0x41, 3000);
    vt_decoder_feed(&d, buf, 3000, selftest_collect, &col);
    n = vt_frame_wire(&fv[4].f, 0, enc);
    vt_decoder_feed(&d, enc, n, selftest_collect, &col);
    check(ngot == 0 && d.stats.too_long == 1, "an over-long run is dropped (and the frame after it with it)");
    vt_decoder_feed(&d, enc, n, selftest_collect, &col);
    check(ngot == 1, "the decoder resynchronises at the next delimiter");
  }
  /* large frames (spec 5.1): accepted up to the decoder's limit, dropped beyond it */
  {
    static uint8_t big[VT_MAX_LARGE_PAYLOAD], wire[VT_MAX_WIRE], gotp[VT_MAX_LARGE_PAYLOAD];
    static struct vt_frame got;
    static int ngot;
    struct collector col = {&got, gotp, &ngot};
    for (size_t k = 0; k < sizeof big; k++) big[k] = (uint8_t)(k * 7 + (k >> 8));
    struct vt_frame f = {VT_DATA, 0, 0x1234, 7, 9, 3, VT_MAX_LARGE_PAYLOAD, big};
    size_t n = vt_frame_wire(&f, 1, wire);
    check(n <= VT_MAX_WIRE, "a 16384-byte frame fits VT_MAX_WIRE");
    struct vt_decoder d;
    vt_decoder_init(&d, VT_MAX_LARGE_PAYLOAD);
    ngot = 0;
    for (size_t k = 0; k < n; k += 1000) vt_decoder_feed(&d, wire + k, n - k < 1000 ? n - k : 1000, selftest_collect, &col);
    check(ngot == 1 && got.len == VT_MAX_LARGE_PAYLOAD && memcmp(gotp, big, sizeof big) == 0,
          "a 16384-byte frame decodes where 16384 is announced");
    vt_decoder_init(&d, VT_MAX_PAYLOAD);
    ngot = 0;
    vt_decoder_feed(&d, wire, n, selftest_collect, &col);
    f.len = VT_MAX_PAYLOAD;
    n = vt_frame_wire(&f, 0, wire);
    vt_decoder_feed(&d, wire, n, selftest_collect, &col);
    check(ngot == 1 && got.len == VT_MAX_PAYLOAD && d.stats.too_long == 1,
          "where 1024 is announced a larger frame is dropped as too long, a 1024-byte one decodes");
  }
  /* vt_frame_wire encodes header, payload and CRC where they lie: the same bytes as
     COBS over the built body, with zeros at and around every block boundary (the
     header is 10 bytes, so a payload's block ends at 244 + 254k; a body of 254k bytes,
     payloads of 240 + 254k, ends on a full block) and at both ends. */
  {
    static uint8_t pay[VT_MAX_LARGE_PAYLOAD], body[VT_MAX_BODY], want[VT_MAX_WIRE], wire[VT_MAX_WIRE];
    static const size_t lens[] = {0, 1, 2, 240, 241, 494, 748, 243, 244, 245, 246, 497, 498, 499, 500, 1024, 4000, VT_MAX_LARGE_PAYLOAD};
    int same = 1, cases = 0;
    uint32_t x = 777;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
      for (int zi = -1; zi < 12; zi++)
        for (int lead = 0; lead < 2; lead++) {
          size_t len = lens[li];
          for (size_t k = 0; k < len; k++) pay[k] = (uint8_t)(1 + (x = x * 1103515245u + 12345u) % 255);
          if (zi >= 0 && len) {
            /* zi 0-7: one zero near a boundary; 8: a zero every 254; 9: all zero; 10: first; 11: last */
            static const long near[] = {243, 244, 245, 242, 497, 498, 499, 496};
            if (zi < 8 && (size_t)near[zi] < len) pay[near[zi]] = 0;
            if (zi == 8) for (size_t k = 244; k < len; k += 254) pay[k] = 0;
            if (zi == 9) memset(pay, 0, len);
            if (zi == 10) pay[0] = 0;
            if (zi == 11) pay[len - 1] = 0;
          }
          struct vt_frame f = {VT_DATA, (uint8_t)zi, 0x0100, 0xFF00, 0, 0x0001, (uint16_t)len, pay};
          size_t n = vt_frame_body(&f, body), m = 0;
          if (lead) want[m++] = 0;
          m += vt_cobs_encode(body, n, want + m);
          want[m++] = 0;
          size_t w = vt_frame_wire(&f, lead, wire);
          if (w != m || memcmp(wire, want, m) != 0) same = 0;
          cases++;
        }
    check(same && cases > 300, "frame wire bytes (pieces encoded in place) = COBS of the built body, zeros at block boundaries");
  }
}

static void print_frame(void *ctx, const struct vt_frame *f) {
  (void)ctx;
  printf("%u %u %u %u %u %u ", f->type, f->flags, f->tag, f->seq, f->ack, f->stream);
  if (f->len) puthex(f->payload, f->len);
  else printf("-");
  printf("\n");
}

int main(int argc, char **argv) {
  static char line[1 << 17];
  static uint8_t in[1 << 16], out[1 << 17];
  const char *mode = argc > 1 ? argv[1] : "";
  if (!*mode) {
    builtin();
    printf("1..%d\n", count);
    return failures ? 1 : 0;
  }
  if (!strcmp(mode, "--tag") && argc == 4) {
    printf("%04x\n", vt_session_tag((uint32_t)strtoul(argv[2], NULL, 16), (uint32_t)strtoul(argv[3], NULL, 16)));
    return 0;
  }
  struct vt_decoder d;
  vt_decoder_init(&d, VT_MAX_PAYLOAD);
  while (fgets(line, sizeof line, stdin)) {
    if (!strcmp(mode, "--cobs")) {
      size_t n = unhex(line, in, sizeof in);
      size_t m = vt_cobs_encode(in, n, out);
      puthex(out, m);
      printf("\n");
    } else if (!strcmp(mode, "--crc")) {
      /* The input at every alignment 0-15, by the dispatched code and by the tables:
         one CRC if all agree, else "mismatch". */
      static uint8_t moved[(1 << 16) + 16];
      size_t n = unhex(line, in, sizeof in);
      uint32_t want = vt_crc32c(in, n);
      int agree = vt_crc32c_update_sw(0xFFFFFFFFu, in, n) == (want ^ 0xFFFFFFFFu);
      for (size_t a = 0; a < 16; a++) {
        memcpy(moved + a, in, n);
        if (vt_crc32c(moved + a, n) != want || vt_crc32c_update_sw(0xFFFFFFFFu, moved + a, n) != (want ^ 0xFFFFFFFFu)) agree = 0;
      }
      if (agree) printf("%08x\n", want);
      else printf("mismatch\n");
    } else if (!strcmp(mode, "--encode")) {
      /* Payloads up to VT_MAX_LARGE_PAYLOAD, placed at an odd offset (CRC and COBS on an
         unaligned payload); an optional 8th field 1 asks for the leading delimiter. */
      unsigned t, fl, tag, seq, ack, st;
      int lead = 0;
      static char hex[2 * VT_MAX_LARGE_PAYLOAD + 2];
      int k = sscanf(line, "%u %u %u %u %u %u %32769s %d", &t, &fl, &tag, &seq, &ack, &st, hex, &lead);
      if (k != 7 && k != 8) return 2;
      if (strlen(hex) > 2 * VT_MAX_LARGE_PAYLOAD) return 2;
      uint8_t *pay = in + 1 + (t + seq) % 7;
      struct vt_frame f = {(uint8_t)t, (uint8_t)fl, (uint16_t)tag, (uint16_t)seq, (uint16_t)ack, (uint16_t)st, 0, pay};
      f.len = strcmp(hex, "-") ? (uint16_t)unhex(hex, pay, VT_MAX_LARGE_PAYLOAD) : 0;
      size_t m = vt_frame_wire(&f, lead, out);
      puthex(out, m);
      printf("\n");
    } else if (!strcmp(mode, "--decode")) {
      size_t n = unhex(line, in, sizeof in);
      vt_decoder_feed(&d, in, n, print_frame, NULL);
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
    fflush(stdout);
  }
  if (!strcmp(mode, "--decode"))
    printf("stats %llu %llu %llu %llu %llu %llu\n", (unsigned long long)d.stats.frames,
           (unsigned long long)d.stats.discarded, (unsigned long long)d.stats.bad_cobs,
           (unsigned long long)d.stats.bad_crc, (unsigned long long)d.stats.too_short,
           (unsigned long long)d.stats.too_long);
  return 0;
}
