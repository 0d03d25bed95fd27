/* lmp_main.c -- the `lmp` runtime: a Lua interpreter with lmp preloaded.
 *
 *   lmp script.lua [args]   run a script (arg as the lua command sets it)
 *   lmp -e 'code' [...]     run code; lmp - reads the script from stdin
 *   lmp -v                  print versions
 *   lmp worker|workers ...  subcommands, implemented in lua/lmp/cli.lua
 *
 * The repo's own lua/ (found from the binary's place) or the installed
 * LMP_LUADIR goes first on package.path (lmp_setup_paths, lembed.c), so
 * `./lmp x.lua` works right after `make`. SIGINT and SIGTERM interrupt
 * the script with an "interrupted" error (lmp_install_signal_handlers);
 * it exits 130 (SIGINT) or 143 (SIGTERM) after cleanup has run. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "hugepage.h"
#include "lmp_aux.h"
#include "lmp.h"

static const char *progname = "lmp";

/* ---- errors ---------------------------------------------------------- */

static int msghandler(lua_State *L) {
  const char *msg;
  if (lmp_error_is(L, 1, NULL)) {         /* error objects keep their data */
    lua_getfield(L, 1, "where");
    if (lua_isnil(L, -1)) {
      luaL_traceback(L, L, NULL, 1);
      lua_setfield(L, 1, "where");
    }
    lua_settop(L, 1);
    return 1;
  }
  msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* tostring(v) for any value, as the global tostring gives it. */
static const char *to_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, idx);
  lua_call(L, 1, 1);
  lua_replace(L, idx);
  return lua_tostring(L, idx);
}

/* Prints the error on top of the stack; returns the exit status. */
static int report(lua_State *L) {
  int status = 1;
  if (lmp_error_is(L, -1, "interrupted")) {
    lua_getfield(L, -1, "signal");
    status = 128 + (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  if (lmp_error_is(L, -1, NULL)) {
    lua_getfield(L, -1, "where");
    lua_insert(L, -2);
    fprintf(stderr, "%s: %s\n", progname, to_text(L, -1));
    if (lua_isstring(L, -2)) fprintf(stderr, "%s\n", lua_tostring(L, -2));
    lua_pop(L, 1);
  } else {
    fprintf(stderr, "%s: %s\n", progname, to_text(L, -1));
  }
  fflush(stderr);
  lua_pop(L, 1);
  return status;
}

static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  int status;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

/* ---- set-up ---------------------------------------------------------- */

/* arg table as lua.c builds it: script at 0, its args from 1, the
 * interpreter and options at negative indices. */
static void create_arg(lua_State *L, char **argv, int argc, int script) {
  int i;
  lua_createtable(L, argc - script - 1, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int require_lmp(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp");
  if (docall(L, 1, 1) != LUA_OK) return report(L);
  lua_setglobal(L, "lmp");
  return 0;
}

static int run_chunk(lua_State *L, int status, int nargs) {
  if (status != LUA_OK) return report(L);
  if (docall(L, nargs, 0) != LUA_OK) return report(L);
  return 0;
}

static int push_script_args(lua_State *L) {
  int i, n;
  lua_getglobal(L, "arg");
  n = (int)lua_rawlen(L, -1);
  luaL_checkstack(L, n + 2, "too many arguments");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));
  return n;
}

static int run_subcommand(lua_State *L, const char *cmd) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.cli");
  if (docall(L, 1, 1) != LUA_OK) return report(L);
  lua_getfield(L, -1, "main");
  lua_remove(L, -2);
  lua_pushstring(L, cmd);
  lua_getglobal(L, "arg");
  if (docall(L, 2, 1) != LUA_OK) return report(L);
  return (int)lua_tointeger(L, -1);
}

static void print_version(void) {
  printf("lmp %s (%s)\n", LMP_VERSION, LUA_RELEASE);
}

static void usage(void) {
  fprintf(stderr,
    "usage: %s [options] [script [args]]\n"
    "  -e code   run code\n"
    "  -v        show version\n"
    "  -         run stdin\n"
    "  worker    run Redis workers (lmp worker --help)\n"
    "  workers   list Redis workers (lmp workers --help)\n", progname);
}

static int pmain(lua_State *L, int argc, char **argv) {
  int i, status;
  for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
    if (strcmp(argv[i], "-v") == 0) { print_version(); if (argc == 2) return 0; }
    else if (strcmp(argv[i], "-e") == 0) {
      const char *code = argv[++i];
      if (!code) { usage(); return 1; }
      create_arg(L, argv, argc, i);
      if ((status = require_lmp(L))) return status;
      status = luaL_loadbuffer(L, code, strlen(code), "=(command line)");
      if ((status = run_chunk(L, status, 0))) return status;
      if (i + 1 >= argc || strcmp(argv[i + 1], "-e") != 0) return 0;
    }
    else if (strcmp(argv[i], "--") == 0) { i++; break; }
    else { usage(); return 1; }
  }
  if (i < argc && (strcmp(argv[i], "worker") == 0 ||
                   strcmp(argv[i], "workers") == 0)) {
    create_arg(L, argv, argc, i);
    if ((status = require_lmp(L))) return status;
    return run_subcommand(L, argv[i]);
  }
  if (i >= argc) {
    if (i > 1) return 0;               /* only options were given */
    usage();
    return 1;
  }
  create_arg(L, argv, argc, i);
  if ((status = require_lmp(L))) return status;
  if (strcmp(argv[i], "-") == 0)
    status = luaL_loadfile(L, NULL);
  else
    status = luaL_loadfile(L, argv[i]);
  return run_chunk(L, status, status == LUA_OK ? push_script_args(L) : 0);
}

int main(int argc, char **argv) {
  lua_State *L;
  int status;
  lmp_hugepage_reexec(argv);            /* first: may start this again */
  if (argv[0] && argv[0][0]) progname = argv[0];
  L = luaL_newstate();
  if (!L) { fprintf(stderr, "%s: cannot create Lua state\n", progname); return 1; }
  luaL_openlibs(L);
  lmp_setup_paths(L, 0);                /* lmp's own Lua files come first */
  lmp_install_signal_handlers(L);       /* undone by lua_close */
  signal(SIGPIPE, SIG_IGN);
  status = pmain(L, argc, argv);
  fflush(stdout);
  lua_close(L);                         /* runs lmp's atexit handlers */
  return status;
}
