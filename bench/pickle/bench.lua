--- bench/pickle: round trips per second of a list of 1,000 records with 5
-- mixed fields (int, float, short string, bool, array of 3 ints).
local R = require "report"
local pickle = require "lmp.pickle"
local cjson = require "cjson"

local function records(float_of)
  local list = {}
  for i = 1, 1000 do
    list[i] = {id = i, price = float_of(i), name = "item" .. i,
               active = i % 2 == 0, dims = {i, i * 2, i * 3}}
  end
  return list
end

-- rate(fn): round trips per second, best of 5 runs of n round trips
local function rate(fn, n)
  n = n or 200
  local secs = R.time(function() for _ = 1, n do fn() end end, 5)
  return n / secs
end

local PY = [[
import json, pickle, time
data = [{"id": i, "price": %s, "name": "item%%d" %% i, "active": i %% 2 == 0,
         "dims": [i, i * 2, i * 3]} for i in range(1, 1001)]
def rate(fn, n=200):
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n): fn()
        best = min(best, time.perf_counter() - t)
    return n / best
print(rate(lambda: %s))
]]

local function python(float_expr, rt_expr)
  return R.python(string.format(PY, float_expr, rt_expr))
end

local function run(label, float_of, py_float)
  local data = records(float_of)
  assert(require("helper_eq")(pickle.loads(pickle.dumps(data)), data), "json round trip changed the data")
  assert(require("helper_eq")(pickle.loads(pickle.dumps(data, {format = "binary"})), data), "binary round trip changed the data")
  local dumps, loads = pickle.dumps, pickle.loads
  local bopts = {format = "binary"}
  local json_rt = rate(function() loads(dumps(data)) end)
  local bin_rt = rate(function() loads(dumps(data, bopts)) end, 1000)
  local cj_rt = rate(function() cjson.decode(cjson.encode(data)) end)
  local py_json = python(py_float, "json.loads(json.dumps(data))")
  local py_pickle = python(py_float, "pickle.loads(pickle.dumps(data))")
  R.line("pickle JSON round trip, " .. label, json_rt, py_json, "rt/s", "higher",
    "goal > 1x Python json")
  R.line("pickle binary round trip, " .. label, bin_rt, py_pickle, "rt/s", "higher",
    "goal >= 2x Python pickle")
  print(string.format("%-46s | lmp JSON %8.4g rt/s | plain cjson %8.4g rt/s | layer overhead %.0f%%  (goal <= 30%%)",
    "pickle JSON layer vs plain cjson, " .. label, json_rt, cj_rt, (cj_rt / json_rt - 1) * 100))
  print(string.format("%-46s | JSON %d bytes | binary %d bytes | cjson %d bytes", "sizes, " .. label,
    #dumps(data), #dumps(data, bopts), #cjson.encode(data)))
  io.stdout:flush()
end

run("1000 records", function(i) return i + 0.25 end, "i + 0.25")
run("1000 records, 17-digit floats", function(i) return i / 7 end, "i / 7")
