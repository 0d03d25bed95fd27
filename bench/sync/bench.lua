--- bench/sync: Lock acquire/release pairs per second, uncontended and with
-- 2 processes contending; Value:add (atomic) from 2 processes, and the
-- same increment under get_lock(); against Python's multiprocessing.
local R = require "report"
local lmp = require "lmp"

local N = tonumber(arg and arg[1]) or 1000000
local M = tonumber(arg and arg[2]) or 200000

local function uncontended()
  local lock = lmp.Lock()
  local acq, rel = lock.acquire, lock.release
  local t0 = lmp.time()
  for _ = 1, N do acq(lock) rel(lock) end
  return N / (lmp.time() - t0)
end

local function two(target, obj)
  local ps = {}
  for i = 1, 2 do ps[i] = lmp.Process{target = target, args = {obj, M}} end
  local t0 = lmp.time()
  for i = 1, 2 do ps[i]:start() end
  for i = 1, 2 do assert(ps[i]:join(120)) end
  return 2 * M / (lmp.time() - t0)
end

local function locker(lock, n)
  local acq, rel = lock.acquire, lock.release
  for _ = 1, n do acq(lock) rel(lock) end
end

local function adder(v, n)
  for _ = 1, n do v:add(1) end
end

local function locked_adder(v, n)
  local l = v:get_lock()
  for _ = 1, n do l:acquire() v.value = v.value + 1 l:release() end
end

local function best(f)
  local b = 0
  for _ = 1, 3 do b = math.max(b, f()) end
  return b
end

local p = io.popen(string.format("python3 bench/sync/bench.py %d %d", N, M))
local py_u, py_c, py_v = p:read("*n", "*n", "*n")
p:close()

local u = best(uncontended)
local c = best(function() return two(locker, lmp.Lock()) end)
local function value_run(fn)
  return best(function()
    local v = lmp.Value("int64", 0)
    local r = two(fn, v)
    assert(v.value == 2 * M, "lost increments: " .. v.value)
    return r
  end)
end
local va = value_run(adder)
local vl = value_run(locked_adder)
R.line("Lock acquire+release, uncontended", u, py_u, "pairs/s", "higher", "goal >= 2x")
R.line("Lock acquire+release, 2 processes contending", c, py_c, "pairs/s", "higher", "goal >= 2x")
R.line("Value:add(1) from 2 processes (atomic)", va, py_v, "adds/s", "higher",
  "vs Python get_lock() += 1")
R.line("Value += 1 under get_lock(), 2 processes", vl, py_v, "adds/s", "higher",
  "same code shape as Python")
