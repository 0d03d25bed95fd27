/* fd.c -- file descriptor helpers (see fd.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "intr.h"

static int set_flag(int fd, int get, int set, int flag, int on) {
  int flags = fcntl(fd, get);
  if (flags < 0) return -errno;
  flags = on ? (flags | flag) : (flags & ~flag);
  if (fcntl(fd, set, flags) < 0) return -errno;
  return 0;
}

int lmp_fd_set_cloexec(int fd, int on) {
  return set_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on);
}

int lmp_fd_set_nonblock(int fd, int on) {
  return set_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, on);
}

int lmp_fd_wait(int fd, short events, double deadline) {
  struct pollfd p;
  int r;
  p.fd = fd;
  p.events = events;
  for (;;) {
    p.revents = 0;
    r = poll(&p, 1, lmp_deadline_ms(deadline));
    if (r > 0) return (p.revents & POLLNVAL) ? -EBADF : 1;
    if (r == 0) return 0;
    if (errno != EINTR) return -errno;
    if (lmp_intr_pending) return -EINTR;
  }
}

ssize_t lmp_fd_read_some(int fd, void *buf, size_t n) {
  ssize_t r;
  do r = read(fd, buf, n); while (r < 0 && errno == EINTR);
  if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return r;
}

/* A write to a pipe whose reader has gone raises SIGPIPE, and an embedded
 * host may not ignore it. Block it in this thread for the write and
 * consume the one we caused, so no handler or disposition changes. */
static ssize_t write_pipe_nosigpipe(int fd, const void *buf, size_t n) {
  sigset_t pipe_set, old_set, pending;
  ssize_t r;
  int saved;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  do r = write(fd, buf, n); while (r < 0 && errno == EINTR);
  saved = errno;
  if (r < 0 && saved == EPIPE) {
    struct timespec zero = {0, 0};
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE) && !sigismember(&old_set, SIGPIPE))
      while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
        ;
  }
  pthread_sigmask(SIG_SETMASK, &old_set, NULL);
  errno = saved;
  return r;
}

ssize_t lmp_fd_write_some(int fd, const void *buf, size_t n) {
  ssize_t r;
  do r = send(fd, buf, n, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  if (r < 0 && errno == ENOTSOCK) r = write_pipe_nosigpipe(fd, buf, n);
  if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  return r;
}

int lmp_fd_read_full(int fd, void *buf, size_t n, double deadline) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = lmp_fd_read_some(fd, p, n);
    if (r == 0) return -EPIPE;
    if (r == -EAGAIN) {
      int w = lmp_fd_wait(fd, POLLIN, deadline);
      if (w == 0) return -ETIMEDOUT;
      if (w < 0) return w;
      continue;
    }
    if (r < 0) return r == -ECONNRESET ? -EPIPE : (int)r;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

int lmp_fd_write_full(int fd, const void *buf, size_t n, double deadline) {
  const char *p = buf;
  while (n > 0) {
    ssize_t r = lmp_fd_write_some(fd, p, n);
    if (r == -EAGAIN) {
      int w = lmp_fd_wait(fd, POLLOUT, deadline);
      if (w == 0) return -ETIMEDOUT;
      if (w < 0) return w;
      continue;
    }
    if (r < 0) return r == -ECONNRESET ? -EPIPE : (int)r;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

void lmp_fd_close(int fd) {
  int saved = errno;
  if (fd >= 0) close(fd);
  errno = saved;
}
