/* queue.h -- a FIFO of byte items in one shared-memory block.
 *
 * Layout: a header (a robust lmp_mutex, futex sequences for "not empty",
 * "not full" and "all tasks done", two copies of the queue state) and a
 * ring of records (8-byte header: length + flags, payload, padding to 8).
 * Many producers and consumers in any processes.
 *
 * Crash safety. Everything a put or get changes (head, tail, item count,
 * unfinished tasks) lives in a small state struct kept twice; an operation
 * writes the payload past the tail, fills in the spare copy and then flips
 * one 32-bit index -- the single store that publishes. A process killed at
 * any point before that store leaves the queue exactly as it was (the half
 * written bytes lie beyond the tail); killed after it, the operation is
 * complete. Its held lock is recovered by the next user (robust mutex).
 *
 * Items larger than half the ring travel in a block of their own
 * (shm.h, named after the producer's pid), whose name goes in the ring;
 * the consumer copies and unlinks it. */
#ifndef LMP_QUEUE_H
#define LMP_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "shm.h"

typedef struct lmp_queue_hdr lmp_queue_hdr;

typedef struct lmp_queue {
  lmp_shm shm;
  lmp_queue_hdr *h;     /* NULL when closed */
  char *buf;            /* last item read by lmp_queue_get (malloc'd) */
  size_t bufcap;
} lmp_queue;

#define LMP_QUEUE_JOINABLE 1u

/* Creates a queue block: capacity ring bytes (rounded up to 8, at least
 * 64), maxsize items (0: only the ring bounds it), flags, and a user tag
 * stored for the bindings (e.g. the codec). 0 or -errno. */
int lmp_queue_create(lmp_queue *q, size_t capacity, int64_t maxsize,
                     unsigned flags, unsigned tag);
/* Attaches to the queue block name: 0, -ENOENT, -EINVAL (not a queue). */
int lmp_queue_attach(lmp_queue *q, const char *name);
/* Unmaps (idempotent). unlink_name: also remove the name, and unlink
 * the blocks of large items still queued. */
void lmp_queue_close(lmp_queue *q, int unlink_name);

/* Appends a copy of len bytes: 0, -EAGAIN (still full at the deadline),
 * -ETIMEDOUT (lock not taken in time), -EINTR, -errno. */
int lmp_queue_put(lmp_queue *q, const void *data, size_t len, double deadline);
/* Removes the oldest item into q->buf; *len its size: 0, -EAGAIN (still
 * empty at the deadline), -ETIMEDOUT, -EINTR, -ENOMEM, -errno. */
int lmp_queue_get(lmp_queue *q, size_t *len, double deadline);

/* JoinableQueue: 0, or -ERANGE when called more times than items put. */
int lmp_queue_task_done(lmp_queue *q);
/* Waits until every item put has been task_done: 0, -ETIMEDOUT, -EINTR. */
int lmp_queue_join(lmp_queue *q, double deadline);

/* Snapshots, without the lock. */
int64_t lmp_queue_size(lmp_queue *q);
int64_t lmp_queue_maxsize(lmp_queue *q);
int64_t lmp_queue_unfinished(lmp_queue *q);
size_t lmp_queue_capacity(lmp_queue *q);
unsigned lmp_queue_flags(lmp_queue *q);
unsigned lmp_queue_tag(lmp_queue *q);
/* 1 if maxsize items are queued (or the ring has no room for a small
 * item). */
int lmp_queue_full(lmp_queue *q);
/* How many times the lock was recovered from a dead holder. */
uint32_t lmp_queue_recoveries(lmp_queue *q);

#endif
