-- lmp.Pool: the API, a pool that never hangs, a loop that never blocks.
local lmp = require "lmp"
local H = require "helper"
local range = H.range

local function alive(pid)
  local st = H.proc_state(pid)
  return st ~= nil and st ~= "Z"
end

describe("lmp.Pool", function()
  local pool
  setup(function() pool = lmp.Pool{processes = 2} end)
  teardown(function() pool:terminate() end)

  it("map returns results in order", function()
    local r = pool:map(function(x) return x * x end, range(100))
    assert.equal(100, #r)
    for i = 1, 100 do assert.equal(i * i, r[i]) end
  end)

  it("takes the number of workers alone, as Python's Pool(3) and ThreadPool(3) do", function()
    for _, make in ipairs{lmp.Pool, lmp.ThreadPool} do
      local p = make(3)
      local n = 0
      for _ in pairs(p.workers) do n = n + 1 end
      assert.equal(3, n)
      assert.same({2, 4, 6}, p:map(function(x) return 2 * x end, {1, 2, 3}))
      p:close()
      assert.is_true(p:join(10))
    end
    local ok, e = pcall(lmp.Pool, "3")
    assert.is_false(ok)
    assert.truthy(tostring(e):find("table or number expected", 1, true), tostring(e))
  end)

  it("moves big arguments and results (64 KiB and up travel as lmp.Bytes) in every path, both codecs, processes and threads", function()
    local big = {}
    for i = 1, 6 do big[i] = string.rep(string.char(64 + i), 70000 + i) .. "\255" end  -- not UTF-8 either
    local function twice(s) return s .. s end
    local function fails(s) error("too big: " .. s:sub(1, 3) .. string.rep("!", 100000)) end
    for _, make in ipairs{lmp.Pool, lmp.ThreadPool} do
      for _, codec in ipairs{"json", "binary"} do
        local p = make{processes = 2, threads = 2, codec = codec}
        local r = p:map(twice, big, 2)                      -- chunks of 2: > 64 KiB each way
        for i = 1, 6 do assert.equal(big[i] .. big[i], r[i], codec .. " map " .. i) end
        assert.equal(big[3] .. big[3], p:apply(twice, {big[3]}))
        local seen = {}
        for v in p:imap_unordered(twice, big, 3) do seen[#seen + 1] = v end
        table.sort(seen)
        assert.equal(6, #seen)
        assert.equal(big[1] .. big[1], seen[1])
        local ok, e = pcall(p.map, p, fails, big, 2)
        assert.is_false(ok)
        assert.is_true(lmp.is_error(e, "remote"), tostring(e))
        local msg = tostring(e.message)
        assert.truthy(msg:find("too big: (%u)%1%1!!!!!!!!!!"), codec)
        assert.is_true(#msg > 100000, codec)
        assert.same({2, 4}, p:map(function(x) return 2 * x end, {1, 2}))   -- still serving
        p:close()
        assert.is_true(p:join(10))
      end
    end
  end)

  it("runs closures with their upvalues", function()
    local k, t = 10, {base = 5}
    assert.equal(20, pool:apply(function(x) return x + k + t.base end, {5}))
  end)

  it("apply_async, get, ready, successful and wait", function()
    local r = pool:apply_async(function(a, b) return a .. b end, {"x", "y"})
    assert.is_true(r:wait(10))
    assert.is_true(r:ready())
    assert.is_true(r:successful())
    assert.equal("xy", r:get(1))
  end)

  it("starmap unpacks argument lists", function()
    local r = pool:starmap(function(a, b) return a * b end, {{1, 2}, {3, 4}, {5, 6}})
    assert.same({2, 12, 30}, r)
  end)

  it("map with chunksize 1 and an empty list", function()
    assert.same({2, 4, 6}, pool:map(function(x) return 2 * x end, {1, 2, 3}, 1))
    assert.same({}, pool:map(function(x) return x end, {}))
  end)

  it("sends big items one per chunk by default, and tiny ones in Python's chunks after the first", function()
    -- white-box: _left is the count of chunks not yet back, read before
    -- the loop runs. 16 items on 2 workers: Python's chunksize is 2.
    local id = function(x) return x end
    local big, tiny = {}, {}
    for i = 1, 16 do big[i] = string.rep(string.char(64 + i), 1048576); tiny[i] = i end
    local rb = pool:map_async(id, big)
    assert.equal(16, rb._left)                 -- 1 MiB each: alone
    local rt = pool:map_async(id, tiny)
    assert.equal(1 + 8, rt._left)              -- item 1 alone, then pairs
    local rx = pool:map_async(id, big, 4)      -- a chunksize given is kept
    assert.equal(4, rx._left)
    assert.same(tiny, rt:get(20))
    for _, r in ipairs{rb, rx} do
      local got = r:get(20)
      for i = 1, 16 do assert.is_true(got[i] == big[i], "item " .. i) end
    end
  end)

  it("moves big strings exactly through a JSON pool, both ways, in map and imap", function()
    local p = lmp.Pool{processes = 2, codec = "json"}
    local items = {}
    for i = 1, 12 do
      if i % 3 == 0 then items[i] = i                                  -- small
      else items[i] = string.char(i % 2 == 0 and 200 or 1) .. string.rep(string.char(i, 0, 255), 30000) end
    end
    local function twice(x)                   -- a big result from a small item too
      if type(x) == "number" then return string.rep("n", 70000 + x) end
      return x .. x
    end
    local function check(got, i)
      local want = type(items[i]) == "number" and string.rep("n", 70000 + items[i]) or items[i] .. items[i]
      assert.is_true(got == want, "item " .. i)
    end
    local r = p:map(twice, items)
    for i = 1, 12 do check(r[i], i) end
    local i, k = 0, 0
    local function source()                   -- lazy input: imap's own chunks
      i = i + 1
      return items[i]
    end
    for v in p:imap(twice, source, 2, 20) do
      k = k + 1
      check(v, k)
    end
    assert.equal(12, k)
    p:close()
    assert.is_true(p:join(20))
  end)

  -- CPython _TestPool.test_map_async / test_empty_iterable: map, map_async,
  -- imap and imap_unordered of nothing give nothing, at once. Run in a
  -- child under a time limit: before the fix imap over {} never returned.
  it("map_async, starmap, imap and imap_unordered over nothing finish at once (Python's test_empty_iterable)", function()
    local r = H.run_lmp([==[
local lmp = require "lmp"
local pool = lmp.Pool{processes = 2}
local id = function(x) return x end
local function none() return nil end
local res = pool:map_async(id, {})
print("ready", res:ready(), #res:get(5))
print("starmap", #pool:starmap(id, {}))
for _, src in ipairs({{}, none}) do
  local n = 0
  for _ in pool:imap(id, src, nil, 5) do n = n + 1 end
  for _ in pool:imap_unordered(id, src, 3, 5) do n = n + 1 end
  print("imap", n)
end
-- an empty imap beside a busy one, and after it the pool still works
local a = pool:imap(id, {})
local b = pool:imap(function(x) return 2 * x end, {1, 2, 3})
local got = {}
for x in b do got[#got + 1] = x end
for x in a do got[#got + 1] = x end
print("both", table.concat(got, " "))
pool:close(); print("joined", pool:join(5))
]==], {timeout = 20})
    assert.equal(0, r.code, r.err)
    assert.matches("ready\ttrue\t0", r.out)
    assert.matches("starmap\t0", r.out)
    assert.matches("imap\t0\nimap\t0", r.out)
    assert.matches("both\t2 4 6\n", r.out)
    assert.matches("joined\ttrue", r.out)
  end)

  it("imap yields in order, lazily, from a list or an iterator", function()
    local out = {}
    for v in pool:imap(function(x) return x + 1 end, range(20), 3) do out[#out + 1] = v end
    assert.same((function() local t = {} for i = 1, 20 do t[i] = i + 1 end return t end)(), out)
    local i = 0
    local gen = function() i = i + 1; if i <= 10 then return i end end
    local sum = 0
    for v in pool:imap(function(x) return x end, gen) do sum = sum + v end
    assert.equal(55, sum)
  end)

  it("imap_unordered yields every result once", function()
    local seen, n = {}, 0
    for v in pool:imap_unordered(function(x) return x end, range(50), 1) do
      assert.is_nil(seen[v]); seen[v] = true; n = n + 1
    end
    assert.equal(50, n)
  end)

  it("a task that raises gives a remote error with traceback, worker and index", function()
    local ok, e = pcall(pool.map, pool, function(x)
      if x == 7777 then error("bad item " .. x) end
      return x
    end, range(10000))
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "remote"))
    assert.equal(7777, e.index)
    assert.matches("bad item 7777", e.message)
    assert.matches("PoolWorker%-%d", e.worker)
    assert.is_string(e.traceback)
    -- the pool goes on
    assert.equal(3, pool:apply(function() return 3 end))
  end)

  it("callbacks run in the master, inside get/poll", function()
    local got, err = nil, nil
    local r1 = pool:apply_async(function() return 42 end, {}, {callback = function(v) got = v end})
    local r2 = pool:map_async(function() error("nope") end, {1}, nil,
      {error_callback = function(e) err = e end})
    r1:wait(10); r2:wait(10)
    assert.equal(42, got)
    assert.is_true(lmp.is_error(err, "remote"))
    assert.is_false(r2:successful())
  end)

  it("a callback may terminate its own pool: poll returns, later jobs fail with closed", function()
    local p = lmp.Pool{processes = 1}
    local stopped
    local first = p:apply_async(function() return 1 end, {}, {callback = function()
      p:terminate()
      stopped = true
    end})
    local later = p:apply_async(function() lmp.sleep(30) return 2 end)
    assert.is_truthy(H.wait_until(function() p:poll(0.05) return stopped end, 10))
    assert.equal(0, p:poll(0))                    -- a terminated pool polls to nothing
    assert.equal(1, first:get(1))
    local ok, e = pcall(later.get, later, 1)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "closed"), tostring(e))
  end)

  it("get(timeout) raises timeout and leaves the pool usable", function()
    local r = pool:apply_async(function() lmp.sleep(0.5) return 1 end)
    local ok, e = pcall(r.get, r, 0.05)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "timeout"))
    assert.equal(1, r:get(10))
  end)

  it("cancel drops a task that has not started", function()
    -- a fresh pool: its workers hold 2 chunks each until they have been
    -- timed (tiny tasks let a worker hold more ahead, see docs)
    local fresh = lmp.Pool{processes = 2}
    local blockers = {}
    for i = 1, 4 do blockers[i] = fresh:apply_async(function() lmp.sleep(0.3) end) end
    local r = fresh:apply_async(function() return "ran" end)
    assert.is_true(r:cancel())
    local ok, e = pcall(r.get, r, 1)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "cancelled"))
    assert.is_false(blockers[1]:cancel())
    for i = 1, 4 do blockers[i]:get(10) end
    fresh:terminate()
  end)

  it("poll(0) returns at once and fileno becomes readable with results", function()
    local t0 = lmp.time()
    assert.equal(0, pool:poll(0))
    assert.is_true(lmp.time() - t0 < 5)          -- did not wait for anything
    local r = pool:apply_async(function() return 1 end)
    assert.equal(1, #lmp.wait({pool:fileno()}, 10))
    assert.truthy(H.wait_until(function() pool:poll(0) return r:ready() end, 10))
  end)

  it("ships a function once and refers to it by id afterwards", function()
    local f = function(x) return x + 1 end
    pool:apply(f, {1})
    local before = pool.next_fid
    for i = 1, 50 do assert.equal(i + 1, pool:apply(f, {i})) end
    assert.equal(before, pool.next_fid)
  end)

  it("many distinct closures in flight all run right", function()
    local rs = {}
    for i = 1, 150 do
      rs[i] = pool:apply_async(function() return i * 2 end)
    end
    for i = 1, 150 do assert.equal(i * 2, rs[i]:get(10)) end
  end)

  it("map takes an options table and map results may hold nils", function()
    local r = pool:map(function(x) if x % 2 == 0 then return x end end, range(6),
                       {chunksize = 2, progress = true})
    assert.equal(2, r[2]); assert.is_nil(r[3]); assert.equal(6, r[6])
  end)

  it("imap raises a failing item's error, and its timeout leaves the pool usable", function()
    local it = pool:imap(function(x) if x == 3 then error("three") end return x end, range(5))
    assert.equal(1, it()); assert.equal(2, it())
    local ok, e = pcall(it)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "remote"))
    assert.equal(3, e.index)
    local slow = pool:imap_unordered(function(x) lmp.sleep(0.5) return x end, {1}, 1, 0.05)
    ok, e = pcall(slow)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "timeout"))
    assert.equal(7, pool:apply(function() return 7 end))
  end)

  it("_poll_all and _fileno_all drive every pool from one fd", function()
    local M = require "lmp.pool"
    local fd = M._fileno_all()
    local r = pool:apply_async(function() return "x" end)
    assert.equal(1, #lmp.wait({fd}, 10))
    assert.truthy(H.wait_until(function() M._poll_all(0) return r:ready() end, 10))
    assert.equal("x", r:get(0))
  end)

  it("binary codec gives the same results", function()
    local p = lmp.Pool{processes = 1, codec = "binary"}
    assert.same({1, 4, 9}, p:map(function(x) return x * x end, {1, 2, 3}))
    p:terminate()
  end)
end)

describe("lmp.Pool never hangs", function()
  it("a worker killed mid-task fails its task with worker_lost and is replaced", function()
    local pool = lmp.Pool{processes = 2}
    local path = os.tmpname()
    local r = pool:apply_async(function(where)
      local f = io.open(where, "w")
      f:write(lmp.current_process().pid)
      f:close()
      lmp.sleep(60)
    end, {path})
    local pid = H.wait_until(function()
      local f = io.open(path)
      local v = f and tonumber(f:read("*a"))
      if f then f:close() end
      return v
    end, 10)
    os.remove(path)
    local t0 = lmp.time()
    os.execute("kill -9 " .. pid)
    local ok, e = pcall(r.get, r, 10)
    local dt = lmp.time() - t0
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "worker_lost"))
    assert.matches("PoolWorker", e.message)
    assert.equal(-9, e.exitcode)
    assert.is_true(dt < 10, "worker_lost after " .. dt .. "s")
    -- replaced: two workers again, and work goes on
    assert.same({1, 2, 3}, pool:map(function(x) return x end, {1, 2, 3}))
    local n = 0
    for _ in pairs(pool.workers) do n = n + 1 end
    assert.equal(2, n)
    pool:terminate()
  end)

  it("a worker that calls os.exit fails its task and map does not hang", function()
    local pool = lmp.Pool{processes = 2}
    local ok, e = pcall(pool.map, pool, function(x)
      if x == 3 then os.exit(7) end
      return x
    end, range(6), 1)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e, "worker_lost"))
    assert.equal(7, e.exitcode)
    pool:terminate()
  end)

  it("killing an idle worker does not wedge the next map, terminate or join", function()
    local pool = lmp.Pool{processes = 2}
    pool:map(function(x) return x end, {1, 2})
    for _ = 1, 5 do     -- the kill races with the next dispatch: no task may fail
      for _, w in pairs(pool.workers) do os.execute("kill -9 " .. w.h.pid) break end
      assert.same({10, 20}, pool:map(function(x) return x * 10 end, {1, 2}))
    end
    pool:close()
    local t0 = lmp.time()
    assert.is_true(pool:join(10))
    assert.is_true(lmp.time() - t0 < 5)
  end)

  it("every worker killed at once: replacements start cleanly and work goes on", function()
    local r = H.run_lmp([[
      local pool = lmp.Pool{processes = 3}
      local busy = pool:apply_async(function() lmp.sleep(30) end)
      lmp.sleep(0.2)
      for _, w in pairs(pool.workers) do os.execute("kill -9 " .. w.h.pid) end
      local ok, e = pcall(busy.get, busy, 10)
      assert(not ok and lmp.is_error(e, "worker_lost"), tostring(e))
      for _ = 1, 3 do
        assert(#pool:map(function(x) return x end, {1, 2, 3, 4, 5, 6}, 1) == 6)
      end
      pool:close()
      assert(pool:join(10))
      print("ok")
    ]], {timeout = 30})
    assert.equal(0, r.code, r.err)
    assert.equal("ok\n", r.out)
    assert.equal("", r.err)
  end)

  it("SIGINT during map stops and reaps every worker; the script exits 130", function()
    local r = H.run_lmp([[
      local pool = lmp.Pool{processes = 2}
      local pids = {}
      for _, w in pairs(pool.workers) do pids[#pids + 1] = w.h.pid end
      print(table.concat(pids, " "))
      io.stdout:flush()
      local me = lmp.current_process().pid
      os.execute("(sleep 0.3; kill -INT " .. me .. ") &")
      pool:map(function(x) lmp.sleep(10) return x end, {1, 2, 3, 4})
    ]], {timeout = 20})
    assert.equal(130, r.code)
    assert.matches("interrupted", r.err)
    for pid in r.out:gmatch("%d+") do
      assert.truthy(H.wait_until(function() return not alive(tonumber(pid)) end, 5),
        "worker " .. pid .. " still alive")
    end
  end)
end)

describe("lmp.Pool life cycle", function()
  it("maxtasksperchild replaces workers with no task lost or run twice", function()
    local pool = lmp.Pool{processes = 2, maxtasksperchild = 3}
    local r = pool:map(function(x) return {x, lmp.current_process().pid} end, range(30), 1)
    local pids = {}
    for i = 1, 30 do
      assert.equal(i, r[i][1])
      pids[r[i][2]] = (pids[r[i][2]] or 0) + 1
    end
    local nworkers = 0
    for _, n in pairs(pids) do
      nworkers = nworkers + 1
      assert.is_true(n <= 3)
    end
    assert.is_true(nworkers >= 10)
    pool:terminate()
  end)

  it("initializer runs once in each worker", function()
    local pool = lmp.Pool{processes = 2, initializer = function(v) _G.INIT = v end, initargs = {"ready"}}
    assert.same({"ready", "ready"}, pool:map(function() return _G.INIT end, {1, 2}, 1))
    pool:terminate()
  end)

  it("using a pool after close or terminate raises closed; join before close raises", function()
    local pool = lmp.Pool{processes = 1}
    assert.has_error(function() pool:join() end, "join before close: call pool:close() first")
    pool:close()
    local ok, e = pcall(pool.map, pool, function(x) return x end, {1})
    assert.is_true(lmp.is_error(e, "closed"))
    assert.is_true(pool:join(10))
    local p2 = lmp.Pool{processes = 1}
    p2:terminate()
    ok, e = pcall(p2.apply, p2, function() end)
    assert.is_true(lmp.is_error(e, "closed"))
  end)

  it("close then join finishes queued work first", function()
    local pool = lmp.Pool{processes = 2}
    local r = pool:map_async(function(x) return x + 1 end, range(10))
    pool:close()
    assert.is_true(pool:join(10))
    assert.equal(11, r:get(1)[10])
  end)

  it("terminate right after start is quiet: no worker escapes into the master's code", function()
    -- A SIGTERM that reached a worker before its signal handlers were reset
    -- ran the master's handler there: the worker unwound through Pool()
    -- and printed an 'interrupted' traceback (1 run in 3 here).
    local r = H.run_lmp([==[
local lmp = require "lmp"
for i = 1, 20 do lmp.Pool{processes = 2}:terminate() end
print("done")
]==], {timeout = 60})
    assert.equal(0, r.code, r.err)
    assert.equal("done\n", r.out)
    assert.equal("", r.err)
  end)

  it("follows lmp.set_start_method('spawn') when made without a context", function()
    -- before, its workers were started with the default method but given a
    -- closure as target, which a spawn child cannot receive
    local r = H.run_lmp([==[
local lmp = require "lmp"
lmp.set_start_method("spawn")
local pool = lmp.Pool{processes = 2}
print(table.concat(pool:map(function(x) return x * 2 end, {1, 2, 3}), " "))
print(pool:apply(function() return lmp.get_start_method() end))
pool:terminate()
]==], {timeout = 60})
    assert.equal(0, r.code, r.err)
    assert.equal("2 4 6\nspawn\n", r.out)
  end)

  it("terminate stops the workers promptly", function()
    local pool = lmp.Pool{processes = 2}
    local pids = {}
    for _, w in pairs(pool.workers) do pids[#pids + 1] = w.h.pid end
    pool:apply_async(function() lmp.sleep(30) end)
    local t0 = lmp.time()
    pool:terminate()
    assert.is_true(lmp.time() - t0 < 5)
    for _, pid in ipairs(pids) do assert.is_false(alive(pid)) end
  end)

  it("the owner's exit terminates the workers, and <close> works on 5.4", function()
    local scoped = _VERSION == "Lua 5.4" and "local pool <close> = lmp.Pool{processes = 2}"
      or "local pool = lmp.Pool{processes = 2}"
    local r = H.run_lmp([[
      local pids = {}
      do
        ]] .. scoped .. [[

        for _, w in pairs(pool.workers) do pids[#pids + 1] = w.h.pid end
        pool:map(function(x) return x end, {1})
      end
      print(table.concat(pids, " "))
      local p2 = lmp.Pool{processes = 1}
      for _, w in pairs(p2.workers) do print(w.h.pid) end
    ]], {timeout = 20})
    assert.equal(0, r.code, r.err)
    for pid in r.out:gmatch("%d+") do
      assert.truthy(H.wait_until(function() return not alive(tonumber(pid)) end, 5))
    end
  end)

  it("a pool that is garbage-collected terminates its workers", function()
    local pids = {}
    do
      local p = lmp.Pool{processes = 2}
      for _, w in pairs(p.workers) do pids[#pids + 1] = w.h.pid end
    end
    assert.truthy(H.wait_until(function()
      collectgarbage(); collectgarbage()
      return not alive(pids[1]) and not alive(pids[2])
    end, 10))
  end)

  it("_new_pool takes a launcher of its own (the ThreadPool hook)", function()
    local M = require "lmp.pool"
    local launched = {}
    local pool = M._new_pool({processes = 2}, function(index, child_fd, info)
      local p = lmp.Process{target = M._worker_main, args = {child_fd, info},
                            name = "Custom-" .. index, daemon = true}
      p:start()
      require("lmp.c.proc").close(child_fd)
      launched[#launched + 1] = index
      return {sentinel = p.sentinel, name = p.name, pid = p.pid,
              kill = function() p:kill() end,
              exit_status = function() return p.exitcode end,
              join = function(t) return p:join(t) end}
    end)
    assert.same({1, 2}, launched)
    assert.same({2, 3}, pool:map(function(x) return x + 1 end, {1, 2}))
    pool:close()
    assert.is_true(pool:join(10))
  end)

  it("a spawn-context pool runs closures too", function()
    local pool = lmp.get_context("spawn").Pool{processes = 1}
    local k = 3
    assert.same({4, 5}, pool:map(function(x) return x + k end, {1, 2}))
    pool:terminate()
  end)

  it("a forked child cannot use its parent's pool", function()
    local pool = lmp.Pool{processes = 1}
    local a, b = lmp.Pipe()
    local p = lmp.Process{args = {a}, target = function(conn)
      local ok, e = pcall(pool.apply, pool, function() return 1 end)
      conn:send(ok == false and lmp.is_error(e, "closed"))
    end}
    p:start()
    assert.is_true(b:recv(10))
    p:join(10)
    assert.equal(1, pool:apply(function() return 1 end))
    pool:terminate()
  end)

  it("an idle worker gives back the memory of its last job", function()
    -- spawned: a forked worker would start with the memory its parent had
    -- freed but kept (LuaJIT keeps its arenas), and the job could grow
    -- into that without growing the worker (seen after the big-string specs)
    local pool = lmp.get_context("spawn").Pool{processes = 1}
    local function rss_kb(pid)
      for line in io.lines("/proc/" .. pid .. "/status") do
        local kb = line:match("^VmRSS:%s+(%d+)")
        if kb then return tonumber(kb) end
      end
    end
    -- measured against the worker before the job
    local base = rss_kb(pool:apply(function() return lmp.current_process().pid end))
    local r = pool:apply(function()
      local big = {}
      for i = 1, 200000 do big[i] = string.rep("x", 40) .. i end   -- ~20 MB of strings
      return {pid = lmp.current_process().pid, lua_kb = collectgarbage("count")}
    end)
    local peak = rss_kb(r.pid)
    assert.is_true(peak - base > 5000, ("the job did not grow the worker: %d -> %d kB"):format(base, peak))
    -- PUC Lua's memory goes back to the system through malloc_trim; LuaJIT's
    -- own allocator keeps most of its arenas, so there only the Lua heap is
    -- checked, once the worker has started giving memory back
    local jit = rawget(_G, "jit") ~= nil
    local limit = base + (peak - base) * (jit and 0.95 or 0.5)
    local deadline, now = lmp.time() + 20, rss_kb(r.pid)   -- a bound, not a speed
    while now > limit and lmp.time() < deadline do
      lmp.sleep(0.02)
      now = rss_kb(r.pid)
    end
    assert.is_true(now <= limit, ("still %d kB of a %d kB peak"):format(now, peak))
    local lua_kb = pool:apply(function() return collectgarbage("count") end)
    assert.is_true(lua_kb < r.lua_kb / 4, ("Lua heap %.0f kB of %.0f kB"):format(lua_kb, r.lua_kb))
    pool:terminate()
  end)

  it("rejects bad arguments clearly", function()
    assert.has_error(function() lmp.Pool{processes = 0} end)
    assert.has_error(function() lmp.Pool{codec = "xml"} end)
    local pool = lmp.Pool{processes = 1}
    assert.has_error(function() pool:map(1, {}) end)
    assert.has_error(function() pool:map(function() end, 5) end)
    assert.has_error(function() pool:map(function() end, {}, 0) end)
    pool:terminate()
  end)
end)

describe("pool examples", function()
  it("pool_demo counts the files of a tree", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir .. "/sub")
    for i = 1, 5 do
      local f = io.open(dir .. "/sub/f" .. i .. ".txt", "w")
      f:write(("word "):rep(i) .. "\n")
      f:close()
    end
    local r = H.run_lmp(io.open(H.root .. "/examples/pool_demo.lua"):read("*a"),
                        {args = {dir, "2"}, timeout = 30})
    os.execute("rm -rf " .. dir)
    assert.equal(0, r.code, r.err)
    assert.matches("5 files, 5 lines, 15 words, 80 bytes", r.out)
  end)

  it("game_loop keeps its frames while the pool is saturated", function()
    local r = H.run_lmp(io.open(H.root .. "/examples/game_loop.lua"):read("*a"),
                        {args = {"1", "2"}, timeout = 30})
    assert.equal(0, r.code, r.err)
    local worst = tonumber(r.out:match("worst frame: ([%d%.]+) ms"))
    assert.truthy(worst, r.out)
    assert.is_true(worst < 50, "worst frame " .. tostring(worst) .. " ms (goal 20 ms)")
    assert.truthy(tonumber(r.out:match("(%d+) paths solved")) > 0)
  end)
end)
