--- bench/manager: queue put+get round trips through a manager over TCP
-- loopback (1 client, then 8 at once), and connect + authenticate + first
-- call from a fresh process, against Python's BaseManager in the same run.
local lmp = require "lmp"
local R = require "report"
local T = lmp.manager_types

local N1 = tonumber(os.getenv("N1")) or 20000
local N8 = tonumber(os.getenv("N8")) or 4000
local KEY = "bench-key"

local queues = {}
for i = 1, 8 do queues[i] = T.Queue() end
local m = lmp.BaseManager{address = {"127.0.0.1", 0}, authkey = KEY}
m:register("get_q", function(i) return queues[i] end)
m:start()

local function client(i, n, out)
  local c = lmp.BaseManager{address = m.address, authkey = KEY}
  c:register("get_q")
  c:connect()
  local q = c:get_q(i)
  local t = lmp.time()
  for k = 1, n do q:put(k) q:get() end
  out:put(lmp.time() - t)
end

local function first_call(out)
  local t = lmp.time()
  local c = lmp.BaseManager{address = m.address, authkey = KEY}
  c:register("get_q")
  c:connect()
  c:get_q(1):qsize()
  out:put((lmp.time() - t) * 1000)
end

local out1 = lmp.Queue()
local p = lmp.Process{target = client, args = {1, N1, out1}}
p:start()
local one = out1:get(300)
p:join(30)

local out8 = lmp.Queue()
local ps = {}
for i = 1, 8 do
  ps[i] = lmp.Process{target = client, args = {i, N8, out8}}
  ps[i]:start()
end
local worst = 0
for _ = 1, 8 do worst = math.max(worst, out8:get(300)) end
for i = 1, 8 do ps[i]:join(30) end

local outc = lmp.Queue()
local best_conn = math.huge
for _ = 1, 3 do
  local pc = lmp.Process{target = first_call, args = {outc}}
  pc:start()
  best_conn = math.min(best_conn, outc:get(60))
  pc:join(30)
end
m:shutdown()

local f = io.popen(string.format("python3 %s/bench/manager/bench.py %d %d",
  os.getenv("LMP_ROOT") or ".", math.floor(N1 / 4), math.floor(N8 / 4)))
local py = {}
for x in f:read("*a"):gmatch("[%d%.eE+-]+") do py[#py + 1] = tonumber(x) end
f:close()

R.line("manager Queue put+get, 1 client", N1 / one, py[1], "pairs/s", "higher", "goal >= 3x")
-- Its floor: a put and a get are two calls, each one loopback TCP round
-- trip at the least (raw C, same run: bench/manager/tcp_rtt.c).
local root = os.getenv("LMP_ROOT") or "."
local floor_pairs
if os.execute("cc -O2 -o /tmp/lmp_bench_tcp " .. root .. "/bench/manager/tcp_rtt.c") then
  local t = io.popen("/tmp/lmp_bench_tcp 20000")
  local rtt = tonumber(t:read("*a"):match("rtt_us=([%d%.]+)"))
  t:close()
  floor_pairs = rtt and 1e6 / (2 * rtt)
end
print(string.format("%-46s | lmp %10.4g pairs/s | raw TCP floor %10.4g pairs/s | lmp at %s of the floor",
  "manager put+get vs 2 raw loopback round trips", N1 / one, floor_pairs or 0,
  floor_pairs and string.format("%.0f%%", 100 * (N1 / one) / floor_pairs) or "n/a"))
R.line("manager Queue put+get, 8 clients (aggregate)", 8 * N8 / worst, py[2], "pairs/s", "higher")
R.line("manager connect + auth + first call", best_conn, py[3], "ms", "lower", "goal <= 5 ms")
