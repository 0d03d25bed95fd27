-- lmp.wait and lmp.as_completed over many kinds of object at once:
-- connections, listeners and the AsyncResults of a Pool, a ThreadPool and
-- a RedisPool (like Python's multiprocessing.connection.wait and
-- concurrent.futures' wait(FIRST_COMPLETED) / as_completed). Where CPython
-- has a test (Lib/test/_test_multiprocessing.py TestWait,
-- Lib/test/test_concurrent_futures/test_wait.py WaitTests,
-- test_as_completed.py AsCompletedTests), the `it` names it.
--
-- Tasks that must stay unfinished wait at a gate: a Unix socket Listener
-- of the test; the task connects and returns once the test sends it a
-- value, so no test depends on how long anything takes.
local lmp = require "lmp"
local H = require "helper"
local err_of = H.err_of
local CF = require "helpers.conformance"
local L = lmp.connection

local function set(list)
  local s = {}
  for _, x in ipairs(list) do s[x] = true end
  return s
end

local function collect(iter)
  local out = {}
  for x in iter do out[#out + 1] = x end
  return out
end

local function tmp_path()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".sock"
end

-- The task a gate holds: returns v once the gate sends it something.
local function gated(path, v)
  local c = require("lmp").connection.Client(path, {timeout = 60})
  c:recv(60)
  c:close()
  return v
end

local function quick(x) return x * 2 end

local Gate = {}
Gate.__index = Gate
local function new_gate()
  local path = tmp_path()
  return setmetatable({path = path, l = L.Listener(path), held = 0}, Gate)
end
-- Releases n tasks (each connects when it starts; waits up to 30 s).
function Gate:release(n)
  for _ = 1, n do
    local c = self.l:accept(30)
    c:send("go")
    c:close()
  end
end
function Gate:close() self.l:close() end

-- One Pool and one ThreadPool for the whole file, the Pool first: lmp
-- refuses to fork while threads run (the one Process below is spawned).
local pool, tpool
setup(function()
  pool = lmp.Pool{processes = 2}
  tpool = lmp.ThreadPool{threads = 2}
end)
teardown(function()
  if pool then pool:terminate() end
  if tpool then tpool:terminate() end
end)

describe("lmp.wait", function()

  it("takes listeners: ready while a connection waits to be accepted", function()
    local l = L.Listener()
    local a, b = lmp.Pipe()
    assert.same({}, lmp.wait({l, a}, 0))
    local c = L.Client(l.address, {timeout = 5})
    assert.same({l}, lmp.wait({a, l}, 5))
    local s = l:accept(5)
    assert.same({}, lmp.wait({l, a}, 0))
    -- a listener and a connection ready together come in list order
    local c2 = L.Client(l.address, {timeout = 5})
    b:send("x")
    assert.is_true(H.wait_until(function() return #lmp.wait({l, a}, 0) == 2 end, 5) ~= nil)
    assert.same({a, l}, lmp.wait({a, l}, 0))
    for _, x in ipairs({c, c2, s, a, b, l}) do x:close() end
  end)

  it("TestWait.test_wait_timeout: waits its timeout and returns {} when nothing is ready", function()
    local g = new_gate()
    local r = pool:apply_async(gated, {g.path, 1})
    local a, b = lmp.Pipe()
    local t0 = lmp.time()
    assert.same({}, lmp.wait({a, r}, 0.2))
    CF.honoured(lmp.time() - t0)
    b:send(nil)
    assert.same({a}, lmp.wait({a, r}, 20))
    g:release(1)
    assert.same({r}, lmp.wait({r}, 20))
    assert.same({a, r}, lmp.wait({a, b, r}, 20))
    assert.equal(1, r:get(0))
    a:close() b:close() g:close()
  end)

  it("WaitTests.test_first_completed: returns the result that finished, not the running one", function()
    local g = new_gate()
    for _, p in ipairs({pool, tpool}) do
      local f1 = p:apply_async(quick, {21})
      local f2 = p:apply_async(gated, {g.path, "slow"})
      local done = lmp.wait({f1, f2}, 20)
      assert.same({f1}, done)
      assert.is_false(f2:ready())
      assert.equal(42, f1:get(0))
      g:release(1)
      assert.equal("slow", f2:get(20))
    end
    g:close()
  end)

  it("WaitTests.test_first_completed_some_already_completed: finished and cancelled results are ready at once", function()
    local g = new_gate()
    local busy = {tpool:apply_async(gated, {g.path, 1}), tpool:apply_async(gated, {g.path, 2})}
    local ok = tpool:apply_async(quick, {1})
    local queued = tpool:apply_async(quick, {2})
    local cancelled = queued:cancel()
    g:release(2)
    assert.equal(2, ok:get(20))
    -- not cancelled: it had been sent to a worker already, so it runs
    if not cancelled then assert.equal(4, queued:get(20)) end
    local slow = tpool:apply_async(gated, {g.path, 3})
    assert.same({ok, queued}, lmp.wait({ok, queued, slow}, 20))
    if cancelled then
      assert.is_true(lmp.is_error(err_of(queued.get, queued, 0), "cancelled"))
    end
    assert.is_false(slow:ready())
    g:release(1)
    for _, r in ipairs(busy) do r:get(20) end
    assert.equal(3, slow:get(20))
    g:close()
  end)

  it("runs the callbacks of the results it waits on", function()
    local got = {}
    local r = pool:apply_async(quick, {5}, {callback = function(v) got[#got + 1] = v end})
    local t = tpool:apply_async(function() error("boom") end, nil,
      {error_callback = function(e) got[#got + 1] = e.kind end})
    assert.is_true(H.wait_until(function() return #lmp.wait({r, t}, 1) == 2 end, 20) ~= nil)
    table.sort(got, function(x, y) return tostring(x) < tostring(y) end)
    assert.same({10, "remote"}, got)
  end)

  it("mixes pipes, processes, listeners and results; a result listed twice comes once", function()
    local g = new_gate()
    local a, b = lmp.Pipe()
    local l = L.Listener()
    local r1 = pool:apply_async(quick, {1})
    local r2 = tpool:apply_async(gated, {g.path, 2})
    assert.equal(2, r1:get(20))
    local p = lmp.get_context("spawn").Process{target = function() end}
    p:start()
    assert.is_true(p:join(20))
    assert.same({r1, p}, lmp.wait({r2, a, r1, l, p, r1}, 5))
    g:release(1)
    r2:get(20)
    b:send(1)
    assert.same({r2, a, r1, p}, lmp.wait({r2, a, r1, l, p}, 5))
    p:close()
    a:close() b:close() l:close() g:close()
  end)

  it("refuses what it cannot wait on, naming the argument", function()
    assert.matches("table expected", err_of(lmp.wait, 42))
    assert.matches("wait", err_of(lmp.wait, {{}}))
    assert.matches("timeout", err_of(lmp.wait, {}, -1))
    assert.matches("timeout", err_of(lmp.wait, {}, "1"))
    local l = L.Listener()
    l:close()
    assert.is_true(lmp.is_error(err_of(lmp.wait, {l}, 0), "closed"))
  end)
end)

describe("lmp.as_completed", function()

  it("AsCompletedTests.test_no_timeout: yields every result once, whatever its outcome", function()
    local rs = {
      pool:apply_async(quick, {21}),
      tpool:apply_async(quick, {3}),
      pool:apply_async(function() error("failed") end),
    }
    local seen = collect(lmp.as_completed(rs, 30))
    assert.equal(3, #seen)
    assert.same(set(rs), set(seen))
    assert.equal(42, rs[1]:get(0))
    assert.is_false(rs[3]:successful())
  end)

  it("yields results in the order they finish", function()
    local g = new_gate()
    local slow = tpool:apply_async(gated, {g.path, "slow"})
    local fast = pool:apply_async(quick, {1})
    local it = lmp.as_completed({slow, fast}, 30)
    assert.equal(fast, it())
    g:release(1)
    assert.equal(slow, it())
    assert.is_nil(it())
    g:close()
  end)

  it("AsCompletedTests.test_future_times_out: yields the finished ones, then raises timeout", function()
    local g = new_gate()
    for _, timeout in ipairs({0, 0.01}) do
      local done = {pool:apply_async(quick, {1}), pool:apply_async(function() error("x") end)}
      for _, r in ipairs(done) do r:wait(20) end
      local pending = tpool:apply_async(gated, {g.path, 0})
      local got = {}
      local ok, e = pcall(function()
        for r in lmp.as_completed({done[1], pending, done[2]}, timeout) do got[#got + 1] = r end
      end)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(e, "timeout"), tostring(e))
      assert.matches("1 (of 3) results unfinished", e.message, 1, true)
      assert.same(set(done), set(got))
      g:release(1)
      pending:get(20)
    end
    g:close()
  end)

  it("AsCompletedTests.test_duplicate_futures: a result listed three times is yielded once", function()
    local r = pool:apply_async(quick, {4})
    local seen = collect(lmp.as_completed({r, r, r}, 30))
    assert.same({r}, seen)
  end)

  it("takes connections too, yielding each once it is readable", function()
    local a, b = lmp.Pipe()
    local r = pool:apply_async(quick, {1})
    b:send("hi")
    local seen = collect(lmp.as_completed({a, r}, 30))
    assert.same(set{a, r}, set(seen))
    a:close() b:close()
    assert.matches("as_completed", err_of(lmp.as_completed, {{}}))
    assert.matches("timeout", err_of(lmp.as_completed, {}, -1))
  end)
end)

describe("lmp.wait and lmp.as_completed with a RedisPool", function()
  local RH = require "helpers.redis"
  local srv, worker, rpool
  setup(function()
    srv = RH.start()
    worker = RH.worker(srv, "waitq", {concurrency = 2})
    rpool = lmp.RedisPool{url = srv.url, queue = "waitq", timeout = 10}
  end)
  teardown(function()
    if rpool then rpool:terminate() end
    if worker then RH.stop_worker(worker) end
    if srv then srv:stop() end
  end)

  it("waits on a pipe, a Pool's, a ThreadPool's and a RedisPool's results in one call", function()
    local g = new_gate()
    local a, b = lmp.Pipe()
    local rr = rpool:apply_async(quick, {50})
    local rslow = rpool:apply_async(gated, {g.path, "redis slow"})
    local pr = pool:apply_async(gated, {g.path, "pool"})
    local tr = tpool:apply_async(gated, {g.path, "thread"})
    local all = {a, pr, tr, rr, rslow}
    -- the quick Redis task (a worker process picks it up) comes first
    assert.same({rr}, lmp.wait(all, 60))
    assert.equal(100, rr:get(0))
    b:send("pipe")
    assert.same({a, rr}, lmp.wait(all, 10))
    assert.equal("pipe", a:recv(5))
    g:release(3)
    local finished = {}
    for r in lmp.as_completed({pr, tr, rslow}, 60) do finished[#finished + 1] = r:get(0) end
    table.sort(finished)
    assert.same({"pool", "redis slow", "thread"}, finished)
    a:close() b:close() g:close()
  end)

  it("as_completed on RedisPool results alone, and its timeout", function()
    local rs = {}
    for i = 1, 4 do rs[i] = rpool:apply_async(quick, {i}) end
    local sum = 0
    for r in lmp.as_completed(rs, 60) do sum = sum + r:get(0) end
    assert.equal(20, sum)
    local g = new_gate()
    local held = rpool:apply_async(gated, {g.path, 1})
    local t0 = lmp.time()
    local e = err_of(function() for _ in lmp.as_completed({held}, 0.2) do end end)
    CF.honoured(lmp.time() - t0)
    assert.is_true(lmp.is_error(e, "timeout"), tostring(e))
    assert.same({}, lmp.wait({held}, 0))
    g:release(1)
    assert.same({held}, lmp.wait({held}, 60))
    g:close()
  end)
end)
