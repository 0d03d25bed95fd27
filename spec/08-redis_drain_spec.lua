-- `lmp worker --drain-timeout`: SIGTERM drains a worker, for at most the
-- drain timeout; a worker whose Redis is gone exits 75 by then, and the
-- task it could not commit runs again on another worker.
-- Against a redis-server of its own (spec/helpers/redis.lua).
local lmp = require "lmp"
local H = require "helper"
local RH = require "helpers.redis"

-- Starts `lmp worker` whose exit status lands in w.rc_file; w.pid is the
-- worker's own pid (the shell execs it).
local function start_worker(srv, queue, args)
  local base = os.tmpname()
  local w = {log = base .. ".log", rc_file = base .. ".rc", pid_file = base .. ".pid", base = base}
  os.execute(string.format("(sh -c 'echo $$ > %s; exec %s worker --redis %s --queue %s "
    .. "--concurrency 1 %s' >%s 2>&1 </dev/null; echo $? > %s) >/dev/null 2>&1 &",
    w.pid_file, H.shell_quote(H.lmp_bin), srv.url, queue, args or "", w.log, w.rc_file))
  w.pid = H.wait_until(function() return tonumber(RH.read_file(w.pid_file) or "") end, 10)
  assert(w.pid, "the worker did not start")
  return w
end

local function exit_status(w, timeout)
  return H.wait_until(function() return tonumber(RH.read_file(w.rc_file) or "") end, timeout)
end

local function logged(w, text, timeout)
  return H.wait_until(function() return (RH.read_file(w.log) or ""):find(text, 1, true) end, timeout)
end

local function cleanup(w)
  if RH.alive(w.pid) then
    os.execute("kill -KILL " .. w.pid .. " 2>/dev/null")
    exit_status(w, 10)
  end
  for _, p in ipairs({w.log, w.rc_file, w.pid_file, w.base}) do os.remove(p) end
end

-- The task: notes each start in dir/started, then waits (20 s at most)
-- for dir/go to exist.
local function task(dir)
  local l = require "lmp"
  local f = io.open(dir .. "/started", "a")
  f:write("x\n")
  f:close()
  local t0 = l.time()
  while l.time() - t0 < 20 do
    local go = io.open(dir .. "/go")
    if go then go:close() return "done" end
    l.sleep(0.02)
  end
  return "gave up"
end

describe("lmp worker --drain-timeout", function()
  local srv, workers, dir = nil, {}, nil
  local function worker(queue, args)
    local w = start_worker(srv, queue, args)
    workers[#workers + 1] = w
    return w
  end
  before_each(function()
    srv = RH.start{aof = true}
    dir = RH.sh("mktemp -d /tmp/lmp-drain-spec.XXXXXX"):gsub("%s+$", "")
  end)
  after_each(function()
    for _, w in ipairs(workers) do cleanup(w) end
    workers = {}
    srv:stop()
    RH.sh("rm -rf " .. H.shell_quote(dir))
  end)

  it("exits 0 on SIGTERM with Redis up and nothing in hand", function()
    local w = worker("idle")
    assert.truthy(logged(w, "serving queue idle", 10))
    os.execute("kill -TERM " .. w.pid)
    assert.equal(0, exit_status(w, 10))
    assert.truthy(logged(w, "stopped: 0 task(s) done", 1))
  end)

  it("exits 75 by the deadline when Redis is gone; the task runs again elsewhere", function()
    local w = worker("drain", "--drain-timeout 1")
    assert.truthy(logged(w, "serving queue drain", 10))
    -- a short visibility timeout: heartbeats every 1/3 s, quick redelivery
    local pool = lmp.RedisPool{url = srv.url, queue = "drain", visibility_timeout = 1}
    local r = pool:apply_async(task, {dir})
    assert.truthy(H.wait_until(function() return RH.read_file(dir .. "/started") end, 10))
    srv:kill("KILL")
    -- the worker's next heartbeat finds Redis gone: it is in its reconnection loop
    assert.truthy(logged(w, "lost Redis", 10), RH.read_file(w.log))
    local t0 = lmp.time()
    os.execute("kill -TERM " .. w.pid)
    assert.equal(75, exit_status(w, 10), RH.read_file(w.log))
    assert.is_true(lmp.time() - t0 < 10)                  -- 1 s and a generous margin
    assert.truthy(logged(w, "drain deadline (1s) passed with 1 task(s) in hand", 1))
    -- the entry survived in the AOF: a new worker runs it again for the caller
    srv:restart()
    assert(io.open(dir .. "/go", "w")):close()
    worker("drain")
    assert.equal("done", r:get(30))
    assert.equal(2, RH.count_lines(dir .. "/started"))
    pool:terminate()
  end)
end)

describe("lmp worker option checks", function()
  it("refuses a bad --drain-timeout or --metrics address with the usage", function()
    for _, args in ipairs({"--drain-timeout -1", "--drain-timeout x", "--metrics host:",
                           "--metrics 70000"}) do
      local r = H.sh(string.format("timeout 10 %s worker --redis redis://127.0.0.1:1/0 --queue q %s",
        H.shell_quote(H.lmp_bin), args))
      assert.equal(2, r.code, args)
      assert.matches("usage: lmp worker", r.err, 1, true)
    end
  end)
end)
