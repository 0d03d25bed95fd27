--- bench/shareable_list: reads and writes of ShareableList slots from 2
-- processes at once (each on its own slot: an integer incremented, or a
-- 15-byte string written and read back), against Python's ShareableList.
-- One op = one read or one write.
local R = require "report"
local lmp = require "lmp"

local M = tonumber(arg and arg[1]) or 200000

local STRS = {}
for i = 0, 15 do STRS[i + 1] = string.format("%015d", i) end

local function ints(sl, k, n)
  for _ = 1, n do sl[k] = sl[k] + 1 end
end

local function strs(sl, k, n, s)
  for i = 1, n do
    sl[k] = s[i % 16 + 1]
    local _ = sl[k]
  end
end

local function two(target, sl)
  local ps = {}
  for k = 1, 2 do ps[k] = lmp.Process{target = target, args = {sl, k, M, STRS}} end
  local t0 = lmp.time()
  for k = 1, 2 do ps[k]:start() end
  for k = 1, 2 do assert(ps[k]:join(120)) end
  return 2 * 2 * M / (lmp.time() - t0)
end

local function run(target, init, check)
  local best = 0
  for _ = 1, 3 do
    local sl = lmp.ShareableList(init)
    best = math.max(best, two(target, sl))
    if check then check(sl) end
    sl:close()
  end
  return best
end

local p = io.popen(string.format("python3 bench/shareable_list/bench.py %d", M))
local py_i, py_s = p:read("*n", "*n")
p:close()

local i = run(ints, {0, 0, 1.5, "x"}, function(sl)
  assert(sl[1] == M and sl[2] == M, "lost writes")
end)
local s = run(strs, {("x"):rep(15), ("y"):rep(15), 0})
R.line("ShareableList int read+write, 2 processes", i, py_i, "ops/s", "higher")
R.line("ShareableList 15-byte str write+read, 2 procs", s, py_s, "ops/s", "higher")
