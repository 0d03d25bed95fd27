-- make check-mem: drives every binding once under valgrind (see
-- spec/memcheck.sh). Each section exercises create, use, error paths and
-- close of one concept; a section whose module is not built yet is named.
local lmp = require "lmp"

local function section(name, fn)
  local ok, err = pcall(fn)
  if not ok then
    io.stderr:write("memcheck section ", name, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
  print("ok " .. name)
end

section("errors", function()
  local e = lmp.error("timeout", "x", {index = 1})
  assert(lmp.is_error(e, "timeout") and tostring(e) == "timeout: x")
end)

section("pickle", function()
  local p = lmp.pickle
  local t = {1, 2.5, "s\0x", {a = {true, false}}, [10] = -0.0, big = 2^60}
  t.self = t
  for _, fmt in ipairs{"json", "binary"} do
    for _ = 1, 50 do
      local s = p.dumps(t, {format = fmt})
      local u = p.loads(s)
      assert(u.self == u and u[3] == "s\0x")
      -- truncated input must fail cleanly
      assert(not pcall(p.loads, s:sub(1, #s // 2)))
    end
    local k = 3
    local f = p.loads(p.dumps(function(x) return x + k end, {format = fmt}))
    assert(f(1) == 4)
  end
  assert(not pcall(p.dumps, coroutine.create(function() end)))
  -- one-walk tables with counts that outgrow their slot, slices, loads_into
  local big, holes = {}, {1, nil, 3}
  for i = 300, 1, -1 do big[i] = i end
  big.k = {x = 1}
  for _, fmt in ipairs{"json", "binary"} do
    local u = p.loads(p.dumps(big, {format = fmt}))
    assert(u[300] == 300 and u.k.x == 1)
    local sl = p.slice_encoder(fmt)(big, 2, 299, "args")
    local out = {}
    p.loads_into(sl, out, 10, 298)
    assert(out[11] == 2 and out[308] == 299)
    p.loads_into(p.dumps(holes, {format = fmt}), out, 0, 3)
    assert(out[1] == 1 and out[2] == nil and out[3] == 3)
    assert(p.loads(p.encoder(fmt)({lmp, {1}}))[1] == lmp)
  end
  assert(not pcall(p.loads_into, p.dumps({1, 2}, {format = "binary"}), {}, 0, 1))
  -- plain JSON without cjson (lpickle_json.c): escapes, floats, tagged
  -- leaves, records, a big list as lmp.Bytes, damaged text, a chunk that
  -- says more than it holds
  local flat = {"a/b\"c\1", 0.5, -1.25e-07, 12345678901234, "é", "\1tag", "\255raw/"}
  for i = 8, 20000 do flat[i] = i % 7 == 0 and "item" .. i or (2 * i + 1) / 16 end
  local s = p.dumps(flat)
  assert(p.loads(s)[2] == 0.5 and p.loads(s)[20000] == 40001 / 16 and p.loads(s)[7] == "\255raw/")
  local b = p.list_encoder("json")(flat, #flat)
  local out = {}
  p.loads_into(b, out, 0, #flat)
  assert(out[3] == -1.25e-07 and out[7] == "\255raw/" and out[14] == "item14")
  b:free()
  local recs = {}
  for i = 1, 500 do recs[i] = {id = i, w = i * 0.5, r = i / 7, big = 2 ^ 60, s = "x\n" .. i, sub = {i, {}}} end
  local rs = p.dumps(recs)
  assert(p.loads(rs)[500].r == 500 / 7 and p.loads(rs)[2].w == 1.0)
  for i = 1, 300 do
    assert(pcall(p.loads, s:sub(1, i) .. "x" .. s:sub(i + 2, 400) .. "]") ~= nil)
    assert(pcall(p.loads, rs:sub(1, i) .. "\\" .. rs:sub(i + 2, 600) .. "}]") ~= nil)
  end
  local C = require("lmp.c.pickle")
  assert(not C.jsonload("[1,2,3]", {}, 0, 2))
  assert(C.jsonload('["\\u0001i12345678901234567"]')[1] == 12345678901234567)
end)

section("pipe", function()
  local a, b = lmp.Pipe()
  for i = 1, 20 do a:send({i, "x"}); assert(b:recv(5)[1] == i) end
  a:send_bytes(string.rep("z", 100000)); assert(#b:recv_bytes(5) == 100000)
  assert(not pcall(b.recv, b, 0.01))
  local r, w = lmp.Pipe{duplex = false}
  r:close()
  assert(not pcall(w.send, w, "x", 1))
  a:close(); b:close(); w:close()
end)

section("process", function()
  local a, b = lmp.Pipe()
  local p = lmp.Process{target = function(c) c:send(lmp.current_process().name) end, args = {a}}
  p:start()
  assert(b:recv(30) == p.name)
  assert(p:join(30) and p.exitcode == 0)
  p:close()
end)

section("pool", function()
  local bpool = lmp.Pool{processes = 2, codec = "binary"}
  local list = {}
  for i = 1, 5000 do list[i] = i end
  local br = bpool:map(function(x) return x % 3 ~= 0 and x or nil end, list)
  assert(br[1] == 1 and br[3] == nil and br[5000] == 5000)
  local n = 0
  for _ in bpool:imap_unordered(function(x) return x end, list, 7) do n = n + 1 end
  assert(n == 5000)
  -- big chunks: the encoder's buffer handed over as lmp.Bytes and freed
  -- once sent, both ways; and JSON's big strings carried raw
  local big = {string.rep("a", 100000), 7, string.rep("\200", 70000)}
  local echo = function(x) return x end
  local bb = bpool:map(echo, big)
  assert(bb[1] == big[1] and bb[2] == 7 and bb[3] == big[3])
  bpool:close()
  assert(bpool:join(60))
  local pool = lmp.Pool{processes = 2}
  local r = pool:map(function(x) return x * 2 end, {1, 2, 3, 4})
  assert(r[4] == 8)
  local jb = pool:map(echo, big)
  assert(jb[1] == big[1] and jb[2] == 7 and jb[3] == big[3])
  assert(not pcall(pool.apply, pool, function() error("x") end))
  pool:close()
  assert(pool:join(60))
end)

section("manager", function()
  -- The server runs here (traced); clients run in a child.
  local key = "memcheck key"
  local r, w = lmp.Pipe{duplex = false}
  local p = lmp.Process{target = function()
    local addr = r:recv(60)
    local bad = lmp.BaseManager{address = addr, authkey = "wrong"}
    assert(not pcall(bad.connect, bad))
    local c = lmp.Manager{address = addr, authkey = key}
    c:connect()
    local d, q = c:dict(), c:Queue()
    for i = 1, 20 do d:set(i, {i, "x"}) assert(d:get(i)[1] == i) end
    assert(not pcall(q.get, q, 0.05))
    q:put("item")
    assert(q:get(5) == "item")
    assert(not pcall(d.set, d, "f", function() end))
    c:shutdown()
  end}
  p:start()
  local m = lmp.Manager{address = {"127.0.0.1", 0}, authkey = key}
  m:serve_forever(function(addr) w:send(addr) end)
  assert(p:join(60) and p.exitcode == 0)
  r:close(); w:close()
end)

for _, extra in ipairs(arg or {}) do dofile(extra) end
