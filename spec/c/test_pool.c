/* test_pool.c -- C tests of the pool scheduler (core/pool.c), with forked
 * workers that speak the worker side of the protocol. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "clock.h"
#include "ctest.h"
#include "fd.h"
#include "pool.h"
#include "proc.h"

typedef struct child {
  pid_t pid;
  int pidfd;
} child;

/* The test worker: answers each TASK with "<defs>:<fid>:<args>"; args
 * "sleep" sleeps 30 s, "exit" exits 3; stops after maxtasks chunks. */
static void worker_loop(int fd, int maxtasks) {
  int defs = 0, done = 0;
  lmp_pool_msg m;
  lmp_frame_reader r;
  lmp_frame_reader_init(&r, 0);
  while (lmp_pool_worker_recv(fd, &r, &m, LMP_FOREVER) == 0) {
    if (m.type == LMP_POOL_STOP) break;
    if (m.type == LMP_POOL_DEF) defs++;
    if (m.type == LMP_POOL_TASK) {
      char out[256];
      int n;
      if (m.len == 5 && memcmp(m.data, "sleep", 5) == 0) sleep(30);
      if (m.len == 4 && memcmp(m.data, "exit", 4) == 0) _exit(3);
      n = snprintf(out, sizeof out, "%d:%u:%.*s", defs, m.fid, (int)m.len, m.data);
      lmp_pool_worker_send(fd, m.cid, m.len != 3 || memcmp(m.data, "bad", 3),
                           out, (size_t)n, LMP_FOREVER);
      done++;
    }
    if (maxtasks && done >= maxtasks) break;
  }
  _exit(0);
}

static child start_worker(lmp_pool *p, int slot, int maxtasks) {
  int sv[2];
  child c = {-1, -1};
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return c;
  c.pid = lmp_proc_fork(&c.pidfd);
  if (c.pid == 0) {
    close(sv[0]);
    worker_loop(sv[1], maxtasks);
  }
  close(sv[1]);
  CHECK_EQ(lmp_pool_attach(p, slot, sv[0], c.pidfd), 0);
  return c;
}

/* 1 once pid sleeps in nanosleep: a worker running the "sleep" task,
 * which it answered STARTED for before it began. */
static int sleeping(pid_t pid) {
  char path[64], buf[64];
  long nr = -1;
  FILE *f;
  snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
  if (!(f = fopen(path, "r"))) return 0;
  if (fgets(buf, sizeof buf, f)) nr = strtol(buf, NULL, 10);
  fclose(f);
  return nr == SYS_clock_nanosleep || nr == SYS_nanosleep;
}

static void reap(child *c) {
  int st;
  if (c->pid <= 0) return;
  kill(c->pid, SIGKILL);
  waitpid(c->pid, &st, 0);
  lmp_fd_close(c->pidfd);
  c->pid = -1;
}

/* Runs the loop until `want` events arrived (or 5 s); copies them. */
static int collect(lmp_pool *p, lmp_pool_event *out, int want, double secs) {
  double deadline = lmp_deadline(secs);
  int got = 0;
  while (got < want && !lmp_deadline_passed(deadline)) {
    lmp_pool_event ev;
    if (lmp_pool_step(p, deadline) < 0) break;
    while (got < want && lmp_pool_next_event(p, &ev)) out[got++] = ev;
  }
  return got;
}

static void submit(lmp_pool *p, uint64_t job, uint32_t k, uint32_t fid,
                   const char *args) {
  CHECK_EQ(lmp_pool_submit(p, job, k, fid, k, 1, 0, args, strlen(args)), 0);
}

TEST(results_come_back_with_their_chunk) {
  lmp_pool *p;
  lmp_pool_event ev[20];
  child c[2];
  int i, seen[21] = {0};
  CHECK_EQ(lmp_pool_new(&p, 2, 0), 0);
  c[0] = start_worker(p, 0, 0);
  c[1] = start_worker(p, 1, 0);
  CHECK_EQ(lmp_pool_define(p, 7, "fn", 2), 0);
  CHECK_EQ(lmp_pool_define(p, 7, "fn", 2), -EEXIST);
  CHECK_EQ(lmp_pool_submit(p, 1, 1, 99, 1, 1, 0, "x", 1), -ENOENT);
  for (i = 1; i <= 20; i++) submit(p, 1, (uint32_t)i, 7, i == 13 ? "bad" : "ok");
  CHECK_EQ(collect(p, ev, 20, 5), 20);
  for (i = 0; i < 20; i++) {
    CHECK_EQ(ev[i].kind, LMP_POOL_EV_DONE);
    CHECK_EQ(ev[i].job, 1);
    CHECK_EQ(ev[i].ok, ev[i].k != 13);
    /* each worker got the function once, before its first chunk */
    CHECK(strncmp(ev[i].payload, "1:7:", 4) == 0);
    seen[ev[i].k]++;
    lmp_pool_event_free(&ev[i]);
  }
  for (i = 1; i <= 20; i++) CHECK_EQ(seen[i], 1);
  CHECK_EQ(lmp_pool_queued(p), 0);
  CHECK_EQ(lmp_pool_inflight(p), 0);
  lmp_pool_free(p);
  reap(&c[0]);
  reap(&c[1]);
}

TEST(enqueued_chunks_wait_for_dispatch_then_go_in_one_batch) {
  lmp_pool *p;
  lmp_pool_event ev[12];
  child c;
  int i;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  CHECK_EQ(lmp_pool_define(p, 3, "f", 1), 0);
  for (i = 1; i <= 12; i++)
    CHECK_EQ(lmp_pool_enqueue(p, 2, (uint32_t)i, 3, (uint32_t)i, 1, 0, "ok", 2), 0);
  CHECK_EQ(lmp_pool_enqueue(p, 2, 13, 99, 13, 1, 0, "x", 1), -ENOENT);
  CHECK_EQ(lmp_pool_queued(p), 12);
  CHECK_EQ(lmp_pool_inflight(p), 0);       /* nothing sent before dispatch */
  lmp_pool_dispatch(p);
  CHECK(lmp_pool_inflight(p) >= 1);
  CHECK_EQ(lmp_pool_queued(p) + lmp_pool_inflight(p), 12);
  CHECK_EQ(collect(p, ev, 12, 5), 12);
  for (i = 0; i < 12; i++) {
    CHECK_EQ(ev[i].kind, LMP_POOL_EV_DONE);
    CHECK_EQ(ev[i].k, (uint32_t)i + 1);     /* one worker: in order */
    lmp_pool_event_free(&ev[i]);
  }
  CHECK_EQ(lmp_pool_queued(p), 0);
  lmp_pool_free(p);
  reap(&c);
}

TEST(a_busy_worker_killed_loses_its_chunk_and_requeues_the_rest) {
  lmp_pool *p;
  lmp_pool_event ev[4];
  child c;
  double t0;
  int n;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  CHECK_EQ(lmp_pool_define(p, 1, "f", 1), 0);
  submit(p, 5, 1, 1, "sleep");
  submit(p, 5, 2, 1, "ok");
  /* until the worker runs chunk 1 (it said STARTED first), waited for
   * as an event with a bound; then the master reads the STARTED */
  t0 = lmp_clock_now();
  while (!sleeping(c.pid) && lmp_clock_now() - t0 < 10) {
    lmp_pool_step(p, lmp_deadline(0.001));
    usleep(1000);
  }
  CHECK(sleeping(c.pid));
  lmp_pool_step(p, lmp_deadline(0));
  CHECK_EQ(lmp_pool_inflight(p), 2);
  t0 = lmp_clock_now();
  kill(c.pid, SIGKILL);
  n = collect(p, ev, 1, 5);
  CHECK_EQ(n, 1);
  CHECK(lmp_clock_now() - t0 < 5.0);     /* a bound, not a speed */
  CHECK_EQ(ev[0].kind, LMP_POOL_EV_EXIT);
  CHECK_EQ(ev[0].lost, 1);
  CHECK_EQ(ev[0].k, 1);
  CHECK_EQ(lmp_pool_slot_used(p, 0), 0);
  CHECK_EQ(lmp_pool_queued(p), 1);          /* chunk 2 never started */
  waitpid(c.pid, NULL, 0);
  lmp_fd_close(c.pidfd);
  c = start_worker(p, 0, 0);                /* the replacement runs it */
  CHECK_EQ(collect(p, ev, 1, 5), 1);
  CHECK_EQ(ev[0].kind, LMP_POOL_EV_DONE);
  CHECK_EQ(ev[0].k, 2);
  CHECK(strncmp(ev[0].payload, "1:1:ok", 6) == 0);   /* DEF sent again */
  lmp_pool_event_free(&ev[0]);
  lmp_pool_free(p);
  reap(&c);
}

TEST(a_chunk_sent_to_a_worker_killed_while_idle_is_not_lost) {
  lmp_pool *p;
  lmp_pool_event ev[2];
  child c;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  kill(c.pid, SIGKILL);
  waitpid(c.pid, NULL, 0);                   /* dead before the send */
  CHECK_EQ(lmp_pool_define(p, 1, "f", 1), 0);
  submit(p, 9, 1, 1, "ok");
  CHECK_EQ(collect(p, ev, 1, 5), 1);
  CHECK_EQ(ev[0].kind, LMP_POOL_EV_EXIT);
  CHECK_EQ(ev[0].lost, 0);
  CHECK_EQ(lmp_pool_queued(p), 1);
  lmp_fd_close(c.pidfd);
  c = start_worker(p, 0, 0);
  CHECK_EQ(collect(p, ev, 1, 5), 1);
  CHECK_EQ(ev[0].kind, LMP_POOL_EV_DONE);
  lmp_pool_event_free(&ev[0]);
  lmp_pool_free(p);
  reap(&c);
}

TEST(maxtasks_retires_a_worker_after_its_chunks) {
  lmp_pool *p;
  lmp_pool_event ev[8];
  child c;
  int i, done = 0, exits = 0;
  CHECK_EQ(lmp_pool_new(&p, 1, 2), 0);
  c = start_worker(p, 0, 2);
  CHECK_EQ(lmp_pool_define(p, 1, "f", 1), 0);
  for (i = 1; i <= 3; i++) submit(p, 1, (uint32_t)i, 1, "ok");
  CHECK_EQ(collect(p, ev, 3, 5), 3);
  for (i = 0; i < 3; i++) {
    if (ev[i].kind == LMP_POOL_EV_DONE) done++;
    if (ev[i].kind == LMP_POOL_EV_EXIT) { exits++; CHECK_EQ(ev[i].lost, 0); }
    lmp_pool_event_free(&ev[i]);
  }
  CHECK_EQ(done, 2);
  CHECK_EQ(exits, 1);
  CHECK_EQ(lmp_pool_queued(p), 1);
  reap(&c);
  c = start_worker(p, 0, 2);
  CHECK_EQ(collect(p, ev, 1, 5), 1);
  CHECK_EQ(ev[0].k, 3);
  lmp_pool_event_free(&ev[0]);
  lmp_pool_free(p);
  reap(&c);
}

TEST(drop_job_and_job_sent) {
  lmp_pool *p;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);        /* no worker: all queued */
  CHECK_EQ(lmp_pool_define(p, 1, "f", 1), 0);
  submit(p, 1, 1, 1, "a");
  submit(p, 2, 1, 1, "b");
  submit(p, 1, 2, 1, "c");
  CHECK_EQ(lmp_pool_step(p, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_pool_job_sent(p, 1), 0);
  CHECK_EQ(lmp_pool_drop_job(p, 1), 2);
  CHECK_EQ(lmp_pool_queued(p), 1);
  lmp_pool_free(p);
}

TEST(unused_functions_are_forgotten_beyond_the_limit) {
  lmp_pool *p;
  uint32_t i;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  for (i = 1; i <= LMP_POOL_FN_KEEP + 10; i++)
    CHECK_EQ(lmp_pool_define(p, i, "f", 1), 0);
  CHECK_EQ(lmp_pool_has_fn(p, 1), 0);
  CHECK_EQ(lmp_pool_has_fn(p, 10), 0);
  CHECK_EQ(lmp_pool_has_fn(p, 11), 1);
  CHECK_EQ(lmp_pool_has_fn(p, LMP_POOL_FN_KEEP + 10), 1);
  lmp_pool_free(p);
}

TEST(a_worker_is_told_to_forget_and_to_stop) {
  lmp_pool *p;
  lmp_pool_event ev[2];
  child c;
  uint32_t i;
  int st;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  for (i = 1; i <= LMP_POOL_FN_KEEP + 2; i++) {
    CHECK_EQ(lmp_pool_define(p, i, "f", 1), 0);
    submit(p, 1, i, i, "ok");
    CHECK_EQ(collect(p, ev, 1, 5), 1);
    lmp_pool_event_free(&ev[0]);
  }
  CHECK_EQ(lmp_pool_stop(p, 0), 0);
  CHECK_EQ(collect(p, ev, 1, 5), 1);
  CHECK_EQ(ev[0].kind, LMP_POOL_EV_EXIT);
  CHECK_EQ(waitpid(c.pid, &st, 0), c.pid);
  CHECK_EQ(WEXITSTATUS(st), 0);
  lmp_fd_close(c.pidfd);
  lmp_pool_free(p);
}

TEST(a_worker_with_quick_chunks_is_given_more_ahead) {
  lmp_pool *p;
  lmp_pool_event ev[200];
  child c;
  int i, n;
  size_t most = 0;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  CHECK_EQ(lmp_pool_define(p, 1, "f", 1), 0);
  for (i = 1; i <= 200; i++) submit(p, 1, (uint32_t)i, 1, "ok");
  CHECK_EQ(lmp_pool_inflight(p), LMP_POOL_AHEAD_MIN);   /* not timed yet */
  for (n = 0; n < 150; n++) {      /* the most it held, one result at a time */
    size_t f;
    if (collect(p, ev + n, 1, 5) != 1) break;
    f = lmp_pool_inflight(p);
    if (f > most) most = f;
  }
  CHECK(most > LMP_POOL_AHEAD_MIN);
  CHECK(most <= LMP_POOL_AHEAD_MAX);
  n += collect(p, ev + n, 200 - n, 5);
  CHECK_EQ(n, 200);
  for (i = 0; i < n; i++) {
    CHECK_EQ(ev[i].k, i + 1);                /* one worker: in order */
    lmp_pool_event_free(&ev[i]);
  }
  lmp_pool_free(p);
  reap(&c);
}

TEST(step_returns_by_its_deadline) {
  lmp_pool *p;
  child c;
  double t0;
  CHECK_EQ(lmp_pool_new(&p, 1, 0), 0);
  c = start_worker(p, 0, 0);
  t0 = lmp_clock_now();
  CHECK_EQ(lmp_pool_step(p, lmp_deadline(0.05)), 0);
  CHECK(lmp_clock_now() - t0 < 5.0);     /* the timeout was honoured */
  CHECK(lmp_clock_now() - t0 >= 0.04);
  lmp_pool_free(p);
  reap(&c);
}

int main(void) {
  RUN(results_come_back_with_their_chunk);
  RUN(a_busy_worker_killed_loses_its_chunk_and_requeues_the_rest);
  RUN(a_chunk_sent_to_a_worker_killed_while_idle_is_not_lost);
  RUN(maxtasks_retires_a_worker_after_its_chunks);
  RUN(drop_job_and_job_sent);
  RUN(unused_functions_are_forgotten_beyond_the_limit);
  RUN(a_worker_is_told_to_forget_and_to_stop);
  RUN(a_worker_with_quick_chunks_is_given_more_ahead);
  RUN(step_returns_by_its_deadline);
  RUN(enqueued_chunks_wait_for_dispatch_then_go_in_one_batch);
  return ctest_summary();
}
