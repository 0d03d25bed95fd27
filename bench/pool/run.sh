#!/usr/bin/env bash
# Pool benchmarks: lmp.Pool against Python's multiprocessing.Pool (fork),
# same worker count, same run. Prints one line per figure (bench/report.lua).
set -eu
cd "$(dirname "$0")"
py=$(python3 pool_bench.py)
for codec in json binary; do
  "$LMP_BIN" pool_bench.lua "$codec" "$py"
done
