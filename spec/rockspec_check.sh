#!/usr/bin/env bash
# Builds lmp with the local luarocks into a private tree and requires it
# from plain Lua. Prints "rockspec: 1 passed, 0 failed" (or 0/1).
set -u
cd "$(dirname "$0")/.."
abi=${1:-5.4}; bin=${2:-lua5.4}
tree=$(pwd)/build/rocks
rm -rf "$tree"
if ! out=$(luarocks --lua-version="$abi" --tree="$tree" \
           make --deps-mode=none lmp-scm-1.rockspec 2>&1); then
  printf '%s\n' "$out" | tail -20
  echo "rockspec: 0 passed, 1 failed"; exit 1
fi
got=$(LUA_PATH="$tree/share/lua/$abi/?.lua;;" \
      LUA_CPATH="$tree/lib/lua/$abi/?.so;;" \
      "$bin" -e 'local l = require "lmp"; io.write(l._VERSION, " ", type(l.time()))' 2>&1)
if [ "${got#* }" = "number" ]; then
  echo "rockspec: luarocks make installed lmp $got"
  echo "rockspec: 1 passed, 0 failed"
else
  printf '%s\n' "$got"; echo "rockspec: 0 passed, 1 failed"; exit 1
fi
