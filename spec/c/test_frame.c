/* C tests of core/frame.c and core/fd.c: framing, short reads and writes,
 * EINTR, timeouts, end of file, refused headers. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "ctest.h"
#include "fd.h"
#include "frame.h"

static void pair(int sv[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
    abort();
}

TEST(header_round_trip_and_refusals) {
  unsigned char h[LMP_FRAME_HDR_SIZE];
  lmp_frame_hdr d;
  lmp_frame_hdr_encode(h, 123456, 7, 3);
  CHECK_EQ(lmp_frame_hdr_decode(h, &d, 1 << 20), 0);
  CHECK_EQ(d.len, 123456);
  CHECK_EQ(d.type, 7);
  CHECK_EQ(d.flags, 3);
  CHECK_EQ(lmp_frame_hdr_decode(h, &d, 1000), -EMSGSIZE);
  h[6] = 'X';
  CHECK_EQ(lmp_frame_hdr_decode(h, &d, 1 << 20), -EPROTO);
}

TEST(send_recv_small_and_empty) {
  int sv[2], partial;
  lmp_frame_hdr h;
  char *p;
  pair(sv);
  CHECK_EQ(lmp_frame_send(sv[0], 1, 0, "hello", 5, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_frame_send(sv[0], 2, 0, "", 0, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(1), &partial), 0);
  CHECK_EQ(h.len, 5);
  CHECK(p && memcmp(p, "hello", 5) == 0);
  free(p);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(1), &partial), 0);
  CHECK_EQ(h.len, 0);
  CHECK_EQ(h.type, 2);
  CHECK(p == NULL);
  close(sv[0]); close(sv[1]);
}

/* A 4 MiB frame through a socket buffer far smaller: many short writes
 * and reads on both sides. */
TEST(large_frame_with_short_writes) {
  int sv[2], partial, status;
  size_t n = 4u << 20, i;
  lmp_frame_hdr h;
  char *p, *big = malloc(n);
  pid_t pid;
  for (i = 0; i < n; i++) big[i] = (char)(i * 7);
  pair(sv);
  pid = fork();
  if (pid == 0) {
    int rc = lmp_frame_send(sv[0], 1, 0, big, n, lmp_deadline(20)) ? 1 : 0;
    free(big);                       /* valgrind checks the child too */
    _exit(rc);
  }
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, n, lmp_deadline(20), &partial), 0);
  CHECK_EQ(h.len, n);
  CHECK(p && memcmp(p, big, n) == 0);
  waitpid(pid, &status, 0);
  CHECK_EQ(WEXITSTATUS(status), 0);
  free(p); free(big);
  close(sv[0]); close(sv[1]);
}

TEST(timeout_before_first_byte_keeps_channel) {
  int sv[2], partial = 1;
  lmp_frame_hdr h;
  char *p;
  double t0 = lmp_clock_now();
  pair(sv);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(0.05), &partial), -ETIMEDOUT);
  CHECK_EQ(partial, 0);
  CHECK(lmp_clock_now() - t0 >= 0.04);
  CHECK_EQ(lmp_frame_send(sv[0], 1, 0, "x", 1, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(1), &partial), 0);
  free(p);
  close(sv[0]); close(sv[1]);
}

TEST(half_a_frame_then_eof_is_broken) {
  int sv[2], partial;
  unsigned char hdr[LMP_FRAME_HDR_SIZE];
  lmp_frame_hdr h;
  char *p;
  pair(sv);
  lmp_frame_hdr_encode(hdr, 10, 1, 0);
  CHECK_EQ(lmp_fd_write_full(sv[0], hdr, sizeof hdr, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_fd_write_full(sv[0], "abc", 3, lmp_deadline(1)), 0);
  close(sv[0]);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(1), &partial), -EPIPE);
  CHECK_EQ(partial, 1);
  close(sv[1]);
}

TEST(oversized_header_refused_without_allocation) {
  int sv[2], partial;
  unsigned char hdr[LMP_FRAME_HDR_SIZE];
  lmp_frame_hdr h;
  char *p = (char *)1;
  pair(sv);
  lmp_frame_hdr_encode(hdr, 0xfffffff0u, 1, 0);
  CHECK_EQ(lmp_fd_write_full(sv[0], hdr, sizeof hdr, lmp_deadline(1)), 0);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 1 << 20, lmp_deadline(1), &partial), -EMSGSIZE);
  CHECK(p == NULL);
  close(sv[0]); close(sv[1]);
}

static void on_alarm(int sig) { (void)sig; }

/* Signals without SA_RESTART interrupt poll and read every millisecond
 * while the writer waits 100 ms: the receive still completes. */
TEST(eintr_is_retried) {
  int sv[2], partial, status;
  struct sigaction sa;
  struct itimerval it = {{0, 1000}, {0, 1000}}, off = {{0, 0}, {0, 0}};
  lmp_frame_hdr h;
  char *p;
  pid_t pid;
  pair(sv);
  pid = fork();
  if (pid == 0) {
    lmp_clock_sleep(0.1);
    _exit(lmp_frame_send(sv[0], 1, 0, "late", 4, lmp_deadline(5)) ? 1 : 0);
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigaction(SIGALRM, &sa, NULL);
  setitimer(ITIMER_REAL, &it, NULL);
  CHECK_EQ(lmp_frame_recv(sv[1], &h, &p, 100, lmp_deadline(5), &partial), 0);
  setitimer(ITIMER_REAL, &off, NULL);
  CHECK_EQ(h.len, 4);
  free(p);
  waitpid(pid, &status, 0);
  close(sv[0]); close(sv[1]);
}

TEST(incremental_reader_byte_by_byte) {
  int sv[2], i, got = 0;
  lmp_frame_writer w;
  lmp_frame_reader r;
  lmp_frame_hdr h;
  const char *p;
  pair(sv);
  lmp_frame_writer_init(&w);
  lmp_frame_reader_init(&r, 100);
  CHECK_EQ(lmp_frame_writer_push(&w, 5, 0, "abc", 3), 0);
  CHECK_EQ(lmp_frame_writer_push(&w, 6, 0, "defgh", 5), 0);
  for (i = 0; i < (int)w.end; i++) {      /* one byte at a time */
    CHECK_EQ(write(sv[0], w.buf + i, 1), 1);
    CHECK(lmp_frame_reader_fill(&r, sv[1]) > 0);
    while (lmp_frame_reader_next(&r, &h, &p) == 1) {
      got++;
      if (got == 1) CHECK(h.type == 5 && h.len == 3 && memcmp(p, "abc", 3) == 0);
      if (got == 2) CHECK(h.type == 6 && h.len == 5 && memcmp(p, "defgh", 5) == 0);
    }
  }
  CHECK_EQ(got, 2);
  lmp_frame_writer_free(&w);
  lmp_frame_reader_free(&r);
  close(sv[0]); close(sv[1]);
}

/* The writer queue keeps what a full socket does not take. */
TEST(writer_queue_flushes_later) {
  int sv[2], frames = 0;
  size_t n = 1 << 20;
  char *big = calloc(1, n);
  lmp_frame_writer w;
  lmp_frame_reader r;
  lmp_frame_hdr h;
  const char *p;
  long left;
  pair(sv);
  lmp_frame_writer_init(&w);
  lmp_frame_reader_init(&r, n);
  CHECK_EQ(lmp_frame_writer_push(&w, 1, 0, big, n), 0);
  left = lmp_frame_writer_flush(&w, sv[0]);
  CHECK(left > 0);                        /* the socket buffer is smaller */
  while (frames == 0) {
    long f = lmp_frame_reader_fill(&r, sv[1]);
    CHECK(f > 0 || f == -EAGAIN);
    if (lmp_frame_reader_next(&r, &h, &p) == 1) frames++;
    if (lmp_frame_writer_pending(&w)) lmp_frame_writer_flush(&w, sv[0]);
  }
  CHECK_EQ(h.len, n);
  CHECK_EQ(lmp_frame_writer_pending(&w), 0);
  free(big);
  lmp_frame_writer_free(&w);
  lmp_frame_reader_free(&r);
  close(sv[0]); close(sv[1]);
}

TEST(write_to_closed_pipe_is_epipe_not_sigpipe) {
  int p[2];
  if (pipe(p) < 0) abort();
  close(p[0]);
  CHECK_EQ(lmp_fd_write_full(p[1], "x", 1, lmp_deadline(1)), -EPIPE);
  close(p[1]);
}

int main(void) {
  RUN(header_round_trip_and_refusals);
  RUN(send_recv_small_and_empty);
  RUN(large_frame_with_short_writes);
  RUN(timeout_before_first_byte_keeps_channel);
  RUN(half_a_frame_then_eof_is_broken);
  RUN(oversized_header_refused_without_allocation);
  RUN(eintr_is_retried);
  RUN(incremental_reader_byte_by_byte);
  RUN(writer_queue_flushes_later);
  RUN(write_to_closed_pipe_is_epipe_not_sigpipe);
  return ctest_summary();
}
