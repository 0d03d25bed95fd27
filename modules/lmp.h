/* lmp.h -- the C API of lmp for programs that embed Lua (docs/api/embed.md).
 *
 * Two ways in:
 *   - a host that owns a lua_State opens lmp with luaL_requiref(L, "lmp",
 *     luaopen_lmp, 1) (or by calling luaopen_lmp(L) inside a lua_pcall)
 *     and runs its scripts as usual;
 *   - a host with no Lua of its own makes a runtime (lmp_runtime_new), runs
 *     pool scripts in it (lmp_runtime_dofile) and frees it.
 * Either way the host drives pools from its own loop: it watches one fd
 * (lmp_fileno) with its poll/epoll/libuv and calls lmp_poll to run the
 * callbacks that are due. Nothing here blocks the host's thread unless a
 * script calls a blocking method (or lmp_poll is given a timeout), nothing
 * raises a Lua error into the host, and lmp installs no signal handler
 * unless the host calls lmp_install_signal_handlers.
 *
 * One lua_State (and the pools it made) belongs to one host thread at a
 * time, as with any Lua state. Link: the objects of core/ and modules/
 * (minus lmp_main.c) or lmp/core.so, plus the Lua library, -lhiredis
 * -lsodium -lpthread -lm -lrt. */
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

/* Opens the whole lmp module (require "lmp"); returns 1 with it on the
 * stack. Registers lmp.core in package.preload; if no template of
 * package.path finds lmp.lua, first adds the folder the lmp runtime uses
 * (a build tree's lua/ near the executable, else the installed one). Needs
 * the base and package libraries (luaL_openlibs). Like any luaopen_*, it
 * raises on failure: call it protected (luaL_requiref inside lua_pcall). */
LMP_API int luaopen_lmp(lua_State *L);

/* ---- the host's loop -------------------------------------------------- */

/* Runs what is due in every live pool of L (lmp.Pool, and any pool built
 * on lmp.pool._new_pool): reads results, notices dead workers, runs
 * callbacks and error callbacks, on the calling thread. timeout_ms 0
 * never blocks; > 0 waits up to that long for something to happen when
 * nothing is due now; < 0 waits without limit (it returns 0 at once if L
 * has no live pool). Returns the number of events handled (0 when none,
 * or when L never loaded lmp.pool), or -1 on error: a callback that
 * raised (every pool still had its turn; the first callback's error is
 * reported), an interruption (see lmp_install_signal_handlers), or an
 * internal error. The message is then lmp_last_error(L). Never raises
 * into the host; leaves L's stack as it was. */
LMP_API int lmp_poll(lua_State *L, int timeout_ms);

/* One fd the host can watch for input with poll/epoll/libuv: readable
 * whenever lmp_poll(L, 0) has something to do, for every pool L has or
 * will create. The fd belongs to L (do not close it; it is closed with L)
 * and stays the same for L's life. Loads lmp.pool if needed. Returns the
 * fd, or -1 with the message in lmp_last_error(L). Never raises. */
LMP_API int lmp_fileno(lua_State *L);

/* The message of the last failed lmp_poll, lmp_fileno or
 * lmp_runtime_dofile on L, or NULL if none failed yet. Valid until the
 * next failure on L or until L is closed. */
LMP_API const char *lmp_last_error(lua_State *L);

/* Installs SIGINT and SIGTERM handlers that interrupt L: blocking lmp
 * calls and running Lua code raise lmp's "interrupted" error (with field
 * `signal`), as they do in the lmp runtime. Signal dispositions are
 * process-wide: one state at a time is interrupted (the last one given).
 * The host's previous dispositions come back when that state is closed.
 * Call from the thread that runs L. 0, or -errno from sigaction, or
 * -ENOMEM. Without this call lmp never touches signal dispositions. */
LMP_API int lmp_install_signal_handlers(lua_State *L);

/* ---- runtimes: Lua and lmp for hosts without a Lua of their own ------ */

typedef struct lmp_runtime lmp_runtime;

/* A new Lua state with the standard libraries, lmp's Lua files on
 * package.path as the lmp runtime sets it, lmp.core preloaded, lmp loaded
 * as the global `lmp`, and os.exit turned into an error (a script cannot
 * end the host's process; in fork children os.exit is the real one). No
 * signal handler is installed. NULL only when memory runs out; if lmp
 * itself cannot be loaded the runtime is made anyway, lmp_runtime_error
 * says why, and every lmp_runtime_dofile fails with that message. The
 * caller owns it: lmp_runtime_free. */
LMP_API lmp_runtime *lmp_runtime_new(void);

/* Loads and runs a Lua file (NULL: standard input) in the runtime, to its
 * end; its globals stay for the next file and for calls through
 * lmp_runtime_state. 0 on success; nonzero on a load or run error, whose
 * message (with a traceback) is lmp_runtime_error. Never exits or raises
 * into the host. */
LMP_API int lmp_runtime_dofile(lmp_runtime *rt, const char *path);

/* The message of the last failure (lmp_last_error of the runtime's state),
 * or NULL. */
LMP_API const char *lmp_runtime_error(lmp_runtime *rt);

/* The runtime's lua_State, for lmp_poll/lmp_fileno and the host's own
 * calls into its scripts (call them protected). Owned by the runtime. */
LMP_API lua_State *lmp_runtime_state(lmp_runtime *rt);

/* Closes the state: lmp's atexit handlers terminate its pools (workers
 * stopped and reaped) and every fd, child and byte it held is released.
 * rt may be NULL. */
LMP_API void lmp_runtime_free(lmp_runtime *rt);

#ifdef __cplusplus
}
#endif

#endif
