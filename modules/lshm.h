/* lshm.h -- helpers shared by the bindings of shared-memory objects
 * (lshm.c, lsync.c, lqueue.c): lifetime of names, pickling by name, the
 * per-process cache of attached objects, and a user value per userdata. */
#ifndef LMP_LSHM_H
#define LMP_LSHM_H

#include "../core/shm.h"
#include "lmp_aux.h"

/* Unmaps s and, when this process created the name (and keep is 0),
 * unlinks it: the lifetime rule of every lmp shared object. */
void lmp_shmobj_release(lmp_shm *s, int keep);

/* Pushes a new pickle state table {mod = <module>, name = s->name}: mod
 * is package.loaded[luamod] (or [cmod] if the Lua module is not loaded),
 * so that the receiver's pickle requires it -- and so registers the
 * class -- before it looks the class up. */
void lmp_shmobj_state(lua_State *L, const lmp_shm *s, const char *luamod,
                      const char *cmod);

/* Name from a pickle state at idx (a table with a string `name`). */
const char *lmp_shmobj_state_name(lua_State *L, int idx);

/* The per-process cache name -> object (weak values): get pushes the
 * object and returns 1, or returns 0 and pushes nothing; put stores the
 * object at idx. */
int lmp_shmobj_cache_get(lua_State *L, const char *name, const char *tname);
void lmp_shmobj_cache_put(lua_State *L, int idx, const char *name);

/* One Lua value attached to a userdata (uservalue on 5.4, fenv on 5.1). */
void lmp_uv_set(lua_State *L, int ud, int v);
void lmp_uv_get(lua_State *L, int ud);

/* Timeout arguments of acquire-like calls: nil/true/none -> forever,
 * false -> 0 (try once), a number >= 0 -> that; returns a deadline. */
double lmp_shmobj_deadline(lua_State *L, int idx);

/* The unlink() method of an object whose lmp_shm is s: pushes true, or
 * false if the name was already gone; raises on other errors. */
int lmp_shmobj_unlink(lua_State *L, const lmp_shm *s);

/* Raises the error object for a failed shm create/attach of `what`. */
int lmp_shmobj_raise(lua_State *L, int neg_errno, const char *what,
                     const char *name);

/* Registers lmp.ShareableList (lshl.c) and sets its constructor as the
 * field ShareableList of the table at -1 (the lmp.c.shm module). */
void lmp_shl_open(lua_State *L);

#endif
