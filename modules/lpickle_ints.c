/* lpickle_ints.c -- a pool's JSON lists of integers, without cjson.
 *
 * A Pool.map of tiny tasks moves lists of small integers both ways, and
 * cjson writes each number with snprintf("%.14g") and reads it with
 * strtod: 170 ns an integer here, more than Python's whole map spends on
 * one. These two functions write and read exactly the JSON cjson would
 * (the text "[1,-2,3]"), for that one shape, and say "not mine" (nil,
 * false) for anything else, which then takes the usual path:
 *   intlist(t, first, last) -> JSON text of t[first..last] | nil
 *   intlist_load(s [, out, offset, n]) -> list | true, or nil | false
 * intlist takes a table without a metatable whose items first..last are
 * all integers cjson keeps (|i| < 10^14; in 5.1 integral numbers other
 * than -0); it reads them raw, and gives a text of LMP_BYTES_MIN bytes or
 * more as an lmp.Bytes. intlist_load takes only canonical text ("[",
 * integers of at most 15 digits, no leading zeros, no "-0", commas, "]",
 * nothing else) and builds what cjson.decode and pickle's fix would:
 * integers (5.3+) or numbers (5.1); with out it stores item i in
 * out[offset + i] and insists on exactly n items. */
#include <stdlib.h>
#include <string.h>

#include "lpickle.h"

#define INT_LIMIT 100000000000000LL      /* 10^14: cjson's 14 digits */
#define MAX_TEXT 16                      /* "-" + 14 digits + "," */

/* The integer at idx if cjson writes it exactly, in *v; else 0. */
static int plain_int(lua_State *L, int idx, long long *v) {
#if LUA_VERSION_NUM >= 503
  lua_Integer i;
  if (!lua_isinteger(L, idx)) return 0;
  i = lua_tointeger(L, idx);
  if (!(i > -INT_LIMIT && i < INT_LIMIT)) return 0;
  *v = (long long)i;
  return 1;
#else
  lua_Number x;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  x = lua_tonumber(L, idx);
  if (!(x > -(lua_Number)INT_LIMIT && x < (lua_Number)INT_LIMIT)) return 0;
  *v = (long long)x;
  if ((lua_Number)*v != x || (x == 0 && 1 / x < 0)) return 0;   /* fraction, -0 */
  return 1;
#endif
}

/* Writes v in decimal at p; returns the end. */
static char *put_decimal(char *p, long long v) {
  char tmp[24], *t = tmp + sizeof tmp;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do { *--t = (char)('0' + u % 10); u /= 10; } while (u);
  if (v < 0) *p++ = '-';
  memcpy(p, t, (size_t)(tmp + sizeof tmp - t));
  return p + (tmp + sizeof tmp - t);
}

/* Writes t[first..last] into buf (room for MAX_TEXT a number + 2);
 * returns the length, or 0 when an item is not a plain integer. */
static size_t write_list(lua_State *L, lua_Integer first, lua_Integer last, char *buf) {
  char *p = buf;
  lua_Integer i;
  long long v;
  *p++ = '[';
  for (i = first; i <= last; i++) {
    int ok;
    lua_rawgeti(L, 1, i);
    ok = plain_int(L, -1, &v);
    lua_pop(L, 1);
    if (!ok) return 0;
    p = put_decimal(p, v);
    *p++ = ',';
  }
  p[-1] = ']';
  return (size_t)(p - buf);
}

static int l_intlist(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2), last = luaL_checkinteger(L, 3);
  size_t cap, len;
  char *buf;
  if (lua_type(L, 1) != LUA_TTABLE || lua_getmetatable(L, 1) ||
      last < first || (size_t)(last - first) >= ((size_t)-1 - 2) / MAX_TEXT) {
    lua_pushnil(L);
    return 1;
  }
  lua_settop(L, 3);
  cap = (size_t)(last - first + 1) * MAX_TEXT + 2;
  if (!(buf = malloc(cap))) return luaL_error(L, "not enough memory");
  len = write_list(L, first, last, buf);
  if (len == 0) {
    free(buf);
    lua_pushnil(L);
  } else if (len >= LMP_BYTES_MIN) {
    lmp_bytes_push(L, buf, len);       /* sent, then freed by the pool */
  } else {
    lua_pushlstring(L, buf, len);
    free(buf);
  }
  return 1;
}

/* Reads a canonical integer at *pp (before end) into *v; 0 if none. */
static int read_int(const char **pp, const char *end, long long *v) {
  const char *p = *pp, *d;
  int neg = 0;
  long long u = 0;
  if (p < end && *p == '-') { neg = 1; p++; }
  d = p;
  while (p < end && *p >= '0' && *p <= '9' && p - d < 16) u = u * 10 + (*p++ - '0');
  if (p == d || p - d > 15 || (*d == '0' && (p - d > 1 || neg))) return 0;
  *v = neg ? -u : u;
  *pp = p;
  return 1;
}

static void push_int(lua_State *L, long long v) {
#if LUA_VERSION_NUM >= 503
  lua_pushinteger(L, (lua_Integer)v);
#else
  lua_pushnumber(L, (lua_Number)v);
#endif
}

/* Parses s[0..n) into the table at t, item i at key offset + i; returns
 * the item count, or -1 when s is not a canonical list of integers or
 * holds more than max items (it stops there: out's other keys are
 * another chunk's). */
static lua_Integer read_list(lua_State *L, const char *s, size_t n, int t,
                             lua_Integer offset, lua_Integer max) {
  const char *p = s + 1, *end = s + n;
  lua_Integer k = 0;
  long long v;
  if (n < 3 || s[0] != '[' || s[n - 1] != ']') return -1;
  for (;;) {
    if (k == max || !read_int(&p, end - 1, &v)) return -1;
    push_int(L, v);
    lua_rawseti(L, t, offset + ++k);
    if (p == end - 1) return k;
    if (*p++ != ',') return -1;
  }
}

static int l_intlist_load(lua_State *L) {
  size_t n, items = 1, i;
  lua_Integer offset, max;
  const char *s = lmp_bytes_check(L, 1, &n);
  if (n < 3 || s[0] != '[' || s[n - 1] != ']' || !(s[1] == '-' || (s[1] >= '0' && s[1] <= '9'))) {
    lua_pushnil(L);
    return 1;
  }
  if (lua_isnoneornil(L, 2)) {
    for (i = 1; i < n; i++) items += s[i] == ',';
    lua_createtable(L, items > 0x7fffffff ? 0 : (int)items, 0);
    if (read_list(L, s, n, lua_gettop(L), 0, (lua_Integer)items) < 0) lua_pushnil(L);
    return 1;
  }
  luaL_checktype(L, 2, LUA_TTABLE);
  offset = luaL_checkinteger(L, 3);
  max = luaL_checkinteger(L, 4);
  lua_pushboolean(L, read_list(L, s, n, 2, offset, max) == max);
  return 1;
}

void lmp_pickle_ints_open(lua_State *L) {
  lua_pushcfunction(L, l_intlist);
  lua_setfield(L, -2, "intlist");
  lua_pushcfunction(L, l_intlist_load);
  lua_setfield(L, -2, "intlist_load");
}
