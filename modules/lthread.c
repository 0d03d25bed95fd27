/* lthread.c -- "lmp.c.thread": OS threads that each run their own Lua
 * state (core/thread.c). A thread's state has the standard libraries,
 * the creator's package.path and package.cpath and lmp preloaded; it runs
 * require("lmp.thread")._thread_main(fd, blob) and is closed when that
 * returns. Nothing but the fd and the bytes of blob is shared between
 * states: values cross by lmp.pickle. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/clock.h"
#include "../core/thread.h"
#include "lmp.h"
#include "lmp_aux.h"

#define THREAD_MT "lmp.Thread"

/* What a new thread needs, copied out of the creator's state. */
typedef struct job {
  int fd;
  char *blob, *path, *cpath, *name;
  size_t bloblen;
} job;

typedef struct thread_ud {
  lmp_thread *t;    /* NULL once released */
} thread_ud;

static void job_free(job *j) {
  free(j->blob);
  free(j->path);
  free(j->cpath);
  free(j->name);
  free(j);
}

static char *dup_mem(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

static void set_package_field(lua_State *L, const char *k, const char *v) {
  lua_getglobal(L, "package");
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = luaL_typename(L, 1);
#if LUA_VERSION_NUM >= 502
  luaL_traceback(L, L, msg, 1);
#else
  lua_pushstring(L, msg);
#endif
  return 1;
}

/* Runs _thread_main in a fresh state; 0, or 1 after a Lua error (printed:
 * the thread has no caller to raise it to). */
static int thread_body(void *arg) {
  job *j = arg;
  int status = 0;
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "lmp: %s: cannot create a Lua state\n", j->name);
    job_free(j);
    return 1;
  }
  luaL_openlibs(L);
  set_package_field(L, "path", j->path);
  set_package_field(L, "cpath", j->cpath);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_lmp_core);
  lua_setfield(L, -2, "lmp.core");
  lua_pop(L, 2);
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.thread");
  if (lua_pcall(L, 1, 1, 1) == 0) {
    lua_getfield(L, -1, "_thread_main");
    lua_pushinteger(L, j->fd);
    lua_pushlstring(L, j->blob, j->bloblen);
    if (lua_pcall(L, 2, 0, 1) != 0) status = 1;
  } else {
    status = 1;
  }
  if (status) {
    fprintf(stderr, "lmp: %s failed: %s\n", j->name, lua_tostring(L, -1));
    fflush(stderr);
  }
  lua_close(L);
  job_free(j);
  return status;
}

/* Threads run code of this library: it must never be unloaded under them
 * (lua_close of the creator's state dlcloses C modules). */
static void pin_library(void) {
  static int pinned;
  Dl_info di;
  size_t n;
  if (pinned) return;
  pinned = 1;
  if (dladdr((void *)thread_body, &di) && di.dli_fname &&
      (n = strlen(di.dli_fname)) > 3 && strcmp(di.dli_fname + n - 3, ".so") == 0)
    dlopen(di.dli_fname, RTLD_NOW | RTLD_NODELETE);
}

/* start(fd, blob, name) -> thread; package.path/cpath come from here. */
static int l_start(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), rc;
  size_t len;
  const char *blob = luaL_checklstring(L, 2, &len);
  const char *name = luaL_optstring(L, 3, "thread");
  thread_ud *u;
  job *j = calloc(1, sizeof *j);
  luaL_argcheck(L, fd >= 0, 1, "fd must be >= 0");
  if (!j) return luaL_error(L, "out of memory");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  j->fd = fd;
  j->bloblen = len;
  j->blob = dup_mem(blob, len);
  j->name = dup_mem(name, strlen(name));
  j->path = dup_mem(luaL_optstring(L, -2, ""), strlen(luaL_optstring(L, -2, "")));
  j->cpath = dup_mem(luaL_optstring(L, -1, ""), strlen(luaL_optstring(L, -1, "")));
  lua_pop(L, 3);
  if (!j->blob || !j->name || !j->path || !j->cpath) {
    job_free(j);
    return luaL_error(L, "out of memory");
  }
  u = lua_newuserdatauv_compat(L, sizeof *u);
  u->t = NULL;
  luaL_setmetatable(L, THREAD_MT);
  pin_library();
  if ((rc = lmp_thread_start(&u->t, thread_body, j)) < 0) {
    job_free(j);
    return lmp_error_raise_errno(L, rc, "start a thread");
  }
  return 1;
}

static lmp_thread *check_thread(lua_State *L) {
  thread_ud *u = luaL_checkudata(L, 1, THREAD_MT);
  if (!u->t) lmp_error_raise(L, "closed", "thread handle is closed");
  return u->t;
}

static int th_sentinel(lua_State *L) {
  lua_pushinteger(L, lmp_thread_sentinel(check_thread(L)));
  return 1;
}

/* status() -> nil while running, else its exit status (0, or 1 after an
 * uncaught Lua error) */
static int th_status(lua_State *L) {
  int status;
  if (lmp_thread_done(check_thread(L), &status)) lua_pushinteger(L, status);
  else lua_pushnil(L);
  return 1;
}

/* join([timeout]) -> true once ended, false at the timeout */
static int th_join(lua_State *L) {
  lmp_thread *t = check_thread(L);
  int rc = lmp_thread_join(t, lmp_check_deadline(L, 2));
  if (rc == -EINTR) return lmp_error_raise_interrupt(L);
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int th_close(lua_State *L) {
  thread_ud *u = luaL_checkudata(L, 1, THREAD_MT);
  lmp_thread_release(u->t);
  u->t = NULL;
  return 0;
}

/* shutdown(fd): wakes a thread blocked reading its end of a socketpair
 * (the master's end is fd): its recv meets end of file. */
static int l_shutdown(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_pushboolean(L, shutdown(fd, SHUT_RDWR) == 0);
  return 1;
}

static int l_live(lua_State *L) {
  lua_pushinteger(L, lmp_thread_live());
  return 1;
}

int luaopen_lmp_c_thread(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"live", l_live},
    {"shutdown", l_shutdown},
    {"start", l_start},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", th_close},
    {"__close", th_close},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", th_close},
    {"join", th_join},
    {"sentinel", th_sentinel},
    {"status", th_status},
    {NULL, NULL}
  };
  lmp_newclass(L, THREAD_MT, meta, methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
