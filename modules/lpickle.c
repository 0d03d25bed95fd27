/* lpickle.c -- the C half of lmp.pickle's JSON codec ("lmp.c.pickle").
 *
 * lua/lmp/pickle.lua writes and reads JSON text with a private lua-cjson
 * instance. This file gives it what must be fast or exact:
 *   jsontext(v, classes)  v's JSON text when v is plain data (tables
 *                      without metatables, met once, keys 1..n or plain
 *                      strings): the text cjson would write, leaves it
 *                      would lose (integral or 17-digit floats, big
 *                      integers, byte strings) as tagged strings; written
 *                      in one pass by lpickle_json.c, which also reads it
 *                      back (jsonload). nil when v needs the tagged form.
 *   jsonlist(t, first, last, classes)  the same for a pool's chunk.
 *   plain(x)           the number or string x travels as itself.
 *   fix(v, nulls, tags)  after cjson.decode of such text: integral floats
 *                      back to integers (5.3+), cjson.null to nil, tagged
 *                      leaves back to their values, in place.
 *   fmtfloat(x) / parsefloat(s)   exact float text ("%.17g" at worst).
 *   b64enc(s) / b64dec(s)          base64 for byte strings.
 *   utf8ok(s)          valid UTF-8 (no surrogates, no overlongs).
 * The binary format lives in lpickle_bin.c and is exported from here. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "lmp_aux.h"
#include "lpickle.h"

/* ---- pointer set: open addressing, generation stamps (no clearing) ---- */

typedef struct {
  const void *p;
  uint32_t gen;
} pslot;

typedef struct {
  pslot *slots;
  size_t cap, used;   /* cap: power of two */
  uint32_t gen;
} pset;

static void pset_reset(pset *s) {
  s->used = 0;
  if (++s->gen == 0) {   /* wrapped: stale stamps could match again */
    if (s->slots) memset(s->slots, 0, s->cap * sizeof(pslot));
    s->gen = 1;
  }
}

static size_t phash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static int pset_grow(pset *s) {
  size_t ncap = s->cap ? s->cap * 2 : 256, i;
  pslot *ns = (pslot *)calloc(ncap, sizeof(pslot));
  if (!ns) return -1;
  for (i = 0; i < s->cap; i++) {
    if (s->slots[i].gen == s->gen && s->slots[i].p) {
      size_t j = phash(s->slots[i].p) & (ncap - 1);
      while (ns[j].gen == s->gen) j = (j + 1) & (ncap - 1);
      ns[j] = s->slots[i];
    }
  }
  free(s->slots);
  s->slots = ns;
  s->cap = ncap;
  return 0;
}

/* The slot holding p, or the free slot where p would go (cap > 0). */
static size_t pset_slot(const pset *s, const void *p) {
  size_t j = phash(p) & (s->cap - 1);
  while (s->slots[j].gen == s->gen && s->slots[j].p != p) j = (j + 1) & (s->cap - 1);
  return j;
}

/* Adds p; returns 1 if it was new, 0 if present, -1 on memory error. */
static int pset_add(pset *s, const void *p) {
  size_t j;
  if ((s->used + 1) * 2 > s->cap && pset_grow(s) < 0) return -1;
  j = pset_slot(s, p);
  if (s->slots[j].gen == s->gen) return 0;
  s->slots[j].p = p;
  s->slots[j].gen = s->gen;
  s->used++;
  return 1;
}

/* 1 if p is in the set. */
static int pset_has(const pset *s, const void *p) {
  return s->cap && s->slots[pset_slot(s, p)].gen == s->gen;
}

/* ---- scalars ---- */

int lmp_pickle_utf8ok(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c;
    /* ASCII 8 bytes at a time, then byte by byte: most text is ASCII, and
     * a byte loop made this check cost as much as cjson's writing of 1 MiB */
    uint64_t w;
    while (i + 8 <= n) {
      memcpy(&w, s + i, 8);
      if (w & UINT64_C(0x8080808080808080)) break;
      i += 8;
    }
    while (i < n && s[i] < 0x80) i++;
    if (i == n) break;
    c = s[i];
    if (c >= 0xC2 && c <= 0xDF) {
      if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      unsigned c1;
      if (i + 2 >= n) return 0;
      c1 = s[i + 1];
      if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
      if (c == 0xE0 && c1 < 0xA0) return 0;   /* overlong */
      if (c == 0xED && c1 >= 0xA0) return 0;  /* surrogate */
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      unsigned c1;
      if (i + 3 >= n) return 0;
      c1 = s[i + 1];
      if ((c1 & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
          (s[i + 3] & 0xC0) != 0x80) return 0;
      if (c == 0xF0 && c1 < 0x90) return 0;
      if (c == 0xF4 && c1 >= 0x90) return 0;
      i += 4;
    } else {
      return 0;
    }
  }
  return 1;
}

const double lmp_pickle_pow10[LMP_PICKLE_POW10_MAX + 1] = {
  1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
  1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};

/* 1 if cjson's "%.14g" text of x reads back as exactly x: x is m / 10^k
 * for an integer |m| < 1e14 and an exact power 10^k (IEEE division is
 * correctly rounded, as strtod is). Integral x is judged by the caller. */
int lmp_pickle_float_decimal(double x, long long *m, int *k) {
  int j;
  if (!(x > -1e14 && x < 1e14) || x == 0) return 0;
  for (j = 1; j <= LMP_PICKLE_POW10_MAX; j++) {
    double d = x * lmp_pickle_pow10[j];
    if (!(d > -1e14 && d < 1e14)) return 0;
    if (d == floor(d)) {
      if (d / lmp_pickle_pow10[j] != x) return 0;
      *m = (long long)d;
      *k = j;
      return 1;
    }
  }
  return 0;
}

static int float_is_plain(double x) {
  long long m;
  int k;
  return lmp_pickle_float_decimal(x, &m, &k);
}

/* 1 if the number at idx travels as a plain JSON number. */
int lmp_pickle_number_is_plain(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    return i > -LMP_PICKLE_INT_LIMIT && i < LMP_PICKLE_INT_LIMIT;
  } else {
    double x = lua_tonumber(L, idx);
    return x != floor(x) && float_is_plain(x);
  }
#else
  double x = lua_tonumber(L, idx);
  if (x == floor(x)) return x > -1e14 && x < 1e14 && (x != 0 || !signbit(x));
  return float_is_plain(x);
#endif
}

int lmp_pickle_string_is_plain(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (n > 0 && s[0] == LMP_PICKLE_TAG) return 0;
  return lmp_pickle_utf8ok((const unsigned char *)s, n);
}

/* ---- plain JSON: which tables the writer may take ---- */

/* Marks the tables that travel by name (modules, classes, the globals)
 * as already seen, so that the walk calls them "not plain". */
static void mark_named(lua_State *L, pset *seen, int classes) {
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_istable(L, -1) && pset_add(seen, lua_topointer(L, -1)) < 0)
        luaL_error(L, "not enough memory");
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  lmp_pushglobaltable(L);
  pset_add(seen, lua_topointer(L, -1));
  lua_pop(L, 1);
  if (classes && lua_istable(L, classes)) {
    lua_pushnil(L);
    while (lua_next(L, classes)) {
      if (lua_istable(L, -1) && pset_add(seen, lua_topointer(L, -1)) < 0)
        luaL_error(L, "not enough memory");
      lua_pop(L, 1);
    }
  }
}

/* What plain() keeps between calls: the set of tables one walk met, and
 * a cache of the tables that travel by name. Walking package.loaded for
 * those on every call cost half of pickling a small table, so the cache
 * is rebuilt only when something may have changed (gen moves): a new key
 * in package.loaded (a __newindex hook that lmp sets on it when the
 * module opens, if it has no metatable of its own: `require` and plain
 * assignments of new names go through it), a class registered
 * (names_changed), or another globals or class table. Not seen: a rawset
 * into package.loaded, or an entry replaced in place; a table that became
 * a module that way travels as a value until the next change that is
 * seen. If package.loaded's metatable is not lmp's (none was set, or
 * somebody replaced it), every call walks package.loaded as before. The
 * binary form keeps its own cache, keyed by the same gen. */
typedef struct {
  pset seen, named;
  uint64_t gen, named_gen;   /* gen moves on every possible change */
  const void *globals_at, *classes_at;
  int loaded_ref, hook_ref;  /* registry refs; hook_ref LUA_REFNIL: no hook */
} plainstate;

static int plainstate_gc(lua_State *L) {
  plainstate *st = (plainstate *)lua_touserdata(L, 1);
  free(st->seen.slots);
  free(st->named.slots);
  st->seen.slots = st->named.slots = NULL;
  st->seen.cap = st->named.cap = 0;
  return 0;
}

/* package.loaded's __newindex: store, and let the caches know. */
static int loaded_newindex(lua_State *L) {
  plainstate *st = (plainstate *)lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 3);
  lua_rawset(L, 1);
  st->gen++;
  return 0;
}

/* names_changed(): a class was registered. */
static int l_names_changed(lua_State *L) {
  plainstate *st = (plainstate *)lua_touserdata(L, lua_upvalueindex(1));
  st->gen++;
  return 0;
}

/* Puts the hook on package.loaded; st's userdata is at ps_idx. */
static void install_hook(lua_State *L, plainstate *st, int ps_idx) {
  int top = lua_gettop(L);
  ps_idx = lua_absindex(L, ps_idx);
  st->hook_ref = LUA_REFNIL;
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (!lua_istable(L, -1) || lua_getmetatable(L, -1)) {
    lua_settop(L, top);
    return;
  }
  lua_pushvalue(L, -1);
  st->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  lua_pushvalue(L, ps_idx);
  lua_pushcclosure(L, loaded_newindex, 1);
  lua_setfield(L, -2, "__newindex");
  lua_pushvalue(L, -1);
  st->hook_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
  lua_settop(L, top);
}

uint64_t lmp_pickle_names_gen(lua_State *L, void *ps, int classes) {
  plainstate *st = (plainstate *)ps;
  const void *g, *cp;
  int ours = 0;
  if (st->hook_ref == LUA_REFNIL || st->hook_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->loaded_ref);
  if (lua_getmetatable(L, -1)) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->hook_ref);
    ours = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  if (!ours) return 0;
  lmp_pushglobaltable(L);
  g = lua_topointer(L, -1);
  lua_pop(L, 1);
  cp = classes && lua_istable(L, classes) ? lua_topointer(L, classes) : NULL;
  if (g != st->globals_at || cp != st->classes_at) {
    st->gen++;
    st->globals_at = g;
    st->classes_at = cp;
  }
  return st->gen;
}

/* The cached set of tables that travel by name, brought up to date; NULL
 * when it cannot be trusted. */
static const pset *named_current(lua_State *L, plainstate *st, int classes) {
  uint64_t gen = lmp_pickle_names_gen(L, st, classes);
  if (!gen) return NULL;
  if (gen != st->named_gen) {
    pset_reset(&st->named);
    mark_named(L, &st->named, classes);
    st->named_gen = gen;
  }
  return &st->named;
}

/* What lmp_pickle_json_push asks of this state: the tables one write met,
 * and those that travel by name. */
typedef struct {
  pset *seen;
  const pset *named;
} admitctx;

static int admit_table(void *ud, lua_State *L, int idx) {
  admitctx *a = (admitctx *)ud;
  const void *p = lua_topointer(L, idx);
  if (lua_getmetatable(L, idx)) {
    lua_pop(L, 1);
    return 0;
  }
  if (a->named && pset_has(a->named, p)) return 0;
  return pset_add(a->seen, p);          /* 0 when met before, -1 no memory */
}

/* Pushes the JSON text of v (at 1; classes at classes) as
 * lmp_pickle_json_push writes it, or nil when v is not plain data. */
static int push_json(lua_State *L, int slice, lua_Integer first, lua_Integer last,
                     int classes) {
  plainstate *st = (plainstate *)lua_touserdata(L, lua_upvalueindex(1));
  admitctx a;
  a.seen = &st->seen;
  a.named = NULL;
  if (lua_type(L, 1) == LUA_TTABLE) {
    pset_reset(a.seen);
    a.named = named_current(L, st, classes);
    if (!a.named) mark_named(L, a.seen, classes);   /* no cache: mark them as met */
  }
  if (!lmp_pickle_json_push(L, 1, slice, first, last, admit_table, &a)) lua_pushnil(L);
  return 1;
}

/* jsontext(v [, classes]) -> v's JSON text | nil (not plain data). */
static int l_jsontext(lua_State *L) {
  lua_settop(L, 2);
  return push_json(L, 0, 0, 0, 2);
}

/* jsonlist(t, first, last [, classes]) -> the JSON text of the list
 * {t[first], ..., t[last]} (an lmp.Bytes when big) | nil: a pool's chunk,
 * written without building that table. nil also when an item is a string
 * of 64 KiB or more (those travel out of band). */
static int l_jsonlist(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2), last = luaL_checkinteger(L, 3);
  lua_settop(L, 4);
  return push_json(L, 1, first, last, 4);
}

/* plain(x) -> true when the number or string x travels as itself. */
static int l_plain(lua_State *L) {
  int t = lua_type(L, 1);
  lua_pushboolean(L, t == LUA_TNUMBER ? lmp_pickle_number_is_plain(L, 1) :
                     t == LUA_TSTRING ? lmp_pickle_string_is_plain(L, 1) : 0);
  return 1;
}

/* ---- after decoding plain text ---- */

static int is_null(lua_State *L, int idx) {
  return lua_type(L, idx) == LUA_TLIGHTUSERDATA && !lua_touserdata(L, idx);
}

/* Replaces the tagged leaf at -1 (a string starting with the tag byte)
 * with its value. */
static void untag_leaf(lua_State *L) {
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  int top = lua_gettop(L);
  if (!lmp_pickle_untag_leaf(L, s, n))
    lmp_error_raise(L, "pickle", "malformed input: bad tagged value");
  lua_replace(L, top);
  lua_settop(L, top);
}

static void fix_table(lua_State *L, int idx, int nulls, int tags, int depth);

/* The decoded value at -1 as it should be: 0 when it stays, 1 when its
 * replacement was pushed on top. */
static int fixed_value(lua_State *L, int nulls, int tags, int depth) {
  switch (lua_type(L, -1)) {
    case LUA_TTABLE:
      fix_table(L, lua_gettop(L), nulls, tags, depth + 1);
      return 0;
    case LUA_TSTRING:
      if (!tags || *lua_tostring(L, -1) != LMP_PICKLE_TAG) return 0;
      lua_pushvalue(L, -1);
      untag_leaf(L);
      return 1;
#if LUA_VERSION_NUM >= 503
    case LUA_TNUMBER: {
      lua_Integer i;
      lua_Number x;
      if (lua_isinteger(L, -1)) return 0;
      x = lua_tonumber(L, -1);
      if (!lua_numbertointeger(x, &i) || (lua_Number)i != x) return 0;
      lua_pushinteger(L, i);
      return 1;
    }
#endif
    case LUA_TLIGHTUSERDATA:
      if (!nulls || !is_null(L, -1)) return 0;
      lua_pushnil(L);
      return 1;
    default:
      return 0;
  }
}

/* Walks a freshly decoded (acyclic, metatable-free) table in place. cjson
 * makes a JSON array a table with keys 1..n only (so a loop by index, a
 * third of lua_next's cost) and an object one with string keys only. */
static void fix_table(lua_State *L, int idx, int nulls, int tags, int depth) {
  size_t n = lua_rawlen(L, idx), i;
  luaL_checkstack(L, 6, "pickle");
  if (depth > 2 * LMP_PICKLE_MAX_DEPTH + 10) lmp_error_raise(L, "pickle", "malformed input: nesting too deep");
  if (n > 0) {
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, (lua_Integer)i);
      if (fixed_value(L, nulls, tags, depth)) lua_rawseti(L, idx, (lua_Integer)i);
      lua_pop(L, 1);
    }
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (fixed_value(L, nulls, tags, depth)) {
      lua_pushvalue(L, -3);
      lua_insert(L, -2);
      lua_rawset(L, idx);     /* an existing field: safe in lua_next */
    }
    lua_pop(L, 1);
  }
}

/* fix(v, nulls, tags) -> v: integral floats to integers (5.3+), and when
 * nulls is true, cjson.null to nil; when tags is true, tagged leaves to
 * their values. */
static int l_fix(lua_State *L) {
  int nulls = lua_toboolean(L, 2), tags = lua_toboolean(L, 3);
  lua_settop(L, 1);
  if (lua_istable(L, 1)) {
#if LUA_VERSION_NUM < 503
    if (!nulls && !tags) return 1;
#endif
    fix_table(L, 1, nulls, tags, 0);
  } else if (tags && lua_type(L, 1) == LUA_TSTRING && *lua_tostring(L, 1) == LMP_PICKLE_TAG) {
    untag_leaf(L);
  } else if (is_null(L, 1)) {
    lua_pushnil(L);
#if LUA_VERSION_NUM >= 503
  } else if (lua_type(L, 1) == LUA_TNUMBER && !lua_isinteger(L, 1)) {
    lua_Integer i;
    if (lua_numbertointeger(lua_tonumber(L, 1), &i) &&
        (lua_Number)i == lua_tonumber(L, 1))
      lua_pushinteger(L, i);
#endif
  }
  return 1;
}

/* ---- floats ---- */

/* Shortest of %.15g/%.16g/%.17g that reads back exactly; "nan", "inf",
 * "-inf" (strtod reads them); -0.0 gives "-0". Returns the length. */
int lmp_pickle_fmtfloat(char *buf, size_t sz, double x) {
  int p;
  if (x != x) return snprintf(buf, sz, "%s", signbit(x) ? "-nan" : "nan");
  if (isinf(x)) return snprintf(buf, sz, "%s", x > 0 ? "inf" : "-inf");
  for (p = 15; p < 17; p++) {
    int n = snprintf(buf, sz, "%.*g", p, x);
    if (strtod(buf, NULL) == x) return n;
  }
  return snprintf(buf, sz, "%.17g", x);
}

static int l_fmtfloat(lua_State *L) {
  char buf[64];
  int n = lmp_pickle_fmtfloat(buf, sizeof buf, (double)luaL_checknumber(L, 1));
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* parsefloat(s) -> float, or nil when s is not entirely a number. */
void lmp_pickle_hexfloat(char buf[16], double x) {
  static const char hex[] = "0123456789abcdef";
  uint64_t u;
  int i;
  memcpy(&u, &x, 8);
  for (i = 15; i >= 0; i--, u >>= 4) buf[i] = hex[u & 15];
}

int lmp_pickle_parse_hexfloat(const char *s, double *x) {
  uint64_t u = 0;
  int i;
  for (i = 0; i < 16; i++) {
    int c = s[i], d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return 0;
    u = (u << 4) | (uint64_t)d;
  }
  memcpy(x, &u, 8);
  return 1;
}

/* leaf(s) -> the value of the tagged leaf s ("\1i..", "\1f..", "\1x..",
 * "\1b..", "\1'.."), or nothing. */
static int l_leaf(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  return lmp_pickle_untag_leaf(L, s, n) ? 1 : 0;
}

static int l_parsefloat(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char *end;
  double x;
  if (n == 0 || n > 40) return 0;
  x = strtod(s, &end);
  if (end != s + n) return 0;
  lua_pushnumber(L, (lua_Number)x);
  return 1;
}

/* ---- base64 ---- */

/* OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock do the work (1.2 GB/s here,
 * 9x libsodium's constant-time code, which secrets need and these bytes do
 * not); lmp only checks that its input is canonical, which EVP_DecodeBlock
 * does not (it skips blanks at both ends, and padding may end a quantum in
 * the middle). Both write into a scratch userdata, then push a copy. */

void lmp_pickle_b64write(unsigned char *out, const char *s, size_t n) {
  const size_t step = (size_t)3 << 28;     /* EVP takes an int length */
  size_t i;
  out[0] = 0;
  for (i = 0; i < n; i += step)
    EVP_EncodeBlock(out + i / 3 * 4, (const unsigned char *)s + i,
                    (int)(n - i < step ? n - i : step));
}

void lmp_pickle_b64enc(lua_State *L, const char *s, size_t n) {
  size_t m = (n + 2) / 3 * 4;
  unsigned char *out = (unsigned char *)lua_newuserdata(L, m + 1);
  lmp_pickle_b64write(out, s, n);
  lua_pushlstring(L, (const char *)out, m);
  lua_remove(L, -2);
}

static int l_b64enc(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lmp_pickle_b64enc(L, s, n);
  return 1;
}

static const unsigned char b64ok[256] = {
#define R4(c) [c] = 1, [c + 1] = 1, [c + 2] = 1, [c + 3] = 1
  R4('A'), R4('E'), R4('I'), R4('M'), R4('Q'), R4('U'), ['Y'] = 1, ['Z'] = 1,
  R4('a'), R4('e'), R4('i'), R4('m'), R4('q'), R4('u'), ['y'] = 1, ['z'] = 1,
  R4('0'), R4('4'), ['8'] = 1, ['9'] = 1, ['+'] = 1, ['/'] = 1
#undef R4
};

/* The number of '=' ending s (0-2), or -1 unless s is canonical: whole
 * quanta of the 64 characters, and padding only at the very end. */
static int b64_padding(const unsigned char *s, size_t n) {
  size_t i;
  int pad = 0;
  if (n % 4) return -1;
  if (n && s[n - 1] == '=') pad = s[n - 2] == '=' ? 2 : 1;
  for (i = 0; i < n - (size_t)pad; i++)
    if (!b64ok[s[i]]) return -1;
  return pad;
}

int lmp_pickle_b64dec(lua_State *L, const char *s, size_t n) {
  int pad = b64_padding((const unsigned char *)s, n);
  unsigned char *out;
  const size_t step = (size_t)4 << 28;
  size_t i;
  if (pad < 0) return 0;
  if (n == 0) { lua_pushliteral(L, ""); return 1; }
  out = (unsigned char *)lua_newuserdata(L, n / 4 * 3);
  for (i = 0; i < n; i += step)
    if (EVP_DecodeBlock(out + i / 4 * 3, (const unsigned char *)s + i,
                        (int)(n - i < step ? n - i : step)) < 0) {
      lua_pop(L, 1);
      return 0;
    }
  lua_pushlstring(L, (const char *)out, n / 4 * 3 - (size_t)pad);
  lua_remove(L, -2);
  return 1;
}

/* b64dec(s) -> bytes, or nil when s is not canonical base64. */
static int l_b64dec(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  return lmp_pickle_b64dec(L, s, n);
}

static int l_globals(lua_State *L) {
  lmp_pushglobaltable(L);
  return 1;
}

/* joinbytes(parts) -> the strings parts[1..n] end to end, as an lmp.Bytes
 * (a pool's chunk with big strings out of band, so always big:
 * table.concat grew a Lua buffer by doubling, copied it into a new string
 * and left megabytes of garbage; this is one malloc, one copy, freed once
 * sent). */
static int l_joinbytes(lua_State *L) {
  size_t total = 0, n, i, len, at = 0;
  char *buf;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = lua_rawlen(L, 1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i);
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "joinbytes: item %d is not a string", (int)i);
    total += lua_rawlen(L, -1);
    lua_pop(L, 1);
  }
  if (!(buf = (char *)malloc(total ? total : 1))) return luaL_error(L, "not enough memory");
  for (i = 1; i <= n; i++) {
    const char *s;
    lua_rawgeti(L, 1, (lua_Integer)i);
    s = lua_tolstring(L, -1, &len);
    memcpy(buf + at, s, len);
    at += len;
    lua_pop(L, 1);
  }
  lmp_bytes_push(L, buf, total);
  return 1;
}

static int l_utf8ok(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, lmp_pickle_utf8ok((const unsigned char *)s, n));
  return 1;
}

int luaopen_lmp_c_pickle(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"b64dec", l_b64dec},
    {"b64enc", l_b64enc},
    {"fix", l_fix},
    {"fmtfloat", l_fmtfloat},
    {"globals", l_globals},
    {"joinbytes", l_joinbytes},
    {"leaf", l_leaf},
    {"parsefloat", l_parsefloat},
    {"plain", l_plain},
    {"utf8ok", l_utf8ok},
    {NULL, NULL}
  };
  plainstate *st;
  int lib, ps;
  lmp_error_init(L);
  luaL_newlib(L, funcs);
  lib = lua_gettop(L);
  ps = lib + 1;
  st = (plainstate *)lua_newuserdatauv_compat(L, sizeof(plainstate));
  memset(st, 0, sizeof *st);
  st->gen = 1;
  st->loaded_ref = st->hook_ref = LUA_NOREF;
  lua_newtable(L);
  lua_pushcfunction(L, plainstate_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  install_hook(L, st, ps);
  lua_pushvalue(L, ps);
  lua_pushcclosure(L, l_names_changed, 1);
  lua_setfield(L, lib, "names_changed");
  lua_pushvalue(L, ps);
  lua_pushcclosure(L, l_jsontext, 1);
  lua_setfield(L, lib, "jsontext");
  lua_pushvalue(L, ps);
  lua_pushcclosure(L, l_jsonlist, 1);
  lua_setfield(L, lib, "jsonlist");
  lua_pushvalue(L, lib);
  lmp_pickle_bin_open(L, ps);   /* adds bdumps / bloads, sharing the names state */
  lua_settop(L, lib);
  lmp_pickle_tag_open(L);   /* adds tagcopy / untag */
  lmp_pickle_json_open(L);  /* adds jsonload */
  lua_pushliteral(L, LMP_PICKLE_TAG_STR);
  lua_setfield(L, -2, "TAG");
  return 1;
}
