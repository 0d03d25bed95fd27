#!/usr/bin/env bash
# lmp.pickle round trips (dumps + loads) of 1,000 records against plain
# lua-cjson, Python's json and Python's pickle, all in this one run.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/pickle/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/pickle/bench.lua" "$@"
