rockspec_format = "3.0"
package = "lmp"
version = "scm-1"
source = {
  url = "git+file:///dev/null",   -- built from a checkout: `luarocks make`
}
description = {
  summary = "Multiprocessing for Lua: processes, pipes, pools, queues, managers, threads",
  detailed = [[
lmp lets you write master/worker programs as Lua scripts, the way Python's
multiprocessing does: processes (fork and spawn), framed pipes, process
pools that never hang, shared-memory queues and locks, authenticated
managers, OS threads, and Redis-backed distributed workers.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
test_dependencies = {
  "busted",
}
external_dependencies = {
  HIREDIS = { header = "hiredis/hiredis.h" },
  SODIUM = { header = "sodium.h" },
  OPENSSL = { header = "openssl/ssl.h" },   -- TLS (rediss://): links -lssl -lcrypto
}
build = {
  type = "make",
  build_target = "rock",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_target = "rock-install",
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
}
test = {
  type = "busted",
}
