#!/usr/bin/env bash
# Queue and SimpleQueue throughput, one producer and one consumer process,
# 200,000 small tables, against Python's multiprocessing in the same run.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/queue/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/queue/bench.lua" "$@"
