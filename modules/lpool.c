/* lpool.c -- "lmp.c.pool": Lua binding of the pool scheduler (core/pool.h).
 * Everything Lua-shaped (pickling, jobs, callbacks, launching workers)
 * lives in lua/lmp/pool.lua; this file converts arguments and results.
 * Slots are 1-based here, 0-based in core/. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/fd.h"
#include "../core/pool.h"
#include "lmp_aux.h"

#define POOL_MT "lmp.PoolCore"

typedef struct lpool {
  lmp_pool *p;   /* NULL once closed */
  pid_t owner;   /* a forked child's copy never closes the fds */
} lpool;

static lpool *check_lpool(lua_State *L, int idx) {
  return (lpool *)luaL_checkudata(L, idx, POOL_MT);
}

static lmp_pool *check_open(lua_State *L, int idx) {
  lpool *lp = check_lpool(L, idx);
  if (!lp->p) lmp_error_raise(L, "closed", "pool is closed");
  return lp->p;
}

static int check_slot(lua_State *L, lmp_pool *p, int idx) {
  lua_Integer s = luaL_checkinteger(L, idx);
  luaL_argcheck(L, s >= 1 && s <= lmp_pool_nslots(p), idx, "no such slot");
  return (int)s - 1;
}

static uint32_t check_u32(lua_State *L, int idx) {
  lua_Integer v = luaL_checkinteger(L, idx);
  luaL_argcheck(L, v >= 0 && v <= 0xffffffffLL, idx, "out of range");
  return (uint32_t)v;
}

static int raise_errno(lua_State *L, int e, const char *what) {
  if (e == -EINTR) return lmp_error_raise_interrupt(L);
  return lmp_error_raise_errno(L, e, what);
}

/* new(nslots, maxtasks) -> core pool */
static int l_new(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Integer maxtasks = luaL_optinteger(L, 2, 0);
  lpool *lp;
  int e;
  luaL_argcheck(L, n >= 1 && n <= 4096, 1, "1 to 4096 workers");
  luaL_argcheck(L, maxtasks >= 0, 2, "must be >= 0");
  lp = lua_newuserdatauv_compat(L, sizeof *lp);
  lp->p = NULL;                       /* closed until created (liolib) */
  lp->owner = getpid();
  luaL_setmetatable(L, POOL_MT);
  if ((e = lmp_pool_new(&lp->p, (int)n, (long)maxtasks)) < 0)
    return raise_errno(L, e, "pool");
  return 1;
}

static int p_close(lua_State *L) {
  lpool *lp = check_lpool(L, 1);
  if (lp->p && lp->owner != getpid()) {
    lp->p = NULL;     /* the fds are not ours (numbers may be reused): leak */
  } else if (lp->p) {
    lmp_pool_free(lp->p);
    lp->p = NULL;
  }
  return 0;
}

static int p_tostring(lua_State *L) {
  lpool *lp = check_lpool(L, 1);
  if (!lp->p) lua_pushliteral(L, "lmp.PoolCore (closed)");
  else lua_pushfstring(L, "lmp.PoolCore (%d slots)", lmp_pool_nslots(lp->p));
  return 1;
}

/* attach(slot, fd [, sentinel]): the pool owns fd from now on. */
static int p_attach(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  int slot = check_slot(L, p, 2);
  int fd = (int)luaL_checkinteger(L, 3);
  int sentinel = (int)luaL_optinteger(L, 4, -1);
  int e = lmp_pool_attach(p, slot, fd, sentinel);
  if (e == -EBUSY) return luaL_argerror(L, 2, "slot in use");
  if (e < 0) return raise_errno(L, e, "attach");
  return 0;
}

static int p_detach(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lmp_pool_detach(p, check_slot(L, p, 2));
  return 0;
}

static int p_used(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_pushboolean(L, lmp_pool_slot_used(p, check_slot(L, p, 2)));
  return 1;
}

static int p_stop(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  int e = lmp_pool_stop(p, check_slot(L, p, 2));
  if (e < 0) return raise_errno(L, e, "stop");
  return 0;
}

/* define(fid, payload) */
static int p_define(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  uint32_t fid = check_u32(L, 2);
  size_t len;
  const char *s = luaL_checklstring(L, 3, &len);
  int e = lmp_pool_define(p, fid, s, len);
  if (e == -EEXIST) return luaL_argerror(L, 2, "function id in use");
  if (e < 0) return raise_errno(L, e, "define");
  return 0;
}

static int p_has_fn(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_pushboolean(L, lmp_pool_has_fn(p, check_u32(L, 2)));
  return 1;
}

/* submit(job, k, fid, first, n, flags, payload [, later]): later = true
 * only queues the chunk; dispatch() (or the next step) sends it. */
static int p_submit(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_Integer job = luaL_checkinteger(L, 2);
  uint32_t k = check_u32(L, 3), fid = check_u32(L, 4);
  uint32_t first = check_u32(L, 5), n = check_u32(L, 6);
  uint32_t flags = check_u32(L, 7);
  size_t len;
  const char *s = lmp_bytes_check(L, 8, &len);          /* or an lmp.Bytes */
  int e = lua_toboolean(L, 9)
    ? lmp_pool_enqueue(p, (uint64_t)job, k, fid, first, n, flags, s, len)
    : lmp_pool_submit(p, (uint64_t)job, k, fid, first, n, flags, s, len);
  if (e == -ENOENT) return luaL_argerror(L, 4, "function id not defined");
  if (e < 0) return raise_errno(L, e, "submit");
  return 0;
}

static int p_dispatch(lua_State *L) {
  lmp_pool_dispatch(check_open(L, 1));
  return 0;
}

static int p_drop(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_pushinteger(L, (lua_Integer)lmp_pool_drop_job(p, (uint64_t)luaL_checkinteger(L, 2)));
  return 1;
}

static int p_sent(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_pushboolean(L, lmp_pool_job_sent(p, (uint64_t)luaL_checkinteger(L, 2)));
  return 1;
}

/* queued() -> chunks waiting, chunks in workers' hands */
static int p_queued(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lua_pushinteger(L, (lua_Integer)lmp_pool_queued(p));
  lua_pushinteger(L, (lua_Integer)lmp_pool_inflight(p));
  return 2;
}

static int p_fileno(lua_State *L) {
  lua_pushinteger(L, lmp_pool_fileno(check_open(L, 1)));
  return 1;
}

/* step([timeout]) -> events pending. nil: wait as long as it takes. */
static int p_step(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  double deadline = lmp_check_deadline(L, 2);
  int r = lmp_pool_step(p, deadline);
  if (r < 0) return raise_errno(L, r, "pool");
  lua_pushinteger(L, r);
  return 1;
}

/* A result payload of LMP_BYTES_MIN or more comes as lmp.Bytes
 * (lmp_aux.h), which the reader decodes in place and frees at once: a
 * 1 MiB result copied into a string would be garbage that Lua keeps until
 * its next collection, and the next one would land in fresh memory. */

/* event() -> "done", slot, job, k, first, n, ok, payload (string or Bytes)
 *          | "exit", slot, job, k, first, n, lost  | nil */
static int p_event(lua_State *L) {
  lmp_pool *p = check_open(L, 1);
  lmp_pool_event ev;
  if (!lmp_pool_next_event(p, &ev)) return 0;
  lua_pushstring(L, ev.kind == LMP_POOL_EV_DONE ? "done" : "exit");
  lua_pushinteger(L, ev.slot + 1);
  lua_pushinteger(L, (lua_Integer)ev.job);
  lua_pushinteger(L, (lua_Integer)ev.k);
  lua_pushinteger(L, (lua_Integer)ev.first);
  lua_pushinteger(L, (lua_Integer)ev.n);
  if (ev.kind == LMP_POOL_EV_EXIT) {
    lua_pushboolean(L, ev.lost);
    return 7;
  }
  lua_pushboolean(L, ev.ok);
  /* (a memory error while pushing would leak this one payload) */
  if (ev.len >= LMP_BYTES_MIN) {       /* handed over as it is: no copy */
    lmp_bytes_push(L, ev.payload, ev.len);
    return 8;
  }
  lua_pushlstring(L, ev.payload ? ev.payload : "", ev.len);
  lmp_pool_event_free(&ev);
  return 8;
}

/* ---- worker side ---------------------------------------------------------- */

#define WORKER_MT "lmp.PoolWorkerChannel"

typedef struct wchan {
  int fd;                  /* -1 once closed */
  lmp_frame_reader in;
} wchan;

static wchan *check_wchan(lua_State *L) {
  wchan *w = (wchan *)luaL_checkudata(L, 1, WORKER_MT);
  if (w->fd < 0) lmp_error_raise(L, "closed", "worker channel is closed");
  return w;
}

/* worker(fd) -> the worker's end of its channel (owns fd; blocking). */
static int l_worker(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  wchan *w;
  luaL_argcheck(L, fd >= 0, 1, "fd must be >= 0");
  w = lua_newuserdatauv_compat(L, sizeof *w);
  w->fd = -1;
  lmp_frame_reader_init(&w->in, 0);
  luaL_setmetatable(L, WORKER_MT);
  lmp_fd_set_nonblock(fd, 0);      /* one read() per wait, no poll() */
  lmp_fd_set_cloexec(fd, 1);
  w->fd = fd;
  return 1;
}

static int w_close(lua_State *L) {
  wchan *w = (wchan *)luaL_checkudata(L, 1, WORKER_MT);
  if (w->fd >= 0) lmp_fd_close(w->fd);
  w->fd = -1;
  lmp_frame_reader_free(&w->in);
  return 0;
}

static const char *msg_name(int type) {
  switch (type) {
  case LMP_POOL_TASK: return "task";
  case LMP_POOL_DEF: return "def";
  case LMP_POOL_FORGET: return "forget";
  default: return "stop";
  }
}

/* recv([timeout]) -> "task", fid, args, cid, first, n, flags
 *         | "def", fid, payload | "forget", fid | "stop"
 *         | "idle" (nothing came within timeout)
 *         | nil (the master is gone) */
/* A big chunk of arguments goes to the worker's Lua as lmp.Bytes (see
 * LMP_BYTES_MIN): a copy still, as m.data lives in the reader's buffer, but
 * one the worker frees once decoded, so the next chunk reuses it. */
static void push_task_data(lua_State *L, const lmp_pool_msg *m) {
  char *copy;
  if (m->type == LMP_POOL_TASK && m->len >= LMP_BYTES_MIN && (copy = malloc(m->len))) {
    memcpy(copy, m->data, m->len);
    lmp_bytes_push(L, copy, m->len);
    return;
  }
  lua_pushlstring(L, m->data ? m->data : "", m->len);
}

static int w_recv(lua_State *L) {
  wchan *w = check_wchan(L);
  lmp_pool_msg m;
  int e;
  if (!lua_isnoneornil(L, 2) && lmp_frame_reader_pending(&w->in) == 0) {
    /* the fd blocks (one read per message): wait for input first */
    e = lmp_fd_wait(w->fd, POLLIN, lmp_deadline(luaL_checknumber(L, 2)));
    if (e == 0) {
      lua_pushliteral(L, "idle");
      return 1;
    }
    if (e < 0) return raise_errno(L, e, "worker recv");
  }
  e = lmp_pool_worker_recv(w->fd, &w->in, &m, LMP_FOREVER);
  if (e == -EPIPE || e == -ECONNRESET) return 0;
  if (e < 0) return raise_errno(L, e, "worker recv");
  lua_pushstring(L, msg_name(m.type));
  lua_pushinteger(L, (lua_Integer)m.fid);
  push_task_data(L, &m);
  if (m.type != LMP_POOL_TASK) return 3;
  lua_pushinteger(L, (lua_Integer)m.cid);
  lua_pushinteger(L, (lua_Integer)m.first);
  lua_pushinteger(L, (lua_Integer)m.n);
  lua_pushinteger(L, (lua_Integer)(m.flags & 0xffffu));
  return 7;
}

/* send(cid, ok, payload) -> true, or false if the master is gone */
static int w_send(lua_State *L) {
  wchan *w = check_wchan(L);
  lua_Integer cid = luaL_checkinteger(L, 2);
  int ok = lua_toboolean(L, 3);
  size_t len;
  const char *s = lmp_bytes_check(L, 4, &len);          /* or an lmp.Bytes */
  int e = lmp_pool_worker_send(w->fd, (uint64_t)cid, ok, s, len, LMP_FOREVER);
  if (e == -EPIPE || e == -ECONNRESET) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (e < 0) return raise_errno(L, e, "worker send");
  lua_pushboolean(L, 1);
  return 1;
}

/* isatty(fd) -> boolean (for progress lines on a terminal only) */
static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
  return 1;
}

int luaopen_lmp_c_pool(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__gc", p_close},
    {"__close", p_close},
    {"__tostring", p_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"attach", p_attach},
    {"close", p_close},
    {"define", p_define},
    {"detach", p_detach},
    {"drop", p_drop},
    {"event", p_event},
    {"fileno", p_fileno},
    {"has_fn", p_has_fn},
    {"queued", p_queued},
    {"sent", p_sent},
    {"step", p_step},
    {"stop", p_stop},
    {"submit", p_submit},
    {"dispatch", p_dispatch},
    {"used", p_used},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"isatty", l_isatty},
    {"new", l_new},
    {"worker", l_worker},
    {NULL, NULL}
  };
  static const luaL_Reg wmeta[] = {
    {"__gc", w_close},
    {"__close", w_close},
    {NULL, NULL}
  };
  static const luaL_Reg wmethods[] = {
    {"close", w_close},
    {"recv", w_recv},
    {"send", w_send},
    {NULL, NULL}
  };
  lmp_newclass(L, POOL_MT, meta, methods);
  lua_pop(L, 1);
  lmp_newclass(L, WORKER_MT, wmeta, wmethods);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, LMP_POOL_AHEAD_MAX);
  lua_setfield(L, -2, "AHEAD_MAX");
  return 1;
}
