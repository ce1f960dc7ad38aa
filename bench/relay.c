/*
 * The benchmark's do-nothing relay in C: one thread, level-triggered epoll,
 * non-blocking sockets. What a user-space TCP proxy hop costs on this machine
 * when it does nothing but move bytes, the floor vspc is compared with
 * (docs/performance.md). Built by bench/build-relay.sh with gcc into dist/;
 * never committed as a binary.
 *
 *   relay LISTEN_PORT:TARGET_PORT [LISTEN_PORT:TARGET_PORT ...]
 *
 * Every pair listens on 127.0.0.1:LISTEN_PORT (0: any free port) and connects each
 * accepted connection to 127.0.0.1:TARGET_PORT, then copies bytes both ways. Once
 * every listener is bound it prints "ports P1 P2 ..." (the bound ports, in order) on
 * stdout. It exits when stdin closes (its parent went away) or on SIGTERM.
 *
 * Each readable socket is read once per epoll round, at most BUF bytes (the size of
 * Node's reads), and written at once to its peer; what the peer does not take is
 * kept and the reading side is not read again until it is gone (backpressure). So
 * every connection gets its turn: one read per round.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define MAX_LISTENERS 16
#define MAX_EVENTS 1024

enum kind { LISTENER, END, STDIN };

struct end {
  enum kind kind;
  int fd;
  struct end *peer;
  /* Bytes read from this end, not yet written to the peer. */
  char *buf;
  size_t off, len;
  /* The epoll events this fd is registered for. */
  unsigned events;
  int closed;
};

struct listener {
  enum kind kind;
  int fd;
  int target_port;
};

static int ep;

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void set_events(struct end *e, unsigned events) {
  if (e->closed || e->events == events) return;
  struct epoll_event ev = {.events = events, .data.ptr = e};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev) < 0) die("epoll_ctl mod");
  e->events = events;
}

/* Ends closed in this epoll round: freed after it (a later event of the same round may still name them). */
static struct end **graveyard;
static size_t buried, graveyard_cap;

static void bury(struct end *x) {
  if (buried == graveyard_cap) {
    graveyard_cap = graveyard_cap ? graveyard_cap * 2 : 64;
    graveyard = realloc(graveyard, graveyard_cap * sizeof *graveyard);
    if (!graveyard) die("realloc");
  }
  graveyard[buried++] = x;
}

static void close_pair(struct end *e) {
  struct end *p = e->peer;
  struct end *both[2] = {e, p};
  for (int i = 0; i < 2; i++) {
    struct end *x = both[i];
    if (!x || x->closed) continue;
    epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
    close(x->fd);
    x->closed = 1;
    bury(x);
  }
}

static struct end *new_end(int fd) {
  struct end *e = calloc(1, sizeof *e);
  if (!e) die("calloc");
  e->kind = END;
  e->fd = fd;
  e->buf = malloc(BUF);
  if (!e->buf) die("malloc");
  return e;
}

/* Writes what `from` holds to its peer; true when all of it went. */
static int flush(struct end *from) {
  struct end *to = from->peer;
  while (from->len > 0) {
    ssize_t n = write(to->fd, from->buf + from->off, from->len);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EINTR) continue;
      return -1;
    }
    from->off += (size_t)n;
    from->len -= (size_t)n;
  }
  from->off = 0;
  return 1;
}

/* The events an end wants: IN unless its own bytes wait for the peer; OUT while the peer's bytes wait for it. */
static unsigned wanted(struct end *e) {
  unsigned ev = 0;
  if (e->len == 0) ev |= EPOLLIN;
  if (e->peer && e->peer->len > 0) ev |= EPOLLOUT;
  return ev;
}

static void update(struct end *e) {
  set_events(e, wanted(e));
  if (e->peer) set_events(e->peer, wanted(e->peer));
}

static void on_readable(struct end *e) {
  ssize_t n = read(e->fd, e->buf, BUF);
  if (n == 0) {
    close_pair(e);
    return;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    close_pair(e);
    return;
  }
  e->off = 0;
  e->len = (size_t)n;
  if (flush(e) < 0) {
    close_pair(e);
    return;
  }
  update(e);
}

static void on_writable(struct end *e) {
  /* The peer's bytes wait for this end. */
  if (flush(e->peer) < 0) {
    close_pair(e);
    return;
  }
  update(e);
}

static void on_accept(struct listener *l) {
  for (;;) {
    int c = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      if (errno == EMFILE || errno == ENFILE) return;
      return;
    }
    int t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t < 0) {
      close(c);
      continue;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)l->target_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(t, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
      close(c);
      close(t);
      continue;
    }
    struct end *ce = new_end(c), *te = new_end(t);
    ce->peer = te;
    te->peer = ce;
    /* Until the connect completes the target end waits for EPOLLOUT; a write to an
     * unconnected socket fails with EAGAIN-like errors only briefly on loopback. */
    struct epoll_event ev1 = {.events = EPOLLIN, .data.ptr = ce};
    struct epoll_event ev2 = {.events = EPOLLIN, .data.ptr = te};
    ce->events = EPOLLIN;
    te->events = EPOLLIN;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev1) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev2) < 0) die("epoll_ctl add");
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s LISTEN_PORT:TARGET_PORT ...\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  struct listener ls[MAX_LISTENERS];
  int nl = 0;
  printf("ports");
  for (int i = 1; i < argc && nl < MAX_LISTENERS; i++) {
    int lp, tp;
    if (sscanf(argv[i], "%d:%d", &lp, &tp) != 2) {
      fprintf(stderr, "bad pair %s\n", argv[i]);
      return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)lp)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    socklen_t sl = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &sl);
    ls[nl] = (struct listener){.kind = LISTENER, .fd = fd, .target_port = tp};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ls[nl]};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl listener");
    printf(" %d", ntohs(a.sin_port));
    nl++;
  }
  printf("\n");
  fflush(stdout);
  /* Exit when the parent goes away (stdin is its pipe). */
  static enum kind stdin_kind = STDIN;
  struct epoll_event sev = {.events = EPOLLIN | EPOLLHUP, .data.ptr = &stdin_kind};
  epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);

  struct epoll_event events[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, events, MAX_EVENTS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      enum kind k = *(enum kind *)events[i].data.ptr;
      if (k == STDIN) {
        char b[64];
        if (read(0, b, sizeof b) <= 0) return 0;
        continue;
      }
      if (k == LISTENER) {
        on_accept((struct listener *)events[i].data.ptr);
        continue;
      }
      struct end *e = events[i].data.ptr;
      if (e->closed) continue;
      unsigned got = events[i].events;
      if (got & (EPOLLERR | EPOLLHUP)) {
        /* Read what is left first: a HUP may come with the last bytes. */
        if (got & EPOLLIN) on_readable(e);
        if (!e->closed) close_pair(e);
        continue;
      }
      if (got & EPOLLOUT) on_writable(e);
      if (!e->closed && (got & EPOLLIN) && e->len == 0) on_readable(e);
    }
    for (size_t i = 0; i < buried; i++) {
      free(graveyard[i]->buf);
      free(graveyard[i]);
    }
    buried = 0;
  }
}
