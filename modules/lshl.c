/* lshl.c -- lmp.ShareableList (Python's shared_memory.ShareableList): a
 * fixed-length list of integers, floats, booleans, nil and strings in one
 * named shared-memory block. Opened by luaopen_lmp_c_shm (lshm.c).
 *
 * Block layout (all little-endian host words, 8-byte aligned):
 *   header   {u32 magic, u32 version, u64 n, u64 reserved[2]}   32 bytes
 *   slots    n x {u64 off, u32 cap, u32 meta}                   16 bytes each
 *   data     each slot's cap bytes at its off (from the block start)
 * off and cap never change after creation; meta = type | length << 4 is
 * stored with one atomic write after the payload, so a type and its string
 * length change together. A reader copies off/cap at attach time and clamps
 * every length to cap: whatever another process writes into the block, no
 * read or write goes outside it. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lshm.h"

#define SHL_MT "lmp.ShareableList"
#define SHL_MAGIC 0x4c706d6cu   /* "lmpL" */
#define SHL_VERSION 1u
#define SHL_HDR 32
#define SHL_MAXCAP ((1u << 28) - 8)

enum { V_NIL, V_BOOL, V_INT, V_FLOAT, V_STR };

typedef struct shlhdr { uint32_t magic, version; uint64_t n, reserved[2]; } shlhdr;
typedef struct shldesc { uint64_t off; uint32_t cap, meta; } shldesc;
typedef struct shlslot { size_t off, cap; } shlslot;

typedef struct shlobj {
  lmp_shm shm;
  size_t n;
  shlslot *slot;   /* process-local copy of off/cap (a userdata in the uv) */
  int keep;        /* persist: the creator does not unlink on close */
} shlobj;

/* A Lua value checked for a slot: its type, payload bits or bytes. */
typedef struct shlval { unsigned type; uint64_t bits; const char *s; size_t len; } shlval;

static shldesc *desc(shlobj *o, size_t i) {
  return (shldesc *)((char *)o->shm.addr + SHL_HDR) + i;
}

static shlobj *check_shl(lua_State *L, int idx) {
  shlobj *o = luaL_checkudata(L, idx, SHL_MT);
  if (!o->shm.addr) lmp_error_raise(L, "closed", "lmp.ShareableList is closed");
  return o;
}

/* Reads the value at idx for slot i (1-based, for messages). */
static void check_val(lua_State *L, int idx, size_t i, shlval *v) {
  memset(v, 0, sizeof *v);
  switch (lua_type(L, idx)) {
    case LUA_TNIL: v->type = V_NIL; break;
    case LUA_TBOOLEAN: v->type = V_BOOL; v->bits = (uint64_t)lua_toboolean(L, idx); break;
    case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, idx)) {
        v->type = V_INT;
        v->bits = (uint64_t)lua_tointeger(L, idx);
        break;
      }
#endif
      {
        double d = (double)lua_tonumber(L, idx);
        v->type = V_FLOAT;
        memcpy(&v->bits, &d, sizeof d);
      }
      break;
    case LUA_TSTRING: v->type = V_STR; v->s = lua_tolstring(L, idx, &v->len); break;
    default:
      luaL_error(L, "lmp.ShareableList slot %d cannot hold a %s (integers, floats, "
                 "booleans, nil and strings only)", (int)i, luaL_typename(L, idx));
  }
}

static void raise_too_long(lua_State *L, size_t i, size_t len, size_t cap) {
  luaL_error(L, "lmp.ShareableList slot %d: a string of %d bytes exceeds available "
             "storage (%d bytes)", (int)i, (int)len, (int)cap);
}

/* Stores v in slot i (0-based); v fits (checked by the caller). */
static void store_val(shlobj *o, size_t i, const shlval *v) {
  char *p = (char *)o->shm.addr + o->slot[i].off;
  if (v->type == V_STR) memcpy(p, v->s, v->len);
  else __atomic_store_n((uint64_t *)p, v->bits, __ATOMIC_RELAXED);
  __atomic_store_n(&desc(o, i)->meta, (uint32_t)(v->type | (v->len << 4)),
                   __ATOMIC_RELEASE);
}

static void set_val(lua_State *L, shlobj *o, size_t i, int idx) {
  shlval v;
  check_val(L, idx, i + 1, &v);
  if (v.len > o->slot[i].cap) raise_too_long(L, i + 1, v.len, o->slot[i].cap);
  store_val(o, i, &v);
}

static void push_val(lua_State *L, shlobj *o, size_t i) {
  uint32_t meta = __atomic_load_n(&desc(o, i)->meta, __ATOMIC_ACQUIRE);
  const char *p = (const char *)o->shm.addr + o->slot[i].off;
  uint64_t bits = 0;
  size_t len;
  if ((meta & 15) != V_STR && (meta & 15) != V_NIL)
    bits = __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
  switch (meta & 15) {
    case V_BOOL: lua_pushboolean(L, bits != 0); break;
    case V_INT: lua_pushinteger(L, (lua_Integer)(int64_t)bits); break;
    case V_FLOAT: {
      double d;
      memcpy(&d, &bits, sizeof d);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    case V_STR:
      len = meta >> 4;
      lua_pushlstring(L, p, len < o->slot[i].cap ? len : o->slot[i].cap);
      break;
    default: lua_pushnil(L);
  }
}

/* The 0-based slot of the index at idx: 1..n, or -n..-1 from the end. */
static size_t check_pos(lua_State *L, shlobj *o, int idx) {
  lua_Number x;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    lua_Integer k = lua_tointeger(L, idx);
    if (k >= 1 && (lua_Unsigned)k <= o->n) return (size_t)k - 1;
  }
#endif
  if (lua_type(L, idx) != LUA_TNUMBER)
    luaL_error(L, "lmp.ShareableList index must be a number, got %s", luaL_typename(L, idx));
  x = lua_tonumber(L, idx);
  if (x < 0) x += (lua_Number)o->n + 1;
  if (x >= 1 && x <= (lua_Number)o->n && x == floor(x)) return (size_t)x - 1;
  lua_pushvalue(L, idx);
  luaL_error(L, "lmp.ShareableList index %s out of range (1..%d, or -%d..-1 from the end)",
             lua_tostring(L, -1), (int)o->n, (int)o->n);
  return 0;
}

/* ------------------------------------------------------------- creation */

static shlobj *new_shl(lua_State *L) {
  shlobj *o = lua_newuserdatauv_compat(L, sizeof *o);
  memset(o, 0, sizeof *o);
  luaL_setmetatable(L, SHL_MT);
  return o;
}

/* Allocates the local slot table of the object at -1 (kept in its uv). */
static void alloc_slots(lua_State *L, shlobj *o, size_t n) {
  o->slot = lua_newuserdata(L, n ? n * sizeof *o->slot : 1);
  lmp_uv_set(L, -2, -1);
  lua_pop(L, 1);
  o->n = n;
}

/* Capacity rule of a slot given v and the `capacity` option at opt (a
 * number for every slot, or a list per slot; 0 when absent): 8 bytes for a
 * non-string, Python's 8 * (len // 8 + 1) for a string, at least the
 * option rounded up to 8. */
static size_t slot_cap(lua_State *L, const shlval *v, int opt, size_t i) {
  size_t cap = v->type == V_STR ? 8 * (v->len / 8 + 1) : 8;
  lua_Number c = 0;
  if (lua_istable(L, opt)) {
    lua_rawgeti(L, opt, (int)i);
    c = lua_isnil(L, -1) ? 0 : lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
    lua_pop(L, 1);
  } else if (!lua_isnil(L, opt)) {
    c = lua_tonumber(L, opt);
  }
  if (!(c >= 0 && c <= SHL_MAXCAP && c == floor(c)))
    luaL_error(L, "lmp.ShareableList capacity of slot %d must be an integer "
               "between 0 and %d", (int)i, (int)SHL_MAXCAP);
  if ((size_t)c > cap) cap = ((size_t)c + 7) / 8 * 8;
  if (cap > SHL_MAXCAP) raise_too_long(L, i, v->len, SHL_MAXCAP);
  return cap;
}

/* Creates the list of the n values at list[1..n] (table at idx). */
static int create_shl(lua_State *L, int list, size_t n, const char *name,
                      int capopt, int keep) {
  double total = SHL_HDR + 16.0 * (double)n;
  size_t i, off;
  shlobj *o;
  shlhdr *h;
  int r;
  for (i = 1; i <= n; i++) {     /* check everything before creating */
    shlval v;
    lua_rawgeti(L, list, (int)i);
    check_val(L, -1, i, &v);
    total += (double)slot_cap(L, &v, capopt, i);
    lua_pop(L, 1);
  }
  if (total > 1e12) return luaL_error(L, "lmp.ShareableList would need more than 1e12 bytes");
  o = new_shl(L);
  if ((r = lmp_shm_create(&o->shm, name, (size_t)total)) < 0)
    return lmp_shmobj_raise(L, r, "create", name ? name : "ShareableList");
  o->keep = keep;
  alloc_slots(L, o, n);
  off = SHL_HDR + 16 * n;
  for (i = 0; i < n; i++) {
    shlval v;
    lua_rawgeti(L, list, (int)i + 1);
    check_val(L, -1, i + 1, &v);
    o->slot[i].off = off;
    o->slot[i].cap = slot_cap(L, &v, capopt, i + 1);
    desc(o, i)->off = off;
    desc(o, i)->cap = (uint32_t)o->slot[i].cap;
    store_val(o, i, &v);
    off += o->slot[i].cap;
    lua_pop(L, 1);
  }
  h = o->shm.addr;
  h->version = SHL_VERSION;
  h->n = n;
  __atomic_store_n(&h->magic, SHL_MAGIC, __ATOMIC_RELEASE);
  return 1;
}

/* Attaches to the list named name; checks every slot descriptor once. */
static int attach_shl(lua_State *L, const char *name) {
  shlobj *o = new_shl(L);
  shlhdr *h;
  size_t i, n, size;
  int r = lmp_shm_attach(&o->shm, name);
  if (r < 0) return lmp_shmobj_raise(L, r, "attach", name);
  h = o->shm.addr;
  size = o->shm.size;
  if (size < SHL_HDR || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SHL_MAGIC
      || h->version != SHL_VERSION || h->n > (size - SHL_HDR) / 16)
    goto bad;
  n = (size_t)h->n;
  alloc_slots(L, o, n);
  for (i = 0; i < n; i++) {
    shldesc *d = desc(o, i);
    uint64_t off = d->off, cap = d->cap;
    if (off < SHL_HDR + 16 * n || off % 8 || cap > SHL_MAXCAP || off + cap > size) goto bad;
    o->slot[i].off = (size_t)off;
    o->slot[i].cap = (size_t)cap;
  }
  return 1;
bad:
  lmp_shm_close(&o->shm);
  return lmp_error_raise(L, "os", "'%s' is not an lmp.ShareableList", name);
}

static const char *opt_name(lua_State *L, int opts) {
  size_t len;
  const char *name;
  lua_getfield(L, opts, "name");
  if (lua_isnil(L, -1)) return NULL;
  name = luaL_checklstring(L, -1, &len);
  if (strlen(name) != len || !lmp_shm_name_ok(name))
    luaL_argerror(L, 2, "name must be '/' followed by 1-62 characters, no other '/' or NUL");
  return name;   /* kept alive on the stack */
}

/* ShareableList(list | nil | a ShareableList [, {name=, n=, capacity=, persist=}]) */
static int l_shareable_list(lua_State *L) {
  const char *name;
  lua_Number n;
  int capopt;
  lua_settop(L, 2);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  else { lua_newtable(L); lua_replace(L, 2); }
  name = opt_name(L, 2);                             /* 3 */
  lua_getfield(L, 2, "capacity");                    /* 4 */
  capopt = lua_gettop(L);
  if (!lua_isnil(L, capopt) && !lua_istable(L, capopt) && lua_type(L, capopt) != LUA_TNUMBER)
    luaL_argerror(L, 2, "capacity must be a number or a list of numbers");
  lua_getfield(L, 2, "persist");                     /* 5 */
  if (lua_isnil(L, 1) && name) return attach_shl(L, name);
  if (luaL_testudata(L, 1, SHL_MT)) {                /* a copy, like Python */
    shlobj *src = check_shl(L, 1);
    size_t i;
    lua_createtable(L, (int)src->n, 1);
    for (i = 0; i < src->n; i++) {
      push_val(L, src, i);
      lua_rawseti(L, -2, (int)i + 1);
    }
    lua_pushinteger(L, (lua_Integer)src->n);
    lua_setfield(L, -2, "n");
    lua_replace(L, 1);
  } else if (lua_isnil(L, 1)) {
    lua_newtable(L);
    lua_replace(L, 1);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 2, "n");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); lua_getfield(L, 1, "n"); }
  n = lua_isnil(L, -1) ? (lua_Number)lua_rawlen(L, 1) : luaL_checknumber(L, -1);
  if (!(n >= 0 && n <= 1e9 && n == floor(n)))
    luaL_argerror(L, 2, "n must be an integer >= 0");
  return create_shl(L, 1, (size_t)n, name, capopt, lua_toboolean(L, 5));
}

/* ------------------------------------------------------------- methods */

/* __index: a number is a slot; "name" the block's name (a field, as
 * Python's sl.shm.name); else the methods (upvalue). */
static int shl_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER) {
    shlobj *o = check_shl(L, 1);
    push_val(L, o, check_pos(L, o, 2));
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "name") == 0) {
    lua_pushstring(L, ((shlobj *)luaL_checkudata(L, 1, SHL_MT))->shm.name);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

static int shl_newindex(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  set_val(L, o, check_pos(L, o, 2), 3);
  return 0;
}

static int shl_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)check_shl(L, 1)->n);
  return 1;
}

/* The first slot >= from (0-based) holding a value equal to the one at 2
 * (Lua's ==), or n. */
static size_t find_val(lua_State *L, shlobj *o, size_t from) {
  for (; from < o->n; from++) {
    int eq;
    push_val(L, o, from);
    eq = lua_rawequal(L, -1, 2);
    lua_pop(L, 1);
    if (eq) break;
  }
  return from;
}

/* count(v): how many slots hold a value equal to v. */
static int shl_count(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  size_t i, c = 0;
  lua_settop(L, 2);
  for (i = find_val(L, o, 0); i < o->n; i = find_val(L, o, i + 1)) c++;
  lua_pushinteger(L, (lua_Integer)c);
  return 1;
}

/* index(v): the first 1-based slot holding v; raises if there is none. */
static int shl_indexof(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  size_t i;
  lua_settop(L, 2);
  if ((i = find_val(L, o, 0)) < o->n) {
    lua_pushinteger(L, (lua_Integer)i + 1);
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING)
    return luaL_error(L, "lmp.ShareableList:index: \"%s\" is not in the list", lua_tostring(L, 2));
  if (lua_type(L, 2) == LUA_TNUMBER)
    return luaL_error(L, "lmp.ShareableList:index: %s is not in the list", lua_tostring(L, 2));
  return luaL_error(L, "lmp.ShareableList:index: %s is not in the list",
                    lua_isnil(L, 2) ? "nil" : lua_toboolean(L, 2) ? "true" : "false");
}

static int shl_totable(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  size_t i;
  lua_createtable(L, (int)o->n, 0);
  for (i = 0; i < o->n; i++) {
    push_val(L, o, i);
    lua_rawseti(L, -2, (int)i + 1);
  }
  return 1;
}

/* capacity(i): bytes slot i can hold (a string of up to that length). */
static int shl_capacity(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  lua_pushinteger(L, (lua_Integer)o->slot[check_pos(L, o, 2)].cap);
  return 1;
}

static int shl_close(lua_State *L) {
  shlobj *o = luaL_checkudata(L, 1, SHL_MT);
  lmp_shmobj_release(&o->shm, o->keep);
  return 0;
}

static int shl_unlink(lua_State *L) {
  return lmp_shmobj_unlink(L, luaL_checkudata(L, 1, SHL_MT));
}

static void add_quoted(luaL_Buffer *b, const char *s, size_t len) {
  size_t i;
  char esc[8];
  luaL_addchar(b, '"');
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { luaL_addchar(b, '\\'); luaL_addchar(b, (char)c); }
    else if (c == '\n') luaL_addstring(b, "\\n");
    else if (c < 32 || c == 127) {
      snprintf(esc, sizeof esc, "\\%03d", c);
      luaL_addstring(b, esc);
    } else luaL_addchar(b, (char)c);
  }
  luaL_addchar(b, '"');
}

/* lmp.ShareableList({"howdy", 1.5, nil, true}, name="/lmp....") */
static int shl_tostring(lua_State *L) {
  shlobj *o = luaL_checkudata(L, 1, SHL_MT);
  luaL_Buffer b;
  size_t i;
  if (!o->shm.addr) {
    lua_pushliteral(L, "lmp.ShareableList (closed)");
    return 1;
  }
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "lmp.ShareableList({");
  for (i = 0; i < o->n; i++) {
    uint32_t meta = __atomic_load_n(&desc(o, i)->meta, __ATOMIC_ACQUIRE), len = meta >> 4;
    if (i) luaL_addstring(&b, ", ");
    if ((meta & 15) == V_STR) {     /* quoted straight from the block */
      add_quoted(&b, (const char *)o->shm.addr + o->slot[i].off,
                 len < o->slot[i].cap ? len : o->slot[i].cap);
      continue;
    }
    push_val(L, o, i);
    if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING) {
      luaL_addvalue(&b);   /* (a string only if another process just wrote one) */
    } else {
      const char *t = lua_isnil(L, -1) ? "nil" : lua_toboolean(L, -1) ? "true" : "false";
      lua_pop(L, 1);
      luaL_addstring(&b, t);
    }
  }
  luaL_addstring(&b, "}, name=");
  add_quoted(&b, o->shm.name, strlen(o->shm.name));
  luaL_addchar(&b, ')');
  luaL_pushresult(&b);
  return 1;
}

static int shl_pickle(lua_State *L) {
  shlobj *o = check_shl(L, 1);
  lmp_shmobj_state(L, &o->shm, "lmp.shm", "lmp.c.shm");
  return 1;
}

static int shl_unpickle(lua_State *L) {
  return attach_shl(L, lmp_shmobj_state_name(L, 1));
}

void lmp_shl_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__close", shl_close},
    {"__gc", shl_close},
    {"__len", shl_len},
    {"__newindex", shl_newindex},
    {"__pickle", shl_pickle},
    {"__tostring", shl_tostring},
    {"__unpickle", shl_unpickle},
    {NULL, NULL}
  };
  static const luaL_Reg methods[] = {
    {"capacity", shl_capacity},
    {"close", shl_close},
    {"count", shl_count},
    {"index", shl_indexof},
    {"totable", shl_totable},
    {"unlink", shl_unlink},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, SHL_MT)) {
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcclosure(L, shl_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, SHL_MT);
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_shareable_list);
  lua_setfield(L, -2, "ShareableList");
}
