/* test_sync.c -- C tests of core/shm.c, core/sync.c and core/queue.c. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "ctest.h"
#include "queue.h"
#include "shm.h"
#include "sync.h"

static void *shared(lmp_shm *s, size_t size) {
  if (lmp_shm_create(s, NULL, size) != 0) return NULL;
  lmp_shm_unlink(s->name);      /* fork children inherit the mapping */
  return s->addr;
}

TEST(shm_create_attach_unlink) {
  lmp_shm a, b;
  CHECK_EQ(lmp_shm_create(&a, NULL, 100), 0);
  CHECK_EQ(a.creator, getpid());
  CHECK_EQ(lmp_shm_attach(&b, a.name), 0);
  CHECK_EQ(b.size, 100);
  memcpy(a.addr, "hello", 5);
  CHECK(memcmp(b.addr, "hello", 5) == 0);
  CHECK_EQ(lmp_shm_create(&b, a.name, 10), -EEXIST);
  CHECK_EQ(lmp_shm_unlink(a.name), 0);
  CHECK_EQ(lmp_shm_unlink(a.name), -ENOENT);
  CHECK_EQ(lmp_shm_attach(&b, a.name), -ENOENT);
  CHECK_EQ(lmp_shm_create(&b, "no-slash", 10), -EINVAL);
  CHECK_EQ(lmp_shm_create(&b, NULL, 0), -EINVAL);
  lmp_shm_close(&a);
  lmp_shm_close(&a);
}

TEST(shm_sweep_removes_dead_creators) {
  lmp_shm a, b;
  int st;
  pid_t pid = fork();
  if (pid == 0) {
    lmp_shm c;
    if (lmp_shm_create(&c, NULL, 8) == 0) {
      if (write(1, "", 0) < 0) _exit(2);
      _exit(0);
    }
    _exit(1);
  }
  waitpid(pid, &st, 0);
  CHECK_EQ(WEXITSTATUS(st), 0);
  CHECK(lmp_shm_sweep() >= 1);
  CHECK_EQ(lmp_shm_create(&a, NULL, 8), 0);
  lmp_shm_sweep();                      /* ours stays: we are alive */
  CHECK_EQ(lmp_shm_attach(&b, a.name), 0);
  lmp_shm_close(&b);
  lmp_shm_unlink(a.name);
  lmp_shm_close(&a);
}

TEST(mutex_lock_unlock_errorcheck) {
  lmp_shm s;
  lmp_mutex *m = shared(&s, sizeof *m);
  CHECK_EQ(lmp_mutex_init(m, 0), 0);
  CHECK_EQ(lmp_mutex_locked(m), 0);
  CHECK_EQ(lmp_mutex_unlock(m), -EPERM);
  CHECK_EQ(lmp_mutex_lock(m, LMP_FOREVER), 0);
  CHECK_EQ(lmp_mutex_mine(m), 1);
  CHECK_EQ(lmp_mutex_locked(m), 1);
  CHECK_EQ(lmp_mutex_lock(m, lmp_deadline(0)), -EDEADLK);
  CHECK_EQ(lmp_mutex_unlock(m), 0);
  CHECK_EQ(lmp_mutex_mine(m), 0);
  lmp_shm_close(&s);
}

TEST(mutex_recursive_counts) {
  lmp_shm s;
  lmp_mutex *m = shared(&s, sizeof *m);
  CHECK_EQ(lmp_mutex_init(m, 1), 0);
  CHECK_EQ(lmp_mutex_lock(m, LMP_FOREVER), 0);
  CHECK_EQ(lmp_mutex_lock(m, LMP_FOREVER), 0);
  CHECK_EQ(m->count, 2);
  CHECK_EQ(lmp_mutex_unlock(m), 0);
  CHECK_EQ(lmp_mutex_locked(m), 1);
  CHECK_EQ(lmp_mutex_unlock(m), 0);
  CHECK_EQ(lmp_mutex_locked(m), 0);
  CHECK_EQ(lmp_mutex_unlock(m), -EPERM);
  lmp_shm_close(&s);
}

TEST(mutex_held_by_other_process_times_out_then_recovers) {
  lmp_shm s;
  lmp_mutex *m = shared(&s, sizeof *m);
  int p[2], st;
  char c;
  double t0;
  CHECK_EQ(lmp_mutex_init(m, 0), 0);
  CHECK_EQ(pipe(p), 0);
  pid_t pid = fork();
  if (pid == 0) {
    lmp_mutex_lock(m, LMP_FOREVER);
    if (write(p[1], "x", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  CHECK_EQ(read(p[0], &c, 1), 1);
  t0 = lmp_clock_now();
  CHECK_EQ(lmp_mutex_lock(m, lmp_deadline(0.2)), -ETIMEDOUT);
  CHECK(lmp_clock_now() - t0 >= 0.19);
  CHECK_EQ(lmp_mutex_locked(m), 1);
  CHECK_EQ(lmp_mutex_unlock(m), -EPERM);
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  CHECK_EQ(lmp_mutex_lock(m, lmp_deadline(2)), 1);     /* owner died */
  CHECK_EQ(lmp_mutex_unlock(m), 0);
  CHECK_EQ(lmp_mutex_lock(m, lmp_deadline(2)), 0);     /* reported once */
  CHECK_EQ(lmp_mutex_unlock(m), 0);
  close(p[0]);
  close(p[1]);
  lmp_shm_close(&s);
}

TEST(mutex_counts_exactly_under_contention) {
  struct { lmp_mutex m; long n; } *x;
  lmp_shm s;
  int i, k, st;
  x = shared(&s, sizeof *x);
  CHECK_EQ(lmp_mutex_init(&x->m, 0), 0);
  for (k = 0; k < 4; k++) {
    if (fork() == 0) {
      for (i = 0; i < 20000; i++) {
        lmp_mutex_lock(&x->m, LMP_FOREVER);
        x->n++;
        lmp_mutex_unlock(&x->m);
      }
      _exit(0);
    }
  }
  for (k = 0; k < 4; k++) wait(&st);
  CHECK_EQ(x->n, 80000);
  lmp_shm_close(&s);
}

TEST(semaphore_bounds_and_timeouts) {
  lmp_shm s;
  lmp_sem *sem = shared(&s, sizeof *sem);
  lmp_sem_init(sem, 2, 2);
  CHECK_EQ(lmp_sem_acquire(sem, LMP_FOREVER), 0);
  CHECK_EQ(lmp_sem_acquire(sem, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_sem_acquire(sem, lmp_deadline(0.05)), -ETIMEDOUT);
  CHECK_EQ(lmp_sem_release(sem, 2), 0);
  CHECK_EQ(lmp_sem_release(sem, 1), -EOVERFLOW);
  CHECK_EQ(lmp_sem_value(sem), 2);
  lmp_shm_close(&s);
}

TEST(event_wakes_a_waiting_process) {
  lmp_shm s;
  lmp_event *e = shared(&s, sizeof *e);
  int st;
  pid_t pid = fork();
  if (pid == 0) _exit(lmp_event_wait(e, lmp_deadline(5)) == 1 ? 0 : 1);
  CHECK_EQ(lmp_event_wait(e, lmp_deadline(0.05)), 0);
  lmp_event_set(e);
  waitpid(pid, &st, 0);
  CHECK_EQ(WEXITSTATUS(st), 0);
  CHECK_EQ(lmp_event_is_set(e), 1);
  lmp_event_clear(e);
  CHECK_EQ(lmp_event_is_set(e), 0);
  lmp_shm_close(&s);
}

TEST(condition_notify_and_timeout) {
  struct { lmp_mutex m; lmp_cond c; int ready; } *x;
  lmp_shm s;
  int st;
  x = shared(&s, sizeof *x);
  CHECK_EQ(lmp_mutex_init(&x->m, 1), 0);
  CHECK_EQ(lmp_cond_wait(&x->c, &x->m, LMP_FOREVER), -EPERM);
  CHECK_EQ(lmp_cond_notify(&x->c, &x->m, 1), -EPERM);
  pid_t pid = fork();
  if (pid == 0) {
    int ok = 0;
    lmp_mutex_lock(&x->m, LMP_FOREVER);
    while (!x->ready) ok = lmp_cond_wait(&x->c, &x->m, lmp_deadline(5));
    lmp_mutex_unlock(&x->m);
    _exit(ok == 1 ? 0 : 1);
  }
  lmp_mutex_lock(&x->m, LMP_FOREVER);
  lmp_mutex_lock(&x->m, LMP_FOREVER);
  CHECK_EQ(lmp_cond_wait(&x->c, &x->m, lmp_deadline(0.05)), 0);
  CHECK_EQ(x->m.count, 2);
  x->ready = 1;
  CHECK_EQ(lmp_cond_notify(&x->c, &x->m, -1), 0);
  lmp_mutex_unlock(&x->m);
  lmp_mutex_unlock(&x->m);
  waitpid(pid, &st, 0);
  CHECK_EQ(WEXITSTATUS(st), 0);
  lmp_shm_close(&s);
}

/* A held mutex's block must stay mapped while a thread of ours holds it;
 * abandoning a hold hands it on as owner-died. */
TEST(mutex_held_here_and_abandon) {
  lmp_shm s;
  lmp_mutex *m = shared(&s, 2 * sizeof *m);
  int st;
  CHECK_EQ(lmp_mutex_init(&m[0], 0), 0);
  CHECK_EQ(lmp_mutex_init(&m[1], 1), 0);
  CHECK_EQ(lmp_mutex_held_here(&m[0]), 0);
  CHECK_EQ(lmp_mutex_lock(&m[0], LMP_FOREVER), 0);
  CHECK_EQ(lmp_mutex_held_here(&m[0]), 1);
  pid_t pid = fork();
  if (pid == 0) _exit(lmp_mutex_held_here(&m[0]) == 0 ? 0 : 1);  /* not the child's */
  waitpid(pid, &st, 0);
  CHECK_EQ(WEXITSTATUS(st), 0);
  lmp_mutex_abandon(&m[0], 1);
  CHECK_EQ(lmp_mutex_held_here(&m[0]), 0);
  CHECK_EQ(lmp_mutex_lock(&m[0], lmp_deadline(2)), 1);     /* told: holder gone */
  CHECK_EQ(lmp_mutex_unlock(&m[0]), 0);
  CHECK_EQ(lmp_mutex_lock(&m[0], lmp_deadline(2)), 0);
  CHECK_EQ(lmp_mutex_unlock(&m[0]), 0);
  /* recursive: only the levels given up are released */
  CHECK_EQ(lmp_mutex_lock(&m[1], LMP_FOREVER), 0);
  CHECK_EQ(lmp_mutex_lock(&m[1], LMP_FOREVER), 0);
  lmp_mutex_abandon(&m[1], 1);
  CHECK_EQ(lmp_mutex_mine(&m[1]), 1);
  lmp_mutex_abandon(&m[1], 5);                 /* no more than it holds */
  CHECK_EQ(lmp_mutex_mine(&m[1]), 0);
  CHECK_EQ(lmp_mutex_lock(&m[1], lmp_deadline(2)), 1);
  CHECK_EQ(lmp_mutex_unlock(&m[1]), 0);
  lmp_shm_close(&s);
}

/* Python's _TestCondition.test_notify_n: notify(n) wakes at most n of
 * the waiters, the others sleep on; notify_all wakes the rest. */
TEST(condition_notify_wakes_at_most_n) {
  struct { lmp_mutex m; lmp_cond c; int ready, woken; } *x;
  lmp_shm s;
  pid_t pids[4];
  int i, st, woken = 0;
  double t0;
  x = shared(&s, sizeof *x);
  CHECK_EQ(lmp_mutex_init(&x->m, 0), 0);
  for (i = 0; i < 4; i++) {
    if ((pids[i] = fork()) == 0) {
      int r;
      lmp_mutex_lock(&x->m, LMP_FOREVER);
      x->ready++;
      r = lmp_cond_wait(&x->c, &x->m, lmp_deadline(20));
      x->woken++;
      lmp_mutex_unlock(&x->m);
      _exit(r == 1 ? 0 : 1);
    }
  }
  t0 = lmp_clock_now();
  for (;;) {                          /* all four inside wait */
    int ready;
    lmp_mutex_lock(&x->m, LMP_FOREVER);
    ready = x->ready;
    lmp_mutex_unlock(&x->m);
    if (ready == 4 || lmp_clock_now() - t0 > 10) break;
    usleep(1000);
  }
  lmp_mutex_lock(&x->m, LMP_FOREVER);
  CHECK_EQ(lmp_cond_notify(&x->c, &x->m, 2), 0);
  lmp_mutex_unlock(&x->m);
  t0 = lmp_clock_now();
  while (__atomic_load_n(&x->woken, __ATOMIC_ACQUIRE) < 2 && lmp_clock_now() - t0 < 10)
    usleep(1000);
  usleep(300000);                     /* the other two must still sleep */
  CHECK_EQ(__atomic_load_n(&x->woken, __ATOMIC_ACQUIRE), 2);
  lmp_mutex_lock(&x->m, LMP_FOREVER);
  CHECK_EQ(lmp_cond_notify(&x->c, &x->m, -1), 0);
  lmp_mutex_unlock(&x->m);
  for (i = 0; i < 4; i++) {
    waitpid(pids[i], &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) woken++;
  }
  CHECK_EQ(woken, 4);
  lmp_shm_close(&s);
}

TEST(barrier_releases_all_parties) {
  lmp_shm s;
  lmp_barrier *b = shared(&s, sizeof *b);
  uint32_t idx = 99, seen = 0;
  int k, st;
  CHECK_EQ(lmp_barrier_init(b, 5), 0);
  for (k = 0; k < 4; k++)
    if (fork() == 0) {
      uint32_t i;
      if (lmp_barrier_wait(b, lmp_deadline(5), &i) != 0) _exit(99);
      _exit((int)i);
    }
  CHECK_EQ(lmp_barrier_wait(b, lmp_deadline(5), &idx), 0);
  seen |= 1u << idx;
  for (k = 0; k < 4; k++) {
    wait(&st);
    CHECK(WEXITSTATUS(st) < 5);
    seen |= 1u << WEXITSTATUS(st);
  }
  CHECK_EQ(seen, 31);
  /* a timed-out wait breaks it; reset repairs it */
  CHECK_EQ(lmp_barrier_wait(b, lmp_deadline(0.05), &idx), -ETIMEDOUT);
  CHECK_EQ(lmp_barrier_broken(b), 1);
  CHECK_EQ(lmp_barrier_wait(b, lmp_deadline(0.05), &idx), -EPIPE);
  lmp_barrier_reset(b);
  CHECK_EQ(lmp_barrier_broken(b), 0);
  CHECK_EQ(lmp_barrier_waiting(b), 0);
  lmp_shm_close(&s);
}

TEST(queue_fifo_maxsize_and_large_items) {
  lmp_queue q, q2;
  size_t len = 0;
  char big[5000];
  int i;
  CHECK_EQ(lmp_queue_create(&q, 1024, 3, LMP_QUEUE_JOINABLE, 7), 0);
  CHECK_EQ(lmp_queue_attach(&q2, q.shm.name), 0);
  CHECK_EQ(lmp_queue_tag(&q2), 7);
  CHECK_EQ(lmp_queue_get(&q, &len, lmp_deadline(0)), -EAGAIN);
  CHECK_EQ(lmp_queue_put(&q, "a", 1, LMP_FOREVER), 0);
  CHECK_EQ(lmp_queue_put(&q, "", 0, LMP_FOREVER), 0);
  for (i = 0; i < (int)sizeof big; i++) big[i] = (char)i;
  CHECK_EQ(lmp_queue_put(&q, big, sizeof big, LMP_FOREVER), 0);
  CHECK_EQ(lmp_queue_full(&q), 1);
  CHECK_EQ(lmp_queue_put(&q, "x", 1, lmp_deadline(0.05)), -EAGAIN);
  CHECK_EQ(lmp_queue_size(&q2), 3);
  CHECK_EQ(lmp_queue_get(&q2, &len, LMP_FOREVER), 0);
  CHECK(len == 1 && q2.buf[0] == 'a');
  CHECK_EQ(lmp_queue_get(&q2, &len, LMP_FOREVER), 0);
  CHECK_EQ(len, 0);
  CHECK_EQ(lmp_queue_get(&q2, &len, LMP_FOREVER), 0);
  CHECK(len == sizeof big && memcmp(q2.buf, big, len) == 0);
  CHECK_EQ(lmp_queue_unfinished(&q), 3);
  CHECK_EQ(lmp_queue_join(&q, lmp_deadline(0.05)), -ETIMEDOUT);
  for (i = 0; i < 3; i++) CHECK_EQ(lmp_queue_task_done(&q), 0);
  CHECK_EQ(lmp_queue_task_done(&q), -ERANGE);
  CHECK_EQ(lmp_queue_join(&q, lmp_deadline(0.05)), 0);
  lmp_queue_close(&q2, 0);
  lmp_queue_close(&q, 1);
  CHECK_EQ(lmp_queue_attach(&q2, q.shm.name), -ENOENT);
}

TEST(queue_wraps_around_the_ring) {
  lmp_queue q;
  size_t len;
  char item[40], got[40];
  int i, ok = 1;
  CHECK_EQ(lmp_queue_create(&q, 128, 0, 0, 0), 0);
  for (i = 0; i < 1000; i++) {
    memset(item, 'a' + i % 26, sizeof item);
    memcpy(item, &i, sizeof i);
    if (lmp_queue_put(&q, item, 13 + i % 27, lmp_deadline(0)) != 0) ok = 0;
    if (lmp_queue_get(&q, &len, lmp_deadline(0)) != 0) ok = 0;
    memcpy(got, q.buf, len);
    if (len != (size_t)(13 + i % 27) || memcmp(got, item, len) != 0) ok = 0;
  }
  CHECK(ok);
  lmp_queue_close(&q, 1);
}

/* Producers are SIGKILLed over and over while a consumer reads: each
 * item is whole, per-producer sequence numbers never repeat nor go back,
 * and the queue keeps working. */
TEST(queue_survives_producers_killed_mid_put) {
  lmp_queue q;
  int round, bad = 0, total = 0;
  long last[64];
  CHECK_EQ(lmp_queue_create(&q, 4096, 0, 0, 0), 0);
  for (round = 0; round < 20; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      long seq;
      char item[300];
      for (seq = 0;; seq++) {
        size_t n = 16 + (size_t)(seq % 250);
        memset(item, (int)(seq & 0x7f), n);
        memcpy(item, &seq, sizeof seq);
        memcpy(item + 8, &n, sizeof n);
        lmp_queue_put(&q, item, n, LMP_FOREVER);
      }
    }
    last[round] = -1;
    {
      double stop = lmp_clock_now() + 0.02 + 0.003 * round;
      size_t len;
      while (lmp_clock_now() < stop)
        if (lmp_queue_get(&q, &len, lmp_deadline(0.01)) == 0) {
          long seq;
          size_t n, i;
          memcpy(&seq, q.buf, sizeof seq);
          memcpy(&n, q.buf + 8, sizeof n);
          if (n != len || seq != last[round] + 1) bad++;
          for (i = 16; i < len; i++) if (q.buf[i] != (char)(seq & 0x7f)) bad++;
          last[round] = seq;
          total++;
        }
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      /* drain what it published */
      while (lmp_queue_get(&q, &len, lmp_deadline(0)) == 0) {
        long seq;
        memcpy(&seq, q.buf, sizeof seq);
        if (seq != last[round] + 1) bad++;
        last[round] = seq;
        total++;
      }
    }
  }
  CHECK_EQ(bad, 0);
  CHECK(total > 100);
  CHECK_EQ(lmp_queue_put(&q, "ok", 2, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_queue_size(&q), 1);
  fprintf(stderr, "queue kill test: %d items, %u lock recoveries\n", total,
          lmp_queue_recoveries(&q));
  lmp_queue_close(&q, 1);
}

int main(void) {
  RUN(shm_create_attach_unlink);
  RUN(shm_sweep_removes_dead_creators);
  RUN(mutex_lock_unlock_errorcheck);
  RUN(mutex_recursive_counts);
  RUN(mutex_held_by_other_process_times_out_then_recovers);
  RUN(mutex_counts_exactly_under_contention);
  RUN(semaphore_bounds_and_timeouts);
  RUN(event_wakes_a_waiting_process);
  RUN(condition_notify_and_timeout);
  RUN(mutex_held_here_and_abandon);
  RUN(condition_notify_wakes_at_most_n);
  RUN(barrier_releases_all_parties);
  RUN(queue_fifo_maxsize_and_large_items);
  RUN(queue_wraps_around_the_ring);
  RUN(queue_survives_producers_killed_mid_put);
  return ctest_summary();
}
