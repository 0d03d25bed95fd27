/* sync.c -- process-shared synchronisation (see sync.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "intr.h"
#include "sync.h"

/* Longest single sleep: bounds how late an interruption is noticed. */
#define SLICE 0.1

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define INC(p) __atomic_add_fetch((p), 1, __ATOMIC_ACQ_REL)
#define DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)

static void to_timespec(double t, struct timespec *ts) {
  ts->tv_sec = (time_t)t;
  ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) { ts->tv_sec++; ts->tv_nsec -= 1000000000L; }
  if (ts->tv_nsec < 0) ts->tv_nsec = 0;
}

/* End of the next sleep slice, or 0 when the deadline has passed. */
static double slice_end(double deadline) {
  double now = lmp_clock_now(), until = now + SLICE;
  if (deadline >= 0) {
    if (now >= deadline) return 0;
    if (deadline < until) until = deadline;
  }
  return until;
}

/* ------------------------------------------------------------- futexes */

int lmp_futex_wait(uint32_t *addr, uint32_t val, double deadline) {
  for (;;) {
    struct timespec ts;
    double until;
    long r;
    if (LOAD(addr) != val) return 0;
    if (lmp_intr_pending) return -EINTR;
    if ((until = slice_end(deadline)) == 0) return -ETIMEDOUT;
    to_timespec(until, &ts);
    /* WAIT_BITSET takes an absolute CLOCK_MONOTONIC time. */
    r = syscall(SYS_futex, addr, FUTEX_WAIT_BITSET, val, &ts, NULL,
                FUTEX_BITSET_MATCH_ANY);
    if (r == 0) return 0;
    if (errno == EAGAIN) return 0;
    if (errno != ETIMEDOUT && errno != EINTR) return -errno;
  }
}

void lmp_futex_wake(uint32_t *addr, int n) {
  syscall(SYS_futex, addr, FUTEX_WAKE, n < 0 ? INT_MAX : n, NULL, NULL, 0);
}

/* ------------------------------------------------------------- mutexes */

/* The calling thread's id, cached; a fork child forgets the cache. */
static __thread int32_t tid_cache;
static pthread_once_t tid_once = PTHREAD_ONCE_INIT;

static void tid_forget(void) { tid_cache = 0; }
static void tid_setup(void) { pthread_atfork(NULL, NULL, tid_forget); }

static int32_t my_tid(void) {
  if (!tid_cache) {
    pthread_once(&tid_once, tid_setup);
    tid_cache = (int32_t)syscall(SYS_gettid);
  }
  return tid_cache;
}

int lmp_mutex_init(lmp_mutex *m, int recursive) {
  pthread_mutexattr_t a;
  int r;
  memset(m, 0, sizeof *m);
  if ((r = pthread_mutexattr_init(&a)) != 0) return -r;
  r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (!r) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (!r) r = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                      : PTHREAD_MUTEX_ERRORCHECK);
  if (!r) r = pthread_mutex_init(&m->m, &a);
  pthread_mutexattr_destroy(&a);
  m->recursive = recursive ? 1 : 0;
  return -r;
}

/* After pthread returned r for a lock attempt: 0/1/-errno as lmp_mutex_lock. */
static int lock_result(lmp_mutex *m, int r) {
  if (r == EOWNERDEAD) {
    /* Its holder died holding it: we own it now, at depth 1. */
    pthread_mutex_consistent(&m->m);
    m->died = 0;
    m->count = 1;
    m->owner = my_tid();
    return 1;
  }
  if (r != 0) return -r;
  m->owner = my_tid();
  if (++m->count == 1 && m->died) {
    m->died = 0;
    return 1;
  }
  return 0;
}

/* Held locks are mostly held briefly: a few tries, with the CPU told we
 * are spinning, usually get it without a trip into the kernel. */
#define SPIN_TRIES 64

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __asm__ __volatile__("pause");
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static int mutex_lock(lmp_mutex *m, double deadline, int intr) {
  int r = pthread_mutex_trylock(&m->m), spin;
  for (spin = 0; r == EBUSY && spin < SPIN_TRIES; spin++) {
    int k;
    for (k = 0; k < 8; k++) cpu_relax();
    r = pthread_mutex_trylock(&m->m);
  }
  while (r == EBUSY) {
    struct timespec ts;
    double until;
    if (intr && lmp_intr_pending) return -EINTR;
    if ((until = slice_end(deadline)) == 0) return -ETIMEDOUT;
    to_timespec(until, &ts);
    r = pthread_mutex_clocklock(&m->m, CLOCK_MONOTONIC, &ts);
    if (r == ETIMEDOUT) r = EBUSY;
  }
  return lock_result(m, r);
}

int lmp_mutex_lock(lmp_mutex *m, double deadline) {
  return mutex_lock(m, deadline, 1);
}

int lmp_mutex_lock_nointr(lmp_mutex *m, double deadline) {
  return mutex_lock(m, deadline, 0);
}

int lmp_mutex_unlock(lmp_mutex *m) {
  int r;
  if (m->owner != my_tid() || m->count == 0) return -EPERM;
  if (--m->count == 0) m->owner = 0;
  if ((r = pthread_mutex_unlock(&m->m)) != 0) {
    m->owner = my_tid();     /* not ours after all (cannot happen) */
    m->count++;
    return -r;
  }
  return 0;
}

/* Probes with trylock: returns the pthread result, undoing our own lock.
 * *was_mine tells whether this thread held it already. */
static int probe(lmp_mutex *m, int *was_mine) {
  int r = pthread_mutex_trylock(&m->m);
  *was_mine = 0;
  if (r == EDEADLK) {
    *was_mine = 1;
  } else if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&m->m);
    m->count = 0;
    m->owner = 0;
    m->died = 1;            /* the next real locker reports it */
    pthread_mutex_unlock(&m->m);
    r = 0;
  } else if (r == 0) {
    *was_mine = m->count > 0;    /* recursive: we held it already */
    pthread_mutex_unlock(&m->m);
  }
  return r;
}

int lmp_mutex_locked(lmp_mutex *m) {
  int mine, r = probe(m, &mine);
  return r == EBUSY || mine;
}

int lmp_mutex_mine(lmp_mutex *m) {
  return m->owner == my_tid() && m->count > 0;
}

int lmp_mutex_held_here(lmp_mutex *m) {
  int32_t owner = LOAD(&m->owner);
  if (owner == 0) return 0;
  if (owner == my_tid()) return 1;
  /* Another thread of ours? (A fork child sees its parent's holder as a
   * stranger: that thread's robust list is not the child's.) */
  return syscall(SYS_tgkill, getpid(), owner, 0) == 0 || errno != ESRCH;
}

void lmp_mutex_abandon(lmp_mutex *m, uint32_t levels) {
  while (levels-- > 0 && lmp_mutex_mine(m)) {
    if (m->count == 1) m->died = 1;
    lmp_mutex_unlock(m);
  }
}

/* ------------------------------------------------------------- semaphores */

void lmp_sem_init(lmp_sem *s, uint32_t value, uint32_t bound) {
  memset(s, 0, sizeof *s);
  s->value = value;
  s->bound = bound;
}

int lmp_sem_acquire(lmp_sem *s, double deadline) {
  for (;;) {
    uint32_t v = LOAD(&s->value);
    int r;
    while (v > 0) {
      if (__atomic_compare_exchange_n(&s->value, &v, v - 1, 0,
                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return 0;
    }
    INC(&s->waiters);
    r = lmp_futex_wait(&s->value, 0, deadline);
    DEC(&s->waiters);
    if (r < 0 && LOAD(&s->value) == 0) return r;
  }
}

int lmp_sem_release(lmp_sem *s, uint32_t n) {
  uint32_t v = LOAD(&s->value);
  do {
    if ((s->bound && v + (uint64_t)n > s->bound) || v + (uint64_t)n > INT_MAX)
      return -EOVERFLOW;
  } while (!__atomic_compare_exchange_n(&s->value, &v, v + n, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
  if (LOAD(&s->waiters)) lmp_futex_wake(&s->value, (int)n);
  return 0;
}

uint32_t lmp_sem_value(lmp_sem *s) { return LOAD(&s->value); }

/* ------------------------------------------------------------- events */

void lmp_event_set(lmp_event *e) {
  STORE(&e->flag, 1);
  if (LOAD(&e->waiters)) lmp_futex_wake(&e->flag, -1);
}

void lmp_event_clear(lmp_event *e) { STORE(&e->flag, 0); }

int lmp_event_is_set(lmp_event *e) { return LOAD(&e->flag) != 0; }

int lmp_event_wait(lmp_event *e, double deadline) {
  int r = 0;
  while (!LOAD(&e->flag)) {
    INC(&e->waiters);
    r = lmp_futex_wait(&e->flag, 0, deadline);
    DEC(&e->waiters);
    if (r < 0) break;
  }
  if (LOAD(&e->flag)) return 1;
  return r == -EINTR ? -EINTR : 0;
}

/* ------------------------------------------------------------- conditions */

static void relock(lmp_mutex *m, uint32_t depth) {
  uint32_t i;
  for (i = 0; i < depth; i++) lmp_mutex_lock_nointr(m, LMP_FOREVER);
}

static void unlock_all(lmp_mutex *m, uint32_t depth) {
  uint32_t i;
  for (i = 0; i < depth; i++) lmp_mutex_unlock(m);
}

/* waiters and signals change only under m. A sleeper that wakes (a notify
 * bumped seq, or its time ran out) takes a granted wake-up if one is left;
 * one that finds none sleeps again: a notify meant for one is not a
 * notify for all who happen to look. */
int lmp_cond_wait(lmp_cond *c, lmp_mutex *m, double deadline) {
  uint32_t depth;
  if (!lmp_mutex_mine(m)) return -EPERM;
  depth = m->count;
  c->waiters++;
  for (;;) {
    uint32_t seq = LOAD(&c->seq);
    int r;
    unlock_all(m, depth);
    r = lmp_futex_wait(&c->seq, seq, deadline);
    relock(m, depth);
    if (c->signals > 0) {
      c->signals--;
      c->waiters--;
      return 1;
    }
    if (r < 0) {
      c->waiters--;
      return r == -EINTR ? -EINTR : 0;
    }
  }
}

int lmp_cond_notify(lmp_cond *c, lmp_mutex *m, int n) {
  uint32_t idle;
  if (!lmp_mutex_mine(m)) return -EPERM;
  idle = c->waiters - c->signals;
  if (n < 0 || (uint32_t)n > idle) n = (int)idle;
  if (n == 0) return 0;
  c->signals += (uint32_t)n;
  INC(&c->seq);
  lmp_futex_wake(&c->seq, n);
  return 0;
}

/* ------------------------------------------------------------- barriers */

int lmp_barrier_init(lmp_barrier *b, uint32_t parties) {
  int r = lmp_mutex_init(&b->m, 0);
  b->parties = parties;
  return r;
}

/* Breaks the barrier (lock held) and wakes everyone. */
static void barrier_break(lmp_barrier *b) {
  b->broken = 1;
  INC(&b->gen);
  lmp_futex_wake(&b->gen, -1);
}

int lmp_barrier_wait(lmp_barrier *b, double deadline, uint32_t *index) {
  uint32_t gen;
  int r;
  lmp_mutex_lock_nointr(&b->m, LMP_FOREVER);
  if (b->broken) {
    lmp_mutex_unlock(&b->m);
    return -EPIPE;
  }
  *index = b->count++;
  if (b->count >= b->parties) {           /* the last one releases all */
    b->count = 0;
    INC(&b->gen);
    lmp_futex_wake(&b->gen, -1);
    lmp_mutex_unlock(&b->m);
    return 0;
  }
  gen = LOAD(&b->gen);
  for (;;) {
    lmp_mutex_unlock(&b->m);
    r = lmp_futex_wait(&b->gen, gen, deadline);
    lmp_mutex_lock_nointr(&b->m, LMP_FOREVER);
    if (LOAD(&b->gen) != gen) {
      r = (b->broken || b->reset_gen == gen + 1) ? -EPIPE : 0;
      break;
    }
    if (r < 0) {                           /* timed out or interrupted */
      barrier_break(b);
      break;
    }
  }
  lmp_mutex_unlock(&b->m);
  return r;
}

void lmp_barrier_abort(lmp_barrier *b) {
  lmp_mutex_lock_nointr(&b->m, LMP_FOREVER);
  barrier_break(b);
  lmp_mutex_unlock(&b->m);
}

void lmp_barrier_reset(lmp_barrier *b) {
  lmp_mutex_lock_nointr(&b->m, LMP_FOREVER);
  if (b->count > 0 && !b->broken) {       /* waiters get "broken" */
    b->reset_gen = LOAD(&b->gen) + 1;
    INC(&b->gen);
    lmp_futex_wake(&b->gen, -1);
  }
  b->count = 0;
  b->broken = 0;
  lmp_mutex_unlock(&b->m);
}

uint32_t lmp_barrier_waiting(lmp_barrier *b) {
  return LOAD(&b->broken) ? 0 : LOAD(&b->count);
}

int lmp_barrier_broken(lmp_barrier *b) { return LOAD(&b->broken) != 0; }
