/* lembed.c -- the C embedding API (lmp.h): runtimes for hosts that have
 * no Lua of their own, one fd and one poll call for a host's event loop,
 * and signal handlers only on request. Also the search for lmp's Lua
 * files that the lmp runtime (lmp_main.c) and luaopen_lmp share.
 *
 * lmp_poll and lmp_fileno drive whatever lmp.pool keeps in its registry of
 * live pools (lua/lmp/pool.lua: live_pools, _poll_all, _fileno_all). Every
 * pool built by lmp.pool._new_pool lands there, so a ThreadPool built on
 * it is driven by the same pair with no change here; a future object that
 * is not a pool but must be polled from the host's loop should register
 * with that registry (or be added to _poll_all and _fileno_all). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/intr.h"
#include "lmp_aux.h"
#include "lmp.h"

#ifndef LMP_LUADIR
#define LMP_LUADIR "/usr/local/share/lua/5.4"
#endif

#define ERROR_KEY "lmp.embed.error"       /* registry: the last message */
#define SIGNALS_KEY "lmp.embed.signals"   /* registry: the handlers' anchor */

struct lmp_runtime {
  lua_State *L;
  int broken;                   /* lmp could not be loaded: dofile fails */
};

/* ---- lmp's Lua files ------------------------------------------------- */

/* The lua/ folder of a build tree holding the executable (./lmp,
 * build/<lua>/bin/lmp, build/<root>/<lua>/examples/host, ...): the
 * executable's folder and up to four levels above it; else the installed
 * LMP_LUADIR. */
void lmp_find_luadir(char *out, size_t outlen) {
  char exe[PATH_MAX], probe[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  int up, i;
  if (n > 0) {
    char *slash;
    exe[n] = '\0';
    if ((slash = strrchr(exe, '/'))) *slash = '\0';
    for (up = 0; up <= 4; up++) {
      size_t len = (size_t)snprintf(probe, sizeof probe, "%s", exe);
      for (i = 0; i < up && len < sizeof probe; i++)
        len += (size_t)snprintf(probe + len, sizeof probe - len, "/..");
      if (len + sizeof "/lua/lmp.lua" > sizeof probe) break;
      memcpy(probe + len, "/lua/lmp.lua", sizeof "/lua/lmp.lua");
      if (access(probe, R_OK) == 0 && len + sizeof "/lua" <= outlen) {
        memcpy(out, probe, len);
        memcpy(out + len, "/lua", sizeof "/lua");
        return;
      }
    }
  }
  snprintf(out, outlen, "%s", LMP_LUADIR);
}

/* 1 if some template of a package.path finds a readable lmp.lua. */
static int path_finds_lmp(const char *path) {
  char file[PATH_MAX];
  while (*path) {
    const char *end = strchr(path, ';');
    size_t len = end ? (size_t)(end - path) : strlen(path), i, o = 0;
    for (i = 0; i < len && o + 4 < sizeof file; i++) {
      if (path[i] == '?') { memcpy(file + o, "lmp", 3); o += 3; }
      else file[o++] = path[i];
    }
    file[o] = '\0';
    if (len > 0 && i == len && access(file, R_OK) == 0) return 1;
    path += len;
    if (*path == ';') path++;
  }
  return 0;
}

void lmp_setup_paths(lua_State *L, int if_missing) {
  char dir[PATH_MAX + 64];
  const char *path;
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
  lua_getfield(L, -1, "path");
  path = lua_isstring(L, -1) ? lua_tostring(L, -1) : "";
  if (!if_missing || !path_finds_lmp(path)) {
    lmp_find_luadir(dir, sizeof dir);
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, path);
    lua_setfield(L, -3, "path");
  }
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, luaopen_lmp_core);
    lua_setfield(L, -2, "lmp.core");
  }
  lua_pop(L, 2);
}

/* ---- errors ---------------------------------------------------------- */

/* The error value at idx as a string (lmp errors through __tostring). */
static const char *error_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
    lua_pushvalue(L, idx);
  else if (!luaL_callmeta(L, idx, "__tostring") || !lua_isstring(L, -1))
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
  return lua_tostring(L, -1);
}

/* Message handlers: the error as a string, with (traceback_handler) or
 * without (text_handler) the stack it was raised from. */
static int text_handler(lua_State *L) {
  error_text(L, 1);
  return 1;
}

static int traceback_handler(lua_State *L) {
  const char *msg = error_text(L, 1);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* Pops the message a failed lua_pcall left and keeps it as L's last
 * error; returns -1. */
static int keep_error(lua_State *L) {
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "unknown error");
  }
  lua_setfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
  return -1;
}

/* Calls f(arg) protected, with msgh as message handler; returns the
 * integer f returns, or -1 with the message kept. The stack is left as
 * it was. */
static int protected_call(lua_State *L, lua_CFunction f, lua_CFunction msgh,
                          int arg) {
  int top = lua_gettop(L), r;
  if (!lua_checkstack(L, 8)) return -1;
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, f);
  lua_pushinteger(L, arg);
  if (lua_pcall(L, 1, 1, top + 1) != LUA_OK) {
    r = keep_error(L);
  } else {
    r = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return r;
}

const char *lmp_last_error(lua_State *L) {
  const char *msg;
  lua_getfield(L, LUA_REGISTRYINDEX, ERROR_KEY);
  msg = lua_tostring(L, -1);    /* the registry keeps the string alive */
  lua_pop(L, 1);
  return msg;
}

/* ---- the host's loop ------------------------------------------------- */

/* Pushes lmp.pool's module table if it is loaded (1), else nothing (0):
 * a state that never loaded it has no pool to drive. */
static int push_pool_module(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "lmp.pool");
    lua_remove(L, -2);
    if (lua_istable(L, -1)) return 1;
  }
  lua_pop(L, 1);
  return 0;
}

/* mod._fileno_all() (mod at idx) -> the epoll fd over every pool. */
static int fileno_all(lua_State *L, int idx) {
  int fd;
  lua_getfield(L, idx, "_fileno_all");
  lua_call(L, 0, 1);
  fd = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return fd;
}

/* mod._poll_all(0) (mod at idx) -> events handled; raises a callback's
 * error after every pool had its turn. */
static int poll_all(lua_State *L, int idx) {
  int n;
  lua_getfield(L, idx, "_poll_all");
  lua_pushinteger(L, 0);
  lua_call(L, 1, 1);
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

/* 1 if the module at idx has a live pool (else waiting is pointless). */
static int has_live_pool(lua_State *L, int idx) {
  int live;
  lua_getfield(L, idx, "_live_pools");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return 0; }
  lua_pushnil(L);
  live = lua_next(L, -2);
  lua_pop(L, live ? 3 : 1);
  return live;
}

static int l_poll(lua_State *L) {
  int timeout_ms = (int)lua_tointeger(L, 1), n, r;
  if (!push_pool_module(L)) { lua_pushinteger(L, 0); return 1; }
  n = poll_all(L, 2);
  if (n == 0 && timeout_ms != 0 && has_live_pool(L, 2)) {
    r = lmp_fd_wait(fileno_all(L, 2), POLLIN,
                    lmp_deadline(timeout_ms < 0 ? -1.0 : timeout_ms / 1000.0));
    if (r == -EINTR) return lmp_error_raise_interrupt(L);
    if (r < 0) return lmp_error_raise_errno(L, r, "poll");
    if (r > 0) n = poll_all(L, 2);
  }
  lua_pushinteger(L, n);
  return 1;
}

static int l_fileno(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.pool");
  lua_call(L, 1, 1);
  lua_pushinteger(L, fileno_all(L, lua_gettop(L)));
  return 1;
}

int lmp_poll(lua_State *L, int timeout_ms) {
  return protected_call(L, l_poll, text_handler, timeout_ms);
}

int lmp_fileno(lua_State *L) {
  return protected_call(L, l_fileno, text_handler, 0);
}

/* ---- signals ---------------------------------------------------------- */

/* Signal dispositions are process-wide, so this is C global state: the
 * one Lua thread that SIGINT/SIGTERM interrupt, and the dispositions the
 * host had before (restored when that state closes). */
static lua_State *volatile sig_target = NULL;
static int sig_installed = 0;
static const int sig_nums[2] = {SIGINT, SIGTERM};
static struct sigaction sig_saved[2];

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  /* none pending: a fork child inherited its parent's hook */
  if (lmp_intr_pending) lmp_error_raise_interrupt(L);
}

/* As lua.c does it: a hook raises the error at the next Lua instruction;
 * blocking calls in core/ see EINTR with lmp_intr_pending set. */
static void on_signal(int sig) {
  lua_State *L = sig_target;
  lmp_intr_pending = sig;
  if (L)
    lua_sethook(L, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void restore_signals(void) {
  int i;
  for (i = 0; i < 2; i++) sigaction(sig_nums[i], &sig_saved[i], NULL);
  sig_installed = 0;
}

/* __gc of the anchor: the state that the handlers interrupt is closing. */
static int signals_gc(lua_State *L) {
  lua_State **who = (lua_State **)lua_touserdata(L, 1);
  if (who && *who == sig_target) {
    sig_target = NULL;
    if (sig_installed) restore_signals();
  }
  return 0;
}

/* One anchor per state (a second one would restore the handlers when
 * the first is collected); it names the thread last given. */
static int anchor_signals(lua_State *L) {
  lua_State **who;
  lua_getfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
  if (lua_isuserdata(L, -1)) {
    who = (lua_State **)lua_touserdata(L, -1);
    *who = (lua_State *)lua_touserdata(L, 1);
    return 0;
  }
  who = (lua_State **)lua_newuserdatauv_compat(L, sizeof *who);
  *who = (lua_State *)lua_touserdata(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, signals_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, SIGNALS_KEY);
  return 0;
}

int lmp_install_signal_handlers(lua_State *L) {
  struct sigaction sa;
  int i, top = lua_gettop(L);
  if (!sig_installed) {
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < 2; i++) {
      if (sigaction(sig_nums[i], &sa, &sig_saved[i]) < 0) {
        int e = errno;
        while (i-- > 0) sigaction(sig_nums[i], &sig_saved[i], NULL);
        return -e;
      }
    }
    sig_installed = 1;
  }
  lua_pushcfunction(L, anchor_signals);
  lua_pushlightuserdata(L, L);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_settop(L, top);
    if (sig_target == NULL) restore_signals();
    return -ENOMEM;
  }
  sig_target = L;
  return 0;
}

/* ---- runtimes --------------------------------------------------------- */

/* os.exit in a runtime: ends the script with an error instead of the
 * host's process; in a fork child of the host it is the real os.exit. */
static int runtime_exit(lua_State *L) {
  if ((lua_Integer)getpid() != lua_tointeger(L, lua_upvalueindex(2))) {
    int n = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 0);
    return 0;
  }
  return luaL_error(L, "os.exit(%s) called in an embedded lmp runtime "
                    "(the script ends; the host goes on)",
                    lua_isnumber(L, 1) ? lua_tostring(L, 1)
                    : lua_isnoneornil(L, 1) ? "" : luaL_typename(L, 1));
}

static int runtime_setup(lua_State *L) {
  luaL_openlibs(L);
  lmp_setup_paths(L, 0);         /* as the lmp runtime: its own files first */
  lua_getglobal(L, "os");
  lua_getfield(L, -1, "exit");
  lua_pushinteger(L, (lua_Integer)getpid());
  lua_pushcclosure(L, runtime_exit, 2);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  lua_setglobal(L, "lmp");
  lua_pushinteger(L, 0);
  return 1;
}

lmp_runtime *lmp_runtime_new(void) {
  lmp_runtime *rt = (lmp_runtime *)malloc(sizeof *rt);
  if (!rt) return NULL;
  rt->L = luaL_newstate();
  if (!rt->L) { free(rt); return NULL; }
  rt->broken = protected_call(rt->L, runtime_setup, traceback_handler, 0) < 0;
  return rt;
}

static int dofile_body(lua_State *L) {
  const char *path = (const char *)lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadfile(L, path) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 0);
  lua_pushinteger(L, 0);
  return 1;
}

int lmp_runtime_dofile(lmp_runtime *rt, const char *path) {
  lua_State *L = rt->L;
  int top = lua_gettop(L), r;
  if (rt->broken) return -1;          /* the setup's error is kept */
  if (!lua_checkstack(L, 4)) return -1;
  lua_pushcfunction(L, traceback_handler);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushcclosure(L, dofile_body, 1);
  r = lua_pcall(L, 0, 1, top + 1) == LUA_OK ? 0 : keep_error(L);
  lua_settop(L, top);
  return r;
}

const char *lmp_runtime_error(lmp_runtime *rt) {
  return lmp_last_error(rt->L);
}

lua_State *lmp_runtime_state(lmp_runtime *rt) {
  return rt->L;
}

void lmp_runtime_free(lmp_runtime *rt) {
  if (!rt) return;
  lua_close(rt->L);              /* runs lmp's atexit: pools terminate */
  free(rt);
}
