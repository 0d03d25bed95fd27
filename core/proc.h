/* proc.h -- child processes: fork and spawn with lmp's hygiene, pidfds,
 * and reaping of lmp's own children only (never waitpid(-1): in an
 * embedded host that would steal the host's children).
 *
 * Every child gets PR_SET_PDEATHSIG(SIGKILL) and re-checks getppid()
 * right after, so a parent that dies (even by SIGKILL) leaves no orphan
 * worker. Functions return 0/pid or -errno. */
#ifndef LMP_PROC_H
#define LMP_PROC_H

#include <sys/types.h>

/* Forks. In the parent returns the child's pid (> 0) and, if pidfd is not
 * NULL, a close-on-exec pidfd that becomes readable when the child exits
 * (-1 if the kernel has none). In the child returns 0 with signal
 * dispositions reset to default and the signal mask cleared. */
pid_t lmp_proc_fork(int *pidfd);

/* Forks and execs argv[0] with argv. fds listed in keep (n of them) are
 * inherited at the same numbers; every other lmp fd is close-on-exec.
 * A failed exec is reported as -errno through a close-on-exec pipe. */
pid_t lmp_proc_spawn(char *const argv[], const int *keep, int n, int *pidfd);

/* Waits for pid (one of ours) without blocking: 1 and *status (as
 * waitpid gives it) if it ended, 0 if still running, -ECHILD if unknown. */
int lmp_proc_poll(pid_t pid, int *status);

/* Exit code in Python's convention: code, or -N when killed by signal N. */
int lmp_proc_exitcode(int status);

/* Sends n bytes of data (n >= 1) and nfds fds (at most LMP_PROC_MAXFDS)
 * over the Unix stream socket sock in one sendmsg (SCM_RIGHTS), waiting
 * for room until deadline: 0, -ETIMEDOUT, -EPIPE, -EMSGSIZE (a short
 * write: the message must fit in one send) or -errno. The fds stay ours. */
#define LMP_PROC_MAXFDS 64
int lmp_proc_send_fds(int sock, const void *data, size_t n, const int *fds,
                      int nfds, double deadline);

/* Receives up to n bytes and up to LMP_PROC_MAXFDS fds (close-on-exec,
 * the caller owns them) from sock, waiting until deadline: the byte count
 * (0 at EOF) with *nfds set, -ETIMEDOUT or -errno. */
ssize_t lmp_proc_recv_fds(int sock, void *data, size_t n, int *fds, int *nfds,
                          double deadline);

/* Moves fd to the lowest free number >= min, close-on-exec, and closes the
 * old one: the new fd or -errno. */
int lmp_proc_move_fd(int fd, int min);

/* CPUs this process may run on (the affinity mask), at least 1. */
int lmp_proc_cpu_count(void);

#endif
