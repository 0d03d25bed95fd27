/* lproc.c -- "lmp.c.proc": thin bindings of core/proc.c and a few
 * process syscalls. The Process class and fork hygiene that runs Lua code
 * (atfork handlers, reseeding, identity) live in lua/lmp/process.lua. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sodium.h>

#include "../core/fd.h"
#include "../core/proc.h"
#include "lmp_aux.h"

static int push_pid_result(lua_State *L, pid_t pid, int pidfd,
                           const char *what) {
  if (pid < 0) return lmp_error_raise_errno(L, (int)pid, what);
  lua_pushinteger(L, pid);
  if (pid > 0 && pidfd >= 0) lua_pushinteger(L, pidfd);
  else lua_pushnil(L);
  return 2;
}

/* fork([want_pidfd]) -> pid (0 in the child), and in the parent a pidfd
 * (the caller owns it) when asked for and the kernel has them, else nil. */
static int l_fork(lua_State *L) {
  int pidfd = -1;
  pid_t pid;
  fflush(NULL);                      /* no line printed twice */
  pid = lmp_proc_fork(lua_toboolean(L, 1) ? &pidfd : NULL);
  return push_pid_result(L, pid, pidfd, "fork");
}

/* Copies a Lua list of strings into a NULL-terminated argv kept alive
 * by a userdata buffer (freed by Lua if anything raises). */
static char **check_argv(lua_State *L, int idx) {
  int i, n;
  char **argv;
  luaL_checktype(L, idx, LUA_TTABLE);
  n = (int)lua_rawlen(L, idx);
  luaL_argcheck(L, n >= 1, idx, "argv must list at least the program");
  argv = lua_newuserdatauv_compat(L, sizeof(char *) * (size_t)(n + 1));
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    argv[i - 1] = (char *)luaL_checkstring(L, -1);
    lua_pop(L, 1);                   /* the table keeps the string alive */
  }
  argv[n] = NULL;
  return argv;
}

/* spawn(argv, keep_fds) -> pid, pidfd or nil */
static int l_spawn(lua_State *L) {
  char **argv = check_argv(L, 1);
  int keep[64], n = 0, pidfd = -1;
  pid_t pid;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    n = (int)lua_rawlen(L, 2);
    luaL_argcheck(L, n <= 64, 2, "at most 64 fds can be passed");
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 2, i);
      keep[i - 1] = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    }
  }
  fflush(NULL);
  pid = lmp_proc_spawn(argv, keep, n, &pidfd);
  return push_pid_result(L, pid, pidfd, argv[0]);
}

/* poll(pid) -> true, exitcode if it ended; false while running;
 * nil if it is not our child (already reaped). */
static int l_poll(lua_State *L) {
  int status = 0;
  int r = lmp_proc_poll((pid_t)luaL_checkinteger(L, 1), &status);
  if (r < 0) { lua_pushnil(L); return 1; }
  lua_pushboolean(L, r);
  if (!r) return 1;
  lua_pushinteger(L, lmp_proc_exitcode(status));
  return 2;
}

/* kill(pid, signal) -> true, or false and an error message */
static int l_kill(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  luaL_argcheck(L, pid > 0, 1, "pid must be positive");
  if (kill(pid, sig) < 0) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* exit(code): flushes C stdio and _exits (no atexit, no lua_close). */
static int l_exit(lua_State *L) {
  int code = (int)luaL_optinteger(L, 1, 0);
  fflush(NULL);
  _exit(code & 0xff);
  return 0;
}

/* trim() gives the C heap's free memory back to the system (glibc's
 * malloc_trim): before a fork, so that the child shares (and the kernel
 * copies the page tables of) only memory in use; in an idle pool worker,
 * so that it does not keep its last job's peak. Costs microseconds when
 * there is nothing to give back. */
#ifdef LMP_SANITIZE
/* make SANITIZE=1: ASan's allocator replaces glibc's (malloc_trim has
 * nothing to trim) and keeps freed memory in quarantine; this empties the
 * quarantine and gives free pages back (libasan, <sanitizer/
 * allocator_interface.h>, which GCC does not install). */
void __sanitizer_purge_allocator(void);
#endif

static int l_trim(lua_State *L) {
#ifdef LMP_SANITIZE
  __sanitizer_purge_allocator();
#endif
#if defined(__GLIBC__)
  lua_pushboolean(L, malloc_trim(0));
#else
  lua_pushboolean(L, 0);
#endif
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

static int l_cpu_count(lua_State *L) {
  lua_pushinteger(L, lmp_proc_cpu_count());
  return 1;
}

static int l_close(lua_State *L) {
  lmp_fd_close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* ---- fd passing, for the forkserver (lua/lmp/forkserver.lua) ---------- */

/* send_fds(sock, data, {fd, ...} [, timeout]) -> true: one sendmsg with
 * the fds as SCM_RIGHTS (they stay ours). Raises an lmp error. */
static int l_send_fds(lua_State *L) {
  int sock = (int)luaL_checkinteger(L, 1), fds[LMP_PROC_MAXFDS], n = 0, r;
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  double deadline = lmp_check_deadline(L, 4);
  luaL_argcheck(L, len > 0, 2, "data must not be empty");
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    n = (int)lua_rawlen(L, 3);
    luaL_argcheck(L, n <= LMP_PROC_MAXFDS, 3, "at most 64 fds can be passed");
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, 3, i);
      fds[i - 1] = (int)luaL_checkinteger(L, -1);
      lua_pop(L, 1);
    }
  }
  r = lmp_proc_send_fds(sock, data, len, fds, n, deadline);
  if (r < 0) return lmp_error_raise_errno(L, r, "send_fds");
  lua_pushboolean(L, 1);
  return 1;
}

/* recv_fds(sock [, timeout]) -> data ("" at EOF), {fd, ...} (ours now).
 * Raises an lmp error (timeout, os). */
static int l_recv_fds(lua_State *L) {
  int sock = (int)luaL_checkinteger(L, 1), fds[LMP_PROC_MAXFDS], n = 0, i;
  char buf[4096];
  double deadline = lmp_check_deadline(L, 2);
  ssize_t r = lmp_proc_recv_fds(sock, buf, sizeof buf, fds, &n, deadline);
  if (r < 0) return lmp_error_raise_errno(L, (int)r, "recv_fds");
  lua_pushlstring(L, buf, (size_t)r);  /* only a memory error could leak fds */
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, fds[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

/* move_fd(fd, min) -> the fd moved to the lowest free number >= min
 * (close-on-exec; the old number is closed). */
static int l_move_fd(lua_State *L) {
  int r = lmp_proc_move_fd((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2));
  if (r < 0) return lmp_error_raise_errno(L, r, "move_fd");
  lua_pushinteger(L, r);
  return 1;
}

/* dup2(fd, to): fd also at number to (inherited: not close-on-exec). */
static int l_dup2(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), to = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, to >= 0, 2, "fd must be >= 0");
  while (dup2(fd, to) < 0) {
    if (errno != EINTR) return lmp_error_raise_errno(L, -errno, "dup2");
  }
  return 0;
}

/* ---- fd guards: an fd closed when its guard is collected ---------------
 * Process keeps its sentinel (a plain fd number, for poll loops) in a
 * guard so that a Process dropped without close() leaks no pidfd, in Lua
 * 5.1 and LuaJIT too (no __gc on tables there). */
#define GUARD_MT "lmp.FdGuard"

/* guard(fd) -> guard owning fd */
static int l_guard(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  int *g = lua_newuserdatauv_compat(L, sizeof *g);
  *g = -1;                           /* closed until set up (liolib) */
  luaL_setmetatable(L, GUARD_MT);
  *g = fd;
  return 1;
}

/* guard:close(): closes the fd (once); __gc and __close share it. */
static int guard_close(lua_State *L) {
  int *g = luaL_checkudata(L, 1, GUARD_MT);
  lmp_fd_close(*g);
  *g = -1;
  return 0;
}

static int guard_tostring(lua_State *L) {
  int *g = luaL_checkudata(L, 1, GUARD_MT);
  if (*g < 0) lua_pushliteral(L, "lmp.FdGuard (closed)");
  else lua_pushfstring(L, "lmp.FdGuard (fd %d)", *g);
  return 1;
}

/* signal(pidfd, pid, sig) -> true, or false and a message: through the
 * pidfd when there is one (never hits a recycled pid), else kill(2). */
static int l_signal(lua_State *L) {
  int pidfd = (int)luaL_optinteger(L, 1, -1);
  pid_t pid = (pid_t)luaL_checkinteger(L, 2);
  int sig = (int)luaL_checkinteger(L, 3), r = -1;
  luaL_argcheck(L, pid > 0, 2, "pid must be positive");
#ifdef SYS_pidfd_send_signal
  if (pidfd >= 0) {
    r = (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    if (r < 0 && errno != ENOSYS) goto fail;
  }
#endif
  if (r < 0 && kill(pid, sig) < 0) goto fail;
  lua_pushboolean(L, 1);
  return 1;
fail:
  lua_pushboolean(L, 0);
  lua_pushstring(L, strerror(errno));
  return 2;
}

/* random_bytes(n) -> n bytes from libsodium's CSPRNG. */
static int l_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  /* not luaL_prepbuffer: it gives only LUAL_BUFFERSIZE bytes (1 KiB on
   * Lua 5.4) */
  unsigned char buf[4096];
  luaL_argcheck(L, n >= 0 && n <= (lua_Integer)sizeof buf, 1, "0 to 4096 bytes");
  if (sodium_init() < 0) return luaL_error(L, "libsodium failed to start");
  randombytes_buf(buf, (size_t)n);
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

/* die(sig): ends this process by signal sig with its default action (a
 * handler of the runtime's is dropped first), as if the signal had never
 * been caught; _exit(128 + sig) should it not end the process. */
static int l_die(lua_State *L) {
  int sig = (int)luaL_checkinteger(L, 1);
  sigset_t set;
  luaL_argcheck(L, sig > 0 && sig < NSIG, 1, "not a signal number");
  fflush(NULL);
  signal(sig, SIG_DFL);
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, NULL);
  raise(sig);
  _exit(128 + sig);
  return 0;
}

/* ignore_signal(sig): SIG_IGN for sig (the forkserver's SIGINT); a fork
 * child gets the default action back (core/proc.c). */
static int l_ignore_signal(lua_State *L) {
  int sig = (int)luaL_checkinteger(L, 1);
  luaL_argcheck(L, sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP, 1,
                "not a signal that can be ignored");
  signal(sig, SIG_IGN);
  return 0;
}

/* self_exe() -> path of the running executable (the interpreter). */
static int l_self_exe(lua_State *L) {
  char path[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
  if (n < 0) return lmp_error_raise_errno(L, -errno, "readlink /proc/self/exe");
  lua_pushlstring(L, path, (size_t)n);
  return 1;
}

int luaopen_lmp_c_proc(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"close", l_close},
    {"cpu_count", l_cpu_count},
    {"die", l_die},
    {"dup2", l_dup2},
    {"exit", l_exit},
    {"fork", l_fork},
    {"getpid", l_getpid},
    {"getppid", l_getppid},
    {"guard", l_guard},
    {"ignore_signal", l_ignore_signal},
    {"kill", l_kill},
    {"move_fd", l_move_fd},
    {"poll", l_poll},
    {"random_bytes", l_random_bytes},
    {"recv_fds", l_recv_fds},
    {"self_exe", l_self_exe},
    {"send_fds", l_send_fds},
    {"signal", l_signal},
    {"spawn", l_spawn},
    {"trim", l_trim},
    {NULL, NULL}
  };
  static const luaL_Reg guard_meta[] = {
    {"__close", guard_close},
    {"__gc", guard_close},
    {"__tostring", guard_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg guard_methods[] = {
    {"close", guard_close},
    {NULL, NULL}
  };
  lmp_newclass(L, GUARD_MT, guard_meta, guard_methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, SIGTERM);
  lua_setfield(L, -2, "SIGTERM");
  lua_pushinteger(L, SIGKILL);
  lua_setfield(L, -2, "SIGKILL");
  lua_pushinteger(L, SIGINT);
  lua_setfield(L, -2, "SIGINT");
  return 1;
}
