/* lmp.h -- the C API of lmp for programs that embed Lua.
 *
 * A host that owns a lua_State opens lmp with luaL_requiref(L, "lmp",
 * luaopen_lmp, 0) or by calling luaopen_lmp(L), and drives pools from its
 * own loop (see docs/API.md, "Embedding"). Nothing here blocks the host's
 * thread unless a script calls a blocking method. */
#ifndef LMP_H
#define LMP_H

#include <lua.h>

#define LMP_VERSION "0.1.0"

/* lmp builds with hidden visibility; the embedding API is exported. */
#if defined(__GNUC__)
#define LMP_API __attribute__((visibility("default")))
#else
#define LMP_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Opens lmp.core (the C part); returns 1 with its table on the stack. */
LMP_API int luaopen_lmp_core(lua_State *L);

/* Opens the whole lmp module (require "lmp"); returns 1. */
LMP_API int luaopen_lmp(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
