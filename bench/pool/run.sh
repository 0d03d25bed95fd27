#!/usr/bin/env bash
# Pool benchmarks: lmp.Pool against Python's multiprocessing.Pool (fork),
# same worker count, same run. Prints one line per figure (bench/report.lua).
set -eu
cd "$(dirname "$0")"
py=$(python3 pool_bench.py)
# the raw C round trip over a socketpair (bench/pipe's baseline), in us
cc -O2 -o /tmp/lmp_bench_pool_sp ../pipe/socketpair.c
raw=$(/tmp/lmp_bench_pool_sp | sed -n 's/.*pingpong=\([0-9.]*\).*/\1/p')
# the floor of a fresh pool's first map of 60 x 1 MiB strings: fresh C
# processes moving the same bytes, under the lmp runtime's malloc setting;
# the median of 5 runs (it moves 2x from run to run on this VM)
cc -O2 -o /tmp/lmp_bench_fresh_floor fresh_floor.c
floor=$(for i in 1 2 3 4 5; do
  GLIBC_TUNABLES=glibc.malloc.hugetlb=1 /tmp/lmp_bench_fresh_floor 60 1048576
done | sed -n 's/^mibs=//p' | sort -n | sed -n 3p)
for codec in json binary; do
  "$LMP_BIN" pool_bench.lua "$codec" "$py raw_rtt_us=$raw fresh_floor_mibs=$floor"
done
