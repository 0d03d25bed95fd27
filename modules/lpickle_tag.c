/* lpickle_tag.c -- the C fast path of lmp.pickle's tagged JSON form.
 *
 * lua/lmp/pickle.lua defines the tagged form and implements all of it in
 * Lua. Most non-plain data is only data, though: numbers cjson would round,
 * byte strings, holes, non-string keys, shared tables. For those, these
 * two functions build the tagged copy before cjson.encode, and rebuild the
 * value after cjson.decode, in C, numbering tables exactly as the Lua code
 * does. On anything else (functions, userdata, metatables, modules,
 * classes, the globals, too deep, odd input) they return nothing and the
 * Lua code starts again from scratch, so errors and paths stay its job.
 *   tagcopy(v, classes) -> tagged copy | nothing
 *   untag(x) -> v, true | nothing */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lpickle.h"

typedef struct {
  lua_State *L;
  int memo;          /* stack index: table -> id (false: travels by name) */
  lua_Integer n;
} tagctx;

static void push_tagged(lua_State *L, char tag, const char *s, size_t n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, LMP_PICKLE_TAG);
  luaL_addchar(&b, tag);
  luaL_addlstring(&b, s, n);
  luaL_pushresult(&b);
}

static void copy_number(lua_State *L, int idx) {
  char buf[64];
  if (lmp_pickle_number_is_plain(L, idx)) { lua_pushvalue(L, idx); return; }
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    int n = snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(L, idx));
    push_tagged(L, 'i', buf, (size_t)n);
    return;
  }
#endif
  lmp_pickle_hexfloat(buf, (double)lua_tonumber(L, idx));
  push_tagged(L, 'x', buf, 16);
}

static void copy_string(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (lmp_pickle_string_is_plain(L, idx)) { lua_pushvalue(L, idx); return; }
  if (s[0] == LMP_PICKLE_TAG && lmp_pickle_utf8ok((const unsigned char *)s, n)) {
    push_tagged(L, '\'', s, n);
    return;
  }
  lmp_pickle_b64enc(L, s, n);
  push_tagged(L, 'b', lua_tostring(L, -1), lua_rawlen(L, -1));
  lua_remove(L, -2);
}

static int copy_value(tagctx *c, int idx, int depth);

/* Sequence length (keys exactly 1..n), or -1. */
static lua_Integer seq_len(lua_State *L, int idx, lua_Integer *count) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), k = 0;
  int seq = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (seq) {
#if LUA_VERSION_NUM >= 503
      if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 || lua_tointeger(L, -2) > n)
        seq = 0;
#else
      lua_Number x = lua_type(L, -2) == LUA_TNUMBER ? lua_tonumber(L, -2) : 0;
      if (!(x >= 1 && x <= (lua_Number)n && x == (lua_Number)(lua_Integer)x)) seq = 0;
#endif
    }
    k++;
    lua_pop(L, 1);
  }
  *count = k;
  return seq && k == n ? n : -1;
}

static int copy_table(tagctx *c, int idx, int depth) {
  lua_State *L = c->L;
  lua_Integer n, count, i;
  int out;
  if (depth >= LMP_PICKLE_MAX_DEPTH || !lua_checkstack(L, 8)) return 0;
  lua_pushvalue(L, idx);
  lua_rawget(L, c->memo);
  if (lua_type(L, -1) == LUA_TNUMBER) {
    char buf[32];
    int k = snprintf(buf, sizeof buf, "%ld", (long)lua_tointeger(L, -1));
    lua_pop(L, 1);
    push_tagged(L, 'r', buf, (size_t)k);
    return 1;
  }
  if (!lua_isnil(L, -1) || lua_getmetatable(L, idx)) return 0;
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++c->n);
  lua_rawset(L, c->memo);
  n = seq_len(L, idx, &count);
  if (n >= 0) {
    lua_createtable(L, (int)n, 0);
    out = lua_gettop(L);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      if (!copy_value(c, lua_gettop(L), depth + 1)) return 0;
      lua_rawseti(L, out, i);
      lua_pop(L, 1);
    }
    return 1;
  }
  lua_createtable(L, (int)(2 + 2 * count), 0);
  out = lua_gettop(L);
  lua_pushlstring(L, LMP_PICKLE_TAG_STR "t", 2);
  lua_rawseti(L, out, 1);
  lua_pushlightuserdata(L, NULL);   /* cjson.null: no metatable */
  lua_rawseti(L, out, 2);
  i = 3;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (!copy_value(c, out + 1, depth + 1)) return 0;
    lua_rawseti(L, out, i++);
    if (!copy_value(c, out + 2, depth + 1)) return 0;
    lua_rawseti(L, out, i++);
    lua_pop(L, 1);
  }
  return 1;
}

/* Pushes the tagged copy of the value at idx; 0 when Lua must do it. */
static int copy_value(tagctx *c, int idx, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN: lua_pushvalue(L, idx); return 1;
    case LUA_TNUMBER: copy_number(L, idx); return 1;
    case LUA_TSTRING: copy_string(L, idx); return 1;
    case LUA_TTABLE: return copy_table(c, idx, depth);
    default: return 0;
  }
}

static void mark(tagctx *c, int idx) {
  lua_pushvalue(c->L, idx);
  lua_pushboolean(c->L, 0);
  lua_rawset(c->L, c->memo);
}

static int l_tagcopy(lua_State *L) {
  tagctx c;
  lua_settop(L, 2);
  lua_newtable(L);
  c.L = L;
  c.memo = 3;
  c.n = 0;
  if (lua_istable(L, 2)) {
    lua_pushnil(L);
    while (lua_next(L, 2)) { mark(&c, -1); lua_pop(L, 1); }
  }
  lmp_pushglobaltable(L);
  mark(&c, -1);
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_istable(L, -1)) mark(&c, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return copy_value(&c, 1, 0) ? 1 : 0;
}

/* ---- untag ---- */

typedef struct {
  lua_State *L;
  int objs;
  lua_Integer n;
} untagctx;

static int untag_value(untagctx *u, int idx, int depth);

int lmp_pickle_untag_leaf(lua_State *L, const char *s, size_t n) {
  char *end;
  if (n < 2 || s[0] != LMP_PICKLE_TAG) return 0;
  switch (s[1]) {
    case '\'': lua_pushlstring(L, s + 2, n - 2); return 1;
    case 'b': return lmp_pickle_b64dec(L, s + 2, n - 2);
    case 'i': {
      long long v;
      if (n < 3 || n > 24) return 0;
      v = strtoll(s + 2, &end, 10);
      if (end != s + n) return 0;
#if LUA_VERSION_NUM >= 503
      lua_pushinteger(L, (lua_Integer)v);
#else
      lua_pushnumber(L, (lua_Number)v);
#endif
      return 1;
    }
    case 'f': {
      double x;
      if (n < 3 || n > 40) return 0;
      x = strtod(s + 2, &end);
      if (end != s + n) return 0;
      lua_pushnumber(L, (lua_Number)x);
      return 1;
    }
    case 'x': {
      double x;
      if (n != 18 || !lmp_pickle_parse_hexfloat(s + 2, &x)) return 0;
      lua_pushnumber(L, (lua_Number)x);
      return 1;
    }
    default: return 0;
  }
}

static int untag_string(untagctx *u, int idx) {
  lua_State *L = u->L;
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  char *end;
  long id;
  if (n == 0 || s[0] != LMP_PICKLE_TAG) { lua_pushvalue(L, idx); return 1; }
  if (n < 2) return 0;
  if (s[1] != 'r') return lmp_pickle_untag_leaf(L, s, n);
  if (n < 3 || n > 20) return 0;
  id = strtol(s + 2, &end, 10);
  if (end != s + n || id < 1 || id > (long)u->n) return 0;
  lua_rawgeti(L, u->objs, (lua_Integer)id);
  return 1;
}

static int untag_table(untagctx *u, int idx, int depth) {
  lua_State *L = u->L;
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx), i;
  int out;
  size_t hn = 0;
  const char *head = NULL;
  if (depth > LMP_PICKLE_MAX_DEPTH + 5 || !lua_checkstack(L, 8)) return 0;
  lua_rawgeti(L, idx, 1);
  if (lua_type(L, -1) == LUA_TSTRING) head = lua_tolstring(L, -1, &hn);
  lua_pop(L, 1);   /* the string stays referenced by the table */
  if (head && hn == 2 && head[0] == LMP_PICKLE_TAG) {
    if (head[1] != 't' || n % 2) return 0;
    lua_rawgeti(L, idx, 2);
    if (lua_type(L, -1) != LUA_TLIGHTUSERDATA || lua_touserdata(L, -1)) return 0;
    lua_pop(L, 1);
    lua_createtable(L, 0, (int)(n / 2 - 1));
    out = lua_gettop(L);
    lua_pushvalue(L, out);
    lua_rawseti(L, u->objs, ++u->n);
    for (i = 3; i < n; i += 2) {
      lua_rawgeti(L, idx, i);
      if (!untag_value(u, lua_gettop(L), depth + 1)) return 0;
      if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                               lua_tonumber(L, -1) != lua_tonumber(L, -1)))
        return 0;
      lua_rawgeti(L, idx, i + 1);
      if (!untag_value(u, lua_gettop(L), depth + 1)) return 0;
      lua_remove(L, -2);
      lua_rawset(L, out);
      lua_pop(L, 1);
    }
    return 1;
  }
  lua_createtable(L, (int)n, 0);
  out = lua_gettop(L);
  lua_pushvalue(L, out);
  lua_rawseti(L, u->objs, ++u->n);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    if (!untag_value(u, lua_gettop(L), depth + 1)) return 0;
    lua_rawseti(L, out, i);
    lua_pop(L, 1);
  }
  return 1;
}

static int untag_value(untagctx *u, int idx, int depth) {
  lua_State *L = u->L;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: return untag_string(u, idx);
    case LUA_TBOOLEAN: lua_pushvalue(L, idx); return 1;
    case LUA_TNUMBER: {
#if LUA_VERSION_NUM >= 503
      lua_Integer i;
      lua_Number x = lua_tonumber(L, idx);
      if (!lua_isinteger(L, idx) && lua_numbertointeger(x, &i) && (lua_Number)i == x) {
        lua_pushinteger(L, i);
        return 1;
      }
#endif
      lua_pushvalue(L, idx);
      return 1;
    }
    case LUA_TTABLE: return untag_table(u, idx, depth);
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx)) return 0;
      lua_pushnil(L);
      return 1;
    default: return 0;
  }
}

static int l_untag(lua_State *L) {
  untagctx u;
  lua_settop(L, 1);
  lua_newtable(L);
  u.L = L;
  u.objs = 2;
  u.n = 0;
  if (!untag_value(&u, 1, 0)) return 0;
  lua_pushboolean(L, 1);
  return 2;
}

void lmp_pickle_tag_open(lua_State *L) {
  lua_pushcfunction(L, l_tagcopy);
  lua_setfield(L, -2, "tagcopy");
  lua_pushcfunction(L, l_untag);
  lua_setfield(L, -2, "untag");
}
