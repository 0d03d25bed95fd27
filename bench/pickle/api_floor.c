/* api_floor.c -- the floor of any decoder that builds Lua values through
 * the C API, for bench/pickle.
 *
 * tape(v) records, once, the calls that build v: lua_createtable with the
 * right sizes, a push per number, string and boolean, lua_rawseti or
 * lua_rawset per item, and a lookup for a table met before (shared or
 * cyclic). replay(tape) makes just those calls, with no format to read:
 * no varints, no bounds or depth checks. pickle.loads of the binary form
 * must make the same calls, so loads / replay is what lmp's decoding
 * costs on top of the Lua C API (lua_pushnumber + lua_rawseti is a dozen
 * nanoseconds an item, where a chunk of table constructors stores its
 * constants with one SETLIST). Plain data only: a function, a userdata
 * or a metatable makes tape() return nil; it also returns how many tables
 * are shared. walk(v) is the same floor for encoders, for trees (no
 * shared table) only: it keeps no memo, and raises on a cycle.
 *   local F = require "api_floor"; local t = F.tape(v); F.replay(t) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 502
#define lua_rawlen lua_objlen
#endif

enum { OP_TABLE, OP_SHARED, OP_REF, OP_INT, OP_FLOAT, OP_STR, OP_TRUE, OP_FALSE,
       OP_SETI, OP_SET };

typedef struct {
  unsigned char *p;
  size_t n, cap;
} tape;

static void put(lua_State *L, tape *t, const void *s, size_t n) {
  if (t->cap - t->n < n) {
    size_t cap = t->cap ? t->cap : 256;
    unsigned char *p;
    while (cap - t->n < n) cap *= 2;
    if (!(p = realloc(t->p, cap))) luaL_error(L, "not enough memory");
    t->p = p;
    t->cap = cap;
  }
  memcpy(t->p + t->n, s, n);
  t->n += n;
}

static void put_op(lua_State *L, tape *t, int op, uint32_t arg) {
  unsigned char c = (unsigned char)op;
  put(L, t, &c, 1);
  if (op == OP_TABLE || op == OP_SHARED || op == OP_REF || op == OP_SETI || op == OP_STR)
    put(L, t, &arg, 4);
}

/* seen (at index 2): table -> its number; counts (at index 3): how many
 * times each table is met, from a first walk. */
static int record(lua_State *L, tape *t, int idx, uint32_t *nobj, int depth);

static int record_table(lua_State *L, tape *t, int idx, uint32_t *nobj, int depth) {
  uint32_t na = (uint32_t)lua_rawlen(L, idx), nh = 0, i;
  int shared;
  lua_pushvalue(L, idx);
  lua_rawget(L, 2);
  if (!lua_isnil(L, -1)) {                    /* met before: a reference */
    put_op(L, t, OP_REF, (uint32_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  if (depth > 2000 || lua_getmetatable(L, idx)) return 0;
  lua_pushvalue(L, idx);
  lua_rawget(L, 3);
  shared = lua_tointeger(L, -1) > 1;
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, idx)) { nh++; lua_pop(L, 1); }
  for (i = 1; i <= na; i++) {                /* keys 1..na in the array */
    lua_rawgeti(L, idx, (lua_Integer)i);
    if (lua_isnil(L, -1)) { na = i - 1; lua_pop(L, 1); break; }
    lua_pop(L, 1);
  }
  nh -= na;
  if (shared) {
    lua_pushvalue(L, idx);
    lua_pushinteger(L, (lua_Integer)++*nobj);
    lua_rawset(L, 2);
  }
  put_op(L, t, shared ? OP_SHARED : OP_TABLE, na);
  put(L, t, &nh, 4);
  for (i = 1; i <= na; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i);
    if (!record(L, t, lua_gettop(L), nobj, depth + 1)) return 0;
    lua_pop(L, 1);
    put_op(L, t, OP_SETI, i);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TNUMBER) {
      lua_Number k = lua_tonumber(L, -2);
      if (k >= 1 && k <= na && k == (lua_Number)(lua_Integer)k) { lua_pop(L, 1); continue; }
    }
    if (!record(L, t, lua_gettop(L) - 1, nobj, depth + 1) ||
        !record(L, t, lua_gettop(L), nobj, depth + 1)) return 0;
    put_op(L, t, OP_SET, 0);
    lua_pop(L, 1);
  }
  return 1;
}

static int record(lua_State *L, tape *t, int idx, uint32_t *nobj, int depth) {
  luaL_checkstack(L, 8, "api_floor");
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
      put_op(L, t, lua_toboolean(L, idx) ? OP_TRUE : OP_FALSE, 0);
      return 1;
    case LUA_TNUMBER: {
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, idx)) {
        int64_t v = (int64_t)lua_tointeger(L, idx);
        put_op(L, t, OP_INT, 0);
        put(L, t, &v, 8);
        return 1;
      }
#endif
      {
        double x = (double)lua_tonumber(L, idx);
        put_op(L, t, OP_FLOAT, 0);
        put(L, t, &x, 8);
        return 1;
      }
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      put_op(L, t, OP_STR, (uint32_t)n);
      put(L, t, s, n);
      return 1;
    }
    case LUA_TTABLE:
      return record_table(L, t, idx, nobj, depth);
    default:
      return 0;
  }
}

/* How many times each table is met (counts at index 3). */
static void count(lua_State *L, int idx, int depth) {
  lua_Integer c;
  if (lua_type(L, idx) != LUA_TTABLE || depth > 2000) return;
  luaL_checkstack(L, 8, "api_floor");
  lua_pushvalue(L, idx);
  lua_rawget(L, 3);
  c = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, c + 1);
  lua_rawset(L, 3);
  if (c > 0) return;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count(L, lua_gettop(L) - 1, depth + 1);
    count(L, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
}

static int tape_gc(lua_State *L) {
  tape *t = (tape *)lua_touserdata(L, 1);
  free(t->p);
  t->p = NULL;
  return 0;
}

static int l_tape(lua_State *L) {
  tape *t;
  uint32_t nobj = 0;
  lua_settop(L, 1);
  lua_newtable(L);                 /* 2: seen */
  lua_newtable(L);                 /* 3: counts */
  count(L, 1, 0);
  t = (tape *)lua_newuserdata(L, sizeof *t);   /* 4 */
  memset(t, 0, sizeof *t);
  lua_newtable(L);
  lua_pushcfunction(L, tape_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, 4);
  if (!record(L, t, 1, &nobj, 0)) return 0;
  lua_settop(L, 4);
  lua_pushinteger(L, (lua_Integer)nobj);
  return 2;
}

static uint32_t get32(const unsigned char **p) {
  uint32_t v;
  memcpy(&v, *p, 4);
  *p += 4;
  return v;
}

/* replay(tape) -> the value, built by the recorded calls alone. */
static int l_replay(lua_State *L) {
  tape *t = (tape *)lua_touserdata(L, 1);
  const unsigned char *p = t->p, *end = t->p + t->n;
  lua_Integer nobj = 0;
  lua_settop(L, 1);
  lua_newtable(L);                 /* 2: shared tables by number */
  while (p < end) {
    int op = *p++;
    switch (op) {
      case OP_TABLE: case OP_SHARED: {
        uint32_t na = get32(&p), nh = get32(&p);
        luaL_checkstack(L, 4, "api_floor");
        lua_createtable(L, (int)na, (int)nh);
        if (op == OP_SHARED) {
          lua_pushvalue(L, -1);
          lua_rawseti(L, 2, ++nobj);
        }
        break;
      }
      case OP_REF: lua_rawgeti(L, 2, (lua_Integer)get32(&p)); break;
      case OP_INT: {
        int64_t v;
        memcpy(&v, p, 8);
        p += 8;
#if LUA_VERSION_NUM >= 503
        lua_pushinteger(L, (lua_Integer)v);
#else
        lua_pushnumber(L, (lua_Number)v);
#endif
        break;
      }
      case OP_FLOAT: {
        double x;
        memcpy(&x, p, 8);
        p += 8;
        lua_pushnumber(L, (lua_Number)x);
        break;
      }
      case OP_STR: {
        uint32_t n = get32(&p);
        lua_pushlstring(L, (const char *)p, n);
        p += n;
        break;
      }
      case OP_TRUE: lua_pushboolean(L, 1); break;
      case OP_FALSE: lua_pushboolean(L, 0); break;
      case OP_SETI: lua_rawseti(L, -2, (lua_Integer)get32(&p)); break;
      case OP_SET: lua_rawset(L, -3); break;
    }
  }
  return 1;
}

/* walk(v) -> byte count: the least any encoder does through the C API:
 * one lua_next per key (the array part included: about 13 ns a key on
 * this VM, Lua 5.4), each number read and its 8 bytes stored, each
 * string's bytes copied (string keys too), into a buffer kept between
 * calls. No type tags, no memo of tables met, no checks: the floor that
 * pickle.dumps is compared with. */
static void walk(lua_State *L, int idx, tape *buf, int depth) {
  if (depth > 200) luaL_error(L, "walk: a tree only (no cycle, 200 levels at most)");
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER: {
      double x = (double)lua_tonumber(L, idx);
      put(L, buf, &x, 8);
      break;
    }
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      put(L, buf, s, n);
      break;
    }
    case LUA_TTABLE:
      luaL_checkstack(L, 4, "api_floor");
      lua_pushnil(L);
      while (lua_next(L, idx)) {     /* a list's keys are not written */
        if (lua_type(L, -2) == LUA_TSTRING) walk(L, lua_gettop(L) - 1, buf, depth + 1);
        walk(L, lua_gettop(L), buf, depth + 1);
        lua_pop(L, 1);
      }
      break;
    default: {
      unsigned char c = (unsigned char)lua_type(L, idx);
      put(L, buf, &c, 1);
    }
  }
}

static int l_walk(lua_State *L) {
  static tape buf;                 /* kept: a warm encoder's buffer */
  buf.n = 0;
  walk(L, 1, &buf, 0);
  lua_pushinteger(L, (lua_Integer)buf.n);
  return 1;
}

int luaopen_api_floor(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_tape);
  lua_setfield(L, -2, "tape");
  lua_pushcfunction(L, l_replay);
  lua_setfield(L, -2, "replay");
  lua_pushcfunction(L, l_walk);
  lua_setfield(L, -2, "walk");
  return 1;
}
