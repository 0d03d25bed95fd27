-- lmp.fork_processes and lmp.task_id; the example prefork server.
local lmp = require "lmp"
local H = require "helper"
local PF = require "helpers.prefork"
local sys = require "lmp.c.sys"

local function run(code, timeout)
  return H.run_lmp(code, {timeout = timeout or 20})
end

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

describe("lmp.fork_processes", function()
  it("returns the task ids 0..n-1 in the children; the parent exits 0 after them", function()
    local r = run([[
      io.write("parent task_id ", tostring(lmp.task_id()), "\n")
      local id = lmp.fork_processes(3)
      io.write(string.format("child %d task_id %d name %s\n", id, lmp.task_id(),
        lmp.current_process().name))
    ]])
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("parent task_id nil", 1, true))
    for id = 0, 2 do
      assert.truthy(r.out:find(string.format("child %d task_id %d name Task-%d\n", id, id, id), 1, true), r.out)
    end
    assert.equal(3, count(r.out, "child %d"))
    assert.equal(3, count(r.err, "exited normally"))
  end)

  it("forks one child per CPU for n = 0 or nil", function()
    local r = run([[
      io.write("cpus ", lmp.cpu_count(), "\n")
      local id = lmp.fork_processes(0)
      io.write("child ", id, "\n")
    ]])
    assert.equal(0, r.code, r.err)
    local cpus = tonumber(r.out:match("cpus (%d+)"))
    assert.equal(cpus, count(r.out, "child %d+"))
  end)

  it("restarts a child that fails or is killed, with the same task id", function()
    local mark = os.tmpname()
    local r = run(string.format([[
      local mark = %q
      local id = lmp.fork_processes(2)
      if id == 1 then
        local f = io.open(mark) local n = f and tonumber(f:read("*a")) or 0
        if f then f:close() end
        f = io.open(mark, "w") f:write(n + 1) f:close()
        io.write("task 1 attempt ", n + 1, " pid ", lmp.current_process().pid, "\n")
        io.stdout:flush()
        if n == 0 then os.exit(3) end
        if n == 1 then require("lmp.c.sys").kill(lmp.current_process().pid, 9) end
      end
    ]], mark))
    os.remove(mark)
    assert.equal(0, r.code, r.err)
    assert.truthy(r.err:find("child task 1 %(pid %d+%) exited with status 3, restarting"), r.err)
    assert.truthy(r.err:find("child task 1 %(pid %d+%) killed by signal 9, restarting"), r.err)
    assert.truthy(r.out:find("task 1 attempt 3", 1, true), r.out)
    local pids = {}
    for pid in r.out:gmatch("task 1 attempt %d pid (%d+)") do pids[pid] = true end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equal(3, n)            -- three different processes ran task 1
    assert.equal(0, count(r.err, "task 0 %(pid %d+%) [^\n]*restarting"))
  end)

  it("gives up with an error after max_restarts, stopping the other children", function()
    local t0 = lmp.time()
    local r = run([[
      local id = lmp.fork_processes(2, {max_restarts = 2})
      if id == 0 then lmp.sleep(120) end   -- stopped by the parent
      os.exit(1)
    ]], 60)
    assert.equal(1, r.code, r.err)
    assert.truthy(r.err:find("worker_lost: child task 1 %(pid %d+%) exited with status 1; "
      .. "too many child restarts %(2%), giving up"), r.err)
    assert.equal(2, count(r.err, "exited with status 1, restarting"))
    -- the sleeping child was stopped, not waited for (a wide margin for
    -- a busy machine: the sleep is 120 s)
    assert.is_true(lmp.time() - t0 < 30, "took " .. (lmp.time() - t0))
  end)

  it("passes SIGTERM to every child, waits for them and exits 143", function()
    local dir = os.tmpname()
    local r = run(string.format([[
      local sys = require "lmp.c.sys"
      local dir = %q
      local parent = sys.getpid()
      local id = lmp.fork_processes(3)
      io.write("child pid ", sys.getpid(), "\n") io.stdout:flush()
      local f = io.open(dir .. "." .. id, "w") f:close()
      if id == 0 then   -- once all three are up, signal the parent
        local t0 = lmp.time()
        repeat lmp.sleep(0.01)
          local n = 0
          for i = 0, 2 do local g = io.open(dir .. "." .. i) if g then g:close() n = n + 1 end end
        until n == 3 or lmp.time() - t0 > 10
        sys.kill(parent, sys.SIGTERM)
      end
      lmp.sleep(30)
    ]], dir))
    for i = 0, 2 do os.remove(dir .. "." .. i) end
    assert.equal(143, r.code, r.err)
    local n = 0
    for pid in r.out:gmatch("child pid (%d+)") do
      n = n + 1
      assert.is_nil(H.proc_state(tonumber(pid)))      -- gone and reaped
    end
    assert.equal(3, n)
    assert.equal(0, count(r.err, "restarting"))
  end)

  it("refuses to run again inside one of its children", function()
    local r = run([[
      local id = lmp.fork_processes(1)
      local ok, err = pcall(lmp.fork_processes, 2)
      io.write(tostring(ok), " ", tostring(err), "\n")
    ]])
    assert.equal(0, r.code, r.err)
    assert.truthy(r.out:find("false .*cannot be called in a child of fork_processes"), r.out)
  end)

  it("raises ordinary errors for bad arguments, before forking", function()
    assert.has_error(function() lmp.fork_processes(-1) end)
    assert.has_error(function() lmp.fork_processes(1.5) end)
    assert.has_error(function() lmp.fork_processes("2") end)
    assert.has_error(function() lmp.fork_processes(2, {max_restarts = "x"}) end)
    assert.has_error(function() lmp.fork_processes(2, {restarts = 1}) end)
    assert.has_error(function() lmp.fork_processes(2, 5) end)
  end)

  it("task_id is nil outside fork_processes", function()
    assert.is_nil(lmp.task_id())
  end)
end)

describe("examples/prefork_server.lua", function()
  it("answers 1,000 requests from 16 clients correctly while a killed child is restarted", function()
    local port = H.free_port()
    local srv = PF.start_server(port, 4)
    finally(function() PF.kill_server(srv) end)
    assert.truthy(H.wait_until(function()
      return count(PF.slurp(srv.err_path), "task %d serving") == 4
    end, 10), PF.slurp(srv.err_path))
    local t0 = lmp.time()
    local r = H.run_lmp(string.format("package.path = %q .. '/spec/?.lua;' .. package.path\n",
      H.root) .. PF.CLIENTS, {args = {port}, timeout = 60})
    local elapsed = lmp.time() - t0
    assert.equal(0, r.code, r.err)
    -- every request got its own correct reply
    local good, bad, clients = 0, 0, 0
    for g, b in r.out:gmatch("client=%d+ ok=(%d+) bad=(%d+)") do
      good, bad, clients = good + tonumber(g), bad + tonumber(b), clients + 1
    end
    assert.equal(16, clients, r.out)
    assert.equal(1000, good)
    assert.equal(0, bad)
    -- the killed child was restarted with the same task id and serves
    local task, pid = r.out:match("killed (%d+) (%d+)")
    assert.truthy(task, r.out)
    local log = H.wait_until(function()
      local s = PF.slurp(srv.err_path)
      return s:find("child task " .. task .. " (pid " .. pid .. ") killed by signal 9, restarting", 1, true)
        and s:find("task " .. task .. " serving %(pid %d+%)\n.*task " .. task .. " serving") and s
    end, 10)
    assert.truthy(log, PF.slurp(srv.err_path))
    local new_pid
    for p in log:gmatch("task " .. task .. " serving %(pid (%d+)%)") do new_pid = p end
    assert.are_not.equal(pid, new_pid)
    assert.truthy(H.wait_until(function()
      local ok, status, body = pcall(PF.get, port, "/again", 5)
      return ok and status == "HTTP/1.0 200 OK" and body:find("pid=" .. new_pid, 1, true)
    end, 10), "the restarted child never answered")
    -- SIGTERM stops the server and its children
    local kids = H.children(srv.pid)
    assert.equal(4, #kids)
    sys.kill(srv.pid, sys.SIGTERM)
    assert.equal(143, H.wait_until(function() return PF.exit_code(srv) end, 15))
    for _, k in ipairs(kids) do assert.is_nil(H.proc_state(k)) end
    io.stderr:write(string.format("  [prefork example: 1000 requests, 16 clients, %.2f s, %d retries]\n",
      elapsed, (function() local n = 0 for x in r.out:gmatch("retries=(%d+)") do n = n + tonumber(x) end return n end)()))
  end)
end)
