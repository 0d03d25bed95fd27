-- lmp.Value, lmp.Array and lmp.shared_memory.
local lmp = require "lmp"
local S = require "helpers.sync"

local types = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "float", "double"}

describe("lmp.Value", function()
  it("holds every C number type, with get/set/add and the value field", function()
    for _, ty in ipairs(types) do
      local v = lmp.Value(ty, 7)
      assert.equal(7, v:get())
      v:set(9)
      assert.equal(9, v.value)
      assert.equal(12, v:add(3))
      v.value = 1
      assert.equal(1, v:get())
      assert.equal(ty, v:type())
    end
    assert.equal(1.5, lmp.Value("double", 1.5):get())
    assert.equal(0, lmp.Value("int32"):get())
    assert.equal(-128, lmp.Value("int8", -128):get())
    assert.equal(255, lmp.Value("uint8", 255):get())
    assert.equal(5, lmp.Value("i", 5):get())       -- Python type codes
  end)

  it("wraps like C on add and refuses out-of-range or wrong-typed sets", function()
    local v = lmp.Value("int8", 127)
    assert.equal(-128, v:add(1))
    assert.error_matches(function() v:set(128) end, "int8")
    assert.error_matches(function() v:set(1.5) end, "int8")
    assert.has_error(function() v:set("x") end)
    assert.has_error(function() lmp.Value("uint16", -1) end)
    assert.error_matches(function() lmp.Value("int128", 0) end, "unknown type")
    assert.error_matches(function() v.other = 1 end, "'value'")
  end)

  it("has a lock (RLock by default), a given one, or none", function()
    local v = lmp.Value("int64", 0)
    assert.matches("^lmp.RLock", tostring(v:get_lock()))
    local l = lmp.Lock()
    assert.equal(l, lmp.Value("int64", 0, l):get_lock())
    assert.is_nil(lmp.Value("int64", 0, false).get_lock)   -- raw: no get_lock, as in Python
    assert.has_error(function() lmp.Value("int64", 0, "lock") end)
  end)

  for _, method in ipairs(S.methods) do
    it("adds atomically from 4 processes: 4 x 10,000 add(1) give 40,000 (" .. method .. ")", function()
      local t = S.run([==[
local v, d, w = lmp.Value("int64", 0), lmp.Value("double", 0), lmp.Value("int32", 0)
local ps = {}
for i = 1, 4 do
  ps[i] = ctx.Process{target = function(a, b, c)
    for _ = 1, 10000 do a:add(1); b:add(0.5) end
    local l = c:get_lock()
    for _ = 1, 1000 do l:acquire(); c.value = c.value + 1; l:release() end
  end, args = {v, d, w}}
  ps[i]:start()
end
for i = 1, 4 do ps[i]:join(20) end
out("v", v.value) out("d", d.value) out("w", w.value)
]==], method)
      assert.equal("40000", t.v)
      assert.equal("4000", t.w)
      assert.equal(20000, tonumber(t.d))
    end)
  end
end)

describe("lmp.Array", function()
  it("indexes from 1 with bounds checks, has a length and a table copy", function()
    local a = lmp.Array("int32", 3)
    assert.equal(3, #a)
    assert.same({0, 0, 0}, a:totable())
    a[1] = 5; a[3] = -2
    assert.same({5, 0, -2}, a:totable())
    assert.equal(5, a:get(1))
    a:set(2, 4)
    assert.equal(6, a:add(2, 2))
    assert.error_matches(function() return a[0] end, "out of range")
    assert.error_matches(function() return a[4] end, "out of range")
    assert.error_matches(function() a[4] = 1 end, "out of range")
    assert.error_matches(function() a[1.5] = 1 end, "out of range")
    assert.error_matches(function() a.x = 1 end, "must be a number")
    assert.is_nil(a.nothing)
  end)

  it("is built from a list, checked before anything is created", function()
    local a = lmp.Array("double", {1.5, 2, 3})
    assert.same({1.5, 2, 3}, a:totable())
    assert.has_error(function() lmp.Array("uint8", {1, 300}) end)
    assert.has_error(function() lmp.Array("double", -1) end)
    assert.equal(0, #lmp.Array("int8", 0))
  end)

  for _, method in ipairs(S.methods) do
    it("is shared with child processes (" .. method .. ")", function()
      local t = S.run([==[
local a = lmp.Array("double", 8)
local ps = {}
for i = 1, 4 do
  ps[i] = ctx.Process{target = function(arr, k)
    for _ = 1, 1000 do arr:add(k, 1) end
    arr[k + 4] = k * 1.5
  end, args = {a, i}}
  ps[i]:start()
end
for i = 1, 4 do ps[i]:join(20) end
out("a", table.concat(a:totable(), ","))
]==], method)
      assert.equal("1000,1000,1000,1000,1.5,3,4.5,6",
        t.a:gsub("%.0([,$])", "%1"):gsub("%.0$", ""))
    end)
  end
end)

-- Python's multiprocessing.sharedctypes: RawValue, RawArray and lock=False.
describe("lmp.RawValue, lmp.RawArray and {lock = false}", function()
  it("make objects without a lock: no get_lock, like Python's raw ctypes objects", function()
    local v, a = lmp.RawValue("int32", 5), lmp.RawArray("double", {1.5, 2})
    assert.equal(5, v.value)
    assert.same({1.5, 2}, a:totable())
    assert.equal(0, lmp.RawValue("d").value)
    assert.equal(3, #lmp.RawArray("i", 3))
    for _, o in ipairs{v, a, lmp.Value("i", 1, {lock = false}), lmp.Array("i", 2, {lock = false})} do
      assert.is_nil(o.get_lock)
      assert.matches("^lmp%.Raw", tostring(o))
    end
    assert.equal("lmp.RawValue(int32, 5)", tostring(v))
    assert.equal(7, v:add(2))                      -- add stays atomic
    -- {lock = true | a lock} in the options table, like Python's lock=
    assert.matches("^lmp.RLock", tostring(lmp.Value("i", 1, {lock = true}):get_lock()))
    local l = lmp.Lock()
    assert.equal(l, lmp.Array("i", 2, {lock = l}):get_lock())
    assert.matches("^lmp.RLock", tostring(lmp.Value("i", 1, {}):get_lock()))
    assert.error_matches(function() lmp.Value("i", 1, {lock = "x"}) end, "lock must be")
    assert.error_matches(function() lmp.RawValue("int128") end, "unknown type")
    assert.has_error(function() lmp.RawArray("uint8", {1, 300}) end)
  end)

  for _, method in ipairs(S.methods) do
    it("are shared with a child process and stay raw there (" .. method .. ")", function()
      local t = S.run([==[
local v, a = lmp.RawValue("int64", 1), lmp.RawArray("double", 3)
local p = ctx.Process{target = function(rv, ra)
  rv.value = rv.value + 41
  ra[2] = 2.5
  ra[3] = rv.get_lock == nil and ra.get_lock == nil and 1 or -1
end, args = {v, a}}
p:start()
p:join(20)
out("v", v.value)
out("a", table.concat(a:totable(), ","))
out("code", p.exitcode)
out("pid", lmp.current_process().pid)
v:close(); a:close()
]==], method)
      assert.equal("42", t.v)
      assert.equal("0,2.5,1", t.a:gsub("%.0([,$])", "%1"):gsub("%.0$", ""))
      assert.equal("0", t.code)
      assert.equal(0, S.shm_names(t.pid))
    end)
  end
end)

describe("lmp.shared_memory", function()
  it("creates, attaches by name, reads and writes bytes within bounds", function()
    local m = lmp.shared_memory(64)
    assert.equal(64, m:size())
    assert.matches("^/lmp%.", m:name())
    m:write(0, "hello\0world")
    local m2 = lmp.shared_memory(m:name())
    assert.equal("hello\0world", m2:read(0, 11))
    assert.equal(64, #m2:read(0))
    assert.equal("world", m2:read(6, 5))
    m2:write(60, "abcd")
    assert.equal("abcd", m:read(60))
    assert.error_matches(function() m:write(61, "abcd") end, "past the end")
    assert.error_matches(function() m:read(65) end, "offset out of range")
    assert.error_matches(function() m:read(10, 55) end, "length out of range")
    assert.error_matches(function() m:read(-1) end, "offset out of range")
    m2:close()
    assert.equal("closed", select(2, pcall(m2.read, m2, 0)).kind)
    m:close()
  end)

  it("rejects bad names and sizes, and reports a missing block", function()
    assert.has_error(function() lmp.shared_memory(0) end)
    assert.has_error(function() lmp.shared_memory(1.5) end)
    assert.has_error(function() lmp.shared_memory("no-slash") end)
    local ok, e = pcall(lmp.shared_memory, "/lmp-spec-missing-block")
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "os"))
  end)

  it("shares bytes with an unrelated process by a chosen name, until unlinked", function()
    local name = "/lmp-spec-" .. os.time() .. "-" .. math.random(1e6)
    local m = lmp.shared_memory{name = name, size = 16}
    m:write(0, "ping")
    local t = S.run(([==[
local m = lmp.shared_memory(%q)
out("got", m:read(0, 4))
m:write(4, "pong")
]==]):format(name))
    assert.equal("ping", t.got)
    assert.equal("pong", m:read(4, 4))
    assert.is_true(m:unlink())
    assert.is_false(m:unlink())
    assert.has_error(function() lmp.shared_memory(name) end)
    m:close()
  end)

  it("is unlinked when its creator closes it, unless persist = true", function()
    local m = lmp.shared_memory(8)
    local name = m:name()
    m:close()
    assert.has_error(function() lmp.shared_memory(name) end)
    local p = lmp.shared_memory{size = 8, persist = true}
    name = p:name()
    p:close()
    local again = lmp.shared_memory(name)
    assert.is_true(again:unlink())
    again:close()
  end)
end)
