/* lredis_cluster.c -- "lmp.c.redis_cluster": key slots for
 * lua/lmp/redis_cluster.lua (Lua 5.1 has no bit operators).
 *
 *   C.slot(key) -> 0..16383, the Redis Cluster slot of key (its hash tag's
 *                  CRC16 mod 16384; see core/rslot.h)
 *   C.crc16(s)  -> CRC16/XMODEM of s
 *   C.SLOTS     -> 16384 */
#include "../core/rslot.h"
#include "lmp_aux.h"

static int l_crc16(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushinteger(L, lmp_rslot_crc16(s, len));
  return 1;
}

static int l_slot(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_pushinteger(L, lmp_rslot_of(s, len));
  return 1;
}

int luaopen_lmp_c_redis_cluster(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"crc16", l_crc16},
    {"slot", l_slot},
    {NULL, NULL}
  };
  luaL_newlib(L, funcs);
  lua_pushinteger(L, LMP_RSLOT_COUNT);
  lua_setfield(L, -2, "SLOTS");
  lua_pushliteral(L, "lmp.c.redis_cluster 1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
