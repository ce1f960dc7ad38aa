/*
 * vspc serial tunnel protocol, version 1: wire constants, CRC-32C, COBS, frame
 * encoding and a streaming frame decoder. No I/O. The normative text is
 * docs/tunnel-protocol.md; the TypeScript reference is src/protocol/tunnel/.
 *
 * Dependency-free C99; used by vspc-agent.c and selftest.c.
 */
#ifndef VSPC_TUNNEL_H
#define VSPC_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#define VT_VERSION 1
#define VT_HEADER 10
#define VT_CRC 4
/* The usual largest payload: the default announcement, and all that a version-1 peer
   without large frames accepts. */
#define VT_MAX_PAYLOAD 1024
/* Largest payload a HELLO may announce (spec 5.1, large frames: lossless lines only). */
#define VT_MAX_LARGE_PAYLOAD 16384
#define VT_MIN_PAYLOAD 64
/* header + payload + CRC, for a payload of p bytes */
#define VT_BODY_LEN(p) (VT_HEADER + (p) + VT_CRC)
/* COBS: n + ceil(n / 254) (1043 for a 1024-byte payload) */
#define VT_ENCODED_LEN(p) (VT_BODY_LEN(p) + (VT_BODY_LEN(p) + 253) / 254)
/* buffer sizes: the largest frame of all */
#define VT_MAX_BODY VT_BODY_LEN(VT_MAX_LARGE_PAYLOAD)
#define VT_MAX_ENCODED VT_ENCODED_LEN(VT_MAX_LARGE_PAYLOAD)
/* one frame on the wire: optional leading delimiter, COBS body, delimiter */
#define VT_MAX_WIRE (VT_MAX_ENCODED + 2)
/* bytes a full-size frame costs beyond its payload (adaptive payload estimate) */
#define VT_FRAME_OVERHEAD 20
#define VT_MAX_WINDOW 128
#define VT_MAX_SACK 16
#define VT_HELLO_SIZE 14
#define VT_MAX_REASON_TEXT 63

enum vt_type {
  VT_HELLO = 0x01,
  VT_ACK = 0x02,
  VT_OPEN = 0x10,
  VT_OPEN_OK = 0x11,
  VT_OPEN_FAIL = 0x12,
  VT_DATA = 0x13,
  VT_FIN = 0x14,
  VT_RESET = 0x15,
  VT_CREDIT = 0x16
};
#define VT_FIRST_SEQUENCED 0x10

#define VT_FLAG_POLL 0x01
#define VT_FLAG_DUP 0x02
/* Direction: set in every frame the agent sends; a non-HELLO frame with it set that
   reaches the agent is the agent's own output echoed back (spec 5.4). */
#define VT_FLAG_AGENT 0x04
#define VT_HELLO_UP 0x01
#define VT_ROLE_HOST 0
#define VT_ROLE_AGENT 1
#define VT_STREAM_AGENT_BIT 0x8000

enum vt_reason {
  VT_R_REFUSED = 1,
  VT_R_NOT_ALLOWED = 2,
  VT_R_UNREACHABLE = 3,
  VT_R_NO_RESOURCES = 4,
  VT_R_CANCELLED = 5,
  VT_R_PROTOCOL = 6,
  VT_R_FLOW_CONTROL = 7,
  VT_R_ABORTED = 8,
  VT_R_SHUTDOWN = 9,
  /* local only, never on the wire */
  VT_R_PEER_RESTARTED = 64,
  VT_R_LINK_DOWN = 65
};

/* One frame. `payload` points into a buffer owned by the caller / decoder. */
struct vt_frame {
  uint8_t type;
  uint8_t flags;
  uint16_t tag;
  uint16_t seq;
  uint16_t ack;
  uint16_t stream;
  uint16_t len;
  const uint8_t *payload;
};

struct vt_hello {
  uint8_t version, role, flags, window;
  uint32_t boot, peer_boot;
  uint16_t max_payload;
};

/* Signed distance a - b in u16 serial-number arithmetic (RFC 1982). */
static inline int vt_seq_diff(uint16_t a, uint16_t b) {
  return (int)(int16_t)(uint16_t)(a - b);
}

static inline uint16_t vt_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t vt_get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void vt_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void vt_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* CRC-32C (Castagnoli), reflected, init and final XOR 0xFFFFFFFF. */
uint32_t vt_crc32c(const uint8_t *p, size_t n);
/* The register after n more bytes (no inversion: start at 0xFFFFFFFF, XOR the end with it). */
uint32_t vt_crc32c_update(uint32_t c, const uint8_t *p, size_t n);
/* The same by tables only (selftest: compared with the instruction where there is one). */
uint32_t vt_crc32c_update_sw(uint32_t c, const uint8_t *p, size_t n);
/* 1 if vt_crc32c uses the CPU's crc32 instruction (x86-64 with SSE4.2), else 0. */
int vt_crc32c_hw(void);
/* Session tag: CRC-32C(be32(host_boot) || be32(agent_boot)) & 0xFFFF. */
uint16_t vt_session_tag(uint32_t host_boot, uint32_t agent_boot);

/* COBS-encodes n bytes into dst (room for n + n/254 + 1 bytes); returns the length. */
size_t vt_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst);
/* Decodes n bytes (no delimiter) into dst (room for n bytes); -1 if not valid COBS. */
long vt_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst);

/* Frame body (header, payload, CRC) into body (room for VT_MAX_BODY); returns its length. */
size_t vt_frame_body(const struct vt_frame *f, uint8_t *body);
/* Wire bytes: [0x00] COBS(body) 0x00, into out (room for VT_MAX_WIRE); returns the length.
   The body is never built: header, payload and CRC are encoded where they lie. */
size_t vt_frame_wire(const struct vt_frame *f, int leading_delimiter, uint8_t *out);
/* Parses a decoded body: 0 ok, -1 short, -2 payload over max_payload, -3 CRC mismatch. */
int vt_frame_parse(const uint8_t *body, size_t n, size_t max_payload, struct vt_frame *f);

/* HELLO payload (14 bytes). */
void vt_hello_encode(const struct vt_hello *h, uint8_t *p);
/* 0 ok, -1 too short for version 1 (a non-1 version needs only byte 0). */
int vt_hello_decode(const uint8_t *p, size_t n, struct vt_hello *h);

struct vt_decoder_stats {
  uint64_t bytes_in, frames, discarded, bad_cobs, bad_crc, too_short, too_long;
};

/* Streaming decoder: any chunking in, frames out through a callback. Frames with a
   payload over max_payload (what we announce) are discarded like garbage. */
struct vt_decoder {
  uint8_t buf[VT_MAX_ENCODED];
  uint8_t body[VT_MAX_ENCODED];
  size_t max_payload, max_encoded;
  size_t len;
  int skipping;
  struct vt_decoder_stats stats;
};

typedef void (*vt_frame_fn)(void *ctx, const struct vt_frame *f);

/* max_payload: VT_MIN_PAYLOAD .. VT_MAX_LARGE_PAYLOAD (clamped). */
void vt_decoder_init(struct vt_decoder *d, size_t max_payload);
/* Feeds bytes; calls fn for each valid frame (its payload is valid only during the call). */
void vt_decoder_feed(struct vt_decoder *d, const uint8_t *p, size_t n, vt_frame_fn fn, void *ctx);

const char *vt_reason_name(unsigned code);

#endif
