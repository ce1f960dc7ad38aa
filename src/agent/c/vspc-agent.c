/*
 * vspc-agent: the guest side of vspc's serial tunnel (docs/tunnel-protocol.md).
 *
 *   vspc-agent --device /dev/ttyS1 [--allow 22] [--allow 8080] [--verbose]
 *
 * Opens the serial device, puts it in raw mode, speaks the tunnel protocol as the
 * agent (HELLO with a random boot id, selective-repeat ARQ, keepalive, streams with
 * credit windows) and, for each OPEN from the host, dials 127.0.0.1:port if the port
 * is allow-listed (default: 22 only) and relays bytes both ways. Single-threaded
 * poll() loop; memory bounded by the window, the streams and their credit windows.
 * Survives the line going away (reopens with backoff) and the host restarting (a new
 * host boot id resets every stream; the agent keeps running).
 *
 * Dependency-free C99 + POSIX (Linux). Built by packaging/build-agent.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "tunnel.h"

#ifndef VSPC_AGENT_VERSION
#define VSPC_AGENT_VERSION "0.1.0"
#endif

/* Our receive window and largest send window, frames (a power of two, <= 128). */
#define WIN 128
/* Line output buffer and read size: large enough for a fast line (virtio-serial) to
   move many frames per system call; the byte cap, not this buffer, bounds the queue
   in front of a keystroke. */
/* room for two of the largest frames (VT_MAX_WIRE, 16465 bytes) and then some */
#define OUTBUF_SIZE 65536
#define LINE_READ 65536
/* Bytes read from a service socket at once, then cut into frames. */
#define TX_STAGE 16384
#define DEFAULT_STREAM_WINDOW 65536u
#define DEFAULT_MAX_STREAMS 64u
#define MAX_ALLOW 64
#define DIAL_TIMEOUT_MS 10000
#define IDLE_DELIMITER_MS 20
#define ACK_DELAY_MS 10
#define ACK_EVERY 2
#define HELLO_INITIAL_MS 200
#define HELLO_MAX_MS 2000
#define RTO_INITIAL_MS 1000.0
#define RTO_MIN_MS 100.0
#define RTO_MAX_MS 10000.0
#define KEEPALIVE_IDLE_MS 2000
#define KEEPALIVE_INTERVAL_MS 1000
#define KEEPALIVE_MAX_MISSED 4
#define DUP_THRESHOLD 3
#define MAX_DUP_THRESHOLD 16
#define LOSS_PRIOR_BYTES 4000.0
#define LOSS_EWMA (1.0 / 64)
/* The delay-based sender (as src/protocol/tunnel/arq.ts; docs/tunnel-protocol.md 7.6):
   a Vegas congestion window, a byte cap of delivery rate x (base RTT + QUEUE_TARGET_MS)
   + 2 frames (1 while several streams are open), and short frames while several streams are open. */
#define VEGAS_ALPHA 1.5
#define VEGAS_BETA 3.0
#define VEGAS_LOW_MS 25.0
#define VEGAS_HIGH_MS 50.0
#define MIN_CWND 4.0
#define INITIAL_CWND 8.0
#define QUEUE_TARGET_MS 5.0
#define INTERACTIVE_FRAME_MS 8.0
#define MIN_INTERACTIVE_PAYLOAD 128
#define URGENT_ALLOWANCE 1024.0
#define MIN_CAP_FRAMES 3.0
#define RATE_WINDOW_MS 2000.0
/* A stream with at most this many bytes waiting in its socket counts as interactive. */
#define SMALL_PAYLOAD 256
#define REOPEN_INITIAL_MS 100
#define REOPEN_MAX_MS 2000
#define NEVER INT64_MAX

/* ------------------------------------------------------------------ options, log */

static struct {
  const char *device;
  uint16_t allow[MAX_ALLOW];
  int nallow;
  int verbose;
  unsigned max_streams;
  uint32_t stream_window;
  /* --max-payload; 0: automatic (my_max_payload) */
  unsigned max_payload;
  speed_t baud;
  int set_baud;
} opt;

static void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logmsg(int level, const char *fmt, ...) {
  if (level > opt.verbose) return;
  char buf[512];
  int n = snprintf(buf, sizeof buf, "vspc-agent: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
  va_end(ap);
  if (m < 0) return;
  n += m;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
}
#define LOG(...) logmsg(0, __VA_ARGS__)
#define INFO(...) logmsg(1, __VA_ARGS__)
#define DEBUG(...) logmsg(2, __VA_ARGS__)

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A random non-zero u32 from /dev/urandom (fallback: clock and pid, still non-zero). */
static uint32_t random_u32(void) {
  uint32_t v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
    close(fd);
  }
  if (v == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (uint32_t)ts.tv_nsec * 2654435761u ^ (uint32_t)ts.tv_sec ^ ((uint32_t)getpid() << 16);
  }
  return v ? v : 0x5eed1234u;
}

static volatile sig_atomic_t sig_stop, sig_stats;
static void on_stop(int s) { (void)s; sig_stop = 1; }
static void on_usr1(int s) { (void)s; sig_stats = 1; }

/* ------------------------------------------------------------------ state */

struct outf {
  uint8_t type;
  uint8_t sacked, lost;
  /* The congestion window was (nearly) full when this frame went: its RTT may grow cwnd. */
  uint8_t cwnd_limited;
  uint16_t stream;
  uint16_t len;
  /* Bytes on the line (len + VT_FRAME_OVERHEAD). */
  uint16_t wire;
  uint32_t tx_count;
  uint64_t tx_index;
  int64_t sent_at;
  /* `delivered` and `delivered_at` when this frame was (last) sent: its rate sample. */
  uint64_t dlv;
  int64_t dlv_at;
  uint8_t *payload; /* slot_payload bytes in the slab (alloc_slots) */
};

struct inf {
  uint8_t present, type;
  uint16_t seq, stream, len;
  uint8_t *payload; /* slot_payload bytes in the slab (alloc_slots) */
};

enum { REPORT_VERSION = 1, REPORT_ECHO = 2, REPORT_ROLE = 4 };

static struct link {
  uint32_t boot, peer_boot;
  int established, alive;
  uint16_t tag;
  unsigned peer_window, peer_max_payload;
  unsigned reported;
  int hello_due;
  int64_t hello_at;
  int hello_interval;
  /* send side */
  uint16_t snd_una, snd_nxt;
  struct outf out[WIN];
  uint64_t tx_counter, highest_acked_tx;
  int64_t rto_deadline;
  int have_srtt;
  double srtt, rttvar, rto;
  int have_min_rtt;
  double min_rtt;
  double loss_w, bytes_w;
  int dup_threshold;
  /* delay-based window: congestion window (frames, fractional), delivery rate (wire
     bytes per ms, the largest sample of the current window) */
  double cwnd;
  int slow_start;
  uint64_t delivered;
  int64_t delivered_at;
  double delivery_rate;
  int64_t rate_at;
  /* receive side */
  uint16_t rcv_next;
  struct inf in[WIN];
  int ack_now, ack_pending, saw_dup, delivering;
  int64_t ack_deadline;
  /* keepalive */
  int64_t last_rx_at, last_probe_at;
  int heard_since_rto, probes, probe_due;
  struct {
    uint64_t hellos_sent, hellos_received, sessions, peer_restarts, frames_sent, retransmits,
        fast_retransmits, timeouts, acks_sent, probes_sent, link_downs, frames_received,
        duplicates, out_of_window, out_of_order, stale_acks, bad_tag, no_session, bad_hello,
        echoes, unknown_type;
  } st;
} L;

enum { SS_FREE, SS_DIALING, SS_OPEN, SS_FLUSHING };

struct stream {
  int state;
  unsigned gen;
  uint16_t id, port;
  int fd;
  int64_t dial_deadline;
  uint64_t send_credit;
  uint64_t granted, received, consumed;
  int fin_sent, fin_recv, shut_wr, readable, hup;
  uint8_t *rx;
  size_t rx_cap, rx_head, rx_len;
  /* Host data in rx not yet offered to the service (written once per batch of frames). */
  int rx_dirty;
  /* Bytes read from the service, not yet framed: tx[tx_off .. tx_off + tx_len). */
  uint8_t *tx;
  size_t tx_off, tx_len;
};

struct ctl {
  uint8_t type, code;
  uint16_t id;
  uint32_t credit;
  char text[48];
};

static struct stream *S;
/* Streams not SS_FREE (several: frames are kept short, see payload_limit). */
static unsigned open_streams;
static unsigned rr_cursor;
static struct ctl *ctlq;
static unsigned ctl_cap, ctl_head, ctl_len;
static struct {
  uint64_t open_requests, accepted, refused, resets_sent, resets_received, bytes_to_host,
      bytes_from_host, credits_sent, stale, violations;
} MS;

/* the line */
static int line_fd = -1;
static int line_is_tty;
static int64_t reopen_at;
static int reopen_delay = REOPEN_INITIAL_MS;
static int line_missing_logged;
/* A frame arrived since the line was opened; the line flaps without frames (quiet logs). */
static int line_good, line_quiet;
static uint8_t outbuf[OUTBUF_SIZE];
static size_t out_len;
static int64_t last_tx = INT64_MIN / 2;
static struct vt_decoder dec;

static void mux_reset_all(const char *why);
static unsigned my_max_payload(void);

/*
 * Payload storage of the send and receive windows: 2 × WIN slots of slot_payload
 * bytes, allocated when the line is first opened, sized by what we announce then
 * (256 KiB for 1 KiB frames; 4 MiB for 16 KiB ones, touched only as frames use it).
 * Later announcements never exceed slot_payload (my_max_payload).
 */
static uint8_t *slab;
static unsigned slot_payload;
static int mux_pull(struct outf *o, unsigned max, int urgent_only, int64_t now);
static void mux_handle(uint8_t type, uint16_t id, const uint8_t *p, uint16_t len, int64_t now);
static int ctl_can_accept(void);

/* ------------------------------------------------------------------ reliable link */

static unsigned send_window(void) { return L.peer_window < WIN ? L.peer_window : WIN; }
static unsigned inflight_count(void) { return (unsigned)vt_seq_diff(L.snd_nxt, L.snd_una); }
static struct outf *out_at(unsigned k) { return &L.out[(uint16_t)(L.snd_una + k) % WIN]; }

static double compute_rto(void) {
  double r;
  if (!L.have_srtt) r = RTO_INITIAL_MS;
  else r = L.srtt + (4 * L.rttvar > 1 ? 4 * L.rttvar : 1);
  if (r < RTO_MIN_MS) r = RTO_MIN_MS;
  if (r > RTO_MAX_MS) r = RTO_MAX_MS;
  return r;
}

/*
 * Largest payload for the next frame: min(ours, the host's); while several streams are
 * open, about INTERACTIVE_FRAME_MS of line time (a frame on the line holds up every
 * other stream's next one); reduced when frames get lost (the loss-optimal size).
 */
static unsigned payload_limit(void) {
  unsigned mine = my_max_payload();
  unsigned cap = L.peer_max_payload < mine ? L.peer_max_payload : mine;
  if (L.delivery_rate > 0 && open_streams > 1) {
    double sh = floor(L.delivery_rate * INTERACTIVE_FRAME_MS) - VT_FRAME_OVERHEAD;
    unsigned s = sh <= MIN_INTERACTIVE_PAYLOAD ? MIN_INTERACTIVE_PAYLOAD : sh >= cap ? cap : (unsigned)sh;
    if (s < cap) cap = s;
  }
  if (L.loss_w <= 1e-6 || L.bytes_w <= 0) return cap;
  double e = L.loss_w / L.bytes_w, h = VT_FRAME_OVERHEAD;
  double s = (-h + sqrt(h * h + 4 * h / e)) / 2;
  unsigned lo = cap < VT_MIN_PAYLOAD ? cap : VT_MIN_PAYLOAD;
  unsigned v = s >= cap ? cap : (unsigned)s;
  return v > lo ? v : lo;
}

static void outcome(unsigned payload, int lost) {
  L.loss_w = L.loss_w * (1 - LOSS_EWMA) + (lost ? 1 : 0);
  L.bytes_w = L.bytes_w * (1 - LOSS_EWMA) + payload + VT_FRAME_OVERHEAD;
}

static void link_clear(int64_t now) {
  L.established = 0;
  L.alive = 0;
  L.tag = 0;
  L.snd_una = L.snd_nxt = L.rcv_next = 0;
  for (int i = 0; i < WIN; i++) L.in[i].present = 0;
  L.ack_now = L.ack_pending = 0;
  L.ack_deadline = NEVER;
  L.rto_deadline = NEVER;
  L.have_srtt = 0;
  L.srtt = L.rttvar = 0;
  L.rto = RTO_INITIAL_MS;
  L.probes = 0;
  L.probe_due = 0;
  L.hello_interval = HELLO_INITIAL_MS;
  L.hello_at = now + L.hello_interval;
}

static void assign_slots(void) {
  if (!slab) return;
  for (int i = 0; i < WIN; i++) {
    L.out[i].payload = slab + (size_t)i * slot_payload;
    L.in[i].payload = slab + (size_t)(WIN + i) * slot_payload;
  }
}

/* 0, or -1 when even 1 KiB slots cannot be had. */
static int alloc_slots(unsigned max) {
  if (slab) return 0;
  slab = malloc((size_t)2 * WIN * max);
  if (!slab && max > VT_MAX_PAYLOAD) {
    LOG("out of memory for %u-byte frames: using %u", max, VT_MAX_PAYLOAD);
    max = VT_MAX_PAYLOAD;
    slab = malloc((size_t)2 * WIN * max);
  }
  if (!slab) return -1;
  slot_payload = max;
  assign_slots();
  return 0;
}

static void link_start(int64_t now) {
  memset(&L, 0, sizeof L);
  assign_slots();
  L.boot = random_u32();
  L.peer_window = 1;
  L.peer_max_payload = VT_MIN_PAYLOAD;
  link_clear(now);
  L.hello_due = 1;
  L.heard_since_rto = 1;
}

static void link_establish(int64_t now) {
  L.established = 1;
  L.alive = 1;
  L.tag = vt_session_tag(L.peer_boot, L.boot);
  L.snd_una = L.snd_nxt = L.rcv_next = 0;
  for (int i = 0; i < WIN; i++) L.in[i].present = 0;
  L.last_rx_at = now;
  L.probes = 0;
  L.probe_due = 0;
  L.hello_at = NEVER;
  L.hello_interval = HELLO_INITIAL_MS;
  L.reported = 0;
  /* Large frames on both sides (spec 5.1): we announce them only on a lossless line, so
     start at full size; a loss still shrinks them at once. */
  L.loss_w = (L.peer_max_payload < my_max_payload() ? L.peer_max_payload : my_max_payload()) > VT_MAX_PAYLOAD ? 0 : 1;
  L.bytes_w = LOSS_PRIOR_BYTES;
  L.dup_threshold = DUP_THRESHOLD;
  L.saw_dup = 0;
  L.heard_since_rto = 1;
  L.have_min_rtt = 0;
  L.cwnd = INITIAL_CWND;
  L.slow_start = 1;
  L.delivered = 0;
  L.delivered_at = now;
  L.delivery_rate = 0;
  L.rate_at = 0;
  L.st.sessions++;
  LOG("link up: new session with host %08x (agent boot id %08x, tag %04x, window %u, payload %u)",
      L.peer_boot, L.boot, L.tag, send_window(), L.peer_max_payload);
}

static void heard(int64_t now) {
  L.last_rx_at = now;
  L.heard_since_rto = 1;
  L.probes = 0;
  L.probe_due = 0;
  if (!L.alive) {
    L.alive = 1;
    /* Back from an outage: resend what is outstanding now, forget the backoff. */
    for (unsigned k = 0; k < inflight_count(); k++) {
      struct outf *f = out_at(k);
      if (!f->sacked) f->lost = 1;
    }
    L.rto = compute_rto();
    LOG("link up again (host %08x answers)", L.peer_boot);
  }
}

static void report(unsigned kind, const char *msg) {
  if (L.reported & kind) return;
  L.reported |= kind;
  LOG("%s", msg);
}

static void on_hello(const struct vt_frame *f, int64_t now) {
  struct vt_hello h;
  L.st.hellos_received++;
  if (vt_hello_decode(f->payload, f->len, &h) != 0) {
    L.st.bad_hello++;
    return;
  }
  if (h.version != VT_VERSION) {
    char m[96];
    snprintf(m, sizeof m, "VSPC_TUNNEL_VERSION_MISMATCH: host speaks protocol version %u, we speak %u", h.version, VT_VERSION);
    report(REPORT_VERSION, m);
    return;
  }
  if (h.boot == L.boot) {
    L.st.echoes++;
    report(REPORT_ECHO, "VSPC_TUNNEL_ECHO: our own HELLO came back: the line echoes");
    return;
  }
  if (h.role == VT_ROLE_AGENT) {
    report(REPORT_ROLE, "VSPC_TUNNEL_ROLE_MISMATCH: the peer is an agent too");
    return;
  }
  if (h.boot == 0 || h.window == 0 || h.max_payload < VT_MIN_PAYLOAD || h.role != VT_ROLE_HOST) {
    L.st.bad_hello++;
    return;
  }
  if (L.peer_boot != 0 && h.boot != L.peer_boot) {
    uint32_t old = L.peer_boot;
    int was = L.established;
    link_clear(now);
    if (was) {
      /* Rule R: leaving an established session draws a new boot id. */
      uint32_t id;
      do id = random_u32();
      while (id == 0 || id == L.boot || id == h.boot);
      L.boot = id;
      L.st.peer_restarts++;
      L.peer_boot = h.boot;
      LOG("host restarted (boot id %08x -> %08x): resetting every stream; new agent boot id %08x", old, h.boot, L.boot);
      mux_reset_all("peer restarted");
    }
  }
  if (!L.established) {
    L.peer_boot = h.boot;
    L.peer_window = h.window < VT_MAX_WINDOW ? h.window : VT_MAX_WINDOW;
    L.peer_max_payload = h.max_payload < VT_MAX_LARGE_PAYLOAD ? h.max_payload : VT_MAX_LARGE_PAYLOAD;
    if (h.peer_boot == L.boot) link_establish(now);
  } else if (h.boot == L.peer_boot) {
    heard(now);
  }
  if (!(h.peer_boot == L.boot && (h.flags & VT_HELLO_UP))) L.hello_due = 1;
}

/*
 * TCP Vegas on a dedicated line (as arq.ts vegas()): queueing delay = rtt - base RTT -
 * (ACK delay + 2 ms); grow while it is under max(VEGAS_ALPHA frames, VEGAS_LOW_MS) and
 * the window was the limit, shrink above max(VEGAS_BETA frames, VEGAS_HIGH_MS).
 */
static void vegas(double r, int cwnd_limited) {
  double min_rtt = L.have_min_rtt ? L.min_rtt : r;
  double delay = r - min_rtt - ACK_DELAY_MS - 2;
  if (delay < 0) delay = 0;
  double frame_ms = r / L.cwnd;
  double low = VEGAS_ALPHA * frame_ms > VEGAS_LOW_MS ? VEGAS_ALPHA * frame_ms : VEGAS_LOW_MS;
  double high = VEGAS_BETA * frame_ms > VEGAS_HIGH_MS ? VEGAS_BETA * frame_ms : VEGAS_HIGH_MS;
  if (delay < low) {
    if (cwnd_limited) L.cwnd += L.slow_start ? 1 : 2 / L.cwnd;
  } else {
    L.slow_start = 0;
    if (delay > 2 * high) L.cwnd -= 1;
    else if (delay > high) L.cwnd -= 2 / L.cwnd;
  }
  if (L.cwnd < MIN_CWND) L.cwnd = MIN_CWND;
  if (L.cwnd > send_window()) L.cwnd = send_window();
}

static void sample(double r, int cwnd_limited, unsigned payload) {
  if (r < 0) r = 0;
  if (!L.have_srtt) {
    L.have_srtt = 1;
    L.srtt = r;
    L.rttvar = r / 2;
  } else {
    L.rttvar = 0.75 * L.rttvar + 0.25 * fabs(L.srtt - r);
    L.srtt = 0.875 * L.srtt + 0.125 * r;
  }
  L.rto = compute_rto();
  /* The base RTT: from frames of about the current full size only (a frame's own
     serialisation is part of its round trip). */
  if (payload >= 0.75 * payload_limit() && (!L.have_min_rtt || r < L.min_rtt)) {
    L.have_min_rtt = 1;
    L.min_rtt = r;
  }
  vegas(r, cwnd_limited);
}

static void acked(struct outf *f, int64_t now) {
  L.delivered += f->wire;
  L.delivered_at = now;
  /* Delivery rate (as BBR): bytes acknowledged between this frame's sending and its
     acknowledgement, over that time; a window max, so that typing pauses do not lower it. */
  if (f->tx_count == 1 && now > f->dlv_at) {
    double rate = (double)(L.delivered - f->dlv) / (double)(now - f->dlv_at);
    double window = 8 * L.srtt > RATE_WINDOW_MS ? 8 * L.srtt : RATE_WINDOW_MS;
    if (rate >= L.delivery_rate || (double)(now - L.rate_at) > window) {
      L.delivery_rate = rate;
      L.rate_at = now;
    }
  }
  if (f->tx_count == 1) sample((double)(now - f->sent_at), f->cwnd_limited, f->len);
  int ambiguous = f->tx_count > 1 && (double)(now - f->sent_at) < (L.have_min_rtt ? L.min_rtt : 0);
  if (!ambiguous && f->tx_index > L.highest_acked_tx) L.highest_acked_tx = f->tx_index;
  outcome(f->len, 0);
}

static int has_outstanding(void) {
  for (unsigned k = 0; k < inflight_count(); k++)
    if (!out_at(k)->sacked) return 1;
  return 0;
}

static void detect_losses(void) {
  for (unsigned k = 0; k < inflight_count(); k++) {
    struct outf *f = out_at(k);
    if (!f->sacked && !f->lost && L.highest_acked_tx >= f->tx_index + (uint64_t)L.dup_threshold) {
      f->lost = 1;
      L.st.fast_retransmits++;
      outcome(f->len, 1);
    }
  }
}

static void on_ack(uint16_t ack, const uint8_t *sack, unsigned sack_len, int64_t now) {
  int d = vt_seq_diff(ack, L.snd_una);
  if (d < 0 || d > (int)inflight_count()) {
    L.st.stale_acks++;
    return;
  }
  int progress = d > 0;
  for (int k = 0; k < d; k++) {
    struct outf *f = out_at((unsigned)k);
    if (!f->sacked) acked(f, now);
  }
  L.snd_una = ack;
  if (sack) {
    unsigned n = inflight_count();
    if (sack_len > VT_MAX_SACK) sack_len = VT_MAX_SACK;
    for (unsigned byte = 0; byte < sack_len; byte++) {
      if (!sack[byte]) continue;
      for (unsigned bit = 0; bit < 8; bit++) {
        if (!(sack[byte] & (1u << bit))) continue;
        unsigned idx = byte * 8 + bit + 1;
        if (idx >= n) goto done;
        struct outf *f = out_at(idx);
        if (!f->sacked) {
          f->sacked = 1;
          f->lost = 0;
          acked(f, now);
          progress = 1;
        }
      }
    }
  }
done:
  if (progress) {
    L.rto_deadline = has_outstanding() ? now + (int64_t)L.rto : NEVER;
    detect_losses();
  }
}

static void deliver_in_order(int64_t now) {
  if (L.delivering) return;
  L.delivering = 1;
  for (;;) {
    struct inf *s = &L.in[L.rcv_next % WIN];
    if (!L.established || !s->present || s->seq != L.rcv_next || !ctl_can_accept()) break;
    s->present = 0;
    L.rcv_next++;
    L.ack_pending++;
    mux_handle(s->type, s->stream, s->payload, s->len, now);
  }
  L.delivering = 0;
  if (L.ack_pending >= ACK_EVERY) L.ack_now = 1;
  else if (L.ack_pending > 0 && L.ack_deadline == NEVER) L.ack_deadline = now + ACK_DELAY_MS;
}

static void on_sequenced(const struct vt_frame *f, int64_t now) {
  int d = vt_seq_diff(f->seq, L.rcv_next);
  struct inf *s = &L.in[f->seq % WIN];
  if (d < 0 || (d < WIN && s->present && s->seq == f->seq)) {
    L.st.duplicates++;
    L.saw_dup = 1;
    L.ack_now = 1;
    return;
  }
  if (d >= WIN) {
    L.st.out_of_window++;
    L.ack_now = 1;
    return;
  }
  if (d == 0 && !L.delivering && ctl_can_accept()) {
    /* The next frame in order, deliverable now: straight from the decoder's buffer,
       without the copy into the reorder slot. */
    L.rcv_next++;
    L.ack_pending++;
    L.delivering = 1;
    mux_handle(f->type, f->stream, f->payload, f->len, now);
    L.delivering = 0;
    deliver_in_order(now);
    return;
  }
  s->present = 1;
  s->seq = f->seq;
  s->type = f->type;
  s->stream = f->stream;
  s->len = f->len;
  if (f->len) memcpy(s->payload, f->payload, f->len);
  if (d > 0) {
    L.st.out_of_order++;
    L.ack_now = 1;
  }
  deliver_in_order(now);
}

static void link_receive(const struct vt_frame *f, int64_t now) {
  if (f->type == VT_HELLO) {
    on_hello(f, now);
    return;
  }
  if (f->flags & VT_FLAG_AGENT) {
    /* Our own frame came back (spec 5.4): its ack and seq are ours, not the host's. */
    L.st.echoes++;
    report(REPORT_ECHO, "VSPC_TUNNEL_ECHO: our own frames come back: the line echoes");
    return;
  }
  if (!L.established) {
    L.st.no_session++;
    return;
  }
  if (f->tag != L.tag) {
    L.st.bad_tag++;
    return;
  }
  L.st.frames_received++;
  heard(now);
  on_ack(f->ack, f->type == VT_ACK ? f->payload : NULL, f->type == VT_ACK ? f->len : 0, now);
  if (f->type == VT_ACK && (f->flags & VT_FLAG_DUP)) {
    L.loss_w = L.loss_w > 1 ? L.loss_w - 1 : 0;
    if (L.dup_threshold < MAX_DUP_THRESHOLD) L.dup_threshold++;
  }
  if (f->flags & VT_FLAG_POLL) L.ack_now = 1;
  if (f->type >= VT_FIRST_SEQUENCED) on_sequenced(f, now);
  else if (f->type != VT_ACK) L.st.unknown_type++;
}

static int64_t keepalive_deadline(void) {
  return L.probes == 0 ? L.last_rx_at + KEEPALIVE_IDLE_MS : L.last_probe_at + KEEPALIVE_INTERVAL_MS;
}

static void on_rto(int64_t now) {
  L.st.timeouts++;
  int marked = 0;
  struct outf *oldest = NULL;
  for (unsigned k = 0; k < inflight_count(); k++) {
    struct outf *f = out_at(k);
    if (f->sacked) continue;
    if (!oldest) oldest = f;
    if (!f->lost && (double)(now - f->sent_at) >= L.rto) {
      f->lost = 1;
      marked = 1;
      outcome(f->len, 1);
    }
  }
  if (!marked && oldest && !oldest->lost) {
    oldest->lost = 1;
    outcome(oldest->len, 1);
  }
  double twice = 2 * compute_rto();
  if (L.heard_since_rto) L.rto = twice < RTO_MAX_MS ? twice : RTO_MAX_MS;
  else L.rto = 2 * L.rto < RTO_MAX_MS ? 2 * L.rto : RTO_MAX_MS;
  L.heard_since_rto = 0;
  L.rto_deadline = oldest ? now + (int64_t)L.rto : NEVER;
  L.dup_threshold = DUP_THRESHOLD;
}

static void link_poll(int64_t now) {
  if (!L.established) {
    if (now >= L.hello_at) {
      L.hello_due = 1;
      L.hello_interval = L.hello_interval * 2 < HELLO_MAX_MS ? L.hello_interval * 2 : HELLO_MAX_MS;
      L.hello_at = now + L.hello_interval;
    }
    return;
  }
  if (L.ack_deadline != NEVER && now >= L.ack_deadline) {
    L.ack_deadline = NEVER;
    if (L.ack_pending > 0) L.ack_now = 1;
  }
  if (L.rto_deadline != NEVER && now >= L.rto_deadline) on_rto(now);
  if (now >= keepalive_deadline()) {
    if (L.probes >= KEEPALIVE_MAX_MISSED && L.alive) {
      L.alive = 0;
      L.st.link_downs++;
      LOG("link down: host %08x stopped answering (streams kept)", L.peer_boot);
    }
    L.probe_due = 1;
    L.probes++;
    L.last_probe_at = now;
  }
}

static int64_t link_deadline(void) {
  if (!L.established) return L.hello_at;
  int64_t d = keepalive_deadline();
  if (L.ack_deadline < d) d = L.ack_deadline;
  if (L.rto_deadline < d) d = L.rto_deadline;
  return d;
}

static int seq_window_open(void) {
  return L.established && inflight_count() < send_window();
}

/* Frames and wire bytes in flight: sent, not acknowledged, not declared lost. */
static unsigned flying_frames(void) {
  unsigned n = 0;
  for (unsigned k = 0; k < inflight_count(); k++) {
    const struct outf *f = out_at(k);
    if (!f->sacked && !f->lost) n++;
  }
  return n;
}

static double bytes_in_flight(void) {
  double b = 0;
  for (unsigned k = 0; k < inflight_count(); k++) {
    const struct outf *f = out_at(k);
    if (!f->sacked && !f->lost) b += f->wire;
  }
  return b;
}

/*
 * Largest number of wire bytes in flight: what the line delivers in a base round trip
 * plus QUEUE_TARGET_MS, plus two frames (the one on the line, the ACK granularity; one
 * while several streams are open).
 * Whatever the guest's tty and QEMU buffer in front of the line, a keystroke waits
 * behind at most about QUEUE_TARGET_MS plus a frame of bulk. No limit before the first
 * rate sample (the congestion window alone limits the start).
 */
static double byte_cap(void) {
  if (L.delivery_rate <= 0 || !L.have_min_rtt) return INFINITY;
  double frame = payload_limit() + VT_FRAME_OVERHEAD;
  /* Two frames beyond the bandwidth-delay product with one stream, one while several
     are open: a keystroke waits behind every byte in flight (as arq.ts capSlackFrames). */
  double cap = L.delivery_rate * (L.min_rtt + QUEUE_TARGET_MS) + (open_streams > 1 ? 1 : 2) * frame;
  return cap > MIN_CAP_FRAMES * frame ? cap : MIN_CAP_FRAMES * frame;
}

/* A new frame may go: sequence window room, fewer than cwnd frames and byte_cap bytes in flight. */
static int window_open(void) {
  return seq_window_open() && flying_frames() < (unsigned)floor(L.cwnd) && bytes_in_flight() < byte_cap();
}

static void sequenced_frame(const struct outf *o, uint16_t seq, struct vt_frame *f) {
  L.ack_pending = 0;
  L.ack_deadline = NEVER;
  f->type = o->type;
  f->flags = 0;
  f->tag = L.tag;
  f->seq = seq;
  f->ack = L.rcv_next;
  f->stream = o->stream;
  f->len = o->len;
  f->payload = o->payload;
}

/* The next frame to transmit (HELLO, ACK, retransmission, new message), or 0. */
static int next_frame(int64_t now, struct vt_frame *f, uint8_t *scratch) {
  if (L.hello_due) {
    struct vt_hello h = {VT_VERSION, VT_ROLE_AGENT, (uint8_t)(L.established ? VT_HELLO_UP : 0), WIN,
                         L.boot, L.peer_boot, (uint16_t)my_max_payload()};
    L.hello_due = 0;
    L.st.hellos_sent++;
    vt_hello_encode(&h, scratch);
    memset(f, 0, sizeof *f);
    f->type = VT_HELLO;
    f->len = VT_HELLO_SIZE;
    f->payload = scratch;
    return 1;
  }
  if (!L.established) return 0;
  if (L.probe_due || L.ack_now) {
    int poll = L.probe_due;
    L.probe_due = 0;
    L.ack_now = 0;
    L.ack_pending = 0;
    L.ack_deadline = NEVER;
    if (poll) L.st.probes_sent++;
    else L.st.acks_sent++;
    unsigned n = 0;
    memset(scratch, 0, VT_MAX_SACK);
    for (int d = 1; d < WIN; d++) {
      uint16_t seq = (uint16_t)(L.rcv_next + d);
      struct inf *s = &L.in[seq % WIN];
      if (s->present && s->seq == seq) {
        unsigned i = (unsigned)d - 1;
        scratch[i >> 3] |= (uint8_t)(1u << (i & 7));
        if ((i >> 3) + 1 > n) n = (i >> 3) + 1;
      }
    }
    memset(f, 0, sizeof *f);
    f->type = VT_ACK;
    f->flags = (uint8_t)((poll ? VT_FLAG_POLL : 0) | (L.saw_dup ? VT_FLAG_DUP : 0));
    L.saw_dup = 0;
    f->tag = L.tag;
    f->ack = L.rcv_next;
    f->len = (uint16_t)n;
    f->payload = scratch;
    return 1;
  }
  for (unsigned k = 0; k < inflight_count(); k++) {
    struct outf *o = out_at(k);
    if (o->lost && !o->sacked) {
      o->lost = 0;
      o->tx_count++;
      o->sent_at = now;
      o->tx_index = ++L.tx_counter;
      o->dlv = L.delivered;
      o->dlv_at = L.delivered_at;
      L.st.retransmits++;
      if (L.rto_deadline == NEVER) L.rto_deadline = now + (int64_t)L.rto;
      sequenced_frame(o, (uint16_t)(L.snd_una + k), f);
      return 1;
    }
  }
  /* A new message: any while the window is open; while only the byte budget is used up
     (by bulk frames), an urgent one (control, credit, an interactive stream) still goes
     within URGENT_ALLOWANCE: a keystroke does not wait for the next ACK. */
  int open = window_open();
  if (open || (seq_window_open() && bytes_in_flight() < byte_cap() + URGENT_ALLOWANCE)) {
    struct outf *o = &L.out[L.snd_nxt % WIN];
    if (mux_pull(o, payload_limit(), !open, now)) {
      unsigned flying = flying_frames();
      double bif = bytes_in_flight();
      o->sent_at = now;
      o->tx_count = 1;
      o->tx_index = ++L.tx_counter;
      o->sacked = o->lost = 0;
      /* The window limits us when (nearly) full; in slow start when half of it is in use. */
      o->cwnd_limited = L.slow_start ? 2.0 * (flying + 1) >= L.cwnd : flying + 2 >= (unsigned)floor(L.cwnd);
      o->wire = (uint16_t)(o->len + VT_FRAME_OVERHEAD);
      o->dlv = L.delivered;
      /* A frame sent onto an idle line starts its rate sample now, not at the last delivery. */
      o->dlv_at = bif == 0 ? now : L.delivered_at;
      uint16_t seq = L.snd_nxt++;
      if (L.rto_deadline == NEVER) L.rto_deadline = now + (int64_t)L.rto;
      L.st.frames_sent++;
      sequenced_frame(o, seq, f);
      return 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ streams */

static unsigned ctl_limit(void) { return 2 * opt.max_streams + 16; }
static int ctl_can_accept(void) { return ctl_len < ctl_limit(); }

static void ctl_push(uint8_t type, uint16_t id, uint8_t code, uint32_t credit, const char *text) {
  if (ctl_len == ctl_cap) {
    /* Cannot happen (see the bound in main); drop rather than overrun. */
    LOG("control queue full: dropping a message for stream %04x", id);
    return;
  }
  struct ctl *c = &ctlq[(ctl_head + ctl_len) % ctl_cap];
  ctl_len++;
  c->type = type;
  c->id = id;
  c->code = code;
  c->credit = credit;
  snprintf(c->text, sizeof c->text, "%s", text ? text : "");
  if (type == VT_RESET) MS.resets_sent++;
  if (type == VT_OPEN_FAIL) MS.refused++;
}

static void sock_abort(int fd) {
  struct linger lg = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
}

static void stream_free(struct stream *s, int abortive) {
  if (s->state != SS_FREE && open_streams > 0) open_streams--;
  if (s->fd >= 0) {
    if (abortive) sock_abort(s->fd);
    else close(s->fd);
  }
  free(s->rx);
  free(s->tx);
  unsigned gen = s->gen + 1;
  memset(s, 0, sizeof *s);
  s->gen = gen;
  s->fd = -1;
  s->state = SS_FREE;
}

static struct stream *find_stream(uint16_t id) {
  for (unsigned i = 0; i < opt.max_streams; i++)
    if ((S[i].state == SS_DIALING || S[i].state == SS_OPEN) && S[i].id == id) return &S[i];
  return NULL;
}

/* We end a stream because of the peer or the service: tell the host, drop the socket. */
static void stream_fail(struct stream *s, uint8_t code, const char *text) {
  INFO("stream %04x (port %u): %s %s (%s)", s->id, s->port, s->state == SS_DIALING ? "refused" : "reset",
       vt_reason_name(code), text);
  ctl_push(s->state == SS_DIALING ? VT_OPEN_FAIL : VT_RESET, s->id, code, 0, text);
  stream_free(s, 1);
}

static void violation(struct stream *s, const char *text) {
  MS.violations++;
  stream_fail(s, VT_R_PROTOCOL, text);
}

static void mux_reset_all(const char *why) {
  unsigned n = 0;
  for (unsigned i = 0; i < opt.max_streams; i++) {
    if (S[i].state == SS_FREE) continue;
    if (S[i].state != SS_FLUSHING) n++;
    stream_free(&S[i], 1);
  }
  ctl_head = ctl_len = 0;
  if (n) LOG("%u stream(s) reset: %s", n, why);
}

static void maybe_closed(struct stream *s) {
  if (!(s->fin_sent && s->fin_recv)) return;
  if (s->state == SS_OPEN) INFO("stream %04x (port %u) closed", s->id, s->port);
  if (s->rx_len == 0) {
    stream_free(s, 0);
  } else {
    s->state = SS_FLUSHING; /* the id is free for the host; finish writing to the service */
  }
}

static void after_drain(struct stream *s) {
  if (s->rx_len == 0 && s->rx_cap > 65536) {
    free(s->rx);
    s->rx = NULL;
    s->rx_cap = 0;
    s->rx_head = 0;
  }
  if (s->rx_len == 0 && s->fin_recv && !s->shut_wr) {
    shutdown(s->fd, SHUT_WR);
    s->shut_wr = 1;
  }
  if (s->state == SS_FLUSHING && s->rx_len == 0) stream_free(s, 0);
  else maybe_closed(s);
}

/* Writes buffered host data to the service; consumed bytes become credit. 0, or -1 when the stream died. */
static int flush_rx(struct stream *s) {
  while (s->rx_len > 0) {
    size_t first = s->rx_cap - s->rx_head;
    if (first > s->rx_len) first = s->rx_len;
    ssize_t w = send(s->fd, s->rx + s->rx_head, first, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
      if (s->state == SS_FLUSHING) stream_free(s, 1);
      else stream_fail(s, VT_R_ABORTED, strerror(errno));
      return -1;
    }
    s->consumed += (uint64_t)w;
    s->rx_head = (s->rx_head + (size_t)w) % s->rx_cap;
    s->rx_len -= (size_t)w;
    if (s->rx_len == 0) s->rx_head = 0;
  }
  after_drain(s);
  return 0;
}

static int rx_append(struct stream *s, const uint8_t *p, size_t n) {
  if (s->rx_len + n > s->rx_cap) {
    size_t cap = s->rx_cap ? s->rx_cap * 2 : 4096;
    if (cap < s->rx_len + n) cap = s->rx_len + n;
    if (cap > opt.stream_window) cap = opt.stream_window;
    if (cap < s->rx_len + n) return -1; /* cannot happen: credit bounds the buffer */
    uint8_t *b = malloc(cap);
    if (!b) return -1;
    size_t first = s->rx_cap - s->rx_head < s->rx_len ? s->rx_cap - s->rx_head : s->rx_len;
    if (s->rx_len) {
      memcpy(b, s->rx + s->rx_head, first);
      memcpy(b + first, s->rx, s->rx_len - first);
    }
    free(s->rx);
    s->rx = b;
    s->rx_cap = cap;
    s->rx_head = 0;
  }
  /* Two copies at most: up to the end of the ring, then from its start. */
  size_t tail = (s->rx_head + s->rx_len) % s->rx_cap;
  size_t k = s->rx_cap - tail < n ? s->rx_cap - tail : n;
  memcpy(s->rx + tail, p, k);
  memcpy(s->rx, p + k, n - k);
  s->rx_len += n;
  return 0;
}

static void on_data(struct stream *s, const uint8_t *p, uint16_t len) {
  if (s->fin_recv) return violation(s, "DATA after FIN");
  if (len == 0) return violation(s, "empty DATA");
  if (s->received + len > s->granted) {
    MS.violations++;
    stream_fail(s, VT_R_FLOW_CONTROL, "DATA beyond credit");
    return;
  }
  s->received += len;
  MS.bytes_from_host += len;
  /* Buffered, and written to the service once the frames of this read are all in
     (flush_dirty): one send() per batch instead of one per frame. */
  if (rx_append(s, p, len) != 0) {
    stream_fail(s, VT_R_NO_RESOURCES, "out of memory");
    return;
  }
  s->rx_dirty = 1;
}

/* Writes what the frames just received brought to each service. */
static void flush_dirty(void) {
  for (unsigned i = 0; i < opt.max_streams; i++) {
    struct stream *s = &S[i];
    if (s->state == SS_FREE || !s->rx_dirty) continue;
    s->rx_dirty = 0;
    if (s->rx_len > 0) flush_rx(s);
  }
}

static int port_allowed(uint16_t port) {
  for (int i = 0; i < opt.nallow; i++)
    if (opt.allow[i] == port) return 1;
  return 0;
}

static void dial_done(struct stream *s, int err) {
  if (err == 0) {
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    s->state = SS_OPEN;
    MS.accepted++;
    ctl_push(VT_OPEN_OK, s->id, 0, opt.stream_window, NULL);
    INFO("stream %04x: connected to 127.0.0.1:%u", s->id, s->port);
  } else {
    stream_fail(s, err == ECONNREFUSED ? VT_R_REFUSED : VT_R_UNREACHABLE, strerror(err));
  }
}

static void on_open(uint16_t id, const uint8_t *p, uint16_t len, int64_t now) {
  char text[48];
  if ((id & VT_STREAM_AGENT_BIT) || id == 0 || len != 6 || vt_get16(p) == 0 || vt_get32(p + 2) == 0) {
    MS.violations++;
    ctl_push(VT_OPEN_FAIL, id, VT_R_PROTOCOL, 0, "bad OPEN");
    return;
  }
  uint16_t port = vt_get16(p);
  uint32_t credit = vt_get32(p + 2);
  MS.open_requests++;
  struct stream *old = find_stream(id);
  if (old) {
    /* The host reuses an id we hold: close ours silently, refuse the new one. */
    MS.violations++;
    stream_free(old, 1);
    ctl_push(VT_OPEN_FAIL, id, VT_R_PROTOCOL, 0, "stream id in use");
    return;
  }
  if (!port_allowed(port)) {
    snprintf(text, sizeof text, "port %u not allowed", port);
    INFO("stream %04x: %s", id, text);
    ctl_push(VT_OPEN_FAIL, id, VT_R_NOT_ALLOWED, 0, text);
    return;
  }
  struct stream *s = NULL;
  for (unsigned i = 0; i < opt.max_streams && !s; i++)
    if (S[i].state == SS_FREE) s = &S[i];
  if (!s) {
    ctl_push(VT_OPEN_FAIL, id, VT_R_NO_RESOURCES, 0, "too many streams");
    return;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ctl_push(VT_OPEN_FAIL, id, VT_R_NO_RESOURCES, 0, strerror(errno));
    return;
  }
  s->fd = fd;
  s->id = id;
  s->port = port;
  s->state = SS_DIALING;
  open_streams++;
  s->send_credit = credit;
  s->granted = opt.stream_window;
  s->dial_deadline = now + DIAL_TIMEOUT_MS;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  DEBUG("stream %04x: dialling 127.0.0.1:%u (credit %u)", id, port, credit);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) dial_done(s, 0);
  else if (errno != EINPROGRESS && errno != EINTR) dial_done(s, errno);
}

static void mux_handle(uint8_t type, uint16_t id, const uint8_t *p, uint16_t len, int64_t now) {
  if (type == VT_OPEN) {
    on_open(id, p, len, now);
    return;
  }
  if (type == VT_OPEN_OK || type == VT_OPEN_FAIL) {
    MS.stale++; /* we never open streams: an answer is never ours */
    return;
  }
  if (type < VT_DATA || type > VT_CREDIT) return; /* reserved sequenced types: acked, ignored */
  struct stream *s = find_stream(id);
  if (!s) {
    MS.stale++;
    return;
  }
  if (s->state == SS_DIALING && type != VT_RESET) {
    violation(s, "message before OPEN_OK");
    return;
  }
  switch (type) {
    case VT_DATA:
      on_data(s, p, len);
      return;
    case VT_FIN:
      if (s->fin_recv) return violation(s, "second FIN");
      s->fin_recv = 1;
      DEBUG("stream %04x: FIN from host", s->id);
      after_drain(s);
      return;
    case VT_RESET:
      MS.resets_received++;
      INFO("stream %04x (port %u): reset by host (%s)", s->id, s->port, len ? vt_reason_name(p[0]) : "?");
      if (s->state == SS_DIALING) ctl_push(VT_OPEN_FAIL, s->id, VT_R_CANCELLED, 0, "");
      stream_free(s, 1);
      return;
    case VT_CREDIT: {
      if (len != 4 || vt_get32(p) == 0) return violation(s, "bad CREDIT");
      if (s->fin_sent) return;
      s->send_credit += vt_get32(p);
      if (s->send_credit > 0xFFFFFFFFu) return violation(s, "credit above 2^32-1");
      return;
    }
  }
}

/* Bytes waiting in a stream's socket (FIONREAD); a large value when unknown. */
static size_t sock_pending(const struct stream *s) {
  int n = 0;
  if (ioctl(s->fd, FIONREAD, &n) != 0 || n < 0) return SIZE_MAX;
  return (size_t)n;
}

/*
 * The next stream message: control, then CREDIT, then DATA/FIN round-robin, one frame
 * per turn, streams with at most SMALL_PAYLOAD bytes waiting (interactive) first, as
 * the host's multiplexer does. `urgent_only`: only control, CREDIT and interactive
 * streams (the byte cap is used up by bulk frames).
 */
static int mux_pull(struct outf *o, unsigned max, int urgent_only, int64_t now) {
  (void)now;
  if (ctl_len > 0) {
    struct ctl *c = &ctlq[ctl_head];
    ctl_head = (ctl_head + 1) % ctl_cap;
    ctl_len--;
    o->type = c->type;
    o->stream = c->id;
    if (c->type == VT_OPEN_OK) {
      vt_put32(o->payload, c->credit);
      o->len = 4;
    } else {
      size_t t = strlen(c->text);
      if (t > VT_MAX_REASON_TEXT) t = VT_MAX_REASON_TEXT;
      o->payload[0] = c->code;
      memcpy(o->payload + 1, c->text, t);
      o->len = (uint16_t)(1 + t);
    }
    return 1;
  }
  unsigned quarter = opt.stream_window / 4 ? opt.stream_window / 4 : 1;
  for (unsigned i = 0; i < opt.max_streams; i++) {
    struct stream *s = &S[i];
    if (s->state != SS_OPEN || s->fin_recv) continue;
    uint64_t inc = s->consumed + opt.stream_window - s->granted;
    if (inc >= quarter) {
      s->granted += inc;
      MS.credits_sent++;
      o->type = VT_CREDIT;
      o->stream = s->id;
      vt_put32(o->payload, (uint32_t)inc);
      o->len = 4;
      return 1;
    }
  }
  for (int pass = 0; pass < (urgent_only ? 1 : 2); pass++)
  for (unsigned k = 0; k < opt.max_streams; k++) {
    unsigned i = (rr_cursor + k) % opt.max_streams;
    struct stream *s = &S[i];
    if (s->state != SS_OPEN || s->fin_sent || s->send_credit == 0 || (!s->readable && s->tx_len == 0)) continue;
    if (pass == 0 && (urgent_only || open_streams > 1) && s->tx_len + (s->readable ? sock_pending(s) : 0) > SMALL_PAYLOAD) continue;
    ssize_t n = 0;
    if (s->tx_len == 0) {
      /* Read up to TX_STAGE bytes (within the credit) at once and frame them over the
         next turns: one recv() for many frames. Without the staging buffer (out of
         memory), one frame's worth straight into the frame. */
      if (!s->tx) s->tx = malloc(TX_STAGE);
      uint8_t *dst = s->tx ? s->tx : o->payload;
      size_t room = s->tx ? TX_STAGE : max;
      size_t want = s->send_credit < room ? (size_t)s->send_credit : room;
      n = recv(s->fd, dst, want, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        s->readable = 0;
        continue;
      }
      if (n > 0 && !s->tx) {
        rr_cursor = (i + 1) % opt.max_streams;
        o->stream = s->id;
        s->send_credit -= (uint64_t)n;
        MS.bytes_to_host += (uint64_t)n;
        o->type = VT_DATA;
        o->len = (uint16_t)n;
        return 1;
      }
      if (n > 0) {
        s->tx_off = 0;
        s->tx_len = (size_t)n;
      }
    }
    rr_cursor = (i + 1) % opt.max_streams;
    o->stream = s->id;
    if (s->tx_len > 0) {
      size_t k = s->tx_len < max ? s->tx_len : max;
      if (k > s->send_credit) k = (size_t)s->send_credit;
      memcpy(o->payload, s->tx + s->tx_off, k);
      s->tx_off += k;
      s->tx_len -= k;
      s->send_credit -= (uint64_t)k;
      MS.bytes_to_host += (uint64_t)k;
      o->type = VT_DATA;
      o->len = (uint16_t)k;
      return 1;
    }
    if (n == 0) {
      DEBUG("stream %04x: end of data from the service, FIN", s->id);
      s->fin_sent = 1;
      s->readable = 0;
      o->type = VT_FIN;
      o->len = 0;
      maybe_closed(s);
      return 1;
    }
    /* The service reset the connection. */
    const char *err = strerror(errno);
    INFO("stream %04x (port %u): service connection failed (%s): RESET ABORTED", s->id, s->port, err);
    size_t t = strlen(err);
    if (t > VT_MAX_REASON_TEXT) t = VT_MAX_REASON_TEXT;
    o->type = VT_RESET;
    o->payload[0] = VT_R_ABORTED;
    memcpy(o->payload + 1, err, t);
    o->len = (uint16_t)(1 + t);
    MS.resets_sent++;
    stream_free(s, 1);
    return 1;
  }
  return 0;
}

/* ------------------------------------------------------------------ the line */

static speed_t parse_baud(long b) {
  switch (b) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 115200: return B115200;
    case 230400: return B230400;
#ifdef B460800
    case 460800: return B460800;
#endif
#ifdef B921600
    case 921600: return B921600;
#endif
    default: return 0;
  }
}

static void line_open(int64_t now) {
  int fd = open(opt.device, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (!line_missing_logged) LOG("cannot open %s: %s (retrying)", opt.device, strerror(errno));
    else DEBUG("cannot open %s: %s", opt.device, strerror(errno));
    line_missing_logged = 1;
    reopen_at = now + reopen_delay;
    reopen_delay = reopen_delay * 2 < REOPEN_MAX_MS ? reopen_delay * 2 : REOPEN_MAX_MS;
    return;
  }
  struct termios t;
  line_is_tty = tcgetattr(fd, &t) == 0;
  if (line_is_tty) {
    cfmakeraw(&t); /* no echo, no line editing, no CR/NL mapping, no signals, 8 bits */
    t.c_iflag &= ~(tcflag_t)(IXON | IXOFF | IXANY | INPCK);
    t.c_cflag &= ~(tcflag_t)(CSTOPB | CRTSCTS | HUPCL);
    t.c_cflag |= CLOCAL | CREAD | CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (opt.set_baud) {
      cfsetispeed(&t, opt.baud);
      cfsetospeed(&t, opt.baud);
    }
    if (tcsetattr(fd, TCSANOW, &t) != 0) {
      LOG("cannot put %s in raw mode: %s", opt.device, strerror(errno));
      close(fd);
      reopen_at = now + REOPEN_MAX_MS;
      return;
    }
    struct termios chk;
    if (tcgetattr(fd, &chk) == 0 && (chk.c_lflag & (ECHO | ICANON))) LOG("warning: %s still echoes after tcsetattr", opt.device);
    tcflush(fd, TCIOFLUSH); /* whatever a getty or the kernel left there */
  }
  line_fd = fd;
  line_missing_logged = 0;
  line_good = 0;
  out_len = 0;
  last_tx = INT64_MIN / 2; /* a delimiter before the next frame */
  if (alloc_slots(my_max_payload()) != 0) {
    LOG("out of memory");
    exit(1);
  }
  vt_decoder_init(&dec, my_max_payload());
  logmsg(line_quiet ? 2 : 0, "line %s open (%s; frames up to %u bytes)", opt.device,
         line_is_tty ? "tty, raw 8N1, no flow control" : "not a tty", my_max_payload());
}

/*
 * The largest payload we announce and send (spec 5.1): --max-payload, else 1024 on a
 * tty (a UART: lossy, and a frame holds the line for its length) and 16384 on anything
 * else (a virtio-serial port: lossless, and under emulation the per-frame cost, not the
 * bytes, limits it).
 */
static unsigned my_max_payload(void) {
  unsigned m = opt.max_payload ? opt.max_payload : line_is_tty ? VT_MAX_PAYLOAD : VT_MAX_LARGE_PAYLOAD;
  return slot_payload && m > slot_payload ? slot_payload : m;
}

static void line_lost(int64_t now, const char *why) {
  /* A virtio port hangs up while the host side is not connected: one line, not a pair per retry. */
  if (line_good || !line_quiet)
    LOG("line %s lost (%s): reopening in %d ms%s", opt.device, why, reopen_delay,
        line_good ? "" : " (retrying quietly until a frame arrives)");
  else
    DEBUG("line %s lost (%s): reopening in %d ms", opt.device, why, reopen_delay);
  line_quiet = !line_good;
  close(line_fd);
  line_fd = -1;
  out_len = 0;
  reopen_at = now + reopen_delay;
  reopen_delay = reopen_delay * 2 < REOPEN_MAX_MS ? reopen_delay * 2 : REOPEN_MAX_MS;
}

static void on_frame(void *ctx, const struct vt_frame *f) {
  int64_t now = *(int64_t *)ctx;
  line_good = 1;
  line_quiet = 0;
  if (f->type != VT_HELLO && !(f->flags & VT_FLAG_AGENT) && L.established && f->tag == L.tag) reopen_delay = REOPEN_INITIAL_MS;
  link_receive(f, now);
}

/* Fills the output buffer with frames and writes what the line takes. */
static void pump(int64_t now) {
  static uint8_t scratch[VT_MAX_SACK > VT_HELLO_SIZE ? VT_MAX_SACK : VT_HELLO_SIZE];
  while (line_fd >= 0) {
    int produced = 0;
    while (OUTBUF_SIZE - out_len >= VT_MAX_WIRE) {
      struct vt_frame f;
      if (!next_frame(now, &f, scratch)) break;
      f.flags |= VT_FLAG_AGENT; /* every frame the agent sends carries its direction */
      out_len += vt_frame_wire(&f, now - last_tx >= IDLE_DELIMITER_MS, outbuf + out_len);
      last_tx = now;
      produced = 1;
      deliver_in_order(now); /* sending may have freed control-queue room */
    }
    if (out_len == 0) return;
    ssize_t w = write(line_fd, outbuf, out_len);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      line_lost(now, strerror(errno));
      return;
    }
    memmove(outbuf, outbuf + w, out_len - (size_t)w);
    out_len -= (size_t)w;
    if (!produced && out_len > 0) return;
  }
}

static void line_read(int64_t now) {
  static uint8_t buf[LINE_READ];
  for (int i = 0; i < 16 && line_fd >= 0; i++) {
    ssize_t n = read(line_fd, buf, sizeof buf);
    if (n > 0) {
      vt_decoder_feed(&dec, buf, (size_t)n, on_frame, &now);
      if ((size_t)n < sizeof buf) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
    line_lost(now, n == 0 ? "end of file / hangup" : strerror(errno));
    break;
  }
  flush_dirty();
}

/* ------------------------------------------------------------------ main loop */

static void dump_stats(void) {
  unsigned open = 0;
  for (unsigned i = 0; i < opt.max_streams; i++) open += S[i].state != SS_FREE;
  LOG("stats: boot %08x peer %08x %s; srtt %.1f ms rto %.0f ms payload %u; frames sent %llu retransmits %llu "
      "(fast %llu, timeouts %llu) received %llu dup %llu; line bytes in %llu discarded %llu bad-crc %llu; "
      "streams %u open, %llu requested, %llu accepted, %llu refused; bytes to host %llu from host %llu",
      L.boot, L.peer_boot, L.established ? (L.alive ? "up" : "down") : "handshaking", L.srtt, L.rto, payload_limit(),
      (unsigned long long)L.st.frames_sent, (unsigned long long)L.st.retransmits,
      (unsigned long long)L.st.fast_retransmits, (unsigned long long)L.st.timeouts,
      (unsigned long long)L.st.frames_received, (unsigned long long)L.st.duplicates,
      (unsigned long long)dec.stats.bytes_in, (unsigned long long)dec.stats.discarded,
      (unsigned long long)dec.stats.bad_crc, open, (unsigned long long)MS.open_requests,
      (unsigned long long)MS.accepted, (unsigned long long)MS.refused, (unsigned long long)MS.bytes_to_host,
      (unsigned long long)MS.bytes_from_host);
}

static void usage(FILE *to) {
  fprintf(to,
          "usage: vspc-agent --device PATH [--allow PORT[,PORT...]]... [options]\n"
          "\n"
          "The guest side of vspc's serial tunnel: relays TCP streams opened by the vspc\n"
          "host over the serial line PATH to 127.0.0.1:PORT inside this machine.\n"
          "\n"
          "  -d, --device PATH        serial device (e.g. /dev/ttyS1, /dev/vport0p1, /dev/hvc1)\n"
          "  -a, --allow PORT[,...]   ports the host may open (repeatable; default: 22 only)\n"
          "  -b, --baud RATE          set the line speed (default: leave it as it is)\n"
          "      --max-streams N      streams at once (default %u)\n"
          "      --stream-window B    per-stream receive window, bytes (default %u)\n"
          "      --max-payload B      largest frame payload, %d..%d (default: %d on a tty,\n"
          "                           %d on anything else, e.g. a virtio-serial port)\n"
          "  -v, --verbose            log streams (twice: more detail)\n"
          "  -V, --version            print the version\n"
          "  -h, --help               this text\n"
          "\n"
          "SIGUSR1 logs counters. Protocol: docs/tunnel-protocol.md (version %d).\n",
          DEFAULT_MAX_STREAMS, DEFAULT_STREAM_WINDOW, VT_MIN_PAYLOAD, VT_MAX_LARGE_PAYLOAD, VT_MAX_PAYLOAD,
          VT_MAX_LARGE_PAYLOAD, VT_VERSION);
}

static int parse_ports(const char *arg) {
  const char *p = arg;
  while (*p) {
    char *end;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (end == p || errno || v < 1 || v > 65535 || (*end && *end != ',')) return -1;
    if (!port_allowed((uint16_t)v)) {
      if (opt.nallow >= MAX_ALLOW) return -1;
      opt.allow[opt.nallow++] = (uint16_t)v;
    }
    p = *end ? end + 1 : end;
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"device", required_argument, 0, 'd'}, {"allow", required_argument, 0, 'a'},
      {"baud", required_argument, 0, 'b'},   {"max-streams", required_argument, 0, 'm'},
      {"stream-window", required_argument, 0, 'w'}, {"max-payload", required_argument, 0, 'p'},
      {"verbose", no_argument, 0, 'v'},
      {"version", no_argument, 0, 'V'},      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  opt.max_streams = DEFAULT_MAX_STREAMS;
  opt.stream_window = DEFAULT_STREAM_WINDOW;
  int c;
  while ((c = getopt_long(argc, argv, "d:a:b:vVh", longopts, NULL)) != -1) {
    char *end;
    long v;
    switch (c) {
      case 'd': opt.device = optarg; break;
      case 'a':
        if (parse_ports(optarg) != 0) {
          fprintf(stderr, "vspc-agent: bad --allow value: %s (ports 1..65535, comma-separated)\n", optarg);
          return 2;
        }
        break;
      case 'b':
        v = strtol(optarg, &end, 10);
        if (*end || !(opt.baud = parse_baud(v))) {
          fprintf(stderr, "vspc-agent: unsupported --baud: %s\n", optarg);
          return 2;
        }
        opt.set_baud = 1;
        break;
      case 'm':
        v = strtol(optarg, &end, 10);
        if (*end || v < 1 || v > 4096) {
          fprintf(stderr, "vspc-agent: --max-streams must be 1..4096\n");
          return 2;
        }
        opt.max_streams = (unsigned)v;
        break;
      case 'w':
        v = strtol(optarg, &end, 10);
        if (*end || v < 1 || v > (16L << 20)) {
          fprintf(stderr, "vspc-agent: --stream-window must be 1..16777216\n");
          return 2;
        }
        opt.stream_window = (uint32_t)v;
        break;
      case 'p':
        v = strtol(optarg, &end, 10);
        if (*end || v < VT_MIN_PAYLOAD || v > VT_MAX_LARGE_PAYLOAD) {
          fprintf(stderr, "vspc-agent: --max-payload must be %d..%d\n", VT_MIN_PAYLOAD, VT_MAX_LARGE_PAYLOAD);
          return 2;
        }
        opt.max_payload = (unsigned)v;
        break;
      case 'v': opt.verbose++; break;
      case 'V': printf("vspc-agent %s (tunnel protocol %d)\n", VSPC_AGENT_VERSION, VT_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind < argc || !opt.device) {
    if (!opt.device) fprintf(stderr, "vspc-agent: --device is required\n");
    else fprintf(stderr, "vspc-agent: unexpected argument: %s\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  if (opt.nallow == 0) opt.allow[opt.nallow++] = 22;

  S = calloc(opt.max_streams, sizeof *S);
  /* Deliveries stop at ctl_limit(); each stream adds at most two more (OPEN_OK, RESET). */
  ctl_cap = ctl_limit() + 2 * opt.max_streams + 8;
  ctlq = calloc(ctl_cap, sizeof *ctlq);
  struct pollfd *pfd = calloc(opt.max_streams + 1, sizeof *pfd);
  unsigned *pgen = calloc(opt.max_streams + 1, sizeof *pgen);
  struct stream **pstr = calloc(opt.max_streams + 1, sizeof *pstr);
  if (!S || !ctlq || !pfd || !pgen || !pstr) {
    fprintf(stderr, "vspc-agent: out of memory\n");
    return 1;
  }
  for (unsigned i = 0; i < opt.max_streams; i++) S[i].fd = -1;

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  char ports[MAX_ALLOW * 6 + 1] = "";
  for (int i = 0; i < opt.nallow; i++)
    snprintf(ports + strlen(ports), sizeof ports - strlen(ports), "%s%u", i ? "," : "", opt.allow[i]);
  int64_t now = now_ms();
  link_start(now);
  LOG("vspc-agent %s starting: device %s, allowed ports %s, boot id %08x", VSPC_AGENT_VERSION, opt.device, ports, L.boot);
  reopen_at = now;

  while (!sig_stop) {
    now = now_ms();
    if (sig_stats) {
      sig_stats = 0;
      dump_stats();
    }
    if (line_fd < 0 && now >= reopen_at) line_open(now);
    link_poll(now);
    for (unsigned i = 0; i < opt.max_streams; i++)
      if (S[i].state == SS_DIALING && now >= S[i].dial_deadline) dial_done(&S[i], ETIMEDOUT);
    pump(now);

    nfds_t n = 0;
    int64_t deadline = link_deadline();
    if (line_fd >= 0) {
      pfd[n].fd = line_fd;
      pfd[n].events = (short)(POLLIN | (out_len ? POLLOUT : 0));
      pstr[n] = NULL;
      n++;
    } else if (reopen_at < deadline) {
      deadline = reopen_at;
    }
    for (unsigned i = 0; i < opt.max_streams; i++) {
      struct stream *s = &S[i];
      short ev = 0;
      if (s->state == SS_FREE) continue;
      if (s->state == SS_DIALING) {
        ev = POLLOUT;
        if (s->dial_deadline < deadline) deadline = s->dial_deadline;
      } else {
        if (s->state == SS_OPEN && !s->fin_sent && s->send_credit > 0 && !s->readable) ev |= POLLIN;
        if (s->rx_len > 0) ev |= POLLOUT;
      }
      if (ev == 0 && s->hup) continue; /* POLLHUP would be reported forever */
      pfd[n].fd = s->fd;
      pfd[n].events = ev;
      pstr[n] = s;
      pgen[n] = s->gen;
      n++;
    }
    int timeout = -1;
    if (deadline != NEVER) {
      int64_t t = deadline - now;
      timeout = t < 0 ? 0 : t > 60000 ? 60000 : (int)t;
    }
    int r = poll(pfd, n, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      LOG("poll: %s", strerror(errno));
      return 1;
    }
    now = now_ms();
    for (nfds_t k = 0; k < n; k++) {
      short re = pfd[k].revents;
      if (!re) continue;
      struct stream *s = pstr[k];
      if (!s) {
        if (pfd[k].fd != line_fd) continue;
        if (re & POLLIN) line_read(now);
        else if (re & (POLLHUP | POLLERR | POLLNVAL)) line_lost(now, re & POLLHUP ? "hangup" : "error");
        continue;
      }
      if (s->gen != pgen[k] || s->fd != pfd[k].fd || s->state == SS_FREE) continue; /* freed meanwhile */
      if (s->state == SS_DIALING) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
        if (err || (re & POLLOUT)) dial_done(s, err);
        continue;
      }
      if (re & POLLERR) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
          if (s->state == SS_FLUSHING) stream_free(s, 1);
          else stream_fail(s, VT_R_ABORTED, strerror(err));
          continue;
        }
      }
      if (re & POLLHUP) s->hup = 1;
      if ((re & POLLOUT) && s->rx_len > 0 && flush_rx(s) < 0) continue;
      if (re & (POLLIN | POLLHUP)) s->readable = 1;
    }
  }

  LOG("stopping (signal): %s", "closing every stream");
  for (unsigned i = 0; i < opt.max_streams; i++)
    if (S[i].state == SS_OPEN || S[i].state == SS_DIALING) stream_fail(&S[i], VT_R_SHUTDOWN, "agent stopping");
  pump(now_ms()); /* best effort: the RESETs go out if the line takes them now */
  mux_reset_all("agent stopping");
  if (line_fd >= 0) close(line_fd);
  return 0;
}
