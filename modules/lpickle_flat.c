/* lpickle_flat.c -- flat JSON lists, without cjson.
 *
 * A Pool.map of tiny tasks moves lists of small numbers or short strings
 * both ways. cjson writes each number with snprintf("%.14g") and reads it
 * with strtod (170 ns an integer here, more than Python's whole map spends
 * on one), and pickle's exact layer walks every item once more before
 * cjson does. These functions write and read exactly the JSON cjson would
 * (the text ["a",-2,0.5,"b\/c"]) for that one shape, and say "not mine"
 * (nil, false, 0) for anything else, which then takes the usual path:
 *   flatlist(t, first, last) -> JSON text of t[first..last] | nil
 *   flatlist_load(s [, out, offset, n]) -> list | true, or nil | false
 *   lmp_pickle_flat_push (lpickle.h): pickle.dumps of a whole flat list
 * The items: numbers cjson keeps (lmp_pickle_number_is_plain: integers
 * with |i| < 10^14, floats of at most 14 significant digits), any other
 * float as the tagged leaf "\u0001x<16 hex digits>" that leafcopy and
 * cjson write, and plain strings (UTF-8, not starting with the tag byte)
 * under 64 KiB (bigger ones travel out of band: pickle.lua). flatlist
 * takes a table without a metatable, reads it raw, escapes as cjson does,
 * and gives a text of LMP_BYTES_MIN bytes or more as an lmp.Bytes.
 * flatlist_load takes only canonical text: "[", items between commas,
 * "]", nothing else; numbers of at most 15 digits (no leading zeros, no
 * "-0", no integral value written as a float), strings with no backslash
 * and no control byte, tagged floats. It builds what cjson.decode and
 * pickle's fix would: integers (5.3+) or numbers (5.1), floats, strings;
 * with out it stores item i in out[offset + i] and insists on exactly n
 * items. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpickle.h"

#define STR_LIMIT (64 * 1024)            /* pickle.lua's ATTACH_MIN */
#define TAGGED_FLOAT "\"\\u0001x"          /* cjson's text of "\1x", then 16 hex digits */

/* ---- writing ---- */

typedef struct {
  char *p;
  size_t n, cap;
} wbuf;

static int wbuf_room(wbuf *b, size_t more) {
  char *p;
  size_t cap = b->cap;
  if (b->cap - b->n >= more) return 1;
  while (cap - b->n < more) cap *= 2;
  if (!(p = realloc(b->p, cap))) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

/* The integer at idx if cjson writes it exactly, in *v; else 0: the
 * integer half of lmp_pickle_number_is_plain, inline (a call per item
 * cost a pool's flat list 40% more). */
static int plain_int(lua_State *L, int idx, long long *v) {
#if LUA_VERSION_NUM >= 503
  lua_Integer i;
  if (!lua_isinteger(L, idx)) return 0;
  i = lua_tointeger(L, idx);
  if (!(i > -LMP_PICKLE_INT_LIMIT && i < LMP_PICKLE_INT_LIMIT)) return 0;
  *v = (long long)i;
#else
  lua_Number x = lua_tonumber(L, idx);
  if (!(x > -(lua_Number)LMP_PICKLE_INT_LIMIT && x < (lua_Number)LMP_PICKLE_INT_LIMIT)) return 0;
  *v = (long long)x;
  if ((lua_Number)*v != x || (x == 0 && signbit(x))) return 0;   /* fraction, -0 */
#endif
  return 1;
}

/* Writes the decimal digits of |v| at out, most significant first;
 * returns how many (at most 20). */
static int put_digits(char *out, long long v) {
  char tmp[24], *t = tmp + sizeof tmp;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do { *--t = (char)('0' + u % 10); u /= 10; } while (u);
  memcpy(out, t, (size_t)(tmp + sizeof tmp - t));
  return (int)(tmp + sizeof tmp - t);
}

/* Writes v in decimal (room for 16 bytes given). */
static void put_decimal(wbuf *b, long long v) {
  if (v < 0) b->p[b->n++] = '-';
  b->n += (size_t)put_digits(b->p + b->n, v);
}

/* Writes cjson's "%.14g" text of m / 10^k (lmp_pickle_float_decimal's
 * parts of a non-integral float; room for 32 bytes given), as printf
 * would: its digits without trailing zeros, in fixed notation for a
 * decimal exponent from -4 to 13, else as d.ddde-XX. */
static void put_float(wbuf *b, long long m, int k) {
  char dig[24], *p = b->p + b->n;
  int d = put_digits(dig, m), i, x;
  while (d > 1 && dig[d - 1] == '0') { d--; k--; }
  x = d - 1 - k;                               /* the decimal exponent */
  if (m < 0) *p++ = '-';
  if (x < -4 || x >= 14) {
    *p++ = dig[0];
    if (d > 1) { *p++ = '.'; memcpy(p, dig + 1, (size_t)(d - 1)); p += d - 1; }
    *p++ = 'e';
    *p++ = x < 0 ? '-' : '+';
    if (x < 0) x = -x;
    if (x >= 100) *p++ = (char)('0' + x / 100);
    *p++ = (char)('0' + x / 10 % 10);
    *p++ = (char)('0' + x % 10);
  } else if (x >= 0) {
    memcpy(p, dig, (size_t)(x + 1)); p += x + 1;
    *p++ = '.';
    memcpy(p, dig + x + 1, (size_t)(d - x - 1)); p += d - x - 1;
  } else {
    *p++ = '0'; *p++ = '.';
    for (i = 0; i < -x - 1; i++) *p++ = '0';
    memcpy(p, dig, (size_t)d); p += d;
  }
  b->n = (size_t)(p - b->p);
}

/* Writes the number at idx as plain JSON (a small integer, a float of at
 * most 14 digits) or as the tagged leaf of a float; 0 for a big integer
 * (5.3+), -1 when out of memory. */
static int put_number(lua_State *L, int idx, wbuf *b) {
  long long v;
  int k;
  lua_Number x;
  if (!wbuf_room(b, 32)) return -1;
  if (plain_int(L, idx, &v)) { put_decimal(b, v); return 1; }
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) return 0;
#endif
  x = lua_tonumber(L, idx);
  if (x != floor(x) && lmp_pickle_float_decimal(x, &v, &k)) {
    put_float(b, v, k);
    return 1;
  }
  /* any other float: the tagged leaf leafcopy gives it ("\1x<its bits>") */
  memcpy(b->p + b->n, TAGGED_FLOAT, sizeof TAGGED_FLOAT - 1);
  lmp_pickle_hexfloat(b->p + b->n + sizeof TAGGED_FLOAT - 1, (double)x);
  b->n += sizeof TAGGED_FLOAT - 1 + 16;
  b->p[b->n++] = '"';
  return 1;
}

/* cjson's escapes (lua_cjson.c's char2escape): control bytes, '"', '/',
 * '\\' and DEL; a byte of 128 or more goes as it is. */
static int escape_of(unsigned char c, char out[6]) {
  static const char hex[] = "0123456789abcdef";
  const char *named = c == '\b' ? "b" : c == '\t' ? "t" : c == '\n' ? "n" :
                      c == '\f' ? "f" : c == '\r' ? "r" : c == '"' ? "\"" :
                      c == '/' ? "/" : c == '\\' ? "\\" : NULL;
  out[0] = '\\';
  if (named) { out[1] = named[0]; return 2; }
  if (c >= 0x20 && c != 0x7f) return 0;
  memcpy(out + 1, "u00", 3);
  out[4] = hex[c >> 4];
  out[5] = hex[c & 15];
  return 6;
}

/* Writes the JSON string of s (plain; room for n + 2 given), escaping
 * as cjson; 0 when out of memory. */
static int put_string(wbuf *b, const char *s, size_t n) {
  size_t i, run = 0;
  char esc[6];
  b->p[b->n++] = '"';
  for (i = 0; i < n; i++) {
    int k = escape_of((unsigned char)s[i], esc);
    if (!k) continue;
    if (!wbuf_room(b, (n - run) + 8)) return 0;   /* the rest, quotes, comma */
    memcpy(b->p + b->n, s + run, i - run);
    b->n += i - run;
    memcpy(b->p + b->n, esc, (size_t)k);
    b->n += (size_t)k;
    run = i + 1;
  }
  memcpy(b->p + b->n, s + run, n - run);
  b->n += n - run;
  b->p[b->n++] = '"';
  return 1;
}

/* 1 when t[first..last] (the table at idx) went into b; 0 when an item
 * is not of the shape; -1 when out of memory. */
static int write_list(lua_State *L, int idx, lua_Integer first, lua_Integer last, wbuf *b) {
  lua_Integer i;
  b->p[b->n++] = '[';
  for (i = first; i <= last; i++) {
    size_t n;
    const char *s;
    int ok = 1;
    lua_rawgeti(L, idx, i);
    if (lua_type(L, -1) == LUA_TNUMBER) {
      ok = put_number(L, -1, b);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
      s = lua_tolstring(L, -1, &n);
      if (n >= STR_LIMIT || !lmp_pickle_string_is_plain(L, -1)) ok = 0;
      else if (!wbuf_room(b, n + 3) || !put_string(b, s, n)) ok = -1;
    } else {
      ok = 0;
    }
    lua_pop(L, 1);
    if (ok != 1) return ok;
    b->p[b->n++] = ',';
  }
  b->p[b->n - 1] = ']';
  return 1;
}

int lmp_pickle_flat_push(lua_State *L, int idx, lua_Integer first, lua_Integer last,
                         int bytes_ok) {
  wbuf b;
  int r;
  if (last < first || (size_t)(last - first) >= ((size_t)-1 - 2) / 32) return 0;
  idx = lua_absindex(L, idx);
  b.n = 0;
  b.cap = (size_t)(last - first + 1) * 8 + 64;
  if (!(b.p = malloc(b.cap))) return luaL_error(L, "not enough memory");
  r = write_list(L, idx, first, last, &b);
  if (r <= 0) {
    free(b.p);
    return r < 0 ? luaL_error(L, "not enough memory") : 0;
  }
  if (bytes_ok && b.n >= LMP_BYTES_MIN) {
    lmp_bytes_push(L, b.p, b.n);       /* sent, then freed by the pool */
  } else {
    lua_pushlstring(L, b.p, b.n);
    free(b.p);
  }
  return 1;
}

static int l_flatlist(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2), last = luaL_checkinteger(L, 3);
  if (lua_type(L, 1) != LUA_TTABLE || lua_getmetatable(L, 1) ||
      !lmp_pickle_flat_push(L, 1, first, last, 1))
    lua_pushnil(L);
  return 1;
}

/* ---- reading ---- */

/* Reads at *pp (before end) an integer of at most 15 digits, or a number
 * with a fraction or an exponent whose value is m / 10^k for at most 15
 * significant digits m and 1 <= k <= 22, as strtod reads it (m and 10^k
 * are exact doubles, and IEEE division rounds as strtod does). Canonical
 * only: no leading zeros, no "-0", no integral value written as a float
 * (cjson and fix would make it an integer). Sets *isint; 0 if refused. */
static int read_number(const char **pp, const char *end, long long *v, double *x, int *isint) {
  const char *p = *pp, *d;
  int neg = 0, sig = 0, frac = 0, ex = 0, exneg = 0, k;
  long long m = 0;
  if (p < end && *p == '-') { neg = 1; p++; }
  d = p;
  while (p < end && *p >= '0' && *p <= '9' && p - d < 16) {
    m = m * 10 + (*p - '0');
    if (m) sig++;
    p++;
  }
  if (p == d || p - d > 15 || (*d == '0' && p - d > 1)) return 0;
  *isint = p == end || (*p != '.' && *p != 'e');
  if (*isint) {
    if (neg && m == 0) return 0;
    *v = neg ? -m : m;
    *pp = p;
    return 1;
  }
  if (*p == '.') {
    for (p++; p < end && *p >= '0' && *p <= '9' && sig <= 15; p++, frac++) {
      m = m * 10 + (*p - '0');
      if (m) sig++;
    }
    if (frac == 0 || sig > 15) return 0;
  }
  if (p < end && *p == 'e') {
    const char *e;
    p++;
    if (p < end && (*p == '-' || *p == '+')) exneg = *p++ == '-';
    for (e = p; p < end && *p >= '0' && *p <= '9' && p - e < 3; p++) ex = ex * 10 + (*p - '0');
    if (p == e || (p < end && *p >= '0' && *p <= '9')) return 0;
  }
  k = frac + (exneg ? ex : -ex);
  if (k < 1 || k > LMP_PICKLE_POW10_MAX) return 0;
  *x = (double)m / lmp_pickle_pow10[k];
  if (*x == floor(*x)) return 0;
  if (neg) *x = -*x;
  *pp = p;
  return 1;
}

/* Pushes the string at *pp (at its opening quote, before end) when it
 * has no escape and no control byte; 0 otherwise. */
static int read_string(lua_State *L, const char **pp, const char *end) {
  const char *s = *pp + 1, *p = s;
  while (p < end && *p != '"') {
    if ((unsigned char)*p < 0x20 || *p == '\\') return 0;
    p++;
  }
  if (p == end) return 0;
  lua_pushlstring(L, s, (size_t)(p - s));
  *pp = p + 1;
  return 1;
}

/* Pushes the item at *pp; 0 when it is not of the shape. */
static int read_item(lua_State *L, const char **pp, const char *end) {
  long long v;
  double x;
  int isint;
  size_t tl = sizeof TAGGED_FLOAT - 1;
  if (**pp == '"') {
    if ((size_t)(end - *pp) > tl + 16 && memcmp(*pp, TAGGED_FLOAT, tl) == 0) {
      if ((*pp)[tl + 16] != '"' || !lmp_pickle_parse_hexfloat(*pp + tl, &x)) return 0;
      lua_pushnumber(L, (lua_Number)x);
      *pp += tl + 17;
      return 1;
    }
    return read_string(L, pp, end);
  }
  if (!read_number(pp, end, &v, &x, &isint)) return 0;
#if LUA_VERSION_NUM >= 503
  if (isint) lua_pushinteger(L, (lua_Integer)v);
  else lua_pushnumber(L, (lua_Number)x);
#else
  lua_pushnumber(L, isint ? (lua_Number)v : (lua_Number)x);
#endif
  return 1;
}

/* Parses s[0..n) into the table at t, item i at key offset + i; returns
 * the item count, or -1 when s is not a canonical flat list or holds more
 * than max items (it stops there: out's other keys are another chunk's). */
static lua_Integer read_list(lua_State *L, const char *s, size_t n, int t,
                             lua_Integer offset, lua_Integer max) {
  const char *p = s + 1, *end = s + n - 1;      /* end: the closing ']' */
  lua_Integer k = 0;
  for (;;) {
    if (k == max || p == end || !read_item(L, &p, end)) return -1;
    lua_rawseti(L, t, offset + ++k);
    if (p == end) return k;
    if (*p++ != ',') return -1;
  }
}

static int l_flatlist_load(lua_State *L) {
  size_t n, items = 1, i;
  lua_Integer offset, max;
  const char *s = lmp_bytes_check(L, 1, &n);
  if (n < 3 || s[0] != '[' || s[n - 1] != ']' ||
      !(s[1] == '-' || s[1] == '"' || (s[1] >= '0' && s[1] <= '9'))) {
    lua_pushnil(L);
    return 1;
  }
  luaL_checkstack(L, 4, "pickle");
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

void lmp_pickle_flat_open(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"flatlist", l_flatlist},
    {"flatlist_load", l_flatlist_load},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);
}
