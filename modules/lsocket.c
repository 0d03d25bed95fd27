/* lsocket.c -- "lmp.c.socket": listening sockets and stream connections
 * over core/net.h, for small servers (lmp.bind_socket, prefork servers)
 * and their clients.
 *
 *   lmp.Socket  a listening socket: accept(timeout), fileno, close, detach,
 *               fields host, port. Meant to be created before fork and
 *               shared by the children (each accepts on it).
 *   lmp.Stream  a connection: read(n | "l" | "L" | "a", timeout),
 *               write(s, timeout), settimeout, shutdown, close, fileno,
 *               detach, field peer. It records the pid that created it:
 *               used from a forked child it raises a "closed" error rather
 *               than letting two processes interleave bytes on one socket.
 *
 * Every fd is close-on-exec and non-blocking from birth; blocking methods
 * poll with deadlines (core/fd.h) and raise "timeout", "broken",
 * "interrupted" or "os" error objects. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/net.h"
#include "lmp_aux.h"

#define LISTENER_MT "lmp.Socket"
#define STREAM_MT "lmp.Stream"
#define ADDR_MAX 128
#define READ_CHUNK 16384
#define MAX_LINE_DEFAULT (1024 * 1024)

typedef struct listener {
  int fd;                   /* -1 once closed */
  pid_t owner;              /* creator (informative: sharing is allowed) */
  int port;                 /* 0 for a Unix socket */
  char host[ADDR_MAX];      /* bound address, or the Unix path */
} listener;

typedef struct stream {
  int fd;                   /* -1 once closed */
  pid_t owner;              /* the only process allowed to use it */
  double timeout;           /* default for read/write; < 0 = none */
  size_t max_line;          /* longest line read("l") accepts */
  char *buf;                /* read buffer: buf[off .. off+len) unread */
  size_t off, len, cap;
  char peer[ADDR_MAX];
} stream;

/* ---- checks ---------------------------------------------------------- */

static listener *check_listener(lua_State *L, int idx) {
  return (listener *)luaL_checkudata(L, idx, LISTENER_MT);
}

static listener *check_open_listener(lua_State *L, int idx) {
  listener *s = check_listener(L, idx);
  if (s->fd < 0) lmp_error_raise(L, "closed", "socket is closed");
  return s;
}

static stream *check_stream(lua_State *L, int idx) {
  return (stream *)luaL_checkudata(L, idx, STREAM_MT);
}

/* An open stream owned by this process. A forked child holds a copy of
 * the parent's fd: both would read and write the same socket and mix
 * their bytes (Tornado's classic pitfall), so the child is refused. */
static stream *check_own(lua_State *L, int idx) {
  stream *s = check_stream(L, idx);
  pid_t me;
  if (s->fd < 0) lmp_error_raise(L, "closed", "connection is closed");
  if ((me = getpid()) != s->owner)
    lmp_error_raise(L, "closed", "connection to %s (fd %d) was created by "
                    "process %d and cannot be used in process %d (inherited "
                    "through fork: both would share one socket); close it "
                    "and open a new connection in this process", s->peer,
                    s->fd, (int)s->owner, (int)me);
  return s;
}

/* Timeout argument at idx; nil or none gives the stream's default. */
static double stream_deadline(lua_State *L, stream *s, int idx) {
  if (lua_isnoneornil(L, idx)) return lmp_deadline(s->timeout);
  return lmp_check_deadline(L, idx);
}

/* ---- construction ------------------------------------------------------ */

/* Pushes a new, closed stream (liolib's order: userdata first). */
static stream *new_stream(lua_State *L) {
  stream *s = lua_newuserdatauv_compat(L, sizeof *s);
  memset(s, 0, sizeof *s);
  s->fd = -1;
  s->timeout = -1;
  s->max_line = MAX_LINE_DEFAULT;
  luaL_setmetatable(L, STREAM_MT);
  return s;
}

static listener *new_listener(lua_State *L) {
  listener *s = lua_newuserdatauv_compat(L, sizeof *s);
  memset(s, 0, sizeof *s);
  s->fd = -1;
  luaL_setmetatable(L, LISTENER_MT);
  return s;
}

static void set_bound_address(listener *s) {
  int port = 0;
  char host[ADDR_MAX];
  if (lmp_net_sockname(s->fd, host, sizeof host, &port) == 0 && port > 0) {
    memcpy(s->host, host, sizeof host);
    s->port = port;
  }
}

/* listen(host, port [, backlog [, reuseport]]) -> lmp.Socket
 * host nil or "" = every address ("::" listens on IPv6 and IPv4). */
static int l_listen(lua_State *L) {
  const char *host = luaL_optstring(L, 1, NULL);
  lua_Integer port = luaL_checkinteger(L, 2);
  lua_Integer backlog = luaL_optinteger(L, 3, 128);
  int flags = lua_toboolean(L, 4) ? LMP_NET_REUSEPORT : 0;
  char err[256] = "";
  listener *s;
  int fd;
  luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port must be 0 to 65535");
  luaL_argcheck(L, backlog > 0 && backlog <= 65535, 3,
                "backlog must be 1 to 65535");
  s = new_listener(L);
  fd = lmp_net_tcp_listen(host, (int)port, (int)backlog, flags, err,
                          sizeof err);
  if (fd < 0) {
    if (fd == -EHOSTUNREACH && err[0]) return lmp_error_raise(L, "os", "%s", err);
    lua_pushfstring(L, "listen on %s:%d", host && *host ? host : "*", (int)port);
    return lmp_error_raise_errno(L, fd, lua_tostring(L, -1));
  }
  s->fd = fd;
  s->owner = getpid();
  snprintf(s->host, sizeof s->host, "%s", host && *host ? host : "*");
  s->port = (int)port;
  set_bound_address(s);
  return 1;
}

/* listen_unix(path [, backlog]) -> lmp.Socket */
static int l_listen_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer backlog = luaL_optinteger(L, 2, 128);
  char err[256] = "";
  listener *s;
  int fd;
  luaL_argcheck(L, backlog > 0 && backlog <= 65535, 2,
                "backlog must be 1 to 65535");
  luaL_argcheck(L, strlen(path) < ADDR_MAX, 1, "path too long");
  s = new_listener(L);
  fd = lmp_net_unix_listen(path, (int)backlog, err, sizeof err);
  if (fd < 0) {
    lua_pushfstring(L, "listen on %s", path);
    return lmp_error_raise_errno(L, fd, lua_tostring(L, -1));
  }
  s->fd = fd;
  s->owner = getpid();
  snprintf(s->host, sizeof s->host, "%s", path);
  return 1;
}

/* connect(host, port [, timeout]) -> lmp.Stream */
static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  double deadline = lmp_check_deadline(L, 3);
  char err[256] = "";
  stream *s;
  int fd;
  luaL_argcheck(L, port > 0 && port <= 65535, 2, "port must be 1 to 65535");
  s = new_stream(L);
  fd = lmp_net_tcp_connect(host, (int)port, deadline, err, sizeof err);
  if (fd < 0) {
    if (fd == -EHOSTUNREACH && err[0]) return lmp_error_raise(L, "os", "%s", err);
    lua_pushfstring(L, "connect to %s:%d", host, (int)port);
    return lmp_error_raise_errno(L, fd, lua_tostring(L, -1));
  }
  s->fd = fd;
  s->owner = getpid();
  if (strchr(host, ':')) snprintf(s->peer, sizeof s->peer, "[%s]:%d", host, (int)port);
  else snprintf(s->peer, sizeof s->peer, "%s:%d", host, (int)port);
  return 1;
}

/* connect_unix(path [, timeout]) -> lmp.Stream */
static int l_connect_unix(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  double deadline = lmp_check_deadline(L, 2);
  stream *s = new_stream(L);
  int fd = lmp_net_unix_connect(path, deadline, NULL, 0);
  if (fd < 0) {
    lua_pushfstring(L, "connect to %s", path);
    return lmp_error_raise_errno(L, fd, lua_tostring(L, -1));
  }
  s->fd = fd;
  s->owner = getpid();
  snprintf(s->peer, sizeof s->peer, "%s", path);
  return 1;
}

/* ---- lmp.Socket ------------------------------------------------------ */

/* accept([timeout]) -> lmp.Stream. Several processes may wait on one
 * socket; each connection goes to one of them (the others wake up, find
 * nothing and wait again). */
static int listener_accept(lua_State *L) {
  listener *ls = check_open_listener(L, 1);
  double deadline = lmp_check_deadline(L, 2);
  stream *s = new_stream(L);
  for (;;) {
    int fd = lmp_net_accept(ls->fd, s->peer, sizeof s->peer), w;
    if (fd >= 0) {
      s->fd = fd;
      s->owner = getpid();
      return 1;
    }
    if (fd == -ECONNABORTED || fd == -EPROTO) continue;  /* peer gave up */
    if (fd != -EAGAIN) return lmp_error_raise_errno(L, fd, "accept");
    w = lmp_fd_wait(ls->fd, POLLIN, deadline);
    if (w == 0) return lmp_error_raise(L, "timeout", "accept timed out");
    if (w < 0) return lmp_error_raise_errno(L, w, "accept");
  }
}

static int listener_close(lua_State *L) {
  listener *s = check_listener(L, 1);
  if (s->fd >= 0) {
    lmp_fd_close(s->fd);
    s->fd = -1;
  }
  return 0;
}

static int listener_fileno(lua_State *L) {
  lua_pushinteger(L, check_open_listener(L, 1)->fd);
  return 1;
}

/* detach() -> fd: gives the fd up (to luv, luasocket, ...) unclosed. */
static int listener_detach(lua_State *L) {
  listener *s = check_open_listener(L, 1);
  lua_pushinteger(L, s->fd);
  s->fd = -1;
  return 1;
}

static int listener_closed(lua_State *L) {
  lua_pushboolean(L, check_listener(L, 1)->fd < 0);
  return 1;
}

/* set_inheritable(on): clears (or sets back) close-on-exec, for handing
 * the socket to a program started with exec. */
static int listener_set_inheritable(lua_State *L) {
  listener *s = check_open_listener(L, 1);
  int e = lmp_fd_set_cloexec(s->fd, !lua_toboolean(L, 2));
  if (e < 0) return lmp_error_raise_errno(L, e, "fcntl");
  return 0;
}

static int listener_tostring(lua_State *L) {
  listener *s = check_listener(L, 1);
  if (s->fd < 0) lua_pushliteral(L, "lmp.Socket (closed)");
  else if (s->port == 0) lua_pushfstring(L, "lmp.Socket (fd %d, %s)", s->fd, s->host);
  else if (strchr(s->host, ':'))
    lua_pushfstring(L, "lmp.Socket (fd %d, [%s]:%d)", s->fd, s->host, s->port);
  else lua_pushfstring(L, "lmp.Socket (fd %d, %s:%d)", s->fd, s->host, s->port);
  return 1;
}

/* Fields host and port, then the methods (upvalue 1). */
static int listener_index(lua_State *L) {
  listener *s = check_listener(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "port") == 0) { lua_pushinteger(L, s->port); return 1; }
  if (k && strcmp(k, "host") == 0) { lua_pushstring(L, s->host); return 1; }
  if (k && strcmp(k, "owner") == 0) { lua_pushinteger(L, s->owner); return 1; }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* ---- lmp.Stream: reading ------------------------------------------- */

/* Makes room for at least `want` more bytes after the unread ones. */
static int reserve(stream *s, size_t want) {
  if (s->off > 0 && s->off + s->len + want > s->cap) {
    memmove(s->buf, s->buf + s->off, s->len);
    s->off = 0;
  }
  if (s->len + want > s->cap) {
    size_t cap = s->cap ? s->cap : READ_CHUNK;
    char *p;
    while (cap < s->len + want) cap *= 2;
    if (!(p = realloc(s->buf, cap))) return -ENOMEM;
    s->buf = p;
    s->cap = cap;
  }
  return 0;
}

/* One read into the buffer, waiting until deadline: bytes (> 0), 0 at
 * end of file, or -errno (-ETIMEDOUT). */
static long fill(stream *s, size_t want, double deadline) {
  int e = reserve(s, want < READ_CHUNK ? READ_CHUNK : want);
  if (e < 0) return e;
  for (;;) {
    size_t room = s->cap - s->off - s->len;
    ssize_t r = lmp_fd_read_some(s->fd, s->buf + s->off + s->len, room);
    int w;
    if (r > 0) { s->len += (size_t)r; return (long)r; }
    if (r == 0) return 0;
    if (r != -EAGAIN) return (long)r;
    w = lmp_fd_wait(s->fd, POLLIN, deadline);
    if (w == 0) return -ETIMEDOUT;
    if (w < 0) return w;
  }
}

/* Pushes n unread bytes and consumes them. */
static void take(lua_State *L, stream *s, size_t n) {
  lua_pushlstring(L, s->buf + s->off, n);
  s->off += n;
  s->len -= n;
  if (s->len == 0) s->off = 0;
}

static int read_error(lua_State *L, long e) {
  if (e == -ETIMEDOUT)   /* what arrived stays buffered for the next read */
    return lmp_error_raise(L, "timeout", "read timed out");
  return lmp_error_raise_errno(L, (int)e, "read");
}

static int read_count(lua_State *L, stream *s, size_t n, double deadline) {
  long r = 1;
  while (s->len < n && (r = fill(s, n - s->len, deadline)) > 0) {}
  if (r < 0) return read_error(L, r);
  if (s->len == 0 && n > 0) { lua_pushnil(L); return 1; }   /* EOF */
  take(L, s, s->len < n ? s->len : n);
  return 1;
}

static int read_line(lua_State *L, stream *s, int keep, double deadline) {
  size_t scanned = 0;
  for (;;) {
    /* nothing unread: buf may still be NULL, which memchr must not get */
    char *nl = s->len > scanned
        ? memchr(s->buf + s->off + scanned, '\n', s->len - scanned) : NULL;
    long r;
    if (nl) {
      size_t n = (size_t)(nl - (s->buf + s->off)) + 1, cut = n;
      if (!keep) cut = (n >= 2 && nl[-1] == '\r') ? n - 2 : n - 1;
      lua_pushlstring(L, s->buf + s->off, cut);
      s->off += n;
      s->len -= n;
      if (s->len == 0) s->off = 0;
      return 1;
    }
    scanned = s->len;
    if (s->len >= s->max_line)
      return lmp_error_raise(L, "broken", "line longer than %d bytes",
                             (int)s->max_line);
    r = fill(s, READ_CHUNK, deadline);
    if (r < 0) return read_error(L, r);
    if (r == 0) {                       /* EOF: a last unterminated line */
      if (s->len == 0) { lua_pushnil(L); return 1; }
      take(L, s, s->len);
      return 1;
    }
  }
}

/* What is there now (waiting for at least one byte); nil at EOF. */
static int read_available(lua_State *L, stream *s, double deadline) {
  if (s->len == 0) {
    long r = fill(s, READ_CHUNK, deadline);
    if (r < 0) return read_error(L, r);
    if (r == 0) { lua_pushnil(L); return 1; }
  }
  take(L, s, s->len);
  return 1;
}

/* read(what [, timeout]): what = n (up to n bytes: fewer only at EOF),
 * "l" (a line without its "\n" or "\r\n"), "L" (with it), "a" (what is
 * available, waiting for at least one byte). nil at end of file. */
static int stream_read(lua_State *L) {
  stream *s = check_own(L, 1);
  double deadline = stream_deadline(L, s, 3);
  const char *fmt;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = lua_tointeger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= (1 << 30), 2, "count must be 0 to 2^30");
    return read_count(L, s, (size_t)n, deadline);
  }
  fmt = luaL_optstring(L, 2, "l");
  if (*fmt == '*') fmt++;               /* Lua 5.1's "*l", "*a" */
  switch (*fmt) {
    case 'l': return read_line(L, s, 0, deadline);
    case 'L': return read_line(L, s, 1, deadline);
    case 'a': return read_available(L, s, deadline);
    default: return luaL_argerror(L, 2, "count, \"l\", \"L\" or \"a\" expected");
  }
}

/* ---- lmp.Stream: the rest ------------------------------------------ */

/* write(s [, timeout]) -> #s. On timeout part of s may have been sent. */
static int stream_write(lua_State *L) {
  stream *s = check_own(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  double deadline = stream_deadline(L, s, 3);
  int e = lmp_fd_write_full(s->fd, p, len, deadline);
  if (e == -ETIMEDOUT) return lmp_error_raise(L, "timeout", "write timed out");
  if (e < 0) return lmp_error_raise_errno(L, e, "write");
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* settimeout(t): default timeout of read and write (nil: none). */
static int stream_settimeout(lua_State *L) {
  stream *s = check_stream(L, 1);
  if (lua_isnoneornil(L, 2)) s->timeout = -1;
  else {
    double t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t >= 0, 2, "timeout must be >= 0 or nil");
    s->timeout = t;
  }
  return 0;
}

/* set_max_line(n): longest line read("l") buffers before failing. */
static int stream_set_max_line(lua_State *L) {
  stream *s = check_stream(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0 && n <= (1 << 30), 2, "must be 1 to 2^30");
  s->max_line = (size_t)n;
  return 0;
}

/* shutdown("w" | "r" | "rw"): half-closes (e.g. "w" after a request). */
static int stream_shutdown(lua_State *L) {
  stream *s = check_own(L, 1);
  const char *how = luaL_optstring(L, 2, "w");
  int h = strcmp(how, "w") == 0 ? SHUT_WR : strcmp(how, "r") == 0 ? SHUT_RD
        : strcmp(how, "rw") == 0 ? SHUT_RDWR : -1;
  luaL_argcheck(L, h >= 0, 2, "\"r\", \"w\" or \"rw\" expected");
  if (shutdown(s->fd, h) < 0 && errno != ENOTCONN)
    return lmp_error_raise_errno(L, -errno, "shutdown");
  return 0;
}

/* close(): closes this process's fd (allowed in a forked child too: it
 * only drops the child's copy). Idempotent; also __gc and __close. */
static int stream_close(lua_State *L) {
  stream *s = check_stream(L, 1);
  if (s->fd >= 0) {
    lmp_fd_close(s->fd);
    s->fd = -1;
  }
  free(s->buf);
  s->buf = NULL;
  s->off = s->len = s->cap = 0;
  return 0;
}

static int stream_closed(lua_State *L) {
  lua_pushboolean(L, check_stream(L, 1)->fd < 0);
  return 1;
}

static int stream_fileno(lua_State *L) {
  lua_pushinteger(L, check_own(L, 1)->fd);
  return 1;
}

/* detach() -> fd, buffered: the fd (unclosed) and any bytes read ahead. */
static int stream_detach(lua_State *L) {
  stream *s = check_own(L, 1);
  lua_pushinteger(L, s->fd);
  lua_pushlstring(L, s->buf ? s->buf + s->off : "", s->len);
  s->fd = -1;
  stream_close(L);
  return 2;
}

static int stream_tostring(lua_State *L) {
  stream *s = check_stream(L, 1);
  if (s->fd < 0) lua_pushliteral(L, "lmp.Stream (closed)");
  else lua_pushfstring(L, "lmp.Stream (fd %d, peer %s)", s->fd, s->peer);
  return 1;
}

static int stream_index(lua_State *L) {
  stream *s = check_stream(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "peer") == 0) { lua_pushstring(L, s->peer); return 1; }
  if (k && strcmp(k, "owner") == 0) { lua_pushinteger(L, s->owner); return 1; }
  if (k && strcmp(k, "timeout") == 0) {
    if (s->timeout < 0) lua_pushnil(L); else lua_pushnumber(L, s->timeout);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* ---- registration ---------------------------------------------------- */

/* Replaces the class's __index table by fn with that table as upvalue. */
static void set_index(lua_State *L, lua_CFunction fn) {
  lua_getfield(L, -1, "__index");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }   /* done before */
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, "__index");
}

int luaopen_lmp_c_socket(lua_State *L) {
  static const luaL_Reg lmeta[] = {
    {"__close", listener_close},
    {"__gc", listener_close},
    {"__tostring", listener_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg lmethods[] = {
    {"accept", listener_accept},
    {"close", listener_close},
    {"closed", listener_closed},
    {"detach", listener_detach},
    {"fileno", listener_fileno},
    {"set_inheritable", listener_set_inheritable},
    {NULL, NULL}
  };
  static const luaL_Reg smeta[] = {
    {"__close", stream_close},
    {"__gc", stream_close},
    {"__tostring", stream_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg smethods[] = {
    {"close", stream_close},
    {"closed", stream_closed},
    {"detach", stream_detach},
    {"fileno", stream_fileno},
    {"read", stream_read},
    {"set_max_line", stream_set_max_line},
    {"settimeout", stream_settimeout},
    {"shutdown", stream_shutdown},
    {"write", stream_write},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"connect", l_connect},
    {"connect_unix", l_connect_unix},
    {"listen", l_listen},
    {"listen_unix", l_listen_unix},
    {NULL, NULL}
  };
  lmp_error_init(L);
  lmp_newclass(L, LISTENER_MT, lmeta, lmethods);
  set_index(L, listener_index);
  lua_pop(L, 1);
  lmp_newclass(L, STREAM_MT, smeta, smethods);
  set_index(L, stream_index);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
