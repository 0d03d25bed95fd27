/* lmp_aux.c -- helpers shared by every binding (see lmp_aux.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>

#include "../core/clock.h"
#include "../core/intr.h"
#include "lmp_aux.h"

#if LUA_VERSION_NUM < 502 && !defined(LMP_LUAJIT)
void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

void *luaL_testudata(lua_State *L, int idx, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2)) p = NULL;
    lua_pop(L, 2);
    return p;
  }
  return NULL;
}

void luaL_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}

void luaL_traceback(lua_State *L, lua_State *L1, const char *msg, int level) {
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_remove(L, -2);
  if (L1 != L) return;  /* only used on the running thread */
  if (msg) lua_pushstring(L, msg); else lua_pushnil(L);
  lua_pushinteger(L, level + 1);
  lua_call(L, 2, 1);
}
#endif

static int error_tostring(lua_State *L) {
  luaL_Buffer b;
  int tb;
  /* the traceback is fetched before the buffer starts: no luaL_add*
   * call may run while a value of ours sits above the buffer (Lua 5.4
   * then takes that value for the buffer's box once the text outgrows
   * LUAL_BUFFERSIZE, and crashes) */
  lua_settop(L, 1);
  lua_getfield(L, 1, "traceback");
  tb = lua_isstring(L, 2);
  luaL_buffinit(L, &b);
  lua_getfield(L, 1, "kind");
  luaL_addvalue(&b);
  luaL_addstring(&b, ": ");
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) { lua_pop(L, 1); lua_pushliteral(L, "?"); }
  luaL_addvalue(&b);
  if (tb) {
    luaL_addstring(&b, "\n");
    lua_pushvalue(L, 2);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

void lmp_error_init(lua_State *L) {
  if (luaL_newmetatable(L, LMP_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "lmp.Error");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
}

static void push_error_v(lua_State *L, const char *kind, const char *fmt,
                         va_list ap) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushvfstring(L, fmt, ap);
  lua_setfield(L, -2, "message");
  lmp_error_init(L);
  luaL_getmetatable(L, LMP_ERROR_MT);
  lua_setmetatable(L, -2);
}

void lmp_error_push(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_error_v(L, kind, fmt, ap);
  va_end(ap);
}

int lmp_error_raise(lua_State *L, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push_error_v(L, kind, fmt, ap);
  va_end(ap);
  return lua_error(L);
}

static const char *errno_kind(int e) {
  switch (e) {
    case ETIMEDOUT: return "timeout";
    case EPIPE: case ECONNRESET: case EMSGSIZE: case EPROTO: return "broken";
    case EBADF: return "closed";
    case EINTR: return "interrupted";
    default: return "os";
  }
}

int lmp_error_raise_errno(lua_State *L, int neg_errno, const char *what) {
  int e = -neg_errno;
  if (e == EINTR) return lmp_error_raise_interrupt(L);
  const char *why = e == EPIPE ? "peer closed the connection"
                  : e == EMSGSIZE ? "frame larger than the channel's limit"
                  : e == EPROTO ? "malformed frame" : strerror(e);
  lmp_error_push(L, errno_kind(e), "%s: %s", what, why);
  lua_pushinteger(L, e);
  lua_setfield(L, -2, "errno");
  return lua_error(L);
}

int lmp_error_raise_interrupt(lua_State *L) {
  int sig = lmp_intr_pending;
  lmp_intr_pending = 0;
  lua_sethook(L, NULL, 0, 0);   /* the runtime's pending hook, if any */
  lmp_error_push(L, "interrupted", "interrupted!");
  lua_pushinteger(L, sig ? sig : SIGINT);
  lua_setfield(L, -2, "signal");
  return lua_error(L);
}

int lmp_error_is(lua_State *L, int idx, const char *kind) {
  int ok = 0;
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, LMP_ERROR_MT);
  ok = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (ok && kind) {
    lua_getfield(L, idx, "kind");
    ok = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), kind) == 0;
    lua_pop(L, 1);
  }
  return ok;
}

double lmp_check_deadline(lua_State *L, int idx) {
  double t;
  if (lua_isnoneornil(L, idx)) return LMP_FOREVER;
  t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t >= 0, idx, "timeout must be >= 0 or nil");
  return lmp_deadline(t);
}

void lmp_newclass(lua_State *L, const char *tname, const luaL_Reg *meta,
                  const luaL_Reg *methods) {
  if (luaL_newmetatable(L, tname)) {
    if (meta) luaL_setfuncs(L, meta, 0);
    if (methods) {
      lua_newtable(L);
      luaL_setfuncs(L, methods, 0);
      lua_setfield(L, -2, "__index");
    }
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
  }
}

/* ---- Bytes ---- */

typedef struct lbytes {
  char *p;       /* may be NULL when n is 0 */
  size_t n;
  int freed;
} lbytes;

/* The bytes of the live Bytes b at idx (raises once freed). */
static const char *live_bytes(lua_State *L, int idx, const lbytes *b) {
  if (b->freed) luaL_argerror(L, idx, "bytes already freed");
  return b->p ? b->p : "";
}

static lbytes *check_bytes(lua_State *L, int idx) {
  lbytes *b = (lbytes *)luaL_checkudata(L, idx, LMP_BYTES_MT);
  live_bytes(L, idx, b);
  return b;
}

/* b:free(), and __gc: idempotent */
static int bytes_free(lua_State *L) {
  lbytes *b = (lbytes *)luaL_checkudata(L, 1, LMP_BYTES_MT);
  free(b->p);
  b->p = NULL;
  b->freed = 1;
  return 0;
}

static int bytes_tostring(lua_State *L) {
  lbytes *b = (lbytes *)luaL_checkudata(L, 1, LMP_BYTES_MT);
  lua_pushlstring(L, live_bytes(L, 1, b), b->n);
  return 1;
}

static int bytes_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_bytes(L, 1)->n);
  return 1;
}

static int bytes_byte1(lua_State *L) {
  lbytes *b = check_bytes(L, 1);
  if (!b->n) return 0;
  lua_pushinteger(L, (unsigned char)b->p[0]);
  return 1;
}

/* b:sub(i, j): as string.sub, for positive i <= j (a pool's frame parts) */
static int bytes_sub(lua_State *L) {
  lbytes *b = check_bytes(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
  if (i < 1) i = 1;
  if (j > (lua_Integer)b->n) j = (lua_Integer)b->n;
  if (i > j) lua_pushliteral(L, "");
  else lua_pushlstring(L, b->p + i - 1, (size_t)(j - i + 1));
  return 1;
}

static int bytes_name(lua_State *L) {
  lbytes *b = (lbytes *)luaL_checkudata(L, 1, LMP_BYTES_MT);
  if (b->freed) lua_pushliteral(L, "lmp.Bytes (freed)");
  else lua_pushfstring(L, "lmp.Bytes (%d bytes)", (int)b->n);
  return 1;
}

void lmp_bytes_push(lua_State *L, char *p, size_t n) {
  static const luaL_Reg meta[] = {
    {"__gc", bytes_free}, {"__len", bytes_len}, {"__tostring", bytes_name}, {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"free", bytes_free}, {"tostring", bytes_tostring}, {"byte1", bytes_byte1},
    {"sub", bytes_sub}, {NULL, NULL}
  };
  lbytes *b;
  if (!lua_checkstack(L, 4)) { free(p); luaL_error(L, "stack overflow"); }
  b = (lbytes *)lua_newuserdatauv_compat(L, sizeof *b);   /* (out of memory: p leaks) */
  b->p = p;
  b->n = p ? n : 0;
  b->freed = 0;
  lmp_newclass(L, LMP_BYTES_MT, meta, methods);
  lua_setmetatable(L, -2);
}

const char *lmp_bytes_check(lua_State *L, int idx, size_t *n) {
  lbytes *b;
  if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, n);
  b = (lbytes *)luaL_testudata(L, idx, LMP_BYTES_MT);
  if (!b) {
    luaL_argerror(L, idx, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, idx)));
    return NULL;
  }
  *n = b->n;
  return live_bytes(L, idx, b);
}
