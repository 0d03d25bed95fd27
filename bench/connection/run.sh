#!/usr/bin/env bash
# Listener/Client round trips and connection set-up over TCP loopback, with
# and without an authkey, against Python's multiprocessing.connection in
# the same run (see bench.lua).
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LMP_ROOT=$ROOT
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;;"
exec "$LMP_BIN" "$ROOT/bench/connection/bench.lua" "$@"
