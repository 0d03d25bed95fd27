#!/usr/bin/env bash
# Process start+join (fork, spawn, forkserver): lmp.Process against Python's
# multiprocessing.Process with the same start method, and a bare C
# fork+exit+wait, in the same run.
set -eu
cd "$(dirname "$0")"
cc -O2 -o /tmp/lmp_bench_fork fork.c
c_us=$(/tmp/lmp_bench_fork 200)
py=$(python3 process_bench.py)
"$LMP_BIN" - "$py" "$c_us" <<'LUA'
local lmp = require "lmp"
local R = require "report"
local py = {}
for k, v in arg[1]:gmatch("(%S+)=(%S+)") do py[k] = tonumber(v) end
local function per(method, n)
  local ctx = lmp.get_context(method)
  local t0 = lmp.time()
  for _ = 1, n do
    local p = ctx.Process{target = function() end}
    p:start(); p:join()
  end
  return (lmp.time() - t0) / n
end
local fork = per("fork", 100)
R.line("Process start+join, fork", fork * 1e3, py.fork * 1e3, "ms", "lower", "goal <= 0.2x Python's time")
print(string.format("  (bare C fork+exit+wait: %.3f ms)", tonumber(arg[2]) / 1000))
R.line("Process start+join, spawn", per("spawn", 10) * 1e3, py.spawn * 1e3, "ms", "lower", "goal <= 0.2x Python's time")
per("forkserver", 1)   -- starts the server (as Python's side does): not counted
R.line("Process start+join, forkserver", per("forkserver", 100) * 1e3, py.forkserver * 1e3, "ms", "lower", "goal <= 0.2x Python's time")
LUA
