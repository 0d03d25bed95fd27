/* lshm.c -- "lmp.c.shm": raw shared-memory blocks, Value and Array, and
 * the helpers of lshm.h shared with lsync.c and lqueue.c.
 *
 * Value and Array are one C type (Value is an Array of one element): a
 * block holding {magic, type, n} and the elements, plus an optional lock
 * (an lmp.RLock by default) kept as the userdata's user value. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "lshm.h"

#define SHM_MT "lmp.SharedMemory"
#define VALUE_MT "lmp.Value"
#define ARRAY_MT "lmp.Array"
#define CACHE_KEY "lmp.shm.cache"
#define ARR_MAGIC 0x416d706cu     /* "lmpA" */
#define ARR_OFF 64

/* ------------------------------------------------------------- helpers */

void lmp_shmobj_release(lmp_shm *s, int keep) {
  if (!s->addr) return;
  if (!keep && s->creator == getpid()) lmp_shm_unlink(s->name);
  lmp_shm_close(s);
}

void lmp_shmobj_state(lua_State *L, const lmp_shm *s, const char *luamod,
                      const char *cmod) {
  lua_createtable(L, 0, 2);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_getfield(L, -1, luamod);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, -1, cmod);
  }
  lua_setfield(L, -3, "mod");
  lua_pop(L, 1);
  lua_pushstring(L, s->name);
  lua_setfield(L, -2, "name");
}

const char *lmp_shmobj_state_name(lua_State *L, int idx) {
  const char *name;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "name");
  name = lua_tostring(L, -1);
  if (!name || !lmp_shm_name_ok(name))
    luaL_argerror(L, idx, "state without a valid block name");
  lua_pop(L, 1);   /* still referenced by the state table */
  return name;
}

static void push_cache(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, CACHE_KEY);
  }
}

int lmp_shmobj_cache_get(lua_State *L, const char *name, const char *tname) {
  lmp_shm *s;
  push_cache(L);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  /* every object of ours starts with its lmp_shm */
  s = luaL_testudata(L, -1, tname);
  if (s && s->addr) return 1;
  lua_pop(L, 1);
  return 0;
}

void lmp_shmobj_cache_put(lua_State *L, int idx, const char *name) {
  idx = lua_absindex(L, idx);
  push_cache(L);
  lua_pushvalue(L, idx);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

void lmp_uv_set(lua_State *L, int ud, int v) {
  ud = lua_absindex(L, ud);
  v = lua_absindex(L, v);
#if LUA_VERSION_NUM >= 504
  lua_pushvalue(L, v);
  lua_setiuservalue(L, ud, 1);
#else
  lua_createtable(L, 1, 0);
  lua_pushvalue(L, v);
  lua_rawseti(L, -2, 1);
  lua_setfenv(L, ud);
#endif
}

void lmp_uv_get(lua_State *L, int ud) {
#if LUA_VERSION_NUM >= 504
  lua_getiuservalue(L, ud, 1);
#else
  lua_getfenv(L, ud);
  if (lua_istable(L, -1)) lua_rawgeti(L, -1, 1); else lua_pushnil(L);
  lua_remove(L, -2);
#endif
}

double lmp_shmobj_deadline(lua_State *L, int idx) {
  if (lua_isboolean(L, idx))     /* Python's (block [, timeout]) */
    return lua_toboolean(L, idx) ? lmp_check_deadline(L, idx + 1) : lmp_deadline(0);
  return lmp_check_deadline(L, idx);
}

int lmp_shmobj_raise(lua_State *L, int neg_errno, const char *what,
                     const char *name) {
  if (neg_errno == -ENOENT)
    return lmp_error_raise(L, "os", "%s: no shared memory block named '%s' "
                           "(its creator closed it or exited)", what, name);
  lua_pushfstring(L, "%s %s", what, name ? name : "");
  return lmp_error_raise_errno(L, neg_errno, lua_tostring(L, -1));
}

int lmp_shmobj_unlink(lua_State *L, const lmp_shm *s) {
  int r = lmp_shm_unlink(s->name);
  if (r < 0 && r != -ENOENT) return lmp_shmobj_raise(L, r, "unlink", s->name);
  lua_pushboolean(L, r == 0);
  return 1;
}

/* ------------------------------------------------------------- SharedMemory */

typedef struct shmobj {
  lmp_shm shm;
  int keep;          /* persist: the creator does not unlink on close */
} shmobj;

static shmobj *check_shm(lua_State *L) {
  shmobj *o = luaL_checkudata(L, 1, SHM_MT);
  if (!o->shm.addr) lmp_error_raise(L, "closed", "shared memory block is closed");
  return o;
}

static shmobj *new_shmobj(lua_State *L) {
  shmobj *o = lua_newuserdatauv_compat(L, sizeof *o);
  memset(o, 0, sizeof *o);
  luaL_setmetatable(L, SHM_MT);
  return o;
}

/* shared_memory(size | name | {name=, size=, create=, persist=}) */
static int l_shared_memory(lua_State *L) {
  const char *name = NULL;
  lua_Number size = 0;
  int create = 0, keep = 0, r;
  shmobj *o;
  size_t namelen = 0;
  if (lua_type(L, 1) == LUA_TNUMBER) {
    size = lua_tonumber(L, 1);
    create = 1;
  } else if (lua_type(L, 1) == LUA_TSTRING) {
    name = lua_tolstring(L, 1, &namelen);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "name");
    name = lua_tolstring(L, -1, &namelen);
    lua_getfield(L, 1, "size");
    size = lua_tonumber(L, -1);
    lua_getfield(L, 1, "create");
    create = lua_isnil(L, -1) ? (!name || size != 0) : lua_toboolean(L, -1);
    lua_getfield(L, 1, "persist");
    keep = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  if (name && strlen(name) != namelen)     /* C would stop at the NUL */
    luaL_argerror(L, 1, "block name must not contain a NUL byte");
  if (name && !lmp_shm_name_ok(name))
    luaL_argerror(L, 1, "block name must be '/' followed by 1-62 characters, no other '/'");
  if (create && !(size >= 1 && size <= 1e12 && size == floor(size)))
    luaL_argerror(L, 1, "size must be an integer between 1 and 1e12");
  o = new_shmobj(L);
  r = create ? lmp_shm_create(&o->shm, name, (size_t)size)
             : lmp_shm_attach(&o->shm, name);
  if (r < 0) return lmp_shmobj_raise(L, r, create ? "create" : "attach", name);
  o->keep = keep;
  return 1;
}

static int shm_close(lua_State *L) {
  shmobj *o = luaL_checkudata(L, 1, SHM_MT);
  lmp_shmobj_release(&o->shm, o->keep);
  return 0;
}

static int shm_unlink(lua_State *L) {
  return lmp_shmobj_unlink(L, luaL_checkudata(L, 1, SHM_MT));
}

static int shm_name(lua_State *L) {
  shmobj *o = luaL_checkudata(L, 1, SHM_MT);
  lua_pushstring(L, o->shm.name);
  return 1;
}

static int shm_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_shm(L)->shm.size);
  return 1;
}

/* Checks offset (0-based) and length at idx, idx+1 against the block. */
static void check_range(lua_State *L, shmobj *o, int idx, size_t *off,
                        size_t *len, int has_len) {
  lua_Number f = luaL_checknumber(L, idx), n;
  if (!(f >= 0 && f == floor(f) && f <= (lua_Number)o->shm.size))
    luaL_argerror(L, idx, "offset out of range");
  *off = (size_t)f;
  if (!has_len) return;
  n = luaL_optnumber(L, idx + 1, (lua_Number)(o->shm.size - *off));
  if (!(n >= 0 && n == floor(n) && n <= (lua_Number)(o->shm.size - *off)))
    luaL_argerror(L, idx + 1, "length out of range");
  *len = (size_t)n;
}

/* read(offset [, len]) -> string */
static int shm_read(lua_State *L) {
  shmobj *o = check_shm(L);
  size_t off, len;
  check_range(L, o, 2, &off, &len, 1);
  lua_pushlstring(L, (const char *)o->shm.addr + off, len);
  return 1;
}

/* write(offset, bytes) */
static int shm_write(lua_State *L) {
  shmobj *o = check_shm(L);
  size_t off, len, n;
  const char *s = luaL_checklstring(L, 3, &n);
  check_range(L, o, 2, &off, &len, 0);
  if (n > o->shm.size - off)
    luaL_argerror(L, 3, "data would run past the end of the block");
  memcpy((char *)o->shm.addr + off, s, n);
  return 0;
}

static int shm_tostring(lua_State *L) {
  shmobj *o = luaL_checkudata(L, 1, SHM_MT);
  if (o->shm.addr)
    lua_pushfstring(L, "lmp.SharedMemory (%s, %d bytes)", o->shm.name,
                    (int)o->shm.size);
  else
    lua_pushliteral(L, "lmp.SharedMemory (closed)");
  return 1;
}

static int shm_pickle(lua_State *L) {
  shmobj *o = check_shm(L);
  lmp_shmobj_state(L, &o->shm, "lmp.shm", "lmp.c.shm");
  return 1;
}

static int shm_unpickle(lua_State *L) {
  const char *name = lmp_shmobj_state_name(L, 1);
  shmobj *o = new_shmobj(L);
  int r = lmp_shm_attach(&o->shm, name);
  if (r < 0) return lmp_shmobj_raise(L, r, "attach", name);
  return 1;
}

/* ------------------------------------------------------------- Value, Array */

enum { T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64, T_F32, T_F64 };

static const char *const type_names[] = {
  "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
  "float", "double", NULL
};
static const size_t type_sizes[] = { 1, 2, 4, 8, 1, 2, 4, 8, 4, 8 };
/* Python's array/ctypes type codes, as aliases. */
static const char type_codes[] = "bhiqBHIQfd";

typedef struct arrhdr { uint32_t magic, type; uint64_t n; } arrhdr;

typedef struct arrobj {
  lmp_shm shm;
  char *data;
  size_t n;
  int type;
  int is_value;
} arrobj;

static int check_type(lua_State *L, int idx) {
  const char *s = luaL_checkstring(L, idx);
  int i;
  for (i = 0; type_names[i]; i++)
    if (strcmp(s, type_names[i]) == 0) return i;
  if (s[0] && !s[1]) {
    const char *p = strchr(type_codes, s[0]);
    if (p) return (int)(p - type_codes);
    if (s[0] == 'l') return T_I64;
    if (s[0] == 'L') return T_U64;
  }
  return luaL_argerror(L, idx, lua_pushfstring(L, "unknown type '%s' (int8..int64, "
                       "uint8..uint64, float, double)", s));
}

static arrobj *check_arr(lua_State *L, int idx) {
  arrobj *a = luaL_testudata(L, idx, VALUE_MT);
  if (!a) a = luaL_testudata(L, idx, ARRAY_MT);
  if (!a) luaL_argerror(L, idx, "lmp.Value or lmp.Array expected");
  if (!a->shm.addr) lmp_error_raise(L, "closed", "shared value is closed");
  return a;
}

/* Converts the Lua number at idx to the element type, range-checked. */
typedef union elem { int64_t i; uint64_t u; float f; double d; } elem;

static void check_elem(lua_State *L, int idx, int type, elem *e) {
  static const double lo[] = { -128, -32768, -2147483648.0, -9223372036854775808.0,
                               0, 0, 0, 0 };
  static const double hi[] = { 127, 32767, 2147483647.0, 9223372036854775807.0,
                               255, 65535, 4294967295.0, 18446744073709551615.0 };
  lua_Number x;
  if (type == T_F32 || type == T_F64) {
    e->d = luaL_checknumber(L, idx);
    if (type == T_F32) e->f = (float)e->d;
    return;
  }
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    lua_Integer i = lua_tointeger(L, idx);
    int ok = type == T_I64 || (type == T_U64 && i >= 0)
             || (type < T_I64 && i >= (lua_Integer)lo[type] && i <= (lua_Integer)hi[type])
             || (type >= T_U8 && type < T_U64 && i >= 0 && i <= (lua_Integer)hi[type]);
    if (!ok)
      luaL_argerror(L, idx, lua_pushfstring(L, "value out of range for %s",
                    type_names[type]));
    e->i = (int64_t)i;
    return;
  }
#endif
  x = luaL_checknumber(L, idx);
  if (x != floor(x) || !(x >= lo[type] && x <= hi[type])
      || (type == T_I64 && x >= 9223372036854775808.0)
      || (type == T_U64 && x >= 18446744073709551616.0))
    luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %f",
                  type_names[type], x));
  if (type >= T_U8) e->u = (uint64_t)x; else e->i = (int64_t)x;
}

static void push_elem(lua_State *L, arrobj *a, size_t i) {
  void *p = a->data + i * type_sizes[a->type];
  switch (a->type) {
    case T_I8: lua_pushinteger(L, __atomic_load_n((int8_t *)p, __ATOMIC_RELAXED)); break;
    case T_I16: lua_pushinteger(L, __atomic_load_n((int16_t *)p, __ATOMIC_RELAXED)); break;
    case T_I32: lua_pushinteger(L, __atomic_load_n((int32_t *)p, __ATOMIC_RELAXED)); break;
    case T_I64: lua_pushinteger(L, (lua_Integer)__atomic_load_n((int64_t *)p, __ATOMIC_RELAXED)); break;
    case T_U8: lua_pushinteger(L, __atomic_load_n((uint8_t *)p, __ATOMIC_RELAXED)); break;
    case T_U16: lua_pushinteger(L, __atomic_load_n((uint16_t *)p, __ATOMIC_RELAXED)); break;
    case T_U32: lua_pushinteger(L, (lua_Integer)__atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED)); break;
    case T_U64: {
      uint64_t u = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
      if (u > (uint64_t)INT64_MAX) lua_pushnumber(L, (lua_Number)u);
      else lua_pushinteger(L, (lua_Integer)u);
      break;
    }
    case T_F32: {
      uint32_t bits = __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED);
      float f;
      memcpy(&f, &bits, sizeof f);
      lua_pushnumber(L, f);
      break;
    }
    default: {
      uint64_t bits = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED);
      double d;
      memcpy(&d, &bits, sizeof d);
      lua_pushnumber(L, d);
    }
  }
}

static void store_elem(arrobj *a, size_t i, const elem *e) {
  void *p = a->data + i * type_sizes[a->type];
  switch (type_sizes[a->type]) {
    case 1: __atomic_store_n((uint8_t *)p, (uint8_t)e->u, __ATOMIC_RELAXED); break;
    case 2: __atomic_store_n((uint16_t *)p, (uint16_t)e->u, __ATOMIC_RELAXED); break;
    case 4: {
      uint32_t bits;
      if (a->type == T_F32) memcpy(&bits, &e->f, 4); else bits = (uint32_t)e->u;
      __atomic_store_n((uint32_t *)p, bits, __ATOMIC_RELAXED);
      break;
    }
    default: __atomic_store_n((uint64_t *)p, e->u, __ATOMIC_RELAXED);
  }
}

/* Atomic add (integers wrap like C); pushes the new value. */
static void add_elem(lua_State *L, arrobj *a, size_t i, int idx) {
  void *p = a->data + i * type_sizes[a->type];
  if (a->type == T_F32 || a->type == T_F64) {
    lua_Number d = luaL_checknumber(L, idx);
    if (a->type == T_F32) {
      uint32_t old = __atomic_load_n((uint32_t *)p, __ATOMIC_RELAXED), nw;
      float f;
      do {
        memcpy(&f, &old, 4);
        f = (float)(f + d);
        memcpy(&nw, &f, 4);
      } while (!__atomic_compare_exchange_n((uint32_t *)p, &old, nw, 1,
                                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    } else {
      uint64_t old = __atomic_load_n((uint64_t *)p, __ATOMIC_RELAXED), nw;
      double f;
      do {
        memcpy(&f, &old, 8);
        f += d;
        memcpy(&nw, &f, 8);
      } while (!__atomic_compare_exchange_n((uint64_t *)p, &old, nw, 1,
                                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    }
  } else {
    lua_Number x;
    uint64_t delta;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, idx)) delta = (uint64_t)lua_tointeger(L, idx); else
#endif
    {
      x = luaL_checknumber(L, idx);
      if (x != floor(x) || fabs(x) >= 9223372036854775808.0)
        luaL_argerror(L, idx, "integer expected");
      delta = (uint64_t)(int64_t)x;
    }
    switch (type_sizes[a->type]) {
      case 1: __atomic_fetch_add((uint8_t *)p, (uint8_t)delta, __ATOMIC_ACQ_REL); break;
      case 2: __atomic_fetch_add((uint16_t *)p, (uint16_t)delta, __ATOMIC_ACQ_REL); break;
      case 4: __atomic_fetch_add((uint32_t *)p, (uint32_t)delta, __ATOMIC_ACQ_REL); break;
      default: __atomic_fetch_add((uint64_t *)p, delta, __ATOMIC_ACQ_REL);
    }
  }
}

static size_t check_index(lua_State *L, arrobj *a, int idx) {
  lua_Number x = luaL_checknumber(L, idx);
  if (!(x >= 1 && x <= (lua_Number)a->n && x == floor(x)))
    luaL_argerror(L, idx, lua_pushfstring(L, "index out of range (1..%d)", (int)a->n));
  return (size_t)x - 1;
}

static arrobj *new_arr(lua_State *L, int is_value) {
  arrobj *a = lua_newuserdatauv_compat(L, sizeof *a);
  memset(a, 0, sizeof *a);
  a->is_value = is_value;
  luaL_setmetatable(L, is_value ? VALUE_MT : ARRAY_MT);
  return a;
}

/* Sets the lock (user value) of the object at -1 from the argument at idx:
 * nil/true -> a new RLock, false -> none (a raw object: no get_lock), else
 * a Lock or RLock; or a table {lock = one of those}. */
static void set_lock(lua_State *L, int idx) {
  int obj = lua_gettop(L);
  if (lua_istable(L, idx)) {
    lua_getfield(L, idx, "lock");
    lua_replace(L, idx);
  }
  if (lua_isnoneornil(L, idx) || (lua_isboolean(L, idx) && lua_toboolean(L, idx))) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lmp.c.sync");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "RLock");
    lua_call(L, 0, 1);
    lmp_uv_set(L, obj, -1);
    lua_pop(L, 2);
  } else if (lua_isboolean(L, idx)) {
    lua_pushboolean(L, 0);
    lmp_uv_set(L, obj, -1);
    lua_pop(L, 1);
  } else {
    if (!luaL_testudata(L, idx, "lmp.Lock") && !luaL_testudata(L, idx, "lmp.RLock"))
      luaL_argerror(L, idx, "lock must be true, false, an lmp.Lock or an lmp.RLock "
                    "(or {lock = one of those})");
    lmp_uv_set(L, obj, idx);
  }
}

/* Creates the block of the object at -1 for n elements of type. */
static void create_arr(lua_State *L, arrobj *a, int type, size_t n) {
  arrhdr *h;
  int r = lmp_shm_create(&a->shm, NULL, ARR_OFF + n * type_sizes[type]);
  if (r < 0) lmp_shmobj_raise(L, r, "create", "shared array");
  h = a->shm.addr;
  h->type = (uint32_t)type;
  h->n = n;
  __atomic_store_n(&h->magic, ARR_MAGIC, __ATOMIC_RELEASE);
  a->data = (char *)a->shm.addr + ARR_OFF;
  a->type = type;
  a->n = n;
  lmp_shmobj_cache_put(L, -1, a->shm.name);
}

/* Value(type [, init [, lock]]) */
static int l_value(lua_State *L) {
  int type = check_type(L, 1);
  elem e;
  arrobj *a;
  lua_settop(L, 3);
  memset(&e, 0, sizeof e);
  if (!lua_isnoneornil(L, 2)) check_elem(L, 2, type, &e);
  a = new_arr(L, 1);
  create_arr(L, a, type, 1);
  store_elem(a, 0, &e);
  set_lock(L, 3);
  return 1;
}

/* Array(type, n | list [, lock]) */
static int l_array(lua_State *L) {
  int type = check_type(L, 1), i, n;
  arrobj *a;
  lua_settop(L, 3);
  if (lua_type(L, 2) == LUA_TTABLE) {
    n = (int)lua_rawlen(L, 2);
    for (i = 1; i <= n; i++) {      /* check everything before creating */
      elem e;
      lua_rawgeti(L, 2, i);
      check_elem(L, -1, type, &e);
      lua_pop(L, 1);
    }
  } else {
    lua_Number x = luaL_checknumber(L, 2);
    if (!(x >= 0 && x <= 1e10 && x == floor(x)))
      luaL_argerror(L, 2, "size must be an integer >= 0");
    n = (int)x;
  }
  a = new_arr(L, 0);
  create_arr(L, a, type, (size_t)n);
  if (lua_type(L, 2) == LUA_TTABLE)
    for (i = 1; i <= n; i++) {
      elem e;
      lua_rawgeti(L, 2, i);
      check_elem(L, -1, type, &e);
      lua_pop(L, 1);
      store_elem(a, (size_t)i - 1, &e);
    }
  set_lock(L, 3);
  return 1;
}

static int arr_get(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  push_elem(L, a, a->is_value ? 0 : check_index(L, a, 2));
  return 1;
}

static int arr_set(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  size_t i = a->is_value ? 0 : check_index(L, a, 2);
  elem e;
  check_elem(L, a->is_value ? 2 : 3, a->type, &e);
  store_elem(a, i, &e);
  return 0;
}

/* add(x) / add(i, x): atomic; returns the new value. */
static int arr_add(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  size_t i = a->is_value ? 0 : check_index(L, a, 2);
  add_elem(L, a, i, a->is_value ? 2 : 3);
  push_elem(L, a, i);
  return 1;
}

static int arr_get_lock(lua_State *L) {
  check_arr(L, 1);
  lmp_uv_get(L, 1);
  if (!lua_toboolean(L, -1))
    return luaL_error(L, "this shared value was created without a lock");
  return 1;
}

static int arr_totable(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  size_t i;
  lua_createtable(L, (int)a->n, 0);
  for (i = 0; i < a->n; i++) {
    push_elem(L, a, i);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

static int arr_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_arr(L, 1)->n);
  return 1;
}

static int arr_type(lua_State *L) {
  lua_pushstring(L, type_names[check_arr(L, 1)->type]);
  return 1;
}

static int arr_name(lua_State *L) {
  lua_pushstring(L, check_arr(L, 1)->shm.name);
  return 1;
}

static int arr_close(lua_State *L) {
  arrobj *a = luaL_testudata(L, 1, VALUE_MT);
  if (!a) a = luaL_checkudata(L, 1, ARRAY_MT);
  lmp_shmobj_release(&a->shm, 0);
  a->data = NULL;
  return 0;
}

/* __index: numbers (Array) or "value" (Value), else the methods (upvalue). */
static int arr_index(lua_State *L) {
  arrobj *a = lua_touserdata(L, 1);
  if (lua_type(L, 2) == LUA_TNUMBER && !a->is_value) {
    check_arr(L, 1);
    push_elem(L, a, check_index(L, a, 2));
    return 1;
  }
  if (a->is_value && lua_type(L, 2) == LUA_TSTRING
      && strcmp(lua_tostring(L, 2), "value") == 0) {
    push_elem(L, check_arr(L, 1), 0);
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "get_lock") == 0) {
    lmp_uv_get(L, 1);              /* a raw object has no get_lock, as in Python */
    if (!lua_toboolean(L, -1)) { lua_pushnil(L); return 1; }
    lua_pop(L, 1);
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int arr_newindex(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  elem e;
  size_t i = 0;
  if (a->is_value) {
    if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "value") != 0)
      return luaL_error(L, "lmp.Value has no field to set but 'value'");
  } else {
    if (lua_type(L, 2) != LUA_TNUMBER)
      return luaL_error(L, "lmp.Array index must be a number");
    i = check_index(L, a, 2);
  }
  check_elem(L, 3, a->type, &e);
  store_elem(a, i, &e);
  return 0;
}

/* "lmp.Value(int64, 5)"; "lmp.RawValue(...)" / "lmp.RawArray(...)" when
 * the object has no lock. */
static int arr_tostring(lua_State *L) {
  arrobj *a = lua_touserdata(L, 1);
  const char *raw;
  lmp_uv_get(L, 1);
  raw = lua_toboolean(L, -1) ? "" : "Raw";
  lua_pop(L, 1);
  if (!a->shm.addr) {
    lua_pushstring(L, a->is_value ? "lmp.Value (closed)" : "lmp.Array (closed)");
  } else if (a->is_value) {
    push_elem(L, a, 0);
    lua_pushfstring(L, "lmp.%sValue(%s, %s)", raw, type_names[a->type],
                    lua_tostring(L, -1));
  } else {
    lua_pushfstring(L, "lmp.%sArray(%s, %d)", raw, type_names[a->type], (int)a->n);
  }
  return 1;
}

static int arr_pickle(lua_State *L) {
  arrobj *a = check_arr(L, 1);
  lmp_shmobj_state(L, &a->shm, "lmp.shm", "lmp.c.shm");
  lmp_uv_get(L, 1);
  lua_setfield(L, -2, "lock");
  return 1;
}

static int arr_unpickle_common(lua_State *L, int is_value) {
  const char *name = lmp_shmobj_state_name(L, 1);
  const char *tname = is_value ? VALUE_MT : ARRAY_MT;
  arrobj *a;
  arrhdr *h;
  int r;
  if (lmp_shmobj_cache_get(L, name, tname)) return 1;
  a = new_arr(L, is_value);
  if ((r = lmp_shm_attach(&a->shm, name)) < 0)
    return lmp_shmobj_raise(L, r, "attach", name);
  h = a->shm.addr;
  if (a->shm.size < ARR_OFF || h->magic != ARR_MAGIC || h->type > T_F64
      || h->n > (a->shm.size - ARR_OFF) / type_sizes[h->type]) {
    lmp_shm_close(&a->shm);
    return lmp_error_raise(L, "os", "'%s' is not an lmp shared array", name);
  }
  a->type = (int)h->type;
  a->n = (size_t)h->n;
  a->data = (char *)a->shm.addr + ARR_OFF;
  lua_getfield(L, 1, "lock");
  lmp_uv_set(L, -2, -1);
  lua_pop(L, 1);
  lmp_shmobj_cache_put(L, -1, name);
  return 1;
}

static int value_unpickle(lua_State *L) { return arr_unpickle_common(L, 1); }
static int array_unpickle(lua_State *L) { return arr_unpickle_common(L, 0); }

static void arr_class(lua_State *L, const char *tname, lua_CFunction unpickle,
                      const luaL_Reg *methods) {
  static const luaL_Reg meta[] = {
    {"__close", arr_close},
    {"__gc", arr_close},
    {"__len", arr_len},
    {"__newindex", arr_newindex},
    {"__pickle", arr_pickle},
    {"__tostring", arr_tostring},
    {NULL, NULL}
  };
  luaL_newmetatable(L, tname);
  luaL_setfuncs(L, meta, 0);
  lua_pushcfunction(L, unpickle);
  lua_setfield(L, -2, "__unpickle");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushcclosure(L, arr_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushstring(L, tname);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

int luaopen_lmp_c_shm(lua_State *L) {
  static const luaL_Reg shm_meta[] = {
    {"__close", shm_close},
    {"__gc", shm_close},
    {"__pickle", shm_pickle},
    {"__tostring", shm_tostring},
    {"__unpickle", shm_unpickle},
    {NULL, NULL}
  };
  static const luaL_Reg shm_methods[] = {
    {"close", shm_close},
    {"name", shm_name},
    {"read", shm_read},
    {"size", shm_size},
    {"unlink", shm_unlink},
    {"write", shm_write},
    {NULL, NULL}
  };
  static const luaL_Reg arr_methods[] = {
    {"add", arr_add},
    {"close", arr_close},
    {"get", arr_get},
    {"get_lock", arr_get_lock},
    {"name", arr_name},
    {"set", arr_set},
    {"totable", arr_totable},
    {"type", arr_type},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Array", l_array},
    {"Value", l_value},
    {"shared_memory", l_shared_memory},
    {NULL, NULL}
  };
  lmp_newclass(L, SHM_MT, shm_meta, shm_methods);
  lua_pop(L, 1);
  arr_class(L, VALUE_MT, value_unpickle, arr_methods);
  arr_class(L, ARRAY_MT, array_unpickle, arr_methods);
  lua_createtable(L, 0, 5);
  luaL_setfuncs(L, funcs, 0);
  lmp_shl_open(L);
  lua_pushliteral(L, "lmp.c.shm 1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
