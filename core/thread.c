/* thread.c -- OS threads with poll-able sentinels (see thread.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "intr.h"
#include "thread.h"

struct lmp_thread {
  pthread_t tid;
  pthread_mutex_t mu;
  lmp_thread_fn fn;
  void *arg;
  int efd;          /* readable once fn returned */
  int done, status;
  int refs;         /* owner + thread */
  int joined;
};

static int live;                        /* threads running, this process */
static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void live_add(int d) {
  pthread_mutex_lock(&live_mu);
  live += d;
  pthread_mutex_unlock(&live_mu);
}

/* A fork child has only the forking thread. */
static void in_child(void) {
  pthread_mutex_init(&live_mu, NULL);
  live = 0;
}
static void setup_atfork(void) { pthread_atfork(NULL, NULL, in_child); }

int lmp_thread_live(void) {
  int n;
  pthread_mutex_lock(&live_mu);
  n = live;
  pthread_mutex_unlock(&live_mu);
  return n;
}

static void unref(lmp_thread *t) {
  int left;
  pthread_mutex_lock(&t->mu);
  left = --t->refs;
  pthread_mutex_unlock(&t->mu);
  if (left) return;
  lmp_fd_close(t->efd);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static void *trampoline(void *arg) {
  lmp_thread *t = arg;
  uint64_t one = 1;
  int status = t->fn(t->arg);
  pthread_mutex_lock(&t->mu);
  t->done = 1;
  t->status = status;
  pthread_mutex_unlock(&t->mu);
  live_add(-1);
  if (write(t->efd, &one, sizeof one) < 0) { /* cannot fail: counter < max */ }
  unref(t);
  return NULL;
}

int lmp_thread_start(lmp_thread **out, lmp_thread_fn fn, void *arg) {
  sigset_t all, old;
  lmp_thread *t;
  int rc;
  pthread_once(&atfork_once, setup_atfork);
  if (!(t = calloc(1, sizeof *t))) return -ENOMEM;
  t->fn = fn;
  t->arg = arg;
  t->refs = 2;
  t->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (t->efd < 0) {
    rc = -errno;
    free(t);
    return rc;
  }
  pthread_mutex_init(&t->mu, NULL);
  sigfillset(&all);                   /* the new thread inherits the mask */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  live_add(1);
  rc = -pthread_create(&t->tid, NULL, trampoline, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) {
    live_add(-1);
    lmp_fd_close(t->efd);
    pthread_mutex_destroy(&t->mu);
    free(t);
    return rc;
  }
  *out = t;
  return 0;
}

int lmp_thread_sentinel(const lmp_thread *t) { return t->efd; }

int lmp_thread_done(const lmp_thread *t, int *status) {
  int d;
  pthread_mutex_lock((pthread_mutex_t *)&t->mu);
  d = t->done;
  if (d && status) *status = t->status;
  pthread_mutex_unlock((pthread_mutex_t *)&t->mu);
  return d;
}

int lmp_thread_join(lmp_thread *t, double deadline) {
  for (;;) {
    int r;
    if (lmp_thread_done(t, NULL)) {
      if (!t->joined) {
        pthread_join(t->tid, NULL);
        t->joined = 1;
      }
      return 0;
    }
    r = lmp_fd_wait(t->efd, POLLIN, deadline);
    if (r == 0) return -ETIMEDOUT;
    if (r < 0) return r;
  }
}

void lmp_thread_release(lmp_thread *t) {
  if (!t) return;
  if (!t->joined) {
    if (lmp_thread_done(t, NULL)) pthread_join(t->tid, NULL);
    else pthread_detach(t->tid);
    t->joined = 1;
  }
  unref(t);
}
