#!/usr/bin/env bash
# Runs every benchmark: each bench/<name>/run.sh times lmp and Python's
# multiprocessing on the same work in the same run and prints lines from
# bench/report.lua ("what | lmp ... | python ... | ratio ...").
# Benchmarks never fail the build; timings are not asserted anywhere.
set -u
cd "$(dirname "$0")/.."
export LMP_ROOT=$(pwd)
export LMP_BIN=${LMP_BIN:-$LMP_ROOT/lmp}
export LUA_PATH="$LMP_ROOT/lua/?.lua;$LMP_ROOT/bench/?.lua;;"
export LUA_CPATH="$LMP_ROOT/build/5.4/?.so;;"
only=${1:-}
for d in bench/*/; do
  name=$(basename "$d")
  [ -n "$only" ] && [ "$only" != "$name" ] && continue
  [ -f "$d/run.sh" ] || continue
  echo "== $name"
  timeout 900 bash "$d/run.sh" || echo "$name: benchmark failed (exit $?)"
done
