--- bench/queue: one producer process, one consumer (this process), N small
-- tables through lmp.Queue / lmp.SimpleQueue (JSON and binary codecs) and
-- through Python's multiprocessing.Queue / SimpleQueue.
local R = require "report"
local lmp = require "lmp"

local N = tonumber(arg and arg[1]) or 200000

local function run(make)
  local q = make()
  local p = lmp.Process{target = function(qq, n)
    for i = 0, n - 1 do qq:put({id = i, name = "item", ok = true}) end
    qq:put(nil)
  end, args = {q, N}}
  local t0 = lmp.time()
  p:start()
  local n = 0
  while q:get(60) ~= nil do n = n + 1 end
  local dt = lmp.time() - t0
  p:join(60)
  assert(n == N, "lost items: " .. n)
  q:close()
  return N / dt
end

local f = io.popen("python3 bench/queue/bench.py " .. N)
local py_q, py_sq = f:read("*n", "*n")
f:close()

local best = function(make)
  local b = 0
  for _ = 1, 5 do b = math.max(b, run(make)) end   -- best of 5, as Python
  return b
end
local q_json = best(function() return lmp.Queue() end)
local q_bin = best(function() return lmp.Queue(0, {codec = "binary"}) end)
local sq_json = best(function() return lmp.SimpleQueue() end)
local sq_bin = best(function() return lmp.SimpleQueue{codec = "binary"} end)
local label = string.format("%dk small tables, 1 prod/1 cons", math.floor(N / 1000))
R.line("Queue (JSON), " .. label, q_json, py_q, "msgs/s", "higher", "goal >= 3x")
R.line("Queue (binary), " .. label, q_bin, py_q, "msgs/s", "higher", "goal >= 3x")
R.line("SimpleQueue (JSON), " .. label, sq_json, py_sq, "msgs/s", "higher", "goal >= 3x")
R.line("SimpleQueue (binary), " .. label, sq_bin, py_sq, "msgs/s", "higher", "goal >= 3x")
