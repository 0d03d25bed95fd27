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
R.line("map 100k tiny tasks, default chunks" .. tag,
  #items / R.time(function() pool:map(noop, items) end), py.map_default, "tasks/s", "higher", "goal >= 3x")
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
