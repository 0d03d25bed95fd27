/* pool.h -- the worker pool's scheduler: a queue of chunks (opaque task
 * payloads), one channel per worker, one loop in the master.
 *
 * The master side (lmp_pool) owns one socket per worker, an epoll set
 * over those sockets and the workers' sentinels (fds readable once a
 * worker has ended: pidfds, or an eventfd for threads), a queue of chunks
 * and a table of function payloads. It never sees a Lua value: a chunk is
 * (job id, chunk number, first index, item count, function id, flags,
 * argument bytes) and a result is (chunk, ok, result bytes). It runs only
 * inside lmp_pool_step (no threads, no signals): dispatch by readiness,
 * one chunk running and at least one queued ahead per worker. How many
 * ahead adapts to each worker's measured time per chunk: as many as make
 * about LMP_POOL_AHEAD_SECS of work (2 to LMP_POOL_AHEAD_MAX chunks in
 * its hands), so tiny tasks are not throttled by the round trip to the
 * master, while long ones never wait behind each other on one worker
 * when another could take them. A busy worker is topped up once it is
 * down to half of that, so that it gets several chunks per write and
 * per wake-up, not one for each chunk it finishes.
 *
 * A function travels once per worker: the first chunk using function id
 * F on a worker is preceded by a DEF frame carrying F's payload; later
 * chunks carry F only. Function payloads no chunk refers to are kept for
 * the LMP_POOL_FN_KEEP most recently used; older ones are forgotten (and
 * the workers told so before their next DEF): lmp_pool_has_fn says
 * whether an id may still be used.
 *
 * Worker death (channel EOF or error, or the sentinel firing): frames
 * already sent are read first; then the oldest chunk the worker held is
 * lost (event EXIT with lost = 1) unless it was sent to an idle worker
 * that never said it started it (a worker killed while idle), in which
 * case it is requeued; chunks held behind it never started and go back to
 * the front of the queue in order. The slot then gets no work until
 * lmp_pool_attach gives it a new worker; its channel fd stays open until
 * then (or lmp_pool_detach), so the fd number cannot be reused before the
 * caller has heard of the EXIT. Nothing is ever run twice.
 *
 * Wire protocol (frame types; integers little-endian):
 *   master -> worker  DEF     u32 fid, function bytes
 *                     FORGET  u32 fid
 *                     TASK    u64 cid, u32 fid, u32 first, u32 n,
 *                             u32 flags, argument bytes
 *                     STOP    (empty): finish and return
 *   worker -> master  STARTED u64 cid   (only for chunks flagged ASK)
 *                     RESULT  u64 cid, u32 ok, result bytes
 * Every function returns 0 / a count or -errno; none prints or aborts. */
#ifndef LMP_POOL_H
#define LMP_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

enum {
  LMP_POOL_DEF = 32,
  LMP_POOL_FORGET = 33,
  LMP_POOL_TASK = 34,
  LMP_POOL_STOP = 35,
  LMP_POOL_STARTED = 36,
  LMP_POOL_RESULT = 37
};

#define LMP_POOL_AHEAD_MIN 2      /* chunks in a worker's hands ... */
#define LMP_POOL_AHEAD_MAX 16     /* ... at least and at most */
#define LMP_POOL_AHEAD_SECS 0.002 /* work queued ahead per worker */
#define LMP_POOL_FN_KEEP 64       /* unreferenced function payloads kept */
#define LMP_POOL_TASK_HDR 24      /* bytes before a TASK's arguments */
#define LMP_POOL_RESULT_HDR 12    /* bytes before a RESULT's payload */

/* Task flags: the low 16 bits are the caller's (passed to the worker as
 * is); LMP_POOL_F_ASK is set by the scheduler on a chunk sent to an idle
 * worker, which must then answer STARTED before running it. */
#define LMP_POOL_F_ASK 0x10000u

enum { LMP_POOL_EV_DONE = 1, LMP_POOL_EV_EXIT = 2 };

/* One thing the loop has to report. DONE: a chunk's result (ok 1) or
 * error (ok 0) bytes. EXIT: worker `slot` ended; if lost is 1, the chunk
 * (job, k, first, n) it was running is lost. payload is malloc'd and
 * owned by the event (lmp_pool_event_free). */
typedef struct lmp_pool_event {
  int kind, slot, ok, lost;
  uint64_t job;
  uint32_t k, first, n;
  char *payload;
  size_t len;
} lmp_pool_event;

typedef struct lmp_pool lmp_pool;

/* A pool with nslots (1..4096) worker slots, all empty; maxtasks > 0
 * retires a worker after that many chunks (it is sent no more; the worker
 * counts too and returns). 0 or -errno; *out freed by lmp_pool_free. */
int lmp_pool_new(lmp_pool **out, int nslots, long maxtasks);
/* Closes every channel and the epoll fd, frees queued chunks and events.
 * Sentinels belong to the caller and are not closed. */
void lmp_pool_free(lmp_pool *p);
/* The epoll fd: readable whenever lmp_pool_step has something to read. */
int lmp_pool_fileno(const lmp_pool *p);
int lmp_pool_nslots(const lmp_pool *p);

/* Gives a slot without a live worker a new one (closing the channel of
 * the worker that ended there): the pool owns channel fd from now on
 * (made non-blocking, close-on-exec); sentinel (-1: none) is only
 * watched. 0, -EBUSY (slot in use), -EINVAL, or -errno from epoll. */
int lmp_pool_attach(lmp_pool *p, int slot, int fd, int sentinel);
/* Closes slot's channel now, without an EXIT event; the chunks a live
 * worker held are requeued. 0 or -EINVAL. */
int lmp_pool_detach(lmp_pool *p, int slot);
/* 1 if slot holds a live worker, 0 if not. */
int lmp_pool_slot_used(const lmp_pool *p, int slot);
/* Queues a STOP frame for slot's worker and sends it no more chunks. */
int lmp_pool_stop(lmp_pool *p, int slot);

/* Stores function payload for fid (copied). 0, -EEXIST, -ENOMEM. */
int lmp_pool_define(lmp_pool *p, uint32_t fid, const void *data, size_t len);
/* 1 if fid is defined (may be used by lmp_pool_submit), else 0. */
int lmp_pool_has_fn(lmp_pool *p, uint32_t fid);

/* Queues a chunk (args copied) and sends what workers have room for
 * (a worker found dead then reports EXIT at the next step). 0, -ENOENT
 * (fid unknown), -ENOMEM, -EMSGSIZE. */
int lmp_pool_submit(lmp_pool *p, uint64_t job, uint32_t k, uint32_t fid,
                    uint32_t first, uint32_t n, uint32_t flags,
                    const void *args, size_t len);
/* The same without sending: a caller queueing many chunks at once calls
 * lmp_pool_dispatch after the last, so that each worker gets its share
 * in one write instead of one write per chunk. */
int lmp_pool_enqueue(lmp_pool *p, uint64_t job, uint32_t k, uint32_t fid,
                     uint32_t first, uint32_t n, uint32_t flags,
                     const void *args, size_t len);
/* Sends queued chunks to the workers that have room. */
void lmp_pool_dispatch(lmp_pool *p);
/* Removes job's queued chunks: the number removed. */
long lmp_pool_drop_job(lmp_pool *p, uint64_t job);
/* 1 if a chunk of job is in a worker's hands. */
int lmp_pool_job_sent(const lmp_pool *p, uint64_t job);
/* Chunks queued, and chunks in workers' hands. */
size_t lmp_pool_queued(const lmp_pool *p);
size_t lmp_pool_inflight(const lmp_pool *p);

/* One turn of the loop: dispatches, waits until deadline (clock.h; at
 * once if events are pending) for channel or sentinel activity, reads
 * results, handles deaths, dispatches again. Returns the number of
 * events pending, or -EINTR (interruption requested, intr.h) / -errno. */
int lmp_pool_step(lmp_pool *p, double deadline);
/* Takes the oldest pending event: 1, or 0 if none. */
int lmp_pool_next_event(lmp_pool *p, lmp_pool_event *ev);
void lmp_pool_event_free(lmp_pool_event *ev);

/* ---- worker side (blocking, one channel) ------------------------------ */

typedef struct lmp_pool_msg {
  int type;                 /* LMP_POOL_DEF, FORGET, TASK or STOP */
  uint64_t cid;
  uint32_t fid, first, n, flags;
  const char *frame;        /* the whole payload, inside the reader */
  const char *data;         /* function or argument bytes inside frame */
  size_t len;
} lmp_pool_msg;

/* Receives the next message through reader r (lmp_frame_reader_init'd;
 * it reads ahead, so one reader per channel); the message's bytes stay
 * valid until the next call. For a TASK flagged ASK, answers STARTED
 * first. 0, -EPIPE (master gone), -ETIMEDOUT, -EPROTO, -EINTR, -errno. */
int lmp_pool_worker_recv(int fd, lmp_frame_reader *r, lmp_pool_msg *m,
                         double deadline);
/* Sends a chunk's result (ok 1) or error (ok 0). 0 or -errno. */
int lmp_pool_worker_send(int fd, uint64_t cid, int ok, const void *data,
                         size_t len, double deadline);

#endif
