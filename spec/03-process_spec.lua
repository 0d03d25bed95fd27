-- lmp.Process and the process helpers, under both start methods.
local lmp = require "lmp"
local H = require "helper"

local function ctx_of(method) return lmp.get_context(method) end

for _, method in ipairs{"fork", "spawn"} do
  describe("lmp.Process (" .. method .. ")", function()
    local ctx = ctx_of(method)

    it("runs the target with its args and reports exit code 0", function()
      local a, b = lmp.Pipe()
      local k = 40
      local p = ctx.Process{target = function(conn, x) conn:send(x + k) end, args = {a, 2}}
      p:start()
      assert.equal(42, b:recv(10))
      assert.is_true(p:join(10))
      assert.equal(0, p.exitcode)
      assert.is_false(p:is_alive())
      a:close(); b:close()
    end)

    it("gives the child its own name, pid and parent", function()
      local a, b = lmp.Pipe()
      local p = ctx.Process{name = "w1", args = {a}, target = function(conn)
        local me, parent = lmp.current_process(), lmp.parent_process()
        conn:send({me.name, me.pid, parent.pid})
      end}
      p:start()
      local r = b:recv(10)
      assert.equal("w1", r[1])
      assert.equal(p.pid, r[2])
      assert.equal(lmp.current_process().pid, r[3])
      assert.is_true(p:join(10))
    end)

    it("shares the authkey with its children", function()
      local a, b = lmp.Pipe()
      local p = ctx.Process{args = {a}, target = function(conn)
        conn:send(lmp.current_process().authkey)
      end}
      p:start()
      local key = b:recv(10)
      assert.equal(32, #key)
      assert.equal(lmp.current_process().authkey, key)
      p:join(10)
    end)

    it("exits 1 and prints the traceback when the target raises", function()
      local r = H.run_lmp(string.format([[
        local p = lmp.get_context(%q).Process{name = "bad", target = function() error("boom") end}
        p:start(); p:join(10); print("exitcode", p.exitcode)
      ]], method))
      assert.equal(0, r.code)
      assert.matches("exitcode\t1", r.out)
      assert.matches("Process bad %(pid %d+%):", r.err)
      assert.matches("boom", r.err)
      assert.matches("stack traceback", r.err)
    end)

    it("reports -N for a child killed by signal N", function()
      local p = ctx.Process{target = function() lmp.sleep(30) end}
      p:start()
      assert.is_true(p:is_alive())
      p:kill()
      assert.is_true(p:join(10))
      assert.equal(-9, p.exitcode)
      local q = ctx.Process{target = function() lmp.sleep(30) end}
      q:start(); q:terminate()
      assert.is_true(q:join(10))
      assert.equal(-15, q.exitcode)
    end)
  end)
end

describe("lmp.Process misuse", function()
  it("refuses to start twice or join before start", function()
    local p = lmp.Process{target = function() end}
    assert.has_error(function() p:join() end, "cannot join a process that was not started")
    p:start()
    assert.has_error(function() p:start() end, "cannot start a process twice")
    assert.is_true(p:join(10))
  end)

  it("refuses a process joining itself", function()
    local a, b = lmp.Pipe()
    local p
    p = lmp.Process{args = {a}, target = function(conn)
      local ok, e = pcall(function() return p:join(1) end)
      conn:send({ok, tostring(e)})
    end}
    p:start()
    local r = b:recv(10)
    assert.is_false(r[1])
    assert.matches("itself", r[2])
    p:join(10)
  end)

  it("rejects bad constructor arguments with clear errors", function()
    assert.has_error(function() lmp.Process{} end)
    assert.has_error(function() lmp.Process{target = 1} end)
    assert.has_error(function() lmp.Process{target = function() end, args = 3} end)
    assert.has_error(function() lmp.set_start_method("thread") end)
  end)

  it("join with a timeout returns false while the child runs", function()
    local p = lmp.Process{target = function() lmp.sleep(30) end}
    p:start()
    local t0 = lmp.time()
    assert.is_false(p:join(0.1))
    assert.is_true(lmp.time() - t0 < 5)
    p:kill(); assert.is_true(p:join(10))
  end)
end)

describe("fork hygiene", function()
  it("flushes stdio before fork so no line is printed twice", function()
    local r = H.run_lmp([[
      io.write("once ")
      local p = lmp.Process{target = function() io.write("child ") end}
      p:start(); p:join(10); io.write("end\n")
    ]])
    assert.equal(0, r.code)
    assert.equal("once child end\n", r.out)
  end)

  it("gives the heap's free memory back before it forks", function()
    local function rss_kb()
      for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmRSS:%s+(%d+)")
        if kb then return tonumber(kb) end
      end
    end
    -- free memory in the middle of the heap, which free() alone keeps
    local keep, all = {}, {}
    for i = 1, 200000 do
      all[i] = string.rep("x", 40) .. i
      if i % 64 == 0 then keep[#keep + 1] = all[i] end
    end
    all = nil
    collectgarbage() collectgarbage()
    local before = rss_kb()
    local p = lmp.Process{target = function() end}
    p:start()
    assert.is_true(p:join(10))
    local after = rss_kb()
    if rawget(_G, "jit") then   -- LuaJIT's own allocator: nothing to ask glibc for
      assert.is_true(after <= before + 1024)
    else
      assert.is_true(after < before - 4000, ("rss %d kB before the fork, %d after"):format(before, after))
    end
    assert.equal(200000 / 64, #keep)
  end)

  it("reseeds math.random in each child", function()
    local a, b = lmp.Pipe()
    local ps = {}
    for i = 1, 3 do
      ps[i] = lmp.Process{args = {a}, target = function(conn) conn:send(math.random(1, 2^30)) end}
      ps[i]:start()
    end
    local seen = {}
    for _ = 1, 3 do seen[b:recv(10)] = true end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(3, n)
    for i = 1, 3 do ps[i]:join(10) end
  end)

  it("runs atfork handlers in Python's order", function()
    local r = H.run_lmp([[
      lmp.atfork{prepare = function() io.write("p1 ") end, parent = function() io.write("a1 ") end}
      lmp.atfork{prepare = function() io.write("p2 ") end, parent = function() io.write("a2 ") end,
                 child = function() io.write("c2 ") end}
      local p = lmp.Process{target = function() end}
      p:start(); p:join(10); io.write("\n")
    ]])
    assert.equal(0, r.code)
    -- prepare in reverse order; the child's line may come before or after
    assert.matches("^p2 p1 ", r.out)
    assert.matches("a1 a2", r.out)
    assert.matches("c2", r.out)
  end)

  it("leaves no zombie when nobody joins", function()
    local p = lmp.Process{target = function() end}
    p:start()
    local pid = p.pid
    assert.truthy(H.wait_until(function()
      lmp.active_children()              -- reaps what has ended
      return H.proc_state(pid) == nil
    end, 10))
  end)

  it("a spawn child does not inherit an unrelated fd", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    local a, b = lmp.Pipe()
    local p = lmp.get_context("spawn").Process{args = {a, path}, target = function(conn, where)
      local me = io.open("/proc/self/stat"):read("*a"):match("^(%d+)")
      local n = 0
      for line in io.popen("ls -l /proc/" .. me .. "/fd"):lines() do
        if line:find(where, 1, true) then n = n + 1 end
      end
      conn:send(n)
    end}
    p:start()
    assert.equal(0, b:recv(10))
    p:join(10)
    -- the parent itself does have it open
    local me, n = H.getpid(), 0
    for line in io.popen("ls -l /proc/" .. me .. "/fd"):lines() do
      if line:find(path, 1, true) then n = n + 1 end
    end
    assert.equal(1, n)
    f:close(); os.remove(path)
  end)

  it("kills the children of a SIGKILLed parent (PDEATHSIG)", function()
    local r = H.run_lmp([[
      local p = lmp.Process{target = function() lmp.sleep(30) end, daemon = false}
      p:start()
      print(p.pid)
      io.stdout:flush()
      os.execute("kill -9 " .. lmp.current_process().pid)
    ]])
    local child = tonumber(r.out:match("(%d+)"))
    assert.truthy(child)
    assert.truthy(H.wait_until(function()
      local st = H.proc_state(child)
      return st == nil or st == "Z"
    end, 5))
  end)

  it("terminates daemon children when the parent script ends", function()
    local r = H.run_lmp([[
      local p = lmp.Process{target = function() lmp.sleep(30) end, daemon = true}
      p:start(); print(p.pid)
    ]], {timeout = 20})
    assert.equal(0, r.code)
    local child = tonumber(r.out:match("(%d+)"))
    assert.truthy(H.wait_until(function()
      local st = H.proc_state(child)
      return st == nil or st == "Z"
    end, 5))
  end)
end)

describe("spawn and the main script's modules", function()
  it("a spawn child can require a module next to the main script", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = io.open(dir .. "/mymod_for_spawn.lua", "w")
    f:write("return {answer = function() return 42 end}\n")
    f:close()
    f = io.open(dir .. "/main.lua", "w")
    f:write([[
      local p = lmp.get_context("spawn").Process{target = function()
        os.exit(require("mymod_for_spawn").answer())
      end}
      p:start(); p:join(20); print("exitcode", p.exitcode)
    ]])
    f:close()
    -- run the script itself so that arg[0] names it
    local out = io.popen("cd / && timeout 30 " .. H.shell_quote(H.lmp_bin) .. " "
      .. H.shell_quote(dir .. "/main.lua") .. " 2>&1"):read("*a")
    os.execute("rm -rf " .. dir)
    assert.matches("exitcode\t42", out)
  end)
end)

describe("process helpers", function()
  it("a context's functions work called with . as in Python and with : as Lua users write them", function()
    local ctx = lmp.get_context("spawn")
    assert.equal(ctx, ctx:get_context())
    assert.equal("fork", ctx:get_context("fork"):get_start_method())
    for _, q in ipairs{ctx.Queue(), ctx:Queue()} do
      local p = ctx:Process{target = function(qq) qq:put("from " .. lmp.get_start_method()) end, args = {q}}
      p:start()
      assert.equal("from spawn", q:get(20))
      assert.is_true(p:join(20))
      assert.equal(0, p.exitcode)
    end
  end)

  it("cpu_count is a positive integer", function()
    local n = lmp.cpu_count()
    assert.is_true(n >= 1 and n % 1 == 0)
  end)

  it("current_process is MainProcess in the parent", function()
    assert.equal("MainProcess", lmp.current_process().name)
    assert.is_nil(lmp.parent_process())
  end)

  it("active_children lists running children only", function()
    local p = lmp.Process{target = function() lmp.sleep(30) end}
    p:start()
    local found = false
    for _, c in ipairs(lmp.active_children()) do if c.pid == p.pid then found = true end end
    assert.is_true(found)
    p:kill(); p:join(10)
    for _, c in ipairs(lmp.active_children()) do assert.not_equal(p.pid, c.pid) end
  end)
end)
