#!/usr/bin/env bash
# ThreadPool against Python's multiprocessing.pool.ThreadPool (bench.lua).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LMP_ROOT=$ROOT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/thread/bench.lua" "$@"
