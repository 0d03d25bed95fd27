#!/usr/bin/env bash
# Pool benchmarks: lmp.Pool against Python's multiprocessing.Pool (fork),
# same worker count, same run. Prints one line per figure (bench/report.lua).
set -eu
cd "$(dirname "$0")"
py=$(python3 pool_bench.py)
# the raw C round trip over a socketpair (bench/pipe's baseline), in us
cc -O2 -o /tmp/lmp_bench_pool_sp ../pipe/socketpair.c
raw=$(/tmp/lmp_bench_pool_sp | sed -n 's/.*pingpong=\([0-9.]*\).*/\1/p')
for codec in json binary; do
  "$LMP_BIN" pool_bench.lua "$codec" "$py raw_rtt_us=$raw"
done
