/* lredis.c -- "lmp.c.redis": Redis connections for lua/lmp/redis.lua.
 *
 *   R.parse_url(url) -> {host=, port=, path=, user=, db=, password=, tls=}
 *   R.connect(url [, {timeout = s, connect_timeout = s, tls = {...}}]) -> conn
 *   R.check_tls(url, tls) -> nil | message: what connect would refuse
 *   conn:call(cmd, ...)            one command, default timeout
 *   conn:callt(timeout, cmd, ...)  one command, its own timeout
 *   conn:pipeline(cmds [, timeout]) list of {cmd, ...} -> list of replies
 *   conn:send(cmd, ...); conn:recv(timeout) -> true, reply | false
 *   conn:reconnect(timeout); conn:connected(); conn:fileno(); conn:close()
 *   R.wait({fd, ...}, timeout) -> {index, ...} of the readable fds
 *   R.random_hex(nbytes)
 *
 * Replies: bulk and status -> string, integer -> integer, nil -> nil (false
 * inside arrays, so lists keep their length), array -> table. An error
 * reply raises an error object of kind "remote" whose field `redis` holds
 * the server's text (pipeline puts that object in place instead).
 * Connection failures raise "timeout", "auth", "broken" (the server went
 * away or is not connected) or "os" (e.g. connection refused), with the
 * server's address in the message; a TLS certificate refused (by us or by
 * the server) raises "auth" naming the check. A conn records the pid that opened it;
 * any use from another process (a fork child) raises "closed". */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/intr.h"
#include "../core/rconn.h"
#include "lmp_aux.h"

#define RCONN_MT "lmp.RedisConn"
#define MAX_ARGS 4096

typedef struct rconn_ud {
  lmp_rconn *c;         /* NULL once closed */
  pid_t owner;
  double timeout;       /* seconds for call/pipeline/send */
} rconn_ud;

static rconn_ud *check_ud(lua_State *L, int idx) {
  return (rconn_ud *)luaL_checkudata(L, idx, RCONN_MT);
}

static rconn_ud *check_open(lua_State *L, int idx) {
  rconn_ud *u = check_ud(L, idx);
  if (!u->c) lmp_error_raise(L, "closed", "Redis connection is closed");
  if (u->owner != getpid())
    lmp_error_raise(L, "closed", "Redis connection was opened by process %d;"
                    " a forked child must open its own", (int)u->owner);
  return u;
}

/* Raises the error object for rc from conn u. */
static int raise_rc(lua_State *L, rconn_ud *u, int rc) {
  const char *kind = rc == -ETIMEDOUT ? "timeout"
                   : rc == -EACCES ? "auth"
                   : (rc == -EPIPE || rc == -ENOTCONN || rc == -EPROTO) ? "broken"
                   : "os";
  const char *msg = lmp_rconn_errstr(u->c);
  if (rc == -EINTR) {
    lmp_rconn_disconnect(u->c);
    return lmp_error_raise_interrupt(L);
  }
  if (rc == -ENOTCONN)
    lmp_error_push(L, kind, "not connected to Redis at %s",
                   lmp_rconn_name(u->c));
  else
    lmp_error_push(L, kind, "%s", msg[0] ? msg : strerror(-rc));
  lua_pushinteger(L, -rc);
  lua_setfield(L, -2, "errno");
  return lua_error(L);
}

/* ---- replies --------------------------------------------------------- */

static void push_reply(lua_State *L, const redisReply *r, int in_array) {
  size_t i;
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushinteger(L, (lua_Integer)r->integer);
    break;
  case REDIS_REPLY_ARRAY:
    luaL_checkstack(L, 4, "Redis reply too deep");
    lua_createtable(L, (int)r->elements, 0);
    for (i = 0; i < r->elements; i++) {
      push_reply(L, r->element[i], 1);
      lua_rawseti(L, -2, (int)i + 1);
    }
    break;
  case REDIS_REPLY_ERROR:
    lmp_error_push(L, "remote", "redis: %s", r->str);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "redis");
    break;
  default:
    if (in_array) lua_pushboolean(L, 0); else lua_pushnil(L);
  }
}

/* Pushes reply r (and frees it); raises for an error reply when raise. */
static void push_and_free(lua_State *L, redisReply *r, int raise) {
  int err = r->type == REDIS_REPLY_ERROR;
  /* the object is built before the reply is freed; a memory error while
   * building would leak r, so anchor nothing else in between */
  push_reply(L, r, 0);
  freeReplyObject(r);
  if (err && raise) lua_error(L);
}

/* ---- commands -------------------------------------------------------- */

/* Appends the command made of the values at first..last. */
static int append_args(lua_State *L, rconn_ud *u, int first, int last) {
  const char *argv[MAX_ARGS];
  size_t lens[MAX_ARGS];
  int i, n = last - first + 1;
  if (n < 1) return luaL_error(L, "Redis command expected");
  if (n > MAX_ARGS) return luaL_error(L, "too many command arguments (max %d)",
                                      MAX_ARGS);
  for (i = 0; i < n; i++) {
    int t = lua_type(L, first + i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      return luaL_argerror(L, first + i, "string or number expected");
    argv[i] = lua_tolstring(L, first + i, &lens[i]);
  }
  return lmp_rconn_append(u->c, n, argv, lens);
}

static double deadline_of(lua_State *L, double t) {
  (void)L;
  return t < 0 ? LMP_FOREVER : lmp_deadline(t);
}

/* Reads one reply; the connection is dropped on a timeout (it would be
 * out of step with the server otherwise). */
static redisReply *read_sync(lua_State *L, rconn_ud *u, double deadline) {
  redisReply *r = NULL;
  int rc = lmp_rconn_read(u->c, &r, deadline);
  if (rc == -ETIMEDOUT) lmp_rconn_disconnect(u->c);
  if (rc < 0) raise_rc(L, u, rc);
  return r;
}

static int run_call(lua_State *L, rconn_ud *u, double timeout, int first) {
  int rc;
  if (!lmp_rconn_connected(u->c)) raise_rc(L, u, -ENOTCONN);
  if ((rc = append_args(L, u, first, lua_gettop(L))) < 0) raise_rc(L, u, rc);
  push_and_free(L, read_sync(L, u, deadline_of(L, timeout)), 1);
  return 1;
}

static int c_call(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  return run_call(L, u, u->timeout, 2);
}

static int c_callt(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  double t = luaL_checknumber(L, 2);
  return run_call(L, u, t, 3);
}

/* pipeline(cmds [, timeout]) -> replies (error replies as objects). */
static int c_pipeline(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  int i, n, rc;
  double deadline;
  luaL_checktype(L, 2, LUA_TTABLE);
  deadline = deadline_of(L, luaL_optnumber(L, 3, u->timeout));
  n = (int)lua_rawlen(L, 2);
  if (!lmp_rconn_connected(u->c)) raise_rc(L, u, -ENOTCONN);
  for (i = 1; i <= n; i++) {
    int top = lua_gettop(L), j, m;
    lua_rawgeti(L, 2, i);
    if (!lua_istable(L, -1)) return luaL_argerror(L, 2, "list of commands expected");
    m = (int)lua_rawlen(L, -1);
    luaL_checkstack(L, m + 4, "too many command arguments");
    for (j = 1; j <= m; j++) lua_rawgeti(L, top + 1, j);
    rc = append_args(L, u, top + 2, top + 1 + m);
    lua_settop(L, top);
    if (rc < 0) raise_rc(L, u, rc);
  }
  lua_createtable(L, n, 0);
  for (i = 1; i <= n; i++) {
    push_and_free(L, read_sync(L, u, deadline), 0);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int c_send(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  int rc;
  if (!lmp_rconn_connected(u->c)) raise_rc(L, u, -ENOTCONN);
  if ((rc = append_args(L, u, 2, lua_gettop(L))) < 0) raise_rc(L, u, rc);
  if ((rc = lmp_rconn_flush(u->c, deadline_of(L, u->timeout))) < 0)
    raise_rc(L, u, rc);
  return 0;
}

/* recv(timeout) -> true, reply | false when none arrived in time (the
 * connection stays usable: a later recv gets the reply). */
static int c_recv(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  double t = luaL_optnumber(L, 2, -1);
  redisReply *r = NULL;
  int rc = lmp_rconn_read(u->c, &r, t == 0 ? 0 : deadline_of(L, t));
  if (rc == -ETIMEDOUT) { lua_pushboolean(L, 0); return 1; }
  if (rc < 0) raise_rc(L, u, rc);
  lua_pushboolean(L, 1);
  push_and_free(L, r, 0);
  return 2;
}

static int c_reconnect(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  double t = luaL_optnumber(L, 2, u->timeout);
  int rc = lmp_rconn_reconnect(u->c, deadline_of(L, t), NULL, 0);
  if (rc < 0) raise_rc(L, u, rc);
  return 0;
}

static int c_disconnect(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  lmp_rconn_disconnect(u->c);
  return 0;
}

static int c_connected(lua_State *L) {
  rconn_ud *u = check_ud(L, 1);
  lua_pushboolean(L, u->c && lmp_rconn_connected(u->c));
  return 1;
}

static int c_owed(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  lua_pushinteger(L, lmp_rconn_owed(u->c));
  return 1;
}

static int c_fileno(lua_State *L) {
  rconn_ud *u = check_open(L, 1);
  lua_pushinteger(L, lmp_rconn_fd(u->c));
  return 1;
}

static int c_settimeout(lua_State *L) {
  rconn_ud *u = check_ud(L, 1);
  double t = luaL_checknumber(L, 2);
  luaL_argcheck(L, t > 0, 2, "timeout must be > 0");
  u->timeout = t;
  return 0;
}

/* Idempotent; shared by close, __gc and __close. A forked child's copy
 * frees its memory without touching the parent's socket state (the fd is
 * close-on-exec and the child's copy is simply closed). */
static int c_close(lua_State *L) {
  rconn_ud *u = check_ud(L, 1);
  if (u->c) {
    lmp_rconn_free(u->c);
    u->c = NULL;
  }
  return 0;
}

static int c_tostring(lua_State *L) {
  rconn_ud *u = check_ud(L, 1);
  if (!u->c) lua_pushliteral(L, "lmp.RedisConn (closed)");
  else lua_pushfstring(L, "lmp.RedisConn (%s%s)", lmp_rconn_name(u->c),
                       lmp_rconn_connected(u->c) ? "" : ", disconnected");
  return 1;
}

/* ---- module functions ------------------------------------------------ */

static void check_url(lua_State *L, int idx, lmp_rconn_url *url) {
  char err[512];
  if (lmp_rconn_parse_url(luaL_checkstring(L, idx), url, err, sizeof err) < 0)
    luaL_argerror(L, idx, err);
}

static int l_parse_url(lua_State *L) {
  lmp_rconn_url url;
  check_url(L, 1, &url);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, url.host); lua_setfield(L, -2, "host");
  lua_pushinteger(L, url.port); lua_setfield(L, -2, "port");
  lua_pushstring(L, url.path); lua_setfield(L, -2, "path");
  lua_pushstring(L, url.user); lua_setfield(L, -2, "user");
  lua_pushstring(L, url.password); lua_setfield(L, -2, "password");
  lua_pushinteger(L, url.db); lua_setfield(L, -2, "db");
  lua_pushboolean(L, url.tls); lua_setfield(L, -2, "tls");
  return 1;
}

/* ---- TLS options ----------------------------------------------------- */

static const char *const TLS_KEYS[] = {"ca_file", "cert_file", "key_file",
                                       "server_name", "verify", NULL};

/* Reads the tls table at idx into o (its strings are left on the stack,
 * so they live as long as the caller keeps them there). NULL, or a message
 * saying what is wrong. */
static const char *tls_opts(lua_State *L, int idx, lmp_tls_opts *o) {
  const char **slot[4];
  int i;
  memset(o, 0, sizeof *o);
  o->verify = 1;
  if (!lua_istable(L, idx)) return "tls must be a table";
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int known = 0;
    lua_pop(L, 1);
    for (i = 0; TLS_KEYS[i]; i++)
      if (lua_type(L, -1) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), TLS_KEYS[i]))
        known = 1;
    if (!known) {
      const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
      return lua_pushfstring(L, "unknown tls option '%s' (ca_file, cert_file, "
                             "key_file, server_name, verify)", k);
    }
  }
  slot[0] = &o->ca_file; slot[1] = &o->cert_file; slot[2] = &o->key_file;
  slot[3] = &o->server_name;
  for (i = 0; i < 4; i++) {
    lua_getfield(L, idx, TLS_KEYS[i]);
    if (lua_isnil(L, -1)) continue;
    if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0 ||
        strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1) ||
        lua_rawlen(L, -1) > (i == 3 ? 255u : 4095u))   /* a name, or a path */
      return lua_pushfstring(L, "tls.%s must be a non-empty string (at most "
                             "%d bytes, no NUL)", TLS_KEYS[i], i == 3 ? 255 : 4095);
    *slot[i] = lua_tostring(L, -1);
  }
  lua_getfield(L, idx, "verify");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    return "tls.verify must be a boolean";
  if (lua_isboolean(L, -1)) o->verify = lua_toboolean(L, -1);
  if (o->key_file && !o->cert_file) return "tls.key_file needs tls.cert_file";
  return NULL;
}

/* check_tls(url, tls) -> nil, or what connect would refuse (a bad URL is
 * left to connect). */
static int l_check_tls(lua_State *L) {
  lmp_rconn_url url;
  lmp_tls_opts o;
  const char *msg;
  if (lua_isnoneornil(L, 2)) return 0;
  msg = tls_opts(L, 2, &o);
  if (!msg && lmp_rconn_parse_url(luaL_checkstring(L, 1), &url, NULL, 0) == 0
      && !url.tls)
    msg = "tls options need a rediss:// URL (this one is redis://)";
  if (!msg) return 0;
  lua_pushstring(L, msg);
  return 1;
}

/* Sets up TLS for u from opts.tls (opts at idx); raises for bad options,
 * for options on a redis:// URL, and for files that cannot be used. */
static void setup_tls(lua_State *L, int idx, rconn_ud *u) {
  lmp_tls_opts o;
  const char *msg;
  char err[600];
  int top = lua_gettop(L), rc;
  if (!lua_istable(L, idx)) return;
  lua_getfield(L, idx, "tls");
  if (lua_isnil(L, -1)) { lua_settop(L, top); return; }
  if ((msg = tls_opts(L, top + 1, &o)) != NULL) luaL_argerror(L, idx, msg);
  rc = lmp_rconn_set_tls(u->c, &o, err, sizeof err);
  if (rc == -EINVAL && strstr(err, "rediss://")) luaL_argerror(L, idx, err);
  if (rc < 0) {
    lmp_error_push(L, "os", "%s", rc == -ENOMEM ? "out of memory" : err);
    lua_pushinteger(L, -rc);
    lua_setfield(L, -2, "errno");
    lua_error(L);
  }
  lua_settop(L, top);
}

static double opt_field(lua_State *L, int idx, const char *k, double dflt) {
  double v = dflt;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, k);
    if (!lua_isnil(L, -1)) {
      if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) <= 0)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a number > 0", k));
      v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
  }
  return v;
}

/* connect(url [, {timeout =, connect_timeout =, lazy = true, tls = {ca_file
 * =, cert_file =, key_file =, server_name =, verify = true}}]) -> conn. */
static int l_connect(lua_State *L) {
  lmp_rconn_url url;
  rconn_ud *u;
  double ct;
  int rc, lazy = 0;
  check_url(L, 1, &url);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  u = lua_newuserdatauv_compat(L, sizeof *u);
  u->c = NULL;                                /* closed until set up */
  u->owner = getpid();
  u->timeout = opt_field(L, 2, "timeout", 5.0);
  ct = opt_field(L, 2, "connect_timeout", u->timeout);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "lazy");
    lazy = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  luaL_setmetatable(L, RCONN_MT);
  u->c = lmp_rconn_new(&url);
  if (!u->c) return luaL_error(L, "out of memory");
  setup_tls(L, 2, u);
  if (!lazy && (rc = lmp_rconn_connect(u->c, lmp_deadline(ct), NULL, 0)) < 0)
    raise_rc(L, u, rc);
  return 1;
}

/* wait({fd, ...}, timeout) -> list of the indices of readable fds. */
static int l_wait(lua_State *L) {
  struct pollfd p[64];
  int i, n, r, k = 0;
  double deadline;
  luaL_checktype(L, 1, LUA_TTABLE);
  deadline = lmp_check_deadline(L, 2);
  n = (int)lua_rawlen(L, 1);
  luaL_argcheck(L, n <= 64, 1, "at most 64 fds");
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    p[i].fd = (int)lua_tointeger(L, -1);
    p[i].events = POLLIN;
    lua_pop(L, 1);
  }
  for (;;) {
    for (i = 0; i < n; i++) p[i].revents = 0;
    r = poll(p, (nfds_t)n, lmp_deadline_ms(deadline));
    if (r >= 0) break;
    if (errno != EINTR) return lmp_error_raise_errno(L, -errno, "poll");
    if (lmp_intr_pending) return lmp_error_raise_interrupt(L);
  }
  lua_createtable(L, r > 0 ? r : 0, 0);
  for (i = 0; i < n; i++)
    if (p[i].revents) { lua_pushinteger(L, i + 1); lua_rawseti(L, -2, ++k); }
  return 1;
}

static int l_random_hex(lua_State *L) {
  unsigned char buf[64];
  char hex[129];
  int i, n = (int)luaL_optinteger(L, 1, 8);
  size_t got = 0;
  luaL_argcheck(L, n >= 1 && n <= 64, 1, "1 to 64 bytes");
  while (got < (size_t)n) {
    ssize_t r = getrandom(buf + got, (size_t)n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return lmp_error_raise_errno(L, -errno, "getrandom");
    got += (size_t)r;
  }
  for (i = 0; i < n; i++) {
    static const char digits[] = "0123456789abcdef";
    hex[2 * i] = digits[buf[i] >> 4];
    hex[2 * i + 1] = digits[buf[i] & 15];
  }
  lua_pushlstring(L, hex, (size_t)n * 2);
  return 1;
}

int luaopen_lmp_c_redis(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__close", c_close},
    {"__gc", c_close},
    {"__tostring", c_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"call", c_call},
    {"callt", c_callt},
    {"close", c_close},
    {"connected", c_connected},
    {"disconnect", c_disconnect},
    {"fileno", c_fileno},
    {"owed", c_owed},
    {"pipeline", c_pipeline},
    {"reconnect", c_reconnect},
    {"recv", c_recv},
    {"send", c_send},
    {"settimeout", c_settimeout},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"check_tls", l_check_tls},
    {"connect", l_connect},
    {"parse_url", l_parse_url},
    {"random_hex", l_random_hex},
    {"wait", l_wait},
    {NULL, NULL}
  };
  lmp_newclass(L, RCONN_MT, meta, methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, "lmp.c.redis 1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
