-- lmp.Queue, JoinableQueue, SimpleQueue.
local lmp = require "lmp"
local S = require "helpers.sync"

local function err_kind(f, ...)
  local ok, e = pcall(f, ...)
  if ok then return "no error" end
  return lmp.is_error(e) and e.kind or tostring(e)
end

describe("lmp.Queue", function()
  it("keeps FIFO order and carries nil, tables and binary strings", function()
    local q = lmp.Queue()
    q:put(1); q:put(nil); q:put({a = {1, 2}, b = "x"}); q:put("\0\255")
    assert.equal(4, q:qsize())
    assert.equal(1, q:get())
    assert.is_nil(q:get(1))
    local t = q:get(1)
    assert.equal(2, t.a[2]); assert.equal("x", t.b)
    assert.equal("\0\255", q:get(0))
    assert.is_true(q:empty())
  end)

  it("raises empty on a timed-out or non-blocking get", function()
    local q = lmp.Queue()
    assert.equal("empty", err_kind(q.get, q, 0))
    assert.equal("empty", err_kind(q.get_nowait, q))
    local t0 = lmp.time()
    assert.equal("empty", err_kind(q.get, q, 0.1))
    assert.is_true(lmp.time() - t0 >= 0.09)
  end)

  it("raises full past maxsize and reports full()", function()
    local q = lmp.Queue(2)
    assert.equal(2, q:maxsize())
    q:put("a"); q:put("b", 0)
    assert.is_true(q:full())
    assert.equal("full", err_kind(q.put, q, "c", 0))
    assert.equal("full", err_kind(q.put, q, "c", 0.05))
    assert.equal("full", err_kind(q.put_nowait, q, "c"))
    assert.equal("a", q:get())
    q:put("c", 0)
    assert.equal("b", q:get()); assert.equal("c", q:get())
  end)

  it("carries items larger than its ring, and uses the binary codec on request", function()
    local q = lmp.Queue(0, {capacity = 4096, codec = "binary"})
    local big = string.rep("0123456789", 100000)
    q:put({big, 1.5})
    q:put("small")
    local v = q:get(5)
    assert.equal(#big, #v[1]); assert.equal(big, v[1]); assert.equal(1.5, v[2])
    assert.equal("small", q:get(5))
  end)

  it("blocks when its ring is full of bytes, not only of items", function()
    local q = lmp.Queue(0, {capacity = 1024})
    local n = 0
    while err_kind(q.put, q, string.rep("x", 100), 0) == "no error" do n = n + 1 end
    assert.is_true(n >= 5 and n <= 10)
    q:get()
    q:put(string.rep("x", 100), 0)
  end)

  it("rejects bad arguments and unpicklable values, and closes", function()
    assert.has_error(function() lmp.Queue(1.5) end)
    assert.has_error(function() lmp.Queue(0, {codec = "xml"}) end)
    assert.has_error(function() lmp.Queue(0, {capacity = 1}) end)
    local q = lmp.Queue()
    assert.equal("pickle", err_kind(q.put, q, coroutine.create(function() end)))
    assert.has_error(function() q:get(-1) end)
    q:close()
    assert.equal("closed", err_kind(q.put, q, 1))
    q:close()
  end)

  for _, method in ipairs(S.methods) do
    it("delivers every item once, FIFO per producer, with 3 producers and 2 consumers (" .. method .. ")", function()
      local t = S.run([==[
local q, res = lmp.Queue(50), lmp.Queue()
local N = 2000
local ps = {}
for p = 1, 3 do
  ps[#ps + 1] = ctx.Process{target = function(qq)
    for i = 1, N do qq:put({p, i}, 10) end
  end, args = {q}}
end
for c = 1, 2 do
  ps[#ps + 1] = ctx.Process{target = function(qq, r)
    local last, count, ok = {0, 0, 0}, 0, true
    while true do
      local v = qq:get(10)
      if v == "stop" then break end
      if v[2] <= last[v[1]] then ok = false end
      last[v[1]] = v[2]
      count = count + 1
    end
    r:put({count, ok})
  end, args = {q, res}}
end
for _, p in ipairs(ps) do p:start() end
for p = 1, 3 do ps[p]:join(30) end
q:put("stop"); q:put("stop")
local total, ok = 0, true
for _ = 1, 2 do local v = res:get(30); total = total + v[1]; ok = ok and v[2] end
for p = 4, 5 do ps[p]:join(10) end
out("total", total) out("fifo", ok) out("left", q:qsize())
]==], method)
      assert.equal("6000", t.total)
      assert.equal("true", t.fifo)
      assert.equal("0", t.left)
    end)
  end

  it("survives producers SIGKILLed in a loop while consumers read", function()
    local t = S.run([==[
local R = 12
local q, res = lmp.Queue(0, {capacity = 8192}), lmp.Queue()
local done = lmp.Array("int64", R)      -- last seq whose put returned
local cons = {}
for c = 1, 2 do
  cons[c] = ctx.Process{target = function(qq, r)
    local last, got, sum, whole = {}, {}, {}, true
    for p = 1, R do last[p], got[p], sum[p] = 0, 0, 0 end
    while true do
      local v = qq:get(20)
      if v == "stop" then break end
      local p, i = v[1], v[2]
      if #v[3] ~= i % 300 or v[3] ~= string.rep("x", i % 300) or i <= last[p] then
        whole = false
      end
      last[p], got[p], sum[p] = i, got[p] + 1, sum[p] + i
    end
    r:put({got, sum, whole})
  end, args = {q, res}}
  cons[c]:start()
end
local ev = lmp.Event()
for p = 1, R do
  ev:clear()
  local prod = ctx.Process{target = function(qq, d, e)
    local i = 0
    while true do
      i = i + 1
      qq:put({p, i, string.rep("x", i % 300)})
      d[p] = i
      if i == 50 then e:set() end
    end
  end, args = {q, done, ev}}
  prod:start()
  ev:wait(10)
  lmp.sleep(0.01 + 0.003 * p)
  prod:kill()
  prod:join(10)
end
q:put("stop"); q:put("stop")
local got, sum, whole = {}, {}, true
for p = 1, R do got[p], sum[p] = 0, 0 end
for _ = 1, 2 do
  local v = res:get(30)
  whole = whole and v[3]
  for p = 1, R do got[p] = got[p] + v[1][p]; sum[p] = sum[p] + v[2][p] end
end
local exact, extra = true, 0
for p = 1, R do
  local n = got[p]
  if not (n == done[p] or n == done[p] + 1) or sum[p] ~= n * (n + 1) / 2 then
    exact = false
  end
  extra = extra + n - done[p]
end
for c = 1, 2 do cons[c]:join(10) end
out("whole", whole) out("exact", exact) out("items", got[1])
out("recoveries", q:recoveries())
q:put("after", 1)
out("after", q:get(1))
]==], "fork", 60)
    assert.equal("true", t.whole)
    assert.equal("true", t.exact)
    assert.equal("after", t.after)
    assert.is_true(tonumber(t.items) >= 50)
  end)
end)

describe("lmp.JoinableQueue", function()
  it("counts unfinished tasks, joins, and refuses an extra task_done", function()
    local q = lmp.JoinableQueue()
    q:put(1); q:put(2)
    assert.equal("timeout", err_kind(q.join, q, 0.05))
    q:get(); q:task_done()
    q:get(); q:task_done()
    q:join(1)
    assert.error_matches(function() q:task_done() end, "too many times")
  end)

  for _, method in ipairs(S.methods) do
    it("join returns once workers in other processes finished every task (" .. method .. ")", function()
      local t = S.run([==[
local q, sum = lmp.JoinableQueue(), lmp.Value("int64", 0)
local ps = {}
for w = 1, 2 do
  ps[w] = ctx.Process{target = function(qq, s)
    while true do
      local v = qq:get(10)
      if v == nil then qq:task_done() return end
      s:add(v)
      qq:task_done()
    end
  end, args = {q, sum}, daemon = true}
  ps[w]:start()
end
for i = 1, 100 do q:put(i) end
q:join(20)
out("sum", sum.value)
q:put(nil); q:put(nil)
q:join(10)
for w = 1, 2 do ps[w]:join(10) end
]==], method)
      assert.equal("5050", t.sum)
    end)
  end
end)

describe("lmp.SimpleQueue", function()
  it("puts and gets, empty and close", function()
    local q = lmp.SimpleQueue()
    assert.is_true(q:empty())
    q:put({1, 2})
    assert.is_false(q:empty())
    assert.equal(2, q:get(1)[2])
    assert.equal("empty", err_kind(q.get, q, 0))
    q:close()
  end)

  for _, method in ipairs(S.methods) do
    it("passes as a Process argument (" .. method .. ")", function()
      local t = S.run([==[
local q = lmp.SimpleQueue()
local p = ctx.Process{target = function(qq) for i = 1, 1000 do qq:put(i) end end,
                      args = {q}}
p:start()
local s = 0
for _ = 1, 1000 do s = s + q:get(10) end
p:join(10)
out("sum", s)
]==], method)
      assert.equal("500500", t.sum)
    end)
  end
end)

describe("queues handed to a pool", function()
  for _, method in ipairs(S.methods) do
    it("pass as pool initargs and work in every worker (" .. method .. ")", function()
      local t = S.run([==[
local q, jq, sq = lmp.Queue(), lmp.JoinableQueue(), lmp.SimpleQueue()
local pool = ctx.Pool{processes = 2, initargs = {q, jq, sq},
  initializer = function(a, b, c) _G.Q, _G.JQ, _G.SQ = a, b, c end}
pool:map(function(i) Q:put(i) JQ:put(i * 10) SQ:put(-i) end, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 1)
local s, js, ss = 0, 0, 0
for _ = 1, 10 do
  s = s + q:get(10)
  js = js + jq:get(10)
  jq:task_done()
  ss = ss + sq:get(10)
end
jq:join(10)
pool:close() pool:join()
out("sum", s) out("jsum", js) out("ssum", ss)
out("empty", tostring(q:empty()))
]==], method, 60)
      assert.equal("55", t.sum)
      assert.equal("550", t.jsum)
      assert.equal("-55", t.ssum)
      assert.equal("true", t.empty)
    end)
  end
end)
