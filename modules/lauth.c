/* lauth.c -- "lmp.c.auth": message authentication for lua/lmp/redis_auth.lua
 * (signed tasks and results), over core/auth.h.
 *
 *   A.key(bytes) -> a key: its HMAC state computed once (wiped on collection)
 *   A.mac(key, part...) -> 32 bytes: HMAC-SHA256 of the length-framed
 *                          parts (see lmp_auth_mac)
 *   A.verify(key, mac, part...) -> boolean, compared in constant time
 *
 * A key argument is a key object or a non-empty string; parts are
 * strings (up to 16). */
#include "../core/auth.h"
#include "lmp_aux.h"

#define KEY_MT "lmp.auth.Key"
#define MAX_PARTS 16

static lmp_auth_key *new_key(lua_State *L, const char *bytes, size_t len) {
  lmp_auth_key *k = (lmp_auth_key *)lua_newuserdatauv_compat(L, sizeof *k);
  luaL_setmetatable(L, KEY_MT);
  lmp_auth_key_init(k, bytes, len);
  return k;
}

/* The key at idx: a key object, or one made from a string (left on the
 * stack above the parts, which are read by index). */
static const lmp_auth_key *key_at(lua_State *L, int idx) {
  size_t len;
  const char *s;
  lmp_auth_key *k = (lmp_auth_key *)luaL_testudata(L, idx, KEY_MT);
  if (k) return k;
  s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  luaL_argcheck(L, s != NULL, idx, "key or string expected");
  luaL_argcheck(L, len > 0, idx, "key must not be empty");
  return new_key(L, s, len);
}

/* MAC of the parts at first..last with the key at index 1. */
static void mac_of(lua_State *L, int first, int last, unsigned char out[LMP_AUTH_MAC]) {
  lmp_auth_part parts[MAX_PARTS];
  size_t n = 0;
  int i;
  luaL_argcheck(L, last - first + 1 <= MAX_PARTS, first, "too many parts");
  for (i = first; i <= last; i++, n++)
    parts[n].p = luaL_checklstring(L, i, &parts[n].len);
  lmp_auth_key_mac(out, key_at(L, 1), parts, n);
}

static int l_key(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0, 1, "key must not be empty");
  new_key(L, s, len);
  return 1;
}

static int l_mac(lua_State *L) {
  unsigned char out[LMP_AUTH_MAC];
  mac_of(L, 2, lua_gettop(L), out);
  lua_pushlstring(L, (const char *)out, sizeof out);
  return 1;
}

static int l_verify(lua_State *L) {
  unsigned char want[LMP_AUTH_MAC];
  size_t len;
  const char *got = luaL_checklstring(L, 2, &len);
  mac_of(L, 3, lua_gettop(L), want);
  lua_pushboolean(L, len == LMP_AUTH_MAC &&
                     lmp_auth_mac_equal(want, (const unsigned char *)got));
  return 1;
}

static int key_gc(lua_State *L) {
  lmp_auth_key_clear((lmp_auth_key *)luaL_checkudata(L, 1, KEY_MT));
  return 0;
}

static int key_tostring(lua_State *L) {
  lua_pushliteral(L, "lmp.auth.Key (secret)");
  return 1;
}

int luaopen_lmp_c_auth(lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"key", l_key},
    {"mac", l_mac},
    {"verify", l_verify},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", key_gc},
    {"__tostring", key_tostring},
    {NULL, NULL}
  };
  if (luaL_newmetatable(L, KEY_MT)) luaL_setfuncs(L, meta, 0);
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushinteger(L, LMP_AUTH_MAC);
  lua_setfield(L, -2, "MAC_SIZE");
  return 1;
}
