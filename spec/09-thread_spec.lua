-- lmp.ThreadPool (the Pool API over OS threads) and lmp.threadlocal.
local lmp = require "lmp"
local H = require "helper"
local err_of = H.err_of
local TH = require "lmp.thread"

local function spin(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

describe("lmp.ThreadPool", function()
  local tp
  setup(function() tp = lmp.ThreadPool{threads = 2} end)
  teardown(function() tp:terminate() end)

  it("has the Pool API: map, starmap, apply, imap, imap_unordered", function()
    assert.same({1, 4, 9, 16}, tp:map(function(x) return x * x end, {1, 2, 3, 4}))
    assert.same({3, 7}, tp:starmap(function(a, b) return a + b end, {{1, 2}, {3, 4}}))
    local k = 10
    assert.equal(15, tp:apply(function(x) return x + k end, {5}))
    local got = {}
    for v in tp:imap(function(x) return -x end, {1, 2, 3}) do got[#got + 1] = v end
    assert.same({-1, -2, -3}, got)
    local sum = 0
    for v in tp:imap_unordered(function(x) return x end, {1, 2, 3, 4}, 2) do sum = sum + v end
    assert.equal(10, sum)
  end)

  it("runs apply_async and map_async callbacks, driven by poll and fileno", function()
    local seen, errs = {}, {}
    local r1 = tp:apply_async(function(x) return x * 2 end, {21},
      {callback = function(v) seen[#seen + 1] = v end})
    local r2 = tp:map_async(function(x) return x + 1 end, {1, 2},
      {callback = function(v) seen[#seen + 1] = v end})
    local r3 = tp:apply_async(function() error("bad") end, {},
      {error_callback = function(e) errs[#errs + 1] = e end})
    assert.is_number(tp:fileno())
    assert.is_truthy(H.wait_until(function()
      tp:poll(0)
      return r1:ready() and r2:ready() and r3:ready()
    end, 10))
    assert.equal(42, r1:get(0))
    assert.same({2, 3}, r2:get(0))
    assert.equal(2, #seen)
    assert.equal(1, #errs)
    assert.is_true(lmp.is_error(errs[1], "remote"))
  end)

  it("copies values by pickle: a task cannot change the master's upvalues", function()
    local t = {n = 1}
    local r = tp:apply(function() t.n = 99 return t.n end)
    assert.equal(99, r)
    assert.equal(1, t.n)
  end)

  it("gives a remote error with the traceback and keeps serving", function()
    local e = err_of(tp.apply, tp, function() error("boom in a thread") end)
    assert.is_true(lmp.is_error(e, "remote"))
    assert.matches("boom in a thread", e.message)
    assert.matches("ThreadPoolWorker", e.message)
    assert.matches("traceback", e.traceback)
    assert.equal(2, tp:apply(function() return 2 end))
  end)

  it("runs CPU-bound tasks in parallel on the cores", function()
    -- Shown by what no machine speed or load can fake, rather than by
    -- comparing durations: each task computes, counts itself in, then
    -- keeps computing (no lock, no blocking call: a lock-free shared
    -- counter) until the other task has counted in too, and computes
    -- again. Tasks run one after the other (one thread, a lock around
    -- tasks, a lock held while Lua runs) can never both see the other:
    -- the first gives up after 20 s. So each task's own [start, end]
    -- interval, on the one monotonic clock, overlaps the other's.
    local arrived = lmp.Value("int32", 0, false)
    local n = 2e5
    local r = tp:map(function(a)
      local now = require("lmp").time
      local start = now()
      local s = spin(a.n)
      a.arrived:add(1)
      local deadline = now() + 20
      while a.arrived:get() < 2 and now() < deadline do spin(100) end
      local met = a.arrived:get() == 2
      s = s + spin(a.n)
      return {start = start, stop = now(), met = met, s = s}
    end, {{arrived = arrived, n = n}, {arrived = arrived, n = n}}, 1)
    assert.equal(2 * spin(n), r[1].s)
    assert.equal(2 * spin(n), r[2].s)
    assert.is_true(r[1].met, "task 1 ran without task 2 running")
    assert.is_true(r[2].met, "task 2 ran without task 1 running")
    assert.is_true(r[1].start < r[2].stop and r[2].start < r[1].stop,
      string.format("[%.6f, %.6f] and [%.6f, %.6f] do not overlap",
        r[1].start, r[1].stop, r[2].start, r[2].stop))
    arrived:close()
  end)

  it("runs an initializer in each thread, with initargs", function()
    local p = lmp.ThreadPool{threads = 2, initializer = function(v) WORKER_TAG = v end,
                             initargs = {"tagged"}}
    assert.same({"tagged", "tagged"}, p:map(function() return WORKER_TAG end, {1, 2}))
    p:close()
    assert.is_true(p:join(10))
    assert.is_nil(rawget(_G, "WORKER_TAG"))   -- set in the threads' states only
  end)

  it("raises closed after close and terminate; join never hangs", function()
    local p = lmp.ThreadPool{threads = 2}
    p:close()
    assert.is_true(lmp.is_error(err_of(p.apply, p, function() end), "closed"))
    assert.is_true(p:join(10))
    local busy = lmp.ThreadPool{threads = 1}
    busy:apply_async(function() local t = os.clock() while os.clock() - t < 0.5 do end end)
    local t0 = lmp.time()
    busy:terminate()
    assert.is_true(lmp.time() - t0 < 5)
  end)

  it("raises ordinary errors for bad arguments", function()
    assert.has_error(function() lmp.ThreadPool("5") end)
    assert.has_error(function() lmp.ThreadPool(0) end)
    assert.has_error(function() lmp.ThreadPool{threads = 0} end)
    assert.has_error(function() tp:map(5, {}) end)
  end)
end)

describe("fork safety with threads", function()
  it("refuses to fork while threads run, unless allow_threads", function()
    local tp = lmp.ThreadPool{threads = 1}
    assert.is_true(TH._live_threads() >= 1)
    local e = err_of(function() lmp.Process{target = function() end}:start() end)
    assert.matches("refusing to fork while", tostring(e))
    local p = lmp.Process{target = function()
      -- the parent's ThreadPool has no threads here: using it raises closed
      local ok, err = pcall(tp.apply, tp, function() return 1 end)
      os.exit((not ok and lmp.is_error(err, "closed")) and 0 or 3)
    end, allow_threads = true}
    p:start()
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    tp:close()
    assert.is_true(tp:join(10))
    assert.is_truthy(H.wait_until(function() return TH._live_threads() == 0 end, 5))
    local p2 = lmp.Process{target = function() end}
    p2:start()
    assert.is_true(p2:join(10))
  end)
end)

describe("lmp.threadlocal", function()
  it("keeps fields apart per coroutine", function()
    local loc = lmp.threadlocal()
    loc.x = "main"
    local co = coroutine.create(function()
      assert.is_nil(loc.x)
      loc.x = "co"
      coroutine.yield(loc.x)
      return loc.x
    end)
    assert.same({true, "co"}, {coroutine.resume(co)})
    assert.equal("main", loc.x)
    assert.same({true, "co"}, {coroutine.resume(co)})
  end)

  it("keeps fields apart per OS thread", function()
    local tp = lmp.ThreadPool{threads = 2}
    local r = tp:map(function(i)
      local l = require("lmp").threadlocal()
      l.v = i
      return l.v
    end, {1, 2, 3})
    assert.same({1, 2, 3}, r)
    tp:terminate()
  end)

  it("drops a coroutine's fields with the coroutine (100,000 coroutines)", function()
    local loc = lmp.threadlocal()
    collectgarbage()
    local before = collectgarbage("count")
    for i = 1, 100000 do
      local co = coroutine.wrap(function() loc.data = {i, string.rep("x", 20)} end)
      co()
      if i % 10000 == 0 then collectgarbage() end
    end
    collectgarbage()
    collectgarbage()
    local grown = collectgarbage("count") - before
    assert.is_true(grown < 2000, "memory grew by " .. grown .. " KiB")
  end)
end)
