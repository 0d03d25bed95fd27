/* fd.h -- file descriptor helpers shared by every channel in core/.
 *
 * All functions return 0 (or a byte count) on success and -errno on
 * failure; they never print or abort. Blocking helpers take an absolute
 * deadline (clock.h) and work on blocking and non-blocking fds alike:
 * they poll(2) before each read/write and retry after EINTR and EAGAIN,
 * so a non-blocking fd is the recommended default (a blocking fd may
 * overrun the deadline on a large write).
 *
 * Peer closed: reads return -EPIPE at end of file before n bytes,
 * writes return -EPIPE. SIGPIPE is never raised by these helpers. */
#ifndef LMP_FD_H
#define LMP_FD_H

#include <stddef.h>
#include <sys/types.h>

int lmp_fd_set_cloexec(int fd, int on);
int lmp_fd_set_nonblock(int fd, int on);

/* Waits until fd is ready for events (POLLIN/POLLOUT) or deadline:
 * 1 ready (including hang-up and error conditions), 0 timed out, -errno. */
int lmp_fd_wait(int fd, short events, double deadline);

/* Reads exactly n bytes: 0, -ETIMEDOUT, -EPIPE (EOF), or -errno. */
int lmp_fd_read_full(int fd, void *buf, size_t n, double deadline);

/* Writes exactly n bytes: 0, -ETIMEDOUT, -EPIPE, or -errno. */
int lmp_fd_write_full(int fd, const void *buf, size_t n, double deadline);

/* One write of as much as the fd takes now, without SIGPIPE:
 * bytes written, -EAGAIN, -EPIPE, or -errno. */
ssize_t lmp_fd_write_some(int fd, const void *buf, size_t n);

/* One read of what is there now: bytes read, 0 at EOF, -EAGAIN, -errno. */
ssize_t lmp_fd_read_some(int fd, void *buf, size_t n);

/* Closes fd unless negative; keeps errno. Never retried on EINTR. */
void lmp_fd_close(int fd);

#endif
