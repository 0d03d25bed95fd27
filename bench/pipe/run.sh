#!/usr/bin/env bash
# Pipe benchmarks: ping-pong of a small value and 1 MiB throughput, lmp
# against Python's multiprocessing.Pipe and raw C socketpairs, same run.
set -eu
cd "$(dirname "$0")"
cc -O2 -o /tmp/lmp_bench_sp socketpair.c
c=$(/tmp/lmp_bench_sp)
py=$(python3 - <<'PY'
import multiprocessing as mp, time
def echo(c):
    while True:
        v = c.recv()
        if v is None: break
        c.send(v)
def sink(c, n, raw):
    for _ in range(n):
        c.recv_bytes() if raw else c.recv()
    c.send(1)
if __name__ == "__main__":
    mp.set_start_method("fork")
    a, b = mp.Pipe(); p = mp.Process(target=echo, args=(b,)); p.start()
    n = 10000; t0 = time.perf_counter()
    for i in range(n): a.send([i, "x"]); a.recv()
    rt = (time.perf_counter() - t0) / n
    a.send(None); p.join()
    out = [f"pingpong={rt}"]
    blob = b"x" * (1 << 20)
    for raw in (True, False):
        a, b = mp.Pipe(); n = 200
        p = mp.Process(target=sink, args=(b, n, raw)); p.start()
        t0 = time.perf_counter()
        for _ in range(n): a.send_bytes(blob) if raw else a.send(blob)
        a.recv(); dt = time.perf_counter() - t0; p.join()
        out.append(f"{'bytes' if raw else 'send'}={n / dt}")
    print(" ".join(out))
PY
)
"$LMP_BIN" - "$py" "$c" <<'LUA'
local lmp = require "lmp"
local R = require "report"
local py, c = {}, {}
for k, v in arg[1]:gmatch("(%S+)=(%S+)") do py[k] = tonumber(v) end
for k, v in arg[2]:gmatch("(%S+)=(%S+)") do c[k] = tonumber(v) end
local a, b = lmp.Pipe()
local p = lmp.Process{args = {b}, target = R.echo}
p:start()
local n = 10000
local t0 = lmp.time()
for i = 1, n do a:send({i, "x"}); a:recv() end
local rt = (lmp.time() - t0) / n
a:send(false); p:join()
R.line("Pipe ping-pong of a small table", rt * 1e6, py.pingpong * 1e6, "us", "lower", "goal <= 0.5x Python's time")
print(string.format("  (raw C socketpair ping-pong: %.2f us; lmp is %.1fx it, goal <= 3x)", c.pingpong, rt * 1e6 / c.pingpong))
local blob = string.rep("x", 1024 * 1024)
for _, mode in ipairs{"bytes", "send"} do
  local x, y = lmp.Pipe()
  local m = 200
  local q = lmp.Process{args = {y, m, mode}, target = function(conn, count, how)
    for _ = 1, count do if how == "bytes" then conn:recv_bytes() else conn:recv() end end
    conn:send(1)
  end}
  q:start()
  local s0 = lmp.time()
  for _ = 1, m do if mode == "bytes" then x:send_bytes(blob) else x:send(blob) end end
  x:recv()
  local rate = m / (lmp.time() - s0)
  q:join()
  R.line("1 MiB messages, " .. (mode == "bytes" and "send_bytes" or "send of a string"),
    rate, py[mode], "MiB/s", "higher", "goal >= Python's send_bytes")
  print(string.format("  (raw C socketpair: %.0f MiB/s; lmp is %.0f%% of it, goal >= 50%%)", c.mibs, 100 * rate / c.mibs))
end
LUA
