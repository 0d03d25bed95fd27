#!/usr/bin/env bash
# Tiny tasks through Redis (lmp.RedisPool + 2 `lmp worker` processes) on a
# private redis-server, beside redis-benchmark's raw LPUSH/RPOP figure from
# the same run (no Python Redis client is installed for an RQ baseline).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LMP_BIN
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/redis/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/redis/bench.lua" "$@"
