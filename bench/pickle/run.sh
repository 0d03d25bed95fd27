#!/usr/bin/env bash
# lmp.pickle round trips (dumps + loads, JSON and binary) of a dozen shapes
# of data against plain lua-cjson, the time Lua takes to build each value,
# Python's json and Python's pickle, all in this one run (~60-90 s).
#   bash bench/pickle/run.sh [part of a shape's name]   e.g. "floats"
#   LMP_BIN=build/luajit/bin/lmp bash bench/pickle/run.sh   (any built Lua)
#   PICKLE_BENCH_MIN_SAMPLE=0.01 ...   shorter samples (default 0.05 s)
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/bench/?.lua;$ROOT/bench/pickle/?.lua;;"
# api_floor.so: the C API floor of a decoder (api_floor.c), built for the
# Lua that LMP_BIN runs (the runtime exports the Lua API to modules)
ver=$("$LMP_BIN" -e 'io.write(rawget(_G, "jit") and "jit" or _VERSION:match("%d+%.%d+"))')
case $ver in jit) inc=/usr/include/luajit-2.1 ;; *) inc=/usr/include/lua$ver ;; esac
floor_dir=$(mktemp -d)
trap 'rm -rf "$floor_dir"' EXIT
cc -O2 -shared -fPIC -I"$inc" -o "$floor_dir/api_floor.so" "$ROOT/bench/pickle/api_floor.c" \
  && export LUA_CPATH="$floor_dir/?.so;${LUA_CPATH:-;}"
"$LMP_BIN" "$ROOT/bench/pickle/bench.lua" "$@"
