/* sync.h -- process-shared synchronisation in shared memory.
 *
 * Every object here is a plain struct meant to live in a MAP_SHARED block
 * (shm.h) that all the processes using it map; *_init runs once, in the
 * creator, on zero-filled memory. Nothing in these structs is a pointer,
 * so each process may map the block at a different address.
 *
 *   lmp_mutex    robust pthread mutex (recursive or not). When its holder
 *                dies, the next locker gets it and is told so (EOWNERDEAD
 *                recovery); the "owner died" news is kept in the struct
 *                until one locker has reported it.
 *   lmp_sem      counting semaphore on a futex, optionally bounded.
 *   lmp_event    a flag on a futex.
 *   lmp_cond     condition variable used with an lmp_mutex: notify(n)
 *                grants n wake-ups that n waiters take (a futex sequence
 *                only tells sleepers to look), so at most n return.
 *   lmp_barrier  Python-style barrier: wait returns the arrival index; a
 *                timed-out or interrupted wait breaks it; abort, reset.
 *
 * Deadlines are absolute monotonic times (clock.h); LMP_FOREVER waits
 * forever; a passed deadline means "try once". Every wait sleeps in
 * slices so that it returns -EINTR soon after lmp_intr_pending is set. */
#ifndef LMP_SYNC_H
#define LMP_SYNC_H

#include <pthread.h>
#include <stdint.h>

typedef struct lmp_mutex {
  pthread_mutex_t m;
  uint32_t died;        /* recovered from a dead owner, not yet reported */
  uint32_t count;       /* recursion depth of the current holder */
  uint32_t recursive;
  int32_t owner;        /* thread id of the holder, 0 when free */
} lmp_mutex;

typedef struct lmp_sem {
  uint32_t value;       /* the futex word */
  uint32_t waiters;
  uint32_t bound;       /* 0: unbounded */
  uint32_t pad;
} lmp_sem;

typedef struct lmp_event {
  uint32_t flag;        /* the futex word */
  uint32_t waiters;
} lmp_event;

typedef struct lmp_cond {
  uint32_t seq;         /* the futex word, bumped by every notify */
  uint32_t waiters;     /* waiting and not yet woken (under the lock) */
  uint32_t signals;     /* wake-ups granted and not yet taken (under the lock) */
  uint32_t pad;
} lmp_cond;

typedef struct lmp_barrier {
  lmp_mutex m;
  uint32_t gen;         /* the futex word: bumped when a round ends */
  uint32_t parties;
  uint32_t count;       /* arrived in the current round */
  uint32_t broken;
  uint32_t reset_gen;   /* generation that reset() cancelled, + 1 */
  uint32_t pad;
} lmp_barrier;

/* Futex helpers (shared, not private). wait returns 0 when woken or when
 * *addr != val, -ETIMEDOUT, or -EINTR (interruption pending). */
int lmp_futex_wait(uint32_t *addr, uint32_t val, double deadline);
void lmp_futex_wake(uint32_t *addr, int n);

/* 0 or -errno (pthread attribute failures). */
int lmp_mutex_init(lmp_mutex *m, int recursive);
/* Locks before deadline: 0, 1 (locked, and the previous holder had died
 * or the owner-died news was pending), -ETIMEDOUT, -EINTR, -EDEADLK (a
 * non-recursive mutex this thread already holds), -ENOTRECOVERABLE. */
int lmp_mutex_lock(lmp_mutex *m, double deadline);
/* Same, but never returns -EINTR: for internal critical sections and for
 * re-locking after a condition wait. */
int lmp_mutex_lock_nointr(lmp_mutex *m, double deadline);
/* 0, or -EPERM when this thread does not hold it. */
int lmp_mutex_unlock(lmp_mutex *m);
/* 1 if some thread holds it (recovering a dead holder's lock first). */
int lmp_mutex_locked(lmp_mutex *m);
/* 1 if the calling thread holds it. */
int lmp_mutex_mine(lmp_mutex *m);
/* 1 if a thread of this process may hold it. The robust-mutex list of a
 * holder (which glibc and the kernel walk through the mutex memory
 * itself) then points into m's block, so the block must stay mapped:
 * unmapping it would make that thread's next lock or exit write to freed
 * memory. Errs on the side of 1. */
int lmp_mutex_held_here(lmp_mutex *m);
/* The calling thread gives up `levels` of its holds because the object it
 * held them through is going away; when that frees the mutex, the next
 * locker is told its holder died (lock returns 1), as if this thread had
 * exited holding it. */
void lmp_mutex_abandon(lmp_mutex *m, uint32_t levels);

void lmp_sem_init(lmp_sem *s, uint32_t value, uint32_t bound);
/* 0, -ETIMEDOUT, -EINTR. */
int lmp_sem_acquire(lmp_sem *s, double deadline);
/* Adds n: 0, or -EOVERFLOW past the bound (nothing added). */
int lmp_sem_release(lmp_sem *s, uint32_t n);
uint32_t lmp_sem_value(lmp_sem *s);

void lmp_event_set(lmp_event *e);
void lmp_event_clear(lmp_event *e);
int lmp_event_is_set(lmp_event *e);
/* 1 when set, 0 on timeout, -EINTR. */
int lmp_event_wait(lmp_event *e, double deadline);

/* Releases m (all recursion levels), waits for a notify, re-locks m (even
 * past the deadline or on interruption, as Python does). 1 notified, 0
 * timed out, -EINTR, -EPERM (m not held by this thread). */
int lmp_cond_wait(lmp_cond *c, lmp_mutex *m, double deadline);
/* Wakes up to n of the current waiters (n < 0: all). -EPERM if m is not
 * held. A waiter killed while waiting still counts, so a notify may then
 * wake one fewer live waiter, and a later waiter may return at once. */
int lmp_cond_notify(lmp_cond *c, lmp_mutex *m, int n);

/* 0 or -errno; parties >= 1. */
int lmp_barrier_init(lmp_barrier *b, uint32_t parties);
/* 0 with *index set (0 .. parties-1; parties-1 released the others),
 * -EPIPE (broken, reset or aborted), -ETIMEDOUT or -EINTR (both break
 * the barrier for every waiter). */
int lmp_barrier_wait(lmp_barrier *b, double deadline, uint32_t *index);
void lmp_barrier_abort(lmp_barrier *b);
void lmp_barrier_reset(lmp_barrier *b);
/* Waiting count (0 when broken) and the broken flag. */
uint32_t lmp_barrier_waiting(lmp_barrier *b);
int lmp_barrier_broken(lmp_barrier *b);

#endif
