-- lmp's side of bench/pool. Usage: pool_bench.lua codec "python figures"
local lmp = require "lmp"
local R = require "report"
local codec, pyline = arg[1], arg[2] or ""
local py = {}
for k, v in pyline:gmatch("(%S+)=(%S+)") do py[k] = tonumber(v) end

local function noop(x) return x end
local function cpu_1ms(x)
  local t = os.clock() + 0.001
  while os.clock() < t do end
  return x
end
local function range(n) local t = {} for i = 1, n do t[i] = i end return t end
local function rss_pss(pid)
  local rss, pss = 0, 0
  for line in io.lines("/proc/" .. pid .. "/smaps_rollup") do
    rss = tonumber(line:match("^Rss:%s+(%d+)")) or rss
    pss = tonumber(line:match("^Pss:%s+(%d+)")) or pss
  end
  return rss, pss
end

local tag = " [" .. codec .. "]"
local items = range(100000)
local pool = lmp.Pool{processes = 2, codec = codec}
-- best of 10 (of 5 for 1M), as on the Python side
R.line("map 100k tiny tasks, default chunks" .. tag,
  #items / R.time(function() pool:map(noop, items) end, 10), py.map_default, "tasks/s", "higher",
  codec == "binary" and "goal >= 2x" or "goal >= 0.8x")
local big = range(1000000)
R.line("map 1M tiny tasks, default chunks" .. tag,
  #big / R.time(function() pool:map(noop, big) end, 5), py.map_1m, "tasks/s", "higher",
  codec == "binary" and "goal >= 2x" or "goal >= 0.8x")

-- Where a 1M map's time goes: the master's CPU (of which pickling: the
-- same chunks encoded and results decoded in this process, no pool), the
-- workers' CPU (from /proc: 10 ms ticks), and the wall time.
do
  local items = big
  local P = require "lmp.pickle"
  local function cpu_of(pid)      -- utime + stime in seconds
    local f = io.open("/proc/" .. pid .. "/stat")
    if not f then return 0 end
    local s = f:read("*a"); f:close()
    local fields = {}
    for x in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
    return (tonumber(fields[12]) + tonumber(fields[13])) / 100
  end
  local pids = {}
  for _, w in pairs(pool.workers) do pids[#pids + 1] = w.h.pid end
  local w0, c0, t0 = 0, os.clock(), lmp.time()
  for _, pid in ipairs(pids) do w0 = w0 + cpu_of(pid) end
  pool:map(noop, items)
  local wall, master = lmp.time() - t0, os.clock() - c0
  local w1 = 0
  for _, pid in ipairs(pids) do w1 = w1 + cpu_of(pid) end
  local sl, dec = P.slice_encoder(codec), P.decoder()
  local cs, out = math.ceil(#items / 8), {}
  local c1 = os.clock()
  for first = 1, #items, cs do
    local last = math.min(first + cs - 1, #items)
    P.loads_into(sl(items, first, last), out, first - 1, last - first + 1)
  end
  local pick = os.clock() - c1
  print(string.format("%-46s | wall %.0f ms | master CPU %.0f ms (pickling %.0f ms, the rest syscalls and the loop) | workers CPU %.0f ms (2 workers)",
    "where map 1M's time goes" .. tag, wall * 1e3, master * 1e3, pick * 1e3, (w1 - w0) * 1e3))
end
big = nil

R.line("map 100k tiny tasks, chunksize 1" .. tag,
  #items / R.time(function() pool:map(noop, items, 1) end, 1), py.map_chunk1, "tasks/s", "higher", "goal >= 3x")
local n = 2000
local rtt = R.time(function() for _ = 1, n do pool:apply_async(noop, {1}):get() end end) / n * 1e6
R.line("apply_async():get() round trip" .. tag, rtt,
  py.apply_latency and py.apply_latency * 1e6, "us", "lower", "goal <= 0.5x Python's time")
if py.raw_rtt_us then
  print(string.format("%-46s | lmp %10.4g us | raw C socketpair %.4g us | %.2fx raw  (goal <= 3x)",
    "apply_async():get() vs raw C round trip" .. tag, rtt, py.raw_rtt_us, rtt / py.raw_rtt_us))
end
R.line("imap_unordered 100k tasks, chunksize 1" .. tag,
  #items / R.time(function() for _ in pool:imap_unordered(noop, items, 1) do end end, 1),
  py.imap_unordered1, "tasks/s", "higher", "goal >= 3x")
local _, w = next(pool.workers)
lmp.sleep(0.5)            -- idle: as the Python side measures it
local rss, pss = rss_pss(w.h.pid)
R.line("idle worker RSS" .. tag, rss, py.idle_rss_kb, "kB", "lower", "goal <= 0.5x")
R.line("idle worker PSS" .. tag, pss, py.idle_pss_kb, "kB", "lower", "goal <= 0.5x")
pool:terminate()

-- Large values, first time: a fresh pool's first map of values there and
-- back (MiB counts both ways), then the same pool warm; returns the warm time.
-- It starts from a full collection, as a script that runs one map starts
-- with no garbage: the sections before leave hundreds of MB of it, and the
-- warm binary map ran 763 MiB/s after them against 1,779 after a collect.
local function cold_and_warm(what, values, mib, py_cold, py_warm, floor)
  collectgarbage()
  collectgarbage()
  local p = lmp.Pool{processes = 2, codec = codec}
  local t0 = lmp.time()
  p:map(noop, values)
  local cold = lmp.time() - t0
  local warm = R.time(function() p:map(noop, values) end)
  p:terminate()
  R.line("fresh Pool's first map of " .. what .. tag, mib / cold, py_cold, "MiB/s", "higher", "goal >= 2x")
  if floor then
    print(string.format("  (its floor, fresh C processes moving the same bytes: %.0f MiB/s; lmp is %.0f%% of it)",
      floor, 100 * mib / cold / floor))
  end
  R.line("same pool warm" .. tag, mib / warm, py_warm, "MiB/s", "higher")
  return warm
end

do
  local blobs = {}
  for i = 1, 60 do blobs[i] = string.rep("x", 1 << 20) end
  local warm = cold_and_warm("60 x 1 MiB strings", blobs, 120, py.big_cold_mibs, py.big_warm_mibs,
    py.fresh_floor_mibs)
  -- its bound: the same 60 strings there and back through one warm Pipe
  -- to an echo process (each string is a frame, as in a pool's chunk)
  local a, b = lmp.Pipe{codec = codec}
  local echo = lmp.Process{args = {b}, target = R.echo}
  echo:start()
  local function through_pipe()
    for i = 1, #blobs do a:send(blobs[i]); a:recv() end
  end
  through_pipe()
  local pipe_t = R.time(through_pipe)
  a:send(false)
  echo:join()
  print(string.format("  (the same strings through a warm Pipe: %.0f MiB/s; the warm pool is %.0f%% of it, goal >= 50%%)",
    120 / pipe_t, 100 * pipe_t / warm))
end

-- The same with tables of numbers: 16 tables of 131072 floats (1 MiB of
-- doubles each).
do
  local tabs = {}
  for i = 1, 16 do
    local t = {}
    for j = 1, 131072 do t[j] = i + j / 8 end
    tabs[i] = t
  end
  cold_and_warm("16 x 128k floats", tabs, 32, py.nums_cold_mibs, py.nums_warm_mibs)
end

R.line("Pool(2) start + close/join" .. tag, R.time(function()
  local p = lmp.Pool{processes = 2, codec = codec}; p:close(); p:join()
end, 20) * 1000, py.start_join and py.start_join * 1000, "ms", "lower", "goal <= 0.2x")

local base
for _, wn in ipairs{1, 2, 4} do
  local p = lmp.Pool{processes = wn, codec = codec}
  local rate = 400 / R.time(function() p:map(cpu_1ms, range(400), 1) end, 1)
  p:terminate()
  base = base or rate
  R.line(string.format("1 ms CPU tasks, %d workers (efficiency %.0f%%)", wn,
    100 * rate / (base * math.min(wn, lmp.cpu_count()))) .. tag,
    rate, py["cpu_" .. wn], "tasks/s", "higher")
end
