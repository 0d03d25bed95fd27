/* lqueue.c -- "lmp.c.queue": Queue, JoinableQueue and SimpleQueue over
 * core/queue.c. Values are pickled (lmp.pickle: codec = "json" or
 * "binary"; absent, lmp.pickle.default_codec() chooses, JSON unless
 * lmp.set_codec or LMP_CODEC says otherwise) by the encoder kept as an
 * upvalue of put, and read back by pickle.decoder() (either form) in get.
 * The codec is stored in the queue's block: every process uses it. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/queue.h"
#include "lshm.h"

enum { K_QUEUE, K_JOINABLE, K_SIMPLE, K_N };
static const char *const class_names[K_N] = {
  "lmp.Queue", "lmp.JoinableQueue", "lmp.SimpleQueue"
};

#define DEFAULT_CAPACITY (1u << 20)

typedef struct qobj {
  lmp_queue q;     /* first: lshm.h's cache reads the lmp_shm at offset 0 */
  int kind;
} qobj;

/* upvalues of the methods that (un)pickle */
#define UV_JSON lua_upvalueindex(1)
#define UV_BINARY lua_upvalueindex(2)
#define UV_LOADS lua_upvalueindex(3)

static qobj *check_any(lua_State *L, int idx) {
  qobj *o = lua_touserdata(L, idx);
  int k;
  if (o && lua_getmetatable(L, idx)) {
    for (k = 0; k < K_N; k++) {
      luaL_getmetatable(L, class_names[k]);
      if (lua_rawequal(L, -1, -2)) break;
      lua_pop(L, 1);
    }
    lua_pop(L, k < K_N ? 2 : 1);
    if (k < K_N) {
      if (!o->q.h) lmp_error_raise(L, "closed", "queue is closed");
      return o;
    }
  }
  luaL_argerror(L, idx, "lmp.Queue expected");
  return NULL;
}

static qobj *new_qobj(lua_State *L, int kind) {
  qobj *o = lua_newuserdatauv_compat(L, sizeof *o);
  memset(o, 0, sizeof *o);
  o->kind = kind;
  luaL_setmetatable(L, class_names[kind]);
  return o;
}

/* upvalue of the constructors: the lmp.pickle module */
#define UV_PICKLE lua_upvalueindex(1)

/* (maxsize, opts) or (opts) for SimpleQueue */
static int new_queue(lua_State *L, int kind) {
  lua_Number maxsize = 0, capacity = DEFAULT_CAPACITY;
  int opts = kind == K_SIMPLE ? 1 : 2, codec = -1, r;
  qobj *o;
  if (kind != K_SIMPLE) {
    maxsize = luaL_optnumber(L, 1, 0);
    if (!(maxsize == floor(maxsize) && fabs(maxsize) < 1e15))
      luaL_argerror(L, 1, "maxsize must be an integer");
  }
  if (!lua_isnoneornil(L, opts)) {
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_getfield(L, opts, "codec");
    if (!lua_isnil(L, -1)) {
      const char *c = lua_tostring(L, -1);
      if (c && strcmp(c, "binary") == 0) codec = 1;
      else if (c && strcmp(c, "json") == 0) codec = 0;
      else
        luaL_argerror(L, opts, "codec must be \"json\" or \"binary\"");
    }
    lua_getfield(L, opts, "capacity");
    capacity = luaL_optnumber(L, -1, DEFAULT_CAPACITY);
    if (!(capacity >= 64 && capacity <= 1e12))
      luaL_argerror(L, opts, "capacity must be between 64 and 1e12 bytes");
    lua_pop(L, 2);
  }
  if (codec < 0) {       /* not given: lmp.pickle.default_codec() */
    const char *c;
    lua_getfield(L, UV_PICKLE, "default_codec");
    lua_call(L, 0, 1);
    c = lua_tostring(L, -1);
    codec = c && strcmp(c, "binary") == 0;
    lua_pop(L, 1);
  }
  o = new_qobj(L, kind);
  r = lmp_queue_create(&o->q, (size_t)capacity, (int64_t)maxsize,
                       kind == K_JOINABLE ? LMP_QUEUE_JOINABLE : 0,
                       (unsigned)codec);
  if (r < 0) return lmp_shmobj_raise(L, r, "create", class_names[kind]);
  lmp_shmobj_cache_put(L, -1, o->q.shm.name);
  return 1;
}

static int l_queue(lua_State *L) { return new_queue(L, K_QUEUE); }
static int l_joinable(lua_State *L) { return new_queue(L, K_JOINABLE); }
static int l_simple(lua_State *L) { return new_queue(L, K_SIMPLE); }

static int raise_q(lua_State *L, int r, const char *what) {
  if (r == -EINTR) return lmp_error_raise_interrupt(L);
  return lmp_error_raise_errno(L, r, what);
}

/* put(v [, timeout]): raises "full" when no room by the deadline. */
static int q_put(lua_State *L) {
  qobj *o = check_any(L, 1);
  double deadline = lmp_shmobj_deadline(L, 3);
  const char *s;
  size_t len;
  int r;
  lua_pushvalue(L, lmp_queue_tag(&o->q) == 1 ? UV_BINARY : UV_JSON);
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);
  s = lua_tolstring(L, -1, &len);
  if (!s) return luaL_error(L, "pickle encoder returned no string");
  r = lmp_queue_put(&o->q, s, len, deadline);
  if (r == -EAGAIN) return lmp_error_raise(L, "full", "queue is full");
  if (r < 0) return raise_q(L, r, "queue put");
  return 0;
}

/* get([timeout]) -> v: raises "empty" when nothing came by the deadline. */
static int q_get(lua_State *L) {
  qobj *o = check_any(L, 1);
  size_t len = 0;
  int r = lmp_queue_get(&o->q, &len, lmp_shmobj_deadline(L, 2));
  if (r == -EAGAIN) return lmp_error_raise(L, "empty", "queue is empty");
  if (r == -EIO) return lmp_error_raise(L, "broken", "queue item lost: its block is gone");
  if (r < 0) return raise_q(L, r, "queue get");
  lua_pushvalue(L, UV_LOADS);
  lua_pushlstring(L, o->q.buf, len);
  lua_call(L, 1, 1);
  return 1;
}

static int q_put_nowait(lua_State *L) {
  lua_settop(L, 2);
  lua_pushboolean(L, 0);
  return q_put(L);
}

static int q_get_nowait(lua_State *L) {
  lua_settop(L, 1);
  lua_pushboolean(L, 0);
  return q_get(L);
}

static int q_qsize(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp_queue_size(&check_any(L, 1)->q));
  return 1;
}

static int q_empty(lua_State *L) {
  lua_pushboolean(L, lmp_queue_size(&check_any(L, 1)->q) == 0);
  return 1;
}

static int q_full(lua_State *L) {
  lua_pushboolean(L, lmp_queue_full(&check_any(L, 1)->q));
  return 1;
}

static int q_maxsize(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp_queue_maxsize(&check_any(L, 1)->q));
  return 1;
}

static int q_recoveries(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lmp_queue_recoveries(&check_any(L, 1)->q));
  return 1;
}

/* codec() -> "json" or "binary": the codec stored in the queue's block */
static int q_codec(lua_State *L) {
  lua_pushstring(L, lmp_queue_tag(&check_any(L, 1)->q) == 1 ? "binary" : "json");
  return 1;
}

static int q_name(lua_State *L) {
  qobj *o = lua_touserdata(L, 1);
  lua_pushstring(L, o->q.shm.name);
  return 1;
}

static int q_task_done(lua_State *L) {
  qobj *o = check_any(L, 1);
  int r = lmp_queue_task_done(&o->q);
  if (r == -ERANGE) return luaL_error(L, "task_done() called too many times");
  if (r < 0) return raise_q(L, r, "task_done");
  return 0;
}

static int q_join(lua_State *L) {
  qobj *o = check_any(L, 1);
  int r = lmp_queue_join(&o->q, lmp_check_deadline(L, 2));
  if (r == -ETIMEDOUT) return lmp_error_raise(L, "timeout", "join timed out");
  if (r < 0) return raise_q(L, r, "join");
  return 0;
}

static int q_close(lua_State *L) {
  qobj *o = lua_touserdata(L, 1);
  if (o->q.h) lmp_queue_close(&o->q, o->q.shm.creator == getpid());
  return 0;
}

static int q_tostring(lua_State *L) {
  qobj *o = lua_touserdata(L, 1);
  if (o->q.h)
    lua_pushfstring(L, "%s (%s, %d items)", class_names[o->kind], o->q.shm.name,
                    (int)lmp_queue_size(&o->q));
  else
    lua_pushfstring(L, "%s (closed)", class_names[o->kind]);
  return 1;
}

static int q_pickle(lua_State *L) {
  qobj *o = lua_touserdata(L, 1);
  if (!o->q.h) return lmp_error_raise(L, "closed", "queue is closed");
  lmp_shmobj_state(L, &o->q.shm, "lmp.queue", "lmp.c.queue");
  return 1;
}

static int q_unpickle(lua_State *L, int kind) {
  const char *name = lmp_shmobj_state_name(L, 1);
  qobj *o;
  int r;
  if (lmp_shmobj_cache_get(L, name, class_names[kind])) return 1;
  o = new_qobj(L, kind);
  if ((r = lmp_queue_attach(&o->q, name)) < 0) {
    if (r == -EINVAL) return lmp_error_raise(L, "os", "'%s' is not an lmp queue", name);
    return lmp_shmobj_raise(L, r, "attach", name);
  }
  lmp_shmobj_cache_put(L, -1, name);
  return 1;
}

static int u_queue(lua_State *L) { return q_unpickle(L, K_QUEUE); }
static int u_joinable(lua_State *L) { return q_unpickle(L, K_JOINABLE); }
static int u_simple(lua_State *L) { return q_unpickle(L, K_SIMPLE); }

/* Pushes pickle.encoder("json"), encoder("binary"), decoder(). */
static void push_codecs(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.pickle");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "encoder");
  lua_pushliteral(L, "json");
  lua_call(L, 1, 1);
  lua_getfield(L, -2, "encoder");
  lua_pushliteral(L, "binary");
  lua_call(L, 1, 1);
  lua_getfield(L, -3, "decoder");
  lua_call(L, 0, 1);
  lua_remove(L, -4);
}

static void add_class(lua_State *L, int kind, lua_CFunction unpickle, int joinable) {
  static const luaL_Reg meta[] = {
    {"__close", q_close},
    {"__gc", q_close},
    {"__pickle", q_pickle},
    {"__tostring", q_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"close", q_close},
    {"codec", q_codec},
    {"empty", q_empty},
    {"full", q_full},
    {"get", q_get},
    {"get_nowait", q_get_nowait},
    {"maxsize", q_maxsize},
    {"name", q_name},
    {"put", q_put},
    {"put_nowait", q_put_nowait},
    {"qsize", q_qsize},
    {"recoveries", q_recoveries},
    {NULL, NULL}
  };
  static const luaL_Reg join_m[] = {
    {"join", q_join},
    {"task_done", q_task_done},
    {NULL, NULL}
  };
  lmp_newclass(L, class_names[kind], meta, NULL);
  lua_pushcfunction(L, unpickle);
  lua_setfield(L, -2, "__unpickle");
  lua_newtable(L);
  push_codecs(L);
  luaL_setfuncs(L, methods, 3);
  if (joinable) luaL_setfuncs(L, join_m, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int luaopen_lmp_c_queue(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"JoinableQueue", l_joinable},
    {"Queue", l_queue},
    {"SimpleQueue", l_simple},
    {NULL, NULL}
  };
  add_class(L, K_QUEUE, u_queue, 0);
  add_class(L, K_JOINABLE, u_joinable, 1);
  add_class(L, K_SIMPLE, u_simple, 0);
  lua_createtable(L, 0, 4);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.pickle");
  lua_call(L, 1, 1);
  luaL_setfuncs(L, funcs, 1);
  lua_pushliteral(L, "lmp.c.queue 1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
