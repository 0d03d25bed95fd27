-- Conformance: CPython's _TestZZZNumberOfObjects (Lib/test/
-- _test_multiprocessing.py), adapted. Python runs it after every other
-- manager test and checks the manager holds no leftover shared objects
-- (its proxies are reference counted). lmp's manager objects are not
-- reference counted (they live until the server stops, docs/api/
-- manager.md), so the adaptation checks what leaks in lmp would look like:
-- after creating and dropping many pools, queues, locks, shared blocks,
-- processes and managers, this process's fd count, its children and its
-- /dev/shm names are back where they were.
local lmp = require "lmp"
local H = require "helper"
local S = require "helpers.sync"
local TH = require "lmp.thread"

local TO = 10
local ROUNDS = 30

local function gc()
  collectgarbage()
  collectgarbage()
end

-- {fds =, children =, shm =, threads =} of this process after a full GC.
local function snapshot()
  require("lmp.process")._reap_all()   -- children of earlier specs that ended
  gc()
  return {fds = H.count_fds(), children = #H.children(),
          shm = S.shm_names(H.getpid()), threads = TH._live_threads()}
end

local function describe_snap(s)
  return string.format("fds %d, children %d, /dev/shm names %d, threads %d",
    s.fds, s.children, s.shm, s.threads)
end

-- Waits (bounded) until the snapshot is back to `before`, or below it (a
-- leak is growth: objects of earlier specs may be collected meanwhile, and
-- their fds closed); fails with both.
local function assert_back_to(before, what)
  local now
  local ok = H.wait_until(function()
    now = snapshot()
    return now.fds <= before.fds and now.children <= before.children
      and now.shm <= before.shm and now.threads <= before.threads
  end, TO, 0.02)
  if not ok then
    error(string.format("%s leaked: before %s; after %s\n%s", what, describe_snap(before),
      describe_snap(now), table.concat(H.list_fds(), "\n")), 2)
  end
end

describe("_TestZZZNumberOfObjects (adapted: nothing leaks)", function()
  it("_TestZZZNumberOfObjects.test_number_of_objects: pools made, used and terminated leave no fd and no child", function()
    lmp.Pool{processes = 1}:terminate()             -- warm up lazily made state
    local before = snapshot()
    for _ = 1, ROUNDS do
      local p = lmp.Pool{processes = 2}
      assert.same({1, 4}, p:map(function(x) return x * x end, {1, 2}))
      p:terminate()
    end
    for _ = 1, 5 do
      local p = lmp.Pool{processes = 2}
      p:map(function(x) return x end, {1, 2})
      p:close()
      assert.is_true(p:join(TO))
    end
    assert_back_to(before, "Pool")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: pools dropped without terminate are collected with their workers", function()
    lmp.Pool{processes = 1}:terminate()
    local before = snapshot()
    for _ = 1, 10 do
      local p = lmp.Pool{processes = 2}
      p:apply(function() return 1 end)
    end
    assert_back_to(before, "garbage-collected Pool")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: queues, locks and other sync objects leave no fd and no /dev/shm name", function()
    local function one_of_each(i)
      local q = lmp.Queue()
      q:put(i)
      assert.equal(i, q:get(TO))
      local jq = lmp.JoinableQueue()
      jq:put(i)
      jq:get(TO)
      jq:task_done()
      jq:join(TO)                                 -- raises timeout if not joined
      local sq = lmp.SimpleQueue()
      sq:put(i)
      assert.equal(i, sq:get(TO))
      local l, rl = lmp.Lock(), lmp.RLock()
      assert.is_true(l:acquire(true, TO))
      l:release()
      assert.is_true(rl:acquire(true, TO))
      rl:release()
      local s, bs = lmp.Semaphore(2), lmp.BoundedSemaphore(2)
      assert.is_true(s:acquire(true, TO))
      s:release()
      assert.is_true(bs:acquire(true, TO))
      bs:release()
      local e = lmp.Event()
      e:set()
      assert.is_true(e:wait(TO))
      local c = lmp.Condition()
      assert.is_true(c:acquire(true, TO))
      c:notify_all()
      c:release()
      local b = lmp.Barrier(1)
      b:wait(TO)
    end
    one_of_each(0)
    local before = snapshot()
    for i = 1, ROUNDS do one_of_each(i) end
    assert_back_to(before, "Queue/Lock/Semaphore/Event/Condition/Barrier")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: Values, Arrays, shared memory and Pipes leave no fd and no /dev/shm name", function()
    local function one_of_each(i)
      local v = lmp.Value("int32", i)
      assert.equal(i + 1, v:add(1))
      local a = lmp.Array("double", {1, 2, 3})
      assert.equal(3, #a)
      local m = lmp.shared_memory(64)
      m:write(0, "x")
      local m2 = lmp.shared_memory(m:name())       -- an attachment too
      assert.equal("x", m2:read(0, 1))
      m2:close()
      local r, w = lmp.Pipe()
      w:send(i)
      assert.equal(i, r:recv(TO))
      local r2, w2 = lmp.Pipe{duplex = false}
      w2:send(i)
      assert.equal(i, r2:recv(TO))
    end
    one_of_each(0)
    local before = snapshot()
    for i = 1, ROUNDS do one_of_each(i) end
    assert_back_to(before, "Value/Array/shared_memory/Pipe")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: processes started and joined leave no fd and no child", function()
    local function one(i)
      local r, w = lmp.Pipe()
      local p = lmp.Process{target = function(conn, x) conn:send(x * 2) end, args = {w, i}}
      p:start()
      assert.equal(i * 2, r:recv(TO))
      assert.is_true(p:join(TO))
      assert.equal(0, p.exitcode)
      p:close()
    end
    one(0)
    local before = snapshot()
    for i = 1, ROUNDS do one(i) end
    assert_back_to(before, "Process")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: managers started, used and shut down leave no fd and no child", function()
    local function one(i)
      local m = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "leaks-key"}
      m:start()
      local d, q, l = m:dict(), m:Queue(), m:Lock()
      d:set("k", i)
      q:put(d:get("k"))
      assert.equal(i, q:get(TO))
      assert.is_true(l:acquire(TO))
      l:release()
      m:shutdown()
    end
    one(0)
    local before = snapshot()
    for i = 1, 10 do one(i) end
    assert_back_to(before, "Manager")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects (deviation): many proxies of one manager share one connection", function()
    -- deviation: Python counts the manager's live shared objects, which go
    -- away with their proxies; lmp's objects live until the server stops,
    -- so what must not grow is this process's side: one connection per
    -- manager, whatever the number of proxies
    local m = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "leaks-key"}
    m:start()
    local ok, err = pcall(function()
      m:dict():set("warm", 1)
      local before = snapshot()
      for i = 1, 100 do
        local d, l = m:dict(), m:list()
        d:set("i", i)
        l:append(i)
        assert.equal(i, d:get("i"))
      end
      assert_back_to(before, "manager proxies")
    end)
    m:shutdown()
    if not ok then error(err, 0) end
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: ThreadPools made, used and terminated leave no fd and no thread", function()
    local function one()
      local tp = lmp.ThreadPool{threads = 2}
      assert.same({1, 4}, tp:map(function(x) return x * x end, {1, 2}))
      tp:terminate()
      assert.truthy(H.wait_until(function() return TH._live_threads() == 0 end, TO))
    end
    one()
    local before = snapshot()
    for _ = 1, ROUNDS do one() end
    assert_back_to(before, "ThreadPool")
  end)

  it("_TestZZZNumberOfObjects.test_number_of_objects: a script that exits with live objects leaves no child and no /dev/shm name", function()
    local r = H.run_lmp([[
local lmp = require "lmp"
keep = {lmp.Pool{processes = 2}, lmp.Queue(), lmp.Lock(), lmp.Event(), lmp.Value("int32", 1),
        lmp.Array("double", 4), lmp.shared_memory(64), lmp.Barrier(2), lmp.Condition()}
keep[1]:map(function(x) return x end, {1, 2})
keep[2]:put("left in the queue")
local m = lmp.Manager{address = {"127.0.0.1", 0}, authkey = "leaks-key"}
m:start()
m:dict():set("k", 1)
keep[#keep + 1] = m
local pids = {m:pid()}
for _, w in pairs(keep[1].workers) do pids[#pids + 1] = w.h.pid end
print(lmp.current_process().pid .. " " .. table.concat(pids, " "))
]], {timeout = 20})
    assert.equal(0, r.code, r.err)
    local pid, rest = r.out:match("^(%d+) ([%d ]+)")
    assert.truthy(pid, r.out)
    for child in rest:gmatch("%d+") do
      assert.truthy(H.wait_until(function()
        local st = H.proc_state(tonumber(child))
        return st == nil or st == "Z"
      end, TO), "child " .. child .. " outlived its parent")
    end
    assert.equal(0, S.shm_names(tonumber(pid)), "the script left /dev/shm names")
  end)
end)
