/* pool.c -- the worker pool's scheduler (see pool.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "intr.h"
#include "pool.h"

#define FN_BUCKETS 256

typedef struct fnent {
  uint32_t fid;
  int refs;                      /* chunks (queued or sent) using it */
  struct fnent *hnext;           /* hash chain */
  struct fnent *lprev, *lnext;   /* LRU of unreferenced entries */
  int inlru;
  size_t len;
  char data[];
} fnent;

typedef struct chunk {
  struct chunk *prev, *next;
  uint64_t cid, job;
  uint32_t k, first, n, flags;
  fnent *fn;
  int started;
  double sent_at;
  size_t len;                    /* of buf: header room + arguments */
  char buf[];
} chunk;

/* A DEAD slot's worker has ended but its channel fd stays open until
 * lmp_pool_detach or the next attach, so the caller forgets the fd number
 * before it can be reused. */
enum { W_EMPTY = 0, W_LIVE, W_STOPPING, W_DEAD };

typedef struct worker {
  int state, fd, sentinel, want_out;
  uint32_t gen;
  long sent;
  lmp_frame_reader in;
  lmp_frame_writer out;
  chunk *held[LMP_POOL_AHEAD_MAX];   /* in send order */
  int nheld, ahead;              /* chunks held, and allowed */
  int topping;                   /* dispatch may give it chunks now */
  double last_done, per_chunk;   /* time of the last result; EWMA of the
                                    seconds a chunk takes (< 0: unknown) */
  uint32_t *fids;                /* functions this worker has */
  int nfids, capfids;
} worker;

struct lmp_pool {
  int ep, nslots, rr;
  long maxtasks;
  worker *w;
  chunk *qhead, *qtail;
  size_t nqueued, ninflight;
  uint64_t next_cid;
  fnent *buckets[FN_BUCKETS];
  fnent *lru_head, *lru_tail;
  int nlru;
  lmp_pool_event *ev;
  size_t evhead, evn, evcap;
};

/* ---- little-endian fields --------------------------------------------- */

static void put32(char *p, uint32_t v) {
  int i;
  for (i = 0; i < 4; i++) p[i] = (char)(v >> (8 * i));
}

static void put64(char *p, uint64_t v) {
  put32(p, (uint32_t)v);
  put32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get32(const char *p) {
  const unsigned char *u = (const unsigned char *)p;
  return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
         (uint32_t)u[3] << 24;
}

static uint64_t get64(const char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void dispatch(lmp_pool *p);

/* ---- function table ----------------------------------------------------- */

static fnent *fn_find(const lmp_pool *p, uint32_t fid) {
  fnent *f = p->buckets[fid % FN_BUCKETS];
  while (f && f->fid != fid) f = f->hnext;
  return f;
}

static void lru_unlink(lmp_pool *p, fnent *f) {
  if (!f->inlru) return;
  if (f->lprev) f->lprev->lnext = f->lnext; else p->lru_head = f->lnext;
  if (f->lnext) f->lnext->lprev = f->lprev; else p->lru_tail = f->lprev;
  f->lprev = f->lnext = NULL;
  f->inlru = 0;
  p->nlru--;
}

static void fn_remove(lmp_pool *p, fnent *f) {
  fnent **pp = &p->buckets[f->fid % FN_BUCKETS];
  while (*pp != f) pp = &(*pp)->hnext;
  *pp = f->hnext;
  lru_unlink(p, f);
  free(f);
}

static void fn_ref(lmp_pool *p, fnent *f) {
  if (f->refs++ == 0) lru_unlink(p, f);
}

/* An entry nothing refers to joins the LRU; the oldest beyond the limit
 * are forgotten. */
static void fn_unref(lmp_pool *p, fnent *f) {
  if (--f->refs > 0) return;
  f->lprev = p->lru_tail;
  f->lnext = NULL;
  if (p->lru_tail) p->lru_tail->lnext = f; else p->lru_head = f;
  p->lru_tail = f;
  f->inlru = 1;
  p->nlru++;
  while (p->nlru > LMP_POOL_FN_KEEP) fn_remove(p, p->lru_head);
}

int lmp_pool_define(lmp_pool *p, uint32_t fid, const void *data, size_t len) {
  fnent *f;
  if (fn_find(p, fid)) return -EEXIST;
  if (len > 0xffffffffu - 4) return -EMSGSIZE;
  if (!(f = calloc(1, sizeof *f + len))) return -ENOMEM;
  f->fid = fid;
  f->len = len;
  if (len) memcpy(f->data, data, len);
  f->hnext = p->buckets[fid % FN_BUCKETS];
  p->buckets[fid % FN_BUCKETS] = f;
  f->refs = 1;
  fn_unref(p, f);                  /* starts unreferenced, most recent */
  return 0;
}

int lmp_pool_has_fn(lmp_pool *p, uint32_t fid) {
  fnent *f = fn_find(p, fid);
  if (f && f->inlru) {             /* touched: most recently used */
    lru_unlink(p, f);
    f->refs++;
    fn_unref(p, f);
  }
  return f != NULL;
}

/* ---- events ------------------------------------------------------------- */

static int push_event(lmp_pool *p, const lmp_pool_event *e) {
  if (p->evhead > 0 && p->evhead == p->evn) p->evhead = p->evn = 0;
  if (p->evn == p->evcap) {
    size_t cap = p->evcap ? p->evcap * 2 : 64;
    lmp_pool_event *ne;
    if (p->evhead > 0) {           /* compact before growing */
      memmove(p->ev, p->ev + p->evhead, (p->evn - p->evhead) * sizeof *ne);
      p->evn -= p->evhead;
      p->evhead = 0;
    }
    if (p->evn == p->evcap) {
      if (!(ne = realloc(p->ev, cap * sizeof *ne))) return -ENOMEM;
      p->ev = ne;
      p->evcap = cap;
    }
  }
  p->ev[p->evn++] = *e;
  return 0;
}

int lmp_pool_next_event(lmp_pool *p, lmp_pool_event *ev) {
  if (p->evhead == p->evn) return 0;
  *ev = p->ev[p->evhead++];
  return 1;
}

void lmp_pool_event_free(lmp_pool_event *ev) {
  free(ev->payload);
  ev->payload = NULL;
}

static size_t events_pending(const lmp_pool *p) { return p->evn - p->evhead; }

/* ---- queue -------------------------------------------------------------- */

static void q_unlink(lmp_pool *p, chunk *c) {
  if (c->prev) c->prev->next = c->next; else p->qhead = c->next;
  if (c->next) c->next->prev = c->prev; else p->qtail = c->prev;
  c->prev = c->next = NULL;
  p->nqueued--;
}

static void q_push_back(lmp_pool *p, chunk *c) {
  c->next = NULL;
  c->prev = p->qtail;
  if (p->qtail) p->qtail->next = c; else p->qhead = c;
  p->qtail = c;
  p->nqueued++;
}

static void q_push_front(lmp_pool *p, chunk *c) {
  c->prev = NULL;
  c->next = p->qhead;
  if (p->qhead) p->qhead->prev = c; else p->qtail = c;
  p->qhead = c;
  p->nqueued++;
}

static void chunk_free(lmp_pool *p, chunk *c) {
  fn_unref(p, c->fn);
  free(c);
}

int lmp_pool_submit(lmp_pool *p, uint64_t job, uint32_t k, uint32_t fid,
                    uint32_t first, uint32_t n, uint32_t flags,
                    const void *args, size_t len) {
  int e = lmp_pool_enqueue(p, job, k, fid, first, n, flags, args, len);
  if (e == 0) dispatch(p);
  return e;
}

void lmp_pool_dispatch(lmp_pool *p) {
  dispatch(p);
}

int lmp_pool_enqueue(lmp_pool *p, uint64_t job, uint32_t k, uint32_t fid,
                     uint32_t first, uint32_t n, uint32_t flags,
                     const void *args, size_t len) {
  fnent *f = fn_find(p, fid);
  chunk *c;
  if (!f) return -ENOENT;
  if (len > 0xffffffffu - LMP_POOL_TASK_HDR) return -EMSGSIZE;
  if (!(c = malloc(sizeof *c + LMP_POOL_TASK_HDR + len))) return -ENOMEM;
  memset(c, 0, sizeof *c);
  c->job = job;
  c->k = k;
  c->first = first;
  c->n = n;
  c->flags = flags & 0xffffu;
  c->fn = f;
  fn_ref(p, f);
  c->len = LMP_POOL_TASK_HDR + len;
  if (len) memcpy(c->buf + LMP_POOL_TASK_HDR, args, len);
  q_push_back(p, c);
  return 0;
}

long lmp_pool_drop_job(lmp_pool *p, uint64_t job) {
  chunk *c = p->qhead, *next;
  long n = 0;
  for (; c; c = next) {
    next = c->next;
    if (c->job != job) continue;
    q_unlink(p, c);
    chunk_free(p, c);
    n++;
  }
  return n;
}

int lmp_pool_job_sent(const lmp_pool *p, uint64_t job) {
  int i, j;
  for (i = 0; i < p->nslots; i++)
    for (j = 0; j < p->w[i].nheld; j++)
      if (p->w[i].held[j]->job == job) return 1;
  return 0;
}

size_t lmp_pool_queued(const lmp_pool *p) { return p->nqueued; }
size_t lmp_pool_inflight(const lmp_pool *p) { return p->ninflight; }

/* ---- pool and slots ----------------------------------------------------- */

int lmp_pool_new(lmp_pool **out, int nslots, long maxtasks) {
  lmp_pool *p;
  int i;
  if (nslots < 1 || nslots > 4096 || maxtasks < 0) return -EINVAL;
  if (!(p = calloc(1, sizeof *p))) return -ENOMEM;
  if (!(p->w = calloc((size_t)nslots, sizeof *p->w))) {
    free(p);
    return -ENOMEM;
  }
  if ((p->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
    int e = -errno;
    free(p->w);
    free(p);
    return e;
  }
  p->nslots = nslots;
  p->maxtasks = maxtasks;
  for (i = 0; i < nslots; i++) p->w[i].fd = p->w[i].sentinel = -1;
  *out = p;
  return 0;
}

int lmp_pool_fileno(const lmp_pool *p) { return p->ep; }
int lmp_pool_nslots(const lmp_pool *p) { return p->nslots; }

static int bad_slot(const lmp_pool *p, int slot) {
  return slot < 0 || slot >= p->nslots;
}

int lmp_pool_slot_used(const lmp_pool *p, int slot) {
  return !bad_slot(p, slot) &&
         (p->w[slot].state == W_LIVE || p->w[slot].state == W_STOPPING);
}

static uint64_t ev_tag(int slot, uint32_t gen, int sentinel) {
  return (uint64_t)gen << 32 | (uint64_t)slot << 1 | (uint64_t)sentinel;
}

static int ep_ctl(lmp_pool *p, int op, int fd, uint32_t events, uint64_t tag) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events;
  ev.data.u64 = tag;
  return epoll_ctl(p->ep, op, fd, &ev) < 0 ? -errno : 0;
}

int lmp_pool_attach(lmp_pool *p, int slot, int fd, int sentinel) {
  worker *w;
  int e;
  if (bad_slot(p, slot) || fd < 0) return -EINVAL;
  w = &p->w[slot];
  if (w->state == W_LIVE || w->state == W_STOPPING) return -EBUSY;
  if (w->state == W_DEAD) {
    lmp_fd_close(w->fd);
    w->fd = -1;
    w->state = W_EMPTY;
  }
  lmp_fd_set_nonblock(fd, 1);
  lmp_fd_set_cloexec(fd, 1);
  w->gen++;
  if ((e = ep_ctl(p, EPOLL_CTL_ADD, fd, EPOLLIN, ev_tag(slot, w->gen, 0))) < 0)
    return e;
  if (sentinel >= 0 &&
      (e = ep_ctl(p, EPOLL_CTL_ADD, sentinel, EPOLLIN, ev_tag(slot, w->gen, 1))) < 0) {
    epoll_ctl(p->ep, EPOLL_CTL_DEL, fd, NULL);
    return e;
  }
  w->fd = fd;
  w->sentinel = sentinel;
  w->state = W_LIVE;
  w->sent = 0;
  w->want_out = 0;
  w->ahead = LMP_POOL_AHEAD_MIN;
  w->per_chunk = -1;
  w->last_done = 0;
  w->nheld = w->nfids = 0;
  lmp_frame_reader_init(&w->in, 0);
  lmp_frame_writer_init(&w->out);
  return 0;
}

/* Stops watching slot's channel (left open: the slot is DEAD) and puts
 * back every chunk it held except `lost` (which the caller owns), in
 * order, at the front of the queue. */
static void slot_release(lmp_pool *p, worker *w, chunk *lost) {
  int i;
  epoll_ctl(p->ep, EPOLL_CTL_DEL, w->fd, NULL);
  if (w->sentinel >= 0) epoll_ctl(p->ep, EPOLL_CTL_DEL, w->sentinel, NULL);
  w->sentinel = -1;
  for (i = w->nheld - 1; i >= 0; i--) {
    chunk *c = w->held[i];
    p->ninflight--;
    if (c == lost) continue;
    c->started = 0;
    q_push_front(p, c);
  }
  w->nheld = 0;
  lmp_frame_reader_free(&w->in);
  lmp_frame_writer_free(&w->out);
  free(w->fids);
  w->fids = NULL;
  w->nfids = w->capfids = 0;
  w->state = W_DEAD;
}

int lmp_pool_detach(lmp_pool *p, int slot) {
  worker *w;
  if (bad_slot(p, slot)) return -EINVAL;
  w = &p->w[slot];
  if (w->state == W_LIVE || w->state == W_STOPPING) slot_release(p, w, NULL);
  if (w->state == W_DEAD) lmp_fd_close(w->fd);
  w->fd = -1;
  w->state = W_EMPTY;
  return 0;
}

void lmp_pool_free(lmp_pool *p) {
  chunk *c;
  fnent *f;
  int i;
  lmp_pool_event ev;
  if (!p) return;
  for (i = 0; i < p->nslots; i++) lmp_pool_detach(p, i);
  while ((c = p->qhead)) {
    q_unlink(p, c);
    free(c);
  }
  for (i = 0; i < FN_BUCKETS; i++)
    while ((f = p->buckets[i])) {
      p->buckets[i] = f->hnext;
      free(f);
    }
  while (lmp_pool_next_event(p, &ev)) lmp_pool_event_free(&ev);
  free(p->ev);
  lmp_fd_close(p->ep);
  free(p->w);
  free(p);
}

/* ---- sending ------------------------------------------------------------ */

static void want_output(lmp_pool *p, int slot, worker *w, int on) {
  if (w->want_out == on) return;
  w->want_out = on;
  ep_ctl(p, EPOLL_CTL_MOD, w->fd, EPOLLIN | (on ? EPOLLOUT : 0),
         ev_tag(slot, w->gen, 0));
}

static int worker_has_fid(const worker *w, uint32_t fid) {
  int i;
  for (i = w->nfids - 1; i >= 0; i--)
    if (w->fids[i] == fid) return 1;
  return 0;
}

/* Before a DEF: FORGET the functions the pool no longer has. */
static int purge_fids(lmp_pool *p, worker *w) {
  int i, j = 0, e;
  char b[4];
  for (i = 0; i < w->nfids; i++) {
    if (fn_find(p, w->fids[i])) {
      w->fids[j++] = w->fids[i];
      continue;
    }
    put32(b, w->fids[i]);
    if ((e = lmp_frame_writer_push(&w->out, LMP_POOL_FORGET, 0, b, 4)) < 0)
      return e;
  }
  w->nfids = j;
  return 0;
}

static int send_def(lmp_pool *p, worker *w, fnent *f) {
  int e;
  char *buf;
  if ((e = purge_fids(p, w)) < 0) return e;
  if (w->nfids == w->capfids) {
    int cap = w->capfids ? w->capfids * 2 : 8;
    uint32_t *nf = realloc(w->fids, (size_t)cap * sizeof *nf);
    if (!nf) return -ENOMEM;
    w->fids = nf;
    w->capfids = cap;
  }
  if (!(buf = malloc(4 + f->len))) return -ENOMEM;
  put32(buf, f->fid);
  memcpy(buf + 4, f->data, f->len);
  e = lmp_frame_writer_push(&w->out, LMP_POOL_DEF, 0, buf, 4 + f->len);
  free(buf);
  if (e == 0) w->fids[w->nfids++] = f->fid;
  return e;
}

/* Queues chunk c on w's output (it is then held by w); flush() writes
 * it. <0 only when memory runs out. */
static int send_chunk(lmp_pool *p, worker *w, chunk *c) {
  char *h = c->buf;
  uint32_t flags = c->flags | (w->nheld == 0 ? LMP_POOL_F_ASK : 0);
  int e;
  if (!worker_has_fid(w, c->fn->fid) && (e = send_def(p, w, c->fn)) < 0)
    return e;
  c->cid = ++p->next_cid;
  c->flags = flags;
  c->started = 0;
  put64(h, c->cid);
  put32(h + 8, c->fn->fid);
  put32(h + 12, c->first);
  put32(h + 16, c->n);
  put32(h + 20, flags);
  if ((e = lmp_frame_writer_push(&w->out, LMP_POOL_TASK, 0, c->buf, c->len)) < 0)
    return e;
  c->sent_at = lmp_clock_now();
  w->held[w->nheld++] = c;
  p->ninflight++;
  w->sent++;
  return 0;
}

/* Writes what slot's socket takes now; watches for room if some is left.
 * <0: the worker cannot be written to (it is ending). */
static int flush(lmp_pool *p, int slot, worker *w) {
  long left = lmp_frame_writer_flush(&w->out, w->fd);
  if (left < 0) return (int)left;
  want_output(p, slot, w, left > 0);
  return 0;
}

static int can_take(const lmp_pool *p, const worker *w, int nheld) {
  return w->state == W_LIVE && w->nheld == nheld && nheld < w->ahead &&
         (p->maxtasks == 0 || w->sent < p->maxtasks);
}

/* A busy worker is topped up only once it is down to half of what it may
 * hold: then it gets several chunks in one write (and wakes once for
 * them) instead of one write and one wake-up per chunk done. */
static int wants_more(const worker *w) {
  return w->nheld <= w->ahead / 2;
}

static void worker_end(lmp_pool *p, int slot);

/* Hands queued chunks to workers with room: first to idle workers, then
 * ahead to busy ones, starting from a rotating slot; then one write per
 * worker that got something. */
static void dispatch(lmp_pool *p) {
  int pass, i, any = 0;
  for (i = 0; i < p->nslots; i++) p->w[i].topping = wants_more(&p->w[i]);
  for (pass = 0; pass < LMP_POOL_AHEAD_MAX && p->qhead; pass++) {
    for (i = 0; i < p->nslots && p->qhead; i++) {
      int slot = (p->rr + i) % p->nslots;
      worker *w = &p->w[slot];
      chunk *c;
      if (!w->topping || !can_take(p, w, pass)) continue;
      c = p->qhead;
      q_unlink(p, c);
      any = 1;
      if (send_chunk(p, w, c) < 0) {
        q_push_front(p, c);
        worker_end(p, slot);
      }
    }
  }
  if (!any) return;
  p->rr = (p->rr + 1) % p->nslots;
  for (i = 0; i < p->nslots; i++) {
    worker *w = &p->w[i];
    if ((w->state == W_LIVE || w->state == W_STOPPING) &&
        !w->want_out &&
        lmp_frame_writer_pending(&w->out) > 0 && flush(p, i, w) < 0)
      worker_end(p, i);
  }
}

/* ---- receiving ---------------------------------------------------------- */

static chunk *take_held(lmp_pool *p, worker *w, uint64_t cid) {
  int i;
  for (i = 0; i < w->nheld; i++) {
    chunk *c = w->held[i];
    if (c->cid != cid) continue;
    memmove(w->held + i, w->held + i + 1,
            (size_t)(w->nheld - i - 1) * sizeof *w->held);
    w->nheld--;
    p->ninflight--;
    return c;
  }
  return NULL;
}

/* Updates w's time per chunk with chunk c just done, and from it how
 * many chunks w may hold. */
static void measure(worker *w, const chunk *c) {
  double now = lmp_clock_now();
  double took = now - (c->sent_at > w->last_done ? c->sent_at : w->last_done);
  int ahead;
  w->last_done = now;
  if (took < 1e-6) took = 1e-6;
  w->per_chunk = w->per_chunk < 0 ? took : 0.75 * w->per_chunk + 0.25 * took;
  ahead = 1 + (int)(LMP_POOL_AHEAD_SECS / w->per_chunk);
  if (ahead < LMP_POOL_AHEAD_MIN) ahead = LMP_POOL_AHEAD_MIN;
  if (ahead > LMP_POOL_AHEAD_MAX) ahead = LMP_POOL_AHEAD_MAX;
  w->ahead = ahead;
}

static int on_result(lmp_pool *p, int slot, worker *w, const char *d,
                     size_t len) {
  lmp_pool_event ev;
  chunk *c;
  if (len < LMP_POOL_RESULT_HDR) return -EPROTO;
  if (!(c = take_held(p, w, get64(d)))) return 0;
  measure(w, c);
  memset(&ev, 0, sizeof ev);
  ev.kind = LMP_POOL_EV_DONE;
  ev.slot = slot;
  ev.ok = get32(d + 8) != 0;
  ev.job = c->job;
  ev.k = c->k;
  ev.first = c->first;
  ev.n = c->n;
  ev.len = len - LMP_POOL_RESULT_HDR;
  chunk_free(p, c);
  if (!(ev.payload = malloc(ev.len + 1))) return -ENOMEM;
  memcpy(ev.payload, d + LMP_POOL_RESULT_HDR, ev.len);
  ev.payload[ev.len] = '\0';
  if (push_event(p, &ev) < 0) {
    free(ev.payload);
    return -ENOMEM;
  }
  return 0;
}

static int on_frame(lmp_pool *p, int slot, worker *w, const lmp_frame_hdr *h,
                    const char *d) {
  int i;
  if (h->type == LMP_POOL_RESULT) return on_result(p, slot, w, d, h->len);
  if (h->type != LMP_POOL_STARTED || h->len < 8) return -EPROTO;
  for (i = 0; i < w->nheld; i++)
    if (w->held[i]->cid == get64(d)) w->held[i]->started = 1;
  return 0;
}

/* Reads what the channel has and handles whole frames: 0, or <0 when the
 * channel is finished (EOF, error, garbage). */
static int drain(lmp_pool *p, int slot, worker *w) {
  for (;;) {
    long got = lmp_frame_reader_fill(&w->in, w->fd);
    lmp_frame_hdr h;
    const char *d;
    int r;
    if (got == -EAGAIN) return 0;
    if (got <= 0) return got == 0 ? -EPIPE : (int)got;
    while ((r = lmp_frame_reader_next(&w->in, &h, &d)) == 1)
      if ((r = on_frame(p, slot, w, &h, d)) < 0) return r;
    if (r < 0) return r;
    if (w->in.end < w->in.cap) return 0;   /* short read: nothing more */
  }
}

/* The worker in slot ended (or must be treated so): reads what it sent,
 * settles the chunks it held and reports EXIT. */
static void worker_end(lmp_pool *p, int slot) {
  worker *w = &p->w[slot];
  lmp_pool_event ev;
  chunk *lost = NULL;
  if (w->state != W_LIVE && w->state != W_STOPPING) return;
  if (w->fd >= 0) drain(p, slot, w);
  if (w->nheld > 0) {
    chunk *c = w->held[0];
    if (!(c->flags & LMP_POOL_F_ASK) || c->started) lost = c;
  }
  memset(&ev, 0, sizeof ev);
  ev.kind = LMP_POOL_EV_EXIT;
  ev.slot = slot;
  if (lost) {
    ev.lost = 1;
    ev.job = lost->job;
    ev.k = lost->k;
    ev.first = lost->first;
    ev.n = lost->n;
  }
  slot_release(p, w, lost);
  if (lost) chunk_free(p, lost);
  push_event(p, &ev);      /* on ENOMEM the EXIT is lost; nothing leaks */
}

static void on_ready(lmp_pool *p, const struct epoll_event *e) {
  int slot = (int)((e->data.u64 & 0xffffffffu) >> 1);
  int is_sentinel = (int)(e->data.u64 & 1);
  worker *w;
  if (slot >= p->nslots) return;
  w = &p->w[slot];
  if ((w->state != W_LIVE && w->state != W_STOPPING) ||
      w->gen != (uint32_t)(e->data.u64 >> 32))
    return;
  if (is_sentinel) {
    worker_end(p, slot);
    return;
  }
  if ((e->events & EPOLLOUT) && flush(p, slot, w) < 0) {
    worker_end(p, slot);
    return;
  }
  if ((e->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && drain(p, slot, w) < 0)
    worker_end(p, slot);
}

int lmp_pool_step(lmp_pool *p, double deadline) {
  struct epoll_event evs[64];
  int i, r;
  dispatch(p);
  for (;;) {
    int ms = events_pending(p) ? 0 : lmp_deadline_ms(deadline);
    r = epoll_wait(p->ep, evs, 64, ms);
    if (r >= 0) break;
    if (errno != EINTR) return -errno;
    if (lmp_intr_pending) return -EINTR;
  }
  for (i = 0; i < r; i++) on_ready(p, &evs[i]);
  dispatch(p);
  return (int)events_pending(p);
}

int lmp_pool_stop(lmp_pool *p, int slot) {
  worker *w;
  if (bad_slot(p, slot)) return -EINVAL;
  w = &p->w[slot];
  if (w->state != W_LIVE) return 0;
  w->state = W_STOPPING;
  if (lmp_frame_writer_push(&w->out, LMP_POOL_STOP, 0, NULL, 0) < 0)
    return -ENOMEM;
  if (!w->want_out) flush(p, slot, w);    /* an error shows at the next step */
  return 0;
}

/* ---- worker side -------------------------------------------------------- */

/* Next whole frame from the reader, reading (waiting until deadline)
 * as needed: 0, -EPIPE at EOF, -ETIMEDOUT, -EPROTO, -EINTR, -errno. */
static int worker_next_frame(int fd, lmp_frame_reader *r, lmp_frame_hdr *h,
                             const char **d, double deadline) {
  for (;;) {
    int e = lmp_frame_reader_next(r, h, d);
    long got;
    if (e == 1) return 0;
    if (e < 0) return e;
    got = lmp_frame_reader_fill(r, fd);
    if (got > 0) continue;
    if (got == 0) return -EPIPE;
    if (got != -EAGAIN) return (int)got;
    if ((e = lmp_fd_wait(fd, POLLIN, deadline)) <= 0)
      return e == 0 ? -ETIMEDOUT : e;
  }
}

int lmp_pool_worker_recv(int fd, lmp_frame_reader *r, lmp_pool_msg *m,
                         double deadline) {
  lmp_frame_hdr h;
  const char *d;
  int e;
  memset(m, 0, sizeof *m);
  if ((e = worker_next_frame(fd, r, &h, &d, deadline)) < 0) return e;
  m->type = h.type;
  m->frame = d;
  m->data = d;
  m->len = h.len;
  if (h.type == LMP_POOL_DEF || h.type == LMP_POOL_FORGET) {
    if (h.len < 4) goto bad;
    m->fid = get32(m->frame);
    m->data += 4;
    m->len -= 4;
  } else if (h.type == LMP_POOL_TASK) {
    char ack[8];
    if (h.len < LMP_POOL_TASK_HDR) goto bad;
    m->cid = get64(m->frame);
    m->fid = get32(m->frame + 8);
    m->first = get32(m->frame + 12);
    m->n = get32(m->frame + 16);
    m->flags = get32(m->frame + 20);
    m->data += LMP_POOL_TASK_HDR;
    m->len -= LMP_POOL_TASK_HDR;
    put64(ack, m->cid);
    if ((m->flags & LMP_POOL_F_ASK) &&
        (e = lmp_frame_send(fd, LMP_POOL_STARTED, 0, ack, 8, deadline)) < 0)
      return e;
  } else if (h.type != LMP_POOL_STOP) {
    goto bad;
  }
  return 0;
bad:
  return -EPROTO;
}

int lmp_pool_worker_send(int fd, uint64_t cid, int ok, const void *data,
                         size_t len, double deadline) {
  char hdr[LMP_FRAME_HDR_SIZE + LMP_POOL_RESULT_HDR];
  struct iovec iov[2];
  size_t total = sizeof hdr + len, done = 0;
  if (len > 0xffffffffu - LMP_POOL_RESULT_HDR) return -EMSGSIZE;
  lmp_frame_hdr_encode((unsigned char *)hdr, LMP_POOL_RESULT_HDR + len,
                       LMP_POOL_RESULT, 0);
  put64(hdr + LMP_FRAME_HDR_SIZE, cid);
  put32(hdr + LMP_FRAME_HDR_SIZE + 8, ok ? 1u : 0u);
  while (done < total) {
    ssize_t r;
    int nio = 0;
    if (done < sizeof hdr) {
      iov[nio].iov_base = hdr + done;
      iov[nio++].iov_len = sizeof hdr - done;
    }
    if (len) {
      size_t off = done > sizeof hdr ? done - sizeof hdr : 0;
      iov[nio].iov_base = (char *)data + off;
      iov[nio++].iov_len = len - off;
    }
    {
      struct msghdr mh;
      memset(&mh, 0, sizeof mh);
      mh.msg_iov = iov;
      mh.msg_iovlen = (size_t)nio;
      r = sendmsg(fd, &mh, MSG_NOSIGNAL);     /* no SIGPIPE */
      if (r < 0 && errno == ENOTSOCK) r = writev(fd, iov, nio);
    }
    if (r > 0) {
      done += (size_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR && !lmp_intr_pending) continue;
    if (r < 0 && errno == EINTR) return -EINTR;
    if (r < 0 && errno != EAGAIN) return errno == EPIPE ? -EPIPE : -errno;
    if ((r = lmp_fd_wait(fd, POLLOUT, deadline)) <= 0)
      return r == 0 ? -ETIMEDOUT : (int)r;
  }
  return 0;
}
