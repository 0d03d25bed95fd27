/* lmanager.c -- "lmp.c.manager": the managers' sockets, handshake and
 * server loop (core/net.c, core/auth.c, core/server.c). Requests and
 * replies are opaque strings here; lua/lmp/manager.lua decodes them, and
 * only for peers that passed the handshake. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>

#include "../core/auth.h"
#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/frame.h"
#include "../core/net.h"
#include "../core/server.h"
#include "lmp_aux.h"

#define SERVER_MT "lmp.ManagerServer"
#define CLIENT_MT "lmp.ManagerClient"
#ifndef SPIN_SECS
#define SPIN_SECS 100e-6
#endif

typedef struct server {
  lmp_srv *s;     /* NULL once closed */
} server;

static const char *check_key(lua_State *L, int idx, size_t *len) {
  const char *key = luaL_checklstring(L, idx, len);
  luaL_argcheck(L, *len > 0 && *len <= LMP_AUTH_KEY_MAX, idx,
                "authkey must be 1 to 256 bytes");
  return key;
}

/* An address: {host, port} or a Unix socket path. */
static const char *check_address(lua_State *L, int idx, int *port) {
  const char *host;
  if (lua_type(L, idx) == LUA_TSTRING) {
    *port = -1;
    return lua_tostring(L, idx);
  }
  luaL_argcheck(L, lua_istable(L, idx), idx,
                "address must be {host, port} or a Unix socket path");
  lua_rawgeti(L, idx, 1);
  lua_rawgeti(L, idx, 2);
  host = lua_tostring(L, -2);
  luaL_argcheck(L, host && lua_isnumber(L, -1), idx,
                "address must be {host, port} or a Unix socket path");
  *port = (int)lua_tointeger(L, -1);
  luaL_argcheck(L, *port >= 0 && *port <= 65535, idx, "port out of range");
  lua_pop(L, 2);
  return host;   /* still referenced by the table */
}

/* listen(address [, backlog]) -> fd, host, port (port 0 for a path) */
static int l_listen(lua_State *L) {
  int port, fd, bport = 0;
  char err[256] = "", host[64] = "";
  const char *where = check_address(L, 1, &port);
  int backlog = (int)luaL_optinteger(L, 2, 128);
  fd = port < 0 ? lmp_net_unix_listen(where, backlog, err, sizeof err)
                : lmp_net_tcp_listen(where, port, backlog, 0, err, sizeof err);
  if (fd < 0) {
    if (*err) return lmp_error_raise(L, "os", "%s", err);
    return lmp_error_raise_errno(L, fd, "listen");
  }
  if (port >= 0) lmp_net_sockname(fd, host, sizeof host, &bport);
  lua_pushinteger(L, fd);
  lua_pushstring(L, port < 0 ? where : host);
  lua_pushinteger(L, bport);
  return 3;
}

static int raise_auth(lua_State *L, int rc, const char *where) {
  switch (rc) {
  case -EACCES:
    return lmp_error_raise(L, "auth", "%s refused our authkey", where);
  case -EPERM:
    return lmp_error_raise(L, "auth", "%s could not prove the authkey "
                           "(another key, or not an lmp manager)", where);
  case -EPROTO:
    return lmp_error_raise(L, "auth", "%s sent no valid challenge "
                           "(not an lmp manager, or another version)", where);
  case -EINTR:
    return lmp_error_raise_interrupt(L);
  default:
    return lmp_error_raise_errno(L, rc, where);
  }
}

/* connect(address, authkey [, timeout]) -> fd, authenticated both ways */
static int l_connect(lua_State *L) {
  int port, fd, rc;
  size_t keylen;
  char err[256] = "", where[320];
  const char *host = check_address(L, 1, &port);
  const char *key = check_key(L, 2, &keylen);
  double deadline = lmp_check_deadline(L, 3);
  if (port < 0) snprintf(where, sizeof where, "manager at %s", host);
  else snprintf(where, sizeof where, "manager at %s:%d", host, port);
  fd = port < 0 ? lmp_net_unix_connect(host, deadline, err, sizeof err)
                : lmp_net_tcp_connect(host, port, deadline, err, sizeof err);
  if (fd < 0) {
    if (fd == -EINTR) return lmp_error_raise_interrupt(L);
    if (*err) return lmp_error_raise(L, "os", "%s", err);
    return lmp_error_raise_errno(L, fd, where);
  }
  if ((rc = lmp_auth_client(fd, key, keylen, deadline)) < 0) {
    lmp_fd_close(fd);
    return raise_auth(L, rc, where);
  }
  lua_pushinteger(L, fd);
  return 1;
}

static lmp_srv_opts check_opts(lua_State *L, int idx) {
  lmp_srv_opts o = {64u << 20, 64u << 20, 5.0, 1024, 100e-6};
  if (lua_isnoneornil(L, idx)) return o;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "maxlen");
  o.maxlen = (size_t)luaL_optnumber(L, -1, (lua_Number)o.maxlen);
  lua_getfield(L, idx, "max_out");
  o.max_out = (size_t)luaL_optnumber(L, -1, (lua_Number)o.max_out);
  lua_getfield(L, idx, "handshake_timeout");
  o.handshake_timeout = luaL_optnumber(L, -1, o.handshake_timeout);
  lua_getfield(L, idx, "max_clients");
  o.max_clients = (int)luaL_optinteger(L, -1, o.max_clients);
  lua_getfield(L, idx, "spin");
  o.spin = luaL_optnumber(L, -1, o.spin);
  lua_pop(L, 5);
  luaL_argcheck(L, o.maxlen > 0 && o.maxlen <= 0xffffffffu, idx, "bad maxlen");
  luaL_argcheck(L, o.handshake_timeout > 0, idx, "bad handshake_timeout");
  luaL_argcheck(L, o.max_clients > 0, idx, "bad max_clients");
  return o;
}

/* server(listen_fd, authkey [, opts]) -> server owning listen_fd */
static int l_server(lua_State *L) {
  int lfd = (int)luaL_checkinteger(L, 1), err = 0;
  size_t keylen;
  const char *key = check_key(L, 2, &keylen);
  lmp_srv_opts o = check_opts(L, 3);
  server *sv = lua_newuserdatauv_compat(L, sizeof *sv);
  sv->s = NULL;
  luaL_setmetatable(L, SERVER_MT);
  if (!(sv->s = lmp_srv_new(lfd, key, keylen, &o, &err)))
    return lmp_error_raise_errno(L, err, "manager server");
  return 1;
}

static server *check_server(lua_State *L) {
  server *sv = luaL_checkudata(L, 1, SERVER_MT);
  if (!sv->s) lmp_error_raise(L, "closed", "manager server is closed");
  return sv;
}

/* Appends kind, cid, data to the events table at the stack top. */
static void on_event(void *ud, const lmp_srv_event *ev) {
  lua_State *L = ud;
  static const char *const kinds[] = {"", "request", "closed", "denied"};
  int n = (int)lua_rawlen(L, -1);
  lua_pushstring(L, kinds[ev->kind]);
  lua_rawseti(L, -2, n + 1);
  lua_pushnumber(L, (lua_Number)ev->cid);
  lua_rawseti(L, -2, n + 2);
  if (ev->data) lua_pushlstring(L, ev->data, ev->len);
  else lua_pushboolean(L, 0);
  lua_rawseti(L, -2, n + 3);
}

/* srv:step([timeout]) -> {kind, cid, data, ...} (kinds: "request" with
 * the payload, "closed", "denied" with the peer's address) */
static int srv_step(lua_State *L) {
  server *sv = check_server(L);
  double deadline = lmp_check_deadline(L, 2);
  int rc;
  lua_newtable(L);
  rc = lmp_srv_step(sv->s, deadline, on_event, L);
  if (rc == -EINTR) return lmp_error_raise_interrupt(L);
  if (rc < 0) return lmp_error_raise_errno(L, rc, "manager server");
  return 1;
}

static uint64_t check_cid(lua_State *L, int idx) {
  lua_Number n = luaL_checknumber(L, idx);
  luaL_argcheck(L, n >= 0 && n < 9007199254740992.0, idx, "bad connection id");
  return (uint64_t)n;
}

/* srv:send(cid, payload) -> true, or false and "gone" | "dropped" */
static int srv_send(lua_State *L) {
  server *sv = check_server(L);
  uint64_t cid = check_cid(L, 2);
  size_t len;
  const char *p = luaL_checklstring(L, 3, &len);
  int rc = lmp_srv_send(sv->s, cid, LMP_FRAME_PICKLE, p, len);
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc < 0 && rc != -ENOBUFS) return lmp_error_raise_errno(L, rc, "reply");
  lua_pushboolean(L, 0);
  lua_pushstring(L, rc == 1 ? "gone" : "dropped");
  return 2;
}

static int srv_close_conn(lua_State *L) {
  server *sv = check_server(L);
  lua_pushboolean(L, lmp_srv_close(sv->s, check_cid(L, 2)) == 0);
  return 1;
}

static int srv_alive(lua_State *L) {
  server *sv = check_server(L);
  lua_pushboolean(L, lmp_srv_alive(sv->s, check_cid(L, 2)));
  return 1;
}

static int srv_clients(lua_State *L) {
  int hs;
  server *sv = check_server(L);
  lua_pushinteger(L, lmp_srv_clients(sv->s, &hs));
  lua_pushinteger(L, hs);
  return 2;
}

static int srv_fileno(lua_State *L) {
  lua_pushinteger(L, lmp_srv_fileno(check_server(L)->s));
  return 1;
}

static int srv_close(lua_State *L) {
  server *sv = luaL_checkudata(L, 1, SERVER_MT);
  lmp_srv_free(sv->s);
  sv->s = NULL;
  return 0;
}

/* ---- client: one connection, one call at a time ----------------------
 * call() sends a request frame and reads the reply through a buffer, so
 * a round trip costs one send, one poll and usually one read. */
typedef struct client {
  int fd;                 /* -1 once closed */
  lmp_frame_reader in;
} client;

static client *check_client(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->fd < 0) lmp_error_raise(L, "closed", "manager connection is closed");
  return c;
}

static void client_shut(client *c) {
  lmp_fd_close(c->fd);
  c->fd = -1;
  lmp_frame_reader_free(&c->in);
}

/* Waits for one whole frame: 1 and the payload, or -errno. */
static int client_read(client *c, lmp_frame_hdr *h, const char **payload,
                       double deadline) {
  double spin_until = lmp_clock_now() + SPIN_SECS;
  for (;;) {
    int rc = lmp_frame_reader_next(&c->in, h, payload);
    long got;
    if (rc != 0) return rc;
    if (lmp_clock_now() < spin_until) {
      sched_yield();                   /* a busy machine runs the server */
      got = lmp_frame_reader_fill(&c->in, c->fd);
      if (got == 0) return -EPIPE;
      if (got < 0 && got != -EAGAIN) return (int)got;
      continue;
    }
    rc = lmp_fd_wait(c->fd, POLLIN, deadline);
    if (rc == 0) return -ETIMEDOUT;
    if (rc < 0) return rc;
    got = lmp_frame_reader_fill(&c->in, c->fd);
    if (got == 0) return -EPIPE;
    if (got < 0 && got != -EAGAIN) return (int)got;
  }
}

/* client:call(request [, timeout]) -> reply. Any failure closes the
 * connection: a reply may still be on its way, so it is out of step. */
static int client_call(lua_State *L) {
  client *c = check_client(L);
  size_t len;
  const char *req = luaL_checklstring(L, 2, &len);
  double deadline = lmp_check_deadline(L, 3);
  lmp_frame_hdr h;
  const char *payload;
  int rc = lmp_frame_send(c->fd, LMP_FRAME_PICKLE, 0, req, len, deadline);
  if (rc == 0) rc = client_read(c, &h, &payload, deadline);
  if (rc < 0) {
    client_shut(c);
    if (rc == -EINTR) return lmp_error_raise_interrupt(L);
    if (rc == -ETIMEDOUT)
      return lmp_error_raise(L, "timeout", "no reply from the manager in time");
    return lmp_error_raise_errno(L, rc, "manager call");
  }
  lua_pushlstring(L, payload, h.len);
  return 1;
}

static int client_close(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  if (c->fd >= 0) client_shut(c);
  return 0;
}

static int client_closed(lua_State *L) {
  client *c = luaL_checkudata(L, 1, CLIENT_MT);
  lua_pushboolean(L, c->fd < 0);
  return 1;
}

static int client_fileno(lua_State *L) {
  lua_pushinteger(L, check_client(L)->fd);
  return 1;
}

/* client(fd [, maxlen]) -> client owning fd (an authenticated socket) */
static int l_client(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Number maxlen = luaL_optnumber(L, 2, (lua_Number)LMP_FRAME_MAX_DEFAULT);
  client *c = lua_newuserdatauv_compat(L, sizeof *c);
  c->fd = -1;
  luaL_setmetatable(L, CLIENT_MT);
  luaL_argcheck(L, fd >= 0, 1, "fd must be >= 0");
  luaL_argcheck(L, maxlen > 0 && maxlen <= 4294967295.0, 2, "bad maxlen");
  lmp_frame_reader_init(&c->in, (size_t)maxlen);
  c->fd = fd;
  return 1;
}

int luaopen_lmp_c_manager(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"client", l_client},
    {"connect", l_connect},
    {"listen", l_listen},
    {"server", l_server},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", srv_close},
    {"__close", srv_close},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"alive", srv_alive},
    {"clients", srv_clients},
    {"close", srv_close},
    {"close_conn", srv_close_conn},
    {"fileno", srv_fileno},
    {"send", srv_send},
    {"step", srv_step},
    {NULL, NULL}
  };
  static const luaL_Reg client_meta[] = {
    {"__gc", client_close},
    {"__close", client_close},
    {NULL, NULL}
  };
  static const luaL_Reg client_methods[] = {
    {"call", client_call},
    {"close", client_close},
    {"closed", client_closed},
    {"fileno", client_fileno},
    {NULL, NULL}
  };
  lmp_newclass(L, SERVER_MT, meta, methods);
  lua_pop(L, 1);
  lmp_newclass(L, CLIENT_MT, client_meta, client_methods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
