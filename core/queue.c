/* queue.c -- a FIFO of byte items in shared memory (see queue.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "queue.h"
#include "sync.h"

#define QMAGIC 0x516d706cu           /* "lmpQ" */
#define RING_OFF 256                 /* header size, ring starts here */
#define F_SIDE 1u                    /* record holds the name of a block */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define INC(p) __atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)
#define DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)

typedef struct qstate {
  uint64_t head, tail;               /* byte positions, only growing */
  int64_t count, unfinished;
} qstate;

struct lmp_queue_hdr {
  uint32_t magic, flags, tag, recoveries;
  lmp_mutex lock;
  uint32_t not_empty, not_full, all_done;      /* futex sequences */
  uint32_t getters, putters, joiners;          /* sleeping on them */
  uint32_t cur;                                /* current state: st[cur] */
  uint32_t pad;
  uint64_t capacity;
  int64_t maxsize;
  qstate st[2];
};

typedef struct rec { uint32_t len, flags; } rec;

typedef char hdr_fits[sizeof(struct lmp_queue_hdr) <= RING_OFF ? 1 : -1];

static uint64_t rec_size(size_t len) { return 8 + (((uint64_t)len + 7) & ~7ull); }

static char *ring(lmp_queue_hdr *h) { return (char *)h + RING_OFF; }

static void ring_write(lmp_queue_hdr *h, uint64_t pos, const void *src, size_t n) {
  size_t off = (size_t)(pos % h->capacity), first = (size_t)h->capacity - off;
  if (first > n) first = n;
  memcpy(ring(h) + off, src, first);
  memcpy(ring(h), (const char *)src + first, n - first);
}

static void ring_read(lmp_queue_hdr *h, uint64_t pos, void *dst, size_t n) {
  size_t off = (size_t)(pos % h->capacity), first = (size_t)h->capacity - off;
  if (first > n) first = n;
  memcpy(dst, ring(h) + off, first);
  memcpy((char *)dst + first, ring(h), n - first);
}

/* Publishes: the spare copy becomes the state in one store. */
static qstate *spare(lmp_queue_hdr *h) {
  uint32_t c = h->cur;
  h->st[c ^ 1] = h->st[c];
  return &h->st[c ^ 1];
}
static void publish(lmp_queue_hdr *h) { STORE(&h->cur, h->cur ^ 1); }

static int qlock(lmp_queue_hdr *h, double deadline) {
  int r = lmp_mutex_lock(&h->lock, deadline);
  if (r == 1) {           /* a holder died: the state is whole by design */
    INC(&h->recoveries);
    r = 0;
  }
  return r;
}

/* Sleeps on seq with the lock released; re-locks. <0: lock not held. */
static int qwait(lmp_queue_hdr *h, uint32_t *seq, uint32_t *waiters,
                 double deadline) {
  uint32_t v = LOAD(seq);
  int r;
  INC(waiters);
  lmp_mutex_unlock(&h->lock);
  r = lmp_futex_wait(seq, v, deadline);
  DEC(waiters);
  return r < 0 ? r : qlock(h, deadline);
}

int lmp_queue_create(lmp_queue *q, size_t capacity, int64_t maxsize,
                     unsigned flags, unsigned tag) {
  lmp_queue_hdr *h;
  int r;
  memset(q, 0, sizeof *q);
  capacity = (capacity + 7) & ~(size_t)7;
  if (capacity < 64) capacity = 64;
  if (capacity > ((size_t)1 << 40)) return -EINVAL;
  if ((r = lmp_shm_create(&q->shm, NULL, RING_OFF + capacity)) < 0) return r;
  h = q->shm.addr;
  if ((r = lmp_mutex_init(&h->lock, 0)) < 0) {
    lmp_shm_unlink(q->shm.name);
    lmp_shm_close(&q->shm);
    return r;
  }
  h->capacity = capacity;
  h->maxsize = maxsize > 0 ? maxsize : 0;
  h->flags = flags;
  h->tag = tag;
  STORE(&h->magic, QMAGIC);
  q->h = h;
  return 0;
}

int lmp_queue_attach(lmp_queue *q, const char *name) {
  lmp_queue_hdr *h;
  int r;
  memset(q, 0, sizeof *q);
  if ((r = lmp_shm_attach(&q->shm, name)) < 0) return r;
  h = q->shm.addr;
  if (q->shm.size < RING_OFF + 64 || LOAD(&h->magic) != QMAGIC
      || h->capacity + RING_OFF > q->shm.size) {
    lmp_shm_close(&q->shm);
    return -EINVAL;
  }
  q->h = h;
  return 0;
}

/* Unlinks the blocks of large items still queued (lock held). */
static void unlink_sides(lmp_queue_hdr *h) {
  qstate *s = &h->st[h->cur];
  uint64_t pos;
  for (pos = s->head; pos < s->tail; ) {
    rec r;
    char name[LMP_SHM_NAME_MAX];
    ring_read(h, pos, &r, sizeof r);
    if ((r.flags & F_SIDE) && r.len < sizeof name) {
      ring_read(h, pos + 8, name, r.len);
      name[r.len] = '\0';
      lmp_shm_unlink(name);
    }
    pos += rec_size(r.len);
  }
}

void lmp_queue_close(lmp_queue *q, int unlink_name) {
  if (q->h && unlink_name) {
    if (qlock(q->h, lmp_deadline(1.0)) == 0) {
      unlink_sides(q->h);
      lmp_mutex_unlock(&q->h->lock);
    }
    lmp_shm_unlink(q->shm.name);
  }
  if (q->h && lmp_mutex_held_here(&q->h->lock))
    lmp_shm_abandon(&q->shm);     /* see lmp_mutex_held_here */
  else
    lmp_shm_close(&q->shm);
  q->h = NULL;
  free(q->buf);
  q->buf = NULL;
  q->bufcap = 0;
}

/* Stores a large item in a block of its own; name receives its name. */
static int put_side(const void *data, size_t len, char *name) {
  lmp_shm s;
  int r = lmp_shm_create(&s, NULL, len);
  if (r < 0) return r;
  memcpy(s.addr, data, len);
  strcpy(name, s.name);
  lmp_shm_close(&s);
  return 0;
}

static int room_for(lmp_queue_hdr *h, uint64_t need) {
  qstate *s = &h->st[h->cur];
  return (h->maxsize == 0 || s->count < h->maxsize)
         && h->capacity - (s->tail - s->head) >= need;
}

int lmp_queue_put(lmp_queue *q, const void *data, size_t len, double deadline) {
  lmp_queue_hdr *h = q->h;
  char name[LMP_SHM_NAME_MAX];
  uint64_t need = rec_size(len);
  rec hd;
  qstate *n;
  int r;
  if (!h) return -EBADF;
  hd.flags = 0;
  if (need > h->capacity / 2 || len > UINT32_MAX / 2) {
    if ((r = put_side(data, len, name)) < 0) return r;
    data = name;
    len = strlen(name);
    need = rec_size(len);
    hd.flags = F_SIDE;
  }
  hd.len = (uint32_t)len;
  if ((r = qlock(h, deadline)) < 0) goto fail;
  while (!room_for(h, need))
    if ((r = qwait(h, &h->not_full, &h->putters, deadline)) < 0) goto fail;
  n = spare(h);
  ring_write(h, n->tail, &hd, sizeof hd);
  ring_write(h, n->tail + 8, data, len);
  n->tail += need;
  n->count++;
  n->unfinished++;
  publish(h);
  INC(&h->not_empty);
  if (LOAD(&h->getters)) lmp_futex_wake(&h->not_empty, 1);
  lmp_mutex_unlock(&h->lock);
  return 0;
fail:
  if (hd.flags & F_SIDE) lmp_shm_unlink(name);
  return r == -ETIMEDOUT ? -EAGAIN : r;
}

static int grow(lmp_queue *q, size_t n) {
  char *p;
  if (n + 1 <= q->bufcap) return 0;
  p = realloc(q->buf, n + 1);
  if (!p) return -ENOMEM;
  q->buf = p;
  q->bufcap = n + 1;
  return 0;
}

/* Replaces the block name in q->buf by the block's bytes. */
static int get_side(lmp_queue *q, size_t *len) {
  lmp_shm s;
  int r = lmp_shm_attach(&s, q->buf);
  if (r < 0) return r == -ENOENT ? -EIO : r;
  lmp_shm_unlink(s.name);
  if ((r = grow(q, s.size)) == 0) {
    memcpy(q->buf, s.addr, s.size);
    *len = s.size;
  }
  lmp_shm_close(&s);
  return r;
}

int lmp_queue_get(lmp_queue *q, size_t *len, double deadline) {
  lmp_queue_hdr *h = q->h;
  qstate *n;
  rec hd;
  int r;
  if (!h) return -EBADF;
  if ((r = qlock(h, deadline)) < 0) return r == -ETIMEDOUT ? -EAGAIN : r;
  while (h->st[h->cur].count == 0)
    if ((r = qwait(h, &h->not_empty, &h->getters, deadline)) < 0)
      return r == -ETIMEDOUT ? -EAGAIN : r;
  n = spare(h);
  ring_read(h, n->head, &hd, sizeof hd);
  if ((r = grow(q, hd.len)) < 0) {
    lmp_mutex_unlock(&h->lock);
    return r;
  }
  ring_read(h, n->head + 8, q->buf, hd.len);
  n->head += rec_size(hd.len);
  n->count--;
  publish(h);
  INC(&h->not_full);
  if (LOAD(&h->putters)) lmp_futex_wake(&h->not_full, -1);
  lmp_mutex_unlock(&h->lock);
  *len = hd.len;
  if (hd.flags & F_SIDE) {
    q->buf[hd.len] = '\0';
    return get_side(q, len);
  }
  return 0;
}

int lmp_queue_task_done(lmp_queue *q) {
  lmp_queue_hdr *h = q->h;
  qstate *n;
  int r;
  if (!h) return -EBADF;
  if ((r = qlock(h, LMP_FOREVER)) < 0) return r;
  if (h->st[h->cur].unfinished <= 0) {
    lmp_mutex_unlock(&h->lock);
    return -ERANGE;
  }
  n = spare(h);
  n->unfinished--;
  publish(h);
  if (n->unfinished == 0) {
    INC(&h->all_done);
    if (LOAD(&h->joiners)) lmp_futex_wake(&h->all_done, -1);
  }
  lmp_mutex_unlock(&h->lock);
  return 0;
}

int lmp_queue_join(lmp_queue *q, double deadline) {
  lmp_queue_hdr *h = q->h;
  int r;
  if (!h) return -EBADF;
  if ((r = qlock(h, deadline)) < 0) return r;
  while (h->st[h->cur].unfinished > 0)
    if ((r = qwait(h, &h->all_done, &h->joiners, deadline)) < 0) return r;
  lmp_mutex_unlock(&h->lock);
  return 0;
}

static qstate *now_state(lmp_queue *q) { return &q->h->st[LOAD(&q->h->cur)]; }

int64_t lmp_queue_size(lmp_queue *q) { return q->h ? now_state(q)->count : 0; }
int64_t lmp_queue_maxsize(lmp_queue *q) { return q->h ? q->h->maxsize : 0; }
int64_t lmp_queue_unfinished(lmp_queue *q) {
  return q->h ? now_state(q)->unfinished : 0;
}
size_t lmp_queue_capacity(lmp_queue *q) { return q->h ? q->h->capacity : 0; }
unsigned lmp_queue_flags(lmp_queue *q) { return q->h ? q->h->flags : 0; }
unsigned lmp_queue_tag(lmp_queue *q) { return q->h ? q->h->tag : 0; }
uint32_t lmp_queue_recoveries(lmp_queue *q) {
  return q->h ? LOAD(&q->h->recoveries) : 0;
}

int lmp_queue_full(lmp_queue *q) {
  return q->h ? !room_for(q->h, rec_size(16)) : 0;
}
