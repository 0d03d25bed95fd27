/* C tests of core/thread.c: sentinels, joins with deadlines, exit
 * status, the live count, and letting go of a running thread. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "ctest.h"
#include "fd.h"
#include "thread.h"

static int quick(void *arg) { return *(int *)arg; }

static volatile int gate;
static int gated(void *arg) {
  (void)arg;
  while (!gate) lmp_clock_sleep(0.001);
  return 7;
}

TEST(sentinel_fires_and_status_is_kept) {
  lmp_thread *t;
  int v = 5, status = -1;
  CHECK_EQ(lmp_thread_start(&t, quick, &v), 0);
  CHECK_EQ(lmp_fd_wait(lmp_thread_sentinel(t), POLLIN, lmp_deadline(5)), 1);
  CHECK_EQ(lmp_thread_join(t, lmp_deadline(5)), 0);
  CHECK_EQ(lmp_thread_done(t, &status), 1);
  CHECK_EQ(status, 5);
  lmp_thread_release(t);
}

TEST(join_times_out_and_live_counts) {
  lmp_thread *t;
  int status;
  gate = 0;
  CHECK_EQ(lmp_thread_start(&t, gated, NULL), 0);
  CHECK_EQ(lmp_thread_live(), 1);
  CHECK_EQ(lmp_thread_join(t, lmp_deadline(0.05)), -ETIMEDOUT);
  CHECK_EQ(lmp_thread_done(t, &status), 0);
  gate = 1;
  CHECK_EQ(lmp_thread_join(t, lmp_deadline(5)), 0);
  CHECK_EQ(lmp_thread_done(t, &status), 1);
  CHECK_EQ(status, 7);
  lmp_thread_release(t);
  CHECK_EQ(lmp_thread_live(), 0);
}

TEST(release_while_running_then_it_ends) {
  lmp_thread *t;
  double d = lmp_deadline(5);
  gate = 0;
  CHECK_EQ(lmp_thread_start(&t, gated, NULL), 0);
  lmp_thread_release(t);                 /* detached: frees itself later */
  gate = 1;
  while (lmp_thread_live() && !lmp_deadline_passed(d)) lmp_clock_sleep(0.001);
  CHECK_EQ(lmp_thread_live(), 0);
}

TEST(a_fork_child_counts_no_threads) {
  lmp_thread *t;
  pid_t pid;
  int st;
  gate = 0;
  CHECK_EQ(lmp_thread_start(&t, gated, NULL), 0);
  pid = fork();
  if (pid == 0) _exit(lmp_thread_live() == 0 ? 0 : 1);
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  gate = 1;
  CHECK_EQ(lmp_thread_join(t, lmp_deadline(5)), 0);
  lmp_thread_release(t);
}

int main(void) {
  RUN(sentinel_fires_and_status_is_kept);
  RUN(join_times_out_and_live_counts);
  RUN(release_while_running_then_it_ends);
  RUN(a_fork_child_counts_no_threads);
  return ctest_summary();
}
