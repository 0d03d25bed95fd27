/* lmp_aux.h -- helpers shared by every binding in modules/.
 *
 * Error objects: operational failures raise a table
 *   { kind = "timeout" | "remote" | "worker_lost" | "closed" | "empty" |
 *            "full" | "pickle" | "auth" | "broken" | "cancelled" | "os" |
 *            "interrupted" (SIGINT/SIGTERM in the runtime, with .signal),
 *     message = "...", [errno = n], [traceback = "..."], ... }
 * whose metatable is the registry's "lmp.Error" (tostring gives
 * "kind: message" and the traceback if any). Bad arguments raise plain
 * string errors through luaL_check* / luaL_argerror as usual. */
#ifndef LMP_AUX_H
#define LMP_AUX_H

#include "lmp_compat.h"

#define LMP_ERROR_MT "lmp.Error"

/* The bindings, one per modules/l<name>.c, each opened as "lmp.c.<name>"
 * (see lmp_core.c). Add a new binding's name here. */
#define LMP_OPENERS(X) \
  X(auth) X(connection) X(embed) X(log) X(manager) X(pickle) X(pipe) X(pool) X(proc) \
  X(queue) X(redis) X(redis_cluster) X(shm) X(socket) X(sync) X(sys) X(thread)
#define LMP_OPENER_DECL(name) int luaopen_lmp_c_##name(lua_State *L);
LMP_OPENERS(LMP_OPENER_DECL)

/* Pushes a new error object; fmt as lua_pushfstring. */
void lmp_error_push(lua_State *L, const char *kind, const char *fmt, ...);
/* Raises a new error object. Never returns. */
int lmp_error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* Raises the error object for a core -errno result, choosing the kind:
 * -ETIMEDOUT timeout, -EPIPE/-ECONNRESET broken, -EBADF closed,
 * -EMSGSIZE/-EPROTO broken (the channel is refused), others "os".
 * `what` names the operation ("recv", "connect to 127.0.0.1:5000"). */
int lmp_error_raise_errno(lua_State *L, int neg_errno, const char *what);
/* Raises the "interrupted" error and clears the pending interruption;
 * bindings call it when a core call returns -EINTR. */
int lmp_error_raise_interrupt(lua_State *L);
/* 1 if the value at idx is an lmp error object (of kind, when not NULL). */
int lmp_error_is(lua_State *L, int idx, const char *kind);

/* Timeout argument at idx (nil or none: forever; a negative number is an
 * argument error) as an absolute deadline for core/ (clock.h). */
double lmp_check_deadline(lua_State *L, int idx);

/* Creates the metatable tname with methods (and __index = methods) unless
 * it exists; leaves it on the stack. */
void lmp_newclass(lua_State *L, const char *tname, const luaL_Reg *meta,
                  const luaL_Reg *methods);

/* Bytes ("lmp.Bytes"): a malloc'd buffer handed to Lua without copying it
 * into a string, for payloads used once (a pool's big chunks, read or
 * written): decoders read it in place, senders send it, and the user
 * frees it at once, so the memory is reused at the next message instead
 * of waiting for Lua's collector. b:free() releases it (later use raises),
 * b:tostring() copies it into a string, b:sub(i, j) a part of it, #b is
 * its length, b:byte1() its first byte (nil if empty); __gc frees what was
 * not freed. Payloads of LMP_BYTES_MIN bytes or more travel this way. */
#define LMP_BYTES_MT "lmp.Bytes"
#define LMP_BYTES_MIN (64 * 1024)
/* Pushes Bytes owning p (from malloc, n bytes; p may be NULL when n is 0).
 * (Should Lua run out of memory making the userdata, p leaks.) */
void lmp_bytes_push(lua_State *L, char *p, size_t n);
/* The bytes of a string or of live Bytes at idx; raises otherwise. */
const char *lmp_bytes_check(lua_State *L, int idx, size_t *n);

/* Registers the "lmp.Error" metatable (idempotent). */
void lmp_error_init(lua_State *L);

/* lmp's Lua files (lembed.c): the lua/ folder of a build tree holding the
 * executable (its folder or up to four levels above), else LMP_LUADIR. */
void lmp_find_luadir(char *out, size_t outlen);
/* Puts that folder first on package.path (if_missing: only when no
 * template of package.path finds lmp.lua) and preloads lmp.core. */
void lmp_setup_paths(lua_State *L, int if_missing);

#endif
