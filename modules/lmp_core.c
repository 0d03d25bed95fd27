/* lmp_core.c -- luaopen_lmp_core: the one C entry point of lmp.
 *
 * All of core/ and modules/ are linked into one shared object (lmp/core.so)
 * so that process-wide state (the child registry, fork guards) exists once.
 * Opening it registers every binding in package.preload as "lmp.c.<name>";
 * the files in lua/lmp/ require what they need. Each binding lives in its own
 * modules/l<name>.c; the openers are weak so the list can name bindings
 * that a given build leaves out. */
#include <errno.h>

#include "../core/clock.h"
#include "lmp_aux.h"
#include "lmp.h"

#define LMP_OPENER(name) \
  int luaopen_lmp_c_##name(lua_State *L) __attribute__((weak));
LMP_OPENERS(LMP_OPENER)

static int l_time(lua_State *L) {
  lua_pushnumber(L, lmp_clock_now());
  return 1;
}

/* new_table(narr [, nrec]): a table with room for narr list items and
 * nrec other keys (LuaJIT's table.new). A map's results filled into {}
 * made Lua regrow and rehash the table 17 times for 100k items: half
 * the master's CPU in a binary map of tiny tasks. */
static int l_new_table(lua_State *L) {
  lua_Integer narr = luaL_checkinteger(L, 1), nrec = luaL_optinteger(L, 2, 0);
  luaL_argcheck(L, narr >= 0 && narr <= (1 << 26), 1, "out of range (0 to 2^26)");
  luaL_argcheck(L, nrec >= 0 && nrec <= (1 << 26), 2, "out of range (0 to 2^26)");
  lua_createtable(L, (int)narr, (int)nrec);
  return 1;
}

static int l_sleep(lua_State *L) {
  if (lmp_clock_sleep(luaL_checknumber(L, 1)) == -EINTR)
    return lmp_error_raise_interrupt(L);
  return 0;
}

/* error(kind, message [, fields]) -> a new error object (not raised). */
static int l_error(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_optstring(L, 2, kind);
  lmp_error_push(L, kind, "%s", msg);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

static int l_is_error(lua_State *L) {
  lua_pushboolean(L, lmp_error_is(L, 1, luaL_optstring(L, 2, NULL)));
  return 1;
}

/* atexit(fn): fn runs when the Lua state closes (lua_close at the normal
 * end of the lmp runtime or of lua5.x), last registered first. Process
 * and pool modules use it to stop daemon children and join the others. */
#define ATEXIT_KEY "lmp.atexit"

static int run_atexit(lua_State *L) {
  int i, n;
  lua_getfield(L, LUA_REGISTRYINDEX, ATEXIT_KEY);
  if (!lua_istable(L, -1)) return 0;
  n = (int)lua_rawlen(L, -1);
  for (i = n; i >= 1; i--) {
    lua_rawgeti(L, -1, i);
    lua_pushnil(L);
    lua_rawseti(L, -3, i);
    if (lua_pcall(L, 0, 0, 0) != 0) lua_pop(L, 1);  /* best effort */
  }
  return 0;
}

static int l_atexit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_getfield(L, LUA_REGISTRYINDEX, ATEXIT_KEY);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
  return 0;
}

/* The list lives in the registry; a userdata whose __gc runs the list is
 * anchored there too, so lua_close runs it. */
static void init_atexit(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, ATEXIT_KEY);
  if (lua_istable(L, -1)) { lua_pop(L, 1); return; }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, ATEXIT_KEY);
  lua_newuserdatauv_compat(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, run_atexit);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, ATEXIT_KEY ".sentinel");
}

static void register_preloads(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
#define LMP_PRELOAD(name)                              \
  if (luaopen_lmp_c_##name) {                          \
    lua_pushcfunction(L, luaopen_lmp_c_##name);        \
    lua_setfield(L, -2, "lmp.c." #name);               \
  }
  LMP_OPENERS(LMP_PRELOAD)
#undef LMP_PRELOAD
  lua_pop(L, 2);
}

int luaopen_lmp_core(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"atexit", l_atexit},
    {"error", l_error},
    {"is_error", l_is_error},
    {"new_table", l_new_table},
    {"run_atexit", run_atexit},
    {"sleep", l_sleep},
    {"time", l_time},
    {NULL, NULL}
  };
  lmp_error_init(L);
  init_atexit(L);
  register_preloads(L);
  luaL_newlib(L, funcs);
  luaL_getmetatable(L, LMP_ERROR_MT);
  lua_setfield(L, -2, "Error");
  lua_pushliteral(L, LMP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
