/* lconnection.c -- "lmp.c.connection": what lmp.connection (Listener,
 * Client) needs beyond lmp.c.socket and lmp.c.pipe: the authkey handshake
 * of core/auth.h on one connected socket, and the Unix socket path a
 * listener owns.
 *
 *   auth_client(fd, key, timeout, where) -> true | nil, kind, message
 *   auth_server(fd, key, timeout, where) -> true | nil, kind, message
 *   path_free(path) -> true | nil, message     (nothing is at path)
 *   path_guard(path) -> guard: unlinks path on close/__gc, but only in the
 *                       process that made it and only while path is still
 *                       the same file (not a newer listener's socket)
 *   is_loopback(host) -> boolean
 *
 * The handshakes never own the fd: the caller wraps it first (so an error
 * raised here leaks nothing) and closes it when they fail. Kinds are
 * "auth" (wrong key, a peer that is not lmp, a peer gone mid-handshake),
 * "timeout" and "os"; an interruption (SIGINT/SIGTERM in the runtime) is
 * raised. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "../core/auth.h"
#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/net.h"
#include "lmp_aux.h"

#define GUARD_MT "lmp.SocketPath"
#define PATH_MAX_LEN 108        /* sun_path */

static const char *check_key(lua_State *L, int idx, size_t *len) {
  const char *key = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0 && *len <= LMP_AUTH_KEY_MAX, idx,
                "authkey must be 1 to 256 bytes");
  return key;
}

/* Returns nil, kind, message (fmt names the peer through where). */
static int fail(lua_State *L, const char *kind, const char *fmt,
                const char *where) {
  lua_pushnil(L);
  lua_pushstring(L, kind);
  lua_pushfstring(L, fmt, where);
  return 3;
}

static int fail_errno(lua_State *L, int rc, const char *where) {
  if (rc == -EINTR) return lmp_error_raise_interrupt(L);
  if (rc == -ETIMEDOUT)
    return fail(L, "timeout", "authkey handshake with %s timed out", where);
  if (rc == -EPIPE || rc == -ECONNRESET)
    return fail(L, "auth", "%s closed the connection during the authkey "
                "handshake", where);
  lua_pushnil(L);
  lua_pushliteral(L, "os");
  lua_pushfstring(L, "authkey handshake with %s: %s", where, strerror(-rc));
  return 3;
}

/* auth_client(fd, key, timeout, where): proves the key to a listener and
 * checks its proof. */
static int l_auth_client(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), rc;
  size_t keylen;
  const char *key = check_key(L, 2, &keylen);
  double deadline = lmp_check_deadline(L, 3);
  const char *where = luaL_checkstring(L, 4);
  rc = lmp_auth_client(fd, key, keylen, deadline);
  switch (rc) {
  case 0:
    lua_pushboolean(L, 1);
    return 1;
  case -EACCES:
    return fail(L, "auth", "%s refused our authkey", where);
  case -EPERM:
    return fail(L, "auth", "%s could not prove the authkey (another key)",
                where);
  case -EPROTO:
    return fail(L, "auth", "%s sent no valid authkey challenge (a listener "
                "without an authkey, or not lmp)", where);
  default:
    return fail_errno(L, rc, where);
  }
}

/* auth_server(fd, key, timeout, where): challenges a new peer; nothing it
 * sends is read past the 64-byte answer, nothing is decoded. */
static int l_auth_server(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), rc;
  size_t keylen;
  const char *key = check_key(L, 2, &keylen);
  double deadline = lmp_check_deadline(L, 3);
  const char *where = luaL_checkstring(L, 4);
  lmp_auth_srv a;
  memset(&a, 0, sizeof a);
  rc = lmp_auth_srv_start(&a, fd);
  while (rc == 0) {
    rc = lmp_auth_srv_step(&a, fd, key, keylen);
    if (rc != 0) break;
    rc = lmp_fd_wait(fd, POLLIN, deadline);
    if (rc == 0) rc = -ETIMEDOUT;
    else if (rc > 0) rc = 0;
  }
  if (rc == 1) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == -EACCES)
    return fail(L, "auth", "%s failed the authkey handshake (wrong key, or "
                "not an lmp client)", where);
  return fail_errno(L, rc, where);
}

/* path_free(path) -> true, or nil and a message when something is there
 * (Python's Listener refuses a path in use, stale or not). */
static int l_path_free(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  int e = lstat(path, &st) == 0 ? EADDRINUSE : errno;
  if (e == ENOENT) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  if (e == EADDRINUSE)
    lua_pushfstring(L, "cannot listen on %s: address already in use (remove "
                    "the file if no one listens there)", path);
  else lua_pushfstring(L, "cannot listen on %s: %s", path, strerror(e));
  return 2;
}

typedef struct guard {
  pid_t owner;            /* 0 once released */
  dev_t dev;
  ino_t ino;
  char path[PATH_MAX_LEN + 1];
} guard;

/* path_guard(path) -> guard of the socket file now at path */
static int l_path_guard(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  struct stat st;
  guard *g;
  luaL_argcheck(L, len > 0 && len <= PATH_MAX_LEN, 1, "path too long");
  g = lua_newuserdatauv_compat(L, sizeof *g);
  memset(g, 0, sizeof *g);               /* released until set up */
  luaL_setmetatable(L, GUARD_MT);
  if (lstat(path, &st) < 0)
    return lmp_error_raise_errno(L, -errno, "stat of the socket path");
  memcpy(g->path, path, len + 1);
  g->dev = st.st_dev;
  g->ino = st.st_ino;
  g->owner = getpid();
  return 1;
}

/* guard:close() -> true if it removed the file. Idempotent; __gc too. */
static int guard_close(lua_State *L) {
  guard *g = luaL_checkudata(L, 1, GUARD_MT);
  struct stat st;
  int removed = 0;
  if (g->owner && g->owner == getpid() && lstat(g->path, &st) == 0 &&
      st.st_dev == g->dev && st.st_ino == g->ino && S_ISSOCK(st.st_mode))
    removed = unlink(g->path) == 0;
  g->owner = 0;
  lua_pushboolean(L, removed);
  return 1;
}

static int guard_tostring(lua_State *L) {
  guard *g = luaL_checkudata(L, 1, GUARD_MT);
  if (!g->owner) lua_pushliteral(L, "lmp.SocketPath (released)");
  else lua_pushfstring(L, "lmp.SocketPath (%s)", g->path);
  return 1;
}

static int l_is_loopback(lua_State *L) {
  lua_pushboolean(L, lmp_net_is_loopback(luaL_checkstring(L, 1)));
  return 1;
}

int luaopen_lmp_c_connection(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__close", guard_close},
    {"__gc", guard_close},
    {"__tostring", guard_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", guard_close},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"auth_client", l_auth_client},
    {"auth_server", l_auth_server},
    {"is_loopback", l_is_loopback},
    {"path_free", l_path_free},
    {"path_guard", l_path_guard},
    {NULL, NULL}
  };
  lmp_error_init(L);
  lmp_newclass(L, GUARD_MT, meta, methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
