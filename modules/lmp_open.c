/* lmp_open.c -- luaopen_lmp for hosts: preloads lmp.core, then requires
 * the Lua part ("lmp", lua/lmp.lua) from package.path. */
#include "lmp_aux.h"
#include "lmp.h"

int luaopen_lmp(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_lmp_core);
  lua_setfield(L, -2, "lmp.core");
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  return 1;
}
