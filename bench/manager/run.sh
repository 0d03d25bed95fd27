#!/usr/bin/env bash
# Manager round trips and connection set-up, lmp against Python's
# BaseManager in the same run (see bench.lua).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LMP_ROOT=$ROOT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/manager/bench.lua" "$@"
