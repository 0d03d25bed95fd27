/* lmp_compat.h -- the few Lua 5.2+ API calls lmp uses, for 5.1 and LuaJIT.
 * Build with -DLMP_LUAJIT for LuaJIT, which already has some of them. */
#ifndef LMP_COMPAT_H
#define LMP_COMPAT_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 502
#ifndef LMP_LUAJIT
void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup);
void *luaL_testudata(lua_State *L, int idx, const char *tname);
void luaL_setmetatable(lua_State *L, const char *tname);
void luaL_traceback(lua_State *L, lua_State *L1, const char *msg, int level);
#define luaL_newlibtable(L, l) lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1)
#define luaL_newlib(L, l) (luaL_newlibtable(L, l), luaL_setfuncs(L, l, 0))
#endif
#define lua_rawlen(L, i) lua_objlen(L, (i))
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata(L, (sz))
#define lua_absindex(L, i) \
  (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
#define lua_isinteger(L, i) 0
#define LUA_OK 0
#define lmp_pushglobaltable(L) lua_pushvalue(L, LUA_GLOBALSINDEX)
#else
#define lmp_pushglobaltable(L) lua_pushglobaltable(L)
#endif

#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv_compat(L, sz) lua_newuserdata(L, (sz))
#else
#define lua_newuserdatauv_compat(L, sz) lua_newuserdatauv(L, (sz), 1)
#endif

#endif
