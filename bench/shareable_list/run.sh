#!/usr/bin/env bash
# ShareableList reads + writes from 2 processes, against Python's
# multiprocessing.shared_memory.ShareableList in the same run.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/shareable_list/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/shareable_list/bench.lua" "$@"
