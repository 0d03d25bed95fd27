/* lmp_open.c -- luaopen_lmp for hosts: preloads lmp.core, makes sure
 * package.path finds lmp's Lua files, then requires the Lua part ("lmp",
 * lua/lmp.lua). */
#include "lmp_aux.h"
#include "lmp.h"

int luaopen_lmp(lua_State *L) {
  lmp_setup_paths(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  return 1;
}
