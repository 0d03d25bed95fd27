-- The "forkserver" start method (lua/lmp/forkserver.lua).
local lmp = require "lmp"
local H = require "helper"

local FS = require "lmp.forkserver"

-- A process counts as gone once /proc has no entry or only a zombie.
local function gone(pid)
  local s = H.proc_state(pid)
  return s == nil or s == "Z"
end

describe("lmp forkserver start method", function()
  local ctx = lmp.get_context("forkserver")

  it("runs the target with its args; the child knows its name and parent", function()
    local a, b = lmp.Pipe()
    local k = 40
    local p = ctx.Process{name = "fs1", args = {a, 2}, target = function(conn, x)
      conn:send({x + k, lmp.current_process().name, lmp.current_process().pid,
                 lmp.parent_process().pid, lmp.get_start_method()})
    end}
    p:start()
    local r = b:recv(10)
    assert.equal(42, r[1])
    assert.equal("fs1", r[2])
    assert.equal(p.pid, r[3])
    assert.equal(lmp.current_process().pid, r[4])
    -- Python's test_context: a child's default method is how it was started
    assert.equal("forkserver", r[5])
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    assert.is_false(p:is_alive())
    p:close()
    a:close(); b:close()
  end)

  -- Python's _TestSubclassingProcess.test_sys_exit (exitcode of
  -- sys.exit(N)) and _TestProcess.test_terminate / test_kill (exitcode
  -- -SIGTERM / -SIGKILL)
  it("reports os.exit(3) as 3, SIGKILL as -9 and terminate() as -15", function()
    local p = ctx.Process{target = function() os.exit(3) end}
    p:start()
    assert.is_true(p:join(10))
    assert.equal(3, p.exitcode)
    local q = ctx.Process{target = function() lmp.sleep(30) end}
    q:start()
    assert.is_true(q:is_alive())
    assert.is_false(q:join(0))
    assert.is_nil(q.exitcode)
    q:kill()
    assert.is_true(q:join(10))
    assert.equal(-9, q.exitcode)
    local t = ctx.Process{target = function() lmp.sleep(30) end}
    t:start()
    t:terminate()
    assert.is_true(t:join(10))
    assert.equal(-15, t.exitcode)
    assert.is_false(t:is_alive())
  end)

  it("sees a child killed from outside (by pid) as -9", function()
    local p = ctx.Process{target = function() lmp.sleep(30) end}
    p:start()
    os.execute("kill -9 " .. p.pid)
    assert.is_true(p:join(10))
    assert.equal(-9, p.exitcode)
    assert.same({}, lmp.active_children())
  end)

  it("starts a process while lmp threads run, where fork refuses", function()
    local tp = lmp.ThreadPool{threads = 1}
    local busy = tp:apply_async(function() require("lmp").sleep(0.5) return 1 end, {})
    local ok, err = pcall(function()
      lmp.get_context("fork").Process{target = function() end}:start()
    end)
    assert.is_false(ok)
    assert.matches("refusing to fork while 1 lmp thread", tostring(err))
    local a, b = lmp.Pipe()
    local p = ctx.Process{args = {a}, target = function(conn) conn:send("from child") end}
    p:start()
    assert.equal("from child", b:recv(10))
    assert.is_true(p:join(10))
    assert.equal(0, p.exitcode)
    assert.equal(1, busy:get(10))
    tp:terminate()
    a:close(); b:close()
  end)

  -- Python's _TestPool.test_map and test_apply (under the forkserver context)
  it("runs a Pool with the forkserver context", function()
    local pool = lmp.Pool{processes = 2, context = ctx}
    local k = 3
    assert.same({3, 6, 9, 12}, pool:map(function(x) return x * k end, {1, 2, 3, 4}))
    assert.equal(7, pool:apply(function(x) return x + 1 end, {6}))
    pool:close()
    pool:join()
  end)

  -- lmp's worker_lost (docs/api/pool.md); Python's Pool has no such test (it
  -- would wait for the lost task forever)
  it("reports a pool worker that dies mid-task as worker_lost", function()
    local pool = ctx.Pool{processes = 1}
    local ok, err = pcall(pool.apply, pool, function()
      require("lmp.c.proc").kill(require("lmp.c.proc").getpid(), 9)
      require("lmp").sleep(5)
    end, {})
    assert.is_false(ok)
    assert.is_true(lmp.is_error(err, "worker_lost"))
    assert.equal(-9, err.exitcode)
    -- the pool replaced the worker
    assert.equal(4, pool:apply(function() return 4 end, {}))
    pool:terminate()
  end)

  -- Python's _TestProcess.test_forkserver_sigint / test_forkserver_sigkill
  -- (check_forkserver_death, bpo-31308): after the server got the signal, a
  -- new Process starts and exits 0. Python's server ignores SIGINT, so does
  -- lmp's (the running child is untouched). Deviation on SIGKILL: Python's
  -- running child lives on (exitcode 0, or 255 when its status was lost);
  -- lmp's dies with the server (PR_SET_PDEATHSIG, no orphan) and reads -9.
  for _, sig in ipairs{"INT", "KILL"} do
    it("starts new processes after the server got SIG" .. sig, function()
      local a, b = lmp.Pipe()
      local first = ctx.Process{args = {b}, target = function(conn)
        conn:recv(30)
      end}
      first:start()
      local old = FS._pid()
      assert.is_number(old)
      os.execute("kill -" .. sig .. " " .. old)
      if sig == "KILL" then
        assert.truthy(H.wait_until(function() return FS._pid() == nil end, 5))
        assert.is_true(first:join(10))
        assert.equal(-9, first.exitcode)
      end
      local q = ctx.Process{target = function() os.exit(5) end}
      q:start()
      assert.is_true(q:join(10))
      assert.equal(5, q.exitcode)
      local new = FS._pid()
      assert.is_number(new)
      if sig == "INT" then
        assert.equal(old, new)
        a:send("go")
        assert.is_true(first:join(10))
        assert.equal(0, first.exitcode)
      else
        assert.are_not.equal(old, new)
      end
      a:close(); b:close()
    end)
  end

  it("gives each child the modules set_forkserver_preload named", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir))
    local f = assert(io.open(dir .. "/fks_preloaded.lua", "w"))
    f:write("return {pid = require('lmp.c.proc').getpid()}\n")
    f:close()
    local saved = package.path
    package.path = dir .. "/?.lua;" .. package.path
    -- a new server picks the list up: stop the running one
    local old = FS._pid()
    if old then os.execute("kill -9 " .. old) end
    H.wait_until(function() return FS._pid() == nil end, 5)
    lmp.set_forkserver_preload{"fks_preloaded"}
    local ok, err = pcall(function()
      local a, b = lmp.Pipe()
      local p = ctx.Process{args = {a}, target = function(conn)
        local m = package.loaded["fks_preloaded"]
        conn:send({type(m), m and m.pid})
      end}
      p:start()
      local r = b:recv(10)
      assert.is_true(p:join(10))
      assert.equal("table", r[1])
      assert.equal(FS._pid(), r[2])    -- required in the server, once
      a:close(); b:close()
    end)
    lmp.set_forkserver_preload{}
    package.path = saved
    os.remove(dir .. "/fks_preloaded.lua")
    os.remove(dir)
    assert(ok, tostring(err))
  end)

  -- CPython's forkserver.set_forkserver_preload raises TypeError unless given
  -- a list of str (TestStartMethod.test_set_get calls it with PRELOAD)
  it("refuses a preload list that is not a list of names", function()
    assert.has_error(function() lmp.set_forkserver_preload("x") end,
      "bad argument #1 to 'set_forkserver_preload' (a list of module names expected)")
    assert.has_error(function() lmp.set_forkserver_preload{1} end,
      "bad argument #1 to 'set_forkserver_preload' (a list of module names expected)")
  end)

  -- Python's TestStartMethod.test_set_get (set_start_method / get_start_method)
  it("is a start method set_start_method and get_start_method know", function()
    local before = lmp.get_start_method()
    lmp.set_start_method("forkserver")
    assert.equal("forkserver", lmp.get_start_method())
    assert.equal("forkserver", lmp.get_context().get_start_method())
    local p = lmp.Process{target = function() os.exit(7) end}
    lmp.set_start_method(before)
    p:start()
    assert.is_true(p:join(10))
    assert.equal(7, p.exitcode)
    assert.has_error(function() lmp.set_start_method("vfork") end,
      "bad argument #1 to 'set_start_method' ('fork', 'spawn' or 'forkserver' expected)")
  end)

  it("leaves no server behind once the program that started it exits", function()
    for _, how in ipairs{"exit", "sigkill"} do
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(string.format([[
        local lmp = require "lmp"
        local p = lmp.get_context("forkserver").Process{target = function() end}
        p:start(); p:join(10)
        print("server", require("lmp.forkserver")._pid())
        io.stdout:flush()
        if %q == "sigkill" then require("lmp.c.proc").kill(require("lmp.c.proc").getpid(), 9) end
      ]], how))
      f:close()
      -- "; echo": the shell reports the SIGKILL to the captured stderr
      local r = H.sh(string.format("timeout -k 2 20 %s %s; echo rc=$?",
        H.shell_quote(H.lmp_bin), script))
      os.remove(script)
      local pid = tonumber(r.out:match("server%s+(%d+)"))
      assert.is_number(pid, r.err)
      assert.matches(how == "exit" and "rc=0" or "rc=137", r.out)
      assert.truthy(H.wait_until(function() return gone(pid) end, 10), how)
    end
  end)

  it("gives back the child's socket and pidfd at close()", function()
    ctx.Process{target = function() end}:start():join(10)   -- the server runs
    local before = H.count_fds()
    for _ = 1, 3 do
      local p = ctx.Process{target = function() end}
      p:start()
      assert.is_true(p:join(10))
      p:close()
    end
    assert.equal(before, H.count_fds())
  end)

  it("leaves no child, server or fd of its own behind in this process", function()
    local old = FS._pid()
    if old then os.execute("kill -9 " .. old) end
    H.wait_until(function() return FS._pid() == nil end, 5)
    assert.same({}, lmp.active_children())
    for _, pid in ipairs(H.children()) do
      assert.truthy(H.wait_until(function() return gone(pid) end, 5))
    end
  end)
end)
