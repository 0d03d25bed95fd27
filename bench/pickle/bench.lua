--- bench/pickle: round trips per second of lmp.pickle on a dozen shapes of
-- data, each against its floors and against Python, all in one run:
--   lmp JSON round trip      pickle.loads(pickle.dumps(v))
--   plain cjson round trip   cjson.decode(cjson.encode(v)) (lossy: the floor
--                            of the JSON path; n/a where cjson cannot encode v)
--   lmp binary round trip    pickle.loads(pickle.dumps(v, {format = "binary"}))
--   binary loads alone       pickle.loads(s)
--   Lua constructors         the time Lua takes to build v from scratch (a chunk
--                            of table constructors compiled once; a loop for
--                            the graph and the closures): the floor of any decoder
--   C API floor              the Lua C API calls that build v and nothing else
--                            (api_floor.c: a push and a rawseti per item), the
--                            floor of any decoder written in C; and a bare walk
--                            of v (lua_next per key, numbers and strings copied
--                            into a buffer), the floor of any encoder
--   Python json / pickle     round trips of the same data in one python3 process
-- Every figure: best of 5 samples, each sample long enough (>= 50 ms); the
-- samples of one shape's Lua figures are taken in turn (round robin).
-- Usage: bash bench/pickle/run.sh [substring of a shape's name]
local R = require "report"
local lmp = require "lmp"
local pickle = require "lmp.pickle"
local cjson = require "cjson"
local eq = require "helper_eq"
local has_floor, F = pcall(require, "api_floor")
if not has_floor then F = nil end
local iso = require "helper_iso"

local only = arg and arg[1]
local MIN_SAMPLE = tonumber(os.getenv("PICKLE_BENCH_MIN_SAMPLE") or "") or 0.05
local SAMPLES = 5
local now = lmp.time
local loadstr = loadstring or load
local mtype = math.type
local fmt = string.format

-- rates(fns): calls per second of each fns[i] (nil where fns[i] is nil),
-- best of SAMPLES samples of n calls, n grown per function until one sample
-- takes >= MIN_SAMPLE (that sample counts). The samples of the functions
-- are taken in turn (round robin), so that on a noisy machine the figures
-- one compares come from the same stretch of time.
local function rates(fns, count)
  local n, best = {}, {}
  local function sample(i)
    collectgarbage()
    local fn, k = fns[i], n[i]
    local t0 = now()
    for _ = 1, k do fn() end
    return now() - t0
  end
  for i = 1, count do
    if fns[i] then
      fns[i]()  -- warm up
      n[i] = 1
      while true do
        local dt = sample(i)
        if dt >= MIN_SAMPLE then best[i] = dt; break end
        local want = math.ceil(n[i] * MIN_SAMPLE * 1.15 / math.max(dt, 1e-7))
        n[i] = math.max(n[i] * 2, math.min(want, n[i] * 100))
      end
    end
  end
  for _ = 2, SAMPLES do
    for i = 1, count do
      if fns[i] then best[i] = math.min(best[i], sample(i)) end
    end
  end
  collectgarbage()
  local r = {}
  for i = 1, count do r[i] = fns[i] and n[i] / best[i] or nil end
  return r
end

-- Lua source of a tree value (a table constructor), for the floor.
local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil
  not or repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end
local function num_src(v)
  if mtype and mtype(v) == "integer" then return fmt("%d", v) end
  assert(v == v and v ~= math.huge and v ~= -math.huge, "num_src: nan/inf")
  local s = fmt("%.17g", v)
  if mtype and not s:find("[%.eEn]") then s = s .. ".0" end  -- stays a float
  return s
end
local function src(v, out)
  local t = type(v)
  if t == "number" then out[#out + 1] = num_src(v)
  elseif t == "string" then out[#out + 1] = fmt("%q", v)
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "table" then
    out[#out + 1] = "{"
    local n = #v
    for i = 1, n do src(v[i], out); out[#out + 1] = "," end
    for k, x in pairs(v) do
      local is_seq = type(k) == "number" and k >= 1 and k <= n and k % 1 == 0
      if not is_seq then
        if type(k) == "string" and k:match("^[%a_][%w_]*$") and not KEYWORDS[k] then
          out[#out + 1] = k .. "="
        else
          out[#out + 1] = "["; src(k, out); out[#out + 1] = "]="
        end
        src(x, out); out[#out + 1] = ","
      end
    end
    out[#out + 1] = "}"
  else error("src: cannot write a " .. t) end
  return out
end
-- constructor(v): a function building a fresh copy of tree value v with
-- table constructors (compiled once). nil if the chunk does not compile
-- (limits of some Lua); the shape then gives its own builder.
local function constructor(v)
  local code = "return " .. table.concat(src(v, {}))
  local f = loadstr(code, "=ctor")
  return f
end

---------------------------------------------------------------- the shapes
-- Each shape: name, build() -> value, py = Python code setting `data` to the
-- same value, and optionally ctor (a builder; default: constructor(build())),
-- check (default helper_eq), py_note (when Python's data is a stand-in).
local function records(float_of)
  local list = {}
  for i = 1, 1000 do
    list[i] = {id = i, price = float_of(i), name = "item" .. i,
               active = i % 2 == 0, dims = {i, i * 2, i * 3}}
  end
  return list
end
local function py_records(float_expr)
  return 'data = [{"id": i, "price": ' .. float_expr .. ', "name": "item%d" % i, '
    .. '"active": i % 2 == 0, "dims": [i, i * 2, i * 3]} for i in range(1, 1001)]'
end
local function flat(f)
  return function()
    local t = {}
    for i = 1, 100000 do t[i] = f(i) end
    return t
  end
end

-- graph(cluster): 1000 nodes {id, next, peers = {3 nodes}}. cluster = 1000:
-- one ring (next = node i + 1, peers anywhere): a depth-first writer nests
-- ~2000 levels deep, past MAX_DEPTH. cluster = 10: rings of 10 nodes, peers
-- in the node's own ring or an earlier one, so the nesting stays shallow.
local function graph(cluster)
  return function()
    local nodes = {}
    for i = 1, 1000 do nodes[i] = {id = i, next = false, peers = false} end
    for i = 1, 1000 do
      local n = nodes[i]
      local k, j = math.floor((i - 1) / cluster), (i - 1) % cluster
      local lim = cluster * k + cluster
      n.next = nodes[cluster * k + (j + 1) % cluster + 1]
      n.peers = {nodes[(i * 7) % lim + 1], nodes[(i * 13) % lim + 1], nodes[(i * 31) % lim + 1]}
    end
    return nodes
  end
end
local function py_graph(cluster)
  return fmt([==[
C = %d
nodes = [{"id": i} for i in range(1, 1001)]
for i in range(1, 1001):
    n = nodes[i - 1]
    k, j = (i - 1) // C, (i - 1) %% C
    lim = C * k + C
    n["next"] = nodes[C * k + (j + 1) %% C]
    n["peers"] = [nodes[(i * 7) %% lim], nodes[(i * 13) %% lim], nodes[(i * 31) %% lim]]
data = nodes]==], cluster)
end

-- fresh_strings(list): a builder of the list whose strings are made anew
-- (string.sub of one buffer) rather than taken from a chunk's constants.
local function fresh_strings(list)
  local buf = table.concat(list)
  local out, pos = {"local sub, b = string.sub, ...\nreturn {"}, 1
  for _, s in ipairs(list) do
    out[#out + 1] = fmt("sub(b,%d,%d),", pos, pos + #s - 1)
    pos = pos + #s
  end
  out[#out + 1] = "}"
  local f = assert(loadstr(table.concat(out), "=fresh"))
  return function() return f(buf) end
end

local function closures()
  local shared = {n = 0}
  local list = {}
  for i = 1, 1000 do
    list[i] = function() shared.n = shared.n + 1; return shared.n end
  end
  return list
end

local SHAPES = {
  {name = "1000 records (i + 0.25)", build = function() return records(function(i) return i + 0.25 end) end,
   py = py_records("i + 0.25")},
  {name = "1000 records, integral floats (i * 0.5)", build = function() return records(function(i) return i * 0.5 end) end,
   py = py_records("i * 0.5")},
  {name = "1000 records, 17-digit floats (i / 7)", build = function() return records(function(i) return i / 7 end) end,
   py = py_records("i / 7")},
  {name = "100k integers", build = flat(function(i) return i end),
   py = "data = list(range(1, 100001))"},
  {name = "100k floats (i + 0.5)", build = flat(function(i) return i + 0.5 end),
   py = "data = [i + 0.5 for i in range(1, 100001)]"},
  {name = "100k floats, 17-digit (i / 3)", build = flat(function(i) return i / 3 end),
   py = "data = [i / 3 for i in range(1, 100001)]"},
  {name = "200x200 matrix of floats", build = function()
     local m = {}
     for r = 1, 200 do
       local row = {}
       for c = 0, 199 do row[c + 1] = r + (c + 0.5) / 256 end
       m[r] = row
     end
     return m
   end,
   py = "data = [[r + (c + 0.5) / 256 for c in range(200)] for r in range(1, 201)]"},
  {name = "dict of 20k string keys -> ints", build = function()
     local d = {}
     for i = 1, 20000 do d["key" .. i] = i end
     return d
   end,
   py = 'data = {"key%d" % i: i for i in range(1, 20001)}'},
  {name = "10k short strings (8-16 bytes)", build = function()
     local t = {}
     for i = 1, 10000 do t[i] = fmt("s%07d", i) .. ("abcdefgh"):sub(1, i % 9) end
     return t
   end,
   fresh = fresh_strings,
   py = 'data = ["s%07d" % i + "abcdefgh"[:i % 9] for i in range(1, 10001)]'},
  {name = "100 strings of 10 KB", build = function()
     local t = {}
     for i = 1, 100 do
       t[i] = fmt("the quick brown fox jumps over the lazy dog %d. ", i):rep(300):sub(1, 10240)
     end
     return t
   end,
   fresh = fresh_strings,
   py = 'data = [(("the quick brown fox jumps over the lazy dog %d. " % i) * 300)[:10240] for i in range(1, 101)]'},
  {name = "16 x 64 KiB of bytes, not UTF-8", build = function()
     local t = {}
     for i = 1, 16 do
       local b = {}
       for j = 1, 256 do b[j] = string.char((i * 7 + j * 13) % 256) end
       t[i] = table.concat(b):rep(256)          -- JSON: base64 in a tagged leaf
     end
     return t
   end,
   fresh = fresh_strings,
   py_note = "python json: n/a (bytes); pickle: the same bytes",
   py = 'data = [bytes((i * 7 + j * 13) % 256 for j in range(1, 257)) * 256 for i in range(1, 17)]'},
  {name = "graph: 1000 nodes in rings of 10", build = graph(10), ctor = graph(10), check = iso,
   py = py_graph(10)},
  {name = "graph: 1000 nodes in one ring (deep)", build = graph(1000), ctor = graph(1000), check = iso,
   py = py_graph(1000)},
  {name = "1000 closures sharing one upvalue", build = closures, ctor = closures, check = iso,
   py_note = "python: 1000 objects of one class sharing one dict",
   py = [==[
class Obj:
    def __init__(self, shared):
        self.shared = shared
shared = {"n": 0}
data = [Obj(shared) for _ in range(1000)]]==]},
}

---------------------------------------------------------------- Python side
local PY_PRELUDE = [[
import json, pickle, time, math
MIN = %s
def rates(fns):
    # like rates() in bench.lua: calibrate each, then samples in turn
    n, best = {}, {}
    def sample(i):
        fn, k = fns[i], n[i]
        t = time.perf_counter()
        for _ in range(k): fn()
        return time.perf_counter() - t
    for i, fn in enumerate(fns):
        try:
            fn()
        except Exception:
            continue
        n[i] = 1
        while True:
            dt = sample(i)
            if dt >= MIN:
                best[i] = dt
                break
            n[i] = max(n[i] * 2, min(int(n[i] * MIN * 1.15 / max(dt, 1e-7)) + 1, n[i] * 100))
    for _ in range(4):
        for i in best:
            best[i] = min(best[i], sample(i))
    return [n[i] / best[i] if i in best else math.nan for i in range(len(fns))]
]]
local PY_TAIL = [[

try:
    s = pickle.dumps(data)
except Exception:
    s = None
def pickle_loads():
    if s is None: raise ValueError("no pickle")
    pickle.loads(s)
print(*rates([lambda: json.loads(json.dumps(data)), lambda: pickle.loads(pickle.dumps(data)),
              pickle_loads]))
]]

-- python(code) -> json_rt, pickle_rt, pickle_loads (nil where n/a)
local function python(code)
  local full = fmt(PY_PRELUDE, tostring(MIN_SAMPLE)) .. code .. PY_TAIL
  local f = io.popen("python3 -c '" .. full:gsub("'", "'\\''") .. "' 2>&1")
  local out = f:read("*a")
  f:close()
  local v = {}
  for w in out:gmatch("%S+") do
    if w == "nan" then v[#v + 1] = false else v[#v + 1] = tonumber(w) end
  end
  if #v ~= 3 then
    io.stderr:write("python failed: " .. out .. "\n")
    return nil, nil, nil
  end
  return v[1] or nil, v[2] or nil, v[3] or nil  -- nan (false) = n/a
end

---------------------------------------------------------------- run
local function num(v) return v and fmt("%.4g", v) or "n/a" end
-- a report line against a Lua floor, in the style of R.line
local function floor_line(what, a_label, a, b_label, b, verdict)
  print(fmt("%-46s | %s %10s rt/s | %s %10s rt/s | %s", what, a_label, num(a), b_label, num(b), verdict))
  io.stdout:flush()
end

local summary = {}
local dumps, loads = pickle.dumps, pickle.loads
local bopts = {format = "binary"}
local t_start = now()
print(fmt("lmp.pickle on %s%s; samples >= %g ms, best of %d", _VERSION,
  rawget(_G, "jit") and (" (" .. jit.version .. ")") or "", MIN_SAMPLE * 1000, SAMPLES))

for _, shape in ipairs(SHAPES) do
  if not only or shape.name:find(only, 1, true) then
    print("== " .. shape.name .. (shape.py_note and ("  [" .. shape.py_note .. "]") or ""))
    local data = shape.build()
    local check = shape.check or eq
    -- exact round trips through lmp first
    local ok_json, why_json, ok_bin, why_bin
    local okj, sj = pcall(dumps, data)
    if okj then okj, sj = pcall(loads, sj) end
    if okj then ok_json, why_json = check(sj, data) else ok_json, why_json = false, tostring(sj) end
    local okb, sb = pcall(dumps, data, bopts)
    if okb then okb, sb = pcall(loads, sb) end
    if okb then ok_bin, why_bin = check(sb, data) else ok_bin, why_bin = false, tostring(sb) end
    if not ok_json then print("  JSON ROUND TRIP FAILED: " .. tostring(why_json)) end
    if not ok_bin then print("  BINARY ROUND TRIP FAILED: " .. tostring(why_bin)) end
    sj, sb = nil, nil
    -- the floor: a builder, checked to build the same value
    local ctor = shape.ctor or constructor(data)
    local ctor_note = shape.ctor and "loop" or "constructors"
    if not ctor then ctor = shape.build; ctor_note = "build loop" end
    local okc, whyc = check(ctor(), data)
    if not okc then print("  (the floor builder does not build the same value: " .. tostring(whyc) .. ")") end

    if not ok_json and not ok_bin then
      print("  (not timed: lmp cannot round-trip this shape)")
      summary[#summary + 1] = {shape.name, refused = true}
    else
      local cj_ok = pcall(function() return cjson.decode(cjson.encode(data)) end)
      local bs = ok_bin and dumps(data, bopts)
      local fresh
      if shape.fresh then
        fresh = shape.fresh(data)
        local okf, whyf = check(fresh(), data)
        if not okf then print("  (the fresh-strings builder does not build the same value: " .. tostring(whyf) .. ")") end
      end
      local tp, nshared = nil, nil
      if F then tp, nshared = F.tape(data) end
      if tp and not check(F.replay(tp), data) then tp = nil end
      local tree = tp and nshared == 0     -- the bare walk keeps no memo
      local r = rates({
        ok_json and function() loads(dumps(data)) end or nil,
        cj_ok and function() cjson.decode(cjson.encode(data)) end or nil,
        ok_bin and function() loads(dumps(data, bopts)) end or nil,
        ok_bin and function() loads(bs) end or nil,
        ctor,
        fresh,
        tp and function() F.replay(tp) end or nil,
        ok_bin and function() dumps(data, bopts) end or nil,
        tree and function() F.walk(data) end or nil}, 9)
      local json_rt, cj_rt, bin_rt, bin_loads, ctor_rt, fresh_rt, api_rt = r[1], r[2], r[3], r[4], r[5], r[6], r[7]
      local bin_dumps, walk_rt = r[8], r[9]
      local py_json, py_pickle, py_ploads = python(shape.py)

      R.line("JSON rt vs Python json", json_rt, py_json, "rt/s", "higher", "goal > 1x")
      local ovh = json_rt and cj_rt and (cj_rt / json_rt - 1) * 100
      floor_line("JSON layer vs plain cjson", "lmp JSON", json_rt, "plain cjson", cj_rt,
        ovh and fmt("layer overhead %.0f%%  (goal <= 30%%)", ovh) or "n/a (cjson cannot encode this)")
      R.line("binary rt vs Python pickle", bin_rt, py_pickle, "rt/s", "higher", "goal >= 1x")
      local lr = bin_loads and ctor_rt / bin_loads
      floor_line("binary loads vs Lua " .. ctor_note, "lmp loads", bin_loads, "Lua build", ctor_rt,
        lr and fmt("loads takes %.2fx the build  (goal <= 1.25x)", lr) or "n/a")
      local ar = bin_loads and api_rt and api_rt / bin_loads
      floor_line("binary loads vs C API floor", "lmp loads", bin_loads, "API calls", api_rt,
        ar and fmt("loads takes %.2fx the calls it must make", ar) or "n/a (not plain data)")
      local wr = bin_dumps and walk_rt and walk_rt / bin_dumps
      floor_line("binary dumps vs C API walk", "lmp dumps", bin_dumps, "API walk", walk_rt,
        wr and fmt("dumps takes %.2fx a bare walk", wr) or "n/a (not a tree of plain data)")
      local fr = bin_loads and fresh_rt and fresh_rt / bin_loads
      if fresh_rt then
        floor_line("  (same, strings made anew by string.sub)", "lmp loads", bin_loads, "Lua build", fresh_rt,
          fr and fmt("loads takes %.2fx the build  (constants above are not copied)", fr) or "n/a")
      end
      print(fmt("%-46s | JSON %s | binary %s | cjson %s bytes | python pickle.loads %s /s", "sizes",
        ok_json and tostring(#dumps(data)) or "n/a", ok_bin and tostring(#bs) or "n/a",
        cj_ok and tostring(#cjson.encode(data)) or "n/a", num(py_ploads)))
      summary[#summary + 1] = {shape.name .. (shape.py_note and " *" or ""),
        json_rt and py_json and json_rt / py_json, ovh,
        bin_rt and py_pickle and bin_rt / py_pickle, lr, fresh = fr, api = ar}
    end
    io.stdout:flush()
    data, ctor = nil, nil
    collectgarbage()
  end
end

print()
print("== summary (JSON/py json: >1 = lmp faster; layer: % slower than plain cjson;")
print("   bin/py pickle: >1 = lmp faster; loads/build: binary loads time / Lua build time;")
print("   loads/API: binary loads time / the time of the C API calls it must make)")
print(fmt("%-46s | %12s | %10s | %14s | %11s | %9s", "shape", "JSON/py json", "layer ovh", "bin/py pickle", "loads/build", "loads/API"))
local function r(v, goal_ok)
  if not v then return "n/a" end
  return fmt("%.2fx%s", v, goal_ok(v) and " " or "!")
end
local fresh = {}
for _, s in ipairs(summary) do
  if s.refused then
    print(fmt("%-46s | %s", s[1], "refused by lmp (both forms): not timed"))
  else
    print(fmt("%-46s | %12s | %10s | %14s | %11s | %9s", s[1],
      r(s[2], function(v) return v > 1 end),
      s[3] and fmt("%.0f%%%s", s[3], s[3] <= 30 and " " or "!") or "n/a",
      r(s[4], function(v) return v >= 1 end),
      s.fresh and (r(s.fresh, function(v) return v <= 1.25 end) .. "s") or r(s[5], function(v) return v <= 1.25 end),
      s.api and fmt("%.2fx", s.api) or "n/a"))
    if s.fresh then fresh[#fresh + 1] = fmt("%s %.2fx", s[1], s[5]) end
  end
end
print("('!' = misses its goal: JSON > 1x, layer <= 30%, binary >= 1x, loads <= 1.25x the build;")
print(" '*' = Python ran a stand-in, see the shape's header)")
if #fresh > 0 then
  print("'s' = against a build that makes its strings anew (string.sub); against the constructors,")
  print("  whose strings are the chunk's constants (never copied): " .. table.concat(fresh, "; "))
end
print(fmt("total %.1f s", now() - t_start))
