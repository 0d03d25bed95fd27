/* server.c -- the managers' framed server loop (see server.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "fd.h"
#include "frame.h"
#include "intr.h"
#include "net.h"
#include "server.h"

#define FD_BITS 24
#define FD_LIMIT (1 << FD_BITS)
#define SERIAL_MASK ((1u << 28) - 1)
#define MAX_EVENTS 64

typedef struct conn {
  int fd;
  uint32_t serial;
  int authed, dropped, want_out;
  double hs_deadline;
  lmp_auth_srv auth;
  lmp_frame_reader in;
  lmp_frame_writer out;
  char peer[64];
} conn;

struct lmp_srv {
  int lfd, ep;
  unsigned char key[LMP_AUTH_KEY_MAX];
  size_t keylen;
  lmp_srv_opts o;
  conn **by_fd;
  int cap, nauthed, nhs, ndropped;
  uint32_t serial;
};

static uint64_t cid_of(const conn *c) {
  return ((uint64_t)c->serial << FD_BITS) | (uint64_t)c->fd;
}

static conn *lookup(const lmp_srv *s, uint64_t cid) {
  int fd = (int)(cid & (FD_LIMIT - 1));
  conn *c = fd < s->cap ? s->by_fd[fd] : NULL;
  if (!c || c->serial != (uint32_t)(cid >> FD_BITS)) return NULL;
  return c;
}

static int watch(lmp_srv *s, int op, int fd, uint32_t events) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events;
  ev.data.fd = fd;
  return epoll_ctl(s->ep, op, fd, &ev) < 0 ? -errno : 0;
}

lmp_srv *lmp_srv_new(int listen_fd, const void *key, size_t keylen,
                     const lmp_srv_opts *opts, int *err) {
  lmp_srv *s;
  int rc = lmp_auth_init();
  if (rc == 0 && (keylen == 0 || keylen > LMP_AUTH_KEY_MAX)) rc = -EINVAL;
  if (rc < 0 || !(s = calloc(1, sizeof *s))) {
    *err = rc < 0 ? rc : -ENOMEM;
    return NULL;
  }
  s->lfd = listen_fd;
  memcpy(s->key, key, keylen);
  s->keylen = keylen;
  s->o = *opts;
  s->ep = epoll_create1(EPOLL_CLOEXEC);
  if (s->ep < 0 || (rc = watch(s, EPOLL_CTL_ADD, listen_fd, EPOLLIN)) < 0) {
    *err = s->ep < 0 ? -errno : rc;
    lmp_fd_close(s->ep);
    free(s);
    return NULL;
  }
  return s;
}

/* Closes c; an authenticated peer's end is reported as CLOSED. */
static void drop(lmp_srv *s, conn *c, lmp_srv_cb cb, void *ud) {
  if (c->authed && cb) {
    lmp_srv_event ev = {LMP_SRV_CLOSED, cid_of(c), 0, 0, NULL, 0};
    cb(ud, &ev);
  }
  if (c->authed) s->nauthed--;
  else s->nhs--;
  if (c->dropped) s->ndropped--;
  epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
  lmp_fd_close(c->fd);
  s->by_fd[c->fd] = NULL;
  lmp_frame_reader_free(&c->in);
  lmp_frame_writer_free(&c->out);
  free(c);
}

void lmp_srv_free(lmp_srv *s) {
  int fd;
  if (!s) return;
  for (fd = 0; fd < s->cap; fd++)
    if (s->by_fd[fd]) drop(s, s->by_fd[fd], NULL, NULL);
  free(s->by_fd);
  lmp_fd_close(s->ep);
  lmp_fd_close(s->lfd);
  memset(s->key, 0, sizeof s->key);
  free(s);
}

int lmp_srv_fileno(const lmp_srv *s) { return s->ep; }

int lmp_srv_clients(const lmp_srv *s, int *handshaking) {
  if (handshaking) *handshaking = s->nhs;
  return s->nauthed;
}

static int grow(lmp_srv *s, int fd) {
  int cap = s->cap ? s->cap : 64;
  conn **p;
  while (cap <= fd) cap *= 2;
  if (cap == s->cap) return 0;
  if (!(p = realloc(s->by_fd, (size_t)cap * sizeof *p))) return -ENOMEM;
  memset(p + s->cap, 0, (size_t)(cap - s->cap) * sizeof *p);
  s->by_fd = p;
  s->cap = cap;
  return 0;
}

/* A new peer: it gets the challenge and handshake_timeout to answer. */
static void admit(lmp_srv *s, int fd, const char *peer) {
  conn *c;
  if (fd >= FD_LIMIT || s->nauthed + s->nhs >= s->o.max_clients ||
      grow(s, fd) < 0 || !(c = calloc(1, sizeof *c))) {
    lmp_fd_close(fd);
    return;
  }
  c->fd = fd;
  c->serial = s->serial = (s->serial + 1) & SERIAL_MASK;
  c->hs_deadline = lmp_deadline(s->o.handshake_timeout);
  snprintf(c->peer, sizeof c->peer, "%s", peer);
  lmp_frame_reader_init(&c->in, s->o.maxlen);
  lmp_frame_writer_init(&c->out);
  s->by_fd[fd] = c;
  s->nhs++;
  if (lmp_auth_srv_start(&c->auth, fd) < 0 ||
      watch(s, EPOLL_CTL_ADD, fd, EPOLLIN) < 0)
    drop(s, c, NULL, NULL);
}

static void accept_all(lmp_srv *s) {
  char peer[64];
  int i, fd;
  for (i = 0; i < MAX_EVENTS; i++) {
    if ((fd = lmp_net_accept(s->lfd, peer, sizeof peer)) < 0) break;
    admit(s, fd, peer);
  }
}

static int handshake(lmp_srv *s, conn *c, lmp_srv_cb cb, void *ud) {
  int rc = lmp_auth_srv_step(&c->auth, c->fd, s->key, s->keylen);
  if (rc == 0) return 0;
  if (rc == 1) {
    c->authed = 1;
    s->nhs--;
    s->nauthed++;
    return 0;
  }
  if (rc == -EACCES) {
    lmp_srv_event ev = {LMP_SRV_DENIED, cid_of(c), 0, 0, c->peer,
                        strlen(c->peer)};
    cb(ud, &ev);
  }
  drop(s, c, NULL, NULL);
  return rc == -EACCES;
}

/* Hands whole frames to cb; a bad header or a read error or EOF ends the
 * connection after the frames that arrived whole. */
static int serve(lmp_srv *s, conn *c, uint32_t events, lmp_srv_cb cb,
                 void *ud) {
  lmp_frame_hdr h;
  const char *payload;
  long got = -EAGAIN;
  int n = 0, rc;
  if (events & EPOLLOUT) {
    long left = lmp_frame_writer_flush(&c->out, c->fd);
    if (left < 0) goto end;
    if (left == 0 && c->want_out) {
      watch(s, EPOLL_CTL_MOD, c->fd, EPOLLIN);
      c->want_out = 0;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) got = lmp_frame_reader_fill(&c->in, c->fd);
  while ((rc = lmp_frame_reader_next(&c->in, &h, &payload)) == 1) {
    lmp_srv_event ev = {LMP_SRV_REQUEST, cid_of(c), h.type, h.flags, payload,
                        h.len};
    cb(ud, &ev);
    n++;
  }
  if (rc < 0 || (got <= 0 && got != -EAGAIN)) goto end;
  return n;
end:
  drop(s, c, cb, ud);
  return n + 1;
}

/* Drops peers that were too slow to authenticate or to read replies. */
static int sweep(lmp_srv *s, lmp_srv_cb cb, void *ud) {
  int fd, n = 0;
  if (s->nhs == 0 && s->ndropped == 0) return 0;
  for (fd = 0; fd < s->cap; fd++) {
    conn *c = s->by_fd[fd];
    if (!c) continue;
    if (c->dropped) {
      drop(s, c, cb, ud);
      n++;
    } else if (!c->authed && lmp_deadline_passed(c->hs_deadline)) {
      drop(s, c, NULL, NULL);
    }
  }
  return n;
}

static double next_wakeup(const lmp_srv *s, double deadline) {
  int fd;
  if (s->nhs == 0) return deadline;
  for (fd = 0; fd < s->cap; fd++) {
    conn *c = s->by_fd[fd];
    if (c && !c->authed &&
        (deadline == LMP_FOREVER || c->hs_deadline < deadline))
      deadline = c->hs_deadline;
  }
  return deadline;
}

int lmp_srv_step(lmp_srv *s, double deadline, lmp_srv_cb cb, void *ud) {
  struct epoll_event evs[MAX_EVENTS];
  int i, n, count = sweep(s, cb, ud);
  double spin_until = lmp_clock_now() + s->o.spin;
  /* A client that just got its reply often sends the next request within
   * microseconds: polling briefly saves the cost of sleeping and waking. */
  do n = epoll_wait(s->ep, evs, MAX_EVENTS, 0);
  while (n == 0 && sched_yield() == 0 && !count && lmp_clock_now() < spin_until &&
         (deadline == LMP_FOREVER || lmp_clock_now() < deadline));
  if (n == 0 && !count)
    n = epoll_wait(s->ep, evs, MAX_EVENTS,
                   lmp_deadline_ms(next_wakeup(s, deadline)));
  if (n < 0) {
    if (errno != EINTR) return -errno;
    return lmp_intr_pending ? -EINTR : count;
  }
  for (i = 0; i < n; i++) {
    int fd = evs[i].data.fd;
    conn *c = fd == s->lfd || fd >= s->cap ? NULL : s->by_fd[fd];
    if (fd == s->lfd) accept_all(s);
    else if (!c || c->dropped) continue;
    else if (!c->authed) count += handshake(s, c, cb, ud);
    else count += serve(s, c, evs[i].events, cb, ud);
  }
  return count + sweep(s, cb, ud);
}

static void mark_dropped(lmp_srv *s, conn *c) {
  if (!c->dropped) s->ndropped++;
  c->dropped = 1;
}

int lmp_srv_send(lmp_srv *s, uint64_t cid, int type, const void *payload,
                 size_t len) {
  conn *c = lookup(s, cid);
  long left;
  int rc;
  if (!c || c->dropped || !c->authed) return 1;
  if ((rc = lmp_frame_writer_push(&c->out, type, 0, payload, len)) < 0)
    return rc;
  left = lmp_frame_writer_flush(&c->out, c->fd);
  if (left < 0) {                     /* the peer went: CLOSED follows */
    mark_dropped(s, c);
    return 0;
  }
  if ((size_t)left > s->o.max_out) {
    mark_dropped(s, c);
    return -ENOBUFS;
  }
  if (left > 0 && !c->want_out) {
    watch(s, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT);
    c->want_out = 1;
  }
  return 0;
}

int lmp_srv_alive(const lmp_srv *s, uint64_t cid) {
  const conn *c = lookup(s, cid);
  return c && c->authed && !c->dropped;
}

int lmp_srv_close(lmp_srv *s, uint64_t cid) {
  conn *c = lookup(s, cid);
  if (!c) return 1;
  drop(s, c, NULL, NULL);
  return 0;
}
