/* lsys.c -- "lmp.c.sys": the few system calls that lmp.log and
 * lmp.prefork need and the other bindings do not give:
 *
 *   write(fd, s)          one write(2) of a whole record (log lines)
 *   open_append(path)     an O_APPEND | O_CLOEXEC fd for a log file
 *   wait_any(pids, t)     waits for one of *these* children (never -1)
 *   kill, getpid, isatty, realtime, intr_pending, cloexec, close
 *
 * Functions raise error objects for operational failures, except write
 * and kill which return false and a message (a logger must not raise). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/intr.h"
#include "lmp_aux.h"

#define WAIT_MAX 4096

static int check_fd(lua_State *L, int idx) {
  lua_Integer fd = luaL_checkinteger(L, idx);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, idx, "fd must be >= 0");
  return (int)fd;
}

/* write(fd, s) -> true | false, message. One write(2) for s (atomic
 * against other writers for O_APPEND files and for pipes up to PIPE_BUF
 * bytes); only a short write, which those cases never give, loops. */
static int l_write(lua_State *L) {
  int fd = check_fd(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  while (len > 0) {
    ssize_t r = lmp_fd_write_some(fd, p, len);
    if (r == -EAGAIN) {                 /* a non-blocking stderr */
      if (lmp_fd_wait(fd, POLLOUT, lmp_deadline(5)) > 0) continue;
      r = -ETIMEDOUT;
    }
    if (r < 0) {
      lua_pushboolean(L, 0);
      lua_pushstring(L, strerror((int)-r));
      return 2;
    }
    p += r;
    len -= (size_t)r;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* open_append(path [, mode]) -> fd (write-only, append, close-on-exec) */
static int l_open_append(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0644);
  int fd;
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode must be 0 to 07777");
  do fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, (mode_t)mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    lua_pushfstring(L, "open %s", path);
    return lmp_error_raise_errno(L, -e, lua_tostring(L, -1));
  }
  lua_pushinteger(L, fd);
  return 1;
}

static int l_close(lua_State *L) {
  lmp_fd_close(check_fd(L, 1));
  return 0;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty(check_fd(L, 1)));
  return 1;
}

/* cloexec(fd) -> true if fd is close-on-exec. */
static int l_cloexec(lua_State *L) {
  int flags = fcntl(check_fd(L, 1), F_GETFD);
  if (flags < 0) return lmp_error_raise_errno(L, -errno, "fcntl");
  lua_pushboolean(L, (flags & FD_CLOEXEC) != 0);
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

/* realtime() -> wall-clock seconds since the epoch, as a float. */
static int l_realtime(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

/* kill(pid, sig) -> true | false, message */
static int l_kill(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lua_Integer sig = luaL_checkinteger(L, 2);
  luaL_argcheck(L, pid > 0, 1, "pid must be positive");
  luaL_argcheck(L, sig >= 0 && sig < 65, 2, "not a signal number");
  if (kill((pid_t)pid, (int)sig) < 0) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* intr_pending() -> the signal the runtime caught and nobody has raised
 * as an "interrupted" error yet, or 0. Does not clear it. */
static int l_intr_pending(lua_State *L) {
  lua_pushinteger(L, lmp_intr_pending);
  return 1;
}

/* Exit code in Python's convention: code, or -N for signal N. */
static int exitcode(int status) {
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return WEXITSTATUS(status);
}

/* Reaps the first of pids that ended: 1 (with *which, *code), 0, -errno. */
static int reap_one(const pid_t *pids, int n, pid_t *which, int *code) {
  int i, status;
  for (i = 0; i < n; i++) {
    pid_t r;
    do r = waitpid(pids[i], &status, WNOHANG); while (r < 0 && errno == EINTR);
    if (r < 0) { *which = pids[i]; return -errno; }
    if (r == pids[i]) { *which = r; *code = exitcode(status); return 1; }
  }
  return 0;
}

/* Sleeps until one of pids may have ended or deadline: polls pidfds when
 * the kernel has them (5.3+), else naps 10 ms. 0, or -EINTR when an
 * interruption is pending. */
static int wait_change(const pid_t *pids, int n, struct pollfd *pf,
                       double deadline) {
  int i, r, all = 1;
  for (i = 0; i < n; i++) {
#ifdef SYS_pidfd_open
    pf[i].fd = (int)syscall(SYS_pidfd_open, pids[i], 0);
#else
    pf[i].fd = -1;
#endif
    pf[i].events = POLLIN;
    pf[i].revents = 0;
    if (pf[i].fd < 0) all = 0;
  }
  if (all) {
    r = poll(pf, (nfds_t)n, lmp_deadline_ms(deadline));
    if (r < 0) r = -errno;
  } else {
    double left = deadline < 0 ? 0.01 : deadline - lmp_clock_now();
    r = lmp_clock_sleep(left < 0.01 ? left : 0.01);
  }
  for (i = 0; i < n; i++) lmp_fd_close(pf[i].fd);
  return (r == -EINTR && lmp_intr_pending) ? -EINTR : 0;
}

/* wait_any({pid, ...} [, timeout]) -> pid, exitcode of the first of these
 * children that ended (exitcode -N: killed by signal N); nil after the
 * timeout. Only the listed pids are waited for (never waitpid(-1), which
 * would steal an embedding host's children). */
static int l_wait_any(lua_State *L) {
  double deadline = lmp_check_deadline(L, 2);
  pid_t *pids, which = 0;
  struct pollfd *pf;
  int i, n, code = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n >= 1 && n <= WAIT_MAX, 1, "1 to 4096 pids expected");
  pids = lua_newuserdatauv_compat(L, n * (sizeof *pids + sizeof *pf));
  pf = (struct pollfd *)(pids + n);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    pids[i] = (pid_t)luaL_checkinteger(L, -1);
    luaL_argcheck(L, pids[i] > 0, 1, "pids must be positive");
    lua_pop(L, 1);
  }
  for (;;) {
    int r = reap_one(pids, n, &which, &code);
    if (r > 0) break;
    if (r < 0) {
      lua_pushfstring(L, "waitpid %d", (int)which);
      return lmp_error_raise_errno(L, r, lua_tostring(L, -1));
    }
    if (lmp_deadline_passed(deadline)) { lua_pushnil(L); return 1; }
    if (wait_change(pids, n, pf, deadline) == -EINTR)
      return lmp_error_raise_interrupt(L);
  }
  lua_pushinteger(L, which);
  lua_pushinteger(L, code);
  return 2;
}

int luaopen_lmp_c_sys(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"cloexec", l_cloexec},
    {"close", l_close},
    {"getpid", l_getpid},
    {"intr_pending", l_intr_pending},
    {"isatty", l_isatty},
    {"kill", l_kill},
    {"open_append", l_open_append},
    {"realtime", l_realtime},
    {"wait_any", l_wait_any},
    {"write", l_write},
    {NULL, NULL}
  };
  static const struct { const char *name; int sig; } sigs[] = {
    {"SIGHUP", SIGHUP}, {"SIGINT", SIGINT}, {"SIGKILL", SIGKILL},
    {"SIGQUIT", SIGQUIT}, {"SIGTERM", SIGTERM}, {"SIGUSR1", SIGUSR1},
    {"SIGUSR2", SIGUSR2},
  };
  size_t i;
  lmp_error_init(L);
  luaL_newlib(L, funcs);
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
    lua_pushinteger(L, sigs[i].sig);
    lua_setfield(L, -2, sigs[i].name);
  }
  return 1;
}
