--- Benchmark helpers: timing and one report line per figure.
--   local R = require "report"
--   local secs = R.time(function() ... end)          -- best of `reps`
--   R.line("pipe ping-pong", lmp_value, py_value, "round trips/s", "higher")
local lmp = require "lmp"
local R = {}

--- Best wall time in seconds of `reps` runs of fn (default 3).
function R.time(fn, reps)
  local best = math.huge
  for _ = 1, reps or 3 do
    local t0 = lmp.time()
    fn()
    local dt = lmp.time() - t0
    if dt < best then best = dt end
  end
  return best
end

--- Runs a Python snippet (python3 -c) and returns its stdout as a number
-- (the snippet prints one number) or nil.
function R.python(code)
  local f = io.popen("python3 -c " .. string.format("%q", code):gsub("\\\n", "\n"))
  local out = f:read("*a")
  f:close()
  return tonumber(out:match("[-%d%.eE+]+"))
end

--- Prints "what | lmp V unit | python P unit | ratio R" where ratio says
-- how many times better lmp is (>1 = lmp better) for `better` = "higher"
-- or "lower". goal is free text ("goal >= 3x").
function R.line(what, lmp_v, py_v, unit, better, goal)
  local ratio = "n/a"
  if lmp_v and py_v and lmp_v > 0 and py_v > 0 then
    local r = better == "lower" and py_v / lmp_v or lmp_v / py_v
    ratio = string.format("%.2fx", r)
  end
  local function fmt(v) return v and string.format("%.4g", v) or "n/a" end
  print(string.format("%-46s | lmp %10s %s | python %10s %s | lmp better by %s%s",
    what, fmt(lmp_v), unit, fmt(py_v), unit, ratio,
    goal and ("  (" .. goal .. ")") or ""))
  io.stdout:flush()
end

--- echo(conn): a Process target sending back every value it receives,
-- until it receives false (the round-trip benchmarks' other end).
function R.echo(conn)
  while true do
    local v = conn:recv()
    if v == false then break end
    conn:send(v)
  end
end

return R
