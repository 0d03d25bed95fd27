/* lpipe.c -- "lmp.c.pipe": framed connections over any stream fd
 * (socketpair, pipe, TCP or Unix socket), plus poll/epoll helpers used by
 * lmp.wait and the pool's loop. Pickling happens in lua/lmp/pipe.lua;
 * this file moves whole frames (core/frame.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/frame.h"
#include "../core/intr.h"
#include "lmp_aux.h"

#define CONN_MT "lmp.Conn"

typedef struct conn {
  int fd;               /* -1 once closed */
  size_t maxlen;        /* largest payload accepted */
  lmp_frame_writer out; /* frames queued by queue_frame, not yet written */
} conn;

static conn *check_conn(lua_State *L, int idx) {
  return (conn *)luaL_checkudata(L, idx, CONN_MT);
}

static conn *check_open(lua_State *L, int idx) {
  conn *c = check_conn(L, idx);
  if (c->fd < 0) lmp_error_raise(L, "closed", "connection is closed");
  return c;
}

/* The maxlen option: nil (1 GiB), a number, or a table's maxlen field. */
static lua_Integer opt_maxlen(lua_State *L, int idx) {
  lua_Integer maxlen = (lua_Integer)LMP_FRAME_MAX_DEFAULT;
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "maxlen");
    if (!lua_isnil(L, -1)) {
      luaL_argcheck(L, lua_isnumber(L, -1), idx, "maxlen must be a number");
      maxlen = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
  } else if (!lua_isnoneornil(L, idx)) {
    maxlen = luaL_checkinteger(L, idx);
  }
  return maxlen;
}

/* wrap(fd [, maxlen | {maxlen =}]) -> connection owning fd (made
 * non-blocking and close-on-exec). */
static int l_wrap(lua_State *L) {
  lua_Number x = luaL_checknumber(L, 1);
  int fd = (int)x;
  lua_Integer maxlen = opt_maxlen(L, 2);
  conn *c;
  /* 5.1 would truncate 1.5 to 1 (stdout) */
  luaL_argcheck(L, x >= 0 && x <= 2147483647.0 && x == (lua_Number)fd, 1,
                "fd must be an integer >= 0");
  luaL_argcheck(L, maxlen > 0 && maxlen <= 0xffffffffLL, 2,
                "maxlen must be 1 to 4 GiB - 1");
  c = lua_newuserdatauv_compat(L, sizeof *c);
  c->fd = -1;                        /* closed until set up (liolib) */
  c->maxlen = (size_t)maxlen;
  lmp_frame_writer_init(&c->out);
  luaL_setmetatable(L, CONN_MT);
  lmp_fd_set_nonblock(fd, 1);
  lmp_fd_set_cloexec(fd, 1);
  c->fd = fd;
  return 1;
}

static int conn_close(lua_State *L) {
  conn *c = check_conn(L, 1);
  if (c->fd >= 0) {
    lmp_fd_close(c->fd);
    c->fd = -1;
  }
  lmp_frame_writer_free(&c->out);
  return 0;
}

/* queue_frame(type, payload) -> bytes still queued. Never blocks: what
 * the fd does not take now waits for flush() (for event loops, where a
 * blocking send could deadlock against a peer that is sending too). */
static int conn_queue_frame(lua_State *L) {
  conn *c = check_open(L, 1);
  int type = (int)luaL_checkinteger(L, 2);
  size_t len;
  const char *p = luaL_checklstring(L, 3, &len);
  long left;
  int e = lmp_frame_writer_push(&c->out, type, 0, p, len);
  if (e < 0) return lmp_error_raise_errno(L, e, "send");
  left = lmp_frame_writer_flush(&c->out, c->fd);
  if (left < 0) return lmp_error_raise_errno(L, (int)left, "send");
  lua_pushinteger(L, left);
  return 1;
}

/* flush() -> bytes still queued */
static int conn_flush(lua_State *L) {
  conn *c = check_open(L, 1);
  long left = lmp_frame_writer_flush(&c->out, c->fd);
  if (left < 0) return lmp_error_raise_errno(L, (int)left, "send");
  lua_pushinteger(L, left);
  return 1;
}

static int conn_closed(lua_State *L) {
  lua_pushboolean(L, check_conn(L, 1)->fd < 0);
  return 1;
}

static int conn_maxlen(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_conn(L, 1)->maxlen);
  return 1;
}

static int conn_fileno(lua_State *L) {
  lua_pushinteger(L, check_open(L, 1)->fd);
  return 1;
}

/* detach() -> fd: gives up ownership (the fd stays open). */
static int conn_detach(lua_State *L) {
  conn *c = check_open(L, 1);
  lua_pushinteger(L, c->fd);
  c->fd = -1;
  return 1;
}

static int conn_tostring(lua_State *L) {
  conn *c = check_conn(L, 1);
  if (c->fd < 0) lua_pushliteral(L, "lmp.Connection (closed)");
  else lua_pushfstring(L, "lmp.Connection (fd %d)", c->fd);
  return 1;
}

/* send_frame(type, payload [, timeout]) */
static int conn_send_frame(lua_State *L) {
  conn *c = check_open(L, 1);
  int type = (int)luaL_checkinteger(L, 2);
  size_t len;
  const char *p = luaL_checklstring(L, 3, &len);
  double deadline = lmp_check_deadline(L, 4);
  int e;
  if (len > c->maxlen)
    return lmp_error_raise(L, "broken", "message of %d bytes is over the "
                           "connection's limit", (int)len);
  while (lmp_frame_writer_pending(&c->out) > 0) {   /* keep frame order */
    long left = lmp_frame_writer_flush(&c->out, c->fd);
    if (left < 0) return lmp_error_raise_errno(L, (int)left, "send");
    if (left > 0 && (e = lmp_fd_wait(c->fd, POLLOUT, deadline)) <= 0)
      return lmp_error_raise_errno(L, e ? e : -ETIMEDOUT, "send");
  }
  e = lmp_frame_send(c->fd, type, 0, p, len, deadline);
  if (e == -ETIMEDOUT || e == -EINTR) {   /* part of a frame may be out */
    lmp_fd_close(c->fd);
    c->fd = -1;
  }
  if (e < 0) return lmp_error_raise_errno(L, e, "send");
  return 0;
}

/* recv_frame([timeout]) -> type, payload */
static int conn_recv_frame(lua_State *L) {
  conn *c = check_open(L, 1);
  double deadline = lmp_check_deadline(L, 2);
  lmp_frame_hdr h;
  char *payload = NULL;
  int partial = 0;
  int e = lmp_frame_recv(c->fd, &h, &payload, c->maxlen, deadline, &partial);
  if (e < 0) {
    if (partial || e == -EMSGSIZE || e == -EPROTO) {
      lmp_fd_close(c->fd);       /* the stream is out of step: refuse it */
      c->fd = -1;
    }
    if (e == -ETIMEDOUT)
      return lmp_error_raise(L, "timeout", "recv timed out");
    return lmp_error_raise_errno(L, e, "recv");
  }
  lua_pushinteger(L, h.type);
  lua_pushlstring(L, payload ? payload : "", h.len);
  free(payload);
  return 2;
}

/* poll([timeout]) -> true if a recv would not block (data or EOF). */
static int conn_poll(lua_State *L) {
  conn *c = check_open(L, 1);
  double deadline = lua_isnoneornil(L, 2) ? lmp_deadline(0)
                                          : lmp_check_deadline(L, 2);
  int r = lmp_fd_wait(c->fd, POLLIN, deadline);
  if (r < 0) return lmp_error_raise_errno(L, r, "poll");
  lua_pushboolean(L, r > 0);
  return 1;
}

/* socketpair() -> fd, fd (stream, close-on-exec, non-blocking) */
static int l_socketpair(lua_State *L) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
    return lmp_error_raise_errno(L, -errno, "socketpair");
  lua_pushinteger(L, sv[0]);
  lua_pushinteger(L, sv[1]);
  return 2;
}

/* pipe() -> read fd, write fd */
static int l_pipe(lua_State *L) {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
    return lmp_error_raise_errno(L, -errno, "pipe");
  lua_pushinteger(L, p[0]);
  lua_pushinteger(L, p[1]);
  return 2;
}

/* poll_fds({fd, ...}, timeout) -> {ready fd, ...} (readable, EOF or error) */
static int l_poll_fds(lua_State *L) {
  struct pollfd stackfds[64], *fds = stackfds;
  int i, n, r, out = 0;
  double deadline;
  luaL_checktype(L, 1, LUA_TTABLE);
  deadline = lmp_check_deadline(L, 2);
  n = (int)lua_rawlen(L, 1);
  if (n > 64) fds = lua_newuserdatauv_compat(L, sizeof *fds * (size_t)n);
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    fds[i].fd = (int)luaL_checkinteger(L, -1);
    fds[i].events = POLLIN;
    fds[i].revents = 0;
    lua_pop(L, 1);
  }
  for (;;) {
    r = poll(fds, (nfds_t)n, lmp_deadline_ms(deadline));
    if (r >= 0) break;
    if (errno != EINTR) return lmp_error_raise_errno(L, -errno, "poll");
    if (lmp_intr_pending) return lmp_error_raise_interrupt(L);
  }
  lua_createtable(L, r > 0 ? r : 0, 0);
  for (i = 0; i < n && r > 0; i++)
    if (fds[i].revents) {
      lua_pushinteger(L, fds[i].fd);
      lua_rawseti(L, -2, ++out);
    }
  return 1;
}

/* epoll_new() -> fd */
static int l_epoll_new(lua_State *L) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return lmp_error_raise_errno(L, -errno, "epoll_create1");
  lua_pushinteger(L, fd);
  return 1;
}

/* epoll_add(ep, fd [, want_output]) / epoll_mod(ep, fd, want_output):
 * watch fd for input (and for room to write). */
static int epoll_set(lua_State *L, int op) {
  struct epoll_event ev;
  int ep = (int)luaL_checkinteger(L, 1), fd = (int)luaL_checkinteger(L, 2);
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN | (lua_toboolean(L, 3) ? EPOLLOUT : 0);
  ev.data.fd = fd;
  if (epoll_ctl(ep, op, fd, &ev) < 0 && errno != EEXIST)
    return lmp_error_raise_errno(L, -errno, "epoll_ctl");
  return 0;
}

static int l_epoll_add(lua_State *L) { return epoll_set(L, EPOLL_CTL_ADD); }
static int l_epoll_mod(lua_State *L) { return epoll_set(L, EPOLL_CTL_MOD); }

static int l_epoll_del(lua_State *L) {
  int ep = (int)luaL_checkinteger(L, 1), fd = (int)luaL_checkinteger(L, 2);
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);   /* gone already is fine */
  return 0;
}

/* epoll_wait(ep, timeout) -> {readable fd, ...}, {writable fd, ...} */
static int l_epoll_wait(lua_State *L) {
  struct epoll_event evs[64];
  int ep = (int)luaL_checkinteger(L, 1), i, r;
  double deadline = lmp_check_deadline(L, 2);
  for (;;) {
    r = epoll_wait(ep, evs, 64, lmp_deadline_ms(deadline));
    if (r >= 0) break;
    if (errno != EINTR) return lmp_error_raise_errno(L, -errno, "epoll_wait");
    if (lmp_intr_pending) return lmp_error_raise_interrupt(L);
  }
  {
    int nin = 0, nout = 0;
    lua_createtable(L, r, 0);
    lua_newtable(L);
    for (i = 0; i < r; i++) {
      if (evs[i].events & ~(uint32_t)EPOLLOUT) {
        lua_pushinteger(L, evs[i].data.fd);
        lua_rawseti(L, -3, ++nin);
      }
      if (evs[i].events & EPOLLOUT) {
        lua_pushinteger(L, evs[i].data.fd);
        lua_rawseti(L, -2, ++nout);
      }
    }
  }
  return 2;
}

int luaopen_lmp_c_pipe(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", conn_close},
    {"__close", conn_close},
    {"__tostring", conn_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", conn_close},
    {"closed", conn_closed},
    {"detach", conn_detach},
    {"fileno", conn_fileno},
    {"flush", conn_flush},
    {"maxlen", conn_maxlen},
    {"poll", conn_poll},
    {"queue_frame", conn_queue_frame},
    {"recv_frame", conn_recv_frame},
    {"send_frame", conn_send_frame},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"epoll_add", l_epoll_add},
    {"epoll_del", l_epoll_del},
    {"epoll_mod", l_epoll_mod},
    {"epoll_new", l_epoll_new},
    {"epoll_wait", l_epoll_wait},
    {"pipe", l_pipe},
    {"poll_fds", l_poll_fds},
    {"socketpair", l_socketpair},
    {"wrap", l_wrap},
    {NULL, NULL}
  };
  lmp_newclass(L, CONN_MT, meta, methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, LMP_FRAME_PICKLE);
  lua_setfield(L, -2, "PICKLE");
  lua_pushinteger(L, LMP_FRAME_BYTES);
  lua_setfield(L, -2, "BYTES");
  lua_pushinteger(L, LMP_FRAME_STRING);
  lua_setfield(L, -2, "STRING");
  return 1;
}
