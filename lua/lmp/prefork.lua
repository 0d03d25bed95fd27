--- lmp.prefork: fork_processes and task_id, Tornado's prefork model.
--
--   local sock = lmp.bind_socket{port = 8080}     -- bind BEFORE forking
--   local id = lmp.fork_processes(4)              -- 0..3 in the children
--   -- only the children get here; the parent supervises and never returns
--   serve(sock, id)
--
-- The parent restarts a child that dies (non-zero exit or a signal) with
-- the same task id, up to max_restarts restarts in all; a child that
-- exits 0 is not restarted; once every child has exited 0 the parent
-- exits 0. SIGTERM/SIGINT to the parent is passed on (SIGTERM) to every
-- child; the parent waits for them (bounded) and exits 128 + signal.
local core = require "lmp.core"
local P = require "lmp.process"
local sys = require "lmp.c.sys"

local M = {}

local task = nil          -- this child's task id; nil in the parent

--- task_id() -> the task id (0..n-1) of this fork_processes child, nil in
-- the parent and in programs that never called fork_processes. Processes
-- forked by a task (a Pool's workers) inherit it.
function M.task_id() return task end

local function log() return require "lmp.log" end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  return out
end

local function check_args(n, opts)
  if n ~= nil and (type(n) ~= "number" or n < 0 or n ~= math.floor(n)) then
    error("bad argument #1 to 'fork_processes' (nil or an integer >= 0 expected)", 3)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'fork_processes' (table expected)", 3)
  end
  opts = opts or {}
  for k, v in pairs(opts) do
    if k ~= "max_restarts" and k ~= "shutdown_timeout" then
      error("bad argument #2 to 'fork_processes' (unknown option '" .. tostring(k) .. "')", 3)
    end
    if type(v) ~= "number" or v < 0 then
      error("bad argument #2 to 'fork_processes' (" .. k .. " must be a number >= 0)", 3)
    end
  end
  return opts
end

local function describe(code)
  if code < 0 then return "killed by signal " .. -code end
  return "exited with status " .. code
end

-- Waits for the children, restarting those that failed. Returns "child"
-- in a restarted child, "done" in the parent once all exited 0.
local function supervise(pids, start, max_restarts)
  local restarts = 0
  while next(pids) do
    local pid, code = sys.wait_any(keys(pids))
    local id = pids[pid]
    pids[pid] = nil
    local sig = sys.intr_pending()
    if sig ~= 0 then       -- we are stopping: a dead child is not restarted
      error(core.error("interrupted", "interrupted!", {signal = sig}), 0)
    end
    if code == 0 then
      log().info("child task %d (pid %d) exited normally", id, pid)
    else
      restarts = restarts + 1
      if restarts > max_restarts then
        error(core.error("worker_lost", string.format("child task %d (pid %d) %s; "
          .. "too many child restarts (%d), giving up", id, pid, describe(code),
          max_restarts), {task_id = id, pid = pid, exitcode = code}), 0)
      end
      log().warning("child task %d (pid %d) %s, restarting", id, pid, describe(code))
      if start(id) then return "child" end
    end
  end
  return "done"
end

-- Sends sig to every child and reaps them within timeout seconds.
local function stop_children(pids, sig, timeout)
  for pid in pairs(pids) do sys.kill(pid, sig) end
  local deadline = core.time() + timeout
  while next(pids) do
    local left = deadline - core.time()
    if left <= 0 then return false end
    local pid = sys.wait_any(keys(pids), left)
    if not pid then return false end
    pids[pid] = nil
  end
  return true
end

-- SIGTERM, then SIGKILL for those still there after timeout. A second
-- interruption during the wait goes straight to SIGKILL.
local function shutdown(pids, timeout)
  local ok, done = pcall(stop_children, pids, sys.SIGTERM, timeout)
  if ok and done then return end
  for _ = 1, 3 do
    if pcall(stop_children, pids, sys.SIGKILL, 5) then return end
  end
end

--- fork_processes(n [, {max_restarts = 100, shutdown_timeout = 10}])
-- Forks n children (n nil or 0: one per CPU) and returns the task id
-- (0..n-1) in each. In the parent it never returns: it supervises the
-- children and exits (see the top of this file), or raises a
-- "worker_lost" error after too many restarts (the other children are
-- stopped first).
function M.fork_processes(n, opts)
  opts = check_args(n, opts)
  if task ~= nil then
    error("fork_processes cannot be called in a child of fork_processes", 2)
  end
  if n == nil or n == 0 then n = P.cpu_count() end
  local max_restarts = opts.max_restarts or 100
  local pids = {}                       -- pid -> task id
  local function start(id)
    local pid, pidfd = P._fork{name = "Task-" .. id}
    if pid == 0 then
      task = id
      return true
    end
    if pidfd then sys.close(pidfd) end  -- wait_any opens its own
    pids[pid] = id
    return false
  end
  local ok, res = pcall(function()
    for id = 0, n - 1 do
      if start(id) then return "child" end
    end
    return supervise(pids, start, max_restarts)
  end)
  if ok and res == "child" then return task end
  if ok then os.exit(0, true) end
  shutdown(pids, opts.shutdown_timeout or 10)
  if core.is_error(res, "interrupted") then
    os.exit(128 + (res.signal or 15), true)
  end
  error(res, 0)
end

return M
