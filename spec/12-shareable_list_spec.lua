-- lmp.ShareableList: Python's multiprocessing.shared_memory.ShareableList.
local lmp = require "lmp"
local H = require "helper"
local S = require "helpers.sync"

local is54 = math.type ~= nil

-- This process's lmp names in /dev/shm, so each test can check it leaves none.
local function own_names() return S.shm_names(H.getpid()) end

local function attach(name) return lmp.ShareableList(nil, {name = name}) end

local function same_list(expected, n, sl)
  assert.equal(n, #sl)
  for i = 1, n do assert.equal(expected[i], sl[i]) end
end

describe("lmp.ShareableList", function()
  local before
  before_each(function() before = own_names() end)
  after_each(function()
    collectgarbage() collectgarbage()
    assert.equal(before, own_names())     -- no /dev/shm leftovers
  end)

  -- CPython Lib/test/_test_multiprocessing.py, _TestSharedMemory.
  it("test_shared_memory_ShareableList_basics", function()
    local sl = lmp.ShareableList({"howdy", "HoWdY", -273.154, 100, nil, true, 42}, {n = 7})
    -- __repr__ names the block and shows the values
    assert.truthy(tostring(sl):find(sl.name, 1, true))
    assert.truthy(tostring(sl):find('{"howdy", "HoWdY", -273.154, 100, nil, true, 42}', 1, true))
    -- index out of range, get and set
    assert.error_matches(function() return sl[8] end, "index 8 out of range %(1..7")
    assert.error_matches(function() sl[8] = 2 end, "index 8 out of range")
    -- assigning a string of the same size keeps the slot's storage
    sl[1] = "howdy"
    assert.equal(8, sl:capacity(1))
    assert.equal(7, #sl)
    -- index()
    assert.error_matches(function() sl:index("100") end, '"100" is not in the list')
    assert.equal(4, sl:index(100))
    assert.equal("howdy", sl[1])
    assert.equal(true, sl[-2])
    same_list({"howdy", "HoWdY", -273.154, 100, nil, true, 42}, 7, sl)
    -- modifying, changing a slot's type
    sl[4] = 42
    assert.equal(42, sl[4])
    sl[5] = "some"
    assert.equal("some", sl[5])
    assert.error_matches(function() sl[5] = "far too many" end, "exceeds available storage")
    assert.equal("some", sl[5])
    sl[1] = "encodés"                              -- exactly 8 bytes of UTF-8
    assert.equal("encodés", sl[1])
    assert.equal("HoWdY", sl[2])                   -- no spillage
    assert.error_matches(function() sl[1] = "encodées" end, "exceeds available storage")
    assert.equal("HoWdY", sl[2])
    assert.error_matches(function() sl[2] = "123456789" end, "exceeds available storage")
    assert.equal("HoWdY", sl[2])
    -- count()
    assert.equal(2, sl:count(42))
    assert.equal(1, sl:count("HoWdY"))
    assert.equal(0, sl:count("adios"))
    -- a duplicate under a chosen name
    local dup_name = "/lmp-spec-shl-" .. H.getpid() .. "-" .. math.random(1e6)
    local copy = lmp.ShareableList(sl, {name = dup_name})
    assert.equal(dup_name, copy.name)
    assert.are_not.equal(sl.name, copy.name)
    same_list(sl:totable(), 7, copy)
    copy[-1] = 77
    assert.equal(77, copy[-1])
    assert.are_not.equal(77, sl[-1])
    copy:close()
    assert.has_error(function() attach(dup_name) end)   -- its creator unlinked it
    -- a second handle on the same list
    local tethered = attach(sl.name)
    assert.equal(sl.name, tethered.name)
    tethered[-1] = 880
    assert.equal(880, sl[-1])
    tethered:close()
    sl:close()
    -- an empty list
    local empty = lmp.ShareableList()
    assert.equal(0, #empty)
    assert.equal(0, empty:count("any"))
    assert.error_matches(function() empty:index(nil) end, "nil is not in the list")
    empty:close()
  end)

  it("test_shared_memory_ShareableList_pickling", function()
    local sl = lmp.ShareableList{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
    local back = lmp.pickle.loads(lmp.pickle.dumps(sl))
    assert.equal("userdata", type(back))
    assert.equal(9, back[-1])
    assert.are_not.equal(sl, back)
    back[5] = "changed"
    assert.equal("changed", sl[5])
    sl[4] = "newvalue"
    assert.equal("newvalue", back[4])
    -- a list pickles as its name: the size does not grow with the list
    local big = {}
    for i = 1, 400 do big[i] = i - 1 end
    local larger = lmp.ShareableList(big)
    local a, b = lmp.pickle.dumps(sl), lmp.pickle.dumps(larger)
    assert.equal(#a - #sl.name, #b - #larger.name)
    larger:close()
    back:close()
    sl:close()
  end)

  it("round-trips every value type, and a slot may change type on assignment", function()
    local values = {0, -1, -2 ^ 31, 2 ^ 53, -2 ^ 53, 1.5, -273.154, 1 / 0, -1 / 0,
                    true, false, "", "a\0b", "\0\0", ("x"):rep(100),
                    "tail\0"}   -- Python's loses trailing NULs (rstrip); lmp keeps the length
    if is54 then
      values[#values + 1] = math.maxinteger
      values[#values + 1] = math.mininteger
      values[#values + 1] = 9007199254740993     -- 2^53 + 1, exact as an integer
    end
    local n = #values
    values[n + 1], values[n + 2] = nil, 0 / 0     -- nil and nan
    local sl = lmp.ShareableList(values, {n = n + 2})
    for i = 1, n + 1 do
      assert.equal(values[i], sl[i])
      if is54 and type(values[i]) == "number" then
        assert.equal(math.type(values[i]), math.type(sl[i]))
      end
    end
    assert.is_true(sl[n + 2] ~= sl[n + 2])        -- nan
    local copy = sl:totable()
    for i = 1, n + 1 do assert.equal(values[i], copy[i]) end
    -- an 8-byte slot takes any number, boolean, nil or a string of <= 8 bytes
    for _, v in ipairs{1.25, true, false, "12345678", -7, "", 3} do
      sl[1] = v
      assert.equal(v, sl[1])
    end
    sl[1] = nil
    assert.is_nil(sl[1])
    sl:close()
  end)

  it("raises clearly on a bad index, a too-long string or a value it cannot hold", function()
    local sl = lmp.ShareableList{1, "abc", 3}
    for _, i in ipairs{0, 4, -4, 100} do
      assert.error_matches(function() return sl[i] end, "index " .. tostring(i):gsub("%-", "%%-") .. " out of range %(1..3")
      assert.error_matches(function() sl[i] = 1 end, "out of range")
    end
    assert.error_matches(function() return sl[1.5] end, "out of range")
    assert.error_matches(function() sl.x = 1 end, "index must be a number")
    assert.is_nil(sl.nothing)
    assert.equal(3, sl[-1])
    assert.equal(1, sl[-3])
    assert.error_matches(function() sl[2] = ("y"):rep(9) end,
      "slot 2: a string of 9 bytes exceeds available storage %(8 bytes%)")
    assert.error_matches(function() sl[3] = {} end, "slot 3 cannot hold a table")
    assert.error_matches(function() sl[3] = print end, "slot 3 cannot hold a function")
    assert.error_matches(function() sl:index(7) end, "7 is not in the list")
    assert.error_matches(function() sl:index(false) end, "false is not in the list")
    -- a list is checked before anything is created
    local n0 = own_names()
    assert.error_matches(function() lmp.ShareableList{1, {}} end, "slot 2 cannot hold a table")
    assert.equal(n0, own_names())
    assert.has_error(function() lmp.ShareableList({1}, {name = "no-slash"}) end)
    assert.has_error(function() lmp.ShareableList({1}, {n = -1}) end)
    assert.error_matches(function() attach("/lmp-spec-shl-missing") end, "no shared memory block")
    local m = lmp.shared_memory(64)             -- not a ShareableList
    assert.error_matches(function() attach(m:name()) end, "is not an lmp.ShareableList")
    m:close()
    sl:close()
    local ok, e = pcall(function() return sl[1] end)
    assert.is_false(ok)
    assert.equal("closed", e.kind)
    assert.equal("lmp.ShareableList (closed)", tostring(sl))
  end)

  it("sizes string slots like Python, or by the capacity option", function()
    local sl = lmp.ShareableList{"", "1234567", "12345678", 1}
    assert.same({8, 8, 16, 8}, {sl:capacity(1), sl:capacity(2), sl:capacity(3), sl:capacity(4)})
    sl:close()
    sl = lmp.ShareableList({"a", 2, nil}, {n = 3, capacity = 20})
    assert.same({24, 24, 24}, {sl:capacity(1), sl:capacity(2), sl:capacity(3)})
    sl[3] = ("z"):rep(24)
    assert.equal(("z"):rep(24), sl[3])
    sl:close()
    sl = lmp.ShareableList({"a", "b"}, {capacity = {100}})
    assert.same({104, 8}, {sl:capacity(1), sl:capacity(2)})
    sl:close()
    assert.error_matches(function() lmp.ShareableList({1}, {capacity = -1}) end, "capacity of slot 1")
  end)

  it("is unlinked when its creator closes or collects it, unless persist = true", function()
    local sl = lmp.ShareableList{1}
    local name = sl.name
    local other = attach(name)
    other:close()                                -- an attacher never unlinks
    attach(name):close()
    sl:close()
    assert.equal(name, sl.name)                  -- still readable, as Python's
    assert.error_matches(function() attach(name) end, "its creator closed it")
    sl = lmp.ShareableList{1}
    name = sl.name
    sl = nil   -- luacheck: ignore
    collectgarbage() collectgarbage()
    assert.has_error(function() attach(name) end)
    local p = lmp.ShareableList({1}, {persist = true})
    name = p.name
    p:close()
    local again = attach(name)
    assert.equal(1, again[1])
    assert.is_true(again:unlink())
    assert.is_false(again:unlink())
    again:close()
  end)

  for _, method in ipairs(S.methods) do
    it("shares writes both ways with a child given it in args (" .. method .. ")", function()
      local t = S.run([==[
local sl = lmp.ShareableList({1, "", nil, 0.5}, {n = 4})
local e1, e2, done = lmp.Event(), lmp.Event(), lmp.Event()
local p = ctx.Process{target = function(l, a, b, d)
  l[1] = -5; l[2] = "child"; l[3] = true
  a:set()
  assert(b:wait(10))
  l[4] = l[4] * 2              -- the parent's write, seen here
  d:set()
end, args = {sl, e1, e2, done}}
p:start()
assert(e1:wait(10))
out("seen", tostring(sl[1]) .. "," .. sl[2] .. "," .. tostring(sl[3]))
sl[4] = 21.5
e2:set()
assert(done:wait(10))
p:join(10)
out("back", sl[4])
out("code", p.exitcode)
out("pid", lmp.current_process().pid)
]==], method)
      assert.equal("-5,child,true", t.seen)
      assert.equal(43, tonumber(t.back))
      assert.equal("0", t.code)
      assert.equal(0, S.shm_names(t.pid))
    end)
  end

  it("attaches by name in a spawned child, and travels through a Queue and a Pipe", function()
    local t = S.run([==[
local sl = lmp.ShareableList({0, 0, 0, "", 2 ^ 53, -1 / 0, false, "a\0b"}, {capacity = 16})
local q = lmp.Queue()
local a, b = lmp.Pipe()
local p = ctx.Process{target = function(name, queue, conn)
  local byname = lmp.ShareableList(nil, {name = name})
  byname[1] = 1
  local viaq = queue:get(10)
  viaq[2] = 2
  local viap = conn:recv(10)
  viap[3] = 3
  viap[4] = viap[5] == 2 ^ 53 and viap[6] == -1 / 0 and viap[7] == false
            and viap[8] == "a\0b" and "types ok" or "types wrong"
end, args = {sl.name, q, b}}
p:start()
q:put(sl)
a:send(sl)
p:join(20)
out("got", table.concat({sl[1], sl[2], sl[3], sl[4]}, ","))
out("code", p.exitcode)
out("pid", lmp.current_process().pid)
]==], "spawn")
    assert.equal("1,2,3,types ok", t.got)
    assert.equal("0", t.code)
    assert.equal(0, S.shm_names(t.pid))
  end)
end)
