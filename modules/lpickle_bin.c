/* lpickle_bin.c -- lmp.pickle's binary format: the same value rules as
 * the JSON form (lua/lmp/pickle.lua), written and read in one C walk.
 *
 * A message is the byte 0xB1 (never the first byte of JSON text), a flags
 * byte (bit 0: the value holds references, so the reader must number its
 * objects) and one value. Little-endian; "varint" is LEB128 (non-minimal forms accepted).
 *   00 nil   01 false   02 true
 *   03 zz    integer, zigzag varint          04 f8   float, 8 raw bytes
 *   05 n s   string of n bytes               80+n s  string, n < 64
 *   C0+n     integer 0..63
 *   06 na nh v1..vna k1 v1..knh vnh          table (array part, then pairs)
 *   07 na nh mt v1..vna k1 v1..              table with a metatable
 *   08 id    reference to an earlier table/function/userdata
 *   09 n code env nup up1..upn               Lua function (bytecode); an
 *            upvalue is a value or 0A fid n (joined with upvalue n of fid)
 *   0B n mod n field                          C function by name
 *   0C n name   module (package.loaded)      0D      the globals
 *   0E n name   registered class             0F n name state   userdata
 *   10 i     the i-th short string (< 64 bytes) written as a table key
 *   11 n zz1..zzn   typed run: n integers (zigzag varints)  } only among the
 *   12 n f1..fn     typed run: n floats (8 raw bytes each)  } array items of
 *            a table or list; they stand for n consecutive items (flag 2)
 * Tables, functions and userdata are numbered from 1 in the order they
 * are written; the reader meets them in the same order.
 *
 * Flags: bit 0 references, bit 1 typed runs (format 2, lmp 0.2: a reader
 * without them refuses the message by its flags, not by a stray tag). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lpickle.h"

#define MAGIC 0xB1
enum {
  B_NIL, B_FALSE, B_TRUE, B_INT, B_FLOAT, B_STR, B_TABLE, B_TABLEMT, B_REF,
  B_FUNC, B_JOIN, B_CFUNC, B_MODULE, B_GLOBALS, B_CLASS, B_UDATA, B_KEYREF,
  B_IRUN, B_FRUN
};
#define F_REFS 1
#define F_RUNS 2
#define F_KNOWN (F_REFS | F_RUNS)
/* Arrays shorter than this are written item by item: a run's header
 * would cost more than the tags it saves. */
#define RUN_MIN 8
#define B_SHORTSTR 0x80
#define B_SMALLINT 0xC0

#define MAX_DEPTH LMP_PICKLE_MAX_DEPTH

/* ---- pointer -> integer map (open addressing, generation stamps) ---- */

typedef struct {
  const void *p;
  int64_t v;
  uint32_t gen;
} mslot;

typedef struct {
  mslot *slots;
  size_t cap, used;
  uint32_t gen;
} pmap;

static size_t mhash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static void pmap_reset(pmap *m) {
  m->used = 0;
  if (++m->gen == 0) {
    if (m->slots) memset(m->slots, 0, m->cap * sizeof(mslot));
    m->gen = 1;
  }
}

static int pmap_grow(pmap *m) {
  size_t ncap = m->cap ? m->cap * 2 : 256, i;
  mslot *ns = (mslot *)calloc(ncap, sizeof(mslot));
  if (!ns) return -1;
  for (i = 0; i < m->cap; i++) {
    if (m->slots[i].gen == m->gen) {
      size_t j = mhash(m->slots[i].p) & (ncap - 1);
      while (ns[j].gen == m->gen) j = (j + 1) & (ncap - 1);
      ns[j] = m->slots[i];
    }
  }
  free(m->slots);
  m->slots = ns;
  m->cap = ncap;
  return 0;
}

/* Value of p, or 0 when absent. */
static int64_t pmap_get(const pmap *m, const void *p) {
  size_t j;
  if (!m->cap) return 0;
  j = mhash(p) & (m->cap - 1);
  while (m->slots[j].gen == m->gen) {
    if (m->slots[j].p == p) return m->slots[j].v;
    j = (j + 1) & (m->cap - 1);
  }
  return 0;
}

/* Sets p -> v unless p is present; 0 ok, -1 out of memory. */
static int pmap_put(pmap *m, const void *p, int64_t v) {
  size_t j;
  if ((m->used + 1) * 2 > m->cap && pmap_grow(m) < 0) return -1;
  j = mhash(p) & (m->cap - 1);
  while (m->slots[j].gen == m->gen) {
    if (m->slots[j].p == p) return 0;
    j = (j + 1) & (m->cap - 1);
  }
  m->slots[j].p = p;
  m->slots[j].v = v;
  m->slots[j].gen = m->gen;
  m->used++;
  return 0;
}

/* ---- encoder state (a userdata reused between calls) ---- */

enum { SEG_ROOT, SEG_INT, SEG_KEY, SEG_LABEL, SEG_UPVAL };
typedef struct {
  int kind, idx;       /* idx: stack index of the key (SEG_KEY) */
  lua_Integer i;
  const char *s;
} seg;

/* Special values in the memo map (ids are positive). */
#define MEMO_MODULE (-1)
#define MEMO_GLOBALS (-2)
#define MEMO_CLASS (-3)

typedef struct {
  char *buf;
  size_t len, cap;
  pmap memo, upvals, keys;
  int busy, flags;
  void *ps;             /* the names state of lpickle.c */
  pmap namedmap;        /* cached: what travels by name -> MEMO_* kind */
  uint64_t named_gen;   /* lmp_pickle_names_gen it was built at */
  const pmap *named;    /* &namedmap when this dump may use it, or NULL */
  int64_t nkeys;
  lua_State *L;
  int64_t nobj;
  int classes;          /* stack index of name -> metatable, or 0 */
  const char *root;
  seg path[MAX_DEPTH + 8];
  int plen;
} benc;

static int benc_gc(lua_State *L) {
  benc *e = (benc *)lua_touserdata(L, 1);
  free(e->buf);
  free(e->memo.slots);
  free(e->upvals.slots);
  free(e->keys.slots);
  free(e->namedmap.slots);
  memset(e, 0, sizeof *e);
  return 0;
}

static benc *benc_new(lua_State *L) {
  benc *e = (benc *)lua_newuserdatauv_compat(L, sizeof(benc));
  memset(e, 0, sizeof *e);
  lua_newtable(L);
  lua_pushcfunction(L, benc_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  return e;
}

/* Raises "<path>: <msg>" as a pickle error. */
static int enc_fail(benc *e, const char *msg) {
  lua_State *L = e->L;
  luaL_Buffer b;
  int i, from = 1;
  luaL_checkstack(L, 8, "pickle");
  luaL_buffinit(L, &b);
  luaL_addstring(&b, e->root);
  if (e->plen > 24) from = e->plen - 12;
  for (i = 1; i < e->plen; i++) {
    seg *s = &e->path[i];
    if (i >= 11 && i < from) {
      if (i == 11) luaL_addstring(&b, "...");
      continue;
    }
    if (s->kind == SEG_INT) {
      lua_pushfstring(L, "[%d]", (int)s->i);
    } else if (s->kind == SEG_LABEL) {
      lua_pushstring(L, s->s);
    } else if (s->kind == SEG_UPVAL) {
      lua_pushfstring(L, "<upvalue %s>", s->s);
    } else {
      int t = lua_type(L, s->idx);
      if (t == LUA_TSTRING) {
        size_t n, j;
        const char *k = lua_tolstring(L, s->idx, &n);
        int ident = n > 0 && !(k[0] >= '0' && k[0] <= '9');
        for (j = 0; j < n && ident; j++)
          ident = (k[j] == '_' || (k[j] >= 'a' && k[j] <= 'z') ||
                   (k[j] >= 'A' && k[j] <= 'Z') || (k[j] >= '0' && k[j] <= '9'));
        if (ident) lua_pushfstring(L, ".%s", k);
        else lua_pushfstring(L, "[\"%s\"]", k);
      } else if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, s->idx);
        lua_call(L, 1, 1);
        lua_pushfstring(L, "[%s]", lua_tostring(L, -1));
        lua_remove(L, -2);
      } else {
        lua_pushfstring(L, "[<%s>]", lua_typename(L, t));
      }
    }
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, ": ");
  luaL_addstring(&b, msg);
  luaL_pushresult(&b);
  return lmp_error_raise(L, "pickle", "%s", lua_tostring(L, -1));
}

static void seg_push(benc *e, int kind, int idx, lua_Integer i, const char *s) {
  seg *g = &e->path[e->plen++];
  g->kind = kind;
  g->idx = idx;
  g->i = i;
  g->s = s;
}

/* ---- output ---- */

static char *grow(benc *e, size_t n) {
  size_t ncap = e->cap ? e->cap : 1024;
  char *nb;
  while (ncap - e->len < n) ncap *= 2;
  nb = (char *)realloc(e->buf, ncap);
  if (!nb) luaL_error(e->L, "not enough memory");
  e->buf = nb;
  e->cap = ncap;
  return e->buf + e->len;
}

/* Room for n more bytes; the check is inline, growing is not (a float
 * list calls this once per item). */
static inline char *reserve(benc *e, size_t n) {
  if (e->cap - e->len < n) return grow(e, n);
  return e->buf + e->len;
}

static void put_byte(benc *e, int c) {
  *reserve(e, 1) = (char)c;
  e->len++;
}

static int varint_size(uint64_t v) {
  int n = 1;
  while (v >= 0x80) { v >>= 7; n++; }
  return n;
}

static void put_varint(benc *e, uint64_t v) {
  unsigned char *p = (unsigned char *)reserve(e, 10);
  while (v >= 0x80) { *p++ = (unsigned char)(v | 0x80); v >>= 7; e->len++; }
  *p = (unsigned char)v;
  e->len++;
}

static void put_bytes(benc *e, const char *s, size_t n) {
  memcpy(reserve(e, n), s, n);
  e->len += n;
}

static void put_str(benc *e, const char *s, size_t n) {
  if (n < 64) {
    char *p = reserve(e, n + 1);
    p[0] = (char)(B_SHORTSTR + n);
    memcpy(p + 1, s, n);
    e->len += n + 1;
  } else {
    put_byte(e, B_STR);
    put_varint(e, n);
    put_bytes(e, s, n);
  }
}

static void put_int(benc *e, int64_t i) {
  if (i >= 0 && i < 64) {
    put_byte(e, B_SMALLINT + (int)i);
  } else {
    put_byte(e, B_INT);
    put_varint(e, ((uint64_t)i << 1) ^ (uint64_t)(i >> 63));
  }
}

/* The number at idx: 1 with *i set when it travels as an integer (a Lua
 * integer; on 5.1 an integral double that fits, -0.0 excepted), else 0
 * with *x set. */
static int number_parts(lua_State *L, int idx, int64_t *i, double *x) {
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    *i = (int64_t)lua_tointeger(L, idx);
    return 1;
  }
  *x = (double)lua_tonumber(L, idx);
#else
  *x = (double)lua_tonumber(L, idx);
  if (*x == floor(*x) && *x > -9.2e18 && *x < 9.2e18 && (*x != 0 || !signbit(*x))) {
    *i = (int64_t)*x;
    return 1;
  }
#endif
  return 0;
}

static void put_f8(benc *e, double x) {
  unsigned char *p = (unsigned char *)reserve(e, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(p, &x, 8);                   /* the format's order already */
#else
  uint64_t u;
  int k;
  memcpy(&u, &x, 8);
  for (k = 0; k < 8; k++) p[k] = (unsigned char)(u >> (8 * k));
#endif
  e->len += 8;
}

static void put_number(benc *e, int idx) {
  int64_t i;
  double x;
  if (number_parts(e->L, idx, &i, &x)) {
    put_int(e, i);
  } else {
    put_byte(e, B_FLOAT);
    put_f8(e, x);
  }
}

/* ---- names ---- */

/* Pushes the key under which `idx` is found in table `t` (raw), or
 * returns 0. */
static int find_key(lua_State *L, int t, int idx) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_rawequal(L, -1, idx)) { lua_pop(L, 1); return 1; }
    lua_pop(L, 1);
  }
  return 0;
}

static void put_name(benc *e, int tag, int name_idx) {
  size_t n;
  const char *s = lua_tolstring(e->L, name_idx, &n);
  put_byte(e, tag);
  put_varint(e, n);
  put_bytes(e, s, n);
}

/* A module, the globals or a class: written by name. 0 when it is not
 * one any more (a cached name gone stale): nothing is written then. */
static int put_named(benc *e, int idx, int64_t kind) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  if (kind == MEMO_GLOBALS) { put_byte(e, B_GLOBALS); return 1; }
  if (kind == MEMO_CLASS && e->classes && find_key(L, e->classes, idx)) {
    put_name(e, B_CLASS, lua_gettop(L));
    lua_settop(L, top);
    return 1;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (find_key(L, lua_gettop(L), idx) && lua_type(L, -1) == LUA_TSTRING) {
    put_name(e, B_MODULE, lua_gettop(L));
    lua_settop(L, top);
    return 1;
  }
  lua_settop(L, top);
  return 0;
}

static void memo_special(benc *e, pmap *to, int idx, int64_t kind) {
  if (pmap_put(to, lua_topointer(e->L, idx), kind) < 0)
    luaL_error(e->L, "not enough memory");
}

/* Classes first, then the globals, then modules: the first mark wins. */
static void mark_named(benc *e, pmap *to) {
  lua_State *L = e->L;
  if (e->classes) {
    lua_pushnil(L);
    while (lua_next(L, e->classes)) {
      if (lua_istable(L, -1)) memo_special(e, to, -1, MEMO_CLASS);
      lua_pop(L, 1);
    }
  }
  lmp_pushglobaltable(L);
  memo_special(e, to, -1, MEMO_GLOBALS);
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      int t = lua_type(L, -1);
      if ((t == LUA_TTABLE || t == LUA_TFUNCTION) && lua_type(L, -2) == LUA_TSTRING)
        memo_special(e, to, -1, MEMO_MODULE);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* ---- the encode walk ---- */

static void enc_value(benc *e, int idx, int depth);

/* The text of the error at the top (an lmp error table has __tostring). */
static const char *error_text(lua_State *L) {
  if (lua_isstring(L, -1)) return lua_tostring(L, -1);
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
    lua_pop(L, 1);
    return luaL_typename(L, -1);
  }
  return lua_tostring(L, -1);
}

/* A count not known until its items are written: `width` bytes are kept
 * at `at` and filled with n as a padded varint (readers accept
 * non-minimal forms); a count that needs more room shifts what follows. */
static size_t count_slot(benc *e, int width) {
  size_t at = e->len;
  reserve(e, (size_t)width);
  e->len += (size_t)width;
  return at;
}

static void fill_count(benc *e, size_t at, int width, uint64_t n) {
  int k = varint_size(n), i;
  unsigned char *p;
  if (k > width) {
    reserve(e, (size_t)(k - width));
    memmove(e->buf + at + k, e->buf + at + width, e->len - at - width);
    e->len += (size_t)(k - width);
    width = k;
  }
  p = (unsigned char *)e->buf + at;
  for (i = 0; i < width - 1; i++) { p[i] = (unsigned char)(n | 0x80); n >>= 7; }
  p[width - 1] = (unsigned char)n;
}

/* String keys repeat (records): the first of each short one is numbered,
 * later ones are written as its number. */
static void enc_key(benc *e, int idx) {
  size_t n;
  const char *s = lua_tolstring(e->L, idx, &n);
  int64_t k;
  if (n >= 64) { put_str(e, s, n); return; }
  k = pmap_get(&e->keys, s);
  if (k) {
    put_byte(e, B_KEYREF);
    put_varint(e, (uint64_t)k);
    return;
  }
  if (pmap_put(&e->keys, s, ++e->nkeys) < 0) luaL_error(e->L, "not enough memory");
  put_str(e, s, n);
}

/* The index of the key at kidx when it continues the sequence 1..narr.
 * (5.3+: a table key of integral value is always an integer.) */
static int next_in_sequence(lua_State *L, int kidx, size_t narr) {
#if LUA_VERSION_NUM >= 503
  int isint;
  lua_Integer k = lua_tointegerx(L, kidx, &isint);
  return isint && (size_t)k == narr + 1;
#else
  return lua_type(L, kidx) == LUA_TNUMBER && lua_tonumber(L, kidx) == (lua_Number)(narr + 1);
#endif
}

/* A typed run being written among a table's array items: its kind
 * (B_IRUN, B_FRUN, or 0 when none is open), where its count goes and how
 * many items it holds. width 0: runs are off for this array. */
typedef struct {
  int kind, width;
  size_t at;
  uint64_t n;
} run;

static void run_init(run *r, size_t items) {
  r->kind = 0;
  r->n = 0;
  r->width = items >= RUN_MIN ? varint_size(items) : 0;
}

static void run_close(benc *e, run *r) {
  if (r->kind) fill_count(e, r->at, r->width, r->n);
  r->kind = 0;
}

/* Writes one array item: a number joins (or opens) a run of its kind,
 * anything else ends the run and is written as a value. */
static void enc_item(benc *e, run *r, int idx, int depth) {
  lua_State *L = e->L;
  if (r->width && lua_type(L, idx) == LUA_TNUMBER) {
    int64_t i;
    double x;
    int kind;
#if LUA_VERSION_NUM >= 503
    /* in a float run, a fraction proves a float with one call (an
     * integer subtype is never fractional); the cast is safe in range */
    if (r->kind == B_FRUN) {
      x = lua_tonumber(L, idx);
      if (x > -9.2e18 && x < 9.2e18 && (double)(int64_t)x != x) {
        put_f8(e, x);
        r->n++;
        return;
      }
    }
#endif
    kind = number_parts(L, idx, &i, &x) ? B_IRUN : B_FRUN;
    if (r->kind != kind) {
      run_close(e, r);
      put_byte(e, kind);
      r->at = count_slot(e, r->width);
      r->kind = kind;
      r->n = 0;
      e->flags |= F_RUNS;
    }
    if (kind == B_IRUN) put_varint(e, ((uint64_t)i << 1) ^ (uint64_t)(i >> 63));
    else put_f8(e, x);
    r->n++;
    return;
  }
  run_close(e, r);
  enc_value(e, idx, depth);
}

/* One lua_next walk: Lua lists the array part first, in order, so the
 * keys 1, 2, ... that come first are written as the array; every other
 * pair follows. (A key of the sequence met later in the walk, in the hash
 * part, is written as a pair: same value, other place.) */
static void enc_table(benc *e, int idx, int depth) {
  lua_State *L = e->L;
  size_t narr = 0, rawn = lua_rawlen(L, idx), at_arr, at_hash;
  uint64_t nhash = 0;
  int hasmt, top, warr = varint_size(rawn), whash = 1;
  run r;
  luaL_checkstack(L, 6, "pickle");
  hasmt = lua_getmetatable(L, idx);
  put_byte(e, hasmt ? B_TABLEMT : B_TABLE);
  at_arr = count_slot(e, warr);
  at_hash = count_slot(e, whash);
  if (hasmt) {
    seg_push(e, SEG_LABEL, 0, 0, "<metatable>");
    enc_value(e, lua_gettop(L), depth + 1);
    e->plen--;
    lua_pop(L, 1);
  }
  top = lua_gettop(L);
  seg_push(e, SEG_INT, 0, 0, NULL);
  run_init(&r, rawn);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    /* narr < rawn: the keys 1..k that come first are all non-nil, so k
     * is at most any border (a map with rawn 0 asks nothing of its keys) */
    if (nhash == 0 && narr < rawn && next_in_sequence(L, top + 1, narr)) {
      e->path[e->plen - 1].i = (lua_Integer)++narr;
      enc_item(e, &r, top + 2, depth + 1);
    } else {
      run_close(e, &r);
      e->path[e->plen - 1].kind = SEG_LABEL;
      e->path[e->plen - 1].s = "<key>";
      if (lua_type(L, top + 1) == LUA_TSTRING) enc_key(e, top + 1);
      else enc_value(e, top + 1, depth + 1);
      e->path[e->plen - 1].kind = SEG_KEY;
      e->path[e->plen - 1].idx = top + 1;
      enc_value(e, top + 2, depth + 1);
      nhash++;
    }
    lua_pop(L, 1);
  }
  run_close(e, &r);
  e->plen--;
  fill_count(e, at_hash, whash, nhash);   /* the later slot first: it may move */
  fill_count(e, at_arr, warr, narr);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  put_bytes((benc *)ud, (const char *)p, sz);
  return 0;
}

/* A C function that is field `f` of a loaded module `m`: pushes m and f. */
static int find_cfunc(lua_State *L, int idx) {
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) &&
        find_key(L, lua_gettop(L), idx)) {
      if (lua_type(L, -1) == LUA_TSTRING) {
        lua_remove(L, -2);        /* module table */
        lua_remove(L, -3);        /* _LOADED */
        return 1;                 /* ... modname field */
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static void enc_upvalues(benc *e, int idx, int64_t fid, int depth) {
  lua_State *L = e->L;
  int i, nup = 0;
  (void)fid;   /* only used where upvalues can be joined */
  while (lua_getupvalue(L, idx, nup + 1)) { lua_pop(L, 1); nup++; }
  put_varint(e, (uint64_t)nup);
  for (i = 1; i <= nup; i++) {
    const char *name;
#if LUA_VERSION_NUM >= 502 || defined(LMP_LUAJIT)
    void *uid = lua_upvalueid(L, idx, i);
    int64_t joined = pmap_get(&e->upvals, uid);
    if (joined) {
      e->flags |= F_REFS;
      put_byte(e, B_JOIN);
      put_varint(e, (uint64_t)(joined >> 16));
      put_varint(e, (uint64_t)(joined & 0xffff));
      continue;
    }
    if (i < 0x10000 && pmap_put(&e->upvals, uid, fid << 16 | i) < 0)
      luaL_error(L, "not enough memory");
#endif
    name = lua_getupvalue(L, idx, i);
    if (name && strcmp(name, "_ENV") == 0 && lua_istable(L, -1)) {
      /* the global environment binds to the receiver's globals */
      put_byte(e, B_GLOBALS);
      lua_pop(L, 1);
      continue;
    }
    seg_push(e, SEG_UPVAL, 0, i, name && *name ? name : "?");
    enc_value(e, lua_gettop(L), depth + 1);
    e->plen--;
    lua_pop(L, 1);
  }
}

static void enc_function(benc *e, int idx, int depth) {
  lua_State *L = e->L;
  int64_t fid;
  size_t at;
  luaL_checkstack(L, 8, "pickle");
  if (lua_iscfunction(L, idx)) {
    if (!find_cfunc(L, idx))
      enc_fail(e, "cannot pickle a C function that is not a field of a loaded module");
    put_byte(e, B_CFUNC);
    put_str(e, lua_tostring(L, -2), lua_rawlen(L, -2));
    put_str(e, lua_tostring(L, -1), lua_rawlen(L, -1));
    lua_pop(L, 2);
    fid = ++e->nobj;
    pmap_put(&e->memo, lua_topointer(L, idx), fid);
    return;
  }
  fid = ++e->nobj;
  if (pmap_put(&e->memo, lua_topointer(L, idx), fid) < 0)
    luaL_error(L, "not enough memory");
  put_byte(e, B_FUNC);
  at = e->len;
  put_bytes(e, "\x80\x80\x80\x80\x00", 5);   /* padded varint: code size */
  lua_pushvalue(L, idx);
#if LUA_VERSION_NUM >= 503
  lua_dump(L, dump_writer, e, 0);
#else
  lua_dump(L, dump_writer, e);
#endif
  lua_pop(L, 1);
  {
    uint64_t n = e->len - at - 5;
    unsigned char *p = (unsigned char *)e->buf + at;
    int k;
    if (n >= (1u << 28)) enc_fail(e, "function too large");
    for (k = 0; k < 4; k++) p[k] = (unsigned char)(0x80 | ((n >> (7 * k)) & 0x7f));
    p[4] = (unsigned char)(n >> 28);
  }
  /* A function's environment (5.1's fenv) is never copied: like _ENV on
   * 5.2+, it binds to the receiver's globals. Copying it would drag the
   * sender's whole global state (or a test framework's sandbox) along. */
  put_byte(e, B_NIL);
  enc_upvalues(e, idx, fid, depth);
}

static void enc_userdata(benc *e, int idx, int depth) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  luaL_checkstack(L, 8, "pickle");
  if (!lua_getmetatable(L, idx)) enc_fail(e, "cannot pickle userdata");
  lua_pushliteral(L, "__pickle");
  lua_rawget(L, top + 1);
  if (!lua_isfunction(L, -1)) enc_fail(e, "cannot pickle userdata");
  if (!(e->classes && find_key(L, e->classes, top + 1))) {
    lua_pushliteral(L, "__name");
    lua_rawget(L, top + 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      enc_fail(e, "cannot pickle userdata: its metatable is not registered "
                  "(lmp.pickle.register)");
  }
  /* top+1 mt, top+2 hook, top+3 name */
  if (pmap_put(&e->memo, lua_topointer(L, idx), ++e->nobj) < 0)
    luaL_error(L, "not enough memory");
  put_name(e, B_UDATA, top + 3);
  lua_pushvalue(L, top + 2);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    lua_pushfstring(L, "__pickle failed: %s", error_text(L));
    enc_fail(e, lua_tostring(L, -1));
  }
  seg_push(e, SEG_LABEL, 0, 0, "<state>");
  enc_value(e, lua_gettop(L), depth + 1);
  e->plen--;
  lua_settop(L, top);
}

static void enc_value(benc *e, int idx, int depth) {
  lua_State *L = e->L;
  int t = lua_type(L, idx);
  int64_t id;
  switch (t) {
    case LUA_TNIL: put_byte(e, B_NIL); return;
    case LUA_TBOOLEAN: put_byte(e, lua_toboolean(L, idx) ? B_TRUE : B_FALSE); return;
    case LUA_TNUMBER: put_number(e, idx); return;
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      put_str(e, s, n);
      return;
    }
    case LUA_TTABLE: case LUA_TFUNCTION: case LUA_TUSERDATA:
      break;
    default:
      lua_pushfstring(L, "cannot pickle %s", lua_typename(L, t));
      enc_fail(e, lua_tostring(L, -1));
  }
  id = pmap_get(&e->memo, lua_topointer(L, idx));
  if (id == 0 && e->named) id = pmap_get(e->named, lua_topointer(L, idx));
  if (id > 0) {
    e->flags |= F_REFS;
    put_byte(e, B_REF);
    put_varint(e, (uint64_t)id);
    return;
  }
  if (id < 0) {
    if (put_named(e, idx, id)) return;
    if (!e->named) enc_fail(e, "module vanished while pickling");
    e->named_gen = 0;   /* a stale cached name: rebuilt next time; a value now */
  }
  if (depth >= MAX_DEPTH) {
    lua_pushfstring(L, "nesting deeper than %d levels", MAX_DEPTH);
    enc_fail(e, lua_tostring(L, -1));
  }
  if (t == LUA_TTABLE) {
    if (pmap_put(&e->memo, lua_topointer(L, idx), ++e->nobj) < 0)
      luaL_error(L, "not enough memory");
    enc_table(e, idx, depth);
  } else if (t == LUA_TFUNCTION) {
    enc_function(e, idx, depth);
  } else {
    enc_userdata(e, idx, depth);
  }
}

/* The items first..last of the list at idx, written as one array (nil
 * holes included): what a pool ships as a chunk, without copying it into
 * a table first. The array counts as an object, as a table would. */
static void enc_slice(benc *e, int idx, lua_Integer first, lua_Integer last) {
  lua_State *L = e->L;
  lua_Integer i;
  int top = lua_gettop(L);
  run r;
  put_byte(e, B_TABLE);
  put_varint(e, (uint64_t)(last - first + 1));
  put_byte(e, 0);
  ++e->nobj;
  seg_push(e, SEG_INT, 0, 0, NULL);
  run_init(&r, (size_t)(last - first + 1));
  for (i = first; i <= last; i++) {
    e->path[e->plen - 1].i = i - first + 1;
    lua_rawgeti(L, idx, i);
    enc_item(e, &r, top + 1, 1);
    lua_settop(L, top);
  }
  run_close(e, &r);
  e->plen--;
}

/* Runs under lua_pcall: 1 value, 2 benc*, 3 classes or nil, 4/5 the
 * slice first..last (or nil). */
static int do_dump(lua_State *L) {
  benc *e = (benc *)lua_touserdata(L, 2);
  e->L = L;
  e->len = 0;
  e->nobj = 0;
  e->plen = 1;
  e->path[0].kind = SEG_ROOT;
  e->classes = lua_istable(L, 3) ? 3 : 0;
  pmap_reset(&e->memo);
  pmap_reset(&e->upvals);
  pmap_reset(&e->keys);
  e->nkeys = 0;
  e->flags = 0;
  put_byte(e, MAGIC);
  put_byte(e, 0);
  e->named = NULL;
  {
    uint64_t gen = e->ps ? lmp_pickle_names_gen(L, e->ps, e->classes) : 0;
    if (gen) {          /* the cache of names can be trusted: no walk */
      if (gen != e->named_gen) {
        pmap_reset(&e->namedmap);
        mark_named(e, &e->namedmap);
        e->named_gen = gen;
      }
      e->named = &e->namedmap;
    }
  }
  if (!e->named && (!lua_isnoneornil(L, 4) || lua_type(L, 1) == LUA_TTABLE ||
      lua_type(L, 1) == LUA_TFUNCTION || lua_type(L, 1) == LUA_TUSERDATA))
    mark_named(e, &e->memo);    /* no cache: mark them in this dump's memo */
  if (lua_isnoneornil(L, 4)) enc_value(e, 1, 0);
  else enc_slice(e, 1, lua_tointeger(L, 4), lua_tointeger(L, 5));
  e->buf[1] = (char)e->flags;
  if (lua_toboolean(L, 6) && e->len >= LMP_BYTES_MIN) return 0;   /* l_bdumps hands it over */
  lua_pushlstring(L, e->buf, e->len);
  return 1;
}

/* bdumps(v [, name [, classes [, first, last [, bytes]]]]) -> string.
 * With first and last, v is a list and the string holds {v[first], ...,
 * v[last]}. With bytes, a result of LMP_BYTES_MIN or more comes as an
 * lmp.Bytes that owns the encoder's buffer: no copy into a Lua string, and
 * the caller frees it at once (a pool's chunk), where a string would be
 * garbage until the collector ran. */
static int l_bdumps(lua_State *L) {
  benc *e = (benc *)lua_touserdata(L, lua_upvalueindex(1));
  int st, bytes = lua_toboolean(L, 6);
  lua_settop(L, 5);
  if (!lua_isnil(L, 4)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argcheck(L, luaL_checkinteger(L, 5) >= luaL_checkinteger(L, 4) - 1, 5,
                  "slice ends before it starts");
  }
  if (e->busy) e = benc_new(L);   /* reentered from a __pickle hook */
  else lua_pushnil(L);
  e->busy = 1;
  e->ps = lua_touserdata(L, lua_upvalueindex(2));
  e->root = luaL_optstring(L, 2, "value");
  lua_pushcfunction(L, do_dump);
  lua_pushvalue(L, 1);
  lua_pushlightuserdata(L, e);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_pushvalue(L, 5);
  lua_pushboolean(L, bytes);
  st = lua_pcall(L, 6, 1, 0);
  e->busy = 0;
  if (st == 0 && bytes && e->len >= LMP_BYTES_MIN) {
    char *buf = e->buf;
    lua_pop(L, 1);
    e->buf = NULL;
    e->cap = 0;
    lmp_bytes_push(L, buf, e->len);
    return 1;
  }
  if (e->cap > (1u << 20)) {   /* do not keep a huge buffer around */
    free(e->buf);
    e->buf = NULL;
    e->cap = 0;
  }
  if (st != 0) return lua_error(L);
  return 1;
}

/* ---- the decode walk ---- */

typedef struct {
  lua_State *L;
  const unsigned char *p, *end;
  int objs;         /* stack index: id -> object (false while unfinished) */
  int keys;         /* stack index: i -> i-th short string key */
  lua_Integer nobj, nkeys;
  int refs;         /* objects must be numbered */
  int nofunc, classes;
} bdec;

static int dec_fail(bdec *d, const char *what) {
  return lmp_error_raise(d->L, "pickle", "malformed input: %s", what);
}

static int get_byte(bdec *d) {
  if (d->p >= d->end) dec_fail(d, "truncated");
  return *d->p++;
}

static uint64_t get_varint_long(bdec *d) {
  uint64_t v = 0;
  int shift;
  if (d->end - d->p >= 10) {         /* room for the longest: no checks */
    const unsigned char *p = d->p;
    for (shift = 0; shift < 64; shift += 7) {
      int c = *p++;
      v |= (uint64_t)(c & 0x7f) << shift;
      if (!(c & 0x80)) { d->p = p; return v; }
    }
    dec_fail(d, "bad varint");
  }
  for (shift = 0; shift < 64; shift += 7) {
    int c = get_byte(d);
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  dec_fail(d, "bad varint");
  return 0;
}

/* Most varints (counts, key numbers, small integers) are one byte. */
static inline uint64_t get_varint(bdec *d) {
  if (d->p < d->end && *d->p < 0x80) return *d->p++;
  return get_varint_long(d);
}

/* A count of items that take at least `unit` bytes each: bounded by what
 * is left, so a false claim never allocates more than the input. */
static size_t get_count(bdec *d, size_t unit) {
  uint64_t n = get_varint(d);
  if (n > (uint64_t)(d->end - d->p) / unit || n > 0x7fffffff)
    dec_fail(d, "length larger than the data");
  return (size_t)n;
}

static void dec_value(bdec *d, int depth);

static void dec_name(bdec *d) {
  size_t n = get_count(d, 1);
  lua_pushlstring(d->L, (const char *)d->p, n);
  d->p += n;
}

static void new_obj(bdec *d, int idx) {
  if (!d->refs) { ++d->nobj; return; }
  lua_pushvalue(d->L, idx);
  lua_rawseti(d->L, d->objs, ++d->nobj);
}

/* Pushes a table key; returns 1 when it is a string (then it cannot be
 * nil or NaN). */
static int dec_key(bdec *d, int depth) {
  lua_State *L = d->L;
  int c;
  if (d->p >= d->end) dec_fail(d, "truncated");
  c = *d->p;
  if (c == B_KEYREF) {
    uint64_t k;
    d->p++;
    k = get_varint(d);
    if (k < 1 || k > (uint64_t)d->nkeys) dec_fail(d, "bad key reference");
    lua_rawgeti(L, d->keys, (lua_Integer)k);
    return 1;
  }
  dec_value(d, depth);
  if (c >= B_SHORTSTR && c < B_SMALLINT) {
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->keys, ++d->nkeys);
    return 1;
  }
  return 0;
}

static double get_f8(bdec *d) {
  uint64_t u = 0;
  double x;
  int k;
  if (d->end - d->p < 8) dec_fail(d, "truncated");
  for (k = 0; k < 8; k++) u |= (uint64_t)d->p[k] << (8 * k);
  d->p += 8;
  memcpy(&x, &u, 8);
  return x;
}

/* Items 1..n of an array part into table t at off + i: values, or typed
 * runs standing for several consecutive items. */
static void dec_items(bdec *d, int t, lua_Integer off, size_t n, int depth) {
  lua_State *L = d->L;
  size_t i = 1;
  while (i <= n) {
    int c = d->p < d->end ? *d->p : -1;
    if (c == B_IRUN || c == B_FRUN) {
      size_t m, j;
      d->p++;
      m = get_count(d, c == B_IRUN ? 1 : 8);
      if (m == 0 || m > n - i + 1) dec_fail(d, "run longer than its array");
      for (j = 0; j < m; j++, i++) {
        if (c == B_IRUN) {
          uint64_t z = get_varint(d);
          int64_t v = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
#if LUA_VERSION_NUM >= 503
          lua_pushinteger(L, (lua_Integer)v);
#else
          lua_pushnumber(L, (lua_Number)v);
#endif
        } else {
          lua_pushnumber(L, (lua_Number)get_f8(d));
        }
        lua_rawseti(L, t, off + (lua_Integer)i);
      }
    } else {
      dec_value(d, depth);
      lua_rawseti(L, t, off + (lua_Integer)i);
      i++;
    }
  }
}

static void dec_table(bdec *d, int hasmt, int depth) {
  lua_State *L = d->L;
  if (!lua_checkstack(L, 8)) dec_fail(d, "nesting too deep");
  size_t narr = get_count(d, 1), nhash = get_count(d, 2), i;
  int t;
  lua_createtable(L, (int)narr, (int)nhash);
  t = lua_gettop(L);
  new_obj(d, t);
  if (hasmt) {
    dec_value(d, depth + 1);
    if (!lua_istable(L, -1)) dec_fail(d, "metatable is not a table");
  }
  dec_items(d, t, 0, narr, depth + 1);
  for (i = 0; i < nhash; i++) {
    if (!dec_key(d, depth + 1) &&
        (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                              lua_tonumber(L, -1) != lua_tonumber(L, -1))))
      dec_fail(d, "nil or NaN key");
    dec_value(d, depth + 1);
    lua_rawset(L, t);
  }
  if (hasmt) lua_setmetatable(L, t);
}

typedef struct { const char *p; size_t n; } chunk;

static const char *chunk_reader(lua_State *L, void *ud, size_t *sz) {
  chunk *c = (chunk *)ud;
  (void)L;
  *sz = c->n;
  c->n = 0;
  return *sz ? c->p : NULL;
}

static void dec_upvalues(bdec *d, int f, int depth) {
  lua_State *L = d->L;
  size_t nup = get_count(d, 1), have = 0, i;
  while (lua_getupvalue(L, f, (int)have + 1)) { lua_pop(L, 1); have++; }
  if (nup != have) dec_fail(d, "wrong number of upvalues");
  for (i = 1; i <= nup; i++) {
    if (d->p < d->end && *d->p == B_JOIN) {
#if LUA_VERSION_NUM >= 502 || defined(LMP_LUAJIT)
      uint64_t fid, n;
      d->p++;
      fid = get_varint(d);
      n = get_varint(d);
      if (fid < 1 || fid > (uint64_t)d->nobj) dec_fail(d, "bad shared upvalue");
      lua_rawgeti(L, d->objs, (lua_Integer)fid);
      if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1) || n < 1 ||
          n > 255 || !lua_getupvalue(L, -1, (int)n) ||
          (lua_rawequal(L, -2, f) && n == i))
        dec_fail(d, "bad shared upvalue");
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, (int)i, lua_gettop(L), (int)n);
      lua_pop(L, 1);
#else
      dec_fail(d, "shared upvalues need Lua 5.2+ or LuaJIT");
#endif
    } else {
      dec_value(d, depth + 1);
      lua_setupvalue(L, f, (int)i);
    }
  }
}

static void dec_function(bdec *d, int depth) {
  lua_State *L = d->L;
  size_t n;
  chunk c;
  int f;
  if (d->nofunc) lmp_error_raise(L, "pickle", "functions refused (loads with functions = false)");
  if (!lua_checkstack(L, 8)) dec_fail(d, "nesting too deep");
  n = get_count(d, 1);
  if (n < 4 || d->p[0] != 0x1B) dec_fail(d, "function is not bytecode");
  c.p = (const char *)d->p;
  c.n = n;
  d->p += n;
#if defined(LMP_LUAJIT)
  if (lua_loadx(L, chunk_reader, &c, "=pickled", "b") != 0)
#elif LUA_VERSION_NUM >= 502
  if (lua_load(L, chunk_reader, &c, "=pickled", "b") != 0)
#else
  if (lua_load(L, chunk_reader, &c, "=pickled") != 0)
#endif
    lmp_error_raise(L, "pickle", "malformed input: cannot load function: %s",
                    lua_tostring(L, -1));
  f = lua_gettop(L);
  new_obj(d, f);
  dec_value(d, depth + 1);    /* environment (5.1) or nil */
#if LUA_VERSION_NUM < 502
  if (lua_istable(L, -1)) lua_setfenv(L, f);
  else lua_pop(L, 1);
#else
  lua_pop(L, 1);
#endif
  dec_upvalues(d, f, depth);
}

static void dec_cfunction(bdec *d) {
  lua_State *L = d->L;
  if (d->nofunc) lmp_error_raise(L, "pickle", "functions refused (loads with functions = false)");
  dec_value(d, MAX_DEPTH);
  dec_value(d, MAX_DEPTH);
  if (!lua_isstring(L, -1) || !lua_isstring(L, -2)) dec_fail(d, "bad C function");
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_pushvalue(L, -3);
  lua_rawget(L, -2);
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, -3);
    lua_rawget(L, -2);
  } else {
    lua_pushnil(L);
  }
  if (!lua_isfunction(L, -1))
    lmp_error_raise(L, "pickle", "unknown C function %s.%s",
                    lua_tostring(L, -5), lua_tostring(L, -4));
  lua_replace(L, -5);
  lua_pop(L, 3);
  new_obj(d, lua_gettop(L));
}

static void dec_module(bdec *d) {
  lua_State *L = d->L;
  dec_name(d);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_pushvalue(L, -2);
  lua_rawget(L, -2);
  if (!lua_isnil(L, -1)) { lua_replace(L, -3); lua_pop(L, 1); return; }
  lua_pop(L, 2);
  if (d->nofunc)
    lmp_error_raise(L, "pickle", "module '%s' is not loaded (functions refused)",
                    lua_tostring(L, -1));
  lua_getglobal(L, "require");
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) != 0)
    lmp_error_raise(L, "pickle", "cannot load module '%s': %s",
                    lua_tostring(L, -2), lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
  lua_replace(L, -2);
}

static void dec_class(bdec *d) {
  lua_State *L = d->L;
  dec_name(d);
  if (d->classes) {             /* not raw: lmp.pickle loads lazy classes */
    lua_pushvalue(L, -1);
    lua_gettable(L, d->classes);
  } else {
    lua_pushnil(L);
  }
  if (!lua_istable(L, -1))
    lmp_error_raise(L, "pickle", "unknown class '%s' (lmp.pickle.register it)",
                    lua_tostring(L, -2));
  lua_replace(L, -2);
}

static void dec_userdata(bdec *d, int depth) {
  lua_State *L = d->L;
  lua_Integer id;
  int top;
  if (!lua_checkstack(L, 8)) dec_fail(d, "nesting too deep");
  dec_name(d);
  top = lua_gettop(L);
  lua_pushboolean(L, 0);
  new_obj(d, -1);
  id = d->nobj;
  lua_pop(L, 1);
  dec_value(d, depth + 1);               /* top+1: state */
  lua_pushnil(L);                        /* top+2: metatable */
  if (d->classes) {
    lua_pushvalue(L, top);
    lua_rawget(L, d->classes);
    lua_replace(L, top + 2);
  }
  if (!lua_istable(L, top + 2)) {
    lua_pushvalue(L, top);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_replace(L, top + 2);
  }
  if (lua_istable(L, top + 2)) {
    lua_pushliteral(L, "__unpickle");
    lua_rawget(L, top + 2);
  } else {
    lua_pushnil(L);
  }
  if (!lua_isfunction(L, -1))
    lmp_error_raise(L, "pickle", "no __unpickle for userdata class '%s'",
                    lua_tostring(L, top));
  lua_pushvalue(L, top + 1);
  if (lua_pcall(L, 1, 1, 0) != 0)
    lmp_error_raise(L, "pickle", "__unpickle of '%s' failed: %s", lua_tostring(L, top),
                    error_text(L));
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->objs, id);
  lua_replace(L, top);
  lua_settop(L, top);
}

static void dec_value(bdec *d, int depth) {
  lua_State *L = d->L;
  int c;
  if (depth > MAX_DEPTH + 5) dec_fail(d, "nesting too deep");
  c = get_byte(d);
  if (c >= B_SMALLINT) { lua_pushinteger(L, c - B_SMALLINT); return; }
  if (c >= B_SHORTSTR) {
    size_t n = (size_t)(c - B_SHORTSTR);
    if ((size_t)(d->end - d->p) < n) dec_fail(d, "truncated");
    lua_pushlstring(L, (const char *)d->p, n);
    d->p += n;
    return;
  }
  switch (c) {
    case B_NIL: lua_pushnil(L); return;
    case B_FALSE: lua_pushboolean(L, 0); return;
    case B_TRUE: lua_pushboolean(L, 1); return;
    case B_INT: {
      uint64_t z = get_varint(d);
      int64_t i = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
#if LUA_VERSION_NUM >= 503
      lua_pushinteger(L, (lua_Integer)i);
#else
      lua_pushnumber(L, (lua_Number)i);
#endif
      return;
    }
    case B_FLOAT: lua_pushnumber(L, (lua_Number)get_f8(d)); return;
    case B_STR: dec_name(d); return;
    case B_TABLE: case B_TABLEMT: dec_table(d, c == B_TABLEMT, depth); return;
    case B_REF: {
      uint64_t id = get_varint(d);
      if (id < 1 || id > (uint64_t)d->nobj) dec_fail(d, "reference to an unknown object");
      if (!d->refs) dec_fail(d, "reference in a message without references");
      lua_rawgeti(L, d->objs, (lua_Integer)id);
      if (lua_type(L, -1) == LUA_TBOOLEAN) dec_fail(d, "reference to an unfinished object");
      return;
    }
    case B_FUNC: dec_function(d, depth); return;
    case B_CFUNC: dec_cfunction(d); return;
    case B_MODULE: dec_module(d); return;
    case B_GLOBALS: lmp_pushglobaltable(L); return;
    case B_CLASS: dec_class(d); return;
    case B_UDATA: dec_userdata(d, depth); return;
    default: dec_fail(d, "unknown tag");
  }
}

static void bdec_init(bdec *d, lua_State *L, const char *s, size_t n) {
  d->L = L;
  d->p = (const unsigned char *)s;
  d->end = d->p + n;
  d->nofunc = lua_toboolean(L, 2);
  d->classes = lua_istable(L, 3) ? 3 : 0;
  d->nobj = 0;
  d->nkeys = 0;
  if (get_byte(d) != MAGIC) dec_fail(d, "not the binary format");
  d->refs = get_byte(d);
  if (d->refs & ~F_KNOWN) dec_fail(d, "written by a newer lmp (unknown format flags)");
  d->refs &= F_REFS;
  lua_newtable(L);
  d->objs = lua_gettop(L);
  lua_newtable(L);
  d->keys = lua_gettop(L);
}

/* bloads(s [, nofunc [, classes]]) -> v */
static int l_bloads(lua_State *L) {
  size_t n;
  const char *s = lmp_bytes_check(L, 1, &n);
  bdec d;
  lua_settop(L, 3);
  bdec_init(&d, L, s, n);
  dec_value(&d, 0);
  if (d.p != d.end) dec_fail(&d, "trailing bytes");
  return 1;
}

/* The key at the top: an index 1..n of the list being unpacked. */
static lua_Integer slice_index(bdec *d, lua_Integer n) {
  lua_Number x;
  if (lua_type(d->L, -1) != LUA_TNUMBER) dec_fail(d, "list index out of range");
  x = lua_tonumber(d->L, -1);
  if (!(x >= 1 && x <= (lua_Number)n && x == floor(x))) dec_fail(d, "list index out of range");
  lua_pop(d->L, 1);
  return (lua_Integer)x;
}

/* bloads_into(s, nofunc, classes, out, offset, n): s holds a list of up
 * to n items (nil holes allowed); item i lands in out[offset + i] without
 * an intermediate table: how a pool files a chunk of results. */
static int l_bloads_into(lua_State *L) {
  size_t len, narr, nhash, i;
  const char *s = lmp_bytes_check(L, 1, &len);
  lua_Integer off = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
  bdec d;
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 6);
  bdec_init(&d, L, s, len);
  if (get_byte(&d) != B_TABLE) dec_fail(&d, "not a list");
  narr = get_count(&d, 1);
  nhash = get_count(&d, 2);
  if ((lua_Integer)narr > n) dec_fail(&d, "list longer than announced");
  lua_pushboolean(L, 0);        /* the list itself: never referred to */
  new_obj(&d, -1);
  lua_pop(L, 1);
  dec_items(&d, 4, off, narr, 1);
  for (i = 0; i < nhash; i++) {
    lua_Integer k;
    dec_key(&d, 1);
    k = slice_index(&d, n);
    dec_value(&d, 1);
    lua_rawseti(L, 4, off + k);
  }
  if (d.p != d.end) dec_fail(&d, "trailing bytes");
  return 0;
}

void lmp_pickle_bin_open(lua_State *L, int ps_idx) {
  ps_idx = lua_absindex(L, ps_idx);
  benc_new(L);
  lua_pushvalue(L, ps_idx);
  lua_pushcclosure(L, l_bdumps, 2);
  lua_setfield(L, -2, "bdumps");
  lua_pushcfunction(L, l_bloads);
  lua_setfield(L, -2, "bloads");
  lua_pushcfunction(L, l_bloads_into);
  lua_setfield(L, -2, "bloads_into");
}
