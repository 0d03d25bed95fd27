-- lmp.pickle: exact round trips of every value rule, both formats.
local lmp = require "lmp"
local H = require "helper"
local G = require "helpers.gen"
local pickle = require "lmp.pickle"

local FORMATS = {"json", "binary"}
local has_int = math.type ~= nil
local has_join = debug.upvalueid ~= nil

local function rt(v, fmt, lopts)
  return pickle.loads(pickle.dumps(v, {format = fmt}), lopts)
end

local function pickle_error(fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok)
  assert.is_true(lmp.is_error(e, "pickle"), "not a pickle error: " .. tostring(e))
  return e.message
end

describe("lmp.pickle", function()
  it("is reachable as lmp.pickle and require 'lmp.pickle'", function()
    assert.equal(pickle, lmp.pickle)
    assert.is_function(pickle.dumps)
    assert.is_function(pickle.loads)
    assert.is_function(pickle.register)
    assert.is_function(pickle.encoder)
  end)

  for _, fmt in ipairs(FORMATS) do
    describe("(" .. fmt .. ")", function()
      it("round-trips a table of edge values exactly", function()
        local edges = {
          true, false, 0, 1, -1, 42, 1e14 - 1, 1e14, -1e14, 2 ^ 53, 2 ^ 53 + 2,
          0.5, 0.1 + 0.2, 1 / 3, -0.0, 0 / 0, math.huge, -math.huge,
          4.9406564584124654e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
          123.456, 1e-7, 1e22, 1e23,
          "", "a", "a\0b", "\0", "\1", "\1t", "\1lmp1", "\255\254\253", "h\195\169llo",
          "\237\160\128", "\192\128", string.rep("x", 5000),
          {}, {{}}, {1, 2, 3}, {a = 1, b = {c = "d"}}, {1, nil, 3}, {nil, nil, 3},
          {[1] = "a", [3] = "c", [1000000] = "far"}, {1, 2, x = 3},
          {[true] = 1, [false] = 0}, {[1.5] = "f", [-2] = "neg", [0] = "zero"},
          {[{1}] = "table key"}, {["\1k"] = 1}, {["\255"] = 2},
        }
        if has_int then
          local more = {math.maxinteger, math.mininteger, 1.0, -2.0, 2 ^ 63,
            math.tointeger(2 ^ 53) + 1, 100000000000000, {1.0, 2, 3.0}}
          for _, v in ipairs(more) do edges[#edges + 1] = v end
        end
        for i, v in ipairs(edges) do
          local w = rt(v, fmt)
          assert.is_true(H.deep_equal(v, w), "edge value #" .. i .. " " .. tostring(v))
        end
        assert.is_nil(rt(nil, fmt))
      end)

      it("tells valid UTF-8 from bytes at every offset of long ASCII runs", function()
        -- the UTF-8 check reads ASCII 8 bytes at a time: a bad or multi-byte
        -- sequence at any alignment, and at the very end, must still be seen
        local cjson = require "cjson"
        for k = 0, 19 do
          local a = string.rep("a", k)
          for _, tail in ipairs({"\255", "\195\169", "\195", "\237\160\128", "\240\159\152\128"}) do
            for _, after in ipairs({"", string.rep("b", 9)}) do
              local v = a .. tail .. after
              assert.equal(v, rt(v, fmt), ("offset %d, tail %q"):format(k, tail))
            end
          end
          if fmt == "json" then    -- valid text stays plain JSON; bytes do not
            assert.equal(a .. "\195\169", cjson.decode(pickle.dumps({a .. "\195\169"}))[1])
            assert.are_not.equal(a .. "\255", cjson.decode(pickle.dumps({a .. "\255"}))[1])
          end
        end
      end)

      it("keeps integers integers and floats floats (5.3+)", function()
        if not has_int then return end
        assert.equal("integer", math.type(rt(1, fmt)))
        assert.equal("float", math.type(rt(1.0, fmt)))
        assert.equal(math.maxinteger, rt(math.maxinteger, fmt))
        assert.equal("integer", math.type(rt({5}, fmt)[1]))
        assert.equal("float", math.type(rt({x = 5.0}, fmt).x))
      end)

      it("keeps shared references and cycles", function()
        local shared = {1}
        local t = {shared, shared, k = shared}
        t.self = t
        local w = rt(t, fmt)
        assert.equal(w, w.self)
        assert.equal(w[1], w[2])
        assert.equal(w[1], w.k)
        assert.are_not.equal(shared, w[1])
        local a, b = {}, {}
        a.b, b.a = b, a
        local wa = rt(a, fmt)
        assert.equal(wa, wa.b.a)
        local k = {}
        local w2 = rt({[k] = k}, fmt)
        local wk = next(w2)
        assert.equal(wk, w2[wk])
      end)

      it("carries metatables inline, and registered ones by name", function()
        local mt = {__index = function(_, key) return key .. "!" end}
        local w = rt(setmetatable({x = 1}, mt), fmt)
        assert.equal("y!", w.y)
        assert.equal(1, w.x)
        local Point = {}
        Point.__index = Point
        function Point.norm2(p) return p.x * p.x + p.y * p.y end
        pickle.register("spec.Point", Point)
        local ps = rt({setmetatable({x = 3, y = 4}, Point), setmetatable({x = 1, y = 1}, Point)}, fmt)
        assert.equal(Point, getmetatable(ps[1]))
        assert.equal(Point, getmetatable(ps[2]))
        assert.equal(25, ps[1]:norm2())
        assert.equal(Point, rt(Point, fmt))
      end)

      it("rebuilds closures with their upvalues", function()
        local base, name = 10, "n"
        local f = function(x) return x + base, name end
        local g = rt(f, fmt)
        local a, b = g(5)
        assert.equal(15, a)
        assert.equal("n", b)
        local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
        assert.equal(120, rt(fact, fmt)(5))
      end)

      it("keeps upvalues shared between closures where the Lua can join them", function()
        local count = 0
        local inc = function() count = count + 1 return count end
        local get = function() return count end
        local w = rt({inc = inc, get = get}, fmt)
        w.inc()
        w.inc()
        if has_join then
          assert.equal(2, w.get())
        else
          assert.equal(0, w.get())   -- PUC 5.1: each closure gets its own copy
        end
        assert.equal(0, count)
      end)

      it("binds the global environment and loaded modules on the receiver", function()
        local mod = {answer = 42}
        package.loaded["spec_pickle_mod"] = mod
        local f = function() return tostring(1), mod.answer, lmp.time() > 0, string.rep("a", 2) end
        local g = rt(f, fmt)
        local s, ans, ok, r = g()
        assert.equal("1", s)
        assert.equal(42, ans)
        assert.is_true(ok)
        assert.equal("aa", r)
        assert.equal(mod, rt(mod, fmt))
        assert.equal(_G, rt(_G, fmt))
        package.loaded["spec_pickle_mod"] = nil
      end)

      it("sends C functions by name", function()
        assert.equal(math.sqrt, rt(math.sqrt, fmt))
        assert.equal(string.format, rt({f = string.format}, fmt).f)
        assert.equal(print, rt(print, fmt))
      end)

      it("uses __pickle/__unpickle for userdata of a registered class", function()
        local mt = getmetatable(io.stdout)
        mt.__pickle = function(f) return f == io.stdout and "stdout" or "stderr" end
        mt.__unpickle = function(s) return s == "stdout" and io.stdout or io.stderr end
        pickle.register("spec.FILE", mt)
        local ok, w = pcall(rt, {io.stdout, io.stderr, io.stdout}, fmt)
        mt.__pickle, mt.__unpickle = nil, nil
        assert.is_true(ok, tostring(w))
        assert.equal(io.stdout, w[1])
        assert.equal(io.stderr, w[2])
        assert.equal(io.stdout, w[3])
      end)

      it("names the path of a value that cannot travel", function()
        local msg = pickle_error(pickle.dumps, {1, {conn = io.stdout}}, {format = fmt, name = "args"})
        assert.equal("args[2].conn: cannot pickle userdata", msg)
        msg = pickle_error(pickle.dumps, {co = coroutine.create(function() end)}, {format = fmt})
        assert.equal("value.co: cannot pickle thread", msg)
        msg = pickle_error(pickle.dumps, coroutine.wrap(function() end), {format = fmt})
        assert.truthy(msg:find("^value: cannot pickle a C function"))
        local conn = io.stdout
        msg = pickle_error(pickle.dumps, {function() return conn end}, {format = fmt, name = "args"})
        assert.equal("args[1]<upvalue conn>: cannot pickle userdata", msg)
      end)

      it("refuses nesting deeper than the limit in both directions", function()
        local t = {}
        local cur = t
        for _ = 1, pickle.MAX_DEPTH + 5 do cur[1] = {} cur = cur[1] end
        local msg = pickle_error(pickle.dumps, t, {format = fmt})
        assert.truthy(msg:find("nesting deeper than"), msg)
        local ok = {}
        cur = ok
        for _ = 1, pickle.MAX_DEPTH - 2 do cur[1] = {} cur = cur[1] end
        assert.is_true(H.deep_equal(ok, rt(ok, fmt)))
      end)

      it("refuses functions when asked to", function()
        local s = pickle.dumps({f = function() return 1 end}, {format = fmt})
        local msg = pickle_error(pickle.loads, s, {functions = false})
        assert.truthy(msg:find("functions refused"), msg)
        s = pickle.dumps({f = math.sqrt}, {format = fmt})
        pickle_error(pickle.loads, s, {functions = false})
        assert.same({a = 1}, pickle.loads(pickle.dumps({a = 1}, {format = fmt}), {functions = false}))
      end)

      it("raises pickle errors on bad input and never crashes", function()
        local good = pickle.dumps({1, "two", {3.5, x = true}, 2 ^ 70, "\255"}, {format = fmt})
        for n = 0, #good - 1 do
          local ok, e = pcall(pickle.loads, good:sub(1, n))
          if not ok then assert.is_true(lmp.is_error(e, "pickle"), tostring(e)) end
        end
        local r = G.rng(7)
        for _ = 1, 300 do
          local bytes = {}
          for i = 1, r(40) do bytes[i] = string.char(r(256) - 1) end
          local s = table.concat(bytes)
          if fmt == "binary" then s = good:sub(1, 1) .. s end
          local ok, e = pcall(pickle.loads, s, {functions = false})
          if not ok then assert.is_true(lmp.is_error(e, "pickle"), tostring(e)) end
        end
      end)

      it("writes a table's array and its other keys in one walk, whatever their order", function()
        local backwards = {}
        for i = 50, 1, -1 do backwards[i] = i * 2 end      -- built from the end: hash part
        local mixed = {1, 2, 3, x = "x", [10] = 10, [2.5] = "f", [true] = false}
        local holes = {1, nil, 3, nil, nil, 6}
        local zero = {[0] = "zero", "one", "two"}            -- LuaJIT keeps [0] in its array
        local big = {}
        for i = 1, 300 do big[i] = i end                     -- a count of two varint bytes
        big.tail = {n = 300}
        for _, v in ipairs({backwards, mixed, holes, zero, big}) do
          assert.is_true(H.deep_equal(v, rt(v, fmt)))
        end
      end)

      it("keeps integer keys integers when 1..n live in the hash part beside other keys", function()
        -- a decoded {1, 2.25, nil, n = 3} is built with its keys in the hash
        -- part, where n and "n" can come first in lua_next's order; sent on
        -- again, it must not turn into a JSON object with keys "1" and "2"
        -- (the CI failure of spec/conformance/connection_spec's echo)
        local shapes = {{1, 2.25, nil, n = 3}, {"a", x = 1}, {1, 2, 3, 4, 5, a = 1, b = 2, c = 3}}
        for _, v in ipairs(shapes) do
          local w = rt(rt(v, fmt), fmt)
          assert.is_true(H.deep_equal(v, w))
          for k in pairs(w) do
            if type(k) == "string" then assert.is_nil(tonumber(k), "key " .. k .. " became a string") end
          end
        end
        for size = 1, 8 do                     -- many hash orders: key n last, first, between
          for j = 1, 50 do
            local t = {["s" .. j] = j}
            for i = size, 1, -1 do t[i] = i * 0.5 end
            assert.is_true(H.deep_equal(t, rt(rt(t, fmt), fmt)), "size " .. size .. ", key s" .. j)
          end
        end
      end)

      it("writes a slice of a list as one list (a pool's chunk), shared tables kept", function()
        local shared = {k = 1}
        local list = {10, "b", shared, nil, shared, 60, 70}
        local enc = pickle.slice_encoder(fmt)
        local t = pickle.loads(enc(list, 2, 6, "args"))
        assert.equal("b", t[1])
        assert.same({k = 1}, t[2])
        assert.is_nil(t[3])
        assert.equal(t[2], t[4])
        assert.equal(60, t[5])
        assert.is_nil(t[6])
        local m = pickle.loads(enc({{7, 8}, {9}}, 1, 2, "args"))
        assert.same({{7, 8}, {9}}, m)
        assert.same({}, pickle.loads(enc(list, 3, 2, "args")))      -- an empty slice
        assert.has_error(function() enc(list, 5, 2, "args") end)
        local msg = pickle_error(enc, {1, coroutine.create(function() end)}, 1, 2, "args")
        assert.matches("args%[2%]: cannot pickle thread", msg)
      end)

      it("files a pickled list into another table at an offset (loads_into)", function()
        local out = {"keep"}
        pickle.loads_into(pickle.dumps({"a", nil, {c = 3}, nil}, {format = fmt}), out, 1, 4)
        assert.equal("keep", out[1])
        assert.equal("a", out[2])
        assert.is_nil(out[3])
        assert.same({c = 3}, out[4])
        assert.is_nil(out[5])
        local s = pickle.dumps({1, 2, 3}, {format = fmt})
        if fmt == "binary" then
          pickle_error(pickle.loads_into, s, {}, 0, 2)      -- longer than announced
          pickle_error(pickle.loads_into, pickle.dumps("x", {format = fmt}), {}, 0, 1)
          pickle_error(pickle.loads_into, pickle.dumps({1, x = 2}, {format = fmt}), {}, 0, 2)
        end
      end)

      it("still sends modules, classes and the globals by name inside a chunk's lists", function()
        local mod = {data = "only"}                 -- no functions: plain-looking
        package.loaded["spec_pickle_fresh"] = mod
        local cls = pickle.register("spec.FreshClass", {kind = "class"})
        local enc = pickle.encoder(fmt)
        for depth = 1, 2 do
          local v = depth == 1 and {mod, cls, _G, {mod}} or {{mod, cls, _G}}
          local w = pickle.loads(enc(v, "result"))
          local row = depth == 1 and w or w[1]
          assert.equal(mod, row[1])
          assert.equal(cls, row[2])
          assert.equal(_G, row[3])
          if depth == 1 then assert.equal(mod, w[4][1]) end
        end
        local slice = pickle.slice_encoder(fmt)
        local w = pickle.loads(slice({mod, 5, cls}, 1, 3, "args"))
        assert.equal(mod, w[1])
        assert.equal(cls, w[3])
        -- and the root itself travels by name
        assert.equal(mod, pickle.loads(pickle.encoder(fmt)(mod)))
        package.loaded["spec_pickle_fresh"] = nil
      end)

      it("survives 1,000 random nested values (property test)", function()
        local r = G.rng(fmt == "json" and 12345 or 54321)
        for i = 1, 1000 do
          local v = G.value(r, {depth = 4, width = 5})
          local s = pickle.dumps(v, {format = fmt})
          local w = pickle.loads(s)
          if not H.deep_equal(v, w) then
            error("value #" .. i .. " changed in a round trip: " .. s)
          end
        end
      end)
    end)
  end

  it("writes plain data as JSON that Python reads as the obvious value", function()
    local values = {
      {1, 2.5, "h\195\169llo", true, false},
      {name = "x", list = {1, 2, 3}, nested = {deep = {ok = true}}},
      {}, 42, -7, 0.25, "s\0", {{a = 1}, {b = "\226\130\172"}},
    }
    local expect = {
      '[1, 2.5, "h\\u00e9llo", true, false]',
      '{"list": [1, 2, 3], "name": "x", "nested": {"deep": {"ok": true}}}',
      '{}', '42', '-7', '0.25', '"s\\u0000"', '[{"a": 1}, {"b": "\\u20ac"}]',
    }
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    for _, v in ipairs(values) do f:write(pickle.dumps(v), "\n") end
    f:close()
    local p = io.popen("python3 -c 'import json,sys\nfor l in open(sys.argv[1]): "
      .. "print(json.dumps(json.loads(l), sort_keys=True))' " .. path)
    local out = p:read("*a")
    p:close()
    os.remove(path)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.same(expect, lines)
  end)

  it("writes the binary form with a first byte JSON never starts with", function()
    local s = pickle.dumps({1, 2}, {format = "binary"})
    assert.is_nil(("{[\"-0123456789tfn "):find(s:sub(1, 1), 1, true))
  end)

  it("takes codec as pools spell it, and refuses options it does not know", function()
    local B = string.char(0xB1)
    assert.equal(B, pickle.dumps({1}, {codec = "binary"}):sub(1, 1))
    assert.equal(B, pickle.dumps({1}, {format = "binary", codec = "binary"}):sub(1, 1))
    assert.equal("[1]", pickle.dumps({1}, {codec = "json"}))
    local function msg(opts)
      local ok, e = pcall(pickle.dumps, {1}, opts)
      assert.is_false(ok)
      return tostring(e)
    end
    assert.truthy(msg({codek = "binary"}):find("unknown option 'codek'", 1, true))
    assert.truthy(msg({format = "json", codec = "binary"}):find("disagree", 1, true))
    assert.truthy(msg({codec = "msgpack"}):find("must be \"json\" or \"binary\"", 1, true))
  end)

  it("refuses a huge length claim in the binary form without allocating it", function()
    local s = pickle.dumps("abc", {format = "binary"})
    -- the string tag with a 1 GB length (varint) and three bytes of data
    local claim = s:sub(1, 2) .. "\5" .. "\128\128\128\128\4" .. "abc"
    local msg = pickle_error(pickle.loads, claim)
    assert.truthy(msg:find("malformed"), msg)
  end)

  it("refuses 100,000 levels of nesting in input", function()
    pickle_error(pickle.loads, string.rep("[", 100000) .. string.rep("]", 100000))
    local b = pickle.dumps({}, {format = "binary"})
    -- tables of one element each: 06 narr=1 nhash=0
    local msg = pickle_error(pickle.loads, b:sub(1, 2) .. string.rep("\6\1\0", 100000) .. "\6\0\0")
    assert.truthy(msg:find("nesting too deep"), msg)
  end)

  it("keeps up with package.loaded through require, new names, removal and a foreign metatable", function()
    local rt_json = function(v) return pickle.loads(pickle.dumps(v)) end
    rt_json({warm = "up"})                          -- builds the cache of names
    local mod = {data = "only"}
    package.loaded["spec_names_a"] = mod           -- a new name: seen at once
    assert.equal(mod, rt_json(mod))
    assert.equal(mod, rt_json({inner = mod}).inner)
    package.loaded["spec_names_a"] = nil           -- gone: written as data again
    local back = rt_json(mod)
    assert.are_not.equal(mod, back)
    assert.same(mod, back)
    package.preload["spec_names_b"] = function() return {via = "require"} end
    local b = require "spec_names_b"
    assert.equal(b, rt_json(b))
    package.loaded["spec_names_b"], package.preload["spec_names_b"] = nil, nil
    -- somebody else's metatable on package.loaded: lmp walks it every time
    local saved = getmetatable(package.loaded)
    setmetatable(package.loaded, {})
    local c = {other = "meta"}
    rawset(package.loaded, "spec_names_c", c)
    assert.equal(c, rt_json(c))
    package.loaded["spec_names_c"] = nil
    setmetatable(package.loaded, saved)
    local n = 0
    for _ in pairs(package.loaded) do n = n + 1 end
    assert.is_true(n > 5)                           -- still an ordinary table
  end)

  for _, fmt in ipairs(FORMATS) do
    it("writes a module removed from package.loaded as a value, not by its old name (" .. fmt .. ")", function()
      local o = {format = fmt}
      local mod = {x = 1, f = function() return 2 end}
      package.loaded["spec_names_stale"] = mod
      assert.equal(mod, pickle.loads(pickle.dumps({mod}, o))[1])
      package.loaded["spec_names_stale"] = nil    -- an existing key: the hook does not see it
      local w = pickle.loads(pickle.dumps({mod, mod}, o))
      assert.are_not.equal(mod, w[1])
      assert.equal(w[1], w[2])
      assert.equal(1, w[1].x)
      assert.equal(2, w[1].f())
      package.loaded["spec_names_stale"] = mod     -- and back: by name again
      assert.equal(mod, pickle.loads(pickle.dumps({mod}, o))[1])
      package.loaded["spec_names_stale"] = nil
    end)
  end

  it("gives fast encoders for each codec", function()
    for _, codec in ipairs(FORMATS) do
      local enc = pickle.encoder(codec)
      assert.same({1, {a = "b"}}, pickle.loads(enc({1, {a = "b"}})))
    end
    assert.has_error(function() pickle.encoder("xml") end)
    assert.has_error(function() pickle.dumps(1, {format = "xml"}) end)
    assert.has_error(function() pickle.loads(12) end)
  end)

  it("maps JSON null to nil (holes)", function()
    local t = pickle.loads('[1,null,3]')
    assert.equal(1, t[1])
    assert.is_nil(t[2])
    assert.equal(3, t[3])
    assert.is_nil(pickle.loads("null"))
  end)
end)

describe("lmp.pickle binary typed runs (format 2)", function()
  local B = {format = "binary"}
  local big = has_int and math.maxinteger or 2^53
  local small = has_int and math.mininteger or -2^53

  local function same_numbers(a, b)
    assert.equal(#a, #b)
    for i = 1, #a do
      local x, y = a[i], b[i]
      if type(x) == "number" and x ~= x then
        assert.is_true(y ~= y, "item " .. i .. " is not NaN")
      elseif type(x) == "number" and x == 0 then
        assert.equal(1 / x, 1 / y, "sign of zero at item " .. i)
      else
        assert.equal(x, y, "item " .. i)
      end
      if has_int and type(x) == "number" then
        assert.equal(math.type(x), math.type(y), "type of item " .. i)
      end
    end
  end

  it("round-trips integer and float runs at their boundaries, exactly and with their types", function()
    local ints = {0, -1, 1, 63, 64, -64, 127, 128, 2^31, -(2^31), 9007199254740993 - 1, big, small}
    if has_int then ints[#ints + 1] = 9007199254740993 end      -- 2^53 + 1
    for i = 1, #ints do if has_int then ints[i] = math.tointeger(ints[i]) or ints[i] end end
    local floats = {0.0, -0.0, 0.1, 1 / 0, -1 / 0, 0 / 0, 5e-324, 1.7976931348623157e308, 2^53 + 0.0, 0.5}
    if has_int then floats[#floats + 1] = 3.0 end               -- an integral float stays a float
    for _, v in ipairs({ints, floats}) do
      local s = pickle.dumps(v, B)
      assert.equal(1, math.floor(s:byte(2) / 2) % 2, "runs flag set")
      same_numbers(v, pickle.loads(s))
    end
  end)

  it("keeps each number's type where a float run meets integers and huge floats", function()
    -- a float run reads each item as a float first; integral values,
    -- however large, must still be told apart by their type
    local v = {}
    for i = 1, 10 do v[i] = i + 0.5 end
    local tail = {3, 3.0, -0.0, big, small, 2^63, -(2^63), 1e19, -9.3e18, 9.2e18, 0.5, 1 / 0, 7}
    if has_int then
      tail[1], tail[13] = math.tointeger(3), math.tointeger(7)
      tail[#tail + 1] = math.tointeger(9200000000000000000)   -- an integer near the cast's bound
    end
    for _, x in ipairs(tail) do v[#v + 1] = x end
    same_numbers(v, pickle.loads(pickle.dumps(v, B)))
  end)

  it("keeps NaN payloads and the sign of -0.0 bit for bit (5.3+)", function()
    if not string.pack then return end        -- 5.1/LuaJIT: no way to see the bits
    local bits = {"\1\0\0\0\0\0\248\127", "\0\0\0\0\0\0\248\255", "\0\0\0\0\0\0\0\128"}
    local v = {}
    for i = 1, 9 do v[i] = string.unpack("<d", bits[(i - 1) % 3 + 1]) end
    local back = pickle.loads(pickle.dumps(v, B))
    for i = 1, 9 do assert.equal(string.pack("<d", v[i]), string.pack("<d", back[i])) end
  end)

  it("mixes runs with other items, holes, nested tables and a hash part", function()
    local t = {}
    for i = 1, 20 do t[i] = i end
    for i = 21, 30 do t[i] = i + 0.5 end
    t[31] = "s"; t[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9}; t[33] = 7; t[34] = 8.25; t[35] = true
    for i = 36, 50 do t[i] = -i end
    t[42] = nil                        -- a hole inside a run
    t.name, t[100], t[0] = "x", 1, 2   -- pairs past the array
    local back = pickle.loads(pickle.dumps(t, B))
    assert.is_true(H.deep_equal(t, back))
    if has_int then
      assert.equal("integer", math.type(back[20]))
      assert.equal("float", math.type(back[21]))
    end
  end)

  it("writes short arrays item by item and long ones as runs", function()
    local seven, eight = {1, 2, 3, 4, 5, 6, 7}, {1, 2, 3, 4, 5, 6, 7, 8}
    assert.equal(0, math.floor(pickle.dumps(seven, B):byte(2) / 2) % 2)
    assert.equal(1, math.floor(pickle.dumps(eight, B):byte(2) / 2) % 2)
    assert.same(seven, pickle.loads(pickle.dumps(seven, B)))
    assert.same(eight, pickle.loads(pickle.dumps(eight, B)))
    local n = {}
    for i = 1, 100000 do n[i] = i * 3 end
    local s = pickle.dumps(n, B)
    assert.is_true(#s < 100000 * 4, "a run of integers takes its varints only")
    same_numbers(n, pickle.loads(s))
  end)

  it("slices and loads_into carry runs", function()
    local list = {}
    for i = 1, 40 do list[i] = i % 3 == 0 and i / 4 or i end
    local s = pickle.slice_encoder("binary")(list, 5, 34)
    local out = {}
    pickle.loads_into(s, out, 100, 30)
    for i = 5, 34 do assert.equal(list[i], out[100 + i - 4]) end
    assert.is_nil(out[100]); assert.is_nil(out[131])
  end)

  it("refuses malformed runs with a pickle error, never a crash or a big allocation", function()
    local ok8 = pickle.dumps({1, 2, 3, 4, 5, 6, 7, 8}, B)
    local head = ok8:sub(1, 2)         -- magic + flags
    local cases = {
      -- a table of 2 array items holding a run of 3
      head .. "\6\2\0\17\3\2\4\6",
      -- a run of 0
      head .. "\6\1\0\17\0",
      -- a run as a root value, outside an array
      head .. "\17\1\2",
      -- a float run cut short
      head .. "\6\2\0\18\2" .. string.rep("\0", 12),
      -- a run claiming 2^31 floats in a few bytes
      head .. "\6\255\255\255\255\7\0\18\255\255\255\255\7\0\0",
      -- unknown format flags
      "\177\4\192",
    }
    for i, s in ipairs(cases) do
      local ok, e = pcall(pickle.loads, s)
      assert.is_false(ok, "case " .. i)
      assert.is_true(lmp.is_error(e, "pickle"), "case " .. i .. ": " .. tostring(e))
    end
    -- random corruption of a run-bearing message: errors only
    local rng = G.rng(1717)
    local base = pickle.dumps({1, 2.5, 3, 4, 5, 6, 7, 8, 9, 10.5, {1, 2, 3, 4, 5, 6, 7, 8, 9}}, B)
    for _ = 1, 2000 do
      local pos = rng(#base)
      local mutated = base:sub(1, pos - 1) .. string.char(rng(256) - 1) .. base:sub(pos + 1)
      local ok, e = pcall(pickle.loads, mutated)
      assert.is_true(ok or lmp.is_error(e, "pickle"), tostring(e))
    end
  end)
end)

describe("lmp.pickle JSON: plain data with tagged leaves", function()
  local function py_reads(s)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(s)
    f:close()
    local p = io.popen("python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); "
      .. "print(type(v).__name__, sorted(v) if isinstance(v, dict) else len(v))' " .. path)
    local out = p:read("*a")
    p:close()
    os.remove(path)
    return out
  end

  it("keeps the structure plain when only some numbers or strings need exactness", function()
    local v = {score = 2.0, ratio = 1 / 7, big = 2^60, blob = "\255\0", name = "x",
               list = {1, 2.5, 3.0, "\1tagged"}}
    local s = pickle.dumps(v)
    assert.is_nil(s:find("lmp1", 1, true))           -- not the tagged form
    assert.equal("dict ['big', 'blob', 'list', 'name', 'ratio', 'score']\n", py_reads(s))
    local back = pickle.loads(s)
    assert.is_true(H.deep_equal(v, back))
    if has_int then
      assert.equal("float", math.type(back.score))
      assert.equal("float", math.type(back.list[3]))
      assert.equal("integer", math.type(back.list[1]))
    end
    assert.equal("\1tagged", back.list[4])
  end)

  it("never changes the value it pickles", function()
    local inner = {a = 1 / 3}
    local v = {inner, {b = 2}, 3.0}
    pickle.dumps(v)
    assert.equal(1 / 3, inner.a)
    assert.equal(inner, v[1])
    assert.equal(3.0, v[3])
    if has_int then assert.equal("float", math.type(v[3])) end
  end)

  it("writes floats cjson would round as their 64 bits, and still reads the decimal form", function()
    for _, x in ipairs({1 / 3, -0.0, 1 / 0, -1 / 0, 5e-324, 2.0^70, 0.30000000000000004}) do
      local back = pickle.loads(pickle.dumps({x}))[1]
      assert.equal(string.format("%.17g", x), string.format("%.17g", back))
      if x == 0 then assert.equal(1 / x, 1 / back) end
    end
    local nan = pickle.loads(pickle.dumps({0 / 0}))[1]
    assert.is_true(nan ~= nan)
    -- the decimal leaf lmp 0.1 wrote, in both places it may stand
    assert.equal(0.1 + 0.2, pickle.loads('["\\u0001f0.30000000000000004"]')[1])
    assert.equal(0.1 + 0.2, pickle.loads('["\\u0001lmp1", ["\\u0001f0.30000000000000004"]]')[1])
  end)

  it("carries bytes that are not UTF-8 as base64 (RFC 4648), exactly, and refuses base64 that is not canonical", function()
    -- the reference: RFC 4648's test vectors, and any length mod 3
    local C = require "lmp.c.pickle"
    local vectors = {[""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                     fooba = "Zm9vYmE=", foobar = "Zm9vYmFy"}
    for plain, coded in pairs(vectors) do
      assert.equal(coded, C.b64enc(plain))
      assert.equal(plain, C.b64dec(coded))
    end
    for n = 0, 70 do
      local b = {}
      for i = 1, n do b[i] = string.char((i * 37 + n) % 256) end
      local bytes = "\255" .. table.concat(b)        -- never UTF-8
      assert.equal(bytes, pickle.loads(pickle.dumps({bytes}))[1])
    end
    for _, bad in ipairs{"Zg=", "Z===", "Zg=A", "Zm9v====", " Zm9v", "Zm9v ", "Zm 9", "Zm9v\n", "Zg==Zg=="} do
      assert.is_nil(C.b64dec(bad), bad)
      pickle_error(pickle.loads, '["\\u0001b' .. bad:gsub("\n", "\\n") .. '"]')
    end
  end)

  it("refuses malformed leaves with a pickle error", function()
    for _, s in ipairs({'["\\u0001z1"]', '{"a": "\\u0001x123"}', '"\\u0001"',
                        '["\\u0001xzzzzzzzzzzzzzzzz"]', '["\\u0001b@@@"]', '["\\u0001r1"]'}) do
      pickle_error(pickle.loads, s)
    end
  end)
end)

describe("lmp.pickle JSON lists with big strings out of band (a pool's chunks)", function()
  local K = 65536
  local raw_enc = pickle.list_encoder("json")
  -- the form is built in one buffer and comes as an lmp.Bytes (a pool
  -- sends it, then frees it); here it is read as a string
  local function enc(list, n, name)
    local b = raw_enc(list, n, name)
    if type(b) == "string" then return b end
    assert.equal("userdata", type(b))
    local s = b:tostring()
    b:free()
    return s
  end
  local function bytes(n, seed)             -- not UTF-8, NULs included
    local t = {}
    for i = 1, 256 do t[i] = string.char((i * seed) % 256) end
    return (table.concat(t):rep(math.ceil(n / 256))):sub(1, n)
  end

  it("carries strings of 64 KiB and more raw, keeps the rest JSON, and round-trips exactly", function()
    local list = {"small", bytes(K, 7), bytes(K - 1, 3), nil, {a = 1, b = {2.5, "x"}},
                  "\1" .. string.rep("y", K), 42, string.rep("é", K)}
    local want = {}
    for i = 1, 8 do want[i] = list[i] end
    local s = enc(list, 8, "args")
    assert.equal(0xB2, s:byte(1))
    -- the JSON part holds the small items; the three big ones follow raw
    local head = s:match("^\178([^\n]*)\n")
    assert.equal("2 " .. K .. " 6 " .. (K + 1) .. " 8 " .. 2 * K, head:match("^%d+ (.*)$"))
    -- raw, not base64: the JSON part is the small items and the one
    -- non-UTF-8 string under 64 KiB (base64, 4/3 of it)
    local jlen = tonumber(head:match("^%d+"))
    assert.is_true(jlen < (K - 1) * 4 / 3 * 1.1, "JSON part of " .. jlen)  -- (cjson writes "/" as "\\/")
    assert.equal(#head + 2 + jlen + 4 * K + 1, #s)
    local back = pickle.loads(s)
    for i = 1, 8 do assert.is_true(H.deep_equal(want[i], back[i]), "item " .. i) end
    assert.is_nil(back[4])
  end)

  it("writes plain JSON when no item is big, and lists of only big strings", function()
    local s = enc({1, "two", 3.5}, 3)
    assert.equal("[", s:sub(1, 1))
    assert.same({1, "two", 3.5}, pickle.loads(s))
    local a, b = bytes(K, 5), bytes(2 * K, 9)
    local back = pickle.loads(enc({a, b}, 2))
    assert.is_true(back[1] == a and back[2] == b)
    local whole = raw_enc({a, b}, 2)
    assert.equal("userdata", type(whole))             -- an lmp.Bytes, read in place
    assert.is_true(#whole > #a + #b)
    back = pickle._loads_payload(whole)
    whole:free()
    assert.is_true(back[1] == a and back[2] == b)
  end)

  it("refuses damaged lists with a pickle error, never a crash", function()
    local s = enc({"x", bytes(K, 11), 7}, 3)
    local nl = s:find("\n", 1, true)
    for _, bad in ipairs{
      s:sub(1, -2),                                  -- one byte short
      s .. "z",                                      -- one byte over
      "\178" .. string.rep("9", 5000),               -- a header that never ends
      "\178x\n[]",                                   -- not a number
      "\178" .. string.rep("9", 30) .. "\n[]",         -- a length past any integer
      "\1782 " .. string.rep("9", 30) .. " 1\n[]z",    -- an index past any integer
      "\1782 0 1\n[]z",                              -- index 0
      "\1782 1 1 1 1\n[]zz",                         -- an index twice
      "\1782 2 1 1 1\n[]zz",                         -- indexes out of order
      "\1783 1 1\n[7]z",                              -- an item the JSON has
      "\1784 1 1\n[1,2z",                            -- a JSON part that is cut
      "\1781 1 1\n7z",                               -- not a list
      s:sub(1, nl) .. "!" .. s:sub(nl + 2),          -- bad JSON
    } do
      pickle_error(pickle.loads, bad)
    end
    -- random corruption: an error or a value, never anything else
    math.randomseed(17)
    for _ = 1, 300 do
      local i = math.random(1, math.min(#s, nl + 40))
      local m = s:sub(1, i - 1) .. string.char(math.random(0, 255)) .. s:sub(i + 1)
      local ok, e = pcall(pickle.loads, m)
      assert.is_true(ok or lmp.is_error(e, "pickle"), tostring(e))
    end
  end)

  it("writes binary lists in the binary form, the big ones as an lmp.Bytes to free once sent", function()
    local big = bytes(K, 13)
    local small = pickle.list_encoder("binary")({1, "x"}, 2)
    assert.equal("string", type(small))
    assert.same({1, "x"}, pickle.loads(small))
    for _, b in ipairs{pickle.list_encoder("binary")({big, 1}, 2),
                       pickle.slice_encoder("binary")({0, big, 1, 0}, 2, 3)} do
      assert.equal("userdata", type(b))
      assert.is_true(#b > K)
      assert.equal(0xB1, b:byte1())
      local s = b:tostring()
      b:free()
      assert.has_error(function() b:tostring() end)    -- freed: refused, not read
      assert.same({big, 1}, pickle.loads(s))
    end
  end)
end)

describe("lmp.pickle JSON plain data, written and read without cjson (lpickle_json.c)", function()
  local C = require "lmp.c.pickle"
  local cjson = require("cjson").new()
  cjson.encode_number_precision(14)
  cjson.encode_max_depth(1100)
  local LIM = 99999999999999                       -- 10^14 - 1: cjson's 14 digits
  local function sample()
    local t, r = {0, 1, -1, 9, 10, -10, LIM, -LIM, 12345678901234, 2147483648}, G.rng(23)
    for i = #t + 1, 3000 do t[i] = (r(2) == 1 and -1 or 1) * (r(1000000) * r(100000000) % (LIM + 1)) end
    return t
  end
  -- every byte cjson escapes, UTF-8 of 2 to 4 bytes, the empty string
  local function strings()
    local t = {"", "plain", "é€😀", "a/b\\c\"d", "\127", "x\1", string.rep("z", 65535)}
    for b = 0, 31 do t[#t + 1] = "<" .. string.char(b) .. ">" end
    for i = 1, 500 do t[#t + 1] = "file-" .. i .. ".txt" end
    return t
  end
  local function text_of(s)
    if type(s) == "string" then return s end
    local t = s:tostring()
    s:free()
    return t
  end

  -- The reference for the text: docs/api/pickle.md's leaf rules restated
  -- here, in Lua, then plain cjson. A float's bits come from string.pack
  -- (5.3+) or from math.frexp (5.1, LuaJIT), not from lmp.
  local function float_bits(x)
    if string.pack then return (string.format("%016x", (string.unpack(">i8", string.pack(">d", x))))) end
    local sign = (x < 0 or (x == 0 and 1 / x < 0)) and 1 or 0
    local e, m
    x = math.abs(x)
    if x == math.huge then e, m = 2047, 0
    elseif x == 0 then e, m = 0, 0
    else
      local f, ex = math.frexp(x)                     -- x = f * 2^ex, 0.5 <= f < 1
      e = ex + 1022
      if e <= 0 then e, m = 0, x / 2 ^ -1074          -- subnormal: x in units of 2^-1074
      else m = (f * 2 - 1) * 2 ^ 52 end
    end
    local hi = sign * 2 ^ 31 + e * 2 ^ 20 + math.floor(m / 2 ^ 32)
    return string.format("%08x%08x", hi, m % 2 ^ 32)
  end
  -- A plain float is m / 10^k exactly, |m| < 10^14, 1 <= k <= 22
  -- (docs/api/pickle.md); cjson's "%.14g" of it must read back as it.
  local function decimal_plain(x)
    if x == math.floor(x) or not (x > -1e14 and x < 1e14) then return false end
    for k = 1, 22 do
      local d = x * 10 ^ k
      if not (d > -1e14 and d < 1e14) then return false end
      if d == math.floor(d) then
        if d / 10 ^ k ~= x then return false end
        assert(tonumber(string.format("%.14g", x)) == x, x)
        return true
      end
    end
    return false
  end
  local function leaf(x)
    if type(x) == "boolean" then return x end
    if type(x) == "string" then
      if x:byte(1) ~= 1 and C.utf8ok(x) then return x end
      if x:byte(1) == 1 and C.utf8ok(x) then return "\1'" .. x end
      return "\1b" .. C.b64enc(x)
    end
    if has_int and math.type(x) == "integer" then
      if x > -1e14 and x < 1e14 then return x end
      return "\1i" .. string.format("%d", x)
    end
    if not has_int and x == math.floor(x) and x > -1e14 and x < 1e14 and not (x == 0 and 1 / x < 0) then
      return x
    end
    if decimal_plain(x) then return x end
    return "\1x" .. float_bits(x)
  end
  local function tagged(v)
    if type(v) ~= "table" then return leaf(v) end
    local t = {}
    for k, x in pairs(v) do t[k] = tagged(x) end
    return t
  end
  -- The text cjson writes for v's tagged copy, keys in v's own order (a
  -- copy's order may differ): cjson for every scalar and key, its layout
  -- (a sequence 1..n as an array, an empty table as {}).
  local function ref_text(v)
    if type(v) ~= "table" then return cjson.encode(leaf(v)) end
    local parts, n = {}, #v
    if n > 0 then
      for i = 1, n do parts[i] = ref_text(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, x in pairs(v) do parts[#parts + 1] = cjson.encode(k) .. ":" .. ref_text(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  -- Plain data at random: lists and string-keyed maps of every scalar
  -- (G's integers, floats, byte strings), booleans, empty tables. No NaN:
  -- its payload is checked on its own below.
  local function plain_value(r, depth)
    local k = r(depth > 3 and 6 or 8)
    if k == 1 then return r(2) == 1 end
    if k == 2 then return G.integer(r) end
    if k == 3 or k == 4 then
      local x = G.float(r)
      return x == x and x or 0.5
    end
    if k == 5 or k == 6 then return G.string(r) end
    local t, n = {}, r(6) - 1
    for i = 1, n do
      if k == 7 then t[i] = plain_value(r, depth + 1)
      else
        local key = G.string(r)
        if key:byte(1) ~= 1 and C.utf8ok(key) then t[key] = plain_value(r, depth + 1) end
      end
    end
    return t
  end

  it("writes the very text cjson writes, slices included, and reads it back as cjson and fix would", function()
    local t = sample()
    local enc, slice = pickle.list_encoder("json"), pickle.slice_encoder("json")
    local s = enc(t, #t)
    assert.equal(cjson.encode(t), type(s) == "string" and s or s:tostring())
    local part = {}
    for i = 11, 20 do part[#part + 1] = t[i] end
    assert.equal(cjson.encode(part), slice(t, 11, 20))
    local back = pickle.loads(type(s) == "string" and s or s:tostring())
    if type(s) ~= "string" then s:free() end
    assert.equal(#t, #back)
    for i = 1, #t do
      assert.equal(t[i], back[i])
      if has_int then assert.equal("integer", math.type(back[i])) end
    end
  end)

  it("writes random plain data, tagged leaves and all, as cjson writes its tagged copy, and reads it back exactly", function()
    local r = G.rng(77)
    for round = 1, 400 do
      local v = plain_value(r, 0)
      if type(v) ~= "table" then v = {v} end
      local want = ref_text(v)
      local text = pickle.dumps(v)
      assert.is_true(want == text, "round " .. round .. ": " .. want .. " ~= " .. text)
      local mine = C.jsonload(text)
      assert.is_true(H.deep_equal(v, mine), "round " .. round .. ": " .. text)
      -- the reader agrees with cjson and fix, the path for any other text
      local theirs = C.fix(cjson.decode(text), false, true)
      assert.is_true(H.deep_equal(theirs, mine), "round " .. round)
    end
  end)

  it("writes records (maps holding lists) with integral, 17-digit and big numbers as plain JSON with tagged leaves", function()
    local list = {}
    for i = 1, 300 do
      list[i] = {id = i, price = i * 0.5, ratio = i / 7, name = "item/" .. i, ok = i % 2 == 0,
                 dims = {i, i * 2.0, 2 ^ 60 + i}, raw = "\255" .. i, e = {}}
    end
    local text = pickle.dumps(list)
    assert.is_true(ref_text(list) == text)
    assert.is_nil(text:find("lmp1", 1, true))            -- not the tagged form
    local back = pickle.loads(text)
    assert.is_true(H.deep_equal(list, back))
    if has_int then
      assert.equal("float", math.type(back[2].price))
      assert.equal("float", math.type(back[2].dims[2]))
      assert.equal("integer", math.type(back[2].id))
    end
    -- a pool's chunk of such records: the same text, in slices too
    local part = {}
    for i = 5, 9 do part[#part + 1] = list[i] end
    assert.is_true(ref_text(part) == text_of(pickle.slice_encoder("json")(list, 5, 9)))
    local out = {}
    pickle.loads_into(text, out, 10, #list)
    assert.is_true(H.deep_equal(list[300], out[310]))
  end)

  it("escapes strings as cjson does, mixed with integers, and reads back what it wrote", function()
    local t = strings()
    for i = 1, 100 do t[#t + 1] = i * 7 end
    local text = text_of(C.jsonlist(t, 1, #t))
    assert.equal(cjson.encode(t), text)
    local back = pickle.loads(text)
    assert.equal(#t, #back)
    for i = 1, #t do assert.equal(t[i], back[i], "item " .. i) end
    assert.same(t, C.jsonload(text))
    -- the escapes cjson writes are read in C; others (and raw control bytes) are cjson's call
    assert.same({"a", "é", "", 5}, C.jsonload('["a","é","",5]'))
    assert.same({"a/b", "\"\\\b\f\n\r\t", "x\1\127A"}, C.jsonload('["a\\/b","\\"\\\\\\b\\f\\n\\r\\t","x\\u0001\\u007f\\u0041"]'))
    assert.same({"a\tb"}, C.jsonload('["a\tb"]'))   -- a raw control byte: cjson takes it too
    assert.same({"a\tb"}, cjson.decode('["a\tb"]'))
    assert.is_nil(C.jsonload('["a\0b"]'))             -- a NUL ends cjson's text: its error
    pickle_error(pickle.loads, '["a\0b"]')
    assert.is_nil(C.jsonload('["\\u00e9"]'))
    assert.equal("é", pickle.loads('["\\u00e9"]')[1])
    assert.is_nil(C.jsonload('["\\x"]'))
  end)

  it("writes floats of at most 14 digits as cjson's %.14g does, and reads back the same floats", function()
    local t = {0.5, -0.25, 0.1, 12345.678, 1.5e-05, -2.5e-10, 0.0001, 0.00012, 1.25e-22,
               9999999999999.5, 0.12345678901234, 1e-05, 3.5, -7.125}
    local r = G.rng(31)
    for _ = 1, 3000 do
      t[#t + 1] = (r(2) == 1 and -1 or 1) * r(99999999) / 10 ^ r(22)
      t[#t + 1] = r(9999999) / 10 ^ r(7) + r(9999999)          -- up to 14 digits
    end
    local plain = {}
    for _, x in ipairs(t) do
      local text = C.jsonlist({x}, 1, 1)
      if x ~= math.floor(x) and not text:find("u0001", 1, true) then plain[#plain + 1] = x end
    end
    assert.is_true(#plain > #t * 0.9, #plain .. " of " .. #t)
    local text = text_of(C.jsonlist(plain, 1, #plain))
    assert.equal(cjson.encode(plain), text)
    local back = C.jsonload(text)
    assert.equal(#plain, #back)
    for i = 1, #plain do
      assert.equal(plain[i], back[i])
      if has_int then assert.equal("float", math.type(back[i])) end
    end
    -- any other float goes as its tagged leaf (its bits in hex), read back bit for bit
    local others = {1 / 3, 0.1 + 0.2, 1e300, -1e-300, 2 ^ 60, -0.0, math.huge, -math.huge, 2.0, 0 / 0}
    for _, x in ipairs(others) do
      local s = C.jsonlist({x, 1}, 1, 2)
      if x == x then assert.equal(cjson.encode(tagged({x, 1})), s) end
      assert.equal(s, pickle.dumps({x, 1}))
      local y = C.jsonload(s)[1]
      assert.is_true(y == x or (x ~= x and y ~= y), tostring(x))
      if x == x then assert.equal(1 / x, 1 / y) end             -- -0.0 stays -0.0
      if has_int then assert.equal("float", math.type(y)) end
      assert.is_true(H.deep_equal({x, 1}, pickle.loads(s)) or x ~= x)
    end
    for _, text in ipairs{"[1.0]", "[1.5e+2]", "[0.1234567890123456]", "[1.]", "[.5]",
                          "[1e]", "[-0.0]", "[00.5]", "[1.5e-023]"} do
      assert.is_nil(C.jsonload(text), text)
    end
  end)

  it("leaves what is not plain data to the tagged form, which keeps it exact", function()
    local shared = {1}
    local cyc = {}
    cyc[1] = cyc
    local named = {7, 8}
    pickle.register("spec.json_named", named)
    local others = {
      {1, nil, 3}, setmetatable({1, 2}, {}), {shared, shared}, cyc, {print}, {[2] = 1},
      {1, 2, x = 3}, {[1.5] = 1}, {[true] = 1}, {["\255"] = 1}, {["\1k"] = 1}, {{named}},
      {{{{setmetatable({}, {})}}}},
    }
    for i, t in ipairs(others) do
      if i ~= 12 then assert.is_nil(C.jsontext(t, nil), "value " .. i) end   -- (12: named by pickle's classes)
      local n = 0
      for k in pairs(t) do if type(k) == "number" and k == math.floor(k) then n = math.max(n, k) end end
      if n > 0 and i ~= 7 and i ~= 12 then assert.is_nil(C.jsonlist(t, 1, n), "list " .. i) end   -- (7: the slice {1, 2} is plain)
      local text = pickle.dumps(t)
      assert.is_truthy(text:find("lmp1", 1, true), "value " .. i)
      local back = pickle.loads(text)
      if i == 3 then assert.equal(back[1], back[2]) end
      if i == 4 then assert.equal(back, back[1]) end
      if i == 12 then assert.equal(named, back[1][1]) end
      if i ~= 4 and i ~= 5 then assert.is_true(H.deep_equal(t, back), "value " .. i) end
    end
    assert.is_nil(C.jsonlist({1, 2}, 2, 1))        -- an empty slice: cjson's "{}" or "[]" rules
    assert.is_nil(C.jsonlist({1, 2}, 1, 3))        -- past the end: a hole
    assert.is_nil(C.jsonlist({"x", string.rep("y", 65536)}, 1, 2))   -- out of band
  end)

  it("nests as deep as the tagged form does, and no deeper", function()
    local function chain(n)
      local root = {}
      local t = root
      for _ = 2, n do t[1] = {}; t = t[1] end
      return root
    end
    local deep = chain(1000)                     -- 1000 tables: the limit
    local text = pickle.dumps(deep)
    assert.equal(cjson.encode(deep), text)
    local back = C.jsonload(text)
    assert.is_true(H.deep_equal(deep, back))
    assert.is_nil(C.jsontext(chain(1002)))
    pickle_error(pickle.dumps, chain(1100))
  end)

  it("reads only canonical text and says so otherwise; cjson then reads what is valid", function()
    for _, s in ipairs{"[01]", "[-0]", "[1 ,2]", "[ 1]", "[1.0]", "[1e3]", "[1,]", "[,1]", "[1.5.5]",
                       "[1,,2]", "[-]", "[1234567890123456]", "[1]x", "[1", "{1}", "[tru]", "[null]",
                       '{"a":null}', '{"a" :1}', '{"a":1,}', '{a:1}', '{"a"}', '{"a":}', "[true ]",
                       '["a]', '["a"', '["a""b"]', '["a",]', '[1"a"]', '["a":1]', '[""',
                       '["\\u0001lmp1",[1]]', '["\\u0001q"]'} do
      assert.is_nil(C.jsonload(s), s)
    end
    assert.same({123456789012345, -1, 0}, C.jsonload("[123456789012345,-1,0]"))
    assert.same({a = {true, false, {}}, ["b/c"] = {x = "\1y"}}, C.jsonload('{"a":[true,false,{}],"b\\/c":{"x":"\\u0001\'\\u0001y"}}'))
    assert.same({}, C.jsonload("[]"))
    -- valid JSON it refuses is still read, by cjson
    assert.same({1, 2}, pickle.loads("[1 , 2]"))
    assert.same({0}, pickle.loads("[-0]"))
    assert.same({a = 1}, pickle.loads('{"a" : 1, "b": null}'))
    pickle_error(pickle.loads, "[1,]")
    pickle_error(pickle.loads, '["\\u0001q"]')
  end)

  it("writes pickle.dumps of plain data the same way, and only of data that travels as plain data", function()
    local t = strings()
    for i = 1, 50 do t[#t + 1] = -i * 1000003 end
    assert.equal(cjson.encode(t), pickle.dumps(t))
    assert.equal("string", type(pickle.dumps(sample())))
    local map = {}
    for i = 1, 2000 do map["key" .. i] = i end
    assert.equal(cjson.encode(map), pickle.dumps(map))
    assert.same(map, pickle.loads(pickle.dumps(map)))
    -- other keys, a metatable, a hole: not plain, and exact as ever
    local extra = {1, 2, 3, x = "y"}
    assert.same(extra, pickle.loads(pickle.dumps(extra)))
    local holed = {1, nil, 3}
    local back = pickle.loads(pickle.dumps(holed))
    assert.is_true(back[1] == 1 and back[2] == nil and back[3] == 3)
    local mt = {}
    local with_mt = setmetatable({4, 5}, mt)
    pickle.register("spec.flat_mt", mt)
    assert.equal(mt, getmetatable(pickle.loads(pickle.dumps(with_mt))))
    -- a table that travels by name (a registered class, a module) stays that one table
    local named = {7, 8, 9}
    pickle.register("spec.flat_named", named)
    assert.equal(named, pickle.loads(pickle.dumps(named)))
    assert.equal(named, pickle.loads(pickle.dumps({list = named})).list)
    package.loaded["spec_flat_module"] = {"a", "b"}
    local m = package.loaded["spec_flat_module"]
    assert.equal(m, pickle.loads(pickle.dumps(m)))
    assert.equal(m, pickle.loads(pickle.dumps({m}))[1])
    package.loaded["spec_flat_module"] = nil
  end)

  it("files a chunk of results into its own slots only, and exactly n of them", function()
    local out = {"a", "b", "c", "d", "e", "f"}
    assert.is_true(C.jsonload("[7,8,9]", out, 2, 3))
    assert.same({"a", "b", 7, 8, 9, "f"}, out)
    out = {"a", "b", "c", "d", "e", "f"}
    assert.is_true(C.jsonload('[{"x":1},[2],"s"]', out, 2, 3))
    assert.same({"a", "b", {x = 1}, {2}, "s", "f"}, out)
    out = {"a", "b", "c", "d", "e", "f"}
    assert.is_false(C.jsonload("[7,8,9,10,11]", out, 2, 3))   -- more than n: stops at n
    assert.equal("f", out[6])
    assert.is_false(C.jsonload("[7,8]", out, 2, 3))
    assert.is_false(C.jsonload('{"a":1}', out, 2, 3))
    -- through loads_into: the short list leaves its missing items nil, as cjson's path does
    out = {"a", "b", "c", "d", "e", "f"}
    pickle.loads_into("[7,8]", out, 2, 3)
    assert.same({"a", "b", 7, 8}, {out[1], out[2], out[3], out[4]})
    assert.is_nil(out[5])
    assert.equal("f", out[6])
  end)

  it("survives random damage: a value or a pickle error, never a crash", function()
    local t = sample()
    for i = 1, 200 do t[#t + 1] = "s/" .. i end
    for i = 1, 50 do t[#t + 1] = {id = i, x = i / 7, ok = true, raw = "\255\1", sub = {i, {}}} end
    local s = pickle.dumps(t)
    local r = G.rng(5)
    local alphabet = '0123456789-,[]{}:tfnu .e"\\/'
    for _, junk in ipairs{'["a', '["', '[1,"', '["\\"]', '{"', '{"a":', '[{"a":1}', '["\\u00'} do
      pickle_error(pickle.loads, junk)
    end
    for _ = 1, 1000 do
      local i, j = r(#s), r(#alphabet)
      local m = s:sub(1, i - 1) .. alphabet:sub(j, j) .. s:sub(i + 1)
      local ok, e = pcall(pickle.loads, m)
      assert.is_true(ok or lmp.is_error(e, "pickle"), tostring(e))
      local out = {}
      ok, e = pcall(pickle.loads_into, m, out, 0, #t)
      assert.is_true(ok or lmp.is_error(e, "pickle"), tostring(e))
      for k in pairs(out) do assert.is_true(k >= 1 and k <= #t, "key " .. tostring(k)) end
    end
  end)

  it("goes through a JSON pool both ways, integers staying integers", function()
    local pool = lmp.Pool{processes = 2, codec = "json"}
    local t = sample()
    local got = pool:map(function(x) return -x end, t)
    local kinds = pool:map(function(x) return math.type and math.type(x) or "number" end, {1, LIM, -LIM})
    local strs = strings()
    local echoed = pool:map(function(x) return x end, strs)
    local recs = {}
    for i = 1, 500 do recs[i] = {id = i, w = i * 0.5, tags = {"a", "b/" .. i}} end
    local recs_back = pool:map(function(x) x.seen = true; return x end, recs)
    pool:terminate()
    assert.equal(#t, #got)
    for i = 1, #t do assert.equal(-t[i], got[i]) end
    for i = 1, #strs do assert.equal(strs[i], echoed[i]) end
    assert.same(has_int and {"integer", "integer", "integer"} or {"number", "number", "number"}, kinds)
    for i = 1, #recs do
      recs[i].seen = true
      assert.is_true(H.deep_equal(recs[i], recs_back[i]), "record " .. i)
    end
  end)
end)
