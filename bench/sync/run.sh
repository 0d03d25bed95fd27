#!/usr/bin/env bash
# Lock acquire/release (uncontended, 2 processes contending) and
# Value:add from 2 processes, against Python in the same run.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/sync/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/sync/bench.lua" "$@"
