/* proc.c -- child processes (see proc.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "hugepage.h"
#include "intr.h"
#include "proc.h"

static int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec */
  return fd < 0 ? -1 : fd;
#else
  (void)pid;
  return -1;
#endif
}

/* In a new child (every signal still blocked): default signal handlers,
 * nothing blocked, and death with the parent. */
static void child_setup(pid_t parent) {
  sigset_t none;
  int sig;
  for (sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
  lmp_intr_pending = 0;              /* the parent's pending Ctrl-C is not ours */
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);   /* the parent died before prctl */
}

/* Signals stay blocked across fork: a SIGTERM that reaches the child
 * before child_setup (a pool terminated as it starts) then waits for the
 * default handler and ends the child, instead of running the parent's
 * handler there and unwinding through the parent's code. */
pid_t lmp_proc_fork(int *pidfd) {
  pid_t parent = getpid(), pid;
  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  pid = fork();
  if (pid == 0) {
    child_setup(parent);
    return 0;
  }
  if (pid < 0) pid = -errno;
  sigprocmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) return pid;
  if (pidfd) *pidfd = open_pidfd(pid);
  return pid;
}

/* In a spawn child before exec: every fd from 3 up becomes close-on-exec
 * (also those the program opened without it, e.g. Lua's io.open), then
 * the kept ones are cleared so they are inherited. */
static void mark_cloexec_except(const int *keep, int n) {
  unsigned int lo = 3;
  int i, j;
  for (;;) {
    unsigned int next = ~0U;
    for (j = 0; j < n; j++)
      if (keep[j] >= (int)lo && (unsigned int)keep[j] < next)
        next = (unsigned int)keep[j];
    if (next > lo) {
      if (syscall(SYS_close_range, lo, next == ~0U ? ~0U : next - 1,
                  4 /* CLOSE_RANGE_CLOEXEC */) < 0) {
        unsigned int fd, top = next == ~0U ? 65536 : next;
        for (fd = lo; fd < top; fd++) fcntl((int)fd, F_SETFD, FD_CLOEXEC);
      }
    }
    if (next == ~0U) break;
    lo = next + 1;
  }
  for (i = 0; i < n; i++) lmp_fd_set_cloexec(keep[i], 0);
}

pid_t lmp_proc_spawn(char *const argv[], const int *keep, int n, int *pidfd) {
  int errpipe[2], child_errno = 0;
  pid_t parent = getpid(), pid;
  char **env = lmp_hugepage_environ();     /* built before fork: no malloc after */
  if (pipe2(errpipe, O_CLOEXEC) < 0) { free(env); return -errno; }
  pid = fork();
  if (pid < 0) {
    int e = -errno;
    free(env);
    lmp_fd_close(errpipe[0]);
    lmp_fd_close(errpipe[1]);
    return e;
  }
  if (pid == 0) {
    int e;
    child_setup(parent);
    mark_cloexec_except(keep, n);
    execve(argv[0], argv, env ? env : environ);
    e = errno;
    if (write(errpipe[1], &e, sizeof e) < 0) { /* nothing more to do */ }
    _exit(127);
  }
  free(env);
  lmp_fd_close(errpipe[1]);
  if (lmp_fd_read_full(errpipe[0], &child_errno, sizeof child_errno,
                       -1.0) == 0) {         /* exec failed */
    int status;
    lmp_fd_close(errpipe[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
      ;
    return -child_errno;
  }
  lmp_fd_close(errpipe[0]);
  if (pidfd) *pidfd = open_pidfd(pid);
  return pid;
}

int lmp_proc_poll(pid_t pid, int *status) {
  pid_t r;
  do r = waitpid(pid, status, WNOHANG); while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  return r == pid ? 1 : 0;
}

int lmp_proc_exitcode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 0;
}

int lmp_proc_cpu_count(void) {
  cpu_set_t set;
  long n;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0) return c;
  }
  n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

int lmp_proc_send_fds(int sock, const void *data, size_t n, const int *fds,
                      int nfds, double deadline) {
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * LMP_PROC_MAXFDS)]; } u;
  struct iovec iov;
  struct msghdr msg;
  ssize_t r;
  if (n == 0 || nfds < 0 || nfds > LMP_PROC_MAXFDS) return -EINVAL;
  memset(&msg, 0, sizeof msg);
  iov.iov_base = (void *)data;
  iov.iov_len = n;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    msg.msg_control = u.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    u.h.cmsg_level = SOL_SOCKET;
    u.h.cmsg_type = SCM_RIGHTS;
    u.h.cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(&u.h), fds, sizeof(int) * (size_t)nfds);
  }
  for (;;) {
    r = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) return (size_t)r == n ? 0 : -EMSGSIZE;
    if (errno == EPIPE || errno == ECONNRESET) return -EPIPE;
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    if (errno != EINTR) {
      int w = lmp_fd_wait(sock, POLLOUT, deadline);
      if (w < 0) return w;
      if (w == 0) return -ETIMEDOUT;
    }
  }
}

ssize_t lmp_proc_recv_fds(int sock, void *data, size_t n, int *fds, int *nfds,
                          double deadline) {
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int) * LMP_PROC_MAXFDS)]; } u;
  struct iovec iov;
  struct msghdr msg;
  struct cmsghdr *c;
  ssize_t r;
  *nfds = 0;
  for (;;) {
    memset(&msg, 0, sizeof msg);
    iov.iov_base = data;
    iov.iov_len = n;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r >= 0) break;
    if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    if (errno != EINTR) {
      int w = lmp_fd_wait(sock, POLLIN, deadline);
      if (w < 0) return w;
      if (w == 0) return -ETIMEDOUT;
    }
  }
  for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int)), i;
      int *got = (int *)(void *)CMSG_DATA(c);
      for (i = 0; i < k; i++) {
        if (*nfds < LMP_PROC_MAXFDS) fds[(*nfds)++] = got[i];
        else lmp_fd_close(got[i]);
      }
    }
  }
  return r;
}

int lmp_proc_move_fd(int fd, int min) {
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, min);
  if (nfd < 0) return -errno;
  lmp_fd_close(fd);
  return nfd;
}
